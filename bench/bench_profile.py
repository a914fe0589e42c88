"""Profile of one clip (issue 14): stage by stage and op by op, on one CPU thread.

    python bench/bench_profile.py [--object 025_mug] [--seed 0] [--ops] [--out bench/_work/profile]

The clip is the demo's (a synthetic HO-3D sequence, 10 frames 640x480, ground-truth masks,
simulated hand init), fitted with the full schedule: object init with 50 hypotheses, then
independent composition and the joint fit (2 x 200 steps with collision and local contact).
Prints wall time per stage (clip loading, evidence, object model, object init, independent,
joint stage 1 / stage 2, result building, shard writing) and peak RSS; with --ops, the top
aten ops of each fitting stage from torch.profiler (self CPU time). Accuracy of the fit is
printed too, so a faster schedule can be checked against the slower one in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from contextlib import contextmanager
from pathlib import Path

import torch


@contextmanager
def timed(table: dict, name: str):
    start = time.perf_counter()
    yield
    table[name] = table.get(name, 0.0) + time.perf_counter() - start


def op_table(prof, rows: int = 12) -> list[tuple[str, float, int]]:
    """(op name, self CPU seconds, calls) of the `rows` costliest ops of a profile."""
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in events[:rows]]


def _parse_overrides(items: list[str]):
    """FIELD=VALUE pairs -> (field, value) with booleans, numbers and strings told apart."""
    for item in items:
        field, _, raw = item.partition("=")
        low = raw.lower()
        if low in ("true", "false"):
            yield field, low == "true"
        else:
            try:
                yield field, float(raw) if "." in raw else int(raw)
            except ValueError:
                yield field, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--object", default="025_mug")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--steps", type=int, default=200, help="Adam steps of each joint stage")
    parser.add_argument("--ops", action="store_true", help="op-level profile of the fitting stages (slower)")
    parser.add_argument("--out", type=Path, default=Path("bench/_work/profile"))
    parser.add_argument("--mesh-cache", type=Path, default=Path("mesh_cache"))
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--config", action="append", default=[], metavar="FIELD=VALUE",
                        help="FitConfig override, e.g. stage2_moves_objects=false (repeatable)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from hodata.app.fit import clip_images, evidence_masks
    from hodata.app.providers import EvidenceProvider
    from hodata.datasets.ho3d import HO3DDataset
    from hodata.datasets.synthetic import make_synthetic_ho3d
    from hodata.fitting import FitConfig, ObjectInitConfig
    from hodata.fitting import joint as J
    from hodata.fitting import object_init as OI
    from hodata.fitting import pipeline as P
    from hodata.shards import ShardWriter

    data = args.out / f"data_{args.object}_{args.seed}"
    if not (data / "train").exists():
        make_synthetic_ho3d(data, sequences=1, frames=args.frames, object_ids=(args.object,), seed=args.seed,
                            cache_dir=args.mesh_cache)
    times: dict[str, float] = {}
    profiles: dict[str, list] = {}
    start_all = time.perf_counter()
    with timed(times, "load clip (adapter)"):
        dataset = HO3DDataset(data, clip_length=args.frames, stride=1, cache_dir=args.mesh_cache)
        clip = dataset[0]
    provider = EvidenceProvider("gt", "simulated", seed=args.seed)
    with timed(times, "evidence (gt masks, simulated init)"):
        evidence = provider(clip)
    with timed(times, "hand layers"):
        layers = provider.layers(evidence.sides)
    with timed(times, "object model (mesh cache)"):
        model = dataset.model_for_clip(clip)

    # stage timings from inside fit_clip: wrap the stage functions so the real path is timed
    original_init, original_stage, original_build = OI.initialise_object_pose, J.run_stage, P.build_fit_result
    current = {"method": "independent", "stage": 0}

    def run(name, fn, *a, **k):
        if args.ops:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof, timed(times, name):
                out = fn(*a, **k)
            profiles[name] = op_table(prof)
            return out
        with timed(times, name):
            return fn(*a, **k)

    def init_wrapper(*a, **k):
        return run("object init", original_init, *a, **k)

    def stage_wrapper(hands, *a, **k):
        if not hands:
            return run("joint: candidate refinement", original_stage, hands, *a, **k)
        if current["method"] == "independent":
            return run("independent fit", original_stage, hands, *a, **k)
        current["stage"] += 1
        return run(f"joint: stage {current['stage']}", original_stage, hands, *a, **k)

    def build_wrapper(*a, **k):
        out = run(f"build result ({a[6]})", original_build, *a, **k)
        current["method"] = "joint"
        return out

    P.initialise_object_pose, J.run_stage = init_wrapper, stage_wrapper
    P.build_fit_result = build_wrapper
    config = FitConfig(steps_stage1=args.steps, steps_stage2=args.steps, roi_size=128,
                       **dict(_parse_overrides(args.config)))
    init_config = ObjectInitConfig(n_hypotheses=50)
    try:
        with timed(times, "fit_clip total"):
            fits = P.fit_clip(clip, evidence, model, layers, config, init_config, methods=("independent", "joint"),
                              device="cpu", seed=args.seed)
    finally:
        P.initialise_object_pose, P.build_fit_result = original_init, original_build
        J.run_stage = original_stage
    with timed(times, "frames and masks for the shards"):
        images, masks = clip_images(clip), evidence_masks(evidence)
    shard_dir = args.out / "shards"
    with timed(times, "shard writing (2 methods)"):
        for method, fit in fits.items():
            with ShardWriter(shard_dir / method, config={}, overwrite=True) as writer:
                writer.write_clip(fit, images=images, masks=masks)
    times["whole clip"] = time.perf_counter() - start_all
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    from hodata.app.evaluate import exact_object_sdf
    from hodata.metrics.summary import evaluate_fit

    sdf_fn = exact_object_sdf(model.vertices, model.faces)
    accuracy = {}
    for method, fit in fits.items():
        m = evaluate_fit(fit, clip, object_sdf=lambda points, obj: sdf_fn(points, obj))
        accuracy[method] = {k: round(float(m[k]), 3) for k in ("hand_vertex_cm", "object_adds_cm",
                                                               "penetration_mm", "contact_pct") if k in m}

    print(f"\nclip {clip.clip_id}: {len(clip)} frames {clip.image_size[1]}x{clip.image_size[0]}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("| stage | seconds |\n|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.2f} |")
    print(f"peak RSS {peak_mib:.0f} MiB")
    for method, values in accuracy.items():
        print(method, values)
    for name, rows in profiles.items():
        print(f"\n{name}: top ops by self CPU time")
        print("| op | self s | calls |\n|---|---|---|")
        for op, seconds, calls in rows:
            print(f"| {op} | {seconds:.2f} | {calls} |")
    if args.json:
        args.json.write_text(json.dumps({"times_s": times, "peak_rss_mib": peak_mib, "accuracy": accuracy,
                                         "ops": profiles}, indent=1))


if __name__ == "__main__":
    main()
