"""What dataset adapters share: clip windowing and image reading.

An adapter turns a dataset on disk into `hodata.types.Clip` objects; the name registry is
`hodata.datasets.registry`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hodata.errors import HodataError
from hodata.fileio import read_rgb  # noqa: F401  (part of this module's API)


def clip_windows(n_frames: int, length: int = 10, stride: int = 4) -> list[list[int]]:
    """Frame indices of the clips cut from a sequence of `n_frames` (REFERENCE.md §1).

    A window holds `length` frames taken every `stride` frames, so it spans
    `span = (length - 1) * stride + 1` consecutive frames: window k is
    `[k * length * stride + j * stride for j in range(length)]`. Consecutive windows do not
    overlap in time (window k+1 starts `stride` frames after window k ends). Windows are
    taken while they fit; when the last one does not end on the last frame, one more window
    covers the tail: aligned to the end, `[n_frames - span + j * stride]`, when that shares no
    frame with the previous window (it lies between its frames), else the frames after the
    previous window on its grid, `[last + stride, ..., n_frames - 1]` (shorter than `length`).
    So no frame index is in two windows: one frame gives one sample key, and shard writers
    refuse a key twice. A sequence shorter than `span` gives a single shorter window of the
    frames `n_frames - 1, n_frames - 1 - stride, ...` (in increasing order); an empty
    sequence gives no window.
    """
    if length < 1 or stride < 1:
        raise ValueError(f"clip length and stride must be >= 1, got length={length}, stride={stride}")
    if n_frames <= 0:
        return []
    span = (length - 1) * stride + 1
    if n_frames < span:
        return [list(range((n_frames - 1) % stride, n_frames, stride))]
    windows = [
        list(range(start, start + span, stride)) for start in range(0, n_frames - span + 1, length * stride)
    ]
    last = windows[-1][-1]
    if last != n_frames - 1:
        end_aligned = list(range(n_frames - span, n_frames, stride))
        if set(end_aligned).isdisjoint(windows[-1]):
            windows.append(end_aligned)
        else:  # same grid as the previous window: continue it instead of repeating its frames
            windows.append(list(range(last + stride, n_frames, stride)))
    return windows


def load_each(items, load, name_of, skipped: list[str], messages: list[str]):
    """Yield `load(item)` for each item; an item that fails to load (any exception) is named in
    `skipped` and explained in `messages`, and the iteration goes on (one bad clip never ends
    a run)."""
    for item in items:
        try:
            clip = load(item)
        except Exception as exc:  # noqa: BLE001 - one unloadable clip never ends the iteration
            name = name_of(item)
            skipped.append(name)
            messages.append(str(exc) if isinstance(exc, HodataError) else
                            f"clip {name} could not be loaded ({type(exc).__name__}: {exc})")
            continue
        yield clip


def clip_frames(clip) -> np.ndarray:
    """The clip's RGB frames (T, H, W, 3) uint8, decoded from `clip.image_paths` on the first
    call and kept on `clip.images`: the evidence provider and the shard writer share one
    decode per frame. Memory: the frames live as long as the clip (one clip at a time)."""
    if clip.images is None:
        clip.images = np.stack([read_rgb(p) for p in clip.image_paths])
    return clip.images


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image, decoding it fully so a truncated file is caught here."""
    image = read_rgb(path)
    return int(image.shape[0]), int(image.shape[1])


def find_image(folder: Path, frame_id: str, extensions: tuple[str, ...] = (".png", ".jpg", ".jpeg")) -> Path:
    """`folder/<frame_id><ext>` for the first extension that exists (HO-3D v2 png, v3 jpg).

    Returns the first candidate when none exists, so the reader's error names a real path.
    """
    for ext in extensions:
        candidate = folder / f"{frame_id}{ext}"
        if candidate.is_file():
            return candidate
    return folder / f"{frame_id}{extensions[0]}"
