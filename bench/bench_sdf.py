"""Benchmark of hodata.geometry.sdf (exact mesh SDF, grid SDF); run by hand:

    python bench/bench_sdf.py

torch runs with 1 thread. Reports medians of repeats, and the grid's sampling error against
the exact SDF. The closed "hand-like" mesh is a bent tube of varying radius with fan-capped
ends (1552 faces, like a MANO hand closed at the wrist); see tests/test_sdf.py.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_sdf import bent_tube  # noqa: E402

from hodata.geometry.rotations import axis_angle_to_matrix  # noqa: E402
from hodata.geometry.sdf import compute_sdf_grid, mesh_signed_distance, sample_sdf_grid  # noqa: E402

torch.set_num_threads(1)


def median_ms(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    hand = bent_tube(n_around=16, n_rings=48)                     # 1552 faces, 770 vertices
    verts0 = torch.tensor(hand.vertices, dtype=torch.float32)
    faces = torch.tensor(hand.faces)
    frames = 10
    rot = axis_angle_to_matrix(0.2 * torch.randn(frames, 3, generator=gen))
    verts = verts0 @ rot.transpose(1, 2) + 0.01 * torch.randn(frames, 1, 3, generator=gen)
    surface = torch.tensor(trimesh.sample.sample_surface(hand, 1000, seed=0)[0], dtype=torch.float32)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, mesh {len(faces)} faces, {frames} frames x 1000 points")
    for label, sigma in [("near surface, N(0, 2 mm)", 0.002), ("near surface, N(0, 5 mm)", 0.005)]:
        points = surface + sigma * torch.randn(frames, 1000, 3, generator=gen)
        points = points @ rot.transpose(1, 2) + (verts - verts0 @ rot.transpose(1, 2))[:, :1]
        fwd = median_ms(lambda: mesh_signed_distance(points, verts, faces))

        def step():
            p, v = points.clone().requires_grad_(), verts.clone().requires_grad_()
            mesh_signed_distance(p, v, faces).sum().backward()

        print(f"mesh_signed_distance [{label}]: forward {fwd:.1f} ms, forward+backward {median_ms(step):.1f} ms")
    # An object's vertices around the hand: most are far; culling skips them (collision use).
    obj = torch.tensor(trimesh.creation.icosphere(3, radius=0.04).vertices[:1000], dtype=torch.float32)
    points = obj[None] + torch.tensor([0.05, 0.0, 0.01]) + verts.mean(1, keepdim=True) - verts0.mean(0)
    fwd = median_ms(lambda: mesh_signed_distance(points, verts, faces, max_distance=0.0))
    print(f"mesh_signed_distance [object vertices around the hand, max_distance=0]: forward {fwd:.1f} ms")

    obj_mesh = bent_tube(n_around=20, n_rings=50)                       # 1002 vertices, ~13 cm
    ov = torch.tensor(obj_mesh.vertices, dtype=torch.float32)
    of = torch.tensor(obj_mesh.faces)
    probe = torch.tensor(trimesh.sample.sample_surface(obj_mesh, 3000, seed=1)[0], dtype=torch.float32)
    probe = probe + 0.005 * torch.randn(probe.shape, generator=gen)
    exact = mesh_signed_distance(probe[None], ov[None], of)[0]
    for resolution in (32, 64):
        start = time.perf_counter()
        grid = compute_sdf_grid(ov, of, resolution=resolution)
        took = time.perf_counter() - start
        error = (sample_sdf_grid(grid, probe) - exact).abs() * 1e3
        print(
            f"compute_sdf_grid {resolution}^3 ({len(ov)} vertices, {float(grid.spacing_vector()[0]) * 1e3:.1f} mm cells): "
            f"{took:.2f} s; sampling error vs exact within 5 mm of the surface: mean {error.mean():.3f} mm, max {error.max():.3f} mm"
        )
    queries = torch.randn(10, 1000, 3, generator=gen) * 0.03
    print(f"sample_sdf_grid 10x1000 points (64^3): forward {median_ms(lambda: sample_sdf_grid(grid, queries)):.2f} ms")

    def sample_step():
        q = queries.clone().requires_grad_()
        sample_sdf_grid(grid, q).sum().backward()

    print(f"sample_sdf_grid 10x1000 points (64^3): forward+backward {median_ms(sample_step):.2f} ms")


if __name__ == "__main__":
    main()
