"""Hand initialisation providers (paper Sec. 3.2): per-frame hand pose, place and 2D targets.

A provider maps a `Clip` to one `HandInit` per hand. The paper uses FrankMocap; where it is not
installed, synthetic clips use `SimulatedHandEstimator`, ground truth corrupted by documented
noise and always labelled `provider="simulated"`.

Noise model of `SimulatedHandEstimator` (all draws from a generator seeded by the estimator's
seed and the clip id, so a clip gets the same noise whatever the iteration order):
- v2d target (paper Eq. 4): ground-truth vertices projected with the clip's K, plus a per-frame
  2D shift of the whole hand ~ N(0, pixel_jitter^2) per axis (pixels; detector/regressor
  misplacement), plus per-vertex noise ~ N(0, vertex_jitter^2) per axis (pixels).
- depth: a weak-perspective estimator gets the hand's pixel scale wrong; the per-clip factor
  f = exp(scale_error * N(0, 1)) (log-normal, sigma = scale_error) multiplies the hand's
  distance to the camera: the initial hand centroid is f * c, c the ground-truth centroid
  (shifted by the 2D jitter at its depth), so x, y are rescaled with z and the hand projects
  to the same place (REFERENCE.md §1 depth-from-scale: t_z = f / s).
- pose: the ground-truth articulation in the PCA space of the fitting layer (k components,
  flat_hand_mean=False: coefficients of the pose minus the mean pose) plus per-frame
  N(0, pose_noise^2) on every coefficient.
- global rotation: per frame R_init = exp([w]x) R_gt with w ~ N(0, (rotation_noise_deg deg)^2 I)
  (mean angle = rotation_noise * 2 sqrt(2 / pi) ~ 1.6 rotation_noise).
- betas = 0 (as the paper's init), so the shape error is part of the simulated error too.
- 2D target from the estimator's own hand: a regressor's 2D target is the projection of the hand
  it predicts (FrankMocap's, paper Eq. 4), so its articulation and rotation errors are in the
  target too. With `target_error` = a in [0, 1] the target is projected from the ground-truth
  hand deformed by a times this frame's pose-coefficient and rotation noise (the deformation
  taken about the hand's centroid, so the target stays where the hand is), and with
  `target_scale_jitter` = s its 2D size is off by a per-frame factor exp(s * N(0, 1)) about its
  2D centroid. Defaults a = 0.5, s = 0.05 (TARGET_ERROR, TARGET_SCALE_JITTER): about 11 px of
  non-rigid error on a 250 px hand, chosen from the target's pixel error before any fit was run
  (bench/RESULTS.md, session 12). a = s = 0 gives the true hand's projection, the default before
  session 13: an estimator whose 2D output is exact while its 3D is not, which no regressor is,
  and which hands the independent baseline the hand's depth whenever the hand has the mean size.
  These draws come after all the others, so a = s = 0 reproduces the earlier init and target.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from hodata.errors import HodataError
from hodata.geometry.camera import boxes_from_points, project
from hodata.geometry.rotations import axis_angle_to_matrix
from hodata.types import Clip, HandInit, HandState

TARGET_ERROR = 0.5           # share of the init's pose / rotation noise its 2D target carries
TARGET_SCALE_JITTER = 0.05   # sigma of the per-frame log size error of the 2D target


@runtime_checkable
class HandInitProvider(Protocol):
    """Anything that gives the independent hand initialisation of every hand of a clip."""

    def __call__(self, clip: Clip) -> list[HandInit]:
        ...


def weak_perspective_to_translation(scale_px_per_m: torch.Tensor, t_px: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera translation of a weak-perspective hand estimate (REFERENCE.md §1, paper Sec. 3.2).

    scale_px_per_m: (...) pixels per metre of the hand at its depth; t_px: (..., 2) the pixel
    where the hand's origin projects; K: (..., 3, 3) or (3, 3) -> (..., 3) metres, OpenCV camera:
    t_z = mean(fx, fy) / s, t_xy = (t_px - c) * t_z / f.
    """
    focal = torch.stack([K[..., 0, 0], K[..., 1, 1]], -1)
    centre = K[..., :2, 2]
    depth = focal.mean(-1) / scale_px_per_m
    xy = (t_px - centre) * depth[..., None] / focal
    return torch.cat([xy, depth[..., None]], -1)


def sample_scale_factors(n: int, scale_error: float, generator: torch.Generator) -> torch.Tensor:
    """n depth factors exp(scale_error * N(0, 1)) (float64, CPU): log-normal with sigma scale_error."""
    return torch.exp(scale_error * torch.randn(n, generator=generator, dtype=torch.float64))


def pose_to_pca(layer: torch.nn.Module, hand_pose: torch.Tensor) -> torch.Tensor:
    """PCA coefficients (T, k) of a PCA layer for full 45-D axis-angle poses in the flat convention.

    hand_pose: (T, 45) actual joint rotations (HO-3D's flat_hand_mean=True convention), which
    is what the layer's `full_pose_to_pca` takes: it subtracts the layer's mean pose itself
    and projects on the first k components (least squares).
    """
    return layer.full_pose_to_pca(hand_pose)


def check_target_noise(target_error: float, target_scale_jitter: float) -> None:
    """Raise HodataError unless target_error lies in [0, 1] and target_scale_jitter >= 0."""
    if not 0.0 <= target_error <= 1.0:
        raise HodataError(f"target_error must lie in [0, 1] (the share of the init's pose noise in its 2D target), "
                          f"got {target_error}")
    if target_scale_jitter < 0:
        raise HodataError(f"target_scale_jitter must be >= 0, got {target_scale_jitter}")


@dataclass
class SimulatedHandNoise:
    """The draws behind one simulated HandInit (for tests and reports)."""

    scale_factor: float                # per-clip depth factor f
    pixel_shift: torch.Tensor          # (T, 2) pixels
    rotation_noise: torch.Tensor       # (T, 3) axis-angle radians
    pose_noise: torch.Tensor           # (T, k)


def simulate_hand_init(
    hand: HandState,
    K: torch.Tensor,
    layer: torch.nn.Module,
    generator: torch.Generator,
    pixel_jitter: float = 4.0,
    vertex_jitter: float = 1.0,
    scale_error: float = 0.15,
    pose_noise: float = 0.5,
    rotation_noise_deg: float = 8.0,
    target_error: float = TARGET_ERROR,
    target_scale_jitter: float = TARGET_SCALE_JITTER,
) -> tuple[HandInit, SimulatedHandNoise]:
    """Ground-truth hand corrupted by the module docstring's noise model -> (HandInit, draws).

    hand: ground truth with global_orient (T, 3, 3), hand_pose (T, 45) axis-angle and
    vertices (T, V, 3) in camera space; K: (3, 3); layer: the fitting layer (PCA space,
    flat_hand_mean=False) of the same hand model. The returned HandInit satisfies
    layer(global_orient, hand_pose, betas, transl).vertices = the initial camera-space hand.
    """
    if hand.global_orient is None or hand.hand_pose is None or hand.vertices.shape[1] == 0:
        raise HodataError(
            f"simulated hand estimator needs ground-truth hand parameters and vertices (clip hand {hand.side}); "
            "use a dataset with hand annotations and an available hand model"
        )
    if hand.pose_space != "axis_angle":
        raise HodataError("simulated hand estimator expects ground-truth hand_pose as 45-D axis-angle")
    dtype, device = hand.vertices.dtype, hand.vertices.device
    frames, num_verts = hand.vertices.shape[:2]
    k = layer.full_pose_to_pca(hand.hand_pose[:1]).shape[-1]

    def normal(*shape: int) -> torch.Tensor:
        # Draws on the CPU in float64 so a seed gives the same noise on every device.
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)

    factor = float(sample_scale_factors(1, scale_error, generator)[0])
    shift = pixel_jitter * normal(frames, 2)
    vertex_noise = vertex_jitter * normal(frames, num_verts, 2)
    rot_noise = math.radians(rotation_noise_deg) * normal(frames, 3)
    coeff_noise = pose_noise * normal(frames, k)

    check_target_noise(target_error, target_scale_jitter)
    K = K.to(dtype=dtype, device=device)
    gt_orient = hand.global_orient.to(dtype)
    gt_coeffs = pose_to_pca(layer, hand.hand_pose.to(dtype))
    orient = axis_angle_to_matrix(rot_noise) @ gt_orient
    coeffs = gt_coeffs + coeff_noise
    betas = torch.zeros(10, dtype=dtype, device=device)
    zeros_t = torch.zeros(frames, 3, dtype=dtype, device=device)
    with torch.no_grad():
        rest = layer(global_orient=orient, hand_pose=coeffs, betas=betas.expand(frames, 10), transl=zeros_t).vertices
    target_3d = hand.vertices
    if target_error > 0:
        with torch.no_grad():
            exact = layer(global_orient=gt_orient, hand_pose=gt_coeffs, betas=betas.expand(frames, 10),
                          transl=zeros_t).vertices
            off = layer(global_orient=axis_angle_to_matrix(target_error * rot_noise) @ gt_orient,
                        hand_pose=gt_coeffs + target_error * coeff_noise, betas=betas.expand(frames, 10),
                        transl=zeros_t).vertices
        target_3d = hand.vertices + (off - off.mean(1, keepdim=True)) - (exact - exact.mean(1, keepdim=True))
    vertices_2d = project(target_3d, K)
    if target_scale_jitter > 0:
        size = torch.exp(target_scale_jitter * normal(frames))[:, None, None]
        middle = vertices_2d.mean(1, keepdim=True)
        vertices_2d = middle + size * (vertices_2d - middle)
    vertices_2d = vertices_2d + shift[:, None, :] + vertex_noise
    centroid = hand.vertices.mean(1)
    focal = torch.stack([K[0, 0], K[1, 1]])
    # The 2D shift at the hand's depth, then the depth error along the viewing ray.
    shifted = torch.cat([centroid[:, :2] + shift * centroid[:, 2:] / focal, centroid[:, 2:]], -1)
    transl = factor * shifted - rest.mean(1)
    init = HandInit(
        side=hand.side, global_orient=orient, hand_pose=coeffs, betas=betas, transl=transl,
        vertices_2d=vertices_2d, provider="simulated", boxes=boxes_from_points(vertices_2d),
    )
    return init, SimulatedHandNoise(factor, shift, rot_noise, coeff_noise)


class SimulatedHandEstimator:
    """HandInitProvider from ground truth plus documented noise (module docstring).

    pixel_jitter: sigma (px) of the per-frame 2D shift; vertex_jitter: sigma (px) of per-vertex
    2D noise; scale_error: sigma of the log depth factor per clip; pose_noise: sigma of the PCA
    coefficient noise per frame; rotation_noise_deg: sigma (degrees) per axis of the global
    rotation noise per frame; num_pca_comps: k of the fitting layer; seed: noise seed;
    mano_dir: MANO files when the ground truth was made with MANO; target_error: share in [0, 1]
    of the init's pose and rotation noise that the 2D target carries; target_scale_jitter: sigma
    of the log 2D size error of the target per frame.
    """

    provider = "simulated"

    def __init__(
        self,
        pixel_jitter: float = 4.0,
        scale_error: float = 0.15,
        pose_noise: float = 0.5,
        rotation_noise_deg: float = 8.0,
        vertex_jitter: float = 1.0,
        num_pca_comps: int = 16,
        seed: int = 0,
        mano_dir=None,
        target_error: float = TARGET_ERROR,
        target_scale_jitter: float = TARGET_SCALE_JITTER,
    ):
        self.pixel_jitter = pixel_jitter
        self.scale_error = scale_error
        self.pose_noise = pose_noise
        self.rotation_noise_deg = rotation_noise_deg
        self.vertex_jitter = vertex_jitter
        self.num_pca_comps = num_pca_comps
        self.seed = seed
        self.mano_dir = mano_dir
        check_target_noise(target_error, target_scale_jitter)
        self.target_error = target_error
        self.target_scale_jitter = target_scale_jitter
        self._layers: dict[tuple, torch.nn.Module] = {}

    def layer(self, side: str, model_name: str, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
        """The fitting layer (PCA, flat_hand_mean=False) of the hand model that made the ground truth."""
        from hodata import handmodel
        from hodata.datasets.ho3d import handmodel_arg

        key = (side, model_name, dtype, str(device))
        if key not in self._layers:
            self._layers[key] = handmodel.load(
                side=side, mano_dir=self.mano_dir, model=handmodel_arg(model_name), num_pca_comps=self.num_pca_comps,
                use_pca=True, flat_hand_mean=False, device=device, dtype=dtype,
            )
        return self._layers[key]

    def generator(self, clip_id: str, side: str) -> torch.Generator:
        """Noise generator of one hand of one clip: seeded by (seed, clip id, side)."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(f"{clip_id}|{side}".encode()))

    def simulate(self, clip: Clip) -> list[tuple[HandInit, SimulatedHandNoise]]:
        """HandInit and noise draws of every ground-truth hand of the clip."""
        if not clip.gt_hands:
            raise HodataError(f"clip {clip.clip_id} has no ground-truth hands; the simulated estimator needs them")
        results = []
        for hand in clip.gt_hands:
            layer = self.layer(hand.side, hand.model_name, hand.vertices.dtype, hand.vertices.device)
            results.append(simulate_hand_init(
                hand, clip.K, layer, self.generator(clip.clip_id, hand.side), self.pixel_jitter, self.vertex_jitter,
                self.scale_error, self.pose_noise, self.rotation_noise_deg, self.target_error, self.target_scale_jitter,
            ))
        return results

    def __call__(self, clip: Clip) -> list[HandInit]:
        return [init for init, _ in self.simulate(clip)]


def simulated_keypoint_detections(clip: Clip, seed: int = 0, miss: float = 0.3, wrong_side: float = 0.1,
                                  pixel_noise: float = 2.0, metric_noise: float = 0.003) -> list[list]:
    """What a keypoint detector (MediaPipe) would give on an annotated clip, for tests and
    benchmarks on rendered hands it cannot see: per frame a list of HandDetection of the
    ground-truth joints projected plus `pixel_noise` (px), with metric landmarks centred plus
    `metric_noise` (m); a frame is missed with probability `miss` and labelled with the wrong
    side with probability `wrong_side`. Always labelled as simulated by the caller."""
    import numpy as np

    from hodata.evidence.mediapipe_hands import HandDetection

    if not clip.gt_hands:
        raise HodataError(f"clip {clip.clip_id} has no ground-truth hands to simulate detections from")
    rng = np.random.default_rng(seed)
    per_hand = []
    for hand in clip.gt_hands:
        joints = hand.joints.double().cpu()
        per_hand.append((hand.side, project(joints, clip.K.double().cpu()).numpy(),
                         (joints - joints.mean(1, keepdim=True)).numpy()))
    out = []
    for t in range(len(clip)):
        frame = []
        for side, kp2d, kp3d in per_hand:
            if rng.random() < miss:
                continue
            uv = kp2d[t] + rng.normal(0, pixel_noise, kp2d[t].shape)
            label = ("left" if side == "right" else "right") if rng.random() < wrong_side else side
            frame.append(HandDetection(label, 0.9, np.r_[uv.min(0), uv.max(0)], uv,
                                       kp3d[t] + rng.normal(0, metric_noise, (21, 3))))
        out.append(frame)
    return out
