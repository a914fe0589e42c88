"""`hodata evidence`: evidence computed, cached (safely loadable) and drawn; `hodata fit
--evidence-cache` reuses the cache instead of computing again."""

import pytest
import torch
from typer.testing import CliRunner

from hodata.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from hodata.datasets.synthetic import make_synthetic_ho3d

    folder = tmp_path_factory.mktemp("ho3d")
    cache = tmp_path_factory.mktemp("cache")
    make_synthetic_ho3d(folder, sequences=1, frames=4, object_ids=("025_mug",), seed=1, cache_dir=cache)
    return folder, cache


def test_evidence_is_cached_drawn_and_reused(root, tmp_path, monkeypatch):
    data, cache = root
    out = tmp_path / "evidence"
    result = runner.invoke(app, ["evidence", "ho3d", "--root", str(data), "--out", str(out), "--clip-length", "4",
                                 "--stride", "1", "--mesh-cache", str(cache)])
    assert result.exit_code == 0, result.output
    (entry,) = out.glob("*.pt")
    pngs = sorted((out / entry.stem).glob("*.png"))
    assert len(pngs) == 4
    from hodata.app.providers import EvidenceProvider
    from hodata.datasets.ho3d import HO3DDataset
    from hodata.evidence.cache import load_evidence

    clip = HO3DDataset(data, clip_length=4, stride=1, cache_dir=cache)[0]
    provider = EvidenceProvider("gt", "simulated")
    cached = load_evidence(out, clip.clip_id, provider.describe())
    fresh = provider(clip)
    assert torch.equal(cached.object_masks, fresh.object_masks.to(cached.object_masks))
    assert torch.allclose(cached.hands[0].init.transl, fresh.hands[0].init.transl.to(cached.hands[0].init.transl))
    assert cached.provenance == fresh.provenance
    assert load_evidence(out, clip.clip_id, {"evidence": "detected", "hand_init": "keypoints"}) is None

    def no_compute(self, clip):
        raise AssertionError("evidence computed again although it is cached")

    monkeypatch.setattr(EvidenceProvider, "compute", no_compute)
    result = runner.invoke(app, ["fit", "ho3d", "--root", str(data), "--output", str(tmp_path / "fits"),
                                 "--evidence-cache", str(out), "--clip-length", "4", "--stride", "1",
                                 "--steps1", "5", "--steps2", "2", "--hypotheses", "4", "--roi-size", "48",
                                 "--mesh-cache", str(cache), "--evidence", "gt", "--hand-init", "simulated"])
    assert result.exit_code == 0, result.output


def test_damaged_cache_entry_is_one_line(root, tmp_path):
    data, cache = root
    out = tmp_path / "evidence"
    result = runner.invoke(app, ["evidence", "ho3d", "--root", str(data), "--out", str(out), "--clip-length", "4",
                                 "--stride", "1", "--mesh-cache", str(cache), "--no-draw"])
    assert result.exit_code == 0, result.output
    (entry,) = out.glob("*.pt")
    entry.write_bytes(b"garbage")
    result = runner.invoke(app, ["evidence", "ho3d", "--root", str(data), "--out", str(out), "--clip-length", "4",
                                 "--stride", "1", "--mesh-cache", str(cache), "--no-draw"])
    assert result.exit_code == 1 and "unreadable evidence cache entry" in result.output and "delete it" in result.output
