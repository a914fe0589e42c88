"""`hodata prep-meshes` end to end through the Typer app."""

from __future__ import annotations

import json

import trimesh
from typer.testing import CliRunner

from hodata.cli import app

runner = CliRunner()


def test_prep_meshes_reports_failures_and_continues(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    trimesh.creation.box((0.05, 0.04, 0.03)).export(inputs / "box.obj")
    (inputs / "broken.obj").write_text("not a mesh at all\n")
    cache = tmp_path / "cache"
    result = runner.invoke(app, ["prep-meshes", str(inputs), "--cache", str(cache), "--sdf-resolution", "16"])
    assert result.exit_code == 1, result.output
    assert "1 prepared, 0 cached, 1 failed" in result.output
    assert "FAILED broken" in result.output and "broken.obj" in result.output
    meta = json.loads((cache / "box" / "meta.json").read_text())
    assert meta["watertight"] and abs(meta["vertices"] - 1000) <= 50
    assert not (cache / "broken").exists()

    again = runner.invoke(app, ["prep-meshes", str(inputs / "box.obj"), "--cache", str(cache), "--sdf-resolution", "16"])
    assert again.exit_code == 0, again.output
    assert "0 prepared, 1 cached, 0 failed" in again.output


def test_prep_meshes_missing_path_fails(tmp_path):
    result = runner.invoke(app, ["prep-meshes", str(tmp_path / "nope.ply"), "--cache", str(tmp_path / "c")])
    assert result.exit_code == 1 and "nope.ply" in result.output


def test_prep_meshes_help_documents_options():
    result = runner.invoke(app, ["prep-meshes", "--help"])
    assert result.exit_code == 0
    for option in ("--cache", "--vertices", "--sdf-resolution", "--workers", "--force"):
        assert option in result.output
