"""Hand-made contact labels for clips without 3D annotations (Core50; paper Table 2).

The paper reports contact accuracy on Core50 from per-clip labels made by hand. hodata reads
such labels from a small CSV, one row per labelled frame range:

    session,object,first_frame,last_frame,contact
    5,33,0,299,yes
    s2,o41,120,160,no

- session, object: Core50 ids, with or without the `s` / `o` prefix;
- first_frame, last_frame: the inclusive range of frame numbers (`fff` in C_ss_oo_fff.png);
- contact: yes / no (also true / false, 1 / 0, y / n).
Rows may overlap only when they agree. Frames no row covers are unlabelled and left out of
contact accuracy.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hodata.errors import HodataError

COLUMNS = ("session", "object", "first_frame", "last_frame", "contact")
_TRUE, _FALSE = {"yes", "y", "true", "1"}, {"no", "n", "false", "0"}


@dataclass
class ContactLabels:
    """(sequence "s{session}_o{object}", frame number) -> in contact."""

    path: Path
    labels: dict[tuple[str, int], bool]

    def lookup(self, sequence: str, frame: int | str) -> Optional[bool]:
        return self.labels.get((sequence, int(frame)))

    def __len__(self) -> int:
        return len(self.labels)


def _id(value: str, prefix: str, path: Path, line: int, column: str) -> int:
    text = (value or "").strip().lower()
    text = text[len(prefix):] if prefix and text.startswith(prefix) else text
    try:
        return int(text)
    except ValueError:
        raise HodataError(f"{path} line {line}: {column} {value!r} is not a number") from None


def read_contact_labels(path: str | Path) -> ContactLabels:
    """Read a contact-label CSV (format in the module docstring); HodataError naming the file,
    line and column of the first bad value, or two rows that disagree on a frame."""
    path = Path(path)
    if not path.is_file():
        raise HodataError(f"contact label file {path} not found")
    labels: dict[tuple[str, int], bool] = {}
    origin: dict[tuple[str, int], int] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise HodataError(f"{path} lacks column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}")
            for line, row in enumerate(reader, 2):
                session = _id(row["session"], "s", path, line, "session")
                obj = _id(row["object"], "o", path, line, "object")
                first = _id(row["first_frame"], "", path, line, "first_frame")
                last = _id(row["last_frame"], "", path, line, "last_frame")
                if first > last:
                    raise HodataError(f"{path} line {line}: first_frame {first} > last_frame {last}")
                value = (row["contact"] or "").strip().lower()
                if value not in _TRUE | _FALSE:
                    raise HodataError(f"{path} line {line}: contact {row['contact']!r} is not yes/no")
                flag = value in _TRUE
                for frame in range(first, last + 1):
                    key = (f"s{session}_o{obj}", frame)
                    if key in labels and labels[key] != flag:
                        raise HodataError(f"{path} lines {origin[key]} and {line} disagree on frame {frame} "
                                          f"of s{session}/o{obj}")
                    labels[key], origin[key] = flag, line
    except (UnicodeDecodeError, csv.Error) as exc:
        raise HodataError(f"{path} is not a readable CSV ({exc})") from None
    return ContactLabels(path, labels)
