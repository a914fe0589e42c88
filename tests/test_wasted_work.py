"""Work done once per clip (issue 14, item 5), proven by counting calls.

Each test wraps the function doing the work (image decoding, meta pickle reading, source mesh
hashing, JPEG encoding, shard reading, MediaPipe) with a counter and asserts how often it ran
along the real code path, and that reusing the result gives the same output as doing the
work again.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import torch

from hodata.evidence.mediapipe_hands import mediapipe_available

METHODS = ("independent", "joint")
FRAMES = 3


class Counter:
    """Wrap `owner.name` (monkeypatch) and count its calls by key(args, kwargs)."""

    def __init__(self, monkeypatch, owner, name: str, key=lambda args, kwargs: None):
        self.calls: collections.Counter = collections.Counter()
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            self.calls[key(args, kwargs)] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)

    def reset(self) -> None:
        self.calls.clear()


@pytest.fixture(scope="module")
def ho3d_root(tmp_path_factory):
    from hodata.datasets.synthetic import make_synthetic_ho3d

    root = tmp_path_factory.mktemp("ho3d")
    cache = tmp_path_factory.mktemp("cache")
    make_synthetic_ho3d(root, sequences=1, frames=FRAMES, object_ids=("025_mug",), seed=0, cache_dir=cache,
                        image_size=(96, 128))
    return root, cache


def _fit(root: Path, cache: Path, out: Path):
    from hodata.app.fit import build_configs, run_fit
    from hodata.app.providers import EvidenceProvider
    from hodata.datasets.ho3d import HO3DDataset

    dataset = HO3DDataset(root, clip_length=FRAMES, stride=1, cache_dir=cache)
    config, init_config = build_configs(2, 1, roi_size=32, hypotheses=2, disabled=())
    summary = run_fit(dataset, EvidenceProvider("gt", "simulated"), out, METHODS, config, init_config, "cpu",
                      overwrite=True, save_frames=True)
    assert summary.fitted and not summary.failed, summary.failed
    return summary


def test_frames_decoded_and_jpeg_encoded_once_per_clip(ho3d_root, tmp_path, monkeypatch):
    """HO-3D with two methods: each frame decoded once (the adapter's image check; the shards
    reuse it) and JPEG-encoded once (both methods' shards get the same bytes)."""
    import cv2

    from hodata.shards import read_shard, writer

    root, cache = ho3d_root
    decoded = Counter(monkeypatch, cv2, "imread", key=lambda a, k: Path(a[0]))
    encoded = Counter(monkeypatch, writer, "_image_bytes", key=lambda a, k: a[1])
    _fit(root, cache, tmp_path / "out")
    frames = {p: n for p, n in decoded.calls.items() if p.parent.name == "rgb"}
    assert len(frames) == FRAMES and set(frames.values()) == {1}, frames
    assert encoded.calls == {"jpg": FRAMES, "png": FRAMES}

    members = {}
    for m in METHODS:
        (shard,) = sorted((tmp_path / "out" / m).glob("*.tar"))
        members[m] = read_shard(shard)
    for a, b in zip(members["independent"], members["joint"]):
        assert a["__key__"] == b["__key__"] and a["jpg"] == b["jpg"] and a["png"] == b["png"]
    (shard,) = sorted((tmp_path / "out" / "joint").glob("*.tar"))
    for sample, path in zip(read_shard(shard, decode_images=True), sorted(frames)):
        original = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        assert tuple(sample["jpg"].shape) == original.shape
        assert float(np.abs(sample["jpg"].numpy().astype(float) - original).mean()) < 3.0  # JPEG q95


def test_encoded_frames_give_the_same_samples_as_arrays():
    """Shard compatibility: a clip written from EncodedFrames has byte-identical members to one
    written from the arrays (the format and the reader are unchanged)."""
    from test_shards import make_fit

    from hodata.shards import EncodedFrames, encode_clip

    fit = make_fit(0, T=3)
    H, W = fit.image_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, (3, H, W), dtype=np.uint8)
    from_arrays = encode_clip(fit, images, masks)
    frames = EncodedFrames.encode(images, masks)
    assert encode_clip(fit, frames) == from_arrays
    with pytest.raises(ValueError, match="encoded frames are 2"):
        encode_clip(fit, EncodedFrames.encode(images[:2]))
    with pytest.raises(ValueError, match="inside EncodedFrames"):
        encode_clip(fit, frames, masks)
    with pytest.raises(ValueError, match="masks: expected uint8 of shape"):
        EncodedFrames.encode(images, masks[:, :-1])


def test_meta_pickles_read_once_per_frame(ho3d_root, monkeypatch):
    """Indexing reads every meta; loading the clips reuses what indexing read."""
    from hodata.datasets import ho3d

    root, cache = ho3d_root
    reads = Counter(monkeypatch, ho3d, "load_meta", key=lambda a, k: Path(a[0]))
    dataset = ho3d.HO3DDataset(root, clip_length=FRAMES, stride=1, cache_dir=cache)
    clips = list(dataset)
    assert len(clips) == 1 and len(reads.calls) == FRAMES and set(reads.calls.values()) == {1}, reads.calls
    again = dataset[0]  # a second load of the same clip reads the files again (nothing is kept after loading)
    assert set(reads.calls.values()) == {2}
    torch.testing.assert_close(again.gt_object.rotation, clips[0].gt_object.rotation)
    torch.testing.assert_close(again.gt_hands[0].vertices, clips[0].gt_hands[0].vertices)


def test_source_mesh_hashed_once_on_first_use(ho3d_root, tmp_path, monkeypatch):
    from hodata import fileio, objects
    from hodata.datasets import ho3d

    root, _ = ho3d_root
    calls = collections.Counter()
    original = fileio.sha256_file

    def counted(path, *args, **kwargs):
        calls[Path(path).name] += 1
        return original(path, *args, **kwargs)

    for module in (fileio, objects, ho3d):
        monkeypatch.setattr(module, "sha256_file", counted)
    fresh = tmp_path / "cache"
    model = ho3d.ho3d_object_model(root / "models", "025_mug", fresh)  # first use: prepared into the cache
    assert calls["textured_simple.obj"] == 1
    again = ho3d.ho3d_object_model(root / "models", "025_mug", fresh)  # cached: one hash checks the source
    assert calls["textured_simple.obj"] == 2 and again.model_id == model.model_id
    assert model.meta["source_sha256"] == original(root / "models" / "025_mug" / "textured_simple.obj")


def test_eval_reads_each_fit_and_ground_truth_once(ho3d_root, tmp_path, monkeypatch):
    """`hodata eval` of two methods: each method's shards read once, each clip's ground truth
    loaded once for both methods (each meta pickle read once), and the same metrics as
    evaluating one method at a time (also when the fits are too big to keep: then each
    method's shards are read twice, as before)."""
    from hodata import shards
    from hodata.app import evaluate
    from hodata.datasets import ho3d

    root, cache = ho3d_root
    out = tmp_path / "out"
    _fit(root, cache, out)
    fits_read = Counter(monkeypatch, shards, "fit_results_from_shards", key=lambda a, k: Path(a[0]).name)
    loads = Counter(monkeypatch, ho3d.HO3DDataset, "load_clip", key=lambda a, k: a[1].frame_ids[0])
    metas = Counter(monkeypatch, ho3d, "load_meta", key=lambda a, k: Path(a[0]))
    report = evaluate.evaluate_results(out, "ho3d", root=root, cache_dir=cache, write=False, device="cpu")
    assert fits_read.calls == {m: 1 for m in METHODS}
    assert sum(loads.calls.values()) == 1
    assert len(metas.calls) == FRAMES and set(metas.calls.values()) == {1}
    assert [r["method"] for r in report.clips] == list(METHODS)

    one_by_one = [evaluate.evaluate_results(out, "ho3d", root=root, cache_dir=cache, write=False, device="cpu",
                                            methods=[m]).clips[0] for m in METHODS]
    assert report.clips == one_by_one
    fits_read.reset()
    monkeypatch.setattr(evaluate, "FIT_MEMORY_BUDGET", 0)
    assert evaluate.evaluate_results(out, "ho3d", root=root, cache_dir=cache, write=False,
                                     device="cpu").clips == one_by_one
    assert fits_read.calls == {m: 2 for m in METHODS}


needs_mediapipe = pytest.mark.skipif(not mediapipe_available(),
                                     reason="MediaPipe is installed by `make setup` (the [hands] extra)")


@needs_mediapipe
def test_video_runs_mediapipe_once_per_frame_and_decodes_each_clip_frame_once(tmp_path, monkeypatch):
    """Your own video: the clip selection's whole-frame detections are reused by the detected
    evidence (which gives the same evidence as running MediaPipe again); the clip's frames
    are decoded once for the evidence and the shards."""
    import cv2

    from hodata.app.fit import clip_images
    from hodata.app.providers import EvidenceProvider
    from hodata.datasets.video import VideoDataset
    from hodata.datasets.video_synthetic import FOCAL, render_clip, write_mp4
    from hodata.evidence import mediapipe_hands

    cache = tmp_path / "mesh_cache"
    truth = render_clip(cache=cache)
    mp4 = write_mp4(truth["frames"], tmp_path / "clip.mp4")
    size = tuple(truth["frames"].shape[1:3])
    whole = collections.Counter()  # detector calls on whole frames (crops near the object are smaller)
    original = mediapipe_hands.MediaPipeHands.detect

    def detect(self, image):
        whole["frames"] += tuple(image.shape[:2]) == size
        return original(self, image)

    monkeypatch.setattr(mediapipe_hands.MediaPipeHands, "detect", detect)
    dataset = VideoDataset(mp4, object="ball", focal=FOCAL, clip_length=6, min_tracked=5,
                           frames_cache=tmp_path / "frames", cache_dir=cache)
    assert tuple(dataset.image_size) == size
    assert whole["frames"] == len(dataset.paths)

    decoded = Counter(monkeypatch, cv2, "imread", key=lambda a, k: Path(a[0]))
    provider = EvidenceProvider("detected", "keypoints")
    clip = dataset[0]
    evidence = provider(clip)
    images = clip_images(clip)
    assert whole["frames"] == len(dataset.paths), "MediaPipe ran again on a whole frame of the clip"
    assert sorted(decoded.calls) == sorted(Path(p) for p in clip.image_paths)
    assert set(decoded.calls.values()) == {1}
    assert images.shape == (len(clip), *size, 3)

    rerun = dataset[0]
    rerun.hand_detections = None  # the evidence as it was made before: MediaPipe on the clip's frames again
    again = provider(rerun)
    assert whole["frames"] == len(dataset.paths) + len(clip)
    torch.testing.assert_close(evidence.object_masks, again.object_masks)
    assert [h.side for h in evidence.hands] == [h.side for h in again.hands]
    for a, b in zip(evidence.hands, again.hands):
        torch.testing.assert_close(a.keypoints_2d, b.keypoints_2d)
        torch.testing.assert_close(a.init.transl, b.init.transl)
