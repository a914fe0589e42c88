"""Object and hand masks from boxes and hand keypoints (paper Sec. 3.1, offline stand-in for PointRend).

Hand mask (`skeleton_hand_mask`): the 21 keypoints' skeleton drawn as thick lines (finger
width) plus the filled palm polygon (wrist, thumb CMC, the four MCPs). The finger width in
pixels is `finger_width` metres times the hand's pixels per metre, estimated from the
keypoints: with metric keypoints, the 80th percentile over bones of 2D / 3D bone length (an
upper percentile, because bones seen end-on are foreshortened); without them, 0.3 x the 2D
palm width (index MCP to little MCP). Alternative (`mesh_hand_mask`): the silhouette of the
keypoint initialisation's hand mesh; on synthetic renders it scores higher (bench_evidence:
hand IoU 0.93 vs 0.77 at 2 px keypoint noise) but those hands are the same open-hand model
the initialisation fits, so the gain there is an upper bound. (A GrabCut refinement of the
hand mask seeded by the skeleton's core was tried and dropped: the core includes the fingers
behind the object, so GrabCut learned the object's colours as hand; hand IoU fell from
0.5-0.7 to 0.1-0.5 on synthetic renders.)

Object mask (`grabcut_object_mask`): OpenCV GrabCut in a crop around the (tracked) object
box, the box's outside as background, its inside as probable foreground, the hand's pixels as
probable background (keypoints give the whole hand, also where it is behind the object, so
colour decides which is in front), on a crop resized so its longer side is at most
`work_size` pixels (GrabCut costs ~0.5 s per 640x480 frame at full size); the
largest connected component is kept (and a guard against GrabCut giving the object up under
a large hand: see `grabcut_object_mask`). `object_target` encodes the silhouette target of the
fitting loss: 1 object, -1 hand (occluder, ignored), 0 elsewhere (REFERENCE.md §2); the
visible hand mask is the keypoint hand minus the object pixels GrabCut found in front of it.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from hodata.errors import HodataError

PROVIDER = "grabcut"

# Bones of the hand-model joint order (constants.JOINT_NAMES): each finger base-to-tip from
# the wrist, thumb through joints 13-15 to tip 16.
MODEL_BONES: tuple[tuple[int, int], ...] = (
    (0, 13), (13, 14), (14, 15), (15, 16),
    (0, 1), (1, 2), (2, 3), (3, 17),
    (0, 4), (4, 5), (5, 6), (6, 18),
    (0, 10), (10, 11), (11, 12), (12, 19),
    (0, 7), (7, 8), (8, 9), (9, 20),
)
PALM_POLYGON: tuple[int, ...] = (0, 13, 1, 4, 10, 7)   # wrist, thumb CMC, index/middle/ring/little MCP


def pixels_per_metre(keypoints_2d: np.ndarray, keypoints_3d: Optional[np.ndarray]) -> float:
    """The hand's image scale (module docstring); keypoints (21, 2) pixels, (21, 3) metres or None."""
    a, b = np.array(MODEL_BONES).T
    if keypoints_3d is not None:
        length_3d = np.linalg.norm(keypoints_3d[b] - keypoints_3d[a], axis=-1)
        length_2d = np.linalg.norm(keypoints_2d[b] - keypoints_2d[a], axis=-1)
        ok = length_3d > 1e-3
        if ok.any():
            return float(np.percentile(length_2d[ok] / length_3d[ok], 80))
    palm_px = float(np.linalg.norm(keypoints_2d[1] - keypoints_2d[7]))
    return palm_px * 0.3 / 0.02  # 0.3 x palm width is one finger width (~2 cm)


def skeleton_hand_mask(keypoints_2d: np.ndarray, image_size: tuple[int, int], keypoints_3d: Optional[np.ndarray] = None,
                       finger_width: float = 0.02) -> np.ndarray:
    """(H, W) bool hand mask from 21 keypoints (hand-model order) (module docstring)."""
    import cv2

    height, width = image_size
    mask = np.zeros((height, width), dtype=np.uint8)
    kp = np.asarray(keypoints_2d, dtype=np.float64)
    if not np.isfinite(kp).all():
        return mask.astype(bool)
    thickness = max(1, int(round(finger_width * pixels_per_metre(kp, keypoints_3d))))
    shift = 4  # sub-pixel drawing: coordinates in 1/16 pixel
    pts = np.round(kp * (1 << shift)).astype(np.int32)
    cv2.fillPoly(mask, [pts[list(PALM_POLYGON)]], 1, lineType=cv2.LINE_8, shift=shift)
    for a, b in MODEL_BONES:
        cv2.line(mask, tuple(int(v) for v in pts[a]), tuple(int(v) for v in pts[b]), 1, thickness, cv2.LINE_8, shift)
    for p in pts[[16, 17, 18, 19, 20]]:  # round finger tips
        cv2.circle(mask, tuple(int(v) for v in p), thickness // 2, 1, -1, cv2.LINE_8, shift)
    return mask.astype(bool)


def mesh_hand_mask(vertices: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """(T, H, W) bool silhouettes of hand meshes (T, V, 3) in camera space (e.g. the keypoint
    initialisation's hand): the alternative to the skeleton mask, measured in bench_evidence."""
    from hodata.geometry.raster import render_labels

    with torch.no_grad():
        labels, _ = render_labels([(vertices, faces)], K.to(vertices), image_size)
    return labels > 0


def _crop(box: np.ndarray, image_size: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    height, width = image_size
    w, h = box[2] - box[0], box[3] - box[1]
    x0 = int(max(0, np.floor(box[0] - margin * w)))
    y0 = int(max(0, np.floor(box[1] - margin * h)))
    x1 = int(min(width, np.ceil(box[2] + margin * w)))
    y1 = int(min(height, np.ceil(box[3] + margin * h)))
    return x0, y0, x1, y1


def _largest_component(mask: np.ndarray) -> np.ndarray:
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask.astype(bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _grabcut(small: np.ndarray, init: np.ndarray, iterations: int, seed: int) -> np.ndarray:
    """GrabCut of an RGB crop from an initial label map -> foreground (h, w) bool."""
    import cv2

    labels = init.copy()
    if not (labels == cv2.GC_PR_FGD).any() or not ((labels == cv2.GC_BGD) | (labels == cv2.GC_PR_BGD)).any():
        return labels == cv2.GC_PR_FGD
    cv2.setRNGSeed(seed)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(np.ascontiguousarray(small[:, :, ::-1]), labels, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def _split_by_colour(small: np.ndarray, fg: np.ndarray, hand: np.ndarray, min_pixels: int = 20) -> np.ndarray:
    """Foreground `fg` without the hand pixels whose colour is nearer the hand's than the
    object's (mean Lab colours, Euclidean): the hand's colour from the hand pixels outside the
    foreground, the object's from the foreground outside the hand. Without enough pixels of
    either: the foreground without the whole hand."""
    import cv2

    lab = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2LAB).astype(np.float64)
    hand_only, object_only = hand & ~fg, fg & ~hand
    if hand_only.sum() < min_pixels or object_only.sum() < min_pixels:
        return fg & ~hand
    hand_colour, object_colour = lab[hand_only].mean(0), lab[object_only].mean(0)
    nearer_hand = np.linalg.norm(lab - hand_colour, axis=-1) < np.linalg.norm(lab - object_colour, axis=-1)
    return fg & ~(hand & nearer_hand)


def grabcut_object_mask(image: np.ndarray, box: np.ndarray, hand_mask: Optional[np.ndarray] = None,
                        iterations: int = 5, margin: float = 0.15, work_size: int = 160,
                        seed: int = 0, collapse: float = 0.5) -> np.ndarray:
    """(H, W) bool object mask by GrabCut from an xyxy box (module docstring).

    image: RGB uint8 (H, W, 3); box: (4,) pixels (NaN: empty mask); hand_mask: (H, W) bool
    pixels of the hand (probable background: module docstring); seed: OpenCV's RNG seed
    (GrabCut's GMM init is random), so a frame always gives the same mask.

    When the hand covers much of the object, GrabCut with the hand as probable background can
    give the object up entirely (seen on synthetic renders: IoU 0.99 -> 0.001 in 3 of 8 frames
    of one clip). So the box alone is cut too, and where the result with the hand has less
    than `collapse` times the area of box-alone-minus-hand, the box-alone result is used with
    the hand pixels of hand colour removed (`_split_by_colour`).
    """
    import cv2

    height, width = image.shape[:2]
    out = np.zeros((height, width), dtype=bool)
    box = np.asarray(box, dtype=np.float64)
    if not np.isfinite(box).all() or box[2] - box[0] < 2 or box[3] - box[1] < 2:
        return out
    x0, y0, x1, y1 = _crop(box, (height, width), margin)
    crop = image[y0:y1, x0:x1]
    factor = min(1.0, work_size / max(crop.shape[:2]))
    size = (max(1, int(round(crop.shape[1] * factor))), max(1, int(round(crop.shape[0] * factor))))
    small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA) if factor < 1 else crop
    sh, sw = small.shape[:2]
    init = np.full((sh, sw), cv2.GC_BGD, dtype=np.uint8)
    bx = (box - np.array([x0, y0, x0, y0])) * factor
    bx0, by0 = int(max(0, np.floor(bx[0]))), int(max(0, np.floor(bx[1])))
    bx1, by1 = int(min(sw, np.ceil(bx[2]))), int(min(sh, np.ceil(bx[3])))
    init[by0:by1, bx0:bx1] = cv2.GC_PR_FGD
    fg = _grabcut(small, init, iterations, seed)
    if hand_mask is not None:
        hand_small = cv2.resize(hand_mask[y0:y1, x0:x1].astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST) > 0
        if (hand_small & (init == cv2.GC_PR_FGD)).any():
            # Probable, not sure, background: keypoints give the whole (amodal) hand, also where
            # it is behind the object; colour decides which of the two is in front.
            with_hand = init.copy()
            with_hand[hand_small & (init == cv2.GC_PR_FGD)] = cv2.GC_PR_BGD
            fg_hand = _grabcut(small, with_hand, iterations, seed)
            if fg_hand.sum() >= collapse * (fg & ~hand_small).sum():
                fg = fg_hand
            else:
                fg = _split_by_colour(small, fg, hand_small)
    fg = fg.astype(np.uint8)
    fg = cv2.resize(fg, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR) > 0 if factor < 1 else fg > 0
    out[y0:y1, x0:x1] = fg
    return _largest_component(out)


def object_target(object_mask: torch.Tensor, hand_mask: torch.Tensor) -> torch.Tensor:
    """Silhouette target (..., H, W) float: 1 object, -1 hand (occluder), 0 background.

    Where both masks claim a pixel the hand wins: the object is hidden there.
    """
    if object_mask.shape != hand_mask.shape:
        raise HodataError(f"object and hand masks differ in shape: {tuple(object_mask.shape)} vs {tuple(hand_mask.shape)}")
    target = object_mask.to(torch.float32)
    return torch.where(hand_mask.to(torch.bool), torch.full_like(target, -1.0), target)


def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU (...,) of bool masks (..., H, W); 1 where both are empty."""
    pred, gt = pred.to(torch.bool), gt.to(torch.bool)
    inter = (pred & gt).sum((-1, -2)).double()
    union = (pred | gt).sum((-1, -2)).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def clip_masks(images: list[np.ndarray], object_boxes: torch.Tensor,
               hand_keypoints: Optional[list[list[tuple[np.ndarray, Optional[np.ndarray]]]]] = None,
               hand_occluders: Optional[torch.Tensor] = None, **grabcut) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of a clip: (object_target (T, H, W) float in {-1, 0, 1}, hand_masks (T, H, W) bool).

    images: T RGB uint8 frames; object_boxes (T, 4) (NaN rows: no object); the hands either as
    hand_keypoints (per frame, one (keypoints_2d (21, 2), keypoints_3d (21, 3) or None) per
    hand, drawn as skeletons; NaN keypoints: not drawn) or as hand_occluders (T, H, W) bool
    (e.g. `mesh_hand_mask` of the initial hands). The visible hand mask is the occluder minus
    the object pixels GrabCut put in front of it.
    """
    frames = len(images)
    if object_boxes.shape[0] != frames or (hand_keypoints is not None and len(hand_keypoints) != frames) \
            or (hand_occluders is not None and hand_occluders.shape[0] != frames):
        raise HodataError(f"{frames} images, {object_boxes.shape[0]} object boxes and hand inputs of other lengths")
    objects, hands = [], []
    boxes = object_boxes.detach().cpu().numpy()
    occluders = None if hand_occluders is None else hand_occluders.detach().cpu().numpy().astype(bool)
    for t, (image, box) in enumerate(zip(images, boxes)):
        size = image.shape[:2]
        hand = np.zeros(size, dtype=bool) if occluders is None else occluders[t].copy()
        for kp2d, kp3d in (hand_keypoints[t] if hand_keypoints is not None else ()):
            hand |= skeleton_hand_mask(kp2d, size, kp3d)
        obj = grabcut_object_mask(image, box, hand, **grabcut)
        objects.append(obj)
        hands.append(hand & ~obj)
    obj = torch.as_tensor(np.stack(objects))
    hand = torch.as_tensor(np.stack(hands))
    return object_target(obj, hand), hand
