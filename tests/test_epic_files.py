"""Epic-Kitchens annotation CSVs (the real files where present) and frames as folders or tars."""

import io
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from hodata.datasets.epic_files import (
    EPIC_NOUNS_BY_CATEGORY,
    VideoFrames,
    noun_classes_for_category,
    noun_instances,
    read_actions,
    read_noun_classes,
    read_video_info,
)
from hodata.errors import HodataError
from hodata.objects import CATEGORIES

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "epic-kitchens-100"


def _real(name):
    path = SHARED / name
    if not path.is_file():
        pytest.skip("../shared/data/epic-kitchens-100 is not present (a fresh clone has no shared/)")
    return path


def test_real_validation_csv():
    actions = read_actions(_real("EPIC_100_validation.csv"))
    assert len(actions) == 9668
    first = actions[0]
    assert (first.narration_id, first.video_id, first.start_frame, first.stop_frame, first.noun, first.noun_class) == \
        ("P01_11_0", "P01_11", 1, 113, "plate", 2)


def test_real_noun_classes_and_category_table():
    path = _real("EPIC_100_noun_classes.csv")
    classes = read_noun_classes(path)
    assert classes[13] == "cup" and classes[2] == "plate"
    assert noun_classes_for_category("cup", classes) == {13}
    assert noun_classes_for_category("mug", classes) == {13}   # a mug is an Epic "cup"
    assert "mug" in noun_instances(path)["cup"]
    keys = set(classes.values())
    for category, nouns in EPIC_NOUNS_BY_CATEGORY.items():
        assert category in CATEGORIES
        assert set(nouns) <= keys, f"{category}: {nouns} not all Epic noun keys"
    with pytest.raises(HodataError, match="no Epic-Kitchens nouns"):
        noun_classes_for_category("light_bulb", classes)


def test_real_video_info():
    info = read_video_info(_real("EPIC_100_video_info.csv"))
    fps, size = info["P01_01"]
    assert fps == pytest.approx(59.94, abs=0.01) and size == (1080, 1920)


def test_csv_missing_a_column(tmp_path):
    path = tmp_path / "EPIC_100_validation.csv"
    path.write_text("narration_id,video_id,start_frame\nP01_1,P01_01,1\n")
    with pytest.raises(HodataError, match="lacks column") as info:
        read_actions(path)
    assert str(path) in str(info.value)
    with pytest.raises(HodataError, match="not found"):
        read_actions(tmp_path / "missing.csv")


def _jpeg(value):
    ok, data = cv2.imencode(".jpg", np.full((36, 64, 3), value, np.uint8))
    return data.tobytes()


def test_frames_from_folder_and_tar_agree(tmp_path):
    folder = tmp_path / "a" / "P01" / "rgb_frames" / "P01_11"
    folder.mkdir(parents=True)
    tar_root = tmp_path / "b" / "P01" / "rgb_frames"
    tar_root.mkdir(parents=True)
    with tarfile.open(tar_root / "P01_11.tar", "w") as tar:
        for n in range(1, 6):
            data = _jpeg(n * 40)
            (folder / f"frame_{n:010d}.jpg").write_bytes(data)
            member = tarfile.TarInfo(f"./frame_{n:010d}.jpg")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    a, b = VideoFrames(tmp_path / "a", "P01_11"), VideoFrames(tmp_path / "b", "P01_11")
    assert a.numbers == b.numbers == [1, 2, 3, 4, 5]
    for n in (1, 5):   # both ends of the video
        assert np.array_equal(a.read(n), b.read(n))
        assert abs(int(a.read(n).mean()) - n * 40) <= 2
    with pytest.raises(HodataError, match="frame 6 is not in"):
        b.read(6)
    with pytest.raises(HodataError, match="frame 0 is not in"):
        a.read(0)
    with pytest.raises(HodataError, match="no frames for video P01_12"):
        VideoFrames(tmp_path / "a", "P01_12")
    (tar_root / "P01_13.tar").write_bytes(b"garbage" * 100)
    with pytest.raises(HodataError, match="unreadable"):
        VideoFrames(tmp_path / "b", "P01_13")
