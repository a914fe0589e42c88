"""Batched clips (issue 14, item 3): B clips fitted side by side in one problem give the fits
they get one by one, a clip's fit does not depend on the others of its batch, a diverging clip
fails alone, and `hodata fit --batch-clips` writes the same labels as the unbatched run.

Tolerances (measured, bench/RESULTS.md "Batched clips"): float64, vertices within 1e-9 m of
the unbatched fit (measured 1e-16: every row is computed by the same operations); float32
within 0.5 mm (measured 6e-8 to 5e-5 m: batched kernels round differently, and a rounding
difference can flip a discrete choice, such as a tracked nearest face, that the fit then follows).
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from hodata.cli import app
from hodata.errors import HodataError
from hodata.evidence.gt import gt_clip_evidence
from hodata.fitting import FitConfig, ObjectInitConfig
from hodata.fitting.batched import batch_key, fit_batch, fit_clips, fit_prepared_clips, group_batches, stack_clips
from hodata.fitting.pipeline import fit_prepared, prepare_clip

METHODS = ("independent", "joint")
FLOAT64_M = 1e-9
FLOAT32_M = 5e-4
runner = CliRunner()


def _configs(steps1=10, steps2=6):
    init = ObjectInitConfig(n_samples=40, n_hypotheses=4, n_propagate=2, steps_first=8, steps_per_frame=4)
    # hand_sdf_refresh 3: two exact searches of the hand SDF in stage 2 and tracked steps in between
    # one hand start: several are chosen per clip and refused with batched clips
    return FitConfig(steps_stage1=steps1, steps_stage2=steps2, roi_size=32, hand_sdf_refresh=3,
                     hand_starts=("init",)), init


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A synthetic HO-3D set of four sequences of one object, 4 frames each: (root, mesh cache)."""
    from hodata.datasets.synthetic import make_synthetic_ho3d

    root = tmp_path_factory.mktemp("synthetic")
    cache = tmp_path_factory.mktemp("cache")
    make_synthetic_ho3d(root, sequences=4, frames=4, object_ids=("025_mug",), seed=3, cache_dir=cache,
                        image_size=(96, 128))
    return root, cache


@pytest.fixture(scope="module")
def clips(dataset):
    """Its four clips with simulated hand inits: (clip, evidence, object model, hand layers)."""
    from hodata.datasets.ho3d import HO3DDataset
    from hodata.evidence.hand_init import SimulatedHandEstimator

    root, cache = dataset
    ds = HO3DDataset(root, clip_length=4, stride=1, cache_dir=cache)
    estimator = SimulatedHandEstimator(seed=0)
    items = []
    for i in range(len(ds)):
        clip = ds[i]
        inits = estimator(clip)
        layer = estimator.layer("right", clip.gt_hands[0].model_name, torch.float32, torch.device("cpu"))
        items.append((clip, gt_clip_evidence(clip, lambda _, inits=inits: inits), ds.model_for_clip(clip),
                      {"right": layer}))
    assert len(items) == 4
    return items


@pytest.fixture(scope="module")
def prepared64(clips):
    config, init = _configs()
    return [prepare_clip(*item, config, init, torch.device("cpu"), 0, torch.float64) for item in clips]


@pytest.fixture(scope="module")
def alone64(prepared64):
    config, _ = _configs()
    return [fit_prepared(p, config, METHODS) for p in prepared64]


def _largest_difference(a, b) -> float:
    """Largest absolute difference (metres) of the hand vertices, joints and object vertices of two fits."""
    pairs = [(x.vertices, y.vertices) for x, y in zip(a.hands, b.hands)]
    pairs += [(x.joints, y.joints) for x, y in zip(a.hands, b.hands)]
    pairs += [(x.vertices, y.vertices) for x, y in zip(a.objects, b.objects)]
    return max(float((x - y).abs().max()) for x, y in pairs)


def _assert_same_fit(a, b, tolerance):
    assert a.clip_id == b.clip_id and a.method == b.method
    assert _largest_difference(a, b) < tolerance
    assert set(a.losses) == set(b.losses) and set(a.loss_history) >= {k for k in b.loss_history if "/" in k}
    for name, value in a.losses.items():
        assert math.isclose(value, b.losses[name], rel_tol=1e-6, abs_tol=1e-9), name
    for key in ("stage2/total", "independent/total"):
        if key in a.loss_history:  # each clip keeps its own loss history, not the batch's sum
            assert len(a.loss_history[key]) == len(b.loss_history[key])
            assert max(abs(x - y) for x, y in zip(a.loss_history[key], b.loss_history[key])) < 1e-6
    assert a.flags == b.flags
    assert a.quality["clip_score"] == pytest.approx(b.quality["clip_score"], abs=1e-6)


def test_four_batched_clips_give_the_fits_of_four_clips_alone_float64(prepared64, alone64):
    config, _ = _configs()
    batched = fit_batch(prepared64, config, METHODS)
    assert batched is not None and len(batched) == 4
    for alone, together in zip(alone64, batched):
        for m in METHODS:
            _assert_same_fit(together[m], alone[m], FLOAT64_M)
    # the clips really differ (a batch of copies would pass the comparison trivially)
    assert _largest_difference(batched[0]["joint"], batched[1]["joint"]) > 0.01


def test_four_batched_clips_match_alone_in_float32(clips):
    config, init = _configs(steps1=8, steps2=8)
    items = clips
    alone = [fit_prepared(prepare_clip(*item, config, init, torch.device("cpu"), 0, torch.float32), config, ("joint",))
             for item in items]
    together = fit_clips(items, config, init, ("joint",), device="cpu", batch_clips=4)
    for a, b in zip(alone, together):
        assert not isinstance(b, Exception), b
        assert _largest_difference(a["joint"], b["joint"]) < FLOAT32_M


def test_a_clips_fit_does_not_change_with_the_other_clips_of_its_batch(prepared64, alone64):
    config, _ = _configs()
    first = prepared64[0]
    # other company: the remaining clips in another order, their hand inits moved by 2 cm
    others = []
    for p in reversed(prepared64[1:]):
        moved = [replace(e, init=replace(e.init, transl=e.init.transl + 0.02)) for e in p.hand_evidence]
        others.append(replace(p, hand_evidence=moved))
    batched = fit_batch([others[0], first, others[1]], config, ("joint",))
    assert batched is not None
    assert _largest_difference(batched[1]["joint"], alone64[0]["joint"]) < FLOAT64_M
    # the moved clips did change
    assert _largest_difference(batched[0]["joint"], alone64[3]["joint"]) > 1e-4


def test_a_diverging_clip_fails_alone_and_the_others_keep_their_fits(prepared64, alone64):
    config, _ = _configs()
    broken_target = prepared64[2].evidence.target.clone()
    broken_target[0, 0, 0] = math.nan
    broken = replace(prepared64[2], evidence=replace(prepared64[2].evidence, target=broken_target))
    batch = [prepared64[0], broken, prepared64[3]]
    assert fit_batch(batch, config, ("joint",)) is None  # the batch met a non-finite loss
    results = fit_prepared_clips(batch, config, ("joint",), batch_clips=4)  # ... so it is fitted one by one
    assert results[1]["joint"].flags["nonfinite_optimiser"]
    for i, alone in ((0, alone64[0]), (2, alone64[3])):
        assert not results[i]["joint"].flags["nonfinite_optimiser"]
        assert _largest_difference(results[i]["joint"], alone["joint"]) < FLOAT64_M


def test_clips_are_batched_only_with_clips_sharing_model_hands_and_length(prepared64):
    other_model = replace(prepared64[2], evidence=replace(prepared64[2].evidence, model_id="other"))
    prepared = [prepared64[0], prepared64[1], other_model, prepared64[3]]
    assert batch_key(prepared64[0]) == batch_key(prepared64[1]) != batch_key(other_model)
    assert group_batches(prepared, 2) == [[0, 1], [3], [2]]
    assert group_batches(prepared, 4) == [[0, 1, 3], [2]]
    with pytest.raises(ValueError, match="share"):
        stack_clips(prepared)
    stacked = stack_clips(prepared64)
    assert stacked.K.shape == (16, 3, 3) and stacked.image_size.tolist() == [[96.0, 128.0]] * 4
    assert stacked.hand_evidence[0].init.betas.shape == (4, 10)
    assert stacked.object_evidence.target.shape[0] == 16


def test_object_pose_candidates_are_refused_with_batched_clips(clips):
    config, init = _configs()
    with pytest.raises(HodataError, match="candidates"):
        fit_clips(clips, replace(config, object_candidates=4), init, ("joint",), device="cpu", batch_clips=4)


def test_hand_starts_are_refused_with_batched_clips(clips, dataset, tmp_path):
    config, init = _configs()
    with pytest.raises(HodataError, match="hand starts"):
        fit_clips(clips, replace(config, hand_starts=("init", "fitted")), init, ("joint",), device="cpu", batch_clips=4)
    with pytest.raises(HodataError, match="hand starts"):  # one start that is not the init, too
        fit_clips(clips, replace(config, hand_starts=("fitted",)), init, ("joint",), device="cpu", batch_clips=4)
    root, cache = dataset
    result = runner.invoke(app, ["fit", "ho3d", "--root", str(root), "--max-clips", "2", "--batch-clips", "2",
                                 "--mesh-cache", str(cache), "--output", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 2 and "--hand-starts init" in result.output, result.output


def test_a_clip_whose_evidence_fails_is_dropped_from_its_batch(clips):
    from hodata.app.fit import fit_clip_batch

    config, init = _configs(steps1=2, steps2=2)
    by_id = {item[0].clip_id: item for item in clips}

    def evidence_for(clip):
        if clip.clip_id == clips[1][0].clip_id:
            raise OSError("frame 0002 unreadable")
        return by_id[clip.clip_id][1]

    outcomes = fit_clip_batch([item[0] for item in clips], lambda c: by_id[c.clip_id][2], evidence_for,
                              lambda sides: clips[0][3], ("joint",), config, init, device="cpu", save_frames=False,
                              batch_clips=4)
    assert [o.clip_id for o in outcomes] == [item[0].clip_id for item in clips]
    assert outcomes[1].problems == ["OSError: frame 0002 unreadable"] and not outcomes[1].fits
    for i in (0, 2, 3):
        assert not outcomes[i].problems and set(outcomes[i].fits) == {"joint"}


def test_fit_cli_batch_clips_writes_the_labels_of_the_unbatched_run(dataset, tmp_path):
    from hodata.shards.reader import fit_results_from_shards

    root, cache = dataset
    common = ["fit", "ho3d", "--root", str(root), "--max-clips", "3", "--methods", "joint", "--clip-length", "4",
              "--stride", "1", "--steps1", "4", "--steps2", "3", "--hypotheses", "3", "--roi-size", "32",
              "--mesh-cache", str(cache), "--no-save-frames", "--device", "cpu", "--hand-starts", "init"]
    alone = runner.invoke(app, common + ["--output", str(tmp_path / "alone")])
    assert alone.exit_code == 0, alone.output
    # batches of 2 over 3 clips: one batch of two, the third fitted at the end
    batched = runner.invoke(app, common + ["--output", str(tmp_path / "batched"), "--batch-clips", "2"])
    assert batched.exit_code == 0, batched.output
    assert "fitted 3 clip(s)" in batched.output
    for method in ("joint",):
        a = fit_results_from_shards(tmp_path / "alone" / method)
        b = fit_results_from_shards(tmp_path / "batched" / method)
        assert sorted(a) == sorted(b) and len(a) == 3
        for clip_id in a:
            assert _largest_difference(a[clip_id], b[clip_id]) < FLOAT32_M
    again = runner.invoke(app, common + ["--output", str(tmp_path / "batched"), "--batch-clips", "2"])
    assert again.exit_code == 0 and "resumed 3" in again.output  # resume is unchanged


def test_fit_cli_batch_clips_refuses_ray_in_one_line(tmp_path):
    result = runner.invoke(app, ["fit", "ho3d", "--root", str(tmp_path), "--batch-clips", "2", "--workers", "2"])
    assert result.exit_code == 2 and result.output.startswith("error:") and "--batch-clips" in result.output
    assert len(result.output.strip().splitlines()) == 1
    help_text = runner.invoke(app, ["fit", "--help"]).output
    assert "--batch-clips" in help_text


def test_fit_dataset_batches_clips_by_what_they_share_and_bounds_the_waiting(tmp_path, monkeypatch):
    import hodata.app.fit as app_fit
    from hodata.types import Clip

    batches = []

    def record(clips, *args, **kwargs):
        batches.append([c.clip_id for c in clips])
        return [app_fit.ClipOutcome(c.clip_id, problems=["not fitted (stub)"]) for c in clips]

    monkeypatch.setattr(app_fit, "fit_clip_batch", record)

    def clip(sequence, model, frames=4):
        return Clip("synthetic", sequence, [f"{i:04d}" for i in range(frames)], [], torch.eye(3), (8, 8), model,
                    ["right"])

    clips = [clip("a0", "mug"), clip("b0", "box"), clip("a1", "mug"), clip("c0", "can"), clip("b1", "box", 6),
             clip("d0", "bowl"), clip("d1", "bowl"), clip("e0", "cup"), clip("f0", "plate")]
    summary = app_fit.fit_dataset(clips, None, None, None, tmp_path / "out", batch_clips=2,
                                  config=FitConfig(hand_starts=("init",)))
    ids = [c.clip_id for c in clips]
    assert sorted(sum(batches, [])) == sorted(ids) and set(summary.failed) == set(ids)  # every clip once
    # a batch holds one object model and frame count; a full group is fitted when it fills
    assert batches[0] == ["synthetic_a0_0000", "synthetic_a1_0000"]
    assert all(len({c.split("_")[1][0] for c in b}) == 1 and len(b) <= 2 for b in batches)
    assert batches[1] == ["synthetic_d0_0000", "synthetic_d1_0000"]
    # f0 makes 5 clips wait (> 2 B): the fullest group, the first of equals (b0), is fitted as it is
    assert batches[2] == ["synthetic_b0_0000"] and len(batches) == 7
    # b0 (box, 4 frames) and b1 (box, 6 frames) never share a batch
    assert not any({"synthetic_b0_0000", "synthetic_b1_0000"} <= set(b) for b in batches)
    with pytest.raises(HodataError, match="--batch-clips"):
        app_fit.fit_dataset(clips, None, None, None, tmp_path / "out2", batch_clips=2, parallel=object(),
                            config=FitConfig(hand_starts=("init",)))
