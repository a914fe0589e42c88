"""Shards: writer -> tar + manifest -> reader / DataLoader / FitResult, plus damage and resume."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hodata.errors import HodataError
from hodata.shards import (
    ShardWriter,
    collate_hand_object,
    done_clips,
    fit_results_from_shards,
    frame_qualities,
    load,
    read_manifest,
    sample_key,
)
from hodata.shards.reader import read_npz
from hodata.types import FitResult, HandState, ObjectState

TESTS_DIR = Path(__file__).resolve().parent


def make_fit(index: int, T: int = 4, sides=("right", "left"), sequence: str = "ABF10", method: str = "joint",
             seed: int = 0, frame_start: int | None = None) -> FitResult:
    """A FitResult of random tensors with a mix of dtypes, pose spaces and shared fields."""
    g = torch.Generator().manual_seed(seed * 1000 + index)
    start = index * 100 if frame_start is None else frame_start
    frame_ids = [f"{start + t:04d}" for t in range(T)]
    hands = []
    for side in sides:
        right = side == "right"
        hands.append(HandState(
            side=side,
            vertices=torch.randn(T, 778, 3, generator=g),
            joints=torch.randn(T, 21, 3, generator=g),
            global_orient=torch.randn(T, 3, 3, generator=g, dtype=torch.float64),
            hand_pose=torch.randn(T, 45 if right else 16, generator=g),
            pose_space="axis_angle" if right else "pca",
            betas=torch.randn(10, generator=g) if right else torch.randn(T, 10, generator=g),
            transl=torch.randn(T, 3, generator=g),
            scale=torch.rand((), generator=g) + 0.5,
            model_name="open-hand-v1",
        ))
    objects = [
        ObjectState(model_id="003_cracker_box", rotation=torch.randn(T, 3, 3, generator=g),
                    translation=torch.randn(T, 3, generator=g), scale=1.25,
                    vertices=torch.randn(T, 50, 3, generator=g), category="box"),
        ObjectState(model_id="mug.v2", rotation=torch.randn(T, 3, 3, generator=g, dtype=torch.float64),
                    translation=torch.randn(T, 3, generator=g, dtype=torch.float64),
                    scale=torch.tensor(0.9, dtype=torch.float64)),
    ]
    return FitResult(
        clip_id=f"ho3d_{sequence}_{frame_ids[0]}", dataset="ho3d", sequence=sequence, frame_ids=frame_ids,
        K=torch.tensor([[600.0, 0, 320], [0, 600.0, 240], [0, 0, 1]]), image_size=(24, 32),
        hands=hands, objects=objects, method=method,
        losses={"obj": 0.25, "v2d": 3.5, "collision": 0.0},
        loss_history={"obj": [1.0, 0.5, 0.25], "v2d": [9.0, 4.0, 3.5]},
        flags={"not_converged": False}, hand_init="simulated",
    )


def smooth_images(T: int, H: int = 24, W: int = 32, seed: int = 0) -> torch.Tensor:
    """(T, H, W, 3) uint8 gradients: JPEG keeps them within a few grey levels."""
    y, x = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    frames = [torch.stack([x * 6 + t * 10 + seed, y * 8, (x + y) * 3], -1) for t in range(T)]
    return torch.stack(frames).clamp(0, 255).to(torch.uint8)


def random_masks(T: int, H: int = 24, W: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 3, (T, H, W), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def write_clips(out: Path, fits, **kwargs) -> ShardWriter:
    with ShardWriter(out, **kwargs) as writer:
        for fit in fits:
            writer.write_clip(fit)
    return writer


def keys_of(dataset) -> list[str]:
    return [s["__key__"] for s in dataset]


# ----------------------------------------------------------------------------- round trip


def test_round_trip_every_array_and_field(tmp_path):
    fit = make_fit(0, T=3)
    images, masks = smooth_images(3), random_masks(3)
    with ShardWriter(tmp_path, worker_id=0, config={"steps": 200}) as writer:
        assert writer.write_clip(fit, images=images, masks=masks, quality={"mask_iou": [0.9, 0.8, 0.7]}) == 3
    samples = sorted(load(tmp_path, decode_images=True), key=lambda s: s["__key__"])
    assert [s["__key__"] for s in samples] == ["ho3d_ABF10_000000", "ho3d_ABF10_000001", "ho3d_ABF10_000002"]
    for t, s in enumerate(samples):
        for hand in fit.hands:
            p = hand.side
            for name in ("vertices", "joints", "global_orient", "hand_pose", "transl"):
                expected = getattr(hand, name)[t]
                assert s[f"{p}_{name}"].dtype == expected.dtype and torch.equal(s[f"{p}_{name}"], expected)
            betas = hand.betas if hand.betas.ndim == 1 else hand.betas[t]
            assert torch.equal(s[f"{p}_betas"], betas) and s[f"{p}_scale"].shape == ()
            assert torch.equal(s[f"{p}_scale"], hand.scale)
            assert s[f"{p}_pose_space"] == hand.pose_space and s[f"{p}_model_name"] == "open-hand-v1"
        assert s["right_vertices"].shape == (778, 3) and s["left_joints"].shape == (21, 3)
        box, mug = fit.objects
        assert torch.equal(s["object_rotation"], box.rotation[t]) and torch.equal(s["object_vertices"], box.vertices[t])
        assert s["object_scale"].dtype == torch.float32 and float(s["object_scale"]) == 1.25
        assert s["object1_translation"].dtype == torch.float64
        assert torch.equal(s["object1_translation"], mug.translation[t]) and torch.equal(s["object1_scale"], mug.scale)
        assert "object1_vertices" not in s and s["object1_model_id"] == "mug.v2"
        assert torch.equal(s["K"], fit.K) and s["image_size"].tolist() == [24, 32]
        assert torch.equal(s["png"], masks[t])
        assert s["jpg"].shape == (24, 32, 3) and (s["jpg"].float() - images[t].float()).abs().mean() < 3
        meta = s["meta"]
        assert meta["frame"] == fit.frame_ids[t] and meta["frame_index"] == t and meta["clip_id"] == fit.clip_id
        assert meta["camera"] == {"K": fit.K.tolist(), "image_size": [24, 32]}
        assert meta["hand_sides"] == ["right", "left"] and meta["hand_model"] == "open-hand-v1"
        assert meta["hand_init"] == "simulated" and meta["method"] == "joint" and meta["losses"] == fit.losses
        assert [(o["model_id"], o["category"], o["scale"]) for o in meta["objects"]] == [
            ("003_cracker_box", "box", 1.25), ("mug.v2", None, 0.9)]
        assert meta["quality"]["mask_iou"] == pytest.approx([0.9, 0.8, 0.7][t])
        assert ("loss_history" in meta) == (t == 0)
    manifest = read_manifest(tmp_path)
    assert manifest["config"] == {"steps": 200} and manifest["hodata_version"]
    assert manifest["clips"] == {fit.clip_id: {"shard": "shard-w0-000000.tar", "samples": 3}}


def test_fit_results_from_shards_rebuilds_fit(tmp_path):
    fits = [make_fit(i, T=3 + i) for i in range(2)]
    write_clips(tmp_path, fits, worker_id=0)
    rebuilt = fit_results_from_shards(tmp_path)
    assert sorted(rebuilt) == sorted(f.clip_id for f in fits)
    for fit in fits:
        back = rebuilt[fit.clip_id]
        for name in ("dataset", "sequence", "frame_ids", "method", "losses", "loss_history", "flags", "hand_init"):
            assert getattr(back, name) == getattr(fit, name), name
        assert tuple(back.image_size) == fit.image_size and torch.equal(back.K, fit.K)
        for h, hb in zip(fit.hands, back.hands):
            for name in ("vertices", "joints", "global_orient", "hand_pose", "betas", "transl", "scale"):
                a, b = getattr(h, name), getattr(hb, name)
                assert a.dtype == b.dtype and torch.equal(a, b), name
            assert (hb.side, hb.pose_space, hb.model_name) == (h.side, h.pose_space, h.model_name)
        for o, ob in zip(fit.objects, back.objects):
            assert torch.equal(o.rotation, ob.rotation) and torch.equal(o.translation, ob.translation)
            assert float(ob.scale) == float(o.scale) and (ob.model_id, ob.category) == (o.model_id, o.category)
        assert torch.equal(back.objects[0].vertices, fit.objects[0].vertices) and back.objects[1].vertices is None


def test_sample_keys_are_dot_free_and_zero_padded():
    assert sample_key("ho3d", "ABF10", "0012") == "ho3d_ABF10_000012"
    assert sample_key("epic", "P01_01", 7) == "epic_P01_01_000007"
    assert sample_key("core50", "s1/o.3", "frame.7") == "core50_s1-o-3_frame-7"


def test_quality_score_formula_flags_and_explicit_scores():
    fit = make_fit(0, T=2)
    q = frame_qualities(fit, {"mask_iou": 0.8, "v2d_px": [10.0, 0.0], "flags": {"hand_lost": [False, True]}})
    assert q[0]["score"] == pytest.approx(0.8 * math.exp(-0.5))
    assert q[1]["score"] == pytest.approx(0.8 * 0.5) and q[1]["raised"] == ["hand_lost"]
    assert q[0]["basis"] == ["mask_iou", "v2d_px", "flags"]
    fit.losses["obj"] = float("nan")
    q = frame_qualities(fit, {"score": [0.3, 1.0]})
    assert [e["score"] for e in q] == [0.3, 1.0] and q[0]["flags"]["nonfinite_loss"] and q[0]["basis"] == ["explicit"]
    q = frame_qualities(fit)
    assert q[0]["score"] == pytest.approx(0.5) and q[0]["raised"] == ["nonfinite_loss"]
    with pytest.raises(ValueError):
        frame_qualities(fit, {"score": 1.5})
    with pytest.raises(ValueError):
        frame_qualities(fit, {"mask_iou": [0.5, 0.5, 0.5]})


def test_nonfinite_loss_is_stored_as_null_in_strict_json(tmp_path):
    fit = make_fit(0, T=2)
    fit.losses["obj"] = float("inf")
    write_clips(tmp_path, [fit], worker_id=0)
    with tarfile.open(tmp_path / "shard-w0-000000.tar") as tf:
        raw = tf.extractfile("ho3d_ABF10_000000.json").read().decode()
    meta = json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert meta["losses"]["obj"] is None and meta["quality"]["score"] == 0.5


# ----------------------------------------------------------------------------- shards and loaders


def test_bounds_keep_clips_whole_and_manifest_matches_files(tmp_path):
    fits = [make_fit(i, T=4, sides=("right",)) for i in range(5)]
    write_clips(tmp_path, fits, worker_id=3, max_samples=10)
    manifest = read_manifest(tmp_path)
    assert [s["name"] for s in manifest["shards"]] == [f"shard-w3-00000{i}.tar" for i in range(3)]
    assert [s["samples"] for s in manifest["shards"]] == [8, 8, 4] and manifest["num_samples"] == 20
    for entry in manifest["shards"]:
        path = tmp_path / entry["name"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"] and path.stat().st_size == entry["bytes"]
        keys = {s["__key__"] for s in load([path])}
        assert keys == {sample_key("ho3d", "ABF10", f) for c in entry["clips"] for f in
                        next(f for f in fits if f.clip_id == c).frame_ids}
    assert not list(tmp_path.glob(".tmp-*"))

    by_bytes = tmp_path / "bytes"
    one_clip = (tmp_path / "shard-w3-000002.tar").stat().st_size  # 4 samples
    write_clips(by_bytes, fits, worker_id=0, max_bytes=int(one_clip * 2.5))
    sizes = [p.stat().st_size for p in sorted(by_bytes.glob("*.tar"))]
    assert len(sizes) == 3 and max(sizes) <= one_clip * 2.5 and done_clips(by_bytes) == {f.clip_id for f in fits}


def test_dataloader_two_workers_reads_each_sample_once(tmp_path):
    fits = [make_fit(i, T=5, sides=("right",) if i % 2 else ("right", "left")) for i in range(6)]
    write_clips(tmp_path, fits, worker_id=0, max_samples=10)
    assert len(read_manifest(tmp_path)["shards"]) == 3
    dataset = load(tmp_path)
    assert dataset.num_samples == 30
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_hand_object)
    keys = [k for batch in loader for k in batch["__key__"]]
    expected = {sample_key("ho3d", "ABF10", f) for fit in fits for f in fit.frame_ids}
    assert len(keys) == 30 and set(keys) == expected
    pattern = str(tmp_path / "shard-w0-{000000..000002}.tar")
    assert sorted(keys_of(load(pattern))) == sorted(expected) and load(pattern).num_samples == 30


def test_collate_pads_missing_hands_with_a_valid_mask(tmp_path):
    write_clips(tmp_path, [make_fit(0, T=1, sides=("right",)), make_fit(1, T=1)], worker_id=0)
    samples = sorted(load(tmp_path), key=lambda s: s["__key__"])
    batch = collate_hand_object(samples)
    assert batch["right_valid"].tolist() == [True, True] and batch["left_valid"].tolist() == [False, True]
    assert batch["left_vertices"].shape == (2, 778, 3) and not batch["left_vertices"][0].any()
    assert torch.equal(batch["left_vertices"][1], samples[1]["left_vertices"])
    assert batch["right_hand_pose"].shape == (2, 45) and batch["left_model_name"] == [None, "open-hand-v1"]
    assert batch["object_rotation"].shape == (2, 3, 3) and batch["object_valid"].all()
    assert len(batch["meta"]) == 2 and batch["K"].shape == (2, 3, 3)


# ----------------------------------------------------------------------------- damage


def _three_shards(out: Path) -> list[Path]:
    write_clips(out, [make_fit(i, T=3, sides=("right",)) for i in range(3)], worker_id=0, max_samples=3)
    return sorted(out.glob("*.tar"))


def test_truncated_and_flipped_shards_are_named_or_skipped(tmp_path):
    good, truncated, flipped = _three_shards(tmp_path)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    data = bytearray(flipped.read_bytes())
    # flip float bytes inside the first sample's vertex array (past its 128-byte .npy header)
    start = data.find(b"\x93NUMPY", data.find(b"right_vertices.npy")) + 1000
    data[start: start + 10] = bytes(b ^ 0xFF for b in data[start: start + 10])
    flipped.write_bytes(bytes(data))

    with pytest.raises(HodataError, match=truncated.name):  # the first bad shard in reading order
        list(load(tmp_path))
    for bad in (truncated, flipped):
        for verify in (True, False):  # sha256 from the manifest beside it / structure and npz CRCs only
            with pytest.raises(HodataError, match=bad.name):
                list(load([bad], verify=verify))
    dataset = load(tmp_path, skip_corrupt=True)
    with pytest.warns(UserWarning, match="corrupt shard"):
        keys = keys_of(dataset)
    assert dataset.skipped_shards == 2 and sorted(keys) == sorted(keys_of(load([good])))
    loader = DataLoader(load(tmp_path, skip_corrupt=True), batch_size=2, num_workers=2, collate_fn=collate_hand_object)
    assert sum(len(b["__key__"]) for b in loader) == 3 and loader.dataset.skipped_shards == 2


@pytest.mark.parametrize("damage", ["cut_at_member", "cut_end_marker", "header_flip", "json_missing"])
def test_structural_damage_is_detected_without_manifest(tmp_path, damage):
    shard = _three_shards(tmp_path)[0]
    data = bytearray(shard.read_bytes())
    with tarfile.open(shard) as tf:
        members = tf.getmembers()
    if damage == "cut_at_member":
        data = data[: members[2].offset]   # a clean member boundary: tarfile alone would not notice
    elif damage == "cut_end_marker":
        data = data[:-1024]
    elif damage == "header_flip":
        data[members[3].offset + 10] ^= 0x55
    else:
        with tarfile.open(shard) as tf:
            kept = [(m, tf.extractfile(m).read()) for m in members if m.name != members[0].name]
        with tarfile.open(shard, "w") as tf:
            for m, payload in kept:
                tf.addfile(m, io.BytesIO(payload))
        data = bytearray(shard.read_bytes())
    shard.write_bytes(bytes(data))
    with pytest.raises(HodataError, match=shard.name):
        list(load([shard], verify=False))


# ----------------------------------------------------------------------------- crash, resume, overwrite


_KILLED_WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from test_shards import make_fit
from hodata.shards import ShardWriter
writer = ShardWriter({out!r}, worker_id=0, max_samples=1000)
writer.write_clip(make_fit(0, T=3))
writer.flush()
writer.write_clip(make_fit(1, T=3))
writer.write_clip(make_fit(2, T=3))
print("READY", flush=True)
time.sleep(60)
"""


def test_killed_writer_leaves_no_incomplete_tar_and_resume_adds_no_duplicates(tmp_path):
    out = tmp_path / "out"
    script = tmp_path / "writer.py"
    script.write_text(_KILLED_WRITER.format(tests=str(TESTS_DIR), out=str(out)))
    env = dict(os.environ, PYTHONPATH=str(TESTS_DIR.parent), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    tars = sorted(p.name for p in out.glob("*.tar"))
    assert tars == ["shard-w0-000000.tar"] and [s["name"] for s in read_manifest(out)["shards"]] == tars
    assert len(keys_of(load(out))) == 3
    partials = list(out.glob(".tmp-*.partial"))
    assert len(partials) == 1 and partials[0].stat().st_size > 0
    assert done_clips(out) == {make_fit(0).clip_id}

    with ShardWriter(out, worker_id=0) as writer:
        assert not list(out.glob(".tmp-*"))          # its own stale partial is gone
        written = [writer.write_clip(make_fit(i, T=3)) for i in range(4)]
    assert written == [0, 3, 3, 3]
    keys = keys_of(load(out))
    assert len(keys) == len(set(keys)) == 12
    assert sorted(p.name for p in out.glob("*.tar")) == ["shard-w0-000000.tar", "shard-w0-000001.tar"]
    assert done_clips(out) == {make_fit(i).clip_id for i in range(4)}


def test_resume_continues_indices_and_keeps_earlier_clips(tmp_path):
    write_clips(tmp_path, [make_fit(0)], worker_id=0)
    write_clips(tmp_path, [make_fit(0), make_fit(1)], worker_id=0)
    write_clips(tmp_path, [make_fit(2)])  # pid-tagged writer
    names = {s["name"] for s in read_manifest(tmp_path)["shards"]}
    assert names == {"shard-w0-000000.tar", "shard-w0-000001.tar", f"shard-p{os.getpid()}-000002.tar"}
    keys = keys_of(load(tmp_path))
    assert len(keys) == len(set(keys)) == 12


def test_orphan_shard_from_a_kill_before_the_manifest_update_is_adopted(tmp_path):
    write_clips(tmp_path, [make_fit(0), make_fit(1)], worker_id=0, max_samples=4)
    manifest = read_manifest(tmp_path)
    manifest["shards"] = manifest["shards"][:1]
    del manifest["clips"][make_fit(1).clip_id]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with ShardWriter(tmp_path, worker_id=0) as writer:
        assert writer.done_clips == {make_fit(0).clip_id, make_fit(1).clip_id}
        assert writer.write_clip(make_fit(1)) == 0
    assert read_manifest(tmp_path)["num_samples"] == 8 and len(set(keys_of(load(tmp_path)))) == 8


def test_overwrite_clears_previous_output_only(tmp_path):
    write_clips(tmp_path, [make_fit(0), make_fit(1)], worker_id=0, max_samples=4)
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / ".tmp-shard-p1-000009.tar.partial").write_bytes(b"x")
    with ShardWriter(tmp_path, worker_id=0, overwrite=True) as writer:
        assert writer.done_clips == set() and not list(tmp_path.glob("*.tar"))
        writer.write_clip(make_fit(1))
    assert done_clips(tmp_path) == {make_fit(1).clip_id} and (tmp_path / "notes.txt").exists()
    assert keys_of(load(tmp_path)) == [sample_key("ho3d", "ABF10", f) for f in make_fit(1).frame_ids]
    assert not list(tmp_path.glob(".tmp-*"))


def test_writer_refuses_mixed_methods_and_overlapping_clips(tmp_path):
    write_clips(tmp_path, [make_fit(0)], worker_id=0)
    with ShardWriter(tmp_path, worker_id=0) as writer:
        with pytest.raises(HodataError, match="separate output directory"):
            writer.write_clip(make_fit(1, method="independent"))
        overlapping = make_fit(5, frame_start=2)  # frames 0002.. overlap clip 0's 0000-0003
        overlapping.clip_id = "ho3d_ABF10_overlap"
        with pytest.raises(HodataError, match="ho3d_ABF10_000002"):
            writer.write_clip(overlapping)
        with pytest.raises(ValueError, match="images"):
            writer.write_clip(make_fit(2), images=torch.zeros(4, 5, 5, 3, dtype=torch.uint8))
        assert writer.write_clip(make_fit(2)) == 4
    assert len(keys_of(load(tmp_path))) == 8


def test_context_manager_finalises_whole_clips_when_the_body_raises(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with ShardWriter(tmp_path, worker_id=0) as writer:
            writer.write_clip(make_fit(0))
            raise KeyboardInterrupt
    assert done_clips(tmp_path) == {make_fit(0).clip_id} and not list(tmp_path.glob(".tmp-*"))


def test_shards_are_plain_webdataset_tars(tmp_path):
    import webdataset as wds

    fit = make_fit(0, T=2)
    write_clips(tmp_path, [fit], worker_id=0)
    samples = list(wds.WebDataset(str(tmp_path / "shard-w0-000000.tar"), shardshuffle=False).decode())
    assert [s["__key__"] for s in samples] == ["ho3d_ABF10_000000", "ho3d_ABF10_000001"]
    assert np.array_equal(samples[1]["npz"]["left_joints"], fit.hands[1].joints[1].numpy())
    assert samples[0]["json"]["clip_id"] == fit.clip_id


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_fast_npz_reader_matches_numpy(save):
    rng = np.random.default_rng(0)
    arrays = {"v": rng.random((778, 3)).astype(np.float32), "s": np.float64(2.5), "name": np.asarray("open-hand-v1"),
              "i": np.arange(5, dtype=np.int64), "empty": np.zeros((0, 3), np.float16), "b": np.array([True, False]),
              "fortran": np.asfortranarray(rng.random((3, 4))), "big_endian": np.arange(3, dtype=">i4")}
    buf = io.BytesIO()
    save(buf, **arrays)
    ours, ref = read_npz(buf.getvalue()), dict(np.load(io.BytesIO(buf.getvalue()), allow_pickle=False))
    assert ours.keys() == ref.keys()
    for name, a in ref.items():
        assert ours[name].dtype == a.dtype and ours[name].shape == a.shape and np.array_equal(ours[name], a), name
    assert ours["v"].flags.writeable
