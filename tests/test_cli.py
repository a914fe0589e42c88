from typer.testing import CliRunner

import hodata
from hodata.cli import app

runner = CliRunner()


def test_help_and_version():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "info" in result.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and hodata.__version__ in result.output


def test_info_reports_hand_model_and_cache(tmp_path):
    result = runner.invoke(app, ["info", "--mano-dir", str(tmp_path), "--cache", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "hand model" in result.output and "open hand" in result.output
    assert "mesh cache" in result.output
