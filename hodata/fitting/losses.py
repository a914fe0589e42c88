"""The error terms of the joint objective (paper Eq. 6), one function per term.

Every function is pure: tensors in, a scalar tensor out, no hidden state. Reductions follow
the reference implementation (REFERENCE.md §2), because the paper's weights (Appendix C)
only balance the terms with those reductions:

    L = 1 obj + 50 v2d + 0.004 pca + 0.001 scale + 2000 smooth + 1 centroid + 1 local + 0.001 col

Every term accepts leading batch dimensions before the frame axis T (object-pose candidates
fitted side by side, see joint.py) and returns one value per leading index: (...,).

Departures from the paper, each selectable (FitConfig) and measured in bench/RESULTS.md
("Fit mechanisms (issue 9)"): smoothness on accelerations (`acceleration_loss`) instead of
velocities, a coarse interaction to the object's surface (`surface_interaction_loss`)
instead of its centroid, a depth order read from the masks (`depth_order_loss`; all three
hodata's defaults), and, as an option, a prior of the articulation toward the hand init
(`init_pose_prior_loss`).
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
    "pose_init": 0.0,    # not in the paper: FitConfig sets hodata's default
    "occlusion": 0.0,    # not in the paper: FitConfig sets hodata's default
    "hand_size": 0.0,    # not in the paper: FitConfig sets hodata's default
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


def hand_v2d_loss(projected: torch.Tensor, target_2d: torch.Tensor,
                  image_size: tuple[int, int] | torch.Tensor) -> torch.Tensor:
    """Projected hand vertices L_v2d (paper Eq. 4).

    projected, target_2d: (..., T, V, 2) pixels. Coordinates are divided by max(H, W) and the
    squared error is averaged over frames, vertices and both coordinates (reference) -> (...).
    image_size: (H, W), or a tensor (..., 2) of one (H, W) per leading index (clips of
    different image sizes fitted side by side, hodata.fitting.batched).
    """
    if projected.shape[-1] != 2 or projected.shape[-3:] != target_2d.shape[-3:]:
        raise ValueError(f"v2d: projected {tuple(projected.shape)} and target {tuple(target_2d.shape)} "
                         "must both be (..., T, V, 2)")
    if torch.is_tensor(image_size):
        if image_size.shape != projected.shape[:-3] + (2,):
            raise ValueError(f"v2d: image sizes {tuple(image_size.shape)} must be (..., 2) for the leading dims of "
                             f"{tuple(projected.shape)}")
        norm = image_size.amax(-1).to(projected)[..., None, None, None]
    else:
        norm = float(max(image_size))
    return (((projected - target_2d) / norm) ** 2).mean(dim=(-3, -2, -1))


def pca_prior_loss(pca_pose: torch.Tensor) -> torch.Tensor:
    """Hand pose regulariser L_pca = ||theta||^2 (paper Sec. 3.3), as a mean over entries.

    pca_pose: (..., T, k) PCA coefficients of the articulated pose -> (...).
    """
    return (pca_pose**2).mean(dim=(-2, -1))


def init_pose_prior_loss(pca_pose: torch.Tensor, init_pose: torch.Tensor) -> torch.Tensor:
    """Articulation prior toward the hand init, L_pose = mean ||theta - theta_init||^2.

    pca_pose, init_pose: (..., T, k) PCA coefficients -> (...). Not in the paper: its pca
    prior pulls toward the mean pose, so interaction terms that bend fingers to fit the object
    meet no resistance from what the hand estimator saw; this keeps the articulation near the
    estimate unless the object's evidence outweighs it (issue 9; measured in bench/RESULTS.md).
    """
    if pca_pose.shape[-2:] != init_pose.shape[-2:]:
        raise ValueError(f"pose prior: pose {tuple(pca_pose.shape)} and init {tuple(init_pose.shape)} differ")
    return ((pca_pose - init_pose) ** 2).mean(dim=(-2, -1))


def scale_prior_loss(scale: torch.Tensor, reference: torch.Tensor | float = 1.0,
                     spread: float = 1.0) -> torch.Tensor:
    """Scale prior L_scale (paper Sec. 3.3, after PHOSA): squared relative deviation of a
    scale from its category-average value, ((scale - reference) / (reference * spread))^2.

    scale: (...) current size (a hand scale factor, or an object's dimension in metres), one
    per candidate; reference: the category average, same units; spread: the category's relative
    standard deviation, the unit of the deviation (1: the paper's plain relative deviation).
    Returns (...), elementwise.
    """
    if not spread > 0:
        raise ValueError(f"scale prior: spread must be positive, got {spread}")
    reference = torch.as_tensor(reference, dtype=scale.dtype, device=scale.device)
    return ((scale - reference) / (reference * spread)) ** 2


def smoothness_loss(vertices: torch.Tensor) -> torch.Tensor:
    """Temporal smoothness L_smooth (paper Sec. 3.3): squared frame-to-frame vertex motion.

    vertices: (..., T, V, 3) metres -> (...). Mean over the T-1 differences, vertices and
    coordinates (reference reduction). Zero for T < 2.

    This penalises motion itself: at weight 2000, an object moving ~1 cm per fitted frame
    costs more than its silhouette gains, and the fit freezes it (issue 9). hodata's default
    is `acceleration_loss`; this paper form stays selectable (FitConfig.smooth_mode).
    """
    if vertices.shape[-3] < 2:
        return vertices.sum(dim=(-3, -2, -1)) * 0.0
    return ((vertices[..., 1:, :, :] - vertices[..., :-1, :, :]) ** 2).mean(dim=(-3, -2, -1))


def acceleration_loss(vertices: torch.Tensor) -> torch.Tensor:
    """Temporal smoothness on second differences: mean ||V_{t+1} - 2 V_t + V_{t-1}||^2 / 3.

    vertices: (..., T, V, 3) metres -> (...). Mean over the T-2 second differences, vertices
    and coordinates (the reduction of `smoothness_loss`, so the paper's weight keeps its
    meaning for jitter). Zero for T < 3 and for any motion at constant velocity: real motion
    between fitted frames is not penalised, only its frame-to-frame changes (jitter, and
    sudden jumps such as a flip in one frame). Not in the paper (issue 9).
    """
    if vertices.shape[-3] < 3:
        return vertices.sum(dim=(-3, -2, -1)) * 0.0
    second = vertices[..., 2:, :, :] - 2 * vertices[..., 1:-1, :, :] + vertices[..., :-2, :, :]
    return (second**2).mean(dim=(-3, -2, -1))


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
    hand_vertices: (..., T, Vh, 3); object_vertices: (..., T, Vo, 3); active: (..., T) bool
    -> (...).

    On a large object the centroid lies far from where a hand holds it (7-11 cm on a cracker
    box or a drill, issue 9): hodata's default is `surface_interaction_loss`; this paper form
    stays selectable (FitConfig.coarse_mode = "centroid").
    """
    hand_centroid = hand_vertices.mean(-2)
    object_centroid = object_vertices.detach().mean(-2)
    per_frame = ((hand_centroid - object_centroid) ** 2).sum(-1) / 3.0
    return (per_frame * active.to(per_frame.dtype)).sum(-1)


def surface_interaction_loss(hand_sdf: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Coarse interaction to the object's surface: squared gap between hand points and the object.

    hand_sdf: (..., T, P) signed distance (metres) of P hand points to the object; active:
    (..., T) bool, as `coarse_interaction_loss` -> (...). Per frame the gap is the distance of
    the closest of the points to the surface, max(0, min_p SDF); its square is summed over the
    active frames (the reduction of the centroid term). The points are moved rigidly
    (articulation detached: the paper's term "only impacts the rigid hand pose"), so the term
    draws the hand to the surface nearest to where it is instead of to the middle of the
    object. Not in the paper (issue 9). hodata's default passes the hand's centroid, in the
    frames where no hand vertex is within the local contact range yet (FitConfig.coarse_mode
    = "surface_far"; "surface": every frame). With every hand vertex ("contact") it was met by
    a fingertip touching the far side at a wrong depth (hand error 8 cm on two of six clips,
    bench/RESULTS.md) until the depth order from the masks (`depth_order_loss`) ruled that out.
    """
    if hand_sdf.shape[:-1] != active.shape:
        raise ValueError(f"surface interaction: hand_sdf {tuple(hand_sdf.shape)} needs active of shape "
                         f"{tuple(hand_sdf.shape[:-1])}, got {tuple(active.shape)}")
    gap = torch.relu(hand_sdf.amin(-1))
    return (gap**2 * active.to(gap.dtype)).sum(-1)


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

    sdf_of_other: (..., T, P) signed distances (metres, negative inside) of mesh l's vertices
    in mesh k's SDF -> (...). Summed over frames and vertices (reference). The total L_col is
    the sum of this over ordered pairs (k, l).
    """
    return torch.relu(-sdf_of_other).sum(dim=(-2, -1))


def local_contact_loss(
    hand_sdf: torch.Tensor,
    hand_to_object_distance: torch.Tensor,
    contact_threshold: float = 0.01,
    attraction_scale: float = 0.01,
    repulsion_scale: float = 0.02,
) -> torch.Tensor:
    """Local contact heuristic L_local (paper Sec. 3.3 and Appendix C; Hasson et al. 2019).

    hand_sdf: (..., T, V) signed distance of each hand vertex to the object (negative inside);
    hand_to_object_distance: (..., T, V) distance of each hand vertex to the object: the paper
    uses the closest object vertex; hodata passes |SDF|, the distance to the surface.
    Attraction pulls hand vertices that are outside but within `contact_threshold` (1 cm)
    onto the surface, a * tanh(d / a) with a = 1 cm; repulsion pushes vertices inside the
    object out, r * tanh(depth / r) with r = 2 cm. Mean over frames and hand vertices -> (...).

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
    return per_vertex.mean(dim=(-2, -1))


def depth_order_loss(depth: torch.Tensor, front_of_other: torch.Tensor, behind: torch.Tensor) -> torch.Tensor:
    """Depth order from the masks: a point whose pixel shows the other mesh lies behind it.

    depth: (..., T, P) camera z of one mesh's points; front_of_other: (..., T, P) the other
    mesh's nearest depth around each point's pixel (`geometry.depth_order.front_depth_at`, +inf
    where it has none);
    behind: (..., T, P) bool, the point's pixel is labelled as the other mesh in the masks
    (so the other mesh occludes the point there). Per point the violation is
    max(0, front_of_other - depth) metres, an L1 penalty (a mislabelled pixel costs at most its
    gap, not its square); averaged over the P points and summed over frames (the coarse term's
    frame reduction) -> (...).

    Not in the paper (issue 9). Silhouettes, 2D keypoints and contact leave the hand free to
    sit in front of the object or behind it at the same image position (measured: the joint
    fit's hand error on the robustness benchmark was its depth relative to the object, -7 to
    +3 cm); which of the two occludes the other where their masks meet fixes that order.
    hodata applies it both ways: hand points on object pixels behind the object's front, and
    object points on hand pixels behind the hand's front.
    """
    if depth.shape != front_of_other.shape or depth.shape != behind.shape:
        raise ValueError(f"depth order: depth {tuple(depth.shape)}, front_of_other {tuple(front_of_other.shape)} "
                         f"and behind {tuple(behind.shape)} must have one shape")
    valid = behind & torch.isfinite(front_of_other)
    front = torch.where(valid, front_of_other, depth.detach())
    gap = torch.where(valid, torch.relu(front - depth), torch.zeros_like(depth))
    return gap.mean(-1).sum(-1)
