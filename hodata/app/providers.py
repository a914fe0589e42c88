"""Evidence and hand-initialisation providers picked by name (`--evidence`, `--hand-init`).

    --evidence   gt          boxes and masks from the dataset's annotations (paper Fig. 4)
                 detected    MediaPipe hands + motpy tracks + GrabCut object masks, from the
                             frames and the dataset's object box hints (Core50 bbox files,
                             Epic-Kitchens' published detections, HO-3D's projected boxes)
                 files:DIR   DIR/<sequence>/<frame>.json (+ masks): outputs of external models
                 pointrend:CONFIG:WEIGHTS   detected, with PointRend object masks (needs
                             detectron2 and its weights; untested here, see evidence/pointrend.py)
    --hand-init  simulated   ground truth + documented noise (annotated data only)
                 keypoints   fitted to the evidence's 21 hand keypoints (MediaPipe, files, gt)
                 files:DIR   the "mano" fields of DIR/<sequence>/<frame>.json
    auto (both)  annotated data (HO-3D, hodata's synthetic sets): gt / simulated;
                 data without 3D annotations (Core50, Epic-Kitchens): detected / keypoints

The fitting hand layers come from the evidence's hand sides and the active hand model
(MANO from `mano_dir` when given or found, else the open hand), never from ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import torch

from hodata.errors import HodataError
from hodata.evidence.types import ClipEvidence, HandEvidence
from hodata.types import Clip, HandInit

EVIDENCE_CHOICES = ("auto", "gt", "detected", "files:DIR", "pointrend:CONFIG:WEIGHTS")
HAND_INIT_CHOICES = ("auto", "simulated", "keypoints", "files:DIR")
ANNOTATED_DATASETS = frozenset({"ho3d", "synthetic"})
NUM_PCA_COMPS = 16


def parse_spec(spec: str, choices: tuple[str, ...], option: str) -> tuple[str, Optional[Path]]:
    """"files:DIR" -> ("files", DIR); a plain name -> (name, None); HodataError otherwise."""
    name, _, arg = spec.partition(":")
    plain = [c for c in choices if ":" not in c]
    if name == "files":
        if not arg:
            raise HodataError(f"{option} files needs a folder: {option} files:DIR")
        return name, Path(arg)
    if name == "pointrend" and any(c.startswith("pointrend:") for c in choices):
        config, _, weights = arg.partition(":")
        if not config or not weights:
            raise HodataError(f"{option} pointrend needs its detectron2 config and weights: "
                              f"{option} pointrend:CONFIG.yaml:WEIGHTS.pkl")
        return name, Path(arg)
    if name not in plain or arg:
        raise HodataError(f"{option} {spec!r}: choose one of {', '.join(choices)}")
    return name, None


def default_specs(dataset_name: str) -> tuple[str, str]:
    """(evidence, hand init) for `auto`: what a dataset without hodata options should use."""
    return ("gt", "simulated") if dataset_name in ANNOTATED_DATASETS else ("detected", "keypoints")


@dataclass
class EvidenceProvider:
    """clip -> ClipEvidence with one HandInit per hand (module docstring). `layers(sides)`
    gives the fitting layers of the active hand model; `describe()` names the providers for
    manifests."""

    evidence: str = "gt"
    hand_init: str = "simulated"
    mano_dir: Optional[Path] = None
    seed: int = 0
    cache_dir: Optional[Path] = None     # evidence cache (hodata.evidence.cache): computed once, reused
    _layers: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.evidence_kind, self.evidence_dir = parse_spec(self.evidence, EVIDENCE_CHOICES, "--evidence")
        self.init_kind, self.init_dir = parse_spec(self.hand_init, HAND_INIT_CHOICES, "--hand-init")
        if "auto" in (self.evidence_kind, self.init_kind):
            raise HodataError("resolve 'auto' with default_specs(dataset) before building the provider")
        for folder in (self.evidence_dir if self.evidence_kind == "files" else None, self.init_dir):
            if folder is not None and not folder.is_dir():
                raise HodataError(f"{folder}: evidence folder does not exist; pass files:DIR with one "
                                  "DIR/<sequence>/<frame>.json per frame")
        self._estimator = None

    def describe(self) -> dict[str, str]:
        return {"evidence": self.evidence, "hand_init": self.hand_init}

    # ------------------------------------------------------------------ hand layers
    def layer(self, side: str) -> torch.nn.Module:
        """PCA fitting layer (k = 16, flat_hand_mean=False) of the active hand model."""
        if side not in self._layers:
            from hodata import handmodel

            self._layers[side] = handmodel.load(side=side, mano_dir=self.mano_dir, model="auto",
                                                num_pca_comps=NUM_PCA_COMPS, use_pca=True, flat_hand_mean=False)
        return self._layers[side]

    def layers(self, sides) -> dict[str, torch.nn.Module]:
        return {side: self.layer(side) for side in sides}

    # ------------------------------------------------------------------ evidence
    def __call__(self, clip: Clip) -> ClipEvidence:
        """The clip's evidence: from the cache when it holds an entry of these providers,
        else computed (and cached)."""
        if self.cache_dir is not None:
            from hodata.evidence.cache import load_evidence, save_evidence

            cached = load_evidence(self.cache_dir, clip.clip_id, self.describe())
            if cached is not None:
                return cached
            evidence = self.compute(clip)
            save_evidence(self.cache_dir, clip.clip_id, evidence, self.describe())
            return evidence
        return self.compute(clip)

    def compute(self, clip: Clip) -> ClipEvidence:
        evidence = self._base_evidence(clip)
        if self.init_kind == "simulated":
            evidence = self.attach_hand_inits(evidence, self._simulated(clip), "simulated")
        elif self.init_kind == "keypoints":
            if not (self.evidence_kind in ("detected", "pointrend") and all(h.init is not None for h in evidence.hands)):
                evidence = self.attach_hand_inits(evidence, self._from_keypoints(clip, evidence), None)
        elif self.init_kind == "files" and not (self.evidence_kind == "files" and self.evidence_dir == self.init_dir
                                                and evidence.hands and all(h.init for h in evidence.hands)):
            read = self._read_files(clip, self.init_dir, with_inits=True)
            evidence = self.attach_hand_inits(evidence, [h.init for h in read.hands if h.init is not None], None)
        if not evidence.hands:
            raise HodataError(f"clip {clip.clip_id}: no hand found ({evidence.provenance.get('hand_boxes', '')}); "
                              "nothing to fit")
        return evidence

    def _base_evidence(self, clip: Clip) -> ClipEvidence:
        if self.evidence_kind == "gt":
            from hodata.evidence.gt import gt_clip_evidence

            if clip.object_masks is None:
                raise HodataError(f"clip {clip.clip_id}: the dataset has no object masks for --evidence gt; "
                                  "use --evidence detected or files:DIR")
            return gt_clip_evidence(clip)
        if self.evidence_kind == "files":
            return self._read_files(clip, self.evidence_dir, with_inits=self.init_kind == "files"
                                    and self.init_dir == self.evidence_dir)
        from hodata.evidence.detected import detect_clip_evidence

        if clip.object_boxes is None:
            raise HodataError(f"clip {clip.clip_id}: no object box hints for --evidence detected (hodata has no "
                              "offline object detector); give the dataset's boxes or use --evidence files:DIR")
        from hodata.datasets.base import clip_frames

        sides = clip.hand_sides or None
        frames = clip_frames(clip)  # decoded once: kept on the clip for the shards
        detected = detect_clip_evidence(list(frames), clip.K, sides, object_boxes=clip.object_boxes,
                                        full_frame_detections=clip.hand_detections, layer_for=self.layer)
        evidence = detected.evidence
        if self.evidence_kind == "pointrend":
            from hodata.evidence.pointrend import PROVIDER, pointrend_object_targets

            config, _, weights = str(self.evidence_dir).partition(":")
            targets = pointrend_object_targets(list(frames), evidence.object_boxes,
                                               evidence.hand_masks, evidence.object_masks, config, weights)
            evidence = replace(evidence, object_masks=targets,
                               provenance={**evidence.provenance, "object_masks": PROVIDER})
        return evidence

    def _read_files(self, clip: Clip, folder: Path, with_inits: bool) -> ClipEvidence:
        from hodata.evidence.files import read_evidence_files

        sides = clip.hand_sides or None
        layers = self.layers(sides or ("right", "left")) if with_inits else None
        return read_evidence_files(folder / clip.sequence, clip.frame_ids, clip.image_size, sides=sides,
                                   K=clip.K if with_inits else None, layers=layers)

    # ------------------------------------------------------------------ hand inits
    def _simulated(self, clip: Clip) -> list[HandInit]:
        from hodata.evidence.hand_init import SimulatedHandEstimator

        if self._estimator is None:
            self._estimator = SimulatedHandEstimator(seed=self.seed, mano_dir=self.mano_dir)
        inits = self._estimator(clip)
        for init, gt in zip(inits, clip.gt_hands):
            active = self.layer(init.side).model_name
            if gt.model_name and not gt.model_name.startswith(active.split("-")[0]):
                raise HodataError(f"clip {clip.clip_id}: the ground truth was made with hand model {gt.model_name} "
                                  f"but the active one is {active}; the simulated init needs the same model "
                                  "(pass --mano-dir, or use --hand-init keypoints)")
        return inits

    def _from_keypoints(self, clip: Clip, evidence: ClipEvidence) -> list[HandInit]:
        from hodata.evidence.keypoint_init import keypoint_hand_init

        source = evidence.provenance.get("hand_keypoints")
        inits = []
        for hand in evidence.hands:
            if hand.keypoints_2d is None or hand.keypoints_3d is None:
                raise HodataError(f"clip {clip.clip_id}: --hand-init keypoints needs 2D and 3D keypoints of the "
                                  f"{hand.side} hand, and the {evidence.provenance.get('hand_boxes', '')} "
                                  "evidence has none")
            if not bool(torch.isfinite(hand.keypoints_2d).all() and torch.isfinite(hand.keypoints_3d).all()):
                raise HodataError(f"clip {clip.clip_id}: {hand.side} hand keypoints missing in some frames")
            init, _ = keypoint_hand_init(self.layer(hand.side), hand.keypoints_2d, hand.keypoints_3d, clip.K,
                                         provider=f"keypoints:{source}")
            inits.append(init)
        return inits

    @staticmethod
    def attach_hand_inits(evidence: ClipEvidence, inits: list[HandInit], provider: Optional[str]) -> ClipEvidence:
        """The evidence with these HandInits (hands the evidence lacks are added from the
        inits' boxes)."""
        by_side = {i.side: i for i in inits}
        hands = []
        for hand in evidence.hands:
            hands.append(replace(hand, init=by_side.pop(hand.side, None)))
        for side, init in by_side.items():
            boxes = init.boxes if init.boxes is not None else torch.full((len(evidence), 4), float("nan"))
            valid = torch.isfinite(boxes).all(-1)
            hands.append(HandEvidence(side=side, boxes=boxes, scores=valid.to(boxes.dtype), valid=valid, init=init))
        provenance = dict(evidence.provenance)
        names = sorted({i.provider for i in inits})
        if names or provider:
            provenance["hand_init"] = "+".join(names) or provider
        return replace(evidence, hands=hands, provenance=provenance)
