"""Parallel fitting on Ray (issue 13): throughput with 1 and 2 workers, Ray against the
in-process loop (overhead per clip), and kill -9 of a worker and of the driver mid-run.

    python bench/bench_ray.py [--clips 8] [--frames 5] [--steps 20] [--json out.json]

Data: a synthetic HO-3D sequence (hodata's generator, 120 x 160 px, one object), clips of
--frames frames at stride 1, --steps Adam steps per stage, 5 object hypotheses. Every run is
`hodata fit` in a subprocess, timed end to end (wall clock). The cost of a run that fits
nothing (every clip resumed) is measured as well and subtracted, so "per clip" excludes the
start-up of Python, the dataset and Ray. The fault runs use tests/ray_faults.py (Ray's worker
setup hook) to hold a clip in its worker; the worker or the driver is then killed with
SIGKILL from outside. Each output is audited: samples in the manifest, keys read by the loader
(duplicates), every listed shard checked against its sha256.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TESTS = REPO / "tests"


def hodata(args, env=None, wait=True):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]), OMP_NUM_THREADS="1", **(env or {}))
    cmd = [sys.executable, "-c", "from hodata.cli import run; run()", *[str(a) for a in args]]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return time.perf_counter() - start, done


def audit(method_dir: Path) -> dict:
    from hodata.shards import ShardCorruptError, load, read_manifest, read_shard

    manifest = read_manifest(method_dir)
    if manifest is None:
        return {"clips": 0, "samples": 0, "keys": 0, "duplicates": 0, "bad_shards": 0}
    bad = 0
    for entry in manifest["shards"]:
        try:
            read_shard(method_dir / entry["name"], entry["sha256"])
        except ShardCorruptError:
            bad += 1
    keys = [s["__key__"] for s in load(method_dir, skip_corrupt=True)]
    listed = [c for e in manifest["shards"] for c in e["clips"]]
    return {"clips": len(manifest["clips"]), "samples": manifest["num_samples"], "keys": len(keys),
            "duplicates": len(keys) - len(set(keys)) + len(listed) - len(set(listed)), "bad_shards": bad}


def processes_in_group(pgid: int) -> int:
    """Processes of a process group: a driver started in its own session shares it with the
    local Ray it starts (gcs, raylet, agents; workers are reaped with the raylet)."""
    out = subprocess.run(["ps", "-eo", "pgid="], capture_output=True, text=True).stdout.split()
    return sum(1 for g in out if int(g) == pgid)


def summary_line(stdout: str) -> str:
    return next((line for line in stdout.splitlines() if line.startswith("fitted")), "")


def worker_kill(base, work: Path, held: str) -> dict:
    """kill -9 of the worker fitting `held` (held there by ray_faults), then the retry goes through."""
    faults = work / "faults"
    faults.mkdir()
    (faults / "plan.json").write_text(json.dumps({"hold": [held]}))
    env = {"HODATA_RAY_WORKER_SETUP": "ray_faults.setup", "RAY_FAULTS_DIR": str(faults)}
    out = work / "worker_kill"
    proc = hodata([*base, "--output", out, "--workers", 2, "--retries", 2], env=env, wait=False)
    while not (faults / f"held-{held}").exists():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    before = audit(out / "joint")
    os.kill(int((faults / f"held-{held}").read_text()), signal.SIGKILL)
    (faults / "release").write_text("")
    stdout, _ = proc.communicate()
    attempts = [line.split()[0] for line in (faults / "attempts.log").read_text().splitlines()]
    return {"exit": proc.returncode, "before": before, "after": audit(out / "joint"),
            "attempts_of_killed_clip": attempts.count(held), "summary": summary_line(stdout)}


def driver_kill(base, work: Path) -> dict:
    """kill -9 of the driver (started in its own session, with its local Ray) once 3 clips
    are written; the processes of its group counted every 30 s; then a rerun."""
    from hodata.shards import read_manifest

    out = work / "driver_kill"
    proc = hodata([*base, "--output", out, "--workers", 2], wait=False)

    def written():
        try:
            return len((read_manifest(out / "joint") or {"clips": {}})["clips"])
        except Exception:  # noqa: BLE001 - the manifest is being replaced
            return 0

    while written() < 3:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    group = [processes_in_group(proc.pid)]
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    before = audit(out / "joint")
    for _ in range(4):
        time.sleep(30)
        group.append(processes_in_group(proc.pid))
    seconds, rerun = hodata([*base, "--output", out, "--workers", 2])
    return {"exit_rerun": rerun.returncode, "before": before, "after": audit(out / "joint"),
            "group_processes_at_kill_then_every_30s": group, "rerun_s": seconds, "summary": summary_line(rerun.stdout)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--only", default="throughput,worker_kill,driver_kill")
    opts = parser.parse_args()

    from hodata.datasets.synthetic import make_synthetic_ho3d

    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    cache = work / "cache"
    root = make_synthetic_ho3d(work / "ho3d", sequences=1, frames=opts.clips * opts.frames, image_size=(120, 160),
                               object_ids=("025_mug",), cache_dir=cache, seed=1)
    base = ["fit", "ho3d", "--root", root, "--mesh-cache", cache, "--clip-length", opts.frames, "--stride", 1,
            "--steps1", opts.steps, "--steps2", opts.steps, "--hypotheses", 5, "--roi-size", 64]
    results: dict = {"clips": opts.clips, "frames": opts.frames, "steps": opts.steps, "cores": os.cpu_count(),
                     "load_before": os.getloadavg()}

    def timed(name, extra, out):
        seconds, done = hodata([*base, "--output", out, *extra])
        resumed_seconds, again = hodata([*base, "--output", out, *extra])
        assert done.returncode == 0, done.stdout + done.stderr
        assert again.returncode == 0 and f"resumed {opts.clips}" in again.stdout, again.stdout + again.stderr
        row = {"wall_s": seconds, "nothing_to_fit_s": resumed_seconds,
               "per_clip_s": (seconds - resumed_seconds) / opts.clips,
               "clips_per_hour": opts.clips * 3600 / (seconds - resumed_seconds), "load": os.getloadavg(),
               **audit(out / "joint")}
        results[name] = row
        print(name, json.dumps(row), flush=True)

    parts = opts.only.split(",")
    if "throughput" in parts:
        timed("in_process", [], work / "inproc")
        timed("ray_1_worker", ["--ray", "auto", "--workers", 1], work / "ray1")
        timed("ray_2_workers", ["--workers", 2], work / "ray2")

    clip_ids = [f"synthetic_SYN0_{i * opts.frames:04d}" for i in range(opts.clips)]
    if "worker_kill" in parts:
        results["worker_kill"] = worker_kill(base, work, clip_ids[2])
        print("worker_kill", json.dumps(results["worker_kill"]), flush=True)
    if "driver_kill" in parts:
        results["driver_kill"] = driver_kill(base, work)
        print("driver_kill", json.dumps(results["driver_kill"]), flush=True)
    results["load_after"] = os.getloadavg()
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
