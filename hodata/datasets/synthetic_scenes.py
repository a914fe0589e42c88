"""Factor-controlled hand-object scenes in the HO-3D layout, for the robustness benchmark.

`hodata.datasets.synthetic` makes one narrow kind of scene (the hand and object a rigid unit
moving slowly, the object pressed to the palm, 0.45-0.8 m, HO-3D's camera, perfect masks).
Real HO-3D / Epic / Core50 clips vary more; a `SceneSpec` sets each of these factors on its
own (the rest stay at the nominal scene, `NOMINAL`):

- object motion between fitted frames (`translation_m`, `rotation_deg`: the mean centroid
  displacement and rotation angle between frames `STRIDE` apart; the hand moves with it),
  with a speed that varies along the clip, a path that curves, and a rotation axis that
  wobbles (a turning hand, as in active manipulation); the rotation is about the object's
  centroid, so the two are set independently;
- the object (`object_id`, any catalog model: scissors to pitcher);
- the orientation relative to the camera (`orientation`: "nominal" = palm normal tilted
  toward the camera by the angle that gives the requested occlusion, random azimuth and
  spin; "uniform" = the object's rotation drawn uniformly over SO(3), upside down included,
  redrawn while the hand hides more than `MAX_UNIFORM_OCCLUSION` of it);
- the grasp (`grasp`: "wrap" the object against the palm with every finger closing on it,
  "palm" a face flat on the palm with the fingers barely bent, "pinch" the object off the
  palm, under the fingers, held by the thumb, index and middle fingertips with ring and
  little fingers off it (placements tried until the thumb tip and an index or middle tip are
  within `PINCH_TIP_MM`, else the closest one); `fingers_off` keeps named fingers nearly straight and off the
  object). Every grasp is checked with the exact signed distance (no hand vertex more than
  `hodata.datasets.synthetic.CONTACT_GAP` inside the object) and must touch it;
- hand-object occlusion (`occlusion`: the fraction of the object's silhouette hidden by the
  hand, mean over the fitted frames; reached by searching the palm tilt);
- camera distance (`distance_m`, mean depth of the object centroid) and focal length
  (`focal_px` at 640 x 480, scaled with the image width; HO-3D's principal point);
- mask noise of the evidence the fit receives (`mask_iou`: the IoU of the written seg masks
  against the true ones, per frame, from ragged edges that erode or dilate plus holes;
  `missed_frames`: fitted frames whose object mask is blank, a missed detection). The true
  labels are written beside them (`<SEQ>/seg_true/`), the metas (ground truth) are untouched;
- hand-init noise (`hand_noise`: a factor on every noise level of
  `hodata.evidence.hand_init.SimulatedHandEstimator`; not in the files, see `hand_noise_kwargs`);
- the grasp changing in the hand (`in_hand_roll_deg`: the object turns about its long axis
  relative to the hand, this mean angle between fitted frames, with the fingers closing on
  it again in every frame, as when a held bottle is turned to read its label; 0: the hand and
  object move as one rigid unit, as in every other scene);
- the hand's size (`hand_size`: the first shape coefficient, betas[0], the size component:
  5 % of the open hand's size per unit; None: drawn with the rest of the shape, from
  N(0, 1.4) clipped to +-3, so the hands' sizes spread by about 7 % as adult hands do (hand
  length, women and men pooled). Scene version 3: before it, betas[0] was drawn as the other
  coefficients, N(0, 0.5) clipped to +-1, which spread the sizes by 3.2 % and let the
  independent baseline read the hand's depth from its 2D size more exactly than on real hands).

`write_scene` writes one spec as one sequence of `FRAMES` frames (one clip of `CLIP_LENGTH`
frames at stride `STRIDE`) and records the spec and the realised measures in
`<root>/robust_scenes/<SEQ>.json`; `make_scene_ho3d` writes a list of specs and the split
listing. `benchmark_specs` is the benchmark set of bench/bench_robust.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hodata.errors import HodataError

FRAMES = 37          # one clip of CLIP_LENGTH frames at stride STRIDE
CLIP_LENGTH = 10
STRIDE = 4
SCENES_DIR = "robust_scenes"   # <root>/robust_scenes/<SEQ>.json: spec and realised measures
HO3D_FOCAL = 617.343
GRASPS = ("wrap", "palm", "pinch")
ORIENTATIONS = ("nominal", "uniform")
FINGERS = ("index", "middle", "little", "ring", "thumb")
MAX_UNIFORM_OCCLUSION = 0.6
CONTACT_MM = 2.0     # a grasp touches the object when some hand vertex is within this distance
PINCH_TIP_MM = 8.0   # a pinch is accepted when the thumb tip and an index / middle tip are this close
OFF_CLOSURE = 0.15   # closure of a finger kept off the object (nearly straight)
VIEW_MARGIN = 0.03   # fraction of the smaller image side kept free around the object
BASE_NOISE = {"pixel_jitter": 4.0, "scale_error": 0.15, "pose_noise": 0.5, "rotation_noise_deg": 8.0,
              "vertex_jitter": 1.0}   # SimulatedHandEstimator defaults


@dataclass(frozen=True)
class SceneSpec:
    """One scene of the benchmark: the factors (module docstring) and the seed of the rest.

    name: sequence name; factor / level: the factor this scene varies and its level label
    (table rows); seed: draws everything not set here (grasp pose, hand shape, motion
    directions, azimuth, background).
    """

    name: str
    factor: str = "nominal"
    level: str = "nominal"
    object_id: str = "025_mug"
    translation_m: float = 0.005
    rotation_deg: float = 3.0
    orientation: str = "nominal"
    grasp: str = "wrap"
    fingers_off: tuple[str, ...] = ()
    occlusion: float | None = 0.2
    distance_m: float = 0.5
    focal_px: float = HO3D_FOCAL
    mask_iou: float = 1.0
    missed_frames: int = 0
    hand_noise: float = 1.0
    hand_size: float | None = None
    in_hand_roll_deg: float = 0.0
    seed: int = 0
    move_back: bool = False   # True: a scene too big for the view is moved away (else an error)

    def check(self) -> None:
        from hodata.objects import CATALOG

        problems = []
        if not self.name or "/" in self.name or "." in self.name:
            problems.append(f"name {self.name!r} must be non-empty without '/' or '.'")
        if self.object_id not in CATALOG:
            problems.append(f"unknown catalog object {self.object_id!r}")
        if not 0.0 <= self.translation_m <= 0.05:
            problems.append(f"translation_m {self.translation_m} outside [0, 0.05]")
        if not 0.0 <= self.rotation_deg <= 45.0:
            problems.append(f"rotation_deg {self.rotation_deg} outside [0, 45]")
        if self.orientation not in ORIENTATIONS:
            problems.append(f"orientation {self.orientation!r} not in {ORIENTATIONS}")
        if self.grasp not in GRASPS:
            problems.append(f"grasp {self.grasp!r} not in {GRASPS}")
        if any(f not in FINGERS for f in self.fingers_off):
            problems.append(f"fingers_off {self.fingers_off} must name fingers of {FINGERS}")
        if self.occlusion is not None and not 0.0 <= self.occlusion <= 0.9:
            problems.append(f"occlusion {self.occlusion} outside [0, 0.9]")
        if not 0.15 <= self.distance_m <= 2.0:
            problems.append(f"distance_m {self.distance_m} outside [0.15, 2]")
        if not 100.0 <= self.focal_px <= 5000.0:
            problems.append(f"focal_px {self.focal_px} outside [100, 5000]")
        if not 0.3 <= self.mask_iou <= 1.0:
            problems.append(f"mask_iou {self.mask_iou} outside [0.3, 1]")
        if not 0 <= self.missed_frames < CLIP_LENGTH:
            problems.append(f"missed_frames {self.missed_frames} outside [0, {CLIP_LENGTH - 1}]")
        if not 0.0 <= self.hand_noise <= 10.0:
            problems.append(f"hand_noise {self.hand_noise} outside [0, 10]")
        if self.hand_size is not None and not -3.0 <= self.hand_size <= 3.0:
            problems.append(f"hand_size {self.hand_size} outside [-3, 3]")
        if not 0.0 <= self.in_hand_roll_deg <= 30.0:
            problems.append(f"in_hand_roll_deg {self.in_hand_roll_deg} outside [0, 30]")
        if problems:
            raise HodataError(f"scene spec {self.name}: " + "; ".join(problems))

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["fingers_off"] = list(self.fingers_off)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "SceneSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["fingers_off"] = tuple(values.get("fingers_off", ()))
        return cls(**values)


NOMINAL = SceneSpec(name="nominal")


def scene_version(spec: SceneSpec) -> int:
    """Version of the generation of this kind of scene, stored in its record: a cached scene
    whose record holds another version is stale (2: pinch placements chosen by fingertip gaps;
    3: hand sizes drawn with the spread of adult hands, `hand_betas`)."""
    return 3


def hand_noise_kwargs(level: float) -> dict:
    """SimulatedHandEstimator keyword arguments with every noise level scaled by `level`."""
    return {k: v * level for k, v in BASE_NOISE.items()}


def intrinsics(focal_px: float, image_size: tuple[int, int]) -> np.ndarray:
    """camMat (3, 3) for an image (H, W): focal `focal_px` at HO-3D's 640 x 480 (scaled with the
    width, so the field of view does not depend on the resolution), HO-3D's principal point."""
    from hodata.datasets.synthetic import ho3d_intrinsics

    K = ho3d_intrinsics(image_size)
    K[0, 0] = K[1, 1] = focal_px * image_size[1] / 640.0
    return K


# ------------------------------------------------------------------------------------ motion


def _orthonormal_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = rng.normal(size=3)
    a /= np.linalg.norm(a)
    b = rng.normal(size=3)
    b -= (b @ a) * a
    return a, b / np.linalg.norm(b)


def fitted_pairs(frames: int, stride: int = STRIDE) -> list[tuple[int, int]]:
    """Consecutive fitted frames (k, k + stride), k = 0, stride, ... below `frames`."""
    return [(k, k + stride) for k in range(0, frames - stride, stride)]


def object_path(rng: np.random.Generator, frames: int, translation: float, rotation_deg: float,
                stride: int = STRIDE) -> tuple[torch.Tensor, torch.Tensor]:
    """Object centroid offsets (T, 3) (metres, mean zero) and turns (T, 3, 3) (turns[0] = I) in
    the camera frame whose mean displacement / rotation angle between consecutive fitted
    frames (`fitted_pairs`) are `translation` and `rotation_deg`.

    Velocity: speed x (1 + 0.35 sin) (accelerating and slowing, period 20-40 frames) along a
    direction turning in a random plane by half to one full circle over the clip. Angular
    velocity: the same kind of speed profile about an axis wobbling by ~17 degrees around a
    random one. Both are scaled so the fitted-frame means come out as requested (the turn
    scale by fixed-point iteration, the composition being nearly additive).
    """
    from hodata.geometry.rotations import axis_angle_to_matrix, geodesic_distance

    t = np.arange(frames, dtype=np.float64)
    pairs = fitted_pairs(frames, stride)

    def profile() -> np.ndarray:
        return 1.0 + 0.35 * np.sin(2 * math.pi * t / rng.uniform(20.0, 40.0) + rng.uniform(0, 2 * math.pi))

    e1, e2 = _orthonormal_pair(rng)
    omega = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0) * 2 * math.pi / max(frames - 1, 1)
    phase = rng.uniform(0, 2 * math.pi)
    velocity = profile()[:, None] * (np.cos(phase + omega * t)[:, None] * e1 + np.sin(phase + omega * t)[:, None] * e2)
    position = np.concatenate([np.zeros((1, 3)), np.cumsum(velocity[:-1], 0)])
    if pairs and translation > 0:
        chord = np.mean([np.linalg.norm(position[b] - position[a]) for a, b in pairs])
        position *= translation / chord
    else:
        position *= 0.0
    position -= position.mean(0)

    axis0, u1 = _orthonormal_pair(rng)
    u2 = np.cross(axis0, u1)
    wobble = rng.uniform(0, 2 * math.pi) + 2 * math.pi * t / rng.uniform(25.0, 50.0)
    axes = axis0 + 0.3 * (np.sin(wobble)[:, None] * u1 + np.cos(wobble)[:, None] * u2)
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    steps = torch.as_tensor(profile()[:, None] * axes)  # (T, 3) unscaled angular steps

    def integrate(scale: float) -> torch.Tensor:
        turns = [torch.eye(3, dtype=torch.float64)]
        increments = axis_angle_to_matrix(steps * scale)
        for k in range(frames - 1):
            turns.append(increments[k] @ turns[-1])
        return torch.stack(turns)

    target = math.radians(rotation_deg)
    scale = target / stride
    turns = integrate(0.0)
    if pairs and target > 0:
        for _ in range(4):
            turns = integrate(scale)
            measured = float(torch.stack([geodesic_distance(turns[a], turns[b]) for a, b in pairs]).mean())
            scale *= target / measured
        turns = integrate(scale)
    return torch.as_tensor(position), turns


def _toward(tilt: float, azimuth: float) -> torch.Tensor:
    """Unit vector (3,) tilted by `tilt` from the direction to the camera (-z, OpenCV)."""
    return torch.tensor([math.cos(azimuth) * math.sin(tilt), math.sin(azimuth) * math.sin(tilt), -math.cos(tilt)],
                        dtype=torch.float64)


def uniform_rotations(rng: np.random.Generator, n: int) -> torch.Tensor:
    """n rotations (n, 3, 3) uniform over SO(3) (normalised 4-D Gaussian quaternions)."""
    from hodata.geometry.rotations import quaternion_to_matrix

    quat = torch.as_tensor(rng.normal(size=(n, 4)))
    return quaternion_to_matrix(quat / quat.norm(dim=-1, keepdim=True))


# ------------------------------------------------------------------------------------ masks


def perturb_mask(mask: np.ndarray, target_iou: float, rng: np.random.Generator) -> np.ndarray:
    """A detected-looking version (H, W) bool of a true mask whose IoU with it is ~target_iou.

    Ragged edges: the mask's signed distance (pixels, positive inside) plus a * (n + b) is
    thresholded at 0, with n a smooth unit-variance random field (correlation ~6 % of the
    mask's size) and b a per-frame bias in [-0.5, 0.5] (net erosion or dilation). One or two
    holes (each ~12 % of the IoU loss) are cut inside. The amplitude a is found by bisection
    on the IoU. A mask too small to reach the target is returned as close as it gets.
    """
    from scipy.ndimage import distance_transform_edt, gaussian_filter

    mask = mask.astype(bool)
    area = int(mask.sum())
    if target_iou >= 1.0 or area == 0:
        return mask.copy()
    ys, xs = np.nonzero(mask)
    size = math.sqrt(area)
    pad = int(size) + 8
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, mask.shape[0])
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, mask.shape[1])
    crop = mask[y0:y1, x0:x1]
    signed = distance_transform_edt(crop) - distance_transform_edt(~crop)
    noise = gaussian_filter(rng.normal(size=crop.shape), sigma=max(1.5, 0.06 * size))
    noise /= noise.std() + 1e-12
    bias = rng.uniform(-0.5, 0.5)
    holes = np.zeros_like(crop)
    inner = np.argwhere(signed > 0.25 * size)
    hole_area = 0.12 * (1.0 - target_iou) * area
    radius = math.sqrt(hole_area / math.pi)
    if len(inner) and radius >= 1.0:
        yy, xx = np.mgrid[0:crop.shape[0], 0:crop.shape[1]]
        for cy, cx in inner[rng.choice(len(inner), size=int(rng.integers(1, 3)))]:
            holes |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2

    def noisy(amplitude: float) -> np.ndarray:
        return (signed + amplitude * (noise + bias) > 0) & ~holes

    def iou(candidate: np.ndarray) -> float:
        return float((candidate & crop).sum()) / float((candidate | crop).sum())

    lo, hi = 0.0, 1.0
    while iou(noisy(hi)) > target_iou and hi < 4 * size:
        hi *= 2.0
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if iou(noisy(mid)) > target_iou:
            lo = mid
        else:
            hi = mid
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = noisy(0.5 * (lo + hi))
    return out


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (H, W) bool masks (1 when both are empty)."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else float((a & b).sum()) / union


def missed_frame_indices(count: int, frames: int = FRAMES, stride: int = STRIDE) -> list[int]:
    """Which fitted frames lose their object mask: spread over the clip, never the first."""
    fitted = list(range(0, frames, stride))
    if count <= 0:
        return []
    picks = np.linspace(len(fitted) / 2, len(fitted) - 1, count).round().astype(int) if count > 1 else [len(fitted) // 2]
    return sorted({fitted[int(i)] for i in picks})


# ----------------------------------------------------------------------------------- scenes


def occlusion_fractions(obj_cv: torch.Tensor, obj_faces: torch.Tensor, hand_cv: torch.Tensor,
                        hand_faces: torch.Tensor, K: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Fraction (T,) of the object's silhouette hidden by the hand: 1 - visible / alone pixels,
    from z-buffered labels of (obj_cv (T, V, 3), hand_cv (T, W, 3)) in the OpenCV camera."""
    from hodata.geometry.raster import render_labels

    alone = (render_labels([(obj_cv, obj_faces)], K, image_size)[0] == 1).flatten(1).sum(1)
    both = (render_labels([(obj_cv, obj_faces), (hand_cv, hand_faces)], K, image_size)[0] == 1).flatten(1).sum(1)
    return 1.0 - both.double() / alone.double().clamp(min=1)


SIZE_SPREAD = 1.4   # standard deviation of the drawn betas[0] (5 % of hand size per unit: ~7 %)


def hand_betas(spec: SceneSpec, rng: np.random.Generator, dtype=torch.float64) -> torch.Tensor:
    """(10,) shape coefficients of the scene's hand: betas[1:] each from N(0, 0.5) clipped to
    +-1; betas[0] (size) from N(0, SIZE_SPREAD) clipped to +-3 (the same normal draw, scaled), or
    `spec.hand_size` when given (after the draw, so the rest of the scene's random draws are
    the same as without it)."""
    draw = rng.normal(0.0, 0.5, size=10)
    betas = torch.as_tensor(np.clip(draw, -1.0, 1.0), dtype=dtype)
    betas[0] = float(np.clip(draw[0] * SIZE_SPREAD / 0.5, -3.0, 3.0))
    if spec.hand_size is not None:
        betas[0] = spec.hand_size
    return betas


def _grasp_for(spec: SceneSpec, rng: np.random.Generator, layer, pca_layer, model) -> tuple[dict, torch.Tensor]:
    """(make_grasp result, betas) for the spec's grasp type; HodataError if no contact."""
    from hodata.datasets.synthetic import _exact_sdf, make_grasp

    dtype = torch.float64
    coeffs = torch.zeros(1, pca_layer.num_pca_comps, dtype=dtype)
    coeffs[0, :4] = torch.as_tensor(rng.normal(0.0, 0.3, size=4), dtype=dtype)
    grasp_pose = pca_layer.pca_to_full_pose(coeffs)[0]
    betas = hand_betas(spec, rng, dtype)
    roll, flip_axis = float(rng.uniform(-math.pi, math.pi)), bool(rng.integers(2))
    fixed = {f: OFF_CLOSURE for f in spec.fingers_off}
    extent = float((model.vertices.amax(0) - model.vertices.amin(0)).min())
    if spec.grasp == "wrap":
        options = [dict()]
    elif spec.grasp == "palm":
        options = [dict(face_palm=True, max_closure=0.7)]
    else:  # pinch: off the palm, under the fingers; try closer placements until the fingertips reach it
        fixed = {"ring": 0.35, "little": 0.35, **fixed}
        options = [dict(slide=slide, standoff=min(standoff, 0.5 * extent)) for slide, standoff in (
            (0.05, 0.03), (0.05, 0.02), (0.03, 0.02), (0.07, 0.02))]
    best = None
    for option in options:
        grasp = make_grasp(layer, model, grasp_pose, roll=roll, flip_axis=flip_axis, betas=betas,
                           fixed_closure=fixed, **option)
        grasp["options"] = {**option, "fixed_closure": fixed}
        grasp["made_with"] = {"grasp_pose": grasp_pose, "roll": roll, "flip_axis": flip_axis}
        if spec.grasp != "pinch":
            best = (0.0, grasp)
            break
        # thumb tip and the nearer of the index / middle tips on the surface (tip vertices sit
        # a few mm beyond the pad that touches)
        placed = model.vertices @ grasp["object_rotation"].T + grasp["object_translation"]
        tips = _exact_sdf(grasp["joints"][None, 16:19], placed, model.faces)[0]
        grasp["tip_gaps_mm"] = (tips * 1000).tolist()
        score = float(tips[0].clamp(min=0) + tips[1:].min().clamp(min=0))
        if best is None or score < best[0]:
            best = (score, grasp)
        if float(tips[0]) * 1000 <= PINCH_TIP_MM and float(tips[1:].min()) * 1000 <= PINCH_TIP_MM:
            break
    grasp = best[1]
    if grasp["min_clearance"] * 1000 > CONTACT_MM:
        raise HodataError(f"scene {spec.name}: the {spec.grasp} grasp does not touch the {spec.object_id} "
                          f"(nearest hand vertex {grasp['min_clearance'] * 1000:.1f} mm away); change the seed")
    return grasp, betas


def in_hand_rolls(frames: int, mean_deg: float, stride: int = STRIDE) -> np.ndarray:
    """Roll offsets (T,) radians of the object in the hand, 0 at frame 0, turning one way with a
    speed that varies by +-35 % along the clip (period 30 frames), scaled so the mean turn between
    fitted frames (`fitted_pairs`) is `mean_deg`."""
    t = np.arange(frames, dtype=np.float64)
    steps = 1.0 + 0.35 * np.sin(2 * math.pi * t / 30.0)
    rolls = np.concatenate([[0.0], np.cumsum(steps[:-1])])
    pairs = fitted_pairs(frames, stride)
    if not pairs or mean_deg <= 0:
        return np.zeros(frames)
    return rolls * math.radians(mean_deg) / np.mean([rolls[b] - rolls[a] for a, b in pairs])


def _rolled_grasps(grasp: dict, rolls: np.ndarray, layer, model, betas: torch.Tensor) -> dict:
    """The grasp again in every frame with the object turned by rolls[t] more about its long axis
    (fingers closing on it afresh): per-frame hand_pose (T, 45), object_rotation (T, 3, 3),
    object_translation (T, 3), hand_vertices (T, V, 3), joints (T, 21, 3); min_clearance is the
    worst frame's (the grasp must touch in every frame)."""
    from hodata.datasets.synthetic import make_grasp

    made = grasp["made_with"]
    options = {k: v for k, v in grasp["options"].items() if k != "fixed_closure"}
    frames = [make_grasp(layer, model, made["grasp_pose"], roll=made["roll"] + float(r), flip_axis=made["flip_axis"],
                         betas=betas, fixed_closure=grasp["options"]["fixed_closure"], **options) for r in rolls]
    out = dict(grasp)
    for key in ("hand_pose", "object_rotation", "object_translation", "hand_vertices", "joints"):
        out[key] = torch.stack([f[key] for f in frames])
    out["min_clearance"] = max(f["min_clearance"] for f in frames)
    out["closure_per_frame"] = [f["closure"] for f in frames]
    return out


class _Placement:
    """Per-frame hand-frame -> camera transforms of one scene for a base orientation."""

    def __init__(self, spec: SceneSpec, grasp: dict, obj_hand: torch.Tensor, obj_faces, hand_faces,
                 offsets: torch.Tensor, turns: torch.Tensor, K: np.ndarray, image_size: tuple[int, int]):
        self.spec, self.grasp, self.obj_hand = spec, grasp, obj_hand
        self.obj_faces, self.hand_faces = obj_faces, hand_faces
        self.offsets, self.turns = offsets, turns
        self.K = torch.as_tensor(K)
        self.image_size = image_size
        # per frame (T, 3) when the grasp changes along the clip (obj_hand (T, V, 3))
        self.centroid = obj_hand.mean(-2)

    def transforms(self, base: torch.Tensor, centre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """rotations (T, 3, 3), translations (T, 3): x_cam = R x_hand + t, the object centroid at
        centre + offsets[t] and its orientation turns[t] @ base (rotation about the centroid)."""
        rotations = self.turns @ base
        translations = centre + self.offsets - (rotations @ self.centroid[..., None])[..., 0]
        return rotations, translations

    def posed(self, base: torch.Tensor, centre: torch.Tensor, frames=slice(None)):
        rotations, translations = self.transforms(base, centre)
        rotations, translations = rotations[frames], translations[frames]
        obj_hand, hand_hand = self.obj_hand, self.grasp["hand_vertices"]
        if obj_hand.dim() == 3:  # one grasp per frame
            obj_hand, hand_hand = obj_hand[frames], hand_hand[frames]
        obj = obj_hand @ rotations.transpose(-1, -2) + translations[:, None]
        hand = hand_hand @ rotations.transpose(-1, -2) + translations[:, None]
        return obj, hand

    def fit_view(self, base: torch.Tensor, lateral: np.ndarray) -> torch.Tensor | None:
        """Centroid centre (3,) at the spec's distance keeping the object (all frames) inside the
        image with a margin and the hand's centroid inside; `lateral` (2,) in [-1, 1] places it
        within the slack. None when it does not fit."""
        from hodata.geometry.camera import project

        height, width = self.image_size
        margin = VIEW_MARGIN * min(height, width)
        depth = self.spec.distance_m
        fx = float(self.K[0, 0])
        centre = torch.tensor([0.0, 0.0, depth], dtype=torch.float64)
        for _ in range(3):
            obj, hand = self.posed(base, centre)
            if float(obj[..., 2].min()) < 0.05 or float(hand[..., 2].min()) < 0.05:
                return None
            pix = project(obj, self.K)
            lo, hi = pix.reshape(-1, 2).amin(0), pix.reshape(-1, 2).amax(0)
            slack_x = (width - 1 - 2 * margin) - float(hi[0] - lo[0])
            slack_y = (height - 1 - 2 * margin) - float(hi[1] - lo[1])
            if slack_x < 0 or slack_y < 0:
                return None
            # box centre onto the image centre plus a share of the slack
            want_x = (width - 1) / 2 + 0.5 * slack_x * float(lateral[0])
            want_y = (height - 1) / 2 + 0.5 * slack_y * float(lateral[1])
            shift = torch.tensor([want_x - float(lo[0] + hi[0]) / 2, want_y - float(lo[1] + hi[1]) / 2])
            centre = centre + torch.cat([shift * depth / fx, torch.zeros(1)]).double()
        obj, hand = self.posed(base, centre)
        pix = project(obj, self.K).reshape(-1, 2)
        hand_c = project(hand.mean(1), self.K)
        inside = bool(((pix[:, 0] >= margin - 1) & (pix[:, 0] <= width - margin) & (pix[:, 1] >= margin - 1)
                       & (pix[:, 1] <= height - margin)).all())
        hand_inside = bool(((hand_c[:, 0] >= 0) & (hand_c[:, 0] <= width - 1) & (hand_c[:, 1] >= 0)
                            & (hand_c[:, 1] <= height - 1)).all())
        return centre if inside and hand_inside else None

    def occlusion(self, base: torch.Tensor, centre: torch.Tensor, scale: int = 4) -> float:
        """Mean occlusion over the fitted frames, rendered at 1/scale resolution."""
        frames = slice(0, None, STRIDE)
        obj, hand = self.posed(base, centre, frames)
        K = self.K.clone()
        K[:2, :2] /= scale
        K[:2, 2] = (K[:2, 2] + 0.5) / scale - 0.5
        size = (self.image_size[0] // scale, self.image_size[1] // scale)
        return float(occlusion_fractions(obj, self.obj_faces, hand, self.hand_faces, K, size).mean())


def _nominal_base(grasp: dict, tilt: float, azimuth: float, spin: float) -> torch.Tensor:
    from hodata.datasets.synthetic import _rotation_between
    from hodata.geometry.rotations import axis_angle_to_matrix

    toward = _toward(tilt, azimuth)
    return axis_angle_to_matrix(toward * spin) @ _rotation_between(grasp["palm_normal"], toward)


def _choose_orientation(spec: SceneSpec, rng: np.random.Generator, placement: _Placement,
                        object_rotation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(base (3, 3), centre (3,), info) for the spec's orientation, occlusion and view."""
    lateral = rng.uniform(-0.6, 0.6, size=2)
    if spec.orientation == "uniform":
        for attempt in range(200):
            base = uniform_rotations(rng, 1)[0] @ object_rotation.T
            centre = placement.fit_view(base, lateral)
            if centre is None:
                continue
            occ = placement.occlusion(base, centre)
            if occ <= MAX_UNIFORM_OCCLUSION:
                return base, centre, {"draws": attempt + 1, "search_occlusion": occ}
        raise HodataError(f"scene {spec.name}: no uniform orientation within 200 draws keeps the object in view "
                          f"and less than {MAX_UNIFORM_OCCLUSION:.0%} hidden; change the seed or the distance")
    azimuth, spin = rng.uniform(-math.pi, math.pi), rng.uniform(-math.pi, math.pi)
    if spec.occlusion is None:
        tilts = [math.radians(rng.uniform(40.0, 65.0))]
    else:
        tilts = [math.radians(d) for d in range(0, 181, 10)]
    best = None
    for tilt in tilts:
        base = _nominal_base(placement.grasp, tilt, azimuth, spin)
        centre = placement.fit_view(base, lateral)
        if centre is None:
            continue
        occ = placement.occlusion(base, centre) if spec.occlusion is not None else 0.0
        error = abs(occ - spec.occlusion) if spec.occlusion is not None else 0.0
        if best is None or error < best[0]:
            best = (error, tilt, base, centre, occ)
    if best is None:
        raise HodataError(f"scene {spec.name}: the {spec.object_id} does not fit the {placement.image_size} image at "
                          f"{spec.distance_m} m with focal {spec.focal_px:.0f} px; move it back or shorten the motion")
    if spec.occlusion is not None:  # refine the tilt between the neighbours of the best grid point
        _, tilt, base, centre, occ = best
        for _ in range(5):
            for candidate in (tilt - math.radians(10) / 2 ** (_ + 1), tilt + math.radians(10) / 2 ** (_ + 1)):
                if not 0 <= candidate <= math.pi:
                    continue
                b = _nominal_base(placement.grasp, candidate, azimuth, spin)
                c = placement.fit_view(b, lateral)
                if c is None:
                    continue
                o = placement.occlusion(b, c)
                if abs(o - spec.occlusion) < best[0]:
                    best = (abs(o - spec.occlusion), candidate, b, c, o)
            _, tilt, base, centre, occ = best
    _, tilt, base, centre, occ = best
    return base, centre, {"tilt_deg": math.degrees(tilt), "azimuth_deg": math.degrees(azimuth),
                          "spin_deg": math.degrees(spin), "search_occlusion": occ}


def write_scene(root: str | Path, spec: SceneSpec, image_size: tuple[int, int] = (480, 640),
                cache_dir: str | Path | None = None, hand_model: str = "auto", mano_dir=None,
                frames: int = FRAMES) -> dict:
    """Write one scene as sequence `spec.name` of the train split of `root` (no listing; see
    `make_scene_ho3d`) and `<root>/robust_scenes/<name>.json`. Returns that record: the spec,
    the listing lines and the realised measures (translation_m / rotation_deg per fitted
    frame, occlusion, distance_m, focal_px, mask_iou, grasp clearances)."""
    from hodata import handmodel
    from hodata.datasets.ho3d import ho3d_object_model
    from hodata.datasets.synthetic import OBJECT_COLOURS, _background, write_object_model, write_sequence
    from hodata.geometry.rotations import geodesic_distance

    spec.check()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    dtype = torch.float64
    rng = np.random.default_rng([spec.seed, 9_017])
    layer = handmodel.load(side="right", mano_dir=mano_dir, model=hand_model, use_pca=False, flat_hand_mean=True,
                           dtype=dtype)
    pca_layer = handmodel.load(side="right", mano_dir=mano_dir, model=hand_model, use_pca=True,
                               flat_hand_mean=False, num_pca_comps=16, dtype=dtype)
    hand_faces = layer.faces.long()
    write_object_model(root, spec.object_id)
    model = ho3d_object_model(root / "models", spec.object_id, cache_dir, dtype=dtype)
    K = intrinsics(spec.focal_px, image_size)

    grasp, betas = _grasp_for(spec, rng, layer, pca_layer, model)
    first_rotation = grasp["object_rotation"]
    if spec.in_hand_roll_deg > 0:
        grasp = _rolled_grasps(grasp, in_hand_rolls(frames, spec.in_hand_roll_deg), layer, model, betas)
        if grasp["min_clearance"] * 1000 > CONTACT_MM:
            raise HodataError(f"scene {spec.name}: the grasp turned in the hand loses the {spec.object_id} in a frame "
                              f"(nearest hand vertex {grasp['min_clearance'] * 1000:.1f} mm away); change the seed")
        first_rotation = grasp["object_rotation"][0]
    obj_hand = model.vertices @ grasp["object_rotation"].transpose(-1, -2) + grasp["object_translation"][..., None, :]
    offsets, turns = object_path(rng, frames, spec.translation_m, spec.rotation_deg)
    placement = _Placement(spec, grasp, obj_hand, model.faces, hand_faces, offsets, turns, K, image_size)
    moved_back = 0.0
    while True:
        try:
            base, centre, orient_info = _choose_orientation(spec, rng, placement, first_rotation)
            break
        except HodataError:
            if not spec.move_back or placement.spec.distance_m > 1.5:
                raise
            moved_back += 0.05
            placement.spec = dataclasses.replace(placement.spec, distance_m=placement.spec.distance_m + 0.05)
    rotations, translations = placement.transforms(base, centre)

    mask_rng_seed = [spec.seed, 4_242]
    missed = set(missed_frame_indices(spec.missed_frames, frames))
    ious: dict[int, float] = {}

    def seg_filter(t: int, obj_mask: np.ndarray, hand_mask: np.ndarray):
        frame_rng = np.random.default_rng(mask_rng_seed + [t])
        noisy_obj = perturb_mask(obj_mask, spec.mask_iou, frame_rng)
        noisy_hand = perturb_mask(hand_mask, spec.mask_iou, frame_rng)
        if t in missed:
            noisy_obj = np.zeros_like(obj_mask)
        ious[t] = mask_iou(noisy_obj, obj_mask)
        return noisy_obj, noisy_hand

    noisy = spec.mask_iou < 1.0 or bool(missed)
    colour = OBJECT_COLOURS.get(spec.object_id, tuple(rng.uniform(0.2, 0.9, size=3)))
    background = _background(rng, image_size).to(dtype)[None]
    written = write_sequence(root, "train", spec.name, layer, model, spec.object_id, grasp, betas, rotations,
                             translations, K, image_size, "right", colour, background,
                             seg_filter=seg_filter if noisy else None)

    # Realised measures, from the written (float32-rebuilt) ground truth.
    obj_cv, hand_cv = written["object_vertices"], written["hand_vertices"]
    pairs = fitted_pairs(frames)
    centroids = obj_cv.mean(1)
    obj_rot = rotations @ grasp["object_rotation"]
    fitted = list(range(0, frames, STRIDE))
    occ = occlusion_fractions(obj_cv[fitted], model.faces, hand_cv[fitted], hand_faces, torch.as_tensor(K), image_size)
    kept = [ious[t] for t in fitted if t in ious and t not in missed]
    record = {
        "spec": spec.to_dict(),
        "version": scene_version(spec),
        "listing": written["listing"],
        "frames": frames,
        "image_size": list(image_size),
        "realised": {
            "translation_m": float(np.mean([float((centroids[b] - centroids[a]).norm()) for a, b in pairs])),
            "rotation_deg": float(np.mean([math.degrees(float(geodesic_distance(obj_rot[a], obj_rot[b])))
                                           for a, b in pairs])),
            "occlusion": float(occ.mean()),
            "occlusion_per_frame": occ.tolist(),
            "distance_m": float(centroids[:, 2].mean()),
            "moved_back_m": moved_back,
            "focal_px": float(K[0, 0]) * 640.0 / image_size[1],
            "mask_iou": float(np.mean(kept)) if kept else 1.0,
            "missed_frames": sorted(missed),
            "min_clearance_mm": grasp["min_clearance"] * 1000,
            "finger_clearance_mm": {k: v * 1000 for k, v in grasp["finger_clearance"].items()},
            "closure": grasp["closure"],
            # the object's turn in the hand between fitted frames (0: a rigid hand-object unit)
            "in_hand_roll_deg": (float(np.mean([math.degrees(float(geodesic_distance(
                grasp["object_rotation"][a], grasp["object_rotation"][b]))) for a, b in pairs]))
                if grasp["object_rotation"].dim() == 3 else 0.0),
            "grasp_options": grasp["options"],
            "object_rotation_frame0": obj_rot[0].tolist(),
            **orient_info,
        },
    }
    scenes = root / SCENES_DIR
    scenes.mkdir(exist_ok=True)
    (scenes / f"{spec.name}.json").write_text(json.dumps(record, indent=1))
    return record


def make_scene_ho3d(root: str | Path, specs: Sequence[SceneSpec], image_size: tuple[int, int] = (480, 640),
                    cache_dir: str | Path | None = None, hand_model: str = "auto", mano_dir=None) -> Path:
    """Write every spec (`write_scene`) and the train listing of `root`; returns `root`."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise HodataError("scene names must be unique")
    for spec in specs:
        spec.check()
    listing = []
    for spec in specs:
        listing += write_scene(root, spec, image_size, cache_dir, hand_model, mano_dir)["listing"]
    record_listing(root, names, listing, image_size)
    return Path(root)


def record_listing(root: str | Path, names: Sequence[str], listing: Sequence[str],
                   image_size: tuple[int, int]) -> None:
    """train.txt and the synthetic marker for scenes written by `write_scene`."""
    from hodata.datasets.synthetic import write_listing

    write_listing(Path(root), "train", names, listing, {"frames": FRAMES, "image_size": list(image_size)},
                  generator="hodata.datasets.synthetic_scenes")


def read_scene_records(root: str | Path) -> dict[str, dict]:
    """Sequence name -> record written by `write_scene`."""
    folder = Path(root) / SCENES_DIR
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


# --------------------------------------------------------------------------------- benchmark


def benchmark_specs(seed: int = 0) -> list[SceneSpec]:
    """The robustness benchmark: nominal replicates, each factor on its own, and scenes with
    every factor drawn at once from its range, the hand's size and the grasp changing in the
    hand (48 scenes; the size and grasp-change scenes come last so the earlier names and seeds
    stay as they were)."""
    specs: list[SceneSpec] = []
    counter = iter(range(1_000))

    def add(factor: str, level: str, **changes) -> None:
        index = next(counter)
        specs.append(dataclasses.replace(NOMINAL, name=f"RB{index:02d}_{factor}", factor=factor, level=level,
                                         seed=seed * 1000 + index, **changes))

    for _ in range(3):
        add("nominal", "nominal")
    for trans_cm, rot_deg in ((0.0, 0.0), (1.0, 6.0), (1.5, 10.0), (2.0, 15.0), (2.0, 0.0), (0.0, 15.0)):
        add("motion", f"{trans_cm:.1f}cm/{rot_deg:.0f}deg", translation_m=trans_cm / 100, rotation_deg=rot_deg)
    for object_id in ("037_scissors", "011_banana", "004_sugar_box", "003_cracker_box", "035_power_drill",
                      "019_pitcher_base"):
        add("size", object_id, object_id=object_id)
    for _ in range(4):
        add("orientation", "uniform SO(3)", orientation="uniform", occlusion=None)
    add("grasp", "pinch", grasp="pinch")
    add("grasp", "palm", grasp="palm")
    add("grasp", "wrap, ring+little off", fingers_off=("ring", "little"))
    for occ in (0.0, 0.4, 0.6):
        add("occlusion", f"{occ:.0%}", occlusion=occ)
    for distance in (0.3, 0.8):
        add("distance", f"{distance:.1f} m", distance_m=distance)
    for focal in (500.0, 1000.0, 1400.0):
        add("focal", f"{focal:.0f} px", focal_px=focal)
    for iou in (0.9, 0.8, 0.7):
        add("mask_noise", f"IoU {iou:.1f}", mask_iou=iou)
    add("mask_noise", "1 missed frame", missed_frames=1)
    for level in (0.5, 2.0, 3.0):
        add("hand_noise", f"x{level:g}", hand_noise=level)
    for object_id in ("006_mustard_bottle", "021_bleach_cleanser", "022_windex_bottle"):
        add("symmetric", object_id, object_id=object_id)
    rng = np.random.default_rng([seed, 31])
    objects = ("037_scissors", "011_banana", "025_mug", "004_sugar_box", "003_cracker_box", "006_mustard_bottle",
               "021_bleach_cleanser", "010_potted_meat_can", "019_pitcher_base", "035_power_drill")
    for _ in range(4):
        add("all", "all varied", object_id=str(rng.choice(objects)),
            translation_m=float(rng.uniform(0.0, 0.02)), rotation_deg=float(rng.uniform(0.0, 15.0)),
            orientation="uniform", occlusion=None, grasp=str(rng.choice(GRASPS)),
            distance_m=float(rng.uniform(0.3, 0.8)), focal_px=float(rng.uniform(500.0, 1400.0)),
            mask_iou=float(rng.uniform(0.75, 1.0)), hand_noise=float(rng.uniform(0.5, 2.0)), move_back=True)
    for size in (-2.0, 2.0):  # hands 10 % smaller and larger than the mean
        add("hand_size", f"betas[0] {size:+g}", hand_size=size)
    for roll in (5.0, 10.0):  # the grasp changing: the object turning in the hand
        add("grasp_change", f"roll {roll:g}deg", in_hand_roll_deg=roll)
    return specs


# Fields each factor changes (the rest of a factor's scenes stay at NOMINAL).
FACTOR_FIELDS = {
    "nominal": (),
    "motion": ("translation_m", "rotation_deg"),
    "size": ("object_id",),
    "orientation": ("orientation", "occlusion"),
    "grasp": ("grasp", "fingers_off"),
    "occlusion": ("occlusion",),
    "distance": ("distance_m",),
    "focal": ("focal_px",),
    "mask_noise": ("mask_iou", "missed_frames"),
    "hand_noise": ("hand_noise",),
    "symmetric": ("object_id",),
    "hand_size": ("hand_size",),
    "grasp_change": ("in_hand_roll_deg",),
}
SYMMETRIC_OBJECTS = ("006_mustard_bottle", "021_bleach_cleanser", "022_windex_bottle")
__all__ = ["SceneSpec", "NOMINAL", "write_scene", "make_scene_ho3d", "benchmark_specs", "read_scene_records",
           "perturb_mask", "object_path", "uniform_rotations", "occlusion_fractions", "hand_noise_kwargs",
           "FACTOR_FIELDS", "SYMMETRIC_OBJECTS"]
