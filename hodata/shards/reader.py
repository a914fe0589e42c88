"""Read hodata shards: a torch IterableDataset for training loops, and FitResults for evaluation.

    ds = hodata.shards.load("out/")            # or ["a.tar", ...], or "out/shard-w0-{000000..000009}.tar"
    loader = DataLoader(ds, batch_size=32, num_workers=4, collate_fn=collate_hand_object)

Each sample is a dict: the npz arrays as tensors with their stored dtypes and shapes
(`right_vertices` (778, 3), `object_rotation` (3, 3), `K` (3, 3), ...; string arrays such as
`right_model_name` as str), the json under `"meta"`, `"__key__"`, `"__shard__"`, and `"jpg"` /
`"png"` as raw bytes, or as uint8 tensors (H, W, 3) / (H, W) with `decode_images=True`.

Shards are split across DataLoader workers (and torch.distributed ranks when initialised), so
every sample is read exactly once per epoch. A shard is read whole and checked before any of
its samples is yielded: sha256 against the manifest beside it (when listed there and
`verify=True`), tar structure including the end-of-archive marker (a truncated file fails),
the npz CRCs and the json. A bad shard raises ShardCorruptError (a HodataError naming the
file), or with `skip_corrupt=True` contributes no sample at all and is counted in
`dataset.skipped_shards` (summed over workers) with a warning. Memory: one shard per worker,
so keep shards to a few hundred MB (the writer's default bound is 128 MiB).

The shards are plain WebDataset tars: `webdataset.WebDataset(urls).decode()` reads them too.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import random
import re
import tarfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from hodata.errors import HodataError
from hodata.shards import manifest as mf
from hodata.types import FitResult, HandState, ObjectState

_GROUP_RE = re.compile(r"^(right|left|object\d*)_")


class ShardCorruptError(HodataError):
    """A shard that is missing, truncated, or whose bytes do not match what was written."""


def _corrupt(path: Path, reason: str) -> ShardCorruptError:
    return ShardCorruptError(
        f"{path}: corrupt shard ({reason}); delete it and rerun `hodata fit` on its clips, "
        "or read with skip_corrupt=True"
    )


# ----------------------------------------------------------------------------- one shard


def read_shard(
    path: str | os.PathLike, expected_sha256: Optional[str] = None, decode_images: bool = False
) -> list[dict[str, Any]]:
    """All samples of one shard, checked, as dicts of numpy arrays / str / bytes.

    Each: {"__key__", "__shard__", "meta": dict, "arrays": {name: np.ndarray}, "jpg", "png"}.
    Raises ShardCorruptError naming the file on any damage.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise _corrupt(path, f"cannot read: {e.strerror or e}") from None
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise _corrupt(path, "sha256 differs from manifest.json")
    groups: dict[str, dict[str, bytes]] = {}
    order: list[str] = []
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
        for member in tf:
            if not member.isfile():
                continue
            key, _, ext = member.name.rsplit("/", 1)[-1].partition(".")
            payload = tf.extractfile(member).read()
            if len(payload) != member.size:
                raise _corrupt(path, f"member {member.name} is cut short")
            if not order or order[-1] != key:
                if key in groups:
                    raise _corrupt(path, f"key {key} appears in two places")
                groups[key] = {}
                order.append(key)
            groups[key][ext] = payload
        end = tf.offset
    except tarfile.TarError as e:
        raise _corrupt(path, f"bad tar data: {e}") from None
    # tarfile stops silently at a damaged or missing header; a complete archive ends in zero blocks.
    tail = data[end:]
    if len(tail) < 2 * tarfile.BLOCKSIZE or tail.count(0) != len(tail):
        raise _corrupt(path, f"truncated or damaged after byte {end} of {len(data)}")
    return [_decode_sample(path, key, groups[key], decode_images) for key in order]


def _decode_sample(path: Path, key: str, parts: dict[str, bytes], decode_images: bool) -> dict[str, Any]:
    missing = [ext for ext in ("json", "npz") if ext not in parts]
    if missing:
        raise _corrupt(path, f"sample {key} lacks its {' and '.join(missing)}")
    try:
        meta = json.loads(parts["json"])
    except ValueError as e:
        raise _corrupt(path, f"sample {key}: bad json ({e})") from None
    try:
        arrays = read_npz(parts["npz"])
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise _corrupt(path, f"sample {key}: bad npz ({e})") from None
    sample = {"__key__": key, "__shard__": path.name, "meta": meta, "arrays": arrays}
    for ext, payload in parts.items():
        if ext in ("json", "npz"):
            continue
        if decode_images and ext in ("jpg", "png"):
            try:
                payload = _decode_image(payload, ext)
            except Exception as e:  # PIL raises many types for damaged images
                raise _corrupt(path, f"sample {key}: bad {ext} ({e})") from None
        sample[ext] = payload
    return sample


_NPY_HEADER = re.compile(
    r"""\{'descr': *'(?P<descr>[^']+)', *'fortran_order': *(?P<fortran>True|False), *'shape': *\((?P<shape>[0-9, ]*)\), *\}"""
)


def read_npz(payload: bytes) -> dict[str, np.ndarray]:
    """Arrays of an uncompressed or compressed npz, CRC-checked, writable, no pickles.

    Same result as `np.load(..., allow_pickle=False)`, several times faster for the many small
    arrays of a sample: headers in numpy's standard layout are parsed with a regular
    expression instead of `ast.literal_eval`; any other header goes through numpy.
    """
    arrays = {}
    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        for info in zf.infolist():
            raw = zf.read(info)  # raises BadZipFile on a CRC mismatch
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            arrays[name] = _npy_array(raw)
    return arrays


def _npy_array(raw: bytes) -> np.ndarray:
    if raw[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy member")
    size_bytes = 2 if raw[6] == 1 else 4
    header_len = int.from_bytes(raw[8: 8 + size_bytes], "little")
    start = 8 + size_bytes
    m = _NPY_HEADER.match(raw[start: start + header_len].decode("latin1"))
    if m is None or m["fortran"] == "True":
        return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    dtype = np.dtype(m["descr"])
    if dtype.hasobject:
        raise ValueError("object arrays are not allowed")
    shape = tuple(int(v) for v in m["shape"].replace(" ", "").split(",") if v)
    count = int(np.prod(shape, dtype=np.int64))
    data = bytearray(raw[start + header_len:])  # a writable copy: torch.from_numpy shares it
    if len(data) != count * dtype.itemsize:
        raise ValueError(f"array data has {len(data)} bytes, expected {count * dtype.itemsize}")
    return np.frombuffer(data, dtype=dtype, count=count).reshape(shape)


def _decode_image(payload: bytes, ext: str) -> torch.Tensor:
    from PIL import Image

    with Image.open(io.BytesIO(payload)) as im:
        im.load()
        arr = np.asarray(im.convert("RGB") if ext == "jpg" else im)
    return torch.from_numpy(arr.copy())


def sample_to_torch(raw: dict[str, Any]) -> dict[str, Any]:
    """Flatten a `read_shard` sample: arrays become tensors (dtype kept), string arrays str."""
    out = {"__key__": raw["__key__"], "__shard__": raw["__shard__"], "meta": raw["meta"]}
    for name, a in raw["arrays"].items():
        if a.dtype.kind in "US":
            out[name] = str(a.item()) if a.ndim == 0 else a.tolist()
        else:
            out[name] = torch.from_numpy(a)
    for ext in raw:
        if ext not in ("__key__", "__shard__", "meta", "arrays"):
            out[ext] = raw[ext]
    return out


# ----------------------------------------------------------------------------- dataset


class ShardDataset(IterableDataset):
    """Samples of a list of shards; see the module docstring. Build it with `load`."""

    def __init__(
        self,
        shards: Sequence[tuple[Path, Optional[str]]],
        skip_corrupt: bool = False,
        decode_images: bool = False,
        shuffle: bool = False,
        seed: int = 0,
        num_samples: Optional[int] = None,
        min_quality: Optional[float] = None,
    ):
        super().__init__()
        if min_quality is not None and not 0.0 <= float(min_quality) <= 1.0:
            raise HodataError(f"min_quality must lie in [0, 1], got {min_quality}")
        self.min_quality = None if min_quality is None else float(min_quality)
        self.shards = [(Path(p), sha) for p, sha in shards]
        self.skip_corrupt, self.decode_images = skip_corrupt, decode_images
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        # from the manifest; None when unknown (and when min_quality leaves samples out)
        self.num_samples = num_samples if self.min_quality is None else None
        # Shared memory, so that skips counted in DataLoader worker processes are seen here;
        # a spawn-context lock also works in forked workers.
        self._skipped = multiprocessing.get_context("spawn").Value("i", 0)

    @property
    def skipped_shards(self) -> int:
        """How many shards were skipped as corrupt so far (all epochs, all workers)."""
        return self._skipped.value

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffle (call before each epoch when shuffle=True)."""
        self.epoch = epoch

    def assigned_shards(self) -> list[int]:
        """Indices into `self.shards` read by this worker / rank, in reading order."""
        order = list(range(len(self.shards)))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        slot, slots = rank * num_workers + worker, world * num_workers
        return order[slot::slots]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index in self.assigned_shards():
            path, sha = self.shards[index]
            try:
                samples = read_shard(path, sha, self.decode_images)
            except ShardCorruptError as e:
                if not self.skip_corrupt:
                    raise
                with self._skipped.get_lock():
                    self._skipped.value += 1
                warnings.warn(f"skipped: {e}", stacklevel=2)
                continue
            if self.shuffle:
                random.Random(f"{self.seed}/{self.epoch}/{index}").shuffle(samples)
            for raw in samples:
                if self.min_quality is not None and not sample_quality(raw["meta"]) >= self.min_quality:
                    continue
                yield sample_to_torch(raw)


def sample_quality(meta: dict) -> float:
    """A sample's label quality `meta["quality"]["score"]` in [0, 1]; NaN when it has none
    (so no `min_quality` keeps it). Shards of every schema version carry the score: the
    per-frame score computed in fitting (hodata.fitting.quality), or, in shards written
    before that, the writer's mask IoU x 2D residual formula."""
    score = (meta.get("quality") or {}).get("score")
    return float("nan") if score is None else float(score)


def _expand(source: Any) -> list[Path]:
    if isinstance(source, (list, tuple)):
        return [p for item in source for p in _expand(item)]
    text = os.fspath(source)
    if "{" in text:
        from braceexpand import braceexpand

        return [Path(p) for p in braceexpand(text)]
    return [Path(text)]


def load(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    skip_corrupt: bool = False,
    decode_images: bool = False,
    verify: bool = True,
    shuffle: bool = False,
    seed: int = 0,
    min_quality: Optional[float] = None,
) -> ShardDataset:
    """An IterableDataset over hodata shards.

    source: an output directory (its manifest.json lists the shards), a shard path, a brace
    pattern (`out/shard-w0-{000000..000002}.tar`) or a list of those. verify: compare each
    shard's sha256 with the manifest.json in its directory when that lists it. shuffle:
    shard order and the samples within a shard, reseeded by `set_epoch`. min_quality: keep
    only samples (frames) whose label quality `meta["quality"]["score"]` is >= this value
    (`sample_quality`; per frame, so a clip may be kept in part; a sample without a score
    is left out); `len`-style counts (`num_samples`) are then unknown (None).
    """
    if not isinstance(source, (list, tuple)) and Path(os.fspath(source)).is_dir():
        directory = Path(os.fspath(source))
        manifest = mf.read_manifest(directory)
        if manifest is None:
            raise HodataError(
                f"{directory}: no {mf.MANIFEST_NAME}; pass the shard files or a brace pattern instead"
            )
        shards = [(directory / s["name"], s["sha256"] if verify else None) for s in manifest["shards"]]
        num_samples = manifest["num_samples"]
    else:
        manifests: dict[Path, dict[str, dict]] = {}
        shards, counts = [], []
        for path in _expand(source):
            if path.parent not in manifests:
                manifest = mf.read_manifest(path.parent) if path.parent.is_dir() else None
                manifests[path.parent] = {s["name"]: s for s in manifest["shards"]} if manifest else {}
            entry = manifests[path.parent].get(path.name)
            shards.append((path, entry["sha256"] if entry and verify else None))
            counts.append(entry["samples"] if entry else None)
        num_samples = None if None in counts else sum(counts)
    if not skip_corrupt:
        missing = [p for p, _ in shards if not p.is_file()]
        if missing:
            raise HodataError(f"{missing[0]}: shard not found; check the path or pattern")
    return ShardDataset(shards, skip_corrupt, decode_images, shuffle, seed, num_samples, min_quality)


# ----------------------------------------------------------------------------- batching


def collate_hand_object(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples whose hands (and objects) vary.

    A sample holds at most one hand per side, so hands are batched by side slot instead of
    along a hands dimension: `right_vertices` (B, 778, 3) etc., zero-filled where a sample
    has no right hand, and `right_valid` (B,) bool says which rows are real; the same for
    `left_*` and `object*_*`. A field whose shapes or dtypes differ across the batch (e.g.
    PCA vs 45-D hand_pose, images of different sizes) and every str / bytes field is a list
    (None where absent). `meta`, `__key__` and `__shard__` are lists.
    """
    batch: dict[str, Any] = {name: [s[name] for s in samples] for name in ("__key__", "__shard__", "meta")}
    names: dict[str, None] = {}
    for s in samples:
        names.update((n, None) for n in s if n not in batch)
    groups: dict[str, list[str]] = {}
    for name in names:
        m = _GROUP_RE.match(name)
        if m:
            groups.setdefault(m[1], []).append(name)
    for group, members in groups.items():
        batch[f"{group}_valid"] = torch.tensor([any(n in s for n in members) for s in samples], dtype=torch.bool)
    for name in names:
        values = [s.get(name) for s in samples]
        present = [v for v in values if v is not None]
        stackable = all(isinstance(v, torch.Tensor) for v in present) and len(
            {(tuple(v.shape), v.dtype) for v in present}
        ) == 1
        if not stackable:
            batch[name] = values
            continue
        fill = torch.zeros_like(present[0])
        batch[name] = torch.stack([fill if v is None else v for v in values])
    return batch


# ----------------------------------------------------------------------------- FitResults


def fit_results_from_shards(output_dir: str | os.PathLike, verify: bool = True,
                            skip_corrupt: bool = False) -> dict[str, FitResult]:
    """Rebuild the FitResult of every clip in an output directory (for evaluation).

    A corrupt shard raises HodataError naming it; with skip_corrupt its clips are left out and
    a warning gives the count of skipped shards.

    Per-frame fields are stacked to (T, ...); fields stored as shared (betas (10,), scale ())
    come back shared. Object scale comes back as a 0-d tensor; the loss history is that of
    the clip's first frame's json; images and masks are not part of a FitResult.
    """
    by_clip: dict[str, list[dict[str, Any]]] = {}
    dataset = load(output_dir, verify=verify, skip_corrupt=skip_corrupt)
    for sample in dataset:
        by_clip.setdefault(sample["meta"]["clip_id"], []).append(sample)
    if skip_corrupt and dataset.skipped_shards:
        warnings.warn(f"{output_dir}: skipped {dataset.skipped_shards} corrupt shard(s); their clips are left out")
    return {clip_id: _fit_result(Path(output_dir), clip_id, samples) for clip_id, samples in sorted(by_clip.items())}


def _fit_result(output_dir: Path, clip_id: str, samples: list[dict[str, Any]]) -> FitResult:
    samples = sorted(samples, key=lambda s: s["meta"]["frame_index"])
    first = samples[0]["meta"]
    if [s["meta"]["frame_index"] for s in samples] != list(range(first["num_frames"])):
        raise HodataError(
            f"{output_dir}: clip {clip_id} has {len(samples)} of {first['num_frames']} frames; "
            "rerun `hodata fit` with --overwrite"
        )

    def field_value(prefix: str, name: str, shared: list[str]) -> torch.Tensor:
        key = f"{prefix}_{name}"
        return samples[0][key] if name in shared else torch.stack([s[key] for s in samples])

    hands = []
    for h in first["hands"]:
        values = {n: field_value(h["prefix"], n, h["shared"]) for n in h["fields"]}
        hands.append(HandState(side=h["side"], pose_space=h["pose_space"], model_name=h["model_name"], **values))
    objects = []
    for o in first["objects"]:
        values = {n: field_value(o["prefix"], n, o["shared"]) for n in o["fields"]}
        objects.append(ObjectState(model_id=o["model_id"], category=o["category"], **values))
    nan = float("nan")
    return FitResult(
        clip_id=clip_id,
        dataset=first["dataset"],
        sequence=first["sequence"],
        frame_ids=[s["meta"]["frame"] for s in samples],
        K=samples[0]["K"],
        image_size=tuple(first["camera"]["image_size"]),
        hands=hands,
        objects=objects,
        method=first["method"],
        losses={k: nan if v is None else v for k, v in first["losses"].items()},
        loss_history={k: [nan if v is None else v for v in vs] for k, vs in first.get("loss_history", {}).items()},
        flags=dict(first["flags"]),
        hand_init=first["hand_init"],
        evidence=dict(first.get("evidence") or {}),
        quality=_quality_record(samples),
    )


def _quality_record(samples: list[dict[str, Any]]) -> dict:
    """FitResult.quality back from the frames' `quality` entries (empty for shards whose
    score was computed by the writer: they carry no record of fitting's signals)."""
    entries = [s["meta"].get("quality") or {} for s in samples]
    if not entries or any("signals" not in e for e in entries):
        return {}
    names = list(entries[0]["signals"])
    return {"version": entries[0].get("version"), "score": [e["score"] for e in entries],
            "clip_score": entries[0].get("clip_score"),
            "signals": {n: [e["signals"].get(n) for e in entries] for n in names}}


__all__ = [
    "load", "sample_quality", "ShardDataset", "ShardCorruptError", "read_shard", "sample_to_torch",
    "collate_hand_object", "fit_results_from_shards",
]
