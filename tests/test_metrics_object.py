"""Object metrics against closed forms, trimesh shapes and scipy's KD-tree."""

import math

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from hodata.geometry.rotations import axis_angle_to_matrix, random_rotations
from hodata.metrics import object as om
from hodata.types import ObjectState


def _rot_z(angle: float) -> torch.Tensor:
    return axis_angle_to_matrix(torch.tensor([0.0, 0.0, angle], dtype=torch.float64))


def test_known_translation_gives_exactly_that_vertex_error(generator):
    gt = torch.randn(4, 500, 3, generator=generator, dtype=torch.float64) * 0.05
    shift = torch.tensor([[0.003, -0.004, 0.012], [0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, -0.02, 0.0]], dtype=torch.float64)
    err = om.object_vertex_error(gt + shift[:, None], gt)
    torch.testing.assert_close(err, shift.norm(dim=-1), atol=1e-12, rtol=0)
    # closest points can only be closer than the corresponding ones
    assert torch.all(om.add_s(gt + shift[:, None], gt) <= err + 1e-12)


def test_symmetric_cylinder_rotated_about_its_axis_has_zero_adds_but_vertex_error():
    sections, radius = 16, 0.04
    verts = torch.tensor(trimesh.creation.cylinder(radius=radius, height=0.1, sections=sections).vertices)
    angles = [2 * math.pi / sections, 3 * 2 * math.pi / sections]
    gt = verts.expand(len(angles), -1, -1) + torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64)
    pred = torch.stack([verts @ _rot_z(a).T for a in angles]) + torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64)
    adds = om.add_s(pred, gt)
    verr = om.object_vertex_error(pred, gt)
    assert torch.all(adds < 1e-12)
    # 32 rim vertices move along the chord 2 r sin(angle / 2); the 2 cap centres stay
    rim = (verts[:, :2].norm(dim=-1) > 1e-9).sum().item()
    expected = torch.tensor([rim * 2 * radius * math.sin(a / 2) / verts.shape[0] for a in angles], dtype=torch.float64)
    torch.testing.assert_close(verr, expected, atol=1e-12, rtol=0)
    assert torch.all(verr > 0.01)
    torch.testing.assert_close(om.chamfer_distance(pred, gt), torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)


def test_nearest_distances_match_scipy_kdtree_and_blocking(generator, monkeypatch):
    a = torch.randn(3, 300, 3, generator=generator, dtype=torch.float64)
    b = torch.randn(3, 200, 3, generator=generator, dtype=torch.float64)
    ours = om.nearest_neighbour_distances(a, b)
    for t in range(3):
        ref, _ = cKDTree(b[t].numpy()).query(a[t].numpy())
        np.testing.assert_allclose(ours[t].numpy(), ref, atol=1e-12)
    monkeypatch.setattr(om, "_MAX_BLOCK", 3 * 200 * 7)  # 7 query points per block
    torch.testing.assert_close(om.nearest_neighbour_distances(a, b), ours, atol=0, rtol=0)


def test_adds_direction_is_gt_to_prediction_and_chamfer_is_the_mean_of_both(generator):
    gt = torch.randn(1, 50, 3, generator=generator, dtype=torch.float64)
    extra = torch.randn(1, 50, 3, generator=generator, dtype=torch.float64) + 10.0
    pred = torch.cat([gt, extra], dim=1)  # contains every GT vertex plus far-away points
    assert om.add_s(pred, gt).item() < 1e-12
    reverse = om.add_s(gt, pred).item()
    assert reverse > 4.0
    chamfer = om.chamfer_distance(pred, gt).item()
    assert chamfer == pytest.approx(0.5 * reverse, abs=1e-12)
    torch.testing.assert_close(om.chamfer_distance(gt, pred), om.chamfer_distance(pred, gt))


def test_float32_distances_are_exact_enough_for_millimetre_thresholds(generator):
    gt = (torch.randn(2, 778, 3, generator=generator) * 0.05 + torch.tensor([0.0, 0.0, 0.6])).float()
    assert om.add_s(gt.clone(), gt).max().item() < 1e-7


def test_posed_object_vertices_uses_vertices_or_poses_the_canonical_mesh(generator):
    canonical = torch.randn(30, 3, generator=generator, dtype=torch.float64)
    rotation = random_rotations(5, generator=generator, dtype=torch.float64)
    translation = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    state = ObjectState("mug", rotation, translation, torch.tensor(1.5, dtype=torch.float64))
    posed = om.posed_object_vertices(state, canonical)
    manual = torch.stack([1.5 * canonical @ rotation[t].T + translation[t] for t in range(5)])
    torch.testing.assert_close(posed, manual)
    state.vertices = manual + 1.0
    torch.testing.assert_close(om.posed_object_vertices(state), manual + 1.0)
    with pytest.raises(ValueError, match="canonical"):
        om.posed_object_vertices(ObjectState("mug", rotation, translation))


def test_mutual_distances_equal_both_directed_passes(generator, monkeypatch):
    a = torch.randn(2, 90, 3, generator=generator, dtype=torch.float64)
    b = torch.randn(2, 60, 3, generator=generator, dtype=torch.float64)
    monkeypatch.setattr(om, "_MAX_BLOCK", 2 * 60 * 8)  # several blocks: the column minima must combine
    a_to_b, b_to_a = om.mutual_nearest_distances(a, b)
    for t in range(2):
        np.testing.assert_allclose(a_to_b[t].numpy(), cKDTree(b[t].numpy()).query(a[t].numpy())[0], atol=1e-12)
        np.testing.assert_allclose(b_to_a[t].numpy(), cKDTree(a[t].numpy()).query(b[t].numpy())[0], atol=1e-12)
