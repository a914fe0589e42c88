"""Core50 adapter on generated roots in the real layout, plus the real label and bbox files."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from hodata.datasets.core50 import (
    CATEGORY_BY_BLOCK,
    Core50Dataset,
    object_category,
    parse_id_list,
    read_bbox_file,
    session_side,
)
from hodata.errors import HodataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "core50"


def make_core50_root(root: Path, sessions=(5,), objects=(41,), n_frames=45, bbox=True) -> Path:
    rng = np.random.default_rng(0)
    for s in sessions:
        for o in objects:
            folder = root / "core50_350x350" / f"s{s}" / f"o{o}"
            folder.mkdir(parents=True)
            lines = []
            for f in range(n_frames):
                image = rng.integers(0, 255, (350, 350, 3), dtype=np.uint8)
                cv2.imwrite(str(folder / f"C_{s:02d}_{o:02d}_{f:03d}.png"), image)
                lines.append(f"Color{f:03d}: {100 + f} 90 {227 + f} 217")
            if bbox:
                (root / "bbox" / f"s{s}").mkdir(parents=True, exist_ok=True)
                (root / "bbox" / f"s{s}" / f"CropC_o{o}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_categories_match_the_real_label_file():
    if not (SHARED / "core50_labels.txt").is_file():
        pytest.skip("../shared/data/core50 is not present (a fresh clone has no shared/)")
    labels = [line.strip() for line in (SHARED / "core50_labels.txt").read_text().splitlines() if line.strip()]
    assert len(labels) == 50
    for object_id, label in enumerate(labels, 1):
        assert label.rstrip("0123456789") == object_category(object_id)
    assert len(CATEGORY_BY_BLOCK) == 10


def test_real_bbox_file_parses():
    path = SHARED / "real" / "core50_bbox_s5_CropC_o33.txt"
    if not path.is_file():
        pytest.skip("../shared/data/core50 is not present (a fresh clone has no shared/)")
    boxes = read_bbox_file(path)
    assert sorted(boxes) == list(range(300))
    assert boxes[179] == (115, 81, 242, 208)
    assert all(x2 - x1 == 127 and y2 - y1 == 127 for x1, y1, x2, y2 in boxes.values())  # 128 px crops


def test_sides_per_session():
    assert [session_side(s) for s in (1, 2, 5, 11)] == ["right", "left", "right", "left"]
    with pytest.raises(HodataError, match="s1-s11"):
        session_side(12)


def test_clips_from_a_generated_root(tmp_path):
    make_core50_root(tmp_path, sessions=(5, 2), objects=(41, 6), n_frames=45)
    ds = Core50Dataset(tmp_path, category="cup")
    clips = list(ds)
    assert {c.sequence for c in clips} == {"s5_o41", "s2_o41"}
    clip = next(c for c in clips if c.sequence == "s2_o41")
    assert clip.hand_sides == ["left"] and clip.category == "cup" and clip.object_model_id == "025_mug"
    assert clip.gt_hands == [] and clip.gt_object is None
    assert clip.image_size == (350, 350)
    assert clip.K.tolist() == [[480.0, 0.0, 175.0], [0.0, 480.0, 175.0], [0.0, 0.0, 1.0]]
    assert clip.frame_ids == [f"{f:03d}" for f in range(0, 37, 4)]
    first = int(clip.frame_ids[0])
    assert clip.object_boxes[0].tolist() == [100 + first, 90, 227 + first, 217]
    assert Path(clip.image_paths[3]).name == "C_02_41_012.png"


def test_filters_and_overrides(tmp_path):
    make_core50_root(tmp_path, sessions=(1, 3), objects=(41, 42), n_frames=37, bbox=False)
    ds = Core50Dataset(tmp_path, sessions=parse_id_list("s3", range(1, 12), "session"),
                       objects=parse_id_list("41-42", range(1, 51), "object"), focal=300, principal=(170, 180))
    clips = list(ds)
    assert {c.sequence for c in clips} == {"s3_o41", "s3_o42"}
    assert all(c.object_boxes is None for c in clips)
    assert clips[0].K[0, 0] == 300 and clips[0].K[1, 2] == 180


def test_bad_inputs(tmp_path):
    with pytest.raises(HodataError, match="does not exist"):
        Core50Dataset(tmp_path / "missing")
    with pytest.raises(HodataError, match="no s<session>/o<object>"):
        Core50Dataset(tmp_path)
    make_core50_root(tmp_path, n_frames=37)
    with pytest.raises(HodataError, match="no Core50 object"):
        Core50Dataset(tmp_path, category="banana")
    with pytest.raises(HodataError, match="unknown object category"):
        Core50Dataset(tmp_path, category="spaceship")
    with pytest.raises(HodataError, match="no Core50 frames of category ball"):
        Core50Dataset(tmp_path, category="ball")
    with pytest.raises(HodataError, match="bad session list"):
        parse_id_list("s1,x", range(1, 12), "session")
    bad = tmp_path / "bbox" / "s5" / "CropC_o41.txt"
    bad.write_text("Color000: 1 2 3\n")
    ds = Core50Dataset(tmp_path)
    assert list(ds) == []
    assert str(bad) in ds.messages[0] and "line 1" in ds.messages[0]
