"""The gt and detected evidence providers on synthetic clips (and the ClipEvidence container)."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from hodata.datasets.ho3d import HO3DDataset
from hodata.datasets.synthetic import make_synthetic_ho3d
from hodata.errors import HodataError
from hodata.evidence.detected import default_layer, detect_clip_evidence
from hodata.evidence.gt import gt_clip_evidence
from hodata.evidence.hand_init import SimulatedHandEstimator, simulated_keypoint_detections
from hodata.evidence.masks import mask_iou
from hodata.evidence.mediapipe_hands import HandDetection
from hodata.evidence.tracking import box_iou
from hodata.evidence.types import ClipEvidence, HandEvidence
from hodata.geometry.camera import project
from hodata.metrics.hand import pa_error

FRAMES = 24


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("providers")
    make_synthetic_ho3d(root / "ho3d", sequences=1, frames=FRAMES, object_ids=("025_mug",), seed=2,
                        image_size=(240, 320), cache_dir=root / "cache")
    ds = HO3DDataset(root / "ho3d", clip_length=FRAMES, stride=1, cache_dir=root / "cache")
    return ds[0]


def test_gt_provider(clip):
    ev = gt_clip_evidence(clip, SimulatedHandEstimator())
    assert ev.provenance == {"object_boxes": "gt", "hand_boxes": "gt", "object_masks": "gt", "hand_masks": "gt",
                             "hand_keypoints": "gt", "hand_init": "simulated"}
    assert ev.sides == ["right"] and len(ev) == FRAMES
    assert torch.equal(ev.object_masks, clip.object_masks)
    hand = ev.hand("right")
    assert torch.allclose(hand.keypoints_2d, project(clip.gt_hands[0].joints, clip.K))
    assert [i.provider for i in ev.hand_inits] == ["simulated"]
    part = ev.frames(4, 10)
    assert len(part) == 6 and part.hands[0].init.transl.shape == (6, 3) and part.hands[0].init.betas.shape == (10,)
    moved = ev.to("cpu", torch.float64)
    assert moved.object_masks.dtype == torch.float64 and moved.hands[0].valid.dtype == torch.bool
    no_init = gt_clip_evidence(clip)
    with pytest.raises(HodataError, match="no hand initialisation for the right hand"):
        no_init.hand_inits
    with pytest.raises(HodataError, match="no left hand"):
        ev.hand("left")


def simulated_detections(clip, seed: int = 0, miss: float = 0.3, wrong_side: float = 0.1, pixel_noise: float = 2.0):
    """What a keypoint detector would give on this clip (MediaPipe cannot see the rendered hands)."""
    return simulated_keypoint_detections(clip, seed, miss, wrong_side, pixel_noise)


@pytest.mark.parametrize("hand_mask", ["skeleton", "mesh"])
def test_detected_provider_without_ground_truth(clip, hand_mask):
    detections = simulated_detections(clip)
    hints = clip.object_boxes.clone()
    hints[::5] = float("nan")   # the object box source misses every fifth frame too
    # Nothing of the clip's ground truth goes in: frames, K, sides, hints and detections only.
    result = detect_clip_evidence(clip.image_paths, clip.K, ["right"], object_boxes=hints,
                                  hand_detections=detections, hand_provider="simulated", min_frames=20,
                                  hand_mask=hand_mask)
    ev = result.evidence
    assert ev.provenance["hand_masks"] == {"skeleton": "keypoint-skeleton", "mesh": "init-mesh"}[hand_mask]
    assert float(mask_iou(ev.hand_masks, clip.hand_masks).mean()) >= 0.5
    assert ev.provenance["hand_init"] == "keypoints:simulated" and ev.provenance["object_masks"] == "grabcut"
    assert result.windows == [(0, FRAMES)]
    obj_iou = mask_iou(ev.object_masks == 1, clip.object_masks == 1)
    assert float(obj_iou.mean()) >= 0.7
    hand = ev.hand("right")
    assert bool(hand.valid.all()) and float((box_iou(hand.boxes.double(), clip.hand_boxes["right"].double()) >= 0.5).double().mean()) >= 0.9
    init = hand.init
    layer = default_layer("right")
    pred = layer(global_orient=init.global_orient.double(), hand_pose=init.hand_pose.double(), transl=init.transl.double())
    gt = clip.gt_hands[0].joints.double()
    assert float(pa_error(pred.joints, gt).mean()) < 0.015
    depth = (pred.joints.mean(1)[:, 2] / gt.mean(1)[:, 2] - 1).abs()
    assert float(depth.median()) < 0.10


def test_detected_provider_needs_object_hints(clip):
    with pytest.raises(HodataError, match="object box hints"):
        detect_clip_evidence(clip.image_paths, clip.K, ["right"], hand_detections=simulated_detections(clip))


def test_clip_evidence_checks_shapes():
    boxes = torch.zeros(3, 4)
    with pytest.raises(HodataError, match="object_masks must be"):
        ClipEvidence((4, 5), boxes, torch.ones(3, dtype=torch.bool), object_masks=torch.zeros(3, 4, 4))
    with pytest.raises(HodataError, match="keypoints_2d must be"):
        HandEvidence("right", boxes, torch.zeros(3), torch.ones(3, dtype=torch.bool), keypoints_2d=torch.zeros(3, 20, 2))
    with pytest.raises(HodataError, match="unknown evidence part"):
        ClipEvidence((4, 5), boxes, torch.ones(3, dtype=torch.bool), provenance={"boxes": "gt"})
