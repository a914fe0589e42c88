"""Two hands and one object (paper Fig. 1, Epic-Kitchens): the synthetic two-hand scenes, the
HO-3D adapter's second hand, and `hodata fit` / `eval` / `show` on a two-hand clip, where joint
fitting must beat independent composition on hand vertex error."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from typer.testing import CliRunner

from hodata.cli import app
from hodata.datasets.ho3d import SECOND_HAND_KEY, HO3DDataset, read_segmentation
from hodata.datasets.synthetic import make_synthetic_ho3d
from hodata.errors import HodataError
from hodata.geometry.camera import project
from hodata.geometry.sdf import mesh_signed_distance

runner = CliRunner()
FRAMES, CLIP, STRIDE = 9, 5, 2


@pytest.fixture(scope="module")
def two_hand_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("two_hands")
    cache = base / "cache"
    root = make_synthetic_ho3d(base / "ho3d", sequences=1, frames=FRAMES, image_size=(240, 320),
                               object_ids=("003_cracker_box",), cache_dir=cache, seed=3, two_hands=True)
    return root, cache


def test_two_hand_scene_has_both_hands_apart_and_outside_the_object(two_hand_root):
    root, cache = two_hand_root
    dataset = HO3DDataset(root, clip_length=FRAMES, stride=1, cache_dir=cache)
    clip = dataset[0]
    assert clip.hand_sides == ["right", "left"] and [h.side for h in clip.gt_hands] == ["right", "left"]
    right, left = clip.gt_hands
    assert right.vertices.shape == left.vertices.shape and right.vertices.shape[0] == FRAMES
    # the two hands do not touch each other, and neither is inside the object
    gap = torch.cdist(right.vertices.float(), left.vertices.float()).amin((1, 2))
    assert float(gap.min()) > 0.005
    model = dataset.model_for_clip(clip)
    verts = clip.gt_object.vertices
    for hand in clip.gt_hands:
        sdf = mesh_signed_distance(hand.vertices, verts, model.faces)
        assert float(sdf.min()) > -0.002, hand.side
        assert float(sdf.min()) < 0.01, f"the {hand.side} hand does not hold the object"
    # both hands are drawn into the seg masks: each hand's projected vertices hit hand pixels
    _, hand_mask = read_segmentation(root / "train" / "SYN0" / "seg" / "0000.png", clip.image_size)
    for hand in clip.gt_hands:
        pix = project(hand.vertices[0], clip.K).round().long()
        inside = (pix[:, 0] >= 0) & (pix[:, 0] < clip.image_size[1]) & (pix[:, 1] >= 0) & (pix[:, 1] < clip.image_size[0])
        pix = pix[inside]
        assert float(torch.as_tensor(hand_mask)[pix[:, 1], pix[:, 0]].float().mean()) > 0.3, hand.side
    assert set(clip.hand_boxes) == {"right", "left"}


def test_second_hand_of_the_same_side_is_refused(two_hand_root, tmp_path):
    import shutil

    root, cache = two_hand_root
    copy = tmp_path / "ho3d"
    shutil.copytree(root, copy)
    meta_path = copy / "train" / "SYN0" / "meta" / "0000.pkl"
    meta = pickle.loads(meta_path.read_bytes())
    meta[SECOND_HAND_KEY]["hodataHandSide"] = "right"
    meta_path.write_bytes(pickle.dumps(meta, protocol=2))
    with pytest.raises(HodataError, match="both hands of the meta are right hands"):
        HO3DDataset(copy, clip_length=FRAMES, stride=1, cache_dir=cache)[0]


def test_two_hand_clip_fits_and_joint_beats_independent(two_hand_root, tmp_path):
    root, cache = two_hand_root
    out = tmp_path / "out"
    result = runner.invoke(app, [
        "fit", "ho3d", "--root", str(root), "--output", str(out), "--methods", "joint,independent",
        "--evidence", "gt", "--hand-init", "simulated", "--clip-length", str(CLIP), "--stride", str(STRIDE),
        "--steps1", "60", "--steps2", "60", "--hypotheses", "12", "--max-clips", "1", "--mesh-cache", str(cache)])
    assert result.exit_code == 0, result.output
    from hodata.shards import load

    samples = list(load(out / "joint"))
    right_shape = HO3DDataset(root, clip_length=FRAMES, stride=1, cache_dir=cache)[0].gt_hands[0].vertices.shape[1:]
    assert len(samples) == CLIP
    assert samples[0]["meta"]["hand_sides"] == ["right", "left"]
    assert samples[0]["right_vertices"].shape == samples[0]["left_vertices"].shape == right_shape

    evaluated = runner.invoke(app, ["eval", "ho3d", "--results", str(out), "--mesh-cache", str(cache)])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["joint"]["frames"] == CLIP
    assert metrics["joint"]["hand_vertex_cm"] < metrics["independent"]["hand_vertex_cm"], metrics

    shown = runner.invoke(app, ["show", str(out / "joint"), "--mesh-cache", str(cache), "--out", str(tmp_path / "ov")])
    assert shown.exit_code == 0, shown.output
    assert list((tmp_path / "ov").glob("*.mp4"))
