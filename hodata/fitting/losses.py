"""The error terms of the joint objective (paper Eq. 6), one function per term.

Every function is pure: tensors in, a scalar tensor out, no hidden state. Reductions follow
the reference implementation (REFERENCE.md §2), because the paper's weights (Appendix C)
only balance the terms with those reductions:

    L = 1 obj + 50 v2d + 0.004 pca + 0.001 scale + 2000 smooth + 1 centroid + 1 local + 0.001 col
"""

from __future__ import annotations

import torch

# Paper Appendix C.
DEFAULT_WEIGHTS: dict[str, float] = {
    "obj": 1.0,
    "v2d": 50.0,
    "pca": 0.004,
    "scale": 0.001,
    "smooth": 2000.0,
    "centroid": 1.0,
    "local": 1.0,
    "collision": 0.001,
}


def object_silhouette_loss(rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Occlusion-aware silhouette error L_obj (paper Eq. 3).

    rendered: (..., T, H, W) soft silhouettes in [0, 1]; target: same shape, encoded as
    1 object, 0 background, -1 hand-occluded. Pixels under the hand are not penalised
    (keep = target >= 0). Reduction as the reference: the squared error summed over kept
    pixels, divided by the number of kept pixels over the clip, then by T. Leading dims
    before T (hypotheses) are kept: returns (...,).
    """
    keep = (target >= 0).to(rendered.dtype)
    sq = keep * (rendered - target.clamp_min(0)) ** 2
    frames = rendered.shape[-3]
    kept = keep.sum(dim=(-3, -2, -1)).clamp_min(1.0)
    return sq.sum(dim=(-3, -2, -1)) / kept / frames


def hand_v2d_loss(projected: torch.Tensor, target_2d: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Projected hand vertices L_v2d (paper Eq. 4).

    projected, target_2d: (T, V, 2) pixels. Coordinates are divided by max(H, W) and the
    squared error is averaged over frames, vertices and both coordinates (reference).
    """
    norm = float(max(image_size))
    return (((projected - target_2d) / norm) ** 2).mean()


def pca_prior_loss(pca_pose: torch.Tensor) -> torch.Tensor:
    """Hand pose regulariser L_pca = ||theta||^2 (paper Sec. 3.3), as a mean over entries.

    pca_pose: (T, k) PCA coefficients of the articulated pose.
    """
    return (pca_pose**2).mean()


def scale_prior_loss(scale: torch.Tensor, reference: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Scale prior L_scale (paper Sec. 3.3, after PHOSA): squared relative deviation of a
    scale from its category-average value.

    scale: (...) current size (a hand scale factor, or an object's dimension in metres);
    reference: the category average, same units. Returns the sum over entries.
    """
    reference = torch.as_tensor(reference, dtype=scale.dtype, device=scale.device)
    return (((scale - reference) / reference) ** 2).sum()


def smoothness_loss(vertices: torch.Tensor) -> torch.Tensor:
    """Temporal smoothness L_smooth (paper Sec. 3.3): squared frame-to-frame vertex motion.

    vertices: (T, V, 3) metres. Mean over the T-1 differences, vertices and coordinates
    (reference reduction). Zero for T < 2.
    """
    if vertices.shape[0] < 2:
        return vertices.sum() * 0.0
    return ((vertices[1:] - vertices[:-1]) ** 2).mean()


def boxes_overlap(boxes_a: torch.Tensor, boxes_b: torch.Tensor, expand: float = 0.2) -> torch.Tensor:
    """Whether xyxy boxes (..., 4) overlap after growing each by `expand` of its size."""

    def grow(b):
        centre = (b[..., :2] + b[..., 2:]) / 2
        half = (b[..., 2:] - b[..., :2]) / 2 * (1 + expand)
        return torch.cat([centre - half, centre + half], -1)

    a, b = grow(boxes_a), grow(boxes_b)
    return (a[..., 0] < b[..., 2]) & (b[..., 0] < a[..., 2]) & (a[..., 1] < b[..., 3]) & (b[..., 1] < a[..., 3])


def coarse_interaction_loss(
    hand_vertices: torch.Tensor,
    object_vertices: torch.Tensor,
    active: torch.Tensor,
) -> torch.Tensor:
    """Coarse interaction L_centroid (paper Sec. 3.3, after PHOSA).

    Squared distance between hand and object centroids divided by 3, summed over the frames
    where `active` (projected boxes overlap and the depth gap is small; see
    `centroid_pairs_active`). The object is detached: the object model is taken at its known
    scale, so the term only moves the hand (paper: "this error only impacts the rigid hand
    pose"). The reference sums over frames.
    hand_vertices: (T, Vh, 3); object_vertices: (T, Vo, 3); active: (T,) bool.
    """
    hand_centroid = hand_vertices.mean(-2)
    object_centroid = object_vertices.detach().mean(-2)
    per_frame = ((hand_centroid - object_centroid) ** 2).sum(-1) / 3.0
    return (per_frame * active.to(per_frame.dtype)).sum()


def centroid_pairs_active(
    hand_boxes: torch.Tensor,
    object_boxes: torch.Tensor,
    hand_depth: torch.Tensor,
    object_depth: torch.Tensor,
    expand: float = 0.2,
    max_depth_gap: float = 3.0,
) -> torch.Tensor:
    """Frames where the coarse interaction applies: boxes (T, 4) overlap after 20 %
    expansion and the centroids' depth gap (T,) is under 3 m (reference)."""
    return boxes_overlap(hand_boxes, object_boxes, expand) & ((hand_depth - object_depth).abs() < max_depth_gap)


def collision_loss(sdf_of_other: torch.Tensor) -> torch.Tensor:
    """Collision L_col^{k,l} = sum_i Phi_k(V_i^l), Phi = max(0, -SDF) (paper Eq. 5).

    sdf_of_other: (T, P) signed distances (metres, negative inside) of mesh l's vertices in
    mesh k's SDF. Summed over frames and vertices (reference). The total L_col is the sum of
    this over ordered pairs (k, l).
    """
    return torch.relu(-sdf_of_other).sum()


def local_contact_loss(
    hand_sdf: torch.Tensor,
    hand_to_object_distance: torch.Tensor,
    contact_threshold: float = 0.01,
    attraction_scale: float = 0.01,
    repulsion_scale: float = 0.02,
) -> torch.Tensor:
    """Local contact heuristic L_local (paper Sec. 3.3 and Appendix C; Hasson et al. 2019).

    hand_sdf: (T, V) signed distance of each hand vertex to the object (negative inside);
    hand_to_object_distance: (T, V) distance of each hand vertex to the object: the paper
    uses the closest object vertex; hodata passes |SDF|, the distance to the surface.
    Attraction pulls hand vertices that are outside but within `contact_threshold` (1 cm)
    onto the surface, a * tanh(d / a) with a = 1 cm; repulsion pushes vertices inside the
    object out, r * tanh(depth / r) with r = 2 cm. Mean over frames and hand vertices.

    This is the intended behaviour: the reference inverts the SDF sign test, so its
    attraction never fires (REFERENCE.md §2).
    """
    outside = hand_sdf > 0
    near = outside & (hand_to_object_distance < contact_threshold)
    attraction = attraction_scale * torch.tanh(hand_to_object_distance / attraction_scale)
    depth = torch.relu(-hand_sdf)
    repulsion = repulsion_scale * torch.tanh(depth / repulsion_scale)
    per_vertex = torch.where(near, attraction, torch.zeros_like(attraction)) + torch.where(
        outside, torch.zeros_like(repulsion), repulsion
    )
    return per_vertex.mean()
