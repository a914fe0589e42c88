"""Label quality in shards: the writer stores the score fitting computed, the reader filters on it."""

from __future__ import annotations

import math

import pytest

from hodata.errors import HodataError
from hodata.fitting import quality as Q
from hodata.shards import ShardWriter, fit_results_from_shards, frame_qualities, load, sample_quality
from test_shards import make_fit


def _with_quality(fit, frame_scores_iou, flags=None):
    """A fit carrying a quality record made by hodata.fitting.quality from mask IoUs alone."""
    fit.flags.update(flags or {})
    fit.quality = Q.label_quality({"mask_iou": frame_scores_iou, "loss_change": 0.0}, len(fit.frame_ids), fit.flags,
                                  weights={"mask_iou": 4.0}, intercept=1.0)
    return fit


def _sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def test_writer_stores_the_fits_score_and_signals_per_frame():
    fit = _with_quality(make_fit(0, T=3), [1.0, 0.75, 0.5])
    entries = frame_qualities(fit)
    expected = [_sigmoid(1.0), _sigmoid(0.0), _sigmoid(-1.0)]  # sigmoid(1 - 4 (1 - IoU))
    assert [e["score"] for e in entries] == pytest.approx(expected)
    assert all(e["clip_score"] == pytest.approx(fit.quality["clip_score"]) for e in entries)
    assert [e["signals"]["mask_iou"] for e in entries] == [1.0, 0.75, 0.5]
    assert entries[1]["basis"] == ["fit", "mask_iou", "loss_change"] and entries[0]["version"] == Q.QUALITY_VERSION
    # an explicit score still overrides; a flag raised after fitting halves once more
    assert [e["score"] for e in frame_qualities(fit, {"score": 0.25})] == [0.25] * 3
    fit.losses["v2d"] = float("nan")  # -> nonfinite_loss, not counted by fitting
    assert [e["score"] for e in frame_qualities(fit)] == pytest.approx([0.5 * v for v in expected])


def test_flags_counted_in_fitting_are_not_counted_again():
    fit = _with_quality(make_fit(0, T=2), [1.0, 1.0], flags={"nonfinite_optimiser": True})
    assert fit.quality["score"] == pytest.approx([0.5 * _sigmoid(1.0)] * 2)
    assert [e["score"] for e in frame_qualities(fit)] == pytest.approx([0.5 * _sigmoid(1.0)] * 2)


def test_load_min_quality_keeps_exactly_the_samples_at_or_above_q(tmp_path):
    new = _with_quality(make_fit(0, T=4), [1.0, 0.75, 0.5, 0.25])    # scores sigmoid(1, 0, -1, -2)
    legacy = make_fit(1, T=3)                                          # no quality record: the earlier formula
    with ShardWriter(tmp_path, worker_id=0) as writer:
        writer.write_clip(new)
        writer.write_clip(legacy, quality={"mask_iou": [0.9, 0.4, 0.6]})
    everything = {s["__key__"]: sample_quality(s["meta"]) for s in load(tmp_path)}
    assert len(everything) == 7
    legacy_scores = sorted(v for k, v in everything.items() if k.startswith("ho3d_ABF10_0001"))
    assert legacy_scores == pytest.approx([0.4, 0.6, 0.9])  # IoU alone: no v2d measure, no flag raised
    for q in (0.0, _sigmoid(-1.0), 0.5, 0.6, 1.0):
        kept = sorted(s["__key__"] for s in load(tmp_path, min_quality=q))
        assert kept == sorted(k for k, v in everything.items() if v >= q), q
    boundary = sorted(everything.values())[3]                      # a score itself: kept (>=)
    assert len(list(load(tmp_path, min_quality=boundary))) == 4
    assert load(tmp_path).num_samples == 7 and load(tmp_path, min_quality=0.5).num_samples is None
    with pytest.raises(HodataError, match="min_quality"):
        load(tmp_path, min_quality=1.5)


def test_legacy_scores_and_records_read_back(tmp_path):
    new = _with_quality(make_fit(0, T=3), [1.0, 0.75, 0.5])
    legacy = make_fit(1, T=2)
    with ShardWriter(tmp_path, worker_id=0) as writer:
        writer.write_clip(new)
        writer.write_clip(legacy, quality={"mask_iou": [0.8, 0.4]})
    legacy_meta = sorted((s["__key__"], s["meta"]["quality"]) for s in load(tmp_path)
                         if s["meta"]["clip_id"] == legacy.clip_id)
    # the earlier formula, v2d absent: IoU x 0.5 ** raised flags (none raised)
    assert [m["score"] for _, m in legacy_meta] == pytest.approx([0.8, 0.4])
    assert all("signals" not in m for _, m in legacy_meta)
    fits = fit_results_from_shards(tmp_path)
    assert fits[legacy.clip_id].quality == {}
    back = fits[new.clip_id].quality
    assert back["score"] == pytest.approx(new.quality["score"]) and back["clip_score"] == pytest.approx(
        new.quality["clip_score"])
    assert back["signals"]["mask_iou"] == [1.0, 0.75, 0.5]
