"""`hodata eval`: metrics of fit results against a dataset's ground truth, and the HO-3D
challenge export. The work is done by hodata.app.evaluate; this module parses options, shows
progress and prints the table."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from hodata.app.console import HOLD_TABLE_CAPTION, HOLD_TABLE_COLUMNS, HOLD_TABLE_TITLE, metrics_table
from hodata.errors import EXIT_PARTIAL

def eval_command(
    dataset: str = typer.Argument(..., help="Dataset adapter the fits were made on, e.g. ho3d.", show_default=False),
    results: Path = typer.Option(
        ..., "--results", help="Output folder of `hodata fit` (holding one folder per method, e.g. joint/ and "
        "independent/), or one method folder with its manifest.json.", show_default=False,
    ),
    root: Optional[Path] = typer.Option(
        None, "--root", help="Dataset root folder (default: the root recorded by `hodata fit` in the manifest)."
    ),
    split: Optional[str] = typer.Option(
        None, "--split", help="Dataset split the fits cover: train | evaluation (default: the split recorded by "
        "`hodata fit`, else evaluation with --export-pred, else train)."
    ),
    method: Optional[List[str]] = typer.Option(
        None, "--method", help="Evaluate only this method (repeat for several; default: every method found). "
        "--export-pred needs exactly one."
    ),
    mesh_cache: Optional[Path] = typer.Option(
        None, "--mesh-cache", help="Mesh cache holding the prepared object models (default: $HODATA_MESH_CACHE, "
        "then ./mesh_cache)."
    ),
    mano_dir: Optional[Path] = typer.Option(
        None, "--mano-dir", help="Folder with MANO_RIGHT.pkl / MANO_LEFT.pkl for the ground-truth hands "
        "(default: $HODATA_MANO_DIR, then ~/.hodata/mano)."
    ),
    output_dir: Optional[Path] = typer.Option(
        None, "--output-dir", help="Where metrics.json and metrics_per_clip.csv are written (default: --results)."
    ),
    export_pred: Optional[Path] = typer.Option(
        None, "--export-pred", help="HO-3D only: also write the challenge prediction file here (e.g. pred.json, "
        "plus pred.zip beside it to upload): one entry per line of evaluation.txt, OpenGL coordinates, metres. "
        "Frames without a fit are interpolated from fitted neighbours of the same sequence (zeros for "
        "sequences without any fit), with a warning giving the count."
    ),
    allow_non_mano: bool = typer.Option(
        False, "--allow-non-mano", help="With --export-pred: accept fits made with a non-MANO hand model by writing "
        "778 of its vertices spread over the mesh (a file for testing; the challenge cannot score it)."
    ),
    contact_tolerance: float = typer.Option(
        0.0, "--contact-tolerance", min=0.0, help="Distance (metres) outside the object surface still counted as "
        "contact (0: the paper's definition, some hand vertex inside the object)."
    ),
    contact_labels: Optional[Path] = typer.Option(
        None, "--contact-labels", help="Core50 / Epic: a CSV of hand-made contact labels (session,object,"
        "first_frame,last_frame,contact yes/no; see hodata.datasets.contact_labels) for contact accuracy. "
        "Without it Core50 counts every frame as in contact (paper Table 2)."
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available) | cpu | cuda[:i]."),
    skip_corrupt: bool = typer.Option(
        False, "--skip-corrupt", help="Skip truncated or corrupted shards (counted in a warning) instead of stopping "
        "with an error naming the shard."
    ),
) -> None:
    """Compare fit results with the dataset's ground truth: print a table laid out like the paper's
    Table 1, a second one with the metrics of later papers (HOLD, CVPR 2024: root-aligned MPJPE,
    object chamfer distance and F-scores at 5 / 10 mm, hand-relative CD_h), and write metrics.json and
    metrics_per_clip.csv. The title says which hand mesh the hand metrics use: MANO's 778 vertices
    (fits made with --mano-dir), or the open hand, whose numbers are not comparable with HO-3D
    challenge results. Metrics without ground truth (e.g. hands
    of HO-3D's evaluation split, objects of Core50 / Epic-Kitchens) are shown as — and stored as null."""
    # a HodataError becomes one `error:` line and exit code 2 in hodata.cli, as for every command
    _run(dataset, results, root, split, method, mesh_cache, mano_dir, output_dir, export_pred, allow_non_mano,
         contact_tolerance, device, skip_corrupt, contact_labels)


def _run(dataset, results, root, split, methods, mesh_cache, mano_dir, output_dir, export_pred, allow_non_mano,
         contact_tolerance, device, skip_corrupt=False, contact_labels=None) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hodata.app import evaluate as evaluation
    from hodata.errors import HodataError

    console = Console()
    err = Console(stderr=True)
    if export_pred is not None:
        if dataset != "ho3d":
            raise HodataError(f"--export-pred writes the HO-3D challenge file; dataset '{dataset}' has none")
        if split == "train":
            raise HodataError("--export-pred covers the evaluation split; drop --split train or use --split evaluation")
        found = evaluation.find_method_dirs(results)
        chosen = methods or list(found)
        if len(chosen) != 1:
            raise HodataError(
                f"{results}: --export-pred writes one method but {', '.join(chosen)} were found; choose with --method"
            )
        if split is None:
            recorded = evaluation.fit_config(found).get("split")
            split = recorded if isinstance(recorded, str) else "evaluation"
            if split != "evaluation":
                raise HodataError(f"{results}: the fits cover the {split} split; --export-pred needs evaluation fits")

    with Progress(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("reading results", total=None)

        def advance(done: int, total: int, description: str) -> None:
            bar.update(task, completed=done, total=total, description=description)

        report = evaluation.evaluate_results(
            results, dataset, root, split=split, methods=methods or None, output_dir=output_dir, device=device,
            cache_dir=mesh_cache, mano_dir=mano_dir, contact_tolerance=contact_tolerance, progress=advance,
            skip_corrupt=skip_corrupt, contact_labels=contact_labels,
        )

    title = f"{dataset} ({report.split}) — {report.root}" if report.split else f"{dataset} — {report.root}"
    note = evaluation.hand_topology_note(report.hand_topology, dataset)
    if note:
        title += f"\n{note}"
    console.print(metrics_table(report.methods, title))
    hold_keys = [key for *_, key, _ in HOLD_TABLE_COLUMNS]
    if any(values.get(key) is not None for values in report.methods.values() for key in hold_keys):
        console.print(metrics_table(report.methods, HOLD_TABLE_TITLE + (f"\n{note}" if note else ""),
                                    HOLD_TABLE_COLUMNS, HOLD_TABLE_CAPTION))
    for name, values in report.methods.items():
        if values.get("contact_accuracy_pct") is not None:
            console.print(f"{name}: contact accuracy {values['contact_accuracy_pct']:.1f} % (paper Table 2)")
    for message in report.messages:
        err.print(f"[yellow]note:[/yellow] {message}", highlight=False, soft_wrap=True)
    console.print(f"wrote {report.metrics_path} and {report.per_clip_path}", highlight=False, soft_wrap=True)

    if export_pred is not None:
        (only,) = report.method_dirs
        export = evaluation.export_ho3d_predictions(report.method_dirs[only], report.root, export_pred,
                                                    allow_non_mano=allow_non_mano, skip_corrupt=skip_corrupt)
        if export.resampled:
            err.print(f"[yellow]warning:[/yellow] hand model {export.hand_model} is not MANO: wrote 778 resampled "
                      "vertices per frame; the challenge cannot score this file", highlight=False, soft_wrap=True)
        if export.filled:
            err.print(
                f"[yellow]warning:[/yellow] {export.filled} of {export.frames} evaluation frames have no fit: "
                f"{export.interpolated} interpolated from fitted frames of the same sequence, {export.zeroed} "
                "zeros (sequences without any fit)", highlight=False, soft_wrap=True,
            )
        console.print(f"wrote {export.path} and {export.zip_path} ({export.frames} frames, method {only})",
                      highlight=False, soft_wrap=True)
    if report.not_evaluated:  # exit-code rule (README): finished, but some clips failed
        raise typer.Exit(EXIT_PARTIAL)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
