"""Epic-Kitchens adapter: clip selection from tracked detections on generated roots."""

import io
import shutil
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from hodata.datasets.epic import EpicKitchensDataset, read_selection, write_selection
from hodata.datasets.epic_detections import FrameDetections, HandDetection, ObjectDetection, write_video_detections
from hodata.errors import HodataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "epic-kitchens-100"
HEADER = ("narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,"
          "stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n")
NOUNS = "id,key,instances,category\n2,plate,\"['plate']\",crockery\n13,cup,\"['cup', 'mug']\",crockery\n"


def _jpeg(value):
    ok, data = cv2.imencode(".jpg", np.full((108, 192, 3), value, np.uint8))
    return data.tobytes()


def make_epic_root(root: Path, n_frames=80, tar=False, actions=None, hands=("right",), drop_every=0) -> Path:
    """A video P01_11 of n_frames frames; a cup moving right, held by the given hands."""
    frames_dir = root / "P01" / "rgb_frames"
    frames_dir.mkdir(parents=True)
    detections = []
    members = []
    for n in range(1, n_frames + 1):
        members.append((f"./frame_{n:010d}.jpg", _jpeg(n % 250)))
        x = 0.2 + 0.004 * n
        objects = [ObjectDetection((x, 0.4, x + 0.1, 0.6), 0.9), ObjectDetection((0.8, 0.1, 0.9, 0.2), 0.6)] \
            if n % 7 else [ObjectDetection((x, 0.4, x + 0.1, 0.6), 0.9)]
        if drop_every and n % drop_every == 0:
            objects = []
        hand_list = [HandDetection((x + 0.05, 0.45, x + 0.15, 0.7) if side == "right" else (x - 0.1, 0.45, x, 0.7),
                                   0.95, "portable_object", side, (-0.05, 0.0)) for side in hands]
        detections.append(FrameDetections("P01_11", n, hand_list, objects))
    if tar:
        with tarfile.open(frames_dir / "P01_11.tar", "w") as t:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    else:
        (frames_dir / "P01_11").mkdir()
        for name, data in members:
            (frames_dir / "P01_11" / name[2:]).write_bytes(data)
    (root / "hand-objects" / "P01").mkdir(parents=True)
    write_video_detections(root / "hand-objects" / "P01" / "P01_11.pkl", detections)
    rows = actions or [("P01_11_0", 15, 50, "take cup", "cup", 13), ("P01_11_1", 5, 9, "take cup", "cup", 13),
                       ("P01_11_2", 20, 40, "wash plate", "plate", 2)]
    lines = [f"{nid},P01,P01_11,00:00:00.0,00:00:00.0,00:00:01.0,{a},{b},{text},take,0,{noun},{cls},['{noun}'],[{cls}]"
             for nid, a, b, text, noun, cls in rows]
    (root / "EPIC_100_validation.csv").write_text(HEADER + "\n".join(lines) + "\n")
    (root / "EPIC_100_noun_classes.csv").write_text(NOUNS)
    return root


@pytest.mark.parametrize("tar", [False, True])
def test_selection_and_clips(tmp_path, tar):
    make_epic_root(tmp_path, tar=tar)
    ds = EpicKitchensDataset(tmp_path, category="cup")
    by_id = {c.narration_id: c for c in ds.candidates}
    assert set(by_id) == {"P01_11_0", "P01_11_1"}           # the plate action is not a cup
    kept, short = by_id["P01_11_0"], by_id["P01_11_1"]
    assert kept.kept and kept.frames == list(range(5, 61))  # padded by 10 frames, clipped to the track
    assert not short.kept and "needs > 20" in short.reason
    assert kept.hand_boxes.keys() == {"right"}
    clips = list(ds)
    assert len(clips) == len(kept.windows) >= 5
    clip = clips[0]
    assert clip.image_size == (360, 640) and clip.hand_sides == ["right"] and clip.category == "cup"
    assert clip.frame_ids == [f"{n:010d}" for n in range(5, 15)]
    assert clip.K[0, 0] == 200 and clip.K[0, 2] == pytest.approx(319.5)
    x = 0.2 + 0.004 * 5
    assert clip.object_boxes[0].tolist() == pytest.approx([x * 640, 0.4 * 360, (x + 0.1) * 640, 0.6 * 360], abs=1.0)
    image = cv2.imread(str(clip.image_paths[0]))
    assert image.shape == (360, 640, 3) and abs(int(image.mean()) - 5) <= 3
    assert clip.gt_hands == [] and clip.gt_object is None


def test_two_hands_and_selection_file_round_trip(tmp_path):
    make_epic_root(tmp_path, hands=("left", "right"), drop_every=5)
    ds = EpicKitchensDataset(tmp_path, category="mug")     # a mug is an Epic cup
    kept = [c for c in ds.candidates if c.kept]
    assert len(kept) == 1 and kept[0].hand_boxes.keys() == {"left", "right"}
    assert kept[0].frames == list(range(5, 61))           # missed object frames are filled by the track
    path = tmp_path / "clips.json"
    write_selection(path, ds.candidates, {"category": "cup"})
    again = EpicKitchensDataset(tmp_path, category="cup", clips=path)
    assert [(c.sequence, c.frame_ids) for c in again] == [(c.sequence, c.frame_ids) for c in ds]
    assert read_selection(path)[0].reason == ds.candidates[0].reason


def test_bad_inputs_name_the_file(tmp_path):
    make_epic_root(tmp_path, actions=[("P01_11_0", 15, 50, "take cup", "cup", 13),
                                      ("P01_11_9", 70, 95, "take cup", "cup", 13)])
    ds = EpicKitchensDataset(tmp_path, category="cup")
    beyond = next(c for c in ds.candidates if c.narration_id == "P01_11_9")
    assert not beyond.kept and "beyond the video's last frame 80" in beyond.reason
    assert any(c.kept for c in ds.candidates)                 # the other action goes on
    with pytest.raises(HodataError, match="unknown object category"):
        EpicKitchensDataset(tmp_path, category="spaceship")
    with pytest.raises(HodataError, match="needs --category"):
        EpicKitchensDataset(tmp_path)
    (tmp_path / "hand-objects" / "P01" / "P01_11.pkl").write_bytes(b"garbage")
    ds = EpicKitchensDataset(tmp_path, category="cup")
    assert not any(c.kept for c in ds.candidates)
    assert "P01_11.pkl is not a pickled list" in ds.candidates[0].reason
    shutil.rmtree(tmp_path / "hand-objects")
    ds = EpicKitchensDataset(tmp_path, category="cup")
    assert "not found" in ds.candidates[0].reason                # a video without detections
    (tmp_path / "EPIC_100_validation.csv").write_text("narration_id,video_id\n")
    with pytest.raises(HodataError, match="lacks column"):
        EpicKitchensDataset(tmp_path, category="cup")


def test_frame_numbering_of_detections_is_checked(tmp_path):
    make_epic_root(tmp_path)
    path = tmp_path / "hand-objects" / "P01" / "P01_11.pkl"
    write_video_detections(path, [FrameDetections("P01_11", n + 2) for n in range(80)])
    ds = EpicKitchensDataset(tmp_path, category="cup")
    assert "entry 0 is frame 2, expected 1" in ds.candidates[0].reason


def test_real_annotations_select_cup_actions():
    if not (SHARED / "EPIC_100_validation.csv").is_file():
        pytest.skip("../shared/data/epic-kitchens-100 is not present (a fresh clone has no shared/)")
    from hodata.datasets.epic_files import noun_classes_for_category, read_actions, read_noun_classes

    classes = read_noun_classes(SHARED / "EPIC_100_noun_classes.csv")
    cups = [a for a in read_actions(SHARED / "EPIC_100_validation.csv")
            if a.noun_class in noun_classes_for_category("cup", classes)]
    assert len(cups) > 50 and all(a.noun_class == 13 for a in cups)


def _real_frame_epic_root(shared_data: Path, root: Path, n_frames: int = 8) -> Path:
    """An Epic-Kitchens root whose video shows the real Core50 frame (a right hand holding a
    ball) enlarged into 640x360 frames, with detections placed where the hand and ball are."""
    real = cv2.imread(str(shared_data / "core50" / "real" / "C_05_33_179.png"))
    scale, top = 640 / 350, 100   # the frame enlarged to 640 wide, rows 100-459 kept: 640 x 360
    canvas = cv2.resize(real, (640, 640), interpolation=cv2.INTER_CUBIC)[top:top + 360]
    folder = root / "P01" / "rgb_frames" / "P01_11"
    folder.mkdir(parents=True)

    def normalised(x0, y0, x1, y1):  # Core50 pixels -> this frame, normalised as the detections are
        return (x0 * scale / 640, (y0 * scale - top) / 360, x1 * scale / 640, (y1 * scale - top) / 360)

    ball = normalised(115, 81, 242, 208)      # the bbox file's box of this frame
    hand = normalised(150, 150, 250, 215)
    detections = []
    for n in range(1, n_frames + 1):
        cv2.imwrite(str(folder / f"frame_{n:010d}.jpg"), canvas)
        detections.append(FrameDetections("P01_11", n, [HandDetection(hand, 0.9, "portable_object", "right")],
                                          [ObjectDetection(ball, 0.9)]))
    (root / "hand-objects" / "P01").mkdir(parents=True)
    write_video_detections(root / "hand-objects" / "P01" / "P01_11.pkl", detections)
    line = "P01_11_0,P01,P01_11,00:00:00.0,00:00:00.0,00:00:01.0,3,6,take cup,take,0,cup,13,['cup'],[13]"
    (root / "EPIC_100_validation.csv").write_text(HEADER + line + "\n")
    (root / "EPIC_100_noun_classes.csv").write_text(NOUNS)
    return root


def test_select_clips_then_fit_exactly_those_clips(shared_data, tmp_path):
    """`hodata select-clips epic` writes the selection; `hodata fit epic --clips` fits exactly its
    clips with detected evidence (MediaPipe on the real hand, GrabCut in the tracked box)."""
    pytest.importorskip("mediapipe", reason="MediaPipe is installed by `make setup` (the [hands] extra)")
    import json

    from typer.testing import CliRunner

    from hodata.cli import app
    from hodata.shards import load

    runner = CliRunner()
    root = _real_frame_epic_root(shared_data, tmp_path / "epic")
    selection = tmp_path / "clips.json"
    result = runner.invoke(app, ["select-clips", "epic", "--root", str(root), "--category", "cup", "--output",
                                 str(selection), "--pad", "0", "--min-tracked", "3", "--clip-length", "4"])
    assert result.exit_code == 0, result.output
    assert "1 candidate action(s), 1 kept, 1 clip(s)" in result.output
    chosen = json.loads(selection.read_text())["candidates"][0]
    assert chosen["kept"] and chosen["windows"] == [[3, 4, 5, 6]]
    out = tmp_path / "out"
    result = runner.invoke(app, ["fit", "epic", "--root", str(root), "--category", "cup", "--clips", str(selection),
                                 "--clip-length", "4", "--output", str(out), "--steps1", "15", "--steps2", "5",
                                 "--hypotheses", "4", "--roi-size", "64", "--mesh-cache", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    samples = list(load(out / "joint"))
    metas = [s["meta"] if "meta" in s else json.loads(s["json"]) for s in samples]
    assert [m["frame"] for m in metas] == [f"{n:010d}" for n in (3, 4, 5, 6)]
    assert {m["sequence"] for m in metas} == {"P01_11-P01_11_0"} and metas[0]["dataset"] == "epic"
    assert metas[0]["objects"][0]["category"] == "cup" and metas[0]["evidence"]["hand_keypoints"] == "mediapipe"
