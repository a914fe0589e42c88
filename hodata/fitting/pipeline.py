"""`fit_clip`: a Clip and its evidence in, FitResults (independent and joint) out."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from hodata.device import resolve_device, to_device
from hodata.errors import HodataError
from hodata.evidence.types import ClipEvidence
from hodata.geometry.camera import project
from hodata.geometry.raster import render_silhouette
from hodata.geometry.sdf import object_sdf
from hodata.types import Clip, FitResult, HandInit, HandState, ObjectState

from . import quality as Q
from .joint import (FitConfig, HandEvidence, ObjectEvidence, fit_hands_and_objects, hand_state, object_evidence,
                    object_ious, object_state)
from .object_init import ObjectInitConfig, ObjectInitResult, distinct_candidates, initialise_object_pose, silhouette_iou

METHODS = ("independent", "joint")


def _on_cpu(state):
    """A HandState / ObjectState with every tensor field moved to the CPU."""
    from dataclasses import fields, replace

    return replace(state, **{f.name: getattr(state, f.name).cpu() for f in fields(state)
                             if torch.is_tensor(getattr(state, f.name))})


def object_mask_iou(vertices: torch.Tensor, evidence, config: FitConfig) -> torch.Tensor:
    """Per-frame occlusion-aware IoU (T,) of an object's hard silhouette, camera-space
    vertices (T, V, 3), with its target in the evidence's ROI cameras (as `object_ious`)."""
    with torch.no_grad():
        hard = render_silhouette(vertices, evidence.faces, evidence.K_roi, (config.roi_size,) * 2, mode="hard")
        return silhouette_iou(hard, evidence.target)


def measure_quality_signals(hands: list[HandState], hand_targets: list[torch.Tensor], obj: ObjectState | None,
                            evidence, K: torch.Tensor, history: dict, config: FitConfig, candidate_totals=None,
                            object_init=None, hand_scores=None, seen: torch.Tensor | None = None,
                            iou: torch.Tensor | None = None) -> dict:
    """The label-quality signals of a fitted clip (hodata.fitting.quality, module table).

    From fitted states, so any FitResult's labels can be scored (also edited ones, as the
    tests do). hands: HandStates; hand_targets: per hand its 2D target (T, V, 2) pixels (the
    init's projected vertices, the v2d term's target); obj: the ObjectState of the object
    `evidence` (ObjectEvidence: canonical mesh, SDF, ROI cameras and targets) describes; K
    (3, 3); history: the loss histories (`<stage>/total`, the last stage's gives the
    convergence); candidate_totals: the objective totals of the object-pose candidates x hand
    starts (K > 1);
    object_init: the ObjectInitResult (its hypotheses' IoUs give the silhouette's ambiguity
    even with one fitted candidate); hand_scores: per hand (T,) detector confidence or None;
    seen: (T,) bool, frames with object evidence (the IoU of the others is missing, not 0);
    iou: (T,) mask IoU when already computed (else rendered here).

    Several hands: the worst hand per frame for v2d_rel, penetration and jitter; the hand
    closest to the object for contact gap and depth offset (a second hand may be free).
    """
    signals: dict = {}
    with torch.no_grad():
        if obj is not None:
            obj_verts = obj.vertices.to(evidence.K_roi)
            iou = (object_mask_iou(obj_verts, evidence, config) if iou is None else iou).detach().double()
            if seen is not None:
                iou = torch.where(seen.to(iou.device), iou, torch.full_like(iou, float("nan")))
            signals["mask_iou"] = iou
            signals["object_accel_m"] = Q.acceleration_magnitude(obj_verts)
        verts = [h.vertices.to(evidence.K_roi) for h in hands]
        if hands:
            signals["v2d_rel"] = torch.stack([
                Q.relative_reprojection_error(project(v, K.to(v)), target.to(v))
                for v, target in zip(verts, hand_targets)]).amax(0)
            signals["hand_accel_m"] = torch.stack([Q.acceleration_magnitude(v) for v in verts]).amax(0)
            signals["hand_scale_log"] = max(Q.log_scale_deviation(1.0 if h.scale is None else h.scale) for h in hands)
        if obj is not None and hands:
            scale = torch.as_tensor(obj.scale, dtype=obj_verts.dtype, device=obj_verts.device).reshape(())
            frame_scale = scale.expand(obj_verts.shape[0])
            sdf = [object_sdf(evidence.sdf, v, obj.rotation.to(v), obj.translation.to(v), frame_scale) for v in verts]
            signals["penetration_m"] = torch.stack([Q.penetration_depth(d) for d in sdf]).amax(0)
            signals["contact_gap_m"] = torch.stack([Q.contact_gap(d) for d in sdf]).amin(0)
            offsets = torch.stack([Q.depth_offset(v, obj_verts) for v in verts])
            signals["depth_offset_rel"] = offsets.gather(0, offsets.abs().argmin(0, keepdim=True))[0]
        if obj is not None and evidence.reference_size and config.optimise_object_scale:
            size = float(obj.scale) * float((evidence.vertices.amax(0) - evidence.vertices.amin(0)).norm())
            signals["object_scale_log"] = Q.log_scale_deviation(size, evidence.reference_size)
    scores = [s for s in (hand_scores or []) if s is not None]
    if scores:
        signals["detector_score"] = torch.stack([s.detach().double().cpu() for s in scores]).amin(0)
    last_total = next((history[f"{stage}/total"] for stage in ("stage2", "stage1", "independent")
                       if history.get(f"{stage}/total")), None)
    signals["loss_change"] = Q.relative_loss_change(last_total) if last_total else None
    if candidate_totals is not None:
        signals["candidate_margin"] = Q.candidate_margin(candidate_totals)
    if object_init is not None and object_init.candidate_rotations is not None:
        signals["hypothesis_margin"] = Q.hypothesis_margin(object_init.candidate_ious.detach().cpu(),
                                                           object_init.candidate_rotations.detach().cpu(),
                                                           config.candidate_min_angle)
    return {name: (v.detach().cpu() if torch.is_tensor(v) else v) for name, v in signals.items()}


def build_fit_result(clip: Clip, hands, objects, report: dict, hand_evidence, evidence, method: str,
                     config: FitConfig, timings: list[float] | None = None, object_init=None, hand_scores=None,
                     seen: torch.Tensor | None = None) -> FitResult:
    """A FitResult from fitted parameters, with its label quality (`FitResult.quality`, from
    `measure_quality_signals` and `hodata.fitting.quality.label_quality`) and the measures
    earlier shards carried: per-frame occlusion-aware mask IoU of the object and mean 2D
    hand-vertex error (pixels). object_init, hand_scores, seen: see `measure_quality_signals`
    (seen also raises the flag `missing_object_evidence`)."""
    K = clip.K.to(evidence.K_roi)
    iou = object_ious(objects, [evidence], config)[0]
    hand_states = [hand_state(p, e.layer) for p, e in zip(hands, hand_evidence)]
    object_states = [object_state(o, evidence) for o in objects]
    with torch.no_grad():
        v2d_px = torch.stack([
            (project(h.vertices, K) - e.init.vertices_2d).norm(dim=-1).mean(-1)
            for h, e in zip(hand_states, hand_evidence)]).mean(0) if hands else torch.zeros_like(iou)
    losses = dict(report["final"])
    losses["mask_iou"] = float(iou.mean())
    losses["v2d_px"] = float(v2d_px.mean())
    flags = dict(report["flags"])
    flags["low_object_iou"] = bool(iou.mean() < 0.5)  # flags mark problems (True = bad)
    history = dict(report["history"])
    if "candidates" in report:  # which object-pose candidate the full objective chose (0: the init's)
        losses["object_candidate"] = float(report["candidates"]["chosen"])
        if "hand_start" in report["candidates"]:  # index into FitConfig.hand_starts (0: the first)
            losses["hand_start"] = float(config.hand_starts.index(report["candidates"]["hand_start"]))
        history["candidate_total"] = list(report["candidates"]["total"])
    history["mask_iou_per_frame"] = iou.tolist()
    history["v2d_px_per_frame"] = v2d_px.tolist()
    history["timings_s"] = list(timings or [])
    if seen is not None:
        flags["missing_object_evidence"] = not bool(seen.all())
    signals = measure_quality_signals(hand_states, [e.init.vertices_2d for e in hand_evidence],
                                      object_states[0] if object_states else None, evidence, K, history, config,
                                      history.get("candidate_total"), object_init, hand_scores, seen, iou)
    # results leave the device: they are written to shards or kept across many clips
    return FitResult(
        clip_id=clip.clip_id, dataset=clip.dataset, sequence=clip.sequence, frame_ids=list(clip.frame_ids),
        K=clip.K.detach().cpu().clone(), image_size=clip.image_size,
        hands=[_on_cpu(h) for h in hand_states], objects=[_on_cpu(o) for o in object_states],
        method=method, losses=losses, loss_history=history, flags=flags,
        hand_init=",".join(sorted({e.init.provider for e in hand_evidence})),
        quality=Q.label_quality(signals, len(clip.frame_ids), flags),
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


@dataclass
class PreparedClip:
    """One clip made ready for the optimiser (`prepare_clip`): its evidence on the device, the
    object init and the object-pose candidates. `fit_clip` fits it alone; `hodata.fitting.
    batched` fits several side by side."""

    clip: Clip
    clip_evidence: ClipEvidence
    K: torch.Tensor                   # (3, 3) on the device
    evidence: ObjectEvidence          # the object's ROI cameras and targets
    hand_evidence: list[HandEvidence]  # one per hand, each with its own copy of the layer
    init: ObjectInitResult
    candidate_rotations: torch.Tensor     # (K, T, 3, 3), index 0 the init's choice
    candidate_translations: torch.Tensor  # (K, T, 3)
    seen: torch.Tensor                # (T,) bool, frames with object evidence
    missed: list[str]                 # frame ids without object evidence
    object_init_s: float


def prepare_clip(
    clip: Clip,
    clip_evidence: ClipEvidence,
    object_model,
    hand_layers: dict,
    config: FitConfig,
    init_config: ObjectInitConfig,
    device: torch.device,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> PreparedClip:
    """Check a clip's evidence, move it to the device, initialise the object (paper Sec. 3.2)
    and crop its ROI targets: everything `fit_clip` does before the joint fit."""
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

    start = time.perf_counter()
    try:
        init = initialise_object_pose(vertices, faces, K, boxes, masks, init_config, generator=generator)
    except ValueError as exc:  # e.g. a mesh the renderer cannot draw (not closed, inconsistent winding)
        raise HodataError(f"clip {clip.clip_id}: object model {object_model.model_id}: {exc}") from None
    object_init_s = time.perf_counter() - start

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
    return PreparedClip(clip, clip_evidence, K, evidence, hand_evidence, init, candidate_rotations,
                        candidate_translations, seen, missed, object_init_s)


def prepared_fit_result(prepared: PreparedClip, hands, objects, report: dict, method: str, config: FitConfig,
                        fit_s: float) -> FitResult:
    """The FitResult of a prepared clip from its fitted parameters (`build_fit_result`), with
    the evidence's provenance and the frames without object evidence."""
    p = prepared
    result = build_fit_result(p.clip, hands, objects, report, p.hand_evidence, p.evidence, method, config,
                              [p.object_init_s, fit_s], object_init=p.init,
                              hand_scores=[h.scores for h in p.clip_evidence.hands], seen=p.seen)
    result.evidence = dict(p.clip_evidence.provenance)
    if p.missed:
        result.loss_history["frames_without_object_evidence"] = list(p.missed)
    return result


def check_methods(methods: tuple[str, ...]) -> None:
    for m in methods:
        if m not in METHODS:
            raise HodataError(f"unknown fitting method {m!r}; choose from {', '.join(METHODS)}")


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
    FitResult, recording the evidence's provenance. Several clips in one batched problem:
    `hodata.fitting.batched.fit_clips`.
    """
    config = config or FitConfig()
    init_config = init_config or ObjectInitConfig()
    device = resolve_device(device)
    check_methods(methods)
    prepared = prepare_clip(clip, clip_evidence, object_model, hand_layers, config, init_config, device, seed, dtype)
    return fit_prepared(prepared, config, methods)


def fit_prepared(prepared: PreparedClip, config: FitConfig, methods: tuple[str, ...]) -> dict[str, FitResult]:
    """Fit `methods` on one prepared clip (`prepare_clip`) -> method -> FitResult."""
    p = prepared
    results = {}
    for method in methods:
        start = time.perf_counter()
        hands, objects, report = fit_hands_and_objects(p.hand_evidence, [p.evidence],
                                                       [(p.candidate_rotations, p.candidate_translations)],
                                                       p.K, p.clip.image_size, config, joint=(method == "joint"))
        results[method] = prepared_fit_result(p, hands, objects, report, method, config, time.perf_counter() - start)
    return results
