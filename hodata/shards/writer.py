"""Write fitted clips as WebDataset shards: one sample per frame, atomic shards, a manifest.

Sample `<dataset>_<sequence>_<frame:06d>` (characters other than `A-Za-z0-9_-` become `-`;
a frame id that is not a number is kept as sanitised text) holds the members

- `json`: metadata (schema version, dataset, sequence, frame, clip id, camera K and image
  size, objects with model id / category / scale, hands with side / model name / pose space,
  hand init provider, method, final per-term losses, clip flags, the label quality computed in
  fitting (per-frame score, clip score and the signals behind them; `frame_qualities`);
  the clip's first frame also carries the loss history);
- `npz`: arrays of that frame, per hand with its side as prefix (`right_vertices` (778, 3),
  `right_joints` (21, 3), `right_global_orient` (3, 3), `right_hand_pose` (P,), `right_betas`
  (10,), `right_transl` (3,), `right_scale` (), `right_pose_space`, `right_model_name`), per
  object with prefix `object` (then `object1`, ...: `object_rotation` (3, 3),
  `object_translation` (3,), `object_scale` (), optional `object_vertices` (V, 3),
  `object_model_id`), and `K` (3, 3), `image_size` (2,) = (H, W). Camera space, metres;
  dtypes as fitted (bfloat16 is stored as float32, a Python float scale as float32);
- `jpg` (optional): the RGB frame, JPEG quality 95 by default;
- `png` (optional): a uint8 mask, lossless; the caller chooses its encoding.

A writer puts whole clips into one shard, so a clip is either fully listed in the manifest
or not at all. Keys contain no method name: write each fitting method into its own output
directory (the writer refuses to mix methods).

Finite labels only: `encode_clip` refuses a clip with a NaN or infinite value in any stored
array (ValueError naming the field and frame), so no sample with a non-finite label is written.

Durability: a shard is written as `.tmp-<name>.tar.partial` and renamed to `<name>.tar` once
complete (bound reached, `flush()`, `close()`), then the manifest is replaced atomically. A
killed run loses the clips of its open shard only. Trade-off: `hodata fit` calls `flush()`
after every clip, so it loses at most the clip in progress, at the price of one shard per
clip (typically 20-200 frames, 1-20 MB with frames). A caller that wants fewer, larger shards
flushes every k clips instead and risks redoing up to k clips after a crash.

Resume verifies what it skips: opening an existing output checks every listed shard (present,
size and sha256 as recorded); a missing or damaged one is dropped from the manifest (a damaged
file is kept as `<name>.damaged`) so its clips are fitted again, and `resume_notes` says so. A
damaged manifest is rebuilt from the shards on disk. An exclusive writer (`exclusive=True`, as
`hodata fit` uses) holds `.writer.lock`, so a second run into the same output is refused. A
failing write (disk full, read-only file system) raises `OutputWriteError` (a HodataError)
after cutting the clip back out; the shard keeps whole clips only.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import tarfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from hodata import __version__
from hodata.errors import HodataError
from hodata.shards import manifest as mf
from hodata.types import FitResult

DEFAULT_MAX_SAMPLES = 1000
DEFAULT_MAX_BYTES = 128 * 2**20
V2D_SCALE_PX = 20.0        # a mean 2D vertex error of 20 px multiplies the score by 1/e
RAISED_FLAG_FACTOR = 0.5   # each raised quality flag halves the score
HAND_SIDES = ("right", "left")

_BLOCK = 512
_END_OF_ARCHIVE = b"\0" * (2 * _BLOCK)
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9]")


# ----------------------------------------------------------------------------- keys


def sanitise_key_part(text: Any) -> str:
    """Replace every character outside `A-Za-z0-9_-` by `-` (dots would split WebDataset keys)."""
    text = str(text)
    if not text:
        raise ValueError("empty dataset, sequence or frame id cannot form a sample key")
    return _KEY_UNSAFE.sub("-", text)


def frame_token(frame_id: Any) -> str:
    """`000012` for a numeric frame id ("12", "0012", 12), else the sanitised id."""
    text = str(frame_id).strip()
    if text.isascii() and text.isdigit():
        return f"{int(text):06d}"
    return sanitise_key_part(text)


def sample_key(dataset: str, sequence: str, frame_id: Any) -> str:
    """`<dataset>_<sequence>_<frame:06d>`, safe as a WebDataset key."""
    return f"{sanitise_key_part(dataset)}_{sanitise_key_part(sequence)}_{frame_token(frame_id)}"


# ----------------------------------------------------------------------------- quality


def quality_score(mask_iou: Optional[float] = None, v2d_px: Optional[float] = None, raised_flags: int = 0) -> float:
    """The quality formula of shards written before fits carried their own (`FitResult.quality`),
    still used for a FitResult without one: IoU * exp(-v2d_px / V2D_SCALE_PX) * 0.5 ** raised_flags.

    mask_iou: silhouette IoU of the fitted object with its target mask; v2d_px: mean 2D
    distance in pixels between projected hand vertices and their targets (paper Eq. 4
    residual); a missing measure contributes 1, so with no evidence and no flags the score
    is 1 and the sample's `quality.basis` is empty.
    """
    score = 1.0
    if mask_iou is not None:
        score *= min(max(float(mask_iou), 0.0), 1.0)
    if v2d_px is not None:
        score *= math.exp(-max(float(v2d_px), 0.0) / V2D_SCALE_PX)
    return score * RAISED_FLAG_FACTOR**raised_flags


def frame_qualities(fit: FitResult, quality: Optional[dict] = None) -> list[dict[str, Any]]:
    """The `quality` entry of each frame's json.

    The score is computed in fitting, not here: a fit with a quality record
    (`FitResult.quality`, hodata.fitting.quality.label_quality) gives each frame its `score`,
    the clip's `clip_score`, the `signals` of that frame (clip-level signals repeated), and
    `basis` = ["fit"] + the names of the signals measured. A flag raised after fitting (not in
    the record's `flags_counted`, e.g. `nonfinite_loss`) halves the score once more.

    A FitResult without a quality record (made outside hodata's fitting, or by an earlier
    version) keeps the earlier formula, `quality_score`: mask IoU x exp(-v2d_px / 20) x 0.5
    per raised flag, with `basis` naming what it used.

    Quality flags follow one convention: True marks a problem (`not_converged`,
    `high_penetration`, `hand_lost`, ...). Sources, per frame: `quality` (explicit; each value
    a scalar for the clip or a length-T sequence) with keys `mask_iou`, `v2d_px`, `score`
    (overrides any score), `flags` (name -> bool or T bools); else the fit's per-frame
    `loss_history["mask_iou_per_frame"]` / `["v2d_px_per_frame"]`, else `fit.losses["mask_iou"]`
    / `fit.losses["v2d_px"]`; `fit.flags` always. A non-finite final loss raises the flag
    `nonfinite_loss`. Other keys of `quality` are stored as they are (scalars or per-frame
    values) without entering the score.
    """
    T = len(fit.frame_ids)
    q = dict(quality or {})
    record = dict(getattr(fit, "quality", None) or {})
    history = fit.loss_history or {}
    mask_iou = _per_frame_values("mask_iou", q.pop("mask_iou", history.get("mask_iou_per_frame",
                                                                            fit.losses.get("mask_iou"))), T)
    v2d_px = _per_frame_values("v2d_px", q.pop("v2d_px", history.get("v2d_px_per_frame", fit.losses.get("v2d_px"))), T)
    explicit = _per_frame_values("score", q.pop("score", None), T)
    frame_flags = {name: _per_frame_values(f"flags[{name}]", v, T) for name, v in dict(q.pop("flags", {})).items()}
    extras = {name: _per_frame_values(name, v, T) for name, v in q.items()}
    clip_flags = {str(k): bool(v) for k, v in fit.flags.items()}
    if any(not math.isfinite(float(v)) for v in fit.losses.values()):
        clip_flags["nonfinite_loss"] = True
    fitted = _per_frame_values("fit.quality['score']", record.get("score"), T) if record.get("score") else None
    signals = {name: _per_frame_values(f"signals[{name}]", v, T)
               for name, v in dict(record.get("signals") or {}).items()} if fitted else {}
    counted = set(record.get("flags_counted") or [])
    out = []
    for t in range(T):
        flags = dict(clip_flags)
        flags.update({name: bool(values[t]) for name, values in frame_flags.items()})
        raised = sorted(name for name, value in flags.items() if value)
        entry: dict[str, Any] = {}
        if explicit[t] is not None:
            score = float(explicit[t])
            if not 0.0 <= score <= 1.0:
                raise ValueError(f"quality['score'] must lie in [0, 1], got {score} at frame {t}")
            basis = ["explicit"]
        elif fitted is not None:
            score = float(fitted[t]) * RAISED_FLAG_FACTOR ** len([n for n in raised if n not in counted])
            basis = ["fit"] + [name for name, values in signals.items() if values[t] is not None]
            entry.update(clip_score=_json_scalar(record.get("clip_score")), version=record.get("version"),
                         signals={name: values[t] for name, values in signals.items()})
        else:
            score = quality_score(mask_iou[t], v2d_px[t], len(raised))
            basis = [name for name, v in (("mask_iou", mask_iou[t]), ("v2d_px", v2d_px[t])) if v is not None]
            if flags:
                basis.append("flags")
        entry.update({"score": score, "basis": basis, "mask_iou": mask_iou[t], "v2d_px": v2d_px[t],
                      "flags": flags, "raised": raised})
        entry.update({name: values[t] for name, values in extras.items()})
        out.append(entry)
    return out


def _per_frame_values(name: str, value: Any, T: int) -> list[Any]:
    """A clip scalar repeated T times, or a length-T sequence / tensor as a list (None stays None)."""
    if value is None:
        return [None] * T
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.ndim == 0:
        return [_json_scalar(arr.item())] * T
    if arr.ndim == 1 and arr.shape[0] == T:
        return [_json_scalar(v) for v in arr.tolist()]
    raise ValueError(f"quality[{name!r}] must be a scalar or have one value per frame ({T}), got shape {arr.shape}")


def _json_scalar(v: Any) -> Any:
    """JSON-safe scalar: non-finite floats become None (strict JSON has no NaN)."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, torch.Tensor):
        return _json_scalar(v.item())
    return v


# ----------------------------------------------------------------------------- encoding


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()  # numpy has no bfloat16
        return x.numpy()
    if isinstance(x, (float, int)):
        return np.asarray(x, dtype=np.float32)
    return np.asarray(x)


def _split_frames(name: str, x: Any, T: int, frame_ndim: int, may_share: bool) -> tuple[np.ndarray, bool]:
    """(array, shared): `x` is (T, *frame_shape) per frame, or frame_shape when shared."""
    a = _to_numpy(x)
    if a.ndim == frame_ndim + 1 and a.shape[0] == T:
        return a, False
    if may_share and a.ndim == frame_ndim:
        return a, True
    expected = f"(T={T}, ...) with {frame_ndim} dims per frame" + (" or one shared value" if may_share else "")
    raise ValueError(f"{name}: expected shape {expected}, got {tuple(a.shape)}")


def _frames_uint8(name: str, x: Any, T: int, frame_shape: tuple[int, ...]) -> np.ndarray:
    a = _to_numpy(x)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    if a.dtype != np.uint8 or a.shape != (T, *frame_shape):
        raise ValueError(f"{name}: expected uint8 of shape {(T, *frame_shape)}, got {a.dtype} {a.shape}")
    return a


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _image_bytes(frame: np.ndarray, fmt: str, jpeg_quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "jpg":
        Image.fromarray(frame, "RGB").save(buf, format="JPEG", quality=jpeg_quality)
    else:
        Image.fromarray(frame, "L").save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class EncodedFrames:
    """A clip's frames and masks encoded once (`jpg` RGB at `jpeg_quality`, `png` uint8 masks),
    so several methods' shards of the same clip share one encoding (`ShardWriter.write_clip`
    takes it in place of the arrays). The bytes are what `encode_clip` writes from the arrays.

    jpg, png: T encoded frames each, or None; image_size: (H, W) of the frames.
    """

    jpg: Optional[tuple[bytes, ...]]
    png: Optional[tuple[bytes, ...]]
    image_size: tuple[int, int]
    jpeg_quality: int

    def __len__(self) -> int:
        return len(self.jpg if self.jpg is not None else self.png or ())

    @classmethod
    def encode(cls, images: Any = None, masks: Any = None, jpeg_quality: int = 95) -> Optional["EncodedFrames"]:
        """Encode images (T, H, W, 3) uint8 RGB and masks (T, H, W) uint8 or bool (either may be
        None; both None gives None). ValueError for other dtypes or shapes."""
        if images is None and masks is None:
            return None
        frames = None if images is None else _to_numpy(images)
        if frames is not None and (frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3):
            raise ValueError(f"images: expected uint8 of shape (T, H, W, 3), got {frames.dtype} {frames.shape}")
        shape = tuple(frames.shape[:3]) if frames is not None else None
        labels = None
        if masks is not None:
            labels = _to_numpy(masks)
            labels = labels.astype(np.uint8) if labels.dtype == np.bool_ else labels
            if labels.dtype != np.uint8 or labels.ndim != 3 or (shape is not None and labels.shape != shape):
                expected = shape if shape is not None else "(T, H, W)"
                raise ValueError(f"masks: expected uint8 of shape {expected}, got {labels.dtype} {labels.shape}")
            shape = shape or tuple(labels.shape)
        jpg = None if frames is None else tuple(_image_bytes(f, "jpg", jpeg_quality) for f in frames)
        png = None if labels is None else tuple(_image_bytes(m, "png", jpeg_quality) for m in labels)
        return cls(jpg, png, (int(shape[1]), int(shape[2])), int(jpeg_quality))


_HAND_FIELDS = (  # (field, per-frame ndim, may be shared across frames)
    ("vertices", 2, False), ("joints", 2, False), ("global_orient", 2, False), ("hand_pose", 1, False),
    ("betas", 1, True), ("transl", 1, False), ("scale", 0, True),
)
_OBJECT_FIELDS = (("rotation", 2, False), ("translation", 1, False), ("scale", 0, True), ("vertices", 2, True))


def object_prefix(index: int) -> str:
    """`object` for the first object, `object1`, `object2`, ... for further ones."""
    return "object" if index == 0 else f"object{index}"



class OutputWriteError(HodataError):
    """The output cannot be written (disk full, read-only file system, permissions): the run
    stops, whole clips already written stay, and a rerun resumes."""


def _write_error(path: Path, exc: OSError) -> OutputWriteError:
    return OutputWriteError(
        f"{path}: cannot write ({exc.strerror or exc}); free disk space or choose a writable --output, then rerun "
        "the same command to resume (whole clips already written are kept)"
    )


def _check_finite(clip_id: str, label: str, a: np.ndarray, shared: bool, frame_ids) -> None:
    """ValueError naming the first frame with a NaN / infinite value of a float array."""
    if not np.issubdtype(a.dtype, np.floating) or np.isfinite(a).all():
        return
    where = "" if shared or a.ndim == 0 else f" (first at frame {frame_ids[int(np.argwhere(~np.isfinite(a))[0][0])]})"
    raise ValueError(f"clip {clip_id}: {label} holds NaN or infinite values{where}; a non-finite label is not written")


def _state_arrays(state, fields, label: str, T: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """Arrays of one HandState / ObjectState per field spec (name, ndim, may_share), and the
    names stored once for the clip instead of per frame."""
    arrays, shared = {}, []
    for name, ndim, may_share in fields:
        value = getattr(state, name)
        if value is None:
            continue
        arrays[name], is_shared = _split_frames(f"{label} {name}", value, T, ndim, may_share)
        if is_shared:
            shared.append(name)
    return arrays, shared

def encode_clip(
    fit: FitResult,
    images: Any = None,
    masks: Any = None,
    quality: Optional[dict] = None,
    jpeg_quality: int = 95,
) -> list[tuple[str, list[tuple[str, bytes]]]]:
    """The T samples of a clip as (key, [(extension, bytes), ...]), in frame order.

    images: (T, H, W, 3) uint8 RGB, or the clip's `EncodedFrames` (then masks is None: they
    are part of it); masks: (T, H, W) uint8 (or bool); (H, W) = fit.image_size.
    """
    T = len(fit.frame_ids)
    if T == 0:
        raise ValueError(f"clip {fit.clip_id}: no frames to write")
    H, W = (int(v) for v in fit.image_size)
    K = _to_numpy(fit.K)
    if K.shape != (3, 3):
        raise ValueError(f"clip {fit.clip_id}: K must be (3, 3), got {K.shape}")
    _check_finite(fit.clip_id, "K", K, True, fit.frame_ids)
    image_size = np.asarray([H, W], dtype=np.int64)

    hand_meta, hand_arrays = [], []
    sides = [h.side for h in fit.hands]
    if any(s not in HAND_SIDES for s in sides) or len(set(sides)) != len(sides):
        raise ValueError(f"clip {fit.clip_id}: hand sides must be distinct values of {HAND_SIDES}, got {sides}")
    for hand in fit.hands:
        arrays, shared = _state_arrays(hand, _HAND_FIELDS, f"{hand.side} hand", T)
        for name, a in arrays.items():
            _check_finite(fit.clip_id, f"{hand.side} hand {name}", a, name in shared, fit.frame_ids)
        pose_dim = int(arrays["hand_pose"].shape[-1]) if "hand_pose" in arrays else None
        hand_meta.append({"side": hand.side, "prefix": hand.side, "model_name": hand.model_name,
                          "pose_space": hand.pose_space, "pose_dim": pose_dim,
                          "fields": sorted(arrays), "shared": shared})
        hand_arrays.append(arrays)

    object_meta, object_arrays = [], []
    for i, obj in enumerate(fit.objects):
        arrays, shared = _state_arrays(obj, _OBJECT_FIELDS, f"object {obj.model_id}", T)
        for name, a in arrays.items():
            _check_finite(fit.clip_id, f"object {obj.model_id} {name}", a, name in shared, fit.frame_ids)
        object_meta.append({"prefix": object_prefix(i), "model_id": obj.model_id, "category": obj.category,
                            "fields": sorted(arrays), "shared": shared})
        object_arrays.append(arrays)

    if isinstance(images, EncodedFrames):
        if masks is not None:
            raise ValueError(f"clip {fit.clip_id}: pass the masks inside EncodedFrames, not beside them")
        if len(images) != T or tuple(images.image_size) != (H, W):
            raise ValueError(f"clip {fit.clip_id}: encoded frames are {len(images)} x {images.image_size}, "
                             f"the fit has {T} frames of {(H, W)}")
        encoded = images
    else:
        frames = None if images is None else _frames_uint8("images", images, T, (H, W, 3))
        mask_frames = None if masks is None else _frames_uint8("masks", masks, T, (H, W))
        encoded = EncodedFrames.encode(frames, mask_frames, jpeg_quality)
    jpgs = encoded.jpg if encoded is not None else None
    pngs = encoded.png if encoded is not None else None
    qualities = frame_qualities(fit, quality)
    losses = {str(k): _json_scalar(float(v)) for k, v in fit.losses.items()}
    history = {str(k): [_json_scalar(float(v)) for v in values] for k, values in fit.loss_history.items()}
    hand_model = sorted({h.model_name for h in fit.hands})

    samples, seen = [], set()
    for t, frame_id in enumerate(fit.frame_ids):
        key = sample_key(fit.dataset, fit.sequence, frame_id)
        if key in seen:
            raise ValueError(f"clip {fit.clip_id}: frame ids {fit.frame_ids} give the key {key} twice")
        seen.add(key)
        arrays: dict[str, np.ndarray] = {"K": K, "image_size": image_size}
        for meta, fields in zip(hand_meta, hand_arrays):
            p = meta["prefix"]
            for name, a in fields.items():
                arrays[f"{p}_{name}"] = a if name in meta["shared"] else a[t]
            arrays[f"{p}_pose_space"] = np.asarray(meta["pose_space"])
            arrays[f"{p}_model_name"] = np.asarray(meta["model_name"])
        objects_json = []
        for meta, fields in zip(object_meta, object_arrays):
            p = meta["prefix"]
            for name, a in fields.items():
                arrays[f"{p}_{name}"] = a if name in meta["shared"] else a[t]
            arrays[f"{p}_model_id"] = np.asarray(meta["model_id"])
            scale = arrays.get(f"{p}_scale")
            objects_json.append({**meta, "scale": None if scale is None else _json_scalar(float(scale))})
        meta_json = {
            "schema_version": mf.SCHEMA_VERSION,
            "hodata_version": __version__,
            "key": key,
            "dataset": fit.dataset,
            "sequence": fit.sequence,
            "frame": str(frame_id),
            "frame_index": t,
            "num_frames": T,
            "clip_id": fit.clip_id,
            "method": fit.method,
            "hand_init": fit.hand_init,
            "evidence": dict(fit.evidence),
            "camera": {"K": K.astype(np.float64).tolist(), "image_size": [H, W]},
            "hand_sides": sides,
            "hand_model": hand_model[0] if len(hand_model) == 1 else hand_model,
            "hands": hand_meta,
            "objects": objects_json,
            "losses": losses,
            "flags": {str(k): bool(v) for k, v in fit.flags.items()},
            "quality": qualities[t],
            "has_image": jpgs is not None,
            "has_mask": pngs is not None,
        }
        if t == 0 and history:
            meta_json["loss_history"] = history
        members = [("json", json.dumps(meta_json, allow_nan=False).encode()), ("npz", _npz_bytes(arrays))]
        if jpgs is not None:
            members.append(("jpg", jpgs[t]))
        if pngs is not None:
            members.append(("png", pngs[t]))
        samples.append((key, members))
    return samples


# ----------------------------------------------------------------------------- tar output


def _member_header(name: str, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)


@dataclass
class _OpenShard:
    name: str
    partial: Path
    file: Any
    hasher: Any = field(default_factory=hashlib.sha256)
    samples: int = 0
    bytes: int = 0                       # without the end-of-archive marker
    clips: dict[str, int] = field(default_factory=dict)


def clear_output(output_dir: str | os.PathLike) -> None:
    """Delete the shards, partial shards and manifest of `output_dir` (other files stay).

    With several writers on one output, call this once before starting them rather than
    passing `overwrite=True` to each.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return
    with mf.manifest_lock(output_dir):
        _remove_outputs(output_dir)


def _remove_outputs(output_dir: Path) -> None:
    """Manifest first, then shards: a crash part-way leaves unlisted shards, which the next
    writer adopts after reading them whole (or --overwrite removes), never a manifest listing
    shards that are gone."""
    (output_dir / mf.MANIFEST_NAME).unlink(missing_ok=True)
    mf.fsync_dir(output_dir)
    for path in output_dir.iterdir():
        n = path.name
        if mf.parse_shard_name(n) or mf.parse_partial_name(n):
            path.unlink()
    mf.fsync_dir(output_dir)


def _remove_stale_partials(output_dir: Path, own_tag: str) -> None:
    """Partial shards of this worker tag, or of a `p<pid>` writer whose process is gone."""
    for path in output_dir.iterdir():
        parsed = mf.parse_partial_name(path.name)
        if parsed is None:
            continue
        tag = parsed[1]
        dead_pid = tag.startswith("p") and tag[1:].isdigit() and not mf.pid_alive(int(tag[1:]))
        if tag == own_tag or dead_pid:
            path.unlink(missing_ok=True)


def _adopt_orphans(output_dir: Path, manifest: dict) -> tuple[list[dict], set[str]]:
    """Manifest entries for complete shards on disk that the manifest misses, and the fitting
    methods their samples record.

    Happens when a writer was killed between renaming a shard and updating the manifest, or
    during --overwrite clean-up, or when a damaged manifest is rebuilt; such a shard is
    complete (it was renamed only then) and is read whole here, so it is listed instead of redone.
    """
    from hodata.shards.reader import ShardCorruptError, read_shard

    listed = {s["name"] for s in manifest["shards"]}
    entries, methods = [], set()
    for path in sorted(output_dir.iterdir()):
        if path.name in listed or not mf.parse_shard_name(path.name):
            continue
        try:
            samples = read_shard(path)
        except ShardCorruptError as e:
            warnings.warn(f"{path}: not listed in the manifest and unreadable ({e}); left as it is", stacklevel=3)
            continue
        if not samples:
            path.unlink()  # an empty shard (older versions finalised one after an interrupted write)
            continue
        clips: dict[str, int] = {}
        for sample in samples:
            clip_id = sample["meta"]["clip_id"]
            clips[clip_id] = clips.get(clip_id, 0) + 1
            methods.add(str(sample["meta"].get("method")))
        entries.append({"name": path.name, "samples": len(samples), "bytes": path.stat().st_size,
                        "sha256": mf.sha256_file(path), "clips": clips})
    return entries, methods


def _verify_listed(output_dir: Path, manifest: dict) -> list[str]:
    """Drop from `manifest` (in place) every listed shard that is missing, empty, or whose size
    or sha256 differs from its entry, with its clips, so a resume fits them again; a damaged
    file is renamed `<name>.damaged`. Returns one message per dropped shard."""
    notes, kept = [], []
    for entry in manifest["shards"]:
        path = output_dir / entry["name"]
        if not path.is_file():
            problem = "listed in the manifest but missing"
        elif entry["samples"] == 0:
            problem = "holds no sample"
        elif path.stat().st_size != entry["bytes"] or mf.sha256_file(path) != entry["sha256"]:
            problem = "damaged (size or sha256 differs from the manifest)"
        else:
            kept.append(entry)
            continue
        if path.is_file():
            if entry["samples"] == 0:
                path.unlink()
            else:
                os.replace(path, path.with_name(path.name + ".damaged"))
                problem += f", kept as {path.name}.damaged"
        clips = sorted(entry["clips"])
        if clips:
            notes.append(f"{path}: {problem}; its {len(clips)} clip(s) will be fitted again")
    dropped = {e["name"] for e in manifest["shards"]} - {e["name"] for e in kept}
    if dropped:
        manifest["shards"] = kept
        manifest["clips"] = {c: v for c, v in manifest["clips"].items() if v["shard"] not in dropped}
        manifest["num_samples"] = sum(e["samples"] for e in kept)
    return notes


class ShardWriter:
    """Writes fitted clips into `<output_dir>/<prefix>-<tag>-<index:06d>.tar` and `manifest.json`.

    max_samples / max_bytes bound a shard (file size in bytes); a clip is never split, so a
    single clip larger than a bound gets a shard of its own. worker_id names the shards of
    this writer (`w<worker_id>`; default `p<pid>`); two writers running at the same time on
    one output need different tags and disjoint clips. config (JSON-serialisable) is stored in
    the manifest. Opening an existing output keeps its shards and continues with new shard
    indices; `overwrite=True` deletes its shards and manifest first.

    exclusive=True takes the output's writer lock (`manifest.WriterLock`) for the writer's
    lifetime, before anything is changed (also before `overwrite` deletes): a second
    exclusive writer on the same output gets a HodataError. Leave it off for several
    cooperating workers with distinct worker ids.

    Use as a context manager, or call `close()`: the open shard is finalised on exit, also
    when the body raised, since it only ever holds whole clips.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        worker_id: Optional[int | str] = None,
        config: Optional[dict] = None,
        overwrite: bool = False,
        prefix: str = mf.DEFAULT_PREFIX,
        jpeg_quality: int = 95,
        exclusive: bool = False,
    ):
        if max_samples < 1 or max_bytes < 1:
            raise ValueError("max_samples and max_bytes must be positive")
        if not re.fullmatch(r"[A-Za-z0-9_]+", prefix):
            raise ValueError(f"shard prefix must match [A-Za-z0-9_]+, got {prefix!r}")
        if config is not None:
            try:
                config = json.loads(json.dumps(config, allow_nan=False))
            except (TypeError, ValueError) as e:
                raise ValueError(f"config must be JSON-serialisable: {e}") from None
        self.output_dir = Path(output_dir)
        self.max_samples, self.max_bytes = int(max_samples), int(max_bytes)
        self.prefix, self.jpeg_quality = prefix, jpeg_quality
        self.tag = "p%d" % os.getpid() if worker_id is None else "w" + _TAG_UNSAFE.sub("", str(worker_id))
        if self.tag == "w":
            raise ValueError(f"worker_id {worker_id!r} has no letters or digits")
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HodataError(f"{self.output_dir}: cannot create the output directory ({e}); choose another path") from None
        self._mtime = int(time.time())
        self._lock = mf.WriterLock(self.output_dir).acquire() if exclusive else None
        try:
            manifest = self._open_output(config, overwrite)
        except BaseException:
            self._release_lock()
            raise
        self._done: set[str] = set(manifest["clips"])
        self._method: Optional[str] = manifest.get("method")
        self._earlier_shards = [s["name"] for s in manifest["shards"]]
        self._keys: Optional[set[str]] = None
        indices = [p[2] for p in map(mf.parse_shard_name, os.listdir(self.output_dir)) if p]
        indices += [p[2] for p in map(mf.parse_partial_name, os.listdir(self.output_dir)) if p]
        self._next_index = max(indices, default=-1) + 1
        self._shard: Optional[_OpenShard] = None
        self._closed = False
        self.shards_written: list[str] = []

    def _open_output(self, config: Optional[dict], overwrite: bool) -> dict:
        """Clean, verify or rebuild the output's manifest (under the manifest lock); sets
        `resume_notes` (one line per shard dropped or manifest rebuilt)."""
        self.resume_notes: list[str] = []
        try:
            with mf.manifest_lock(self.output_dir):
                mf.remove_stale_json_tmp(self.output_dir)
                if overwrite:
                    _remove_outputs(self.output_dir)
                else:
                    _remove_stale_partials(self.output_dir, self.tag)
                try:
                    manifest = mf.read_manifest(self.output_dir)
                except mf.ManifestUnreadable:
                    bad = self.output_dir / (mf.MANIFEST_NAME + ".damaged")
                    os.replace(self.output_dir / mf.MANIFEST_NAME, bad)
                    self.resume_notes.append(f"{self.output_dir / mf.MANIFEST_NAME}: damaged; rebuilt from the shards "
                                             f"on disk (the old one kept as {bad.name})")
                    manifest = None
                manifest = manifest or mf.empty_manifest(config)
                if config is not None and manifest["config"] and manifest["config"] != config:
                    warnings.warn(
                        f"{self.output_dir / mf.MANIFEST_NAME}: earlier shards were written with another config; "
                        "the manifest now records the new one (use --overwrite to start over)",
                        stacklevel=3,
                    )
                self.resume_notes += _verify_listed(self.output_dir, manifest)
                adopted, methods = _adopt_orphans(self.output_dir, manifest)
                method = manifest.get("method") or (methods.pop() if len(methods) == 1 else None)
                mf.merge_into_manifest(manifest, adopted, config, method)
                mf.write_json_atomic(self.output_dir / mf.MANIFEST_NAME, manifest)
        except OSError as exc:
            raise _write_error(Path(exc.filename or self.output_dir), exc) from None
        return manifest

    def _release_lock(self) -> None:
        if getattr(self, "_lock", None) is not None:
            self._lock.release()
            self._lock = None

    # -- public API

    @property
    def done_clips(self) -> set[str]:
        """Clips already in this output (manifest) or in the open shard: `write_clip` skips them."""
        pending = set(self._shard.clips) if self._shard else set()
        return self._done | pending

    def write_clip(self, fit: FitResult, images: Any = None, masks: Any = None, quality: Optional[dict] = None) -> int:
        """Write the T samples of a fitted clip; returns T, or 0 when the clip is already done.

        images: (T, H, W, 3) uint8, or `EncodedFrames` (frames and masks encoded once for
        several methods' outputs); masks: (T, H, W) uint8; quality: see `frame_qualities`.
        """
        if self._closed:
            raise RuntimeError("ShardWriter is closed")
        if fit.clip_id in self.done_clips:
            return 0
        if self._method is not None and fit.method != self._method:
            raise HodataError(
                f"{self.output_dir}: holds fits of method '{self._method}'; write method '{fit.method}' "
                "into a separate output directory (one per method)"
            )
        samples = encode_clip(fit, images, masks, quality, self.jpeg_quality)
        keys = [key for key, _ in samples]
        existing = self._existing_keys()
        clash = [k for k in keys if k in existing]
        if clash:
            raise HodataError(
                f"{self.output_dir}: sample {clash[0]} of clip {fit.clip_id} is already in this output "
                "(overlapping clips: were --clip-length or --stride changed since it was written?); keep the "
                "windowing of the output, or write to another output directory (or --overwrite)"
            )
        members = []
        for key, parts in samples:
            for ext, data in parts:
                members.append((_member_header(f"{key}.{ext}", len(data), self._mtime), data))
        size = sum(len(h) + len(d) + len(_padding(len(d))) for h, d in members)

        T = len(samples)
        if self._shard is not None and (
            self._shard.samples + T > self.max_samples
            or self._shard.bytes + size + len(_END_OF_ARCHIVE) > self.max_bytes
        ):
            self._finalise()
        if self._shard is None:
            try:
                self._open_shard()
            except OSError as exc:
                raise _write_error(self.output_dir, exc) from None
        shard = self._shard
        start, hasher = shard.file.tell(), shard.hasher.copy()
        try:
            for header, data in members:
                for chunk in (header, data, _padding(len(data))):
                    shard.file.write(chunk)
                    shard.hasher.update(chunk)
            shard.file.flush()
        except BaseException as exc:
            # Cut the clip back out so the shard keeps only whole clips, then let the error through.
            shard.file.seek(start)
            shard.file.truncate()
            shard.hasher = hasher
            if isinstance(exc, OSError):
                raise _write_error(shard.partial, exc) from None
            raise
        shard.samples += T
        shard.bytes += size
        shard.clips[fit.clip_id] = T
        existing.update(keys)
        self._method = fit.method
        if shard.samples >= self.max_samples or shard.bytes + len(_END_OF_ARCHIVE) >= self.max_bytes:
            self._finalise()
        return T

    def flush(self) -> Optional[str]:
        """Finalise the open shard now (if any); returns its file name."""
        if self._shard is None:
            return None
        return self._finalise()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.flush()
            finally:
                self._release_lock()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals

    def _existing_keys(self) -> set[str]:
        """Keys of this output's shards (read lazily from tar headers of earlier runs)."""
        if self._keys is None:
            self._keys = set()
            for name in self._earlier_shards:
                path = self.output_dir / name
                try:
                    with tarfile.open(path, "r:") as tf:
                        self._keys.update(m.name.rsplit("/", 1)[-1].split(".", 1)[0] for m in tf)
                except (OSError, tarfile.TarError) as e:
                    warnings.warn(f"{path}: cannot list its keys ({e}); duplicate keys go unchecked", stacklevel=3)
        return self._keys

    def _open_shard(self) -> None:
        while True:
            name = mf.shard_name(self.prefix, self.tag, self._next_index)
            self._next_index += 1
            partial = self.output_dir / mf.partial_name(name)
            if not (self.output_dir / name).exists() and not partial.exists():
                break
        self._shard = _OpenShard(name=name, partial=partial, file=open(partial, "wb"))

    def _finalise(self) -> Optional[str]:
        shard, self._shard = self._shard, None
        if shard.samples == 0:  # an interrupted or failed first write: no empty shard is listed
            shard.file.close()
            shard.partial.unlink(missing_ok=True)
            return None
        try:
            shard.file.write(_END_OF_ARCHIVE)
            shard.hasher.update(_END_OF_ARCHIVE)
            shard.file.flush()
            os.fsync(shard.file.fileno())
            shard.file.close()
            final = self.output_dir / shard.name
            os.replace(shard.partial, final)
            mf.fsync_dir(self.output_dir)
            entry = {"name": shard.name, "samples": shard.samples, "bytes": shard.bytes + len(_END_OF_ARCHIVE),
                     "sha256": shard.hasher.hexdigest(), "clips": dict(shard.clips)}
            mf.update_manifest(self.output_dir, [entry], method=self._method)
        except OSError as exc:
            if not shard.file.closed:
                shard.file.close()
            raise _write_error(Path(exc.filename or shard.partial), exc) from None
        self._done.update(shard.clips)
        self.shards_written.append(shard.name)
        return shard.name


def done_clips(output_dir: str | os.PathLike) -> set[str]:
    """Clip ids already written to `output_dir` (from its manifest); empty for a new output."""
    return mf.done_clips(output_dir)


__all__ = [
    "ShardWriter", "OutputWriteError", "EncodedFrames", "done_clips", "clear_output", "encode_clip", "frame_qualities", "quality_score",
    "sample_key", "frame_token", "object_prefix", "DEFAULT_MAX_SAMPLES", "DEFAULT_MAX_BYTES",
]
