"""Frames of the user's own recording: a video file or a folder of frames, with timestamps.

Sources:
- a video file (.mp4, .mov, .avi, .mkv, .m4v, .webm) decoded with OpenCV's FFmpeg backend
  (what opencv-python-headless ships). Timestamps are the decoder's (`CAP_PROP_POS_MSEC`
  after each frame, i.e. the container's presentation times, so variable-frame-rate phone
  clips keep their real times); where the decoder gives none (0 after the first frame, or
  going backwards) they are `index / fps` of the header's frame rate;
- a folder of frames (.png, .jpg, .jpeg, .bmp), in file-name order (natural: "f2" before
  "f10"), at `folder_fps` frames per second (a folder carries no times).

Frame `i` of the source (0-based, in decoding order) has the frame id `f"{i:06d}"` in both
cases, so a folder of the frames of a video gives the same frame ids, clips and sample keys
as the video itself.

Selection (`select_frames`): frames with `start <= time < end` (seconds), then, with
`fps`, the first frame at or after each tick of a `1 / fps` grid starting at the first
kept frame (a lower rate; a rate above the source's keeps every frame).

The kept frames are written once, lossless (PNG), optionally shrunk so the longer side is
at most `max_side` pixels, into `<frames_cache>/<sequence>/`, beside `source.json` (the
source, its size and modification time, the selection, the timestamps and the camera): the
fitting pipeline and `hodata show` read frames from there.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from hodata.errors import HodataError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
SOURCE_RECORD = "source.json"
# A file whose decodable frames fall short of its header's count by more than this fraction
# (and more than one frame: headers round) is truncated.
TRUNCATION_TOLERANCE = 0.05


def frame_id(index: int) -> str:
    return f"{index:06d}"


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def sequence_name(source: Path) -> str:
    """The sequence name of a source: the file's stem or the folder's name, made key-safe."""
    name = source.stem if source.is_file() else source.name
    cleaned = re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-")
    return cleaned or "video"


@dataclass
class SourceFrames:
    """What a source holds: frame count, timestamps (seconds, per source frame), frame rate,
    size (H, W) of the frames, and for folders the image files."""

    path: Path
    kind: str                          # "video" | "folder"
    timestamps: list[float]
    fps: float
    size: tuple[int, int]
    files: Optional[list[Path]] = None

    def __len__(self) -> int:
        return len(self.timestamps)


def _open_capture(path: Path):
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise HodataError(f"{path}: not a readable video (OpenCV/FFmpeg cannot open it; truncated, or an "
                          "unsupported codec?); re-export it as H.264 MP4 or pass a folder of frames")
    return capture


def scan_video(path: Path) -> SourceFrames:
    """Decode every frame of a video once for its count, times and size (module docstring).
    HodataError naming the file when it cannot be opened, holds no frame or is truncated."""
    import cv2

    capture = _open_capture(path)
    try:
        header_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        header_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        times, size = [], None
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            if size is None:
                size = (int(frame.shape[0]), int(frame.shape[1]))
            times.append(float(capture.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0)
    finally:
        capture.release()
    if not times:
        raise HodataError(f"{path}: no frame could be decoded (truncated or corrupt video?)")
    if header_count > 0 and len(times) < header_count - max(1, TRUNCATION_TOLERANCE * header_count):
        raise HodataError(f"{path}: truncated video: its header says {header_count} frames but only {len(times)} "
                          "decode; re-copy or re-export the file")
    fps = header_fps if header_fps > 0 and math.isfinite(header_fps) else 30.0
    decoder_times = len(times) > 1 and all(b > a for a, b in zip(times, times[1:]))
    if not decoder_times:
        times = [i / fps for i in range(len(times))]
    else:
        times = [t - times[0] for t in times]
    return SourceFrames(path, "video", times, fps, size)


def scan_folder(path: Path, folder_fps: float) -> SourceFrames:
    """The image files of a folder in natural name order, at `folder_fps`."""
    from hodata.fileio import read_rgb

    files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
                   key=lambda p: _natural_key(p.name))
    if not files:
        raise HodataError(f"{path}: no frames ({', '.join(IMAGE_EXTENSIONS)} files) in this folder")
    first = read_rgb(files[0])
    return SourceFrames(path, "folder", [i / folder_fps for i in range(len(files))], folder_fps,
                        (int(first.shape[0]), int(first.shape[1])), files)


def scan_source(path: str | Path, folder_fps: float = 30.0) -> SourceFrames:
    path = Path(path)
    if path.is_dir():
        return scan_folder(path, folder_fps)
    if not path.exists():
        raise HodataError(f"{path}: no such video file or frames folder")
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise HodataError(f"{path}: not a video file ({', '.join(VIDEO_EXTENSIONS)}) nor a folder of frames")
    return scan_video(path)


def select_frames(timestamps: list[float], start: Optional[float] = None, end: Optional[float] = None,
                  fps: Optional[float] = None) -> list[int]:
    """Indices of the source frames kept by `--start/--end` (seconds) and `--fps` (module docstring)."""
    if start is not None and end is not None and end <= start:
        raise HodataError(f"--end {end} must be after --start {start}")
    if fps is not None and fps <= 0:
        raise HodataError(f"--fps must be positive, got {fps}")
    kept = [i for i, t in enumerate(timestamps)
            if (start is None or t >= start - 1e-9) and (end is None or t < end - 1e-9)]
    if fps is None or not kept:
        return kept
    step, picked = 1.0 / fps, []
    origin = timestamps[kept[0]]
    next_tick = 0
    for i in kept:
        tick = (timestamps[i] - origin) / step
        if tick >= next_tick - 1e-6:
            picked.append(i)
            next_tick = math.floor(tick + 1e-6) + 1
    return picked


def scale_for(size: tuple[int, int], max_side: Optional[int]) -> float:
    """The factor (<= 1) that brings the longer side of `size` to at most `max_side`."""
    if max_side is None or max(size) <= max_side:
        return 1.0
    return max_side / max(size)


def scaled_size(size: tuple[int, int], factor: float) -> tuple[int, int]:
    return (int(round(size[0] * factor)), int(round(size[1] * factor))) if factor != 1.0 else tuple(size)


def _source_stamp(path: Path) -> dict:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        return {"files": len(files), "bytes": sum(p.stat().st_size for p in files),
                "mtime": max((p.stat().st_mtime for p in files), default=0.0)}
    stat = path.stat()
    return {"bytes": stat.st_size, "mtime": stat.st_mtime}


def write_frames(source: SourceFrames, indices: list[int], folder: Path, factor: float, record: dict) -> list[Path]:
    """The frames `indices` of `source` as PNG files in `folder` (written once: a folder whose
    `source.json` matches the same source, selection and size is reused), and the record."""
    import cv2
    from PIL import Image

    from hodata.fileio import read_rgb

    record = {**record, "source": str(source.path.resolve()), "kind": source.kind, "stamp": _source_stamp(source.path),
              "source_fps": source.fps, "source_size": list(source.size), "scale": factor,
              "frames": {frame_id(i): source.timestamps[i] for i in indices}}
    paths = [folder / f"{frame_id(i)}.png" for i in indices]
    record_path = folder / SOURCE_RECORD
    if record_path.is_file() and all(p.is_file() for p in paths):
        try:
            if json.loads(record_path.read_text()) == json.loads(json.dumps(record)):
                return paths
        except ValueError:
            pass
    folder.mkdir(parents=True, exist_ok=True)
    record_path.unlink(missing_ok=True)   # the record is written last: it marks a complete folder
    height, width = scaled_size(source.size, factor)
    wanted = set(indices)

    def save(index: int, rgb: np.ndarray) -> None:
        if rgb.shape[:2] != (height, width):
            if factor == 1.0:
                raise HodataError(f"{source.path}: frame {index} is {rgb.shape[1]}x{rgb.shape[0]}, the first is "
                                  f"{source.size[1]}x{source.size[0]}; all frames must have one size")
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        tmp = folder / f".{frame_id(index)}.partial.png"
        Image.fromarray(np.ascontiguousarray(rgb)).save(tmp, compress_level=1)
        tmp.replace(folder / f"{frame_id(index)}.png")

    if source.kind == "folder":
        for i in indices:
            save(i, read_rgb(source.files[i]))
    else:
        capture = _open_capture(source.path)
        try:
            last = max(indices)
            for i in range(last + 1):
                ok, frame = capture.read()
                if not ok or frame is None:
                    raise HodataError(f"{source.path}: frame {i} no longer decodes (the file changed or is truncated)")
                if i in wanted:
                    save(i, frame[:, :, ::-1])
        finally:
            capture.release()
    tmp = folder / (SOURCE_RECORD + ".partial")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(record_path)
    return paths


def read_source_record(folder: str | Path) -> Optional[dict]:
    """The `source.json` of a frames folder, or None."""
    path = Path(folder) / SOURCE_RECORD
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_frames(path: str | Path, frame_ids: list[str], image_size: tuple[int, int],
                folder_fps: float = 30.0) -> np.ndarray:
    """(T, H, W, 3) uint8: the frames `frame_ids` (source indices, `frame_id`) of a video file
    or frames folder, resized to `image_size` (H, W): the original frames of a fitted clip."""
    import cv2

    from hodata.fileio import read_rgb

    path = Path(path)
    indices = [int(f) for f in frame_ids]
    height, width = image_size
    found: dict[int, np.ndarray] = {}
    if path.is_dir():
        files = scan_folder(path, folder_fps).files
        for i in set(indices):
            if i >= len(files):
                raise HodataError(f"{path}: has {len(files)} frames, the fit has frame {i}; is it the fitted source?")
            found[i] = read_rgb(files[i])
    else:
        capture = _open_capture(path)
        try:
            for i in range(max(indices) + 1):
                ok, frame = capture.read()
                if not ok or frame is None:
                    raise HodataError(f"{path}: frame {i} does not decode; is it the fitted video?")
                if i in indices:
                    found[i] = np.ascontiguousarray(frame[:, :, ::-1])
        finally:
            capture.release()
    out = []
    for i in indices:
        image = found[i]
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        out.append(image)
    return np.stack(out)
