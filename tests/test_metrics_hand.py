"""Hand metrics against the official scorer's definitions (re-derived with scipy / numpy)."""

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes

from hodata.geometry.rotations import random_rotations
from hodata.metrics import hand as hm


def _scipy_align_w_scale(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The official align_w_scale, one frame, via scipy (independent route)."""
    gt_c, pred_c = gt - gt.mean(0), pred - pred.mean(0)
    s_gt = np.linalg.norm(gt_c) + 1e-8
    s_pred = np.linalg.norm(pred_c) + 1e-8
    rot, scale = orthogonal_procrustes(gt_c / s_gt, pred_c / s_pred)
    return (pred_c / s_pred) @ rot.T * scale * s_gt + gt.mean(0)


def _random_similarity(points: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    frames = points.shape[0]
    rotation = random_rotations(frames, generator=generator, dtype=points.dtype)
    scale = 0.5 + torch.rand(frames, generator=generator, dtype=points.dtype)
    shift = torch.randn(frames, 3, generator=generator, dtype=points.dtype)
    return scale[:, None, None] * points @ rotation.transpose(-1, -2) + shift[:, None]


def test_procrustes_align_matches_scipy_orthogonal_procrustes(generator):
    gt = torch.randn(6, 21, 3, generator=generator, dtype=torch.float64) * 0.05
    pred = gt + torch.randn(6, 21, 3, generator=generator, dtype=torch.float64) * 0.02
    pred = _random_similarity(pred, generator)
    ours = hm.procrustes_align(pred, gt)
    for t in range(6):
        np.testing.assert_allclose(ours[t].numpy(), _scipy_align_w_scale(gt[t].numpy(), pred[t].numpy()), atol=1e-12)


def test_procrustes_keeps_reflections_like_scipy(generator):
    gt = torch.randn(3, 21, 3, generator=generator, dtype=torch.float64)
    mirrored = gt * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    rotation, *_ = hm.procrustes_transform(mirrored, gt)
    torch.testing.assert_close(torch.linalg.det(rotation), -torch.ones(3, dtype=torch.float64))
    assert hm.pa_error(mirrored, gt).max().item() < 1e-7  # the scorer's +1e-8 on the norms
    for t in range(3):
        np.testing.assert_allclose(
            hm.procrustes_align(mirrored, gt)[t].numpy(), _scipy_align_w_scale(gt[t].numpy(), mirrored[t].numpy()),
            atol=1e-12,
        )


def test_similarity_transform_of_gt_has_zero_pa_error_and_pa_fscore_one(generator):
    gt = torch.randn(5, 778, 3, generator=generator, dtype=torch.float64) * 0.04 + torch.tensor([0, 0, 0.6], dtype=torch.float64)
    pred = _random_similarity(gt, generator)
    assert hm.pa_error(pred, gt).max().item() < 1e-7  # the scorer's +1e-8 on the norms
    assert hm.vertex_error(pred, gt).min().item() > 0.05
    torch.testing.assert_close(hm.fscore(pred, gt, 0.005, aligned=True), torch.ones(5, dtype=torch.float64))
    assert hm.fscore(pred, gt, 0.005).max().item() < 1.0
    assert hm.fscore(pred, gt, 0.015).max().item() < 1.0


def test_pa_alignment_of_float32_on_device_of_inputs(generator):
    gt = (torch.randn(4, 21, 3, generator=generator) * 0.05).float()
    pred = _random_similarity(gt.double(), generator).float()
    aligned = hm.procrustes_align(pred, gt)
    assert aligned.dtype == torch.float32 and aligned.device == gt.device
    assert hm.pa_error(pred, gt).max().item() < 1e-5


def test_scale_translation_alignment_uses_wrist_to_joint4_and_root():
    gt = torch.randn(3, 21, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.05
    pred = 1.7 * gt + torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    aligned = hm.scale_translation_align(pred, gt)
    torch.testing.assert_close(aligned, gt, atol=1e-12, rtol=0)
    assert hm.st_joint_error(pred, gt).max().item() < 1e-12
    # only the 0-4 bone sets the scale: perturbing another joint leaves the scale alone
    pred2 = pred.clone()
    pred2[:, 10] += 0.5
    aligned2 = hm.scale_translation_align(pred2, gt)
    torch.testing.assert_close(aligned2[:, [0, 4]], gt[:, [0, 4]], atol=1e-12, rtol=0)
    # a rotation is not removed by this alignment (unlike Procrustes)
    rot = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert hm.st_joint_error(gt @ rot.T, gt).min().item() > 1e-3
    assert hm.pa_error(gt @ rot.T, gt).max().item() < 1e-7


def test_scale_translation_alignment_with_degenerate_bone_matches_scorer():
    gt = torch.randn(1, 21, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    pred = torch.zeros(1, 21, 3, dtype=torch.float64)  # the scorer's all-zero template prediction
    aligned = hm.scale_translation_align(pred, gt)
    torch.testing.assert_close(aligned, gt[:, :1].expand(1, 21, 3))


def _official_auc(errors: np.ndarray, val_max=0.05, steps=100) -> float:
    """EvalUtil.get_measures: per-keypoint PCK curves, trapezoid AUC, mean over keypoints."""
    thresholds = np.linspace(0.0, val_max, steps)
    norm = np.trapezoid(np.ones_like(thresholds), thresholds)
    aucs = []
    for kp in range(errors.shape[1]):
        curve = [np.mean(errors[:, kp] <= t) for t in thresholds]
        aucs.append(np.trapezoid(curve, thresholds) / norm)
    return float(np.mean(aucs))


def test_pck_auc_limits_uniform_and_official_route(generator):
    assert hm.pck_auc(torch.zeros(10, 21)).item() == pytest.approx(1.0)
    assert hm.pck_auc(torch.full((10, 21), 0.10)).item() == 0.0
    # errors uniform on [0, 5 cm]: PCK(t) = t / 5 cm, AUC = 1/2 (up to the grid's step)
    uniform = torch.linspace(0.0, 0.05, 20001, dtype=torch.float64).reshape(1, -1)
    assert hm.pck_auc(uniform).item() == pytest.approx(0.5, abs=1e-3)
    # all errors 2 cm: PCK is a step at 2 cm, AUC = 1 - 0.02 / 0.05 (up to half a grid cell)
    assert hm.pck_auc(torch.full((3, 21), 0.02)).item() == pytest.approx(0.6, abs=1 / 99)
    errors = torch.rand(40, 21, generator=generator, dtype=torch.float64) * 0.07
    assert hm.pck_auc(errors).item() == pytest.approx(_official_auc(errors.numpy()), abs=1e-12)


def test_fscore_closed_form_and_strict_threshold():
    # GT: 10 points 10 cm apart; prediction: the same 10 points plus 5 far-away points
    gt = torch.zeros(1, 10, 3, dtype=torch.float64)
    gt[0, :, 0] = torch.arange(10) * 0.1
    far = torch.full((1, 5, 3), 5.0, dtype=torch.float64)
    pred = torch.cat([gt, far], dim=1)
    precision, recall = hm.precision_recall(pred, gt, 0.005)
    assert precision.item() == pytest.approx(10 / 15) and recall.item() == pytest.approx(1.0)
    p = 10 / 15
    assert hm.fscore(pred, gt, 0.005).item() == pytest.approx(2 * p / (p + 1))
    # a point exactly at the threshold does not count (scorer uses d < th)
    one = torch.zeros(1, 1, 3, dtype=torch.float64)
    shifted = one.clone()
    shifted[0, 0, 0] = 0.005
    assert hm.fscore(shifted, one, 0.005).item() == 0.0
    assert hm.fscore(shifted, one, 0.0051).item() == 1.0
    # nothing within reach: F = 0, not NaN
    assert hm.fscore(one + 1.0, one, 0.005).item() == 0.0


def test_joint_and_vertex_error_are_plain_mean_distances():
    gt = torch.zeros(2, 21, 3, dtype=torch.float64)
    pred = gt.clone()
    pred[0, :, 2] = 0.01
    pred[1, 0, 0] = 0.21
    torch.testing.assert_close(hm.joint_error(pred, gt), torch.tensor([0.01, 0.01], dtype=torch.float64))
    with pytest.raises(ValueError):
        hm.vertex_error(pred, gt[:, :20])


def test_fscore_at_several_thresholds_equals_single_threshold_calls(generator):
    gt = torch.randn(3, 100, 3, generator=generator, dtype=torch.float64) * 0.03
    pred = gt + torch.randn(3, 100, 3, generator=generator, dtype=torch.float64) * 0.008
    both = hm.fscore(pred, gt, [0.005, 0.015])
    assert both.shape == (3, 2)
    torch.testing.assert_close(both[:, 0], hm.fscore(pred, gt, 0.005))
    torch.testing.assert_close(both[:, 1], hm.fscore(pred, gt, 0.015))
    assert torch.all(both[:, 0] < both[:, 1])
