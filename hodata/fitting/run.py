"""Fitting a whole dataset into shard outputs, with resume and per-clip error isolation.

`hodata fit` and `hodata demo` call `fit_dataset`; commands only parse options and show
progress. One shard folder per method (`OUT/joint/`, `OUT/independent/`), one shard flushed
per clip, so an interrupted run loses at most the clip in progress.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import torch

from hodata.errors import HodataError
from hodata.types import Clip, FitResult

from .joint import FitConfig
from .object_init import ObjectInitConfig
from .pipeline import fit_clip


@dataclass
class RunSummary:
    fitted: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)   # already in every method's manifest
    failed: dict[str, str] = field(default_factory=dict)  # clip id -> message
    results: dict[str, dict[str, FitResult]] = field(default_factory=dict)  # clip -> method -> fit
    notes: list[str] = field(default_factory=list)     # resume checks: shards dropped, manifest rebuilt


def nonfinite_labels(fit: FitResult) -> list[str]:
    """Names of the label tensors of `fit` holding NaN or infinity (empty when all finite)."""
    bad = []
    parts = [(f"{h.side} hand", h) for h in fit.hands] + [(f"object {o.model_id}", o) for o in fit.objects]
    for label, state in parts:
        for name, value in vars(state).items():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad.append(f"{label} {name}")
    if isinstance(fit.K, torch.Tensor) and not bool(torch.isfinite(fit.K).all()):
        bad.append("K")
    return bad


def _clip_error(exc: BaseException) -> str:
    """One line for a failed clip: a HodataError's message, else the exception type and message."""
    if isinstance(exc, HodataError):
        return str(exc)
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}"


def clip_images(clip: Clip) -> np.ndarray:
    """The clip's RGB frames (T, H, W, 3) uint8, read once for the shards."""
    from hodata.datasets.base import read_rgb

    return np.stack([read_rgb(p) for p in clip.image_paths])


def clip_masks(clip: Clip) -> Optional[np.ndarray]:
    """Label masks (T, H, W) uint8 for the shards: 1 object, 2 hand, 0 background."""
    if clip.object_masks is None:
        return None
    labels = (clip.object_masks > 0).to(torch.uint8)
    if clip.hand_masks is not None:
        labels = torch.where(clip.hand_masks.bool(), torch.full_like(labels, 2), labels)
    return labels.cpu().numpy()


def fit_dataset(
    clips: Iterable[Clip],
    object_model_for: Callable[[Clip], object],
    hand_init_provider: Callable[[Clip], list],
    hand_layers_for: Callable[[Clip], dict],
    output: Path,
    methods: tuple[str, ...] = ("joint",),
    config: FitConfig | None = None,
    init_config: ObjectInitConfig | None = None,
    device: str = "auto",
    overwrite: bool = False,
    save_frames: bool = True,
    seed: int = 0,
    on_clip: Callable[[str, str], None] | None = None,
    keep_results: bool = False,
    source: dict | None = None,
) -> RunSummary:
    """Fit every clip and write its labels; bad clips are skipped, counted and explained.

    on_clip(clip_id, status) is called after each clip ("fitted", "resumed", "failed");
    source (dataset name, root, split) is recorded in the manifests so `hodata eval` can find
    the ground truth without being told again.

    Failure isolation: any exception while fitting or encoding one clip (not only
    HodataError) marks that clip failed with a one-line message and the run goes on; a
    method whose fit holds a NaN or infinite label is not written (the clip is failed for
    it, the other methods' labels are written). What stops the run: an output that cannot be
    written (`OutputWriteError`: disk full, read-only), a second run holding the output
    (each method folder's writer lock), an interrupt (KeyboardInterrupt, SystemExit). The
    open shards are finalised with whole clips on the way out, so a rerun resumes.
    """
    from hodata.shards import OutputWriteError, ShardWriter

    config = config or FitConfig()
    init_config = init_config or ObjectInitConfig()
    output = Path(output)
    run_config = {"methods": list(methods), "fit": asdict(config), "object_init": asdict(init_config), "seed": seed,
                  **(source or {})}
    summary = RunSummary()
    writers: dict = {}
    try:
        for m in methods:
            writers[m] = ShardWriter(output / m, config=run_config, overwrite=overwrite, max_samples=10_000,
                                     exclusive=True)
            summary.notes += [f"{m}: {note}" for note in writers[m].resume_notes]
        for clip in clips:
            missing = tuple(m for m in methods if clip.clip_id not in writers[m].done_clips)
            if not missing:
                summary.resumed.append(clip.clip_id)
                if on_clip:
                    on_clip(clip.clip_id, "resumed")
                continue
            problems = []
            try:
                model = object_model_for(clip)
                inits = hand_init_provider(clip)
                layers = hand_layers_for(clip)
                fits = fit_clip(clip, model, inits, layers, config, init_config, methods=missing, device=device,
                                seed=seed)
                images = clip_images(clip) if save_frames else None
                masks = clip_masks(clip) if save_frames else None
            except Exception as exc:  # noqa: BLE001 - one bad clip never stops a run
                problems.append(_clip_error(exc))
                fits = {}
            for m, fit in fits.items():
                bad = nonfinite_labels(fit)
                if bad:  # the finite-value gate: nothing non-finite reaches a shard
                    problems.append(f"{m}: the fit diverged (NaN or infinity in {', '.join(bad)}); not written")
                    continue
                quality = {"mask_iou": fit.loss_history.get("mask_iou_per_frame"),
                           "v2d_px": fit.loss_history.get("v2d_px_per_frame")}
                try:
                    writers[m].write_clip(fit, images=images, masks=masks, quality=quality)
                    writers[m].flush()
                except OutputWriteError:
                    raise
                except Exception as exc:  # noqa: BLE001 - e.g. keys already written by clips of other windows
                    problems.append(f"{m}: {_clip_error(exc)}")
            if problems:
                summary.failed[clip.clip_id] = "; ".join(problems)
                status = "failed"
            else:
                summary.fitted.append(clip.clip_id)
                status = "fitted"
                if keep_results:
                    summary.results[clip.clip_id] = fits
            if on_clip:
                on_clip(clip.clip_id, status)
    except BaseException:
        _close_all(writers.values(), raise_first=False)  # the error on its way out is the one to report
        raise
    _close_all(writers.values())
    return summary


def _close_all(writers, raise_first: bool = True) -> None:
    """Close every writer (finalising whole clips, releasing locks); with raise_first the first
    error is raised after all were tried."""
    first = None
    for w in writers:
        try:
            w.close()
        except Exception as exc:  # noqa: BLE001
            first = first or exc
    if first is not None and raise_first:
        raise first
