"""The data that flows between stages (see DESIGN.md): Clip -> FitResult -> shards / eval.

All 3D quantities are in OpenCV camera coordinates (x right, y down, z forward), metres.
Tensors carry their shapes in the field comments; T is the number of frames in a clip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch


@dataclass
class HandState:
    """One hand over a clip: its parameters and the meshes they give.

    Used for ground truth (from a dataset) and for fits (from the optimiser).
    """

    side: str                          # "right" | "left"
    vertices: torch.Tensor             # (T, V, 3) camera space, V = 778 for MANO
    joints: torch.Tensor               # (T, 21, 3) camera space, MANO order + 5 tips (handmodel docs)
    global_orient: Optional[torch.Tensor] = None  # (T, 3, 3)
    hand_pose: Optional[torch.Tensor] = None      # (T, P) full 45-D axis-angle or PCA coefficients
    pose_space: str = "axis_angle"     # "axis_angle" (45-D) | "pca" (first P components)
    betas: Optional[torch.Tensor] = None          # (10,) or (T, 10)
    # (T, 3): for ground truth, the hand layer's `transl` input; for fits, D_hand of paper Eq. 1
    # (the middle-MCP joint position, after rotation R and scale s about it). `vertices` and
    # `joints` are authoritative either way.
    transl: Optional[torch.Tensor] = None
    scale: Optional[torch.Tensor] = None          # () shared hand scale s_hand (paper Eq. 1)
    model_name: str = ""               # which hand model made the vertices ("mano", "open-hand-v1", ...)


@dataclass
class ObjectState:
    """One rigid object over a clip: V_obj = s (R V_canonical) + D (paper Eq. 2)."""

    model_id: str                      # key into the mesh cache
    rotation: torch.Tensor             # (T, 3, 3)
    translation: torch.Tensor          # (T, 3)
    scale: torch.Tensor | float = 1.0  # () object scale s_obj
    vertices: Optional[torch.Tensor] = None  # (T, V, 3) camera space, optional
    category: Optional[str] = None


@dataclass
class Clip:
    """T frames of one sequence with everything fitting and evaluation need.

    Masks use the reference encoding for the object target: 1 object, 0 background,
    -1 hand-occluded (ignored by the silhouette loss).
    """

    dataset: str                       # "ho3d" | "core50" | "epic" | "synthetic"
    sequence: str
    frame_ids: list[str]               # dataset frame ids, e.g. "0012"
    image_paths: list[Path]
    K: torch.Tensor                    # (3, 3) OpenCV intrinsics (shared by the clip)
    image_size: tuple[int, int]        # (H, W)
    object_model_id: str
    hand_sides: list[str]
    category: Optional[str] = None
    object_boxes: Optional[torch.Tensor] = None          # (T, 4) xyxy pixels
    hand_boxes: dict[str, torch.Tensor] = field(default_factory=dict)  # side -> (T, 4)
    object_masks: Optional[torch.Tensor] = None          # (T, H, W) float in {-1, 0, 1}
    hand_masks: Optional[torch.Tensor] = None            # (T, H, W) bool, all hands
    gt_object: Optional[ObjectState] = None
    gt_hands: list[HandState] = field(default_factory=list)
    # (T, H, W, 3) uint8 RGB frames once decoded (by the adapter's image check or the first
    # reader, `hodata.datasets.base.clip_frames`), so that the evidence and the shards do not
    # decode them again; None until then. One clip's frames: adapters yield clips one at a time.
    images: Optional[np.ndarray] = field(default=None, repr=False)
    # per frame, the whole-frame hand detections (hodata.evidence.mediapipe_hands.HandDetection
    # lists) when the adapter already ran the detector on these frames (video clip selection);
    # the detected evidence provider reuses them instead of running MediaPipe again
    hand_detections: Optional[list] = field(default=None, repr=False)

    @property
    def clip_id(self) -> str:
        """`<dataset>_<sequence>_<first frame>`: unique per clip, no dots (WebDataset keys)."""
        return f"{self.dataset}_{self.sequence}_{self.frame_ids[0]}".replace(".", "-").replace("/", "-")

    def __len__(self) -> int:
        return len(self.frame_ids)


@dataclass
class FitResult:
    """What fitting a clip produced: per-frame states, final per-term losses, quality flags."""

    clip_id: str
    dataset: str
    sequence: str
    frame_ids: list[str]
    K: torch.Tensor                    # (3, 3)
    image_size: tuple[int, int]
    hands: list[HandState]
    objects: list[ObjectState]
    method: str = "joint"              # "joint" | "independent" | ablation names
    losses: dict[str, float] = field(default_factory=dict)            # final weighted per-term losses
    loss_history: dict[str, list[float]] = field(default_factory=dict)
    flags: dict[str, bool] = field(default_factory=dict)              # quality flags
    hand_init: str = ""                # provider of the hand initialisation ("simulated", "frankmocap", ...)
    evidence: dict[str, str] = field(default_factory=dict)  # provider of each evidence part (ClipEvidence.provenance)
    # label quality (hodata.fitting.quality.label_quality): per-frame "score" [T], "clip_score",
    # the "signals" behind them, "weights", "flags_counted"; empty for fits made before it existed
    quality: dict = field(default_factory=dict)


@dataclass
class HandInit:
    """Independent hand initialisation for one hand over a clip (paper Sec. 3.2).

    `layer(global_orient, hand_pose, betas, transl)` of the active hand model (PCA pose space)
    gives the initial camera-space vertices; `vertices_2d` is the 2D target of the v2d term
    (paper Eq. 4), in pixels of the full image.
    """

    side: str
    global_orient: torch.Tensor        # (T, 3, 3)
    hand_pose: torch.Tensor            # (T, k) PCA coefficients (k = 16 by default)
    betas: torch.Tensor                # (10,)
    transl: torch.Tensor               # (T, 3)
    vertices_2d: torch.Tensor          # (T, V, 2) pixels
    provider: str                      # "simulated" | "frankmocap" | ...
    boxes: Optional[torch.Tensor] = None  # (T, 4) hand boxes xyxy
    # (T, 21, 2) pixels, hand-model joint order: the keypoints a keypoint init was fitted to;
    # the v2d target when FitConfig.v2d_target == "keypoints"
    keypoints_2d: Optional[torch.Tensor] = None
