"""Fitting benchmark: per-stage time, iterations per second, peak memory, and the ablation
of paper Table 1 on synthetic HO-3D clips with known ground truth.

    python bench/bench_fit.py [--clips 5] [--out bench/_work/fit]

Each clip: a synthetic HO-3D sequence of 10 frames (one clip, stride 1) of a different
catalog object and seed, ground-truth masks and boxes (the paper's Fig. 4 setting), hand
initialisation from the simulated estimator (default noise). The object initialisation is
computed once per clip and shared by every method, as in the paper's ablation.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

OBJECTS = ["025_mug", "006_mustard_bottle", "004_sugar_box", "010_potted_meat_can", "021_bleach_cleanser",
           "003_cracker_box", "019_pitcher_base"]
VARIANTS = {
    "indep. composition": None,
    "joint fitting": (),
    "w/out local interactions": ("local",),
    "w/out collision": ("collision",),
    "w/out coarse interaction": ("centroid",),
    "w/out smoothness": ("smooth",),
}
PAPER = {  # Table 1 of the paper (HO-3D): hand vertex cm, mepe aligned cm, object vertex cm, add-s cm, pen mm, contact %
    "indep. composition": (26.2, 5.2, 12.1, 7.7, 3.2, 25.8),
    "joint fitting": (8.6, 5.4, 8.0, 3.8, 2.8, 77.5),
    "w/out local interactions": (8.5, 5.4, 8.0, 3.8, 2.4, 72.3),
    "w/out collision": (8.9, 5.4, 8.0, 3.8, 10.2, 80.5),
    "w/out coarse interaction": (17.1, 5.3, 8.1, 3.8, 1.9, 59.4),
    "w/out smoothness": (11.4, 5.6, 12.8, 8.3, 3.0, 79.1),
}
KEYS = ("hand_vertex_cm", "hand_joint_st_cm", "object_vertex_cm", "object_adds_cm", "penetration_mm", "contact_pct")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/_work/fit"))
    parser.add_argument("--mesh-cache", type=Path, default=Path("mesh_cache"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    from hodata.datasets.ho3d import HO3DDataset
    from hodata.datasets.synthetic import make_synthetic_ho3d
    from hodata.app.evaluate import exact_object_sdf
    from hodata.evidence.hand_init import SimulatedHandEstimator
    from hodata.fitting import FitConfig, ObjectInitConfig
    from hodata.fitting.joint import HandEvidence, fit_hands_and_objects, object_evidence
    from hodata.fitting.object_init import distinct_candidates, initialise_object_pose
    from hodata.fitting.pipeline import build_fit_result
    from hodata.metrics.summary import aggregate, evaluate_fit

    rows: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    timing = []
    for i in range(args.clips):
        obj = OBJECTS[i % len(OBJECTS)]
        root = args.out / f"clip{i}"
        if not (root / "train.txt").exists():
            make_synthetic_ho3d(root, sequences=1, frames=10, object_ids=(obj,), seed=i, cache_dir=args.mesh_cache)
        ds = HO3DDataset(root, clip_length=10, stride=1, cache_dir=args.mesh_cache)
        clip = ds[0]
        model = ds.model_for_clip(clip)
        estimator = SimulatedHandEstimator(seed=i)
        inits = estimator(clip)
        layer = estimator.layer("right", clip.gt_hands[0].model_name, torch.float32, torch.device("cpu"))
        start = time.perf_counter()
        init = initialise_object_pose(model.vertices, model.faces, clip.K, clip.object_boxes, clip.object_masks,
                                      ObjectInitConfig(), generator=torch.Generator().manual_seed(i))
        init_s = time.perf_counter() - start
        sdf_fn = exact_object_sdf(model.vertices, model.faces)
        for name, disabled in VARIANTS.items():
            config = FitConfig(disabled=disabled or ())
            evidence = object_evidence(model.vertices, model.faces, model.sdf, clip.K, clip.object_boxes,
                                       clip.object_masks, config, None, model.model_id)
            hands, objects, report = fit_hands_and_objects(
                [HandEvidence(layer, inits[0])], [evidence],
                [distinct_candidates(init, model.vertices, config.object_candidates, config.candidate_min_angle)], clip.K,
                clip.image_size, config, joint=disabled is not None)
            fit = build_fit_result(clip, hands, objects, report, [HandEvidence(layer, inits[0])], evidence, name,
                                   config)
            metrics = evaluate_fit(fit, clip, object_sdf=lambda points, obj: sdf_fn(points, obj))
            rows[name].append(metrics)
            if name == "joint fitting":
                timing.append({"clip": clip.clip_id, "object": obj, "object_init_s": init_s, **report["seconds"],
                               "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
            print(i, obj, name, {k: metrics.get(k) for k in KEYS}, report["seconds"], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    table = {name: aggregate(r) for name, r in rows.items()}
    (args.out / "results.json").write_text(json.dumps({"table": table, "timing": timing}, indent=1, default=float))
    print("\n| method | hand vertex cm | mepe aligned cm | object vertex cm | add-s cm | pen. mm | contact % |")
    print("|---|---|---|---|---|---|---|")
    for name, values in table.items():
        ours = " | ".join("-" if values.get(k) is None else f"{values[k]:.2f}" for k in KEYS)
        paper = " / ".join(f"{v}" for v in PAPER[name])
        print(f"| {name} | {ours} |  (paper: {paper})")
    print("\n| clip | object | init s | stage1 s | stage2 s | it/s stage1 | it/s stage2 | max RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for t in timing:
        print(f"| {t['clip']} | {t['object']} | {t['object_init_s']:.1f} | {t['stage1']:.1f} | {t['stage2']:.1f} | "
              f"{200 / t['stage1']:.1f} | {200 / t['stage2']:.1f} | {t['max_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
