"""Per-clip metric dicts (keys, units, absent metrics) and frame-weighted aggregation."""

import math

import pytest
import torch

from hodata.geometry.rotations import random_rotations
from hodata.metrics.summary import METRIC_KEYS, aggregate, evaluate_clip
from hodata.types import HandState, ObjectState

T = 4


def _hand(generator, side="right", shift=(0.0, 0.0, 0.0)) -> HandState:
    joints = torch.randn(T, 21, 3, generator=generator, dtype=torch.float64) * 0.04 + torch.tensor([0, 0, 0.5])
    verts = torch.randn(T, 778, 3, generator=generator, dtype=torch.float64) * 0.04 + torch.tensor([0, 0, 0.5])
    d = torch.tensor(shift, dtype=torch.float64)
    return HandState(side=side, vertices=verts + d, joints=joints + d)


def _shifted(hand: HandState, shift) -> HandState:
    d = torch.tensor(shift, dtype=torch.float64)
    return HandState(side=hand.side, vertices=hand.vertices + d, joints=hand.joints + d)


def _object(generator) -> tuple[ObjectState, torch.Tensor]:
    canonical = torch.randn(200, 3, generator=generator, dtype=torch.float64) * 0.03
    rotation = random_rotations(T, generator=generator, dtype=torch.float64)
    translation = torch.tensor([0.0, 0.0, 0.6], dtype=torch.float64).expand(T, 3).clone()
    return ObjectState("003_cracker_box", rotation, translation, 1.0), canonical


def test_keys_units_and_perfect_prediction(generator):
    hand = _hand(generator)
    obj, canonical = _object(generator)
    pred_hand = _shifted(hand, (0.01, 0.0, 0.0))  # 1 cm off
    pred_obj = ObjectState(obj.model_id, obj.rotation, obj.translation + torch.tensor([0.0, 0.02, 0.0]), 1.0)
    sdf = torch.full((T, 778), 0.01, dtype=torch.float64)
    sdf[0, 5] = -0.003  # 3 mm inside in frame 0 only
    result = evaluate_clip(
        [pred_hand], [pred_obj], [hand], [obj], object_sdf=sdf, canonical_object_vertices=canonical,
        gt_contact=torch.ones(T, dtype=torch.bool),
    )
    assert tuple(result) == METRIC_KEYS
    assert result["frames"] == T
    assert result["hand_vertex_cm"] == pytest.approx(1.0)
    assert result["hand_joint_cm"] == pytest.approx(1.0)
    assert result["hand_joint_pa_cm"] == pytest.approx(0.0, abs=1e-5)
    assert result["hand_joint_st_cm"] == pytest.approx(0.0, abs=1e-9)
    assert result["hand_vertex_pa_cm"] == pytest.approx(0.0, abs=1e-5)
    assert result["hand_fscore_pa_5mm"] == pytest.approx(1.0)
    assert result["hand_fscore_pa_15mm"] == pytest.approx(1.0)
    assert 0.0 <= result["hand_fscore_5mm"] < 1.0
    assert result["object_vertex_cm"] == pytest.approx(2.0)
    assert 0.0 < result["object_adds_cm"] <= 2.0
    assert result["penetration_mm"] == pytest.approx(3.0 / T)
    assert result["contact_pct"] == pytest.approx(100.0 / T)
    assert result["contact_accuracy_pct"] == pytest.approx(100.0 / T)


def test_missing_ground_truth_is_absent_not_zero(generator):
    hand = _hand(generator)
    obj, canonical = _object(generator)
    obj.vertices = torch.randn(T, 100, 3, generator=generator, dtype=torch.float64)
    # Core50 / Epic: no ground truth, interaction metrics only
    result = evaluate_clip([hand], [obj], object_sdf=lambda v, o: torch.full(v.shape[:2], -0.001, dtype=v.dtype))
    for key in METRIC_KEYS:
        if key in ("penetration_mm", "contact_pct", "frames"):
            assert result[key] is not None
        else:
            assert result[key] is None, key
    assert result["penetration_mm"] == pytest.approx(1.0)
    assert result["contact_pct"] == pytest.approx(100.0)
    # no SDF either: interaction metrics absent too
    result = evaluate_clip([hand], [obj])
    assert result["penetration_mm"] is None and result["contact_pct"] is None and result["frames"] == T


def test_nan_ground_truth_frames_are_left_out(generator):
    hand = _hand(generator)
    pred = _shifted(hand, (0.0, 0.0, 0.02))
    gt = _shifted(hand, (0.0, 0.0, 0.0))
    gt.joints[1] = float("nan")
    gt.vertices[1, 3] = float("nan")
    pred.joints[1] += 1.0  # a huge error in the frame without ground truth must not count
    result = evaluate_clip([pred], [], [gt], [])
    assert result["hand_joint_cm"] == pytest.approx(2.0)
    assert result["hand_vertex_cm"] == pytest.approx(2.0)
    assert math.isfinite(result["hand_vertex_pa_cm"])


def test_hands_matched_by_side(generator):
    right = _hand(generator, "right")
    left = _hand(generator, "left")
    result = evaluate_clip([left, _shifted(right, (0.0, 0.03, 0.0))], [], [right], [])
    assert result["hand_vertex_cm"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="left hand"):
        evaluate_clip([right], [], [left], [])


def test_aggregate_is_frame_weighted_and_keeps_none():
    clips = [
        {key: None for key in METRIC_KEYS} | {"frames": 10, "hand_vertex_cm": 1.0, "penetration_mm": 2.0},
        {key: None for key in METRIC_KEYS} | {"frames": 30, "hand_vertex_cm": 3.0, "penetration_mm": None},
    ]
    total = aggregate(clips)
    assert tuple(total) == METRIC_KEYS
    assert total["frames"] == 40
    assert total["hand_vertex_cm"] == pytest.approx((10 * 1.0 + 30 * 3.0) / 40)
    assert total["penetration_mm"] == pytest.approx(2.0)
    assert total["object_vertex_cm"] is None and total["contact_pct"] is None
    assert aggregate([])["frames"] == 0 and aggregate([])["hand_vertex_cm"] is None


def test_evaluate_fit_uses_the_clips_ground_truth(generator, tmp_path):
    from hodata.metrics.summary import evaluate_fit
    from hodata.types import Clip, FitResult

    hand = _hand(generator)
    obj, canonical = _object(generator)
    ids = [f"{i:04d}" for i in range(T)]
    clip = Clip("ho3d", "SM1", ids, [tmp_path / f"{i}.png" for i in ids], torch.eye(3), (480, 640), obj.model_id,
                ["right"], gt_object=obj, gt_hands=[hand])
    fit = FitResult("ho3d_SM1_0000", "ho3d", "SM1", ids, torch.eye(3), (480, 640), [_shifted(hand, (0.0, 0.0, 0.05))],
                    [obj])
    result = evaluate_fit(fit, clip, canonical_object_vertices={obj.model_id: canonical})
    assert result["hand_joint_cm"] == pytest.approx(5.0) and result["object_vertex_cm"] == pytest.approx(0.0)
    fit.frame_ids = ids[::-1]
    with pytest.raises(ValueError, match="frames"):
        evaluate_fit(fit, clip)
