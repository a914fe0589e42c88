import numpy as np
import torch

from hodata.geometry import camera
from hodata.geometry.rotations import random_rotations
from hodata.geometry.transforms import apply_similarity, invert_similarity

K = torch.tensor([[617.3, 0.0, 315.2], [0.0, 617.1, 242.6], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_project_matches_closed_form_and_opencv(generator):
    import cv2

    pts = torch.randn(50, 3, generator=generator, dtype=torch.float64) * 0.1 + torch.tensor([0, 0, 0.6], dtype=torch.float64)
    pix = camera.project(pts, K)
    u = K[0, 0] * pts[:, 0] / pts[:, 2] + K[0, 2]
    v = K[1, 1] * pts[:, 1] / pts[:, 2] + K[1, 2]
    np.testing.assert_allclose(pix.numpy(), torch.stack([u, v], -1).numpy(), atol=1e-9)
    ref, _ = cv2.projectPoints(pts.numpy(), np.zeros(3), np.zeros(3), K.numpy(), None)
    np.testing.assert_allclose(pix.numpy(), ref[:, 0], atol=1e-8)


def test_unproject_inverts_project(generator):
    pts = torch.randn(4, 20, 3, generator=generator, dtype=torch.float64) * 0.1 + torch.tensor([0, 0, 0.6], dtype=torch.float64)
    back = camera.unproject(camera.project(pts, K), pts[..., 2], K)
    np.testing.assert_allclose(back.numpy(), pts.numpy(), atol=1e-12)


def test_crop_intrinsics_maps_pixels_like_cropping_and_resizing(generator):
    pts = torch.randn(30, 3, generator=generator, dtype=torch.float64) * 0.05 + torch.tensor([0.02, -0.01, 0.5], dtype=torch.float64)
    box = torch.tensor([200.0, 150.0, 328.0, 310.0], dtype=torch.float64)
    out = (64, 80)
    pix = camera.project(pts, K)
    crop_pix = camera.project(pts, camera.crop_intrinsics(K, box, out))
    # independent route: pixel centre u covers [u-0.5, u+0.5]; the crop maps x0 -> 0 edge
    sx, sy = out[1] / (box[2] - box[0]), out[0] / (box[3] - box[1])
    expected_u = (pix[:, 0] + 0.5 - box[0]) * sx - 0.5
    expected_v = (pix[:, 1] + 0.5 - box[1]) * sy - 0.5
    np.testing.assert_allclose(crop_pix[:, 0], expected_u, atol=1e-9)
    np.testing.assert_allclose(crop_pix[:, 1], expected_v, atol=1e-9)
    full = camera.resize_intrinsics(K, (480, 640), (480, 640))
    np.testing.assert_allclose(full, K, atol=1e-12)


def test_opengl_opencv_conversion_is_involution_and_projects_in_front():
    p_gl = torch.tensor([[0.1, 0.2, -0.5]], dtype=torch.float64)  # in front of an OpenGL camera, above centre
    p_cv = camera.opengl_to_opencv(p_gl)
    assert p_cv[0, 2] > 0 and p_cv[0, 1] < 0  # in front, and above centre means y < 0 in OpenCV
    np.testing.assert_allclose(camera.opengl_to_opencv(p_cv), p_gl)
    R = random_rotations(3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    v = torch.randn(3, 10, 3, dtype=torch.float64)
    t = torch.randn(3, 3, dtype=torch.float64)
    lhs = camera.opengl_to_opencv(apply_similarity(v, R, t))
    rhs = apply_similarity(v, camera.opengl_to_opencv_rotation(R), camera.opengl_to_opencv(t))
    np.testing.assert_allclose(lhs, rhs, atol=1e-12)


def test_similarity_inverse(generator):
    R = random_rotations(5, generator=generator, dtype=torch.float64)
    t = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    s = torch.rand(5, generator=generator, dtype=torch.float64) + 0.5
    v = torch.randn(5, 7, 3, generator=generator, dtype=torch.float64)
    out = apply_similarity(v, R, t, s)
    # closed form for one point
    np.testing.assert_allclose(out[2, 3], s[2] * R[2] @ v[2, 3] + t[2], atol=1e-12)
    np.testing.assert_allclose(invert_similarity(out, R, t, s), v, atol=1e-12)


def test_square_box_and_boxes_from_points():
    b = camera.square_box(torch.tensor([10.0, 20.0, 30.0, 60.0]), scale=1.5)
    assert torch.allclose(b, torch.tensor([-10.0, 10.0, 50.0, 70.0]))
    pts = torch.tensor([[1.0, 5.0], [3.0, -2.0], [0.0, 4.0]])
    assert torch.allclose(camera.boxes_from_points(pts), torch.tensor([0.0, -2.0, 3.0, 5.0]))
