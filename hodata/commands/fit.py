"""`hodata fit DATASET`: fit hands and objects over a dataset's clips and write shards."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from hodata.errors import EXIT_PARTIAL, EXIT_SIGNAL_BASE, HodataError, Interrupted

console = Console()


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console)


def build_configs(steps1: int, steps2: int, roi_size: int, hypotheses: int, disabled: tuple[str, ...]):
    from hodata.fitting import FitConfig, ObjectInitConfig

    config = FitConfig(steps_stage1=steps1, steps_stage2=steps2, roi_size=roi_size, disabled=disabled)
    init_config = ObjectInitConfig(n_hypotheses=hypotheses)
    return config, init_config


def make_dataset(name: str, root: Path, split: str, sequences: Optional[str], clip_length: int, stride: int,
                 evidence: str, mano_dir: Optional[Path], mesh_cache: Optional[Path]):
    from hodata.datasets.base import available_datasets, get_adapter

    if name not in available_datasets():
        raise HodataError(f"no adapter for dataset {name!r} yet; available: {', '.join(available_datasets())}")
    adapter = get_adapter(name)
    seqs = [s for s in sequences.split(",") if s] if sequences else None
    return adapter(root, split=split, sequences=seqs, clip_length=clip_length, stride=stride, evidence=evidence,
                   mano_dir=mano_dir, cache_dir=mesh_cache)


def run_fit(dataset, output: Path, methods: tuple[str, ...], config, init_config, device: str, overwrite: bool,
            save_frames: bool, seed: int, max_clips: Optional[int], hand_init: str, mano_dir: Optional[Path],
            keep_results: bool = False):
    """Fit `dataset` (an adapter) into `output`, with a progress bar; returns the RunSummary."""
    import itertools

    import torch

    from hodata.evidence.hand_init import SimulatedHandEstimator
    from hodata.fitting.run import fit_dataset

    if hand_init != "simulated":
        raise HodataError(f"hand init provider {hand_init!r} is not available; use --hand-init simulated "
                          "(FrankMocap/MediaPipe providers are not built yet)")
    check_mano_dir(mano_dir)
    estimator = SimulatedHandEstimator(seed=seed, mano_dir=mano_dir)

    def layers_for(clip):
        return {h.side: estimator.layer(h.side, h.model_name, torch.float32, torch.device("cpu")) for h in clip.gt_hands}

    total = len(dataset) if max_clips is None else min(max_clips, len(dataset))
    clips = itertools.islice(iter(dataset), total)
    with progress_bar() as progress:
        task = progress.add_task("fitting clips", total=total)

        def on_clip(clip_id: str, status: str) -> None:
            progress.update(task, advance=1, description=f"{status}: {clip_id}")

        return fit_dataset(
            clips, dataset.model_for_clip, estimator, layers_for, output,
            methods=methods, config=config, init_config=init_config, device=device, overwrite=overwrite,
            save_frames=save_frames, seed=seed, on_clip=on_clip, keep_results=keep_results,
            source={"dataset": getattr(dataset, "dataset_name", ""), "root": str(Path(dataset.root).resolve()),
                    "split": getattr(dataset, "split", None)},
        )


def check_mano_dir(mano_dir: Optional[Path]) -> None:
    """An explicit --mano-dir must hold MANO files that load: checked up front, also when the
    data's own hand model would never read them (a wrong folder is not silently ignored)."""
    if mano_dir is None:
        return
    from hodata import handmodel

    status = handmodel.describe(mano_dir)
    if status.problems:
        raise HodataError(status.problems[0])
    if not status.found:
        raise HodataError(f"{mano_dir}: holds neither MANO_RIGHT.pkl nor MANO_LEFT.pkl; pass the folder holding them")


def report_summary(summary, dataset, output: Path) -> None:
    unreadable = len(getattr(dataset, "skipped_clips", []))
    for note in getattr(summary, "notes", []):
        console.print(f"[yellow]{note}[/]")
    console.print(f"fitted {len(summary.fitted)} clip(s), resumed {len(summary.resumed)}, "
                  f"failed {len(summary.failed)}, unreadable {unreadable} -> {output}")
    for clip_id, message in summary.failed.items():
        console.print(f"[yellow]skipped {clip_id}[/]: {message}")
    for message in getattr(dataset, "messages", []):
        console.print(f"[yellow]{message}[/]")
    skipped_frames = getattr(dataset, "skipped_frames", [])
    if skipped_frames:
        console.print(f"{len(skipped_frames)} frame(s) without an object pose were skipped")


def fit(
    dataset: str = typer.Argument(..., help="Dataset adapter: ho3d (HO-3D v2/v3 layout, also hodata's synthetic sets)."),
    root: Path = typer.Option(..., "--root", help="Dataset root folder (for HO-3D: holds train/, evaluation/, train.txt)."),
    split: str = typer.Option("train", "--split", help="Dataset split: train or evaluation."),
    sequences: Optional[str] = typer.Option(None, "--sequences", help="Comma-separated sequence names (default: all)."),
    evidence: str = typer.Option("gt", "--evidence", help="2D evidence: gt = boxes and masks from ground truth (paper Fig. 4)."),
    hand_init: str = typer.Option("simulated", "--hand-init", help="Hand initialisation provider: simulated (ground truth + documented noise)."),
    output: Path = typer.Option(Path("out"), "--output", "-o", help="Output folder; one shard folder per method inside."),
    methods: str = typer.Option("joint", "--methods", help="Comma-separated: joint, independent (the paper's baseline)."),
    clip_length: int = typer.Option(10, "--clip-length", min=1, help="Frames per clip (reference: 10)."),
    stride: int = typer.Option(4, "--stride", min=1, help="Frame stride inside a clip (reference: 4 for HO-3D)."),
    max_clips: Optional[int] = typer.Option(None, "--max-clips", min=0, help="Fit at most this many clips."),
    steps1: int = typer.Option(200, "--steps1", min=0, help="Adam steps of stage 1 (paper: 200)."),
    steps2: int = typer.Option(200, "--steps2", min=0, help="Adam steps of stage 2 (paper: 200)."),
    roi_size: int = typer.Option(128, "--roi-size", min=1, help="Object silhouette render size in pixels."),
    hypotheses: int = typer.Option(50, "--hypotheses", min=1, help="Object rotation hypotheses refined at initialisation (paper: 50)."),
    no_obj: bool = typer.Option(False, "--no-obj", help="Switch off the object silhouette term (Eq. 3)."),
    no_v2d: bool = typer.Option(False, "--no-v2d", help="Switch off the projected hand vertices term (Eq. 4)."),
    no_pca: bool = typer.Option(False, "--no-pca", help="Switch off the hand pose prior."),
    no_scale: bool = typer.Option(False, "--no-scale", help="Switch off the scale prior."),
    no_smooth: bool = typer.Option(False, "--no-smooth", help="Switch off temporal smoothness."),
    no_centroid: bool = typer.Option(False, "--no-centroid", help="Switch off the coarse (centroid) interaction."),
    no_collision: bool = typer.Option(False, "--no-collision", help="Switch off collision (Eq. 5)."),
    no_local: bool = typer.Option(False, "--no-local", help="Switch off local contact."),
    mano_dir: Optional[Path] = typer.Option(None, "--mano-dir", help="Folder with MANO_RIGHT.pkl / MANO_LEFT.pkl."),
    mesh_cache: Optional[Path] = typer.Option(None, "--mesh-cache", help="Mesh cache folder (default: $HODATA_MESH_CACHE or ./mesh_cache)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda[:N]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over instead of resuming clips already in the output."),
    save_frames: bool = typer.Option(True, "--save-frames/--no-save-frames", help="Store each frame (jpg) and masks (png) in the shards."),
    seed: int = typer.Option(0, "--seed", help="Random seed (object rotation hypotheses, simulated hand noise)."),
) -> None:
    """Fit hands and objects over DATASET's clips and write 3D labels as WebDataset shards.

    Reruns into the same --output skip clips already written (resume; every shard is checked
    first and the clips of a missing or damaged one are fitted again); --overwrite starts over.
    A clip that fails (unreadable frame, a fit error, a diverged fit) is skipped and listed;
    the others are written. One run at a time writes into an --output.

    Exit code: 0 every clip was fitted or resumed; 1 the run finished but some clips failed
    or were unreadable (listed), or there was nothing to fit; 2 bad input or an unusable
    output (read-only, disk full, in use by another run) stopped it, one line says which;
    130 / 143 interrupted by SIGINT / SIGTERM (whole clips written are kept: rerun the same
    command to resume).
    """
    from hodata.device import resolve_device

    resolve_device(device)
    switches = dict(obj=no_obj, v2d=no_v2d, pca=no_pca, scale=no_scale, smooth=no_smooth, centroid=no_centroid,
                    collision=no_collision, local=no_local)
    disabled = tuple(t for t, off in switches.items() if off)
    from hodata.fitting import METHODS

    method_list = tuple(m.strip() for m in methods.split(",") if m.strip())
    if not method_list or any(m not in METHODS for m in method_list):
        raise HodataError(f"--methods {methods!r}: choose one or more of {', '.join(METHODS)}, comma-separated")
    config, init_config = build_configs(steps1, steps2, roi_size, hypotheses, disabled)
    ds = make_dataset(dataset, root, split, sequences, clip_length, stride, evidence, mano_dir, mesh_cache)
    with terminate_as_interrupt():
        try:
            summary = run_fit(ds, output, method_list, config, init_config, device, overwrite, save_frames, seed,
                              max_clips, hand_init, mano_dir)
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            typer.secho(f"interrupted by {signal.Signals(signum).name}: the clips written so far are kept in {output}; "
                        "rerun the same command to resume", fg=typer.colors.YELLOW, err=True)
            raise typer.Exit(EXIT_SIGNAL_BASE + signum) from None
    report_summary(summary, ds, output)
    if summary.failed or getattr(ds, "skipped_clips", []) or (not summary.fitted and not summary.resumed):
        raise typer.Exit(EXIT_PARTIAL)


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM unwinds like Ctrl-C (`Interrupted`) while fitting, so shards close with whole clips."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def register(app: typer.Typer) -> None:
    app.command("fit")(fit)
