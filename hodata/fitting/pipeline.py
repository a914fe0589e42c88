"""`fit_clip`: a Clip and its evidence in, FitResults (independent and joint) out."""

from __future__ import annotations

import copy
import time

import torch

from hodata.device import resolve_device, to_device
from hodata.errors import HodataError
from hodata.geometry.camera import project
from hodata.evidence.types import ClipEvidence
from hodata.types import Clip, FitResult, HandInit

from .joint import FitConfig, HandEvidence, fit_hands_and_objects, hand_state, object_evidence, object_ious, object_state
from .object_init import ObjectInitConfig, distinct_candidates, initialise_object_pose

METHODS = ("independent", "joint")


def _on_cpu(state):
    """A HandState / ObjectState with every tensor field moved to the CPU."""
    from dataclasses import fields, replace

    return replace(state, **{f.name: getattr(state, f.name).cpu() for f in fields(state)
                             if torch.is_tensor(getattr(state, f.name))})


def build_fit_result(clip: Clip, hands, objects, report: dict, hand_evidence, evidence, method: str,
                     config: FitConfig, timings: list[float] | None = None) -> FitResult:
    """A FitResult from fitted parameters, with the quality measures the shard writer reads:
    per-frame occlusion-aware mask IoU of the object and mean 2D hand-vertex error (pixels)."""
    K = clip.K.to(evidence.K_roi)
    iou = object_ious(objects, [evidence], config)[0]
    with torch.no_grad():
        v2d_px = torch.stack([
            (project(h.meshes(e.layer).vertices, K) - e.init.vertices_2d).norm(dim=-1).mean(-1)
            for h, e in zip(hands, hand_evidence)]).mean(0) if hands else torch.zeros_like(iou)
    losses = dict(report["final"])
    losses["mask_iou"] = float(iou.mean())
    losses["v2d_px"] = float(v2d_px.mean())
    flags = dict(report["flags"])
    flags["low_object_iou"] = bool(iou.mean() < 0.5)  # flags mark problems (True = bad)
    history = dict(report["history"])
    if "candidates" in report:  # which object-pose candidate the full objective chose (0: the init's)
        losses["object_candidate"] = float(report["candidates"]["chosen"])
        history["candidate_total"] = list(report["candidates"]["total"])
    history["mask_iou_per_frame"] = iou.tolist()
    history["v2d_px_per_frame"] = v2d_px.tolist()
    history["timings_s"] = list(timings or [])
    # results leave the device: they are written to shards or kept across many clips
    return FitResult(
        clip_id=clip.clip_id, dataset=clip.dataset, sequence=clip.sequence, frame_ids=list(clip.frame_ids),
        K=clip.K.detach().cpu().clone(), image_size=clip.image_size,
        hands=[_on_cpu(hand_state(p, e.layer)) for p, e in zip(hands, hand_evidence)],
        objects=[_on_cpu(object_state(o, evidence)) for o in objects],
        method=method, losses=losses, loss_history=history, flags=flags,
        hand_init=",".join(sorted({e.init.provider for e in hand_evidence})),
    )


def fill_missing_boxes(boxes: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Boxes (T, 4) with the rows where `known` (T,) is False replaced: linearly interpolated
    between the nearest known frames on both sides, the nearest known box at the ends."""
    frames = len(boxes)
    index = torch.arange(frames, device=boxes.device)
    before = torch.cummax(torch.where(known, index, torch.full_like(index, -1)), 0).values   # last known <= t
    after = torch.cummin(torch.where(known, index, torch.full_like(index, frames)).flip(0), 0).values.flip(0)
    lo = torch.where(before >= 0, before, after)
    hi = torch.where(after < frames, after, before)
    weight = ((index - lo) / (hi - lo).clamp(min=1)).to(boxes.dtype)[:, None]
    filled = boxes[lo] * (1 - weight) + boxes[hi] * weight
    return torch.where(known[:, None], boxes, filled)


def fit_clip(
    clip: Clip,
    clip_evidence: ClipEvidence,
    object_model,
    hand_layers: dict,
    config: FitConfig | None = None,
    init_config: ObjectInitConfig | None = None,
    methods: tuple[str, ...] = ("joint",),
    device: str | torch.device = "auto",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict[str, FitResult]:
    """Fit hands and the object of one clip (paper Sec. 3.2-3.3).

    clip: what the clip is (id, frame ids) and its camera (K, image size) — its ground
    truth, if any, is never read; clip_evidence: the clip's ClipEvidence (object boxes and masks,
    one HandInit per hand; hodata.evidence providers); object_model: an ObjectModel
    (hodata.objects) with canonical `vertices`, `faces`, `sdf` and category `dimensions`;
    hand_layers: side -> fitting hand layer of the active hand model (hodata.handmodel.load,
    PCA). methods: any of "independent" (composition of separate fits, the paper's baseline)
    and "joint". The object initialisation is computed once and shared. Returns method ->
    FitResult, recording the evidence's provenance.
    """
    config = config or FitConfig()
    init_config = init_config or ObjectInitConfig()
    device = resolve_device(device)
    for m in methods:
        if m not in METHODS:
            raise HodataError(f"unknown fitting method {m!r}; choose from {', '.join(METHODS)}")
    if len(clip_evidence) != len(clip):
        raise HodataError(f"clip {clip.clip_id}: evidence of {len(clip_evidence)} frames for {len(clip)} frames")
    if clip_evidence.object_masks is None:
        raise HodataError(f"clip {clip.clip_id} has no object masks; fitting needs 2D object evidence "
                          f"(provider: {clip_evidence.provenance.get('object_boxes', 'unknown')})")
    hand_inits = clip_evidence.hand_inits
    # A frame without object evidence (a missed detection, an empty mask) is not an error: its
    # silhouette is ignored (target -1 everywhere) and its box interpolated from its
    # neighbours, so smoothness and the hands carry the object through it.
    seen = clip_evidence.object_valid.bool() & (clip_evidence.object_masks > 0).flatten(1).any(1)
    if not bool(seen.any()):
        raise HodataError(f"clip {clip.clip_id}: no object evidence in any frame (empty masks or no boxes)")
    missed = [clip.frame_ids[i] for i in torch.nonzero(~seen).flatten().tolist()]

    K = clip.K.to(device=device, dtype=dtype)
    seen = seen.to(device)
    masks = clip_evidence.object_masks.to(device=device, dtype=dtype)
    masks = torch.where(seen[:, None, None], masks, torch.full_like(masks, -1.0))
    boxes = fill_missing_boxes(clip_evidence.object_boxes.to(device=device, dtype=dtype), seen)
    vertices = object_model.vertices.to(device=device, dtype=dtype)
    faces = object_model.faces.to(device)
    sdf = object_model.sdf.to(device, dtype)
    generator = torch.Generator().manual_seed(seed)
    timings = {}

    start = time.perf_counter()
    try:
        init = initialise_object_pose(vertices, faces, K, boxes, masks, init_config, generator=generator)
    except ValueError as exc:  # e.g. a mesh the renderer cannot draw (not closed, inconsistent winding)
        raise HodataError(f"clip {clip.clip_id}: object model {object_model.model_id}: {exc}") from None
    timings["object_init_s"] = time.perf_counter() - start

    dims = getattr(object_model, "dimensions", None)
    reference_size = float(torch.as_tensor(dims).norm()) if dims is not None and config.optimise_object_scale else None
    evidence = object_evidence(vertices, faces, sdf, K, boxes, masks, config, reference_size,
                               object_model.model_id, clip.category or getattr(object_model, "category", None))
    hand_evidence = []
    for h in hand_inits:
        moved = HandInit(**{k: to_device(v, device, dtype) for k, v in vars(h).items()})
        if h.side not in hand_layers:
            raise HodataError(f"clip {clip.clip_id}: no hand layer for the {h.side} hand")
        # a copy: the caller's layer (often cached by a hand-init provider) stays where it was
        layer = copy.deepcopy(hand_layers[h.side]).to(device=device, dtype=dtype)
        hand_evidence.append(HandEvidence(layer, moved))

    # candidates for the joint fit; index 0 is the init's choice (the independent baseline's)
    candidate_rotations, candidate_translations = distinct_candidates(init, vertices, config.object_candidates,
                                                                      config.candidate_min_angle)
    results = {}
    for method in methods:
        start = time.perf_counter()
        hands, objects, report = fit_hands_and_objects(hand_evidence, [evidence],
                                                       [(candidate_rotations, candidate_translations)],
                                                       K, clip.image_size, config, joint=(method == "joint"))
        timings[f"{method}_s"] = time.perf_counter() - start
        results[method] = build_fit_result(clip, hands, objects, report, hand_evidence, evidence, method, config,
                                           [timings["object_init_s"], timings[f"{method}_s"]])
        results[method].evidence = dict(clip_evidence.provenance)
        results[method].flags["missing_object_evidence"] = bool(missed)
        if missed:
            results[method].loss_history["frames_without_object_evidence"] = missed
    return results
