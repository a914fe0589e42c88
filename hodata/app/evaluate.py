"""Evaluate a folder of fit results against a dataset's ground truth (`hodata eval`).

    report = evaluate_results("out/", "ho3d", root="/data/HO3D_v3", split="train")
    report.methods["joint"]["hand_vertex_cm"]        # frame-weighted mean over all clips

A results folder is what `hodata fit DATASET --output OUT` writes: one shard folder per
fitting method (`OUT/joint/`, `OUT/independent/`, each with its `manifest.json`). `results_dir`
may name that parent folder (every method folder in it is evaluated) or one method folder.

For every fitted clip the dataset adapter rebuilds the ground-truth `Clip` of the same
sequence and frame ids, and `hodata.metrics.summary.evaluate_fit` compares them. Metrics whose
ground truth the dataset lacks (HO-3D's hidden evaluation hands, Core50 / Epic-Kitchens
objects) are None ("absent", never 0). Penetration and contact need only the predicted
hand and object: they use the exact signed distance to the object's prepared (watertight)
mesh from the mesh cache, not its 32^3 grid, which under-reports penetration.

Outputs, in the results folder (or `output_dir`):
- `metrics.json`: `{method: {key: value for key in METRIC_KEYS}}` (values in the units of the
  key names, None when absent) plus an `"_info"` block (dataset, root, split, clips and hand
  models per method, the hand topology the hand metrics were computed on, hodata version);
  the underscore keeps it apart from method names.

Hand topology: the hand metrics compare the fitted hand's vertices with the ground truth's.
With MANO files (`--mano-dir`) both are MANO's 778 vertices and the numbers are those of the
HO-3D challenge; with the open hand (1287 vertices, no MANO correspondence) they are not
comparable with it, which `hand_topology_note` says (the eval table's title shows it).
- `metrics_per_clip.csv`: one row per (method, clip): method, clip_id, sequence, frames and
  every metric key (empty cell = absent).

`export_ho3d_predictions` writes the HO-3D challenge file (`pred.json` + zip) of one method;
see its docstring for the order, coordinates and the fallback for frames without a fit.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import torch

from hodata import __version__
from hodata.device import to_device
from hodata.errors import HodataError
from hodata.metrics.summary import METRIC_KEYS, aggregate, evaluate_fit
from hodata.shards.manifest import MANIFEST_NAME, read_manifest
from hodata.types import Clip, FitResult, HandState, ObjectState

METRICS_FILE = "metrics.json"
PER_CLIP_FILE = "metrics_per_clip.csv"
INFO_KEY = "_info"
# Datasets whose every frame shows hand-object contact (paper Table 2, Core50), which gives
# the ground truth of contact accuracy.
ALWAYS_IN_CONTACT = frozenset({"core50"})
# Datasets without 3D annotations: only the interaction metrics of the fits themselves
# (penetration, contact %) and contact accuracy against labels (Core50: every frame is in
# contact, or the per-frame labels of a --contact-labels file).
WITHOUT_GROUND_TRUTH = frozenset({"core50", "epic"})
# Number of names listed in an error before "and N more".
MAX_LISTED = 5
HO3D_NUM_VERTICES = 778

# progress(done, total, description)
Progress = Callable[[int, int, str], None]


@dataclass
class EvaluationReport:
    """What `evaluate_results` measured.

    methods: method -> aggregate over its clips ({key: float | None} over METRIC_KEYS, with
    `frames` the total); clips: one row per evaluated clip ({"method", "clip_id", "sequence",
    "frames", key: value ...}); method_dirs: method -> its shard folder; hand_models: method
    -> hand model names of its fits; messages: notes from the dataset adapter (fallbacks),
    then one line per clip that could not be evaluated (also in `not_evaluated`).
    """

    dataset: str
    root: Path
    split: Optional[str]
    results_dir: Path
    methods: dict[str, dict[str, Any]]
    clips: list[dict[str, Any]]
    method_dirs: dict[str, Path]
    hand_models: dict[str, list[str]] = field(default_factory=dict)
    hand_topology: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    not_evaluated: list[str] = field(default_factory=list)
    metrics_path: Optional[Path] = None
    per_clip_path: Optional[Path] = None

    def to_json(self) -> dict[str, Any]:
        """The content of metrics.json (see the module docstring)."""
        out: dict[str, Any] = {m: {k: _json_number(v[k]) for k in METRIC_KEYS} for m, v in self.methods.items()}
        out[INFO_KEY] = {
            "dataset": self.dataset,
            "root": str(self.root),
            "split": self.split,
            "results": str(self.results_dir),
            "clips": {m: sum(row["method"] == m for row in self.clips) for m in self.methods},
            "frames": {m: v["frames"] for m, v in self.methods.items()},
            "hand_models": self.hand_models,
            "hand_topology": self.hand_topology,
            "hand_topology_note": hand_topology_note(self.hand_topology, self.dataset),
            "hodata_version": __version__,
            "evaluated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        return out


@dataclass
class ExportReport:
    """What `export_ho3d_predictions` wrote: files, and how many frames were made up."""

    path: Path
    zip_path: Optional[Path]
    frames: int            # lines of evaluation.txt = entries written
    fitted: int            # frames with a fit
    interpolated: int      # frames filled from fitted neighbours of the same sequence
    zeroed: int            # frames of sequences without any fit (zeros)
    hand_model: str
    resampled: bool        # non-MANO vertices resampled to 778 points (--allow-non-mano)

    @property
    def filled(self) -> int:
        return self.interpolated + self.zeroed


# ----------------------------------------------------------------------------- hand topology


class _TopologyTally:
    """Hand models and vertex counts seen per method, fitted and ground truth."""

    def __init__(self) -> None:
        self.models: dict[str, set[str]] = {}
        self.vertices: dict[str, set[int]] = {}
        self.gt_vertices: dict[str, set[int]] = {}

    def add_fit(self, method: str, fit: FitResult) -> None:
        self.models.setdefault(method, set()).update(h.model_name for h in fit.hands)
        self.vertices.setdefault(method, set()).update(int(h.vertices.shape[-2]) for h in fit.hands)
        self.gt_vertices.setdefault(method, set())

    def add_ground_truth(self, method: str, clip: Clip) -> None:
        self.gt_vertices.setdefault(method, set()).update(
            int(h.vertices.shape[-2]) for h in clip.gt_hands if h.vertices is not None and h.vertices.numel() > 0)

    def summary(self) -> dict[str, dict[str, Any]]:
        out = {}
        for method in self.models:
            models, counts, gt = sorted(self.models[method]), sorted(self.vertices[method]), sorted(self.gt_vertices[method])
            out[method] = {
                "hand_models": models, "hand_vertices": counts, "gt_hand_vertices": gt,
                "mano_topology": bool(counts) and all(m.startswith("mano") for m in models)
                and counts == [HO3D_NUM_VERTICES] and all(c == HO3D_NUM_VERTICES for c in gt),
            }
        return out


def hand_topology_note(topology: Mapping[str, Mapping[str, Any]], dataset: str = "") -> str:
    """One line saying which hand mesh the hand metrics were computed on (the eval table's
    title): MANO's 778 vertices, or another hand model -- then, on HO-3D, that the numbers are
    not comparable with the HO-3D challenge's. topology: `EvaluationReport.hand_topology`."""
    with_hands = {m: t for m, t in topology.items() if t.get("hand_vertices")}
    if not with_hands:
        return ""
    if all(t.get("mano_topology") for t in with_hands.values()):
        return f"hand metrics on MANO's {HO3D_NUM_VERTICES} vertices"
    described: dict[str, str] = {}
    for method, t in with_hands.items():
        if t.get("mano_topology"):
            described[method] = f"MANO ({HO3D_NUM_VERTICES} vertices)"
            continue
        models = ", ".join(t["hand_models"]) or "unknown model"
        counts = "/".join(str(c) for c in t["hand_vertices"])
        is_open = all(m.startswith("open") for m in t["hand_models"])
        detail = f"{models}, {counts} vertices" if is_open else f"{counts} vertices"
        gt = [c for c in t.get("gt_hand_vertices", []) if c != HO3D_NUM_VERTICES]
        if gt and not is_open:
            detail += f"; ground truth {'/'.join(str(c) for c in gt)} vertices"
        what = "the open hand" if is_open else f"hand model {models}"
        described[method] = f"{what} ({detail}), not MANO's {HO3D_NUM_VERTICES}"
    if len(set(described.values())) == 1:   # one description for every method
        note = "hand metrics on " + next(iter(described.values()))
    else:
        note = "hand metrics on " + "; ".join(f"{m}: {d}" for m, d in described.items())
    if dataset == "ho3d":
        note += " - not comparable with HO-3D challenge results (fit with --mano-dir for those)"
    return note


# ----------------------------------------------------------------------------- results folders


def _listing(names: Sequence[str]) -> str:
    """"a, b, c, d, e and 3 more"."""
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def find_method_dirs(results_dir: str | os.PathLike) -> dict[str, Path]:
    """Method name -> shard folder, for a method folder or a parent of method folders.

    The method name is the one its manifest records (else the folder name). Raises a
    HodataError naming the folder and the fix when it is missing or holds no fit results.
    """
    results_dir = Path(results_dir)
    fix = f"run `hodata fit DATASET --output {results_dir}` first"
    if not results_dir.exists():
        raise HodataError(f"results folder {results_dir} does not exist; {fix}")
    if not results_dir.is_dir():
        raise HodataError(f"{results_dir} is not a folder; pass the folder `hodata fit --output` wrote")
    if (results_dir / MANIFEST_NAME).is_file():
        candidates = [results_dir]
    else:
        candidates = sorted(p for p in results_dir.iterdir() if p.is_dir() and (p / MANIFEST_NAME).is_file())
    if not candidates:
        raise HodataError(f"{results_dir} holds no {MANIFEST_NAME} (nor method folders with one); {fix}")
    found: dict[str, Path] = {}
    for folder in candidates:
        manifest = read_manifest(folder) or {}
        method = str(manifest.get("method") or folder.name)
        if method in found:
            raise HodataError(
                f"{folder} and {found[method]} both hold fits of method '{method}'; evaluate them separately"
            )
        found[method] = folder
    return found


def select_method_dirs(results_dir: Path, methods: Optional[Sequence[str]]) -> dict[str, Path]:
    """The method folders of `results_dir`, only `methods` when given (HodataError naming
    the ones it does not hold)."""
    method_dirs = find_method_dirs(results_dir)
    if methods:
        unknown = [m for m in methods if m not in method_dirs]
        if unknown:
            raise HodataError(
                f"{results_dir}: no fits of method(s) {', '.join(unknown)}; it holds {', '.join(method_dirs)}"
            )
        method_dirs = {m: method_dirs[m] for m in methods}
    return method_dirs


def fit_config(method_dirs: Mapping[str, Path]) -> dict[str, Any]:
    """The fit config of the first method folder (root / split of the fits, when recorded)."""
    for folder in method_dirs.values():
        manifest = read_manifest(folder) or {}
        config = manifest.get("config") or {}
        if isinstance(config, dict):
            return config
    return {}


FIT_MEMORY_BUDGET = 512 * 2**20  # bytes of fit tensors `evaluate_results` keeps between its passes


def fit_nbytes(fit: FitResult) -> int:
    """Bytes held by a fit's tensors (hands, objects, K)."""
    tensors = [v for state in (*fit.hands, *fit.objects) for v in vars(state).values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors) + fit.K.numel() * fit.K.element_size()


def load_fits(method_dir: str | os.PathLike, skip_corrupt: bool = False) -> dict[str, FitResult]:
    """clip id -> FitResult of one method folder (shards verified against the manifest;
    corrupt shards are an error, or skipped and counted with skip_corrupt)."""
    from hodata.shards import fit_results_from_shards

    return fit_results_from_shards(method_dir, skip_corrupt=skip_corrupt)


# ----------------------------------------------------------------------------- dataset side


@dataclass
class _Fitted:
    """The frames one fit covers (what the dataset check needs of a FitResult)."""

    clip_id: str
    sequence: str
    frame_ids: list[str]


def open_dataset(name: str, root: str | os.PathLike, **adapter_kwargs: Any):
    """The adapter registered as `name` on `root`, given only the options its constructor
    takes (adapters differ: HO-3D has splits, Core50 sessions, ...). Options set to None are
    left at the adapter's defaults."""
    from hodata.datasets import open_dataset as open_registered

    return open_registered(name, root, **adapter_kwargs)


def _clip_spec_type(dataset) -> type:
    module = sys.modules.get(type(dataset).__module__)
    spec = getattr(module, "ClipSpec", None)
    if spec is None:
        from hodata.datasets.ho3d import ClipSpec as spec
    return spec


def check_fits_in_dataset(
    fits: Iterable[Any], frames: Mapping[str, Sequence[str]], source: str, where: str
) -> None:
    """HodataError naming the fitted frames (`SEQ/ID`) the dataset does not have.

    fits: FitResults (or anything with `sequence` and `frame_ids`); frames: sequence -> frame
    ids of the dataset split; source: the results folder;
    where: the dataset split and root, for the message.
    """
    known = {seq: set(ids) for seq, ids in frames.items()}
    missing: list[str] = []
    for fit in fits:
        ids = known.get(fit.sequence)
        missing.extend(f"{fit.sequence}/{f}" for f in fit.frame_ids if ids is None or str(f) not in ids)
    if missing:
        missing = sorted(dict.fromkeys(missing))
        raise HodataError(
            f"{source}: {len(missing)} fitted frame(s) are not in {where}: {_listing(missing)}; "
            "evaluate with the dataset root and split the fits were made on (--root, --split)"
        )


# ----------------------------------------------------------------------------- metrics of one clip


def fit_to(fit: FitResult, device: torch.device, dtype: torch.dtype) -> FitResult:
    """A copy of `fit` with its hand and object tensors on `device` / `dtype`."""
    hands = [replace(h, **{k: to_device(getattr(h, k), device, dtype) for k in
                           ("vertices", "joints", "global_orient", "hand_pose", "betas", "transl", "scale")})
             for h in fit.hands]
    objects = [replace(o, **{k: to_device(getattr(o, k), device, dtype) for k in ("rotation", "translation", "scale", "vertices")})
               for o in fit.objects]
    return replace(fit, hands=hands, objects=objects, K=to_device(fit.K, device, dtype))


def exact_object_sdf(model_vertices: torch.Tensor, model_faces: torch.Tensor, tolerance: float = 0.0):
    """(hand_vertices (T, V, 3), object_state) -> (T, V) signed distances (metres, positive
    outside) to the posed object mesh, exact (hodata.geometry.sdf.mesh_signed_distance).

    Points are mapped into the object's canonical frame (inverse of paper Eq. 2) and all
    frames searched against one copy of the canonical mesh. Points farther than `tolerance`
    + 1 mm outside the mesh's box get the box distance (a positive lower bound), which leaves
    penetration depth and contact with that tolerance unchanged.
    """
    from hodata.geometry.sdf import mesh_signed_distance
    from hodata.geometry.transforms import invert_similarity

    def sdf(points: torch.Tensor, obj: ObjectState) -> torch.Tensor:
        scale = obj.scale if isinstance(obj.scale, torch.Tensor) else torch.tensor(float(obj.scale))
        scale = scale.to(points)
        local = invert_similarity(points, obj.rotation.to(points), obj.translation.to(points), scale)
        frames, count = local.shape[:2]
        verts = model_vertices.to(points)[None]
        reach = (max(tolerance, 0.0) + 1e-3) / float(scale.min())
        with torch.no_grad():
            values = mesh_signed_distance(local.reshape(1, -1, 3), verts, model_faces.to(points.device),
                                          max_distance=reach)
        values = values.reshape(frames, count)
        return values * (scale.reshape(-1, 1) if scale.dim() > 0 else scale)

    return sdf


class ObjectModelCache:
    """Prepared object models by model id, loaded once from the mesh cache."""

    def __init__(self, cache_dir: Optional[Path], device: torch.device, dtype: torch.dtype):
        self.cache_dir, self.device, self.dtype = cache_dir, device, dtype
        self._models: dict[str, Any] = {}

    def get(self, model_id: str):
        if model_id not in self._models:
            from hodata.objects import load_object_model

            self._models[model_id] = load_object_model(model_id, self.cache_dir, device=self.device, dtype=self.dtype)
        return self._models[model_id]


def evaluate_fit_against_clip(
    fit: FitResult,
    clip: Clip,
    models: ObjectModelCache,
    contact_tolerance: float = 0.0,
    gt_contact: Optional[torch.Tensor] = None,
) -> dict[str, Any]:
    """Metrics of one fit (tensors on the clip's device) against its ground-truth clip.
    gt_contact: (T,) bool contact labels (default: all True for ALWAYS_IN_CONTACT datasets)."""
    objects = []
    sdfs = {}
    for obj in fit.objects:
        model = models.get(obj.model_id)
        if obj.vertices is None:
            from hodata.metrics.object import posed_object_vertices

            obj = replace(obj, vertices=posed_object_vertices(obj, model.vertices))
        objects.append(obj)
        sdfs[obj.model_id] = exact_object_sdf(model.vertices, model.faces, contact_tolerance)
    fit = replace(fit, objects=objects)

    def object_sdf(points: torch.Tensor, obj: ObjectState) -> torch.Tensor:
        return sdfs[obj.model_id](points, obj)

    if gt_contact is None and clip.dataset in ALWAYS_IN_CONTACT:
        gt_contact = torch.ones(len(clip), dtype=torch.bool, device=clip.K.device)
    try:
        return evaluate_fit(fit, clip, object_sdf=object_sdf if objects else None, gt_contact=gt_contact,
                            contact_tolerance=contact_tolerance)
    except ValueError as exc:
        raise HodataError(f"clip {fit.clip_id}: cannot compare the fit with the ground truth ({exc})") from None


# ----------------------------------------------------------------------------- whole folders


def evaluate_results(
    results_dir: str | os.PathLike,
    dataset_name: str,
    root: str | os.PathLike | None = None,
    *,
    split: Optional[str] = None,
    methods: Optional[Sequence[str]] = None,
    output_dir: str | os.PathLike | None = None,
    write: bool = True,
    device: torch.device | str = "auto",
    dtype: torch.dtype = torch.float64,
    cache_dir: str | os.PathLike | None = None,
    mano_dir: str | os.PathLike | None = None,
    contact_tolerance: float = 0.0,
    progress: Optional[Progress] = None,
    skip_corrupt: bool = False,
    **adapter_kwargs: Any,
) -> EvaluationReport:
    """Evaluate every method folder of `results_dir` against the dataset `dataset_name`.

    root: dataset root (default: the `root` recorded in the fits' manifest config);
    split: dataset split (default: the recorded `split`, else the adapter's default);
    methods: evaluate only these methods; output_dir: where metrics.json and
    metrics_per_clip.csv go (default results_dir; write=False writes nothing); device
    ("auto" picks CUDA when present), dtype of the comparison; cache_dir: mesh cache
    holding the object models; mano_dir: MANO files for ground-truth hands;
    contact_tolerance (metres) of the contact metric (0 = the paper's definition);
    progress(done, total, description) is called after each clip; further keyword
    arguments go to the adapter when its constructor takes them.
    Raises HodataError for a missing results folder, fits of frames the dataset does not
    have, or unknown methods.
    """
    from hodata.device import resolve_device

    if dataset_name in WITHOUT_GROUND_TRUTH:
        return evaluate_without_ground_truth(results_dir, dataset_name, methods=methods, output_dir=output_dir,
                                             write=write, device=device, dtype=dtype, cache_dir=cache_dir,
                                             contact_tolerance=contact_tolerance, progress=progress,
                                             skip_corrupt=skip_corrupt, contact_labels=adapter_kwargs.get("contact_labels"))
    results_dir = Path(results_dir)
    method_dirs = select_method_dirs(results_dir, methods)
    config = fit_config(method_dirs)
    if root is None:
        root = config.get("root") or config.get("dataset_root")
        if not root:
            raise HodataError(f"{results_dir}: the fits do not record their dataset root; pass --root DATASET_ROOT")
    if split is None and isinstance(config.get("split"), str):
        split = config["split"]
    device = resolve_device(device)

    # Pass 1: what each method fitted, so that frames the dataset lacks fail before any long
    # evaluation. The fits are kept for pass 2 while they fit in FIT_MEMORY_BUDGET (each fit is
    # then read once); beyond it (fits of a whole dataset take GBs) only the frame lists are
    # kept and pass 2 reads each method's fits again.
    fitted: dict[str, list[_Fitted]] = {}
    hand_models: dict[str, list[str]] = {}
    topology = _TopologyTally()
    kept: Optional[dict[str, dict[str, FitResult]]] = {}
    kept_bytes = 0
    for method, folder in method_dirs.items():
        fits = load_fits(folder, skip_corrupt)
        if not fits:
            continue
        fitted[method] = [_Fitted(f.clip_id, f.sequence, [str(i) for i in f.frame_ids]) for f in fits.values()]
        hand_models[method] = sorted({h.model_name for f in fits.values() for h in f.hands})
        for f in fits.values():
            topology.add_fit(method, f)
        if kept is not None:
            kept_bytes += sum(fit_nbytes(f) for f in fits.values())
            kept = None if kept_bytes > FIT_MEMORY_BUDGET else {**kept, method: fits}
        del fits
    if not fitted:
        raise HodataError(f"{results_dir}: the results hold no fitted clips; run `hodata fit` to completion first")
    sequences = sorted({f.sequence for items in fitted.values() for f in items})
    dataset_kwargs = dict(split=split, device=device, dtype=dtype, cache_dir=cache_dir, mano_dir=mano_dir,
                          evidence="none", check_images=False, **adapter_kwargs)
    try:
        dataset = open_dataset(dataset_name, root, sequences=sequences, **dataset_kwargs)
    except HodataError:
        # Some fitted sequence is not in this split: name the exact frames (from the full index).
        dataset = open_dataset(dataset_name, root, **dataset_kwargs)
    split_name = getattr(dataset, "split", split)
    where = f"the {split_name} split of {root}" if split_name else f"the dataset at {root}"
    for method, items in fitted.items():
        check_fits_in_dataset(items, dataset.frames, str(method_dirs[method]), where)

    # Pass 2: each fit against its ground-truth clip. With the fits kept, a clip's ground truth
    # is loaded once for all the methods that fitted it; else one method at a time.
    spec_type = _clip_spec_type(dataset)
    models = ObjectModelCache(Path(cache_dir) if cache_dir is not None else getattr(dataset, "cache_dir", None),
                           device, dtype)
    total = sum(len(items) for items in fitted.values())
    order = {m: i for i, m in enumerate(fitted)}
    results: list[tuple[tuple[int, str], Optional[dict[str, Any]], Optional[str]]] = []  # (order, row, problem)

    def evaluate_group(group: list[tuple[str, FitResult]]) -> None:
        """Evaluate fits of one clip (same sequence and frames) against its ground truth, loaded once."""
        todo = []
        for method, fit in group:
            bad = _nonfinite_parts(fit)
            if bad:  # outputs of hodata before its finite-value gate may hold them
                results.append(((order[method], fit.clip_id), None,
                                f"{method} {fit.clip_id}: not evaluated (NaN or infinity in {', '.join(bad)})"))
            else:
                todo.append((method, fit))
        if not todo:
            return
        first = todo[0][1]
        try:
            clip = dataset.load_clip(spec_type(first.sequence, [str(i) for i in first.frame_ids]))
        except Exception as exc:  # noqa: BLE001 - one clip's ground truth never ends the evaluation
            reason = str(exc) if isinstance(exc, HodataError) else f"{type(exc).__name__}: {exc}"
            results.extend(((order[m], f.clip_id), None, f"{m} {f.clip_id}: not evaluated (ground truth: {reason})")
                           for m, f in todo)
            return
        for method, fit in todo:
            if fit.dataset != clip.dataset:
                raise HodataError(
                    f"{method_dirs[method]}: clip {fit.clip_id} was fitted on dataset '{fit.dataset}' but {root} "
                    f"is '{clip.dataset}'; pass the dataset root the fits were made on"
                )
            topology.add_ground_truth(method, clip)
            try:
                metrics = evaluate_fit_against_clip(fit_to(fit, device, dtype), clip, models, contact_tolerance)
            except HodataError:
                raise
            except Exception as exc:  # noqa: BLE001
                results.append(((order[method], fit.clip_id), None,
                                f"{method} {fit.clip_id}: not evaluated ({type(exc).__name__}: {exc})"))
                continue
            row = {"method": method, "clip_id": fit.clip_id, "sequence": fit.sequence, **metrics}
            results.append(((order[method], fit.clip_id), row, None))
            if progress is not None:
                progress(sum(r is not None for _, r, _ in results), total, f"{method} {fit.clip_id}")

    if kept is not None:
        groups: dict[tuple[str, tuple[str, ...]], list[tuple[str, FitResult]]] = {}
        for method, fits in kept.items():
            for clip_id in sorted(fits):
                fit = fits[clip_id]
                groups.setdefault((fit.sequence, tuple(str(i) for i in fit.frame_ids)), []).append((method, fit))
        for key in sorted(groups):
            evaluate_group(groups.pop(key))
        del kept
    else:
        for method in fitted:
            fits = load_fits(method_dirs[method], skip_corrupt)
            for clip_id in sorted(fits):
                evaluate_group([(method, fits[clip_id])])
            del fits
    results.sort(key=lambda r: r[0])
    rows = [row for _, row, _ in results if row is not None]
    not_evaluated = [problem for _, _, problem in results if problem is not None]
    report = EvaluationReport(
        dataset=dataset_name,
        root=Path(root),
        split=split_name,
        results_dir=results_dir,
        methods={m: aggregate([r for r in rows if r["method"] == m]) for m in fitted},
        clips=rows,
        method_dirs={m: method_dirs[m] for m in fitted},
        hand_models=hand_models,
        hand_topology=topology.summary(),
        messages=list(dict.fromkeys(getattr(dataset, "messages", []))) + not_evaluated,
        not_evaluated=not_evaluated,
    )
    if write:
        write_report(report, output_dir if output_dir is not None else results_dir)
    return report


def _fit_frames(fit: FitResult, index: list[int]) -> FitResult:
    """The fit restricted to the frames at `index` (per-frame tensors cut along T)."""
    T = len(fit.frame_ids)

    def cut(state):
        return replace(state, **{k: v[index] for k, v in vars(state).items()
                                 if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == T})

    return replace(fit, frame_ids=[fit.frame_ids[i] for i in index], hands=[cut(h) for h in fit.hands],
                   objects=[cut(o) for o in fit.objects])


def evaluate_without_ground_truth(
    results_dir: str | os.PathLike,
    dataset_name: str,
    *,
    methods: Optional[Sequence[str]] = None,
    output_dir: str | os.PathLike | None = None,
    write: bool = True,
    device: torch.device | str = "auto",
    dtype: torch.dtype = torch.float64,
    cache_dir: str | os.PathLike | None = None,
    contact_tolerance: float = 0.0,
    progress: Optional[Progress] = None,
    skip_corrupt: bool = False,
    contact_labels: str | os.PathLike | None = None,
) -> EvaluationReport:
    """Metrics of fits of a dataset without 3D annotations (Core50, Epic-Kitchens): penetration
    and contact % from the fits, and contact accuracy (paper Table 2) against per-frame labels —
    those of `contact_labels` (hodata.datasets.contact_labels; frames it does not cover are left
    out of the accuracy), else "always in contact" for Core50. Needs no dataset root."""
    from hodata.device import resolve_device

    results_dir = Path(results_dir)
    method_dirs = select_method_dirs(results_dir, methods)
    labels = None
    if contact_labels is not None:
        from hodata.datasets.contact_labels import read_contact_labels

        labels = read_contact_labels(contact_labels)
    device = resolve_device(device)
    models = ObjectModelCache(Path(cache_dir) if cache_dir is not None else None, device, dtype)
    rows: list[dict[str, Any]] = []
    not_evaluated: list[str] = []
    hand_models: dict[str, list[str]] = {}
    topology = _TopologyTally()
    evaluated = {}
    for method, folder in method_dirs.items():
        fits = load_fits(folder, skip_corrupt)
        if not fits:
            continue
        evaluated[method] = folder
        hand_models[method] = sorted({h.model_name for f in fits.values() for h in f.hands})
        for f in fits.values():
            topology.add_fit(method, f)
        for clip_id in sorted(fits):
            fit = fit_to(fits[clip_id], device, dtype)
            if fit.dataset != dataset_name:
                raise HodataError(f"{folder}: clip {clip_id} was fitted on dataset '{fit.dataset}', not '{dataset_name}'")
            bad = _nonfinite_parts(fit)
            if bad:
                not_evaluated.append(f"{method} {clip_id}: not evaluated (NaN or infinity in {', '.join(bad)})")
                continue
            clip = Clip(dataset=fit.dataset, sequence=fit.sequence, frame_ids=list(fit.frame_ids), image_paths=[],
                        K=fit.K, image_size=fit.image_size, object_model_id=fit.objects[0].model_id if fit.objects else "",
                        hand_sides=[h.side for h in fit.hands])
            try:
                metrics = evaluate_fit_against_clip(fit, clip, models, contact_tolerance)
                if labels is not None:
                    flags = [labels.lookup(fit.sequence, f) for f in fit.frame_ids]
                    index = [i for i, flag in enumerate(flags) if flag is not None]
                    metrics["contact_accuracy_pct"] = None
                    if index:
                        part = _fit_frames(fit, index)
                        sub = replace(clip, frame_ids=part.frame_ids)
                        gt = torch.tensor([flags[i] for i in index], device=device)
                        metrics["contact_accuracy_pct"] = evaluate_fit_against_clip(
                            part, sub, models, contact_tolerance, gt_contact=gt)["contact_accuracy_pct"]
            except Exception as exc:  # noqa: BLE001 - one clip never ends the evaluation
                reason = str(exc) if isinstance(exc, HodataError) else f"{type(exc).__name__}: {exc}"
                not_evaluated.append(f"{method} {clip_id}: not evaluated ({reason})")
                continue
            rows.append({"method": method, "clip_id": fit.clip_id, "sequence": fit.sequence, **metrics})
            if progress is not None:
                progress(len(rows), len(fits), f"{method} {fit.clip_id}")
    if not evaluated:
        raise HodataError(f"{results_dir}: the results hold no fitted clips; run `hodata fit` to completion first")
    report = EvaluationReport(
        dataset=dataset_name, root=Path(fit_config(evaluated).get("root") or results_dir), split=None,
        results_dir=results_dir, methods={m: aggregate([r for r in rows if r["method"] == m]) for m in evaluated},
        clips=rows, method_dirs=dict(evaluated), hand_models=hand_models, hand_topology=topology.summary(),
        messages=list(not_evaluated),
        not_evaluated=not_evaluated,
    )
    if write:
        write_report(report, output_dir if output_dir is not None else results_dir)
    return report


def _nonfinite_parts(fit: FitResult) -> list[str]:
    """Names of a fit's hand / object tensors holding NaN or infinity."""
    parts = [(f"{h.side} hand", h) for h in fit.hands] + [(f"object {o.model_id}", o) for o in fit.objects]
    return [f"{label} {name}" for label, state in parts for name, value in vars(state).items()
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())]


def _json_number(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


def write_report(report: EvaluationReport, output_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write metrics.json and metrics_per_clip.csv into output_dir; returns their paths."""
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = output_dir / METRICS_FILE
        _write_atomic(metrics_path, json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n")
        text_columns = ("method", "clip_id", "sequence")
        columns = [*text_columns, "frames"] + [k for k in METRIC_KEYS if k != "frames"]
        per_clip_path = output_dir / PER_CLIP_FILE

        def rows_csv(handle) -> None:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for row in report.clips:
                writer.writerow([row[c] if c in text_columns or _json_number(row.get(c)) is not None else ""
                                 for c in columns])

        _write_atomic(per_clip_path, rows_csv)
    except OSError as exc:
        raise HodataError(f"{output_dir}: cannot write the metrics ({exc.strerror or exc}); choose another --output-dir") from None
    report.metrics_path, report.per_clip_path = metrics_path, per_clip_path
    return metrics_path, per_clip_path


def _write_atomic(path: Path, content) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", newline="") as handle:
            if callable(content):
                content(handle)
            else:
                handle.write(content)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ----------------------------------------------------------------------------- HO-3D challenge file


def read_evaluation_list(root: str | os.PathLike) -> list[str]:
    """The frames of `<root>/evaluation.txt` ("SEQ/ID"), in file order."""
    path = Path(root) / "evaluation.txt"
    if not path.is_file():
        raise HodataError(f"{path} not found; the challenge file follows it, so pass the HO-3D root with --root")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _export_hand(fit: FitResult) -> Optional[HandState]:
    """The hand exported for HO-3D (a right-hand dataset): the right hand, else the only one."""
    right = [h for h in fit.hands if h.side == "right"]
    if right:
        return right[0]
    return fit.hands[0] if len(fit.hands) == 1 else None


def resample_indices(num_vertices: int, count: int = HO3D_NUM_VERTICES) -> torch.Tensor:
    """`count` vertex indices spread evenly over 0..num_vertices-1 (the --allow-non-mano
    stand-in for MANO's 778 vertices; no correspondence with MANO)."""
    return torch.linspace(0, num_vertices - 1, count, dtype=torch.float64).round().long()


def export_ho3d_predictions(
    fits: Mapping[str, FitResult] | str | os.PathLike,
    root: str | os.PathLike,
    path: str | os.PathLike,
    allow_non_mano: bool = False,
    zip: bool = True,
    skip_corrupt: bool = False,
) -> ExportReport:
    """Write the HO-3D challenge prediction file of one method's fits.

    fits: clip id -> FitResult, or a method folder of shards; root: the HO-3D root holding
    `evaluation.txt`; path: the JSON to write (`pred.json`; `pred.zip` goes beside it).
    One entry per line of evaluation.txt, in its order; joints (21, 3) in HO-3D's order (ours)
    and 778 MANO vertices, metres, OpenGL camera coordinates (z < 0 in front of the camera).
    Frames without a fit are interpolated linearly in time between the nearest fitted frames of
    the same sequence, or held at the first / last fit; sequences without any fit get zeros
    (`hodata.metrics.official.fill_missing_frames`); the report counts them.

    The challenge scores MANO meshes: fits made with another hand model (vertex count other
    than 778) are refused, unless allow_non_mano, which writes the fitted joints and 778 of
    the fitted vertices spread evenly over the mesh (`resample_indices`) -- a file in the
    challenge format for testing, whose mesh error is meaningless.
    """
    from hodata.metrics.official import (
        fill_missing_frames,
        opencv_to_opengl,
        predictions_in_evaluation_order,
        write_ho3d_predictions,
    )

    path = Path(path)
    source = "results"
    if not isinstance(fits, Mapping):
        source = str(fits)
        fits = load_fits(fits, skip_corrupt)
    evaluation_ids = read_evaluation_list(root)
    joints_by_id: dict[str, torch.Tensor] = {}
    vertices_by_id: dict[str, torch.Tensor] = {}
    models = set()
    resampled = False
    for fit in fits.values():
        hand = _export_hand(fit)
        if hand is None:
            continue
        models.add(hand.model_name)
        vertices = hand.vertices.detach().to(device="cpu", dtype=torch.float64)
        if vertices.shape[1] != HO3D_NUM_VERTICES:
            if not allow_non_mano:
                raise HodataError(
                    f"{path}: the HO-3D challenge needs MANO hands (778 vertices) but the fits in {source} use "
                    f"'{hand.model_name}' ({vertices.shape[1]} vertices); refit with --mano-dir (MANO_RIGHT.pkl), "
                    "or pass --allow-non-mano to write a test file that cannot be scored"
                )
            vertices = vertices[:, resample_indices(vertices.shape[1])]
            resampled = True
        joints = hand.joints.detach().to(device="cpu", dtype=torch.float64)
        for t, frame in enumerate(fit.frame_ids):
            key = f"{fit.sequence}/{frame}"
            joints_by_id[key] = joints[t]
            vertices_by_id[key] = vertices[t]
    joints, vertices, valid = predictions_in_evaluation_order(evaluation_ids, joints_by_id, vertices_by_id, source)
    sequences = [frame.split("/", 1)[0] for frame in evaluation_ids]
    numbers = [frame.split("/", 1)[-1] for frame in evaluation_ids]
    frame_numbers = [int(n) for n in numbers] if all(n.isdigit() for n in numbers) else None
    filled = fill_missing_frames(joints, vertices, valid, sequences, frame_numbers)
    zip_path = write_ho3d_predictions(
        path, opencv_to_opengl(filled.joints), opencv_to_opengl(filled.vertices), zip=zip,
        expected_frames=len(evaluation_ids),
    )
    return ExportReport(
        path=path, zip_path=zip_path, frames=len(evaluation_ids), fitted=int(valid.sum()),
        interpolated=filled.interpolated, zeroed=filled.zeroed, hand_model=", ".join(sorted(models)) or "none",
        resampled=resampled,
    )
