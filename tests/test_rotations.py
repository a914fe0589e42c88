import numpy as np
import torch
from scipy.spatial.transform import Rotation

from hodata.geometry import rotations as rot


def _random_axis_angle(n, generator, max_angle=np.pi):
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator, dtype=torch.float64), dim=-1)
    angle = torch.rand(n, 1, generator=generator, dtype=torch.float64) * max_angle
    return axis * angle


def test_axis_angle_to_matrix_matches_scipy(generator):
    aa = _random_axis_angle(200, generator)
    ours = rot.axis_angle_to_matrix(aa).numpy()
    ref = Rotation.from_rotvec(aa.numpy()).as_matrix()
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_matrix_to_axis_angle_round_trip_incl_near_pi(generator):
    aa = _random_axis_angle(200, generator)
    aa[:5] = aa[:5] / aa[:5].norm(dim=-1, keepdim=True) * (np.pi - 1e-7)
    back = rot.matrix_to_axis_angle(rot.axis_angle_to_matrix(aa))
    np.testing.assert_allclose(
        Rotation.from_rotvec(back.numpy()).as_matrix(), Rotation.from_rotvec(aa.numpy()).as_matrix(), atol=1e-6
    )
    np.testing.assert_allclose(back[5:].numpy(), aa[5:].numpy(), atol=1e-8)


def test_quaternion_matches_scipy(generator):
    mats = rot.random_rotations(100, generator=generator, dtype=torch.float64)
    quat = rot.matrix_to_quaternion(mats).numpy()  # w, x, y, z
    ref = Rotation.from_matrix(mats.numpy()).as_quat()  # x, y, z, w
    ref = np.concatenate([ref[:, 3:], ref[:, :3]], axis=1)
    ref *= np.sign(ref[:, :1])
    np.testing.assert_allclose(quat, ref, atol=1e-10)


def test_axis_angle_gradient_finite_at_zero_and_matches_finite_differences():
    aa = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    rot.axis_angle_to_matrix(aa).sum().backward()
    assert torch.isfinite(aa.grad).all()
    x = torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rot.axis_angle_to_matrix, (x,))


def test_6d_round_trip_and_orthonormal(generator):
    mats = rot.random_rotations(50, generator=generator, dtype=torch.float64)
    np.testing.assert_allclose(rot.rotation_6d_to_matrix(rot.matrix_to_rotation_6d(mats)), mats, atol=1e-12)
    noisy = torch.randn(50, 6, generator=generator, dtype=torch.float64)
    out = rot.rotation_6d_to_matrix(noisy)
    eye = torch.eye(3, dtype=torch.float64).expand(50, 3, 3)
    np.testing.assert_allclose(out @ out.transpose(-1, -2), eye, atol=1e-12)
    np.testing.assert_allclose(torch.linalg.det(out), np.ones(50), atol=1e-12)


def test_random_rotations_are_uniform():
    # Haar measure: the rotation angle has density (1 - cos t) / pi, so E[angle] = pi/2 + 2/pi
    # and a fixed unit vector's image is uniform on the sphere (mean 0, E[x^2] = 1/3).
    mats = rot.random_rotations(40000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    angle = rot.rotation_angle(mats)
    assert abs(angle.mean().item() - (np.pi / 2 + 2 / np.pi)) < 0.01
    v = mats[:, :, 0]
    assert v.mean(0).abs().max() < 0.015
    assert (v.pow(2).mean(0) - 1 / 3).abs().max() < 0.01
    det = torch.linalg.det(mats)
    assert torch.allclose(det, torch.ones_like(det))


def test_geodesic_distance(generator):
    a = rot.random_rotations(10, generator=generator, dtype=torch.float64)
    delta = rot.axis_angle_to_matrix(_random_axis_angle(10, generator, max_angle=3.0))
    d = rot.geodesic_distance(a, a @ delta)
    np.testing.assert_allclose(d, rot.rotation_angle(delta), atol=1e-6)
