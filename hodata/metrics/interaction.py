"""Interaction metrics (paper Sec. 4.1 "Interaction metrics", Appendix C "Contact accuracy").

The core functions take signed distances of the hand vertices to the object surface,
`sdf_values: (T, V)` in metres, positive outside the object, so they are testable with any
SDF (closed form, grid, exact). With several hands, concatenate their vertices along V.
`hand_object_sdf_values` produces the values from an object SDF grid.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from hodata.types import ObjectState

SdfFn = Callable[..., torch.Tensor]


def penetration_depth(sdf_values: torch.Tensor) -> torch.Tensor:
    """Maximum penetration depth of the hand into the object, per frame (metres).

    max over hand vertices of max(0, -SDF(v)) (the collision term's Phi of Eq. 5, maximised
    instead of summed); 0 for a frame without penetration. Tables report the mean over
    frames in mm. sdf_values: (T, V) -> (T,).
    """
    return (-sdf_values).clamp_min(0.0).amax(dim=-1)


def contact(sdf_values: torch.Tensor, tolerance: float = 0.0) -> torch.Tensor:
    """Whether each frame has hand-object contact: some hand vertex has SDF < tolerance.

    The default tolerance 0 is the paper's definition (Appendix C, following [25]: contact =
    negative hand vertex values in the object SDF) and what the reference code computes
    (max penetration > 0), so `contact_pct` is comparable with Table 1. A positive tolerance
    (e.g. 0.002 for 2 mm) also counts vertices lying within that distance outside the surface,
    i.e. "surface contact" measured on an SDF that is only accurate to a fraction of a mm.
    sdf_values: (T, V) -> (T,) bool.
    """
    return (sdf_values < tolerance).any(dim=-1)


def contact_percent(has_contact: torch.Tensor) -> torch.Tensor:
    """Contact %: percentage of frames in contact. has_contact: (T,) bool -> () float."""
    return has_contact.to(torch.get_default_dtype()).mean() * 100.0


def contact_accuracy(pred_contact: torch.Tensor, gt_contact: torch.Tensor) -> torch.Tensor:
    """Contact accuracy (%): percentage of frames whose predicted contact flag equals the
    ground-truth one (paper Table 2; on Core50 every frame is in contact, so it equals the
    contact % of the fits). pred_contact, gt_contact: (T,) bool -> () float."""
    if pred_contact.shape != gt_contact.shape:
        raise ValueError(f"contact flags differ in shape: {tuple(pred_contact.shape)} vs {tuple(gt_contact.shape)}")
    return (pred_contact.bool() == gt_contact.bool()).to(torch.get_default_dtype()).mean() * 100.0


def hand_object_sdf_values(
    hand_vertices: torch.Tensor,
    obj: ObjectState,
    grid: object,
    sdf_fn: Optional[SdfFn] = None,
) -> torch.Tensor:
    """Signed distances of camera-space hand vertices (T, V, 3) to a posed object -> (T, V).

    `grid` is the object's SDF in its canonical frame and `sdf_fn(grid, points_cam,
    rotation, translation, scale)` evaluates it at camera points (positive outside);
    it defaults to hodata.geometry.sdf.object_sdf.
    """
    if sdf_fn is None:
        from hodata.geometry.sdf import object_sdf as sdf_fn  # imported late: optional for the core metrics
    return sdf_fn(grid, hand_vertices, obj.rotation, obj.translation, obj.scale)
