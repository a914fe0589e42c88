"""Label-quality validation: does the quality score computed in fitting rank labels by their 3D error?

    python bench/bench_quality.py [--levels 1,3,5] [--all-levels] [--steps 50] [--workers 2]
        [--stop-after 70] [--follow] [--out bench/quality.json] [--resume] [--results bench/RESULTS.md]
    python bench/bench_quality.py --analyse bench/quality.json [--results bench/RESULTS.md]

Fits: the robustness benchmark's scenes (bench/bench_robust.py: its scene building, its
`fit_scene` worker and its metrics; scenes under --work, built once) at the scene's own
hand-init noise times one of `--levels` chosen by the scene's number (`--all-levels`: then the
others too; x3, x5: harder hand inits than the benchmark's),
both methods (independent and joint), so labels range from good to badly wrong. Each fitted
frame is one label: its quality signals (FitResult.quality["signals"], measured in fitting
without ground truth) against its true hand vertex error and object ADD-S.

Analysis: scenes are split in two halves by their number (even RB numbers: the fit half,
odd: the report half; every level and method of a scene stays in its half). On the fit half
the combination weights of `hodata.fitting.quality.combine` are fitted (logistic regression
of "good label" = hand vertex error < 2 cm and ADD-S < 1 cm on the signals' badness, weights
>= the design floors `hodata.fitting.quality.MIN_WEIGHTS`, L2 1e-2 on standardised weights) and the default threshold chosen (the score maximising F1 of "good"). On the
report half only: Spearman correlation of the score with hand vertex error and with ADD-S,
the AUROC of "good label", precision and recall of the labels the threshold keeps; per
frame and per clip (clip score against the clip's mean errors), per noise level, each signal
alone, the weights in the code (DEFAULT_WEIGHTS) and the writer's earlier formula (mask IoU
x exp(-v2d px / 20)) for comparison.

--stop-after MIN stops submitting fits after MIN minutes (an honest subset on a busy machine:
the JSON records what was fitted); tasks are ordered so that any prefix covers every factor
and level. --resume keeps the fits already in --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_robust as robust  # noqa: E402  (the benchmark's scenes, fitting worker and metrics)

GOOD_HAND_CM = 2.0
GOOD_ADDS_CM = 1.0
DEFAULT_OUT = HERE / "quality.json"
SECTION = "## Label quality (issue 15)"


# ------------------------------------------------------------------------------ fitting


def task_order(names: list[str], records: dict, levels: list[float], all_levels: bool = False) -> list[tuple[str, float]]:
    """(scene, level) tasks in fitting order. First every scene at one level, chosen by its
    number (RB<n>: levels[n % len(levels)], so both halves get every level), scenes of every
    factor interleaved (bench_robust.interleaved: a prefix covers every factor); then, with
    all_levels, the scenes' other levels in the same order."""
    scenes = robust.interleaved(names, records)
    primary = {name: levels[scene_number(name) % len(levels)] for name in scenes}
    tasks = [(name, primary[name]) for name in scenes]
    if all_levels:
        tasks += [(name, level) for name in scenes for level in levels if level != primary[name]]
    return tasks


def scene_number(name: str) -> int:
    return int(re.match(r"RB(\d+)", name).group(1))


def ready_scenes(root: Path, specs, image_size: tuple[int, int]) -> dict:
    """Records of the scenes already written for these specs (bench_robust.build_scene's check)."""
    from hodata.datasets.synthetic_scenes import read_scene_records, scene_version

    on_disk = read_scene_records(root)
    ready = {}
    for spec in specs:
        record = on_disk.get(spec.name)
        if (record and record.get("spec") == spec.to_dict() and record.get("image_size") == list(image_size)
                and record.get("version", 1) == scene_version(spec)):
            ready[spec.name] = record
    return ready


def run_fits(args) -> dict:
    overrides = [f"steps_stage1={args.steps}", f"steps_stage2={args.steps}"] if args.steps else []
    fit_config, init_config = robust.parse_overrides(overrides, [])
    height, width = (int(v) for v in args.image_size.lower().split("x"))
    work = args.work.resolve()
    root, cache = work / f"scenes_{height}x{width}", work / "mesh_cache"
    root.mkdir(parents=True, exist_ok=True)
    specs = robust.select_specs(args.clips, None)
    levels = [float(v) for v in args.levels.split(",") if v]
    methods = ("independent", "joint")
    conditions = {
        "levels": levels, "steps": args.steps, "methods": list(methods), "seed": args.seed,
        "fit_config": dataclasses.asdict(fit_config), "init_config": dataclasses.asdict(init_config),
        "image_size": [height, width], "commit": robust._git_commit(), "workers": args.workers,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "good_label": f"hand vertex < {GOOD_HAND_CM} cm and ADD-S < {GOOD_ADDS_CM} cm",
    }
    results = {"conditions": conditions, "fits": {}}
    if args.resume and args.out.is_file():
        previous = json.loads(args.out.read_text())
        same = ("steps", "methods", "seed", "fit_config", "init_config", "image_size")
        if any(json.dumps(previous["conditions"].get(k), default=float) != json.dumps(conditions[k], default=float)
               for k in same):
            raise SystemExit(f"--resume: {args.out} was run with other conditions; use another --out")
        results["fits"] = {k: v for k, v in previous["fits"].items() if v["result"]["status"] == "fitted"}
        print(f"resuming: {len(results['fits'])} fit(s) kept from {args.out}", flush=True)
    fit_dict, init_dict = dataclasses.asdict(fit_config), dataclasses.asdict(init_config)

    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(args.workers, 1), initializer=robust._init_worker,
                             initargs=(args.nice,)) as pool:
        if args.follow:  # another process builds the scenes: fit them as they appear
            records = ready_scenes(root, specs, (height, width))
        else:  # scenes built (or found built) by the benchmark's own worker
            records = {}
            for future, spec in [(pool.submit(robust.build_scene, str(root), s.to_dict(), (height, width), str(cache)),
                                  s) for s in specs]:
                try:
                    records[spec.name] = future.result()
                except Exception as exc:  # one bad scene never stops the run
                    print(f"scene {spec.name}: not built ({type(exc).__name__}: {exc})", flush=True)
        print(f"{len(records)} scene(s) ready in {time.perf_counter() - start:.0f} s", flush=True)
        running: dict = {}

        def pending():
            busy = {fit_key(n, lv) for n, lv, _ in running.values()}
            return [t for t in task_order(list(records), records, levels, args.all_levels)
                    if fit_key(*t) not in results["fits"] and fit_key(*t) not in busy]

        todo = pending()
        while todo or running or (args.follow and len(records) < len(specs)):
            late = args.stop_after and (time.perf_counter() - start) / 60.0 > args.stop_after
            if late and not running:
                break
            while todo and len(running) < max(args.workers, 1) and not late:
                name, level = todo.pop(0)
                noise = records[name]["spec"]["hand_noise"] * level
                running[pool.submit(robust.fit_scene, str(root), name, noise, str(cache), fit_dict, init_dict,
                                    methods, args.seed)] = (name, level, noise)
            if not running:
                time.sleep(20)  # following a build: wait for the next scene
            else:
                done, _ = wait(running, timeout=60, return_when=FIRST_COMPLETED)
                for future in done:
                    name, level, noise = running.pop(future)
                    try:
                        result = future.result()
                    except Exception as exc:  # a crash in one clip is recorded, the run goes on
                        result = {"status": "failed", "message": f"{type(exc).__name__}: {exc}"}
                    results["fits"][fit_key(name, level)] = {"scene": name, "level": level, "hand_noise": noise,
                                                             "spec": records[name]["spec"], "result": result}
                    errors = {m: round(v.get("hand_vertex_cm", float("nan")), 2)
                              for m, v in result.get("methods", {}).items()}
                    print(f"{name} x{level:g}: {result['status']} hand vtx cm {errors} "
                          f"({result.get('seconds', 0):.0f} s) {result.get('message', '')}", flush=True)
                    robust._write_json(args.out, results)
            if args.follow:
                records.update(ready_scenes(root, specs, (height, width)))
            todo = pending()
        if todo:
            print(f"--stop-after {args.stop_after} min: {len(todo)} fit(s) not run", flush=True)
    conditions["wall_seconds"] = time.perf_counter() - start
    conditions["not_run"] = len(todo)
    robust._write_json(args.out, results)
    return results


def fit_key(name: str, level: float) -> str:
    return f"{name}@x{level:g}"


# ------------------------------------------------------------------------------ statistics


def rankdata(values):
    from scipy.stats import rankdata as scipy_rankdata

    return scipy_rankdata(values)


def spearman(x, y) -> float | None:
    from scipy.stats import spearmanr

    if len(x) < 3:
        return None
    rho = spearmanr(x, y).statistic
    return None if rho is None or math.isnan(rho) else float(rho)


def auroc(scores, positive) -> float | None:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U)."""
    pos = sum(1 for p in positive if p)
    neg = len(positive) - pos
    if pos == 0 or neg == 0:
        return None
    ranks = rankdata(scores)
    rank_sum = sum(r for r, p in zip(ranks, positive) if p)
    return float((rank_sum - pos * (pos + 1) / 2) / (pos * neg))


def precision_recall(scores, positive, threshold: float) -> tuple[float | None, float | None, float]:
    """(precision, recall, kept fraction) of the labels with score >= threshold."""
    kept = [p for s, p in zip(scores, positive) if s >= threshold]
    pos = sum(positive)
    precision = sum(kept) / len(kept) if kept else None
    recall = sum(kept) / pos if pos else None
    return precision, recall, len(kept) / max(len(scores), 1)


def best_f1_threshold(scores, positive) -> float:
    best, best_f1 = 0.5, -1.0
    for threshold in sorted(set(scores)):
        precision, recall, _ = precision_recall(scores, positive, threshold)
        if precision and recall:
            f1 = 2 * precision * recall / (precision + recall)
            if f1 > best_f1:
                best, best_f1 = threshold, f1
    return best


# ------------------------------------------------------------------------------ labels


def label_rows(results: dict) -> list[dict]:
    """One row per fitted frame: scene, half, level, method, signals' badness, errors, good."""
    import torch

    from hodata.fitting import quality as Q

    rows = []
    for key, entry in results["fits"].items():
        result = entry["result"]
        if result["status"] != "fitted":
            continue
        number = scene_number(entry["scene"])
        for method in ("independent", "joint"):
            m = result["methods"].get(method)
            if not m or not m.get("quality"):
                continue
            record = m["quality"]
            hand, adds = m["hand_vertex_cm_frames"], m["object_adds_cm_frames"]
            frames = len(hand)
            badness = Q.frame_badness(record["signals"], frames)
            penalised = len([f for f in record.get("flags_counted", []) if f not in Q.SIGNAL_FLAGS])
            iou = record["signals"].get("mask_iou") or [None] * frames
            v2d = m.get("v2d_px")
            for t in range(frames):
                rows.append({
                    "clip": f"{key}/{method}", "scene": entry["scene"], "factor": entry["spec"]["factor"],
                    "half": "fit" if number % 2 == 0 else "report", "level": entry["level"], "method": method,
                    "frame": t, "badness": {n: float(b[t]) for n, b in badness.items()}, "penalised": penalised,
                    "hand_cm": float(hand[t]), "adds_cm": float(adds[t]),
                    "good": bool(hand[t] < GOOD_HAND_CM and adds[t] < GOOD_ADDS_CM),
                    # the writer's earlier formula: clip-mean v2d px (per frame it was not stored), frame IoU
                    "legacy": (0.0 if iou[t] is None else max(min(iou[t], 1.0), 0.0))
                              * math.exp(-max(v2d or 0.0, 0.0) / 20.0) * 0.5 ** penalised,
                })
    return rows


def score_rows(rows: list[dict], weights: dict, intercept: float) -> list[float]:
    import torch

    from hodata.fitting import quality as Q

    return [float(Q.combine({n: torch.tensor([b]) for n, b in r["badness"].items()}, weights, r["penalised"],
                            intercept)[0])
            for r in rows]


def fit_weights(rows: list[dict], l2: float = 1e-2) -> dict:
    """Weights w >= MIN_WEIGHTS (>= 0) of p(good) = sigmoid(c - w . b - n_flags log 2), maximum
    likelihood with an L2 penalty on the standardised weights; a signal constant on these rows
    keeps its floor."""
    import numpy as np
    from scipy.optimize import minimize
    from scipy.special import expit

    from hodata.fitting import quality as Q

    names = [n for n in Q.SIGNALS if any(n in r["badness"] for r in rows)]
    X = np.array([[r["badness"].get(n, 0.0) for n in names] for r in rows])
    flags = np.array([r["penalised"] * math.log(2) for r in rows])
    y = np.array([1.0 if r["good"] else 0.0 for r in rows])
    spread = X.std(0)
    varies = spread > 1e-9
    Z = X[:, varies] / spread[varies]

    def loss(theta):
        w, c = theta[:-1], theta[-1]
        z = c - Z @ w - flags
        nll = np.where(y > 0, np.logaddexp(0, -z), np.logaddexp(0, z)).mean()
        grad_z = (expit(z) - y) / len(y)
        return nll + l2 * (w**2).sum(), np.append(-Z.T @ grad_z + 2 * l2 * w, grad_z.sum())

    floors = np.array([Q.MIN_WEIGHTS.get(n, 0.0) for n in names])[varies] * spread[varies]
    theta0 = np.append(floors + 0.1, 0.0)
    bounds = [(float(f), None) for f in floors] + [(None, None)]
    fitted = minimize(loss, theta0, jac=True, bounds=bounds, method="L-BFGS-B")
    weights = np.array([Q.MIN_WEIGHTS.get(n, 0.0) for n in names])  # constant signals keep their floor
    weights[varies] = fitted.x[:-1] / spread[varies]  # back to the badness units of hodata.fitting.quality
    return {n: round(float(v), 4) for n, v in zip(names, weights)}, round(float(fitted.x[-1]), 4)


def evaluate(rows: list[dict], scores: list[float], threshold: float) -> dict:
    good = [r["good"] for r in rows]
    precision, recall, kept = precision_recall(scores, good, threshold)
    out = {
        "labels": len(rows), "good": sum(good),
        "spearman_hand": spearman(scores, [r["hand_cm"] for r in rows]),
        "spearman_adds": spearman(scores, [r["adds_cm"] for r in rows]),
        "auroc": auroc(scores, good), "threshold": threshold,
        "precision": precision, "recall": recall, "kept": kept,
        "base_rate": sum(good) / max(len(good), 1),
    }
    return out


def auroc_interval(rows: list[dict], scores: list[float], resamples: int = 500, seed: int = 0):
    """5-95 % bootstrap interval of the AUROC, resampling whole clips (a clip's frames are not
    independent labels)."""
    import random

    clips: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        clips.setdefault(r["clip"], []).append(i)
    names = list(clips)
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        idx = [i for name in rng.choices(names, k=len(names)) for i in clips[name]]
        value = auroc([scores[i] for i in idx], [rows[i]["good"] for i in idx])
        if value is not None:
            values.append(value)
    if len(values) < resamples // 2:
        return None
    values.sort()
    return values[int(0.05 * len(values))], values[int(0.95 * len(values)) - 1]


def clip_level(rows: list[dict], scores: list[float]) -> tuple[list[dict], list[float]]:
    """Per clip: the mean frame score (the clip score) against the clip's mean errors."""
    clips: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        clips.setdefault(r["clip"], []).append(i)
    out_rows, out_scores = [], []
    for name, idx in clips.items():
        hand = sum(rows[i]["hand_cm"] for i in idx) / len(idx)
        adds = sum(rows[i]["adds_cm"] for i in idx) / len(idx)
        out_rows.append({**rows[idx[0]], "hand_cm": hand, "adds_cm": adds,
                         "good": hand < GOOD_HAND_CM and adds < GOOD_ADDS_CM})
        out_scores.append(sum(scores[i] for i in idx) / len(idx))
    return out_rows, out_scores


def analyse(results: dict) -> dict:
    from hodata.fitting import quality as Q

    rows = label_rows(results)
    fit_rows = [r for r in rows if r["half"] == "fit"]
    report_rows = [r for r in rows if r["half"] == "report"]
    if not fit_rows or not report_rows:
        raise SystemExit("both halves need fitted scenes (even and odd RB numbers)")
    weights, intercept = fit_weights(fit_rows)
    fit_scores = score_rows(fit_rows, weights, intercept)
    threshold = best_f1_threshold(fit_scores, [r["good"] for r in fit_rows])
    report_scores = score_rows(report_rows, weights, intercept)
    out = {
        "labels": {"fit": len(fit_rows), "report": len(report_rows),
                   "scenes_fit": len({r["scene"] for r in fit_rows}),
                   "scenes_report": len({r["scene"] for r in report_rows})},
        "fitted_weights": weights, "fitted_intercept": intercept, "threshold": threshold,
        "fit_half": evaluate(fit_rows, fit_scores, threshold),
        "report_frames": evaluate(report_rows, report_scores, threshold),
    }
    out["report_frames"]["auroc_5_95"] = auroc_interval(report_rows, report_scores)
    clip_rows, clip_scores = clip_level(report_rows, report_scores)
    fit_clip_rows, fit_clip_scores = clip_level(fit_rows, fit_scores)
    clip_threshold = best_f1_threshold(fit_clip_scores, [r["good"] for r in fit_clip_rows])
    out["report_clips"] = evaluate(clip_rows, clip_scores, clip_threshold)
    out["per_level"] = {}
    for level in sorted({r["level"] for r in report_rows}):
        idx = [i for i, r in enumerate(report_rows) if r["level"] == level]
        out["per_level"][f"x{level:g}"] = evaluate([report_rows[i] for i in idx], [report_scores[i] for i in idx],
                                                   threshold)
    out["per_method"] = {}
    for method in ("independent", "joint"):
        idx = [i for i, r in enumerate(report_rows) if r["method"] == method]
        out["per_method"][method] = evaluate([report_rows[i] for i in idx], [report_scores[i] for i in idx], threshold)
    good = [r["good"] for r in report_rows]
    out["single_signal_auroc"] = {}
    for name in Q.SIGNALS:
        if any(name in r["badness"] for r in report_rows):
            values = [-r["badness"].get(name, 0.0) for r in report_rows]
            out["single_signal_auroc"][name] = auroc(values, good)
    code_scores = score_rows(report_rows, Q.DEFAULT_WEIGHTS, Q.DEFAULT_INTERCEPT)
    out["code_weights"] = evaluate(report_rows, code_scores, Q.DEFAULT_THRESHOLD)
    legacy = [r["legacy"] for r in report_rows]
    out["legacy_formula"] = evaluate(report_rows, legacy,
                                     best_f1_threshold([r["legacy"] for r in fit_rows], [r["good"] for r in fit_rows]))
    return out


# ------------------------------------------------------------------------------ report


def _f(value, fmt="{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def markdown(results: dict, analysis: dict) -> str:
    c = results["conditions"]
    fits = results["fits"]
    fitted = [f for f in fits.values() if f["result"]["status"] == "fitted"]
    levels = sorted({f["level"] for f in fitted})
    lines = [
        SECTION, "",
        f"`python bench/bench_quality.py --levels {','.join(f'{v:g}' for v in c['levels'])} --steps {c['steps']} "
        f"--workers {c['workers']}` ({c['date']}, commit {c['commit']}; 2-core x86_64 shared with other "
        f"engineers' jobs, torch 1 thread per worker). Fitted: {len(fitted)} scene x level fits "
        f"of {len({f['scene'] for f in fitted})} robustness-benchmark scenes at hand-init noise "
        f"{', '.join(f'x{v:g}' for v in levels)} of each scene's own level, both methods, {c['steps']} steps per "
        f"stage (the benchmark's default is 200; fewer to fit the session: labels are worse than at 200 steps, "
        f"which widens the error range the score must rank)" + (f"; {c.get('not_run')} planned fits not run "
                                                                 f"(--stop-after)" if c.get("not_run") else "") + ".",
        "",
        f"A label is one fitted frame; \"good\" = {c['good_label']}. Weights and threshold fitted on the fit half "
        f"(even scene numbers: {analysis['labels']['scenes_fit']} scenes, {analysis['labels']['fit']} labels); "
        f"every number below the first row is on the report half (odd numbers: "
        f"{analysis['labels']['scenes_report']} scenes, {analysis['labels']['report']} labels), never used for "
        "fitting. Score: `hodata.fitting.quality` (q = sigmoid(c - sum w_i b_i) x 0.5 per raised flag); Spearman is with "
        "the error (negative = a higher score goes with a lower error).",
        "",
        "| set | labels | good % | Spearman hand vtx | Spearman ADD-S | AUROC good | threshold | precision kept | "
        "recall | kept % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row(label, e):
        return (f"| {label} | {e['labels']} | {100 * e['base_rate']:.0f} | {_f(e['spearman_hand'])} | "
                f"{_f(e['spearman_adds'])} | {_f(e['auroc'])} | {_f(e['threshold'], '{:.3f}')} | "
                f"{_f(e['precision'])} | {_f(e['recall'])} | {100 * e['kept']:.0f} |")

    lines.append(row("fit half, frames (fitted on it)", analysis["fit_half"]))
    lines.append(row("**report half, frames**", analysis["report_frames"]))
    lines.append(row("report half, clips (clip score; own threshold)", analysis["report_clips"]))
    for level, e in analysis["per_level"].items():
        lines.append(row(f"report, hand noise {level}", e))
    for method, e in analysis["per_method"].items():
        lines.append(row(f"report, {method}", e))
    lines.append(row("report, the code's DEFAULT_WEIGHTS / INTERCEPT / THRESHOLD", analysis["code_weights"]))
    lines.append(row("report, the writer's earlier formula (IoU x exp(-v2d/20))", analysis["legacy_formula"]))
    interval = analysis["report_frames"].get("auroc_5_95")
    if interval:
        lines += ["", f"Report-half frame AUROC, 5-95 % bootstrap interval over clips: {interval[0]:.2f} - "
                      f"{interval[1]:.2f}."]
    lines += ["", "Fitted weights (badness units of `hodata.fitting.quality`; a weight at its design floor "
              "`MIN_WEIGHTS` (0 for most) = the fit half gave no reason to raise it) and each signal's AUROC "
              "alone on the report half (0.5: no information; the detector score is 1 throughout: ground-truth "
              "boxes; candidate margin and object scale: one candidate and exact meshes, not measured):", "",
              "| signal | weight | AUROC alone |", "|---|---|---|"]
    for name, w in analysis["fitted_weights"].items():
        lines.append(f"| {name} | {w:.3g} | {_f(analysis['single_signal_auroc'].get(name))} |")
    lines += ["", f"Intercept c = {analysis['fitted_intercept']:.3g}; default threshold (best F1 of \"good\" on the "
              f"fit half) {analysis['threshold']:.3f}."]
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replace the section (from its heading to the next `## ` heading) or append it."""
    old = path.read_text() if path.is_file() else ""
    start = old.find(SECTION)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        following = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + ("" if following < 0 else old[following:])
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,3,5", help="hand-init noise factors on each scene's own level")
    parser.add_argument("--steps", type=int, default=50, help="steps of each fitting stage (default 50)")
    parser.add_argument("--clips", help="scene names or prefixes, or a count N (bench_robust --clips)")
    parser.add_argument("--workers", type=int, default=2, help="separate processes (each 1 torch thread)")
    parser.add_argument("--nice", type=int, default=5, help="niceness added in the worker processes")
    parser.add_argument("--stop-after", type=float, default=0.0, metavar="MIN",
                        help="submit no new fit after MIN minutes (0: run every fit)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="per-fit results JSON (and its analysis)")
    parser.add_argument("--resume", action="store_true", help="keep the fits already in --out")
    parser.add_argument("--all-levels", action="store_true",
                        help="after one level per scene (chosen by its number), fit the other levels too")
    parser.add_argument("--follow", action="store_true",
                        help="do not build scenes: fit those another `bench_robust.py --build-only` has written, "
                             "as they appear")
    parser.add_argument("--work", type=Path, default=robust.DEFAULT_WORK, help="scene and mesh cache folder")
    parser.add_argument("--image-size", default="480x640", help="HxW of the written frames")
    parser.add_argument("--seed", type=int, default=0, help="hand-init noise and object-init seed")
    parser.add_argument("--analyse", type=Path, metavar="RUN.json", help="analyse a saved run and stop")
    parser.add_argument("--results", type=Path, help="write the 'Label quality' section into this markdown file")
    args = parser.parse_args(argv)

    if args.analyse:
        results = json.loads(args.analyse.read_text())
        out_path = args.analyse
    else:
        results = run_fits(args)
        out_path = args.out
    analysis = analyse(results)
    results["analysis"] = analysis
    robust._write_json(out_path, results)
    text = markdown(results, analysis)
    print(text)
    if args.results:
        write_section(args.results, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
