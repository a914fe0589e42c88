"""Pinhole cameras in OpenCV convention (x right, y down, z forward; pixels, metres).

Intrinsics K are (..., 3, 3) with K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]. Pixel
coordinates follow OpenCV: the centre of the top-left pixel is (0, 0).
"""

from __future__ import annotations

import torch

# HO-3D (and OpenGL) cameras look down -z with y up; OpenCV looks down +z with y down.
# The conversion is its own inverse.
OPENGL_TO_OPENCV = (1.0, -1.0, -1.0)


def project(points: torch.Tensor, K: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Perspective projection. points: (..., N, 3) camera coords, K: (..., 3, 3) -> (..., N, 2).

    Depths are clamped to eps so points at or behind the camera give large but finite
    pixels instead of NaNs in the optimiser.
    """
    z = points[..., 2:3].clamp_min(eps)
    uvw = points[..., :2] / z
    ones = torch.ones_like(z)
    homo = torch.cat([uvw, ones], dim=-1)  # (..., N, 3)
    pix = homo @ K.transpose(-1, -2)
    return pix[..., :2]


def unproject(pixels: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Inverse of `project`. pixels: (..., N, 2), depth: (..., N), K: (..., 3, 3) -> (..., N, 3)."""
    ones = torch.ones_like(pixels[..., :1])
    homo = torch.cat([pixels, ones], dim=-1)
    rays = homo @ torch.linalg.inv(K).transpose(-1, -2)
    return rays * depth[..., None]


def crop_intrinsics(K: torch.Tensor, boxes: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """Intrinsics of the camera that sees the crop `boxes` resized to `out_size`.

    K: (..., 3, 3); boxes: (..., 4) as (x0, y0, x1, y1) in pixels of the original image,
    with x1, y1 the far pixel edges; out_size: (H, W) of the crop image. A point that
    projects to pixel p in the image projects to (p - box_origin) * scale in the crop, with
    the half-pixel offsets of OpenCV's centre convention kept exact.
    """
    height, width = out_size
    x0, y0, x1, y1 = boxes.unbind(-1)
    sx = width / (x1 - x0)
    sy = height / (y1 - y0)
    # pixel centre u maps to (u + 0.5 - x0) * sx - 0.5
    K_new = K.clone()
    K_new[..., 0, 0] = K[..., 0, 0] * sx
    K_new[..., 0, 1] = K[..., 0, 1] * sx
    K_new[..., 0, 2] = (K[..., 0, 2] + 0.5 - x0) * sx - 0.5
    K_new[..., 1, 1] = K[..., 1, 1] * sy
    K_new[..., 1, 2] = (K[..., 1, 2] + 0.5 - y0) * sy - 0.5
    return K_new


def resize_intrinsics(K: torch.Tensor, in_size: tuple[int, int], out_size: tuple[int, int]) -> torch.Tensor:
    """Intrinsics after resizing a whole (H, W) image to out_size (H', W')."""
    boxes = torch.tensor([0.0, 0.0, in_size[1], in_size[0]], dtype=K.dtype, device=K.device)
    return crop_intrinsics(K, boxes.expand(K.shape[:-2] + (4,)), out_size)


def square_box(boxes: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Square boxes around the centres of `boxes` (..., 4), side = scale * max(w, h)."""
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    side = (boxes[..., 2:] - boxes[..., :2]).max(-1, keepdim=True).values * scale
    return torch.cat([centre - side / 2, centre + side / 2], dim=-1)


def opengl_to_opencv(points: torch.Tensor) -> torch.Tensor:
    """Camera points (..., 3) from OpenGL (y up, z backward) to OpenCV (y down, z forward).

    Applying it twice gives the input back.
    """
    flip = torch.tensor(OPENGL_TO_OPENCV, dtype=points.dtype, device=points.device)
    return points * flip


def opengl_to_opencv_rotation(rotation: torch.Tensor) -> torch.Tensor:
    """Object-to-camera rotation (..., 3, 3) from OpenGL to OpenCV camera axes: diag(1,-1,-1) @ R."""
    flip = torch.tensor(OPENGL_TO_OPENCV, dtype=rotation.dtype, device=rotation.device)
    return flip[:, None] * rotation


def boxes_from_points(points_2d: torch.Tensor) -> torch.Tensor:
    """Tight boxes (..., 4) xyxy around projected points (..., N, 2)."""
    return torch.cat([points_2d.amin(-2), points_2d.amax(-2)], dim=-1)
