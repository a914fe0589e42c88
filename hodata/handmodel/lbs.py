"""Linear blend skinning of MANO-format hand models (Romero et al., SIGGRAPH Asia 2017).

Small pure functions over batched tensors; B = batch, V = vertices, J = 16 joints,
S = shape coefficients. Equation numbers refer to the MANO paper (which follows SMPL).
"""

from __future__ import annotations

import torch


def shape_blend(betas: torch.Tensor, v_template: torch.Tensor, shapedirs: torch.Tensor) -> torch.Tensor:
    """T + B_S(beta) (MANO Eq. 3, shape term). betas: (B, S); v_template: (V, 3);
    shapedirs: (V, 3, S') with S' >= S -> (B, V, 3)."""
    return v_template + torch.einsum("bs,vks->bvk", betas, shapedirs[..., : betas.shape[-1]])


def regress_joints(j_regressor: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """J(beta) = J_regressor T_shaped (MANO Eq. 3, joint term). j_regressor: (J, V);
    vertices: (B, V, 3) -> (B, J, 3)."""
    return torch.einsum("jv,bvk->bjk", j_regressor, vertices)


def pose_blend(rotations: torch.Tensor, posedirs_matrix: torch.Tensor) -> torch.Tensor:
    """B_P(theta) = sum_n (vec(R_n(theta)) - vec(I)) P_n over the 15 non-root joints (MANO Eq. 3,
    pose term). rotations: (B, J, 3, 3); posedirs_matrix: (9 (J - 1), V * 3), i.e. posedirs
    (V, 3, 9 (J - 1)) flattened as MANO stores it -> (B, V, 3)."""
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    feature = (rotations[:, 1:] - eye).flatten(1)  # (B, 9 (J - 1)), row-major per joint
    return (feature @ posedirs_matrix).view(rotations.shape[0], -1, 3)


def depth_levels(parents: tuple[int, ...]) -> list[list[int]]:
    """Joints grouped by depth in the kinematic tree (root first); parents[0] == -1."""
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    return [[j for j in range(len(parents)) if depth[j] == d] for d in range(max(depth) + 1)]


def forward_kinematics(
    rotations: torch.Tensor, joints: torch.Tensor, parents: tuple[int, ...], levels: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kinematic chain (MANO Eq. 4, G_k): world rotation and position of every joint.

    rotations: (B, J, 3, 3) local (relative to the parent, rest-pose axes); joints: (B, J, 3)
    rest joint positions. Returns R_world (B, J, 3, 3) and posed joint positions (B, J, 3).
    Batched per tree depth (4 steps for MANO), not per joint.
    """
    num = joints.shape[1]
    r_world: list[torch.Tensor | None] = [None] * num
    t_world: list[torch.Tensor | None] = [None] * num
    for j in levels[0]:
        r_world[j] = rotations[:, j]
        t_world[j] = joints[:, j]
    for level in levels[1:]:
        par = [parents[j] for j in level]
        r_par = torch.stack([r_world[p] for p in par], 1)  # (B, L, 3, 3)
        t_par = torch.stack([t_world[p] for p in par], 1)
        offset = joints[:, level] - joints[:, par]  # bone vectors in the rest pose
        r = r_par @ rotations[:, level]
        t = t_par + (r_par @ offset.unsqueeze(-1)).squeeze(-1)
        for n, j in enumerate(level):
            r_world[j] = r[:, n]
            t_world[j] = t[:, n]
    return torch.stack(r_world, 1), torch.stack(t_world, 1)


def skin(
    vertices: torch.Tensor, weights: torch.Tensor, r_world: torch.Tensor, t_world: torch.Tensor, rest_joints: torch.Tensor
) -> torch.Tensor:
    """Linear blend skinning (MANO Eq. 2): v' = sum_k w_k (R_k (v - J_k) + G_k(J_k)).

    vertices: (B, V, 3) shaped and pose-corrected rest vertices; weights: (V, J);
    r_world, t_world: (B, J, 3, 3), (B, J, 3) from forward_kinematics; rest_joints: (B, J, 3).
    Returns (B, V, 3).
    """
    shift = t_world - (r_world @ rest_joints.unsqueeze(-1)).squeeze(-1)  # (B, J, 3)
    r_blend = torch.einsum("vj,bjmn->bvmn", weights, r_world)
    t_blend = torch.einsum("vj,bjm->bvm", weights, shift)
    return (r_blend @ vertices.unsqueeze(-1)).squeeze(-1) + t_blend
