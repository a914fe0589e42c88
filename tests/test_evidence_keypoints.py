"""Keypoint hand initialisation and the MediaPipe <-> hand-model landmark correspondence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hodata import handmodel
from hodata.errors import HodataError
from hodata.evidence.keypoint_init import keypoint_hand_init, keypoint_v2d_loss, kabsch
from hodata.evidence.mediapipe_hands import MEDIAPIPE_BONES, MEDIAPIPE_TO_MODEL, mediapipe_to_model
from hodata.geometry.camera import project
from hodata.geometry.rotations import axis_angle_to_matrix, geodesic_distance
from hodata.handmodel.constants import JOINT_NAMES, MANO_PARENTS
from hodata.metrics.hand import pa_error

K = torch.tensor([[617.0, 0.0, 315.0], [0.0, 610.0, 242.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
# MediaPipe's landmark names (its HandLandmark enum, in order), written out independently.
MEDIAPIPE_NAMES = (
    "wrist", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_finger_mcp", "index_finger_pip", "index_finger_dip", "index_finger_tip",
    "middle_finger_mcp", "middle_finger_pip", "middle_finger_dip", "middle_finger_tip",
    "ring_finger_mcp", "ring_finger_pip", "ring_finger_dip", "ring_finger_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)
# The model's tip joints hang off the last joint of their finger.
TIP_PARENTS = {16: 15, 17: 3, 18: 6, 19: 12, 20: 9}


def _canonical(name: str) -> str:
    return name.replace("_finger", "").replace("pinky", "little")


def test_correspondence_by_name():
    for model_joint, mp_index in enumerate(MEDIAPIPE_TO_MODEL):
        assert _canonical(MEDIAPIPE_NAMES[mp_index]) == JOINT_NAMES[model_joint]


def test_correspondence_maps_bones_onto_the_kinematic_tree():
    inverse = {mp: model for model, mp in enumerate(MEDIAPIPE_TO_MODEL)}
    parent = {j: p for j, p in enumerate(MANO_PARENTS)} | TIP_PARENTS
    tree_edges = {frozenset((j, p)) for j, p in parent.items() if p >= 0}
    mcps = {JOINT_NAMES.index(n) for n in ("index_mcp", "middle_mcp", "ring_mcp", "little_mcp")}
    mapped = {frozenset((inverse[a], inverse[b])) for a, b in MEDIAPIPE_BONES}
    palm_cross = {e for e in mapped if e <= mcps}
    assert len(palm_cross) == 3                      # index-middle, middle-ring, ring-little
    assert mapped - palm_cross - {frozenset((0, 7))} <= tree_edges
    # Every tree edge but wrist -> middle MCP and wrist -> ring MCP (MediaPipe draws the palm
    # as its outline) appears among MediaPipe's bones.
    assert tree_edges - mapped == {frozenset((0, 4)), frozenset((0, 10))}


def test_mediapipe_enum_matches_when_installed():
    solutions = pytest.importorskip("mediapipe.python.solutions.hands")
    names = tuple(m.name.lower() for m in sorted(solutions.HandLandmark, key=int))
    assert names == MEDIAPIPE_NAMES
    assert {frozenset(e) for e in solutions.HAND_CONNECTIONS} == {frozenset(e) for e in MEDIAPIPE_BONES}
    arr = np.arange(21 * 2).reshape(21, 2)
    assert mediapipe_to_model(arr)[JOINT_NAMES.index("thumb_tip"), 0] == 2 * 4


def test_kabsch_recovers_rotation(generator):
    points = torch.randn(5, 21, 3, generator=generator, dtype=torch.float64)
    rotation = axis_angle_to_matrix(torch.randn(5, 3, generator=generator, dtype=torch.float64))
    moved = points @ rotation.transpose(-1, -2) + 1.0
    assert torch.allclose(kabsch(points, moved), rotation, atol=1e-9)


def _known_hand(layer, frames: int, seed: int, pixel_noise: float, world_noise: float):
    gen = torch.Generator().manual_seed(seed)
    coeffs = 0.8 * torch.randn(frames, 16, generator=gen, dtype=torch.float64)
    orient = axis_angle_to_matrix(torch.randn(frames, 3, generator=gen, dtype=torch.float64))
    centre = torch.tensor([0.05, -0.03, 0.55], dtype=torch.float64) + 0.08 * torch.randn(frames, 3, generator=gen, dtype=torch.float64)
    rest = layer(global_orient=orient, hand_pose=coeffs).joints
    gt = layer(global_orient=orient, hand_pose=coeffs, transl=centre - rest.mean(1))
    kp2d = project(gt.joints, K) + pixel_noise * torch.randn(frames, 21, 2, generator=gen, dtype=torch.float64)
    kp3d = gt.joints - gt.joints.mean(1, keepdim=True) + world_noise * torch.randn(frames, 21, 3, generator=gen, dtype=torch.float64)
    return gt, orient, kp2d, kp3d


@pytest.mark.parametrize("side", ["right", "left"])
def test_keypoint_init_recovers_known_pose(side):
    layer = handmodel.load(side, use_pca=True, flat_hand_mean=False, num_pca_comps=16, dtype=torch.float64)
    gt, orient, kp2d, kp3d = _known_hand(layer, frames=12, seed=3, pixel_noise=2.0, world_noise=0.003)
    init, report = keypoint_hand_init(layer, kp2d, kp3d, K)
    assert init.provider == "keypoints:mediapipe" and init.side == side
    assert init.vertices_2d.shape == (12, layer.num_vertices, 2)
    pred = layer(global_orient=init.global_orient, hand_pose=init.hand_pose, betas=init.betas, transl=init.transl)
    assert float(pa_error(pred.joints, gt.joints).max()) < 0.01
    depth_err = (pred.joints.mean(1)[:, 2] / gt.joints.mean(1)[:, 2] - 1).abs()
    assert float(depth_err.max()) < 0.10
    assert float(geodesic_distance(init.global_orient, orient).max()) < 0.2
    assert torch.allclose(init.vertices_2d, project(pred.vertices, K))
    assert float(report.pixel_error.mean()) < 5.0


def test_keypoint_init_depth_from_size():
    """A detector whose metric hand is 20 % too big leaves the depth to the image scale: still right."""
    layer = handmodel.load("right", use_pca=True, flat_hand_mean=False, num_pca_comps=16, dtype=torch.float64)
    gt, _, kp2d, kp3d = _known_hand(layer, frames=6, seed=5, pixel_noise=1.0, world_noise=0.0)
    init, report = keypoint_hand_init(layer, kp2d, 1.2 * kp3d, K)
    assert torch.allclose(report.detector_scale, torch.full((6,), 1.2, dtype=torch.float64), atol=0.02)
    pred = layer(global_orient=init.global_orient, hand_pose=init.hand_pose, transl=init.transl)
    refined = (pred.joints.mean(1)[:, 2] / gt.joints.mean(1)[:, 2] - 1).abs()
    assert float(refined.max()) < 0.05
    # Weak perspective alone is biased by the hand's depth extent (up to ~11 % here); the
    # perspective refinement removes most of that.
    weak = (report.weak_depth / gt.joints.mean(1)[:, 2] - 1).abs()
    assert float(weak.max()) < 0.15 and float(refined.mean()) < float(weak.mean())


def test_keypoint_init_rejects_missing_keypoints():
    layer = handmodel.load("right", use_pca=True, num_pca_comps=16, dtype=torch.float64)
    kp2d = torch.zeros(2, 21, 2, dtype=torch.float64)
    kp2d[0, 3] = float("nan")
    with pytest.raises(HodataError, match="fill the gaps"):
        keypoint_hand_init(layer, kp2d, torch.zeros(2, 21, 3, dtype=torch.float64), K)
    with pytest.raises(HodataError, match=r"\(T, 21, 3\)"):
        keypoint_hand_init(layer, torch.zeros(2, 21, 2, dtype=torch.float64), torch.zeros(2, 20, 3, dtype=torch.float64), K)


def test_keypoint_v2d_loss_reduction():
    target = torch.zeros(2, 21, 2)
    pred = torch.full((2, 21, 2), 64.0)
    assert torch.allclose(keypoint_v2d_loss(pred, target, (480, 640)), torch.tensor(0.01))
    pred[1] = 0.0
    valid = torch.tensor([False, True])
    assert keypoint_v2d_loss(pred, target, (480, 640), valid).item() == 0.0
