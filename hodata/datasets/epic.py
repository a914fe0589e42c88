"""Epic-Kitchens-100 clips (REFERENCE.md §7, paper Sec. 3.1 and 4): action clips of one object
category, selected by tracking the published hand-object detections.

Under `root`:

    PXX/rgb_frames/PXX_YY/frame_0000000001.jpg    or    PXX/rgb_frames/PXX_YY.tar
    hand-objects/PXX/PXX_YY.pkl                   (published detections; `detections=` elsewhere)
    EPIC_100_{train,validation}.csv, EPIC_100_noun_classes.csv   (or in `annotations=`)

Selection (the reference's): every action whose noun class fits `category`
(`epic_files.EPIC_NOUNS_BY_CATEGORY`) is padded by `pad` frames on each side; its object and
hand detections above the score thresholds are tracked per class; the longest object track
is the manipulated object; the action is kept when that track covers more than
`min_tracked` frames. The hands are the sides whose tracks overlap the object's (one or two;
the dataset does not say). Clips are windows of `clip_length` frames at `stride` (1) inside
the object track. Each candidate's decision and reason are kept (`candidates`), which is
what `hodata select-clips` writes.

Frames are resized to `image_size` (640x360) into `frames_cache` once, and the camera is the
reference's guess f = 200 px at that size with the principal point at the centre.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from hodata.errors import HodataError
from hodata.types import Clip

from . import epic_files as ef
from .base import clip_windows, load_each
from .registry import register_dataset
from .epic_detections import FrameDetections, load_video_detections

DEFAULT_IMAGE_SIZE = (360, 640)    # (H, W)
DEFAULT_FOCAL = 200.0              # pixels at 640 x 360 (reference guess)
DEFAULT_PAD = 10
DEFAULT_MIN_TRACKED = 20
SELECTION_VERSION = 1


@dataclass
class Candidate:
    """One action considered for fitting, and what selection decided about it."""

    narration_id: str
    video_id: str
    narration: str
    noun: str
    start_frame: int
    stop_frame: int
    kept: bool = False
    reason: str = ""
    frames: list[int] = field(default_factory=list)            # object-track frames (1-based numbers)
    object_boxes: list[list[float]] = field(default_factory=list)  # per track frame, xyxy at image_size
    hand_boxes: dict[str, list[Optional[list[float]]]] = field(default_factory=dict)  # side -> per frame
    windows: list[list[int]] = field(default_factory=list)      # frame numbers of each clip


def _boxes_px(box, size) -> list[float]:
    height, width = size
    left, top, right, bottom = box
    return [left * width, top * height, right * width, bottom * height]


@register_dataset("epic")
class EpicKitchensDataset:
    """Epic-Kitchens-100 action clips of one category, without ground truth.

    root: dataset root (frames, optionally annotations and detections); split: which action
    CSV (train | validation); category: a hodata category with Epic nouns (cup, bottle, ...);
    videos: keep only these video ids; annotations / detections: folders of the CSVs and of
    the detection pickles when not under root; frames_cache: where resized frames go
    (default `<root>/hodata_frames`); pad, min_tracked, score thresholds, clip_length, stride,
    image_size (H, W) and focal: the selection and camera described in the module docstring;
    clips: a selection file written by `hodata select-clips` (then only its kept clips).
    """

    dataset_name = "epic"
    # category meshes from the catalog: the object scale is optimised with the category prior
    optimise_object_scale = True

    def __init__(
        self,
        root: str | Path,
        split: str = "validation",
        category: Optional[str] = None,
        videos: Optional[Sequence[str]] = None,
        annotations: str | Path | None = None,
        detections: str | Path | None = None,
        frames_cache: str | Path | None = None,
        pad: int = DEFAULT_PAD,
        min_tracked: int = DEFAULT_MIN_TRACKED,
        hand_threshold: float = 0.5,
        object_threshold: float = 0.5,
        clip_length: int = 10,
        stride: int = 1,
        image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
        focal: float = DEFAULT_FOCAL,
        clips: str | Path | None = None,
        cache_dir: str | Path | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise HodataError(f"Epic-Kitchens root {self.root} does not exist; pass the folder holding PXX/rgb_frames/")
        if split not in ("train", "validation"):
            raise HodataError(f"unknown Epic-Kitchens split {split!r}; use train or validation")
        if category is None:
            raise HodataError("Epic-Kitchens needs --category (e.g. cup, bottle, plate): the object mesh comes from it")
        self.split = split
        self.annotations = Path(annotations) if annotations else self.root
        self.detections_dir = Path(detections) if detections else self.root / "hand-objects"
        self.frames_cache = Path(frames_cache) if frames_cache else self.root / "hodata_frames"
        self.pad, self.min_tracked = pad, min_tracked
        self.hand_threshold, self.object_threshold = hand_threshold, object_threshold
        self.clip_length, self.stride = clip_length, stride
        self.image_size = tuple(image_size)
        height, width = self.image_size
        self.K = torch.tensor([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]],
                              dtype=dtype)
        self.dtype = dtype
        self.cache_dir = cache_dir
        from hodata.objects import lookup_category

        self.category = lookup_category(category)
        self.noun_classes = ef.read_noun_classes(self.annotations / "EPIC_100_noun_classes.csv")
        wanted = ef.noun_classes_for_category(self.category.name, self.noun_classes)
        actions_path = self.annotations / f"EPIC_100_{split}.csv"
        actions = [a for a in ef.read_actions(actions_path) if a.noun_class in wanted]
        if videos is not None:
            keep = set(videos)
            actions = [a for a in actions if a.video_id in keep]
        self.messages: list[str] = []
        self.skipped_clips: list[str] = []
        self._videos: dict[str, ef.VideoFrames] = {}
        self._detections: dict[str, dict[int, FrameDetections]] = {}
        if clips is not None:
            self.candidates = read_selection(clips)
        else:
            self.candidates = [self._select(a) for a in actions]
        self.clips = [(c, w) for c in self.candidates if c.kept for w in c.windows]

    # ------------------------------------------------------------------ sources
    def video(self, video_id: str) -> ef.VideoFrames:
        if video_id not in self._videos:
            self._videos[video_id] = ef.VideoFrames(self.root, video_id)
        return self._videos[video_id]

    def detections_path(self, video_id: str) -> Path:
        participant = video_id.split("_")[0]
        nested = self.detections_dir / participant / f"{video_id}.pkl"
        return nested if nested.is_file() or not (self.detections_dir / f"{video_id}.pkl").is_file() else \
            self.detections_dir / f"{video_id}.pkl"

    def video_detections(self, video_id: str) -> dict[int, FrameDetections]:
        """frame number -> detections of one video. The published list is ordered by frame, so
        entry i is frame i + 1; a file whose frame numbers disagree is refused."""
        if video_id not in self._detections:
            path = self.detections_path(video_id)
            frames = load_video_detections(path)
            by_number = {}
            for index, frame in enumerate(frames):
                number = frame.frame_number or index + 1   # proto3 leaves 0 out: trust the order
                if number != index + 1:
                    raise HodataError(f"detections file {path}: entry {index} is frame {number}, expected "
                                      f"{index + 1} (entries must be one per frame from frame 1)")
                by_number[number] = frame
            self._detections[video_id] = by_number
        return self._detections[video_id]

    # ------------------------------------------------------------------ selection
    def _select(self, action: ef.Action) -> Candidate:
        from hodata.evidence import tracking

        cand = Candidate(action.narration_id, action.video_id, action.narration, action.noun, action.start_frame,
                         action.stop_frame)
        try:
            video = self.video(action.video_id)
            detections = self.video_detections(action.video_id)
        except HodataError as exc:
            cand.reason = str(exc)
            return cand
        last = video.numbers[-1]
        if action.stop_frame > last:
            cand.reason = (f"action frames {action.start_frame}-{action.stop_frame} go beyond the video's last "
                           f"frame {last} ({video.source})")
            return cand
        numbers = list(range(max(1, action.start_frame - self.pad), min(last, action.stop_frame + self.pad) + 1))
        if not any(n in detections for n in numbers):
            cand.reason = f"no detections for frames {numbers[0]}-{numbers[-1]} in {self.detections_path(action.video_id)}"
            return cand
        empty = FrameDetections(action.video_id, 0)
        frames = [detections.get(n, empty) for n in numbers]
        objects = [tracking.FrameDetections(
            [_boxes_px(o.box, self.image_size) for o in f.objects if o.score >= self.object_threshold],
            [o.score for o in f.objects if o.score >= self.object_threshold]) for f in frames]
        hands = [tracking.FrameDetections(
            [_boxes_px(h.box, self.image_size) for h in f.hands if h.score >= self.hand_threshold],
            [h.score for h in f.hands if h.score >= self.hand_threshold],
            [h.side for h in f.hands if h.score >= self.hand_threshold]) for f in frames]
        # Every object detection is tracked (a kitchen frame shows many objects): the track
        # with the most detections is the manipulated object. The number of hands is unknown.
        result = tracking.track_clip(objects, hands, known_sides=None, num_hands=2,
                                     num_objects=max(1, max(len(o) for o in objects)))
        runs = tracking.longest_runs(result.object.covered)
        start, stop = max(runs, key=lambda r: r[1] - r[0]) if runs else (0, 0)
        if stop - start <= self.min_tracked:
            cand.reason = f"longest object track covers {stop - start} frames (needs > {self.min_tracked})"
            return cand
        cand.frames = numbers[start:stop]
        cand.object_boxes = result.object.boxes[start:stop].tolist()
        for side, track in result.hands.items():
            covered = track.covered[start:stop]
            # a hand that is there for most of the object's track is in the clip
            if covered.float().mean() >= 0.5:
                cand.hand_boxes[side] = [b if c else None for b, c in zip(track.boxes[start:stop].tolist(),
                                                                          covered.tolist())]
        if not cand.hand_boxes:
            cand.reason = "no hand tracked for half of the object's track"
            return cand
        cand.windows = [[cand.frames[i] for i in w]
                        for w in clip_windows(len(cand.frames), self.clip_length, self.stride)]
        cand.kept = True
        cand.reason = (f"object tracked over frames {cand.frames[0]}-{cand.frames[-1]}; "
                       f"hands: {', '.join(sorted(cand.hand_boxes))}")
        return cand

    # ------------------------------------------------------------------ iteration
    def __len__(self) -> int:
        return len(self.clips)

    def __iter__(self) -> Iterator[Clip]:
        self.skipped_clips = []
        yield from load_each(self.clips, lambda c: self.load_clip(*c), lambda c: f"{c[0].narration_id}/{c[1][0]}",
                             self.skipped_clips, self.messages)

    def frame_path(self, video_id: str, number: int) -> Path:
        height, width = self.image_size
        return self.frames_cache / f"{width}x{height}" / video_id / ef.FRAME_NAME.format(number)

    def _cached_frame(self, video_id: str, number: int) -> Path:
        """The frame resized to image_size, written once (atomically) into the frames cache."""
        import cv2

        path = self.frame_path(video_id, number)
        if not path.is_file():
            image = self.video(video_id).read(number)
            height, width = self.image_size
            resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".partial.jpg")
            if not cv2.imwrite(str(tmp), np.ascontiguousarray(resized[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95]):
                raise HodataError(f"cannot write {tmp}; is {self.frames_cache} writable?")
            tmp.replace(path)
        return path

    def load_clip(self, cand: Candidate, window: list[int]) -> Clip:
        index = {n: i for i, n in enumerate(cand.frames)}
        rows = [index[n] for n in window]
        paths = [self._cached_frame(cand.video_id, n) for n in window]
        hand_boxes = {}
        for side, boxes in cand.hand_boxes.items():
            picked = [boxes[r] if boxes[r] is not None else [float("nan")] * 4 for r in rows]
            hand_boxes[side] = torch.tensor(picked, dtype=self.dtype)
        return Clip(
            dataset=self.dataset_name, sequence=f"{cand.video_id}-{cand.narration_id}",
            frame_ids=[f"{n:010d}" for n in window], image_paths=paths, K=self.K.clone(),
            image_size=self.image_size, object_model_id=self.category.model_id, hand_sides=sorted(hand_boxes),
            category=self.category.name, object_boxes=torch.tensor([cand.object_boxes[r] for r in rows],
                                                                   dtype=self.dtype),
            hand_boxes=hand_boxes,
        )


def write_selection(path: str | Path, candidates: list[Candidate], settings: dict) -> None:
    """Write the candidates (kept and dropped, with reasons) as JSON, atomically."""
    path = Path(path)
    payload = {"version": SELECTION_VERSION, "settings": settings, "candidates": [asdict(c) for c in candidates]}
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)


def read_selection(path: str | Path) -> list[Candidate]:
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
        return [Candidate(**c) for c in payload["candidates"]]
    except FileNotFoundError:
        raise HodataError(f"clip selection file {path} not found; write it with `hodata select-clips`") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise HodataError(f"{path} is not a clip selection written by `hodata select-clips` ({exc})") from None
