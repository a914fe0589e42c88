"""Your own recording: `hodata fit video CLIP.mp4 --object MESH` (or a folder of frames).

What the adapter does, in order:
1. frames (`video_frames`): the source's frames and timestamps, `--start/--end` (seconds) and
   `--fps` selection, written lossless to the frames cache (shrunk to `max_side`);
2. camera: `--intrinsics fx,fy,cx,cy` or `--focal PX` (pixels of the source frames; principal
   point at the centre) or, by default, a guess from the horizontal field of view `--fov DEG`
   (`DEFAULT_FOV_DEG`): fx = fy = (W / 2) / tan(fov / 2), principal point at the image centre
   (paper Sec. 3.2: focal from the camera's specification). Scaled with the frames; the
   same K goes into every clip, hence into every sample's json;
3. hands: MediaPipe Hands on every kept frame, once: the clips carry these whole-frame
   detections (`Clip.hand_detections`) to the detected evidence, which does not run it again;
4. object: a seed box (`--object-box`, else found next to the hand) tracked by segmentation
   (`video_objects`);
5. clip selection, as for Epic-Kitchens: the object boxes and hand detections are tracked
   together (`hodata.evidence.tracking.track_clip`, sides from the detections, at most two
   hands); each run of frames where the object is tracked, with the hands whose tracks
   cover at least half of it, cut to the frames where all of those hands are tracked too,
   is kept when longer than `min_tracked` frames, and cut into windows of `clip_length`
   frames at `stride`. The hands of a clip are those sides (one or two).

The object (`--object`): a mesh file (or a folder holding one, or a catalog model id such as
025_mug) at its real size, prepared through the mesh cache; or a category name (cup, bottle,
phone, ...: `hodata.objects.CATEGORIES`), whose catalog mesh is fitted with its scale
optimised under the category's size prior.

A source with no hand, or no object next to the hand, in view gives one HodataError line
before anything is fitted, so no shard is written.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from hodata.errors import HodataError
from hodata.types import Clip

from . import video_frames as vf
from .base import clip_windows, load_each
from .registry import register_dataset

DEFAULT_FOV_DEG = 65.0      # horizontal field of view guessed when no focal is given (phone main camera, video mode)
DEFAULT_MAX_SIDE = 1280
DEFAULT_MIN_TRACKED = 10


def parse_intrinsics(text: str) -> tuple[float, float, float, float]:
    """`--intrinsics fx,fy,cx,cy` (pixels of the source frames) -> four floats, checked."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values) or values[0] <= 0 or values[1] <= 0:
        raise HodataError(f"--intrinsics {text!r}: give fx,fy,cx,cy in pixels of the video's frames, fx and fy > 0")
    return values  # type: ignore[return-value]


def camera_matrix(size: tuple[int, int], focal: Optional[float] = None, intrinsics: Optional[str] = None,
                  fov: Optional[float] = None) -> tuple[np.ndarray, str]:
    """(K (3, 3) at the source size (H, W), how it was obtained) (module docstring)."""
    given = [name for name, v in (("--focal", focal), ("--intrinsics", intrinsics), ("--fov", fov)) if v is not None]
    if len(given) > 1:
        raise HodataError(f"{' and '.join(given)}: give one of --focal, --intrinsics, --fov")
    height, width = size
    cx, cy = (width - 1) / 2, (height - 1) / 2
    if intrinsics is not None:
        fx, fy, cx, cy = parse_intrinsics(intrinsics)
        how = "--intrinsics"
    elif focal is not None:
        if not focal > 0:
            raise HodataError(f"--focal {focal}: the focal length must be positive (pixels)")
        fx = fy = float(focal)
        how = "--focal, principal point at the centre"
    else:
        degrees = DEFAULT_FOV_DEG if fov is None else float(fov)
        if not 1.0 <= degrees <= 179.0:
            raise HodataError(f"--fov {degrees}: the horizontal field of view must be within 1-179 degrees")
        fx = fy = (width / 2) / math.tan(math.radians(degrees) / 2)
        how = f"guess from a {degrees:g} degree horizontal field of view" + (" (default)" if fov is None else "")
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]), how


def scale_camera(K: np.ndarray, factor: float) -> np.ndarray:
    """K of frames resized by `factor` (pixel centres at integer coordinates)."""
    out = K.copy()
    out[0, 0] *= factor
    out[1, 1] *= factor
    out[0, 2] = (K[0, 2] + 0.5) * factor - 0.5
    out[1, 2] = (K[1, 2] + 0.5) * factor - 0.5
    return out


class _Frames:
    """The kept frames, read from the frames cache on access (a long video does not fit in memory)."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, t: int) -> np.ndarray:
        from hodata.fileio import read_rgb

        return read_rgb(self.paths[t])


@register_dataset("video")
class VideoDataset:
    """Clips of one recording (module docstring).

    root: the video file or frames folder; object: mesh file / catalog model id / category;
    object_box: "x1,y1,x2,y2" in the first kept frame (source pixels); fps, start, end:
    frame selection; stride, clip_length: windows; focal / intrinsics / fov: the camera;
    max_side: longer side of the fitted frames; min_tracked: frames a kept run must exceed;
    source_fps: frame rate of a folder of frames; frames_cache: where the kept frames go
    (default ./hodata_frames); cache_dir: the mesh cache.
    """

    dataset_name = "video"

    def __init__(
        self,
        root: str | Path,
        object: Optional[str] = None,   # noqa: A002 - the option is --object
        object_box: Optional[str] = None,
        fps: Optional[float] = None,
        start: Optional[float] = None,
        end: Optional[float] = None,
        stride: int = 1,
        clip_length: int = 10,
        focal: Optional[float] = None,
        intrinsics: Optional[str] = None,
        fov: Optional[float] = None,
        max_side: Optional[int] = DEFAULT_MAX_SIDE,
        min_tracked: int = DEFAULT_MIN_TRACKED,
        source_fps: Optional[float] = None,
        frames_cache: str | Path | None = None,
        cache_dir: str | Path | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        self.root = Path(root)
        if object is None:
            raise HodataError("a video needs --object: a mesh file of the held object, or its category "
                              "(e.g. cup, bottle, phone)")
        if source_fps is not None and not self.root.is_dir():
            raise HodataError("--source-fps is the frame rate of a folder of frames; a video file has its own")
        if source_fps is not None and source_fps <= 0:
            raise HodataError(f"--source-fps must be positive, got {source_fps}")
        self.split = None
        self.clip_length, self.stride, self.min_tracked = clip_length, stride, min_tracked
        self.cache_dir = cache_dir
        self.dtype = dtype
        self.messages: list[str] = []
        self.skipped_clips: list[str] = []
        self._model = None
        self._resolve_object(object)
        self.object_model_id = self.model_for_clip(None).model_id   # a bad mesh stops here, before decoding

        source = vf.scan_source(self.root, source_fps or 30.0)
        indices = vf.select_frames(source.timestamps, start, end, fps)
        if not indices:
            span = f"{source.timestamps[0]:.2f}-{source.timestamps[-1]:.2f} s"
            raise HodataError(f"{self.root}: no frame between --start {start} and --end {end} (the source spans {span})")
        K_source, self.camera_source = camera_matrix(source.size, focal, intrinsics, fov)
        factor = vf.scale_for(source.size, max_side)
        self.image_size = vf.scaled_size(source.size, factor)
        K = scale_camera(K_source, factor)
        self.K = torch.as_tensor(K, dtype=dtype)
        self.sequence = vf.sequence_name(self.root)
        self.frames_dir = Path(frames_cache if frames_cache is not None else "hodata_frames") / self.sequence
        record = {"selection": {"start": start, "end": end, "fps": fps, "max_side": max_side},
                  "camera": {"K": K.tolist(), "K_source": K_source.tolist(), "from": self.camera_source}}
        self.frame_indices = indices
        self.timestamps = [source.timestamps[i] for i in indices]
        self.paths = vf.write_frames(source, indices, self.frames_dir, factor, record)
        self.windows = self._select(object_box, factor)
        self.clips = [[self.frame_indices[i] for i in w] for w in self.windows]

    # ------------------------------------------------------------------ object
    def _resolve_object(self, spec: str) -> None:
        from hodata.objects import CATALOG, lookup_category

        path = Path(spec)
        self.category = None
        if path.exists() or spec in CATALOG:
            self.object_source, self.optimise_object_scale = spec, False
        else:
            try:
                self.category = lookup_category(spec)
            except HodataError as exc:
                raise HodataError(f"--object {spec!r}: no such mesh file, and not a category ({exc})") from None
            self.object_source, self.optimise_object_scale = self.category.model_id, True

    def model_for_clip(self, clip: Clip):
        """The prepared object model (one for the whole recording)."""
        from hodata.objects import CATALOG, ensure_object_model, load_object_model, prepare_mesh

        if self._model is None:
            if self.category is not None or self.object_source in CATALOG:
                self._model = ensure_object_model(self.object_source, self.cache_dir)
            else:
                result = prepare_mesh(self.object_source, self.cache_dir).raise_for_status()
                self._model = load_object_model(result.model_id, self.cache_dir)
        return self._model

    # ------------------------------------------------------------------ selection
    def _select(self, object_box: Optional[str], factor: float) -> list[list[int]]:
        """Windows (positions in the kept frames) of the clips to fit (module docstring)."""
        from hodata.evidence import mediapipe_hands, tracking

        from .video_objects import parse_box, track_object

        frames = _Frames(self.paths)
        seed = None
        if object_box is not None:
            height, width = self.image_size
            seed = parse_box(object_box, (round(height / factor), round(width / factor))) * factor
        span = f"{self.timestamps[0]:.2f}-{self.timestamps[-1]:.2f} s"
        with mediapipe_hands.MediaPipeHands() as detector:
            hands = [detector.detect(frames[t]) for t in range(len(frames))]
            # kept for the clips: the detected evidence reuses them instead of running
            # MediaPipe on the same frames again (they are what it would find there)
            self.full_frame_detections = [list(h) for h in hands]
            if not any(hands):
                raise HodataError(f"{self.root}: no hand in view: MediaPipe found no hand in the {len(frames)} kept "
                                  f"frames ({span}); nothing to fit")
            boxes, seed_frame, how = track_object(frames, hands, seed)
            if seed_frame is None:
                raise HodataError(f"{self.root}: no object in view next to the hand in any of the "
                                  f"{sum(bool(h) for h in hands)} frames with a hand ({span}); if the object is "
                                  "there, give its box in the first frame with --object-box x1,y1,x2,y2")
            for t in range(len(frames)):  # small hands: look again near the object (as detected evidence does)
                if not hands[t] and np.isfinite(boxes[t]).all():
                    hands[t] = mediapipe_hands.detect_near_box(detector, frames[t], boxes[t])
        self.object_boxes = boxes
        object_frames = [tracking.FrameDetections(b[None] if np.isfinite(b).all() else np.zeros((0, 4)),
                                                  [1.0] if np.isfinite(b).all() else []) for b in boxes]
        hand_frames = [tracking.FrameDetections(np.array([d.box for d in dets]).reshape(-1, 4),
                                                [d.score for d in dets], [d.side for d in dets]) for dets in hands]
        result = tracking.track_clip(object_frames, hand_frames, known_sides=None, num_hands=2)
        self.tracking = result
        windows, self.hand_boxes, best = [], {}, 0
        for start, stop in tracking.longest_runs(result.object.covered):
            sides = [s for s, track in result.hands.items() if float(track.covered[start:stop].float().mean()) >= 0.5]
            if not sides:
                continue
            together = result.object.covered.clone()
            together[:start] = False
            together[stop:] = False
            for s in sides:
                together &= result.hands[s].covered
            for a, b in tracking.longest_runs(together):
                best = max(best, b - a)
                if b - a <= self.min_tracked:
                    continue
                for w in clip_windows(b - a, self.clip_length, self.stride):
                    windows.append(([a + i for i in w], sorted(sides)))
        if not windows:
            raise HodataError(f"{self.root}: the object ({how}) and a hand are in view together for at most {best} "
                              f"consecutive kept frames ({span}), not more than {self.min_tracked} (--min-tracked); "
                              "nothing to fit")
        self._sides = [sides for _, sides in windows]
        return [w for w, _ in windows]

    # ------------------------------------------------------------------ iteration
    def __len__(self) -> int:
        return len(self.windows)

    def __iter__(self) -> Iterator[Clip]:
        self.skipped_clips = []
        yield from load_each(range(len(self.windows)), self.load_clip,
                             lambda k: f"{self.sequence}/{vf.frame_id(self.clips[k][0])}", self.skipped_clips,
                             self.messages)

    def __getitem__(self, k: int) -> Clip:
        return self.load_clip(k)

    def load_clip(self, k: int) -> Clip:
        rows = self.windows[k]
        sides = self._sides[k]
        return Clip(
            dataset=self.dataset_name, sequence=self.sequence,
            frame_ids=[vf.frame_id(self.frame_indices[r]) for r in rows], image_paths=[self.paths[r] for r in rows],
            K=self.K.clone(), image_size=tuple(self.image_size), object_model_id=self.object_model_id,
            hand_sides=sides, category=self.category.name if self.category is not None else None,
            object_boxes=torch.as_tensor(self.tracking.object.boxes[rows], dtype=self.dtype),
            hand_boxes={s: torch.as_tensor(self.tracking.hands[s].boxes[rows], dtype=self.dtype) for s in sides},
            hand_detections=[self.full_frame_detections[r] for r in rows],
        )


def clip_frame_rate(record: Optional[dict], frame_ids: Sequence[str]) -> Optional[float]:
    """Frames per second of a fitted clip from its frames' timestamps in a `source.json`
    record (None when unknown): what `hodata show` plays the overlay at."""
    if record is None or len(frame_ids) < 2:
        return None if record is None else record.get("source_fps")
    times = record.get("frames", {})
    if frame_ids[0] not in times or frame_ids[-1] not in times:
        return None
    span = times[frame_ids[-1]] - times[frame_ids[0]]
    return (len(frame_ids) - 1) / span if span > 0 else None
