"""Run the hodata CLI in this process with one fault armed, for tests/test_faults.py.

    python fault_driver.py FAULT N -- fit ho3d --root ... --output ...

FAULT is injected at the N-th occurrence (1-based) of its event, by wrapping library
functions here (hodata's code has no test hooks):

    kill_before_write     SIGKILL at the N-th ShardWriter.write_clip call, before it writes
    kill_during_write     SIGKILL after 3 chunks of the N-th write_clip call reached the shard file
    kill_after_rename     SIGKILL at the N-th manifest update: the shard is renamed, not yet listed
    kill_after_manifest   SIGKILL right after the N-th manifest update (a clip fully recorded)
    kill_in_cleanup       SIGKILL at the N-th file deletion (--overwrite clean-up)
    sigint_in_fit         SIGINT to itself at the N-th clip fit (SIGTERM: sigterm_in_fit)
    enospc_in_write       OSError ENOSPC on the first shard write of the N-th write_clip call
    hold_in_fit           at the N-th clip fit, create $FAULT_READY and wait for $FAULT_RELEASE
"""

from __future__ import annotations

import errno
import os
import pathlib
import signal
import sys
import time

import hodata.app.fit as run
import hodata.shards.manifest as mf
import hodata.shards.writer as writer

fault, n = sys.argv[1], int(sys.argv[2])
assert sys.argv[3] == "--"
sys.argv = ["hodata", *sys.argv[4:]]
calls = {"write": 0, "manifest": 0, "unlink": 0, "fit": 0}


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class FaultyFile:
    """A shard file that dies (or fails with ENOSPC) part-way through the armed clip."""

    def __init__(self, f, owner):
        self._f, self._owner, self._writes = f, owner, 0

    def write(self, data):
        armed = getattr(self._owner, "_armed", None)
        if armed == "kill" and self._writes >= 3:
            self._f.flush()
            die()
        if armed == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if armed:
            self._writes += 1
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)


original_write_clip = writer.ShardWriter.write_clip
original_open_shard = writer.ShardWriter._open_shard
original_update = mf.update_manifest
original_unlink = pathlib.Path.unlink
original_fit_clip = run.fit_clip


def write_clip(self, fit, *args, **kwargs):
    calls["write"] += 1
    self._armed = None
    if calls["write"] == n:
        if fault == "kill_before_write":
            die()
        if fault in ("kill_during_write", "enospc_in_write"):
            self._armed = "kill" if fault == "kill_during_write" else "enospc"
    try:
        return original_write_clip(self, fit, *args, **kwargs)
    finally:
        self._armed = None


def open_shard(self):
    original_open_shard(self)
    self._shard.file = FaultyFile(self._shard.file, self)


def update_manifest(*args, **kwargs):
    calls["manifest"] += 1
    if fault == "kill_after_rename" and calls["manifest"] == n:
        die()
    result = original_update(*args, **kwargs)
    if fault == "kill_after_manifest" and calls["manifest"] == n:
        die()
    return result


def unlink(self, *args, **kwargs):
    calls["unlink"] += 1
    if fault == "kill_in_cleanup" and calls["unlink"] == n:
        die()
    return original_unlink(self, *args, **kwargs)


def fit_clip(*args, **kwargs):
    calls["fit"] += 1
    if calls["fit"] == n:
        if fault in ("sigint_in_fit", "sigterm_in_fit"):
            os.kill(os.getpid(), signal.SIGINT if fault == "sigint_in_fit" else signal.SIGTERM)
            time.sleep(5)  # the signal handler raises during this sleep
        if fault == "hold_in_fit":
            pathlib.Path(os.environ["FAULT_READY"]).write_text(str(os.getpid()))
            deadline = time.time() + 120
            while not pathlib.Path(os.environ["FAULT_RELEASE"]).exists() and time.time() < deadline:
                time.sleep(0.1)
    return original_fit_clip(*args, **kwargs)


writer.ShardWriter.write_clip = write_clip
writer.ShardWriter._open_shard = open_shard
mf.update_manifest = update_manifest
pathlib.Path.unlink = unlink
run.fit_clip = fit_clip

# A shell starting the tests in the background (`cmd &` without job control) makes its
# children ignore SIGINT, and Python then installs no Ctrl-C handler: restore the terminal case.
signal.signal(signal.SIGINT, signal.default_int_handler)

from hodata.cli import app  # noqa: E402

app()
