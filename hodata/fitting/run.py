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
    """
    from hodata.shards import ShardWriter

    config = config or FitConfig()
    init_config = init_config or ObjectInitConfig()
    output = Path(output)
    run_config = {"methods": list(methods), "fit": asdict(config), "object_init": asdict(init_config), "seed": seed,
                  **(source or {})}
    writers = {m: ShardWriter(output / m, config=run_config, overwrite=overwrite, max_samples=10_000) for m in methods}
    summary = RunSummary()
    try:
        for clip in clips:
            if all(clip.clip_id in writers[m].done_clips for m in methods):
                summary.resumed.append(clip.clip_id)
                if on_clip:
                    on_clip(clip.clip_id, "resumed")
                continue
            try:
                model = object_model_for(clip)
                inits = hand_init_provider(clip)
                layers = hand_layers_for(clip)
                missing = tuple(m for m in methods if clip.clip_id not in writers[m].done_clips)
                fits = fit_clip(clip, model, inits, layers, config, init_config, methods=missing, device=device,
                                seed=seed)
                images = clip_images(clip) if save_frames else None
                masks = clip_masks(clip) if save_frames else None
            except HodataError as exc:
                summary.failed[clip.clip_id] = str(exc)
                if on_clip:
                    on_clip(clip.clip_id, "failed")
                continue
            for m, fit in fits.items():
                quality = {"mask_iou": fit.loss_history.get("mask_iou_per_frame"),
                           "v2d_px": fit.loss_history.get("v2d_px_per_frame")}
                writers[m].write_clip(fit, images=images, masks=masks, quality=quality)
                writers[m].flush()
            summary.fitted.append(clip.clip_id)
            if keep_results:
                summary.results[clip.clip_id] = fits
            if on_clip:
                on_clip(clip.clip_id, "fitted")
    finally:
        for w in writers.values():
            w.close()
    return summary
