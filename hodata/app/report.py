"""A static HTML page to review fits by eye (`hodata report RESULTS`).

    summary = build_report("out/", "out/report")      # out/report/index.html + thumbs/
    summary.index_path, [c.clip_id for c in summary.clips]   # clips in page order

One folder, opened from disk (file://) without a server: `index.html` with inline CSS and a
few lines of inline script (no external assets; the script re-sorts the rows from the page's
order control or `index.html#sort=best|worst|name`, and flags thumbnails that fail to load), `thumbs/<method>/<clip>_{overlay,side}.jpg`
and, with `write_videos`, `videos/<method>/<clip>.mp4`. Every link is relative, so the folder
can be moved or zipped whole.

One row per fitted clip of every method folder in RESULTS (a `hodata fit --output` folder or
one method folder), sorted by quality (worst first by default): the clip's quality and its
per-frame quality as a small inline SVG plot (frames with a raised flag in red), an overlay
thumbnail and a side view (the scene seen from 90 degrees about the vertical axis, where depth
errors show) of the clip's lowest-quality frame, the final per-term losses, the raised flags
(with the number of frames raising each), the other per-frame quality signals the shards hold
(mean over frames), the eval metrics of the clip when `hodata eval` wrote
`metrics_per_clip.csv` into RESULTS, and a link to the clip's MP4.

Quality is read generically from each frame's json (`hodata.shards.writer` writes it): the
frame's `quality` (a number, or a dict with `score`, `raised` / `flags` and any further
numeric signals, also nested one level, e.g. `{"signals": {"mask_iou": 0.8}}`). The clip's
quality is a stored clip-level value when there is one (`quality["clip_score"]` or the
json's `clip_quality`), else the mean of its frames' scores. Clips without any score sort last.

MP4s: `write_videos` renders one per clip into the report folder (as `hodata show` does);
otherwise the page links existing ones: `videos/<method>/<clip>.mp4` in the report folder,
else `<method folder>/overlays/<clip>.mp4` (the default output of `hodata show`).
"""

from __future__ import annotations

import csv
import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from hodata.errors import HodataError
from hodata.types import FitResult

INDEX_NAME = "index.html"
THUMBS_DIR = "thumbs"
VIDEOS_DIR = "videos"
SORT_ORDERS = ("worst", "best", "name")
DEFAULT_THUMB_WIDTH = 320
# eval metrics shown per clip when RESULTS holds metrics_per_clip.csv: (key, label, format)
EVAL_COLUMNS = (
    ("hand_vertex_cm", "hand vertex", "{:.2f} cm"),
    ("hand_mpjpe_ra_mm", "MPJPE (root al.)", "{:.1f} mm"),
    ("object_adds_cm", "object ADD-S", "{:.2f} cm"),
    ("object_cd_h_cm2", "CD_h", "{:.2f} cm²"),
    ("penetration_mm", "penetration", "{:.2f} mm"),
)
_JPEG_QUALITY = 90

# progress(done, total, description)
Progress = Callable[[int, int, str], None]


@dataclass
class ClipRow:
    """What the page shows of one fitted clip (paths relative to the report folder)."""

    method: str
    clip_id: str
    sequence: str
    frame_ids: list[str]
    quality: Optional[float]                      # clip quality (None: no score stored)
    frame_quality: list[Optional[float]]          # per frame
    frame_raised: list[list[str]]                 # raised flags per frame
    losses: dict[str, float]
    flags: dict[str, int]                         # raised flag -> frames raising it
    signals: dict[str, float]                     # other numeric quality signals, mean over frames
    shown_frame: int = 0                          # frame of the thumbnails (lowest quality)
    overlay: Optional[str] = None
    side: Optional[str] = None
    video: Optional[str] = None
    metrics: dict[str, float] = field(default_factory=dict)
    problem: str = ""                             # why the thumbnails are missing


@dataclass
class ReportSummary:
    """What `build_report` wrote."""

    index_path: Path
    clips: list[ClipRow]
    videos_written: int = 0
    messages: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- quality of a sample


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# entries of a frame's `quality` that are not quality signals
_NOT_SIGNALS = frozenset({"score", "raised", "flags", "basis", "clip_score", "version"})


def frame_quality(meta: Mapping[str, Any]) -> tuple[Optional[float], list[str], dict[str, float]]:
    """(score, raised flags, other numeric signals) of one frame's json `meta`.

    `quality` may be a number (the score) or a dict: `score`, the raised flags from `raised`
    (else the true entries of `flags`), and every other numeric entry, one level of nesting
    flattened as `outer.inner`, as signals.
    """
    quality = meta.get("quality")
    if _number(quality) is not None:
        return _number(quality), [], {}
    if not isinstance(quality, Mapping):
        return None, [], {}
    score = _number(quality.get("score"))
    raised = quality.get("raised")
    if not isinstance(raised, (list, tuple)):
        flags = quality.get("flags") if isinstance(quality.get("flags"), Mapping) else {}
        raised = [name for name, value in flags.items() if value is True]
    signals: dict[str, float] = {}
    for name, value in quality.items():
        if name in _NOT_SIGNALS:
            continue
        if _number(value) is not None:
            signals[str(name)] = _number(value)
        elif isinstance(value, Mapping):
            for inner, v in value.items():
                if _number(v) is not None:
                    signals[str(inner) if name == "signals" else f"{name}.{inner}"] = _number(v)
    return score, [str(r) for r in raised], signals


def clip_quality(metas: Sequence[Mapping[str, Any]], scores: Sequence[Optional[float]]) -> Optional[float]:
    """A stored clip-level quality (`quality["clip_score"]` or `clip_quality` of the first
    frame's json), else the mean of the frames' scores (None without any)."""
    if metas:
        first = metas[0]
        quality = first.get("quality")
        stored = quality.get("clip_score") if isinstance(quality, Mapping) else None
        for value in (stored, first.get("clip_quality")):
            if _number(value) is not None:
                return _number(value)
    known = [s for s in scores if s is not None]
    return sum(known) / len(known) if known else None


def clip_row(method: str, fit: FitResult, metas: Sequence[Mapping[str, Any]]) -> ClipRow:
    """The page's row of a clip from its fit and its frames' json (in frame order)."""
    scores, raised, signals = [], [], []
    for meta in metas:
        s, r, sig = frame_quality(meta)
        scores.append(s)
        raised.append(r)
        signals.append(sig)
    flags: dict[str, int] = {}
    for names in raised:
        for name in names:
            flags[name] = flags.get(name, 0) + 1
    for name, value in fit.flags.items():   # clip flags the frames may not repeat
        if value and name not in flags:
            flags[name] = len(metas)
    names = sorted({n for sig in signals for n in sig})
    mean_signals = {}
    for name in names:
        values = [sig[name] for sig in signals if name in sig]
        mean_signals[name] = sum(values) / len(values)
    known = [(s, t) for t, s in enumerate(scores) if s is not None]
    shown = min(known)[1] if known else len(metas) // 2
    return ClipRow(
        method=method, clip_id=fit.clip_id, sequence=fit.sequence, frame_ids=[str(f) for f in fit.frame_ids],
        quality=clip_quality(metas, scores), frame_quality=scores, frame_raised=raised,
        losses={str(k): float(v) for k, v in fit.losses.items()}, flags=flags, signals=mean_signals,
        shown_frame=shown,
    )


def sort_rows(rows: Sequence[ClipRow], order: str = "worst") -> list[ClipRow]:
    """Rows in page order: "worst" (lowest quality first), "best", or "name" (method, clip);
    clips without a quality go last in the quality orders."""
    if order not in SORT_ORDERS:
        raise HodataError(f"unknown sort order '{order}'; choose one of {', '.join(SORT_ORDERS)}")
    by_name = sorted(rows, key=lambda r: (r.method, r.clip_id))
    if order == "name":
        return by_name
    sign = 1.0 if order == "worst" else -1.0
    return sorted(by_name, key=lambda r: (r.quality is None, sign * (r.quality or 0.0)))


# ----------------------------------------------------------------------------- reading results


def _safe_name(text: str) -> str:
    from hodata.shards.writer import sanitise_key_part

    return sanitise_key_part(text)


def iter_method_clips(method_dir: Path, verify: bool = True):
    """(fit, frame metas in order, frames (T, H, W, 3) uint8 or None) of every clip of one
    method folder, one shard at a time (so memory holds one shard's frames)."""
    from hodata.shards import load, read_manifest
    from hodata.app.draw import clip_from_samples

    manifest = read_manifest(method_dir) or {}
    clips = manifest.get("clips") or {}
    by_shard: dict[str, list[str]] = {}
    for clip_id, entry in sorted(clips.items()):
        by_shard.setdefault(entry["shard"], []).append(clip_id)
    for shard, clip_ids in sorted(by_shard.items()):
        samples: dict[str, list[dict]] = {c: [] for c in clip_ids}
        for sample in load([method_dir / shard], decode_images=True, verify=verify):
            clip_id = sample["meta"]["clip_id"]
            if clip_id in samples:
                samples[clip_id].append(sample)
        for clip_id in clip_ids:
            fit, ordered, frames = clip_from_samples(method_dir, clip_id, samples[clip_id])
            yield fit, [s["meta"] for s in ordered], frames


def read_eval_metrics(path: Path, required: bool = False) -> dict[tuple[str, str], dict[str, float]]:
    """(method, clip_id) -> metrics of a `metrics_per_clip.csv` (`hodata eval`); empty when the
    file is absent, unless `required` (HodataError naming it)."""
    if not path.is_file():
        if required:
            raise HodataError(f"{path}: no such metrics file; pass the metrics_per_clip.csv `hodata eval` wrote")
        return {}
    out = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            values = {}
            for key, _, _ in EVAL_COLUMNS:
                try:
                    values[key] = float(row[key])
                except (KeyError, TypeError, ValueError):
                    continue
            out[(row.get("method", ""), row.get("clip_id", ""))] = values
    return out


# ----------------------------------------------------------------------------- thumbnails


def render_thumbnails(
    fit: FitResult,
    frames: Optional[np.ndarray],
    t: int,
    width: int = DEFAULT_THUMB_WIDTH,
    cache_dir=None,
    mano_dir=None,
    faces_cache: Optional[dict] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(overlay, side view) uint8 (h, width, 3) of frame t, rendered at thumbnail size: the
    camera's K scaled by width / W (both focal lengths and the principal point), the frame
    resized to match (up or down). The side camera looks at the clip's centroid over all frames, as in
    `hodata show`."""
    import cv2
    import torch

    from hodata.app import draw

    H, W = (int(s) for s in fit.image_size)
    factor = width / W
    h, w = max(1, round(H * factor)), max(1, round(W * factor))
    K = torch.as_tensor(fit.K).float().clone()
    K[:2] *= torch.tensor([w / W, h / H])[:, None]
    hands, objects = draw.fit_scene_meshes(fit, cache_dir, mano_dir, faces_cache)
    meshes = [*hands, *objects]
    image = None
    if frames is not None:
        interpolation = cv2.INTER_AREA if w < W else cv2.INTER_LINEAR
        image = frames[t] if (h, w) == (H, W) else cv2.resize(frames[t], (w, h), interpolation=interpolation)
    if not meshes:
        grey = np.full((h, w, 3), draw.BACKGROUND_GREY, np.uint8)
        return (image if image is not None else grey), grey
    centroid = draw.scene_centroid(meshes)
    one = lambda items: [(v[t:t + 1], f) for v, f in items]  # noqa: E731 - frame t of each mesh
    overlay = draw.render_overlay(None if image is None else image[None], one(hands), one(objects), K,
                                  image_size=(h, w))[0]
    side = draw.render_side_view(one(hands), one(objects), K, (h, w), centroid=centroid)[0]
    return overlay, side


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]):
        raise HodataError(f"{path}: cannot write the thumbnail; check that the report folder is writable")


# ----------------------------------------------------------------------------- the page


def quality_svg(scores: Sequence[Optional[float]], raised: Sequence[Sequence[str]], frame_ids: Sequence[str],
                width: int = 180, height: int = 44) -> str:
    """Per-frame quality as an inline SVG line plot: y from 0 (bottom) to 1 (top), one point
    per frame (red where the frame raised a flag, a tooltip with frame, score and flags),
    gaps where a frame has no score."""
    pad = 4
    T = len(scores)

    left = 12   # room for the axis labels

    def x(t: int) -> float:
        return left + (width - left - pad) * (t / (T - 1) if T > 1 else 0.5)

    def y(s: float) -> float:
        return pad + (height - 2 * pad) * (1.0 - min(max(s, 0.0), 1.0))

    parts = [f'<svg class="qplot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="per-frame quality">',
             f'<rect x="0" y="0" width="{width}" height="{height}" class="qbg"/>',
             f'<line x1="{left}" y1="{y(0.5):.1f}" x2="{width - pad}" y2="{y(0.5):.1f}" class="qmid"/>',
             f'<text x="{left - 3}" y="{y(1.0) + 3:.1f}" class="qax">1</text>',
             f'<text x="{left - 3}" y="{y(0.0) + 3:.1f}" class="qax">0</text>']
    run: list[str] = []
    for t, s in enumerate(list(scores) + [None]):
        if s is not None:
            run.append(f"{x(t):.1f},{y(s):.1f}")
        elif run:
            parts.append(f'<polyline points="{" ".join(run)}" class="qline"/>')
            run = []
    for t, s in enumerate(scores):
        if s is None:
            continue
        flags = ", ".join(raised[t]) if t < len(raised) else ""
        tip = f"frame {frame_ids[t]}: {s:.3f}" + (f" (flags: {flags})" if flags else "")
        cls = "qpt bad" if flags else "qpt"
        parts.append(f'<circle cx="{x(t):.1f}" cy="{y(s):.1f}" r="2.2" class="{cls}">'
                     f"<title>{html.escape(tip)}</title></circle>")
    parts.append("</svg>")
    return "".join(parts)


def _fmt(value: Optional[float], fmt: str = "{:.3g}") -> str:
    return "—" if value is None else fmt.format(value)


_CSS = """
body{font:14px/1.35 system-ui,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} .sub{color:#555;margin:0 0 12px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #ddd;padding:6px 8px;vertical-align:top;text-align:left}
th{background:#eee;position:sticky;top:0}
td.q{font:600 18px/1.2 system-ui,sans-serif;white-space:nowrap}
.qbad{color:#b00020} .qmed{color:#a86400} .qgood{color:#1b7a1b}
img.thumb{display:block;width:min(15vw,320px);height:auto;border:1px solid #ccc}
.qplot .qbg{fill:#f4f4f4} .qplot .qax{font-size:8px;fill:#999;text-anchor:end} .qplot .qmid{stroke:#ccc;stroke-dasharray:3 3}
.qplot .qline{fill:none;stroke:#3366cc;stroke-width:1.5} .qplot .qpt{fill:#3366cc} .qplot .qpt.bad{fill:#d62728}
.flag{display:inline-block;background:#fde0e0;color:#900;border-radius:3px;padding:0 5px;margin:1px;font-size:12px}
.none{color:#888} .kv{font-size:12px;border:0} .kv td{border:0;padding:0 6px 0 0;white-space:nowrap}
.small{font-size:12px;color:#555} #broken{color:#b00020;font-weight:600}
img.broken{outline:3px solid #d62728}
"""

# Reorders the rows in the browser (the select, or `index.html#sort=best` in the address), and
# marks the page once every image has loaded or failed: `data-images` and
# `data-images-broken` on <body> (tests read them), and a warning line when any is broken.
_SCRIPT = """
function hodataSort(order) {
  var body = document.querySelector('#clips tbody');
  var rows = Array.prototype.slice.call(body.querySelectorAll('tr.clip'));
  function quality(r) { var v = r.getAttribute('data-quality'); return v === '' ? null : parseFloat(v); }
  function name(a, b) {
    var x = a.getAttribute('data-name'), y = b.getAttribute('data-name');
    return x < y ? -1 : x > y ? 1 : 0;
  }
  rows.sort(function (a, b) {
    if (order === 'name') return name(a, b);
    var qa = quality(a), qb = quality(b);
    if (qa === null || qb === null) return (qa === null) - (qb === null) || name(a, b);
    return (order === 'best' ? qb - qa : qa - qb) || name(a, b);
  });
  rows.forEach(function (r, i) { r.cells[0].textContent = String(i + 1); body.appendChild(r); });
  document.body.setAttribute('data-order', order);
}
document.addEventListener('DOMContentLoaded', function () {
  var select = document.getElementById('order');
  var wanted = /sort=(worst|best|name)/.exec(location.hash);
  if (wanted) { select.value = wanted[1]; hodataSort(wanted[1]); }
  select.addEventListener('change', function () { location.hash = 'sort=' + select.value; hodataSort(select.value); });
});
window.addEventListener('load', function () {
  var imgs = document.images, broken = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (!(imgs[i].complete && imgs[i].naturalWidth > 0)) { broken++; imgs[i].className += ' broken'; }
  }
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-images-broken', String(broken));
  if (broken) {
    document.getElementById('broken').textContent = broken + ' of ' + imgs.length +
      ' images did not load: keep the thumbs/ folder beside index.html';
  }
});
"""


def _quality_class(q: Optional[float]) -> str:
    if q is None:
        return "none"
    return "qbad" if q < 0.4 else "qmed" if q < 0.7 else "qgood"


def _kv_table(items: Mapping[str, str]) -> str:
    if not items:
        return '<span class="none">none</span>'
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in items.items())
    return f'<table class="kv">{rows}</table>'


def render_row(index: int, row: ClipRow) -> str:
    """One <tr> of the page."""
    e = html.escape
    q = row.quality
    quality = (f'<td class="q {_quality_class(q)}">{_fmt(q, "{:.2f}")}'
               f'<div>{quality_svg(row.frame_quality, row.frame_raised, row.frame_ids)}</div>'
               f'<div class="small">{len(row.frame_ids)} frames</div></td>')
    name = (f'<td><b>{e(row.clip_id)}</b><div class="small">method {e(row.method)}<br>sequence {e(row.sequence)}'
            f'<br>frames {e(row.frame_ids[0]) if row.frame_ids else ""}–{e(row.frame_ids[-1]) if row.frame_ids else ""}'
            "</div>")
    if row.video:
        name += f'<div><a href="{e(row.video, quote=True)}">MP4</a></div>'
    else:
        name += '<div class="small none">no MP4 (hodata report --videos)</div>'
    name += "</td>"
    shown = row.frame_ids[row.shown_frame] if row.frame_ids else ""
    caption = f'<div class="small">frame {e(shown)} (lowest quality)</div>'
    if row.overlay and row.side:
        alt = e(f"{row.clip_id} frame {shown}", quote=True)
        overlay = f'<td>{caption}<img class="thumb" src="{e(row.overlay, quote=True)}" alt="overlay {alt}"></td>'
        side = f'<td><div class="small">side view (90°)</div><img class="thumb" src="{e(row.side, quote=True)}" ' \
               f'alt="side view {alt}"></td>'
    else:
        overlay = f'<td colspan="2" class="none">no thumbnail: {e(row.problem)}</td>'
        side = ""
    losses = _kv_table({k: _fmt(v) for k, v in row.losses.items()})
    flags = "".join(f'<span class="flag">{e(k)} ×{n}</span>' for k, n in sorted(row.flags.items())) \
        or '<span class="none">none</span>'
    signals = _kv_table({k: _fmt(v) for k, v in row.signals.items()})
    metrics = _kv_table({label: fmt.format(row.metrics[key]) for key, label, fmt in EVAL_COLUMNS if key in row.metrics})
    quality_attr = "" if q is None else repr(float(q))
    return (f'<tr class="clip" id="clip-{index}" data-clip="{e(row.clip_id, quote=True)}" '
            f'data-method="{e(row.method, quote=True)}" data-quality="{quality_attr}" '
            f'data-name="{e(row.method + chr(9) + row.clip_id, quote=True)}">'
            f"<td>{index}</td>{quality}{name}{overlay}{side}<td>{losses}</td><td>{flags}</td><td>{signals}</td>"
            f"<td>{metrics}</td></tr>")


_ORDER_LABELS = {"worst": "worst quality first", "best": "best quality first", "name": "by method and clip"}


def render_page(rows: Sequence[ClipRow], title: str, subtitle: str, order: str = "worst") -> str:
    """The whole index.html (rows in the order given; `order` preselects the sort control)."""
    e = html.escape
    header = "".join(f"<th>{h}</th>" for h in ("#", "quality", "clip", "overlay", "side view", "final losses",
                                                 "raised flags", "quality signals (mean)", "eval"))
    body = "\n".join(render_row(i + 1, row) for i, row in enumerate(rows))
    options = "".join(f'<option value="{k}"{" selected" if k == order else ""}>{v}</option>'
                      for k, v in _ORDER_LABELS.items())
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{e(title)}</title><style>{_CSS}</style></head>\n"
        f"<body data-clips=\"{len(rows)}\"><h1>{e(title)}</h1><p class=\"sub\">{e(subtitle)}</p>"
        f"<p><label>order <select id=\"order\">{options}</select></label></p><p id=\"broken\"></p>\n"
        f"<table id=\"clips\"><thead><tr>{header}</tr></thead><tbody>\n{body}\n</tbody></table>\n"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def build_report(
    results_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    sort: str = "worst",
    methods: Optional[Sequence[str]] = None,
    cache_dir: str | os.PathLike | None = None,
    mano_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    write_videos: bool = False,
    fps: float = 10.0,
    thumb_width: int = DEFAULT_THUMB_WIDTH,
    metrics_csv: str | os.PathLike | None = None,
    progress: Optional[Progress] = None,
) -> ReportSummary:
    """Write the review page of every fitted clip in `results_dir` into `output_dir`
    (default `<results_dir>/report`); see the module docstring for what it shows.

    sort: "worst" | "best" | "name"; methods: only these method folders; cache_dir: mesh cache
    of the object models; mano_dir: MANO files of fits made with MANO; root: dataset root to
    read frames from when the shards hold none (else meshes on mid-grey); write_videos:
    render an MP4 per clip into the report folder at `fps`; metrics_csv: the per-clip metrics
    of `hodata eval` (default `<results_dir>/metrics_per_clip.csv` when present). A clip whose
    meshes cannot be drawn keeps its row with the reason; index.html is written last,
    atomically.
    """
    from hodata.app import draw
    from hodata.app.evaluate import PER_CLIP_FILE, select_method_dirs

    results_dir = Path(results_dir)
    if sort not in SORT_ORDERS:
        raise HodataError(f"unknown sort order '{sort}'; choose one of {', '.join(SORT_ORDERS)}")
    if thumb_width < 16:
        raise HodataError(f"thumbnail width {thumb_width} is too small; use at least 16 pixels")
    method_dirs = select_method_dirs(results_dir, methods)
    if metrics_csv is not None:
        eval_metrics = read_eval_metrics(Path(metrics_csv), required=True)
    else:
        eval_metrics = read_eval_metrics(results_dir / PER_CLIP_FILE)
    from hodata.shards import read_manifest

    total = 0
    for folder in method_dirs.values():
        total += len((read_manifest(folder) or {}).get("clips") or {})
    if total == 0:
        raise HodataError(f"{results_dir}: the results hold no fitted clips; run `hodata fit` to completion first")
    out = Path(output_dir) if output_dir is not None else results_dir / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HodataError(f"{out}: cannot create the report folder ({exc.strerror or exc}); choose another -o") from None
    faces_cache: dict = {}
    rows: list[ClipRow] = []
    messages: list[str] = []
    videos = 0
    for method, folder in method_dirs.items():
        for fit, metas, frames in iter_method_clips(folder):
            row = clip_row(method, fit, metas)
            row.metrics = eval_metrics.get((method, fit.clip_id), {})
            if frames is None and root is not None:
                frames = draw.read_frames_from_root(root, fit)
            stem = _safe_name(fit.clip_id)
            thumbs = out / THUMBS_DIR / _safe_name(method)
            try:
                overlay, side = render_thumbnails(fit, frames, row.shown_frame, thumb_width, cache_dir, mano_dir,
                                                  faces_cache)
                _write_jpeg(thumbs / f"{stem}_overlay.jpg", overlay)
                _write_jpeg(thumbs / f"{stem}_side.jpg", side)
                row.overlay = _relative(thumbs / f"{stem}_overlay.jpg", out)
                row.side = _relative(thumbs / f"{stem}_side.jpg", out)
                video = out / VIDEOS_DIR / _safe_name(method) / f"{stem}.mp4"
                if write_videos:
                    hands, objects = draw.fit_scene_meshes(fit, cache_dir, mano_dir, faces_cache)
                    panels = draw.render_fit_panels(fit, hands, objects, frames)
                    video.parent.mkdir(parents=True, exist_ok=True)
                    draw.write_video(panels, video, fps)
                    videos += 1
            except OSError:   # the report folder itself (disk full, permissions): the cli names it
                raise
            except Exception as exc:  # noqa: BLE001 - one clip (a missing model, a bad mesh) never stops the page
                row.problem = str(exc) if isinstance(exc, HodataError) else f"{type(exc).__name__}: {exc}"
                messages.append(f"{method} {fit.clip_id}: {row.problem}")
            for candidate in (out / VIDEOS_DIR / _safe_name(method) / f"{stem}.mp4", folder / "overlays" / f"{stem}.mp4"):
                if candidate.is_file():
                    row.video = _relative(candidate, out)
                    break
            rows.append(row)
            if progress is not None:
                progress(len(rows), total, f"{method} {fit.clip_id}")
    rows = sort_rows(rows, sort)
    scored = [r.quality for r in rows if r.quality is not None]
    flagged = sum(1 for r in rows if r.flags)
    order = _ORDER_LABELS[sort]
    subtitle = (f"{len(rows)} clips of {', '.join(method_dirs)} from {results_dir}, {order}; "
                f"mean clip quality {_fmt(sum(scored) / len(scored) if scored else None, '{:.2f}')}; "
                f"{flagged} of them raise flags. Thumbnails: the clip's lowest-quality frame.")
    index = out / INDEX_NAME
    _write_text_atomic(index, render_page(rows, "hodata report", subtitle, sort))
    return ReportSummary(index_path=index, clips=rows, videos_written=videos, messages=messages)


__all__ = [
    "ClipRow", "ReportSummary", "SORT_ORDERS", "build_report", "clip_quality", "clip_row", "frame_quality",
    "quality_svg", "read_eval_metrics", "render_page", "render_thumbnails", "sort_rows",
]
