"""The metrics later hand-object papers report on HO-3D v3: HOLD (Fan et al., CVPR 2024) and
the methods that compare with it in its protocol.

Definitions follow HOLD's evaluation (its `code/evaluate.py`, `src/utils/eval_modules.py`
and `src/utils/io/gt.py`, github.com/zc-alexfan/hold), which prints "Units: CD (cm**2),
F-score (percentage), MPJPE (mm)":

- MPJPE: mean joint position error after ROOT alignment — both joint sets are expressed
  relative to their own root joint (the wrist, joint 0), no rotation or scale alignment.
- CD: the object's chamfer distance after root alignment of the object — each vertex set
  minus the centre of its own tight axis-aligned bounding box — as the SUM of the two
  directed MEAN SQUARED closest-point distances (cm^2).
- F5 / F10: F-score 2 P R / (P + R) of the same root-aligned object point sets, P (R) the
  fraction of predicted (ground-truth) points closer than 5 / 10 mm (strict `<`) to the
  other set. HOLD reports them in percent; hodata keeps fractions in [0, 1] like its hand
  F-scores.
- CD_h, the hand-relative chamfer distance: the chamfer distance above of the object
  vertices expressed relative to the hand's root joint (the predicted object minus the
  predicted wrist, the true object minus the true wrist), so it measures where the object is
  relative to the hand, which root-aligned CD and MPJPE both leave out.

Departures: HOLD draws 3000 random vertices per set before the chamfer distance and adds
1e-7 to P + R; hodata uses every vertex (deterministic, exact) and returns F = 0 when
P + R = 0. HOLD also reports CD / F after ICP when it reconstructs an unknown shape
(`cd_icp`); hodata fits known templates, so the pose error is what CD measures and no ICP is
applied.

All functions are batched over frames: points (T, N, 3) in metres in, per-frame values (T,)
in metres (or m^2, or fractions) out; `hodata.metrics.summary` converts to the reported units.
"""

from __future__ import annotations

from typing import Sequence

import torch

from hodata.metrics.hand import fscore
from hodata.metrics.object import mutual_nearest_distances

# F-score thresholds of the HOLD protocol (metres)
HOLD_FSCORE_THRESHOLDS = {"5mm": 0.005, "10mm": 0.010}
ROOT_JOINT = 0   # the wrist, in MANO / HO-3D joint order


def _check_points(name: str, points: torch.Tensor) -> None:
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"{name} must be points (T, N, 3), got {tuple(points.shape)}")


def root_relative(points: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    """Points expressed relative to a per-frame root: points - root.

    points: (T, N, 3), root: (T, 3) -> (T, N, 3).
    """
    _check_points("points", points)
    if root.shape != (points.shape[0], 3):
        raise ValueError(f"root must be (T, 3) = ({points.shape[0]}, 3), got {tuple(root.shape)}")
    return points - root[:, None, :]


def bounding_box_centre(points: torch.Tensor) -> torch.Tensor:
    """Centre of the tight axis-aligned bounding box of each frame's points (HOLD's object
    root): (min + max) / 2 per axis. points: (T, N, 3) -> (T, 3)."""
    _check_points("points", points)
    return 0.5 * (points.amin(dim=-2) + points.amax(dim=-2))


def root_aligned_mpjpe(pred_joints: torch.Tensor, gt_joints: torch.Tensor, root: int = ROOT_JOINT) -> torch.Tensor:
    """MPJPE after root alignment (HOLD's `mpjpe_ra`).

        MPJPE = mean_j || (p_j - p_root) - (g_j - g_root) ||

    pred_joints, gt_joints: (T, J, 3) metres, same joint order -> (T,) metres (HOLD: mm).
    """
    _check_points("pred_joints", pred_joints)
    if pred_joints.shape != gt_joints.shape:
        raise ValueError(f"MPJPE needs corresponding joints: pred {tuple(pred_joints.shape)} vs gt "
                         f"{tuple(gt_joints.shape)}")
    pred = root_relative(pred_joints, pred_joints[:, root])
    gt = root_relative(gt_joints, gt_joints[:, root])
    return (pred - gt).norm(dim=-1).mean(dim=-1)


def squared_chamfer_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Chamfer distance as HOLD computes it: the SUM of the two directed MEAN SQUARED
    closest-point distances,

        CD = mean_{p in a} min_{q in b} ||p - q||^2 + mean_{q in b} min_{p in a} ||p - q||^2

    a: (T, N, 3), b: (T, M, 3) metres -> (T,) m^2 (x 1e4 for HOLD's cm^2). Symmetric in a, b.
    (hodata.metrics.object.chamfer_distance is the other convention: half the sum of plain
    mean distances, in metres.)
    """
    _check_points("a", a)
    _check_points("b", b)
    a_to_b, b_to_a = mutual_nearest_distances(a, b)
    return (a_to_b**2).mean(dim=-1) + (b_to_a**2).mean(dim=-1)


def object_chamfer_fscores(
    pred_vertices: torch.Tensor,
    gt_vertices: torch.Tensor,
    thresholds: Sequence[float] = tuple(HOLD_FSCORE_THRESHOLDS.values()),
) -> tuple[torch.Tensor, torch.Tensor]:
    """HOLD's object CD and F-scores: both vertex sets root-aligned (each minus its own
    `bounding_box_centre`), then `squared_chamfer_distance` and `fscore` at each threshold.

    pred_vertices: (T, M, 3), gt_vertices: (T, N, 3) metres -> (CD (T,) m^2, F (T, K) in [0, 1]).
    A translation of the object changes neither value; a rotation or a wrong shape does.
    """
    pred = root_relative(pred_vertices, bounding_box_centre(pred_vertices))
    gt = root_relative(gt_vertices, bounding_box_centre(gt_vertices))
    return squared_chamfer_distance(pred, gt), fscore(pred, gt, list(thresholds))


def hand_relative_chamfer_distance(
    pred_object: torch.Tensor, gt_object: torch.Tensor, pred_hand_root: torch.Tensor, gt_hand_root: torch.Tensor
) -> torch.Tensor:
    """CD_h, HOLD's hand-relative chamfer distance (`cd_right`): the object placed in the
    hand's frame (object vertices minus the hand's root joint, each set with its own hand),
    then `squared_chamfer_distance`.

    pred_object: (T, M, 3), gt_object: (T, N, 3), pred_hand_root, gt_hand_root: (T, 3) wrist
    positions, metres -> (T,) m^2. Moving hand and object together leaves it unchanged; moving
    the object by d relative to the hand gives at most 2 |d|^2 (exactly 2 |d|^2 when every
    point's nearest neighbour is its own shifted copy).
    """
    return squared_chamfer_distance(root_relative(pred_object, pred_hand_root), root_relative(gt_object, gt_hand_root))


__all__ = [
    "HOLD_FSCORE_THRESHOLDS", "ROOT_JOINT", "bounding_box_centre", "hand_relative_chamfer_distance",
    "object_chamfer_fscores", "root_aligned_mpjpe", "root_relative", "squared_chamfer_distance",
]
