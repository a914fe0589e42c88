"""Label quality without ground truth: signals of a fit, and the score they combine into.

A fit's labels are trusted as far as what fitting can check agrees with them. Each signal
is measured per frame (T,) or once per clip, from the fitted meshes, the evidence and the
optimiser's record (`hodata.fitting.pipeline.measure_quality_signals` gathers them):

    signal              unit / range        what it sees
    mask_iou            [0, 1]              object silhouette against its target mask
    v2d_rel             fraction            hand 2D residual / diagonal of the hand's 2D box
    penetration_m       metres >= 0         deepest hand vertex inside the object
    contact_gap_m       metres >= 0         hand-object distance (0 when they touch)
    depth_offset_rel    signed fraction     (hand centroid z - object centroid z) / object diameter
    object_accel_m      metres >= 0         object jitter: mean vertex acceleration at frame t
    hand_accel_m        metres >= 0         hand jitter, as for the object
    detector_score      [0, 1]              hand detector confidence (1 without a detector)
    loss_change         fraction >= 0       |L_end - L_end-w| / |L_end-w| of the last stage (clip)
    candidate_margin    fraction >= 0       (2nd best - best) / |best| of the joint objective over
                                            the object-pose candidates x hand starts (clip;
                                            K > 1 only)
    hypothesis_margin   IoU difference      best init hypothesis IoU - best IoU of a distinct one
                                            (>= min angle away; clip; none distinct: missing)
    hand_scale_log      >= 0                |log s_hand| (scale prior, paper Eq. 6 `scale`)
    object_scale_log    >= 0                |log(s_obj diameter / category diameter)| (approximate meshes)

The monocular fit's main error is depth, which 2D agreement cannot see: a hand scaled
along its viewing ray projects to the same pixels. Penetration, contact gap and the depth
offset are the signals that see it (a hand 10 cm behind the object is no grasp).

`frame_badness` turns each signal into a non-negative badness b_i (0 = nothing wrong; the
transforms below), and `combine` into a per-frame score

    q_t = sigmoid(c - sum_i w_i b_i,t) * 0.5 ** (raised problem flags)     in [0, 1]

with weights `DEFAULT_WEIGHTS` and intercept c = `DEFAULT_INTERCEPT`: on the benchmark it
fitted, q is the probability that the label is good, so `DEFAULT_THRESHOLD` (the benchmark's
best F1 of "good") is a threshold with a meaning; on other data it ranks labels, its level is
not calibrated. A missing signal (None or NaN) has badness 0. The clip score is the mean of
the per-frame scores. The weights were fitted by bench/bench_quality.py on
one half of the robustness benchmark's fits (logistic regression of "good label": hand
vertex error < 2 cm and object ADD-S < 1 cm, weights constrained >= `MIN_WEIGHTS`, a floor
set by design, 0 for most signals) and reported on the other half (bench/RESULTS.md,
"Label quality"; refitted in "Session 13").

Every function is pure (tensors or floats in, tensors or floats out) and runs after the
optimiser: no host syncs in an optimiser loop.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import torch

QUALITY_VERSION = 2   # 2: weights refitted on the estimator-own 2D target (session 13); 1: the first fit
RAISED_FLAG_FACTOR = 0.5    # each raised problem flag (not already a signal) halves the score

# Signal -> badness transforms (see `frame_badness`).
V2D_REL_SCALE = 0.05         # a residual of 5 % of the hand box diagonal is one unit of badness
PENETRATION_SCALE_M = 0.01   # 1 cm of penetration is one unit
CONTACT_SCALE_M = 0.01       # 1 cm between hand and object is one unit
DEPTH_ALLOWANCE = 0.5        # |depth offset| within half an object diameter is plausible for a grasp
ACCEL_SCALE_M = 0.01         # 1 cm of acceleration per (fitted frame)^2 is one unit
MARGIN_SCALE = 0.1           # a candidate / hypothesis margin below 0.1 counts as ambiguous
CONVERGENCE_SCALE = 0.01     # 1 % relative change over the last steps is one unit

SIGNALS: tuple[str, ...] = (
    "mask_iou", "v2d_rel", "penetration_m", "contact_gap_m", "depth_offset_rel", "object_accel_m", "hand_accel_m",
    "detector_score", "loss_change", "candidate_margin", "hypothesis_margin", "hand_scale_log", "object_scale_log",
)

# Fitted by bench/bench_quality.py on the fit half of its run (bench/quality.json, 2026-12-04,
# session 13: all 48 scenes at hand-init noise x1, x3, x5, both methods, 50 steps per stage, 1440
# frame labels per half; the simulated init's 2D target carrying its own error, the default since
# then); reported on the other half in bench/RESULTS.md, "Session 13", "The label-quality
# score refitted".
# The previous weights (2026-12-02, fitted on an exact 2D target: mask_iou 11.5, v2d_rel 1.07,
# hand_scale_log 8.05, intercept 2.08, threshold 0.40) ranked the new fits as well (AUROC 0.86
# against 0.87) but their threshold kept 11 % of labels at recall 0.31. Signals at 0 did not
# raise the fit's likelihood there (the detector score and candidate margin do not vary on that
# benchmark: ground-truth boxes, one object candidate).
DEFAULT_WEIGHTS: dict[str, float] = {
    "mask_iou": 4.0, "v2d_rel": 0.5378, "penetration_m": 0.9405, "contact_gap_m": 0.1, "depth_offset_rel": 1.0,
    "object_accel_m": 0.157, "hand_accel_m": 0.0803, "detector_score": 0.0, "loss_change": 0.0,
    "candidate_margin": 0.0, "hypothesis_margin": 0.1086, "hand_scale_log": 3.7988, "object_scale_log": 0.0,
}
DEFAULT_INTERCEPT = 0.4587
DEFAULT_THRESHOLD = 0.25   # best F1 of "good" on the fit half (0.2504)

# Floors of the weights, by design: failures the benchmark barely contains (its masks are
# good, so a wrong object silhouette, a hand deep in or far behind the object are rare there)
# would otherwise get no weight from the data. bench_quality.py fits the weights with these
# as lower bounds: IoU 0.8 alone gives exp(-0.8) = 0.45, a hand a diameter behind the object's
# centre exp(-0.5), 1 cm of penetration or gap exp(-0.1) at least.
MIN_WEIGHTS: dict[str, float] = {"mask_iou": 4.0, "depth_offset_rel": 1.0, "penetration_m": 0.1, "contact_gap_m": 0.1}

# Flags whose problem is already one of the signals (not counted again by `combine`).
SIGNAL_FLAGS: tuple[str, ...] = ("low_object_iou", "missing_object_evidence")


# ----------------------------------------------------------------------------- signals


def relative_reprojection_error(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean 2D distance of projected points to their targets over the target's box diagonal.

    projected, target: (T, V, 2) pixels -> (T,). The box is the axis-aligned 2D box of the
    target points per frame, so the residual is relative to the hand's size in the image (a
    near hand may miss by more pixels than a far one for the same 3D error).
    """
    if projected.shape != target.shape or projected.dim() != 3 or projected.shape[-1] != 2:
        raise ValueError(f"projected {tuple(projected.shape)} and target {tuple(target.shape)} must both be (T, V, 2)")
    residual = (projected - target).norm(dim=-1).mean(-1)
    diagonal = (target.amax(-2) - target.amin(-2)).norm(dim=-1)
    return residual / diagonal.clamp_min(1.0)


def penetration_depth(signed_distance: torch.Tensor) -> torch.Tensor:
    """Deepest point inside: max(0, -min_p d_t,p). signed_distance: (T, P), negative inside -> (T,)."""
    _check_rows("signed_distance", signed_distance)
    return (-signed_distance.amin(-1)).clamp_min(0.0)


def contact_gap(signed_distance: torch.Tensor) -> torch.Tensor:
    """Distance between the point set and the surface when apart: max(0, min_p d_t,p) -> (T,).

    0 when any point touches or enters the object (signed_distance (T, P), negative inside).
    """
    _check_rows("signed_distance", signed_distance)
    return signed_distance.amin(-1).clamp_min(0.0)


def depth_offset(hand_vertices: torch.Tensor, object_vertices: torch.Tensor) -> torch.Tensor:
    """(mean hand z - mean object z) / object diameter, per frame.

    hand_vertices: (T, V, 3), object_vertices: (T, P, 3), camera space -> (T,) signed:
    positive when the hand lies behind the object's centre. The diameter is the diagonal of
    the object's 3D box in that frame.
    """
    if hand_vertices.dim() != 3 or object_vertices.dim() != 3 or hand_vertices.shape[0] != object_vertices.shape[0]:
        raise ValueError(f"hand {tuple(hand_vertices.shape)} and object {tuple(object_vertices.shape)} vertices must be "
                         "(T, V, 3) and (T, P, 3) with the same T")
    diameter = (object_vertices.amax(-2) - object_vertices.amin(-2)).norm(dim=-1)
    gap = hand_vertices[..., 2].mean(-1) - object_vertices[..., 2].mean(-1)
    return gap / diameter.clamp_min(1e-6)


def acceleration_magnitude(points: torch.Tensor) -> torch.Tensor:
    """Mean over points of |x_t+1 - 2 x_t + x_t-1| (T,) from points (T, P, 3).

    The first and last frames take their neighbour's value; a clip of fewer than 3 frames
    has no acceleration (zeros).
    """
    if points.dim() != 3:
        raise ValueError(f"points must be (T, P, 3), got {tuple(points.shape)}")
    frames = points.shape[0]
    if frames < 3:
        return points.new_zeros(frames)
    accel = (points[2:] - 2 * points[1:-1] + points[:-2]).norm(dim=-1).mean(-1)
    return torch.cat([accel[:1], accel, accel[-1:]])


def relative_loss_change(history: Sequence[float] | torch.Tensor, window: Optional[int] = None) -> Optional[float]:
    """|L[-1] - L[-1-w]| / |L[-1-w]| over the last w steps of a loss history (None if too short).

    window: default a tenth of the history, at least 5 steps. A converged optimiser changes
    the loss by little over its last steps; a large change says it was still moving.
    """
    values = torch.as_tensor(history, dtype=torch.float64).flatten()
    if window is None:
        window = max(5, len(values) // 10)
    if window < 1 or len(values) <= window:
        return None
    end, before = float(values[-1]), float(values[-1 - window])
    if not (math.isfinite(end) and math.isfinite(before)):
        return None
    return abs(end - before) / max(abs(before), 1e-12)


def candidate_margin(totals: Sequence[float] | torch.Tensor) -> Optional[float]:
    """(second lowest - lowest) / |lowest| of the candidates' objective totals (None for K < 2).

    A small margin: another object pose explains the evidence about as well (an ambiguous
    silhouette). Non-finite totals (diverged candidates) are left out.
    """
    values = torch.as_tensor(totals, dtype=torch.float64).flatten()
    values = values[torch.isfinite(values)].sort().values
    if len(values) < 2:
        return None
    return float((values[1] - values[0]) / values[0].abs().clamp_min(1e-12))


def hypothesis_margin(ious: torch.Tensor, rotations: torch.Tensor, min_angle_deg: float = 30.0) -> Optional[float]:
    """Best mean IoU minus the best mean IoU of a hypothesis at least `min_angle_deg` away.

    ious: (K,) mean IoU of the object init's hypotheses; rotations: (K, T, 3, 3) their
    motions. The angle between two motions is the mean over frames of their geodesic angle.
    None when no hypothesis differs from the best by that much (no competing pose). Works
    with K = 1 fitted candidate: the init's other hypotheses still show an ambiguous silhouette.
    """
    if ious.dim() != 1 or rotations.dim() != 4 or rotations.shape[0] != ious.shape[0]:
        raise ValueError(f"ious (K,) and rotations (K, T, 3, 3) expected, got {tuple(ious.shape)}, "
                         f"{tuple(rotations.shape)}")
    best = int(ious.argmax())
    relative = rotations[best][None].transpose(-1, -2) @ rotations
    cos = ((relative.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1.0, 1.0)
    angle = torch.rad2deg(torch.arccos(cos)).mean(-1)  # (K,)
    distinct = angle >= min_angle_deg
    if not bool(distinct.any()):
        return None
    return float(ious[best] - ious[distinct].max())


def log_scale_deviation(value: float | torch.Tensor, reference: float | torch.Tensor = 1.0) -> float:
    """|log(value / reference)|: how far a scale strays from its prior (0 at the prior)."""
    value, reference = float(value), float(reference)
    if value <= 0 or reference <= 0:
        raise ValueError(f"scales must be positive, got {value} and {reference}")
    return abs(math.log(value / reference))


def _check_rows(name: str, x: torch.Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must be (T, P), got {tuple(x.shape)}")


# ----------------------------------------------------------------------------- score


def _frame_values(value, frames: int) -> torch.Tensor:
    """A signal as (T,) float64 with NaN where missing (None -> all NaN, a scalar broadcast)."""
    if value is None:
        return torch.full((frames,), float("nan"), dtype=torch.float64)
    x = torch.as_tensor([float("nan") if v is None else v for v in value] if isinstance(value, (list, tuple))
                        else value, dtype=torch.float64).detach().cpu()
    if x.dim() == 0:
        return x.expand(frames).clone()
    if x.shape != (frames,):
        raise ValueError(f"a signal must be a scalar or have one value per frame ({frames}), got shape {tuple(x.shape)}")
    return x


def frame_badness(signals: Mapping[str, object], frames: int) -> dict[str, torch.Tensor]:
    """Badness b_i (T,) >= 0 of each known signal (module table); 0 where a signal is missing.

    mask_iou: 1 - IoU; v2d_rel: / V2D_REL_SCALE; penetration_m, contact_gap_m: / their
    scales; depth_offset_rel: max(0, |offset| - DEPTH_ALLOWANCE); *_accel_m: / ACCEL_SCALE_M;
    detector_score: 1 - score; loss_change: / CONVERGENCE_SCALE; candidate_margin and
    hypothesis_margin: max(0, 1 - margin / MARGIN_SCALE); *_scale_log as they are.
    Unknown signal names raise (a typo would silently drop a signal).
    """
    unknown = set(signals) - set(SIGNALS)
    if unknown:
        raise ValueError(f"unknown quality signal(s) {sorted(unknown)}; known: {', '.join(SIGNALS)}")
    out = {}
    for name, value in signals.items():
        x = _frame_values(value, frames)
        if name == "mask_iou":
            b = 1.0 - x.clamp(0.0, 1.0)
        elif name == "v2d_rel":
            b = x / V2D_REL_SCALE
        elif name == "penetration_m":
            b = x / PENETRATION_SCALE_M
        elif name == "contact_gap_m":
            b = x / CONTACT_SCALE_M
        elif name == "depth_offset_rel":
            b = (x.abs() - DEPTH_ALLOWANCE).clamp_min(0.0)
        elif name in ("object_accel_m", "hand_accel_m"):
            b = x / ACCEL_SCALE_M
        elif name == "detector_score":
            b = 1.0 - x.clamp(0.0, 1.0)
        elif name == "loss_change":
            b = x / CONVERGENCE_SCALE
        elif name in ("candidate_margin", "hypothesis_margin"):
            b = (1.0 - x / MARGIN_SCALE).clamp_min(0.0)
        else:  # hand_scale_log, object_scale_log
            b = x
        out[name] = torch.nan_to_num(b.clamp_min(0.0), nan=0.0, posinf=1e6)
    return out


def combine(badness: Mapping[str, torch.Tensor], weights: Optional[Mapping[str, float]] = None,
            raised_flags: int = 0, intercept: Optional[float] = None) -> torch.Tensor:
    """q_t = sigmoid(c - sum_i w_i b_i,t) * RAISED_FLAG_FACTOR ** raised_flags -> (T,) in [0, 1].

    badness: name -> (T,) from `frame_badness`; weights: name -> w_i >= 0 (default
    DEFAULT_WEIGHTS; a signal without a weight does not enter the score); intercept c
    (default DEFAULT_INTERCEPT): the score of a label with nothing wrong is sigmoid(c).
    """
    intercept = DEFAULT_INTERCEPT if intercept is None else float(intercept)
    weights = DEFAULT_WEIGHTS if weights is None else weights
    if any(w < 0 for w in weights.values()):
        raise ValueError("quality weights must be non-negative (a worse signal never raises the score)")
    if not badness:
        raise ValueError("no signals to combine")
    total = sum(float(weights.get(name, 0.0)) * b for name, b in badness.items())
    return torch.sigmoid(intercept - total) * RAISED_FLAG_FACTOR ** int(raised_flags)


def label_quality(signals: Mapping[str, object], frames: int, flags: Optional[Mapping[str, bool]] = None,
                  weights: Optional[Mapping[str, float]] = None, intercept: Optional[float] = None) -> dict:
    """The quality record of a fit: per-frame scores, the clip score and what they came from.

    signals: name -> (T,) values, a clip scalar or None (module table); flags: the fit's
    problem flags (True = bad); each raised flag not in SIGNAL_FLAGS halves every frame's
    score. Returns {"version", "score": [T floats], "clip_score", "signals": {name: [T] or
    scalar or None}, "weights", "intercept", "flags_counted": [names]} (JSON-ready; NaN -> None).
    weights / intercept: see `combine`.
    """
    if frames < 1:
        raise ValueError("a clip has at least one frame")
    flags = dict(flags or {})
    counted = sorted(name for name, raised in flags.items() if raised)
    penalised = [name for name in counted if name not in SIGNAL_FLAGS]
    used = dict(DEFAULT_WEIGHTS if weights is None else weights)
    intercept = DEFAULT_INTERCEPT if intercept is None else float(intercept)
    score = combine(frame_badness(signals, frames), used, len(penalised), intercept)
    return {
        "version": QUALITY_VERSION,
        "score": [float(v) for v in score.tolist()],
        "clip_score": float(score.mean()),
        "signals": {name: _json_signal(value) for name, value in signals.items()},
        "weights": used,
        "intercept": intercept,
        "flags_counted": counted,
    }


def _json_signal(value):
    if value is None:
        return None
    x = torch.as_tensor([float("nan") if v is None else v for v in value] if isinstance(value, (list, tuple))
                        else value, dtype=torch.float64).detach().cpu()
    finite = lambda v: float(v) if math.isfinite(v) else None  # noqa: E731
    return finite(float(x)) if x.dim() == 0 else [finite(v) for v in x.tolist()]


__all__ = [
    "SIGNALS", "DEFAULT_WEIGHTS", "DEFAULT_INTERCEPT", "DEFAULT_THRESHOLD", "MIN_WEIGHTS", "SIGNAL_FLAGS", "QUALITY_VERSION", "relative_reprojection_error", "penetration_depth",
    "contact_gap", "depth_offset", "acceleration_magnitude", "relative_loss_change", "candidate_margin",
    "hypothesis_margin", "log_scale_deviation", "frame_badness", "combine", "label_quality",
]
