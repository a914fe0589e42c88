"""Ground truth as one evidence provider: a Clip's annotations -> ClipEvidence.

Boxes and masks are the dataset's (projected ground truth, seg files); the keypoints are the
ground-truth joints (projected, and centred for the metric ones, as a keypoint detector
would give them); the hand initialisation comes from a separate provider passed in (e.g.
hand_init.SimulatedHandEstimator: ground truth plus documented noise), because an
initialisation that *is* the ground truth would make every fit trivially right.
"""

from __future__ import annotations

from typing import Optional

import torch

from hodata.errors import HodataError
from hodata.evidence.hand_init import HandInitProvider
from hodata.evidence.types import ClipEvidence, HandEvidence
from hodata.geometry.camera import project
from hodata.types import Clip

PROVIDER = "gt"


def gt_clip_evidence(clip: Clip, hand_init: Optional[HandInitProvider] = None) -> ClipEvidence:
    """ClipEvidence from the clip's annotations (module docstring); hand_init: provider of the
    HandInits (None: no initialisation, keypoints and boxes only)."""
    if clip.object_boxes is None:
        raise HodataError(f"clip {clip.clip_id} has no ground-truth object boxes; use detected or files evidence")
    frames = len(clip)
    device = clip.object_boxes.device
    inits = {init.side: init for init in hand_init(clip)} if hand_init is not None else {}
    gt_hands = {h.side: h for h in clip.gt_hands}
    hands = []
    for side in clip.hand_sides:
        boxes = clip.hand_boxes.get(side)
        if boxes is None:
            raise HodataError(f"clip {clip.clip_id} has no ground-truth box for the {side} hand; use detected or files evidence")
        kp2d = kp3d = kp_valid = None
        gt = gt_hands.get(side)
        if gt is not None and gt.joints.shape[1] == 21:
            kp2d = project(gt.joints, clip.K.to(gt.joints))
            kp3d = gt.joints - gt.joints.mean(1, keepdim=True)
            kp_valid = torch.ones(frames, dtype=torch.bool, device=device)
        valid = torch.isfinite(boxes).all(-1)
        hands.append(HandEvidence(
            side=side, boxes=boxes, scores=valid.to(boxes.dtype), valid=valid, observed=valid.clone(),
            keypoints_2d=kp2d, keypoints_3d=kp3d, keypoints_valid=kp_valid, init=inits.get(side),
        ))
    provenance = {"object_boxes": PROVIDER, "hand_boxes": PROVIDER}
    if clip.object_masks is not None:
        provenance["object_masks"] = PROVIDER
    if clip.hand_masks is not None:
        provenance["hand_masks"] = PROVIDER
    if any(h.keypoints_2d is not None for h in hands):
        provenance["hand_keypoints"] = PROVIDER
    providers = sorted({i.provider for i in inits.values()})
    if providers:
        provenance["hand_init"] = "+".join(providers)
    return ClipEvidence(
        image_size=tuple(clip.image_size), object_boxes=clip.object_boxes,
        object_valid=torch.isfinite(clip.object_boxes).all(-1), hands=hands,
        object_masks=clip.object_masks, hand_masks=clip.hand_masks, provenance=provenance,
    )
