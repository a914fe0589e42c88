"""HOLD-protocol metrics (hodata.metrics.hold) on closed-form cases and against scipy."""

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from hodata.geometry.rotations import axis_angle_to_matrix
from hodata.metrics import hold

F64 = torch.float64


def sparse_points(frames=2, count=20, spacing=1.0, seed=0):
    """Points on a grid `spacing` apart (metres): shifts far below the spacing keep every
    point's nearest neighbour its own shifted copy, so chamfer values are closed-form."""
    gen = torch.Generator().manual_seed(seed)
    cells = torch.randperm(1000, generator=gen)[:count]
    grid = torch.stack([cells // 100, (cells // 10) % 10, cells % 10], dim=-1).to(F64) * spacing
    return grid.expand(frames, -1, -1).clone()


def test_root_aligned_mpjpe_ignores_translation_and_averages_joint_moves(generator):
    gt = torch.randn(3, 21, 3, generator=generator, dtype=F64) * 0.05
    shift = torch.tensor([0.1, -0.2, 0.3], dtype=F64)
    torch.testing.assert_close(hold.root_aligned_mpjpe(gt + shift, gt), torch.zeros(3, dtype=F64), atol=1e-12, rtol=0)
    moved = gt.clone()
    moved[:, 7] += torch.tensor([0.0, 0.021, 0.0], dtype=F64)   # one of 21 joints 21 mm off
    torch.testing.assert_close(hold.root_aligned_mpjpe(moved, gt), torch.full((3,), 0.001, dtype=F64))
    # moving the root moves every other joint by the opposite amount relative to it
    rooted = gt.clone()
    rooted[:, 0] += torch.tensor([0.0, 0.0, 0.021], dtype=F64)
    torch.testing.assert_close(hold.root_aligned_mpjpe(rooted, gt), torch.full((3,), 0.021 * 20 / 21, dtype=F64))
    with pytest.raises(ValueError, match="corresponding joints"):
        hold.root_aligned_mpjpe(gt[:, :20], gt)


def test_squared_chamfer_is_sum_of_mean_squared_distances():
    gt = sparse_points()
    d = torch.tensor([0.003, 0.0, -0.004], dtype=F64)   # |d| = 5 mm
    cd = hold.squared_chamfer_distance(gt + d, gt)
    # every nearest neighbour is 5 mm away in both directions: 2 * (0.5 cm)^2 = 0.5 cm^2
    torch.testing.assert_close(cd * 1e4, torch.full((2,), 0.5, dtype=F64))
    torch.testing.assert_close(hold.squared_chamfer_distance(gt, gt + d), cd)
    assert float(hold.squared_chamfer_distance(gt, gt).max()) == 0.0


def test_squared_chamfer_matches_scipy_on_random_sets(generator):
    a = torch.randn(2, 300, 3, generator=generator, dtype=F64) * 0.05
    b = torch.randn(2, 200, 3, generator=generator, dtype=F64) * 0.05
    expected = [np.mean(cKDTree(y).query(x)[0] ** 2) + np.mean(cKDTree(x).query(y)[0] ** 2)
                for x, y in zip(a.numpy(), b.numpy())]
    np.testing.assert_allclose(hold.squared_chamfer_distance(a, b).numpy(), expected, rtol=1e-10)


def test_object_cd_and_fscores_are_translation_free_and_see_rotation():
    gt = sparse_points(spacing=0.05) + torch.tensor([0.0, 0.0, 0.6], dtype=F64)
    cd, f = hold.object_chamfer_fscores(gt + torch.tensor([0.2, -0.1, 0.05], dtype=F64), gt)
    torch.testing.assert_close(cd, torch.zeros(2, dtype=F64), atol=1e-20, rtol=0)
    torch.testing.assert_close(f, torch.ones(2, 2, dtype=F64))
    # a rotation about the box centre is not aligned away
    centre = hold.bounding_box_centre(gt)[:, None]
    turned = (gt - centre) @ axis_angle_to_matrix(torch.tensor([0.0, 0.0, 0.3], dtype=F64)).T + centre
    cd_turned, _ = hold.object_chamfer_fscores(turned, gt)
    assert torch.all(cd_turned > 1e-5)


@pytest.mark.parametrize("shift_mm, f5, f10", [(3.0, 1.0, 1.0), (7.0, 0.0, 1.0), (12.0, 0.0, 0.0)])
def test_fscore_thresholds_on_a_known_shift(shift_mm, f5, f10):
    """One point set shifted by a known amount relative to the other after root alignment:
    the points of a two-set object keep the distance of the shift (box centres move by half)."""
    base = sparse_points(frames=1, count=10, spacing=1.0)
    # shift only the first point along x by s: the box is unchanged when that point is not on
    # its boundary, so the root alignment leaves the shift in place
    inner = base.clone()
    inner[:, 0] = base[:, 1:].amin(dim=1) + 0.5 * (base[:, 1:].amax(dim=1) - base[:, 1:].amin(dim=1))
    gt = inner
    pred = gt.clone()
    pred[:, 0, 0] += shift_mm / 1000
    cd, f = hold.object_chamfer_fscores(pred, gt)
    torch.testing.assert_close(cd * 1e4, torch.tensor([2 * (shift_mm / 10) ** 2 / 10], dtype=F64))
    # P = R = 9/10 when the shift exceeds the threshold, 1 otherwise
    expected = [1.0 if f5 else 0.9, 1.0 if f10 else 0.9]
    torch.testing.assert_close(f[0], torch.tensor(expected, dtype=F64))


def test_hand_relative_chamfer_sees_only_relative_motion():
    obj = sparse_points() + torch.tensor([0.0, 0.0, 0.5], dtype=F64)
    wrist = torch.tensor([[0.05, 0.0, 0.45], [0.06, 0.01, 0.45]], dtype=F64)
    together = torch.tensor([0.03, -0.02, 0.1], dtype=F64)
    cd_h = hold.hand_relative_chamfer_distance(obj + together, obj, wrist + together, wrist)
    torch.testing.assert_close(cd_h, torch.zeros(2, dtype=F64), atol=1e-20, rtol=0)
    # the object 1 cm deeper than the hand: 2 * (1 cm)^2
    deeper = torch.tensor([0.0, 0.0, 0.01], dtype=F64)
    cd_h = hold.hand_relative_chamfer_distance(obj + deeper, obj, wrist, wrist)
    torch.testing.assert_close(cd_h * 1e4, torch.full((2,), 2.0, dtype=F64))
    # the hand 1 cm off instead: the same, while the root-aligned object CD sees nothing
    cd_h = hold.hand_relative_chamfer_distance(obj, obj, wrist - deeper, wrist)
    torch.testing.assert_close(cd_h * 1e4, torch.full((2,), 2.0, dtype=F64))
    cd, _ = hold.object_chamfer_fscores(obj + deeper, obj)
    assert float(cd.abs().max()) < 1e-20


def test_bounding_box_centre_and_shape_checks():
    pts = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 4.0, 6.0], [1.0, 1.0, 1.0]]], dtype=F64)
    torch.testing.assert_close(hold.bounding_box_centre(pts), torch.tensor([[1.0, 2.0, 3.0]], dtype=F64))
    with pytest.raises(ValueError, match=r"\(T, N, 3\)"):
        hold.bounding_box_centre(pts[0])
    with pytest.raises(ValueError, match="root must be"):
        hold.root_relative(pts, torch.zeros(2, 3, dtype=F64))
