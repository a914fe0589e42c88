"""Tracking and clip selection (paper Sec. 3.1): contradicting and missed detections recovered."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hodata.evidence.tracking import (
    FrameDetections,
    box_iou,
    filter_detections,
    interpolate_gaps,
    select_windows,
    track_clip,
)


def smooth_boxes(rng: np.random.Generator, frames: int, centre, size) -> np.ndarray:
    """A box moving smoothly (sinusoids of random phase), (T, 4) xyxy."""
    t = np.arange(frames)
    cx = centre[0] + 40 * np.sin(2 * np.pi * t / 60 + rng.uniform(0, 6)) + 0.5 * t
    cy = centre[1] + 25 * np.sin(2 * np.pi * t / 45 + rng.uniform(0, 6))
    w = size[0] * (1 + 0.1 * np.sin(2 * np.pi * t / 80))
    h = size[1] * (1 + 0.1 * np.cos(2 * np.pi * t / 70))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def corrupted_sequence(seed: int, frames: int = 100, miss: float = 0.3, wrong_side: float = 0.1, jitter: float = 3.0):
    """GT boxes of one object and one right hand; detections with misses, wrong sides, jitter and
    one spurious hand far away in 10 % of frames."""
    rng = np.random.default_rng(seed)
    obj = smooth_boxes(rng, frames, (300, 220), (90, 110))
    hand = smooth_boxes(rng, frames, (380, 300), (120, 100))
    obj_dets, hand_dets = [], []
    for t in range(frames):
        boxes, sides, scores = [], [], []
        if rng.random() >= miss:
            boxes.append(hand[t] + rng.normal(0, jitter, 4))
            sides.append("left" if rng.random() < wrong_side else "right")
            scores.append(rng.uniform(0.6, 1.0))
        if rng.random() < 0.1:  # a spurious detection elsewhere (a second person's hand)
            boxes.append(np.array([20, 20, 80, 90], dtype=float) + rng.normal(0, 2, 4))
            sides.append("right")
            scores.append(rng.uniform(0.3, 0.5))
        hand_dets.append(FrameDetections(np.array(boxes).reshape(-1, 4), np.array(scores), sides))
        if rng.random() >= miss:
            obj_dets.append(FrameDetections((obj[t] + rng.normal(0, jitter, 4))[None], [rng.uniform(0.5, 1.0)]))
        else:
            obj_dets.append(FrameDetections(np.zeros((0, 4)), []))
    return obj, hand, obj_dets, hand_dets


def recovered(track_boxes: torch.Tensor, gt: np.ndarray) -> float:
    return float((box_iou(track_boxes, torch.as_tensor(gt)) >= 0.5).double().mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tracks_recover_missed_and_wrong_side_detections(seed):
    obj, hand, obj_dets, hand_dets = corrupted_sequence(seed)
    # Before tracking: the right-hand detections alone (a wrong side or a miss loses the frame).
    raw_hand = np.zeros(len(hand), dtype=bool)
    for t, d in enumerate(hand_dets):
        for box, side in zip(d.boxes, d.sides):
            if side == "right":
                raw_hand[t] |= bool(box_iou(torch.as_tensor(box), torch.as_tensor(hand[t])) >= 0.5)
    assert raw_hand.mean() < 0.7  # the corruption really loses ~37 % of frames
    result = track_clip(obj_dets, hand_dets, known_sides=["right"])
    assert set(result.hands) == {"right"}
    assert recovered(result.hands["right"].boxes, hand) >= 0.9
    assert recovered(result.object.boxes, obj) >= 0.9
    assert result.dropped > 0


def test_two_hands_keep_their_sides_when_labels_flip():
    rng = np.random.default_rng(5)
    frames = 60
    right = smooth_boxes(rng, frames, (450, 300), (100, 100))
    left = smooth_boxes(rng, frames, (150, 300), (100, 100))
    hand_dets = []
    for t in range(frames):
        boxes, sides = [right[t], left[t]], ["right", "left"]
        if t % 7 == 3:
            sides = ["left", "left"]  # the right hand mislabelled: two lefts contradict "one per side"
        hand_dets.append(FrameDetections(np.array(boxes), np.array([0.9, 0.8]), sides))
    obj_dets = [FrameDetections(np.array([[280, 280, 330, 330]], dtype=float), [0.9]) for _ in range(frames)]
    result = track_clip(obj_dets, hand_dets, known_sides=["right", "left"])
    assert recovered(result.hands["right"].boxes, right) >= 0.95
    assert recovered(result.hands["left"].boxes, left) >= 0.95


def test_filter_drops_contradictions():
    frame = FrameDetections(np.zeros((4, 4)), [0.5, 0.9, 0.7, 0.8], ["right", "right", "left", "left"])
    assert filter_detections(frame, ["right"], 1).tolist() == [1]          # best right only
    assert filter_detections(frame, ["right", "left"], 2).tolist() == [1, 3]  # one per side
    objects = FrameDetections(np.zeros((3, 4)), [0.1, 0.3, 0.2])
    assert filter_detections(objects, None, 1).tolist() == [1]


def test_interpolate_gaps_linear_and_bounded():
    values = torch.arange(10, dtype=torch.float64)[:, None].repeat(1, 2) * 2.0
    known = torch.tensor([0, 1, 0, 0, 1, 1, 0, 0, 0, 0], dtype=torch.bool)
    filled, covered = interpolate_gaps(values, known, max_gap=2)
    assert torch.allclose(filled[1:6, 0], values[1:6, 0])     # linear gap 2-3 reproduced exactly
    assert filled[0, 0] == 2.0 and covered[0]                 # head held from frame 1
    assert covered.tolist() == [True] * 8 + [False] * 2       # tail held for 2 frames only
    assert torch.isnan(filled[8:]).all()
    # Interior gaps longer than max_gap stay empty (no partial fill from either side).
    _, covered = interpolate_gaps(values, torch.tensor([1, 0, 0, 0, 1, 0, 0, 1, 0, 1], dtype=torch.bool), max_gap=2)
    assert covered.tolist() == [True, False, False, False, True, True, True, True, True, True]


def test_select_windows_needs_both_tracks_longer_than_min_frames():
    obj, hand, obj_dets, hand_dets = corrupted_sequence(0, frames=80, miss=0.0, wrong_side=0.0)
    for t in range(30, 50):  # the hand leaves for 20 frames
        hand_dets[t] = FrameDetections(np.zeros((0, 4)), [], [])
    result = track_clip(obj_dets, hand_dets, known_sides=["right"], max_gap=5)
    windows = select_windows(result, min_frames=20)
    # The 20-frame gap is longer than max_gap: not bridged, so two windows of 30 frames.
    assert windows == [(0, 30), (50, 80)]
    assert select_windows(result, min_frames=30) == []  # "more than" min_frames
    obj_dets[10] = FrameDetections(np.zeros((0, 4)), [])  # one missed object box is bridged
    assert select_windows(track_clip(obj_dets, hand_dets, known_sides=["right"], max_gap=5)) == windows
