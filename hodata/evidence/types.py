"""ClipEvidence: the 2D evidence and hand initialisation of one clip (paper Sec. 3.1-3.2).

What an evidence provider (ground truth, detectors + tracking + GrabCut, files of external
models) hands to fitting, in tensors only: no dataset layout, no ground truth. All tensors of
one ClipEvidence live on one device (`to(device)`); T is the number of frames.

Conventions:
- boxes are xyxy pixels of the full image; a frame without a box holds NaN and `valid` False.
- object_masks use the reference encoding of the silhouette target (REFERENCE.md §2):
  1 object, 0 background, -1 hand-occluded (ignored by the silhouette loss).
- keypoints are in the hand model's joint order (hodata.handmodel.constants.JOINT_NAMES:
  16 MANO joints, then 5 tips thumb..little), not the detector's; `keypoints_3d` are metric
  and relative (MediaPipe "world" landmarks: camera-aligned axes, origin near the hand's
  centre), so only their shape and orientation carry information, not their place.
- provenance names the provider of each part, e.g. {"object_boxes": "gt", "object_masks":
  "grabcut", "hand_boxes": "mediapipe+motpy", "hand_keypoints": "mediapipe", "hand_init":
  "keypoints:mediapipe"}; HandInit.provider repeats the last one per hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Optional

import torch

from hodata.errors import HodataError
from hodata.types import HandInit

# Parts of a ClipEvidence whose provider is recorded in `provenance`.
EVIDENCE_PARTS: tuple[str, ...] = ("object_boxes", "object_masks", "hand_boxes", "hand_masks", "hand_keypoints", "hand_init")


def _move(x, device, dtype):
    if not torch.is_tensor(x):
        return x
    return x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device=device)


@dataclass
class HandEvidence:
    """One hand over a clip: its boxes, optional keypoints and optional initialisation."""

    side: str                                   # "right" | "left"
    boxes: torch.Tensor                         # (T, 4) xyxy pixels, NaN where not valid
    scores: torch.Tensor                        # (T,) detector confidence in [0, 1]; 0 where not valid
    valid: torch.Tensor                         # (T,) bool: a box is known (detected or recovered)
    observed: Optional[torch.Tensor] = None     # (T,) bool: detected in this frame (not filled in); None = valid
    keypoints_2d: Optional[torch.Tensor] = None  # (T, 21, 2) pixels, hand-model joint order
    keypoints_3d: Optional[torch.Tensor] = None  # (T, 21, 3) metres, relative, camera-aligned axes
    keypoints_valid: Optional[torch.Tensor] = None  # (T,) bool
    init: Optional[HandInit] = None

    def __post_init__(self):
        if self.side not in ("right", "left"):
            raise HodataError(f"hand evidence side must be 'right' or 'left', got {self.side!r}")
        frames = self.boxes.shape[0]
        if self.boxes.shape != (frames, 4):
            raise HodataError(f"hand boxes must be (T, 4), got {tuple(self.boxes.shape)}")
        for name, shape in (("scores", (frames,)), ("valid", (frames,)), ("observed", (frames,)),
                            ("keypoints_2d", (frames, 21, 2)), ("keypoints_3d", (frames, 21, 3)),
                            ("keypoints_valid", (frames,))):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise HodataError(f"hand evidence {name} must be {shape}, got {tuple(value.shape)}")
        if self.init is not None and self.init.side != self.side:
            raise HodataError(f"hand evidence side {self.side} has a {self.init.side} hand init")


@dataclass
class ClipEvidence:
    """Boxes, masks, keypoints and hand initialisations of one clip (module docstring)."""

    image_size: tuple[int, int]                 # (H, W)
    object_boxes: torch.Tensor                  # (T, 4) xyxy pixels, NaN where not valid
    object_valid: torch.Tensor                  # (T,) bool
    hands: list[HandEvidence] = field(default_factory=list)
    object_masks: Optional[torch.Tensor] = None  # (T, H, W) float in {-1, 0, 1}
    hand_masks: Optional[torch.Tensor] = None   # (T, H, W) bool, all hands
    provenance: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        frames = self.object_boxes.shape[0]
        height, width = self.image_size
        if self.object_boxes.shape != (frames, 4) or self.object_valid.shape != (frames,):
            raise HodataError(
                f"object boxes must be (T, 4) with object_valid (T,), got {tuple(self.object_boxes.shape)} "
                f"and {tuple(self.object_valid.shape)}"
            )
        for name in ("object_masks", "hand_masks"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (frames, height, width):
                raise HodataError(f"{name} must be (T, H, W) = {(frames, height, width)}, got {tuple(value.shape)}")
        for hand in self.hands:
            if hand.boxes.shape[0] != frames:
                raise HodataError(f"{hand.side} hand evidence has {hand.boxes.shape[0]} frames, the object {frames}")
        sides = [h.side for h in self.hands]
        if len(set(sides)) != len(sides):
            raise HodataError(f"one HandEvidence per side, got sides {sides}")
        unknown = set(self.provenance) - set(EVIDENCE_PARTS)
        if unknown:
            raise HodataError(f"unknown evidence part(s) {sorted(unknown)} in provenance; use {', '.join(EVIDENCE_PARTS)}")

    def __len__(self) -> int:
        return self.object_boxes.shape[0]

    @property
    def sides(self) -> list[str]:
        return [h.side for h in self.hands]

    @property
    def hand_inits(self) -> list[HandInit]:
        """The HandInit of every hand (HodataError naming the hand when one is missing)."""
        missing = [h.side for h in self.hands if h.init is None]
        if missing:
            raise HodataError(f"no hand initialisation for the {', '.join(missing)} hand; run a hand-init provider")
        return [h.init for h in self.hands]

    def hand(self, side: str) -> HandEvidence:
        for h in self.hands:
            if h.side == side:
                return h
        raise HodataError(f"no {side} hand in this clip's evidence (sides: {', '.join(self.sides) or 'none'})")

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> "ClipEvidence":
        """A copy with every tensor on `device`, floating tensors cast to `dtype`."""
        def moved(obj, **extra):
            return replace(obj, **{f.name: _move(getattr(obj, f.name), device, dtype) for f in fields(obj)
                                   if torch.is_tensor(getattr(obj, f.name))}, **extra)

        hands = [moved(h, init=None if h.init is None else moved(h.init)) for h in self.hands]
        return moved(self, hands=hands)

    def frames(self, start: int, stop: int) -> "ClipEvidence":
        """The evidence of frames [start, stop) (for the windows of clip selection)."""
        frames = len(self)

        def cut(obj, **extra):
            # Per-frame tensors have T rows; HandInit.betas (10,) is shared and never cut.
            return replace(obj, **{f.name: getattr(obj, f.name)[start:stop] for f in fields(obj)
                                   if torch.is_tensor(getattr(obj, f.name)) and f.name != "betas"
                                   and getattr(obj, f.name).dim() > 0 and getattr(obj, f.name).shape[0] == frames},
                           **extra)

        hands = [cut(h, init=None if h.init is None else cut(h.init)) for h in self.hands]
        return cut(self, hands=hands)
