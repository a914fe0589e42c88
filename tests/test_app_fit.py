"""The evidence contract end to end: fitting sees ClipEvidence, an object model and hand layers;
a clip without any ground truth is fitted with detected evidence into shards that say which
providers made them; the layering rules hold (fitting imports no dataset or shards module,
commands never import each other)."""

from __future__ import annotations

import ast
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hodata.cli import app

ROOT = Path(__file__).resolve().parents[1] / "hodata"
runner = CliRunner()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the module's package
                package = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-node.level])
                base = f"{package}.{base}" if base else package
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def test_fitting_imports_no_dataset_shards_or_app_module():
    for path in sorted((ROOT / "fitting").glob("*.py")):
        bad = {n for n in _imports(path) if n.startswith(("hodata.datasets", "hodata.shards", "hodata.app",
                                                          "hodata.commands"))}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_commands_never_import_each_other():
    for path in sorted((ROOT / "commands").glob("*.py")):
        bad = {n for n in _imports(path) if n.startswith("hodata.commands")}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_datasets_register_without_a_cycle():
    for path in sorted((ROOT / "datasets").glob("*.py")):
        if path.name == "__init__.py" or not ("@register_dataset" in path.read_text() or path.stem in ("base", "registry")):
            continue  # generators (synthetic*) build on the HO-3D adapter's helpers on purpose
        adapters = {f"hodata.datasets.{a}" for a in ("ho3d", "core50", "epic")} - {f"hodata.datasets.{path.stem}"}
        through_package = {f"hodata.datasets.{n}" for n in ("register_dataset", "get_adapter", "open_dataset")}
        bad = {n for n in _imports(path) if n in adapters | through_package}
        assert not bad, f"{path.name} imports the package or another adapter: {sorted(bad)}"


@pytest.fixture(scope="module")
def synthetic_clip(tmp_path_factory):
    from hodata.datasets.ho3d import HO3DDataset
    from hodata.datasets.synthetic import make_synthetic_ho3d

    root = tmp_path_factory.mktemp("ho3d")
    cache = tmp_path_factory.mktemp("cache")
    make_synthetic_ho3d(root, sequences=1, frames=6, object_ids=("025_mug",), seed=0, cache_dir=cache)
    ds = HO3DDataset(root, clip_length=6, stride=1, cache_dir=cache)
    clip = ds[0]
    return clip, ds.model_for_clip(clip)


def test_fit_clip_on_a_clip_without_ground_truth(synthetic_clip):
    """Detected evidence (keypoints simulated: MediaPipe cannot see rendered hands) on a clip
    stripped of every annotation: gt_hands empty, no gt object, no masks, no hand boxes."""
    from test_evidence_providers import simulated_detections

    from hodata.app.providers import EvidenceProvider
    from hodata.evidence.detected import detect_clip_evidence
    from hodata.fitting import FitConfig, ObjectInitConfig, fit_clip

    clip, model = synthetic_clip
    detections = simulated_detections(clip, miss=0.0, wrong_side=0.0)
    hints = clip.object_boxes.clone()
    bare = replace(clip, gt_hands=[], gt_object=None, object_masks=None, hand_masks=None, hand_boxes={},
                   object_boxes=None)
    provider = EvidenceProvider("detected", "keypoints")
    evidence = detect_clip_evidence(bare.image_paths, bare.K, ["right"], object_boxes=hints,
                                    hand_detections=detections, hand_provider="simulated", min_frames=1,
                                    layer_for=provider.layer).evidence
    config = FitConfig(steps_stage1=30, steps_stage2=10, roi_size=64)
    init = ObjectInitConfig(n_samples=100, n_hypotheses=8, n_propagate=2, steps_first=20, steps_per_frame=10)
    fits = fit_clip(bare, evidence, model, provider.layers(evidence.sides), config, init, device="cpu")
    fit = fits["joint"]
    assert fit.evidence["hand_init"] == "keypoints:simulated" and fit.evidence["object_masks"] == "grabcut"
    assert fit.hand_init == "keypoints:simulated"
    assert bool(torch.isfinite(fit.hands[0].vertices).all()) and fit.hands[0].vertices.shape[0] == len(clip)
    # the fitted hand lands near the real one although no ground truth went in
    gt = clip.gt_hands[0].vertices
    assert float((fit.hands[0].vertices - gt).norm(dim=-1).mean()) < 0.05


def _core50_root_from_real_frame(shared_data: Path, root: Path, frames: int) -> Path:
    real = shared_data / "core50" / "real"
    folder = root / "core50_350x350" / "s5" / "o33"
    folder.mkdir(parents=True)
    for f in range(frames):
        shutil.copy(real / "C_05_33_179.png", folder / f"C_05_33_{f:03d}.png")
    (root / "bbox" / "s5").mkdir(parents=True)
    box = next(line for line in (real / "core50_bbox_s5_CropC_o33.txt").read_text().splitlines()
               if line.startswith("Color179:"))
    (root / "bbox" / "s5" / "CropC_o33.txt").write_text(
        "".join(f"Color{f:03d}:{box.split(':', 1)[1]}\n" for f in range(frames)))
    return root


def test_fit_core50_end_to_end_with_detected_evidence(shared_data, tmp_path):
    """`hodata fit core50 --category ball` on a Core50 root made of the real frame: no ground
    truth anywhere; MediaPipe hands, the bbox file's box, GrabCut masks, keypoint hand init."""
    pytest.importorskip("mediapipe", reason="MediaPipe is installed by `make setup` (the [hands] extra)")
    root = _core50_root_from_real_frame(shared_data, tmp_path / "core50", frames=4)
    out = tmp_path / "out"
    result = runner.invoke(app, ["fit", "core50", "--root", str(root), "--category", "ball", "--output", str(out),
                                 "--clip-length", "4", "--stride", "1", "--steps1", "20", "--steps2", "5",
                                 "--hypotheses", "4", "--roi-size", "64", "--mesh-cache", str(tmp_path / "cache"),
                                 "--methods", "joint,independent"])
    assert result.exit_code == 0, result.output
    assert "evidence detected, hand init keypoints" in result.output
    manifest = json.loads((out / "joint" / "manifest.json").read_text())
    assert manifest["config"]["dataset"] == "core50"
    assert manifest["config"]["evidence"] == "detected" and manifest["config"]["hand_init"] == "keypoints"
    assert manifest["config"]["fit"]["optimise_object_scale"] is True
    from hodata.shards import load

    samples = list(load(out / "joint"))
    assert len(samples) == 4
    meta = samples[0]["meta"] if "meta" in samples[0] else json.loads(samples[0]["json"])
    assert meta["dataset"] == "core50" and meta["sequence"] == "s5_o33" and meta["frame"] == "000"
    assert meta["hand_init"] == "keypoints:mediapipe" and meta["hand_sides"] == ["right"]
    assert meta["evidence"]["object_masks"] == "grabcut" and meta["evidence"]["object_boxes"] == "hints+motpy"
    assert meta["objects"][0]["category"] == "ball"


def test_pointrend_without_detectron2_is_one_line():
    """The optional PointRend provider is never faked here; without detectron2 it says what to
    install or to use files:DIR instead."""
    import importlib.util

    import numpy as np

    from hodata.errors import HodataError
    from hodata.evidence.pointrend import pointrend_object_targets

    if importlib.util.find_spec("detectron2") is not None:
        pytest.skip("detectron2 is installed: this checks the message for its absence")
    with pytest.raises(HodataError, match="needs detectron2"):
        pointrend_object_targets([np.zeros((4, 4, 3), np.uint8)], torch.zeros(1, 4), torch.zeros(1, 4, 4, dtype=torch.bool),
                                 torch.zeros(1, 4, 4), "cfg.yaml", "w.pkl")
    from hodata.app.providers import EVIDENCE_CHOICES, parse_spec

    with pytest.raises(HodataError, match="config and weights"):
        parse_spec("pointrend:cfg.yaml", EVIDENCE_CHOICES, "--evidence")
