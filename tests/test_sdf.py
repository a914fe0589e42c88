"""Signed distances: exact mesh SDF vs trimesh, gradients vs finite differences, grids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from hodata.errors import HodataError
from hodata.geometry.rotations import axis_angle_to_matrix
from hodata.geometry.sdf import (
    SDFGrid,
    compute_sdf_grid,
    mesh_signed_distance,
    mesh_winding_number,
    object_sdf,
    sample_sdf_grid,
)


def bent_tube(n_around: int = 16, n_rings: int = 49) -> trimesh.Trimesh:
    """A closed, non-convex, finger-like mesh: a tube of varying radius bent along 270 degrees,
    closed by fans of long thin triangles like a MANO wrist cap; 2 n (rings - 1) + 2 n faces
    (1568 for the defaults, about the 1552 of a closed MANO hand)."""
    s = np.linspace(0, 1, n_rings)
    angle = 1.5 * math.pi * s
    centers = np.stack([0.05 * np.cos(angle), 0.05 * np.sin(angle), 0.02 * s], -1)
    tangent = np.gradient(centers, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    n1 = np.cross(tangent, [0.0, 0.0, 1.0])
    n1 /= np.linalg.norm(n1, axis=1, keepdims=True)
    n2 = np.cross(tangent, n1)
    radius = 0.012 * (0.7 + 0.3 * np.sin(3 * math.pi * s) ** 2)
    theta = np.linspace(0, 2 * math.pi, n_around, endpoint=False)
    ring = centers[:, None] + radius[:, None, None] * (
        np.cos(theta)[None, :, None] * n1[:, None] + np.sin(theta)[None, :, None] * n2[:, None]
    )
    verts = np.vstack([ring.reshape(-1, 3), centers[0], centers[-1]])
    faces = []
    for i in range(n_rings - 1):
        for j in range(n_around):
            a, b = i * n_around + j, i * n_around + (j + 1) % n_around
            faces += [[a, a + n_around, b], [b, a + n_around, b + n_around]]
    last, c0 = (n_rings - 1) * n_around, len(verts) - 2
    for j in range(n_around):
        faces += [[c0, j, (j + 1) % n_around], [c0 + 1, last + (j + 1) % n_around, last + j]]
    mesh = trimesh.Trimesh(verts, np.array(faces), process=False)
    if mesh.volume < 0:
        mesh.invert()
    return mesh


MESHES = {
    "icosphere": lambda: trimesh.creation.icosphere(subdivisions=3, radius=0.05),
    "box": lambda: trimesh.creation.box((0.1, 0.06, 0.03)),
    "annulus": lambda: trimesh.creation.annulus(r_min=0.02, r_max=0.05, height=0.03),
    "bent_tube": bent_tube,
}


def reference_sdf(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Brute-force closest point and ray-cast containment from trimesh, positive outside.

    trimesh.proximity.signed_distance is not used: its rtree candidate search missed the
    nearest triangle (e.g. 0.213 mm instead of 0.196 mm on an icosphere) in our checks.
    """
    _, dist, _ = trimesh.proximity.closest_point_naive(mesh, points)
    return np.where(mesh.contains(points), -dist, dist)


def probe_points(mesh: trimesh.Trimesh, seed: int = 0) -> np.ndarray:
    """Inside, outside and near-surface points (within 2 mm, within 10 um), plus near vertices."""
    rng = np.random.default_rng(seed)
    surface, _ = trimesh.sample.sample_surface(mesh, 400, seed=seed)
    corners = mesh.vertices[rng.choice(len(mesh.vertices), 100)]
    return np.concatenate([
        surface + rng.normal(size=surface.shape) * 0.002,
        surface + rng.normal(size=surface.shape) * 1e-5,
        corners + rng.normal(size=corners.shape) * 1e-3,
        rng.uniform(mesh.bounds[0] - 0.03, mesh.bounds[1] + 0.03, size=(600, 3)),
    ])


def as_torch(mesh: trimesh.Trimesh, dtype=torch.float64):
    return torch.tensor(mesh.vertices, dtype=dtype), torch.tensor(mesh.faces, dtype=torch.long)


@pytest.mark.parametrize("name", list(MESHES))
def test_signed_distance_matches_trimesh(name):
    mesh = MESHES[name]()
    assert mesh.is_watertight and mesh.volume > 0
    points = probe_points(mesh)
    expected = reference_sdf(mesh, points)
    verts, faces = as_torch(mesh)
    got = mesh_signed_distance(torch.tensor(points)[None], verts[None], faces)[0].numpy()
    # trimesh.triangles.closest_point itself is off by up to ~1 um for projections just
    # inside an edge (checked by hand: plane distance 1.198 um, trimesh 2.207 um).
    assert np.abs(np.abs(got) - np.abs(expected)).max() < 2e-6
    assert np.median(np.abs(np.abs(got) - np.abs(expected))) < 1e-12
    # trimesh's ray-cast containment errs within ~1 um of the surface (the winding number
    # agrees with us there), so its sign is only trusted beyond that.
    clear = np.abs(expected) > 1e-6
    assert (got[clear] < 0).mean() > 0.2 and (got[clear] > 0).mean() > 0.2
    np.testing.assert_array_equal(np.sign(got[clear]), np.sign(expected[clear]))
    assert np.abs(got - expected)[clear].max() < 2e-6
    winding = mesh_winding_number(torch.tensor(points)[None], verts[None], faces)[0].numpy()
    near = np.abs(got) > 1e-9
    np.testing.assert_array_equal(got[near] < 0, winding[near] > 0.5)


def test_float32_close_to_float64():
    mesh = bent_tube()
    points = torch.tensor(probe_points(mesh, seed=3))
    verts, faces = as_torch(mesh)
    exact = mesh_signed_distance(points[None], verts[None], faces)[0]
    single = mesh_signed_distance(points[None].float(), verts[None].float(), faces)[0]
    assert (single.double() - exact).abs().max() < 2e-6


def test_winding_number_sign_agrees_with_pseudonormals():
    mesh = bent_tube()
    points = torch.tensor(probe_points(mesh, seed=1)[::3])
    verts, faces = as_torch(mesh)
    pseudo = mesh_signed_distance(points[None], verts[None], faces)[0]
    winding = mesh_signed_distance(points[None], verts[None], faces, sign_method="winding")[0]
    clear = pseudo.abs() > 1e-7
    assert torch.equal(torch.sign(pseudo[clear]), torch.sign(winding[clear]))
    number = mesh_winding_number(points[None], verts[None], faces)[0]
    assert torch.allclose(number[clear], (pseudo[clear] < 0).double(), atol=1e-6)


def test_batched_frames_match_per_frame_references(generator):
    mesh = bent_tube(n_around=12, n_rings=20)
    verts, faces = as_torch(mesh)
    rotation = axis_angle_to_matrix(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    shift = torch.randn(3, 3, generator=generator, dtype=torch.float64) * 0.05
    frames = verts @ rotation.transpose(1, 2) + shift[:, None]
    points = torch.tensor(probe_points(mesh, seed=2)[::4])[None] @ rotation.transpose(1, 2) + shift[:, None]
    got = mesh_signed_distance(points, frames, faces)
    for b in range(3):
        moved = trimesh.Trimesh(frames[b].numpy(), mesh.faces, process=False)
        expected = reference_sdf(moved, points[b].numpy())
        assert np.abs(np.abs(got[b].numpy()) - np.abs(expected)).max() < 2e-6
        clear = np.abs(expected) > 1e-6
        np.testing.assert_array_equal(np.sign(got[b].numpy()[clear]), np.sign(expected[clear]))


def test_gradients_match_finite_differences(generator):
    mesh = trimesh.creation.icosphere(subdivisions=1, radius=0.05)
    verts, faces = as_torch(mesh)
    # Points near faces, near edges and near corners, inside and outside, off the medial axis.
    tri = verts[faces[:3]]
    points = torch.stack([
        tri[0].mean(0) * 1.1, tri[1].mean(0) * 0.9,
        0.5 * (tri[2, 0] + tri[2, 1]) * 1.15, tri[0, 0] * 1.2, tri[1, 2] * 0.8,
    ])[None]
    points = points + 1e-3 * torch.randn(points.shape, generator=generator, dtype=torch.float64)
    torch.autograd.gradcheck(
        lambda p, v: mesh_signed_distance(p, v, faces), (points.requires_grad_(), verts[None].clone().requires_grad_()),
        eps=1e-7, atol=1e-6,
    )


def test_gradients_finite_on_surface_features():
    mesh = trimesh.creation.box((0.1, 0.06, 0.03))
    verts, faces = as_torch(mesh)
    tri = verts[faces]
    points = torch.cat([verts, 0.5 * (tri[:, 0] + tri[:, 1]), tri.mean(1)])[None].requires_grad_()
    verts = verts[None].clone().requires_grad_()
    value = mesh_signed_distance(points, verts, faces)
    assert value.abs().max() < 1e-12
    value.sum().backward()
    assert torch.isfinite(points.grad).all() and torch.isfinite(verts.grad).all()
    # Inside a face the gradient w.r.t. the point is the outward face normal.
    normals = torch.tensor(mesh.face_normals)
    assert torch.allclose(points.grad[0, -len(faces):], normals, atol=1e-9)


def test_max_distance_culls_with_a_lower_bound():
    mesh = bent_tube(n_around=12, n_rings=20)
    verts, faces = as_torch(mesh)
    points = torch.tensor(probe_points(mesh, seed=4))[None]
    full = mesh_signed_distance(points, verts[None], faces)
    culled = mesh_signed_distance(points, verts[None], faces, max_distance=0.01)
    lo, hi = verts.amin(0), verts.amax(0)
    far = (torch.maximum(lo - points, points - hi).clamp_min(0).norm(dim=-1) > 0.01)
    assert far.any() and (~far).any()
    assert torch.allclose(culled[~far], full[~far], rtol=0, atol=1e-12)
    assert (culled[far] > 0.01).all() and (culled[far] <= full[far] + 1e-12).all()


def test_sample_sdf_grid_reproduces_trilinear_closed_form(generator):
    coef = torch.randn(8, generator=generator, dtype=torch.float64)

    def field(p):
        x, y, z = p.unbind(-1)
        return (coef[0] + coef[1] * x + coef[2] * y + coef[3] * z + coef[4] * x * y
                + coef[5] * y * z + coef[6] * x * z + coef[7] * x * y * z)

    origin = torch.tensor([-0.3, 0.1, 0.2], dtype=torch.float64)
    spacing = torch.tensor([0.05, 0.07, 0.03], dtype=torch.float64)
    idx = torch.stack(torch.meshgrid(torch.arange(6), torch.arange(5), torch.arange(7), indexing="ij"), -1)
    grid = SDFGrid(field(origin + spacing * idx), origin, spacing)
    upper = origin + spacing * torch.tensor([5, 4, 6])
    points = origin + torch.rand(50, 3, generator=generator, dtype=torch.float64) * (upper - origin)
    got = sample_sdf_grid(grid, points.reshape(5, 10, 3)).reshape(-1)
    # Trilinear interpolation reproduces multilinear fields exactly, anywhere in the grid.
    assert torch.allclose(got, field(points), atol=1e-12)
    torch.autograd.gradcheck(lambda p: sample_sdf_grid(grid, p), (points[:5].clone().requires_grad_(),))
    # Outside: value at the clamped point plus the distance to the box.
    outside = torch.tensor([[-0.5, 0.2, 0.25], [0.1, 0.5, 0.5]], dtype=torch.float64)
    clamped = torch.maximum(torch.minimum(outside, upper), origin)
    expected = field(clamped) + (outside - clamped).norm(dim=-1)
    assert torch.allclose(sample_sdf_grid(grid, outside), expected, atol=1e-12)


def test_grid_axis_order_with_asymmetric_mesh():
    mesh = trimesh.creation.box((0.1, 0.06, 0.03))
    mesh.apply_translation([0.02, -0.01, 0.005])
    verts, faces = as_torch(mesh)
    grid = compute_sdf_grid(verts, faces, resolution=12, padding=0.2)
    assert grid.values.shape == (12, 12, 12)
    spacing = grid.spacing_vector()
    assert torch.allclose(spacing, spacing[0].expand(3))
    idx = torch.tensor([[0, 5, 11], [3, 6, 6], [6, 2, 9], [11, 11, 0]])
    nodes = grid.origin + spacing * idx
    assert np.allclose(grid.values[idx[:, 0], idx[:, 1], idx[:, 2]].numpy(), reference_sdf(mesh, nodes.numpy()), atol=1e-9)
    # Along x the box is 10 cm long, along z 3 cm: the centre row along x is negative much longer.
    centre = grid.values[:, 6, 6] < 0
    assert centre.sum() > 2 * (grid.values[6, 6, :] < 0).sum()
    assert torch.allclose(sample_sdf_grid(grid, nodes), grid.values[idx[:, 0], idx[:, 1], idx[:, 2]], atol=1e-12)


def test_grid_sampling_error_shrinks_with_resolution():
    mesh = bent_tube(n_around=12, n_rings=24)
    verts, faces = as_torch(mesh, torch.float32)
    points = torch.tensor(probe_points(mesh, seed=5), dtype=torch.float32)
    points = points[(points > verts.amin(0)).all(-1) & (points < verts.amax(0)).all(-1)]
    exact = mesh_signed_distance(points[None], verts[None], faces)[0]
    errors = {}
    for resolution in (24, 48):
        grid = compute_sdf_grid(verts, faces, resolution=resolution)
        errors[resolution] = (sample_sdf_grid(grid, points) - exact).abs()
    # ~13 cm mesh: cells of 6.4 mm and 3.1 mm (bench/RESULTS.md has 32^3 and 64^3); the
    # error is second order in the cell size away from the surface's creases.
    assert errors[24].mean() < 8e-4 and errors[48].mean() < 3e-4
    assert errors[48].mean() < 0.5 * errors[24].mean()


def test_object_sdf_matches_exact_distance_to_placed_mesh(generator):
    mesh = bent_tube(n_around=12, n_rings=24)
    verts, faces = as_torch(mesh)
    grid = compute_sdf_grid(verts, faces, resolution=48)
    rotation = axis_angle_to_matrix(torch.randn(2, 3, generator=generator, dtype=torch.float64))
    translation = torch.tensor([[0.0, 0.05, 0.5], [0.1, -0.02, 0.8]], dtype=torch.float64)
    scale = torch.tensor([1.0, 1.7], dtype=torch.float64)
    placed = scale[:, None, None] * verts @ rotation.transpose(1, 2) + translation[:, None]
    surface = torch.tensor(trimesh.sample.sample_surface(mesh, 300, seed=0)[0])
    local = surface + 0.004 * torch.randn(surface.shape, generator=generator, dtype=torch.float64)
    points = scale[:, None, None] * local @ rotation.transpose(1, 2) + translation[:, None]
    exact = mesh_signed_distance(points, placed, faces)
    got = object_sdf(grid, points, rotation, translation, scale)
    error = (got - exact).abs()
    assert error.mean(1)[1] > error.mean(1)[0]            # distances scale with the object
    assert (error.mean(1) / scale).max() < 4e-4
    assert torch.equal(torch.sign(got)[error < 0.5 * exact.abs()], torch.sign(exact)[error < 0.5 * exact.abs()])
    # A float scale gives the same as a tensor of ones.
    same = object_sdf(grid, points[:1], rotation[:1], translation[:1], 1.0)
    assert torch.allclose(same, got[:1])


def test_grid_save_load_round_trip_and_errors(tmp_path):
    grid = SDFGrid(torch.randn(4, 5, 6), torch.tensor([0.1, 0.2, 0.3]), 0.01)
    path = tmp_path / "grid.npz"
    grid.save(path)
    loaded = SDFGrid.load(path)
    assert torch.equal(loaded.values, grid.values) and torch.equal(loaded.origin, grid.origin)
    assert torch.allclose(loaded.spacing_vector(), torch.full((3,), 0.01))
    as64 = loaded.to(dtype=torch.float64)
    assert as64.values.dtype == torch.float64 and as64.origin.dtype == torch.float64
    (tmp_path / "bad.npz").write_text("not a grid")
    with pytest.raises(HodataError, match="bad.npz"):
        SDFGrid.load(tmp_path / "bad.npz")
    with pytest.raises(HodataError, match="missing.npz"):
        SDFGrid.load(tmp_path / "missing.npz")


def test_all_points_culled_returns_box_distance():
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.05)
    verts = torch.tensor(mesh.vertices, dtype=torch.float64)[None]
    faces = torch.tensor(mesh.faces, dtype=torch.long)
    points = torch.tensor([[[0.3, 0.0, 0.0], [0.0, -0.2, 0.0]]], dtype=torch.float64)
    out = mesh_signed_distance(points, verts, faces, max_distance=0.0)
    assert torch.allclose(out, torch.tensor([[0.25, 0.15]], dtype=torch.float64), atol=1e-3)


def test_tracked_signed_distance_follows_small_motions_exactly():
    from hodata.geometry.sdf import face_neighbourhoods, tracked_signed_distance

    mesh = trimesh.creation.capsule(height=0.08, radius=0.02, count=[16, 16])
    verts0 = torch.tensor(mesh.vertices, dtype=torch.float64)[None].repeat(2, 1, 1)
    faces = torch.tensor(mesh.faces, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    points = (torch.rand(2, 300, 3, generator=gen, dtype=torch.float64) - 0.5) * torch.tensor([0.06, 0.06, 0.14], dtype=torch.float64)
    neighbourhoods = face_neighbourhoods(faces, verts0.shape[1])
    assert neighbourhoods.shape[0] == faces.shape[0] and (neighbourhoods[:, 0] >= 0).all()
    _, guess = mesh_signed_distance(points, verts0, faces, return_faces=True)
    verts = verts0.clone()
    for step in range(20):  # the mesh drifts ~1 mm and turns ~0.5 degrees per step
        rot = axis_angle_to_matrix(torch.tensor([0.0, 0.0, 0.009 * (step + 1)], dtype=torch.float64))
        verts = verts0 @ rot.T + torch.tensor([0.001, 0.0005, 0.0], dtype=torch.float64) * (step + 1)
        tracked, guess = tracked_signed_distance(points, verts, faces, guess, neighbourhoods)
        exact = mesh_signed_distance(points, verts, faces)
        near = exact.abs() < 0.005  # where collisions and contacts happen: exact
        assert (tracked - exact)[near].abs().max() < 1e-9
        # deeper points near the medial axis may keep a locally nearest face: never closer
        # than the truth, and the side (sign) is right
        assert (tracked.abs() >= exact.abs() - 1e-12).all()
        assert (torch.sign(tracked) == torch.sign(exact)).float().mean() > 0.99
    # points flagged unknown (-1) get the box distance, a lower bound
    unknown = torch.full_like(guess, -1)
    values, _ = tracked_signed_distance(points, verts, faces, unknown, neighbourhoods)
    assert (values <= exact.clamp_min(0) + 1e-12).all()


def test_triangle_sq_distance_matches_trimesh_closest_point():
    from hodata.geometry.sdf import _triangle_sq_distance

    gen = torch.Generator().manual_seed(4)
    tri = torch.rand(400, 3, 3, generator=gen, dtype=torch.float64)
    p = (torch.rand(400, 3, generator=gen, dtype=torch.float64) - 0.25) * 1.5
    ours = _triangle_sq_distance(p, tri)
    ref = trimesh.triangles.closest_point(tri.numpy(), p.numpy())
    expected = ((p - torch.tensor(ref)) ** 2).sum(-1)
    assert torch.allclose(ours, expected, atol=1e-12)


def test_truncated_search_is_exact_within_the_truncation_and_outside_beyond():
    mesh = bent_tube()
    verts, faces = as_torch(mesh)
    points = torch.tensor(probe_points(mesh, seed=5))[None]
    full, full_faces = mesh_signed_distance(points, verts[None], faces, return_faces=True)
    truncate = 0.013  # the tube radius is at most 1.2 cm: no probe is deeper inside than this
    assert full.min() > -truncate
    value, found = mesh_signed_distance(points, verts[None], faces, return_faces=True, truncate=truncate)
    near = full.abs() <= truncate
    assert near.any() and (~near).any()
    assert torch.allclose(value[near], full[near], rtol=0, atol=1e-12)
    assert (found[near] >= 0).all()
    # beyond the truncation: +truncate (a lower bound of the true, positive value) and no face
    assert (value[~near] == truncate).all() and (full[~near] > truncate).all()
    assert (found[~near] == -1).all()
