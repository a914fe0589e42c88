"""Evidence from files: plug in the outputs of external models (FrankMocap, HaMeR, WiLoR,
100DOH, PointRend, ...) run elsewhere, e.g. on a GPU machine.

Format: one folder per clip's sequence (`--evidence files:DIR`, `--hand-init files:DIR`),
holding per frame (FRAME = the dataset's frame id, e.g. `0012`, or the image file's stem):

    FRAME.json           required, one per frame (also when nothing was detected)
    FRAME_object.png     optional object mask, 8-bit, image size; > 127 = object
    FRAME_hand.png       optional hand mask (all hands), 8-bit, image size; > 127 = hand

FRAME.json (pixels of the full image, metres, OpenCV camera axes: x right, y down, z forward):

    {
      "object": {"box": [x0, y0, x1, y1], "score": 0.8},       optional; null = no object
      "hands": [                                                optional; [] = no hand
        {
          "side": "right",                                      required: "right" | "left"
          "box": [x0, y0, x1, y1],                              required
          "score": 0.95,                                        optional, default 1
          "keypoints_2d": [[u, v], ... 21],                     optional, pixels
          "keypoints_3d": [[x, y, z], ... 21],                  optional, metres, relative
          "keypoint_order": "mediapipe",                        "mediapipe" (thumb-first, also
                                                                OpenPose's hand order) or "model"
          "mano": {                                             optional: a hand pose estimate
            "global_orient": [3] axis-angle or [[3 x 3]] rotation, hand to camera axes,
            "hand_pose": [45] or [k],
            "pose_space": "axis_angle",                         "axis_angle": the articulation of
                                        MANO joints 1-15 with the mean pose included (HO-3D's
                                        flat_hand_mean=True convention; add MANO's hands_mean
                                        yourself if your tool's layer used flat_hand_mean=False),
                                        or "pca": PCA coefficients of the hand model
                                        (flat_hand_mean=False), the first k used, missing ones 0
            "betas": [10],                                      optional, default zeros
            "weak_perspective": [s, u, v]                       s: pixels per metre at the hand;
                                        (u, v): pixel of the centroid of the hand's vertices
          }
        }
      ]
    }

Cameras of crop-based regressors (FrankMocap, HaMeR, WiLoR: a scale and translation in
normalised crop coordinates) convert to `weak_perspective` once per frame: s is their scale
in pixels of the full image per metre, (u, v) the full-image pixel where they put the
centroid of the hand's vertices. Depth follows from s as everywhere in hodata:
z = mean(f_x, f_y) / s (REFERENCE.md §1).

Two hands of one side in one frame: the higher score is kept. A bad file (unreadable JSON, a
missing or malformed field, a mask of the wrong size) gives one HodataError line naming the
file and the field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from hodata.errors import HodataError
from hodata.evidence.mediapipe_hands import mediapipe_to_model
from hodata.evidence.types import ClipEvidence, HandEvidence
from hodata.geometry.camera import boxes_from_points, project, unproject
from hodata.geometry.rotations import axis_angle_to_matrix
from hodata.types import HandInit

PROVIDER = "files"


def _bad(path: Path, field: str, problem: str) -> HodataError:
    return HodataError(f"{path}: field '{field}' {problem}; see the format in hodata/evidence/files.py")


def _array(value, path: Path, field: str, shapes: Sequence[tuple[int, ...]]) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise _bad(path, field, "must be a list of numbers") from None
    if not any(arr.shape == s or (len(s) == 1 and s[0] == -1 and arr.ndim == 1) for s in shapes):
        want = " or ".join(str(list(s)).replace("-1", "k") for s in shapes)
        raise _bad(path, field, f"has shape {list(arr.shape)}, expected {want}")
    if not np.isfinite(arr).all():
        raise _bad(path, field, "holds a non-finite number")
    return arr


def _box(value, path: Path, field: str) -> np.ndarray:
    box = _array(value, path, field, [(4,)])
    if box[2] <= box[0] or box[3] <= box[1]:
        raise _bad(path, field, f"is not an xyxy box with x1 > x0 and y1 > y0: {box.tolist()}")
    return box


def _score(value, path: Path, field: str) -> float:
    if value is None:
        return 1.0
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise _bad(path, field, f"must be a number in [0, 1], got {value!r}")
    return float(value)


def read_frame_json(path: Path) -> dict:
    """One frame's parsed and checked record: {"object": {...} | None, "hands": {side: {...}}}."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise HodataError(f"{path}: evidence file missing; every frame needs one (an empty {{}} if nothing was detected)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HodataError(f"{path}: not readable JSON ({exc}); rewrite it in the format of hodata/evidence/files.py") from None
    if not isinstance(raw, dict):
        raise _bad(path, "(top level)", "must be a JSON object")
    record: dict = {"object": None, "hands": {}}
    obj = raw.get("object")
    if obj is not None:
        if not isinstance(obj, dict) or "box" not in obj:
            raise _bad(path, "object.box", "is missing")
        record["object"] = {"box": _box(obj["box"], path, "object.box"), "score": _score(obj.get("score"), path, "object.score")}
    hands = raw.get("hands", [])
    if not isinstance(hands, list):
        raise _bad(path, "hands", "must be a list")
    for i, hand in enumerate(hands):
        name = f"hands[{i}]"
        if not isinstance(hand, dict):
            raise _bad(path, name, "must be an object")
        side = hand.get("side")
        if side not in ("right", "left"):
            raise _bad(path, f"{name}.side", f"must be 'right' or 'left', got {side!r}")
        if "box" not in hand:
            raise _bad(path, f"{name}.box", "is missing")
        entry = {"box": _box(hand["box"], path, f"{name}.box"), "score": _score(hand.get("score"), path, f"{name}.score")}
        order = hand.get("keypoint_order", "mediapipe")
        if order not in ("mediapipe", "model"):
            raise _bad(path, f"{name}.keypoint_order", f"must be 'mediapipe' or 'model', got {order!r}")
        for key, dim in (("keypoints_2d", 2), ("keypoints_3d", 3)):
            if hand.get(key) is not None:
                kp = _array(hand[key], path, f"{name}.{key}", [(21, dim)])
                entry[key] = mediapipe_to_model(kp) if order == "mediapipe" else kp
        if hand.get("mano") is not None:
            entry["mano"] = _read_mano(hand["mano"], path, f"{name}.mano")
        previous = record["hands"].get(side)
        if previous is None or entry["score"] > previous["score"]:
            record["hands"][side] = entry
    return record


def _read_mano(mano, path: Path, name: str) -> dict:
    if not isinstance(mano, dict):
        raise _bad(path, name, "must be an object")
    for key in ("global_orient", "hand_pose", "weak_perspective"):
        if key not in mano:
            raise _bad(path, f"{name}.{key}", "is missing")
    space = mano.get("pose_space", "axis_angle")
    if space not in ("axis_angle", "pca"):
        raise _bad(path, f"{name}.pose_space", f"must be 'axis_angle' or 'pca', got {space!r}")
    orient = _array(mano["global_orient"], path, f"{name}.global_orient", [(3,), (3, 3)])
    if orient.shape == (3, 3) and (abs(np.linalg.det(orient) - 1) > 1e-3 or np.abs(orient @ orient.T - np.eye(3)).max() > 1e-3):
        raise _bad(path, f"{name}.global_orient", "is not a rotation matrix")
    pose = _array(mano["hand_pose"], path, f"{name}.hand_pose", [(45,)] if space == "axis_angle" else [(-1,)])
    if space == "pca" and not 1 <= len(pose) <= 45:
        raise _bad(path, f"{name}.hand_pose", f"must hold 1-45 PCA coefficients, got {len(pose)}")
    betas = _array(mano.get("betas", [0.0] * 10), path, f"{name}.betas", [(10,)])
    camera = _array(mano["weak_perspective"], path, f"{name}.weak_perspective", [(3,)])
    if camera[0] <= 0:
        raise _bad(path, f"{name}.weak_perspective", f"scale s must be > 0 pixels per metre, got {camera[0]}")
    return {"global_orient": orient, "hand_pose": pose, "pose_space": space, "betas": betas, "weak_perspective": camera}


def read_mask_png(path: Path, image_size: tuple[int, int]) -> Optional[np.ndarray]:
    """An 8-bit mask PNG as (H, W) bool (> 127), None when absent; HodataError when bad."""
    import cv2

    if not path.is_file():
        return None
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise HodataError(f"{path}: not a readable PNG mask; write an 8-bit image (> 127 = inside)")
    if mask.shape != tuple(image_size):
        raise HodataError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, the image {image_size[1]}x{image_size[0]}; "
                          "write masks at the image's size")
    return mask > 127


def _mano_init(records: list[dict], paths: list[Path], side: str, layer, K: torch.Tensor) -> HandInit:
    """HandInit of one hand from its per-frame "mano" records (every frame must have one)."""
    for rec, path in zip(records, paths):
        if rec is None or "mano" not in rec:
            raise HodataError(f"{path}: no '{side}' hand with a 'mano' field; --hand-init files needs one in every frame")
    dtype, device = layer.v_template.dtype, layer.v_template.device
    k = layer.num_pca_comps
    orients, coeffs, betas, cameras = [], [], [], []
    for rec in records:
        m = rec["mano"]
        orient = torch.as_tensor(m["global_orient"], dtype=dtype, device=device)
        orients.append(orient if orient.shape == (3, 3) else axis_angle_to_matrix(orient))
        pose = torch.as_tensor(m["hand_pose"], dtype=dtype, device=device)
        if m["pose_space"] == "axis_angle":
            coeffs.append(layer.full_pose_to_pca(pose[None])[0])
        else:
            padded = torch.zeros(k, dtype=dtype, device=device)
            padded[: min(k, len(pose))] = pose[:k]
            coeffs.append(padded)
        betas.append(torch.as_tensor(m["betas"], dtype=dtype, device=device))
        cameras.append(torch.as_tensor(m["weak_perspective"], dtype=dtype, device=device))
    orient, coeff, camera = torch.stack(orients), torch.stack(coeffs), torch.stack(cameras)
    beta = torch.stack(betas).mean(0)
    K = K.to(dtype=dtype, device=device)
    with torch.no_grad():
        rest = layer(global_orient=orient, hand_pose=coeff, betas=beta)
        depth = (K[0, 0] + K[1, 1]) / 2 / camera[:, 0]
        centroid = unproject(camera[:, None, 1:], depth[:, None], K)[:, 0]
        transl = centroid - rest.vertices.mean(1)
        verts_2d = project(rest.vertices + transl[:, None], K)
    return HandInit(side=side, global_orient=orient, hand_pose=coeff, betas=beta, transl=transl, vertices_2d=verts_2d,
                    provider=f"{PROVIDER}:mano", boxes=boxes_from_points(verts_2d))


def read_evidence_files(
    folder: str | Path,
    frame_ids: Sequence[str],
    image_size: tuple[int, int],
    sides: Optional[Sequence[str]] = None,
    K: Optional[torch.Tensor] = None,
    layers: Optional[dict] = None,
) -> ClipEvidence:
    """ClipEvidence of the frames `frame_ids` from `folder` (module docstring for the format).

    sides: the clip's hand sides (None: every side found in the files); K (3, 3) and layers
    (side -> PCA hand layer of the active model): give both to build HandInits from "mano"
    fields (`--hand-init files`); without them only boxes, keypoints and masks are read.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise HodataError(f"{folder}: evidence folder does not exist; pass files:DIR with one FRAME.json per frame")
    paths = [folder / f"{f}.json" for f in frame_ids]
    records = [read_frame_json(p) for p in paths]
    frames = len(records)
    nan_box = [math.nan] * 4
    obj_boxes = torch.tensor([r["object"]["box"].tolist() if r["object"] else nan_box for r in records], dtype=torch.float64)
    obj_valid = torch.tensor([r["object"] is not None for r in records])
    found = sorted({s for r in records for s in r["hands"]}, key=("right", "left").index)
    hand_sides = list(sides) if sides is not None else found
    hands = []
    for side in hand_sides:
        per_frame = [r["hands"].get(side) for r in records]
        boxes = torch.tensor([h["box"].tolist() if h else nan_box for h in per_frame], dtype=torch.float64)
        valid = torch.tensor([h is not None for h in per_frame])
        scores = torch.tensor([h["score"] if h else 0.0 for h in per_frame], dtype=torch.float64)
        kp = {}
        for key, dim in (("keypoints_2d", 2), ("keypoints_3d", 3)):
            if any(h is not None and key in h for h in per_frame):
                kp[key] = torch.tensor(np.stack([h[key] if h is not None and key in h else np.full((21, dim), np.nan)
                                                 for h in per_frame]), dtype=torch.float64)
        kp_valid = None
        if "keypoints_2d" in kp:
            kp_valid = torch.isfinite(kp["keypoints_2d"]).all(-1).all(-1)
        init = None
        if layers is not None and K is not None:
            if side not in layers:
                raise HodataError(f"no hand layer for the {side} hand; pass one per side to read hand inits from files")
            init = _mano_init(per_frame, paths, side, layers[side], K)
        hands.append(HandEvidence(side=side, boxes=boxes, scores=scores, valid=valid, observed=valid.clone(),
                                  keypoints_2d=kp.get("keypoints_2d"), keypoints_3d=kp.get("keypoints_3d"),
                                  keypoints_valid=kp_valid, init=init))
    provenance = {"object_boxes": PROVIDER, "hand_boxes": PROVIDER}
    if any(h.keypoints_2d is not None for h in hands):
        provenance["hand_keypoints"] = PROVIDER
    if any(h.init is not None for h in hands):
        provenance["hand_init"] = f"{PROVIDER}:mano"
    object_masks = hand_masks = None
    obj_png = [read_mask_png(folder / f"{f}_object.png", image_size) for f in frame_ids]
    hand_png = [read_mask_png(folder / f"{f}_hand.png", image_size) for f in frame_ids]
    for kind, masks in (("object", obj_png), ("hand", hand_png)):
        present = [m is not None for m in masks]
        if any(present) and not all(present):
            missing = folder / f"{frame_ids[present.index(False)]}_{kind}.png"
            raise HodataError(f"{missing}: {kind} mask missing while other frames have one; write one per frame or none")
    if all(m is not None for m in hand_png):
        hand_masks = torch.as_tensor(np.stack(hand_png))
        provenance["hand_masks"] = PROVIDER
    if all(m is not None for m in obj_png):
        obj = torch.as_tensor(np.stack(obj_png)).to(torch.float32)
        # Hand pixels are occluders (-1) where a hand mask is given and the object mask is not set.
        if hand_masks is not None:
            obj = torch.where(hand_masks & (obj == 0), torch.full_like(obj, -1.0), obj)
        object_masks = obj
        provenance["object_masks"] = PROVIDER
    return ClipEvidence(image_size=tuple(image_size), object_boxes=obj_boxes, object_valid=obj_valid, hands=hands,
                        object_masks=object_masks, hand_masks=hand_masks, provenance=provenance)


def write_frame_json(path: str | Path, record: dict) -> Path:
    """Write one frame's record (plain lists/numbers, the format above) atomically."""
    path = Path(path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)
    return path
