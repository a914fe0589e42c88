"""The open hand ("open-hand-v1"): a procedurally generated, articulated hand model.

Built from a few dozen anatomical numbers written in this file (no licensed data), into
exactly MANO's data layout, so the same layer and any MANO-format consumer (smplx) run it:
v_template (V, 3), shapedirs (V, 3, 10), posedirs (V, 3, 135), J_regressor (16, V),
weights (V, 16), kintree_table (2, 16), f (F, 3), hands_components (45, 45) orthonormal rows,
hands_mean (45,), plus tip_vertex_ids (5,) and model_name.

Canonical frame (as MANO's template lies; right hand): fingers point along -x, the palm faces
-y, the thumb is on the +z side, the wrist joint is at about (+0.092, 0.005, 0.005) and the
middle-finger knuckle (MCP) near the origin. Metres. Wrist to middle fingertip 18.6 cm,
palm 8.4 cm wide at the knuckles.

Surface: the zero level set of a smooth union of tapered capsules (phalanges, thumb
metacarpal), a rounded slab (palm) and an elliptic cylinder (wrist), cut by the plane
x = wrist + 1 cm (faces past it are dropped, leaving one open boundary loop at the wrist
exactly like MANO's mesh), extracted by marching tetrahedra on a 2 mm grid, decimated and
remeshed isotropically (pymeshlab, 6.8 mm edges): 1287 vertices, 2544 faces, 28-vertex
wrist ring (closed: 2570 faces). Building takes ~2-7 s (mostly pymeshlab), once per process.
Joints: designed positions, reproduced exactly by a J_regressor of convex weights over the
vertices of a thin slice of the surface around each joint (so joints follow shape changes).
Skinning weights: each vertex goes to its nearest bone, then the weights are diffused over
the mesh graph so they blend across each joint over ~1 cm.
Pose basis: PCA of 4096 deterministic synthetic poses (closure synergy, per-finger flexion,
spread, thumb opposition). Shape basis: 10 analytic displacement fields (size, finger
length, palm width, palm length, finger girth, palm thickness, thumb length, radial/ulnar
finger-length gradient, fingertip taper, wrist width), each about one standard deviation
of adult variation per unit. Pose correctives (posedirs): a small skin bulge at bent joints.
The left hand mirrors x (and flips the face winding), as MANO's left model does.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from hodata.handmodel.constants import MANO_PARENTS, NUM_MANO_JOINTS, OPEN_HAND_MODEL_NAME
from hodata.handmodel.meshing import (
    close_wrist,
    marching_tetrahedra,
    vertex_adjacency,
    vertex_normals,
    wrist_ring,
)

# ----------------------------------------------------------------------------------------
# Anatomy, right hand, relative to the wrist joint (x toward the wrist, fingers along -x,
# palm normal -y, thumb side +z). Metres.
_WRIST_OFFSET = np.array([0.092, 0.005, 0.005])  # wrist joint position in the model frame
_WRIST_CUT = 0.010  # the wrist opening lies this far beyond the wrist joint (+x)

# Fingers in MANO's joint order: index, middle, little, ring. MCP position, base direction,
# phalanx lengths (proximal, middle, distal to the tip of the skin), radii at MCP, PIP, DIP, tip.
_FINGERS = {
    "index": ((-0.086, 0.000, 0.023), (-1.0, 0.0, 0.06), (0.040, 0.024, 0.021), (0.0090, 0.0082, 0.0075, 0.0068)),
    "middle": ((-0.090, 0.000, 0.001), (-1.0, 0.0, 0.00), (0.045, 0.028, 0.023), (0.0092, 0.0085, 0.0077, 0.0070)),
    "little": ((-0.077, -0.002, -0.041), (-1.0, 0.0, -0.14), (0.033, 0.020, 0.019), (0.0077, 0.0070, 0.0064, 0.0059)),
    "ring": ((-0.086, -0.001, -0.020), (-1.0, 0.0, -0.06), (0.042, 0.027, 0.022), (0.0085, 0.0079, 0.0072, 0.0066)),
}
# Thumb: CMC joint inside the thenar, one direction per bone (metacarpal, proximal, distal).
_THUMB_CMC = (-0.018, -0.007, 0.020)
_THUMB_DIRS = ((-0.62, -0.18, 0.76), (-0.78, -0.22, 0.58), (-0.84, -0.22, 0.50))
_THUMB_LENGTHS = (0.038, 0.032, 0.028)
_THUMB_RADII = (0.0130, 0.0105, 0.0092, 0.0080)
# Palm outline in the (x, z) plane; the slab is 2.5 cm thick with 1 cm rounded rims.
_PALM_OUTLINE = np.array(
    [(0.030, 0.024), (0.030, -0.026), (-0.030, -0.037), (-0.068, -0.044), (-0.080, -0.038),
     (-0.088, -0.020), (-0.093, 0.000), (-0.090, 0.022), (-0.080, 0.032), (-0.045, 0.034),
     (-0.015, 0.030)]
)
_PALM_HALF_THICKNESS = 0.0125
_PALM_RIM = 0.010
_WRIST_RADII = (0.0175, 0.028)  # (y, z) of the elliptic wrist section

_GRID_STEP = 0.002
_TARGET_EDGE = 0.0068

_FINGER_ORDER = ("index", "middle", "little", "ring")  # MANO joints 1-3, 4-6, 7-9, 10-12


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _skeleton() -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray, float, float]]]:
    """Joint positions (16, 3), tip points (5, 3, thumb first) relative to the wrist, and the
    tapered capsules (start, end, radius at start, radius at end) of all phalanges."""
    joints = np.zeros((NUM_MANO_JOINTS, 3))
    tips = np.zeros((5, 3))
    capsules = []
    for f, name in enumerate(_FINGER_ORDER):
        mcp, direction, lengths, radii = _FINGERS[name]
        d = _unit(direction)
        p = np.array(mcp, dtype=np.float64)
        for s in range(3):
            joints[1 + 3 * f + s] = p
            end = p + lengths[s] * d
            # The distal capsule stops one radius short so the skin ends at the tip point.
            cap_end = end - radii[3] * d if s == 2 else end
            capsules.append((p, cap_end, radii[s], radii[s + 1]))
            p = end
        tips[{"index": 1, "middle": 2, "ring": 3, "little": 4}[name]] = p
    p = np.array(_THUMB_CMC, dtype=np.float64)
    for s in range(3):
        joints[13 + s] = p
        d = _unit(_THUMB_DIRS[s])
        end = p + _THUMB_LENGTHS[s] * d
        cap_end = end - _THUMB_RADII[3] * d if s == 2 else end
        capsules.append((p, cap_end, _THUMB_RADII[s], _THUMB_RADII[s + 1]))
        p = end
    tips[0] = p
    return joints, tips, capsules


def _smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (blend radius k): fillets where two shapes meet."""
    h = np.clip(k - np.abs(a - b), 0.0, None) / k
    return np.minimum(a, b) - h * h * k * 0.25


def _tapered_capsule(p: np.ndarray, a: np.ndarray, b: np.ndarray, ra: float, rb: float) -> np.ndarray:
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1) - (ra + t * (rb - ra))


def _polygon_sdf(q: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) from 2D points q (N, 2) to a simple polygon (M, 2)."""
    d = np.full(len(q), np.inf)
    inside = np.zeros(len(q), dtype=bool)
    for i in range(len(poly)):
        a, b = poly[i], poly[(i + 1) % len(poly)]
        e = b - a
        w = q - a
        t = np.clip((w @ e) / (e @ e), 0.0, 1.0)
        d = np.minimum(d, np.linalg.norm(w - t[:, None] * e, axis=1))
        crosses = (a[1] > q[:, 1]) != (b[1] > q[:, 1])
        x_at = a[0] + (q[:, 1] - a[1]) * e[0] / np.where(e[1] == 0, 1e-30, e[1])
        inside ^= crosses & (q[:, 0] < x_at)
    return np.where(inside, -d, d)


def _local(p: np.ndarray, lo, hi, fn) -> np.ndarray:
    """fn evaluated only on the points inside the box [lo, hi]; +1 m elsewhere (far outside,
    where no smooth union reaches)."""
    sel = np.flatnonzero(np.all((p >= lo) & (p <= hi), axis=1))
    out = np.ones(len(p))
    out[sel] = fn(p[sel])
    return out


def _capsule_field(p: np.ndarray, cap, margin: float = 0.015) -> np.ndarray:
    a, b, ra, rb = cap
    lo = np.minimum(a, b) - max(ra, rb) - margin
    hi = np.maximum(a, b) + max(ra, rb) + margin
    return _local(p, lo, hi, lambda q: _tapered_capsule(q, a, b, ra, rb))


def _palm_field(q: np.ndarray) -> np.ndarray:
    """The palm outline extruded along y with rounded rims."""
    d2 = _polygon_sdf(q[:, [0, 2]], _PALM_OUTLINE) + _PALM_RIM
    dy = np.abs(q[:, 1]) - (_PALM_HALF_THICKNESS - _PALM_RIM)
    d = np.stack([d2, dy], -1)
    return np.linalg.norm(np.clip(d, 0, None), axis=1) + np.minimum(d.max(1), 0.0) - _PALM_RIM


def _hand_sdf(p: np.ndarray, capsules) -> np.ndarray:
    """Field of the right hand relative to the wrist joint, negative inside; p: (N, 3)."""
    margin = 0.015
    lo = np.array([_PALM_OUTLINE[:, 0].min(), -_PALM_HALF_THICKNESS, _PALM_OUTLINE[:, 1].min()]) - margin
    hi = np.array([_PALM_OUTLINE[:, 0].max(), _PALM_HALF_THICKNESS, _PALM_OUTLINE[:, 1].max()]) + margin
    palm = _local(p, lo, hi, _palm_field)
    ry, rz = _WRIST_RADII
    wrist = (np.sqrt((p[:, 1] / ry) ** 2 + (p[:, 2] / rz) ** 2) - 1.0) * ry
    wrist = np.maximum(wrist, -0.02 - p[:, 0])
    body = _smooth_min(palm, wrist, 0.012)
    body = _smooth_min(body, _capsule_field(p, capsules[12]), 0.010)  # thumb metacarpal (thenar)
    digits = np.ones(len(p))
    for f in range(5):
        bones = capsules[3 * f : 3 * f + 3] if f < 4 else capsules[13:15]
        finger = _capsule_field(p, bones[0])
        for cap in bones[1:]:
            finger = _smooth_min(finger, _capsule_field(p, cap), 0.003)
        digits = np.minimum(digits, finger)
    field = _smooth_min(body, digits, 0.006)
    # The forearm stub ends well beyond the wrist cut, which happens on the mesh.
    return np.maximum(field, p[:, 0] - _WRIST_CUT - 0.015)


def _surface(capsules) -> tuple[np.ndarray, np.ndarray]:
    """Open hand surface relative to the wrist: vertices (V, 3), faces (F, 3), one wrist loop."""
    import pymeshlab

    lo = np.array([-0.200, -0.040, -0.065])
    hi = np.array([_WRIST_CUT + 0.020, 0.030, 0.100])
    n = np.ceil((hi - lo) / _GRID_STEP).astype(int) + 1
    axes = [lo[i] + _GRID_STEP * np.arange(n[i]) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    values = _hand_sdf(grid, capsules).reshape(n)
    verts, faces = marching_tetrahedra(values, lo, _GRID_STEP)
    # Open the wrist: drop every face reaching past the cut plane; the forearm tube leaves
    # one boundary loop, which decimation and remeshing keep as a boundary.
    verts, faces = _compact(verts, faces[(verts[faces, 0] <= _WRIST_CUT).all(1)])

    # Marching tetrahedra over-triangulates (~10 faces per surface cell): a quadric
    # decimation first makes the isotropic remeshing cheap.
    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(vertex_matrix=verts, face_matrix=faces.astype(np.int32)))
    ms.meshing_decimation_quadric_edge_collapse(
        targetfacenum=3000, preservetopology=True, preserveboundary=True, boundaryweight=2.0, qualitythr=0.3
    )
    ms.meshing_isotropic_explicit_remeshing(
        iterations=4, targetlen=pymeshlab.PureValue(_TARGET_EDGE), featuredeg=60.0,
        maxsurfdist=pymeshlab.PureValue(0.0005),
    )
    m = ms.current_mesh()
    return _compact(np.array(m.vertex_matrix(), dtype=np.float64), np.array(m.face_matrix(), dtype=np.int64))


def _compact(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop unreferenced vertices, keeping the order of the others."""
    used = np.unique(faces)
    remap = np.full(len(verts), -1)
    remap[used] = np.arange(len(used))
    return verts[used], remap[faces]


def _bone_segments(joints: np.ndarray, tips: np.ndarray) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """For each of the 16 joints, the segments of the bone it moves (root: wrist to each
    finger base)."""
    bones: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(NUM_MANO_JOINTS)]
    children = {j: [c for c in range(NUM_MANO_JOINTS) if MANO_PARENTS[c] == j] for j in range(NUM_MANO_JOINTS)}
    tip_of_last = {3: 1, 6: 2, 9: 4, 12: 3, 15: 0}
    for j in range(NUM_MANO_JOINTS):
        if j == 0:
            bones[0] = [(joints[0], joints[c]) for c in children[0]]
        elif children[j]:
            bones[j] = [(joints[j], joints[children[j][0]])]
        else:
            bones[j] = [(joints[j], tips[tip_of_last[j]])]
    return bones


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    closest = a + t[:, None] * ab
    return np.linalg.norm(p - closest, axis=1), closest


def _skinning_weights(verts: np.ndarray, faces: np.ndarray, bones) -> np.ndarray:
    """(V, 16): nearest bone, then diffused over the mesh graph to blend across joints."""
    dist = np.stack([np.min([_segment_distance(verts, a, b)[0] for a, b in segs], axis=0) for segs in bones], 1)
    weights = np.zeros_like(dist)
    weights[np.arange(len(verts)), dist.argmin(1)] = 1.0
    smooth = vertex_adjacency(faces, len(verts))
    for _ in range(4):
        weights = 0.5 * weights + 0.5 * (smooth @ weights)
    weights[weights < 1e-4] = 0.0
    return weights / weights.sum(1, keepdims=True)


def _joint_regressor(verts: np.ndarray, joints: np.ndarray, tips: np.ndarray, bones) -> np.ndarray:
    """(16, V) convex weights: each joint is an exact convex combination of the vertices in
    a thin surface slice through it (perpendicular to its bone)."""
    from scipy.optimize import nnls

    reg = np.zeros((NUM_MANO_JOINTS, len(verts)))
    for j in range(NUM_MANO_JOINTS):
        a, b = bones[j][0] if j else (joints[0], joints[4])
        axis = _unit(b - a)
        rel = verts - joints[j]
        along = rel @ axis
        radial = np.linalg.norm(rel - along[:, None] * axis, axis=1)
        for band in (0.004, 0.006, 0.009, 0.013):
            sel = np.flatnonzero((np.abs(along) < band) & (radial < 0.035))
            if len(sel) >= 8:
                break
        k = len(sel)
        big = 1e3
        a_mat = np.concatenate([big * np.vstack([verts[sel].T, np.ones((1, k))]), 1e-2 * np.eye(k)])
        rhs = np.concatenate([big * np.append(joints[j], 1.0), 1e-2 * np.full(k, 1.0 / k)])
        w, _ = nnls(a_mat, rhs, maxiter=50 * k)
        reg[j, sel] = w / w.sum()
    return reg


def _pose_basis(joints: np.ndarray, tips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """hands_components (45, 45) orthonormal rows and hands_mean (45,) from the PCA of
    synthetic poses built from a few grasp synergies (axis-angle per joint, MANO order)."""
    rng = np.random.default_rng(20210901)
    n = 4096
    palm_normal = np.array([0.0, -1.0, 0.0])
    pose = np.zeros((n, 15, 3))
    closure = rng.uniform(0, 1, n) ** 1.3
    spread = rng.normal(0, 0.12, n) * (1.0 - closure)
    spread_gain = {"index": 1.0, "middle": 0.15, "ring": -0.7, "little": -1.3}
    for f, name in enumerate(_FINGER_ORDER):
        base = 1 + 3 * f
        d = _unit(joints[base + 1] - joints[base])
        flex_axis = _unit(np.cross(d, palm_normal))
        flex = np.clip(closure + rng.normal(0, 0.15, n), -0.1, 1.15)
        curl = np.clip(rng.normal(1.0, 0.15, n), 0.6, 1.4)
        angles = np.stack([1.30 * flex, 1.55 * flex * curl, 1.05 * flex * curl], 1)  # MCP, PIP, DIP
        for s in range(3):
            pose[:, base - 1 + s] = angles[:, s, None] * flex_axis
        abduct = spread * spread_gain[name] + rng.normal(0, 0.03, n)
        pose[:, base - 1] += abduct[:, None] * _unit(-palm_normal)
    # Thumb: opposition swings the metacarpal across the palm and pronates it.
    thumb_pad = _unit(np.array([-0.2, -0.55, -0.8]))
    opposition = np.clip(0.6 * closure + 0.5 * rng.uniform(0, 1, n) - 0.1, 0, 1)
    thumb_flex = rng.uniform(0, 1, n) * (0.3 + 0.7 * closure)
    for s in range(3):
        d = _unit(joints[14 + s] - joints[13 + s]) if s < 2 else _unit(tips[0] - joints[15])
        n_t = _unit(thumb_pad - (thumb_pad @ d) * d)
        flex_axis = _unit(np.cross(d, n_t))
        if s == 0:
            pose[:, 12] = (0.55 * opposition)[:, None] * flex_axis + (0.45 * opposition)[:, None] * d
            pose[:, 12] += rng.normal(0, 0.08, n)[:, None] * n_t
        else:
            pose[:, 12 + s] = ((0.6 if s == 1 else 0.9) * thumb_flex)[:, None] * flex_axis
    pose = pose.reshape(n, 45) + rng.normal(0, 0.02, (n, 45))
    mean = pose.mean(0)
    _, _, vt = np.linalg.svd(pose - mean, full_matrices=False)
    # Fix each component's sign: largest-magnitude entry positive.
    signs = np.sign(vt[np.arange(45), np.abs(vt).argmax(1)])
    return vt * signs[:, None], mean


def _shape_basis(verts, joints, tips, weights, bones) -> np.ndarray:
    """shapedirs (V, 3, 10): analytic displacement fields, ~one standard deviation each."""
    V = len(verts)
    dirs = np.zeros((V, 3, 10))
    ex, ey, ez = np.eye(3)
    wrist = joints[0]
    finger_of = {}
    for f in range(4):
        for s in range(3):
            finger_of[1 + 3 * f + s] = f
    for s in range(3):
        finger_of[13 + s] = 4
    base = {f: joints[1 + 3 * f] for f in range(4)}
    base[4] = joints[13]
    base_dir = {f: _unit(joints[2 + 3 * f] - joints[1 + 3 * f]) for f in range(4)}
    base_dir[4] = _unit(joints[14] - joints[13])
    palm_centre = joints[[0, 1, 4, 7, 10]].mean(0)
    radial = np.zeros((NUM_MANO_JOINTS, V, 3))
    for j in range(NUM_MANO_JOINTS):
        best = None
        for a, b in bones[j]:
            dist, closest = _segment_distance(verts, a, b)
            if best is None:
                best = (dist, verts - closest)
            else:
                pick = dist < best[0]
                best = (np.where(pick, dist, best[0]), np.where(pick[:, None], verts - closest, best[1]))
        radial[j] = best[1]
    w = weights
    w_fingers = {f: sum(w[:, j] for j in finger_of if finger_of[j] == f) for f in range(5)}
    length_gain = {0: 1.0, 1: 0.3, 2: -1.0, 3: -0.3}  # radial/ulnar gradient: index .. little

    dirs[:, :, 0] = 0.05 * (verts - wrist)
    for f in range(4):
        along = ((verts - base[f]) @ base_dir[f]).clip(0)[:, None] * base_dir[f]
        dirs[:, :, 1] += 0.06 * w_fingers[f][:, None] * along
        dirs[:, :, 7] += 0.04 * length_gain[f] * w_fingers[f][:, None] * along
    thumb_along = ((verts - base[4]) @ base_dir[4]).clip(0)[:, None] * base_dir[4]
    dirs[:, :, 6] = 0.07 * w_fingers[4][:, None] * thumb_along
    # Palm width and length: the palm stretches, the digits ride along with their bases.
    dirs[:, :, 2] = 0.06 * w[:, :1] * ((verts[:, 2] - palm_centre[2])[:, None] * ez)
    dirs[:, :, 3] = 0.06 * w[:, :1] * ((verts[:, 0] - wrist[0])[:, None] * ex)
    for f in range(5):
        dirs[:, :, 2] += 0.06 * w_fingers[f][:, None] * ((base[f][2] - palm_centre[2]) * ez)
        dirs[:, :, 3] += 0.06 * w_fingers[f][:, None] * ((base[f][0] - wrist[0]) * ex)
    for j in range(1, NUM_MANO_JOINTS):
        dirs[:, :, 4] += 0.10 * w[:, j, None] * radial[j]
    dirs[:, :, 5] = 0.10 * w[:, :1] * ((verts[:, 1] - palm_centre[1])[:, None] * ey)
    for j in (3, 6, 9, 12, 15):
        dirs[:, :, 8] += 0.12 * w[:, j, None] * radial[j]
    near_wrist = np.clip((verts[:, 0] - (wrist[0] - 0.04)) / 0.04, 0, 1)
    dirs[:, :, 9] = 0.08 * (w[:, 0] * near_wrist)[:, None] * ((verts[:, 2] - wrist[2])[:, None] * ez)
    return dirs


def _pose_correctives(verts, faces, weights) -> np.ndarray:
    """posedirs (V, 3, 135): skin bulges outward by 3 mm * (1 - cos angle) where a joint bends,
    on the vertices blended between that joint's bone and its parent's."""
    normals = vertex_normals(verts, faces)
    posedirs = np.zeros((len(verts), 3, 135))
    for j in range(1, NUM_MANO_JOINTS):
        blend = 4.0 * weights[:, j] * weights[:, MANO_PARENTS[j]]
        for m in (0, 4, 8):  # diagonal of (R_j - I): its sum is 2 (cos angle - 1)
            posedirs[:, :, 9 * (j - 1) + m] = -0.0015 * blend[:, None] * normals
    return posedirs


# The generated surface is stored with the package, and it is canonical: pymeshlab's decimation
# and remeshing depend on the OpenMP thread count and on filters run earlier in the same process,
# so builds are not reproducible bit for bit; it is also the slow part (2-7 s).
# `python -m hodata.handmodel.open_hand` regenerates the file; tests/test_handmodel.py checks
# that a fresh build gives the same hand.
SURFACE_FILE = Path(__file__).with_name("open_hand_surface.npz")


def build_surface() -> tuple[np.ndarray, np.ndarray]:
    """Generate the open hand's surface (vertices relative to the wrist, faces) from scratch."""
    return _surface(_skeleton()[2])


def stored_surface() -> tuple[np.ndarray, np.ndarray]:
    """The packaged surface, or a fresh build when the file is absent."""
    if not SURFACE_FILE.is_file():
        return build_surface()
    with np.load(SURFACE_FILE) as data:
        return data["vertices"].astype(np.float64), data["faces"].astype(np.int64)


def write_surface(path: Path = SURFACE_FILE) -> Path:
    verts, faces = build_surface()
    np.savez_compressed(path, vertices=verts, faces=faces.astype(np.int32))
    return path


@lru_cache(maxsize=2)
def _right_hand() -> dict:
    joints, tips, capsules = _skeleton()
    verts, faces = stored_surface()
    bones = _bone_segments(joints, tips)
    weights = _skinning_weights(verts, faces, bones)
    regressor = _joint_regressor(verts, joints, tips, bones)
    tip_ids = np.array([int(np.linalg.norm(verts - t, axis=1).argmin()) for t in tips])
    components, mean = _pose_basis(joints, tips)
    shapedirs = _shape_basis(verts, joints, tips, weights, bones)
    posedirs = _pose_correctives(verts, faces, weights)
    kintree = np.stack([np.array(MANO_PARENTS, dtype=np.int64), np.arange(NUM_MANO_JOINTS)])
    kintree[0, 0] = -1
    return {
        "v_template": verts + _WRIST_OFFSET,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": kintree,
        "f": faces,
        "hands_components": components,
        "hands_mean": mean,
        "tip_vertex_ids": tip_ids,
        "model_name": OPEN_HAND_MODEL_NAME,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def _mirror(model: dict) -> dict:
    """Left hand from the right: x -> -x for points and offsets, (x, -y, -z) for axis-angle
    (a reflection maps rotation vectors to -M w), reversed face winding."""
    flip = np.array([-1.0, 1.0, 1.0])
    aa_flip = np.tile(np.array([1.0, -1.0, -1.0]), 15)
    out = dict(model)
    out["v_template"] = model["v_template"] * flip
    out["shapedirs"] = model["shapedirs"] * flip[None, :, None]
    out["posedirs"] = model["posedirs"] * flip[None, :, None]
    out["f"] = model["f"][:, ::-1].copy()
    out["hands_components"] = model["hands_components"] * aa_flip[None, :]
    out["hands_mean"] = model["hands_mean"] * aa_flip
    return out


def open_hand_arrays(side: str = "right") -> dict:
    """The open hand in MANO's pickle layout (fresh numpy copies): see the module docstring."""
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    model = _right_hand()
    if side == "left":
        model = _mirror(model)
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in model.items()}


def closed_faces(side: str = "right") -> np.ndarray:
    """Watertight faces of the open hand (wrist cap added, no new vertices)."""
    model = open_hand_arrays(side)
    return close_wrist(model["v_template"], model["f"])


__all__ = ["open_hand_arrays", "closed_faces", "wrist_ring", "build_surface", "stored_surface"]


if __name__ == "__main__":
    print(f"wrote {write_surface()}")
