"""Parallel fitting on Ray (issue 13): `hodata fit --workers N / --ray ADDRESS` writes one
dataset, each clip once, through worker failures, a killed driver and Ctrl-C.

One Ray cluster (2 CPUs) serves the module: the CLI runs in this process reuse it (a Ray
already initialised is used as it is), and the subprocess drivers connect to it with
`--ray ADDRESS`; so Ray starts once. Faults inside workers come from tests/ray_faults.py,
Ray's worker setup hook: it wraps `hodata.app.fit.fit_clip` in every worker, steered by a
plan file (raise / kill / hold a clip). Every case ends with the audit of tests/test_faults.py
(samples lost, duplicated, corrupt against the keys the clips must give: all 0). Clips are
tiny (2 frames of 64 x 80, one Adam step per stage) so the module stays short.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from test_faults import audit, expected_keys, fit_args

from hodata.datasets.synthetic import make_synthetic_ho3d
from hodata.shards import load, read_manifest

TESTS_DIR = Path(__file__).resolve().parent
CLIP_LENGTH, STRIDE, CLIPS = 2, 8, 4
EXPECTED = expected_keys(CLIP_LENGTH, STRIDE, CLIPS)
CLIP_IDS = list(EXPECTED)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ray_cache")


@pytest.fixture(scope="module")
def root(tmp_path_factory, cache):
    return make_synthetic_ho3d(tmp_path_factory.mktemp("ray_data") / "ho3d", sequences=1, frames=42,
                               image_size=(64, 80), object_ids=("025_mug",), cache_dir=cache, seed=3)


@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU Ray for the module, its workers running tests/ray_faults.setup; yields
    (gcs address, faults folder)."""
    ray = pytest.importorskip("ray", reason='hodata[ray] is not installed (make setup installs it)')
    faults = Path(tempfile.mkdtemp(prefix="hodata-ray-faults-"))
    temp_dir = tempfile.mkdtemp(prefix="hdt-", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    saved = {k: os.environ.get(k) for k in ("RAY_FAULTS_DIR", "PYTHONPATH", "RAY_USAGE_STATS_ENABLED")}
    os.environ.update(RAY_FAULTS_DIR=str(faults), RAY_USAGE_STATS_ENABLED="0",
                      PYTHONPATH=os.pathsep.join([str(TESTS_DIR.parent), str(TESTS_DIR)]))
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             _temp_dir=temp_dir, object_store_memory=128 * 2**20,
             runtime_env={"worker_process_setup_hook": "ray_faults.setup"})
    try:
        yield ray.get_runtime_context().gcs_address, faults
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(faults, ignore_errors=True)


@pytest.fixture
def plan(cluster):
    """plan(**faults) arms the workers' faults for this test (earlier marks cleared)."""
    _, faults = cluster

    def arm(**entries):
        for path in faults.iterdir():
            path.unlink()
        (faults / "plan.json").write_text(json.dumps(entries))
        return faults

    arm()
    return arm


def attempts(faults: Path) -> list[tuple[str, int]]:
    log = faults / "attempts.log"
    lines = log.read_text().split("\n") if log.exists() else []
    return [(clip, int(pid)) for clip, pid in (line.split() for line in lines if line)]


def args(root, out, cache, *extra):
    return fit_args(root, out, cache, *extra, clip_length=CLIP_LENGTH, stride=STRIDE, max_clips=CLIPS)


def cli(argv):
    from typer.testing import CliRunner

    from hodata.cli import app

    result = CliRunner().invoke(app, [str(a) for a in argv])
    return result.exit_code, result.output


def assert_one_dataset(out: Path, clips=CLIP_IDS):
    """Each clip once in the manifest, every listed shard verified by its sha256 (the audit),
    the loader reads every expected sample once."""
    expected = {c: EXPECTED[c] for c in clips}
    assert audit(out / "joint", expected) == (0, 0, 0)
    manifest = read_manifest(out / "joint")
    assert sorted(manifest["clips"]) == sorted(clips)
    listed = [c for shard in manifest["shards"] for c in shard["clips"]]
    assert sorted(listed) == sorted(clips), "a clip is in two shards"
    keys = [s["__key__"] for s in load(out / "joint")]
    assert len(keys) == len(set(keys)) == manifest["num_samples"]
    assert set(keys) == {k for ks in expected.values() for k in ks}


def test_without_ray_one_line_says_how_to_install(root, cache, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "out"
    code, output = cli(args(root, out, cache, "--workers", "2"))
    assert code == 2, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and 'pip install "hodata[ray]"' in errors[0], output
    assert "Traceback" not in output and not out.exists()


def test_two_workers_over_four_clips_write_one_dataset(root, cache, tmp_path, plan, cluster):
    out = tmp_path / "out"
    code, output = cli(args(root, out, cache, "--workers", "2"))
    assert code == 0, output
    assert "fitted 4 clip(s), resumed 0, failed 0" in output
    assert_one_dataset(out)
    pids = {pid for _, pid in attempts(cluster[1])}
    assert len(pids) == 2, f"the 4 clips ran in {len(pids)} worker process(es), not 2"
    # the result reads as before: eval finds its ground truth from the manifest
    code, output = cli(["eval", "ho3d", "--results", out, "--mesh-cache", cache])
    assert code == 0, output
    # a rerun with Ray resumes every clip, whichever worker did it
    code, output = cli(args(root, out, cache, "--workers", "2"))
    assert code == 0 and "fitted 0 clip(s), resumed 4" in output, output


def test_a_runtime_error_in_fitting_fails_that_clip_only(root, cache, tmp_path, plan):
    bad = CLIP_IDS[1]
    plan(**{"raise": [bad]})
    out = tmp_path / "out"
    code, output = cli(args(root, out, cache, "--workers", "2"))
    assert code == 1, output
    assert "fitted 3 clip(s), resumed 0, failed 1" in output
    assert f"skipped {bad}: RuntimeError: injected failure in {bad} (second line)" in " ".join(output.split())
    assert_one_dataset(out, [c for c in CLIP_IDS if c != bad])


def test_a_worker_killed_during_a_clip_is_retried_and_the_clip_written_once(root, cache, tmp_path, plan):
    victim = CLIP_IDS[2]
    faults = plan(kill=[victim])
    out = tmp_path / "out"
    code, output = cli(args(root, out, cache, "--workers", "2", "--retries", "1"))
    assert code == 0, output
    killed = int((faults / f"killed-{victim}").read_text())
    tries = [pid for clip, pid in attempts(faults) if clip == victim]
    assert len(tries) == 2 and tries[0] == killed and tries[1] != killed, tries
    assert_one_dataset(out)



def spawn_driver(cluster, argv):
    """`hodata fit ... --ray ADDRESS` in a subprocess connected to the module's cluster."""
    address, faults = cluster
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR.parent), str(TESTS_DIR)]),
               HODATA_RAY_WORKER_SETUP="ray_faults.setup", RAY_FAULTS_DIR=str(faults), OMP_NUM_THREADS="1")
    code = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); from hodata.cli import run; run()"
    return subprocess.Popen([sys.executable, "-c", code, *[str(a) for a in argv], "--ray", address],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for(condition, proc, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the driver ended early ({proc.returncode}): {proc.communicate()}")
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def done_in(out: Path) -> set[str]:
    manifest = read_manifest(out / "joint") if (out / "joint" / "manifest.json").exists() else None
    return set(manifest["clips"]) if manifest else set()


def test_a_killed_driver_is_resumed_nothing_lost_nothing_twice(root, cache, tmp_path, plan, cluster):
    held = CLIP_IDS[2]
    faults = plan(hold=[held])
    out = tmp_path / "out"
    driver = spawn_driver(cluster, args(root, out, cache, "--workers", "2"))
    try:
        wait_for(lambda: (faults / f"held-{held}").exists() and len(done_in(out)) >= 2, driver)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        driver.kill()
        driver.communicate()
    before = done_in(out)
    assert held not in before and len(before) >= 2
    plan()
    (faults / "release").write_text("")
    code, output = cli(args(root, out, cache, "--workers", "2"))
    assert code == 0, output
    assert f"fitted {CLIPS - len(before)} clip(s), resumed {len(before)}, failed 0" in output
    assert_one_dataset(out)


def test_ctrl_c_stops_cleanly_with_a_summary(root, cache, tmp_path, plan):
    """SIGINT to this process (the driver) while a worker is inside a clip: the CLI run here,
    so no second Ray job has to start."""
    import threading

    held = CLIP_IDS[2]
    faults = plan(hold=[held])
    out = tmp_path / "out"

    def interrupt():
        deadline = time.time() + 120
        while not ((faults / f"held-{held}").exists() and len(done_in(out)) >= 2) and time.time() < deadline:
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    sender = threading.Thread(target=interrupt, daemon=True)
    sender.start()
    try:
        code, output = cli(args(root, out, cache, "--workers", "2"))
    finally:
        sender.join(timeout=130)
        signal.signal(signal.SIGINT, previous)
    assert code == 130, output
    text = " ".join(output.split())
    assert "interrupted by SIGINT" in text and "Traceback" not in text, output
    written = done_in(out)
    assert f"fitted {len(written)} clip(s), resumed 0" in text, output
    assert held not in written and len(written) >= 2
    # consistent: every shard listed and verified, no temporary file left, the lock released
    assert audit(out / "joint", {c: EXPECTED[c] for c in written}) == (0, 0, 0)
    plan()
    (faults / "release").write_text("")
    code, output = cli(args(root, out, cache, "--workers", "2"))
    assert code == 0 and f"resumed {len(written)}" in output, output
    assert_one_dataset(out)


def test_one_progress_bar_counts_clips_and_their_rate():
    from hodata.app.console import clip_progress

    class Bar:
        def __init__(self):
            self.advanced, self.description = 0, ""

        def update(self, task, advance, description):
            self.advanced += advance
            self.description = description

    times = iter([0.0, 0.0, 1800.0, 3600.0])
    bar = Bar()
    on_clip = clip_progress(bar, 0, clock=lambda: next(times))
    on_clip("a", "resumed")
    assert bar.description.startswith("done 0 · failed 0 · resumed 1 · resumed: a")  # no rate before a fit
    on_clip("b", "fitted")
    on_clip("c", "failed")
    assert bar.advanced == 3
    assert bar.description == "done 1 · failed 1 · resumed 1 · 2 clips/h · failed: c"
