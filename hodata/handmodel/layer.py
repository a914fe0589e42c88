"""HandLayer: one torch module for MANO and the open hand (same data layout)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hodata.geometry.rotations import axis_angle_to_matrix
from hodata.handmodel import lbs
from hodata.handmodel.constants import MANO_TIP_VERTEX_IDS, NUM_MANO_JOINTS, POSE_DIM
from hodata.handmodel.meshing import close_wrist, wrist_ring


@dataclass
class HandOutput:
    """vertices (B, V, 3) and joints (B, 21, 3) in metres (joint order: constants.JOINT_NAMES);
    model_name says which hand model made them ("mano" or "open-hand-v1")."""

    vertices: torch.Tensor
    joints: torch.Tensor
    model_name: str


class HandLayer(torch.nn.Module):
    """Batched MANO-format hand: forward(global_orient, hand_pose, betas, transl) -> HandOutput.

    Pose conventions (as smplx / manopth):
    - global_orient: (B, 3) axis-angle or (B, 3, 3) rotation of the wrist about the root joint.
    - hand_pose: (B, k) PCA coefficients when use_pca, else (B, 45) axis-angle of joints 1-15
      in MANO order. In both modes `hand_mean` is added (hands_mean, or zeros when
      flat_hand_mean=True), so the articulation is `coeffs @ components[:k] + hand_mean`
      or `hand_pose + hand_mean`.
    - betas: (B, S) or (S,), S <= 10; transl: (B, 3) added to vertices and joints.
    Any input left None is the neutral value (identity, zeros).
    """

    def __init__(
        self,
        model: dict,
        side: str,
        model_name: str,
        num_pca_comps: int = 16,
        use_pca: bool = True,
        flat_hand_mean: bool = False,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= num_pca_comps <= model["hands_components"].shape[0]:
            raise ValueError(f"num_pca_comps must be in 1..{model['hands_components'].shape[0]}, got {num_pca_comps}")
        self.side = side
        self.model_name = model_name
        self.num_pca_comps = int(num_pca_comps)
        self.use_pca = bool(use_pca)
        self.flat_hand_mean = bool(flat_hand_mean)
        parents = [int(p) for p in np.asarray(model["kintree_table"])[0].astype(np.int64)]
        parents[0] = -1
        self.parents = tuple(parents)
        self._levels = lbs.depth_levels(self.parents)

        def buf(name, array, kind=dtype):
            self.register_buffer(name, torch.as_tensor(np.asarray(array, dtype=np.float64), dtype=kind, device=device))

        v_template = np.asarray(model["v_template"], dtype=np.float64)
        n = v_template.shape[0]
        buf("v_template", v_template)
        buf("shapedirs", model["shapedirs"])
        posedirs = np.asarray(model["posedirs"], dtype=np.float64)
        buf("posedirs_matrix", posedirs.reshape(n * 3, -1).T)  # (135, V * 3)
        buf("J_regressor", model["J_regressor"])
        buf("lbs_weights", model["weights"])
        components = np.asarray(model["hands_components"], dtype=np.float64)
        buf("hand_components", components)
        selected = components[: self.num_pca_comps]
        buf("pca_pinv", np.linalg.pinv(selected))  # (45, k): least-squares projection
        mean = np.zeros(POSE_DIM) if flat_hand_mean else np.asarray(model["hands_mean"], dtype=np.float64)
        buf("hand_mean", mean)
        faces = np.asarray(model["f"], dtype=np.int64)
        self.register_buffer("faces", torch.as_tensor(faces, device=device))
        self.register_buffer("closed_faces", torch.as_tensor(close_wrist(v_template, faces), device=device))
        self.register_buffer("wrist_ring", torch.as_tensor(wrist_ring(faces), device=device))
        tips = model.get("tip_vertex_ids")
        tips = np.asarray(tips if tips is not None else MANO_TIP_VERTEX_IDS[side], dtype=np.int64)
        if tips.max() >= n:
            raise ValueError(f"tip vertex ids {tips.tolist()} out of range for {n} vertices")
        self.register_buffer("tip_vertex_ids", torch.as_tensor(tips, device=device))

    @property
    def num_betas(self) -> int:
        return self.shapedirs.shape[-1]

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    def pca_to_full_pose(self, coeffs: torch.Tensor) -> torch.Tensor:
        """(B, k) PCA coefficients -> (B, 45) articulation axis-angle, hand_mean included:
        what the kinematic chain receives, i.e. the pose a flat_hand_mean=True full-pose
        layer takes to give the same mesh."""
        k = coeffs.shape[-1]
        return coeffs @ self.hand_components[:k].to(coeffs) + self.hand_mean.to(coeffs)

    def full_pose_to_pca(self, pose: torch.Tensor) -> torch.Tensor:
        """(B, 45) articulation axis-angle (hand_mean included, as pca_to_full_pose returns)
        -> (B, k) least-squares PCA coefficients; exact inverse on the PCA subspace."""
        return (pose - self.hand_mean.to(pose)) @ self.pca_pinv.to(pose)

    def _batch_size(self, *tensors) -> int:
        sizes = {t.shape[0] for t in tensors if t is not None and t.dim() >= 2}
        if len(sizes) > 1:
            raise ValueError(f"inputs disagree on the batch size: {sorted(sizes)}")
        return sizes.pop() if sizes else 1

    def forward(
        self,
        global_orient: torch.Tensor | None = None,
        hand_pose: torch.Tensor | None = None,
        betas: torch.Tensor | None = None,
        transl: torch.Tensor | None = None,
    ) -> HandOutput:
        ref = self.v_template
        batch = self._batch_size(global_orient, hand_pose, betas, transl)
        dtype, device = ref.dtype, ref.device
        if global_orient is None:
            root = torch.eye(3, dtype=dtype, device=device).expand(batch, 3, 3)
        elif global_orient.shape[-2:] == (3, 3):
            root = global_orient.to(dtype)
        else:
            root = axis_angle_to_matrix(global_orient.to(dtype))
        if hand_pose is None:
            articulation = self.hand_mean.expand(batch, POSE_DIM)
        elif self.use_pca:
            if hand_pose.shape[-1] > self.num_pca_comps:
                raise ValueError(f"hand_pose has {hand_pose.shape[-1]} PCA coefficients, layer uses {self.num_pca_comps}")
            articulation = self.pca_to_full_pose(hand_pose.to(dtype))
        else:
            if hand_pose.shape[-1] != POSE_DIM:
                raise ValueError(f"hand_pose must be (B, 45) axis-angle when use_pca=False, got {tuple(hand_pose.shape)}")
            articulation = hand_pose.to(dtype) + self.hand_mean
        if betas is None:
            betas = torch.zeros(batch, self.num_betas, dtype=dtype, device=device)
        betas = betas.to(dtype).expand(batch, -1) if betas.dim() == 1 else betas.to(dtype)

        rotations = torch.cat(
            [root.reshape(batch, 1, 3, 3), axis_angle_to_matrix(articulation.reshape(batch, NUM_MANO_JOINTS - 1, 3))], 1
        )
        v_shaped = lbs.shape_blend(betas, self.v_template, self.shapedirs)
        rest_joints = lbs.regress_joints(self.J_regressor, v_shaped)
        v_posed = v_shaped + lbs.pose_blend(rotations, self.posedirs_matrix)
        r_world, joints = lbs.forward_kinematics(rotations, rest_joints, self.parents, self._levels)
        vertices = lbs.skin(v_posed, self.lbs_weights, r_world, joints, rest_joints)
        joints = torch.cat([joints, vertices[:, self.tip_vertex_ids]], 1)
        if transl is not None:
            shift = transl.to(dtype).reshape(-1, 1, 3)
            vertices = vertices + shift
            joints = joints + shift
        return HandOutput(vertices=vertices, joints=joints, model_name=self.model_name)

    def extra_repr(self) -> str:
        pose = f"pca k={self.num_pca_comps}" if self.use_pca else "axis-angle 45"
        return f"model={self.model_name}, side={self.side}, V={self.num_vertices}, pose={pose}, flat_hand_mean={self.flat_hand_mean}"
