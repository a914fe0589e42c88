"""Similarity transforms of batched point sets (paper Eq. 1 and 2)."""

from __future__ import annotations

import torch


def apply_similarity(
    points: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor, scale: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """V' = s (R V) + D (paper Eq. 1-2).

    points: (..., N, 3); rotation: (..., 3, 3); translation: (..., 3); scale: float or a
    tensor broadcastable to (...) -> (..., N, 3).
    """
    if isinstance(scale, torch.Tensor):
        scale = scale.reshape(scale.shape + (1, 1)) if scale.dim() > 0 else scale
    return scale * (points @ rotation.transpose(-1, -2)) + translation[..., None, :]


def invert_similarity(
    points: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor, scale: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """Inverse of apply_similarity: V = R^T (V' - D) / s. Shapes as apply_similarity."""
    if isinstance(scale, torch.Tensor):
        scale = scale.reshape(scale.shape + (1, 1)) if scale.dim() > 0 else scale
    return ((points - translation[..., None, :]) @ rotation) / scale
