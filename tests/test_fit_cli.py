"""`hodata fit` end to end on a tiny synthetic HO-3D set: shards per method, resume, and a
broken frame skipped with a message naming it while the other clips go on."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from hodata.cli import app
from hodata.datasets.synthetic import make_synthetic_ho3d

runner = CliRunner()


def test_fit_writes_shards_resumes_and_skips_bad_clips(tmp_path):
    cache = tmp_path / "cache"
    root = make_synthetic_ho3d(tmp_path / "ho3d", sequences=1, frames=8, image_size=(96, 128), object_ids=("025_mug",),
                               cache_dir=cache, seed=1)
    (root / "train" / "SYN0" / "meta" / "0006.pkl").write_bytes(b"not a pickle")  # breaks the second clip
    out = tmp_path / "out"
    args = ["fit", "ho3d", "--root", str(root), "--output", str(out), "--methods", "joint,independent",
            "--clip-length", "4", "--stride", "1", "--steps1", "3", "--steps2", "2", "--hypotheses", "4",
            "--mesh-cache", str(cache)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output  # exit 1: a clip was unreadable (rule in `hodata fit --help`)
    assert "fitted 1 clip(s)" in result.output and "unreadable 1" in result.output
    assert "0006" in result.output  # the broken frame is named
    for method in ("joint", "independent"):
        manifest = json.loads((out / method / "manifest.json").read_text())
        assert list(manifest["clips"]) == ["synthetic_SYN0_0000"]
        assert sum(s["samples"] for s in manifest["shards"]) == 4
    assert manifest["config"]["root"] == str(root.resolve()) and manifest["config"]["split"] == "train"
    evaluated = runner.invoke(app, ["eval", "ho3d", "--results", str(out), "--mesh-cache", str(cache)])
    assert evaluated.exit_code == 0, evaluated.output  # root and split come from the manifest
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"joint", "independent"} and metrics["joint"]["frames"] == 4
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "resumed 1" in again.output
    assert len(list((out / "joint").glob("*.tar"))) == 1  # nothing written twice


def test_fit_unknown_dataset_is_one_line(tmp_path):
    result = runner.invoke(app, ["fit", "no-such-dataset", "--root", str(tmp_path)])
    assert result.exit_code == 2 and result.output.startswith("error:") and "ho3d" in result.output
