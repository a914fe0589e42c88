"""Independent object pose initialisation (paper Sec. 3.2).

Many uniformly random rotations are placed in the first frame by matching the projected
model's box to the detection (depth from the box diagonal, then x/y from the box centre,
repeated), refined together as one batch by differentiable silhouette rendering in a
region-of-interest camera around the object box, and propagated frame to frame (each frame
starts from the previous frame's pose). The motion candidate with the highest mean IoU over
the clip is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hodata.geometry.camera import boxes_from_points, crop_intrinsics, project, square_box
from hodata.geometry.raster import render_silhouette
from hodata.geometry.rotations import matrix_to_rotation_6d, random_rotations, rotation_6d_to_matrix
from hodata.geometry.transforms import apply_similarity

from .losses import object_silhouette_loss


@dataclass
class ObjectInitConfig:
    n_samples: int = 500        # random rotations drawn (reference)
    n_hypotheses: int = 50      # candidates refined by rendering (paper: 50)
    n_propagate: int = 5        # best candidates after frame 0 carried through the clip (bench/RESULTS.md)
    steps_first: int = 50       # Adam steps on frame 0 (reference: 50 per frame)
    steps_per_frame: int = 25   # Adam steps on each later frame (reference: 50; halved for CPU, see bench)
    lr: float = 1e-2            # reference
    roi_size: int = 64          # region-of-interest render size in pixels
    roi_expand: float = 1.3     # ROI side relative to the larger box side
    sigma: float = 1.0          # soft silhouette edge width (pixels of the ROI)
    box_iterations: int = 10    # depth/centre alternations (reference)


@dataclass
class ObjectInitResult:
    rotation: torch.Tensor      # (T, 3, 3)
    translation: torch.Tensor   # (T, 3)
    iou: torch.Tensor           # (T,) IoU of the kept candidate per frame
    candidate_ious: torch.Tensor  # (K,) mean IoU of every propagated candidate, best first
    candidate_rotations: torch.Tensor | None = None     # (K, T, 3, 3), best first (index 0 = rotation)
    candidate_translations: torch.Tensor | None = None  # (K, T, 3)


def hull_vertices(vertices: torch.Tensor) -> torch.Tensor:
    """The vertices (H, 3) of a model's (V, 3) convex hull. A projected box and the largest
    distance from the origin of any placement are attained at them (perspective projection
    in front of the camera maps the hull to the hull of the projections), so they stand for
    the model there at a fraction of the points (mug: 1000 -> ~300). All vertices when the
    hull cannot be built (flat or degenerate models)."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        index = ConvexHull(vertices.detach().cpu().double().numpy()).vertices
    except (QhullError, ValueError):
        return vertices
    return vertices[torch.as_tensor(index, device=vertices.device)]


def translation_from_box(vertices: torch.Tensor, rotations: torch.Tensor, box: torch.Tensor, K: torch.Tensor,
                         scale: float | torch.Tensor = 1.0, iterations: int = 10, use_hull: bool = True) -> torch.Tensor:
    """Translations placing each rotated model inside a detection box (paper Sec. 3.2).

    vertices: (V, 3) canonical; rotations: (N, 3, 3); box: (4,) xyxy; K: (3, 3) -> (N, 3).
    Alternates a depth update that makes the projected box diagonal match the detection's
    (diagonal scales as 1/depth) and an x/y update that moves the projected box centre onto
    the detection centre at that depth. use_hull: compute on the model's convex-hull vertices
    (`hull_vertices`: the same boxes from fewer points).
    """
    n = rotations.shape[0]
    points = hull_vertices(vertices) if use_hull else vertices
    centred = apply_similarity(points, rotations, torch.zeros(n, 3, dtype=vertices.dtype, device=vertices.device), scale)
    target_diag = (box[2:] - box[:2]).norm()
    target_centre = (box[:2] + box[2:]) / 2
    focal = (K[0, 0] + K[1, 1]) / 2
    radius = (centred.norm(dim=-1).amax(-1)).clamp_min(1e-6)  # (N,)
    depth = focal * 2 * radius / target_diag.clamp_min(1.0) + radius
    xy = (target_centre - K[:2, 2]) / focal * depth[:, None]
    translation = torch.cat([xy, depth[:, None]], -1)
    for _ in range(iterations):
        proj = boxes_from_points(project(centred + translation[:, None], K))
        diag = (proj[:, 2:] - proj[:, :2]).norm(dim=-1)
        translation = translation * torch.stack([torch.ones_like(diag), torch.ones_like(diag), diag / target_diag], -1)
        proj = boxes_from_points(project(centred + translation[:, None], K))
        shift = target_centre - (proj[:, :2] + proj[:, 2:]) / 2
        translation = translation + torch.cat([shift / focal * translation[:, 2:3], torch.zeros_like(diag)[:, None]], -1)
    return translation


def roi_targets(K: torch.Tensor, object_boxes: torch.Tensor, object_masks: torch.Tensor, size: int,
                expand: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Region-of-interest cameras and targets for the silhouette term, computed once per clip.

    K: (3, 3); object_boxes: (T, 4); object_masks: (T, H, W) in {-1, 0, 1} -> K_roi (T, 3, 3)
    of square crops `expand` times the larger box side, and the masks cropped to them
    (T, size, size).
    """
    rois = square_box(object_boxes, expand)
    K_roi = crop_intrinsics(K.expand(object_boxes.shape[0], 3, 3), rois, (size, size))
    return K_roi, crop_masks(object_masks.to(K_roi.dtype), rois, size)


def crop_masks(masks: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-neighbour crops of masks (T, H, W) to boxes (T, 4) -> (T, size, size).

    Samples each crop pixel centre at the image location `crop_intrinsics` maps it to, so the
    crops line up exactly with silhouettes rendered with the cropped intrinsics. Outside the
    image the target is background (0).
    """
    frames, height, width = masks.shape
    steps = (torch.arange(size, dtype=boxes.dtype, device=boxes.device) + 0.5) / size
    x0, y0, x1, y1 = boxes.unbind(-1)
    xs = x0[:, None] + steps[None] * (x1 - x0)[:, None] - 0.5  # (T, S) image pixel coords
    ys = y0[:, None] + steps[None] * (y1 - y0)[:, None] - 0.5
    xi = xs.round().long()
    yi = ys.round().long()
    valid = (xi[:, None, :] >= 0) & (xi[:, None, :] < width) & (yi[:, :, None] >= 0) & (yi[:, :, None] < height)
    xi = xi.clamp(0, width - 1)
    yi = yi.clamp(0, height - 1)
    frame_index = torch.arange(frames, device=masks.device)[:, None, None]
    crops = masks[frame_index, yi[:, :, None], xi[:, None, :]]
    return torch.where(valid, crops, torch.zeros_like(crops))


def silhouette_iou(rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Occlusion-aware IoU of hard silhouettes (..., H, W) with a {-1, 0, 1} target -> (...).

    Pixels under the hand (-1) are ignored, as in the silhouette loss.
    """
    keep = target >= 0
    pred = (rendered > 0.5) & keep
    truth = target > 0.5
    inter = (pred & truth).sum(dim=(-2, -1)).to(rendered.dtype)
    union = (pred | truth).sum(dim=(-2, -1)).to(rendered.dtype)
    return inter / union.clamp_min(1.0)


def _render(vertices_c, faces, rotation, translation, K_roi, size, sigma, mode, scale=1.0):
    verts = apply_similarity(vertices_c, rotation, translation, scale)
    return render_silhouette(verts, faces, K_roi, (size, size), sigma=sigma, mode=mode)


def _refine(vertices_c, faces, rotation, translation, K_roi, target, steps, config, scale):
    """Adam on the silhouette loss for a batch of independent poses (B, ...) -> refined."""
    rot6d = matrix_to_rotation_6d(rotation).detach().clone().requires_grad_(True)
    trans = translation.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([rot6d, trans], lr=config.lr, capturable=rot6d.is_cuda)  # no host read per step
    for _ in range(steps):
        optimiser.zero_grad(set_to_none=True)
        rendered = _render(vertices_c, faces, rotation_6d_to_matrix(rot6d), trans, K_roi, config.roi_size,
                           config.sigma, "soft", scale)
        # one frame per batch element: each candidate is its own clip of T = 1
        loss = object_silhouette_loss(rendered[:, None], target[:, None]).sum()
        loss.backward()
        optimiser.step()
    return rotation_6d_to_matrix(rot6d).detach(), trans.detach()


def initialise_object_pose(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    K: torch.Tensor,
    object_boxes: torch.Tensor,
    object_masks: torch.Tensor,
    config: ObjectInitConfig | None = None,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> ObjectInitResult:
    """Object motion over a clip from silhouettes (paper Sec. 3.2).

    vertices: (V, 3) canonical model; faces: (F, 3); K: (3, 3); object_boxes: (T, 4);
    object_masks: (T, H, W) in {-1, 0, 1} (hand-occluded pixels -1).
    """
    config = config or ObjectInitConfig()
    device, dtype = vertices.device, vertices.dtype
    frames = object_boxes.shape[0]
    K_roi, targets = roi_targets(K.to(dtype), object_boxes, object_masks, config.roi_size, config.roi_expand)

    rotations = random_rotations(config.n_samples, generator=generator, dtype=dtype, device=device)
    translations = translation_from_box(vertices, rotations, object_boxes[0], K, scale, config.box_iterations)

    with torch.no_grad():  # cheap screening of all samples by hard IoU in frame 0
        hard = _render(vertices, faces, rotations, translations, K_roi[0].expand(len(rotations), 3, 3),
                       config.roi_size, config.sigma, "hard", scale)
        screen_iou = silhouette_iou(hard, targets[0].expand_as(hard))
    keep = screen_iou.topk(min(config.n_hypotheses, len(rotations))).indices
    rotation, translation = rotations[keep], translations[keep]
    n = len(keep)
    rotation, translation = _refine(vertices, faces, rotation, translation, K_roi[0].expand(n, 3, 3),
                                    targets[0].expand(n, -1, -1), config.steps_first, config, scale)
    with torch.no_grad():
        first_iou = silhouette_iou(_render(vertices, faces, rotation, translation, K_roi[0].expand(n, 3, 3),
                                           config.roi_size, config.sigma, "hard", scale), targets[0].expand(n, -1, -1))
    best = first_iou.topk(min(config.n_propagate, n)).indices
    rotation, translation = rotation[best], translation[best]
    k = len(best)

    rotations_t, translations_t, ious_t = [rotation], [translation], [first_iou[best]]
    for t in range(1, frames):
        rotation, translation = _refine(vertices, faces, rotation, translation, K_roi[t].expand(k, 3, 3),
                                        targets[t].expand(k, -1, -1), config.steps_per_frame, config, scale)
        with torch.no_grad():
            hard = _render(vertices, faces, rotation, translation, K_roi[t].expand(k, 3, 3), config.roi_size,
                           config.sigma, "hard", scale)
            ious_t.append(silhouette_iou(hard, targets[t].expand(k, -1, -1)))
        rotations_t.append(rotation)
        translations_t.append(translation)
    all_rot = torch.stack(rotations_t, 1)      # (K, T, 3, 3)
    all_trans = torch.stack(translations_t, 1)  # (K, T, 3)
    all_iou = torch.stack(ious_t, 1)            # (K, T)
    mean_iou = all_iou.mean(1)
    # highest mean IoU first (paper; the reference docstring says lowest)
    order = mean_iou.argsort(descending=True)
    chosen = order[0]
    return ObjectInitResult(all_rot[chosen], all_trans[chosen], all_iou[chosen], mean_iou[order],
                            all_rot[order], all_trans[order])


def principal_flips(vertices: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor,
                    scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The pose turned half way about each principal axis of the model, through its centroid.

    vertices: (V, 3) canonical; rotation: (T, 3, 3); translation: (T, 3) -> (3, T, 3, 3),
    (3, T, 3). A model whose shape is nearly symmetric under one of these half turns (the two
    ends of a bottle, the two faces of a box) projects to nearly the same silhouette in both
    poses, so the silhouette alone cannot choose between them. With F = 2 e e^T - I the half
    turn about unit axis e: V' = s R (F (V - c) + c) + t, i.e. R' = R F, t' = t + s R (c - F c).
    """
    centre = vertices.mean(0)
    centred = vertices - centre
    _, axes = torch.linalg.eigh(centred.T @ centred)  # columns: principal axes
    eye = torch.eye(3, dtype=vertices.dtype, device=vertices.device)
    flips = 2 * axes.T[:, :, None] * axes.T[:, None, :] - eye  # (3, 3, 3): one half turn per axis
    rotations = rotation[None] @ flips[:, None]                 # (3, T, 3, 3)
    offsets = centre - (flips @ centre[:, None])[..., 0]        # (3, 3): c - F c
    translations = translation[None] + scale * (rotation[None] @ offsets[:, None, :, None])[..., 0]
    return rotations, translations


def rotation_angle_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle (degrees) between rotations a and b (..., 3, 3) -> (...)."""
    cos = ((a.transpose(-1, -2) @ b).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


def distinct_candidates(result: ObjectInitResult, vertices: torch.Tensor, count: int, min_angle: float = 30.0,
                        scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `count` distinct object-motion candidates for the joint fit (issue 9).

    The pool, in order of preference: the best-silhouette motion, its half turns about the
    model's principal axes (`principal_flips`: the poses a nearly symmetric silhouette cannot
    rule out), then the init's other propagated motions by mean IoU. A motion within
    `min_angle` degrees (mean over frames) of one already kept is skipped. Returns rotations
    (K, T, 3, 3) and translations (K, T, 3), K <= count, index 0 the init's choice.
    """
    rotations = [result.rotation[None]]
    translations = [result.translation[None]]
    if count > 1:
        flip_r, flip_t = principal_flips(vertices, result.rotation, result.translation, scale)
        rotations.append(flip_r)
        translations.append(flip_t)
        if result.candidate_rotations is not None:
            rotations.append(result.candidate_rotations[1:])
            translations.append(result.candidate_translations[1:])
    pool_r, pool_t = torch.cat(rotations), torch.cat(translations)
    kept: list[int] = []
    for i in range(pool_r.shape[0]):
        if len(kept) == count:
            break
        if all(rotation_angle_between(pool_r[i], pool_r[j]).mean() >= min_angle for j in kept):
            kept.append(i)
    index = torch.tensor(kept, device=pool_r.device)
    return pool_r[index], pool_t[index]


def near_symmetries(vertices: torch.Tensor, tolerance: float = 0.02) -> torch.Tensor:
    """The model's near-exact half-turn symmetries about its principal axes, with the identity.

    vertices: (V, 3) canonical -> (S, 3, 3), 1 <= S <= 4: the identity, then each principal
    half turn F (through the centroid, `principal_flips`) under which the model maps onto
    itself within `tolerance` times its diameter (mean closest-point distance of F V to V, the
    ADD-S of the turned model). A pose R and R F place the same surface: no silhouette and no
    contact or collision term can tell them apart (e.g. the mustard bottle under a half turn
    about its long axis: 2.6 mm, 1.2 % of its diameter; its ends swapped: 7 mm, 3 %).
    """
    eye = torch.eye(3, dtype=vertices.dtype, device=vertices.device)
    flips, offsets = principal_flips(vertices, eye[None], torch.zeros(1, 3, dtype=vertices.dtype,
                                                                     device=vertices.device))
    diameter = (vertices.amax(0) - vertices.amin(0)).norm()
    kept = [eye]
    for flip, offset in zip(flips[:, 0], offsets[:, 0]):
        turned = vertices @ flip.T + offset
        if torch.cdist(turned, vertices).amin(-1).mean() < tolerance * diameter:
            kept.append(flip)
    return torch.stack(kept)


def rotation_error_up_to_symmetry(rotation: torch.Tensor, truth: torch.Tensor, symmetries: torch.Tensor) -> torch.Tensor:
    """Geodesic angle (degrees) of rotations (T, 3, 3) to the truth (T, 3, 3) up to the model
    symmetries (S, 3, 3) (`near_symmetries`): min over S of the mean over frames of the angle
    between R and R_true F_s -> scalar."""
    equivalent = truth[None] @ symmetries[:, None]  # (S, T, 3, 3)
    return rotation_angle_between(rotation[None].expand_as(equivalent), equivalent).mean(-1).min()
