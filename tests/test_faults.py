"""Fault tolerance of `hodata fit` runs (issue 12): crashes at chosen points, signals, two runs
at once, a full disk, a read-only output, damaged outputs and bad inputs.

Every case ends with an audit of the output: samples lost (an expected frame missing from the
shards after the rerun), duplicated (a key twice) and corrupt (a listed shard that fails its
sha256 or tar checks, or a sample holding NaN / infinity) must all be 0. Crashes are made in a
subprocess (tests/fault_driver.py wraps library functions there: the code has no test hooks);
the reruns use the CLI in this process. Fits are tiny (1-frame clips, one Adam step per
stage, one object hypothesis, a 16 px silhouette render) so the suite stays fast.

Set HODATA_FAULT_TABLE=path to write the audited rows as the markdown table of
bench/RESULTS.md ("Fault tolerance").
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import hodata.app.fit as run_module
from hodata import handmodel as hm
from hodata.cli import app
from hodata.datasets.base import clip_windows
from hodata.datasets.synthetic import make_synthetic_ho3d
from hodata.errors import HodataError
from hodata.shards import ShardCorruptError, read_manifest, read_shard

TESTS_DIR = Path(__file__).resolve().parent
DRIVER = TESTS_DIR / "fault_driver.py"
FRAMES = 42
SEQ = "SYN0"
TINY = ["--steps1", "1", "--steps2", "1", "--hypotheses", "1", "--roi-size", "16"]
ROWS: list[tuple[str, str, int, int, int]] = []
runner = CliRunner()


# ----------------------------------------------------------------------------- data and audit


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("fault_cache")


@pytest.fixture(scope="module")
def source_root(tmp_path_factory, cache):
    return make_synthetic_ho3d(tmp_path_factory.mktemp("fault_data") / "ho3d", sequences=1, frames=FRAMES,
                               image_size=(64, 80), object_ids=("025_mug",), cache_dir=cache, seed=3)


@pytest.fixture
def root(source_root, tmp_path):
    """A private copy of the synthetic HO-3D set (tests damage their copy)."""
    return Path(shutil.copytree(source_root, tmp_path / "ho3d"))


@pytest.fixture(scope="module", autouse=True)
def fault_table():
    yield
    path = os.environ.get("HODATA_FAULT_TABLE")
    if path and ROWS:
        lines = ["| case | what happens now | samples lost | duplicated | corrupt |", "|---|---|---|---|---|"]
        lines += [f"| {case} | {outcome} | {lost} | {dup} | {bad} |" for case, outcome, lost, dup, bad in ROWS]
        Path(path).write_text("\n".join(lines) + "\n")


def fit_args(root, out, cache, *extra, clip_length=1, stride=8, max_clips=4, methods="joint"):
    args = ["fit", "ho3d", "--root", str(root), "--output", str(out), "--methods", methods, "--mesh-cache",
            str(cache), "--clip-length", str(clip_length), "--stride", str(stride), *TINY, *extra]
    return args + (["--max-clips", str(max_clips)] if max_clips is not None else [])


def frame_ids(n_listed=FRAMES, dropped=()):
    return [f"{i:04d}" for i in range(n_listed) if f"{i:04d}" not in dropped]


def expected_keys(clip_length=1, stride=8, max_clips=4, ids=None):
    """clip id -> sample keys that `hodata fit` must write (windows over the kept frames)."""
    ids = ids or frame_ids()
    windows = clip_windows(len(ids), clip_length, stride)[:max_clips]
    return {f"synthetic_{SEQ}_{ids[w[0]]}": [f"synthetic_{SEQ}_{int(ids[i]):06d}" for i in w] for w in windows}


def audit(method_dir, expected, crashed=False):
    """(lost, duplicated, corrupt) of one method folder against the clip -> keys it must hold.

    crashed: right after a kill, where a partial shard (never listed, never read) may remain."""
    method_dir = Path(method_dir)
    manifest = read_manifest(method_dir)
    keys, corrupt = [], 0
    for entry in manifest["shards"] if manifest else []:
        try:
            samples = read_shard(method_dir / entry["name"], entry["sha256"])
        except ShardCorruptError:
            corrupt += entry["samples"]
            continue
        assert len(samples) == entry["samples"] > 0, f"{entry['name']}: an empty or miscounted shard is listed"
        for s in samples:
            finite = all(np.isfinite(a).all() for a in s["arrays"].values() if a.dtype.kind == "f")
            corrupt += 0 if finite else 1
            keys.append(s["__key__"])
    want = {k for ks in expected.values() for k in ks}
    listed_tars = {e["name"] for e in manifest["shards"]} if manifest else set()
    if not crashed:  # (a kill after a shard's rename leaves it unlisted until the next writer adopts it)
        assert {p.name for p in method_dir.glob("*.tar")} == listed_tars, "a complete shard is not listed"
        assert not [p for p in method_dir.iterdir() if ".tmp" in p.name], "temporary files left behind"
    assert set(manifest["clips"] if manifest else {}) <= set(expected)
    return len(want - set(keys)), len(keys) - len(set(keys)), corrupt


def record(case, outcome, *dirs_expected):
    lost = dup = bad = 0
    for method_dir, expected in dirs_expected:
        a, b, c = audit(method_dir, expected)
        lost, dup, bad = lost + a, dup + b, bad + c
    ROWS.append((case, outcome, lost, dup, bad))
    assert (lost, dup, bad) == (0, 0, 0), (case, lost, dup, bad)


def cli(args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def driver(fault, n, args, env=None, timeout=300):
    """Run the CLI in a subprocess with one fault armed (tests/fault_driver.py)."""
    env = dict(os.environ, PYTHONPATH=str(TESTS_DIR.parent), OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, str(DRIVER), fault, str(n), "--", *[str(a) for a in args]],
                          capture_output=True, text=True, env=env, timeout=timeout)


def one_error_line(text):
    """The `error: ...` line of a CLI output; asserts there is exactly one and no traceback."""
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    return errors[0]


def edit_meta(root, frame, **changes):
    path = root / "train" / SEQ / "meta" / f"{frame}.pkl"
    meta = pickle.loads(path.read_bytes())
    meta.update(changes)
    path.write_bytes(pickle.dumps(meta, protocol=2))


# ----------------------------------------------------------------------------- 1. windowing


def test_41_frame_sequence_and_a_dropped_frame_fit_completely(root, cache, tmp_path):
    """Default T = 10, stride 4: 41 frames gave an end window repeating frames 4..36 and the
    writer's duplicate-key error ended the run; so did 42 frames with one objRot None."""
    listing = root / "train.txt"
    lines = listing.read_text().splitlines()
    listing.write_text("\n".join(line for line in lines if not line.endswith("/0041")) + "\n")
    out = tmp_path / "out41"
    code, output = cli(fit_args(root, out, cache, clip_length=10, stride=4, max_clips=None))
    assert code == 0, output
    expected = expected_keys(10, 4, None, frame_ids(41))
    assert [len(v) for v in expected.values()] == [10, 1]  # frames 0..36 step 4, then 40
    record("41-frame sequence, default windows (T=10, stride 4)", "fits completely: 2 clips, 11 frames once each",
           (out / "joint", expected))

    listing.write_text("\n".join(lines) + "\n")
    edit_meta(root, "0020", objRot=None)
    out = tmp_path / "dropped"
    code, output = cli(fit_args(root, out, cache, clip_length=10, stride=4, max_clips=None))
    assert code == 0 and "1 frame(s) without an object pose were skipped" in output, output
    expected = expected_keys(10, 4, None, frame_ids(dropped=("0020",)))
    assert "synthetic_SYN0_000020" not in {k for ks in expected.values() for k in ks}
    record("42 frames, one dropped (objRot None)", "fits completely; the dropped frame is absent",
           (out / "joint", expected))


# ----------------------------------------------------------------------------- 2, 3, 6. clip isolation


F2PY_PICKLE = b"\x80\x02cnumpy.f2py.__main__\ndtype\n."


class _Touch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_any_clip_error_is_isolated_and_nothing_nonfinite_is_written(root, cache, tmp_path, monkeypatch):
    """12 one-frame clips (frames 0, 4, ..., 40, 41), each a different fault; the rest are written."""
    marker = tmp_path / "os_system_ran"
    edit_meta(root, "0004", objTrans=np.array([np.nan, 0.0, -0.5]))        # NaN annotation (object)
    edit_meta(root, "0008", handPose=np.full(48, np.nan))                  # NaN annotation (hand)
    edit_meta(root, "0012", camMat=np.full((3, 3), np.inf))               # infinite camera
    meta_dir = root / "train" / SEQ / "meta"
    (meta_dir / "0016.pkl").write_bytes(F2PY_PICKLE)                       # runs f2py when imported
    (meta_dir / "0020.pkl").write_bytes(pickle.dumps({"objRot": _Touch(marker)}, protocol=2))
    raises = {"synthetic_SYN0_0024": RuntimeError("repeats can not be negative"),
              "synthetic_SYN0_0028": ValueError("bad value"),
              "synthetic_SYN0_0032": np.linalg.LinAlgError("SVD did not converge")}
    real_fit_clip = run_module.fit_clip

    def faulty_fit_clip(clip, *args, **kwargs):
        if clip.clip_id in raises:
            raise raises[clip.clip_id]
        fits = real_fit_clip(clip, *args, **kwargs)
        if clip.clip_id == "synthetic_SYN0_0036":  # a diverged joint fit: NaN vertices
            fits["joint"].hands[0].vertices = fits["joint"].hands[0].vertices * float("nan")
        return fits

    monkeypatch.setattr(run_module, "fit_clip", faulty_fit_clip)
    from hodata.datasets.ho3d import HO3DDataset

    real_load_clip = HO3DDataset.load_clip

    def faulty_load_clip(self, spec):  # an error that is not a HodataError while loading a clip
        if spec.frame_ids == ["0041"]:
            raise RuntimeError("repeats can not be negative")
        return real_load_clip(self, spec)

    monkeypatch.setattr(HO3DDataset, "load_clip", faulty_load_clip)
    f2py_loaded = "numpy.f2py.__main__" in sys.modules
    out = tmp_path / "out"
    code, output = cli(fit_args(root, out, cache, clip_length=1, stride=4, max_clips=None,
                                methods="joint,independent"))
    assert code == 1, output  # the run finished, some clips failed (exit-code rule)
    flat = " ".join(output.split())
    assert "fitted 2 clip(s), resumed 0, failed 4, unreadable 6" in flat, output
    for text in ("0004", "objTrans", "0008", "handPose", "camMat", "numpy.f2py.__main__.dtype", "posix.system",
                 "RuntimeError: repeats can not be negative", "ValueError: bad value",
                 "LinAlgError: SVD did not converge", "joint: the fit diverged",
                 "clip SYN0/0041 could not be loaded (RuntimeError: repeats can not be negative)"):
        assert text in flat, text
    assert not marker.exists() and ("numpy.f2py.__main__" in sys.modules) == f2py_loaded
    good = expected_keys(1, 4, None)
    written = {c: good[c] for c in ("synthetic_SYN0_0000", "synthetic_SYN0_0040")}
    record("any exception in one clip (RuntimeError, ValueError, LinAlgError; at load or fit)",
           "clip listed as failed with its message; the other clips are written; exit 1", (out / "joint", written))
    record("NaN / inf in objTrans, handPose, camMat of one frame", "clip unreadable, frame and key named; exit 1",
           (out / "joint", written))
    record("fit diverges to NaN in one method", "that method's labels not written, clip failed; other method written",
           (out / "joint", written), (out / "independent", {**written, "synthetic_SYN0_0036": good["synthetic_SYN0_0036"]}))
    record("meta pickle naming numpy.f2py.__main__ / os.system", "refused with one line, nothing run",
           (out / "joint", written))
    code, output = cli(["eval", "ho3d", "--results", out, "--mesh-cache", cache])
    assert code == 0, output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["joint"]["frames"] == 2 and metrics["independent"]["frames"] == 3

    # An output written before the finite-value gate (NaN vertices in one clip): eval skips that
    # clip with a note and exit 1, and measures the others.
    import hodata.shards.writer as writer_module
    from hodata.shards import ShardWriter, fit_results_from_shards

    fits = fit_results_from_shards(out / "joint")
    monkeypatch.setattr(writer_module, "_check_finite", lambda *args: None)
    with ShardWriter(tmp_path / "old" / "joint", config=read_manifest(out / "joint")["config"]) as old:
        for i, clip_id in enumerate(sorted(fits)):
            if i == 0:
                fits[clip_id].hands[0].vertices = fits[clip_id].hands[0].vertices * float("nan")
            old.write_clip(fits[clip_id])
    monkeypatch.undo()
    code, output = cli(["eval", "ho3d", "--results", tmp_path / "old", "--mesh-cache", cache])
    assert code == 1 and "not evaluated (NaN or infinity in right hand vertices)" in " ".join(output.split()), output
    assert json.loads((tmp_path / "old" / "metrics.json").read_text())["joint"]["frames"] == 1
    ROWS.append(("eval of an older output holding NaN labels", "that clip skipped with a note, the others "
                 "measured; exit 1", "-", "-", "-"))


def test_camera_is_read_for_every_frame_of_a_clip():
    from hodata.datasets.ho3d import clip_camera

    K = np.array([[600.0, 0, 40], [0, 600.0, 32], [0, 0, 1]])
    assert np.array_equal(clip_camera([{"camMat": K}, {"camMat": K.copy()}], ["a/1", "a/2"]), K)
    moved = K.copy()
    moved[0, 2] += 5
    with pytest.raises(HodataError, match="frame a/2: camMat differs from that of a/1"):
        clip_camera([{"camMat": K}, {"camMat": moved}], ["a/1", "a/2"])


def test_system_exit_inside_a_run_is_not_success(root, cache, tmp_path, monkeypatch):
    def exits(*args, **kwargs):
        raise SystemExit(0)

    monkeypatch.setattr(run_module, "fit_clip", exits)
    code, output = cli(fit_args(root, tmp_path / "out", cache))
    assert code == 1 and "internal error SystemExit" in one_error_line(output)


def test_writer_refuses_nonfinite_labels():
    """The writer's own gate, for callers that bypass `fit_dataset`."""
    from hodata.shards import encode_clip
    from hodata.types import FitResult, HandState, ObjectState

    verts = torch.zeros(2, 5, 3)
    verts[1, 0, 0] = float("inf")
    hand = HandState(side="right", vertices=verts, joints=torch.zeros(2, 21, 3), model_name="mano")
    obj = ObjectState("m", torch.eye(3).expand(2, 3, 3), torch.zeros(2, 3), 1.0)
    fit = FitResult(clip_id="c", dataset="d", sequence="s", frame_ids=["0", "1"], K=torch.eye(3), image_size=(4, 4),
                    hands=[hand], objects=[obj])
    with pytest.raises(ValueError, match="right hand vertices holds NaN or infinite values .*frame 1"):
        encode_clip(fit)


# ----------------------------------------------------------------------------- kill -9


KILLS = [  # (fault, occurrence, methods, case)
    ("kill_before_write", 2, "joint", "kill -9 before a shard write"),
    ("kill_during_write", 2, "joint", "kill -9 during a shard write"),
    ("kill_after_rename", 2, "joint", "kill -9 after the shard rename, before the manifest update"),
    ("kill_after_manifest", 2, "joint", "kill -9 right after a clip is recorded"),
    ("kill_before_write", 4, "joint,independent", "kill -9 between methods (clip 2 written for joint only)"),
]


@pytest.mark.parametrize("fault, n, methods, case", KILLS, ids=[f"{k[0]}-{k[1]}" for k in KILLS])
def test_kill_9_then_rerun_loses_nothing(root, cache, tmp_path, fault, n, methods, case):
    out = tmp_path / "out"
    args = fit_args(root, out, cache, methods=methods)
    killed = driver(fault, n, args)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    expected = expected_keys()
    for m in methods.split(","):
        lost, dup, bad = audit(out / m, expected, crashed=True)  # after the crash: only whole clips are listed
        assert dup == bad == 0 and lost >= 1
    code, output = cli(args)
    assert code == 0, output
    record(case, "rerun resumes the clips written, fits the rest",
           *[(out / m, expected) for m in methods.split(",")])


def test_kill_9_during_overwrite_cleanup_loses_nothing(root, cache, tmp_path):
    out = tmp_path / "out"
    args = fit_args(root, out, cache)
    assert cli(args)[0] == 0
    killed = driver("kill_in_cleanup", 3, [*args, "--overwrite"])  # manifest and one shard deleted
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "joint" / "manifest.json").exists() and len(list((out / "joint").glob("*.tar"))) == 3
    code, output = cli(args)
    assert code == 0 and "fitted 1 clip(s), resumed 3" in " ".join(output.split()), output
    record("kill -9 during --overwrite clean-up, then a plain rerun",
           "unlisted shards adopted after a full read, the deleted clip refitted", (out / "joint", expected_keys()))


# ----------------------------------------------------------------------------- signals, disk, concurrency


@pytest.mark.parametrize("fault, signum", [("sigint_in_fit", signal.SIGINT), ("sigterm_in_fit", signal.SIGTERM)])
def test_interrupt_says_the_run_can_be_resumed(root, cache, tmp_path, fault, signum):
    out = tmp_path / "out"
    args = fit_args(root, out, cache)
    stopped = driver(fault, 3, args)
    assert stopped.returncode == 128 + signum, stopped.stderr
    assert f"interrupted by {signal.Signals(signum).name}" in stopped.stderr
    assert "rerun the same command to resume" in stopped.stderr and "Traceback" not in stopped.stderr
    assert set(read_manifest(out / "joint")["clips"]) == set(list(expected_keys())[:2])
    code, output = cli(args)
    assert code == 0 and "resumed 2" in output, output
    record(f"{signal.Signals(signum).name} during a fit", f"exit {128 + signum}, message says rerun to resume; "
           "no empty shard", (out / "joint", expected_keys()))


def test_disk_full_is_one_line_and_keeps_whole_clips(root, cache, tmp_path):
    out = tmp_path / "out"
    args = fit_args(root, out, cache)
    full = driver("enospc_in_write", 2, args)
    assert full.returncode == 2, full.stderr
    line = one_error_line(full.stderr)
    assert "No space left on device" in line and "rerun the same command to resume" in line
    assert list(read_manifest(out / "joint")["clips"]) == [list(expected_keys())[0]]  # no 0-sample shard
    assert cli(args)[0] == 0
    record("disk full (ENOSPC) during a shard write", "one line, exit 2; the clip is cut out, no empty shard listed",
           (out / "joint", expected_keys()))


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (needs mount rights: root in a container, as on the team machine)."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.decode().strip()}); the fake-ENOSPC test covers it")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_real_full_and_read_only_file_systems(root, cache, small_tmpfs):
    """On a real 1 MiB tmpfs: frames of 64x80 px fill it after a few clips; then read-only."""
    out = small_tmpfs / "out"
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024 - 40 * 1024))  # leave 40 KiB: one or two clips
    args = fit_args(root, out, cache)
    code, output = cli(args)
    assert code == 2 and "No space left on device" in one_error_line(output), output
    written = read_manifest(out / "joint")["clips"] if (out / "joint" / "manifest.json").exists() else {}
    assert len(written) < 4
    filler.unlink()
    assert cli(args)[0] == 0
    record("disk full on a real 1 MiB tmpfs", "one line, exit 2; rerun after freeing space completes",
           (out / "joint", expected_keys()))
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    code, output = cli(fit_args(root, out, cache, max_clips=5))
    assert code == 2 and "Read-only file system" in one_error_line(output), output
    record("output on a read-only file system", "one line naming the folder, exit 2; nothing changed",
           (out / "joint", expected_keys()))


def test_read_only_output_is_one_line(root, cache, tmp_path, monkeypatch):
    """The same without mount rights: opening files under the output fails with EROFS."""
    import builtins

    import hodata.shards.manifest as mf

    out = tmp_path / "out"
    args = fit_args(root, out, cache)
    assert cli(args)[0] == 0

    def read_only_open(path, mode="r", *a, **k):
        if str(path).startswith(str(out)) and any(c in mode for c in "wa+x"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return builtins.open(path, mode, *a, **k)

    monkeypatch.setattr(mf, "open", read_only_open, raising=False)
    code, output = cli(fit_args(root, out, cache, max_clips=5))
    line = one_error_line(output)
    assert code == 2 and "Read-only file system" in line and str(out / "joint") in line
    monkeypatch.undo()
    record("output on a read-only file system (EROFS from open)", "one line naming the folder, exit 2",
           (out / "joint", expected_keys()))


def test_second_concurrent_run_is_refused(root, cache, tmp_path):
    out = tmp_path / "out"
    args = fit_args(root, out, cache)
    ready, release = tmp_path / "ready", tmp_path / "release"
    env = dict(os.environ, PYTHONPATH=str(TESTS_DIR.parent), OMP_NUM_THREADS="1", FAULT_READY=str(ready),
               FAULT_RELEASE=str(release))
    first = subprocess.Popen([sys.executable, str(DRIVER), "hold_in_fit", "1", "--", *map(str, args)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        while not ready.exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert ready.exists(), first.communicate()[1]
        for extra in ([], ["--overwrite"]):
            code, output = cli([*args, *extra])
            line = one_error_line(output)
            assert code == 2 and f"another hodata run (pid {first.pid})" in line, output
        release.write_text("go")
        _, stderr = first.communicate(timeout=300)
        assert first.returncode == 0, stderr
    finally:
        if first.poll() is None:
            first.kill()
    record("a second `hodata fit` into the same output while one runs", "refused with one line, exit 2 "
           "(also with --overwrite); the first completes", (out / "joint", expected_keys()))


# ----------------------------------------------------------------------------- 5, 8. resume checks


def test_resume_refits_exactly_the_clips_of_deleted_or_damaged_shards(root, cache, tmp_path):
    out = tmp_path / "out"
    args = fit_args(root, out, cache)
    assert cli(args)[0] == 0
    manifest = read_manifest(out / "joint")
    shard_of = {c: v["shard"] for c, v in manifest["clips"].items()}
    clips = sorted(shard_of)
    (out / "joint" / shard_of[clips[1]]).unlink()
    damaged = out / "joint" / shard_of[clips[2]]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    code, output = cli(args)
    flat = " ".join(output.split())
    assert code == 0 and "fitted 2 clip(s), resumed 2" in flat, output
    assert "listed in the manifest but missing" in flat and "damaged" in flat
    assert (damaged.parent / (damaged.name + ".damaged")).exists()
    record("a shard deleted, another damaged, then a rerun", "exactly their 2 clips refitted; the damaged file "
           "kept as .damaged", (out / "joint", expected_keys()))


def test_garbage_manifest_is_rebuilt_from_good_shards(root, cache, tmp_path):
    out = tmp_path / "out"
    args = fit_args(root, out, cache)
    assert cli(args)[0] == 0
    (out / "joint" / "manifest.json").write_text('{"format": "hodata-shards", "shards": [gar')
    (out / "joint" / ".manifest.json.tmp-999999999").write_text("{}")   # a killed writer's temporary file
    code, output = cli(["eval", "ho3d", "--results", out, "--mesh-cache", cache])
    assert code == 2 and "rerun `hodata fit` with the same --output to rebuild it" in one_error_line(output)
    code, output = cli(args)
    flat = " ".join(output.split())
    assert code == 0 and "fitted 0 clip(s), resumed 4" in flat and "rebuilt from the shards" in flat, output
    manifest = read_manifest(out / "joint")
    assert manifest["method"] == "joint" and (out / "joint" / "manifest.json.damaged").exists()
    record("garbage manifest.json (+ a stale .tmp file)", "rebuilt from the shards (method recorded), nothing "
           "refitted; .tmp removed", (out / "joint", expected_keys()))


def test_empty_shard_listed_by_an_older_run_is_dropped(root, cache, tmp_path):
    from hodata.shards.manifest import sha256_file

    out = tmp_path / "out"
    args = fit_args(root, out, cache)
    assert cli(args)[0] == 0
    empty = out / "joint" / "shard-p1-000099.tar"
    empty.write_bytes(b"\0" * 1024)
    manifest = read_manifest(out / "joint")
    manifest["shards"].append({"name": empty.name, "samples": 0, "bytes": 1024, "sha256": sha256_file(empty),
                               "clips": {}})
    (out / "joint" / "manifest.json").write_text(json.dumps(manifest))
    assert cli(args)[0] == 0
    assert empty.name not in {e["name"] for e in read_manifest(out / "joint")["shards"]} and not empty.exists()
    record("a 0-sample shard listed (interrupted write, older hodata)", "dropped on resume",
           (out / "joint", expected_keys()))


# ----------------------------------------------------------------------------- 7, 8. bad inputs


def test_empty_split_list_is_named(root, cache, tmp_path):
    (root / "train.txt").write_text("\n")
    code, output = cli(fit_args(root, tmp_path / "out", cache))
    assert code == 2 and "train.txt lists no frames" in one_error_line(output)


def _mano_variant(folder, **changes):
    """The open hand as MANO_RIGHT.pkl in `folder`, with some values replaced."""
    arrays = hm.open_hand_arrays("right")
    arrays.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    hm.mano_io.write_mano_pickle_arrays(folder / "MANO_RIGHT.pkl", arrays)
    return folder


def _pickle_with_fake_class(path, module, name, make):
    """Pickle `make(cls)` where cls claims to live in `module` (not installed here)."""
    import types

    mod = types.ModuleType(module)
    cls = type(name, (), {"__module__": module, "__qualname__": name})
    setattr(mod, name, cls)
    parts = module.split(".")
    saved = {m: sys.modules.get(m) for m in (".".join(parts[:i + 1]) for i in range(len(parts)))}
    for m in saved:
        sys.modules[m] = types.ModuleType(m) if m != module else mod
    try:
        path.write_bytes(pickle.dumps(make(cls), protocol=2))
    finally:
        for m, old in saved.items():
            if old is None:
                sys.modules.pop(m, None)
            else:
                sys.modules[m] = old


def test_malformed_mano_pickles_are_one_line(tmp_path):
    arrays = hm.open_hand_arrays("right")
    kintree = arrays["kintree_table"].copy()
    kintree[0, 5] = 99
    cases = {
        "string": (_mano_variant(tmp_path / "string", weights="not an array"), "'weights' holds a str"),
        "kintree": (_mano_variant(tmp_path / "kintree", kintree_table=kintree), "joint 5 the parent 99"),
        "pca": (_mano_variant(tmp_path / "pca", hands_components=arrays["hands_components"][:10]), "num_pca_comps"),
    }

    def self_referencing_ch(cls):
        ch = cls()
        ch.x = ch
        data = dict(arrays)
        data["v_template"] = ch
        return data

    (tmp_path / "cycle").mkdir()
    _pickle_with_fake_class(tmp_path / "cycle" / "MANO_RIGHT.pkl", "chumpy.ch", "Ch", self_referencing_ch)
    cases["cycle"] = (tmp_path / "cycle", "referring to themselves")

    class _ListState:
        def __init__(self, cls):
            self.cls = cls

    def sparse_with_list_state(cls):
        cls.__reduce__ = lambda self: (cls, (), [1, 2, 3])
        data = dict(arrays)
        data["J_regressor"] = cls()
        return data

    (tmp_path / "sparse").mkdir()
    _pickle_with_fake_class(tmp_path / "sparse" / "MANO_RIGHT.pkl", "scipy.sparse._csc", "csc_matrix",
                            sparse_with_list_state)
    cases["sparse"] = (tmp_path / "sparse", "state is a list")
    (tmp_path / "f2py").mkdir()
    (tmp_path / "f2py" / "MANO_RIGHT.pkl").write_bytes(F2PY_PICKLE)
    cases["f2py"] = (tmp_path / "f2py", "refusing to load numpy.f2py.__main__.dtype")
    for name, (folder, message) in cases.items():
        with pytest.raises(HodataError, match=message) as err:
            hm.load("right", mano_dir=folder, model="mano")
        assert "\n" not in str(err.value) and "MANO_RIGHT.pkl" in str(err.value), name
        status = hm.describe(folder)  # `hodata info` checks what load() checks
        assert status.problems and message.split()[0] in " ".join(status.problems), name
        code, output = cli(["info", "--mano-dir", folder])
        assert code == 0 and "MANO problem" in output, name
    code, output = cli(["demo", "--output", tmp_path / "demo", "--frames", "1", "--mano-dir", tmp_path / "kintree"])
    assert code == 2 and "kintree_table" in one_error_line(output)


def test_non_pickle_in_mano_dir_is_reported_on_open_hand_data(root, cache, tmp_path):
    folder = tmp_path / "mano"
    folder.mkdir()
    (folder / "MANO_RIGHT.pkl").write_text("not a pickle")
    code, output = cli(fit_args(root, tmp_path / "out", cache, "--mano-dir", folder))
    line = one_error_line(output)
    assert code == 2 and "MANO_RIGHT.pkl" in line and "not a readable MANO pickle" in line


def test_prep_meshes_random_stl_and_flat_triangle(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "noise.stl").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (tmp_path / "sheet.obj").write_text("v 0 0 0\nv 0.05 0 0\nv 0 0.05 0\nf 1 2 3\n")
    code, output = cli(["prep-meshes", tmp_path / "noise.stl", tmp_path / "sheet.obj", "--cache", tmp_path / "cache"])
    assert code == 1
    assert "noise.stl: not an STL mesh" in output and "charset" not in output
    assert "sheet.obj: mesh is flat" in output
