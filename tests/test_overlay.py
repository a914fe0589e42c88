"""Overlays of fits (hodata.app.draw) and the `hodata show` command."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from hodata import handmodel
from hodata.app import draw as overlay
from hodata.cli import app
from hodata.errors import HodataError
from hodata.geometry.raster import render_labels, render_shaded
from hodata.shards import ShardWriter
from hodata.types import FitResult, HandState, ObjectState

H, W = 96, 128
F = 220.0
K = torch.tensor([[F, 0.0, 63.5], [0.0, F, 47.5], [0.0, 0.0, 1.0]])
MODEL_ID = "testbox"


def blue_pixels(image: np.ndarray) -> np.ndarray:
    """Pixels of the first object's colour (blue): blue well above green (grey has blue = green,
    skin and the second object's green have less blue than green)."""
    return image[..., 2].astype(int) - image[..., 1].astype(int) > 15


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))



@pytest.fixture(scope="module")
def hand_layer():
    return handmodel.load(side="right", model="open")


def make_fit(hand_layer, T: int = 3, clip_seq: str = "seqA", store_object_vertices: bool = False) -> FitResult:
    """A fit whose object pose is known: a box rotating about y in front of the camera, the
    open hand beside it (overlapping the box in the image, nearer the camera)."""
    angles = torch.linspace(0.2, 0.8, T)
    rotation = torch.as_tensor(Rotation.from_rotvec(np.stack([0.3 * np.ones(T), angles.numpy(), 0.1 * np.ones(T)], 1))
                               .as_matrix(), dtype=torch.float32)
    translation = torch.tensor([0.0, 0.0, 0.45]).repeat(T, 1) + torch.linspace(0, 0.02, T)[:, None]
    with torch.no_grad():
        out = hand_layer(torch.eye(3).repeat(T, 1, 1), torch.zeros(T, 16), torch.zeros(T, 10),
                         torch.tensor([0.03, 0.02, 0.36]).repeat(T, 1))
    hand = HandState(side="right", vertices=out.vertices.float(), joints=out.joints.float(),
                     global_orient=torch.eye(3).repeat(T, 1, 1), hand_pose=torch.zeros(T, 16), pose_space="pca",
                     betas=torch.zeros(10), transl=torch.tensor([0.03, 0.02, 0.36]).repeat(T, 1),
                     scale=torch.tensor(1.0), model_name=hand_layer.model_name)
    obj = ObjectState(model_id=MODEL_ID, rotation=rotation, translation=translation, scale=torch.tensor(1.0))
    fit = FitResult(clip_id=f"synthetic_{clip_seq}_0000", dataset="synthetic", sequence=clip_seq,
                    frame_ids=[f"{4 * t:04d}" for t in range(T)], K=K.clone(), image_size=(H, W),
                    hands=[hand], objects=[obj])
    return fit


def gt_object_vertices(cache_dir, fit: FitResult) -> list[np.ndarray]:
    """Posed box vertices by trimesh's 4x4 transforms (independent of apply_similarity)."""
    mesh = trimesh.load(cache_dir / MODEL_ID / "mesh.ply", process=False)
    out = []
    for R, t in zip(fit.objects[0].rotation.numpy(), fit.objects[0].translation.numpy()):
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = R, t
        out.append(mesh.copy().apply_transform(m).vertices)
    return out


# ----------------------------------------------------------------------------- overlay


def test_overlay_puts_object_on_ground_truth_mask(cache_dir, hand_layer):
    fit = make_fit(hand_layer)
    hands, objects = overlay.fit_scene_meshes(fit, cache_dir)
    gt_verts = gt_object_vertices(cache_dir, fit)
    assert torch.allclose(objects[0][0], torch.as_tensor(np.stack(gt_verts), dtype=torch.float32), atol=1e-6)
    assert hands[0][1].shape[0] == hand_layer.closed_faces.shape[0]

    # ground truth: visible object pixels (hand in front occludes) from the label renderer
    gt_meshes = [(fit.hands[0].vertices, hand_layer.closed_faces),
                 (torch.as_tensor(np.stack(gt_verts), dtype=torch.float32), objects[0][1])]
    labels, _ = render_labels(gt_meshes, K, (H, W))
    gt_mask = (labels == 2).numpy()
    hand_mask = (labels == 1).numpy()
    assert gt_mask.sum(axis=(1, 2)).min() > 300 and hand_mask.sum(axis=(1, 2)).min() > 100
    object_alone = (render_labels(gt_meshes[1:], K, (H, W))[0] == 1).numpy()
    assert (object_alone & hand_mask).sum() > 20  # the hand hides part of the box: occlusion is tested

    images = overlay.render_overlay(None, hands, objects, fit.K, image_size=(H, W))
    assert images.shape == (3, H, W, 3) and images.dtype == np.uint8
    ious = [iou(blue_pixels(img), m) for img, m in zip(images, gt_mask)]
    assert min(ious) > 0.98, ious
    # the hand is skin coloured (red above blue; grey has red = blue) where the GT says hand
    skin = images[..., 0].astype(int) - images[..., 2].astype(int) > 5
    assert iou(skin, hand_mask) > 0.98


def test_overlay_silhouette_matches_projected_convex_hull(cache_dir, hand_layer):
    """Object alone: the blue pixels equal the filled convex hull of the projected vertices
    (the box is convex), a route that does not use the z-buffer rasteriser."""
    fit = make_fit(hand_layer, T=2)
    gt_verts = gt_object_vertices(cache_dir, fit)
    _, objects = overlay.fit_scene_meshes(fit, cache_dir)
    for t, verts in enumerate(gt_verts):
        image = overlay.render_overlay(None, [], [(objects[0][0][t], objects[0][1])], K, image_size=(H, W))
        assert image.shape == (H, W, 3)
        uv = verts @ K.numpy().T
        uv = uv[:, :2] / uv[:, 2:]
        hull = cv2.convexHull(np.round(uv * 16).astype(np.int32))
        mask = np.zeros((H, W), np.uint8)
        cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
        assert iou(blue_pixels(image), mask.astype(bool)) > 0.9


def test_overlay_blends_over_frame_and_keeps_background(hand_layer):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    box = trimesh.creation.box(extents=(0.06, 0.04, 0.05))
    verts = torch.as_tensor(box.vertices + [0.01, 0.0, 0.4], dtype=torch.float32)
    faces = torch.as_tensor(box.faces)
    out = overlay.render_overlay(image, [], [(verts, faces)], K, alpha=0.6)
    labels, _ = render_labels([(verts[None], faces)], K, (H, W))
    drawn = labels[0].numpy() > 0
    assert drawn.sum() > 500
    assert np.array_equal(out[~drawn], image[~drawn])
    shaded = render_shaded([(verts[None], faces)], [overlay.OBJECT_COLORS[0]], K, (H, W))[0].numpy()
    expected = np.round((0.4 * image / 255.0 + 0.6 * shaded) * 255)
    assert np.abs(out[drawn].astype(float) - expected[drawn]).max() <= 1.0


# ----------------------------------------------------------------------------- side view


def test_side_view_camera_is_a_turn_about_the_vertical_axis():
    centroid = torch.tensor([0.05, -0.02, 0.5], dtype=torch.float64)
    R, t = overlay.side_view_camera(centroid, 90.0)
    assert torch.allclose(R, torch.as_tensor(Rotation.from_euler("y", 90, degrees=True).as_matrix()), atol=1e-12)
    d = centroid.norm()
    assert torch.allclose(R @ centroid + t, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) * d, atol=1e-12)
    camera_centre = -R.T @ t  # where x_side = 0
    assert torch.allclose(camera_centre, centroid + d * torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), atol=1e-12)
    R0, t0 = overlay.side_view_camera(centroid, 0.0)  # no turn: only moved onto the optical axis
    assert torch.allclose(R0, torch.eye(3, dtype=torch.float64)) and torch.allclose(R0 @ centroid + t0, d * R0[2])


def test_side_view_differs_from_front_and_shows_depth():
    """A 12 cm rod along the viewing direction is a dot in the frame and 12 cm wide from the side;
    a marker behind the scene centre appears on the right of the side view."""
    rod = trimesh.creation.box(extents=(0.01, 0.01, 0.12))
    centre = np.array([0.0, 0.0, 0.5])
    rod_v = torch.as_tensor(rod.vertices + centre, dtype=torch.float32)
    marker = trimesh.creation.icosphere(2, radius=0.008)
    marker_v = torch.as_tensor(marker.vertices + centre + [0.0, -0.03, 0.05], dtype=torch.float32)
    objects = [(rod_v, torch.as_tensor(rod.faces)), (marker_v, torch.as_tensor(marker.faces))]
    front = overlay.render_overlay(None, [], objects, K, image_size=(H, W), alpha=1.0)
    side = overlay.render_side_view([], objects, K, (H, W), centroid=torch.tensor(centre, dtype=torch.float32))
    assert side.shape == (H, W, 3) and side.dtype == np.uint8
    assert (np.abs(front.astype(int) - side.astype(int)).sum(-1) > 30).sum() > 150

    def columns(mask):
        cols = np.flatnonzero(mask.any(0))
        return cols.min(), cols.max()

    d = np.linalg.norm(centre)
    for image, extent in ((front, 0.01), (side, 0.12)):
        lo, hi = columns(blue_pixels(image))
        expected = F * extent / d  # closed form at the rod's distance
        assert abs((hi - lo + 1) - expected) <= max(0.15 * expected, 3), (hi - lo + 1, expected)
    green = (side[..., 1].astype(int) - side[..., 0].astype(int) > 15) & (side[..., 1].astype(int) - side[..., 2].astype(int) > 15)
    assert green.sum() > 5
    assert np.flatnonzero(green.any(0)).mean() > K[0, 2].item() + 0.5 * F * 0.05 / d


def test_side_view_of_a_fit_still_shows_the_object(cache_dir, hand_layer):
    fit = make_fit(hand_layer, T=2)
    hands, objects = overlay.fit_scene_meshes(fit, cache_dir)
    front = overlay.render_overlay(None, hands, objects, fit.K, image_size=(H, W))
    side = overlay.render_side_view(hands, objects, fit.K, (H, W))
    assert side.shape == front.shape == (2, H, W, 3)
    assert (blue_pixels(side).sum(axis=(1, 2)) > 100).all()
    assert not np.array_equal(blue_pixels(front), blue_pixels(side))


# ----------------------------------------------------------------------------- panel and video


def test_compose_panel_side_by_side():
    a = np.zeros((10, 7, 3), np.uint8)
    b = np.full((10, 5, 3), 200, np.uint8)
    panel = overlay.compose_panel([a, b], separator=2)
    assert panel.shape == (10, 14, 3)
    assert (panel[:, :7] == 0).all() and (panel[:, 7:9] == 255).all() and (panel[:, 9:] == 200).all()
    with pytest.raises(ValueError):
        overlay.compose_panel([a, np.zeros((9, 5, 3), np.uint8)])


def test_write_video_reopens_with_frame_count(tmp_path):
    ramp = np.linspace(0, 255, 61)[None, :, None]
    frames = [np.broadcast_to(np.clip(ramp + 10 * i, 0, 255), (45, 61, 3)).astype(np.uint8) for i in range(7)]
    path = overlay.write_video(frames, tmp_path / "clip.mp4", fps=10)
    assert path == tmp_path / "clip.mp4" and path.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temporary left behind
    capture = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(frame[:, :, ::-1])
    capture.release()
    assert len(decoded) == 7
    assert decoded[0].shape == (46, 62, 3)  # padded to even sizes, nothing cropped
    assert np.abs(decoded[3][:45, :61].astype(float) - frames[3]).mean() < 6


def test_write_video_without_mp4_support_is_a_clear_error(tmp_path, monkeypatch):
    class NoMp4Writer:
        def __init__(self, *args, **kwargs):
            pass

        def isOpened(self):
            return False

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoWriter", NoMp4Writer)
    with pytest.raises(HodataError, match="cannot write MP4"):
        overlay.write_video([np.zeros((8, 8, 3), np.uint8)], tmp_path / "x.mp4")
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- CLI


runner = CliRunner()


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory, hand_layer):
    """Shards of two clips: seqA with its frames stored as jpg, seqB without frames."""
    out = tmp_path_factory.mktemp("fit") / "joint"
    ramp = np.linspace(30, 220, W).astype(np.uint8)
    images = np.broadcast_to(ramp[None, None, :, None], (3, H, W, 3)).copy()
    with ShardWriter(out, worker_id=0) as writer:
        writer.write_clip(make_fit(hand_layer, 3, "seqA"), images=images)
        writer.write_clip(make_fit(hand_layer, 2, "seqB"))
    return out, images


def test_show_writes_png_panels_and_mp4(results_dir, cache_dir, tmp_path):
    results, images = results_dir
    out = tmp_path / "show"
    result = runner.invoke(app, ["show", str(results), "--out", str(out), "--mesh-cache", str(cache_dir), "--fps", "5"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "frames from the shards" in result.output and "mid-grey" in result.output
    for clip_id, frames in (("synthetic_seqA_0000", ["0000", "0004", "0008"]), ("synthetic_seqB_0000", ["0000", "0004"])):
        pngs = sorted((out / clip_id).glob("*.png"))
        assert [p.stem for p in pngs] == frames
        assert f"wrote {out / clip_id}.mp4" in result.output
        panel = cv2.imread(str(pngs[0]))[:, :, ::-1]
        assert panel.shape == (H, 2 * W + 4, 3)
        assert blue_pixels(panel[:, :W]).sum() > 300 and blue_pixels(panel[:, W + 4:]).sum() > 100
        capture = cv2.VideoCapture(str(out / f"{clip_id}.mp4"))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == len(frames)
        capture.release()
    # the stored jpg is the overlay's background: a pixel far from the meshes keeps the ramp
    panel = cv2.imread(str(out / "synthetic_seqA_0000" / "0000.png"))[:, :, ::-1].astype(int)
    assert np.abs(panel[84:94, 2:40] - images[0, 84:94, 2:40].astype(int)).max() <= 8
    grey = cv2.imread(str(out / "synthetic_seqB_0000" / "0000.png"))[:, :, ::-1]
    assert (grey[60:70, 2:10] == overlay.BACKGROUND_GREY).all()


def test_show_one_clip_and_errors(results_dir, cache_dir, tmp_path):
    results, _ = results_dir
    out = tmp_path / "one"
    result = runner.invoke(app, ["show", str(results), "--clip", "synthetic_seqB_0000", "--out", str(out),
                                 "--mesh-cache", str(cache_dir)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert sorted(p.name for p in out.iterdir()) == ["synthetic_seqB_0000", "synthetic_seqB_0000.mp4"]

    # user errors: exit code 2 and one line naming the problem and the fix (hodata.cli)
    result = runner.invoke(app, ["show", str(results), "--clip", "nope", "--mesh-cache", str(cache_dir)])
    assert result.exit_code == 2
    assert "no clip 'nope'" in result.output and "synthetic_seqA_0000, synthetic_seqB_0000" in result.output

    result = runner.invoke(app, ["show", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "results folder not found" in result.output

    result = runner.invoke(app, ["show", str(tmp_path), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "no manifest.json" in result.output

    result = runner.invoke(app, ["show", str(results), "--out", str(tmp_path / "x"), "--mesh-cache", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert f"'{MODEL_ID}' is not in the mesh cache" in result.output and "hodata prep-meshes" in result.output


def test_show_reads_frames_from_dataset_root(results_dir, cache_dir, tmp_path):
    results, _ = results_dir
    frame_dir = tmp_path / "root" / "train" / "seqB" / "rgb"
    frame_dir.mkdir(parents=True)
    for frame in ("0000", "0004"):  # stored at twice the fitted size: resized to the fit's camera
        cv2.imwrite(str(frame_dir / f"{frame}.png"), np.full((2 * H, 2 * W, 3), (0, 0, 200), np.uint8))
    out = tmp_path / "rooted"
    result = runner.invoke(app, ["show", str(results), "--clip", "synthetic_seqB_0000", "--root", str(tmp_path / "root"),
                                 "--out", str(out), "--mesh-cache", str(cache_dir)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "frames from" in result.output and "mid-grey" not in result.output
    panel = cv2.imread(str(out / "synthetic_seqB_0000" / "0004.png"))[:, :, ::-1]
    assert (np.abs(panel[80:90, 2:10].astype(int) - [200, 0, 0]) <= 1).all()


def test_show_help_documents_every_option():
    result = runner.invoke(app, ["show", "--help"])
    assert result.exit_code == 0
    for option in ("--clip", "--out", "--root", "--mesh-cache", "--mano-dir", "--fps", "--max-clips", "--alpha"):
        assert option in result.output
