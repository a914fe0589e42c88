"""Joint hand-object fitting (paper Sec. 3.3 and Appendix C) and `fit_clip`.

Stage 1 optimises obj + v2d + pca + scale + smooth + centroid (+ hodata's depth order from
the masks, "occlusion", and its hand-size prior, "hand_size"); stage 2 drops the hand-size
prior and adds collision and local contact (Appendix C: both for 200 Adam steps; lr 0.1 for PCA pose and 6D rotations,
0.01 for translations and scales; hodata refines object rotations at 0.01, see FitConfig).
Any number of hands and objects: interaction terms run over every hand-object pair and
collision over every ordered pair of meshes.

Object-pose candidates (issue 9; FitConfig.object_candidates, opt-in): a silhouette cannot
tell the two ends of a near-symmetric object apart from a pose that was refined against it,
so the object init hands over its best motion and its half turns about the model's principal
axes (K x T poses). All K are first refined on the object's own terms at the init's
resolution (`refine_candidates`); those the silhouette then rules out, and those placing the
same surface as a better one, are dropped. Stage 1 fits the rest side by side, each with its
own copy of the hands; the candidate with the lowest value of the full objective (stage-2
terms: silhouette, the hand's 2D fit, coarse interaction, collision and contact) goes on to
stage 2.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from hodata.errors import HodataError
from hodata.geometry.camera import boxes_from_points, project
from hodata.geometry.depth_order import (cached_eroded_labels, cached_object_shown_beyond_hand, front_depth_at,
                                         front_depth_grid, label_at, mean_edge_pixels, metric_erosion_radii)
from hodata.geometry.raster import render_silhouette
from hodata.geometry.sdf import face_neighbourhoods, mesh_signed_distance, object_sdf, tracked_signed_distance
from hodata.geometry.transforms import apply_similarity, invert_similarity
from hodata.types import HandInit, HandState, ObjectState

from . import losses as L
from .object_init import roi_targets, silhouette_iou
from .scene import HandParameters, ObjectParameters, hand_parameters_from_layer_pose

STAGE1_TERMS = ("obj", "v2d", "pca", "pose_init", "scale", "hand_size", "smooth", "centroid", "occlusion")
# stage 2 refines locally: the hand-size prior that placed the hand along its rays in stage 1
# gives way to contact and collision (FitConfig.hand_scale_spread)
STAGE2_TERMS = tuple(t for t in STAGE1_TERMS if t != "hand_size") + ("collision", "local")
INDEPENDENT_HAND_TERMS = ("v2d", "pca")
HAND_STARTS = ("init", "fitted")  # FitConfig.hand_starts


# hodata's weights: the paper's (L.DEFAULT_WEIGHTS) with the smoothness weight for its
# acceleration form and the articulation prior toward the hand init (bench/RESULTS.md,
# "Fit mechanisms (issue 9)").
HODATA_WEIGHTS: dict[str, float] = dict(L.DEFAULT_WEIGHTS, smooth=200.0, pose_init=0.0, occlusion=1.0,
                                        hand_size=0.001)


@dataclass
class FitConfig:
    """Schedule, weights and mechanisms of the joint fit. `FitConfig()` is hodata's default;
    `FitConfig.paper()` the paper's objective (velocity smoothness at weight 2000, one rate
    0.1 for every rotation, centroid coarse interaction, one object pose from the silhouette
    init, no articulation prior)."""

    steps_stage1: int = 200
    steps_stage2: int = 200
    # Hand starts kept alive through stage 1 (issue 9): "init", the hand init as given, and
    # "fitted", that init after the independent baseline's hand-only fit (v2d + pca,
    # `hand_prefit_steps` steps). With both, every object candidate is fitted from each start
    # side by side and the full objective picks one for stage 2 (as for object candidates).
    # Neither start is right everywhere (bench/RESULTS.md "Hand starts"): where the independent
    # hand is already good (0.35 cm) the joint hand ended at 0.47 cm from the fitted start and
    # at 2.36 cm from the init (slid onto the object's front face); where the independent hand is
    # 7 cm off in depth, 1.13 cm from the init and 3.78 cm from the fitted start.
    hand_starts: tuple[str, ...] = ("init", "fitted")
    hand_prefit_steps: int = 100
    # Stage 1's hand-size prior ("hand_size", weight 1e-3 as the paper's L_scale): the hand's
    # scale against the mean hand in units of the spread of adult hand sizes, about 7 % (hand
    # length, women and men pooled). With only the paper's plain relative deviation (the "scale"
    # term, kept in both stages) the scale is all but free, so the interaction terms trade the
    # hand's depth for its size along the viewing rays (the scale-depth ambiguity): where joint
    # fitting lost most on the benchmark the hand had shrunk 8-15 % and come 3-4 cm too close
    # (bench/RESULTS.md "Hand size prior"). Stage 2 drops it, so contact and collision settle
    # the depth of a hand that is not of average size.
    hand_scale_spread: float = 0.07
    rotation_lr: float = 0.1
    # The object's rotations start from the init's silhouette fit, refined there at 1e-2: the
    # paper's 0.1 let them jump out of that basin once smoothness no longer froze them (bleach
    # ADD-S 0.50 -> 1.21 cm); 1e-2 keeps refining (6 clips: mean ADD-S 0.68 -> 0.50 cm,
    # bench/RESULTS.md "Fit mechanisms"). None: rotation_lr, the paper's one rate.
    object_rotation_lr: float | None = 0.01
    pose_lr: float = 0.1
    translation_lr: float = 0.01
    weights: dict[str, float] = field(default_factory=lambda: dict(HODATA_WEIGHTS))
    disabled: tuple[str, ...] = ()      # terms switched off (e.g. ("collision",) for an ablation)
    roi_size: int = 128                  # silhouette render size of the object ROI
    roi_expand: float = 1.3
    sigma: float = 1.0
    optimise_object_scale: bool = False  # True for approximate (category) meshes
    optimise_betas: bool = False
    # Whether collision and local contact may move the objects. The objects' poses are pinned by
    # their silhouettes; measured on synthetic clips (bench/RESULTS.md) pushing them with the
    # hand's penetration gradients trades silhouette accuracy for nothing, so by default the
    # interaction terms refine the hands only, as the coarse interaction term does.
    interaction_moves_objects: bool = False
    # Whether stage 2 refines the objects too (the paper: every parameter in both stages). With
    # interaction_moves_objects False only the silhouette and smoothness move them there; False
    # keeps the stage-1 objects and drops the silhouette render from stage 2 (issue 14).
    stage2_moves_objects: bool = True
    hand_sdf_refresh: int = 10           # steps between exact nearest-face searches of the hand SDF
    hand_sdf_margin: float = 0.01        # metres: points farther from the hand at a refresh are not tracked
    # metres: the exact search at a refresh stops this far from the hand (points farther count as
    # outside, as those beyond the margin do); no point lies that deep inside a hand (palm
    # half-thickness ~1.5 cm). 1.3x faster refreshes than the full search on the demo clip.
    hand_sdf_truncate: float | None = 0.025
    # Temporal smoothness on "acceleration" (second differences; hodata default: real motion
    # between fitted frames is not penalised) or "velocity" (the paper's term, which freezes an
    # object moving ~1 cm per fitted frame; issue 9, bench/RESULTS.md "Fit mechanisms").
    smooth_mode: str = "acceleration"
    # Coarse interaction (bench/RESULTS.md "Fit mechanisms (issue 9)", "Depth order from the masks"):
    # "surface_far" (hodata's default): the hand's centroid to the object's surface (object SDF;
    # rigid hand pose), only in frames where no hand vertex is yet within the local contact
    # range (1 cm): it brings a far hand to the object and leaves the near field to local
    # contact, collision and the depth order (weights["occlusion"]), instead of holding the
    # centroid at gap 0 where true grasps have 0-3.6 cm. "surface": that in every frame (the
    # default before the depth order). "contact": the closest hand vertex to the surface.
    # "centroid": the paper's term, which on large objects pulled the hand off its grasp
    # (cracker box / drill 2.38 / 5.21 cm). On the 29 benchmark clips held out from the choice:
    # joint hand 1.88 -> 1.78 cm, wins 23 -> 24 of 29 (contact 1.88, 22).
    coarse_mode: str = "surface_far"
    # Object-pose candidates (issue 9): the init's best-silhouette motion and its half turns about
    # the model's principal axes (object_init.distinct_candidates). All are first refined on the
    # object's own terms; only those the silhouette cannot rule out, and that place distinct
    # surfaces, go through stage 1 with the hands before the full objective picks one for stage 2
    # (refine_candidates). 4 turns a bottle whose silhouette init swapped its ends the right way
    # round (tests/test_fitting_robust.py) and the demo mug's handle (object vertex 7.4 -> 2.5 cm),
    # but on the benchmark's RB01 mug the full objective picked a half turn of a correct init
    # (hand 0.42 -> 3.44 cm); hence 1, the paper's single pose, stays the default
    # (bench/RESULTS.md "Near-symmetric objects: candidates refined before the choice").
    object_candidates: int = 1
    # The 2D target of the v2d term (paper Eq. 4): "vertices", the hand init's projected
    # vertices (the paper, with FrankMocap's mesh), or "keypoints", the 21 keypoints a keypoint
    # init was fitted to (projected joints against them; inits without keypoints use vertices).
    v2d_target: str = "vertices"
    # When the full objective picks among the candidates (object poses x hand starts): "stage1",
    # after stage 1, and stage 2 refines the pick alone; "stage2", every candidate goes through
    # stage 2 too (K x the stage-2 cost) and the pick is made on the finished fits.
    choose_after: str = "stage1"
    candidate_min_angle: float = 30.0    # degrees: candidates closer than this (mean over frames) are one
    # Before stage 1 every candidate is refined on the object's own terms (silhouette + object
    # smoothness) for `candidate_steps` steps at `candidate_rotation_lr`: a half turn of the
    # init's refined pose starts 15-30 deg from its own silhouette optimum, so compared as it is it
    # loses to the refined (possibly flipped) init. Candidates whose silhouette term then exceeds
    # the best's by more than `candidate_margin` (relative) are dropped: only poses the
    # silhouette cannot tell apart go on to the joint stage and the full objective.
    candidate_steps: int = 100
    # render size of that refinement: the object init's 64 px, reached by pooling the fit's ROI
    # targets by roi_size // candidate_roi_size when that divides roi_size (else the fit's ROI).
    # At roi_size 128 unpooled it cost 2.5-3x a stage 1 (4 candidates).
    candidate_roi_size: int = 64
    candidate_rotation_lr: float = 0.03
    candidate_margin: float = 0.25
    # Candidates that place the object's surface within this fraction of its diameter of each
    # other (ADD-S between their placed models, mean over frames) are one pose for every term of
    # the objective: only the better silhouette is kept (e.g. a bottle turned half way about its
    # long axis, 1.2 % of the diameter for the mustard bottle; its two ends swapped: 3 %).
    candidate_same_surface: float = 0.02
    # Depth order from the masks (weights["occlusion"], L.depth_order_loss): mask labels are
    # eroded by at least this many ROI pixels before a point counts as seen behind the other
    # mesh, so mask edges a few pixels off (detected masks) do not count.
    occlusion_erode: int = 2
    # The object-shown labels (where hand points count as hidden) lose a band of this many metres
    # on the object (ROI pixels from the object's depth and the ROI focal length, once per
    # stage; at least `occlusion_erode` px), cut where `occlusion_band` says. Why: the hand's
    # own 2D misfit puts its border vertices on the object-shown pixels beside the hand, where
    # nothing hides them in truth, and the depth order pushes the whole hand back (clip RB18:
    # 47 such vertices, hand +1.9 cm too far after stage 1; a 5 mm band: 5 vertices). None: the
    # pixel erosion alone (the default before session 11).
    occlusion_erode_m: float | None = 0.005
    # Where that band is cut: "hand", only beside the hand-shown pixels, where the misfit border
    # lands, so a finger hidden near the object's outer edge stays counted; "edges", every border
    # of the object's label (an erosion; session 10: it dropped such fingers, RB01 mug 0.91 ->
    # 3.39 cm, and wins and losses cancelled). Measured against the pixel erosion on 48 clips x
    # 2 seeds (bench/RESULTS.md "Session 11"): wins 35 -> 35 and 37 -> 39, hand mean 1.63 -> 1.62
    # and 1.50 -> 1.47 cm, median 1.11 -> 1.00 and 1.34 -> 1.11 cm, the hand's depth bias
    # +0.38 -> -0.07 and +0.36 -> -0.20 cm; single clips still break (RB27 focal 500 px, RB33).
    occlusion_band: str = "hand"
    # cell of the depth grids (geometry.depth_order) in units of the larger of the two meshes'
    # mean projected edge length: a point reads the other mesh's nearest depth within 1-2 cells
    occlusion_cell: float = 1.0
    # Whether the depth order moves the objects too (in depth, through their vertices' z), not
    # only the hands: where the hand covers part of the object its silhouette leaves the
    # object's depth loose (a bottle whose covered end may reach under the hand), and the order
    # in the masks is evidence on the pair, not on the hand alone. "never": the hand moves
    # alone; "stage2": the objects too once stage 1 has brought the hand near its depth (an
    # init far off in depth would drag the object with it); "always": in both stages.
    # Measured (bench/RESULTS.md "Session 13", 48 clips x 2 seeds): "stage2" moves the hand
    # 1.94 -> 1.72 and 1.83 -> 1.68 cm but the object's ADD-S 0.70 -> 0.75 and 0.68 -> 0.75 cm with
    # the default (estimator's own) 2D target: it passes the hand's depth error on, so it is off.
    occlusion_moves_objects: str = "never"

    def __post_init__(self):
        if self.smooth_mode not in ("acceleration", "velocity"):
            raise HodataError(f"smooth_mode must be 'acceleration' or 'velocity', got {self.smooth_mode!r}")
        if self.v2d_target not in ("vertices", "keypoints"):
            raise HodataError(f"v2d_target must be 'vertices' or 'keypoints', got {self.v2d_target!r}")
        if self.coarse_mode not in ("surface", "surface_far", "contact", "centroid"):
            raise HodataError(f"coarse_mode must be 'surface', 'surface_far', 'contact' or 'centroid', "
                              f"got {self.coarse_mode!r}")
        if not self.hand_starts or any(s not in HAND_STARTS for s in self.hand_starts) or \
                len(set(self.hand_starts)) != len(self.hand_starts):
            raise HodataError(f"hand_starts must be distinct names from {HAND_STARTS}, got {self.hand_starts!r}")
        if not self.hand_scale_spread > 0:
            raise HodataError(f"hand_scale_spread must be positive, got {self.hand_scale_spread}")
        if self.hand_prefit_steps < 0:
            raise HodataError(f"hand_prefit_steps must be >= 0, got {self.hand_prefit_steps}")
        if self.object_candidates < 1:
            raise HodataError(f"object_candidates must be >= 1, got {self.object_candidates}")
        if self.candidate_roi_size < 1:
            raise HodataError(f"candidate_roi_size must be >= 1, got {self.candidate_roi_size}")
        if self.choose_after not in ("stage1", "stage2"):
            raise HodataError(f"choose_after must be 'stage1' or 'stage2', got {self.choose_after!r}")
        if self.occlusion_moves_objects not in ("never", "stage2", "always"):
            raise HodataError(f"occlusion_moves_objects must be 'never', 'stage2' or 'always', got "
                              f"{self.occlusion_moves_objects!r}")
        if self.occlusion_band not in ("edges", "hand"):
            raise HodataError(f"occlusion_band must be 'edges' or 'hand', got {self.occlusion_band!r}")
        if self.occlusion_erode < 0 or (self.occlusion_erode_m is not None and not self.occlusion_erode_m >= 0):
            raise HodataError(f"occlusion_erode (pixels) and occlusion_erode_m (metres) must be >= 0, got "
                              f"{self.occlusion_erode}, {self.occlusion_erode_m}")
        if self.candidate_steps < 0 or self.candidate_margin < 0:
            raise HodataError(f"candidate_steps and candidate_margin must be >= 0, got {self.candidate_steps}, "
                              f"{self.candidate_margin}")

    @classmethod
    def paper(cls, **overrides) -> "FitConfig":
        """The paper's objective (Sec. 3.3, App. C) with hodata's engineering (ROI, tracked SDF)."""
        # weights: the paper's, which have no depth-order term
        settings = dict(smooth_mode="velocity", coarse_mode="centroid", object_candidates=1,
                        hand_starts=("init",), object_rotation_lr=None, weights=dict(L.DEFAULT_WEIGHTS))
        settings.update(overrides)
        return cls(**settings)

    def active(self, terms: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(t for t in terms if t not in self.disabled and self.weights.get(t, 0.0) != 0.0)


@dataclass
class ObjectEvidence:
    """What the silhouette term needs for one object, precomputed once per clip."""

    vertices: torch.Tensor          # (V, 3) canonical model
    faces: torch.Tensor             # (F, 3)
    sdf: object                     # SDFGrid of the canonical model
    K_roi: torch.Tensor             # (T, 3, 3)
    target: torch.Tensor            # (T, S, S) in {-1, 0, 1}
    reference_size: float | None    # category-average diameter (scale prior), metres
    model_id: str = ""
    category: str | None = None


@dataclass
class HandEvidence:
    layer: nn.Module
    init: HandInit


@dataclass
class StageOutcome:
    history: dict[str, list[float]]     # per term, weighted, summed over candidates: one value per step
    final: dict[str, float]
    finite: bool
    # per term, weighted, per candidate (block of rows): [K][steps] (clips side by side, batched.py)
    per_candidate: dict[str, list[list[float]]] = field(default_factory=dict)


def object_evidence(vertices, faces, sdf, K, object_boxes, object_masks, config: FitConfig,
                    reference_size=None, model_id="", category=None) -> ObjectEvidence:
    """Crop the object target masks once into ROI cameras (T, S, S)."""
    K_roi, target = roi_targets(K.to(vertices.dtype), object_boxes, object_masks, config.roi_size, config.roi_expand)
    return ObjectEvidence(vertices, faces, sdf, K_roi, target, reference_size, model_id, category)


def hand_signed_distance(layer: nn.Module, hand_vertices: torch.Tensor, points: torch.Tensor, config: FitConfig,
                         tracking: dict | None, key, blocks: int = 1) -> torch.Tensor:
    """Signed distance (T, P) of points to the closed hand mesh, exact and differentiable.

    Every `hand_sdf_refresh` steps the nearest hand face of each point is found by the exact
    search (points farther than `hand_sdf_margin` from the hand's box are left out); in
    between it is tracked through neighbouring faces (`tracked_signed_distance`), which is
    exact near the surface, where collisions happen, at a fraction of the cost. Points that
    were farther than the margin outside the hand at the refresh, or are outside the hand's
    box, count as outside (a non-negative lower bound: no collision). `tracking` holds the
    state per `key` (a hand-object pair) and the current step under "step".

    blocks: the rows hold this many independent blocks (candidates or clips side by side,
    scene.py); the exact search runs per block, because its choice among equidistant faces
    depends on the rows searched together (its face tree is clustered on the first row), and
    a block's fit must not depend on the others'.
    """
    # the layer caps the wrist ring with faces over existing vertices: a closed 2-manifold
    verts, faces = hand_vertices, layer.closed_faces
    if tracking is None:
        return mesh_signed_distance(points, verts, faces, max_distance=0.0)
    step = tracking.get("step", 0)
    state = tracking.setdefault(("hand_sdf",) + tuple(key), {})
    stale = "guess" not in state or step - state["step"] >= config.hand_sdf_refresh
    if stale or state["guess"].shape != points.shape[:2]:
        found = [mesh_signed_distance(p, v, faces, max_distance=config.hand_sdf_margin, return_faces=True,
                                      truncate=config.hand_sdf_truncate)
                 for p, v in zip(points.chunk(blocks), verts.chunk(blocks))]
        values, guess = (found[0] if blocks == 1 else
                         (torch.cat([f[0] for f in found]), torch.cat([f[1] for f in found])))
        if "neighbourhoods" not in state:
            state["neighbourhoods"] = face_neighbourhoods(faces, verts.shape[1])
        # Points farther outside than the margin cannot reach the hand before the next refresh
        # (steps move the meshes by millimetres): they are not tracked, and count as outside.
        guess = torch.where(values.detach() > config.hand_sdf_margin, torch.full_like(guess, -1), guess)
        state.update(step=step, guess=guess)
        return values
    values, state["guess"] = tracked_signed_distance(points, verts, faces, state["guess"], state["neighbourhoods"],
                                                     max_distance=0.0)
    return values


def _diameter(vertices: torch.Tensor) -> torch.Tensor:
    return (vertices.amax(-2) - vertices.amin(-2)).norm(dim=-1)


def _per_candidate(x: torch.Tensor, candidates: int) -> torch.Tensor:
    """(K * T, ...) rows -> (K, T, ...) blocks (candidate-major, see scene.py)."""
    return x.reshape((candidates, x.shape[0] // candidates) + tuple(x.shape[1:]))


def rigidly_moved(vertices: torch.Tensor, hand: HandParameters, scale: bool = True) -> torch.Tensor:
    """The hand's vertices (K * T, V, 3) with gradients to its rigid pose only.

    The articulated shape in the hand's frame is taken as it is (detached) and placed again
    by Eq. 1 with the current rotation, translation and scale, so a term evaluated on these
    points moves R_hand, D_hand and (unless `scale` is False) s_hand and leaves the fingers alone.
    """
    rotation, translation, scale = hand.rotation, hand.translation, (hand.frame_scale if scale
                                                                      else hand.frame_scale.detach())
    local = invert_similarity(vertices.detach(), rotation.detach(), translation.detach(), scale.detach())
    return apply_similarity(local, rotation, translation, scale)


def occlusion_radii(object_vertices: torch.Tensor, evidence: ObjectEvidence, config: FitConfig,
                    tracking: dict | None, key) -> int | tuple[int, ...]:
    """Erosion radii of the depth-order labels: `config.occlusion_erode` pixels, widened to
    `config.occlusion_erode_m` metres at the object's depth in each frame's ROI camera.

    object_vertices: (K * T, V, 3) the placed object (its centroid's z is the depth). Computed
    at a stage's first step (one host read, as the loop's finite check makes every 25 steps)
    and kept in `tracking` for the rest of the stage: the band is a tolerance and need not
    follow every step. tracking None: every call. Off (occlusion_erode_m None): no read.
    """
    if config.occlusion_erode_m is None:
        return config.occlusion_erode
    cache = tracking.setdefault("occlusion_radii", {}) if tracking is not None else {}
    if key not in cache:
        cache[key] = metric_erosion_radii(config.occlusion_erode_m, evidence.K_roi[:, 0, 0],
                                          object_vertices.detach().mean(1)[:, 2], minimum=config.occlusion_erode)
    return cache[key]


def compute_terms(
    hands: list[HandParameters],
    hand_evidence: list[HandEvidence],
    objects: list[ObjectParameters],
    object_evidence_list: list[ObjectEvidence],
    K: torch.Tensor,
    image_size: tuple[int, int],
    terms: tuple[str, ...],
    config: FitConfig,
    tracking: dict | None = None,
) -> dict[str, torch.Tensor]:
    """Unweighted values (K,) of the requested terms of Eq. 6, one per object-pose candidate.

    Parameters and evidence hold K candidates side by side on the frame axis (K * T rows,
    scene.py; K = 1 for an ordinary fit); every term is reduced per candidate, so the sum over
    candidates has independent gradients and the values rank the candidates. tracking:
    per-stage state of the hand SDF (nearest faces of the object vertices, see
    `hand_signed_distance`); None recomputes it exactly every call.
    """
    candidates = (objects[0] if objects else hands[0]).candidates
    per = lambda x: _per_candidate(x, candidates)  # noqa: E731
    out: dict[str, torch.Tensor] = {}
    zero = K.new_zeros((candidates,))
    hand_meshes = [h.meshes(e.layer) for h, e in zip(hands, hand_evidence)]
    object_vertices = [o.vertices(e.vertices) for o, e in zip(objects, object_evidence_list)]

    if "obj" in terms:
        total = zero
        for verts, ev in zip(object_vertices, object_evidence_list):
            rendered = render_silhouette(verts, ev.faces, ev.K_roi, (config.roi_size,) * 2, sigma=config.sigma)
            total = total + L.object_silhouette_loss(per(rendered), per(ev.target))
        out["obj"] = total
    if "v2d" in terms:
        total = zero
        for m, e in zip(hand_meshes, hand_evidence):
            if config.v2d_target == "keypoints" and e.init.keypoints_2d is not None:
                total = total + L.hand_v2d_loss(per(project(m.joints, K)), per(e.init.keypoints_2d), image_size)
            else:
                total = total + L.hand_v2d_loss(per(project(m.vertices, K)), per(e.init.vertices_2d), image_size)
        out["v2d"] = total
    if "pca" in terms:
        out["pca"] = sum((L.pca_prior_loss(per(h.pca_pose)) for h in hands), zero)
    if "pose_init" in terms:
        out["pose_init"] = sum((L.init_pose_prior_loss(per(h.pca_pose), per(e.init.hand_pose))
                                for h, e in zip(hands, hand_evidence)), zero)
    if "scale" in terms:
        total = sum((L.scale_prior_loss(h.scale, 1.0) for h in hands), zero)
        for o, ev in zip(objects, object_evidence_list):
            if o.log_scale.requires_grad and ev.reference_size:
                total = total + L.scale_prior_loss(o.scale * _diameter(ev.vertices), ev.reference_size)
        out["scale"] = total
    if "hand_size" in terms:
        out["hand_size"] = sum((L.scale_prior_loss(h.scale, 1.0, config.hand_scale_spread) for h in hands), zero)
    if "smooth" in terms:
        smooth = L.acceleration_loss if config.smooth_mode == "acceleration" else L.smoothness_loss
        out["smooth"] = sum((smooth(per(m.vertices)) for m in hand_meshes), zero) + sum(
            (smooth(per(v)) for v in object_vertices), zero)
    need_pairs = any(t in terms for t in ("centroid", "collision", "local", "occlusion"))
    if need_pairs:
        centroid, collision, local, occlusion = zero, zero, zero, zero
        for hand_index, (h, m, e) in enumerate(zip(hands, hand_meshes, hand_evidence)):
            hand_box = boxes_from_points(project(m.vertices.detach(), K))
            for object_index, (o, verts, ev) in enumerate(zip(objects, object_vertices, object_evidence_list)):
                if "centroid" in terms:
                    object_box = boxes_from_points(project(verts.detach(), K))
                    active = per(L.centroid_pairs_active(hand_box, object_box, m.vertices.detach().mean(1)[:, 2],
                                                          verts.detach().mean(1)[:, 2]))
                    if config.coarse_mode in ("surface", "surface_far", "contact"):
                        # the object is detached, as in the paper's term: only the hand moves
                        moved = rigidly_moved(m.vertices, h, scale=config.coarse_mode != "contact")
                        points = moved if config.coarse_mode == "contact" else moved.mean(-2, keepdim=True)
                        gap = object_sdf(ev.sdf, points, o.rotation.detach(), o.translation.detach(),
                                         o.frame_scale.detach())
                        if config.coarse_mode == "surface_far":
                            # far field only: a hand with a vertex within the local contact range
                            # (1 cm) is left to the local terms
                            nearest = object_sdf(ev.sdf, m.vertices.detach(), o.rotation.detach(),
                                                 o.translation.detach(), o.frame_scale.detach()).amin(-1)
                            active = active & per(nearest > 0.01)
                        centroid = centroid + L.surface_interaction_loss(per(gap), active)
                    else:
                        centroid = centroid + L.coarse_interaction_loss(per(m.vertices), per(verts), active)
                if "occlusion" in terms:
                    # the hand moves rigidly; the object only with occlusion_moves_objects
                    hand_points = rigidly_moved(m.vertices, h)
                    object_points = verts if config.occlusion_moves_objects == "always" else verts.detach()
                    hand_px, object_px = project(hand_points, ev.K_roi), project(object_points, ev.K_roi)
                    size = ev.target.shape[-1]
                    # cells of about one spacing of the coarser of the two meshes, at least 2 px
                    cell = (config.occlusion_cell * torch.maximum(mean_edge_pixels(hand_px, e.layer.faces),
                                                                  mean_edge_pixels(object_px, ev.faces))).clamp_min(2.0)
                    grid = size // 2 + 1
                    # hand points read the object-shown labels, eroded by the metric band; object
                    # points read the hand-shown ones at the pixel radius (the object's own 2D
                    # misfit is small: its silhouette is fitted)
                    hand_shown = cached_eroded_labels(ev.target, config.occlusion_erode)[1]
                    band = occlusion_radii(verts, ev, config, tracking, object_index)
                    if config.occlusion_band == "hand" and config.occlusion_erode_m is not None:
                        object_shown = cached_object_shown_beyond_hand(ev.target, config.occlusion_erode, band)
                    else:
                        object_shown = cached_eroded_labels(ev.target, band)[0]
                    front_object = front_depth_at(front_depth_grid(object_px, object_points[..., 2], cell, grid),
                                                  hand_px, cell)
                    front_hand = front_depth_at(front_depth_grid(hand_px, hand_points[..., 2], cell, grid),
                                                object_px, cell)
                    occlusion = occlusion + L.depth_order_loss(
                        per(hand_points[..., 2]), per(front_object), per(label_at(object_shown, hand_px))) + \
                        L.depth_order_loss(per(object_points[..., 2]), per(front_hand),
                                           per(label_at(hand_shown, object_px)))
                if "collision" in terms or "local" in terms:
                    rotation, translation, scale, placed = o.rotation, o.translation, o.frame_scale, verts
                    if not config.interaction_moves_objects:
                        rotation, translation = rotation.detach(), translation.detach()
                        scale, placed = scale.detach(), verts.detach()
                    hand_in_object = object_sdf(ev.sdf, m.vertices, rotation, translation, scale)
                if "collision" in terms:
                    object_in_hand = hand_signed_distance(e.layer, m.vertices, placed, config,
                                                          tracking, key=(hand_index, object_index), blocks=candidates)
                    collision = collision + L.collision_loss(per(hand_in_object)) + L.collision_loss(
                        per(object_in_hand))
                if "local" in terms:
                    # Distance to the object surface from its SDF (paper App. C accelerates the
                    # heuristic with the SDF) instead of to the nearest of ~1000 object vertices:
                    # exact up to grid error and ~40x cheaper than a dense hand x object cdist.
                    local = local + L.local_contact_loss(per(hand_in_object), per(hand_in_object.abs()))
        for i in range(len(objects)):  # object-object pairs (Eq. 5 over every ordered pair)
            for j in range(len(objects)):
                if i != j and "collision" in terms:
                    oi, ei = objects[i], object_evidence_list[i]
                    collision = collision + L.collision_loss(per(
                        object_sdf(ei.sdf, object_vertices[j], oi.rotation, oi.translation, oi.frame_scale)))
        if "centroid" in terms:
            out["centroid"] = centroid
        if "collision" in terms:
            out["collision"] = collision
        if "local" in terms:
            out["local"] = local
        if "occlusion" in terms:
            out["occlusion"] = occlusion
    return out


def run_stage(hands, hand_evidence, objects, object_evidence_list, K, image_size, terms, steps, config,
              optimise_objects: bool = True) -> StageOutcome:
    """Adam over the parameters for `steps` steps on the weighted sum of `terms`.

    Per-step values stay on the device and are read back once at the end; the only host read
    inside the loop is the finiteness check every 25 steps (tests/test_device.py counts them;
    the silhouette renderer and the hand SDF size their work from the data, see there). A
    non-finite loss restores the parameters of the last finite check and stops.
    """
    groups = []
    for h in hands:
        groups += h.param_groups(config.rotation_lr, config.pose_lr, config.translation_lr)
    if optimise_objects:
        for o in objects:
            rate = config.rotation_lr if config.object_rotation_lr is None else config.object_rotation_lr
            groups += o.param_groups(rate, config.translation_lr)
    params = [p for g in groups for p in g["params"]]
    if not terms or steps <= 0:
        return StageOutcome({}, {}, True)
    # On a GPU, Adam's step counters live on the device (capturable): no host read per step.
    optimiser = torch.optim.Adam(groups, capturable=any(p.is_cuda for p in params))
    history: dict[str, list[torch.Tensor]] = {t: [] for t in terms}
    history["total"] = []
    snapshot = [p.detach().clone() for p in params]
    finite = True
    check_every = 25
    tracking: dict = {}
    for step in range(steps):
        optimiser.zero_grad(set_to_none=True)
        tracking["step"] = step
        values = compute_terms(hands, hand_evidence, objects, object_evidence_list, K, image_size, terms, config,
                               tracking)
        # candidates are independent: the sum over them gives each its own gradient
        per_candidate = sum(config.weights[t] * v for t, v in values.items())
        total = per_candidate.sum()
        total.backward()
        for t, v in values.items():  # (K,) per step; summed over candidates at the end
            history[t].append(config.weights[t] * v.detach())
        history["total"].append(per_candidate.detach())
        if (step + 1) % check_every == 0 or step == steps - 1:
            # one host read per check (every 25 steps): the loss and every parameter at once
            finite_now = torch.stack([torch.isfinite(total.detach())] + [torch.isfinite(p).all() for p in params])
            if not bool(finite_now.all()):
                with torch.no_grad():
                    for p, s in zip(params, snapshot):
                        p.copy_(s)
                finite = False
                break
            snapshot = [p.detach().clone() for p in params]
        optimiser.step()
    stacked = {t: torch.stack(v) for t, v in history.items() if v}  # (steps, K)
    hist = {t: stacked[t].sum(-1).tolist() if t in stacked else [] for t in history}
    final = {t: v[-1] for t, v in hist.items() if v}
    return StageOutcome(hist, final, finite, {t: v.T.tolist() for t, v in stacked.items()})


def hand_state(params: HandParameters, layer: nn.Module) -> HandState:
    with torch.no_grad():
        meshes = params.meshes(layer)
        return HandState(
            side=params.side, vertices=meshes.vertices.detach(), joints=meshes.joints.detach(),
            global_orient=params.rotation.detach(), hand_pose=params.pca_pose.detach().clone(), pose_space="pca",
            betas=params.betas.detach().clone(), transl=params.translation.detach().clone(),
            scale=params.scale.detach().reshape(()), model_name=getattr(layer, "model_name", ""),
        )


def object_state(params: ObjectParameters, evidence: ObjectEvidence) -> ObjectState:
    with torch.no_grad():
        return ObjectState(
            model_id=evidence.model_id, rotation=params.rotation.detach(), translation=params.translation.detach().clone(),
            scale=params.scale.detach().reshape(()), vertices=params.vertices(evidence.vertices).detach(),
            category=evidence.category,
        )


def object_ious(objects, object_evidence_list, config: FitConfig) -> list[torch.Tensor]:
    """Per-frame occlusion-aware IoU (T,) of each object's hard silhouette with its target."""
    out = []
    with torch.no_grad():
        for o, ev in zip(objects, object_evidence_list):
            hard = render_silhouette(o.vertices(ev.vertices), ev.faces, ev.K_roi, (config.roi_size,) * 2, mode="hard")
            out.append(silhouette_iou(hard, ev.target))
    return out


def tile_hand_evidence(evidence: HandEvidence, candidates: int) -> HandEvidence:
    """The hand's evidence repeated for K candidates side by side (K * T rows)."""
    if candidates == 1:
        return evidence
    init = evidence.init
    tiled = {name: getattr(init, name).repeat((candidates,) + (1,) * (getattr(init, name).dim() - 1))
             for name in ("global_orient", "hand_pose", "transl", "vertices_2d", "boxes", "keypoints_2d")
             if getattr(init, name) is not None}
    return HandEvidence(evidence.layer, replace(init, **tiled))


def tile_object_evidence(evidence: ObjectEvidence, candidates: int) -> ObjectEvidence:
    """The object's evidence repeated for K candidates side by side (K * T rows)."""
    if candidates == 1:
        return evidence
    return replace(evidence, K_roi=evidence.K_roi.repeat(candidates, 1, 1),
                   target=evidence.target.repeat(candidates, 1, 1))


def make_hand_parameters(evidence: HandEvidence, config: FitConfig, candidates: int = 1) -> HandParameters:
    """Hand parameters at the init; with candidates > 1, `evidence` is already tiled."""
    init = evidence.init
    return hand_parameters_from_layer_pose(evidence.layer, init.side, init.global_orient, init.hand_pose, init.betas,
                                           init.transl, optimise_betas=config.optimise_betas, candidates=candidates)


def _object_candidates(object_init) -> int:
    counts = {int(r.shape[0]) if r.dim() == 4 else 1 for r, _ in object_init}
    if len(counts) != 1:
        raise ValueError(f"every object needs the same number of pose candidates, got {sorted(counts)}")
    return counts.pop()


def choose_candidate(hands, hand_evidence, objects, object_evidence_list, K, image_size, config: FitConfig):
    """Score K candidates fitted side by side on the full objective (the stage-2 terms, exact
    hand SDF) -> (index of the lowest, per-candidate weighted totals (K,), per-term values)."""
    terms = config.active(STAGE2_TERMS)
    with torch.no_grad():
        values = compute_terms(hands, hand_evidence, objects, object_evidence_list, K, image_size, terms, config)
        totals = sum(config.weights[t] * v for t, v in values.items())
    # a candidate whose stage 1 diverged never wins
    return int(torch.nan_to_num(totals, nan=float("inf")).argmin()), totals, values


CANDIDATE_TERMS = ("obj", "smooth")  # the object's own part of stage 1 (no hands)


def pooled_evidence(evidence: ObjectEvidence, factor: int) -> ObjectEvidence:
    """The silhouette evidence at 1/factor of its ROI resolution.

    The renderer samples pixel i at coordinate i, so pooled pixel j (full pixels f j ... f j + f - 1,
    f = factor) is sampled at f j + (f - 1) / 2: u' = (u - (f - 1) / 2) / f on both image axes,
    i.e. the first two rows of K_roi divided by f and the principal point moved. A pooled pixel
    is hand-occluded (-1) if any of its block is, else the fraction of its block that is object
    (the squared silhouette error takes a fractional target).
    """
    if factor == 1:
        return evidence
    frames, size, _ = evidence.target.shape
    K_roi = evidence.K_roi.clone()
    K_roi[:, :2] = K_roi[:, :2] / factor
    K_roi[:, :2, 2] -= (factor - 1) / (2 * factor)
    blocks = evidence.target.reshape(frames, size // factor, factor, size // factor, factor)
    hand = (blocks < 0).any(4).any(2)
    inside = (blocks > 0).to(K_roi.dtype).mean(dim=(2, 4))
    target = torch.where(hand, torch.full_like(inside, -1.0), inside)
    return replace(evidence, K_roi=K_roi, target=target)


def refine_candidates(objects: list[ObjectParameters], object_evidence_list: list[ObjectEvidence], K, image_size,
                      config: FitConfig) -> tuple[torch.Tensor, list[int]]:
    """Refine K candidates side by side on the object terms alone, then keep the ambiguous ones.

    objects hold K candidates (K * T rows) and are refined in place (silhouette + object
    smoothness, `candidate_steps` Adam steps, rotations at `candidate_rotation_lr`, silhouettes
    at `candidate_roi_size`). Returns
    the per-candidate silhouette term (K,) after refinement and the indices of the candidates
    within `candidate_margin` (relative) of the lowest, lowest first: the poses the silhouette
    cannot tell apart. Index 0 is kept only if it is among them.
    """
    terms = tuple(t for t in config.active(CANDIDATE_TERMS))
    factor = max(1, config.roi_size // config.candidate_roi_size)
    factor = factor if config.roi_size % factor == 0 else 1
    pooled = replace(config, object_rotation_lr=config.candidate_rotation_lr, roi_size=config.roi_size // factor)
    evidence = [pooled_evidence(e, factor) for e in object_evidence_list]
    if config.candidate_steps > 0 and "obj" in terms:
        run_stage([], [], objects, evidence, K, image_size, terms, config.candidate_steps, pooled)
    with torch.no_grad():
        silhouette = compute_terms([], [], objects, evidence, K, image_size, ("obj",), pooled)["obj"]
    finite = torch.nan_to_num(silhouette, nan=float("inf"))
    best = finite.min()
    order = finite.argsort().tolist()
    within = [k for k in order if bool(finite[k] <= best * (1 + config.candidate_margin))]
    with torch.no_grad():
        placed = [_per_candidate(o.vertices(e.vertices), o.candidates) for o, e in zip(objects, object_evidence_list)]
        diameters = [_diameter(e.vertices) for e in object_evidence_list]
    kept: list[int] = []
    for k in within:
        if not any(all(bool(surface_distance(p[k], p[j]) < config.candidate_same_surface * d)
                       for p, d in zip(placed, diameters)) for j in kept):
            kept.append(k)
    return silhouette, kept


def surface_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ADD-S between two placements of one model, a, b: (T, V, 3) -> mean over frames of the
    mean distance from each vertex of a to the closest vertex of b (metres)."""
    return torch.cdist(a, b).amin(-1).mean()


def _select_rows(params, indices: list[int]):
    """Single- or multi-candidate object parameters holding only the candidates `indices`
    (an index may repeat: one copy per hand start)."""
    if len(indices) == 1:
        return params.candidate(indices[0])
    parts = [params.candidate(k) for k in indices]
    with torch.no_grad():
        rotation = torch.cat([p.rotation for p in parts])
        translation = torch.cat([p.translation for p in parts])
        out = ObjectParameters(rotation, translation, optimise_scale=params.log_scale.requires_grad,
                               candidates=len(indices))
        out.log_scale.copy_(torch.cat([p.log_scale for p in parts]))
    return out


def start_hands(hands: list[HandParameters], hand_evidence: list[HandEvidence], starts: tuple[str, ...], K,
                image_size, config: FitConfig) -> None:
    """Set the rows of candidate c of each hand (K = C * S candidates, S = len(starts)) to hand
    start starts[c % S], in place: "init" leaves the init; "fitted" is the init after the
    independent baseline's hand-only fit (INDEPENDENT_HAND_TERMS, `hand_prefit_steps` steps),
    fitted once per hand and copied into every candidate of that start."""
    for s, start in enumerate(starts):
        if start == "init":
            continue
        for params, evidence in zip(hands, hand_evidence):
            fitted = make_hand_parameters(evidence, config)
            run_stage([fitted], [evidence], [], [], K, image_size, config.active(INDEPENDENT_HAND_TERMS),
                      config.hand_prefit_steps, config, optimise_objects=False)
            with torch.no_grad():
                for c in range(s, params.candidates, len(starts)):
                    rows = params._rows(c)
                    params.rotation_6d[rows] = fitted.rotation_6d
                    params.translation[rows] = fitted.translation
                    params.pca_pose[rows] = fitted.pca_pose
                    params.log_scale[c] = fitted.log_scale[0]
                    if params.betas.dim() == 2:
                        params.betas[c] = fitted.betas


def stage_config(config: FitConfig, stage: str) -> FitConfig:
    """The config stage `stage` ("independent", "stage1", "stage2") runs with: the per-stage
    setting occlusion_moves_objects="stage2" resolved to "always" in stage 2, "never" before."""
    if config.occlusion_moves_objects != "stage2":
        return config
    return replace(config, occlusion_moves_objects="always" if stage == "stage2" else "never")


def fit_hands_and_objects(
    hand_evidence: list[HandEvidence],
    object_evidence_list: list[ObjectEvidence],
    object_init: list[tuple[torch.Tensor, torch.Tensor]],
    K: torch.Tensor,
    image_size: tuple[int, int],
    config: FitConfig,
    joint: bool = True,
    clips: int = 1,
) -> tuple[list[HandParameters], list[ObjectParameters], dict]:
    """Independent composition (joint=False) or the two-stage joint fit (joint=True).

    object_init: per object, rotations (T, 3, 3) and translations (T, 3), or K candidates
    (K, T, 3, 3) and (K, T, 3) in decreasing order of preference by silhouette (every object
    the same K; candidate k of each object goes together). Independent: objects stay at their
    first candidate; hands are fitted alone with v2d + pca (paper Sec. 4.3's baseline).
    Joint: stage 1 over all K candidates side by side, each from every hand start
    (`FitConfig.hand_starts`, `start_hands`; K * S in all), the full objective picks one
    (`choose_candidate`), stage 2 on it. Returns parameters and a report with loss
    histories, final losses, flags and the candidates' scores.

    clips > 1: that many clips side by side (hodata.fitting.batched): evidence, K (B * T, 3, 3),
    image_size (B, 2) and object_init (B * T rows) hold B clips' blocks of T rows, each with its
    own scales and losses; one candidate per clip. report["per_clip_history"] holds each stage's
    weighted terms per clip ([B][steps]); the other histories are sums over the clips.
    """
    candidates = _object_candidates(object_init) if joint else 1
    if clips > 1 and candidates > 1:
        raise ValueError("object-pose candidates (object_candidates > 1) cannot be fitted with clips side by side")
    # candidate-major rows (K * T); the independent baseline keeps the first candidate
    object_init = [(r if r.dim() == 3 else (r.flatten(0, 1) if joint else r[0]),
                    t if t.dim() == 2 else (t.flatten(0, 1) if joint else t[0])) for r, t in object_init]
    report = {"history": {}, "final": {}, "flags": {}, "seconds": {}}
    objects = [ObjectParameters(r, t, optimise_scale=config.optimise_object_scale, candidates=candidates * clips)
               for r, t in object_init]
    fitted = list(range(candidates))  # original indices of the candidates fitted side by side
    if candidates > 1:
        started = time.perf_counter()
        silhouette, fitted = refine_candidates(objects, [tile_object_evidence(e, candidates)
                                                         for e in object_evidence_list], K, image_size, config)
        objects = [_select_rows(o, fitted) for o in objects]
        report["seconds"]["candidates"] = time.perf_counter() - started
        report["candidate_silhouette"] = silhouette.tolist()
        report["candidates_fitted"] = list(fitted)
        candidates = len(fitted)
        if candidates == 1:  # the silhouette alone ruled the others out: no choice left for stage 2
            report["candidates"] = {"chosen": fitted[0], "total": []}
    starts = tuple(config.hand_starts) if joint and hand_evidence else ("init",)
    if starts != ("init",) and clips > 1:
        raise ValueError("hand starts other than the init alone cannot be fitted with clips side by side")
    if len(starts) > 1:
        # candidate c = object candidate c // S from hand start c % S
        objects = [_select_rows(o, [k for k in range(candidates) for _ in starts]) for o in objects]
        candidates *= len(starts)
    stage_evidence = ([tile_hand_evidence(e, candidates) for e in hand_evidence],
                      [tile_object_evidence(e, candidates) for e in object_evidence_list])
    hands = [make_hand_parameters(e, config, candidates * clips) for e in stage_evidence[0]]
    if starts != ("init",):  # a single "fitted" start too: the hands leave the init before stage 1
        started = time.perf_counter()
        start_hands(hands, hand_evidence, starts, K, image_size, config)
        report["seconds"]["hand_starts"] = time.perf_counter() - started
    stages = ([("independent", config.active(INDEPENDENT_HAND_TERMS), config.steps_stage1, False)] if not joint else
              [("stage1", config.active(STAGE1_TERMS), config.steps_stage1, True),
               ("stage2", config.active(STAGE2_TERMS if config.stage2_moves_objects else
                                         tuple(t for t in STAGE2_TERMS if t != "obj")),
                config.steps_stage2, config.stage2_moves_objects)])
    finite = True

    def choose():
        started = time.perf_counter()
        chosen, totals, values = choose_candidate(hands, stage_evidence[0], objects, stage_evidence[1], K,
                                                  image_size, config)
        report["candidates"] = {"chosen": fitted[chosen // len(starts)], "total": totals.tolist(),
                                "hand_start": starts[chosen % len(starts)],
                                **{t: (config.weights[t] * v).tolist() for t, v in values.items()}}
        report["seconds"]["choose"] = time.perf_counter() - started
        return chosen, [h.candidate(chosen) for h in hands], [o.candidate(chosen) for o in objects]

    for name, terms, steps, with_objects in stages:
        if name == "stage2" and candidates > 1 and config.choose_after == "stage1":
            _, hands, objects = choose()
            stage_evidence = (hand_evidence, object_evidence_list)
        started = time.perf_counter()
        outcome = run_stage(hands, stage_evidence[0], objects, stage_evidence[1], K, image_size, terms, steps,
                            stage_config(config, name), optimise_objects=with_objects)
        report["seconds"][name] = time.perf_counter() - started
        for t, v in outcome.history.items():
            report["history"][f"{name}/{t}"] = v
        if clips > 1:
            for t, v in outcome.per_candidate.items():
                report.setdefault("per_clip_history", {})[f"{name}/{t}"] = v
        report["final"].update(outcome.final)
        finite = finite and outcome.finite
    if joint and candidates > 1 and config.choose_after == "stage2":
        chosen, hands, objects = choose()
        # the stage-2 history and final losses of the pick alone, as with the pick after stage 1
        for t, v in outcome.per_candidate.items():
            report["history"][f"stage2/{t}"] = v[chosen]
        report["final"].update({t: v[chosen][-1] for t, v in outcome.per_candidate.items()})
    report["flags"]["nonfinite_optimiser"] = not finite  # flags mark problems (True = bad)
    return hands, objects, report
