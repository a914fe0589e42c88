"""HO-3D v2 / v3 adapter (REFERENCE.md §5): reads the dataset's own files into `Clip`s.

On disk (both versions, and the synthetic sets of `hodata.datasets.synthetic`):

    <root>/train.txt, <root>/evaluation.txt            lines "SEQ/ID", e.g. "ABF10/0000"
    <root>/{train,evaluation}/<SEQ>/rgb/<ID>.png|jpg   colour frames (v2 png, v3 jpg)
    <root>/{train,evaluation}/<SEQ>/meta/<ID>.pkl      annotations (keys below)
    <root>/{train,evaluation}/<SEQ>/seg|segr/<ID>.png|jpg   segmentation (train only)
    <root>/models/<objName>/textured_simple.obj        YCB object models, metres

Meta keys, train: objTrans, handBeta, camMat, handJoints3D (21, 3), handTrans, camIDList,
handPose (48,), objCorners3DRest, objRot (Rodrigues, (3,) or (3, 1)), objName, objCorners3D,
objLabel. Evaluation: objTrans, objRot, objName, objLabel, camMat, objCorners3D(Rest),
handBoundingBox (xyxy), handJoints3D = root only (3,). Frames whose objRot is None are
skipped (and counted). All 3D values are in an OpenGL-style camera (y up, z backward); this
adapter converts them to OpenCV camera coordinates here, once: X_cv = F X_gl with
F = diag(1, -1, -1), so an object pose becomes (F R, F t) and the hand model's global
rotation F R with a translation recomputed so the layer output is F times the OpenGL mesh.
`camMat` then projects OpenCV camera points directly.

Hands: HO-3D stores MANO parameters in the flat_hand_mean=True convention (48-D axis-angle:
global 3 + 45). Ground-truth hands are rebuilt with the hand model the meta names under the
extra key `hodataHandModel` (written by the synthetic generator) or MANO for real HO-3D. When
that model cannot be loaded (no MANO files) or parameters are missing, the hand state holds the
annotated joints only (`vertices` of shape (T, 0, 3); `handJoints3D` kept in the file's joint
order, which for real HO-3D is not checked against the hand model's here). Ground-truth `HandState.hand_pose` is
the 45-D axis-angle in that flat convention (actual joint rotations), `pose_space="axis_angle"`.

Segmentation encoding read here (and written by the synthetic generator): a colour image whose
GREEN channel marks the object and BLUE channel marks the hand (value > 127, robust to jpg),
the arrangement of the HO-3D v2 `seg` jpgs. Maps at another resolution are resized (nearest).

Evaluation ground truth: real HO-3D hides the evaluation hands. The synthetic generator writes
full train-style metas for evaluation frames to `<root>/evaluation_gt/<SEQ>/<ID>.pkl`; when such
a file exists it is used for the ground truth of that frame.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from hodata.datasets.base import clip_windows, find_image, load_each, read_rgb
from hodata.datasets.registry import register_dataset
from hodata.device import resolve_device
from hodata.errors import HodataError
from hodata.fileio import sha256_file
from hodata.geometry.camera import OPENGL_TO_OPENCV, boxes_from_points, project
from hodata.geometry.rotations import axis_angle_to_matrix
from hodata.geometry.transforms import apply_similarity
from hodata.safe_pickle import load_pickle
from hodata.types import Clip, HandState, ObjectState

TRAIN_META_KEYS = (
    "objTrans", "handBeta", "camMat", "handJoints3D", "handTrans", "camIDList", "handPose",
    "objCorners3DRest", "objRot", "objName", "objCorners3D", "objLabel",
)
EVALUATION_META_KEYS = (
    "objTrans", "objRot", "objName", "objLabel", "camMat", "objCorners3D", "objCorners3DRest",
    "handBoundingBox", "handJoints3D",
)
HAND_MODEL_KEY = "hodataHandModel"   # extra meta key: name of the hand model of handPose
HAND_SIDE_KEY = "hodataHandSide"     # extra meta key: "left" when not HO-3D's right hand
# Extra meta key (hodata's own, for two-hand clips; real HO-3D has one hand per frame): a dict
# with the hand keys of the meta (handPose, handBeta, handTrans, handJoints3D, hodataHandSide,
# hodataHandModel) for a second hand of the other side, in the same OpenGL camera frame.
SECOND_HAND_KEY = "hodataSecondHand"
EVALUATION_GT_DIR = "evaluation_gt"  # <root>/evaluation_gt/<SEQ>/<ID>.pkl, train-style keys
SYNTHETIC_MARKER = "hodata_synthetic.json"  # written by the generator; Clip.dataset = "synthetic"
SEG_OBJECT_CHANNEL = 1   # RGB index of the object (green)
SEG_HAND_CHANNEL = 2     # RGB index of the hand (blue)
SPLITS = ("train", "evaluation")
# Metas kept from indexing for the clips' loading (each frame's pickle read once); a larger
# split keeps the first ones and reads the others again when their clip loads. A meta of
# real HO-3D is a few kB, so this bound holds some tens of MB.
META_CACHE_FRAMES = 20_000


def opengl_flip(dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """F = diag(1, -1, -1) (3, 3): OpenGL <-> OpenCV camera axes (its own inverse, det +1)."""
    return torch.diag(torch.tensor(OPENGL_TO_OPENCV, dtype=dtype, device=device))


def load_meta(path: str | Path) -> dict:
    """One HO-3D meta pickle as a dict; HodataError naming the file when missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise HodataError(f"missing annotation file {path}; restore it or remove the frame from the split list")
    try:
        meta = load_pickle(path)
    except Exception as exc:  # unpickling raises many types on a damaged file
        refused = isinstance(exc, pickle.UnpicklingError) and str(exc).startswith("refusing")
        reason = f"{type(exc).__name__}: {exc}" if refused else type(exc).__name__
        raise HodataError(f"corrupt annotation file {path} ({reason}); re-extract it from the HO-3D archive") from None
    if not isinstance(meta, dict):
        raise HodataError(f"annotation file {path} does not hold a dict; is it an HO-3D meta pickle?")
    return meta


def rigid_hand_params(
    layer: torch.nn.Module,
    global_orient: torch.Tensor,
    hand_pose: torch.Tensor,
    betas: Optional[torch.Tensor],
    transl: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hand-layer inputs giving the hand moved rigidly by (rotation, translation).

    global_orient: (B, 3, 3); hand_pose, betas as the layer takes them; transl: (B, 3);
    rotation: (B, 3, 3) or (3, 3); translation: (B, 3) or (3,) -> (global_orient', transl')
    with layer(global_orient', hand_pose, betas, transl') = rotation @ layer(...) + translation.
    MANO-style layers rotate the articulated hand about a pose-independent root, so the
    rotated output differs from the output with rotated global_orient by one offset per frame;
    it is measured on the vertex means of two layer passes (exact, no model internals used).
    """
    rotation = rotation.expand(global_orient.shape).to(global_orient)
    translation = translation.expand(transl.shape).to(transl)
    new_orient = rotation @ global_orient
    zero = torch.zeros_like(transl)
    moved = layer(global_orient=global_orient, hand_pose=hand_pose, betas=betas, transl=zero).vertices
    turned = layer(global_orient=new_orient, hand_pose=hand_pose, betas=betas, transl=zero).vertices
    moved_mean = (rotation @ moved.mean(1)[..., None])[..., 0]
    new_transl = (rotation @ transl[..., None])[..., 0] + translation + moved_mean - turned.mean(1)
    return new_orient, new_transl


def read_segmentation(path: Path, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Object and hand masks (H, W) bool from an HO-3D-style seg image (module docstring)."""
    import cv2

    seg = read_rgb(path)
    height, width = image_size
    if seg.shape[:2] != (height, width):
        seg = cv2.resize(seg, (width, height), interpolation=cv2.INTER_NEAREST)
    return seg[:, :, SEG_OBJECT_CHANNEL] > 127, seg[:, :, SEG_HAND_CHANNEL] > 127


def write_segmentation(path: Path, object_mask: np.ndarray, hand_mask: np.ndarray) -> None:
    """Write (H, W) bool masks in the encoding `read_segmentation` reads (lossless png)."""
    from PIL import Image

    seg = np.zeros(object_mask.shape + (3,), dtype=np.uint8)
    seg[..., SEG_OBJECT_CHANNEL] = np.where(object_mask, 255, 0)
    seg[..., SEG_HAND_CHANNEL] = np.where(hand_mask, 255, 0)
    Image.fromarray(seg).save(path, compress_level=1)


def ho3d_object_model(
    models_dir: str | Path,
    obj_name: str,
    cache_dir: str | Path | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
):
    """The prepared (watertight, ~1000 vertices) model of `<models_dir>/<obj_name>/textured_simple.obj`.

    Prepared through the mesh cache (hodata.objects) with the file's origin kept, so the meta
    poses apply to it. The cache id is `ho3d_<objName>_<first 8 hex of the file's sha256>`:
    the same object name from two HO-3D roots (real YCB-Video models vs. a synthetic set) never
    shares an entry. Raises HodataError naming the file when it is missing or fails to prepare.
    """
    from hodata.objects import CATALOG, load_object_model, prepare_mesh

    path = Path(models_dir) / str(obj_name) / "textured_simple.obj"
    if not path.is_file():
        raise HodataError(
            f"unknown object model '{obj_name}': {path} not found; put the YCB models under {Path(models_dir)}"
        )
    digest = sha256_file(path)  # hashed once: the id's prefix and the cache's source check
    model_id = f"ho3d_{obj_name}_{digest[:8]}"
    category = CATALOG[obj_name].category if obj_name in CATALOG else None
    result = prepare_mesh(path, cache_dir, model_id=model_id, category=category, units="m", source_sha256=digest)
    if result.status == "failed":
        raise HodataError(f"object model {path} could not be prepared: {result.error}")
    return load_object_model(result.model_id, cache_dir, device=device, dtype=dtype)


@dataclass
class ClipSpec:
    """Frames of one clip before loading: sequence and frame ids."""

    sequence: str
    frame_ids: list[str]


def _as_array(value, shape: tuple[int, ...], key: str, frame: str) -> np.ndarray:
    """A meta value as a float64 array of `shape`; HodataError naming the frame when it has
    another shape or holds NaN / infinity (a non-finite annotation would poison the fit)."""
    try:
        array = np.asarray(value, dtype=np.float64).reshape(shape)
    except (TypeError, ValueError):
        raise HodataError(f"frame {frame}: meta key {key!r} is {_short(value)}, expected shape {shape}") from None
    if not np.all(np.isfinite(array)):
        raise HodataError(
            f"frame {frame}: meta key {key!r} holds NaN or infinite values; fix the annotation or remove the "
            "frame from the split list"
        )
    return array


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clip_camera(metas: list[dict], frame_names: list[str]) -> np.ndarray:
    """The clip's camMat (3, 3): every frame's, checked finite and equal (a clip has one camera)."""
    cams = [_as_array(m["camMat"], (3, 3), "camMat", n) for m, n in zip(metas, frame_names)]
    for cam, name in zip(cams[1:], frame_names[1:]):
        if not np.allclose(cam, cams[0], rtol=1e-6, atol=1e-9):
            raise HodataError(
                f"frame {name}: camMat differs from that of {frame_names[0]} in the same clip; hodata fits one "
                "camera per clip: split the sequence where the camera changes"
            )
    return cams[0]


@register_dataset("ho3d")
class HO3DDataset:
    """HO-3D v2/v3 clips (REFERENCE.md §1, §5). Iterating yields `Clip`s; bad clips are skipped.

    root: dataset root; split: "train" | "evaluation"; sequences: names to keep (None: all);
    clip_length, stride: windowing (`base.clip_windows`, the reference's T = 10 and stride 4);
    evidence: "gt" (boxes from ground-truth projections, masks from the dataset's segmentation,
    the paper's Fig. 4 setting; frames without a seg file get masks rendered from the ground
    truth meshes) or "none" (no boxes or masks); device, dtype of the tensors; mano_dir: MANO
    files for real HO-3D hands; cache_dir: mesh cache; check_images: decode every frame's image
    (catches corrupt files; the frames are kept on the clip, `Clip.images`, so they are not
    decoded again for the shards; without it the image size comes from the first frame).

    Counters: `skipped_frames` ("SEQ/ID" of frames with objRot None, found when indexing),
    `skipped_clips` (clip ids that failed to load during the last iteration) and `messages`
    (one line per skipped clip or notable fallback, naming the frame and the fix).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        sequences: Optional[Sequence[str]] = None,
        clip_length: int = 10,
        stride: int = 4,
        evidence: str = "gt",
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        mano_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        check_images: bool = True,
    ):
        if split not in SPLITS:
            raise HodataError(f"unknown HO-3D split {split!r}; use one of {', '.join(SPLITS)}")
        if evidence not in ("gt", "none"):
            raise HodataError(f"unknown evidence mode {evidence!r} for HO-3D; use 'gt' or 'none'")
        self.root = Path(root)
        if not self.root.is_dir():
            raise HodataError(f"HO-3D root {self.root} does not exist; pass the folder holding train/ and {split}.txt")
        self.split = split
        self.clip_length = clip_length
        self.stride = stride
        self.evidence = evidence
        self.device = resolve_device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.mano_dir = mano_dir
        self.cache_dir = cache_dir
        self.check_images = check_images
        self.dataset_name = "synthetic" if (self.root / SYNTHETIC_MARKER).is_file() else "ho3d"
        self.skipped_frames: list[str] = []
        self.skipped_clips: list[str] = []
        self.messages: list[str] = []
        self._layers: dict[tuple[str, str], Optional[torch.nn.Module]] = {}
        self._objects: dict[str, object] = {}
        # metas read while indexing, handed to the clip that loads their frame (then dropped):
        # each meta pickle is read once per frame; bounded by META_CACHE_FRAMES
        self._indexed_metas: dict[Path, dict] = {}
        self.frames = self._index(sequences)
        self.clips: list[ClipSpec] = [
            ClipSpec(seq, [ids[i] for i in window])
            for seq, ids in self.frames.items()
            for window in clip_windows(len(ids), clip_length, stride)
        ]

    # ------------------------------------------------------------------ indexing
    def split_dir(self) -> Path:
        return self.root / self.split

    def meta_path(self, sequence: str, frame_id: str) -> Path:
        return self.split_dir() / sequence / "meta" / f"{frame_id}.pkl"

    def _list_frames(self) -> list[tuple[str, str]]:
        listing = self.root / f"{self.split}.txt"
        if listing.is_file():
            pairs = []
            for number, line in enumerate(listing.read_text().splitlines(), 1):
                line = line.strip()
                if not line:
                    continue
                if "/" not in line:
                    raise HodataError(f"{listing} line {number}: {line!r} is not 'SEQ/ID'; fix or delete the line")
                seq, frame = line.split("/", 1)
                pairs.append((seq, frame))
            if not pairs:
                raise HodataError(f"{listing} lists no frames; add 'SEQ/ID' lines, or delete it to use every "
                                  f"meta file under {self.split_dir()}")
            return pairs
        folder = self.split_dir()
        if not folder.is_dir():
            raise HodataError(f"neither {listing} nor {folder} exists; is {self.root} an HO-3D root?")
        pairs = [(p.parent.parent.name, p.stem) for p in sorted(folder.glob("*/meta/*.pkl"))]
        if not pairs:
            raise HodataError(f"{folder} holds no <SEQ>/meta/<ID>.pkl annotation files; is {self.root} an HO-3D root?")
        return pairs

    def _index(self, sequences: Optional[Sequence[str]]) -> "OrderedDict[str, list[str]]":
        """Frames per sequence in frame order, without the frames whose objRot is None.

        A missing or unreadable meta file keeps its frame: the clip holding it fails to load
        with a message naming the frame, and the other clips go on.
        """
        wanted = set(sequences) if sequences is not None else None
        grouped: "OrderedDict[str, list[str]]" = OrderedDict()
        for seq, frame in self._list_frames():
            if wanted is None or seq in wanted:
                grouped.setdefault(seq, []).append(frame)
        if wanted is not None:
            missing = sorted(wanted - set(grouped))
            if missing:
                raise HodataError(f"sequences {', '.join(missing)} not in the {self.split} split of {self.root}")
        kept: "OrderedDict[str, list[str]]" = OrderedDict()
        for seq, ids in grouped.items():
            ids = sorted(set(ids), key=lambda s: (len(s), s))
            keep = []
            for frame in ids:
                path = self.meta_path(seq, frame)
                try:
                    meta = load_meta(path)
                except HodataError:
                    keep.append(frame)
                    continue
                if meta.get("objRot") is None:
                    self.skipped_frames.append(f"{seq}/{frame}")
                else:
                    keep.append(frame)
                    if len(self._indexed_metas) < META_CACHE_FRAMES:
                        self._indexed_metas[path] = meta
            kept[seq] = keep
        return kept

    # ------------------------------------------------------------------ iteration
    def __len__(self) -> int:
        """Number of candidate clips (some may be skipped when loaded)."""
        return len(self.clips)

    def __iter__(self) -> Iterator[Clip]:
        self.skipped_clips = []
        yield from load_each(self.clips, self.load_clip, lambda s: f"{s.sequence}/{s.frame_ids[0]}",
                             self.skipped_clips, self.messages)

    def __getitem__(self, index: int) -> Clip:
        return self.load_clip(self.clips[index])

    # ------------------------------------------------------------------ loading
    def hand_layer(self, side: str, model_name: str) -> Optional[torch.nn.Module]:
        """Full-pose (45-D axis-angle, flat_hand_mean=True) layer of `model_name`, or None if absent."""
        key = (side, model_name)
        if key not in self._layers:
            from hodata import handmodel

            try:
                layer = handmodel.load(side=side, mano_dir=self.mano_dir, model=handmodel_arg(model_name),
                                       use_pca=False, flat_hand_mean=True, device=self.device, dtype=self.dtype)
            except HodataError as exc:
                self.messages.append(f"ground-truth hands as joints only: {exc}")
                layer = None
            self._layers[key] = layer
        return self._layers[key]

    def object_model(self, obj_name: str):
        if obj_name not in self._objects:
            self._objects[obj_name] = ho3d_object_model(
                self.root / "models", obj_name, self.cache_dir, device=self.device, dtype=self.dtype
            )
        return self._objects[obj_name]

    def model_for_clip(self, clip: Clip):
        """The ObjectModel whose cache id is `clip.object_model_id` (loaded with the clip)."""
        for model in self._objects.values():
            if model.model_id == clip.object_model_id:
                return model
        raise HodataError(f"clip {clip.clip_id}: object model {clip.object_model_id} was not loaded by this dataset")

    def _read_metas(self, spec: ClipSpec) -> tuple[list[dict], list[Optional[dict]]]:
        metas, gts = [], []
        for frame in spec.frame_ids:
            path = self.meta_path(spec.sequence, frame)
            meta = self._indexed_metas.pop(path, None)
            if meta is None:
                meta = load_meta(path)
            name = f"{self.split}/{spec.sequence}/{frame}"
            for key in ("objRot", "objTrans", "objName", "camMat"):
                if meta.get(key) is None:
                    raise HodataError(f"frame {name}: meta {self.meta_path(spec.sequence, frame)} lacks {key!r}")
            gt = None
            if self.split == "train":
                gt = meta
            else:
                gt_path = self.root / EVALUATION_GT_DIR / spec.sequence / f"{frame}.pkl"
                if gt_path.is_file():
                    gt = load_meta(gt_path)
            metas.append(meta)
            gts.append(gt)
        names = {str(m["objName"]) for m in metas}
        if len(names) > 1:
            raise HodataError(
                f"clip {spec.sequence}/{spec.frame_ids[0]}: frames show different objects {sorted(names)}"
            )
        return metas, gts

    def load_clip(self, spec: ClipSpec) -> Clip:
        """One clip with ground truth and `gt` evidence; HodataError naming the bad frame."""
        seq, ids = spec.sequence, spec.frame_ids
        tensor = dict(dtype=self.dtype, device=self.device)
        metas, gts = self._read_metas(spec)
        frame_names = [f"{self.split}/{seq}/{i}" for i in ids]
        image_paths = [find_image(self.split_dir() / seq / "rgb", i) for i in ids]
        images = None
        if self.check_images:  # the decoded frames stay with the clip: the shards reuse them
            frames = [read_rgb(p) for p in image_paths]
            sizes = {f.shape[:2] for f in frames}
            if len(sizes) > 1:
                raise HodataError(f"clip {seq}/{ids[0]}: frames of different sizes {sorted(sizes)}")
            image_size = tuple(int(s) for s in sizes.pop())
            images = np.stack(frames)
        elif image_paths[0].is_file():
            image_size = tuple(int(s) for s in read_rgb(image_paths[0]).shape[:2])
        else:
            image_size = (480, 640)
        K = torch.as_tensor(clip_camera(metas, frame_names), **tensor)

        obj_name = str(metas[0]["objName"])
        model = self.object_model(obj_name)
        flip = opengl_flip(**tensor)
        rot_gl = torch.as_tensor(
            np.stack([_as_array(m["objRot"], (3,), "objRot", n) for m, n in zip(metas, frame_names)]), **tensor
        )
        trans_gl = torch.as_tensor(
            np.stack([_as_array(m["objTrans"], (3,), "objTrans", n) for m, n in zip(metas, frame_names)]), **tensor
        )
        rotation = flip @ axis_angle_to_matrix(rot_gl)
        translation = trans_gl @ flip
        obj_verts = apply_similarity(model.vertices.to(**tensor), rotation, translation)
        gt_object = ObjectState(model.model_id, rotation, translation, 1.0, obj_verts, model.category)

        gt_hands = self._hands(gts, frame_names)
        clip = Clip(
            dataset=self.dataset_name, sequence=seq, frame_ids=list(ids), image_paths=image_paths, K=K,
            image_size=image_size, object_model_id=model.model_id,
            hand_sides=[h.side for h in gt_hands] or [str(metas[0].get(HAND_SIDE_KEY, "right"))],
            category=model.category, gt_object=gt_object, gt_hands=gt_hands, images=images,
        )
        if self.evidence == "gt":
            self._gt_evidence(clip, metas, model, frame_names)
        return clip

    def _hands(self, gts: list[Optional[dict]], frame_names: list[str]) -> list[HandState]:
        """Ground-truth hands in OpenCV camera coordinates, or [] without hand annotations: the
        meta's hand, and a second hand where every frame's meta carries SECOND_HAND_KEY."""
        if any(g is None for g in gts):
            return []
        hands = self._hand(gts, frame_names, "")
        seconds = [g.get(SECOND_HAND_KEY) for g in gts]
        if hands and all(isinstance(h, dict) for h in seconds):
            second = self._hand(seconds, frame_names, f"{SECOND_HAND_KEY}.")
            if second and second[0].side == hands[0].side:
                raise HodataError(f"{frame_names[0]}: both hands of the meta are {second[0].side} hands; "
                                  f"{SECOND_HAND_KEY} must hold the other side")
            hands += second
        return hands

    def _hand(self, gts: list[dict], frame_names: list[str], prefix: str) -> list[HandState]:
        """One hand from the hand keys of per-frame dicts (the meta, or its second-hand entry);
        prefix names where the keys sit, for messages."""
        tensor = dict(dtype=self.dtype, device=self.device)
        side = str(gts[0].get(HAND_SIDE_KEY, "right"))
        model_name = str(gts[0].get(HAND_MODEL_KEY, "mano"))
        flip = opengl_flip(**tensor)
        params_ok = all(g.get(k) is not None for g in gts for k in ("handPose", "handBeta", "handTrans"))
        layer = self.hand_layer(side, model_name) if params_ok else None
        if layer is None:
            joints_ok = all(g.get("handJoints3D") is not None and np.size(g["handJoints3D"]) == 63 for g in gts)
            if not joints_ok:
                return []
            joints = torch.as_tensor(
                np.stack([_as_array(g["handJoints3D"], (21, 3), prefix + "handJoints3D", n)
                          for g, n in zip(gts, frame_names)]),
                **tensor,
            ) @ flip
            empty = joints.new_zeros(joints.shape[0], 0, 3)
            return [HandState(side=side, vertices=empty, joints=joints, model_name=model_name)]
        pose = torch.as_tensor(
            np.stack([_as_array(g["handPose"], (48,), prefix + "handPose", n) for g, n in zip(gts, frame_names)]),
            **tensor,
        )
        betas = torch.as_tensor(
            np.stack([_as_array(g["handBeta"], (10,), prefix + "handBeta", n) for g, n in zip(gts, frame_names)]),
            **tensor,
        )
        trans_gl = torch.as_tensor(
            np.stack([_as_array(g["handTrans"], (3,), prefix + "handTrans", n) for g, n in zip(gts, frame_names)]),
            **tensor,
        )
        orient_gl = axis_angle_to_matrix(pose[:, :3])
        hand_pose = pose[:, 3:]
        with torch.no_grad():
            orient, transl = rigid_hand_params(
                layer, orient_gl, hand_pose, betas, trans_gl, flip, torch.zeros(3, **tensor)
            )
            out = layer(global_orient=orient, hand_pose=hand_pose, betas=betas, transl=transl)
        shared_betas = betas[0] if bool((betas == betas[0]).all()) else betas
        return [HandState(
            side=side, vertices=out.vertices, joints=out.joints, global_orient=orient, hand_pose=hand_pose,
            pose_space="axis_angle", betas=shared_betas, transl=transl, model_name=out.model_name,
        )]

    def _gt_evidence(self, clip: Clip, metas: list[dict], model, frame_names: list[str]) -> None:
        """Boxes from projected ground truth, masks from seg files (rendered where absent)."""
        K = clip.K
        clip.object_boxes = boxes_from_points(project(clip.gt_object.vertices, K))
        for hand in clip.gt_hands:
            points = hand.vertices if hand.vertices.shape[1] > 0 else hand.joints
            clip.hand_boxes[hand.side] = boxes_from_points(project(points, K))
        if not clip.gt_hands and all(m.get("handBoundingBox") is not None for m in metas):
            boxes = np.stack(
                [_as_array(m["handBoundingBox"], (4,), "handBoundingBox", n) for m, n in zip(metas, frame_names)]
            )
            clip.hand_boxes[clip.hand_sides[0]] = torch.as_tensor(boxes, dtype=self.dtype, device=self.device)

        seq_dir = self.split_dir() / clip.sequence
        object_masks, hand_masks, rendered = [], [], []
        for t, frame in enumerate(clip.frame_ids):
            path = self._seg_path(seq_dir, frame)
            if path is None:
                rendered.append(t)
                object_masks.append(np.zeros(clip.image_size, bool))
                hand_masks.append(np.zeros(clip.image_size, bool))
                continue
            obj, hand = read_segmentation(path, clip.image_size)
            object_masks.append(obj)
            hand_masks.append(hand)
        obj_t = torch.as_tensor(np.stack(object_masks), device=self.device)
        hand_t = torch.as_tensor(np.stack(hand_masks), device=self.device)
        if rendered:
            obj_r, hand_r = self._render_masks(clip, model)
            idx = torch.as_tensor(rendered, device=self.device)
            obj_t[idx], hand_t[idx] = obj_r[idx], hand_r[idx]
            self.messages.append(
                f"clip {clip.sequence}/{clip.frame_ids[0]}: no seg file for {len(rendered)} frame(s) "
                f"(first {frame_names[rendered[0]]}); masks rendered from the ground truth"
            )
        if not bool(obj_t.any()):
            raise HodataError(
                f"clip {clip.sequence}/{clip.frame_ids[0]}..{clip.frame_ids[-1]}: the object mask is empty in every "
                f"frame (first {frame_names[0]}); check the seg files of this sequence"
            )
        clip.hand_masks = hand_t
        clip.object_masks = torch.where(
            obj_t, torch.ones((), dtype=self.dtype, device=self.device),
            torch.where(hand_t, -torch.ones((), dtype=self.dtype, device=self.device),
                        torch.zeros((), dtype=self.dtype, device=self.device)),
        )

    @staticmethod
    def _seg_path(seq_dir: Path, frame: str) -> Optional[Path]:
        for folder in ("seg", "segr"):
            path = find_image(seq_dir / folder, frame)
            if path.is_file():
                return path
        return None

    def _render_masks(self, clip: Clip, model) -> tuple[torch.Tensor, torch.Tensor]:
        from hodata.geometry.raster import render_labels

        meshes = [(clip.gt_object.vertices, model.faces.to(self.device))]
        for hand in clip.gt_hands:
            layer = self.hand_layer(hand.side, hand.model_name)
            if hand.vertices.shape[1] > 0 and layer is not None:
                meshes.append((hand.vertices, torch.as_tensor(layer.faces, device=self.device).long()))
        labels, _ = render_labels(meshes, clip.K, clip.image_size)
        return labels == 1, labels >= 2


def handmodel_arg(model_name: str) -> str:
    """The `handmodel.load(model=...)` value for a recorded hand model name."""
    from hodata.handmodel.constants import MANO_MODEL_NAME, OPEN_HAND_MODEL_NAME

    if model_name.startswith(MANO_MODEL_NAME):
        return "mano"
    if model_name == OPEN_HAND_MODEL_NAME or model_name.startswith("open"):
        return "open"
    raise HodataError(
        f"unknown hand model {model_name!r} in the annotations; expected 'mano' or '{OPEN_HAND_MODEL_NAME}'"
    )
