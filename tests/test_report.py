"""`hodata report`: the static review page (hodata.app.report), checked in a real headless
Chromium where one is installed (Debian's `chromium`; .ci/run installs it)."""

from __future__ import annotations

import csv
import html
import re
import shutil
import subprocess

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hodata import handmodel
from hodata.app import report as rp
from hodata.cli import app
from hodata.shards import ShardWriter
from hodata.types import FitResult, HandState, ObjectState

runner = CliRunner()
H, W = 96, 128
K = torch.tensor([[220.0, 0.0, 63.5], [0.0, 220.0, 47.5], [0.0, 0.0, 1.0]])
MODEL_ID = "testbox"
# clip -> per-frame mask IoU (the quality the shard writer computes from it) and hand_lost flags
CLIPS = {
    "joint": {
        "synthetic_A_0000": ([0.9, 0.85, 0.9], [False, False, False]),
        "synthetic_B_0000": ([0.6, 0.2, 0.5], [False, True, False]),
        "synthetic_C_0000": ([0.95, 0.95], [False, False]),
    },
    "independent": {
        "synthetic_A_0000": ([0.3, 0.35, 0.4], [False, False, False]),
    },
}



def make_fit(clip_id: str, T: int, method: str, model_id: str = MODEL_ID) -> FitResult:
    layer = handmodel.load(side="right", model="open")
    angles = torch.linspace(0.2, 0.8, T)
    from hodata.geometry.rotations import axis_angle_to_matrix

    rotation = axis_angle_to_matrix(torch.stack([torch.full((T,), 0.3), angles, torch.full((T,), 0.1)], 1)).float()
    translation = torch.tensor([0.0, 0.0, 0.45]).repeat(T, 1)
    transl = torch.tensor([0.03, 0.02, 0.36]).repeat(T, 1)
    with torch.no_grad():
        out = layer(torch.eye(3).repeat(T, 1, 1), torch.zeros(T, 16), torch.zeros(T, 10), transl)
    hand = HandState(side="right", vertices=out.vertices.float(), joints=out.joints.float(),
                     global_orient=torch.eye(3).repeat(T, 1, 1), hand_pose=torch.zeros(T, 16), pose_space="pca",
                     betas=torch.zeros(10), transl=transl, scale=torch.tensor(1.0), model_name=layer.model_name)
    obj = ObjectState(model_id=model_id, rotation=rotation, translation=translation, scale=torch.tensor(1.0))
    sequence = clip_id.split("_")[1]
    return FitResult(clip_id=clip_id, dataset="synthetic", sequence=sequence,
                     frame_ids=[f"{4 * t:04d}" for t in range(T)], K=K.clone(), image_size=(H, W),
                     hands=[hand], objects=[obj], method=method,
                     losses={"obj": 0.0123, "v2d": 0.0456, "collision": 1e-4})


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A `hodata fit` output folder: joint/ (three clips, frames stored) and independent/ (one
    clip without frames), with the quality the writer derives from the given mask IoUs and
    flags, and an eval metrics_per_clip.csv beside them."""
    out = tmp_path_factory.mktemp("fit")
    ramp = np.linspace(30, 220, W).astype(np.uint8)
    for method, clips in CLIPS.items():
        with ShardWriter(out / method, worker_id=0, config={"method": method}) as writer:
            for clip_id, (iou, lost) in clips.items():
                fit = make_fit(clip_id, len(iou), method)
                images = None
                if method == "joint":
                    images = np.broadcast_to(ramp[None, None, :, None], (len(iou), H, W, 3)).copy()
                writer.write_clip(fit, images=images, quality={"mask_iou": iou, "flags": {"hand_lost": lost}})
                writer.flush()
    with open(out / "metrics_per_clip.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "clip_id", "sequence", "frames", "hand_vertex_cm", "object_adds_cm"])
        writer.writerow(["joint", "synthetic_B_0000", "B", 3, 4.25, ""])
    return out


def expected_quality(iou, lost):
    return [v * 0.5 ** int(flag) for v, flag in zip(iou, lost)]


def test_rows_quality_losses_flags_and_order(results, cache_dir, tmp_path):
    summary = rp.build_report(results, tmp_path / "page", cache_dir=cache_dir)
    assert summary.messages == []
    got = [(r.method, r.clip_id) for r in summary.clips]
    means = {(m, c): float(np.mean(expected_quality(*v))) for m, clips in CLIPS.items() for c, v in clips.items()}
    assert got == sorted(means, key=lambda k: means[k])       # worst first
    by_key = {(r.method, r.clip_id): r for r in summary.clips}
    b = by_key[("joint", "synthetic_B_0000")]
    assert b.frame_quality == pytest.approx(expected_quality(*CLIPS["joint"]["synthetic_B_0000"]))
    assert b.quality == pytest.approx(means[("joint", "synthetic_B_0000")])
    assert b.flags == {"hand_lost": 1} and b.frame_raised == [[], ["hand_lost"], []]
    assert b.shown_frame == 1                                     # the lowest-quality frame
    assert b.signals == {"mask_iou": pytest.approx(np.mean([0.6, 0.2, 0.5]))}
    assert b.losses == {"obj": 0.0123, "v2d": 0.0456, "collision": 1e-4}
    assert b.metrics == {"hand_vertex_cm": 4.25}
    assert by_key[("joint", "synthetic_A_0000")].metrics == {}

    best = rp.build_report(results, tmp_path / "best", cache_dir=cache_dir, sort="best")
    assert [(r.method, r.clip_id) for r in best.clips] == got[::-1]
    by_name = rp.build_report(results, tmp_path / "name", cache_dir=cache_dir, sort="name", methods=["joint"])
    assert [r.clip_id for r in by_name.clips] == sorted(CLIPS["joint"])

    page = (tmp_path / "page" / "index.html").read_text()
    for row in summary.clips:   # relative paths, files present, thumbnails of the expected size
        assert not row.overlay.startswith("/") and not row.side.startswith("/")
        for rel in (row.overlay, row.side):
            image = cv2.imread(str(tmp_path / "page" / rel))
            assert image.shape == (int(H * rp.DEFAULT_THUMB_WIDTH / W), rp.DEFAULT_THUMB_WIDTH, 3)
            assert f'src="{rel}"' in page
    # no external assets: nothing fetched from a network or an absolute path
    assert not re.search(r'(src|href)="(https?:|//|/)', page)
    assert page.count('<tr class="clip"') == 4 and page.count("<svg") == 4
    assert "hand_lost ×1" in page and "4.25 cm" in page


def test_thumbnails_show_the_meshes_over_the_frame(results, cache_dir, tmp_path):
    summary = rp.build_report(results, tmp_path / "page", cache_dir=cache_dir, methods=["joint"])
    row = next(r for r in summary.clips if r.clip_id == "synthetic_A_0000")
    overlay = cv2.imread(str(tmp_path / "page" / row.overlay))[:, :, ::-1].astype(int)
    side = cv2.imread(str(tmp_path / "page" / row.side))[:, :, ::-1].astype(int)
    blue = lambda im: (im[..., 2] - im[..., 1] > 15).sum()  # noqa: E731 - the object's colour
    assert blue(overlay) > 500 and blue(side) > 100
    # the stored frame is the background: far from the meshes the ramp shows (x 2.5 scale)
    ramp = np.linspace(30, 220, W)
    column = overlay[-10:, 5:60].mean(axis=0)[:, 0]
    assert np.abs(column - np.interp(np.arange(5, 60) / 2.5, np.arange(W), ramp)).max() < 12


def test_quality_read_generically_from_the_json():
    """A plain number, a dict with nested signals, and a stored clip score."""
    assert rp.frame_quality({"quality": 0.7}) == (0.7, [], {})
    score, raised, signals = rp.frame_quality({"quality": {
        "score": 0.4, "flags": {"jitter": True, "far": False}, "basis": ["x"], "v2d_px": 3.0, "mask_iou": None,
        "version": 2, "signals": {"depth_gap_m": 0.05, "name": "text"}, "extra": {"a": 1.5}}})
    assert (score, raised, signals) == (0.4, ["jitter"], {"v2d_px": 3.0, "depth_gap_m": 0.05, "extra.a": 1.5})
    metas = [{"quality": {"score": 0.2, "clip_score": 0.9}}, {"quality": {"score": 0.4}}]
    assert rp.clip_quality(metas, [0.2, 0.4]) == 0.9
    assert rp.clip_quality([{"quality": {}}], [0.2, 0.4]) == pytest.approx(0.3)
    assert rp.clip_quality([{}], [None]) is None
    svg = rp.quality_svg([0.5, None, 1.0], [[], [], ["a&b"]], ["0", "1", "2"])
    assert svg.count("<circle") == 2 and "a&amp;b" in svg and svg.count("<polyline") == 2


def test_one_clip_without_its_model_keeps_its_row(results, tmp_path):
    empty = tmp_path / "empty_cache"
    empty.mkdir()
    summary = rp.build_report(results, tmp_path / "page", cache_dir=empty, methods=["independent"])
    (row,) = summary.clips
    assert row.overlay is None and MODEL_ID in row.problem and len(summary.messages) == 1
    page = (tmp_path / "page" / "index.html").read_text()
    assert "no thumbnail" in page and html.escape(MODEL_ID) in page


def test_an_unforeseen_error_in_one_clip_keeps_the_others(results, cache_dir, tmp_path, monkeypatch):
    real = rp.render_thumbnails

    def fails_on_b(fit, *args, **kwargs):
        if fit.clip_id == "synthetic_B_0000":
            raise ValueError("degenerate mesh")
        return real(fit, *args, **kwargs)

    monkeypatch.setattr(rp, "render_thumbnails", fails_on_b)
    summary = rp.build_report(results, tmp_path / "page", cache_dir=cache_dir, methods=["joint"])
    problems = {r.clip_id: r.problem for r in summary.clips}
    assert problems == {"synthetic_A_0000": "", "synthetic_B_0000": "ValueError: degenerate mesh",
                        "synthetic_C_0000": ""}
    assert all(r.overlay for r in summary.clips if r.clip_id != "synthetic_B_0000")


def test_command_writes_videos_and_links_them(results, cache_dir, tmp_path):
    out = tmp_path / "page"
    result = runner.invoke(app, ["report", str(results / "joint"), "-o", str(out), "--mesh-cache", str(cache_dir),
                                 "--videos", "--fps", "5", "--sort", "name"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert f"wrote {out / 'index.html'} (3 clips, 3 MP4s)" in " ".join(result.output.split())
    page = (out / "index.html").read_text()
    for clip_id, (iou, _) in CLIPS["joint"].items():
        video = out / "videos" / "joint" / f"{clip_id}.mp4"
        capture = cv2.VideoCapture(str(video))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == len(iou)
        capture.release()
        assert f'href="videos/joint/{clip_id}.mp4"' in page


def test_command_errors_are_one_line(results, tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output and "\n" not in result.output.strip()
    result = runner.invoke(app, ["report", str(results), "--sort", "sideways", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown sort order 'sideways'" in result.output
    result = runner.invoke(app, ["report", "--help"])
    result_missing = runner.invoke(app, ["report", str(results), "--metrics", str(tmp_path / "m.csv"),
                                         "-o", str(tmp_path / "y")])
    assert result_missing.exit_code == 2 and "m.csv: no such metrics file" in result_missing.output
    for option in ("--output", "--sort", "--method", "--videos", "--fps", "--thumb-width", "--metrics", "--root",
                   "--mesh-cache", "--mano-dir"):
        assert option in result.output


# ----------------------------------------------------------------------------- in a real browser

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
# Flags that let Chromium run as root in a container without network (no sandbox, no GPU,
# no background connections, which a closed network refuses), with a fresh profile.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--virtual-time-budget=10000"]


def chromium(args, profile):
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium); "
                    ".ci/run installs it so CI runs this test")
def test_page_renders_every_clip_in_headless_chromium(results, cache_dir, tmp_path):
    summary = rp.build_report(results, tmp_path / "page", cache_dir=cache_dir)
    url = summary.index_path.resolve().as_uri()          # file://, no server
    dom = chromium(["--dump-dom", url], tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    # the page's own script ran after every image settled: 8 images, none broken
    assert 'data-images="8"' in body and 'data-images-broken="0"' in body, body
    rows = re.findall(r'<tr class="clip" id="clip-(\d+)" data-clip="([^"]+)" data-method="([^"]+)"', dom.stdout)
    assert [(m, c) for _, c, m in rows] == [(r.method, r.clip_id) for r in summary.clips]

    # the page re-sorts itself in the browser: best first from the address, as build_report would
    dom = chromium(["--dump-dom", url + "#sort=best"], tmp_path / "profile")
    rows = re.findall(r'<tr class="clip" id="clip-\d+" data-clip="([^"]+)" data-method="([^"]+)"', dom.stdout)
    assert [(m, c) for c, m in rows] == [(r.method, r.clip_id) for r in summary.clips][::-1]
    assert 'data-order="best"' in dom.stdout
    dom = chromium(["--dump-dom", url + "#sort=name"], tmp_path / "profile")
    rows = re.findall(r'<tr class="clip" id="clip-\d+" data-clip="([^"]+)" data-method="([^"]+)"', dom.stdout)
    assert [(m, c) for c, m in rows] == sorted((r.method, r.clip_id) for r in summary.clips)

    # a moved thumbnail shows as broken in the browser (what the check above would catch)
    broken = tmp_path / "page" / summary.clips[0].overlay
    broken.rename(broken.with_suffix(".moved"))
    dom = chromium(["--dump-dom", url], tmp_path / "profile")
    assert 'data-images-broken="1"' in dom.stdout and "images did not load" in dom.stdout
    broken.with_suffix(".moved").rename(broken)

    shot = tmp_path / "page.png"
    result = chromium([f"--screenshot={shot}", "--window-size=1400,900", "--hide-scrollbars", url],
                      tmp_path / "profile")
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    image = cv2.imread(str(shot))
    assert image.shape[:2] == (900, 1400)
    # thumbnails drawn: the object's blue appears in the screenshot
    assert (image[..., 0].astype(int) - image[..., 1].astype(int) > 15).sum() > 2000
