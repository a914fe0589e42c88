"""Per-clip metric tables with stable keys, and frame-weighted aggregation over clips.

Keys (`METRIC_KEYS`) and how they map to the paper's tables:
- Table 1 "Hand vertex mean distance (cm)" -> hand_vertex_cm (no alignment);
  "Hand mepe aligned (cm)" -> hand_joint_st_cm (joints after scale-translation alignment,
  Sec. 4.1; Table 4 "aligned mepe" likewise, Table 4 "mepe" -> hand_joint_cm);
  "Object vertex mean distance (cm)" -> object_vertex_cm; "add-s (cm)" -> object_adds_cm;
  "pen. depth (mm)" -> penetration_mm; "contact %" -> contact_pct.
- Table 2 (Core50) "Contact Accuracy (%)" -> contact_accuracy_pct, "Pen. Depth" -> penetration_mm.
- Table 3 (HO-3D server) "mesh error" -> hand_vertex_pa_cm, "F-score @5mm / @15mm" ->
  hand_fscore_5mm / hand_fscore_15mm as the server reports them (raw), with the
  Procrustes-aligned variants in hand_fscore_pa_*; hand_joint_pa_cm is the server's
  "procrustes aligned" joint error.
- HOLD (CVPR 2024) and its followers on HO-3D v3 (hodata.metrics.hold): "MPJPE (mm)" ->
  hand_mpjpe_ra_mm (root-aligned joints), "CD (cm^2)" -> object_cd_cm2, "F5 / F10 (%)" ->
  object_fscore_5mm / object_fscore_10mm (fractions here: x 100 for HOLD's percent),
  "CD_h (cm^2)" -> object_cd_h_cm2 (the object in the hand's frame).
Units: cm for distances, mm for penetration and MPJPE, cm^2 for the squared chamfer
distances, F-scores in [0, 1], contact in percent.
A metric whose ground truth (or SDF) is missing is None ("absent"), never 0.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch

from hodata.metrics import hand as hand_metrics
from hodata.metrics import hold, interaction
from hodata.metrics.object import add_s, object_vertex_error, posed_object_vertices
from hodata.types import Clip, FitResult, HandState, ObjectState

METRIC_KEYS: tuple[str, ...] = (
    "object_vertex_cm",
    "object_adds_cm",
    "hand_vertex_cm",
    "hand_joint_cm",
    "hand_joint_pa_cm",
    "hand_joint_st_cm",
    "hand_vertex_pa_cm",
    "hand_fscore_5mm",
    "hand_fscore_15mm",
    "hand_fscore_pa_5mm",
    "hand_fscore_pa_15mm",
    "penetration_mm",
    "contact_pct",
    "contact_accuracy_pct",
    "hand_mpjpe_ra_mm",
    "object_cd_cm2",
    "object_fscore_5mm",
    "object_fscore_10mm",
    "object_cd_h_cm2",
    "frames",
)

# per-frame metric in metres (or a fraction / flag) -> reported unit
_UNIT_SCALE = {
    "object_vertex_cm": 100.0,
    "object_adds_cm": 100.0,
    "hand_vertex_cm": 100.0,
    "hand_joint_cm": 100.0,
    "hand_joint_pa_cm": 100.0,
    "hand_joint_st_cm": 100.0,
    "hand_vertex_pa_cm": 100.0,
    "hand_fscore_5mm": 1.0,
    "hand_fscore_15mm": 1.0,
    "hand_fscore_pa_5mm": 1.0,
    "hand_fscore_pa_15mm": 1.0,
    "penetration_mm": 1000.0,
    "contact_pct": 100.0,
    "contact_accuracy_pct": 100.0,
    "hand_mpjpe_ra_mm": 1000.0,
    "object_cd_cm2": 1e4,
    "object_fscore_5mm": 1.0,
    "object_fscore_10mm": 1.0,
    "object_cd_h_cm2": 1e4,
}

FSCORE_THRESHOLDS = {"5mm": 0.005, "15mm": 0.015}

# hand vertices (T, V, 3) and one predicted object -> SDF of the vertices in that object (T, V)
ObjectSdf = Union[torch.Tensor, Callable[[torch.Tensor, ObjectState], torch.Tensor]]


def _valid_frames(points: torch.Tensor) -> torch.Tensor:
    """Frames (T,) whose ground-truth points (T, N, 3) are all finite (datasets mark missing
    annotations with NaN)."""
    return torch.isfinite(points).flatten(1).all(dim=1)


def _safe_gt(gt: torch.Tensor, pred: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """GT with invalid frames replaced by the prediction, so SVDs and distances stay finite;
    those frames are masked out afterwards."""
    return torch.where(valid[:, None, None], gt, pred.detach().to(gt))


def _per_frame_metrics(
    pred_hands: Sequence[HandState],
    pred_objects: Sequence[ObjectState],
    gt_hands: Sequence[HandState],
    gt_objects: Sequence[ObjectState],
    object_sdf: Optional[ObjectSdf],
    gt_contact: Optional[torch.Tensor],
    canonical_object_vertices: Union[torch.Tensor, Mapping[str, torch.Tensor], None],
    contact_tolerance: float,
) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """key -> list of (values (T,), valid (T,)) in metres / fractions, one entry per hand or
    object pair; keys without ground truth are left out."""
    out: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def add(key: str, values: torch.Tensor, valid: torch.Tensor) -> None:
        out.setdefault(key, []).append((values.detach(), valid))

    # objects: paired by position (one manipulated object per clip in all datasets)
    posed_objects: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []   # (pred, gt, valid) for CD_h
    if gt_objects and len(gt_objects) != len(pred_objects):
        raise ValueError(f"{len(pred_objects)} predicted objects but {len(gt_objects)} ground-truth objects")
    for pred_obj, gt_obj in zip(pred_objects, gt_objects):
        canonical = canonical_object_vertices
        if isinstance(canonical, Mapping):
            canonical = canonical.get(gt_obj.model_id, canonical.get(pred_obj.model_id))
        if canonical is not None:
            # both poses applied to the same mesh: exact vertex correspondence
            pred_v = posed_object_vertices(
                ObjectState(pred_obj.model_id, pred_obj.rotation, pred_obj.translation, pred_obj.scale), canonical
            )
            gt_v = posed_object_vertices(
                ObjectState(gt_obj.model_id, gt_obj.rotation, gt_obj.translation, gt_obj.scale), canonical
            )
        else:
            pred_v = posed_object_vertices(pred_obj)
            gt_v = posed_object_vertices(gt_obj)
        pred_v = pred_v.to(gt_v)
        valid = _valid_frames(gt_v)
        if pred_v.shape == gt_v.shape:
            gt_safe = _safe_gt(gt_v, pred_v, valid)
            add("object_vertex_cm", object_vertex_error(pred_v, gt_safe), valid)
        else:
            gt_safe = torch.where(valid[:, None, None], gt_v, torch.zeros_like(gt_v))
        add("object_adds_cm", add_s(pred_v, gt_safe), valid)
        cd, fscores = hold.object_chamfer_fscores(pred_v, gt_safe, list(hold.HOLD_FSCORE_THRESHOLDS.values()))
        add("object_cd_cm2", cd, valid)
        for k, name in enumerate(hold.HOLD_FSCORE_THRESHOLDS):
            add(f"object_fscore_{name}", fscores[:, k], valid)
        posed_objects.append((pred_v, gt_safe, valid))

    # hands: matched by side
    for gt_hand in gt_hands:
        matches = [h for h in pred_hands if h.side == gt_hand.side]
        if not matches:
            sides = [h.side for h in pred_hands]
            raise ValueError(f"ground truth has a {gt_hand.side} hand but the prediction only has {sides}")
        pred_hand = matches[0]
        if gt_hand.joints is not None and gt_hand.joints.numel() > 0:
            valid = _valid_frames(gt_hand.joints)
            gt_j = _safe_gt(gt_hand.joints, pred_hand.joints, valid)
            pred_j = pred_hand.joints.to(gt_j)
            add("hand_joint_cm", hand_metrics.joint_error(pred_j, gt_j), valid)
            add("hand_joint_pa_cm", hand_metrics.pa_error(pred_j, gt_j), valid)
            add("hand_joint_st_cm", hand_metrics.st_joint_error(pred_j, gt_j), valid)
            add("hand_mpjpe_ra_mm", hold.root_aligned_mpjpe(pred_j, gt_j), valid)
            root = hold.ROOT_JOINT
            for pred_o, gt_o, valid_o in posed_objects:
                add("object_cd_h_cm2", hold.hand_relative_chamfer_distance(
                    pred_o, gt_o.to(pred_o), pred_j[:, root].to(pred_o), gt_j[:, root].to(pred_o)), valid & valid_o)
        if gt_hand.vertices is not None and gt_hand.vertices.numel() > 0:
            valid = _valid_frames(gt_hand.vertices)
            pred_v = pred_hand.vertices.to(gt_hand.vertices)
            same_topology = pred_v.shape == gt_hand.vertices.shape
            gt_v = _safe_gt(gt_hand.vertices, pred_v, valid) if same_topology else torch.where(
                valid[:, None, None], gt_hand.vertices, torch.zeros_like(gt_hand.vertices)
            )
            names, ths = list(FSCORE_THRESHOLDS), list(FSCORE_THRESHOLDS.values())
            raw = hand_metrics.fscore(pred_v, gt_v, ths)
            for k, name in enumerate(names):
                add(f"hand_fscore_{name}", raw[:, k], valid)
            # vertex errors and aligned F-scores need MANO topology on both sides
            if same_topology:
                add("hand_vertex_cm", hand_metrics.vertex_error(pred_v, gt_v), valid)
                add("hand_vertex_pa_cm", hand_metrics.pa_error(pred_v, gt_v), valid)
                pa = hand_metrics.fscore(pred_v, gt_v, ths, aligned=True)
                for k, name in enumerate(names):
                    add(f"hand_fscore_pa_{name}", pa[:, k], valid)

    # interaction: predicted hands against predicted objects
    if object_sdf is not None and pred_hands and pred_objects:
        if isinstance(object_sdf, torch.Tensor):
            sdf_per_object = [object_sdf]
        else:
            hand_verts = torch.cat([h.vertices for h in pred_hands], dim=1)
            sdf_per_object = [object_sdf(hand_verts, obj) for obj in pred_objects]
        sdf = torch.cat(sdf_per_object, dim=1)
        all_frames = torch.ones(sdf.shape[0], dtype=torch.bool, device=sdf.device)
        add("penetration_mm", interaction.penetration_depth(sdf), all_frames)
        has_contact = interaction.contact(sdf, contact_tolerance)
        add("contact_pct", has_contact.to(sdf.dtype), all_frames)
        if gt_contact is not None:
            gt_contact = gt_contact.to(device=sdf.device)
            add("contact_accuracy_pct", (has_contact == gt_contact.bool()).to(sdf.dtype), all_frames)
    return out


def _mean(entries: list[tuple[torch.Tensor, torch.Tensor]]) -> Optional[float]:
    values = torch.cat([v[m] for v, m in entries])
    if values.numel() == 0:
        return None
    return float(values.double().mean())


def evaluate_clip(
    pred_hands: Sequence[HandState],
    pred_objects: Sequence[ObjectState],
    gt_hands: Sequence[HandState] = (),
    gt_objects: Sequence[ObjectState] = (),
    *,
    object_sdf: Optional[ObjectSdf] = None,
    gt_contact: Optional[torch.Tensor] = None,
    canonical_object_vertices: Union[torch.Tensor, Mapping[str, torch.Tensor], None] = None,
    contact_tolerance: float = 0.0,
) -> dict[str, Any]:
    """All metrics of one clip as {key: float | None} over `METRIC_KEYS` (plus `frames`: int).

    pred_hands / pred_objects: a FitResult's `hands` / `objects`; gt_hands / gt_objects: the
    clip's ground truth (empty when the dataset has none, e.g. Core50, Epic-Kitchens). Hands
    are matched by side (extra predicted hands are ignored; a GT side missing from the
    prediction is an error); objects are paired by position. Object vertices come from
    `canonical_object_vertices` ((V, 3) or {model_id: (V, 3)}) posed by each state, which gives
    exact correspondence, else from the states' `vertices`. Frames whose GT holds NaNs are
    left out of that metric's mean.

    object_sdf: SDF values (T, V_hands) of the predicted hand vertices (all predicted hands
    concatenated in order) in the predicted object, or a callable (hand_vertices (T, V, 3),
    object_state) -> (T, V) such as `lambda v, o: hand_object_sdf_values(v, o, grid)`; None
    leaves penetration and contact absent. gt_contact: (T,) bool ground-truth contact flags
    for contact accuracy (Core50: all True).
    """
    if pred_hands:
        frames = pred_hands[0].vertices.shape[0]
    elif pred_objects:
        frames = pred_objects[0].rotation.shape[0]
    else:
        frames = 0
    per_frame = _per_frame_metrics(
        pred_hands, pred_objects, gt_hands, gt_objects, object_sdf, gt_contact, canonical_object_vertices,
        contact_tolerance,
    )
    result: dict[str, Any] = {}
    for key in METRIC_KEYS:
        if key == "frames":
            result[key] = int(frames)
            continue
        entries = per_frame.get(key)
        value = _mean(entries) if entries else None
        result[key] = None if value is None else value * _UNIT_SCALE[key]
    return result


def evaluate_fit(fit: FitResult, clip: Clip, **options: Any) -> dict[str, Any]:
    """`evaluate_clip` of a fit against its clip's ground truth (options as evaluate_clip)."""
    if list(fit.frame_ids) != list(clip.frame_ids):
        raise ValueError(f"fit {fit.clip_id} covers frames {fit.frame_ids[:3]}... but the clip has {clip.frame_ids[:3]}...")
    gt_objects = [clip.gt_object] if clip.gt_object is not None else []
    return evaluate_clip(fit.hands, fit.objects, clip.gt_hands, gt_objects, **options)


def aggregate(clips: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Frame-weighted means over clips: each clip's value counts `frames` times.

    Clips where a metric is None are left out of that metric's mean; a metric absent from
    every clip stays None. `frames` is the total. Keys beyond METRIC_KEYS are ignored.
    """
    result: dict[str, Any] = {"frames": int(sum(int(c.get("frames") or 0) for c in clips))}
    for key in METRIC_KEYS:
        if key == "frames":
            continue
        weighted = [
            (float(c[key]), int(c.get("frames") or 0))
            for c in clips
            if c.get(key) is not None and not math.isnan(float(c[key]))
        ]
        total = sum(w for _, w in weighted)
        result[key] = sum(v * w for v, w in weighted) / total if weighted and total > 0 else None
    return {key: result[key] for key in METRIC_KEYS}
