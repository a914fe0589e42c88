"""`hodata show`: fitted hands and objects drawn over the frames, plus a side view, as PNG and MP4."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def show(
    results: Path = typer.Argument(
        ..., help="Output folder of `hodata fit` / `hodata demo` (holds manifest.json and shard-*.tar).",
        show_default=False,
    ),
    clip: Optional[List[str]] = typer.Option(
        None, "--clip", help="Clip id to draw (repeat for several). Default: the first --max-clips clips.",
        show_default=False,
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Folder for <clip_id>/<frame>.png and <clip_id>.mp4 (default: RESULTS/overlays)."
    ),
    root: Optional[Path] = typer.Option(
        None, "--root", help="Dataset root to read frames from when the shards hold no jpg "
        "(HO-3D / synthetic layout, Epic-Kitchens rgb_frames); for `hodata fit video` fits, the original "
        "video file or frames folder (its frames are drawn on, also when the shards hold frames). Without "
        "frames, meshes go on mid-grey.",
    ),
    mesh_cache: Optional[Path] = typer.Option(
        None, "--mesh-cache", help="Mesh cache with the fitted object models (default: $HODATA_MESH_CACHE, then ./mesh_cache)."
    ),
    mano_dir: Optional[Path] = typer.Option(
        None, "--mano-dir", help="Folder with MANO_RIGHT.pkl / MANO_LEFT.pkl, for fits made with MANO "
        "(default: $HODATA_MANO_DIR, then ~/.hodata/mano).",
    ),
    fps: Optional[float] = typer.Option(None, "--fps", min=0.1, help="Frame rate of the MP4 videos (default: for "
                                        "`hodata fit video` fits, the rate of the fitted frames in the original "
                                        "video; else 10).", show_default=False),
    max_clips: Optional[int] = typer.Option(None, "--max-clips", min=1, help="How many clips to draw when no --clip "
                                            "is given (default 3; every clip of a `hodata fit video` output).",
                                            show_default=False),
    alpha: float = typer.Option(0.6, "--alpha", min=0.0, max=1.0, help="Opacity of the meshes over the frame."),
) -> None:
    """Draw the fitted hand and object over every frame of a clip, beside a view of the same
    scene from a camera turned 90 degrees about the vertical axis through the scene centroid
    (depth errors show there), as PNG panels and an MP4 per clip, to judge a fit at a glance.
    For `hodata fit video` outputs, the MP4s play at the fitted frames' rate in the recording,
    and one more, RESULTS/overlays/<recording>.mp4, shows all drawn clips in frame order."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hodata.app import draw as overlay
    from hodata.app.console import write_png
    from hodata.fileio import read_rgb
    from hodata.shards import read_manifest
    from hodata.shards.writer import sanitise_key_part

    console = Console()
    out_dir = out if out is not None else results / "overlays"
    wanted = list(clip) if clip else None
    if wanted is None:
        manifest = read_manifest(results) if results.is_dir() else None
        if manifest is not None:
            available = sorted(manifest["clips"])
            if max_clips is None:  # a recording is shown whole
                max_clips = len(available) if manifest.get("config", {}).get("dataset") == "video" else 3
            wanted = available[:max_clips] or None
            if len(available) > max_clips:
                console.print(f"showing {max_clips} of {len(available)} clips (choose with --clip, or raise --max-clips)")
    clips = overlay.read_results_clips(results, wanted)

    jobs = []
    for clip_id, (fit, frames) in clips.items():
        source = "frames from the shards"
        clip_fps = fps
        if fit.dataset == "video":
            from hodata.datasets.video import clip_frame_rate
            from hodata.datasets.video_frames import read_frames, read_source_record

            # the frames cache of `hodata fit video -o OUT` is OUT/video_frames, beside OUT/<method>/
            record = read_source_record(results / "video_frames" / fit.sequence) or \
                read_source_record(results.parent / "video_frames" / fit.sequence)
            clip_fps = fps or clip_frame_rate(record, fit.frame_ids)
            if root is not None:
                frames, source = read_frames(root, fit.frame_ids, tuple(fit.image_size)), f"the original frames of {root}"
        if frames is None and root is not None:
            frames = overlay.read_frames_from_root(root, fit)
            source = f"frames from {root}" if frames is not None else ""
        if frames is None:
            why = f"not found under {root}" if root is not None else "not in the shards; pass --root DATASET_ROOT"
            source = f"no frames ({why}): drawn on mid-grey"
        jobs.append((fit, frames, source, clip_fps or 10.0))

    faces_cache: dict = {}
    written: list[Path] = []
    recordings: dict[str, list] = {}   # video fits: sequence -> (first frame, panel folder, fps) per clip
    total = sum(len(fit.frame_ids) for fit, _, _, _ in jobs)
    with Progress(TextColumn("[bold]show"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console) as progress:
        task = progress.add_task("", total=total)
        for fit, frames, source, clip_fps in jobs:
            progress.update(task, description=fit.clip_id)
            progress.console.print(f"{fit.clip_id}: {len(fit.frame_ids)} frames, {source}, {clip_fps:g} fps")
            hands, objects = overlay.fit_scene_meshes(fit, mesh_cache, mano_dir, faces_cache)
            panels = overlay.render_fit_panels(
                fit, hands, objects, frames, alpha, on_chunk=lambda n: progress.update(task, advance=n)
            )
            clip_dir = out_dir / sanitise_key_part(fit.clip_id)
            clip_dir.mkdir(parents=True, exist_ok=True)
            for frame_id, panel in zip(fit.frame_ids, panels):
                path = clip_dir / f"{sanitise_key_part(frame_id)}.png"
                write_png(path, panel)
            written.append(clip_dir)
            written.append(overlay.write_video(panels, out_dir / f"{sanitise_key_part(fit.clip_id)}.mp4", clip_fps))
            if fit.dataset == "video":
                recordings.setdefault(fit.sequence, []).append((fit.frame_ids[0], clip_dir, clip_fps))
    for sequence, drawn in recordings.items():
        if len(drawn) > 1:  # one video of the recording: the drawn clips' panels in frame order
            pngs = [p for _, clip_dir, _ in sorted(drawn) for p in sorted(clip_dir.glob("*.png"))]
            written.append(overlay.write_video((read_rgb(p) for p in pngs),
                                               out_dir / f"{sanitise_key_part(sequence)}.mp4", drawn[0][2]))
    for path in written:
        typer.echo(f"wrote {path}{'/*.png' if path.is_dir() else ''}")


def register(app: typer.Typer) -> None:
    app.command("show")(show)
