"""Per-clip work outside the optimiser, before and after removing the repeated work (issue 14, item 5).

    PYTHONPATH=<tree> python bench/bench_waste.py OUT.json [--repeats 5]

Run it once with the tree before the change and once with the tree after it (same machine,
same load); bench/RESULTS.md "Wasted work removed" compares the two JSON files.

What it times, on the demo's clip (synthetic HO-3D, 10 frames of 640x480, 025_mug, two
methods) and on the synthetic video of tests/test_video.py:
- `fit_overhead_s`: `run_fit` of the clip with both methods, including opening the dataset
  (meta index, object model), with `fit_clip` replaced by a stub returning fits made once
  beforehand: what remains is the adapter, the evidence and the shard writing of one clip;
- `eval_s`: `evaluate_results` of the two methods' outputs (write=False);
- `video_evidence_s`: detected evidence of one 6-frame clip of the video plus its frames for
  the shards (`clip_images`), per clip, after the dataset's clip selection;
- the single operations removed: decoding the clip's frames, reading its metas, hashing the
  source mesh, JPEG/PNG-encoding the clip for one method, reading one method's fits,
  loading one clip's ground truth, MediaPipe on the clip's whole frames.
Medians over `--repeats`, torch on 1 thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)

    import hodata
    from hodata.app import fit as app_fit
    from hodata.app.evaluate import evaluate_results, load_fits
    from hodata.app.providers import EvidenceProvider
    from hodata.datasets.ho3d import HO3DDataset, ClipSpec, load_meta
    from hodata.datasets.synthetic import make_synthetic_ho3d
    from hodata.fileio import read_rgb, sha256_file
    from hodata.paths import default_mesh_cache

    results: dict = {"hodata_tree": str(Path(hodata.__file__).parents[1])}
    work = Path(tempfile.mkdtemp(prefix="bench-waste-"))
    cache = default_mesh_cache()
    root = make_synthetic_ho3d(work / "data", sequences=1, frames=10, object_ids=("025_mug",), seed=0,
                               cache_dir=cache)
    provider = EvidenceProvider("gt", "simulated", seed=0)
    methods = ("independent", "joint")
    config, init_config = app_fit.build_configs(2, 1, roi_size=64, hypotheses=2, disabled=())

    def dataset():
        return HO3DDataset(root, clip_length=10, stride=1, cache_dir=cache)

    summary = app_fit.run_fit(dataset(), provider, work / "fits", methods, config, init_config, "cpu",
                              overwrite=True, keep_results=True)
    (clip_id, fits), = summary.results.items()
    real_fit_clip = app_fit.fit_clip
    app_fit.fit_clip = lambda *a, methods=methods, **k: {m: fits[m] for m in methods}
    try:
        results["fit_overhead_s"] = median_time(
            lambda: app_fit.run_fit(dataset(), provider, work / "stub", methods, config, init_config, "cpu",
                                    overwrite=True), args.repeats)
    finally:
        app_fit.fit_clip = real_fit_clip
    results["eval_s"] = median_time(
        lambda: evaluate_results(work / "fits", "ho3d", root=root, cache_dir=cache, write=False, device="cpu"),
        args.repeats)

    ds = dataset()
    clip = ds[0]
    paths = clip.image_paths
    metas = [ds.meta_path(clip.sequence, f) for f in clip.frame_ids]
    obj = root / "models" / "025_mug" / "textured_simple.obj"
    frames = np.stack([read_rgb(p) for p in paths])
    masks = app_fit.evidence_masks(provider(clip))
    from hodata.shards.writer import _image_bytes

    single = {
        "decode_clip_frames": lambda: [read_rgb(p) for p in paths],
        "read_clip_metas": lambda: [load_meta(p) for p in metas],
        "hash_source_mesh": lambda: sha256_file(obj),
        "encode_clip_jpg_png": lambda: ([_image_bytes(f, "jpg", 95) for f in frames],
                                        [_image_bytes(m, "png", 95) for m in masks]),
        "read_one_method_fits": lambda: load_fits(work / "fits" / "joint"),
        "load_clip_ground_truth": lambda: HO3DDataset(root, clip_length=10, stride=1, cache_dir=cache, evidence="none",
                                                      check_images=False).load_clip(ClipSpec(clip.sequence,
                                                                                             clip.frame_ids)),
    }
    results["single_s"] = {name: median_time(fn, args.repeats) for name, fn in single.items()}
    results["single_s"]["load_clip_ground_truth_incl_index"] = results["single_s"].pop("load_clip_ground_truth")

    try:
        from hodata.evidence.mediapipe_hands import MediaPipeHands, mediapipe_available
    except ImportError:
        mediapipe_available = lambda: False  # noqa: E731
    if mediapipe_available():
        from hodata.datasets.video import VideoDataset
        from hodata.datasets.video_synthetic import FOCAL, render_clip, write_mp4

        truth = render_clip(cache=cache)
        mp4 = write_mp4(truth["frames"], work / "clip.mp4")
        video = VideoDataset(mp4, object="ball", focal=FOCAL, clip_length=6, min_tracked=5,
                             frames_cache=work / "frames", cache_dir=cache)
        detected = EvidenceProvider("detected", "keypoints")

        def video_clip():
            c = video[0]
            detected(c)
            app_fit.clip_images(c)

        results["video_evidence_s"] = median_time(video_clip, args.repeats)
        c = video[0]
        images = [read_rgb(p) for p in c.image_paths]
        with MediaPipeHands() as detector:
            detector.detect(images[0])  # first call loads the models
            results["single_s"]["mediapipe_clip_whole_frames"] = median_time(
                lambda: [detector.detect(im) for im in images], args.repeats)
        results["video_clip_frames"] = len(c)
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
