"""Tracking of per-frame detections and clip selection (paper Sec. 3.1).

Per frame a detector gives object boxes and hand boxes with sides and scores. What the
dataset knows filters them first (`filter_detections`): a detection that contradicts it is
dropped for that frame, to be recovered from the track:
- hands whose side is not one of the clip's known sides (a wrong-side label when only one
  hand is in the clip);
- more hands of one side than one, or more hands than the known count: the best scores stay;
- more objects than the known count (one manipulated object): the best scores stay.
Then motpy (a Kalman filter per track, IoU matching) links the kept detections over time,
one tracker per class: "object" and "hand" (both sides in one class, so a hand whose side
label flips in some frames stays one track; the track's side is the majority of its
detections' labels among the known sides). For each known object / side the track with the
most detections is kept, joined by shorter tracks of the same class (and side) wholly before
or after it (a hand that left the view and came back, a track motpy lost; no spatial gate),
and its missing frames are filled (`interpolate_gaps`): linear interpolation between the
detected frames around a gap of at most `max_gap` frames, the nearest detected box held for
at most `max_gap` frames at the ends. Longer gaps stay empty.

Clip selection (`select_windows`): the windows where the object track and every hand track
cover more than `min_frames` (20, as the paper) consecutive frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from hodata.errors import HodataError

PROVIDER = "motpy"


@dataclass
class FrameDetections:
    """Detections of one class in one frame: boxes (N, 4) xyxy, scores (N,), sides (N,) or None."""

    boxes: np.ndarray
    scores: np.ndarray
    sides: Optional[list[str]] = None

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if len(self.scores) != len(self.boxes) or (self.sides is not None and len(self.sides) != len(self.boxes)):
            raise HodataError(f"detections disagree: {len(self.boxes)} boxes, {len(self.scores)} scores, "
                              f"{None if self.sides is None else len(self.sides)} sides")

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass
class Track:
    """One kept track over a clip.

    boxes (T, 4) (NaN where not covered), scores (T,) (detection score; the nearest one's on
    filled frames; 0 where not covered), observed (T,) bool (a detection was assigned),
    covered (T,) bool (observed or filled), detection (T,) index of the assigned detection in
    that frame's *input* list (-1 elsewhere), side for hand tracks.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    observed: torch.Tensor
    covered: torch.Tensor
    detection: torch.Tensor
    side: Optional[str] = None


@dataclass
class TrackingResult:
    object: Track
    hands: dict[str, Track] = field(default_factory=dict)   # side -> track
    dropped: int = 0                                        # detections dropped as contradictions


def filter_detections(frame: FrameDetections, known_sides: Optional[Sequence[str]], max_count: int) -> np.ndarray:
    """Indices of the detections of one frame that agree with what the dataset knows.

    known_sides: the sides present in the clip (hand detections; None: unknown, any side kept);
    max_count: how many of this class the clip holds. Returns kept indices, best score first.
    """
    order = np.argsort(-frame.scores, kind="stable")
    kept: list[int] = []
    per_side: dict[str, int] = {}
    for i in order:
        if frame.sides is not None:
            side = frame.sides[i]
            if known_sides is not None and side not in known_sides:
                continue
            if known_sides is not None and per_side.get(side, 0) >= 1:
                continue
            per_side[side] = per_side.get(side, 0) + 1
        if len(kept) >= max_count:
            break
        kept.append(int(i))
    return np.array(kept, dtype=np.int64)


def _run_motpy(frames: list[FrameDetections], kept: list[np.ndarray], min_iou: float, max_staleness: float):
    """motpy over one class -> {track id: {frame: (input detection index, box)}}."""
    from motpy import Detection, MultiObjectTracker

    tracker = MultiObjectTracker(
        dt=1.0, model_spec={"order_pos": 1, "dim_pos": 2, "order_size": 0, "dim_size": 2},  # constant velocity
        tracker_kwargs={"max_staleness": max_staleness}, matching_fn_kwargs={"min_iou": min_iou},
    )
    tracks: dict[str, dict[int, tuple[int, np.ndarray]]] = {}
    for t, (frame, idx) in enumerate(zip(frames, kept)):
        detections = [Detection(box=frame.boxes[i], score=float(frame.scores[i])) for i in idx]
        before = {id(tr): tr.steps_positive for tr in tracker.trackers}
        tracker.step(detections)
        # motpy does not return the assignment: a tracker whose positive count grew was
        # matched this step, a new tracker was made from an unmatched detection; either way
        # its box now is (close to) its detection, found again by IoU.
        for tr in tracker.trackers:
            if before.get(id(tr), -1) == tr.steps_positive:
                continue
            box = np.asarray(tr.box(), dtype=np.float64).reshape(4)
            if not len(idx):
                continue
            ious = box_iou_np(box[None], frame.boxes[idx])[0]
            j = int(idx[int(np.argmax(ious))])
            tracks.setdefault(tr.id, {})[t] = (j, frame.boxes[j])
    return tracks


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (N, M) of xyxy boxes a (N, 4) and b (M, 4)."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-12)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise IoU (...,) of xyxy boxes a, b (..., 4) (NaN boxes give 0)."""
    lo = torch.maximum(a[..., :2], b[..., :2])
    hi = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (hi - lo).clamp_min(0).prod(-1)
    area = lambda x: (x[..., 2:] - x[..., :2]).clamp_min(0).prod(-1)  # noqa: E731
    iou = inter / (area(a) + area(b) - inter).clamp_min(1e-12)
    return torch.nan_to_num(iou, nan=0.0)


def interpolate_gaps(values: torch.Tensor, known: torch.Tensor, max_gap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill frames of `values` (T, ...) where `known` (T,) is False (module docstring).

    Interior gaps of at most max_gap frames: linear interpolation between the known frames
    around them; at the ends: the nearest known value, for at most max_gap frames. Returns
    (filled values with NaN where still unknown, covered (T,) bool). Vectorised over frames.
    """
    frames = values.shape[0]
    known = known.to(torch.bool)
    out = torch.full_like(values, float("nan"))
    covered = torch.zeros(frames, dtype=torch.bool, device=values.device)
    if not bool(known.any()):
        return out, covered
    t = torch.arange(frames, device=values.device)
    idx = torch.where(known, t, torch.full_like(t, -1))
    prev = torch.cummax(idx, 0).values                                        # last known at or before t
    nxt = torch.flip(torch.cummin(torch.flip(torch.where(known, t, torch.full_like(t, frames)), [0]), 0).values, [0])
    has_prev, has_next = prev >= 0, nxt < frames
    p, n = prev.clamp(0, frames - 1), nxt.clamp(0, frames - 1)
    gap = (n - p - 1)
    interior = has_prev & has_next & ((gap <= max_gap) | known)
    w = ((t - p).to(values.dtype) / (n - p).clamp_min(1).to(values.dtype)).reshape((frames,) + (1,) * (values.dim() - 1))
    lerp = values[p] * (1 - w) + values[n] * w
    out = torch.where(interior.reshape(w.shape), lerp, out)
    head = ~has_prev & has_next & ((n - t) <= max_gap)
    tail = has_prev & ~has_next & ((t - p) <= max_gap)
    out = torch.where(head.reshape(w.shape), values[n], out)
    out = torch.where(tail.reshape(w.shape), values[p], out)
    covered = interior | head | tail
    return out, covered


def _merge_disjoint(tracks: list[dict[int, tuple[int, np.ndarray]]]) -> dict[int, tuple[int, np.ndarray]]:
    """The longest track joined by the shorter ones wholly before or after it (greedy, longest
    first): one object or hand whose motpy track broke (it left the view, or the Kalman
    prediction lost it) and restarted."""
    tracks = sorted(tracks, key=len, reverse=True)
    merged = dict(tracks[0])
    for obs in tracks[1:]:
        if max(obs) < min(merged) or min(obs) > max(merged):
            merged.update(obs)
    return merged


def _track_from(observations: dict[int, tuple[int, np.ndarray]], scores: list[np.ndarray], frames: int, max_gap: int,
                side: Optional[str]) -> Track:
    boxes = torch.full((frames, 4), float("nan"), dtype=torch.float64)
    score = torch.zeros(frames, dtype=torch.float64)
    detection = torch.full((frames,), -1, dtype=torch.int64)
    observed = torch.zeros(frames, dtype=torch.bool)
    for t, (j, box) in observations.items():
        boxes[t] = torch.as_tensor(box)
        score[t] = float(scores[t][j])
        detection[t] = j
        observed[t] = True
    filled, covered = interpolate_gaps(boxes, observed, max_gap)
    score_filled, _ = interpolate_gaps(score, observed, max_gap)
    return Track(filled, torch.nan_to_num(score_filled, nan=0.0), observed, covered, detection, side)


def _empty_track(frames: int, side: Optional[str] = None) -> Track:
    return Track(torch.full((frames, 4), float("nan"), dtype=torch.float64), torch.zeros(frames, dtype=torch.float64),
                 torch.zeros(frames, dtype=torch.bool), torch.zeros(frames, dtype=torch.bool),
                 torch.full((frames,), -1, dtype=torch.int64), side)


def track_clip(
    object_detections: Sequence[FrameDetections],
    hand_detections: Sequence[FrameDetections],
    known_sides: Optional[Sequence[str]],
    num_hands: Optional[int] = None,
    num_objects: int = 1,
    max_gap: int = 10,
    min_iou: float = 0.1,
    max_staleness: float = 12.0,
) -> TrackingResult:
    """Track one clip's object and hands (module docstring) -> TrackingResult.

    object_detections, hand_detections: one FrameDetections per frame (hands with sides);
    known_sides: the clip's hand sides, or None when the dataset does not know them (then the
    sides of the tracks come from the detections' labels); num_hands: how many hands (default
    len(known_sides), else 2); max_gap: longest gap filled, frames.
    """
    frames = len(object_detections)
    if len(hand_detections) != frames:
        raise HodataError(f"{frames} frames of object detections but {len(hand_detections)} of hand detections")
    if num_hands is None:
        num_hands = len(known_sides) if known_sides is not None else 2
    dropped = 0
    obj_kept = [filter_detections(f, None, num_objects) for f in object_detections]
    hand_kept = [filter_detections(f, known_sides, num_hands) for f in hand_detections]
    dropped += sum(len(f) - len(k) for f, k in zip(object_detections, obj_kept))
    dropped += sum(len(f) - len(k) for f, k in zip(hand_detections, hand_kept))

    obj_tracks = _run_motpy(list(object_detections), obj_kept, min_iou, max_staleness)
    obj_scores = [f.scores for f in object_detections]
    if obj_tracks:
        obj_track = _track_from(_merge_disjoint(list(obj_tracks.values())), obj_scores, frames, max_gap, None)
    else:
        obj_track = _empty_track(frames)

    hand_tracks = _run_motpy(list(hand_detections), hand_kept, min_iou, max_staleness)
    hand_scores = [f.scores for f in hand_detections]
    candidates = []
    for obs in hand_tracks.values():
        votes: dict[str, int] = {}
        for t, (j, _) in obs.items():
            side = hand_detections[t].sides[j]
            if known_sides is None or side in known_sides:
                votes[side] = votes.get(side, 0) + 1
        if votes:
            candidates.append((len(obs), max(votes, key=votes.get), obs))
    by_side: dict[str, list] = {}
    for _, side, obs in sorted(candidates, key=lambda c: -c[0]):
        if side in by_side or len(by_side) < num_hands:
            by_side.setdefault(side, []).append(obs)
    hands = {side: _track_from(_merge_disjoint(tracks), hand_scores, frames, max_gap, side)
             for side, tracks in by_side.items()}
    for side in known_sides or ():
        hands.setdefault(side, _empty_track(frames, side))
    return TrackingResult(obj_track, hands, dropped)


def longest_runs(covered: torch.Tensor) -> list[tuple[int, int]]:
    """Runs [start, stop) of consecutive True frames of covered (T,), in order."""
    runs, start = [], None
    values = covered.tolist()
    for t, c in enumerate(values + [False]):
        if c and start is None:
            start = t
        elif not c and start is not None:
            runs.append((start, t))
            start = None
    return runs


def select_windows(result: TrackingResult, min_frames: int = 20) -> list[tuple[int, int]]:
    """Windows [start, stop) where the object track and every hand track cover more than
    min_frames consecutive frames (paper Sec. 3.1: > 20)."""
    covered = result.object.covered.clone()
    for track in result.hands.values():
        covered &= track.covered
    return [(a, b) for a, b in longest_runs(covered) if b - a > min_frames]
