"""Hand initialisation from 21 keypoints (instead of FrankMocap; paper Sec. 3.2).

Input per frame: 21 image keypoints u (pixels) and 21 metric, root-relative keypoints W
(MediaPipe "world" landmarks: metres, camera-aligned axes), both in the hand model's joint
order (mediapipe_hands.MEDIAPIPE_TO_MODEL gives the correspondence). Output: a HandInit of
the active hand model (MANO or the open hand; PCA pose space with k = 16 components,
flat_hand_mean=False, betas = 0), batched over frames in torch, in three steps:

1. Articulation and global rotation from W (all frames in one batch): with J(R, theta) the
   model's 21 joints and c(.) the centroid over joints, minimise over R (6D) and theta

       E_3d = mean_j || s* R (J_j(theta) - c(J)) - (W_j - c(W)) ||^2 + w_pca mean(theta^2)

   where s* = <A, B> / <A, A> is the closed-form best scale between the centred model joints A
   and the centred landmarks B, so a detector whose canonical hand is bigger or smaller than
   the model (betas 0) does not bend the fingers to fix the size. R starts from the Kabsch
   rotation of the mean-pose palm joints (PALM_JOINTS) onto W, theta from 0 (the mean pose).
2. Depth from size (weak perspective, REFERENCE.md §1): the centred, rotated model joints
   X (metres) and the centred image keypoints u give the scale in pixels per metre,
   s = sum(a X_x u_x + b X_y u_y) / sum(a^2 X_x^2 + b^2 X_y^2) with a = fx / f, b = fy / f,
   f = (fx + fy) / 2; the joint centroid goes to depth f / s on the ray through the mean
   keypoint (hand_init.weak_perspective_to_translation).
3. Perspective refinement of the place only: the centroid's pixel and log-depth are refined
   by Adam on the full-perspective reprojection error of the 21 joints. Weak perspective
   assumes the hand is flat at one depth; its depth is biased by the hand's own depth extent
   and by its offset from the optical axis, which this step removes.

The v2d target of paper Eq. 4 (FrankMocap's projected vertices in the paper) is offered two
ways: `HandInit.vertices_2d` holds the projected initial vertices (the paper's target), and
`keypoint_v2d_loss` compares the projected joints with the 21 detected image keypoints
(which do not inherit the initial pose's errors). Which is better is for the fitting
benchmark to say; both are available.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hodata.errors import HodataError
from hodata.evidence.hand_init import weak_perspective_to_translation
from hodata.geometry.camera import boxes_from_points, project
from hodata.geometry.rotations import matrix_to_rotation_6d, rotation_6d_to_matrix
from hodata.types import HandInit

PROVIDER = "keypoints"

# Joints that move only with the global rotation (wrist, the four finger MCPs, thumb CMC:
# children of the root in MANO's tree), so their Kabsch rotation is the hand's whatever the
# articulation; starting from it avoids the local minima of a whole-hand start.
PALM_JOINTS: tuple[int, ...] = (0, 1, 4, 7, 10, 13)


@dataclass
class KeypointFitReport:
    """Residuals of one keypoint initialisation, per frame (for tests and reports)."""

    world_error: torch.Tensor      # (T,) RMS joint distance after the best scale, metres
    pixel_error: torch.Tensor      # (T,) mean reprojection error of the 21 joints, pixels
    detector_scale: torch.Tensor   # (T,) s*: detector hand size / model hand size
    weak_depth: torch.Tensor       # (T,) depth of the joint centroid from weak perspective, metres


def kabsch(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Rotations (..., 3, 3), det +1, minimising ||R (source - c) - (target - c)||; points (..., N, 3)."""
    a = source - source.mean(-2, keepdim=True)
    b = target - target.mean(-2, keepdim=True)
    u, _, vh = torch.linalg.svd(a.transpose(-1, -2) @ b)
    # R = V diag(1, 1, det(V U^T)) U^T maps a onto b without a reflection.
    d = torch.linalg.det(vh.transpose(-1, -2) @ u.transpose(-1, -2))
    diag = torch.ones(d.shape + (3,), dtype=a.dtype, device=a.device)
    diag[..., 2] = d
    return vh.transpose(-1, -2) @ torch.diag_embed(diag) @ u.transpose(-1, -2)


def _centred(points: torch.Tensor) -> torch.Tensor:
    return points - points.mean(-2, keepdim=True)


def scaled_alignment_error(model_joints: torch.Tensor, world: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, 21, 3) camera-rotated model joints and landmarks -> per-frame squared error (T,) of
    the centred joints after the best scale s* (T,) (module docstring, step 1)."""
    a, b = _centred(model_joints), _centred(world)
    scale = (a * b).sum((-1, -2)) / (a * a).sum((-1, -2)).clamp_min(1e-12)
    return ((scale[:, None, None] * a - b) ** 2).sum(-1).mean(-1), scale


def weak_perspective_scale(joints: torch.Tensor, keypoints_2d: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pixels per metre s (T,) of the joints (T, 21, 3) against image keypoints (T, 21, 2) (step 2)."""
    fx, fy = K[0, 0], K[1, 1]
    f = (fx + fy) / 2
    x = _centred(joints)[..., :2] * torch.stack([fx / f, fy / f])
    u = _centred(keypoints_2d)
    return (x * u).sum((-1, -2)) / (x * x).sum((-1, -2)).clamp_min(1e-12)


def keypoint_v2d_loss(projected_joints: torch.Tensor, keypoints_2d: torch.Tensor, image_size: tuple[int, int],
                      valid: torch.Tensor | None = None) -> torch.Tensor:
    """The 21-keypoint form of L_v2d (paper Eq. 4): projected model joints vs detected keypoints.

    projected_joints, keypoints_2d: (T, 21, 2) pixels, hand-model joint order; valid: (T,) bool
    frames with keypoints (None: all). Reduction as `fitting.losses.hand_v2d_loss`: pixels
    divided by max(H, W), squared error averaged over valid frames, joints and coordinates.
    """
    if projected_joints.shape != keypoints_2d.shape or projected_joints.shape[-2:] != (21, 2):
        raise ValueError(f"joints and keypoints must both be (T, 21, 2), got {tuple(projected_joints.shape)} "
                         f"and {tuple(keypoints_2d.shape)}")
    sq = (((projected_joints - keypoints_2d) / float(max(image_size))) ** 2).mean((-1, -2))
    if valid is None:
        return sq.mean()
    weight = valid.to(sq.dtype)
    return (sq * weight).sum() / weight.sum().clamp_min(1.0)


def fit_rotation_and_pose(layer: torch.nn.Module, world: torch.Tensor, steps: int = 150, lr: float = 0.05,
                          pca_weight: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 1: (R (T, 3, 3), PCA coefficients (T, k), scaled residual (T,)) from landmarks (T, 21, 3).

    pca_weight is in m^2 per unit coefficient^2: 1e-6 pulls a coefficient of 1 as much as a
    1 mm joint error, enough to settle directions the joints do not see.
    """
    frames = world.shape[0]
    k = layer.num_pca_comps
    dtype, device = world.dtype, world.device
    with torch.no_grad():
        mean_joints = layer(hand_pose=torch.zeros(frames, k, dtype=dtype, device=device)).joints
        rigid = list(PALM_JOINTS)
        start = kabsch(mean_joints[:, rigid], world[:, rigid])
    rot6d = matrix_to_rotation_6d(start).clone().requires_grad_(True)
    coeffs = torch.zeros(frames, k, dtype=dtype, device=device, requires_grad=True)
    optimiser = torch.optim.Adam([rot6d, coeffs], lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        joints = layer(global_orient=rotation_6d_to_matrix(rot6d), hand_pose=coeffs).joints
        err, _ = scaled_alignment_error(joints, world)
        loss = err.sum() + pca_weight * (coeffs**2).mean(-1).sum()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        rotation = rotation_6d_to_matrix(rot6d)
        err, _ = scaled_alignment_error(layer(global_orient=rotation, hand_pose=coeffs).joints, world)
    return rotation, coeffs.detach(), err.sqrt()


def refine_place(joints: torch.Tensor, centre: torch.Tensor, keypoints_2d: torch.Tensor, K: torch.Tensor,
                 steps: int = 100, lr: float = 0.01) -> torch.Tensor:
    """Step 3: the joint centroid (T, 3) refined from `centre` (T, 3) on the perspective
    reprojection of `joints` (T, 21, 3, centred at their centroid) against keypoints (T, 21, 2).

    Parametrised by the centroid's pixel offset (in units of 10 px) and log-depth, so one
    learning rate suits both.
    """
    centre_px = project(centre[:, None, :], K)[:, 0]
    depth0 = centre[:, 2]
    offset = torch.zeros_like(centre_px, requires_grad=True)
    log_depth = torch.zeros_like(depth0, requires_grad=True)
    focal = torch.stack([K[0, 0], K[1, 1]])
    principal = K[:2, 2]

    def place(offset, log_depth):
        depth = depth0 * torch.exp(log_depth)
        xy = (centre_px + 10.0 * offset - principal) * depth[:, None] / focal
        return torch.cat([xy, depth[:, None]], -1)

    optimiser = torch.optim.Adam([offset, log_depth], lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        projected = project(joints + place(offset, log_depth)[:, None, :], K)
        # Summed over frames: each frame's place is independent, so its step does not shrink with T.
        loss = ((projected - keypoints_2d) ** 2).sum(-1).mean(-1).sum()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return place(offset, log_depth)


def keypoint_hand_init(
    layer: torch.nn.Module,
    keypoints_2d: torch.Tensor,
    keypoints_3d: torch.Tensor,
    K: torch.Tensor,
    provider: str = "keypoints:mediapipe",
    pose_steps: int = 150,
    place_steps: int = 100,
) -> tuple[HandInit, KeypointFitReport]:
    """HandInit of `layer` (PCA, flat_hand_mean=False, side = the hand's) from keypoints (module docstring).

    keypoints_2d: (T, 21, 2) pixels; keypoints_3d: (T, 21, 3) metres, relative; both in the hand
    model's joint order and filled in every frame (see tracking.interpolate_gaps); K: (3, 3).
    Tensors may live on any device; the layer must be on the same one.
    """
    if keypoints_2d.dim() != 3 or keypoints_2d.shape[1:] != (21, 2):
        raise HodataError(f"keypoint hand init needs image keypoints (T, 21, 2), got {tuple(keypoints_2d.shape)}")
    if keypoints_3d.shape != keypoints_2d.shape[:1] + (21, 3):
        raise HodataError(f"keypoint hand init needs metric keypoints (T, 21, 3), got {tuple(keypoints_3d.shape)}")
    if not (torch.isfinite(keypoints_2d).all() and torch.isfinite(keypoints_3d).all()):
        raise HodataError("keypoint hand init got missing (NaN) keypoints; fill the gaps first (tracking.interpolate_gaps)")
    if not getattr(layer, "use_pca", False):
        raise HodataError("keypoint hand init needs a PCA hand layer (use_pca=True)")
    dtype = layer.v_template.dtype
    kp2d, kp3d, K = keypoints_2d.to(dtype), keypoints_3d.to(dtype), K.to(dtype=dtype, device=keypoints_2d.device)
    frames = kp2d.shape[0]

    rotation, coeffs, world_error = fit_rotation_and_pose(layer, kp3d, steps=pose_steps)
    with torch.no_grad():
        rest = layer(global_orient=rotation, hand_pose=coeffs)
        _, detector_scale = scaled_alignment_error(rest.joints, kp3d)
        joint_centroid = rest.joints.mean(1)
        scale = weak_perspective_scale(rest.joints, kp2d, K)
        if not bool((scale > 0).all()):
            raise HodataError("keypoint hand init: the image keypoints are mirrored against the fitted hand "
                              "(negative weak-perspective scale); check the hand side and the keypoint order")
        weak = weak_perspective_to_translation(scale, kp2d.mean(1), K)
    centre = refine_place(rest.joints - joint_centroid[:, None], weak, kp2d, K, steps=place_steps)
    with torch.no_grad():
        transl = centre - joint_centroid
        out = layer(global_orient=rotation, hand_pose=coeffs, transl=transl)
        vertices_2d = project(out.vertices, K)
        pixel_error = (project(out.joints, K) - kp2d).norm(dim=-1).mean(-1)
    init = HandInit(
        side=layer.side, global_orient=rotation, hand_pose=coeffs,
        betas=torch.zeros(10, dtype=dtype, device=kp2d.device), transl=transl, vertices_2d=vertices_2d,
        provider=provider, boxes=boxes_from_points(kp2d), keypoints_2d=kp2d.clone(),
    )
    return init, KeypointFitReport(world_error, pixel_error, detector_scale, weak[:, 2])
