"""Z-buffer rasteriser: label masks with occlusion, depth, shaded frames."""

from __future__ import annotations

import time

import torch
import trimesh

from hodata.geometry.camera import crop_intrinsics, project
from hodata.geometry.raster import rasterize, render_labels, render_shaded, render_silhouette
from hodata.geometry.raster_zbuffer import AMBIENT

K = torch.tensor([[500.0, 0.0, 159.5], [0.0, 500.0, 119.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
SIZE = (240, 320)


def _box(extents, centre):
    mesh = trimesh.creation.box(extents)
    verts = torch.tensor(mesh.vertices, dtype=torch.float64) + torch.tensor(centre, dtype=torch.float64)
    return verts[None], torch.tensor(mesh.faces)


def test_labels_follow_depth_not_mesh_order():
    big = _box((0.2, 0.2, 0.2), (0.0, 0.0, 0.6))  # front face at z = 0.5
    small = _box((0.04, 0.04, 0.04), (0.02, 0.0, 0.4))  # front face at z = 0.38
    labels, depth = render_labels([big, small], K, SIZE)
    # Small box projects to u in 500 * [0.0, 0.04] / 0.38 + 159.5 -> about [160, 212].
    assert labels[0, 120, 185] == 2 and labels[0, 120, 100] == 1 and labels[0, 0, 0] == 0
    assert abs(depth[0, 120, 185].item() - 0.38) < 1e-12
    assert abs(depth[0, 120, 100].item() - 0.5) < 1e-12
    assert torch.isinf(depth[0, 0, 0])
    swapped, depth_swapped = render_labels([small, big], K, SIZE)
    expected = torch.where(labels == 0, 0, 3 - labels)
    assert (swapped == expected).all()
    torch.testing.assert_close(depth_swapped, depth)
    # Behind the big box the small one is hidden entirely.
    hidden = _box((0.04, 0.04, 0.04), (0.02, 0.0, 0.9))
    labels_hidden, _ = render_labels([big, hidden], K, SIZE)
    assert (labels_hidden != 2).all()


def test_depth_of_a_tilted_plane_matches_the_closed_form():
    # Quad on the plane n . X = d, seen obliquely; depth(u, v) = d / (n . K^-1 [u, v, 1]).
    normal = torch.nn.functional.normalize(torch.tensor([0.3, -0.2, -1.0], dtype=torch.float64), dim=0)
    d = -0.5
    # Four points on the plane: pick x, y and solve for z.
    xy = torch.tensor([[-0.15, -0.1], [0.15, -0.1], [0.15, 0.1], [-0.15, 0.1]], dtype=torch.float64)
    z = (d - xy @ normal[:2]) / normal[2]
    quad = torch.cat([xy, z[:, None]], dim=1)[None]
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    labels, depth = render_labels([(quad, faces)], K, SIZE)
    covered = labels[0] > 0
    assert covered.sum() > 0.3 * SIZE[0] * SIZE[1]
    v, u = torch.meshgrid(torch.arange(SIZE[0]), torch.arange(SIZE[1]), indexing="ij")
    rays = torch.stack([u, v, torch.ones_like(u)], -1).double() @ torch.linalg.inv(K).T
    closed_form = d / (rays @ normal)
    torch.testing.assert_close(depth[0][covered], closed_form[covered], rtol=1e-10, atol=1e-12)


def test_label_coverage_matches_the_hard_silhouette():
    mesh = trimesh.creation.annulus(r_min=0.02, r_max=0.05, height=0.03)
    mesh.apply_transform(trimesh.transformations.rotation_matrix(0.9, [1, 0.3, 0]))
    verts = torch.tensor(mesh.vertices)[None] + torch.tensor([0.0, 0.0, 0.4], dtype=torch.float64)
    faces = torch.tensor(mesh.faces)
    crop_K = crop_intrinsics(K, torch.tensor([90.0, 50.0, 230.0, 190.0], dtype=torch.float64), (128, 128))
    labels, _ = render_labels([(verts, faces)], crop_K, (128, 128))
    hard = render_silhouette(verts, faces, crop_K, (128, 128), mode="hard") > 0.5
    drawn = labels > 0
    iou = (drawn & hard).sum() / (drawn | hard).sum()
    assert iou > 0.995 and drawn.sum() > 2000


def test_perspective_correct_barycentrics_reproduce_the_surface_point():
    big = _box((0.2, 0.2, 0.2), (0.01, -0.02, 0.6))
    frags = rasterize([big], K, SIZE)
    drawn = frags.face[0] >= 0
    corners = big[0][0][big[1][frags.face[0][drawn]]]  # (N, 3, 3)
    points = (frags.bary[0][drawn][..., None] * corners).sum(1)
    v, u = drawn.nonzero(as_tuple=True)
    pix = project(points[None], K)[0]
    torch.testing.assert_close(pix, torch.stack([u, v], -1).double(), rtol=0, atol=1e-8)


def test_shaded_keeps_background_and_shades_meshes():
    big = _box((0.2, 0.2, 0.2), (0.0, 0.0, 0.6))
    small = _box((0.04, 0.04, 0.04), (0.02, 0.0, 0.4))
    background = torch.rand(1, *SIZE, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    colors = [(0.2, 0.4, 0.8), torch.tensor([1.0, 0.5, 0.0])]
    for smooth in (False, True):
        image = render_shaded([big, small], colors, K, SIZE, background=background, smooth=smooth)
        labels, _ = render_labels([big, small], K, SIZE)
        empty = labels[0] == 0
        assert (image[0][empty] == background[0][empty]).all()
        assert image.min() >= 0 and image.max() <= 1
        for index, color in enumerate(colors):
            color = torch.as_tensor(color, dtype=torch.float64)
            rgb = image[0][labels[0] == index + 1]
            intensity = rgb[:, 0] / color[0]
            torch.testing.assert_close(rgb, intensity[:, None] * color)  # same hue, only shaded
            assert intensity.min() >= AMBIENT - 1e-9 and intensity.max() <= 1 + 1e-9
        if smooth:
            continue  # vertex normals of a box average three faces; see the sphere test
        # The big box's front face is fronto-parallel: headlight intensity is the cosine
        # between its normal and the ray, ~1 at the principal point.
        intensity_centre = image[0, 120, 100, 0] / 0.2
        ray = torch.tensor([100 - 159.5, 120 - 119.5, 500.0], dtype=torch.float64)
        expected = AMBIENT + (1 - AMBIENT) * ray[2] / ray.norm()
        assert abs(intensity_centre - expected) < 1e-6
    black = render_shaded([big], [(1.0, 1.0, 1.0)], K, SIZE)
    assert (black[0][labels[0] == 0] == 0).all()


def test_smooth_shading_of_a_sphere_follows_its_true_normals():
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=0.1)
    centre = torch.tensor([0.02, -0.01, 0.5], dtype=torch.float64)
    verts = torch.tensor(mesh.vertices)[None] + centre
    image = render_shaded([(verts, torch.tensor(mesh.faces))], [(1.0, 1.0, 1.0)], K, SIZE, smooth=True)
    _, depth = render_labels([(verts, torch.tensor(mesh.faces))], K, SIZE)
    drawn = torch.isfinite(depth[0])
    v, u = drawn.nonzero(as_tuple=True)
    rays = torch.stack([u, v, torch.ones_like(u)], -1).double() @ torch.linalg.inv(K).T
    points = rays * depth[0][drawn][:, None]
    normal = torch.nn.functional.normalize(points - centre, dim=-1)
    cosine = (normal * torch.nn.functional.normalize(-points, dim=-1)).sum(-1).abs()
    expected = AMBIENT + (1 - AMBIENT) * cosine
    error = (image[0][drawn][:, 0] - expected).abs()
    assert error.median() < 0.005 and error.max() < 0.05


def test_shaded_vga_frame_is_fast():
    mesh = trimesh.creation.uv_sphere(radius=0.1, count=[28, 28])
    assert 2900 < len(mesh.faces) < 3200
    verts = torch.tensor(mesh.vertices, dtype=torch.float32)[None] + torch.tensor([0.0, 0.0, 0.35])
    faces = torch.tensor(mesh.faces)
    vga_K = torch.tensor([[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]])
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        image = render_shaded([(verts, faces)], [(0.8, 0.6, 0.4)], vga_K, (480, 640))
        timings.append(time.perf_counter() - start)
    assert (image.sum(-1) > 0).float().mean() > 0.3  # the sphere fills a large part
    assert min(timings) < 1.0, timings
