"""`hodata eval` and hodata.app.evaluate on a synthetic HO-3D set in the real on-disk layout.

Fit results are written with ShardWriter from the dataset's own ground truth (errors 0) and
from copies moved by known offsets, so the expected metrics are known in closed form; ADD-S
and penetration are checked against scipy / trimesh.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from typer.testing import CliRunner

from hodata.cli import app
from hodata.datasets.ho3d import HO3DDataset
from hodata.datasets.synthetic import make_synthetic_ho3d
from hodata.errors import HodataError
from hodata.app.evaluate import METRICS_FILE, PER_CLIP_FILE, evaluate_results, resample_indices
from hodata.metrics.official import opencv_to_opengl, read_ho3d_predictions
from hodata.metrics.summary import METRIC_KEYS
from hodata.shards import ShardWriter
from hodata.types import FitResult, ObjectState

runner = CliRunner()
OBJECT_OFFSET = torch.tensor([0.02, 0.0, 0.0], dtype=torch.float64)   # 2 cm
HAND_OFFSET = torch.tensor([0.0, 0.0, -0.03], dtype=torch.float64)   # 3 cm toward the camera
HAND_KEYS = [k for k in METRIC_KEYS if k.startswith("hand_")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("eval")
    cache = base / "cache"
    root = make_synthetic_ho3d(base / "ho3d", sequences=["EV0"], frames=12, image_size=(96, 128), cache_dir=cache,
                               split="evaluation", seed=3)
    dataset = HO3DDataset(root, split="evaluation", clip_length=4, stride=1, evidence="none", dtype=torch.float64,
                          cache_dir=cache, check_images=False)
    clips = [dataset.load_clip(spec) for spec in dataset.clips]
    assert [c.frame_ids for c in clips] == [[f"{i:04d}" for i in range(s, s + 4)] for s in (0, 4, 8)]
    return SimpleNamespace(base=base, root=root, cache=cache, clips=clips, model=dataset.object_model("025_mug"))


def fit_from_ground_truth(clip, method, object_offset=None, hand_offset=None, **changes) -> FitResult:
    """A FitResult equal to the clip's ground truth, optionally moved rigidly."""
    gt = clip.gt_object
    d_obj = object_offset if object_offset is not None else torch.zeros(3, dtype=torch.float64)
    d_hand = hand_offset if hand_offset is not None else torch.zeros(3, dtype=torch.float64)
    # without stored vertices the evaluation poses the cached canonical mesh itself
    obj = ObjectState(gt.model_id, gt.rotation, gt.translation + d_obj, torch.tensor(1.0, dtype=torch.float64),
                      None, gt.category)
    hands = [replace(h, vertices=h.vertices + d_hand, joints=h.joints + d_hand, transl=h.transl + d_hand)
             for h in clip.gt_hands]
    fields = dict(clip_id=clip.clip_id, dataset=clip.dataset, sequence=clip.sequence, frame_ids=list(clip.frame_ids))
    fields.update(changes)
    return FitResult(K=clip.K, image_size=clip.image_size, hands=hands, objects=[obj], method=method, **fields)


def write_results(folder, fits):
    with ShardWriter(folder) as writer:
        for fit in fits:
            writer.write_clip(fit)
            writer.flush()
    return folder


@pytest.fixture(scope="module")
def two_methods(data):
    out = data.base / "results"
    write_results(out / "joint", [fit_from_ground_truth(c, "joint") for c in data.clips])
    write_results(out / "independent", [fit_from_ground_truth(c, "independent", OBJECT_OFFSET, HAND_OFFSET)
                                        for c in data.clips])
    return out


def test_metrics_of_exact_and_moved_fits(data, two_methods):
    report = evaluate_results(two_methods, "ho3d", data.root, split="evaluation", cache_dir=data.cache, device="cpu")
    saved = json.loads((two_methods / METRICS_FILE).read_text())
    assert set(saved) == {"joint", "independent", "_info"}
    assert saved["_info"]["split"] == "evaluation" and saved["_info"]["clips"] == {"joint": 3, "independent": 3}
    for method in ("joint", "independent"):
        assert list(saved[method]) == list(METRIC_KEYS)
        for key in METRIC_KEYS:
            if report.methods[method][key] is None:
                assert saved[method][key] is None, key
            else:
                assert saved[method][key] == pytest.approx(report.methods[method][key], rel=1e-12), key
        assert saved[method]["frames"] == 12
        # HO-3D has no contact labels: absent, not 0
        assert saved[method]["contact_accuracy_pct"] is None

    exact = saved["joint"]
    for key in ("object_vertex_cm", "object_adds_cm", "hand_vertex_cm", "hand_joint_cm", "penetration_mm"):
        assert exact[key] == pytest.approx(0.0, abs=1e-9), key
    for key in ("hand_joint_pa_cm", "hand_joint_st_cm", "hand_vertex_pa_cm"):
        assert exact[key] == pytest.approx(0.0, abs=1e-5), key
    for key in ("hand_fscore_5mm", "hand_fscore_15mm", "hand_fscore_pa_5mm", "hand_fscore_pa_15mm"):
        assert exact[key] == pytest.approx(1.0), key

    moved = saved["independent"]
    assert moved["object_vertex_cm"] == pytest.approx(2.0, abs=1e-9)
    assert moved["hand_vertex_cm"] == pytest.approx(3.0, abs=1e-9)
    assert moved["hand_joint_cm"] == pytest.approx(3.0, abs=1e-9)
    # a translation disappears after alignment
    for key in ("hand_joint_pa_cm", "hand_joint_st_cm", "hand_vertex_pa_cm"):
        assert moved[key] == pytest.approx(0.0, abs=1e-5), key
    assert moved["hand_fscore_pa_5mm"] == pytest.approx(1.0) and moved["hand_fscore_5mm"] < 0.9

    # ADD-S (mean over GT vertices of the distance to the closest predicted vertex) by scipy
    gt = torch.cat([c.gt_object.vertices for c in data.clips]).numpy()
    adds = np.mean([cKDTree(frame + OBJECT_OFFSET.numpy()).query(frame)[0].mean() for frame in gt])
    assert 0 < moved["object_adds_cm"] < 2.0
    assert moved["object_adds_cm"] == pytest.approx(adds * 100, rel=1e-6)

    # penetration depth (max over hand vertices, mean over frames) and contact of the moved
    # hand in the moved object, by trimesh
    import trimesh

    faces = data.model.faces.numpy()
    depths = []
    for clip in data.clips:
        hand = (clip.gt_hands[0].vertices + HAND_OFFSET).numpy()
        for t in range(len(clip)):
            mesh = trimesh.Trimesh((clip.gt_object.vertices[t] + OBJECT_OFFSET).numpy(), faces, process=False)
            inside = trimesh.proximity.signed_distance(mesh, hand[t])     # positive inside
            depths.append(max(inside.max(), 0.0))
    # rel 1e-3 (~2 um here): trimesh's rtree search can return a triangle that is not the
    # nearest (see tests/test_sdf.py), and the clip's vertices are float32
    assert moved["penetration_mm"] == pytest.approx(np.mean(depths) * 1000, rel=1e-3, abs=1e-6)
    assert moved["contact_pct"] == pytest.approx(100.0 * np.mean(np.array(depths) > 0))
    assert moved["penetration_mm"] > 0.5    # the moved hand does push into the mug

    # HOLD-protocol metrics: exact fits score 0 / 1; the moved fits' translations are aligned
    # away (root-aligned MPJPE, object CD and F-scores), but not the object's offset relative
    # to the hand (CD_h), which scipy computes independently
    for key in ("hand_mpjpe_ra_mm", "object_cd_cm2", "object_cd_h_cm2"):
        assert exact[key] == pytest.approx(0.0, abs=1e-9), key
        assert moved[key] is not None, key
    assert moved["hand_mpjpe_ra_mm"] == pytest.approx(0.0, abs=1e-9)
    assert moved["object_cd_cm2"] == pytest.approx(0.0, abs=1e-9)
    for key in ("object_fscore_5mm", "object_fscore_10mm"):
        assert exact[key] == pytest.approx(1.0) and moved[key] == pytest.approx(1.0), key
    cd_h = []
    for clip in data.clips:
        wrist = clip.gt_hands[0].joints[:, 0].numpy()
        for t in range(len(clip)):
            gt_rel = clip.gt_object.vertices[t].numpy() - wrist[t]
            pred_rel = (clip.gt_object.vertices[t] + OBJECT_OFFSET).numpy() - (wrist[t] + HAND_OFFSET.numpy())
            cd_h.append(np.mean(cKDTree(gt_rel).query(pred_rel)[0] ** 2) + np.mean(cKDTree(pred_rel).query(gt_rel)[0] ** 2))
    # the object moved by (2, 0, 3) cm relative to the hand: below 2 * 13 cm^2, far above 0
    assert 1.0 < moved["object_cd_h_cm2"] < 26.0
    assert moved["object_cd_h_cm2"] == pytest.approx(np.mean(cd_h) * 1e4, rel=1e-5)

    lines = (two_methods / PER_CLIP_FILE).read_text().splitlines()
    header = lines[0].split(",")
    assert header[:4] == ["method", "clip_id", "sequence", "frames"] and set(header[4:]) == set(METRIC_KEYS) - {"frames"}
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    assert sorted((r["method"], r["clip_id"]) for r in rows) == sorted(
        (m, c.clip_id) for m in ("joint", "independent") for c in data.clips)
    for row in rows:
        assert row["frames"] == "4" and row["contact_accuracy_pct"] == ""
        if row["method"] == "independent":
            assert float(row["object_vertex_cm"]) == pytest.approx(2.0, abs=1e-9)


def test_metrics_without_ground_truth_hands_are_absent(data, tmp_path):
    # Real HO-3D hides the evaluation hands: the synthetic set without its evaluation_gt/.
    root = tmp_path / "no_hands"
    shutil.copytree(data.root, root, ignore=shutil.ignore_patterns("evaluation_gt"))
    results = write_results(tmp_path / "res" / "joint", [fit_from_ground_truth(c, "joint", OBJECT_OFFSET)
                                                         for c in data.clips])
    out = tmp_path / "metrics"
    result = runner.invoke(app, ["eval", "ho3d", "--results", str(results), "--root", str(root), "--split",
                                 "evaluation", "--mesh-cache", str(data.cache), "--output-dir", str(out),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / METRICS_FILE).read_text())["joint"]
    assert all(saved[k] is None for k in HAND_KEYS)
    assert saved["object_vertex_cm"] == pytest.approx(2.0, abs=1e-9)
    # interaction needs only the prediction: present
    assert saved["penetration_mm"] is not None and saved["contact_pct"] is not None
    table_row = next(line for line in result.stdout.splitlines() if line.strip().startswith("joint"))
    assert table_row.count("—") == 5 and "2.00" in table_row
    assert not (results / METRICS_FILE).exists()
    # the fits use the open hand: both tables' titles say the numbers are not HO-3D challenge ones
    text = " ".join(result.stdout.split())
    note = ("hand metrics on the open hand (open-hand-v1, 1287 vertices), not MANO's 778 - not comparable "
            "with HO-3D challenge results")
    assert text.count(note) == 2, text
    assert "Metrics of later papers (HOLD protocol, HO-3D v3)" in text
    info = json.loads((out / METRICS_FILE).read_text())["_info"]
    assert info["hand_topology"]["joint"] == {"hand_models": ["open-hand-v1"], "hand_vertices": [1287],
                                              "gt_hand_vertices": [], "mano_topology": False}
    assert info["hand_topology_note"].startswith(note)


def test_fits_of_frames_the_dataset_lacks_are_named(data, tmp_path):
    clip = data.clips[2]
    shifted = fit_from_ground_truth(clip, "joint", frame_ids=["0010", "0011", "0012", "0013"],
                                    clip_id="synthetic_EV0_0010")
    alien = fit_from_ground_truth(clip, "joint", sequence="ZZZ", clip_id="synthetic_ZZZ_0008",
                                  frame_ids=["0000", "0001", "0002", "0003"])
    results = write_results(tmp_path / "res", [shifted, alien])
    with pytest.raises(HodataError) as error:
        evaluate_results(results, "ho3d", data.root, split="evaluation", cache_dir=data.cache, device="cpu")
    message = str(error.value)
    assert "6 fitted frame(s)" in message and "EV0/0012, EV0/0013, ZZZ/0000, ZZZ/0001, ZZZ/0002 and 1 more" in message
    assert "EV0/0011" not in message and "\n" not in message

    result = runner.invoke(app, ["eval", "ho3d", "--results", str(results), "--root", str(data.root),
                                 "--split", "evaluation", "--mesh-cache", str(data.cache)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip() == f"error: {message}"


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_missing_results_folder_is_one_clear_line(data, tmp_path, make):
    results = tmp_path / "never_fitted"
    if make == "empty":
        results.mkdir()
    result = runner.invoke(app, ["eval", "ho3d", "--results", str(results), "--root", str(data.root)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert str(results) in lines[0] and "hodata fit" in lines[0]
    assert "does not exist" in lines[0] if make == "missing" else "manifest.json" in lines[0]


def test_export_pred_round_trips_in_opengl(data, tmp_path):
    # fits for the first and last clip only: frames 4-7 have none
    kept = [data.clips[0], data.clips[2]]
    results = write_results(tmp_path / "res" / "joint", [fit_from_ground_truth(c, "joint") for c in kept])
    pred = tmp_path / "sub" / "pred.json"
    args = ["eval", "ho3d", "--results", str(results.parent), "--root", str(data.root), "--mesh-cache",
            str(data.cache), "--export-pred", str(pred), "--device", "cpu"]

    refused = runner.invoke(app, args)   # open hand, not MANO
    assert refused.exit_code == 2 and "MANO" in refused.output and "--allow-non-mano" in refused.output
    assert not pred.exists()

    result = runner.invoke(app, args + ["--allow-non-mano"])
    assert result.exit_code == 0, result.output
    assert "4 of 12 evaluation frames have no fit" in result.output and "4 interpolated" in result.output

    for path in (pred, pred.with_suffix(".zip")):
        joints, vertices = read_ho3d_predictions(path)
        assert joints.shape == (12, 21, 3) and vertices.shape == (12, 778, 3)
        gt_joints = torch.cat([c.gt_hands[0].joints for c in data.clips])
        gt_verts = torch.cat([c.gt_hands[0].vertices for c in data.clips])[:, resample_indices(gt_verts_count(data))]
        fitted = [0, 1, 2, 3, 8, 9, 10, 11]
        # OpenGL: y and z flipped, the hand in front of the camera has z < 0
        assert torch.allclose(joints[fitted, :, 0], gt_joints[fitted, :, 0], atol=1e-5)
        assert torch.allclose(joints[fitted, :, 1:], -gt_joints[fitted, :, 1:], atol=1e-5)
        assert torch.allclose(vertices[fitted], opencv_to_opengl(gt_verts[fitted]), atol=1e-5)
        assert bool((joints[..., 2] < 0).all()) and bool((vertices[..., 2] < 0).all())
        # missing frames: linear in time between frames 3 and 8
        for frame in range(4, 8):
            w = (frame - 3) / 5
            expected = opencv_to_opengl((1 - w) * gt_joints[3] + w * gt_joints[8])
            assert torch.allclose(joints[frame], expected, atol=2e-5)


def gt_verts_count(data) -> int:
    return data.clips[0].gt_hands[0].vertices.shape[1]


def test_export_needs_one_method(data, two_methods, tmp_path):
    result = runner.invoke(app, ["eval", "ho3d", "--results", str(two_methods), "--root", str(data.root),
                                 "--export-pred", str(tmp_path / "pred.json"), "--allow-non-mano"])
    assert result.exit_code == 2 and "--method" in result.output


def test_corrupt_shard_is_named_or_skipped_with_flag(data, tmp_path):
    results = write_results(tmp_path / "res" / "joint", [fit_from_ground_truth(c, "joint") for c in data.clips])
    shards = sorted(results.glob("*.tar"))
    assert len(shards) == 3
    shards[1].write_bytes(shards[1].read_bytes()[:1000])  # truncated
    args = ["eval", "ho3d", "--results", str(results), "--root", str(data.root), "--split", "evaluation",
            "--mesh-cache", str(data.cache)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and shards[1].name in result.output and "Traceback" not in result.output
    result = runner.invoke(app, args + ["--skip-corrupt"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["joint"]["frames"] == 8  # two clips of four frames left


def _hand_fit(model_name: str, vertices: torch.Tensor) -> FitResult:
    from hodata.types import HandState

    T = vertices.shape[0]
    hand = HandState(side="right", vertices=vertices, joints=torch.zeros(T, 21, 3), model_name=model_name)
    return FitResult(clip_id="c", dataset="ho3d", sequence="S", frame_ids=[str(i) for i in range(T)],
                     K=torch.eye(3), image_size=(8, 8), hands=[hand], objects=[])


def test_hand_topology_note_for_mano_open_hand_and_mislabelled_files(tmp_path):
    """The title's note from the hands actually fitted: MANO's 778 vertices; the open hand; a
    MANO-format file that is not MANO's topology (the tests' pickles hold the open hand)."""
    from hodata import handmodel
    from hodata.app.evaluate import _TopologyTally, hand_topology_note
    from hodata.types import Clip, HandState

    def note_for(fit, gt_vertices=None):
        tally = _TopologyTally()
        tally.add_fit("joint", fit)
        if gt_vertices is not None:
            clip = Clip(dataset="ho3d", sequence="S", frame_ids=fit.frame_ids, image_paths=[], K=fit.K,
                        image_size=(8, 8), object_model_id="", hand_sides=["right"],
                        gt_hands=[HandState(side="right", vertices=gt_vertices, joints=torch.zeros(2, 21, 3),
                                                    model_name="mano")])
            tally.add_ground_truth("joint", clip)
        return tally.summary(), hand_topology_note(tally.summary(), "ho3d")

    summary, note = note_for(_hand_fit("mano", torch.zeros(2, 778, 3)), torch.zeros(2, 778, 3))
    assert summary["joint"]["mano_topology"] is True
    assert note == "hand metrics on MANO's 778 vertices"

    open_hand = handmodel.load("right", model="open")
    summary, note = note_for(_hand_fit(open_hand.model_name, open_hand(hand_pose=torch.zeros(2, 16)).vertices))
    assert summary["joint"]["mano_topology"] is False
    assert "the open hand (open-hand-v1, 1287 vertices)" in note and "not comparable with HO-3D challenge" in note

    # a MANO-format pickle written from the open hand: named "mano", but not MANO's topology
    handmodel.write_mano_pickle(tmp_path / "MANO_RIGHT.pkl", "right")
    layer = handmodel.load("right", mano_dir=tmp_path, model="mano")
    assert layer.model_name == "mano"
    summary, note = note_for(_hand_fit(layer.model_name, layer(hand_pose=torch.zeros(2, 16)).vertices),
                             torch.zeros(2, 1287, 3))
    assert summary["joint"]["mano_topology"] is False
    assert "hand model mano (1287 vertices; ground truth 1287 vertices), not MANO's 778" in note
    assert "not comparable with HO-3D challenge" in note
    # off HO-3D the challenge is not mentioned
    assert "challenge" not in hand_topology_note(summary, "core50")
    # methods on different hand models are named
    mixed = {**summary, "independent": {"hand_models": ["mano"], "hand_vertices": [778], "gt_hand_vertices": [],
                                        "mano_topology": True}}
    assert hand_topology_note(mixed, "ho3d").startswith(
        "hand metrics on joint: hand model mano (1287 vertices; ground truth 1287 vertices), not MANO's 778; "
        "independent: MANO (778 vertices) - not comparable")


def test_eval_title_says_mano_topology(data, two_methods, monkeypatch):
    """The command shows the MANO note in the title of both tables (report from MANO fits)."""
    from hodata.app import evaluate as evaluation

    real = evaluation.evaluate_results

    def as_if_mano(*args, **kwargs):
        report = real(*args, **kwargs)
        report.hand_topology = {m: {"hand_models": ["mano"], "hand_vertices": [778], "gt_hand_vertices": [778],
                                    "mano_topology": True} for m in report.methods}
        return report

    monkeypatch.setattr(evaluation, "evaluate_results", as_if_mano)
    result = runner.invoke(app, ["eval", "ho3d", "--results", str(two_methods / "joint"), "--root", str(data.root),
                                 "--split", "evaluation", "--mesh-cache", str(data.cache), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert text.count("hand metrics on MANO's 778 vertices") == 2 and "not comparable" not in text
