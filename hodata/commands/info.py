"""`hodata info`: versions, device, active hand model and mesh cache contents."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def info(
    mano_dir: Optional[Path] = typer.Option(
        None, "--mano-dir", help="Folder with MANO_RIGHT.pkl / MANO_LEFT.pkl (default: $HODATA_MANO_DIR, then ~/.hodata/mano)."
    ),
    cache: Optional[Path] = typer.Option(
        None, "--cache", help="Mesh cache folder to describe (default: $HODATA_MESH_CACHE, then ./mesh_cache)."
    ),
) -> None:
    """Show versions, the compute device, which hand model is active and the mesh cache."""
    import torch

    import hodata
    from hodata import handmodel
    from hodata.device import resolve_device
    from hodata.paths import default_mesh_cache

    table = Table(title="hodata", show_header=False)
    table.add_row("hodata", hodata.__version__)
    table.add_row("torch", torch.__version__)
    cuda = torch.cuda.is_available()
    table.add_row("CUDA available", f"yes ({torch.cuda.get_device_name(0)})" if cuda else "no")
    table.add_row("device (--device auto)", str(resolve_device("auto")))
    table.add_row("torch threads", str(torch.get_num_threads()))

    status = handmodel.describe(mano_dir)
    table.add_row("hand model", status.active)
    table.add_row("MANO searched in", "\n".join(str(p) for p in status.searched) or "-")
    for side, path in status.found.items():
        table.add_row(f"MANO {side}", str(path))
    for problem in status.problems:
        table.add_row("MANO problem", problem)

    cache_dir = cache or default_mesh_cache()
    table.add_row("mesh cache", str(cache_dir.resolve()))
    models = sorted(p.parent.name for p in cache_dir.glob("*/meta.json")) if cache_dir.is_dir() else []
    if models:
        table.add_row("cached meshes", f"{len(models)}: " + ", ".join(models[:12]) + (" ..." if len(models) > 12 else ""))
    else:
        table.add_row("cached meshes", "none (run `hodata prep-meshes`)")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("info")(info)
