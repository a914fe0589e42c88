"""HO-3D adapter: clip windows, OpenGL -> OpenCV round trip on a synthetic set, bad inputs."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from hodata.datasets import get_adapter
from hodata.datasets.base import clip_windows, read_rgb
from hodata.datasets.ho3d import HO3DDataset, load_meta, read_segmentation, write_segmentation
from hodata.datasets.synthetic import make_synthetic_ho3d
from hodata.errors import HodataError
from hodata.geometry.raster import render_silhouette

FRAMES = 12
SIZE = (240, 320)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mesh_cache")


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory, cache):
    root = tmp_path_factory.mktemp("ho3d_synth")
    return make_synthetic_ho3d(root, sequences=1, frames=FRAMES, object_ids=("025_mug",), seed=3, image_size=SIZE,
                               cache_dir=cache)


@pytest.fixture
def copy_root(dataset_root, tmp_path):
    """A private copy of the synthetic set to damage."""
    target = tmp_path / "copy"
    shutil.copytree(dataset_root, target)
    return target


def _dump(path, meta):
    with open(path, "wb") as f:
        pickle.dump(meta, f)


# ------------------------------------------------------------------------------- clip windows


@pytest.mark.parametrize("n, length, stride", [(40, 10, 4), (100, 10, 4), (37, 10, 4), (38, 10, 4), (300, 10, 1),
                                               (12, 5, 2), (9, 3, 4)])
def test_clip_windows_cover_the_sequence_without_overlap(n, length, stride):
    windows = clip_windows(n, length, stride)
    span = (length - 1) * stride + 1
    assert windows, "a long enough sequence gives at least one window"
    for w in windows[:-1]:
        assert len(w) == length
    assert 1 <= len(windows[-1]) <= length
    for w in windows:
        assert np.all(np.diff(w) == stride)
        assert 0 <= w[0] and w[-1] < n
    assert windows[-1][-1] == n - 1, "the last frame is covered"
    regular = windows if (n - span) % (length * stride) == 0 else windows[:-1]
    for a, b in zip(regular, regular[1:]):
        assert b[0] == a[-1] + stride, "regular windows follow each other without overlap"
    assert regular[0][0] == 0


@pytest.mark.parametrize("length, stride", [(10, 4), (5, 2), (10, 1), (4, 3)])
def test_clip_windows_never_repeat_a_frame(length, stride):
    """Every length from 1 to 300 (n = 1 mod 4 from 41 up used to repeat frames at T=10, stride 4)."""
    for n in range(1, 301):
        frames = [i for w in clip_windows(n, length, stride) for i in w]
        assert len(frames) == len(set(frames)), n
        assert frames[-1] == n - 1 or max(frames) == n - 1


def test_clip_windows_reference_example():
    # HO-3D defaults on 40 frames: one window from 0, then the end-aligned one.
    assert clip_windows(40, 10, 4) == [list(range(0, 37, 4)), list(range(3, 40, 4))]
    assert clip_windows(37, 10, 4) == [list(range(0, 37, 4))]
    # 41 frames: the end-aligned window would repeat frames 4..36, so the grid continues instead
    assert clip_windows(41, 10, 4) == [list(range(0, 37, 4)), [40]]
    assert clip_windows(80, 10, 4) == [list(range(0, 37, 4)), list(range(40, 77, 4)), list(range(43, 80, 4))]


def test_clip_windows_short_and_empty_sequences():
    assert clip_windows(0) == []
    assert clip_windows(5, 10, 4) == [[0, 4]]
    assert clip_windows(7, 10, 4) == [[2, 6]]
    assert clip_windows(1, 10, 4) == [[0]]
    with pytest.raises(ValueError):
        clip_windows(10, 0, 4)


def test_registry():
    assert get_adapter("ho3d") is HO3DDataset
    with pytest.raises(HodataError, match="unknown dataset"):
        get_adapter("no-such-dataset")


def test_read_rgb_names_missing_and_corrupt_files(tmp_path):
    with pytest.raises(HodataError, match="missing image .*nope.png"):
        read_rgb(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(HodataError, match="corrupt .*bad.png"):
        read_rgb(bad)
    # a JPEG cut in half still decodes in OpenCV (grey tail, only a warning): caught by its missing end marker
    import cv2

    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    assert read_rgb(good).shape == (48, 64, 3)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(HodataError, match="corrupt .*cut.jpg"):
        read_rgb(cut)


def test_segmentation_encoding_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    obj = rng.random((20, 30)) > 0.5
    hand = ~obj & (rng.random((20, 30)) > 0.5)
    write_segmentation(tmp_path / "s.png", obj, hand)
    obj2, hand2 = read_segmentation(tmp_path / "s.png", (20, 30))
    assert np.array_equal(obj, obj2) and np.array_equal(hand, hand2)
    # A half-resolution map (HO-3D v2 style) is resized to the image.
    obj3, _ = read_segmentation(tmp_path / "s.png", (40, 60))
    assert obj3.shape == (40, 60) and np.array_equal(obj3[::2, ::2], obj)


# ------------------------------------------------------------------------- round trip of poses


@pytest.fixture(scope="module")
def clips(dataset_root, cache):
    ds = HO3DDataset(dataset_root, clip_length=5, stride=2, cache_dir=cache, dtype=torch.float64)
    return ds, list(ds)


def test_clips_follow_the_windows(clips):
    ds, loaded = clips
    assert [c.frame_ids for c in loaded] == [[f"{i:04d}" for i in w] for w in clip_windows(FRAMES, 5, 2)]
    assert ds.skipped_clips == [] and ds.skipped_frames == []
    clip = loaded[0]
    assert clip.dataset == "synthetic" and clip.sequence == "SYN0" and clip.image_size == SIZE
    assert clip.category == "mug" and clip.hand_sides == ["right"]
    assert clip.image_paths[0].name == "0000.png"


def test_object_pose_converted_to_opencv_once(clips, dataset_root, cache):
    ds, loaded = clips
    clip = loaded[0]
    model = ds.object_model("025_mug")
    for t, frame in enumerate(clip.frame_ids):
        meta = load_meta(dataset_root / "train" / "SYN0" / "meta" / f"{frame}.pkl")
        # Independent route: scipy's Rodrigues, then OpenGL -> OpenCV by negating y and z.
        rot = Rotation.from_rotvec(np.asarray(meta["objRot"]).reshape(3)).as_matrix()
        gl = model.vertices.numpy() @ rot.T + np.asarray(meta["objTrans"])
        cv = gl * np.array([1.0, -1.0, -1.0])
        assert np.allclose(clip.gt_object.vertices[t].numpy(), cv, atol=1e-6)
        assert cv[:, 2].min() > 0.3, "in front of the camera after the conversion"
        assert np.allclose(clip.K.numpy(), meta["camMat"], atol=1e-4)


def test_hand_state_matches_annotated_joints(clips, dataset_root):
    ds, loaded = clips
    clip = loaded[1]
    hand = clip.gt_hands[0]
    layer = ds.hand_layer("right", hand.model_name)
    out = layer(global_orient=hand.global_orient, hand_pose=hand.hand_pose, betas=hand.betas, transl=hand.transl)
    assert torch.allclose(out.vertices, hand.vertices, atol=1e-9)
    for t, frame in enumerate(clip.frame_ids):
        meta = load_meta(dataset_root / "train" / "SYN0" / "meta" / f"{frame}.pkl")
        joints_cv = np.asarray(meta["handJoints3D"]) * np.array([1.0, -1.0, -1.0])
        assert np.allclose(hand.joints[t].numpy(), joints_cv, atol=2e-6)
        assert np.allclose(hand.hand_pose[t].numpy(), meta["handPose"][3:], atol=1e-7)
        assert np.allclose(torch.linalg.det(hand.global_orient[t]).item(), 1.0)


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a & b).sum((1, 2)).float() / (a | b).sum((1, 2)).float().clamp_min(1)


def test_ground_truth_projects_onto_the_masks(clips, cache):
    """Round trip of the OpenGL -> OpenCV conversion: the GT object's silhouette minus the
    hand-occluded pixels is the dataset's object mask; likewise for the hand."""
    ds, loaded = clips
    model = ds.object_model("025_mug")
    for clip in loaded:
        obj = clip.object_masks == 1
        hand = clip.object_masks == -1
        assert obj.sum((1, 2)).min() > 500 and hand.sum((1, 2)).min() > 200
        sil = render_silhouette(clip.gt_object.vertices, model.faces, clip.K, clip.image_size, mode="hard").bool()
        assert _iou(sil & ~hand, obj).min() > 0.9
        layer = ds.hand_layer("right", clip.gt_hands[0].model_name)
        hand_sil = render_silhouette(clip.gt_hands[0].vertices, layer.closed_faces, clip.K, clip.image_size,
                                     mode="hard").bool()
        assert _iou(hand_sil & ~obj, hand).min() > 0.9
        assert torch.equal(clip.hand_masks, hand)
        # Boxes: the object box holds the object mask.
        ys, xs = torch.nonzero(obj[0], as_tuple=True)
        box = clip.object_boxes[0]
        assert box[0] <= xs.min() + 1 and box[2] >= xs.max() - 1 and box[1] <= ys.min() + 1 and box[3] >= ys.max() - 1


def test_a_wrong_conversion_would_be_caught(clips):
    """The mask check above is sensitive: without the y/z flip the silhouette misses the mask."""
    ds, loaded = clips
    clip = loaded[0]
    model = ds.object_model("025_mug")
    wrong = clip.gt_object.vertices * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)  # y left as OpenGL
    sil = render_silhouette(wrong, model.faces, clip.K, clip.image_size, mode="hard").bool()
    assert _iou(sil, clip.object_masks == 1).max() < 0.5


# ------------------------------------------------------------------------------- bad inputs


def test_frames_with_objrot_none_are_skipped_and_counted(copy_root, cache):
    path = copy_root / "train" / "SYN0" / "meta" / "0003.pkl"
    meta = load_meta(path)
    meta["objRot"] = None
    _dump(path, meta)
    ds = HO3DDataset(copy_root, clip_length=5, stride=2, cache_dir=cache)
    assert ds.skipped_frames == ["SYN0/0003"]
    assert "0003" not in ds.frames["SYN0"] and len(ds.frames["SYN0"]) == FRAMES - 1
    for clip in ds:
        assert "0003" not in clip.frame_ids
    assert len(list(ds)) == len(clip_windows(FRAMES - 1, 5, 2))


def test_missing_meta_skips_only_its_clip(copy_root, cache):
    (copy_root / "train" / "SYN0" / "meta" / "0000.pkl").unlink()
    ds = HO3DDataset(copy_root, clip_length=5, stride=2, cache_dir=cache)
    loaded = list(ds)
    assert len(loaded) == len(ds) - 1
    assert ds.skipped_clips == ["SYN0/0000"]
    assert any("0000.pkl" in m and "missing annotation" in m for m in ds.messages)


def test_corrupt_image_is_named(copy_root, cache):
    (copy_root / "train" / "SYN0" / "rgb" / "0011.png").write_bytes(b"garbage")
    ds = HO3DDataset(copy_root, clip_length=5, stride=2, cache_dir=cache)
    loaded = list(ds)
    assert len(loaded) == len(ds) - 1 and ds.skipped_clips == ["SYN0/0003"]
    assert any("corrupt" in m and "0011.png" in m for m in ds.messages)


def test_corrupt_meta_is_named(copy_root, cache):
    (copy_root / "train" / "SYN0" / "meta" / "0004.pkl").write_bytes(b"not a pickle")
    ds = HO3DDataset(copy_root, clip_length=5, stride=2, cache_dir=cache)
    with pytest.raises(HodataError, match="corrupt annotation file .*0004.pkl"):
        ds[0]


def test_unknown_object_model(copy_root, cache):
    for path in (copy_root / "train" / "SYN0" / "meta").glob("*.pkl"):
        meta = load_meta(path)
        meta["objName"] = "999_unknown"
        _dump(path, meta)
    ds = HO3DDataset(copy_root, clip_length=5, stride=2, cache_dir=cache)
    assert list(ds) == []
    assert len(ds.skipped_clips) == len(ds)
    assert "unknown object model '999_unknown'" in ds.messages[0] and "textured_simple.obj" in ds.messages[0]


def test_clip_with_empty_object_masks_is_skipped(copy_root, cache):
    empty = np.zeros(SIZE, bool)
    for t in (3, 5, 7, 9, 11):  # the second window of 12 frames at length 5, stride 2
        write_segmentation(copy_root / "train" / "SYN0" / "seg" / f"{t:04d}.png", empty, empty)
    ds = HO3DDataset(copy_root, clip_length=5, stride=2, cache_dir=cache)
    loaded = list(ds)
    assert [c.frame_ids[0] for c in loaded] == ["0000"]
    assert ds.skipped_clips == ["SYN0/0003"]
    assert "object mask is empty" in ds.messages[0] and "SYN0/0003" in ds.messages[0]


def test_v3_layout_jpg_and_segr(copy_root, cache):
    from PIL import Image

    seq = copy_root / "train" / "SYN0"
    for png in sorted((seq / "rgb").glob("*.png")):
        Image.open(png).convert("RGB").save(png.with_suffix(".jpg"), quality=95)
        png.unlink()
    (seq / "seg").rename(seq / "segr")
    (copy_root / "train.txt").unlink()  # frames found by scanning meta/
    ds = HO3DDataset(copy_root, clip_length=5, stride=2, cache_dir=cache)
    loaded = list(ds)
    assert len(loaded) == 2 and ds.messages == []
    assert loaded[0].image_paths[0].suffix == ".jpg"
    assert (loaded[0].object_masks == 1).any()


def test_missing_hand_model_falls_back_to_joints(copy_root, cache, monkeypatch, tmp_path):
    """Real HO-3D hands need MANO; without it the ground truth keeps the annotated joints."""
    monkeypatch.setenv("HODATA_MANO_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path))
    for path in (copy_root / "train" / "SYN0" / "meta").glob("*.pkl"):
        meta = load_meta(path)
        del meta["hodataHandModel"]  # as real HO-3D: MANO parameters
        _dump(path, meta)
    ds = HO3DDataset(copy_root, clip_length=5, stride=2, cache_dir=cache)
    clip = ds[0]
    hand = clip.gt_hands[0]
    assert hand.vertices.shape == (5, 0, 3) and hand.joints.shape == (5, 21, 3)
    assert any("joints only" in m for m in ds.messages)
    assert clip.hand_boxes["right"].shape == (5, 4)


def test_unknown_split_and_missing_sequence(dataset_root, cache):
    with pytest.raises(HodataError, match="unknown HO-3D split"):
        HO3DDataset(dataset_root, split="test")
    with pytest.raises(HodataError, match="NOPE"):
        HO3DDataset(dataset_root, sequences=["NOPE"], cache_dir=cache)


def test_simulated_estimator_on_adapter_clips(clips):
    from hodata.evidence.hand_init import SimulatedHandEstimator

    ds, loaded = clips
    clip = loaded[0]
    quiet = SimulatedHandEstimator(pixel_jitter=0, scale_error=0, pose_noise=0, rotation_noise_deg=0, vertex_jitter=0)
    (init,) = quiet(clip)
    assert init.provider == "simulated"
    assert init.vertices_2d.shape == clip.gt_hands[0].vertices.shape[:2] + (2,)
    # Projected ground-truth hand vertices land on the hand or on the object occluding it.
    px = init.vertices_2d.round().long()
    px[..., 0].clamp_(0, SIZE[1] - 1)
    px[..., 1].clamp_(0, SIZE[0] - 1)
    frame = torch.arange(len(clip))[:, None].expand(px.shape[:2])
    labels = clip.object_masks[frame, px[..., 1], px[..., 0]]
    assert (labels != 0).float().mean() > 0.95
    (noisy,) = SimulatedHandEstimator(seed=0)(clip)
    assert noisy.transl.shape == (len(clip), 3) and not torch.allclose(noisy.transl, init.transl)


def test_evidence_none_has_no_masks(dataset_root, cache):
    clip = HO3DDataset(dataset_root, clip_length=5, stride=2, cache_dir=cache, evidence="none")[0]
    assert clip.object_masks is None and clip.object_boxes is None and clip.gt_object is not None
    with pytest.raises(HodataError, match="evidence"):
        HO3DDataset(dataset_root, evidence="detector")


def test_real_ho3d_hands_use_mano_files(copy_root, cache, clips, tmp_path):
    """Metas without the hodata key are real HO-3D: the hands come from the MANO files given.
    The open hand written in MANO's pickle format stands in for the licensed files."""
    from hodata import handmodel

    mano_dir = tmp_path / "mano"
    mano_dir.mkdir()
    handmodel.write_mano_pickle(mano_dir / "MANO_RIGHT.pkl", "right")
    for path in (copy_root / "train" / "SYN0" / "meta").glob("*.pkl"):
        meta = load_meta(path)
        del meta["hodataHandModel"], meta["hodataHandSide"]
        _dump(path, meta)
    ds = HO3DDataset(copy_root, clip_length=5, stride=2, cache_dir=cache, dtype=torch.float64, mano_dir=mano_dir)
    hand = ds[0].gt_hands[0]
    expected = clips[1][0].gt_hands[0]
    assert hand.side == "right" and torch.allclose(hand.vertices, expected.vertices, atol=1e-9)


def test_meta_pickles_cannot_run_code(tmp_path):
    import pickle

    class Exploit:
        def __reduce__(self):
            return (print, ("side effect",))

    path = tmp_path / "0000.pkl"
    path.write_bytes(pickle.dumps({"objRot": Exploit()}))
    with pytest.raises(HodataError, match="corrupt annotation file .*0000.pkl"):
        load_meta(path)
    safe = tmp_path / "0001.pkl"
    safe.write_bytes(pickle.dumps({"camMat": np.eye(3), "objName": "025_mug", "objRot": None}, protocol=2))
    meta = load_meta(safe)
    assert np.array_equal(meta["camMat"], np.eye(3)) and meta["objRot"] is None
