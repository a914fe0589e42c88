"""Depth order from the masks: vertex depth grids, eroded labels and the loss (issue 9)."""

import itertools

import pytest
import torch

from hodata.fitting import losses as L
from hodata.geometry.depth_order import (cached_eroded_labels, cached_object_shown_beyond_hand, eroded_labels,
                                         front_depth_at, front_depth_grid, label_at, mean_edge_pixels,
                                         metric_erosion_radii, object_shown_beyond_hand)


def brute_front(points_px, vertex_px, vertex_z, cell, grid):
    """Least depth of the vertices whose cell is within one cell of the point's cell, by loops."""
    out = torch.full(points_px.shape[:2], float("inf"), dtype=vertex_z.dtype)
    for b in range(points_px.shape[0]):
        vc = torch.floor(vertex_px[b] / cell[b]).long()
        for q in range(points_px.shape[1]):
            pc = torch.floor(points_px[b, q] / cell[b]).long()
            if not ((pc >= 0) & (pc < grid)).all():
                continue
            best = float("inf")
            for v in range(vertex_px.shape[1]):
                if ((vc[v] >= 0) & (vc[v] < grid)).all() and (vc[v] - pc).abs().max() <= 1:
                    best = min(best, float(vertex_z[b, v]))
            out[b, q] = best
    return out


def test_front_depth_grid_equals_the_least_depth_of_the_neighbouring_cells_by_brute_force():
    g = torch.Generator().manual_seed(0)
    vertex_px = torch.rand(2, 40, 2, generator=g, dtype=torch.float64) * 36 - 2  # some outside
    vertex_z = torch.rand(2, 40, generator=g, dtype=torch.float64) + 0.3
    points_px = torch.rand(2, 30, 2, generator=g, dtype=torch.float64) * 36 - 2
    cell = torch.tensor([4.0, 6.5], dtype=torch.float64)
    grid = 8
    fast = front_depth_at(front_depth_grid(vertex_px, vertex_z, cell, grid), points_px, cell)
    slow = brute_front(points_px, vertex_px, vertex_z, cell, grid)
    assert torch.equal(torch.isinf(fast), torch.isinf(slow))
    finite = torch.isfinite(slow)
    assert finite.sum() > 10 and torch.isinf(slow).sum() > 0  # both cases exercised
    assert torch.allclose(fast[finite], slow[finite], atol=0.0)


def test_front_depth_passes_its_gradient_to_the_nearest_vertex_only():
    vertex_px = torch.tensor([[[5.0, 5.0], [6.0, 5.0], [30.0, 30.0]]], dtype=torch.float64)
    vertex_z = torch.tensor([[0.5, 0.4, 0.1]], dtype=torch.float64, requires_grad=True)
    cell = torch.tensor([4.0], dtype=torch.float64)
    front = front_depth_at(front_depth_grid(vertex_px, vertex_z, cell, 10), torch.tensor([[[7.0, 7.0]]]).double(),
                           cell)
    assert float(front.detach()) == pytest.approx(0.4)  # the far-away vertex at z 0.1 is not a neighbour
    front.sum().backward()
    assert vertex_z.grad.tolist() == [[0.0, 1.0, 0.0]]


def test_mean_edge_pixels_of_a_unit_grid_square():
    pixels = torch.tensor([[[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]])
    faces = torch.tensor([[0, 1, 2]])
    assert float(mean_edge_pixels(pixels, faces)) == pytest.approx((3 + 5 + 4) / 3)
    with pytest.raises(ValueError, match="pixels must be"):
        mean_edge_pixels(pixels[0], faces)


def test_eroded_labels_keep_a_pixel_only_when_its_whole_window_has_the_label():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(-1, 2, (2, 12, 12), generator=g).float()
    target[0, 2:9, 3:10] = 1.0
    target[1, 4:11, 1:8] = -1.0
    obj, hand = eroded_labels(target, 1)
    for b, i, j in itertools.product(range(2), range(12), range(12)):
        window = target[b, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
        assert bool(obj[b, i, j]) == bool((window > 0.5).all())
        assert bool(hand[b, i, j]) == bool((window < -0.5).all())
    assert obj[0].sum() >= 5 * 5 and hand[1].sum() >= 5 * 5
    same = cached_eroded_labels(target, 1)
    assert cached_eroded_labels(target, 1) is same
    target[0, 5, 5] = 0.0  # edited in place: eroded again
    assert not cached_eroded_labels(target, 1)[0][0, 5, 5]


def test_eroded_labels_with_one_radius_per_frame_equal_each_frame_eroded_alone():
    g = torch.Generator().manual_seed(2)
    target = torch.randint(-1, 2, (4, 16, 16), generator=g).float()
    target[:, 3:13, 2:12] = 1.0
    target[:, 6:10, 5:9] = -1.0
    radii = (0, 3, 1, 3)
    obj, hand = eroded_labels(target, radii)
    for b, r in enumerate(radii):
        alone = eroded_labels(target[b : b + 1], r)
        assert torch.equal(obj[b], alone[0][0]) and torch.equal(hand[b], alone[1][0])
    assert obj[1].sum() < obj[2].sum() < obj[0].sum()  # wider radius, fewer labelled pixels
    assert cached_eroded_labels(target, radii) is cached_eroded_labels(target, list(radii))
    assert not torch.equal(cached_eroded_labels(target, radii)[0], cached_eroded_labels(target, 1)[0])
    with pytest.raises(ValueError, match="3 erosion radii for 4 frames"):
        eroded_labels(target, (1, 2, 3))
    with pytest.raises(ValueError, match=">= 0"):
        eroded_labels(target, (1, -1, 0, 0))


def test_object_shown_beyond_hand_drops_only_the_band_beside_the_hand_by_brute_force():
    g = torch.Generator().manual_seed(3)
    target = torch.randint(-1, 2, (3, 14, 14), generator=g).float()
    target[:, 4:11, 3:12] = 1.0  # an object block, so the erosion leaves something
    target[0, 5:8, 2:5] = -1.0   # a hand overlapping its left side
    erode, bands = 1, (0, 2, 3)
    fast = object_shown_beyond_hand(target, erode, bands)
    shown = eroded_labels(target, erode)[0]
    for b, band in enumerate(bands):
        hand = (target[b] < -0.5).nonzero().tolist()
        for y, x in itertools.product(range(14), range(14)):
            near = any(max(abs(y - hy), abs(x - hx)) <= band for hy, hx in hand)
            assert bool(fast[b, y, x]) == (bool(shown[b, y, x]) and not near), (b, y, x)
    assert (shown & ~fast).any() and fast.any()  # both cases exercised
    # far from the hand nothing changes: an object with no hand pixels keeps its eroded label
    alone = torch.zeros(1, 10, 10)
    alone[0, 2:8, 2:8] = 1.0
    assert torch.equal(object_shown_beyond_hand(alone, 1, 4), eroded_labels(alone, 1)[0])
    assert cached_object_shown_beyond_hand(target, erode, bands) is cached_object_shown_beyond_hand(target, erode,
                                                                                                     bands)
    with pytest.raises(ValueError, match="radii"):
        object_shown_beyond_hand(target, 1, (1, 2))


def test_metric_erosion_radii_span_the_band_at_the_object_depth():
    focal = torch.tensor([600.0, 600.0, 1200.0, 100.0])
    depth = torch.tensor([0.5, 1.0, 0.5, 0.5])
    # f * 5 mm / z pixels: 6, 3, 12, 1 -> the minimum 2 where the band is narrower
    assert metric_erosion_radii(0.005, focal, depth, minimum=2) == (6, 3, 12, 2)
    assert metric_erosion_radii(0.0, focal, depth) == (0, 0, 0, 0)
    with pytest.raises(ValueError, match="must both be"):
        metric_erosion_radii(0.005, focal, depth[:2])
    with pytest.raises(ValueError, match=">= 0 metres"):
        metric_erosion_radii(-0.001, focal, depth)


def test_the_fit_can_erode_by_a_metric_band_once_per_stage():
    from hodata.fitting.joint import FitConfig, ObjectEvidence, occlusion_radii

    K_roi = torch.eye(3).repeat(2, 1, 1)
    K_roi[:, 0, 0] = torch.tensor([400.0, 800.0])
    evidence = ObjectEvidence(torch.zeros(3, 3), torch.zeros(1, 3, dtype=torch.long), None, K_roi,
                              torch.zeros(2, 8, 8), None)
    placed = torch.tensor([0.0, 0.0, 0.4]).expand(2, 5, 3).clone()
    config = FitConfig(occlusion_erode_m=0.005)
    tracking = {}
    assert occlusion_radii(placed, evidence, config, tracking, 0) == (5, 10)  # 400 * 5 mm / 0.4 m
    # the rest of the stage keeps the radii (no host read per step); a new stage starts afresh
    assert occlusion_radii(placed * 2, evidence, config, tracking, 0) == (5, 10)
    assert occlusion_radii(placed * 2, evidence, config, {}, 0) == (2, 5)
    assert occlusion_radii(placed * 2, evidence, config, None, 0) == (2, 5)
    assert occlusion_radii(placed, evidence, FitConfig(occlusion_erode=3, occlusion_erode_m=None), {}, 0) == 3


def test_label_at_reads_the_nearest_pixel_and_false_outside():
    labels = torch.zeros(1, 4, 4, dtype=torch.bool)
    labels[0, 1, 2] = True  # row y = 1, column x = 2
    pixels = torch.tensor([[[2.2, 0.9], [1.0, 2.0], [-0.6, 1.0], [4.6, 1.0]]])
    assert label_at(labels, pixels).tolist() == [[True, False, False, False]]


def test_depth_order_loss_penalises_only_points_in_front_of_what_occludes_them():
    depth = torch.tensor([[[0.50, 0.45, 0.60, 0.40]]], requires_grad=True)
    front = torch.tensor([[[0.48, 0.48, float("inf"), 0.48]]])
    behind = torch.tensor([[[True, True, True, False]]])
    # point 0 lies behind the other mesh's front (ok); point 1 3 cm in front of it (violation);
    # point 2 has no other mesh around it; point 3 is not seen behind anything
    value = L.depth_order_loss(depth, front, behind)
    assert value.shape == (1,)
    assert float(value.detach()) == pytest.approx(0.03 / 4)
    value.sum().backward()
    assert torch.allclose(depth.grad, torch.tensor([[[0.0, -0.25, 0.0, 0.0]]]))
    assert torch.isfinite(depth.grad).all()
    with pytest.raises(ValueError, match="one shape"):
        L.depth_order_loss(depth, front[..., :2], behind)
