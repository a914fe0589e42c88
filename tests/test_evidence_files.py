"""The files evidence provider: a documented per-frame format, good and bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hodata import handmodel
from hodata.errors import HodataError
from hodata.evidence.files import read_evidence_files, write_frame_json
from hodata.evidence.mediapipe_hands import MEDIAPIPE_TO_MODEL
from hodata.geometry.camera import project
from hodata.geometry.rotations import axis_angle_to_matrix

K = torch.tensor([[600.0, 0.0, 160.0], [0.0, 600.0, 120.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
SIZE = (240, 320)


@pytest.fixture(scope="module")
def layer():
    return handmodel.load("right", use_pca=True, flat_hand_mean=False, num_pca_comps=16, dtype=torch.float64)


def _record(t: int, layer, pose_space: str = "axis_angle") -> dict:
    gen = torch.Generator().manual_seed(t)
    coeffs = torch.randn(1, 16, generator=gen, dtype=torch.float64)
    pose = layer.pca_to_full_pose(coeffs)[0]
    kp = np.arange(42, dtype=float).reshape(21, 2) + t
    return {
        "object": {"box": [100 + t, 60, 180 + t, 150], "score": 0.8},
        "hands": [
            {"side": "right", "box": [150, 90, 230, 170], "score": 0.9,
             "keypoints_2d": kp.tolist(), "keypoints_3d": (np.ones((21, 3)) * 0.01 * t).tolist(),
             "mano": {"global_orient": [0.1 * t, 0.2, -0.3],
                      "hand_pose": (pose if pose_space == "axis_angle" else coeffs[0]).tolist(),
                      "pose_space": pose_space, "weak_perspective": [1200.0, 190.0 + t, 130.0]}},
            {"side": "right", "box": [0, 0, 10, 10], "score": 0.2},   # a weaker second right hand
        ],
    }


def _write_clip(folder, layer, frames: int = 3, pose_space: str = "axis_angle", masks: bool = True):
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for t in range(frames):
        write_frame_json(folder / f"{t:04d}.json", _record(t, layer, pose_space))
        if masks:
            obj = np.zeros(SIZE, np.uint8)
            obj[60:150, 100:180] = 255
            hand = np.zeros(SIZE, np.uint8)
            hand[90:170, 150:230] = 255
            cv2.imwrite(str(folder / f"{t:04d}_object.png"), obj)
            cv2.imwrite(str(folder / f"{t:04d}_hand.png"), hand)
    return [f"{t:04d}" for t in range(frames)]


@pytest.mark.parametrize("pose_space", ["axis_angle", "pca"])
def test_good_files(tmp_path, layer, pose_space):
    ids = _write_clip(tmp_path / "ev", layer, pose_space=pose_space)
    ev = read_evidence_files(tmp_path / "ev", ids, SIZE, sides=["right"], K=K, layers={"right": layer})
    assert ev.provenance == {"object_boxes": "files", "hand_boxes": "files", "hand_keypoints": "files",
                             "hand_init": "files:mano", "hand_masks": "files", "object_masks": "files"}
    assert ev.object_boxes[2].tolist() == [102, 60, 182, 150] and bool(ev.object_valid.all())
    hand = ev.hand("right")
    assert hand.scores.tolist() == [0.9] * 3               # the weaker duplicate dropped
    # Keypoints re-ordered from MediaPipe order into the model's: model joint j = landmark MEDIAPIPE_TO_MODEL[j].
    kp = np.arange(42, dtype=float).reshape(21, 2)
    assert np.allclose(hand.keypoints_2d[0].numpy(), kp[list(MEDIAPIPE_TO_MODEL)])
    init = hand.init
    assert init.provider == "files:mano" and init.hand_pose.shape == (3, 16)
    out = layer(global_orient=init.global_orient, hand_pose=init.hand_pose, betas=init.betas, transl=init.transl)
    # Weak-perspective camera: the vertex centroid lies on the ray of (u, v) at depth f / s.
    centroid = out.vertices.mean(1)
    assert torch.allclose(centroid[:, 2], torch.full((3,), 0.5, dtype=torch.float64))
    assert torch.allclose(project(centroid[:, None], K)[:, 0], torch.tensor([[190.0, 130.0], [191, 130], [192, 130]], dtype=torch.float64))
    assert torch.allclose(init.global_orient[1], axis_angle_to_matrix(torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64)))
    gen = torch.Generator().manual_seed(1)
    assert torch.allclose(init.hand_pose[1], torch.randn(1, 16, generator=gen, dtype=torch.float64)[0], atol=1e-9)
    assert torch.allclose(init.vertices_2d, project(out.vertices, K))
    # Masks: object 1, hand -1 where the object mask is not set.
    assert ev.object_masks[0, 100, 120] == 1 and ev.object_masks[0, 160, 200] == -1 and ev.object_masks[0, 5, 5] == 0


def test_boxes_only_and_missing_detections(tmp_path, layer):
    folder = tmp_path / "ev"
    ids = _write_clip(folder, layer, masks=False)
    write_frame_json(folder / "0001.json", {"hands": []})   # nothing detected in frame 1
    ev = read_evidence_files(folder, ids, SIZE, sides=["right", "left"])
    assert ev.object_valid.tolist() == [True, False, True]
    assert ev.hand("right").valid.tolist() == [True, False, True]
    assert not bool(ev.hand("left").valid.any())
    assert ev.object_masks is None and "hand_init" not in ev.provenance
    with pytest.raises(HodataError, match=r"0001\.json: no 'right' hand with a 'mano' field"):
        read_evidence_files(folder, ids, SIZE, sides=["right"], K=K, layers={"right": layer})


@pytest.mark.parametrize("edit, field", [
    (lambda r: r["hands"][0].pop("side"), "hands[0].side"),
    (lambda r: r["hands"][0].update(box=[1, 2, 3]), "hands[0].box"),
    (lambda r: r["hands"][0].update(box=[5, 5, 1, 9]), "hands[0].box"),
    (lambda r: r["hands"][0].update(score=3), "hands[0].score"),
    (lambda r: r["hands"][0].update(keypoints_2d=[[0, 0]] * 20), "hands[0].keypoints_2d"),
    (lambda r: r["hands"][0]["mano"].pop("weak_perspective"), "hands[0].mano.weak_perspective"),
    (lambda r: r["hands"][0]["mano"].update(hand_pose=[0.0] * 44), "hands[0].mano.hand_pose"),
    (lambda r: r["hands"][0]["mano"].update(global_orient=[[2, 0, 0], [0, 1, 0], [0, 0, 1]]), "hands[0].mano.global_orient"),
    (lambda r: r["hands"][0]["mano"].update(weak_perspective=[-1, 0, 0]), "hands[0].mano.weak_perspective"),
    (lambda r: r["object"].update(box="wide"), "object.box"),
])
def test_bad_field_names_file_and_field(tmp_path, layer, edit, field):
    folder = tmp_path / "ev"
    ids = _write_clip(folder, layer, masks=False)
    record = _record(1, layer)
    edit(record)
    (folder / "0001.json").write_text(json.dumps(record))
    with pytest.raises(HodataError) as info:
        read_evidence_files(folder, ids, SIZE, K=K, layers={"right": layer})
    message = str(info.value)
    assert "\n" not in message and "0001.json" in message and f"'{field}'" in message


def test_bad_files(tmp_path, layer):
    import cv2

    folder = tmp_path / "ev"
    ids = _write_clip(folder, layer)
    (folder / "0002.json").write_text("{not json")
    with pytest.raises(HodataError, match=r"0002\.json: not readable JSON"):
        read_evidence_files(folder, ids, SIZE)
    _write_clip(folder, layer)
    cv2.imwrite(str(folder / "0001_hand.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(HodataError, match=r"0001_hand\.png: mask is 10x10"):
        read_evidence_files(folder, ids, SIZE)
    (folder / "0001_hand.png").unlink()
    with pytest.raises(HodataError, match=r"0001_hand\.png: hand mask missing"):
        read_evidence_files(folder, ids, SIZE)
    with pytest.raises(HodataError, match=r"0007\.json: evidence file missing"):
        read_evidence_files(folder, ids + ["0007"], SIZE)
    with pytest.raises(HodataError, match="does not exist"):
        read_evidence_files(tmp_path / "nowhere", ids, SIZE)
