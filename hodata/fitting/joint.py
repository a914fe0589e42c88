"""Joint hand-object fitting (paper Sec. 3.3 and Appendix C) and `fit_clip`.

Stage 1 optimises obj + v2d + pca + scale + smooth + centroid; stage 2 adds collision and
local contact (Appendix C: both for 200 Adam steps; lr 0.1 for PCA pose and 6D rotations,
0.01 for translations and scales). Any number of hands and objects: interaction terms run
over every hand-object pair and collision over every ordered pair of meshes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from hodata.geometry.camera import boxes_from_points, project
from hodata.geometry.raster import render_silhouette
from hodata.geometry.sdf import face_neighbourhoods, mesh_signed_distance, object_sdf, tracked_signed_distance
from hodata.types import HandInit, HandState, ObjectState

from . import losses as L
from .object_init import roi_targets, silhouette_iou
from .scene import HandParameters, ObjectParameters, hand_parameters_from_layer_pose

STAGE1_TERMS = ("obj", "v2d", "pca", "scale", "smooth", "centroid")
STAGE2_TERMS = STAGE1_TERMS + ("collision", "local")
INDEPENDENT_HAND_TERMS = ("v2d", "pca")


@dataclass
class FitConfig:
    steps_stage1: int = 200
    steps_stage2: int = 200
    rotation_lr: float = 0.1
    pose_lr: float = 0.1
    translation_lr: float = 0.01
    weights: dict[str, float] = field(default_factory=lambda: dict(L.DEFAULT_WEIGHTS))
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
    hand_sdf_refresh: int = 10           # steps between exact nearest-face searches of the hand SDF
    hand_sdf_margin: float = 0.01        # metres: points farther from the hand at a refresh are not tracked

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
    history: dict[str, list[float]]
    final: dict[str, float]
    finite: bool


def object_evidence(vertices, faces, sdf, K, object_boxes, object_masks, config: FitConfig,
                    reference_size=None, model_id="", category=None) -> ObjectEvidence:
    """Crop the object target masks once into ROI cameras (T, S, S)."""
    K_roi, target = roi_targets(K.to(vertices.dtype), object_boxes, object_masks, config.roi_size, config.roi_expand)
    return ObjectEvidence(vertices, faces, sdf, K_roi, target, reference_size, model_id, category)


def hand_signed_distance(layer: nn.Module, hand_vertices: torch.Tensor, points: torch.Tensor, config: FitConfig,
                         tracking: dict | None, key) -> torch.Tensor:
    """Signed distance (T, P) of points to the closed hand mesh, exact and differentiable.

    Every `hand_sdf_refresh` steps the nearest hand face of each point is found by the exact
    search (points farther than `hand_sdf_margin` from the hand's box are left out); in
    between it is tracked through neighbouring faces (`tracked_signed_distance`), which is
    exact near the surface, where collisions happen, at a fraction of the cost. Points that
    were farther than the margin outside the hand at the refresh, or are outside the hand's
    box, count as outside (a non-negative lower bound: no collision). `tracking` holds the
    state per `key` (a hand-object pair) and the current step under "step".
    """
    # the layer caps the wrist ring with faces over existing vertices: a closed 2-manifold
    verts, faces = hand_vertices, layer.closed_faces
    if tracking is None:
        return mesh_signed_distance(points, verts, faces, max_distance=0.0)
    step = tracking.get("step", 0)
    state = tracking.setdefault(("hand_sdf",) + tuple(key), {})
    stale = "guess" not in state or step - state["step"] >= config.hand_sdf_refresh
    if stale or state["guess"].shape != points.shape[:2]:
        values, guess = mesh_signed_distance(points, verts, faces, max_distance=config.hand_sdf_margin,
                                             return_faces=True)
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
    """Unweighted values of the requested terms of Eq. 6 for the current parameters.

    tracking: per-stage state of the hand SDF (nearest faces of the object vertices, see
    `hand_signed_distance`); None recomputes it exactly every call.
    """
    out: dict[str, torch.Tensor] = {}
    zero = K.new_zeros(())
    hand_meshes = [h.meshes(e.layer) for h, e in zip(hands, hand_evidence)]
    object_vertices = [o.vertices(e.vertices) for o, e in zip(objects, object_evidence_list)]

    if "obj" in terms:
        total = zero
        for verts, ev in zip(object_vertices, object_evidence_list):
            rendered = render_silhouette(verts, ev.faces, ev.K_roi, (config.roi_size,) * 2, sigma=config.sigma)
            total = total + L.object_silhouette_loss(rendered, ev.target)
        out["obj"] = total
    if "v2d" in terms:
        out["v2d"] = sum((L.hand_v2d_loss(project(m.vertices, K), e.init.vertices_2d, image_size)
                          for m, e in zip(hand_meshes, hand_evidence)), zero)
    if "pca" in terms:
        out["pca"] = sum((L.pca_prior_loss(h.pca_pose) for h in hands), zero)
    if "scale" in terms:
        total = sum((L.scale_prior_loss(h.scale, 1.0) for h in hands), zero)
        for o, ev in zip(objects, object_evidence_list):
            if o.log_scale.requires_grad and ev.reference_size:
                total = total + L.scale_prior_loss(o.scale * _diameter(ev.vertices), ev.reference_size)
        out["scale"] = total
    if "smooth" in terms:
        out["smooth"] = sum((L.smoothness_loss(m.vertices) for m in hand_meshes), zero) + sum(
            (L.smoothness_loss(v) for v in object_vertices), zero)
    need_pairs = any(t in terms for t in ("centroid", "collision", "local"))
    if need_pairs:
        centroid, collision, local = zero, zero, zero
        for hand_index, (m, e) in enumerate(zip(hand_meshes, hand_evidence)):
            hand_box = boxes_from_points(project(m.vertices.detach(), K))
            for object_index, (o, verts, ev) in enumerate(zip(objects, object_vertices, object_evidence_list)):
                if "centroid" in terms:
                    object_box = boxes_from_points(project(verts.detach(), K))
                    active = L.centroid_pairs_active(hand_box, object_box, m.vertices.detach().mean(1)[:, 2],
                                                      verts.detach().mean(1)[:, 2])
                    centroid = centroid + L.coarse_interaction_loss(m.vertices, verts, active)
                if "collision" in terms or "local" in terms:
                    rotation, translation, scale, placed = o.rotation, o.translation, o.scale, verts
                    if not config.interaction_moves_objects:
                        rotation, translation = rotation.detach(), translation.detach()
                        scale, placed = scale.detach(), verts.detach()
                    hand_in_object = object_sdf(ev.sdf, m.vertices, rotation, translation, scale)
                if "collision" in terms:
                    object_in_hand = hand_signed_distance(e.layer, m.vertices, placed, config,
                                                          tracking, key=(hand_index, object_index))
                    collision = collision + L.collision_loss(hand_in_object) + L.collision_loss(object_in_hand)
                if "local" in terms:
                    # Distance to the object surface from its SDF (paper App. C accelerates the
                    # heuristic with the SDF) instead of to the nearest of ~1000 object vertices:
                    # exact up to grid error and ~40x cheaper than a dense hand x object cdist.
                    local = local + L.local_contact_loss(hand_in_object, hand_in_object.abs())
        for i in range(len(objects)):  # object-object pairs (Eq. 5 over every ordered pair)
            for j in range(len(objects)):
                if i != j and "collision" in terms:
                    oi, ei = objects[i], object_evidence_list[i]
                    collision = collision + L.collision_loss(
                        object_sdf(ei.sdf, object_vertices[j], oi.rotation, oi.translation, oi.scale))
        if "centroid" in terms:
            out["centroid"] = centroid
        if "collision" in terms:
            out["collision"] = collision
        if "local" in terms:
            out["local"] = local
    return out


def run_stage(hands, hand_evidence, objects, object_evidence_list, K, image_size, terms, steps, config,
              optimise_objects: bool = True) -> StageOutcome:
    """Adam over the parameters for `steps` steps on the weighted sum of `terms`.

    Per-step values stay on the device and are read back once at the end (no host round trip
    per step). A non-finite loss restores the parameters of the last finite step and stops.
    """
    groups = []
    for h in hands:
        groups += h.param_groups(config.rotation_lr, config.pose_lr, config.translation_lr)
    if optimise_objects:
        for o in objects:
            groups += o.param_groups(config.rotation_lr, config.translation_lr)
    params = [p for g in groups for p in g["params"]]
    if not terms or steps <= 0:
        return StageOutcome({}, {}, True)
    optimiser = torch.optim.Adam(groups)
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
        total = sum(config.weights[t] * v for t, v in values.items())
        total.backward()
        for t, v in values.items():
            history[t].append(config.weights[t] * v.detach())
        history["total"].append(total.detach())
        if (step + 1) % check_every == 0 or step == steps - 1:
            if not torch.isfinite(total.detach()) or any(not torch.isfinite(p).all() for p in params):
                with torch.no_grad():
                    for p, s in zip(params, snapshot):
                        p.copy_(s)
                finite = False
                break
            snapshot = [p.detach().clone() for p in params]
        optimiser.step()
    hist = {t: torch.stack(v).tolist() if v else [] for t, v in history.items()}
    final = {t: v[-1] for t, v in hist.items() if v}
    return StageOutcome(hist, final, finite)


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


def make_hand_parameters(evidence: HandEvidence, config: FitConfig) -> HandParameters:
    init = evidence.init
    return hand_parameters_from_layer_pose(evidence.layer, init.side, init.global_orient, init.hand_pose, init.betas,
                                           init.transl, optimise_betas=config.optimise_betas)


def fit_hands_and_objects(
    hand_evidence: list[HandEvidence],
    object_evidence_list: list[ObjectEvidence],
    object_init: list[tuple[torch.Tensor, torch.Tensor]],
    K: torch.Tensor,
    image_size: tuple[int, int],
    config: FitConfig,
    joint: bool = True,
) -> tuple[list[HandParameters], list[ObjectParameters], dict]:
    """Independent composition (joint=False) or the two-stage joint fit (joint=True).

    Independent: objects stay at their silhouette initialisation; hands are fitted alone with
    v2d + pca (paper Sec. 4.3's baseline). Joint: stage 1 then stage 2 over everything.
    Returns parameters and a report with loss histories, final losses and flags.
    """
    hands = [make_hand_parameters(e, config) for e in hand_evidence]
    objects = [ObjectParameters(r, t, optimise_scale=config.optimise_object_scale) for r, t in object_init]
    report = {"history": {}, "final": {}, "flags": {}, "seconds": {}}
    stages = ([("independent", config.active(INDEPENDENT_HAND_TERMS), config.steps_stage1, False)] if not joint else
              [("stage1", config.active(STAGE1_TERMS), config.steps_stage1, True),
               ("stage2", config.active(STAGE2_TERMS), config.steps_stage2, True)])
    finite = True
    for name, terms, steps, with_objects in stages:
        started = time.perf_counter()
        outcome = run_stage(hands, hand_evidence, objects, object_evidence_list, K, image_size, terms, steps, config,
                            optimise_objects=with_objects)
        report["seconds"][name] = time.perf_counter() - started
        for t, v in outcome.history.items():
            report["history"][f"{name}/{t}"] = v
        report["final"].update(outcome.final)
        finite = finite and outcome.finite
    report["flags"]["nonfinite_optimiser"] = not finite  # flags mark problems (True = bad)
    return hands, objects, report
