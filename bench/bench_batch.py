"""Batched clips (issue 14, item 3): clips per minute of the joint fit for B = 1, 4, 16.

    python bench/bench_batch.py [--device cpu|cuda] [--clips 16] [--frames 10] [--steps1 200 --steps2 200]
                                [--hypotheses 50] [--batches 1,4,16] [--out bench/_work/batch] [--json FILE]

Data: `--clips` synthetic HO-3D sequences of one object (025_mug, so every clip can share a
batch), `--frames` frames each at 640x480, one clip per sequence (stride 1), ground-truth
boxes and masks, simulated hand init (hodata.evidence.hand_init, seed per clip). Each clip's
object init (paper Sec. 3.2, `--hypotheses` hypotheses) is computed once and timed on its
own: it is per clip whatever B (hodata.fitting.batched). Then for every B the joint fit
(stage 1 + stage 2, hodata's default FitConfig with `--steps1/--steps2` and one hand start) runs over all clips
in batches of B (`fit_prepared_clips`), timed with the device synchronised. float32.

Output: one line of settings, the object init time per clip, then one row per B:

    B  fit_s  fit_cpu_s  fit_s_per_clip  clips_per_min_fit  clips_per_min_with_init  peak_mem_MiB  max_vertex_diff_m

fit_s: wall clock of the fit of all clips; fit_cpu_s: the CPU time of this process over it
(on a shared machine the honest CPU measure: other processes' load does not enter it; on
CUDA it is the host's share only). clips_per_min_fit = 60 * clips / t and with_init adds the
clips' object init time (the throughput of `hodata fit --batch-clips B` without data loading
and shard writing), with t = fit_cpu_s on the CPU and fit_s on CUDA;
peak_mem_MiB: CUDA peak allocated memory (0 on the CPU); max_vertex_diff_m: the largest
difference of any hand or object vertex from the B = 1 fit (float32 rounding; 0 for B = 1).

What to expect: on one CPU thread the work grows with B * T rows, so clips per minute stay
about level (within ~20 %; batching only saves per-step Python and kernel-launch overhead,
and large batches can lose cache locality). On a GPU a 10-frame clip is far too small to fill
the device, so per-step time stays nearly flat in B until the device is busy: expect clips per
minute of the fit to grow several-fold from B = 1 to B = 16, and the per-clip object init
(not batched) to become the larger share of `with_init`. max_vertex_diff_m should stay below
~1e-4 m (float32; tests/test_batched.py asserts 0.5 mm, and 1e-9 m in float64).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--steps1", type=int, default=200)
    parser.add_argument("--steps2", type=int, default=200)
    parser.add_argument("--hypotheses", type=int, default=50)
    parser.add_argument("--batches", default="1,4,16")
    parser.add_argument("--out", type=Path, default=Path("bench/_work/batch"))
    parser.add_argument("--mesh-cache", type=Path, default=Path("mesh_cache"))
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from hodata.datasets.ho3d import HO3DDataset
    from hodata.datasets.synthetic import make_synthetic_ho3d
    from hodata.device import resolve_device
    from hodata.evidence.gt import gt_clip_evidence
    from hodata.evidence.hand_init import SimulatedHandEstimator
    from hodata.fitting import FitConfig, ObjectInitConfig
    from hodata.fitting.batched import fit_prepared_clips
    from hodata.fitting.pipeline import prepare_clip

    device = resolve_device(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    root = args.out / f"clips{args.clips}_frames{args.frames}"
    if not (root / "train.txt").exists():
        make_synthetic_ho3d(root, sequences=args.clips, frames=args.frames, object_ids=("025_mug",), seed=0,
                            cache_dir=args.mesh_cache)
    ds = HO3DDataset(root, clip_length=args.frames, stride=1, cache_dir=args.mesh_cache)
    # one hand start: batched clips refuse several (they are chosen per clip)
    config = FitConfig(steps_stage1=args.steps1, steps_stage2=args.steps2, hand_starts=("init",))
    init_config = ObjectInitConfig(n_hypotheses=args.hypotheses)
    print(f"device {device}, {len(ds)} clips of {args.frames} frames (640x480, one object), steps "
          f"{args.steps1}+{args.steps2}, object init {args.hypotheses} hypotheses, float32, "
          f"{torch.get_num_threads()} thread(s)", flush=True)

    prepared, init_s = [], 0.0
    for i in range(len(ds)):
        clip = ds[i]
        estimator = SimulatedHandEstimator(seed=i)
        inits = estimator(clip)
        layer = estimator.layer("right", clip.gt_hands[0].model_name, torch.float32, torch.device("cpu"))
        evidence = gt_clip_evidence(clip, lambda _, inits=inits: inits)
        _sync(device)
        start = time.perf_counter() if device.type == "cuda" else time.process_time()
        prepared.append(prepare_clip(clip, evidence, ds.model_for_clip(clip), {"right": layer}, config, init_config,
                                     device, seed=0))
        _sync(device)
        init_s += (time.perf_counter() if device.type == "cuda" else time.process_time()) - start
    print(f"object init: {init_s / len(prepared):.2f} s per clip ({'wall' if device.type == 'cuda' else 'CPU'}; "
          "per clip for every B)", flush=True)

    print(f"{'B':>3} {'fit_s':>8} {'fit_cpu_s':>10} {'fit_s_per_clip':>15} {'clips_per_min_fit':>18} {'clips_per_min_with_init':>24} "
          f"{'peak_mem_MiB':>13} {'max_vertex_diff_m':>18}", flush=True)
    rows, reference = [], None
    for b in batches:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        results = fit_prepared_clips(prepared, config, ("joint",), batch_clips=b)
        _sync(device)
        fit_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        t = fit_s if device.type == "cuda" else cpu_s
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise SystemExit(f"B={b}: {len(failed)} clip(s) failed: {failed[0]}")
        fits = [r["joint"] for r in results]
        if reference is None:
            reference = fits
        diff = max(float((x.vertices - y.vertices).abs().max())
                   for a, r in zip(fits, reference) for x, y in zip(a.hands + a.objects, r.hands + r.objects))
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
        row = dict(B=b, fit_s=fit_s, fit_cpu_s=cpu_s, fit_s_per_clip=t / len(fits),
                   clips_per_min_fit=60 * len(fits) / t, clips_per_min_with_init=60 * len(fits) / (t + init_s),
                   peak_mem_MiB=peak, max_vertex_diff_m=diff)
        rows.append(row)
        print(f"{b:>3} {fit_s:>8.1f} {cpu_s:>10.1f} {row['fit_s_per_clip']:>15.2f} {row['clips_per_min_fit']:>18.2f} "
              f"{row['clips_per_min_with_init']:>24.2f} {peak:>13.0f} {diff:>18.1e}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(dict(device=str(device), clips=len(prepared), frames=args.frames,
                                             steps=[args.steps1, args.steps2], hypotheses=args.hypotheses,
                                             init_s_per_clip=init_s / len(prepared), rows=rows), indent=1))


if __name__ == "__main__":
    main()
