"""Faults inside Ray workers, for tests/test_ray.py and bench/bench_ray.py.

Ray runs `setup()` in every worker process before its first task (the worker setup hook:
`ray.init(runtime_env={"worker_process_setup_hook": "ray_faults.setup"})`, or
`HODATA_RAY_WORKER_SETUP=ray_faults.setup` for `hodata fit --workers/--ray`, with this folder
on PYTHONPATH). It wraps `hodata.app.fit.fit_clip` in that worker (hodata's code has no test
hooks). What the wrapper does is read, at each clip, from `$RAY_FAULTS_DIR/plan.json`:

    {"raise": [clip ids]}   raise a plain RuntimeError inside fitting for these clips
    {"kill": [clip ids]}    SIGKILL the worker after fitting the clip, before it returns the
                            result (once per clip: a `killed-<clip>` file remembers it)
    {"hold": [clip ids]}    write `held-<clip>` (the worker's pid) and sleep until
                            `release` exists (a test kills the driver meanwhile)

Every attempt appends "<clip> <pid>" to `$RAY_FAULTS_DIR/attempts.log`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path


def _plan(folder: Path) -> dict:
    try:
        return json.loads((folder / "plan.json").read_text())
    except (OSError, ValueError):
        return {}


def setup() -> None:
    import hodata.app.fit as run

    folder = Path(os.environ["RAY_FAULTS_DIR"])
    original = run.fit_clip

    def fit_clip(clip, *args, **kwargs):
        plan = _plan(folder)
        with open(folder / "attempts.log", "a") as log:
            log.write(f"{clip.clip_id} {os.getpid()}\n")
        if clip.clip_id in plan.get("raise", []):
            raise RuntimeError(f"injected failure in {clip.clip_id}\n(second line)")
        if clip.clip_id in plan.get("hold", []):
            (folder / f"held-{clip.clip_id}").write_text(str(os.getpid()))
            deadline = time.time() + 120
            while not (folder / "release").exists() and time.time() < deadline:
                time.sleep(0.1)
        fits = original(clip, *args, **kwargs)
        if clip.clip_id in plan.get("kill", []):
            try:
                fd = os.open(folder / f"killed-{clip.clip_id}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return fits
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        return fits

    run.fit_clip = fit_clip
