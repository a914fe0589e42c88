"""`hodata eval core50 --contact-labels`: contact accuracy of fits against hand-made labels,
on fits whose contact is known by construction (hand vertices put inside or far from the object)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from hodata.cli import app
from hodata.shards import ShardWriter
from hodata.types import FitResult, HandState, ObjectState

runner = CliRunner()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from hodata.objects import ensure_object_model

    folder = tmp_path_factory.mktemp("cache")
    ensure_object_model("proc_glass", folder)
    return folder


def _fit(sequence: str, frames: list[int], touching: set[int], model) -> FitResult:
    """A Core50 fit of the glass at 0.5 m; in the `touching` frames some hand vertices are inside it."""
    T = len(frames)
    centre = torch.tensor([0.0, 0.0, 0.5])
    verts = centre + torch.tensor([0.3, 0.0, 0.0]) + 0.01 * torch.randn(T, 778, 3, generator=torch.Generator().manual_seed(0))
    for i, f in enumerate(frames):
        if f in touching:
            verts[i, :20] = centre + model.vertices.mean(0)  # the glass's own centre: inside
    hand = HandState(side="right", vertices=verts, joints=verts[:, :21].clone(), model_name="open-hand-v1",
                     global_orient=torch.eye(3).expand(T, 3, 3).clone(), hand_pose=torch.zeros(T, 16),
                     pose_space="pca", betas=torch.zeros(10), transl=torch.zeros(T, 3), scale=torch.tensor(1.0))
    obj = ObjectState("proc_glass", torch.eye(3).expand(T, 3, 3).clone(), centre.expand(T, 3).clone(), 1.0,
                      category="glass")
    return FitResult(clip_id=f"core50_{sequence}_{frames[0]:03d}", dataset="core50", sequence=sequence,
                     frame_ids=[f"{f:03d}" for f in frames], K=torch.tensor([[480.0, 0, 175], [0, 480.0, 175], [0, 0, 1]]),
                     image_size=(350, 350), hands=[hand], objects=[obj], hand_init="keypoints:mediapipe")


def test_contact_accuracy_from_labels(tmp_path, cache):
    from hodata.objects import load_object_model

    model = load_object_model("proc_glass", cache)
    out = tmp_path / "out" / "joint"
    writer = ShardWriter(out, config={"dataset": "core50"})
    # clip 1: frames 0-9, touching 0-4; clip 2: frames 10-19 of another sequence, touching none
    writer.write_clip(_fit("s5_o26", list(range(10)), set(range(5)), model))
    writer.write_clip(_fit("s2_o26", list(range(10, 20)), set(), model))
    writer.close()
    labels = tmp_path / "labels.csv"
    # s5: frames 0-6 in contact, 7-9 not -> predicted 0-4: 8 of 10 right; s2: 10-13 not, 14-19 unlabelled -> 4 of 4
    labels.write_text("session,object,first_frame,last_frame,contact\n5,26,0,6,yes\n5,26,7,9,no\ns2,o26,10,13,no\n")
    result = runner.invoke(app, ["eval", "core50", "--results", str(tmp_path / "out"), "--mesh-cache", str(cache),
                                 "--contact-labels", str(labels)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["joint"]
    per_clip = {r["sequence"]: r for r in _rows(tmp_path / "out" / "metrics_per_clip.csv")}
    assert float(per_clip["s5_o26"]["contact_accuracy_pct"]) == pytest.approx(80.0)
    assert float(per_clip["s2_o26"]["contact_accuracy_pct"]) == pytest.approx(100.0)
    assert metrics["contact_pct"] == pytest.approx(25.0)          # 5 of 20 frames touch
    assert metrics["hand_vertex_cm"] is None and metrics["object_adds_cm"] is None  # no 3D ground truth
    assert "contact accuracy" in result.output

    # without labels Core50 counts every frame as in contact (paper Table 2)
    result = runner.invoke(app, ["eval", "core50", "--results", str(tmp_path / "out"), "--mesh-cache", str(cache)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["joint"]["contact_accuracy_pct"] == \
        pytest.approx(25.0)


def test_bad_label_file_is_one_line(tmp_path, cache):
    from hodata.objects import load_object_model

    out = tmp_path / "out" / "joint"
    writer = ShardWriter(out, config={"dataset": "core50"})
    writer.write_clip(_fit("s5_o26", list(range(3)), set(), load_object_model("proc_glass", cache)))
    writer.close()
    labels = tmp_path / "labels.csv"
    labels.write_text("session,object,contact\n5,26,yes\n")
    result = runner.invoke(app, ["eval", "core50", "--results", str(tmp_path / "out"), "--mesh-cache", str(cache),
                                 "--contact-labels", str(labels)])
    assert result.exit_code == 2 and result.output.startswith("error:") and str(labels) in result.output


def _rows(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))
