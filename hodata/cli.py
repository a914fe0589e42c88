"""Root Typer app: registers one sub-command per module of hodata.commands."""

from __future__ import annotations

import functools
import importlib
import os

import typer

import hodata
from hodata.errors import HodataError


def _one_line_errors(callback):
    """Bad input the user can fix (HodataError) becomes one red line and exit code 2."""

    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except HodataError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper


app = typer.Typer(
    name="hodata",
    help="Reconstruct 3D hands (MANO) and manipulated objects from RGB clips by learning-free "
    "fitting (HOMAN, 3DV 2021) and write them as 3D training labels.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each module exposes register(app); a module missing here is a command not yet built.
COMMAND_MODULES = ["info", "prep_meshes", "fit", "eval", "demo", "show"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hodata {hodata.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the hodata version and exit."
    ),
    threads: int = typer.Option(
        int(os.environ["HODATA_THREADS"]) if os.environ.get("HODATA_THREADS", "").isdigit() else 1,
        "--threads", min=1,
        help="CPU threads for torch (default 1, or $HODATA_THREADS): fitting runs many small ops, "
        "which extra threads slow down on a busy machine.",
    ),
) -> None:
    """hodata: 3D hand-object labels from RGB video clips."""
    import torch

    torch.set_num_threads(threads)


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"hodata.commands.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"hodata.commands.{_name}":
            raise
        continue
    _module.register(app)

for _info in app.registered_commands:
    _info.callback = _one_line_errors(_info.callback)


def run() -> None:
    """Console entry point."""
    app()
