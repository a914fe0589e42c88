"""Synthetic HO-3D sets: real layout and keys, a non-penetrating grasp, smooth motion, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from hodata import handmodel
from hodata.datasets.ho3d import (
    EVALUATION_META_KEYS,
    TRAIN_META_KEYS,
    HO3DDataset,
    ho3d_object_model,
    load_meta,
)
from hodata.datasets.synthetic import ho3d_intrinsics, make_synthetic_ho3d
from hodata.errors import HodataError
from hodata.geometry.sdf import mesh_signed_distance

FRAMES = 12
SIZE = (240, 320)
GL = np.array([1.0, -1.0, -1.0])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mesh_cache")


@pytest.fixture(scope="module")
def root(tmp_path_factory, cache):
    return make_synthetic_ho3d(tmp_path_factory.mktemp("synth"), sequences=["AB1", "AB2"], frames=FRAMES,
                               object_ids=("025_mug", "004_sugar_box"), seed=7, image_size=SIZE, cache_dir=cache)


@pytest.fixture(scope="module")
def layer():
    return handmodel.load("right", model="auto", use_pca=False, flat_hand_mean=True, dtype=torch.float64)


def _metas(root, seq, split="train"):
    return [load_meta(root / split / seq / "meta" / f"{t:04d}.pkl") for t in range(FRAMES)]


def _hand_gl(layer, meta):
    """Hand vertices and joints (OpenGL) straight from the pickle, as an HO-3D user would."""
    pose = torch.as_tensor(np.asarray(meta["handPose"], dtype=np.float64))[None]
    out = layer(global_orient=pose[:, :3], hand_pose=pose[:, 3:],
                betas=torch.as_tensor(np.asarray(meta["handBeta"], dtype=np.float64))[None],
                transl=torch.as_tensor(np.asarray(meta["handTrans"], dtype=np.float64))[None])
    return out.vertices[0], out.joints[0]


def _object_gl(model, meta):
    rot = Rotation.from_rotvec(np.asarray(meta["objRot"], dtype=np.float64).reshape(3)).as_matrix()
    return model.vertices.double().numpy() @ rot.T + np.asarray(meta["objTrans"], dtype=np.float64)


def test_layout_and_keys(root):
    lines = (root / "train.txt").read_text().split()
    assert lines == [f"{s}/{t:04d}" for s in ("AB1", "AB2") for t in range(FRAMES)]
    for seq, obj in (("AB1", "025_mug"), ("AB2", "004_sugar_box")):
        for sub, ext in (("rgb", "png"), ("meta", "pkl"), ("seg", "png")):
            assert sorted(p.name for p in (root / "train" / seq / sub).iterdir()) == [
                f"{t:04d}.{ext}" for t in range(FRAMES)]
        meta = load_meta(root / "train" / seq / "meta" / "0005.pkl")
        assert set(TRAIN_META_KEYS) <= set(meta) and set(meta) - set(TRAIN_META_KEYS) == {
            "hodataHandModel", "hodataHandSide"}
        assert meta["objName"] == obj and (root / "models" / obj / "textured_simple.obj").is_file()
        assert np.shape(meta["objRot"]) == (3, 1) and np.shape(meta["handPose"]) == (48,)
        assert np.shape(meta["handJoints3D"]) == (21, 3) and np.shape(meta["handBeta"]) == (10,)
        assert np.shape(meta["objCorners3D"]) == (8, 3) and np.shape(meta["objCorners3DRest"]) == (8, 3)
        assert meta["hodataHandModel"] == handmodel.load("right").model_name
        image = Image.open(root / "train" / seq / "rgb" / "0005.png")
        assert image.size == (SIZE[1], SIZE[0]) and image.mode == "RGB"
    info = json.loads((root / "hodata_synthetic.json").read_text())
    assert info["runs"][0]["seed"] == 7


def test_camera_is_ho3d_like():
    K = ho3d_intrinsics((480, 640))
    assert K[0, 0] == pytest.approx(617.343) and K[0, 2] == pytest.approx(315.0) and K[1, 2] == pytest.approx(242.0)
    half = ho3d_intrinsics((240, 320))
    # Same field of view at half resolution.
    assert half[0, 0] == pytest.approx(K[0, 0] / 2) and (half[0, 2] + 0.5) * 2 == pytest.approx(K[0, 2] + 0.5)


def test_annotations_are_self_consistent_in_opengl(root, layer, cache):
    model = ho3d_object_model(root / "models", "025_mug", cache, dtype=torch.float64)
    for meta in _metas(root, "AB1")[::3]:
        _, joints = _hand_gl(layer, meta)
        assert np.allclose(joints.numpy(), meta["handJoints3D"], atol=2e-6)
        assert (np.asarray(meta["handJoints3D"])[:, 2] < 0).all(), "OpenGL: in front of the camera is z < 0"
        rot = Rotation.from_rotvec(np.asarray(meta["objRot"]).reshape(3)).as_matrix()
        corners = np.asarray(meta["objCorners3DRest"]) @ rot.T + np.asarray(meta["objTrans"])
        assert np.allclose(corners, meta["objCorners3D"], atol=1e-5)
        lo, hi = model.vertices.numpy().min(0), model.vertices.numpy().max(0)
        assert np.allclose(np.asarray(meta["objCorners3DRest"]).min(0), lo, atol=1e-6)
        assert np.allclose(np.asarray(meta["objCorners3DRest"]).max(0), hi, atol=1e-6)


def test_grasp_touches_without_penetration(root, layer, cache):
    for seq, obj in (("AB1", "025_mug"), ("AB2", "004_sugar_box")):
        model = ho3d_object_model(root / "models", obj, cache, dtype=torch.float64)
        for meta in _metas(root, seq)[::4]:
            verts, joints = _hand_gl(layer, meta)
            obj_verts = torch.as_tensor(_object_gl(model, meta))
            sdf = mesh_signed_distance(verts[None], obj_verts[None], model.faces)[0]
            assert sdf.min() >= -1e-3, f"{seq}: hand vertex {float(-sdf.min()) * 1000:.2f} mm inside the object"
            assert sdf.min() <= 2e-3, "the hand touches the object"
            # Fingers rest on the surface: at least three of the five fingertip regions within 1 cm.
            tips = mesh_signed_distance(joints[None, 16:21], obj_verts[None], model.faces)[0]
            assert int((tips < 0.01).sum()) >= 3 and tips.min() > -1e-3


def test_motion_is_smooth_and_in_view(root, cache):
    for seq in ("AB1", "AB2"):
        metas = _metas(root, seq)
        trans = np.stack([np.asarray(m["objTrans"]) for m in metas]) * GL
        rots = Rotation.from_rotvec(np.stack([np.asarray(m["objRot"]).reshape(3) for m in metas]))
        assert (trans[:, 2] > 0.35).all() and (trans[:, 2] < 0.9).all()
        steps = np.linalg.norm(np.diff(trans, axis=0), axis=1)
        assert steps.max() < 0.01 and steps.mean() > 1e-4, "moving, slowly"
        angles = (rots[1:] * rots[:-1].inv()).magnitude()
        assert np.degrees(angles).max() < 3.0 and angles.mean() > 1e-4
        K = np.asarray(metas[0]["camMat"])
        for m in metas:
            cam = np.asarray(m["handJoints3D"]) * GL
            pix = cam @ K.T
            pix = pix[:, :2] / pix[:, 2:]
            assert (pix >= 0).all() and (pix[:, 0] < SIZE[1]).all() and (pix[:, 1] < SIZE[0]).all()


def test_images_show_hand_and_object(root):
    rgb = np.asarray(Image.open(root / "train" / "AB1" / "rgb" / "0000.png"))
    seg = np.asarray(Image.open(root / "train" / "AB1" / "seg" / "0000.png"))
    obj, hand = seg[..., 1] > 127, seg[..., 2] > 127
    assert obj.sum() > 500 and hand.sum() > 200 and not (obj & hand).any()
    assert set(np.unique(seg[..., 0])) == {0}
    # Object pixels are the mug's red, hand pixels skin-like, background neither.
    assert rgb[obj][:, 0].mean() > 2 * rgb[obj][:, 1].mean()
    skin = rgb[hand].mean(0)
    assert skin[0] > skin[1] > skin[2]


def test_deterministic_by_seed(root, tmp_path, cache):
    again = make_synthetic_ho3d(tmp_path / "a", sequences=["AB1"], frames=FRAMES, object_ids=("025_mug",), seed=7,
                                image_size=SIZE, cache_dir=cache)
    for t in (0, 11):
        a = load_meta(root / "train" / "AB1" / "meta" / f"{t:04d}.pkl")
        b = load_meta(again / "train" / "AB1" / "meta" / f"{t:04d}.pkl")
        for key in ("objRot", "objTrans", "handPose", "handTrans", "handJoints3D"):
            assert np.array_equal(a[key], b[key])
        assert (root / "train" / "AB1" / "rgb" / f"{t:04d}.png").read_bytes() == (
            again / "train" / "AB1" / "rgb" / f"{t:04d}.png").read_bytes()
    other = make_synthetic_ho3d(tmp_path / "b", sequences=["AB1"], frames=2, object_ids=("025_mug",), seed=8,
                                image_size=SIZE, cache_dir=cache)
    c = load_meta(other / "train" / "AB1" / "meta" / "0000.pkl")
    assert not np.allclose(c["objTrans"], load_meta(root / "train" / "AB1" / "meta" / "0000.pkl")["objTrans"])


def test_evaluation_split_hides_ground_truth(tmp_path, cache, layer):
    root = make_synthetic_ho3d(tmp_path / "ev", sequences=1, frames=6, object_ids=("025_mug",), seed=1,
                               image_size=SIZE, cache_dir=cache, split="evaluation")
    assert (root / "evaluation.txt").read_text().split() == [f"SYN0/{t:04d}" for t in range(6)]
    assert not (root / "evaluation" / "SYN0" / "seg").exists()
    meta = load_meta(root / "evaluation" / "SYN0" / "meta" / "0002.pkl")
    assert set(meta) == set(EVALUATION_META_KEYS)
    assert np.shape(meta["handJoints3D"]) == (3,) and np.shape(meta["handBoundingBox"]) == (4,)
    gt = load_meta(root / "evaluation_gt" / "SYN0" / "0002.pkl")
    assert set(TRAIN_META_KEYS) <= set(gt)
    assert np.allclose(gt["handJoints3D"][0], meta["handJoints3D"])
    # The adapter reads the hidden hands from the side file and renders masks (no seg files).
    ds = HO3DDataset(root, split="evaluation", clip_length=3, stride=2, cache_dir=cache, dtype=torch.float64)
    clip = ds[0]
    assert clip.gt_hands and clip.gt_hands[0].vertices.shape[1] == layer.num_vertices
    assert np.allclose(clip.gt_hands[0].joints[1].numpy(), np.asarray(load_meta(
        root / "evaluation_gt" / "SYN0" / f"{clip.frame_ids[1]}.pkl")["handJoints3D"]) * GL, atol=2e-6)
    assert (clip.object_masks == 1).any() and (clip.object_masks == -1).any()
    x0, y0, x1, y1 = meta["handBoundingBox"]
    assert 0 <= x0 < x1 <= SIZE[1] and 0 <= y0 < y1 <= SIZE[0]


def test_left_hand_and_bad_arguments(tmp_path, cache):
    root = make_synthetic_ho3d(tmp_path / "l", sequences=1, frames=2, object_ids=("025_mug",), seed=0,
                               image_size=SIZE, cache_dir=cache, hand_side="left")
    clip = HO3DDataset(root, clip_length=2, stride=1, cache_dir=cache)[0]
    assert clip.hand_sides == ["left"] and clip.gt_hands[0].side == "left"
    assert (clip.object_masks == 1).any()
    with pytest.raises(HodataError, match="unknown catalog object"):
        make_synthetic_ho3d(tmp_path / "x", object_ids=("no_such_object",), frames=2, cache_dir=cache)
    with pytest.raises(HodataError, match="split"):
        make_synthetic_ho3d(tmp_path / "y", split="test", cache_dir=cache)
