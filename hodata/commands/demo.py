"""`hodata demo`: the whole pipeline on a built-in synthetic clip, end to end.

Makes a synthetic HO-3D sequence (a catalog object grasped by the active hand model,
rendered with masks, written in HO-3D's on-disk layout), fits it with the paper's two
methods (independent composition and joint fitting), evaluates both against the known
ground truth, writes shards, metrics.json and an overlay, and prints a Table-1-style table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console()


def demo(
    output: Path = typer.Option(Path("demo_output"), "--output", "-o", help="Folder for the data, shards, metrics.json and overlay."),
    object_id: str = typer.Option("025_mug", "--object", help="Catalog object to grasp (see `hodata prep-meshes --help`)."),
    frames: int = typer.Option(10, "--frames", min=1, help="Frames of the synthetic clip (one clip of 10 frames at stride 1)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic scene, hand-estimator noise and object hypotheses."),
    steps1: int = typer.Option(200, "--steps1", min=0, help="Adam steps of joint-fit stage 1 (paper: 200)."),
    steps2: int = typer.Option(200, "--steps2", min=0, help="Adam steps of joint-fit stage 2 (paper: 200)."),
    mesh_cache: Optional[Path] = typer.Option(None, "--mesh-cache", help="Mesh cache folder (default: $HODATA_MESH_CACHE or ./mesh_cache)."),
    mano_dir: Optional[Path] = typer.Option(None, "--mano-dir", help="Use MANO from this folder instead of the built-in open hand."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda[:N]."),
) -> None:
    """Run the whole pipeline on a built-in synthetic clip and print its accuracy."""
    from hodata.app import draw as overlay
    from hodata.app.console import (
        HOLD_TABLE_CAPTION,
        HOLD_TABLE_COLUMNS,
        HOLD_TABLE_TITLE,
        metrics_table,
        report_summary,
        write_png,
    )
    from hodata.app.evaluate import evaluate_results, hand_topology_note, load_fits
    from hodata.app.fit import build_configs, run_fit
    from hodata.app.providers import EvidenceProvider
    from hodata.datasets.ho3d import HO3DDataset
    from hodata.datasets.synthetic import make_synthetic_ho3d
    from hodata.paths import default_mesh_cache

    start = time.perf_counter()
    cache = mesh_cache or default_mesh_cache()
    data_root, fits_dir = output / "data", output / "fits"
    stride = 1
    with console.status("making a synthetic HO-3D clip"):
        make_synthetic_ho3d(data_root, sequences=1, frames=frames, object_ids=(object_id,), seed=seed,
                            cache_dir=cache, hand_model="mano" if mano_dir else "auto", mano_dir=mano_dir)
    console.print(f"synthetic HO-3D data: {data_root} ({frames} frames, object {object_id})")

    dataset = HO3DDataset(data_root, clip_length=min(10, frames), stride=stride, cache_dir=cache, mano_dir=mano_dir)
    config, init_config = build_configs(steps1, steps2, roi_size=128, hypotheses=50, disabled=())
    provider = EvidenceProvider("gt", "simulated", mano_dir=mano_dir, seed=seed)
    with console.status("fitting (independent composition and joint fitting)"):
        summary = run_fit(dataset, provider, fits_dir, ("independent", "joint"), config, init_config, device,
                          overwrite=True, save_frames=True, seed=seed)
    if not summary.fitted:
        report_summary(summary, dataset, fits_dir)
        raise typer.Exit(1)

    report = evaluate_results(fits_dir, "ho3d", root=data_root, cache_dir=cache, mano_dir=mano_dir,
                              output_dir=output, device=device)
    note = hand_topology_note(report.hand_topology, "ho3d")
    suffix = f"\n{note}" if note else ""
    console.print(metrics_table(report.methods, title="hodata demo: synthetic HO-3D clip (paper Table 1 layout)" + suffix))
    console.print(metrics_table(report.methods, HOLD_TABLE_TITLE + suffix, HOLD_TABLE_COLUMNS, HOLD_TABLE_CAPTION))

    fits = load_fits(fits_dir / "joint")
    fit = next(iter(fits.values()))
    clips = overlay.read_results_clips(fits_dir / "joint", [fit.clip_id])
    _, images = clips[fit.clip_id]
    hands, objects = overlay.fit_scene_meshes(fit, cache, mano_dir)
    panels = overlay.render_fit_panels(fit, hands, objects, images)
    overlay_path = output / "overlay.png"
    write_png(overlay_path, panels[len(panels) // 2])
    video_path = overlay.write_video(panels, output / "overlay.mp4")

    console.print(f"metrics: {report.metrics_path}")
    console.print(f"shards:  {fits_dir}/joint, {fits_dir}/independent")
    console.print(f"overlay: {overlay_path} (video: {video_path})")
    console.print(f"done in {time.perf_counter() - start:.0f} s")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
