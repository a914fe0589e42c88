"""Several clips in one batched problem (issue 14): B clips fitted side by side, B * T rows.

The joint fit already runs K object-pose candidates side by side as K blocks of T rows
(scene.py, joint.py); batched clips are the same layout with different evidence per block:

    rows b*T ... b*T + T - 1 = clip b        (clip-major, B * T rows)
    K        (B * T, 3, 3)   each clip's camera, repeated over its frames
    image    (B, 2)          each clip's (H, W), for the v2d normalisation
    hands    (B * T, ...)    each clip's hand init; betas (B, 10); one scale per clip
    object   (B * T, ...)    each clip's object init, ROI cameras and targets; one scale per clip

Every term of the objective is reduced per block (joint.compute_terms returns (B,) values)
and the optimiser minimises their sum: the sum has independent gradients per clip and Adam
updates each parameter element from its own gradient alone, so clip b's fit is the fit it
would get alone, up to float rounding (tests/test_batched.py states the tolerance), and
does not depend on the other clips of its batch. One optimiser and one set of kernels over
B * T rows keeps a GPU busy where one 10-frame clip leaves it idle.

Clips can share a batch when they share what is not per row (`batch_key`): the object model
(mesh, SDF: one HO-3D object, one Epic/Core50 category mesh), the hand sides and hand model,
the frame count, the ROI size and which 2D hand targets they have. Other clips go to other
batches; a clip alone in its group is fitted as today (`pipeline.fit_prepared`).

What stays per clip: the object initialisation (`pipeline.prepare_clip`, paper Sec. 3.2: its
hypotheses are already one render batch per clip; bench/RESULTS.md "Batched clips" measures
its share) and the result (`pipeline.prepared_fit_result`: label quality, per-clip loss
histories). Object-pose candidates (FitConfig.object_candidates > 1) are refused with batched
clips (HodataError): their refinement and choice run per clip.

Non-finite losses: run_stage's rollback is global to its problem, so one diverging clip would
stop its whole batch. A batch whose optimiser met a non-finite value is therefore fitted
again one clip at a time, as would have happened without batching: every clip then gets
exactly its unbatched result (the diverging one its rollback and flag). A batch whose fit
raises is fitted one by one too, so one bad clip fails alone.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from hodata.device import resolve_device
from hodata.errors import HodataError
from hodata.types import Clip, FitResult, HandInit

from .joint import FitConfig, HandEvidence, ObjectEvidence, fit_hands_and_objects
from .object_init import ObjectInitConfig
from .pipeline import PreparedClip, check_methods, fit_prepared, prepare_clip, prepared_fit_result


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha1(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def batch_key(prepared: PreparedClip) -> tuple:
    """What clips of one batch must share: the object model (content of its vertices and faces),
    the hand sides with their hand model and pose space, the frame count, the ROI target size,
    which optional 2D hand targets exist, dtype and device. Everything else is per row."""
    ev = prepared.evidence
    hands = tuple((e.init.side, getattr(e.layer, "model_name", ""), type(e.layer).__name__,
                   int(e.init.hand_pose.shape[-1]), e.init.keypoints_2d is not None, e.init.boxes is not None,
                   int(e.init.vertices_2d.shape[-2]), int(e.init.betas.numel()))
                  for e in prepared.hand_evidence)
    return (ev.model_id, _digest(ev.vertices), _digest(ev.faces), ev.reference_size, ev.category, hands,
            len(prepared.clip), tuple(ev.target.shape[1:]), str(ev.vertices.dtype), str(ev.vertices.device))


def group_batches(prepared: Sequence[PreparedClip], batch_clips: int) -> list[list[int]]:
    """Indices of `prepared` in batches of at most `batch_clips` clips with one `batch_key`,
    in order of first appearance (a group larger than batch_clips is split in order)."""
    if batch_clips < 1:
        raise HodataError(f"batch_clips must be >= 1, got {batch_clips}")
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(prepared):
        groups.setdefault(batch_key(p), []).append(i)
    return [members[i : i + batch_clips] for members in groups.values() for i in range(0, len(members), batch_clips)]


def _check_candidates(config: FitConfig, batch_clips: int) -> None:
    if batch_clips > 1 and config.object_candidates > 1:
        raise HodataError(f"object-pose candidates ({config.object_candidates}) are refined and chosen per clip: "
                          "fit them with batch clips 1, or batch with object_candidates 1")
    if batch_clips > 1 and tuple(config.hand_starts) != ("init",):
        raise HodataError(f"hand starts {','.join(config.hand_starts)} are fitted per clip: fit them with batch "
                          "clips 1, or batch with hand_starts=('init',)")


def _stack_init(inits: list[HandInit]) -> HandInit:
    """One hand's inits of B clips as one init of B * T rows (betas (B, 10))."""
    first = inits[0]
    rows = {name: torch.cat([getattr(h, name) for h in inits])
            for name in ("global_orient", "hand_pose", "transl", "vertices_2d", "boxes", "keypoints_2d")
            if getattr(first, name) is not None}
    return HandInit(side=first.side, betas=torch.stack([h.betas.reshape(-1) for h in inits]),
                    provider=first.provider, **rows)


@dataclass
class StackedClips:
    """B prepared clips as one problem of B * T rows (module docstring)."""

    hand_evidence: list[HandEvidence]
    object_evidence: ObjectEvidence
    object_init: tuple[torch.Tensor, torch.Tensor]  # (B * T, 3, 3), (B * T, 3)
    K: torch.Tensor                                 # (B * T, 3, 3)
    image_size: torch.Tensor                        # (B, 2)


def stack_clips(prepared: Sequence[PreparedClip]) -> StackedClips:
    """Side-by-side evidence of clips sharing one `batch_key` (clip-major rows). The object's
    mesh, SDF and the hand layers are the first clip's (the key makes them the same)."""
    keys = {batch_key(p) for p in prepared}
    if len(keys) != 1:
        raise ValueError("clips of one batch must share the object model, hand sides and frame count (batch_key)")
    first = prepared[0]
    hands = [HandEvidence(e.layer, _stack_init([p.hand_evidence[i].init for p in prepared]))
             for i, e in enumerate(first.hand_evidence)]
    objects = ObjectEvidence(first.evidence.vertices, first.evidence.faces, first.evidence.sdf,
                             torch.cat([p.evidence.K_roi for p in prepared]),
                             torch.cat([p.evidence.target for p in prepared]), first.evidence.reference_size,
                             first.evidence.model_id, first.evidence.category)
    init = (torch.cat([p.candidate_rotations[0] for p in prepared]),
            torch.cat([p.candidate_translations[0] for p in prepared]))
    K = torch.cat([p.K.expand(len(p.clip), 3, 3) for p in prepared])
    image_size = torch.tensor([list(p.clip.image_size) for p in prepared], dtype=K.dtype, device=K.device)
    return StackedClips(hands, objects, init, K, image_size)


def clip_report(report: dict, index: int, clips: int) -> dict:
    """Clip `index`'s report from a batched fit's: its own loss histories and final values."""
    history, final = {}, {}
    for key, per_clip in report.get("per_clip_history", {}).items():
        history[key] = list(per_clip[index])
        if per_clip[index]:
            final[key.split("/", 1)[1]] = per_clip[index][-1]  # later stages overwrite, as fit_hands_and_objects
    seconds = {name: s / clips for name, s in report["seconds"].items()}
    return {"history": history, "final": final, "flags": dict(report["flags"]), "seconds": seconds}


def fit_batch(prepared: Sequence[PreparedClip], config: FitConfig, methods: tuple[str, ...]
              ) -> list[dict[str, FitResult]] | None:
    """Fit `methods` on B prepared clips sharing one `batch_key` in one batched problem ->
    per clip method -> FitResult, or None when the optimiser met a non-finite value (the
    caller fits the clips one by one; module docstring). A clip's fit time is its share of
    the batch's."""
    _check_candidates(config, len(prepared))
    clips = len(prepared)
    stacked = stack_clips(prepared)
    results: list[dict[str, FitResult]] = [{} for _ in prepared]
    for method in methods:
        start = time.perf_counter()
        hands, objects, report = fit_hands_and_objects(stacked.hand_evidence, [stacked.object_evidence],
                                                       [stacked.object_init], stacked.K, stacked.image_size, config,
                                                       joint=(method == "joint"), clips=clips)
        share = (time.perf_counter() - start) / clips
        if report["flags"]["nonfinite_optimiser"]:
            return None
        for b, p in enumerate(prepared):
            own_hands = [h.candidate(b) for h in hands]
            own_objects = [o.candidate(b) for o in objects]
            results[b][method] = prepared_fit_result(p, own_hands, own_objects, clip_report(report, b, clips), method,
                                                     config, share)
    return results


def fit_prepared_clips(prepared: Sequence[PreparedClip], config: FitConfig, methods: tuple[str, ...],
                       batch_clips: int) -> list[dict[str, FitResult] | Exception]:
    """Fit prepared clips in batches of at most `batch_clips` (`group_batches`) -> per clip, in
    order, method -> FitResult or the Exception its fit raised. A batch that raises or
    diverges is fitted again one clip at a time, so a clip fails only on its own."""
    check_methods(methods)
    _check_candidates(config, batch_clips)
    out: list[dict[str, FitResult] | Exception | None] = [None] * len(prepared)
    for members in group_batches(prepared, batch_clips):
        batch = [prepared[i] for i in members]
        fitted = None
        if len(batch) > 1:
            try:
                fitted = fit_batch(batch, config, methods)
            except Exception:  # noqa: BLE001 - refit one by one: the clip at fault fails alone below
                fitted = None
        if fitted is None:
            fitted = []
            for p in batch:
                try:
                    fitted.append(fit_prepared(p, config, methods))
                except Exception as exc:  # noqa: BLE001 - one bad clip never stops the others
                    fitted.append(exc)
        for i, result in zip(members, fitted):
            out[i] = result
    return out


def fit_clips(
    items: Sequence[tuple[Clip, object, object, dict]],
    config: FitConfig | None = None,
    init_config: ObjectInitConfig | None = None,
    methods: tuple[str, ...] = ("joint",),
    device: str | torch.device = "auto",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    batch_clips: int = 4,
) -> list[dict[str, FitResult] | Exception]:
    """Fit several clips, B at a time in one batched problem (module docstring).

    items: per clip (clip, clip_evidence, object_model, hand_layers), as `fit_clip` takes them;
    methods, device, seed, dtype: as `fit_clip` (each clip's object init uses `seed`, as it
    would alone). Returns per clip, in order, method -> FitResult, or the Exception that
    clip's preparation (evidence checks, object init) or fit raised. batch_clips 1 fits each
    clip as `fit_clip` does.
    """
    config = config or FitConfig()
    init_config = init_config or ObjectInitConfig()
    device = resolve_device(device)
    check_methods(methods)
    _check_candidates(config, batch_clips)
    prepared, where = [], []
    out: list[dict[str, FitResult] | Exception | None] = [None] * len(items)
    for i, (clip, clip_evidence, model, layers) in enumerate(items):
        try:
            prepared.append(prepare_clip(clip, clip_evidence, model, layers, config, init_config, device, seed, dtype))
            where.append(i)
        except Exception as exc:  # noqa: BLE001 - a clip whose evidence fails is dropped from its batch
            out[i] = exc
    for i, result in zip(where, fit_prepared_clips(prepared, config, methods, batch_clips)):
        out[i] = result
    return out

