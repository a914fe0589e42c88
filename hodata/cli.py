"""Root Typer app: registers one sub-command per module of hodata.commands."""

from __future__ import annotations

import functools
import importlib
import os
import signal

import typer
import typer.exceptions

import hodata
from hodata.errors import EXIT_BAD_INPUT, EXIT_PARTIAL, EXIT_SIGNAL_BASE, HodataError


def _one_line_errors(callback):
    """Errors become one red line at the command boundary, with the exit codes of
    `hodata.errors` (0 done, 1 partly failed or internal error, 2 bad input or unusable
    output, 128 + N interrupted by signal N). HODATA_TRACEBACK=1 shows internal tracebacks."""

    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):  # typer's own exits and usage errors
            raise
        except HodataError as exc:
            _error_line(str(exc))
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except OSError as exc:  # disk full, read-only file system, permissions: the user can fix it
            where = f"{exc.filename}: " if exc.filename else ""
            _error_line(f"{where}{exc.strerror or exc}; free disk space or fix the path's permissions, then rerun")
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            _error_line(f"interrupted by {signal.Signals(signum).name}")
            raise typer.Exit(EXIT_SIGNAL_BASE + signum) from None
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a bug or an input nobody foresaw
            if os.environ.get("HODATA_TRACEBACK"):
                raise
            text = " ".join(str(exc).split()) or "no message"
            _error_line(f"internal error {type(exc).__name__}: {text} (rerun with HODATA_TRACEBACK=1 for the "
                        "traceback and report it)")
            raise typer.Exit(EXIT_PARTIAL) from None

    return wrapper


def _error_line(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)


app = typer.Typer(
    name="hodata",
    help="Reconstruct 3D hands (MANO) and manipulated objects from RGB clips by learning-free "
    "fitting (HOMAN, 3DV 2021) and write them as 3D training labels.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each module exposes register(app); a module missing here is a command not yet built.
COMMAND_MODULES = ["info", "prep_meshes", "select_clips", "evidence", "fit", "eval", "demo", "show", "report"]


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
