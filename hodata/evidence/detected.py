"""The detected evidence provider: frames -> ClipEvidence without any ground truth.

Composition (paper Sec. 3.1-3.2 with offline parts):
1. hands per frame: MediaPipe Hands (mediapipe_hands) on the whole frame, and where it finds
   fewer hands than the clip holds, again in crops around the object box hint
   (mediapipe_hands.detect_near_box); or detections passed in;
2. object boxes: hints (a dataset's published boxes, e.g. Core50's bbox files, or another
   detector's); hodata has no offline object detector, so without hints there is no object;
3. tracking (tracking.track_clip): contradictions with the known sides / counts dropped,
   motpy tracks, gaps of at most `max_gap` frames filled;
4. keypoints of the tracked hand: those of the detection its track took in each frame,
   linearly interpolated over gaps (2D and 3D);
5. hand initialisation (keypoint_init.keypoint_hand_init) of the active hand model;
6. masks (masks.clip_masks): keypoint-skeleton hand, GrabCut object with the hand as occluder.

`windows` of the result (tracking.select_windows) says which frame ranges have an object
track and every hand track for more than `min_frames` frames; fit only those.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from hodata.errors import HodataError
from hodata.evidence import keypoint_init, masks, mediapipe_hands, tracking
from hodata.evidence.mediapipe_hands import HandDetection, read_rgb
from hodata.evidence.types import ClipEvidence, HandEvidence


@dataclass
class DetectedEvidence:
    evidence: ClipEvidence
    windows: list[tuple[int, int]]           # frame ranges [start, stop) fit for fitting
    tracking: tracking.TrackingResult
    detections: list[list[HandDetection]]    # per frame, as the hand detector gave them


@functools.lru_cache(maxsize=8)
def default_layer(side: str, mano_dir=None, dtype=torch.float64) -> torch.nn.Module:
    """The active hand model's fitting layer (PCA k = 16, flat_hand_mean=False) for one side
    (cached: one load per side; the layer is not changed by its users here)."""
    from hodata import handmodel

    return handmodel.load(side=side, mano_dir=mano_dir, model="auto", num_pca_comps=16, use_pca=True,
                          flat_hand_mean=False, dtype=dtype)


def detect_clip_evidence(
    images: Sequence[np.ndarray | str | os.PathLike],
    K: torch.Tensor,
    sides: Optional[Sequence[str]],
    object_boxes: Optional[torch.Tensor] = None,
    num_hands: Optional[int] = None,
    hand_detections: Optional[list[list[HandDetection]]] = None,
    full_frame_detections: Optional[list[list[HandDetection]]] = None,
    layer_for: Callable[[str], torch.nn.Module] = default_layer,
    max_gap: int = 10,
    min_frames: int = 20,
    hand_provider: str = mediapipe_hands.PROVIDER,
    hand_mask: str = "skeleton",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    **detector_options,
) -> DetectedEvidence:
    """Detected ClipEvidence of T frames (module docstring).

    images: T RGB uint8 arrays or image paths; K (3, 3); sides: the clip's known hand sides
    (None: unknown, taken from the detections); object_boxes: (T, 4) hints, NaN rows where
    none; hand_detections: per frame detections instead of running MediaPipe (then
    `hand_provider` names where they came from); full_frame_detections: per frame, MediaPipe's
    whole-frame detections already made on these frames (a video's clip selection): used
    instead of running the detector on the whole frames again (the search near the object
    box still runs where they hold too few hands); layer_for: side -> PCA fitting layer;
    hand_mask: "skeleton" (keypoint skeleton, the default: independent of the hand model) or
    "mesh" (silhouette of the initial hand, where an init exists; see masks module docstring).
    """
    frames = len(images)
    if frames == 0:
        raise HodataError("no frames to detect evidence in")
    if hand_mask not in ("skeleton", "mesh"):
        raise HodataError(f"hand_mask must be 'skeleton' or 'mesh', got {hand_mask!r}")
    if object_boxes is None:
        raise HodataError("detected evidence needs object box hints (hodata has no offline object detector): "
                          "use the dataset's published boxes or --evidence files:DIR")
    if object_boxes.shape != (frames, 4):
        raise HodataError(f"object box hints must be (T, 4) = ({frames}, 4), got {tuple(object_boxes.shape)}")
    rgb = [read_rgb(im) if isinstance(im, (str, os.PathLike)) else im for im in images]
    image_size = rgb[0].shape[:2]
    wanted = num_hands if num_hands is not None else (len(sides) if sides else 1)
    if full_frame_detections is not None and len(full_frame_detections) != frames:
        raise HodataError(f"{len(full_frame_detections)} frames of whole-frame hand detections for {frames} images")
    if hand_detections is None:
        hints = object_boxes.detach().cpu().double().numpy()
        hand_detections = []
        detector = None  # opened when a frame needs it (never, when every frame is detected already)
        try:
            for t, (im, hint) in enumerate(zip(rgb, hints)):
                if full_frame_detections is not None:
                    found = list(full_frame_detections[t])
                else:
                    detector = detector or mediapipe_hands.MediaPipeHands(**detector_options)
                    found = detector.detect(im)
                if len(found) < wanted:  # small hands: look again near the object
                    detector = detector or mediapipe_hands.MediaPipeHands(**detector_options)
                    near = mediapipe_hands.detect_near_box(detector, im, hint, wanted)
                    found = near if len(near) > len(found) else found
                hand_detections.append(found)
        finally:
            if detector is not None:
                detector.close()
    elif len(hand_detections) != frames:
        raise HodataError(f"{len(hand_detections)} frames of hand detections for {frames} images")

    hint = object_boxes.detach().cpu().double().numpy()
    obj_frames = [tracking.FrameDetections(b[None] if np.isfinite(b).all() else np.zeros((0, 4)),
                                           [1.0] if np.isfinite(b).all() else []) for b in hint]
    hand_frames = [tracking.FrameDetections(np.array([d.box for d in dets]).reshape(-1, 4),
                                            np.array([d.score for d in dets]), [d.side for d in dets])
                   for dets in hand_detections]
    result = tracking.track_clip(obj_frames, hand_frames, sides, num_hands=num_hands, max_gap=max_gap)

    K64 = K.detach().cpu().double()
    hands: list[HandEvidence] = []
    per_frame_keypoints: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(frames)]
    occluders = torch.zeros((frames,) + tuple(image_size), dtype=torch.bool)
    mask_sources: set[str] = set()
    for side, track in result.hands.items():
        kp2d = torch.full((frames, 21, 2), float("nan"), dtype=torch.float64)
        kp3d = torch.full((frames, 21, 3), float("nan"), dtype=torch.float64)
        for t in range(frames):
            j = int(track.detection[t])
            if j >= 0:
                kp2d[t] = torch.as_tensor(hand_detections[t][j].keypoints_2d)
                kp3d[t] = torch.as_tensor(hand_detections[t][j].keypoints_3d)
        kp2d, kp_valid = tracking.interpolate_gaps(kp2d, track.observed, max_gap)
        kp3d, _ = tracking.interpolate_gaps(kp3d, track.observed, max_gap)
        init = None
        if bool(kp_valid.all()):
            layer = layer_for(side)
            init, _ = keypoint_init.keypoint_hand_init(layer, kp2d, kp3d, K64, provider=f"keypoints:{hand_provider}")
        if hand_mask == "mesh" and init is not None:
            with torch.no_grad():
                verts = layer(global_orient=init.global_orient, hand_pose=init.hand_pose, transl=init.transl).vertices
            occluders |= masks.mesh_hand_mask(verts, layer.faces, K64, image_size)
            mask_sources.add("init-mesh")
        else:
            mask_sources.add("keypoint-skeleton")
            for t in range(frames):
                if kp_valid[t]:
                    per_frame_keypoints[t].append((kp2d[t].numpy(), kp3d[t].numpy()))
        hands.append(HandEvidence(side=side, boxes=track.boxes, scores=track.scores, valid=track.covered,
                                  observed=track.observed, keypoints_2d=kp2d, keypoints_3d=kp3d,
                                  keypoints_valid=kp_valid, init=init))
    target, visible_hands = masks.clip_masks(rgb, result.object.boxes, per_frame_keypoints, occluders)
    provenance = {
        "object_boxes": "hints+motpy", "hand_boxes": f"{hand_provider}+motpy", "hand_keypoints": hand_provider,
        "object_masks": masks.PROVIDER, "hand_masks": "+".join(sorted(mask_sources)) or "none",
    }
    if hands and all(h.init is not None for h in hands):
        provenance["hand_init"] = f"keypoints:{hand_provider}"
    evidence = ClipEvidence(image_size=tuple(image_size), object_boxes=result.object.boxes, object_valid=result.object.covered,
                            hands=hands, object_masks=target, hand_masks=visible_hands, provenance=provenance)
    return DetectedEvidence(evidence.to(device, dtype), tracking.select_windows(result, min_frames), result, hand_detections)
