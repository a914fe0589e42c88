"""Penetration depth and contact: a sphere pushed a known depth into a box (closed-form SDF)."""

import pytest
import torch
import trimesh

from hodata.geometry.rotations import random_rotations
from hodata.geometry.transforms import invert_similarity
from hodata.metrics import interaction as im
from hodata.types import ObjectState

HALF = torch.tensor([0.05, 0.04, 0.03], dtype=torch.float64)  # box half extents (m)
RADIUS = 0.02


def box_sdf(points: torch.Tensor, half: torch.Tensor = HALF) -> torch.Tensor:
    """Exact signed distance to an axis-aligned box centred at the origin (positive outside)."""
    q = points.abs() - half
    outside = q.clamp_min(0).norm(dim=-1)
    inside = q.amax(dim=-1).clamp_max(0)
    return outside + inside


def sphere_at_depths(depths: list[float]) -> torch.Tensor:
    """Sphere vertices (T, V, 3) whose lowest point (a pole) is `depth` below the box top
    face z = HALF[2] (negative depth: a gap above the face)."""
    verts = torch.tensor(trimesh.creation.uv_sphere(radius=RADIUS, count=[16, 16]).vertices)
    assert verts[:, 2].min().item() == pytest.approx(-RADIUS)  # the pole is a vertex
    centres = torch.tensor([[0.0, 0.0, HALF[2].item() + RADIUS - d] for d in depths], dtype=torch.float64)
    return verts[None] + centres[:, None]


def test_penetration_depth_and_contact_of_sphere_pushed_into_box():
    depths = [0.003, 0.012, -0.002, 0.0005]
    sdf = box_sdf(sphere_at_depths(depths))
    pen = im.penetration_depth(sdf)
    torch.testing.assert_close(pen, torch.tensor([0.003, 0.012, 0.0, 0.0005], dtype=torch.float64), atol=1e-12, rtol=0)
    has = im.contact(sdf)
    assert has.tolist() == [True, True, False, True]
    # a 2 mm gap counts as surface contact only with a tolerance above 2 mm
    assert im.contact(sdf, tolerance=0.0025).tolist() == [True, True, True, True]
    assert im.contact(sdf, tolerance=0.0015).tolist() == [True, True, False, True]
    assert im.contact_percent(has).item() == pytest.approx(75.0)
    gt = torch.tensor([True, True, True, False])
    assert im.contact_accuracy(has, gt).item() == pytest.approx(50.0)


def test_sphere_touching_nothing_has_zero_depth_and_no_contact():
    sdf = box_sdf(sphere_at_depths([-0.05]))
    assert im.penetration_depth(sdf).item() == 0.0
    assert not im.contact(sdf).item()


def test_hand_object_sdf_values_evaluates_the_posed_object(generator):
    depths = [0.004, 0.01]
    sphere_obj_frame = sphere_at_depths(depths)
    rotation = random_rotations(2, generator=generator, dtype=torch.float64)
    translation = torch.tensor([[0.1, 0.0, 0.5], [0.0, -0.1, 0.7]], dtype=torch.float64)
    scale = torch.tensor(1.0, dtype=torch.float64)
    hand_cam = sphere_obj_frame @ rotation.transpose(-1, -2) + translation[:, None]
    obj = ObjectState("box", rotation, translation, scale)

    def sdf_fn(grid, points_cam, rot, trans, s):
        assert grid == "box-grid"
        return box_sdf(invert_similarity(points_cam, rot, trans, s)) * s

    values = im.hand_object_sdf_values(hand_cam, obj, "box-grid", sdf_fn=sdf_fn)
    torch.testing.assert_close(im.penetration_depth(values), torch.tensor(depths, dtype=torch.float64))


def test_default_sdf_fn_uses_the_object_sdf_grid(generator):
    from hodata.geometry.sdf import SDFGrid

    # a 32^3 grid of the closed-form box SDF, in the layout of hodata.geometry.sdf
    spacing = 0.14 / 31
    origin = torch.full((3,), -0.07, dtype=torch.float64)
    axis = torch.arange(32, dtype=torch.float64) * spacing
    nodes = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1) + origin
    grid = SDFGrid(box_sdf(nodes), origin, torch.full((3,), spacing, dtype=torch.float64))
    depths = [0.006, -0.004]
    rotation = random_rotations(2, generator=generator, dtype=torch.float64)
    translation = torch.tensor([[0.0, 0.05, 0.6], [0.02, 0.0, 0.5]], dtype=torch.float64)
    hand_cam = sphere_at_depths(depths) @ rotation.transpose(-1, -2) + translation[:, None]
    obj = ObjectState("box", rotation, translation, torch.tensor(1.0, dtype=torch.float64))
    values = im.hand_object_sdf_values(hand_cam, obj, grid)
    # the box SDF is linear near the middle of a face, so trilinear interpolation is exact there
    torch.testing.assert_close(im.penetration_depth(values), torch.tensor([0.006, 0.0], dtype=torch.float64), atol=1e-9, rtol=0)
    assert im.contact(values).tolist() == [True, False]
