"""`hodata evidence DATASET`: the 2D evidence of clips, computed, cached and drawn, without fitting."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hodata.errors import EXIT_PARTIAL, HodataError


def evidence(
    dataset: str = typer.Argument(..., help="Dataset adapter: ho3d, core50, epic."),
    root: Path = typer.Option(..., "--root", help="Dataset root folder (as for `hodata fit`)."),
    out: Path = typer.Option(Path("evidence"), "--out", "-o", help="Evidence cache: <clip id>.pt per clip, and "
                             "<clip id>/<frame>.png drawings. `hodata fit --evidence-cache OUT` reuses it."),
    evidence_spec: str = typer.Option("auto", "--evidence", help="gt | detected | files:DIR | auto (as `hodata fit`)."),
    hand_init: str = typer.Option("auto", "--hand-init", help="simulated | keypoints | files:DIR | auto (as `hodata fit`)."),
    category: Optional[str] = typer.Option(None, "--category", help="Core50 / Epic-Kitchens: object category."),
    split: Optional[str] = typer.Option(None, "--split", help="HO-3D: train | evaluation; Epic: train | validation."),
    sequences: Optional[str] = typer.Option(None, "--sequences", help="HO-3D: comma-separated sequence names."),
    sessions: Optional[str] = typer.Option(None, "--sessions", help="Core50: sessions, e.g. 1,3,5-7."),
    objects: Optional[str] = typer.Option(None, "--objects", help="Core50: object ids, e.g. 41-45."),
    clips_file: Optional[Path] = typer.Option(None, "--clips", help="Epic-Kitchens: a `hodata select-clips` file."),
    clip_length: int = typer.Option(10, "--clip-length", min=1, help="Frames per clip (reference: 10)."),
    stride: Optional[int] = typer.Option(None, "--stride", min=1, help="Frame stride inside a clip (dataset default)."),
    max_clips: Optional[int] = typer.Option(None, "--max-clips", min=0, help="At most this many clips."),
    draw: bool = typer.Option(True, "--draw/--no-draw", help="Draw boxes, keypoints, masks and the initial hand."),
    mano_dir: Optional[Path] = typer.Option(None, "--mano-dir", help="Folder with MANO_RIGHT.pkl / MANO_LEFT.pkl."),
    mesh_cache: Optional[Path] = typer.Option(None, "--mesh-cache", help="Mesh cache folder (HO-3D object models)."),
) -> None:
    """Compute the evidence of DATASET's clips (boxes, tracks, masks, keypoints, initial hands),
    cache it and draw it, so a person can check it before fitting."""
    import itertools

    from hodata.app.console import console, progress_bar
    from hodata.app.draw import draw_clip_evidence
    from hodata.app.providers import EvidenceProvider, default_specs
    from hodata.datasets import open_dataset
    from hodata.datasets.core50 import parse_id_list

    ids = [s.strip() for s in sequences.split(",") if s.strip()] if sequences else None
    options = dict(split=split, sequences=ids, category=category, clips=clips_file, stride=stride,
                   sessions=parse_id_list(sessions, range(1, 12), "session"),
                   objects=parse_id_list(objects, range(1, 51), "object"))
    ds = open_dataset(dataset, root, options, clip_length=clip_length, mano_dir=mano_dir, cache_dir=mesh_cache,
                      evidence="gt")
    auto_evidence, auto_init = default_specs(getattr(ds, "dataset_name", dataset))
    provider = EvidenceProvider(auto_evidence if evidence_spec == "auto" else evidence_spec,
                                auto_init if hand_init == "auto" else hand_init, mano_dir=mano_dir, cache_dir=out)
    total = len(ds) if max_clips is None else min(max_clips, len(ds))
    failed: dict[str, str] = {}
    done = 0
    with progress_bar() as progress:
        task = progress.add_task("evidence", total=total)
        for clip in itertools.islice(iter(ds), total):
            try:
                ev = provider(clip)
                if draw:
                    draw_clip_evidence(clip, ev, provider.layers(ev.sides), out / clip.clip_id)
                done += 1
            except HodataError as exc:
                failed[clip.clip_id] = str(exc)
            progress.update(task, advance=1, description=clip.clip_id)
    console.print(f"evidence of {done} clip(s) -> {out} (evidence {provider.evidence}, hand init "
                  f"{provider.hand_init}); failed {len(failed)}")
    for clip_id, message in failed.items():
        console.print(f"[yellow]skipped {clip_id}[/]: {message}", highlight=False)
    for message in getattr(ds, "messages", []):
        console.print(f"[yellow]{message}[/]", highlight=False)
    if failed or not done:
        raise typer.Exit(EXIT_PARTIAL)


def register(app: typer.Typer) -> None:
    app.command("evidence")(evidence)
