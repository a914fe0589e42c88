"""Fitting a whole dataset into shard outputs, with resume and per-clip error isolation.

`hodata fit` and `hodata demo` call `fit_dataset`; commands only parse options and show
progress. Per clip: the evidence provider turns the clip into ClipEvidence (boxes, masks,
one HandInit per hand), the hand layers come from the evidence's hand sides and the active
hand model, `hodata.fitting.fit_clip` fits, and the labels are written. One shard folder per
method (`OUT/joint/`, `OUT/independent/`), one shard flushed per clip, so an interrupted run
loses at most the clip in progress.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import torch

from hodata.errors import HodataError
from hodata.evidence.types import ClipEvidence
from hodata.fitting import FitConfig, ObjectInitConfig, fit_clip
from hodata.types import Clip, FitResult


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
    """The clip's RGB frames (T, H, W, 3) uint8 for the shards: those the adapter or the
    evidence provider already decoded (`Clip.images`), else decoded now."""
    from hodata.datasets.base import clip_frames

    return clip_frames(clip)


def evidence_masks(evidence: ClipEvidence) -> Optional[np.ndarray]:
    """Label masks (T, H, W) uint8 of the evidence the fit used, for the shards: 1 object,
    2 hand, 0 background."""
    if evidence.object_masks is None:
        return None
    labels = (evidence.object_masks > 0).to(torch.uint8)
    if evidence.hand_masks is not None:
        labels = torch.where(evidence.hand_masks.bool(), torch.full_like(labels, 2), labels)
    return labels.cpu().numpy()


@dataclass
class ClipOutcome:
    """What fitting one clip produced, ready to be written: the finite fits per method, the
    frames and evidence masks for the shards (None without --save-frames), and one message per
    problem (a failed fit, a diverged method). Plain data, so a Ray worker can send it back."""

    clip_id: str
    fits: dict[str, FitResult] = field(default_factory=dict)
    images: Optional[np.ndarray] = None
    masks: Optional[np.ndarray] = None
    problems: list[str] = field(default_factory=list)


def fit_one_clip(
    clip: Clip,
    object_model_for: Callable[[Clip], object],
    evidence_for: Callable[[Clip], ClipEvidence],
    hand_layers_for: Callable[[list[str]], dict],
    methods: tuple[str, ...],
    config: FitConfig,
    init_config: ObjectInitConfig,
    device: str = "auto",
    save_frames: bool = True,
    seed: int = 0,
) -> ClipOutcome:
    """Fit `methods` on one clip; never raises an Exception (a failure becomes a problem of
    the outcome). The finite-value gate drops a method whose labels hold NaN or infinity.
    Shared by the in-process loop (`fit_dataset`) and the Ray workers (hodata.app.parallel)."""
    outcome = ClipOutcome(clip.clip_id)
    try:
        model = object_model_for(clip)
        evidence = evidence_for(clip)
        layers = hand_layers_for(evidence.sides)
        fits = fit_clip(clip, evidence, model, layers, config, init_config, methods=methods, device=device,
                        seed=seed)
        outcome.images = clip_images(clip) if save_frames else None
        outcome.masks = evidence_masks(evidence) if save_frames else None
    except Exception as exc:  # noqa: BLE001 - one bad clip never stops a run
        outcome.problems.append(_clip_error(exc))
        fits = {}
    _keep_finite(outcome, fits)
    return outcome


def _keep_finite(outcome: ClipOutcome, fits: dict[str, FitResult]) -> None:
    """The finite-value gate: only fits without NaN or infinity in their labels reach a shard."""
    for m, fit in fits.items():
        bad = nonfinite_labels(fit)
        if bad:
            outcome.problems.append(f"{m}: the fit diverged (NaN or infinity in {', '.join(bad)}); not written")
            continue
        outcome.fits[m] = fit


def fit_clip_batch(
    clips: list[Clip],
    object_model_for: Callable[[Clip], object],
    evidence_for: Callable[[Clip], ClipEvidence],
    hand_layers_for: Callable[[list[str]], dict],
    methods: tuple[str, ...],
    config: FitConfig,
    init_config: ObjectInitConfig,
    device: str = "auto",
    save_frames: bool = True,
    seed: int = 0,
    batch_clips: int = 4,
) -> list[ClipOutcome]:
    """`fit_one_clip` for several clips fitted in batches of up to `batch_clips`
    (hodata.fitting.batched.fit_clips) -> one ClipOutcome per clip, in order; never raises an
    Exception. A clip whose evidence, object model or object init fails is dropped from its
    batch with its problem; the others are fitted without it."""
    from hodata.fitting.batched import fit_clips

    outcomes = [ClipOutcome(c.clip_id) for c in clips]
    items, where = [], []
    for i, clip in enumerate(clips):
        try:
            evidence = evidence_for(clip)
            items.append((clip, evidence, object_model_for(clip), hand_layers_for(evidence.sides)))
            where.append(i)
        except Exception as exc:  # noqa: BLE001 - one bad clip never stops a run
            outcomes[i].problems.append(_clip_error(exc))
    try:
        results = fit_clips(items, config, init_config, methods, device, seed, batch_clips=batch_clips)
    except Exception as exc:  # noqa: BLE001 - e.g. a configuration batching refuses: every clip says why
        results = [exc] * len(items)
    for i, (clip, evidence, _, _), result in zip(where, items, results):
        outcome = outcomes[i]
        try:
            if isinstance(result, Exception):
                raise result
            outcome.images = clip_images(clip) if save_frames else None
            outcome.masks = evidence_masks(evidence) if save_frames else None
        except Exception as exc:  # noqa: BLE001
            outcome.problems.append(_clip_error(exc))
            result = {}
        _keep_finite(outcome, result)
    return outcomes


def write_outcome(writers: dict, outcome: ClipOutcome, summary: RunSummary, keep_results: bool = False,
                  on_clip: Callable[[str, str], None] | None = None) -> str:
    """Write a clip's fits (one shard flushed per method) and record the clip in `summary`;
    returns its status ("fitted" or "failed"). `OutputWriteError` stops the run; any other
    error writing one clip fails that clip only."""
    from hodata.shards import EncodedFrames, OutputWriteError

    problems = list(outcome.problems)
    frames: dict[int, EncodedFrames] = {}  # jpeg quality -> the clip's frames encoded once for every method
    for m, fit in outcome.fits.items():
        try:  # the fit carries its per-frame label quality (FitResult.quality)
            quality = writers[m].jpeg_quality
            if quality not in frames:
                frames[quality] = EncodedFrames.encode(outcome.images, outcome.masks, quality)
            writers[m].write_clip(fit, images=frames[quality])
            writers[m].flush()
        except OutputWriteError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. keys already written by clips of other windows
            problems.append(f"{m}: {_clip_error(exc)}")
    if problems:
        summary.failed[outcome.clip_id] = "; ".join(problems)
        status = "failed"
    else:
        summary.fitted.append(outcome.clip_id)
        status = "fitted"
        if keep_results:
            summary.results[outcome.clip_id] = outcome.fits
    if on_clip:
        on_clip(outcome.clip_id, status)
    return status


def open_writers(output: Path, methods: tuple[str, ...], run_config: dict, overwrite: bool,
                 summary: RunSummary) -> dict:
    """One exclusive ShardWriter per method folder (resume checks noted in `summary`); on a
    failure the writers opened so far are closed again."""
    from hodata.shards import ShardWriter

    writers: dict = {}
    try:
        for m in methods:
            writers[m] = ShardWriter(output / m, config=run_config, overwrite=overwrite, max_samples=10_000,
                                     exclusive=True)
            summary.notes += [f"{m}: {note}" for note in writers[m].resume_notes]
    except BaseException:
        _close_all(writers.values(), raise_first=False)
        raise
    return writers


def missing_methods(writers: dict, methods: tuple[str, ...], clip_id: str) -> tuple[str, ...]:
    """The methods whose output does not hold `clip_id` yet (empty: the clip is resumed)."""
    return tuple(m for m in methods if clip_id not in writers[m].done_clips)


def fit_dataset(
    clips: Iterable[Clip],
    object_model_for: Callable[[Clip], object],
    evidence_for: Callable[[Clip], ClipEvidence],
    hand_layers_for: Callable[[list[str]], dict],
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
    parallel=None,
    batch_clips: int = 1,
) -> RunSummary:
    """Fit every clip and write its labels; bad clips are skipped, counted and explained.

    object_model_for(clip) -> ObjectModel; evidence_for(clip) -> ClipEvidence with a HandInit
    per hand (an evidence provider, hodata.app.providers); hand_layers_for(sides) -> side ->
    fitting hand layer of the active hand model. Fitting sees only the evidence, the model
    and the layers, never the clip's ground truth.

    on_clip(clip_id, status) is called after each clip ("fitted", "resumed", "failed");
    source (dataset name, root, split) is recorded in the manifests so `hodata eval` can find
    the ground truth without being told again. parallel (a hodata.app.parallel.RayOptions)
    fits the clips as Ray tasks instead of one after another in this process.

    batch_clips B > 1 fits up to B clips in one batched problem (hodata.fitting.batched): clips
    wait until B of them share the object model, frame count, hand sides and missing methods
    (at most 2 B clips wait: beyond that the fullest group is fitted as it is; the rest are
    fitted at the end, in smaller batches or alone), and each is then written as it would be
    alone. An interrupted run loses at most the clips waiting for their batch. Not with
    parallel.

    Failure isolation: any exception while fitting or encoding one clip (not only
    HodataError) marks that clip failed with a one-line message and the run goes on; a
    method whose fit holds a NaN or infinite label is not written (the clip is failed for
    it, the other methods' labels are written). What stops the run: an output that cannot be
    written (`OutputWriteError`: disk full, read-only), a second run holding the output
    (each method folder's writer lock), an interrupt (KeyboardInterrupt, SystemExit; the
    summary so far rides on it as `.summary`). The open shards are finalised with whole clips
    on the way out, so a rerun resumes.
    """
    config = config or FitConfig()
    init_config = init_config or ObjectInitConfig()
    output = Path(output)
    run_config = {"methods": list(methods), "fit": asdict(config), "object_init": asdict(init_config), "seed": seed,
                  **(source or {})}
    if batch_clips < 1:
        raise HodataError(f"--batch-clips must be >= 1, got {batch_clips}")
    if batch_clips > 1 and config.object_candidates > 1:
        raise HodataError(f"--batch-clips > 1 fits one object pose per clip; object-pose candidates "
                          f"({config.object_candidates}) are refined and chosen per clip: use --batch-clips 1")
    if batch_clips > 1 and tuple(config.hand_starts) != ("init",):
        raise HodataError(f"--batch-clips > 1 fits each hand from its init; hand starts "
                          f"({','.join(config.hand_starts)}) are fitted per clip: use --batch-clips 1, or "
                          "--hand-starts init to batch")
    if parallel is not None and batch_clips > 1:
        raise HodataError("--batch-clips > 1 fits its batches in this process; it does not combine with --workers "
                          "or --ray (one clip per Ray task): drop one of them")
    if parallel is not None:
        from hodata.app.parallel import fit_dataset_ray

        return fit_dataset_ray(clips, object_model_for, evidence_for, hand_layers_for, output, methods, config,
                               init_config, device, overwrite, save_frames, seed, on_clip, keep_results, run_config,
                               parallel)
    summary = RunSummary()
    writers: dict = {}
    waiting: dict[tuple, list[Clip]] = {}  # batch_clips > 1: clips waiting for a batch, by what a batch shares

    def fit_waiting(key):
        for outcome in fit_clip_batch(waiting.pop(key), object_model_for, evidence_for, hand_layers_for, key[0],
                                      config, init_config, device, save_frames, seed, batch_clips):
            write_outcome(writers, outcome, summary, keep_results, on_clip)

    try:
        writers = open_writers(output, methods, run_config, overwrite, summary)
        for clip in clips:
            missing = missing_methods(writers, methods, clip.clip_id)
            if not missing:
                summary.resumed.append(clip.clip_id)
                if on_clip:
                    on_clip(clip.clip_id, "resumed")
                continue
            if batch_clips > 1:
                key = (missing, clip.object_model_id, len(clip), tuple(clip.hand_sides))
                waiting.setdefault(key, []).append(clip)
                if len(waiting[key]) >= batch_clips:
                    fit_waiting(key)
                elif sum(map(len, waiting.values())) > 2 * batch_clips:  # bounded memory: fit the fullest group
                    fit_waiting(max(waiting, key=lambda k: len(waiting[k])))
                continue
            outcome = fit_one_clip(clip, object_model_for, evidence_for, hand_layers_for, missing, config,
                                   init_config, device, save_frames, seed)
            write_outcome(writers, outcome, summary, keep_results, on_clip)
        for key in list(waiting):
            fit_waiting(key)
    except BaseException as exc:
        _close_all(writers.values(), raise_first=False)  # the error on its way out is the one to report
        if isinstance(exc, KeyboardInterrupt):
            exc.summary = summary
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


def build_configs(steps1: int, steps2: int, roi_size: int, hypotheses: int, disabled: tuple[str, ...],
                  hand_starts: str | None = None):
    """(FitConfig, ObjectInitConfig) from the options commands expose. hand_starts: comma-separated
    names (FitConfig.hand_starts; None: the default)."""
    starts = {} if hand_starts is None else {
        "hand_starts": tuple(s.strip() for s in hand_starts.split(",") if s.strip())}
    config = FitConfig(steps_stage1=steps1, steps_stage2=steps2, roi_size=roi_size, disabled=disabled, **starts)
    return config, ObjectInitConfig(n_hypotheses=hypotheses)


def run_fit(
    dataset,
    provider,
    output: Path,
    methods: tuple[str, ...],
    config: FitConfig,
    init_config: ObjectInitConfig,
    device: str = "auto",
    overwrite: bool = False,
    save_frames: bool = True,
    seed: int = 0,
    max_clips: Optional[int] = None,
    on_clip: Callable[[str, str], None] | None = None,
    keep_results: bool = False,
    parallel=None,
    batch_clips: int = 1,
) -> RunSummary:
    """Fit a dataset adapter's clips (at most `max_clips`) with an EvidenceProvider
    (hodata.app.providers) into `output`. The manifest records the dataset, its root and
    split, and the evidence and hand-init providers. parallel, batch_clips: see `fit_dataset`."""
    import itertools

    from hodata.objects import ensure_object_model

    total = len(dataset) if max_clips is None else min(max_clips, len(dataset))
    clips = itertools.islice(iter(dataset), total)
    models: dict[str, object] = {}

    def object_model_for(clip: Clip):
        if hasattr(dataset, "model_for_clip"):
            return dataset.model_for_clip(clip)
        # category meshes from the catalog (Core50, Epic-Kitchens): prepared once, then cached
        if clip.object_model_id not in models:
            models[clip.object_model_id] = ensure_object_model(clip.object_model_id,
                                                               getattr(dataset, "cache_dir", None))
        return models[clip.object_model_id]

    if getattr(dataset, "optimise_object_scale", False):
        config = replace(config, optimise_object_scale=True)
    source = {"dataset": getattr(dataset, "dataset_name", ""), "root": str(Path(dataset.root).resolve()),
              "split": getattr(dataset, "split", None), **provider.describe()}
    return fit_dataset(clips, object_model_for, provider, provider.layers, output, methods=methods, config=config,
                       init_config=init_config, device=device, overwrite=overwrite, save_frames=save_frames,
                       seed=seed, on_clip=on_clip, keep_results=keep_results, source=source, parallel=parallel,
                       batch_clips=batch_clips)
