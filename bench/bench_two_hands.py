"""Two-hand benchmark: Table-1 metrics on synthetic clips where both hands hold the object.

    python bench/bench_two_hands.py [--sequences 4] [--steps 200] [--work bench/_work/two_hands]
        [--out bench/two_hands.json]

Scenes: `hodata.datasets.synthetic.make_synthetic_ho3d(two_hands=True)`: a right and a left
hand (each a `make_grasp` of the object, on opposite sides or a quarter turn apart, moved
toward opposite ends of it) holding one object that both move with, in HO-3D's layout with the
second hand under the meta key `hodataSecondHand`; 37 frames per sequence = one clip of 10
frames at stride 4 (HO-3D's default). Objects cycle through large ones, the kind held in two
hands (cracker box, pitcher, bowl, bleach cleanser, plate).

The run is the user's: `hodata fit ho3d --evidence gt --hand-init simulated --methods
joint,independent` then `hodata eval ho3d`, as subprocesses. Reported: the eval's means per
method (hand metrics over both hands), per-clip rows, and the share of clips where joint has
the lower hand vertex error.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OBJECTS = ("003_cracker_box", "019_pitcher_base", "024_bowl", "021_bleach_cleanser", "029_plate")
KEYS = (("hand_vertex_cm", "hand vtx cm", "{:.2f}"), ("hand_joint_st_cm", "mepe al. cm", "{:.2f}"),
        ("hand_vertex_pa_cm", "PA vtx cm", "{:.2f}"), ("object_vertex_cm", "obj vtx cm", "{:.2f}"),
        ("object_adds_cm", "ADD-S cm", "{:.2f}"), ("penetration_mm", "pen. mm", "{:.1f}"),
        ("contact_pct", "contact %", "{:.0f}"))


def hodata(*args: str) -> None:
    command = [str(Path(sys.executable).parent / "hodata"), *args]  # the console script beside this python
    subprocess.run(command, check=True, env={**os.environ, "COLUMNS": "160"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200, help="Adam steps of each stage (paper: 200)")
    parser.add_argument("--work", type=Path, default=HERE / "_work" / "two_hands")
    parser.add_argument("--out", type=Path, default=HERE / "two_hands.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from hodata.datasets.synthetic import make_synthetic_ho3d

    root, cache, fits = args.work / "root", args.work / "mesh_cache", args.work / "fits"
    objects = tuple(OBJECTS[i % len(OBJECTS)] for i in range(args.sequences))
    started = time.perf_counter()
    if not (root / "train.txt").is_file():
        make_synthetic_ho3d(root, sequences=args.sequences, frames=37, object_ids=objects, seed=args.seed,
                            cache_dir=cache, two_hands=True)
    generated = time.perf_counter() - started
    steps = str(args.steps)
    hodata("fit", "ho3d", "--root", str(root), "--evidence", "gt", "--hand-init", "simulated", "--methods",
           "joint,independent", "--mesh-cache", str(cache), "-o", str(fits), "--steps1", steps, "--steps2", steps,
           "--seed", str(args.seed))
    fitted = time.perf_counter() - started - generated
    hodata("eval", "ho3d", "--results", str(fits), "--mesh-cache", str(cache))
    means = json.loads((fits / "metrics.json").read_text())
    with open(fits / "metrics_per_clip.csv") as f:
        rows = list(csv.DictReader(f))
    per_clip: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        per_clip.setdefault(row["clip_id"], {})[row["method"]] = {
            k: float(row[k]) for k, _, _ in KEYS if row.get(k) not in (None, "")}
    wins = [c["joint"]["hand_vertex_cm"] < c["independent"]["hand_vertex_cm"] for c in per_clip.values()
            if "joint" in c and "independent" in c]
    result = {
        "objects": list(objects), "steps": args.steps, "seed": args.seed,
        "means": {m: {k: means[m][k] for k, _, _ in KEYS} for m in ("independent", "joint")},
        "per_clip": per_clip, "joint_wins": sum(wins), "clips": len(wins),
        "seconds": {"generate": round(generated, 1), "fit_both_methods": round(fitted, 1)},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads 1",
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(markdown(result))


def markdown(result: dict) -> str:
    """The RESULTS.md table: one row per method (means), then per clip 'independent / joint'."""
    head = "| | " + " | ".join(h for _, h, _ in KEYS) + " |"
    lines = [head, "|" + "---|" * (len(KEYS) + 1)]
    for method in ("independent", "joint"):
        lines.append(f"| {method} | " + " | ".join(f.format(result["means"][method][k]) for k, _, f in KEYS) + " |")
    lines.append("")
    lines.append("| clip (independent / joint) | " + " | ".join(h for _, h, _ in KEYS) + " |")
    lines.append("|" + "---|" * (len(KEYS) + 1))
    for clip, methods in result["per_clip"].items():
        cells = [f"{f.format(methods['independent'][k])} / {f.format(methods['joint'][k])}" for k, _, f in KEYS]
        lines.append(f"| {clip} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"joint wins on hand vertex error: {result['joint_wins']} / {result['clips']} clips")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
