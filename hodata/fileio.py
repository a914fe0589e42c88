"""Small file helpers shared by the mesh cache, dataset adapters, evidence providers and shards."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from hodata.errors import HodataError


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (shards can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB; HodataError naming the file if missing or corrupt."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise HodataError(f"missing image {path}; restore the file or remove the frame from the split list")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    # OpenCV decodes a truncated JPEG into a full-size image with a grey tail (and only warns):
    # a JPEG must end with its end-of-image marker
    truncated_jpeg = path.suffix.lower() in (".jpg", ".jpeg") and not _ends_with_jpeg_eoi(path)
    if image is None or truncated_jpeg:
        raise HodataError(f"corrupt or unreadable image {path}; re-extract it from the dataset archive")
    return np.ascontiguousarray(image[:, :, ::-1])


def _ends_with_jpeg_eoi(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 16))
        return b"\xff\xd9" in f.read()
