"""HO-3D challenge prediction file: round trip, OpenGL signs, joint order, fallback filling."""

import json
import zipfile

import pytest
import torch

from hodata.errors import HodataError
from hodata.geometry.camera import opengl_to_opencv
from hodata.metrics import official as off


def _hands_in_front_of_camera(frames: int, generator: torch.Generator):
    """OpenCV camera points (z > 0) shaped like hand predictions."""
    offset = torch.tensor([0.02, -0.05, 0.6], dtype=torch.float64)
    joints = torch.randn(frames, 21, 3, generator=generator, dtype=torch.float64) * 0.04 + offset
    verts = torch.randn(frames, 778, 3, generator=generator, dtype=torch.float64) * 0.04 + offset
    return joints, verts


def test_pred_json_round_trip_with_opengl_signs(tmp_path, generator):
    joints_cv, verts_cv = _hands_in_front_of_camera(7, generator)
    joints_gl, verts_gl = off.opencv_to_opengl(joints_cv), off.opencv_to_opengl(verts_cv)
    path = tmp_path / "pred.json"
    zip_path = off.write_ho3d_predictions(path, joints_gl, verts_gl, decimals=None)

    raw = json.loads(path.read_text())
    assert isinstance(raw, list) and len(raw) == 2 and len(raw[0]) == 7 and len(raw[1]) == 7
    assert len(raw[0][0]) == 21 and len(raw[1][0]) == 778 and len(raw[0][0][0]) == 3
    # in front of the camera means negative z in OpenGL, y flipped as well
    assert all(p[2] < 0 for frame in raw[0] for p in frame)
    assert raw[0][0][0][1] == pytest.approx(-joints_cv[0, 0, 1].item())

    joints, verts = off.read_ho3d_predictions(path)
    assert torch.equal(joints, joints_gl) and torch.equal(verts, verts_gl)  # exact without rounding
    torch.testing.assert_close(opengl_to_opencv(joints), joints_cv, atol=0, rtol=0)

    with zipfile.ZipFile(zip_path) as archive:
        assert archive.namelist() == ["pred.json"]
    joints_z, verts_z = off.read_ho3d_predictions(zip_path)
    assert torch.equal(joints_z, joints_gl) and torch.equal(verts_z, verts_gl)


def test_default_rounding_keeps_hundredth_of_a_millimetre(tmp_path, generator):
    joints_cv, verts_cv = _hands_in_front_of_camera(2, generator)
    path = tmp_path / "sub" / "pred.json"
    off.write_ho3d_predictions(path, off.opencv_to_opengl(joints_cv), off.opencv_to_opengl(verts_cv), zip=False)
    assert not (tmp_path / "sub" / "pred.zip").exists()
    joints, verts = off.read_ho3d_predictions(path)
    assert (joints - off.opencv_to_opengl(joints_cv)).abs().max().item() <= 5e-6 + 1e-12
    assert (verts - off.opencv_to_opengl(verts_cv)).abs().max().item() <= 5e-6 + 1e-12


def test_writer_refuses_opencv_coordinates_wrong_shapes_and_counts(tmp_path, generator):
    joints_cv, verts_cv = _hands_in_front_of_camera(2, generator)
    with pytest.raises(HodataError, match="opencv_to_opengl"):
        off.write_ho3d_predictions(tmp_path / "pred.json", joints_cv, verts_cv)
    with pytest.raises(HodataError, match="778"):
        off.write_ho3d_predictions(tmp_path / "pred.json", off.opencv_to_opengl(joints_cv), verts_cv[:, :700])
    with pytest.raises(HodataError, match="11524"):
        off.write_ho3d_predictions(
            tmp_path / "pred.json", off.opencv_to_opengl(joints_cv), off.opencv_to_opengl(verts_cv),
            expected_frames=off.HO3D_EVALUATION_FRAMES["v2"],
        )
    assert not (tmp_path / "pred.json").exists()


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(HodataError, match="missing.json"):
        off.read_ho3d_predictions(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(HodataError, match="bad.json"):
        off.read_ho3d_predictions(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([[[[0, 0, -1]] * 20], [[[0, 0, -1]] * 778]]))
    with pytest.raises(HodataError, match=r"\(N, 21, 3\)"):
        off.read_ho3d_predictions(wrong)


def test_joint_order_conversion_between_thumb_first_and_ho3d():
    ho3d = torch.arange(21, dtype=torch.float64)[:, None].expand(21, 3)
    thumb_first = ho3d[list(off.HO3D_TO_THUMB_FIRST)]
    # thumb-first: 1-4 thumb (MANO 13, 14, 15 + tip 16), 5-8 index (MANO 1, 2, 3 + tip 17)
    assert thumb_first[1:9, 0].tolist() == [13, 14, 15, 16, 1, 2, 3, 17]
    torch.testing.assert_close(off.to_ho3d_joints(thumb_first, "thumb_first"), ho3d)
    assert off.to_ho3d_joints(ho3d, "mano") is ho3d
    with pytest.raises(ValueError):
        off.to_ho3d_joints(ho3d, "openpose")


def test_fill_missing_frames_interpolates_within_sequences_and_zeroes_unfitted_ones():
    n = 8
    sequences = ["SM1"] * 5 + ["MPM10"] * 3
    frame_numbers = [0, 1, 2, 4, 5, 0, 1, 2]
    values = torch.tensor(frame_numbers, dtype=torch.float64) + 1.0
    joints = values[:, None, None].expand(n, 21, 3).clone()
    verts = values[:, None, None].expand(n, 778, 3).clone() * 2
    valid = torch.tensor([True, False, True, False, True, False, False, False])
    joints[~valid] = float("nan")
    filled = off.fill_missing_frames(joints, verts, valid, sequences, frame_numbers)
    # frame 1 between fits at 0 and 2; frame 4 between fits at 2 and 5 (weights by frame number)
    assert filled.joints[:5, 0, 0].tolist() == pytest.approx([1.0, 2.0, 3.0, 5.0, 6.0])
    assert filled.vertices[:5, 0, 0].tolist() == pytest.approx([2.0, 4.0, 6.0, 10.0, 12.0])
    assert torch.all(filled.joints[5:] == 0) and torch.all(filled.vertices[5:] == 0)
    assert (filled.interpolated, filled.zeroed, filled.filled) == (2, 3, 5)


def test_fill_missing_frames_holds_first_and_last_fit():
    joints = torch.arange(4, dtype=torch.float64)[:, None, None].expand(4, 21, 3).clone()
    verts = torch.zeros(4, 778, 3, dtype=torch.float64)
    valid = torch.tensor([False, True, True, False])
    filled = off.fill_missing_frames(joints, verts, valid, ["A"] * 4)
    assert filled.joints[:, 0, 0].tolist() == [1.0, 1.0, 2.0, 2.0]
    assert filled.interpolated == 2 and filled.zeroed == 0


def test_predictions_in_evaluation_order_and_unknown_frames():
    ids = ["SM1/0000", "SM1/0001", "AP10/0003"]
    j = {"AP10/0003": torch.ones(21, 3), "SM1/0000": torch.full((21, 3), 2.0)}
    v = {k: torch.ones(778, 3) for k in j}
    joints, verts, valid = off.predictions_in_evaluation_order(ids, j, v)
    assert valid.tolist() == [True, False, True]
    assert joints[0, 0, 0].item() == 2.0 and joints[2, 0, 0].item() == 1.0 and verts.shape == (3, 778, 3)
    with pytest.raises(HodataError, match="XYZ/0001"):
        off.predictions_in_evaluation_order(ids, {"XYZ/0001": torch.ones(21, 3)}, v, source="results/ho3d")
