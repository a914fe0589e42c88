"""Synthetic hand-object clips written in the real HO-3D v2 on-disk layout.

`make_synthetic_ho3d` writes what `hodata.datasets.ho3d.HO3DDataset` (and any HO-3D reader)
reads: `<split>/<SEQ>/rgb/<ID>.png`, `<split>/<SEQ>/meta/<ID>.pkl` with HO-3D's keys in its
OpenGL camera convention (y up, z backward, metres), `<split>/<SEQ>/seg/<ID>.png` (train only,
green = object, blue = hand, visible parts; see ho3d.py), `<split>.txt`, and the object
models `models/<objName>/textured_simple.obj` (the catalog source mesh in the catalog model's
frame, metres). Extra meta keys: `hodataHandModel` (name of the hand model of handPose /
handBeta / handTrans) and `hodataHandSide`. The evaluation split mimics HO-3D's hidden ground
truth: evaluation metas carry only the evaluation keys, and the full train-style metas go to
`<root>/evaluation_gt/<SEQ>/<ID>.pkl` (read by the adapter and the project's eval). A marker
`<root>/hodata_synthetic.json` records the generator's parameters.

Scene of one sequence (deterministic by seed and sequence index):
1. The object (prepared watertight mesh of the written model file, the one the adapter loads)
   is laid against the palm of a flat hand: its longest axis along the knuckle line, a seeded
   roll about that axis, its centre pushed out along the palm normal to the smallest offset
   where no hand vertex is inside it (grid search then bisection on the object's SDF grid,
   with a 1 mm clearance above the grid's interpolation error).
2. The grasp: a pose from the hand model's PCA space (the mean pose plus seeded coefficients
   of the first four components), scaled per finger by a closure factor; each finger (thumb
   included) closes from flat until it first comes within 1 mm of the object (first crossing
   on a grid of closures, then bisection), so fingers rest on the surface. The result is
   checked with the exact signed distance (hodata.geometry.sdf.mesh_signed_distance): a
   penetrating finger is opened a little, and any remaining penetration moves the object out
   along the palm normal, so every hand vertex ends outside the object.
3. Motion: hand and object move as one rigid unit, the palm normal turned 40-65 degrees from
   the view axis so the object is in front of the hand and both show, 0.45-0.8 m away, with
   slowly varying rotation (sinusoids of 2-7 s periods at 30 fps, up to ~20 degrees) and
   translation (3-4 cm), kept inside the image with a margin.
4. Rendering: Lambert-shaded RGB (skin and object colours over a smooth textured background)
   and occlusion-correct labels (z-buffer) for the seg masks.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hodata.datasets.ho3d import (
    EVALUATION_GT_DIR,
    HAND_MODEL_KEY,
    HAND_SIDE_KEY,
    SECOND_HAND_KEY,
    SYNTHETIC_MARKER,
    ho3d_object_model,
    opengl_flip,
    rigid_hand_params,
    write_segmentation,
)
from hodata.errors import HodataError
from hodata.geometry.camera import boxes_from_points, project
from hodata.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from hodata.geometry.transforms import apply_similarity

DEFAULT_OBJECTS = ("025_mug", "006_mustard_bottle", "004_sugar_box")
HO3D_K = (617.343, 617.343, 315.0, 242.0)   # fx, fy, cx, cy of HO-3D's camera at 640 x 480
CONTACT_GAP = 0.0005    # metres: clearance kept when the exact check moves the object out
CLEAN_SEG_DIR = "seg_true"  # true labels beside perturbed seg masks (write_sequence)
GRID_GAP = 0.001        # metres: clearance on the SDF grid (above its ~0.3 mm interpolation error)
TWO_HAND_CLEARANCE = 0.015  # metres between the two hands of a two-hand grasp
TWO_HAND_TILT_DEG = (70.0, 88.0)  # palm normals nearly across the view: both hands show beside the object
MAX_CLOSURE = 2.0       # finger closure factor range [0, MAX_CLOSURE] x the grasp pose
SKIN = (0.86, 0.64, 0.52)
OBJECT_COLOURS = {"025_mug": (0.75, 0.12, 0.10), "006_mustard_bottle": (0.95, 0.80, 0.10),
                  "004_sugar_box": (0.30, 0.45, 0.85)}
# MANO joint order (handmodel.constants): pose entries (joint - 1) * 3 ... of each finger.
FINGER_JOINTS = {"index": (1, 2, 3), "middle": (4, 5, 6), "little": (7, 8, 9), "ring": (10, 11, 12),
                 "thumb": (13, 14, 15)}


def ho3d_intrinsics(image_size: tuple[int, int]) -> np.ndarray:
    """HO-3D-like camMat (3, 3) for an image (H, W), scaled from 640 x 480."""
    height, width = image_size
    fx, fy, cx, cy = HO3D_K
    sx, sy = width / 640.0, height / 480.0
    return np.array([[fx * sx, 0.0, (cx + 0.5) * sx - 0.5], [0.0, fy * sy, (cy + 0.5) * sy - 0.5], [0, 0, 1.0]])


def _sequence_names(sequences: int | Sequence[str]) -> list[str]:
    if isinstance(sequences, int):
        if sequences < 1:
            raise HodataError(f"sequences must be >= 1, got {sequences}")
        return [f"SYN{i}" for i in range(sequences)]
    names = [str(s) for s in sequences]
    for name in names:
        if not name or "/" in name or "." in name:
            raise HodataError(f"sequence name {name!r} must be non-empty without '/' or '.'")
    return names


def write_object_model(root: Path, model_id: str) -> Path:
    """Write the catalog model's source mesh as `<root>/models/<id>/textured_simple.obj` (metres)."""
    import trimesh

    from hodata.geometry.meshprep import load_mesh_file, to_metres
    from hodata.objects import CATALOG, catalog_source_path, procedural_mesh

    if model_id not in CATALOG:
        raise HodataError(f"unknown catalog object '{model_id}' for synthetic data; choose from {', '.join(CATALOG)}")
    if CATALOG[model_id].source == "procedural":
        verts, faces = procedural_mesh(model_id)
    else:
        verts, faces = load_mesh_file(catalog_source_path(model_id))
        verts, _ = to_metres(verts)
    path = root / "models" / model_id / "textured_simple.obj"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        mesh = trimesh.Trimesh(verts, faces, process=True)  # welds the STL's triangle soup
        path.write_text(trimesh.exchange.obj.export_obj(mesh, include_normals=False, include_texture=False))
    return path


# ----------------------------------------------------------------------------------------- grasp


def _palm_frame(joints: torch.Tensor, tips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Palm point, palm normal (toward the grasp) and knuckle axis of one hand (21 joints)."""
    wrist, index_mcp, little_mcp = joints[0], joints[1], joints[7]
    mcps = joints[[1, 4, 7, 10]].mean(0)
    point = 0.35 * wrist + 0.65 * mcps
    normal = torch.nn.functional.normalize(torch.linalg.cross(index_mcp - wrist, little_mcp - wrist), dim=0)
    if float((tips.mean(0) - point) @ normal) < 0:
        normal = -normal
    across = torch.nn.functional.normalize(index_mcp - little_mcp, dim=0)
    across = torch.nn.functional.normalize(across - (across @ normal) * normal, dim=0)
    return point, normal, across


def _rotation_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Smallest rotation (3, 3) taking unit vector a to unit vector b."""
    axis = torch.linalg.cross(a, b)
    sin = axis.norm()
    cos = (a * b).sum()
    if sin < 1e-9:
        if cos > 0:
            return torch.eye(3, dtype=a.dtype)
        perp = torch.linalg.cross(a, torch.tensor([1.0, 0.0, 0.0], dtype=a.dtype))
        if perp.norm() < 1e-6:
            perp = torch.linalg.cross(a, torch.tensor([0.0, 1.0, 0.0], dtype=a.dtype))
        return axis_angle_to_matrix(torch.nn.functional.normalize(perp, dim=0) * math.pi)
    return axis_angle_to_matrix(axis / sin * torch.atan2(sin, cos))


def _exact_sdf(points: torch.Tensor, obj_verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """points (B, P, 3), obj_verts (V, 3) placed object -> (B, P) exact signed distance."""
    from hodata.geometry.sdf import mesh_signed_distance

    return mesh_signed_distance(points, obj_verts.expand(points.shape[0], -1, -1), faces)


def _first_crossing(values: torch.Tensor, threshold: float) -> torch.Tensor:
    """values (N, C) along a grid axis N: index of the first grid point per column C with
    value < threshold (N when none)."""
    below = values < threshold
    idx = torch.arange(values.shape[0]).unsqueeze(1).expand_as(values)
    return torch.where(below, idx, torch.full_like(idx, values.shape[0])).amin(0)


def make_grasp(layer, model, grasp_pose: torch.Tensor, roll: float, flip_axis: bool, betas: torch.Tensor, *,
               face_palm: bool = False, slide: float = 0.0, standoff: float = 0.0,
               fixed_closure: dict[str, float] | None = None, max_closure: float = MAX_CLOSURE,
               along: float = 0.0) -> dict:
    """A non-penetrating grasp in the hand's own frame (identity global orient, zero transl).

    layer: full-pose layer (45-D, flat_hand_mean=True); model: ObjectModel (vertices (V, 3),
    faces, sdf grid) in its canonical frame; grasp_pose (45,) the articulation whose per-finger
    scaling closes the hand; roll: object rotation about its long axis (radians); betas (10,).
    Grasp-type options (defaults: the object against the palm, every finger closing on it):
    face_palm turns the object's thinnest principal axis onto the palm normal (a face flat on
    the palm; `roll` then only picks the side); slide (metres) moves the object along the palm
    toward the fingers before it is laid on, along (metres) moves it along the knuckle line
    (a hand holding one end of a long object); standoff (metres) lifts it off the palm along the
    normal afterwards (a fingertip grasp; fingers that cannot reach it curl past it);
    fixed_closure {finger: closure} keeps those fingers at that closure instead of closing them
    on the object (fingers off the object); max_closure caps the closure search.
    Searches run on the object's SDF grid with a safety clearance (GRID_GAP, above the grid's
    interpolation error); the result is then checked with the exact signed distance and any
    residual penetration removed (fingers opened, then the object moved out along the palm
    normal). Returns hand_pose (45,), object rotation (3, 3) / translation (3,) in the hand
    frame (V_hand = R V + t), hand vertices, joints, palm normal, per-finger closure and exact
    clearance (metres), and the exact minimum clearance over all hand vertices.
    """
    from hodata.geometry.sdf import object_sdf

    obj_verts, obj_faces, grid = model.vertices, model.faces, model.sdf.to(dtype=model.vertices.dtype)
    dtype = obj_verts.dtype
    eye = torch.eye(3, dtype=dtype)[None]
    zero3 = torch.zeros(1, 3, dtype=dtype)

    def hand(poses: torch.Tensor):
        n = poses.shape[0]
        out = layer(global_orient=eye.expand(n, 3, 3), hand_pose=poses, betas=betas.expand(n, 10),
                    transl=zero3.expand(n, 3))
        return out.vertices, out.joints

    flat_verts, flat_joints = hand(torch.zeros(1, 45, dtype=dtype))
    _, grasp_joints = hand(grasp_pose[None])
    point, normal, across = _palm_frame(flat_joints[0], grasp_joints[0, 16:21])

    # Object: long axis along the knuckle line, seeded roll, centre on the palm normal.
    middle = 0.5 * (obj_verts.amin(0) + obj_verts.amax(0))
    centred = obj_verts - middle
    _, _, vt = torch.linalg.svd(centred - centred.mean(0), full_matrices=False)
    long_axis = vt[0] * (-1.0 if flip_axis else 1.0)
    align = _rotation_between(long_axis, across)
    if face_palm:
        # roll about the knuckle line taking the thinnest axis onto the palm normal, then a half
        # turn when roll asks for the other side
        thin = align @ vt[2]
        side = math.pi if math.cos(roll) < 0 else 0.0
        roll = float(torch.atan2((torch.linalg.cross(thin, normal) * across).sum(), (thin * normal).sum())) + side
    rotation = axis_angle_to_matrix(across * roll) @ align
    wrist_to_knuckles = flat_joints[0][[1, 4, 7, 10]].mean(0) - flat_joints[0][0]
    toward_fingers = torch.nn.functional.normalize(wrist_to_knuckles - (wrist_to_knuckles @ normal) * normal, dim=0)
    point = point + slide * toward_fingers + along * across

    def grid_sdf(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        # points (B, P, 3) hand frame; object middle at centres (B, 3) -> (B, P)
        translation = centres - middle @ rotation.T
        return object_sdf(grid, points, rotation.expand(points.shape[0], 3, 3), translation)

    grid_d = torch.linspace(0.0, 0.25, 126, dtype=dtype)
    clear = grid_sdf(flat_verts.expand(len(grid_d), -1, -1), point + grid_d[:, None] * normal).amin(1)
    ok = clear >= GRID_GAP
    if not bool(ok.any()):
        raise HodataError("could not place the object against the palm (object too large?)")
    blocked = torch.nonzero(~ok)
    hi_idx = int(blocked.max()) + 1 if blocked.numel() else 0
    if hi_idx >= len(grid_d):
        raise HodataError("could not place the object against the palm (object too large?)")
    lo_d, hi_d = (grid_d[hi_idx - 1] if hi_idx > 0 else grid_d[0]), grid_d[hi_idx]
    for _ in range(16):
        mid = 0.5 * (lo_d + hi_d)
        if float(grid_sdf(flat_verts, (point + mid * normal)[None]).min()) >= GRID_GAP:
            hi_d = mid
        else:
            lo_d = mid
    centre = point + (hi_d + standoff) * normal

    # Finger closure: each finger from flat (0) to MAX_CLOSURE x its grasp-pose rotations.
    names = list(FINGER_JOINTS)
    moving = {}
    for name, joints in FINGER_JOINTS.items():
        pose = torch.zeros(1, 45, dtype=dtype)
        for j in joints:
            pose[0, 3 * (j - 1): 3 * j] = grasp_pose[3 * (j - 1): 3 * j] * MAX_CLOSURE
        bent, _ = hand(pose)
        moving[name] = (bent[0] - flat_verts[0]).norm(dim=-1) > 1e-3

    def posed(closure: torch.Tensor) -> torch.Tensor:
        # closure (N, 5) per finger -> articulations (N, 45)
        scale = torch.ones(closure.shape[0], 15, dtype=dtype)
        for f, name in enumerate(names):
            for j in FINGER_JOINTS[name]:
                scale[:, j - 1] = closure[:, f]
        return (scale[:, :, None] * grasp_pose.view(1, 15, 3)).reshape(-1, 45)

    def per_finger(sdf: torch.Tensor) -> torch.Tensor:
        return torch.stack([sdf[:, moving[n]].amin(1) for n in names], 1)  # (N, 5)

    def finger_clearance(closure: torch.Tensor) -> torch.Tensor:
        verts, _ = hand(posed(closure))
        return per_finger(grid_sdf(verts, centre.expand(verts.shape[0], 3)))

    steps = torch.linspace(0.0, max_closure, 41, dtype=dtype)
    first = _first_crossing(finger_clearance(steps[:, None].expand(-1, 5)), GRID_GAP)
    touches = first < len(steps)
    lo = steps[(first - 1).clamp(min=0)]
    hi = torch.where(touches, steps[first.clamp(max=len(steps) - 1)], torch.full_like(lo, max_closure))
    for _ in range(12):
        mid = 0.5 * (lo + hi)
        ok = finger_clearance(mid[None])[0] >= GRID_GAP
        lo = torch.where(touches & ok, mid, lo)
        hi = torch.where(touches & ~ok, mid, hi)
    closure = torch.where(touches, lo, hi)
    for name, value in (fixed_closure or {}).items():
        if name not in names:
            raise HodataError(f"unknown finger {name!r}; choose from {', '.join(names)}")
        closure[names.index(name)] = value

    # Exact check: open penetrating fingers a little, then move the object out if the palm still cuts it.
    # Moving out along the normal can push the object into fingers curled around its far side,
    # so the two repeat (a few rounds) until no hand vertex is inside.
    obj_rest = centred @ rotation.T
    for round_ in range(4):
        for _ in range(20 if round_ == 0 else 60):
            verts, joints = hand(posed(closure[None]))
            sdf = _exact_sdf(verts, obj_rest + centre, obj_faces)[0]
            fingers = per_finger(sdf[None])[0]
            bad = fingers < 0
            if not bool(bad.any()):
                break
            closure = torch.where(bad, closure * 0.97, closure)
        palm = sdf.clone()
        for n in names:
            palm[moving[n]] = float("inf")
        if float(palm.min()) < 0 or float(sdf.min()) < 0:
            # an oblique contact needs more than one step; stop when a step no longer helps
            for _ in range(8):
                before = float(sdf.min())
                centre = centre + (-before + CONTACT_GAP) * normal
                sdf = _exact_sdf(verts, obj_rest + centre, obj_faces)[0]
                if float(sdf.min()) >= 0 or float(sdf.min()) <= before:
                    break
        if float(sdf.min()) >= 0:
            break
    fingers = per_finger(sdf[None])[0]
    return {
        "hand_pose": posed(closure[None])[0],
        "object_rotation": rotation,
        "object_translation": centre - rotation @ middle,
        "hand_vertices": verts[0],
        "joints": joints[0],
        "palm_normal": normal,
        "closure": dict(zip(names, closure.tolist())),
        "finger_clearance": dict(zip(names, fingers.tolist())),
        "min_clearance": float(sdf.min()),
    }


# ---------------------------------------------------------------------------------------- motion


def _unit_motion(rng: np.random.Generator, frames: int, grasp: dict, obj_verts_hand: torch.Tensor, K: np.ndarray,
                 image_size: tuple[int, int], tilt_deg: tuple[float, float] = (40.0, 65.0)
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame rigid transforms (R (T, 3, 3), t (T, 3)) from the hand frame to the OpenCV camera.
    tilt_deg: range of the angle between the palm normal and the direction to the camera."""
    dtype = obj_verts_hand.dtype
    points = torch.cat([grasp["hand_vertices"], obj_verts_hand])
    centre = 0.5 * (grasp["hand_vertices"].mean(0) + obj_verts_hand.mean(0))
    local = points - centre
    # The palm normal points toward the camera (-z), by default 40-65 degrees off the view axis:
    # the object is in front of the hand and the hand still shows beside it.
    tilt, azimuth = math.radians(rng.uniform(*tilt_deg)), rng.uniform(-math.pi, math.pi)
    toward = torch.tensor([math.cos(azimuth) * math.sin(tilt), math.sin(azimuth) * math.sin(tilt), -math.cos(tilt)],
                          dtype=dtype)
    spin = axis_angle_to_matrix(toward * rng.uniform(-math.pi, math.pi))
    base = spin @ _rotation_between(grasp["palm_normal"], toward)
    height, width = image_size
    K_t = torch.as_tensor(K, dtype=dtype)
    t = torch.arange(frames, dtype=dtype)
    # Periods of 2-7 s at HO-3D's 30 fps: at most ~2 degrees and ~5 mm per frame.
    periods = torch.as_tensor(rng.uniform(60.0, 200.0, size=6), dtype=dtype)
    phases = torch.as_tensor(rng.uniform(0, 2 * math.pi, size=6), dtype=dtype)
    waves = torch.sin(2 * math.pi * t[:, None] / periods + phases)  # (T, 6), smooth in t
    rot_amp = torch.as_tensor(rng.uniform(0.10, 0.35, size=3), dtype=dtype)  # radians
    depth = float(rng.uniform(0.45, 0.65))
    lateral = torch.as_tensor(rng.uniform(-0.03, 0.03, size=2), dtype=dtype)
    for _ in range(8):
        rotations = axis_angle_to_matrix(waves[:, :3] * rot_amp) @ base
        trans_amp = torch.tensor([0.03, 0.03, 0.04], dtype=dtype)
        translations = torch.cat([lateral, torch.tensor([depth], dtype=dtype)]) + waves[:, 3:] * trans_amp
        cam = local @ rotations.transpose(-1, -2) + translations[:, None, :]
        pix = project(cam, K_t)
        margin = 0.04 * min(height, width)
        inside = (pix[..., 0] >= margin) & (pix[..., 0] <= width - 1 - margin) & (pix[..., 1] >= margin) & (
            pix[..., 1] <= height - 1 - margin)
        if bool(inside.all()) and float(cam[..., 2].min()) > 0.3:
            break
        # Too big or off-centre: move back toward the optical axis and away from the camera.
        lateral = lateral * 0.5
        depth = min(depth + 0.05, 0.8)
    # T_cam(p) = R (p - centre) + t
    return rotations, translations - (rotations @ centre)


# ------------------------------------------------------------------------------------- rendering


def _background(rng: np.random.Generator, image_size: tuple[int, int]) -> torch.Tensor:
    """A static, smooth textured background (H, W, 3) in [0, 1]: gradient plus soft waves."""
    height, width = image_size
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    base = torch.as_tensor(rng.uniform(0.25, 0.6, size=3), dtype=torch.float32)
    tilt = torch.as_tensor(rng.uniform(-0.15, 0.15, size=(2, 3)), dtype=torch.float32)
    image = base + x[..., None] * tilt[0] + y[..., None] * tilt[1]
    for _ in range(3):
        fx, fy = rng.uniform(2, 9, size=2)
        phase = rng.uniform(0, 2 * math.pi)
        amp = torch.as_tensor(rng.uniform(-0.06, 0.06, size=3), dtype=torch.float32)
        image = image + amp * torch.sin(2 * math.pi * (fx * x + fy * y) + phase)[..., None]
    return image.clamp(0, 1)


# ------------------------------------------------------------------------------------------ main


def _object_label(model_id: str) -> int:
    digits = model_id.split("_", 1)[0]
    return int(digits) if digits.isdigit() else 0


def _box_corners(verts: torch.Tensor) -> torch.Tensor:
    lo, hi = verts.amin(0), verts.amax(0)
    corners = [[(hi if (i >> a) & 1 else lo)[a] for a in range(3)] for i in range(8)]
    return torch.tensor(corners, dtype=verts.dtype)


def _dump(path: Path, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(meta, f, protocol=2)


def write_sequence(root: Path, split: str, seq: str, layer, model, object_id: str, grasp: dict, betas: torch.Tensor,
                   rotations: torch.Tensor, translations: torch.Tensor, K: np.ndarray, image_size: tuple[int, int],
                   hand_side: str, colour, background: torch.Tensor, seg_filter=None,
                   extra_hands: Sequence[dict] = ()) -> dict:
    """Render and write one sequence's frames, metas and seg masks (module docstring layout).

    layer: full-pose hand layer (float64); model: the ObjectModel of the written model file;
    grasp: `make_grasp` output (or one grasp per frame: hand_pose (T, 45), object_rotation
    (T, 3, 3), object_translation (T, 3)); rotations (T, 3, 3), translations (T, 3): the hand frame ->
    OpenCV camera per frame; K (3, 3) written as camMat; colour: object rgb; background
    (1, H, W, 3). seg_filter(t, object_mask, hand_mask) -> (object_mask, hand_mask), when
    given, perturbs the written train seg masks (simulated detections); the true labels then
    go to `<SEQ>/seg_true/<ID>.png` (same encoding; no HO-3D reader looks there).
    extra_hands: at most one more hand, {"layer", "side" (the other side), "hand_pose" (45,),
    "betas" (10,), "rotation" (3, 3), "translation" (3,)}: its own frame -> the first hand's
    frame; written under the meta key SECOND_HAND_KEY and drawn with the first.
    Returns {"listing": ["SEQ/ID", ...], "hand_vertices": (T, V, 3), "object_vertices":
    (T, V, 3), "hands": [(T, V, 3) per hand]} (OpenCV camera, rebuilt from the stored float32
    parameters; "hand_vertices" is the first hand's).
    """
    from PIL import Image

    from hodata.geometry.raster import render_labels, render_shaded

    dtype = rotations.dtype
    frames = rotations.shape[0]
    obj_verts, obj_faces = model.vertices.to(dtype), model.faces
    K_t = torch.as_tensor(K, dtype=dtype)
    flip = opengl_flip(dtype)
    listing = []
    # Camera (OpenCV) then OpenGL parameters; everything rendered is rebuilt from the stored
    # float32 values through the same path as the adapter.
    obj_rot_cv = rotations @ grasp["object_rotation"]
    obj_trans_cv = (rotations @ grasp["object_translation"][..., None])[..., 0] + translations
    if len(extra_hands) > 1 or any(h["side"] == hand_side for h in extra_hands):
        raise HodataError("write_sequence: at most one extra hand, of the other side")
    eye = torch.eye(3, dtype=dtype).expand(frames, 3, 3)

    def hand_labels(hand_layer, hand_pose: torch.Tensor, hand_betas: torch.Tensor, to_cam_r, to_cam_t) -> dict:
        # OpenGL parameters of one hand moved by (to_cam_r, to_cam_t) from its own frame, and its
        # meshes rebuilt from their float32 values
        pose_t = hand_pose.expand(frames, 45)
        betas_t = hand_betas.expand(frames, 10)
        with torch.no_grad():
            orient_cv, transl_cv = rigid_hand_params(hand_layer, eye, pose_t, betas_t,
                                                     torch.zeros(frames, 3, dtype=dtype), to_cam_r, to_cam_t)
            orient_gl, transl_gl = rigid_hand_params(hand_layer, orient_cv, pose_t, betas_t, transl_cv, flip,
                                                     torch.zeros(3, dtype=dtype))
        pose48 = torch.cat([matrix_to_axis_angle(orient_gl), pose_t], 1).float().double()
        transl_gl = transl_gl.float().double()
        betas32 = hand_betas.float().double()
        with torch.no_grad():
            out = hand_layer(global_orient=axis_angle_to_matrix(pose48[:, :3]), hand_pose=pose48[:, 3:],
                             betas=betas32.expand(frames, 10), transl=transl_gl)
        return {"pose48": pose48, "transl_gl": transl_gl, "betas32": betas32, "joints_gl": out.joints,
                "cv": out.vertices @ flip, "faces": hand_layer.faces.long(), "model_name": str(hand_layer.model_name)}

    hands = [hand_labels(layer, grasp["hand_pose"], betas, rotations, translations)]
    for extra in extra_hands:
        r_cam = rotations @ extra["rotation"].to(dtype)
        t_cam = (rotations @ extra["translation"].to(dtype)[:, None])[..., 0] + translations
        hands.append({**hand_labels(extra["layer"], extra["hand_pose"].to(dtype), extra["betas"].to(dtype),
                                    r_cam, t_cam), "side": extra["side"]})
    first = hands[0]
    obj_rot_gl = matrix_to_axis_angle(flip @ obj_rot_cv).float().double()
    obj_trans_gl = (obj_trans_cv @ flip).float().double()
    hand_pose48, transl_gl, betas32, joints_gl = first["pose48"], first["transl_gl"], first["betas32"], first["joints_gl"]
    hand_cv = first["cv"]
    obj_cv = apply_similarity(obj_verts, axis_angle_to_matrix(obj_rot_gl), obj_trans_gl) @ flip

    seq_dir = root / split / seq
    for sub in ("rgb", "meta") + (("seg",) if split == "train" else ()):
        (seq_dir / sub).mkdir(parents=True, exist_ok=True)
    corners_rest = _box_corners(obj_verts)
    hand_boxes = boxes_from_points(project(hand_cv, K_t))

    def second_hand(t: int) -> dict:
        h = hands[1]
        return {"handPose": h["pose48"][t].numpy().astype(np.float32),
                "handBeta": h["betas32"].numpy().astype(np.float32),
                "handTrans": h["transl_gl"][t].numpy().astype(np.float32),
                "handJoints3D": h["joints_gl"][t].numpy().astype(np.float32),
                HAND_MODEL_KEY: h["model_name"], HAND_SIDE_KEY: h["side"]}

    for t in range(frames):
        # One frame at a time: the rasteriser's memory stays bounded (~0.2 GB at 640 x 480).
        frame = f"{t:04d}"
        listing.append(f"{seq}/{frame}")
        meshes = [(obj_cv[t: t + 1], obj_faces)] + [(h["cv"][t: t + 1], h["faces"]) for h in hands]
        image = render_shaded(meshes, [colour] + [SKIN] * len(hands), K_t, image_size, background=background)[0]
        Image.fromarray((image.numpy() * 255.0 + 0.5).astype(np.uint8)).save(
            seq_dir / "rgb" / f"{frame}.png", compress_level=1)
        corners = corners_rest @ axis_angle_to_matrix(obj_rot_gl[t]).T + obj_trans_gl[t]
        full = {
            "objTrans": obj_trans_gl[t].numpy().astype(np.float32),
            "handBeta": betas32.numpy().astype(np.float32),
            "camMat": K.astype(np.float32),
            "handJoints3D": joints_gl[t].numpy().astype(np.float32),
            "handTrans": transl_gl[t].numpy().astype(np.float32),
            "camIDList": ["0"],
            "handPose": hand_pose48[t].numpy().astype(np.float32),
            "objCorners3DRest": corners_rest.numpy().astype(np.float32),
            "objRot": obj_rot_gl[t].numpy().astype(np.float32).reshape(3, 1),
            "objName": object_id,
            "objCorners3D": corners.numpy().astype(np.float32),
            "objLabel": _object_label(object_id),
            HAND_MODEL_KEY: first["model_name"],
            HAND_SIDE_KEY: hand_side,
        }
        if len(hands) > 1:
            full[SECOND_HAND_KEY] = second_hand(t)
        if split == "train":
            _dump(seq_dir / "meta" / f"{frame}.pkl", full)
            lab = render_labels(meshes, K_t, image_size)[0][0].numpy()
            obj_mask, hand_mask = lab == 1, lab >= 2
            if seg_filter is not None:
                # the true labels are kept beside the written (perturbed) ones
                (seq_dir / CLEAN_SEG_DIR).mkdir(exist_ok=True)
                write_segmentation(seq_dir / CLEAN_SEG_DIR / f"{frame}.png", obj_mask, hand_mask)
                obj_mask, hand_mask = seg_filter(t, obj_mask, hand_mask)
            write_segmentation(seq_dir / "seg" / f"{frame}.png", obj_mask, hand_mask)
        else:
            public = {k: full[k] for k in ("objTrans", "objRot", "objName", "objLabel", "camMat",
                                            "objCorners3D", "objCorners3DRest")}
            public["handBoundingBox"] = hand_boxes[t].numpy().astype(np.float32)
            public["handJoints3D"] = joints_gl[t, 0].numpy().astype(np.float32)
            _dump(seq_dir / "meta" / f"{frame}.pkl", public)
            _dump(root / EVALUATION_GT_DIR / seq / f"{frame}.pkl", full)

    return {"listing": listing, "hand_vertices": hand_cv, "object_vertices": obj_cv, "hands": [h["cv"] for h in hands]}


def two_hand_grasp(rng: np.random.Generator, layers: dict, pca_layers: dict, model, first_side: str,
                   clearance: float = TWO_HAND_CLEARANCE) -> dict:
    """Both hands holding one object (hands in their own frames; the second hand's frame given
    relative to the first's), for two-hand clips (an Epic-Kitchens box or pot held in both hands).

    layers / pca_layers: side -> full-pose (flat mean) / PCA hand layer, float64; model: the
    ObjectModel; first_side: the hand whose frame is the reference. Each hand is a `make_grasp`
    of the object (seeded PCA grasp pose and betas per hand), the second on the other side of the
    object (roll turned by a half or a quarter turn) and both moved along the object's long axis
    toward opposite ends (a quarter of its length), so the hands are apart; the placements are
    tried in a fixed order until the two hands' vertices are at least `clearance` metres apart
    (else the farthest apart is kept). Returns {"grasp": the first hand's make_grasp output,
    "betas", "second": write_sequence's extra-hand dict, "hand_clearance" metres}.
    """
    second_side = "left" if first_side == "right" else "right"
    extent = model.vertices.amax(0) - model.vertices.amin(0)
    along = 0.25 * float(extent.max())
    dtype = model.vertices.dtype

    def draw(side: str):
        coeffs = torch.zeros(1, pca_layers[side].num_pca_comps, dtype=dtype)
        coeffs[0, :4] = torch.as_tensor(rng.normal(0.0, 0.3, size=4), dtype=dtype)
        pose = pca_layers[side].pca_to_full_pose(coeffs)[0]
        return pose, torch.as_tensor(np.clip(rng.normal(0.0, 0.5, size=10), -1.0, 1.0), dtype=dtype)

    roll = float(rng.uniform(-math.pi, math.pi))
    flip_axis = bool(rng.integers(2))
    pose1, betas1 = draw(first_side)
    pose2, betas2 = draw(second_side)
    g1 = make_grasp(layers[first_side], model, pose1, roll, flip_axis, betas1, along=along)
    best = None
    for turn in (math.pi, 0.5 * math.pi, -0.5 * math.pi):
        for sign in (-1.0, 1.0):
            g2 = make_grasp(layers[second_side], model, pose2, roll + turn, flip_axis, betas2, along=sign * along)
            # second hand's frame -> first hand's frame, through the object's canonical frame
            rotation = g1["object_rotation"] @ g2["object_rotation"].T
            translation = g1["object_translation"] - rotation @ g2["object_translation"]
            moved = g2["hand_vertices"] @ rotation.T + translation
            gap = float(torch.cdist(g1["hand_vertices"], moved).min())
            if best is None or gap > best["hand_clearance"]:
                best = {"grasp": g1, "betas": betas1, "hand_clearance": gap,
                        "second": {"layer": layers[second_side], "side": second_side, "hand_pose": g2["hand_pose"],
                                   "betas": betas2, "rotation": rotation, "translation": translation,
                                   "hand_vertices": moved}}
            if gap >= clearance:
                return best
    return best


def write_listing(root: Path, split: str, names: Sequence[str], listing: Sequence[str], run: dict,
                  generator: str = "hodata.datasets.synthetic") -> None:
    """Write `<split>.txt` (other sequences kept, rewritten ones not duplicated) and record the
    run in the synthetic marker `<root>/hodata_synthetic.json`."""
    listing_path = root / f"{split}.txt"
    previous = listing_path.read_text().split() if listing_path.is_file() else []
    rewritten = set(names)
    kept = [line for line in previous if line.split("/", 1)[0] not in rewritten]
    listing_path.write_text("\n".join(kept + list(listing)) + "\n")
    marker = root / SYNTHETIC_MARKER
    info = {"generator": "hodata.datasets.synthetic", "runs": []}
    if marker.is_file():
        info = json.loads(marker.read_text())
    info["runs"].append({"split": split, "sequences": list(names), **run, "generator": generator})
    marker.write_text(json.dumps(info, indent=2))


def make_synthetic_ho3d(
    root: str | Path,
    sequences: int | Sequence[str] = 1,
    frames: int = 40,
    object_ids: Sequence[str] = DEFAULT_OBJECTS,
    seed: int = 0,
    image_size: tuple[int, int] = (480, 640),
    hand_side: str = "right",
    cache_dir: str | Path | None = None,
    split: str = "train",
    hand_model: str = "auto",
    mano_dir: str | Path | None = None,
    two_hands: bool = False,
) -> Path:
    """Write synthetic HO-3D sequences under `root` (module docstring) and return `root`.

    sequences: a count (names SYN0, SYN1, ...) or names; sequence i shows object_ids[i % n];
    frames per sequence; seed: everything is deterministic given (seed, sequence index);
    image_size (H, W); hand_side "right" | "left"; cache_dir: mesh cache; split "train" |
    "evaluation"; hand_model / mano_dir as `hodata.handmodel.load`; two_hands: a second hand of
    the other side holds the object too (`two_hand_grasp`; written under the meta key
    SECOND_HAND_KEY, drawn in the frames and seg masks). Appends to `<split>.txt`
    when it exists (other sequences are kept; rewritten sequences are not duplicated).
    """
    from hodata import handmodel

    if split not in ("train", "evaluation"):
        raise HodataError(f"split must be 'train' or 'evaluation', got {split!r}")
    if hand_side not in ("right", "left"):
        raise HodataError(f"hand_side must be 'right' or 'left', got {hand_side!r}")
    if frames < 1:
        raise HodataError(f"frames must be >= 1, got {frames}")
    from hodata.objects import CATALOG

    unknown = [m for m in object_ids if m not in CATALOG]
    if unknown:  # before anything is written
        raise HodataError(f"unknown catalog object '{unknown[0]}' for synthetic data; choose from {', '.join(CATALOG)}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = _sequence_names(sequences)
    dtype = torch.float64
    layer = handmodel.load(side=hand_side, mano_dir=mano_dir, model=hand_model, use_pca=False, flat_hand_mean=True,
                           dtype=dtype)
    pca_layer = handmodel.load(side=hand_side, mano_dir=mano_dir, model=hand_model, use_pca=True,
                               flat_hand_mean=False, num_pca_comps=16, dtype=dtype)
    model_name = str(layer.model_name)
    layers, pca_layers = {hand_side: layer}, {hand_side: pca_layer}
    if two_hands:
        other = "left" if hand_side == "right" else "right"
        layers[other] = handmodel.load(side=other, mano_dir=mano_dir, model=hand_model, use_pca=False,
                                       flat_hand_mean=True, dtype=dtype)
        pca_layers[other] = handmodel.load(side=other, mano_dir=mano_dir, model=hand_model, use_pca=True,
                                           flat_hand_mean=False, num_pca_comps=16, dtype=dtype)
    K = ho3d_intrinsics(image_size)
    listing = []
    for s, seq in enumerate(names):
        rng = np.random.default_rng([seed, s])
        object_id = object_ids[s % len(object_ids)]
        write_object_model(root, object_id)
        model = ho3d_object_model(root / "models", object_id, cache_dir, dtype=dtype)
        obj_verts = model.vertices

        extra_hands = []
        if two_hands:
            both = two_hand_grasp(rng, layers, pca_layers, model, hand_side)
            grasp, betas = both["grasp"], both["betas"]
            extra_hands = [both["second"]]
            obj_hand = obj_verts @ grasp["object_rotation"].T + grasp["object_translation"]
            unit = {**grasp, "hand_vertices": torch.cat([grasp["hand_vertices"], both["second"]["hand_vertices"]])}
            rotations, translations = _unit_motion(rng, frames, unit, obj_hand, K, image_size, TWO_HAND_TILT_DEG)
        else:
            # Grasp pose: the PCA mean pose plus seeded coefficients along the first components
            # (pca_to_full_pose includes the mean: the articulation a flat full-pose layer takes).
            coeffs = torch.zeros(1, pca_layer.num_pca_comps, dtype=dtype)
            coeffs[0, :4] = torch.as_tensor(rng.normal(0.0, 0.3, size=4), dtype=dtype)
            grasp_pose = pca_layer.pca_to_full_pose(coeffs)[0]
            betas = torch.as_tensor(np.clip(rng.normal(0.0, 0.5, size=10), -1.0, 1.0), dtype=dtype)
            grasp = make_grasp(layer, model, grasp_pose, roll=float(rng.uniform(-math.pi, math.pi)),
                               flip_axis=bool(rng.integers(2)), betas=betas)
            obj_hand = obj_verts @ grasp["object_rotation"].T + grasp["object_translation"]
            rotations, translations = _unit_motion(rng, frames, grasp, obj_hand, K, image_size)

        colour = OBJECT_COLOURS.get(object_id, tuple(rng.uniform(0.2, 0.9, size=3)))
        background = _background(rng, image_size).to(dtype)[None]
        listing += write_sequence(root, split, seq, layer, model, object_id, grasp, betas, rotations, translations, K,
                                  image_size, hand_side, colour, background, extra_hands=extra_hands)["listing"]

    write_listing(root, split, names, listing, {
        "frames": frames, "object_ids": list(object_ids), "seed": seed, "image_size": list(image_size),
        "hand_side": hand_side, "hand_model": model_name, "two_hands": two_hands})
    return root
