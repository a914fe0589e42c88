"""What the commands show a person: progress bars, the Table-1 layout, run summaries.

Shared by the commands (which never import each other) and kept apart from the work they
report on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from hodata.errors import HodataError

console = Console()


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console)


def clip_progress(progress: Progress, task, clock=time.monotonic):
    """on_clip(clip_id, status) for a fit run's bar: advances it by one clip and shows the
    counts (fitted / failed / resumed) and the throughput in clips per hour (fitted + failed
    clips over the time since the first call, resumed ones excluded; shown once a clip was
    done). One bar over all workers: the driver calls it as results arrive."""
    counts = {"fitted": 0, "failed": 0, "resumed": 0}
    start = clock()

    def on_clip(clip_id: str, status: str) -> None:
        counts[status] = counts.get(status, 0) + 1
        worked = counts["fitted"] + counts["failed"]
        elapsed = clock() - start
        rate = f" · {worked * 3600.0 / elapsed:.0f} clips/h" if worked and elapsed > 0 else ""
        progress.update(task, advance=1, description=f"done {counts['fitted']} · failed {counts['failed']} · "
                        f"resumed {counts['resumed']}{rate} · {status}: {clip_id}")

    return on_clip


# Table 1 of the paper: (group, short name, unit, metric key, format). Kept narrow so the
# table fits 80 columns; the caption spells the names out.
TABLE_COLUMNS = (
    ("Hand", "vert", "cm", "hand_vertex_cm", "{:.2f}"),
    ("", "mepe", "al.cm", "hand_joint_st_cm", "{:.2f}"),
    ("", "PA v", "cm", "hand_vertex_pa_cm", "{:.2f}"),
    ("", "F@5", "mm", "hand_fscore_5mm", "{:.3f}"),
    ("", "F@15", "mm", "hand_fscore_15mm", "{:.3f}"),
    ("Object", "vert", "cm", "object_vertex_cm", "{:.2f}"),
    ("", "ADD-S", "cm", "object_adds_cm", "{:.2f}"),
    ("Inter.", "pen.", "mm", "penetration_mm", "{:.2f}"),
    ("", "cont.", "%", "contact_pct", "{:.1f}"),
)
TABLE_CAPTION = (
    "Hand: vertex mean distance, mean joint error after scale-translation alignment (mepe aligned), "
    "Procrustes-aligned vertex error, F-scores at 5 / 15 mm; Object: vertex mean distance, ADD-S; "
    "Interaction: penetration depth, contact %. — = no ground truth."
)
# The metrics later papers report on HO-3D v3 (HOLD, CVPR 2024, and its followers;
# hodata.metrics.hold), a second table beside Table 1.
HOLD_TABLE_COLUMNS = (
    ("Hand", "MPJPE", "ra.mm", "hand_mpjpe_ra_mm", "{:.1f}"),
    ("Object", "CD", "cm²", "object_cd_cm2", "{:.2f}"),
    ("", "F@5", "mm", "object_fscore_5mm", "{:.3f}"),
    ("", "F@10", "mm", "object_fscore_10mm", "{:.3f}"),
    ("Hand-obj.", "CD_h", "cm²", "object_cd_h_cm2", "{:.2f}"),
)
HOLD_TABLE_CAPTION = (
    "HOLD (CVPR 2024) protocol: root-aligned MPJPE; object chamfer distance (sum of mean squared "
    "distances) and F-scores at 5 / 10 mm (fractions; HOLD prints %) after root alignment; CD_h: the "
    "object's chamfer distance in the hand's frame. — = no ground truth."
)
HOLD_TABLE_TITLE = "Metrics of later papers (HOLD protocol, HO-3D v3)"
ABSENT = "—"


def format_metric(value: Any, fmt: str) -> str:
    """A table cell: the formatted number, or an em dash for an absent metric."""
    return ABSENT if value is None else fmt.format(value)


def metrics_table(methods: dict[str, dict[str, Any]], title: str = "", columns=TABLE_COLUMNS,
                  caption: str = TABLE_CAPTION):
    """A rich Table laid out like the paper's Table 1 (default `columns`): one row per method,
    column groups Hand / Object / Interaction; `HOLD_TABLE_COLUMNS` for the second table."""
    from rich import box
    from rich.table import Table

    table = Table(title=title or None, caption=caption, box=box.SIMPLE_HEAD, padding=(0, 0),
                  pad_edge=False)
    table.add_column("\n\nMethod", justify="left", no_wrap=True)
    for group, name, unit, _, _ in columns:
        table.add_column(f"[bold]{group}[/bold]\n{name}\n{unit}", justify="right", no_wrap=True)
    table.add_column("\n\nframes", justify="right", no_wrap=True)
    for method, values in methods.items():
        cells = [format_metric(values.get(key), fmt) for *_, key, fmt in columns]
        table.add_row(method, *cells, str(values.get("frames", 0)))
    return table



def report_summary(summary, dataset, output: Path) -> None:
    """What a fit run did: counts, then one line per failed clip and per dataset message."""
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


def write_png(path: Path, image: Any) -> None:
    """An RGB uint8 image (H, W, 3) as PNG; HodataError naming the path when it cannot be written."""
    import cv2

    if not cv2.imwrite(str(path), image[:, :, ::-1]):
        raise HodataError(f"{path}: cannot write the PNG; check that the output folder is writable")
