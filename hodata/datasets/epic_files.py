"""Epic-Kitchens-100 files (REFERENCE.md §7): annotation CSVs, noun classes, frames.

Annotations: `EPIC_100_train.csv` / `EPIC_100_validation.csv` (one row per action:
narration_id, participant_id, video_id, start_frame, stop_frame, noun, noun_class, ...),
`EPIC_100_noun_classes.csv` (id, key, instances, category) and `EPIC_100_video_info.csv`
(video_id, duration, fps, resolution). Frames, under the dataset root, as extracted folders
`PXX/rgb_frames/PXX_YY/frame_0000000001.jpg` or one tar per video `PXX/rgb_frames/PXX_YY.tar`
with members `./frame_%010d.jpg`; frame numbers are 1-based in both and in the annotations.
"""

from __future__ import annotations

import ast
import csv
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from hodata.errors import HodataError

ACTION_COLUMNS = ("narration_id", "participant_id", "video_id", "start_frame", "stop_frame", "narration", "noun",
                  "noun_class")
NOUN_COLUMNS = ("id", "key")
VIDEO_INFO_COLUMNS = ("video_id", "fps", "resolution")
FRAME_NAME = "frame_{:010d}.jpg"
_FRAME_MEMBER = re.compile(r"(?:^|/)frame_(\d{10})\.jpg$")

# hodata category -> Epic-Kitchens noun keys (EPIC_100_noun_classes.csv `key`) whose actions
# show an object of that category; mugs are instances of the noun "cup". The category names
# are hodata.objects.CATEGORIES (each has a catalog mesh and a size prior).
EPIC_NOUNS_BY_CATEGORY: dict[str, tuple[str, ...]] = {
    "cup": ("cup",),
    "mug": ("cup",),
    "glass": ("glass",),
    "bottle": ("bottle",),
    "can": ("can",),
    "plate": ("plate",),
    "jug": ("jug",),
    "bowl": ("bowl",),
    "box": ("box",),
    "banana": ("banana",),
    "fork": ("fork",),
    "spoon": ("spoon",),
    "knife": ("knife",),
    "spatula": ("spatula",),
    "scissors": ("scissors",),
    "phone": ("phone",),
}


@dataclass(frozen=True)
class Action:
    narration_id: str
    participant_id: str
    video_id: str
    start_frame: int        # 1-based, inclusive
    stop_frame: int         # 1-based, inclusive
    narration: str
    noun: str
    noun_class: int


def _read_csv(path: Path, required: tuple[str, ...], what: str) -> list[dict]:
    if not path.is_file():
        raise HodataError(f"{what} {path} not found; download the epic-kitchens-100-annotations files into "
                          f"{path.parent}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in required if c not in columns]
            if missing:
                raise HodataError(f"{path} lacks column(s) {', '.join(missing)}; is it the right {what}?")
            return list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise HodataError(f"{path} is not a readable CSV ({exc})") from None


def _int(row: dict, column: str, path: Path, line: int) -> int:
    try:
        return int(row[column])
    except (TypeError, ValueError):
        raise HodataError(f"{path} line {line}: {column} {row.get(column)!r} is not an integer") from None


def read_actions(path: str | Path) -> list[Action]:
    """The actions of an EPIC_100_{train,validation}.csv; HodataError naming the file and line."""
    path = Path(path)
    actions = []
    for line, row in enumerate(_read_csv(path, ACTION_COLUMNS, "action annotation CSV"), 2):
        start, stop = _int(row, "start_frame", path, line), _int(row, "stop_frame", path, line)
        if not 1 <= start <= stop:
            raise HodataError(f"{path} line {line}: frames {start}-{stop} are not a 1-based range")
        actions.append(Action(row["narration_id"], row["participant_id"], row["video_id"], start, stop,
                              row["narration"], row["noun"], _int(row, "noun_class", path, line)))
    return actions


def read_noun_classes(path: str | Path) -> dict[int, str]:
    """Noun class id -> key (e.g. 13 -> "cup") from EPIC_100_noun_classes.csv."""
    path = Path(path)
    return {_int(row, "id", path, line): row["key"]
            for line, row in enumerate(_read_csv(path, NOUN_COLUMNS, "noun class CSV"), 2)}


def noun_instances(path: str | Path) -> dict[str, list[str]]:
    """Noun key -> the free-form nouns annotators used for it (the `instances` column)."""
    path = Path(path)
    out = {}
    for row in _read_csv(path, NOUN_COLUMNS + ("instances",), "noun class CSV"):
        try:
            out[row["key"]] = list(ast.literal_eval(row["instances"]))
        except (ValueError, SyntaxError):
            out[row["key"]] = []
    return out


def noun_classes_for_category(category: str, noun_classes: dict[int, str]) -> set[int]:
    """The noun class ids of a hodata category (`--category cup`), HodataError if none."""
    from hodata.objects import lookup_category

    name = lookup_category(category).name
    keys = EPIC_NOUNS_BY_CATEGORY.get(name)
    if keys is None:
        raise HodataError(f"category {category!r} has no Epic-Kitchens nouns; use one of "
                          f"{', '.join(sorted(EPIC_NOUNS_BY_CATEGORY))}")
    ids = {i for i, key in noun_classes.items() if key in keys}
    if not ids:
        raise HodataError(f"none of the nouns {', '.join(keys)} is in the noun class CSV")
    return ids


def read_video_info(path: str | Path) -> dict[str, tuple[float, tuple[int, int]]]:
    """video_id -> (fps, (height, width)) from EPIC_100_video_info.csv."""
    path = Path(path)
    out = {}
    for line, row in enumerate(_read_csv(path, VIDEO_INFO_COLUMNS, "video info CSV"), 2):
        try:
            width, height = (int(v) for v in row["resolution"].lower().split("x"))
            out[row["video_id"]] = (float(row["fps"]), (height, width))
        except ValueError:
            raise HodataError(f"{path} line {line}: resolution {row['resolution']!r} / fps {row['fps']!r} "
                              "not understood") from None
    return out


class VideoFrames:
    """The frames of one video, from `PXX/rgb_frames/PXX_YY/` or `PXX/rgb_frames/PXX_YY.tar`.

    `numbers` lists the frame numbers present (1-based); `read(n)` decodes one frame as
    (H, W, 3) uint8 RGB. A tar is indexed once (member names only) and read member by member.
    """

    def __init__(self, root: str | Path, video_id: str):
        root = Path(root)
        participant = video_id.split("_")[0]
        self.video_id = video_id
        self.folder = root / participant / "rgb_frames" / video_id
        self.tar_path = root / participant / "rgb_frames" / f"{video_id}.tar"
        self._tar: Optional[tarfile.TarFile] = None
        self._members: dict[int, tarfile.TarInfo] = {}
        if self.folder.is_dir():
            self.numbers = sorted(int(m.group(1)) for p in self.folder.iterdir()
                                  if (m := _FRAME_MEMBER.search(p.name)))
        elif self.tar_path.is_file():
            try:
                self._tar = tarfile.open(self.tar_path)
                for member in self._tar.getmembers():
                    match = _FRAME_MEMBER.search(member.name)
                    if match and member.isfile():
                        self._members[int(match.group(1))] = member
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise HodataError(f"frames tar {self.tar_path} is unreadable ({exc}); re-download it") from None
            self.numbers = sorted(self._members)
        else:
            raise HodataError(f"no frames for video {video_id}: neither {self.folder}/ nor {self.tar_path} exists")
        if not self.numbers:
            raise HodataError(f"no frame_NNNNNNNNNN.jpg frames in {self.folder if self._tar is None else self.tar_path}")

    @property
    def source(self) -> Path:
        return self.tar_path if self._tar is not None else self.folder

    def __contains__(self, number: int) -> bool:
        return number in self._members if self._tar is not None else (self.folder / FRAME_NAME.format(number)).is_file()

    def read(self, number: int) -> np.ndarray:
        import cv2

        if number not in self:
            raise HodataError(f"frame {number} is not in {self.source} (frames {self.numbers[0]}-{self.numbers[-1]})")
        if self._tar is None:
            from .base import read_rgb

            return read_rgb(self.folder / FRAME_NAME.format(number))
        data = self._tar.extractfile(self._members[number]).read()
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None or not data.rstrip(b"\0").endswith(b"\xff\xd9"):
            raise HodataError(f"frame {number} in {self.tar_path} is corrupt; re-download the tar")
        return np.ascontiguousarray(image[:, :, ::-1])

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None
