"""Core50 clips (REFERENCE.md §6): 350x350 colour frames of one hand turning one object.

On-disk layout of the public release, under `root`:

    core50_350x350/s{1..11}/o{1..50}/C_{ss:02d}_{oo:02d}_{fff:03d}.png   (300 frames, 20 fps)
    core50_350x350/s{s}/o{o}/D_{ss:02d}_{oo:02d}_{fff:03d}.png           (depth, optional, unused)
    bbox/s{s}/CropC_o{o}.txt                                             (bbox.zip, optional)

`root` may also be the `core50_350x350` folder itself (then `bbox/` is looked for beside it).
A bbox file has one line per frame, `ColorNNN: x1 y1 x2 y2` (350x350 pixels, NNN = fff): the
dataset's 128x128 crop box centred on the object, so a box around the object rather than a
tight one (GrabCut and the object tracks refine it). Without bbox files the object box comes
from the evidence provider alone.

What Core50 knows and what it does not: the object id gives the category (o1-5 plug adapter,
o6-10 mobile phone, ..., `CATEGORY_BY_BLOCK`), the session gives the hand side (reference
annotations, `SIDE_BY_SESSION`); one hand per clip. There are no 3D annotations and no camera
calibration: the intrinsics default to the reference's f = 480 px, c = (175, 175). Objects are
category meshes (hodata.objects.CATEGORIES), so their scale is optimised with the category
prior. Clips are T = 10 frames at stride 4 (base.clip_windows).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from hodata.errors import HodataError
from hodata.types import Clip

from .base import clip_windows, load_each, read_rgb
from .registry import register_dataset

IMAGE_SIZE = (350, 350)
FRAMES_PER_SEQUENCE = 300
DEFAULT_FOCAL = 480.0
DEFAULT_PRINCIPAL = (175.0, 175.0)
SESSIONS = tuple(range(1, 12))
OBJECTS = tuple(range(1, 51))
# Objects come in blocks of five per category, in this order, named as core50_labels.txt names them.
CATEGORY_BY_BLOCK = ("plug_adapter", "mobile_phone", "scissor", "light_bulb", "can", "glass", "ball", "marker",
                     "cup", "remote_control")
SIDE_BY_SESSION = {1: "right", 4: "right", 5: "right", 6: "right", 8: "right", 10: "right",
                   2: "left", 3: "left", 7: "left", 9: "left", 11: "left"}
_FRAME = re.compile(r"^C_(\d{2})_(\d{2})_(\d{3})\.png$")
_BOX_LINE = re.compile(r"^\s*Color(\d+)\s*:\s*(-?\d+(?:\.\d*)?)\s+(-?\d+(?:\.\d*)?)\s+(-?\d+(?:\.\d*)?)\s+(-?\d+(?:\.\d*)?)\s*$")


def object_category(object_id: int) -> str:
    """The Core50 label of object `o{object_id}` without its instance number ("cup" for o41)."""
    if object_id not in OBJECTS:
        raise HodataError(f"Core50 has objects o1-o50, not o{object_id}")
    return CATEGORY_BY_BLOCK[(object_id - 1) // 5]


def session_side(session: int) -> str:
    if session not in SIDE_BY_SESSION:
        raise HodataError(f"Core50 has sessions s1-s11, not s{session}")
    return SIDE_BY_SESSION[session]


def read_bbox_file(path: str | Path) -> dict[int, tuple[float, float, float, float]]:
    """Frame number -> (x1, y1, x2, y2) from a Core50 `CropC_o{o}.txt`; HodataError naming the
    file and line when a line is not `ColorNNN: x1 y1 x2 y2` with x1 < x2 and y1 < y2."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise HodataError(f"cannot read Core50 bbox file {path} ({exc}); re-extract bbox.zip") from None
    boxes = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _BOX_LINE.match(line)
        if not match:
            raise HodataError(f"{path} line {number}: {line.strip()[:60]!r} is not 'ColorNNN: x1 y1 x2 y2'; "
                              "re-extract bbox.zip")
        x1, y1, x2, y2 = (float(v) for v in match.groups()[1:])
        if not (x1 < x2 and y1 < y2):
            raise HodataError(f"{path} line {number}: empty box {x1:g} {y1:g} {x2:g} {y2:g}")
        boxes[int(match.group(1))] = (x1, y1, x2, y2)
    return boxes


def parse_id_list(text: Optional[str], valid: Sequence[int], what: str) -> Optional[list[int]]:
    """"1,3,5-7" (with or without the s/o prefix) -> [1, 3, 5, 6, 7]; None for None."""
    if text is None:
        return None
    ids: list[int] = []
    for part in (p.strip().lstrip("so") for p in text.split(",")):
        if not part:
            continue
        bounds = part.split("-")
        try:
            low, high = int(bounds[0].lstrip("so")), int(bounds[-1].lstrip("so"))
        except ValueError:
            raise HodataError(f"bad {what} list {text!r}; use e.g. '1,3,5-7'") from None
        for i in range(low, high + 1):
            if i not in valid:
                raise HodataError(f"{what} {i} out of range {valid[0]}-{valid[-1]}")
            ids.append(i)
    return sorted(set(ids))


@dataclass
class Core50ClipSpec:
    session: int
    object_id: int
    frames: list[int]

    @property
    def sequence(self) -> str:
        return f"s{self.session}_o{self.object_id}"


@register_dataset("core50")
class Core50Dataset:
    """Core50 clips without ground truth. Iterating yields `Clip`s (bad clips are skipped and
    named in `messages`).

    root: the folder holding `core50_350x350/` (or that folder); sessions, objects: ids to keep
    (None: all found); category: keep the objects of one category (a Core50 label such as
    "cup" or "mobile_phone", or an alias known to hodata.objects); clip_length, stride:
    windowing (T = 10, stride 4); focal, principal: the assumed intrinsics (pixels);
    bbox_dir: folder of `s{s}/CropC_o{o}.txt` files (default `<root>/bbox` if present);
    cache_dir: the mesh cache of the category meshes.
    """

    dataset_name = "core50"
    # category meshes from the catalog: the object scale is optimised with the category prior
    optimise_object_scale = True

    def __init__(
        self,
        root: str | Path,
        sessions: Optional[Sequence[int]] = None,
        objects: Optional[Sequence[int]] = None,
        category: Optional[str] = None,
        clip_length: int = 10,
        stride: int = 4,
        focal: float = DEFAULT_FOCAL,
        principal: tuple[float, float] = DEFAULT_PRINCIPAL,
        bbox_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        dtype: torch.dtype = torch.float32,
        check_images: bool = True,
    ):
        root = Path(root)
        if not root.is_dir():
            raise HodataError(f"Core50 root {root} does not exist; pass the folder holding core50_350x350/")
        self.frames_dir = root / "core50_350x350" if (root / "core50_350x350").is_dir() else root
        self.root = root
        if not any(self.frames_dir.glob("s*/o*")):
            raise HodataError(f"{self.frames_dir} holds no s<session>/o<object> folders; is {root} a Core50 root "
                              "(core50_350x350.zip extracted)?")
        if bbox_dir is None:
            for candidate in (root / "bbox", self.frames_dir.parent / "bbox"):
                if candidate.is_dir():
                    bbox_dir = candidate
                    break
        self.bbox_dir = Path(bbox_dir) if bbox_dir is not None else None
        if self.bbox_dir is not None and not self.bbox_dir.is_dir():
            raise HodataError(f"Core50 bbox folder {self.bbox_dir} does not exist")
        self.category = None
        if category is not None:
            from hodata.objects import lookup_category

            wanted = lookup_category(category).name
            matching = [c for c in CATEGORY_BY_BLOCK if lookup_category(c).name == wanted]
            if not matching:
                raise HodataError(f"no Core50 object is a {category!r}; Core50 categories: "
                                  f"{', '.join(CATEGORY_BY_BLOCK)}")
            self.category = matching[0]
        self.clip_length, self.stride = clip_length, stride
        self.K = torch.tensor([[focal, 0.0, principal[0]], [0.0, focal, principal[1]], [0.0, 0.0, 1.0]], dtype=dtype)
        self.dtype = dtype
        self.cache_dir = cache_dir
        self.check_images = check_images
        self.messages: list[str] = []
        self.skipped_clips: list[str] = []
        self.clips = self._index(sessions, objects)

    # ------------------------------------------------------------------ indexing
    def sequence_dir(self, session: int, object_id: int) -> Path:
        return self.frames_dir / f"s{session}" / f"o{object_id}"

    def frame_path(self, session: int, object_id: int, frame: int) -> Path:
        return self.sequence_dir(session, object_id) / f"C_{session:02d}_{object_id:02d}_{frame:03d}.png"

    def bbox_path(self, session: int, object_id: int) -> Optional[Path]:
        return None if self.bbox_dir is None else self.bbox_dir / f"s{session}" / f"CropC_o{object_id}.txt"

    def _frames(self, session: int, object_id: int) -> list[int]:
        frames = []
        for path in self.sequence_dir(session, object_id).glob("C_*.png"):
            match = _FRAME.match(path.name)
            if match and (int(match.group(1)), int(match.group(2))) == (session, object_id):
                frames.append(int(match.group(3)))
        return sorted(frames)

    def _index(self, sessions, objects) -> list[Core50ClipSpec]:
        specs = []
        for session in (sessions or SESSIONS):
            session_side(session)
            for object_id in (objects or OBJECTS):
                if self.category is not None and object_category(object_id) != self.category:
                    continue
                if not self.sequence_dir(session, object_id).is_dir():
                    continue
                frames = self._frames(session, object_id)
                for window in clip_windows(len(frames), self.clip_length, self.stride):
                    specs.append(Core50ClipSpec(session, object_id, [frames[i] for i in window]))
        if not specs:
            what = f" of category {self.category}" if self.category else ""
            raise HodataError(f"no Core50 frames{what} found under {self.frames_dir} for the sessions/objects asked")
        return specs

    # ------------------------------------------------------------------ iteration
    def __len__(self) -> int:
        return len(self.clips)

    def __iter__(self) -> Iterator[Clip]:
        self.skipped_clips = []
        yield from load_each(self.clips, self.load_clip, lambda s: f"{s.sequence}/{s.frames[0]:03d}",
                             self.skipped_clips, self.messages)

    def __getitem__(self, index: int) -> Clip:
        return self.load_clip(self.clips[index])

    def _boxes(self, spec: Core50ClipSpec) -> Optional[torch.Tensor]:
        path = self.bbox_path(spec.session, spec.object_id)
        if path is None or not path.is_file():
            return None
        boxes = read_bbox_file(path)
        missing = [f for f in spec.frames if f not in boxes]
        if missing:
            raise HodataError(f"{path} has no box for frame(s) {', '.join(f'Color{f:03d}' for f in missing)}")
        return torch.tensor([boxes[f] for f in spec.frames], dtype=self.dtype)

    def load_clip(self, spec: Core50ClipSpec) -> Clip:
        """One clip: frames, assumed camera, category model, the session's hand side and the
        dataset's object boxes (when the bbox files are there); no ground truth."""
        from hodata.objects import lookup_category

        paths = [self.frame_path(spec.session, spec.object_id, f) for f in spec.frames]
        images = None
        if self.check_images:  # the decoded frames stay with the clip: evidence and shards reuse them
            frames = [read_rgb(p) for p in paths]
            sizes = {f.shape[:2] for f in frames}
            if sizes != {IMAGE_SIZE}:
                raise HodataError(f"clip {spec.sequence}/{spec.frames[0]:03d}: frames are {sorted(sizes)}, "
                                  f"Core50 frames are {IMAGE_SIZE[1]}x{IMAGE_SIZE[0]}")
            images = np.stack(frames)
        category = lookup_category(object_category(spec.object_id))
        return Clip(
            dataset=self.dataset_name, sequence=spec.sequence, frame_ids=[f"{f:03d}" for f in spec.frames],
            image_paths=paths, K=self.K.clone(), image_size=IMAGE_SIZE, object_model_id=category.model_id,
            hand_sides=[session_side(spec.session)], category=category.name, object_boxes=self._boxes(spec),
            images=images,
        )
