"""`hodata select-clips DATASET`: clip selection on its own, written to a file `hodata fit --clips` takes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hodata.errors import HodataError


def select_clips(
    dataset: str = typer.Argument(..., help="Dataset adapter whose clips are selected by tracking: epic."),
    root: Path = typer.Option(..., "--root", help="Dataset root (Epic: holds PXX/rgb_frames/, hand-objects/ and the "
                              "annotation CSVs)."),
    output: Path = typer.Option(Path("clips.json"), "--output", "-o", help="Selection file to write (JSON: every "
                                "candidate action with its frames, tracks, clips and why it was kept or dropped)."),
    category: Optional[str] = typer.Option(None, "--category", help="Object category (e.g. cup, bottle, plate)."),
    split: Optional[str] = typer.Option(None, "--split", help="Epic-Kitchens: train | validation (default validation)."),
    videos: Optional[str] = typer.Option(None, "--videos", help="Comma-separated video ids (default: all)."),
    pad: Optional[int] = typer.Option(None, "--pad", min=0, help="Frames added before and after each action (10)."),
    min_tracked: Optional[int] = typer.Option(None, "--min-tracked", min=0, help="An object track must cover more "
                                              "than this many frames (20, as the paper)."),
    clip_length: int = typer.Option(10, "--clip-length", min=1, help="Frames per clip (reference: 10)."),
    stride: Optional[int] = typer.Option(None, "--stride", min=1, help="Frame stride inside a clip (Epic: 1)."),
) -> None:
    """Select the clips to fit (tracked detections, paper Sec. 3.1) without fitting, and write
    them with the reason for every candidate, so a large run can be planned, split and checked
    first. `hodata fit DATASET --clips FILE` fits exactly the kept clips."""
    from hodata.app.console import console
    from hodata.datasets import open_dataset

    ids = [v.strip() for v in videos.split(",") if v.strip()] if videos else None
    options = dict(category=category, split=split, videos=ids, pad=pad, min_tracked=min_tracked, stride=stride)
    ds = open_dataset(dataset, root, options, clip_length=clip_length)
    if not hasattr(ds, "candidates"):
        raise HodataError(f"dataset {dataset!r} has no tracking-based clip selection: its clips are fixed windows "
                          "(fit it directly)")
    from hodata.datasets.epic import write_selection

    write_selection(output, ds.candidates, {"dataset": dataset, "root": str(Path(root).resolve()), **{
        k: v for k, v in options.items() if v is not None}, "clip_length": clip_length})
    kept = [c for c in ds.candidates if c.kept]
    console.print(f"{len(ds.candidates)} candidate action(s), {len(kept)} kept, "
                  f"{sum(len(c.windows) for c in kept)} clip(s) -> {output}")
    for cand in ds.candidates:
        mark = "[green]kept[/]" if cand.kept else "[yellow]dropped[/]"
        console.print(f"{mark} {cand.narration_id} ({cand.narration}): {cand.reason}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("select-clips")(select_clips)
