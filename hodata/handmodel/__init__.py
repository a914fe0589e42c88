"""Hand models with one interface: MANO (user-supplied files) and the built-in open hand.

    layer = hodata.handmodel.load(side="right")          # MANO if found, else the open hand
    out = layer(global_orient, hand_pose, betas, transl)   # out.vertices (B, V, 3), out.joints (B, 21, 3)

Joint order: constants.JOINT_NAMES (MANO's 16 joints, then 5 tips thumb..little);
`THUMB_FIRST_ORDER` reorders to the thumb-first convention. `layer.closed_faces` closes the
wrist opening by triangulating the wrist ring (no extra vertex): MANO 1538 -> 1552 faces.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hodata.errors import HodataError
from hodata.handmodel.constants import (
    JOINT_NAMES,
    MANO_MODEL_NAME,
    MANO_TIP_VERTEX_IDS,
    OPEN_HAND_MODEL_NAME,
    THUMB_FIRST_ORDER,
    mano_filename,
)
from hodata.handmodel.layer import HandLayer, HandOutput
from hodata.handmodel.mano_io import read_mano_pickle, write_mano_pickle_arrays
from hodata.handmodel.meshing import close_wrist
from hodata.handmodel.open_hand import open_hand_arrays
from hodata.paths import mano_dir_candidates

__all__ = [
    "HandLayer", "HandOutput", "HandModelStatus", "JOINT_NAMES", "MANO_TIP_VERTEX_IDS", "THUMB_FIRST_ORDER",
    "close_wrist", "describe", "find_mano_file", "load", "open_hand_arrays", "read_mano_pickle", "write_mano_pickle",
]

_OPEN_NAMES = ("open", "open-hand", OPEN_HAND_MODEL_NAME)


@dataclass
class HandModelStatus:
    active: str
    searched: list[Path]
    found: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _check_side(side: str) -> str:
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    return side


def find_mano_file(side: str, mano_dir: str | os.PathLike | None = None) -> Path | None:
    """Path of MANO_{SIDE}.pkl in the first candidate folder holding it, else None.

    An explicit `mano_dir` must exist (HodataError otherwise); it may also name the pickle
    itself.
    """
    _check_side(side)
    if mano_dir is not None:
        path = Path(mano_dir)
        if not path.exists():
            raise HodataError(f"{path}: MANO folder does not exist; pass --mano-dir with the folder holding {mano_filename(side)}")
        if path.is_file():
            return path
    for folder in mano_dir_candidates(mano_dir):
        if (folder / mano_filename(side)).is_file():
            return folder / mano_filename(side)
    return None


def load(
    side: str = "right",
    mano_dir: str | os.PathLike | None = None,
    model: str = "auto",
    num_pca_comps: int = 16,
    use_pca: bool = True,
    flat_hand_mean: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> HandLayer:
    """The hand layer for one side.

    model: "auto" (MANO when MANO_{SIDE}.pkl is found in `mano_dir` / $HODATA_MANO_DIR /
    ~/.hodata/mano, else the open hand), "mano" (HodataError naming the searched folders when
    missing) or "open" / "open-hand-v1". An explicit `mano_dir` means MANO is wanted: a
    missing folder or file, or a bad pickle, is a HodataError in "auto" mode too.
    """
    _check_side(side)
    options = dict(num_pca_comps=num_pca_comps, use_pca=use_pca, flat_hand_mean=flat_hand_mean, dtype=dtype, device=device)
    if model in _OPEN_NAMES:
        return HandLayer(open_hand_arrays(side), side, OPEN_HAND_MODEL_NAME, **options)
    if model not in ("auto", MANO_MODEL_NAME):
        raise ValueError(f"model must be 'auto', 'mano' or 'open', got {model!r}")
    path = find_mano_file(side, mano_dir)
    if path is None:
        if model == MANO_MODEL_NAME or mano_dir is not None:
            searched = ", ".join(str(p) for p in mano_dir_candidates(mano_dir))
            raise HodataError(
                f"{mano_filename(side)} not found (looked in {searched}); pass --mano-dir or set $HODATA_MANO_DIR"
            )
        return HandLayer(open_hand_arrays(side), side, OPEN_HAND_MODEL_NAME, **options)
    arrays = read_mano_pickle(path)
    # A file is used as the file it is: its layer is named "mano" whatever `model_name` key it
    # carries, so a fit records "mano" and every later step (ground truth, eval, overlay)
    # reloads this file from --mano-dir instead of a built-in model of the same name.
    try:
        return HandLayer(arrays, side, MANO_MODEL_NAME, **options)
    except (ValueError, IndexError) as exc:
        raise HodataError(f"{path}: {exc}") from None


def write_mano_pickle(path: str | os.PathLike, side: str = "right") -> Path:
    """Write the open hand as a MANO-format plain-numpy pickle (smplx and `load` read it).

    Besides MANO's keys it holds `tip_vertex_ids` (5,) and `model_name`.
    """
    return write_mano_pickle_arrays(path, open_hand_arrays(_check_side(side)))


def describe(mano_dir=None, validate: bool = True) -> HandModelStatus:
    """Which hand model `load()` would use, and where MANO files were looked for.

    With validate=True every found file is loaded as `load()` would (read, checked, layer
    built); failures go to `problems`.
    """
    searched = mano_dir_candidates(mano_dir)
    found: dict[str, Path] = {}
    problems: list[str] = []
    for side in ("right", "left"):
        try:
            path = find_mano_file(side, mano_dir)
        except HodataError as exc:
            problems.append(str(exc))
            break
        if path is not None:
            found[side] = path
    if validate:
        for side, path in found.items():
            try:  # exactly what a fit will do with the file
                load(side=side, mano_dir=path, model=MANO_MODEL_NAME, dtype=torch.float64)
            except HodataError as exc:
                problems.append(str(exc))
    if found and not problems:
        active = "MANO"
    elif found:
        active = "MANO (files invalid: see problems)"
    else:
        active = "open hand (built-in; no MANO files found)"
    return HandModelStatus(active=active, searched=searched, found=found, problems=problems)
