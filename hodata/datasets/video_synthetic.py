"""A rendered test recording for `hodata fit video`: frames, an MP4, and the truth.

The scene: an open right hand (the active hand model's flat pose, palm to the camera) with a
tennis ball (catalog 056_tennis_ball) resting on its thumb tip, both turning about the view
axis and sliding sideways together, 0.35 m from a 300 px camera at 320 x 240, Lambert-shaded
over hodata's synthetic background (`hodata.datasets.synthetic`). An open hand is used
because MediaPipe finds it in every frame (12 of 12, also after MP4 encoding), while the
grasping hands of hodata's synthetic HO-3D scenes are found in few frames (bench/RESULTS.md,
"MediaPipe on the synthetic renders"): with them a test of detected evidence would test
nothing. `render_clip(hand=False)` / `(ball=False)` give the same scene without the hand or
without the ball.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SIZE = (240, 320)          # (H, W)
FOCAL = 300.0              # the renderer's camera, pixels
FPS = 30.0
BALL_COLOUR = (0.75, 0.12, 0.10)


def render_clip(frames: int = 12, hand: bool = True, ball: bool = True, seed: int = 0, cache=None) -> dict:
    """RGB frames (T, H, W, 3) uint8 of the test scene, and its truth: K, hand joints (T, 21, 3),
    ball centre (T, 3), ball box in frame 0 (xyxy)."""
    from hodata import handmodel
    from hodata.datasets.synthetic import SKIN, _background
    from hodata.geometry.camera import boxes_from_points, project
    from hodata.geometry.raster import render_shaded
    from hodata.geometry.rotations import axis_angle_to_matrix
    from hodata.objects import ensure_object_model

    dtype = torch.float64
    H, W = SIZE
    K = torch.tensor([[FOCAL, 0, (W - 1) / 2], [0, FOCAL, (H - 1) / 2], [0, 0, 1]], dtype=dtype)
    layer = handmodel.load(side="right", model="auto", use_pca=False, flat_hand_mean=True, dtype=dtype)
    rest = layer(global_orient=torch.eye(3, dtype=dtype)[None], hand_pose=torch.zeros(1, 45, dtype=dtype),
                 betas=torch.zeros(1, 10, dtype=dtype), transl=torch.zeros(1, 3, dtype=dtype))
    verts, joints = rest.vertices[0], rest.joints[0]
    model = ensure_object_model("056_tennis_ball", cache, dtype=dtype)
    ball_verts = model.vertices - model.vertices.mean(0)
    radius = float(ball_verts.norm(dim=1).max())
    wrist, thumb_tip, pivot = joints[0], joints[16], joints[4]
    outward = (thumb_tip - wrist) / (thumb_tip - wrist).norm()
    ball_centre = thumb_tip + 0.9 * radius * outward      # resting on the thumb tip
    background = _background(np.random.default_rng(seed), SIZE).to(dtype)[None]
    images, hand_joints, centres = [], [], []
    for t in range(frames):
        R = axis_angle_to_matrix(torch.tensor([-0.98, -0.19, 1.18 + 0.04 * t], dtype=dtype))
        shift = torch.tensor([-0.02 + 0.004 * t, 0.0, 0.35], dtype=dtype)
        meshes, colours = [], []
        if ball:
            meshes.append(((ball_verts + ball_centre - pivot) @ R.T + shift)[None])
            colours.append(BALL_COLOUR)
        if hand:
            meshes.append(((verts - pivot) @ R.T + shift)[None])
            colours.append(SKIN)
        faces = ([model.faces] if ball else []) + ([layer.faces.long()] if hand else [])
        image = render_shaded(list(zip(meshes, faces)), colours, K, SIZE, background=background)[0] if meshes \
            else background[0]
        images.append((image.numpy() * 255 + 0.5).astype(np.uint8))
        hand_joints.append((joints - pivot) @ R.T + shift)
        centres.append((ball_centre - pivot) @ R.T + shift)
    centres = torch.stack(centres)
    first = (ball_verts + ball_centre - pivot) @ axis_angle_to_matrix(torch.tensor([-0.98, -0.19, 1.18], dtype=dtype)).T \
        + torch.tensor([-0.02, 0.0, 0.35], dtype=dtype)
    return {"frames": np.stack(images), "K": K, "joints": torch.stack(hand_joints), "ball_centres": centres,
            "ball_box": boxes_from_points(project(first, K)).numpy()}


def write_mp4(frames: np.ndarray, path: Path, fps: float = FPS) -> Path:
    """RGB frames (T, H, W, 3) uint8 as an MPEG-4 file (OpenCV, fourcc mp4v), as a phone would hand it over."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (frames.shape[2], frames.shape[1]))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    return path


def decode(path: Path) -> np.ndarray:
    """Every frame of a video file as (T, H, W, 3) uint8 RGB."""
    import cv2

    capture, out = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        out.append(frame[:, :, ::-1].copy())
    capture.release()
    return np.stack(out)
