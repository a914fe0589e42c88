"""GrabCut object masks with the hand marked from keypoints, against synthetic ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hodata.datasets.ho3d import HO3DDataset
from hodata.datasets.synthetic import make_synthetic_ho3d
from hodata.evidence.masks import clip_masks, mask_iou, object_target, pixels_per_metre, skeleton_hand_mask
from hodata.evidence.mediapipe_hands import read_rgb
from hodata.geometry.camera import project


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("masks")
    make_synthetic_ho3d(root / "ho3d", sequences=2, frames=3, object_ids=("025_mug", "006_mustard_bottle"), seed=4,
                        image_size=(240, 320), cache_dir=root / "cache")
    return list(HO3DDataset(root / "ho3d", clip_length=3, stride=1, cache_dir=root / "cache"))


def test_grabcut_object_mask_with_hand_marked(clips):
    gen = torch.Generator().manual_seed(0)
    for clip in clips:
        images = [read_rgb(p) for p in clip.image_paths]
        hand = clip.gt_hands[0]
        # Keypoints as a detector would give them: projected joints with 2 px noise, metric joints.
        kp2d = project(hand.joints, clip.K) + 2.0 * torch.randn(hand.joints.shape[:2] + (2,), generator=gen, dtype=hand.joints.dtype)
        kp3d = hand.joints - hand.joints.mean(1, keepdim=True)
        keypoints = [[(kp2d[t].numpy(), kp3d[t].numpy())] for t in range(len(images))]
        target, hand_mask = clip_masks(images, clip.object_boxes, keypoints)
        assert set(torch.unique(target).tolist()) <= {-1.0, 0.0, 1.0}
        obj_iou = mask_iou(target == 1, clip.object_masks == 1)
        assert bool((obj_iou >= 0.7).all()), f"{clip.object_model_id}: object IoU {obj_iou.tolist()}"
        hand_iou = mask_iou(hand_mask, clip.hand_masks)
        assert bool((hand_iou >= 0.4).all()), f"{clip.object_model_id}: hand IoU {hand_iou.tolist()}"
        # Without the hand marked the object mask swallows hand pixels (the marking matters).
        plain, _ = clip_masks(images, clip.object_boxes, [[] for _ in images])
        assert bool(((plain == 1) & clip.hand_masks).sum() >= ((target == 1) & clip.hand_masks).sum())


def test_skeleton_width_follows_metric_scale():
    # A straight, flat synthetic hand 0.5 m away: pixels per metre = f / z exactly.
    f, z = 600.0, 0.5
    kp3d = np.zeros((21, 3))
    kp3d[:, 0] = np.linspace(-0.08, 0.08, 21)
    kp3d[:, 1] = np.tile([0.0, 0.01, 0.02], 7)
    kp2d = kp3d[:, :2] * f / z + 200.0
    assert abs(pixels_per_metre(kp2d, kp3d) - f / z) < 1e-6
    mask = skeleton_hand_mask(kp2d, (400, 400), kp3d, finger_width=0.02)
    assert mask.any() and not mask[0, 0]
    wide = skeleton_hand_mask(kp2d, (400, 400), kp3d, finger_width=0.04)
    assert wide.sum() > mask.sum() and bool((wide | mask).sum() == wide.sum())


def test_object_target_encoding():
    obj = torch.tensor([[1, 1, 0], [0, 1, 0]], dtype=torch.bool)
    hand = torch.tensor([[0, 1, 1], [0, 0, 0]], dtype=torch.bool)
    assert object_target(obj, hand).tolist() == [[1.0, -1.0, -1.0], [0.0, 1.0, 0.0]]
    assert mask_iou(obj, obj).item() == 1.0 and abs(mask_iou(obj, hand).item() - 1 / 4) < 1e-12


def test_mesh_hand_mask_covers_the_projected_hand():
    from hodata import handmodel
    from hodata.evidence.masks import mesh_hand_mask

    layer = handmodel.load("right", dtype=torch.float64)
    verts = layer(transl=torch.tensor([[0.0, 0.0, 0.5], [0.05, 0.0, 0.6]], dtype=torch.float64)).vertices
    K = torch.tensor([[300.0, 0, 80], [0, 300.0, 60], [0, 0, 1]], dtype=torch.float64)
    mask = mesh_hand_mask(verts, layer.faces, K, (120, 160))
    assert mask.shape == (2, 120, 160) and mask[0].sum() > mask[1].sum() > 100   # farther: smaller
    uv = project(verts, K).round().long()
    for t in range(2):
        ok = (uv[t, :, 0] >= 0) & (uv[t, :, 0] < 160) & (uv[t, :, 1] >= 0) & (uv[t, :, 1] < 120)
        hit = mask[t, uv[t, ok, 1], uv[t, ok, 0]].double().mean()
        assert hit > 0.9
