"""Optimised parameters of hands and objects over a clip, and the meshes they give.

Hands follow paper Eq. 1: V_hand = s_hand (R_hand V_hand^c) + D_hand, where V^c is the
hand model's output in its rest orientation centred on the middle metacarpophalangeal joint
(MANO joint 4). Objects follow Eq. 2: V_obj = s_obj (R_obj V_obj^c) + D_obj. Rotations are
optimised in the 6D representation (Zhou et al. 2019) and leave this module as matrices.

Several object-pose candidates can be fitted side by side (joint.py): the frame axis then
holds `candidates` blocks of T frames (candidate-major, K * T rows) and each candidate has its
own scale; `candidate(k)` takes one block out as ordinary single-candidate parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hodata.geometry.rotations import matrix_to_rotation_6d, rotation_6d_to_matrix
from hodata.geometry.transforms import apply_similarity

# MANO joint order: 0 wrist, 1-3 index, 4-6 middle, 7-9 little, 10-12 ring, 13-15 thumb.
MIDDLE_MCP_JOINT = 4


@dataclass
class HandMeshes:
    vertices: torch.Tensor  # (T, V, 3) camera space
    joints: torch.Tensor    # (T, 21, 3) camera space


class _RigidParameters(nn.Module):
    """Rotation from `rotation_6d` (K * T, 6) and a positive scale per candidate from
    `log_scale` (K,)."""

    @property
    def rotation(self) -> torch.Tensor:
        return rotation_6d_to_matrix(self.rotation_6d)

    @property
    def scale(self) -> torch.Tensor:
        """(K,) one scale per candidate (K = 1: the clip's scale)."""
        return self.log_scale.exp()

    @property
    def candidates(self) -> int:
        return self.log_scale.shape[0]

    @property
    def frame_scale(self) -> torch.Tensor:
        """(K * T,) the scale of each row of the frame axis."""
        return self.scale.repeat_interleave(self.rotation_6d.shape[0] // self.candidates)

    def _rows(self, k: int) -> slice:
        frames = self.rotation_6d.shape[0] // self.candidates
        if not 0 <= k < self.candidates:
            raise IndexError(f"candidate {k} out of {self.candidates}")
        return slice(k * frames, (k + 1) * frames)


class HandParameters(_RigidParameters):
    """Per-frame rigid pose and PCA articulation of one hand, with a clip-shared scale.

    rotation_6d: (K * T, 6); translation: (K * T, 3) = D_hand (the middle MCP joint position);
    pca_pose: (K * T, k); betas: (10,) shared by every candidate, or (K, 10) one per block
    (clips fitted side by side, hodata.fitting.batched); log_scale: (K,) so s_hand =
    exp(log_scale) stays positive. K = `candidates` (1 unless object candidates or several
    clips are fitted side by side).
    """

    def __init__(self, side: str, rotation: torch.Tensor, translation: torch.Tensor, pca_pose: torch.Tensor,
                 betas: torch.Tensor, scale: float = 1.0, optimise_betas: bool = False, candidates: int = 1):
        super().__init__()
        if rotation.shape[0] % candidates:
            raise ValueError(f"{rotation.shape[0]} frame rows do not split into {candidates} candidates")
        if betas.dim() == 2 and betas.shape[0] != candidates:
            raise ValueError(f"betas {tuple(betas.shape)}: one row per candidate ({candidates}) or one (10,) for all")
        self.side = side
        self.rotation_6d = nn.Parameter(matrix_to_rotation_6d(rotation).clone())
        self.translation = nn.Parameter(translation.clone())
        self.pca_pose = nn.Parameter(pca_pose.clone())
        self.betas = nn.Parameter(betas.clone(), requires_grad=optimise_betas)
        self.log_scale = nn.Parameter(torch.full((candidates,), float(scale), dtype=translation.dtype,
                                                 device=translation.device).log())

    def candidate(self, k: int) -> "HandParameters":
        """Candidate k's rows as new single-candidate parameters (copies, detached)."""
        rows = self._rows(k)
        with torch.no_grad():
            betas = self.betas[k] if self.betas.dim() == 2 else self.betas
            out = HandParameters(self.side, self.rotation[rows], self.translation[rows], self.pca_pose[rows],
                                 betas, optimise_betas=self.betas.requires_grad)
            out.log_scale.copy_(self.log_scale[k : k + 1])
        return out

    def meshes(self, layer: nn.Module) -> HandMeshes:
        """Camera-space vertices and joints (paper Eq. 1) from the hand layer."""
        frames = self.pca_pose.shape[0]
        eye = torch.eye(3, dtype=self.pca_pose.dtype, device=self.pca_pose.device).expand(frames, 3, 3)
        betas = (self.betas.repeat_interleave(frames // self.candidates, 0) if self.betas.dim() == 2
                 else self.betas.expand(frames, -1))
        out = layer(global_orient=eye, hand_pose=self.pca_pose, betas=betas)
        centre = out.joints[:, MIDDLE_MCP_JOINT : MIDDLE_MCP_JOINT + 1]
        rotation, scale = self.rotation, self.frame_scale
        vertices = apply_similarity(out.vertices - centre, rotation, self.translation, scale)
        joints = apply_similarity(out.joints - centre, rotation, self.translation, scale)
        return HandMeshes(vertices, joints)

    def param_groups(self, rotation_lr: float, pose_lr: float, translation_lr: float) -> list[dict]:
        """Adam groups with the paper's learning rates (Appendix C)."""
        groups = [
            {"params": [self.rotation_6d], "lr": rotation_lr},
            {"params": [self.pca_pose], "lr": pose_lr},
            {"params": [self.translation, self.log_scale], "lr": translation_lr},
        ]
        if self.betas.requires_grad:
            groups.append({"params": [self.betas], "lr": pose_lr})
        return groups


def hand_parameters_from_layer_pose(layer: nn.Module, side: str, global_orient: torch.Tensor, pca_pose: torch.Tensor,
                                    betas: torch.Tensor, transl: torch.Tensor, **kwargs) -> HandParameters:
    """Convert hand-layer inputs (rotation about the wrist, layer translation) to Eq. 1 parameters.

    global_orient: (T, 3, 3); pca_pose: (T, k); betas: (10,), or (K, 10) for K blocks of rows
    (see HandParameters); transl: (T, 3). The layer rotates about the root joint, Eq. 1 about
    the middle MCP joint: D is where that joint lands, and R is unchanged.
    """
    frames = pca_pose.shape[0]
    rows = betas.repeat_interleave(frames // betas.shape[0], 0) if betas.dim() == 2 else betas.expand(frames, -1)
    with torch.no_grad():
        out = layer(global_orient=global_orient, hand_pose=pca_pose, betas=rows, transl=transl)
        translation = out.joints[:, MIDDLE_MCP_JOINT]
    return HandParameters(side, global_orient, translation, pca_pose, betas, **kwargs)


class ObjectParameters(_RigidParameters):
    """Per-frame rigid pose of one object and a clip-shared scale (paper Eq. 2).

    rotation_6d: (K * T, 6); translation: (K * T, 3); log_scale: (K,) optimised only for
    approximate (category) meshes. K = `candidates` as for HandParameters.
    """

    def __init__(self, rotation: torch.Tensor, translation: torch.Tensor, scale: float = 1.0,
                 optimise_scale: bool = False, candidates: int = 1):
        super().__init__()
        if rotation.shape[0] % candidates:
            raise ValueError(f"{rotation.shape[0]} frame rows do not split into {candidates} candidates")
        self.rotation_6d = nn.Parameter(matrix_to_rotation_6d(rotation).clone())
        self.translation = nn.Parameter(translation.clone())
        self.log_scale = nn.Parameter(torch.full((candidates,), float(scale), dtype=translation.dtype,
                                                 device=translation.device).log(), requires_grad=optimise_scale)

    def candidate(self, k: int) -> "ObjectParameters":
        """Candidate k's rows as new single-candidate parameters (copies, detached)."""
        rows = self._rows(k)
        with torch.no_grad():
            out = ObjectParameters(self.rotation[rows], self.translation[rows],
                                   optimise_scale=self.log_scale.requires_grad)
            out.log_scale.copy_(self.log_scale[k : k + 1])
        return out

    def vertices(self, canonical: torch.Tensor) -> torch.Tensor:
        """canonical: (V, 3) model vertices -> (K * T, V, 3) camera space (Eq. 2)."""
        return apply_similarity(canonical, self.rotation, self.translation, self.frame_scale)

    def param_groups(self, rotation_lr: float, translation_lr: float) -> list[dict]:
        groups = [{"params": [self.rotation_6d], "lr": rotation_lr}, {"params": [self.translation], "lr": translation_lr}]
        if self.log_scale.requires_grad:
            groups.append({"params": [self.log_scale], "lr": translation_lr})
        return groups
