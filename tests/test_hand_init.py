"""Hand initialisation: weak-perspective conversion and the simulated hand estimator's noise."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hodata import handmodel
from hodata.errors import HodataError
from hodata.evidence.hand_init import (
    TARGET_ERROR,
    TARGET_SCALE_JITTER,
    HandInitProvider,
    SimulatedHandEstimator,
    pose_to_pca,
    sample_scale_factors,
    simulate_hand_init,
    weak_perspective_to_translation,
)
from hodata.geometry.camera import project
from hodata.geometry.rotations import axis_angle_to_matrix, geodesic_distance, matrix_to_axis_angle
from hodata.types import Clip, HandState

K = torch.tensor([[617.343, 0.0, 315.0], [0.0, 610.0, 242.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_weak_perspective_closed_form():
    K2 = torch.tensor([[600.0, 0.0, 320.0], [0.0, 620.0, 240.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    t = weak_perspective_to_translation(torch.tensor([1220.0]), torch.tensor([[350.0, 200.0]]), K2)
    depth = 610.0 / 1220.0
    assert torch.allclose(t, torch.tensor([[30.0 * depth / 600.0, -40.0 * depth / 620.0, depth]], dtype=torch.float64))


def test_weak_perspective_reprojects_to_the_given_pixel():
    gen = torch.Generator().manual_seed(1)
    scale = 500 + 2000 * torch.rand(50, generator=gen, dtype=torch.float64)
    t_px = torch.rand(50, 2, generator=gen, dtype=torch.float64) * torch.tensor([640.0, 480.0], dtype=torch.float64)
    t = weak_perspective_to_translation(scale, t_px, K)
    # Independent route: the camera's own projection puts the translation on t_px ...
    assert torch.allclose(project(t[:, None, :], K)[:, 0], t_px, atol=1e-9)
    # ... and a 1 m-wide object at that depth spans s pixels with the mean focal length.
    assert torch.allclose((K[0, 0] + K[1, 1]) / 2 / t[:, 2], scale)


@pytest.fixture(scope="module")
def layers():
    full = handmodel.load("right", use_pca=False, flat_hand_mean=True, dtype=torch.float64)
    pca = handmodel.load("right", use_pca=True, flat_hand_mean=False, num_pca_comps=16, dtype=torch.float64)
    return full, pca


def _clip(layers, frames: int = 10, seed: int = 0, sequence: str = "S") -> Clip:
    """A clip whose ground-truth hand comes straight from the hand model."""
    full, pca = layers
    gen = torch.Generator().manual_seed(seed)
    coeffs = 0.8 * torch.randn(frames, 16, generator=gen, dtype=torch.float64)
    pose = pca.pca_to_full_pose(coeffs)
    orient = axis_angle_to_matrix(torch.randn(frames, 3, generator=gen, dtype=torch.float64))
    centre = torch.tensor([0.05, -0.02, 0.55], dtype=torch.float64)
    rest = full(global_orient=orient, hand_pose=pose).vertices
    transl = centre - rest.mean(1)
    out = full(global_orient=orient, hand_pose=pose, transl=transl)
    hand = HandState("right", out.vertices, out.joints, orient, pose, "axis_angle",
                     torch.zeros(10, dtype=torch.float64), transl, model_name=out.model_name)
    return Clip("synthetic", sequence, [f"{i:04d}" for i in range(frames)], [Path("x.png")] * frames, K, (480, 640),
                "m", ["right"], gt_hands=[hand])


def _init_vertices(layers, init):
    _, pca = layers
    out = pca(global_orient=init.global_orient, hand_pose=init.hand_pose, betas=init.betas, transl=init.transl)
    return out.vertices


def test_provider_protocol_and_label(layers):
    estimator = SimulatedHandEstimator()
    assert isinstance(estimator, HandInitProvider)
    (init,) = estimator(_clip(layers))
    assert init.provider == "simulated" and init.side == "right"
    assert init.global_orient.shape == (10, 3, 3) and init.hand_pose.shape == (10, 16)
    assert init.betas.shape == (10,) and not init.betas.any()
    assert init.vertices_2d.shape == (10, layers[0].num_vertices, 2) and init.boxes.shape == (10, 4)


def test_without_noise_the_init_is_the_ground_truth_in_pca_space(layers):
    clip = _clip(layers)
    quiet = SimulatedHandEstimator(pixel_jitter=0, scale_error=0, pose_noise=0, rotation_noise_deg=0, vertex_jitter=0,
                                   target_scale_jitter=0)
    (init,) = quiet(clip)
    gt = clip.gt_hands[0]
    assert torch.allclose(init.vertices_2d, project(gt.vertices, K), atol=1e-9)
    assert torch.allclose(init.global_orient, gt.global_orient, atol=1e-12)
    verts = _init_vertices(layers, init)
    # transl puts the layer's output exactly on the ground-truth centroid; the pose is exact
    # because the ground truth lies in the 16-D PCA space.
    assert torch.allclose(verts.mean(1), gt.vertices.mean(1), atol=1e-9)
    assert (verts - gt.vertices).norm(dim=-1).max() < 1e-6


def test_depth_error_keeps_the_projection(layers):
    clip = _clip(layers, seed=3)
    est = SimulatedHandEstimator(pixel_jitter=0, scale_error=0.3, pose_noise=0, rotation_noise_deg=0, vertex_jitter=0)
    ((init, noise),) = est.simulate(clip)
    gt = clip.gt_hands[0]
    verts = _init_vertices(layers, init)
    ratio = verts.mean(1)[:, 2] / gt.vertices.mean(1)[:, 2]
    assert torch.allclose(ratio, torch.full_like(ratio, noise.scale_factor), atol=1e-9)
    assert abs(math.log(noise.scale_factor)) > 1e-3
    # The centroid projects where it did: only the depth along the ray changed.
    assert torch.allclose(project(verts.mean(1)[:, None], K), project(gt.vertices.mean(1)[:, None], K), atol=1e-6)


def test_noise_statistics_match_the_documentation(layers):
    frames = 400
    clip = _clip(layers, frames=frames, seed=5)
    gt = clip.gt_hands[0]
    # the 2D target from the true hand (target noise off: tested on its own below)
    est = SimulatedHandEstimator(pixel_jitter=5.0, vertex_jitter=1.5, scale_error=0.15, pose_noise=0.4,
                                 rotation_noise_deg=6.0, seed=11, target_error=0, target_scale_jitter=0)
    ((init, noise),) = est.simulate(clip)
    residual = init.vertices_2d - project(gt.vertices, K)
    shift = residual.mean(1)  # per-frame 2D shift (+ mean of the per-vertex noise, ~1.5 / sqrt(V))
    assert shift.std().item() == pytest.approx(5.0, rel=0.1)
    assert torch.allclose(shift, noise.pixel_shift, atol=0.2)
    assert (residual - noise.pixel_shift[:, None]).std().item() == pytest.approx(1.5, rel=0.03)
    # Pose: the PCA coefficients of the ground truth plus N(0, 0.4^2).
    _, pca = layers
    coeff_error = init.hand_pose - pose_to_pca(pca, gt.hand_pose)
    assert coeff_error.std().item() == pytest.approx(0.4, rel=0.05)
    assert abs(coeff_error.mean().item()) < 0.02
    # Rotation: angle of N(0, sigma^2 I) axis-angle has mean sigma * 2 sqrt(2 / pi).
    angles = geodesic_distance(init.global_orient, gt.global_orient)
    assert angles.mean().item() == pytest.approx(math.radians(6.0) * 2 * math.sqrt(2 / math.pi), rel=0.08)
    assert torch.allclose(matrix_to_axis_angle(init.global_orient @ gt.global_orient.transpose(-1, -2)),
                          noise.rotation_noise, atol=1e-9)
    # Depth factors: log-normal with sigma = scale_error.
    factors = sample_scale_factors(20000, 0.15, torch.Generator().manual_seed(0))
    assert factors.log().std().item() == pytest.approx(0.15, rel=0.03)
    assert abs(factors.log().mean().item()) < 0.005


def test_target_from_the_estimators_own_hand(layers):
    # Independent route: with target_error=1 and no rigid noise the 2D target is the projection
    # of the init's own hand (the ground truth lies in the PCA space and has betas 0).
    clip = _clip(layers, seed=7)
    est = SimulatedHandEstimator(pixel_jitter=0, scale_error=0, vertex_jitter=0, pose_noise=0.5,
                                 rotation_noise_deg=8.0, target_error=1.0, target_scale_jitter=0)
    (init,) = est(clip)
    own = project(_init_vertices(layers, init), K)
    assert torch.allclose(init.vertices_2d, own, atol=1e-6)
    assert (own - project(clip.gt_hands[0].vertices, K)).norm(dim=-1).mean() > 2.0   # the noise is really there


def test_target_error_scales_the_non_rigid_target_error(layers):
    clip = _clip(layers, seed=8)
    true2d = project(clip.gt_hands[0].vertices, K)

    def non_rigid(**kw):
        (init,) = SimulatedHandEstimator(pixel_jitter=0, vertex_jitter=0, seed=3, target_scale_jitter=0, **kw)(clip)
        d = init.vertices_2d - true2d
        return (d - d.mean(1, keepdim=True)).norm(dim=-1).mean().item()

    assert non_rigid(target_error=0.0) < 1e-6
    half, full = non_rigid(target_error=0.5), non_rigid(target_error=1.0)
    assert 0.35 < half / full < 0.65   # about linear in the share for small rotations


def test_target_scale_jitter_is_a_per_frame_size_about_the_2d_centroid(layers):
    clip = _clip(layers, frames=200, seed=9)
    true2d = project(clip.gt_hands[0].vertices, K)
    (init,) = SimulatedHandEstimator(pixel_jitter=0, vertex_jitter=0, target_error=0, target_scale_jitter=0.05,
                                     seed=4)(clip)
    middle = true2d.mean(1, keepdim=True)
    assert torch.allclose(init.vertices_2d.mean(1, keepdim=True), middle, atol=1e-9)
    # Least-squares scale of each frame about the centroid: exp(0.05 N(0, 1)).
    a, b = true2d - middle, init.vertices_2d - middle
    size = (a * b).sum((1, 2)) / (a * a).sum((1, 2))
    assert torch.allclose(b, size[:, None, None] * a, atol=1e-9)
    assert size.log().std().item() == pytest.approx(0.05, rel=0.15)


def test_target_noise_leaves_the_init_unchanged(layers):
    clip = _clip(layers, seed=10)
    (before,) = SimulatedHandEstimator(seed=5, target_error=0, target_scale_jitter=0)(clip)
    (after,) = SimulatedHandEstimator(seed=5, target_error=0.5, target_scale_jitter=0.05)(clip)
    # The init itself is unchanged; only the 2D target moves.
    assert torch.equal(before.hand_pose, after.hand_pose) and torch.equal(before.transl, after.transl)
    assert not torch.allclose(before.vertices_2d, after.vertices_2d)


def test_by_default_the_target_carries_the_estimators_own_error(layers):
    # The default estimator is a regressor whose 2D output is its own hand's projection, half
    # its articulation error and a 5 % per-frame size error: not the true hand's projection.
    clip = _clip(layers, frames=40, seed=12)
    default = SimulatedHandEstimator(seed=6)
    assert (default.target_error, default.target_scale_jitter) == (TARGET_ERROR, TARGET_SCALE_JITTER) == (0.5, 0.05)
    (init,) = default(clip)
    (explicit,) = SimulatedHandEstimator(seed=6, target_error=0.5, target_scale_jitter=0.05)(clip)
    (exact,) = SimulatedHandEstimator(seed=6, target_error=0, target_scale_jitter=0)(clip)
    assert torch.equal(init.vertices_2d, explicit.vertices_2d)
    true2d = project(clip.gt_hands[0].vertices, K)

    def non_rigid(i):
        d = i.vertices_2d - true2d
        return (d - d.mean(1, keepdim=True)).norm(dim=-1).mean().item()

    assert non_rigid(init) > 3 * non_rigid(exact)


@pytest.mark.parametrize("kw", [{"target_error": 1.5}, {"target_error": -0.1}, {"target_scale_jitter": -1.0}])
def test_target_noise_bad_values(layers, kw):
    with pytest.raises(HodataError, match="target_"):
        SimulatedHandEstimator(**kw)
    with pytest.raises(HodataError, match="target_"):
        simulate_hand_init(_clip(layers).gt_hands[0], K, layers[1], torch.Generator().manual_seed(0), **kw)


def test_deterministic_by_seed_and_clip(layers):
    clip = _clip(layers)
    a = SimulatedHandEstimator(seed=2)(clip)[0]
    b = SimulatedHandEstimator(seed=2)(clip)[0]
    c = SimulatedHandEstimator(seed=3)(clip)[0]
    d = SimulatedHandEstimator(seed=2)(_clip(layers, sequence="T"))[0]
    assert torch.equal(a.transl, b.transl) and torch.equal(a.vertices_2d, b.vertices_2d)
    assert torch.equal(a.hand_pose, b.hand_pose)
    assert not torch.allclose(a.transl, c.transl)
    assert not torch.allclose(a.hand_pose, d.hand_pose)


def test_clip_without_hands_is_an_error(layers):
    clip = _clip(layers)
    clip.gt_hands = []
    with pytest.raises(HodataError, match="no ground-truth hands"):
        SimulatedHandEstimator()(clip)
    clip = _clip(layers)
    clip.gt_hands[0].vertices = clip.gt_hands[0].vertices[:, :0]
    with pytest.raises(HodataError, match="needs ground-truth hand parameters"):
        SimulatedHandEstimator()(clip)


def test_follows_dtype(layers):
    clip = _clip(layers)
    hand = clip.gt_hands[0]
    for name in ("vertices", "joints", "global_orient", "hand_pose", "transl"):
        setattr(hand, name, getattr(hand, name).float())
    (init,) = SimulatedHandEstimator()(clip)
    assert init.transl.dtype == torch.float32 and init.vertices_2d.dtype == torch.float32
    assert np.isfinite(init.vertices_2d.numpy()).all()
