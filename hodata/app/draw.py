"""Pictures of a fit to judge it at a glance: meshes over the frame, a side view, panels, MP4.

    hands, objects = fit_scene_meshes(fit, cache_dir="mesh_cache")      # [(verts (T, V, 3), faces)]
    front = render_overlay(frames, hands, objects, fit.K)               # (T, H, W, 3) uint8
    side = render_side_view(hands, objects, fit.K, fit.image_size)      # (T, H, W, 3) uint8
    panels = [compose_panel([f, s], labels=("overlay", "side view")) for f, s in zip(front, side)]
    write_video(panels, "clip.mp4", fps=10)

Meshes are drawn by the z-buffer rasteriser (`hodata.geometry.raster.render_shaded`, Lambert
shading with a headlight), hands in a skin colour and each object in its own colour of
OBJECT_COLORS. Rendering functions take meshes unbatched (verts (V, 3)) or batched over frames
(verts (B, V, 3)) and return numpy uint8 images of the matching rank; images go to files, so
the interface is numpy there. Camera coordinates are OpenCV's (x right, y down, z forward).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch

from hodata.errors import HodataError
from hodata.types import FitResult

SKIN_COLOR = (0.93, 0.71, 0.58)
"""RGB in [0, 1] of every hand."""

OBJECT_COLORS = (
    (0.18, 0.45, 0.95),  # blue: far from skin tones, so hand and object stay apart
    (0.20, 0.80, 0.35),
    (0.95, 0.55, 0.10),
    (0.70, 0.30, 0.85),
)
"""RGB in [0, 1] of the first, second, ... object (cycled)."""

BACKGROUND_GREY = 128
"""uint8 grey of frames drawn without an image (and of the side view)."""

SIDE_VIEW_DEGREES = 90.0
"""Default rotation of the side camera about the vertical axis through the scene centroid."""

OVERLAY_ALPHA = 0.6
"""Default opacity of the meshes over the frame."""

_CHUNK_FRAMES = 8  # frames rasterised together: bounds the (B, H, W) fragment buffers

Mesh = tuple[Any, Any]  # (verts (V, 3) or (B, V, 3), faces (F, 3)), torch or numpy


# ----------------------------------------------------------------------------- inputs


def _as_meshes(meshes: Sequence[Mesh]) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], Optional[int]]:
    """Meshes as [(verts (B, V, 3), faces (F, 3) long)] in one float dtype and on one device.

    Returns the batch size B, or None when every mesh came unbatched (then B = 1 inside).
    """
    out, ranks = [], set()
    first: Optional[torch.Tensor] = None
    for verts, faces in meshes:
        v = torch.as_tensor(verts)
        if first is None:
            first = v if v.is_floating_point() else v.float()
        v = v.to(dtype=first.dtype, device=first.device)
        if v.dim() not in (2, 3) or v.shape[-1] != 3:
            raise ValueError(f"mesh vertices must be (V, 3) or (B, V, 3), got {tuple(v.shape)}")
        ranks.add(v.dim())
        f = torch.as_tensor(faces, device=v.device).long()
        if f.dim() != 2 or f.shape[-1] != 3:
            raise ValueError(f"mesh faces must be (F, 3), got {tuple(f.shape)}")
        out.append((v if v.dim() == 3 else v[None], f))
    if len(ranks) > 1:
        raise ValueError("mix of batched (B, V, 3) and unbatched (V, 3) meshes")
    if not out:
        return out, None
    sizes = {v.shape[0] for v, _ in out}
    if len(sizes) > 1:
        raise ValueError(f"meshes have different batch sizes {sorted(sizes)}")
    return out, (sizes.pop() if 3 in ranks else None)


def _colors(num_hands: int, num_objects: int, hand_color, object_colors) -> list:
    return [hand_color] * num_hands + [object_colors[i % len(object_colors)] for i in range(num_objects)]


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def _as_image_batch(image: Any, batch: Optional[int]) -> tuple[torch.Tensor, bool]:
    """uint8 (H, W, 3) or (B, H, W, 3) -> ((B, H, W, 3) uint8 tensor, was batched)."""
    img = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    if img.dtype != torch.uint8 or img.dim() not in (3, 4) or img.shape[-1] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3) or (B, H, W, 3), got {img.dtype} {tuple(img.shape)}")
    batched = img.dim() == 4
    if not batched:
        img = img[None].expand(batch or 1, *img.shape)
    elif batch is not None and img.shape[0] != batch:
        raise ValueError(f"{img.shape[0]} images for meshes batched over {batch} frames")
    return img, batched


# ----------------------------------------------------------------------------- rendering


def _shade(meshes, colors, K: torch.Tensor, image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(shaded (B, H, W, 3) in [0, 1], drawn (B, H, W) bool), rasterised once.

    The background is filled with -1, which no shaded pixel takes (shading is clamped to
    [0, 1]), so the coverage comes out of the same z-buffer pass as the colours.
    """
    from hodata.geometry.raster import render_shaded

    verts0 = meshes[0][0]
    sentinel = torch.full((verts0.shape[0], *image_size, 3), -1.0, dtype=verts0.dtype, device=verts0.device)
    K = torch.as_tensor(K).to(dtype=verts0.dtype, device=verts0.device)
    shaded = render_shaded(meshes, colors, K, image_size, background=sentinel)
    drawn = shaded[..., 0] >= 0
    return shaded.clamp_min(0.0), drawn


def render_overlay(
    image: Any,
    hands: Sequence[Mesh],
    objects: Sequence[Mesh],
    K: Any,
    alpha: float = OVERLAY_ALPHA,
    image_size: Optional[tuple[int, int]] = None,
    hand_color=SKIN_COLOR,
    object_colors=OBJECT_COLORS,
) -> np.ndarray:
    """Shaded hand and object meshes blended over the frame, seen through the frame's camera.

    image: uint8 (H, W, 3) or (B, H, W, 3) RGB, or None for a mid-grey frame of `image_size`
    (H, W); hands, objects: [(verts (V, 3) or (B, V, 3) camera coords, faces (F, 3))]; K:
    (3, 3) or (B, 3, 3). Each covered pixel becomes alpha * mesh colour + (1 - alpha) * frame,
    with the nearest surface winning (hands occlude objects and vice versa). Returns uint8
    (H, W, 3), or (B, H, W, 3) when the meshes or the image are batched.
    """
    meshes, batch = _as_meshes([*hands, *objects])
    if image is None:
        if image_size is None:
            raise ValueError("render_overlay needs image_size when image is None")
        img = torch.full((batch or 1, *image_size, 3), BACKGROUND_GREY, dtype=torch.uint8)
        batched = batch is not None
    else:
        img, img_batched = _as_image_batch(image, batch)
        batched = img_batched or batch is not None
        if image_size is not None and tuple(image_size) != tuple(img.shape[1:3]):
            raise ValueError(f"image is {tuple(img.shape[1:3])} but image_size is {tuple(image_size)}")
    if batch is None and img.shape[0] > 1:  # one scene over several images
        meshes = [(v.expand(img.shape[0], -1, -1), f) for v, f in meshes]
    if not meshes:
        out = img.cpu().numpy().copy()
        return out if batched else out[0]
    size = (int(img.shape[1]), int(img.shape[2]))
    shaded, drawn = _shade(meshes, _colors(len(hands), len(objects), hand_color, object_colors), K, size)
    frame = img.to(device=shaded.device, dtype=shaded.dtype) / 255.0
    weight = alpha * drawn[..., None].to(shaded.dtype)
    out = _to_uint8(frame * (1.0 - weight) + shaded * weight)
    return out if batched else out[0]


def side_view_camera(
    centroid: torch.Tensor, angle_degrees: float = SIDE_VIEW_DEGREES
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose (R (3, 3), t (3,)) of the side camera: x_side = R x + t for camera points x.

    The side camera is the original camera turned by `angle_degrees` about the vertical
    (camera y) axis through `centroid` (3,) and moved so that it looks straight at the centroid
    from the centroid's distance d = |centroid|: the centroid lands at (0, 0, d), i.e. on the
    principal point, at the same viewing distance as in the frame. R = R_y(angle), so +90
    degrees puts the camera at centroid + d (1, 0, 0), on the right of the scene as the frame
    shows it, looking along -x; the original camera is then on the left of the side view.
    """
    from hodata.geometry.rotations import axis_angle_to_matrix

    centroid = torch.as_tensor(centroid)
    axis = torch.zeros(3, dtype=centroid.dtype, device=centroid.device)
    axis[1] = math.radians(angle_degrees)
    R = axis_angle_to_matrix(axis)
    distance = centroid.norm()
    t = torch.stack([torch.zeros_like(distance), torch.zeros_like(distance), distance]) - R @ centroid
    return R, t


def scene_centroid(meshes: Sequence[Mesh]) -> torch.Tensor:
    """Mean of all vertices of all meshes over all frames: (3,)."""
    prepared, _ = _as_meshes(meshes)
    if not prepared:
        raise ValueError("no meshes: the scene has no centroid")
    return torch.cat([v.reshape(-1, 3) for v, _ in prepared]).mean(0)


def render_side_view(
    hands: Sequence[Mesh],
    objects: Sequence[Mesh],
    K: Any,
    image_size: tuple[int, int],
    angle_degrees: float = SIDE_VIEW_DEGREES,
    centroid: Optional[Any] = None,
    hand_color=SKIN_COLOR,
    object_colors=OBJECT_COLORS,
) -> np.ndarray:
    """The same 3D scene from a second, virtual camera beside it (`side_view_camera`).

    The side camera turns `angle_degrees` (default 90) about the vertical axis through
    `centroid` (default: `scene_centroid` of all meshes over all frames, so with batched
    meshes it stays fixed over a clip and motion shows as motion) and has the intrinsics K
    (3, 3) of the frame, so sizes are comparable between the two views. Depth errors along
    the frame camera's viewing ray, invisible in the overlay, become sideways offsets here.
    Meshes are drawn opaque on mid-grey. Returns uint8 (H, W, 3), or (B, H, W, 3) for
    batched meshes.
    """
    meshes, batch = _as_meshes([*hands, *objects])
    H, W = (int(s) for s in image_size)
    if not meshes:
        out = np.full((batch or 1, H, W, 3), BACKGROUND_GREY, np.uint8)
        return out if batch is not None else out[0]
    verts0 = meshes[0][0]
    if centroid is None:
        centroid = torch.cat([v.reshape(-1, 3) for v, _ in meshes]).mean(0)
    R, t = side_view_camera(torch.as_tensor(centroid).to(verts0), angle_degrees)
    moved = [(v @ R.T + t, f) for v, f in meshes]
    shaded, drawn = _shade(moved, _colors(len(hands), len(objects), hand_color, object_colors), K, (H, W))
    grey = torch.full_like(shaded, BACKGROUND_GREY / 255.0)
    out = _to_uint8(torch.where(drawn[..., None], shaded, grey))
    return out if batch is not None else out[0]


# ----------------------------------------------------------------------------- panels and video


def compose_panel(
    frames: Sequence[np.ndarray], separator: int = 4, labels: Optional[Sequence[str]] = None
) -> np.ndarray:
    """Images (H, W_i, 3) uint8 side by side, `separator` white pixels apart -> (H, sum W + gaps, 3).

    labels: optional text per image, written in its top-left corner.
    """
    if not frames:
        raise ValueError("compose_panel needs at least one image")
    frames = [np.asarray(f) for f in frames]
    heights = {f.shape[0] for f in frames}
    if len(heights) > 1 or any(f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8 for f in frames):
        raise ValueError(f"compose_panel needs uint8 (H, W, 3) images of one height, got "
                         f"{[(f.dtype.name, f.shape) for f in frames]}")
    if labels is not None:
        import cv2

        frames = [f.copy() for f in frames]
        for f, text in zip(frames, labels):
            scale = max(f.shape[0] / 720.0, 0.35)
            origin = (6, 6 + int(22 * scale))
            # dark outline under light text: readable on any frame
            cv2.putText(f, str(text), origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(f, str(text), origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    gap = np.full((frames[0].shape[0], separator, 3), 255, np.uint8)
    parts = []
    for i, f in enumerate(frames):
        if i and separator > 0:
            parts.append(gap)
        parts.append(f)
    return np.concatenate(parts, axis=1)


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad to even height and width by repeating the last row / column: the MPEG-4 encoder
    crops odd sizes, which would cut off a pixel line."""
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    if pad_h or pad_w:
        frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frame


def write_video(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: float = 10.0) -> Path:
    """Write RGB uint8 frames (H, W, 3) of one size as an MPEG-4 video (OpenCV, fourcc "mp4v").

    frames: a sequence, or any iterable (e.g. a generator reading frames one by one, so a
    long video need not fit in memory). Odd sizes are padded to even by repeating the last
    row / column. The file is written under a temporary name, reopened with
    cv2.VideoCapture and its frames counted, and only then renamed to `path`. Raises
    HodataError when this OpenCV cannot write or read back MP4.
    """
    import itertools

    import cv2

    path = Path(path)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    iterator = iter(frames)
    head = next(iterator, None)
    if head is None:
        raise ValueError(f"{path}: no frames to write")
    shape = np.asarray(head).shape
    frames = itertools.chain([head], iterator)
    first = _even(np.asarray(head))
    height, width = first.shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.stem}-{os.getpid()}.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    try:
        if not writer.isOpened():
            raise HodataError(
                f"{path}: this OpenCV ({cv2.__version__}) cannot write MP4 (fourcc mp4v); install an "
                "opencv-python(-headless) wheel built with FFmpeg, or use the PNG frames"
            )
        count = 0
        for frame in frames:
            frame = np.asarray(frame)
            if frame.shape != shape:
                raise ValueError(f"{path}: frames differ in size {sorted({shape, frame.shape})}")
            frame = _even(frame)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"{path}: frames must be uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
            count += 1
        writer.release()
        written = count_video_frames(tmp, (height, width))
        if written != count:
            raise HodataError(
                f"{path}: wrote {count} frames but cv2.VideoCapture reads back {written}; "
                "this OpenCV build's MP4 support is broken, use the PNG frames"
            )
        os.replace(tmp, path)
    finally:
        writer.release()
        tmp.unlink(missing_ok=True)
    return path


def count_video_frames(path: str | os.PathLike, frame_size: Optional[tuple[int, int]] = None) -> int:
    """Frames decodable from a video file, by reading them all; with frame_size (H, W), frames
    of another size are not counted. HodataError when the file cannot be opened."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise HodataError(f"{path}: cv2.VideoCapture cannot open the video; is OpenCV built with FFmpeg?")
        count = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                return count
            if frame_size is None or tuple(frame.shape[:2]) == tuple(frame_size):
                count += 1
    finally:
        capture.release()


# ----------------------------------------------------------------------------- meshes of a fit


def load_hand_faces(side: str, model_name: str, mano_dir: str | os.PathLike | None = None) -> tuple[torch.Tensor, int]:
    """(faces (F, 3) long with the wrist closed, vertex count) of the hand model that made a fit.

    model_name: HandState.model_name ("open-hand-v1", "mano", or "" when unknown: the model
    `hodata.handmodel.load` picks for `mano_dir`).
    """
    from hodata import handmodel
    from hodata.handmodel.constants import MANO_MODEL_NAME, OPEN_HAND_MODEL_NAME

    if model_name == OPEN_HAND_MODEL_NAME:
        layer = handmodel.load(side=side, model="open")
    elif model_name == MANO_MODEL_NAME:
        layer = handmodel.load(side=side, model="mano", mano_dir=mano_dir)
    else:
        layer = handmodel.load(side=side, model="auto", mano_dir=mano_dir)
    return layer.closed_faces.long(), int(layer.v_template.shape[-2])


def fit_scene_meshes(
    fit: FitResult,
    cache_dir: str | os.PathLike | None = None,
    mano_dir: str | os.PathLike | None = None,
    faces_cache: Optional[dict] = None,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[tuple[torch.Tensor, torch.Tensor]]]:
    """The fitted meshes of a clip: (hands, objects), each [(verts (T, V, 3) camera coords, faces (F, 3))].

    Hand faces come from the hand model named in each HandState (`load_hand_faces`; MANO files
    from `mano_dir`). Object faces come from the mesh cache (`cache_dir`, default
    `$HODATA_MESH_CACHE` or ./mesh_cache); object vertices are the stored ObjectState.vertices
    when their count matches the cached mesh, else the cached canonical vertices posed by the
    fitted s, R, D (paper Eq. 2). HodataError names a model missing from the cache.
    faces_cache: a dict reused across calls so each model is loaded once.
    """
    from hodata.geometry.transforms import apply_similarity
    from hodata.objects import load_object_model

    cache = {} if faces_cache is None else faces_cache
    hands = []
    for hand in fit.hands:
        key = ("hand", hand.side, hand.model_name, str(mano_dir))
        if key not in cache:
            cache[key] = load_hand_faces(hand.side, hand.model_name, mano_dir)
        faces, num_verts = cache[key]
        verts = torch.as_tensor(hand.vertices)
        if verts.shape[-2] != num_verts:
            raise HodataError(
                f"clip {fit.clip_id}: {hand.side} hand has {verts.shape[-2]} vertices but the hand model "
                f"'{hand.model_name or 'auto'}' has {num_verts}; pass the --mano-dir used for fitting"
            )
        hands.append((verts.float(), faces.to(verts.device)))
    objects = []
    for obj in fit.objects:
        key = ("object", obj.model_id, str(cache_dir))
        if key not in cache:
            try:
                cache[key] = load_object_model(obj.model_id, cache_dir=cache_dir)
            except HodataError as exc:
                raise HodataError(f"clip {fit.clip_id}: {exc}") from None
        model = cache[key]
        stored = obj.vertices
        if stored is not None and stored.dim() == 3 and stored.shape[-2] == model.vertices.shape[0]:
            verts = stored.float()
        else:
            rotation = torch.as_tensor(obj.rotation).float()
            scale = obj.scale.float() if isinstance(obj.scale, torch.Tensor) else float(obj.scale)
            canonical = model.vertices.to(rotation.device)
            verts = apply_similarity(canonical, rotation, torch.as_tensor(obj.translation).float(), scale)
        objects.append((verts, model.faces.to(verts.device)))
    return hands, objects


def render_fit_panels(
    fit: FitResult,
    hands: Sequence[tuple[torch.Tensor, torch.Tensor]],
    objects: Sequence[tuple[torch.Tensor, torch.Tensor]],
    frames: Optional[np.ndarray] = None,
    alpha: float = OVERLAY_ALPHA,
    chunk: int = _CHUNK_FRAMES,
    on_chunk=None,
) -> list[np.ndarray]:
    """One "overlay | side view" panel (H, 2 W + 4, 3) uint8 per frame of the fit.

    hands, objects: from `fit_scene_meshes`; frames: (T, H, W, 3) uint8 or None for mid-grey.
    The side camera is fixed over the clip (centroid of all frames). Frames are rendered
    `chunk` at a time; on_chunk(n) is called after each chunk with its frame count.
    """
    T = len(fit.frame_ids)
    H, W = (int(s) for s in fit.image_size)
    if frames is not None and tuple(np.asarray(frames).shape) != (T, H, W, 3):
        raise ValueError(f"clip {fit.clip_id}: frames {tuple(np.asarray(frames).shape)} do not match "
                         f"{T} frames of {(H, W)}")
    K = torch.as_tensor(fit.K).float()
    centroid = scene_centroid([*hands, *objects]) if (hands or objects) else None
    panels = []
    for start in range(0, T, chunk):
        stop = min(start + chunk, T)
        h = [(v[start:stop], f) for v, f in hands]
        o = [(v[start:stop], f) for v, f in objects]
        image = None if frames is None else np.asarray(frames[start:stop])
        if h or o:
            front = render_overlay(image, h, o, K, alpha, image_size=(H, W))
            side = render_side_view(h, o, K, (H, W), centroid=centroid)
        else:
            front = image if image is not None else np.full((stop - start, H, W, 3), BACKGROUND_GREY, np.uint8)
            side = np.full((stop - start, H, W, 3), BACKGROUND_GREY, np.uint8)
        panels.extend(compose_panel([f, s], labels=("overlay", "side view")) for f, s in zip(front, side))
        if on_chunk is not None:
            on_chunk(stop - start)
    return panels


# ----------------------------------------------------------------------------- frames


def clip_from_samples(results_dir: Path, clip_id: str, samples: list[dict]):
    """(FitResult, the samples in frame order, frames (T, H, W, 3) uint8 or None) of one clip
    from its decoded shard samples; frames are None when a sample has no jpg or one is stored
    at another size than the fit's camera (unusable for drawing)."""
    from hodata.shards.reader import _fit_result

    fit = _fit_result(results_dir, clip_id, samples)
    ordered = sorted(samples, key=lambda s: s["meta"]["frame_index"])
    frames = None
    if ordered and all("jpg" in s for s in ordered):
        frames = np.stack([np.asarray(s["jpg"]) for s in ordered])
        if frames.shape[1:3] != tuple(fit.image_size):
            frames = None
    return fit, ordered, frames


def read_results_clips(
    results_dir: str | os.PathLike, clip_ids: Optional[Sequence[str]] = None, verify: bool = True
) -> dict[str, tuple[FitResult, Optional[np.ndarray]]]:
    """Fits and stored frames of clips in a shard output: clip_id -> (FitResult, frames or None).

    Reads only the shards holding the requested clips (all clips when None), decoding their
    `jpg` members: frames is (T, H, W, 3) uint8 RGB when every frame of the clip has one, else
    None. HodataError for a missing folder, a folder without manifest.json, an unknown clip.
    """
    from hodata.shards import MANIFEST_NAME, load, read_manifest

    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise HodataError(f"{results_dir}: results folder not found; pass the output folder of `hodata fit`")
    manifest = read_manifest(results_dir)
    if manifest is None:
        raise HodataError(f"{results_dir}: no {MANIFEST_NAME}; pass the output folder of `hodata fit` "
                          "(it holds manifest.json and shard-*.tar)")
    available = sorted(manifest["clips"])
    if not available:
        raise HodataError(f"{results_dir / MANIFEST_NAME}: lists no fitted clips; run `hodata fit` into it first")
    wanted = available if clip_ids is None else list(dict.fromkeys(clip_ids))
    unknown = [c for c in wanted if c not in manifest["clips"]]
    if unknown:
        shown = ", ".join(available[:20]) + (f", ... ({len(available)} in all)" if len(available) > 20 else "")
        raise HodataError(f"{results_dir}: no clip '{unknown[0]}'; available clips: {shown}")
    shard_names = sorted({manifest["clips"][c]["shard"] for c in wanted})
    samples: dict[str, list[dict]] = {c: [] for c in wanted}
    for sample in load([results_dir / name for name in shard_names], decode_images=True, verify=verify):
        clip_id = sample["meta"]["clip_id"]
        if clip_id in samples:
            samples[clip_id].append(sample)
    out = {}
    for clip_id in wanted:
        fit, _, frames = clip_from_samples(results_dir, clip_id, samples[clip_id])
        out[clip_id] = (fit, frames)
    return out


def find_frame_image(root: str | os.PathLike, sequence: str, frame_id: str) -> Optional[Path]:
    """The image of a frame under a dataset root, or None when no known layout has it.

    Layouts tried: HO-3D / synthetic `<root>/{train,evaluation}/<seq>/rgb/<id>.{png,jpg}`,
    Epic-Kitchens `<root>/<PXX>/rgb_frames/<seq>/frame_<id:010d>.jpg`, and the plain
    `<root>/<seq>/rgb/<id>.*`, `<root>/<seq>/<id>.*`.
    """
    root = Path(root)
    folders = [root / split / sequence / "rgb" for split in ("train", "evaluation")]
    folders += [root / sequence / "rgb", root / sequence]
    for folder in folders:
        for ext in (".png", ".jpg", ".jpeg"):
            candidate = folder / f"{frame_id}{ext}"
            if candidate.is_file():
                return candidate
    if str(frame_id).isdigit():
        candidate = root / sequence.split("_")[0] / "rgb_frames" / sequence / f"frame_{int(frame_id):010d}.jpg"
        if candidate.is_file():
            return candidate
    return None


def read_frames_from_root(root: str | os.PathLike, fit: FitResult) -> Optional[np.ndarray]:
    """(T, H, W, 3) uint8 frames of a fit found under a dataset root (resized to the fit's
    image size, whose camera K they must match), or None when any frame is not found."""
    import cv2

    from hodata.datasets.base import read_rgb

    H, W = (int(s) for s in fit.image_size)
    frames = []
    for frame_id in fit.frame_ids:
        path = find_frame_image(root, fit.sequence, frame_id)
        if path is None:
            return None
        image = read_rgb(path)
        if image.shape[:2] != (H, W):
            image = cv2.resize(image, (W, H), interpolation=cv2.INTER_AREA)
        frames.append(image)
    return np.stack(frames)


__all__ = [
    "SKIN_COLOR", "OBJECT_COLORS", "BACKGROUND_GREY", "SIDE_VIEW_DEGREES", "OVERLAY_ALPHA",
    "render_overlay", "render_side_view", "side_view_camera", "scene_centroid", "compose_panel",
    "write_video", "count_video_frames", "load_hand_faces", "fit_scene_meshes", "render_fit_panels",
    "read_results_clips", "find_frame_image", "read_frames_from_root",
]


def draw_clip_evidence(clip, evidence, layers: dict, out_dir: str | os.PathLike) -> list[Path]:
    """One PNG per frame (`out_dir/<frame>.png`) of a clip's evidence for a person to check:
    the object target (object green, hand occluder red), object and hand boxes, the hand
    keypoints and the initial hand mesh of each hand."""
    from hodata.datasets.base import read_rgb
    from hodata.evidence import draw

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ev = evidence.to("cpu", torch.float64)
    meshes = {}
    for hand in ev.hands:
        if hand.init is not None and hand.side in layers:
            layer = layers[hand.side].to(torch.float64)
            with torch.no_grad():
                verts = layer(global_orient=hand.init.global_orient, hand_pose=hand.init.hand_pose,
                              betas=hand.init.betas, transl=hand.init.transl).vertices
            meshes[hand.side] = (verts, torch.as_tensor(layer.faces).long())
    written = []
    for t, (frame, path) in enumerate(zip(clip.frame_ids, clip.image_paths)):
        image = read_rgb(path)
        if ev.object_masks is not None:
            image = draw.draw_object_target(image, ev.object_masks[t].numpy())
        for side, (verts, faces) in meshes.items():
            image = draw.draw_hand_mesh(image, verts[t], faces, clip.K)
        boxes = [(ev.object_boxes[t].numpy(), (60, 220, 60), "object")]
        boxes += [(h.boxes[t].numpy(), (240, 120, 40), f"{h.side} {float(h.scores[t]):.2f}") for h in ev.hands]
        image = draw.draw_boxes(image, boxes)
        for hand in ev.hands:
            if hand.keypoints_2d is not None:
                image = draw.draw_keypoints(image, hand.keypoints_2d[t].numpy())
        written.append(draw.save_png(image, out_dir / f"{frame}.png"))
    return written
