"""`manifest.json`: the index of an output directory of shards, and shard file naming.

Layout of an output directory (one per fitting method):

    out/
      manifest.json                      the index below, replaced atomically
      shard-w0-000000.tar                complete shards: <prefix>-<tag>-<index:06d>.tar
      .tmp-shard-w0-000001.tar.partial   a shard being written (never listed, never read)
      .manifest.lock                     flock target that serialises manifest updates
      .writer.lock                       held by an exclusive writer (`hodata fit`) while it runs

`<tag>` is `w<worker_id>` when the writer was given a worker id, else `p<pid>`, so writers
running at the same time never pick the same file name. Manifest contents:

    {"format": "hodata-shards", "schema_version": 1, "hodata_version": "0.1.0",
     "config": {...}, "method": "joint", "num_samples": 120,
     "shards": [{"name": "shard-w0-000000.tar", "samples": 60, "bytes": 1843200,
                 "sha256": "...", "clips": {"ho3d_ABF10_0000": 60}}, ...],
     "clips": {"ho3d_ABF10_0000": {"shard": "shard-w0-000000.tar", "samples": 60}, ...},
     "updated": "2025-01-01T12:00:00+00:00"}

A shard appears in the manifest only after it was renamed to its final name, and a clip only
with its shard, so `clips` is exactly the set of clips whose samples are all on disk.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

from hodata import __version__
from hodata.errors import HodataError
from hodata.fileio import sha256_file  # noqa: F401  (part of this module's API)

FORMAT_NAME = "hodata-shards"
SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".manifest.lock"
WRITER_LOCK_NAME = ".writer.lock"
DEFAULT_PREFIX = "shard"

_SHARD_RE = re.compile(r"^(?P<prefix>[A-Za-z0-9_]+)-(?P<tag>[wp][A-Za-z0-9]+)-(?P<index>\d{6,})\.tar$")
_PARTIAL_RE = re.compile(r"^\.tmp-(?P<final>.+\.tar)\.partial$")
_JSON_TMP_RE = re.compile(r"^\..+\.json\.tmp-(?P<pid>\d+)$")


def shard_name(prefix: str, tag: str, index: int) -> str:
    """`<prefix>-<tag>-<index:06d>.tar`."""
    return f"{prefix}-{tag}-{index:06d}.tar"


def partial_name(final_name: str) -> str:
    """Temporary name of a shard while it is written: hidden, and not ending in `.tar`."""
    return f".tmp-{final_name}.partial"


def parse_shard_name(name: str) -> Optional[tuple[str, str, int]]:
    """(prefix, tag, index) of a complete shard's file name, or None for other files."""
    m = _SHARD_RE.match(name)
    return (m["prefix"], m["tag"], int(m["index"])) if m else None


def parse_partial_name(name: str) -> Optional[tuple[str, str, int]]:
    """(prefix, tag, index) of a partial shard's file name, or None for other files."""
    m = _PARTIAL_RE.match(name)
    return parse_shard_name(m["final"]) if m else None


def empty_manifest(config: Optional[dict] = None) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "hodata_version": __version__,
        "config": dict(config or {}),
        "method": None,
        "num_samples": 0,
        "shards": [],
        "clips": {},
        "updated": _now(),
    }


class ManifestUnreadable(HodataError):
    """manifest.json exists but cannot be parsed as a hodata manifest (damaged, truncated).

    A writer opening the output rebuilds the manifest from the shards on disk instead."""


def read_manifest(output_dir: str | os.PathLike) -> Optional[dict[str, Any]]:
    """The manifest of `output_dir`, or None when there is none.

    ManifestUnreadable when the file is damaged (a writer rebuilds it from the shards);
    HodataError when it belongs to something else or to a newer hodata.
    """
    path = Path(output_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    rebuild = "rerun `hodata fit` with the same --output to rebuild it from the shards on disk"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ManifestUnreadable(f"{path}: unreadable manifest ({e}); {rebuild}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise HodataError(f"{path}: not a hodata shard manifest; choose another output directory")
    if manifest.get("schema_version", 0) > SCHEMA_VERSION:
        raise HodataError(
            f"{path}: written by a newer hodata (schema {manifest['schema_version']}); upgrade hodata"
        )
    problem = _structure_problem(manifest)
    if problem:
        raise ManifestUnreadable(f"{path}: damaged manifest ({problem}); {rebuild}")
    return manifest


def _structure_problem(manifest: dict) -> Optional[str]:
    """What makes a manifest of our format unusable, or None."""
    shards, clips = manifest.get("shards"), manifest.get("clips")
    if not isinstance(shards, list) or not isinstance(clips, dict):
        return "'shards' must be a list and 'clips' a mapping"
    for entry in shards:
        if not isinstance(entry, dict) or not all(k in entry for k in ("name", "samples", "bytes", "sha256", "clips")):
            return "a shard entry lacks name / samples / bytes / sha256 / clips"
        if not isinstance(entry["clips"], dict) or not isinstance(entry["samples"], int):
            return f"shard entry {entry.get('name')!r} is malformed"
    names = {e["name"] for e in shards}
    for clip_id, where in clips.items():
        if not isinstance(where, dict) or where.get("shard") not in names:
            return f"clip {clip_id!r} points to no listed shard"
    return None


def done_clips(output_dir: str | os.PathLike) -> set[str]:
    """Clip ids whose samples are all in complete shards of `output_dir` (empty if none)."""
    manifest = read_manifest(output_dir)
    return set(manifest["clips"]) if manifest else set()


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to a temporary file beside `path`, fsync it, then os.replace it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or an interrupt leaves no temporary file behind
        raise
    fsync_dir(path.parent)


def remove_stale_json_tmp(directory: str | os.PathLike) -> list[str]:
    """Delete `.<name>.tmp-<pid>` files of `write_json_atomic` whose process is gone (killed
    between write and rename); returns their names."""
    removed = []
    for path in Path(directory).iterdir():
        m = _JSON_TMP_RE.match(path.name)
        if m and not pid_alive(int(m["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename in `directory` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def manifest_lock(output_dir: str | os.PathLike) -> Iterator[None]:
    """Exclusive lock serialising read-modify-write of the manifest across processes."""
    with open(Path(output_dir) / LOCK_NAME, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class WriterLock:
    """Exclusive, non-blocking lock of an output directory for one writing process.

    Held from `acquire()` to `release()` (or process exit: the kernel drops an flock when
    its holder dies, so a kill -9 leaves no stale lock). A second process asking for it gets
    a HodataError naming the holder's pid; it never waits, since two runs would fit the same
    clips twice. An output on a read-only file system is a HodataError too.
    """

    def __init__(self, output_dir: str | os.PathLike):
        self.path = Path(output_dir) / WRITER_LOCK_NAME
        self._file = None

    def acquire(self) -> "WriterLock":
        try:
            f = open(self.path, "a+")
        except OSError as e:
            raise HodataError(
                f"{self.path.parent}: cannot write into this output ({e.strerror or e}); choose a writable --output"
            ) from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise HodataError(
                f"{self.path.parent}: another hodata run (pid {holder}) is writing into this output; wait for it "
                "to finish or choose another --output"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def merge_into_manifest(
    manifest: dict[str, Any],
    shards: list[dict[str, Any]] = (),
    config: Optional[dict] = None,
    method: Optional[str] = None,
) -> dict[str, Any]:
    """Add shard entries to `manifest` in place.

    An entry is {"name", "samples", "bytes", "sha256", "clips": {clip_id: samples}}.

    Idempotent: merging the same entry twice (two processes recording the same shard) leaves
    one entry. A clip recorded in two different shards is kept once with a warning, since a
    reader would then see its keys twice.
    """
    by_name = {s["name"]: s for s in manifest["shards"]}
    for entry in shards:
        by_name[entry["name"]] = dict(entry)
        for clip_id, clip_samples in entry["clips"].items():
            previous = manifest["clips"].get(clip_id)
            if previous is not None and previous["shard"] != entry["name"]:
                warnings.warn(
                    f"clip {clip_id} is in both {previous['shard']} and {entry['name']}: "
                    "two writers fitted the same clip; give workers disjoint clip lists",
                    stacklevel=2,
                )
                continue
            manifest["clips"][clip_id] = {"shard": entry["name"], "samples": clip_samples}
    manifest["shards"] = [by_name[k] for k in sorted(by_name)]
    manifest["num_samples"] = sum(s["samples"] for s in manifest["shards"])
    if config is not None:
        manifest["config"] = dict(config)
    if method is not None:
        manifest["method"] = method
    manifest["hodata_version"] = __version__
    manifest["updated"] = _now()
    return manifest


def update_manifest(
    output_dir: str | os.PathLike,
    shards: list[dict[str, Any]] = (),
    config: Optional[dict] = None,
    method: Optional[str] = None,
) -> dict[str, Any]:
    """Locked read-merge-write of `output_dir/manifest.json`; returns the merged manifest."""
    with manifest_lock(output_dir):
        manifest = read_manifest(output_dir) or empty_manifest(config)
        merge_into_manifest(manifest, shards, config, method)
        write_json_atomic(Path(output_dir) / MANIFEST_NAME, manifest)
    return manifest




def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
