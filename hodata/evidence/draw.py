"""Pictures of evidence for a person to check: boxes, keypoints, masks, the initial hand.

All functions take and return RGB uint8 images (H, W, 3) and never change their input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from hodata.evidence.masks import MODEL_BONES

# One colour per finger (RGB), thumb..little, for the bones from the wrist outwards.
FINGER_COLOURS = ((255, 80, 80), (255, 200, 0), (80, 220, 80), (0, 200, 255), (200, 100, 255))
SIDE_COLOURS = {"right": (255, 140, 0), "left": (0, 160, 255)}
OBJECT_COLOUR = (60, 255, 60)


def upscale(image: np.ndarray, scale: float) -> np.ndarray:
    """A copy of the image enlarged by `scale` (cubic)."""
    import cv2

    if scale == 1:
        return image.copy()
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)


def draw_keypoints(image: np.ndarray, keypoints_2d: np.ndarray, scale: float = 1.0, label: str = "") -> np.ndarray:
    """The 21-keypoint skeleton (hand-model order) and a label over the image, enlarged by
    `scale`; NaN keypoints draw the label only."""
    import cv2

    out = upscale(image, scale)
    kp = np.asarray(keypoints_2d, dtype=np.float64) * scale
    thick = max(1, int(round(out.shape[0] / 200)))
    if np.isfinite(kp).all():
        for bone, (a, b) in enumerate(MODEL_BONES):
            colour = FINGER_COLOURS[bone // 4]
            cv2.line(out, tuple(int(v) for v in kp[a]), tuple(int(v) for v in kp[b]), colour, thick, cv2.LINE_AA)
        for p in kp:
            cv2.circle(out, tuple(int(v) for v in p), thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
    if label:
        cv2.putText(out, label, (5, 5 + 12 * thick), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, (255, 255, 255), thick,
                    cv2.LINE_AA)
    return out


def draw_boxes(image: np.ndarray, boxes: list[tuple[np.ndarray, tuple[int, int, int], str]], scale: float = 1.0) -> np.ndarray:
    """Boxes (xyxy pixels, RGB colour, label) over the image; NaN boxes are skipped."""
    import cv2

    out = upscale(image, scale)
    thick = max(1, int(round(out.shape[0] / 250)))
    for box, colour, label in boxes:
        box = np.asarray(box, dtype=np.float64) * scale
        if not np.isfinite(box).all():
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thick)
        if label:
            cv2.putText(out, label, (x0 + 2, max(10, y0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.35 * thick, colour, thick)
    return out


def draw_object_target(image: np.ndarray, target: np.ndarray, scale: float = 1.0, alpha: float = 0.5) -> np.ndarray:
    """Object target (H, W) in {-1, 0, 1} tinted over the image: object green, hand occluder red."""
    import cv2

    out = image.astype(np.float64)
    colours = {1.0: np.array(OBJECT_COLOUR, dtype=np.float64), -1.0: np.array([255.0, 40.0, 40.0])}
    target = np.asarray(target)
    for value, colour in colours.items():
        sel = target == value
        out[sel] = (1 - alpha) * out[sel] + alpha * colour
    out = out.clip(0, 255).astype(np.uint8)
    return upscale(out, scale) if scale != 1 else out


def draw_hand_mesh(image: np.ndarray, vertices: torch.Tensor, faces: torch.Tensor, K: torch.Tensor,
                   scale: float = 1.0, colour=(255, 180, 120), alpha: float = 0.6) -> np.ndarray:
    """A hand mesh (V, 3) in camera space, shaded, blended over the image enlarged by `scale`."""
    from hodata.geometry.camera import resize_intrinsics
    from hodata.geometry.raster import render_shaded

    height, width = image.shape[:2]
    size = (int(round(height * scale)), int(round(width * scale)))
    verts = vertices.detach().to(torch.float64).cpu()
    K_s = resize_intrinsics(K.detach().to(torch.float64).cpu(), (height, width), size)
    # A background of -1, which no shaded pixel takes, gives the coverage from the same pass.
    sentinel = torch.full((1, *size, 3), -1.0, dtype=torch.float64)
    with torch.no_grad():
        shaded = render_shaded([(verts[None], faces.cpu())], [torch.tensor(colour, dtype=torch.float64) / 255.0],
                               K_s, size, background=sentinel)[0]
    drawn = (shaded[..., 0] >= 0).numpy()
    out = upscale(image, scale).astype(np.float64)
    out[drawn] = (1 - alpha) * out[drawn] + alpha * 255.0 * shaded.numpy()[drawn]
    return out.clip(0, 255).astype(np.uint8)


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an RGB uint8 image as PNG; OSError when it cannot be written."""
    import cv2

    path = Path(path)
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[:, :, ::-1])):
        raise OSError(f"{path}: could not write the PNG")
    return path


def side_by_side(*images: np.ndarray, height: Optional[int] = None) -> np.ndarray:
    """Images resized to one height and put next to each other."""
    import cv2

    height = height or max(im.shape[0] for im in images)
    resized = [cv2.resize(im, (int(round(im.shape[1] * height / im.shape[0])), height)) for im in images]
    return np.concatenate(resized, 1)
