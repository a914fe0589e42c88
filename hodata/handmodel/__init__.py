"""Hand models with one interface: MANO (user-supplied files) and the built-in open hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hodata.paths import mano_dir_candidates


@dataclass
class HandModelStatus:
    active: str
    searched: list[Path]
    found: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def describe(mano_dir=None) -> HandModelStatus:
    """Which hand model `load()` would use, and where MANO files were looked for."""
    searched = mano_dir_candidates(mano_dir)
    found: dict[str, Path] = {}
    for folder in searched:
        for side in ("right", "left"):
            path = folder / f"MANO_{side.upper()}.pkl"
            if side not in found and path.is_file():
                found[side] = path
    active = "MANO" if found else "open hand (built-in; no MANO files found)"
    return HandModelStatus(active=active, searched=searched, found=found)
