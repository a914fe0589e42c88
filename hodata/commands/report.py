"""`hodata report`: a static HTML page to review fits by eye, worst first. The page is built by
hodata.app.report; this module parses options and shows progress."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def report(
    results: Path = typer.Argument(
        ..., help="Output folder of `hodata fit` (one folder per method, e.g. joint/ and independent/), or one "
        "method folder with its manifest.json.", show_default=False,
    ),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Folder for index.html, thumbs/ and videos/ (default: RESULTS/report). "
        "Open index.html in a browser; it needs no server and the folder can be moved whole.",
    ),
    sort: str = typer.Option(
        "worst", "--sort", help="Row order: worst (lowest quality first), best, or name (method, then clip id)."
    ),
    method: Optional[List[str]] = typer.Option(
        None, "--method", help="Only this method folder (repeat for several; default: every method found)."
    ),
    videos: bool = typer.Option(
        False, "--videos", help="Also render an MP4 per clip (overlay | side view, every frame) into the report's "
        "videos/ folder and link it. Without it, the page links MP4s already there or written by `hodata show` "
        "(METHOD/overlays/CLIP.mp4).",
    ),
    fps: float = typer.Option(10.0, "--fps", min=0.1, help="Frame rate of the MP4s written with --videos."),
    thumb_width: int = typer.Option(
        320, "--thumb-width", min=16, help="Width in pixels of the overlay and side-view thumbnails."
    ),
    metrics: Optional[Path] = typer.Option(
        None, "--metrics", help="metrics_per_clip.csv of `hodata eval`, whose per-clip errors the page shows "
        "(default: RESULTS/metrics_per_clip.csv when present).",
    ),
    root: Optional[Path] = typer.Option(
        None, "--root", help="Dataset root to read frames from when the shards hold no jpg (HO-3D / synthetic "
        "layout, Epic-Kitchens rgb_frames). Without frames, meshes go on mid-grey.",
    ),
    mesh_cache: Optional[Path] = typer.Option(
        None, "--mesh-cache", help="Mesh cache with the fitted object models (default: $HODATA_MESH_CACHE, then "
        "./mesh_cache).",
    ),
    mano_dir: Optional[Path] = typer.Option(
        None, "--mano-dir", help="Folder with MANO_RIGHT.pkl / MANO_LEFT.pkl, for fits made with MANO "
        "(default: $HODATA_MANO_DIR, then ~/.hodata/mano).",
    ),
) -> None:
    """Write a static HTML review page of fit results: one row per clip, sorted by the quality score
    stored in the shards (worst first), with the per-frame quality as a small plot, an overlay and a
    side-view thumbnail of the clip's lowest-quality frame, the final per-term losses, the raised
    flags, the other quality signals, the clip's eval metrics when `hodata eval` wrote
    metrics_per_clip.csv into RESULTS, and a link to its MP4."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hodata.app.report import build_report

    console = Console()
    with Progress(TextColumn("[bold]report"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console, transient=True,
                  disable=not console.is_terminal) as bar:
        task = bar.add_task("reading results", total=None)

        def advance(done: int, total: int, description: str) -> None:
            bar.update(task, completed=done, total=total, description=description)

        summary = build_report(results, output, sort=sort, methods=method or None, cache_dir=mesh_cache,
                               mano_dir=mano_dir, root=root, write_videos=videos, fps=fps, thumb_width=thumb_width,
                               metrics_csv=metrics, progress=advance)
    for message in summary.messages:
        console.print(f"[yellow]no thumbnail:[/yellow] {message}", highlight=False, soft_wrap=True)
    extra = f", {summary.videos_written} MP4s" if summary.videos_written else ""
    console.print(f"wrote {summary.index_path} ({len(summary.clips)} clips{extra}); open it in a browser",
                  highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
