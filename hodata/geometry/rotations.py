"""Rotation representations over batched tensors.

Rotations are 3x3 matrices at every interface of hodata; axis-angle is how MANO and
datasets store them and the 6D representation (Zhou et al., CVPR 2019) lives only inside the
optimiser. All functions take any leading batch shape `(...)` and run on any device.
"""

from __future__ import annotations

import math

import torch


def _skew(v: torch.Tensor) -> torch.Tensor:
    """v: (..., 3) -> (..., 3, 3) cross-product matrix [v]_x."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack(
        [zero, -z, y, z, zero, -x, -y, x, zero], dim=-1
    ).reshape(v.shape[:-1] + (3, 3))


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula. axis_angle: (..., 3) -> (..., 3, 3).

    Uses Taylor expansions of sin(t)/t and (1-cos t)/t^2 near zero, so the value and the
    gradient are finite at the identity (MANO's rest pose is all zeros).
    """
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True).unsqueeze(-1)  # (..., 1, 1)
    small = theta2 < 1e-8
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / safe2)
    k = _skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """matrix: (..., 3, 3) rotation -> (..., 3) axis-angle with angle in [0, pi].

    Goes through the unit quaternion, which is stable for every angle including pi.
    """
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """matrix: (..., 3, 3) -> (..., 4) unit quaternion (w, x, y, z) with w >= 0.

    Picks, per element, the best-conditioned of the four algebraic candidates.
    """
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    q_abs2 = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
    )
    q_abs = q_abs2.clamp_min(1e-12).sqrt()
    m21_12 = m[..., 2, 1] - m[..., 1, 2]
    m02_20 = m[..., 0, 2] - m[..., 2, 0]
    m10_01 = m[..., 1, 0] - m[..., 0, 1]
    m10p01 = m[..., 1, 0] + m[..., 0, 1]
    m02p20 = m[..., 0, 2] + m[..., 2, 0]
    m21p12 = m[..., 2, 1] + m[..., 1, 2]
    # Row i is the quaternion scaled by 4 * q_i, from the i-th largest-component formula.
    candidates = torch.stack(
        [
            torch.stack([q_abs2[..., 0], m21_12, m02_20, m10_01], -1),
            torch.stack([m21_12, q_abs2[..., 1], m10p01, m02p20], -1),
            torch.stack([m02_20, m10p01, q_abs2[..., 2], m21p12], -1),
            torch.stack([m10_01, m02p20, m21p12, q_abs2[..., 3]], -1),
        ],
        dim=-2,
    ) / (2.0 * q_abs[..., None])
    best = q_abs.argmax(-1)
    quat = torch.gather(candidates, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    quat = torch.nn.functional.normalize(quat, dim=-1)
    return torch.where(quat[..., :1] < 0, -quat, quat)


def quaternion_to_axis_angle(quat: torch.Tensor) -> torch.Tensor:
    """quat: (..., 4) unit (w, x, y, z) -> (..., 3) axis-angle."""
    quat = torch.where(quat[..., :1] < 0, -quat, quat)
    xyz = quat[..., 1:]
    sin_half = xyz.norm(dim=-1, keepdim=True)
    half = torch.atan2(sin_half, quat[..., :1])
    small = sin_half < 1e-6
    # angle / sin(angle/2) -> 2 + angle^2/12 as angle -> 0
    scale = torch.where(small, 2.0 + (2 * half) ** 2 / 12.0, 2.0 * half / sin_half.clamp_min(1e-12))
    return xyz * scale


def quaternion_to_matrix(quat: torch.Tensor) -> torch.Tensor:
    """quat: (..., 4) (w, x, y, z), normalised here -> (..., 3, 3)."""
    w, x, y, z = torch.nn.functional.normalize(quat, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(quat.shape[:-1] + (3, 3))


def rotation_6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """Zhou et al. 2019 continuous representation. rot6d: (..., 6) -> (..., 3, 3).

    The 6 numbers are the first two *rows* of the matrix (as PyTorch3D does); Gram-Schmidt
    makes them orthonormal and the third row is their cross product.
    """
    a1, a2 = rot6d[..., :3], rot6d[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """matrix: (..., 3, 3) -> (..., 6), the first two rows; inverse of rotation_6d_to_matrix."""
    return matrix[..., :2, :].reshape(matrix.shape[:-2] + (6,))


def random_rotations(
    n: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """n rotations uniform on SO(3) (Haar measure): (n, 3, 3).

    A normalised 4D Gaussian is uniform on S^3, and S^3 double-covers SO(3) uniformly.
    The draw happens on the CPU so a seed gives the same rotations on every device.
    """
    quat = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    return quaternion_to_matrix(quat).to(dtype=dtype, device=device)


def rotation_angle(matrix: torch.Tensor) -> torch.Tensor:
    """Angle in radians of rotations (..., 3, 3) -> (...). Clamped acos of (trace - 1) / 2."""
    trace = matrix[..., 0, 0] + matrix[..., 1, 1] + matrix[..., 2, 2]
    return torch.acos(((trace - 1) / 2).clamp(-1.0, 1.0))


def geodesic_distance(r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """Angle (radians) of r1^T r2 for rotations (..., 3, 3) -> (...)."""
    return rotation_angle(r1.transpose(-1, -2) @ r2)


DEG = math.pi / 180.0
