"""Where hodata looks for user-supplied files and its caches."""

from __future__ import annotations

import os
from pathlib import Path

MANO_DIR_ENV = "HODATA_MANO_DIR"
MESH_CACHE_ENV = "HODATA_MESH_CACHE"


def default_mesh_cache() -> Path:
    """`$HODATA_MESH_CACHE`, else `mesh_cache/` in the current directory."""
    return Path(os.environ.get(MESH_CACHE_ENV, "mesh_cache"))


def mano_dir_candidates(mano_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for MANO_RIGHT.pkl / MANO_LEFT.pkl, in order.

    An explicit `mano_dir` (the `--mano-dir` option) is the only candidate when given;
    otherwise `$HODATA_MANO_DIR`, then `~/.hodata/mano`.
    """
    if mano_dir is not None:
        return [Path(mano_dir)]
    candidates = []
    if os.environ.get(MANO_DIR_ENV):
        candidates.append(Path(os.environ[MANO_DIR_ENV]))
    candidates.append(Path.home() / ".hodata" / "mano")
    return candidates
