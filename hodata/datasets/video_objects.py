"""Where the held object is in a video without an object detector: a seed box, then tracking
by segmentation.

hodata has no offline object detector, and a user's recording has no published detections
(Epic-Kitchens' adapter uses those), so the object's box is found this way:

1. Seed, in one frame:
   - `--object-box x1,y1,x2,y2` given: that box, in pixels of the first kept frame of the
     source (at `--start`), is the object there;
   - else next to the hand: in the first frame where MediaPipe finds a hand, GrabCut
     (`hodata.evidence.masks.grabcut_object_mask`) in the hand's box grown by
     `NEAR_HAND_GROWTH` of its size on every side, with the hand's keypoint skeleton as
     probable background; its pixels of the hand's colour (`skin_like`: the wrist, the forearm
     and hand edges the skeleton misses) are removed; the largest remaining segment, when it
     holds between `MIN_SEED_FRACTION` and `MAX_SEED_FRACTION` of that region and touches the
     hand, is the object. Otherwise the next frame with a hand is tried. No segment in any
     frame: "no object next to the hand" (so an object of the hand's colour needs
     `--object-box`).
2. Tracking, forward and backward from the seed frame: in each next frame, GrabCut in the
   previous box grown by `SEARCH_GROWTH` per side (the hand's skeleton as probable
   background, pixels of the hand's colour removed unless the seed itself is mostly of that
   colour); the bounding box of the segment is the object's box there. The object is in
   view while the segment's area stays within `AREA_RANGE` times the seed's (a segment that
   vanishes or floods the search region means the object left the view or was lost); the
   first frame outside that range ends the track in that direction.

The boxes are hints for the detected evidence provider (as Core50's bbox files and
Epic-Kitchens' published boxes are), which tracks them with the hands (motpy) and cuts the
object masks from them.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from hodata.errors import HodataError

NEAR_HAND_GROWTH = 0.5      # the seed region: the hand box grown by this fraction of its size per side
MIN_SEED_FRACTION = 0.02    # a seed segment holds at least this fraction of the seed region ...
MAX_SEED_FRACTION = 0.6     # ... and at most this one (more: GrabCut took the background)
SEARCH_GROWTH = 0.25        # tracking: the previous box grown by this fraction per side
AREA_RANGE = (0.3, 3.0)     # in view while the segment's area is within these factors of the seed's
TOUCH_PX = 3                # a seed segment must come this close to the hand's pixels
SKIN_CHROMA = 10.0          # hand-coloured: Lab (a, b) within this distance (OpenCV 8-bit Lab) of the hand's median


def parse_box(text: str, image_size: tuple[int, int]) -> np.ndarray:
    """`--object-box x1,y1,x2,y2` -> (4,) float pixels, checked against the frame size (H, W)."""
    try:
        box = np.array([float(v) for v in text.split(",")], dtype=np.float64)
    except ValueError:
        box = np.zeros(0)
    if box.shape != (4,) or not np.isfinite(box).all():
        raise HodataError(f"--object-box {text!r}: give four pixel numbers x1,y1,x2,y2 (left, top, right, bottom)")
    height, width = image_size
    if not (0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height):
        raise HodataError(f"--object-box {text!r} is not inside the {width}x{height} frame with x1 < x2 and y1 < y2")
    return box


def grow(box: np.ndarray, fraction: float, image_size: tuple[int, int]) -> np.ndarray:
    """An xyxy box grown by `fraction` of its width / height on each side, clipped to the image."""
    height, width = image_size
    w, h = box[2] - box[0], box[3] - box[1]
    out = np.array([box[0] - fraction * w, box[1] - fraction * h, box[2] + fraction * w, box[3] + fraction * h])
    return np.clip(out, 0, [width, height, width, height])


def mask_box(mask: np.ndarray) -> Optional[np.ndarray]:
    """The xyxy box (pixel edges) of a bool mask, or None when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def hand_pixels(image_size: tuple[int, int], hands) -> np.ndarray:
    """(H, W) bool: the keypoint skeletons of one frame's hand detections."""
    from hodata.evidence.masks import skeleton_hand_mask

    out = np.zeros(image_size, dtype=bool)
    for hand in hands:
        out |= skeleton_hand_mask(hand.keypoints_2d, image_size, hand.keypoints_3d)
    return out


def skin_like(image: np.ndarray, hand: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels of the hand's colour, i.e. Lab chroma (a, b; brightness left out, so
    shading does not matter) within `SKIN_CHROMA` of the median chroma under the hand's
    skeleton. All False when the frame shows no hand."""
    import cv2

    if not hand.any():
        return np.zeros(hand.shape, dtype=bool)
    chroma = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB)[..., 1:].astype(np.float32)
    skin = np.median(chroma[hand], axis=0)
    return np.linalg.norm(chroma - skin, axis=-1) < SKIN_CHROMA


def _object_segment(image: np.ndarray, box: np.ndarray, hand: np.ndarray, drop_skin: bool) -> np.ndarray:
    """GrabCut's object in `box` without the hand's skeleton and, with drop_skin, without the
    pixels of the hand's colour: the largest remaining connected segment."""
    from hodata.evidence.masks import _largest_component, grabcut_object_mask

    mask = grabcut_object_mask(image, box, hand) & ~hand
    if drop_skin and mask.any():
        mask &= ~skin_like(image, hand)
        mask = _largest_component(mask) if mask.any() else mask
    return mask


def seed_near_hand(image: np.ndarray, hands) -> Optional[tuple[np.ndarray, float]]:
    """(box, area) of the object next to the hands of one frame (module docstring), or None."""
    import cv2

    from hodata.evidence.masks import grabcut_object_mask

    size = image.shape[:2]
    hand = hand_pixels(size, hands)
    near = cv2.dilate(hand.astype(np.uint8), np.ones((2 * TOUCH_PX + 1,) * 2, np.uint8)) > 0
    best = None
    for detection in hands:
        region = grow(np.asarray(detection.box, dtype=np.float64), NEAR_HAND_GROWTH, size)
        area_region = (region[2] - region[0]) * (region[3] - region[1])
        mask = _object_segment(image, region, hand, drop_skin=True)
        area = float(mask.sum())
        if not (MIN_SEED_FRACTION * area_region <= area <= MAX_SEED_FRACTION * area_region):
            continue
        if not (mask & near).any():
            continue
        if best is None or area > best[1]:
            best = (mask_box(mask), area)
    return best


def _track_direction(images: Sequence[np.ndarray], frames: range, box: np.ndarray, seed_area: float,
                     hands_per_frame, boxes: np.ndarray, drop_skin: bool) -> None:
    for t in frames:
        image = images[t]
        size = image.shape[:2]
        hand = hand_pixels(size, hands_per_frame[t])
        search = grow(box, SEARCH_GROWTH, size)
        mask = _object_segment(image, search, hand, drop_skin)
        area = float(mask.sum())
        if not AREA_RANGE[0] * seed_area <= area <= AREA_RANGE[1] * seed_area:
            return
        box = mask_box(mask)
        boxes[t] = box


def track_object(images: Sequence[np.ndarray], hands_per_frame, seed_box: Optional[np.ndarray] = None
                 ) -> tuple[np.ndarray, Optional[int], str]:
    """Object boxes (T, 4) over a video's kept frames (NaN where not in view), the seed frame
    (None: no seed) and how the seed was found, for the messages.

    images: T RGB frames; hands_per_frame: T lists of MediaPipe HandDetections; seed_box:
    the user's box in frame 0 (else the seed is found next to the hand).
    """
    frames = len(images)
    boxes = np.full((frames, 4), np.nan)
    seed_frame, seed_area, drop_skin = None, 0.0, True
    if seed_box is not None:
        hand = hand_pixels(images[0].shape[:2], hands_per_frame[0])
        mask = _object_segment(images[0], seed_box, hand, drop_skin=False)
        # an object of the hand's colour (the user says it is there) keeps its skin-coloured pixels
        drop_skin = bool(mask.any()) and float(skin_like(images[0], hand)[mask].mean()) < 0.5
        mask = _object_segment(images[0], seed_box, hand, drop_skin) if drop_skin else mask
        seed_frame, how = 0, "--object-box"
        # the user's box is the object, even where GrabCut finds little in it
        seed_area = max(float(mask.sum()), 0.25 * float((seed_box[2] - seed_box[0]) * (seed_box[3] - seed_box[1])))
        found = mask_box(mask)
        boxes[0] = seed_box if found is None else found
    else:
        how = "next to the hand"
        for t in range(frames):
            if not hands_per_frame[t]:
                continue
            seed = seed_near_hand(images[t], hands_per_frame[t])
            if seed is not None:
                seed_frame = t
                boxes[t], seed_area = seed
                break
    if seed_frame is None:
        return boxes, None, how
    _track_direction(images, range(seed_frame + 1, frames), boxes[seed_frame].copy(), seed_area, hands_per_frame,
                     boxes, drop_skin)
    _track_direction(images, range(seed_frame - 1, -1, -1), boxes[seed_frame].copy(), seed_area, hands_per_frame,
                     boxes, drop_skin)
    return boxes, seed_frame, how
