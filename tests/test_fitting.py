"""Object initialisation, the joint fit and fit_clip on a small synthetic HO-3D clip with
known ground truth (the paper's Fig. 4 setting: ground-truth boxes and masks)."""

from __future__ import annotations

import math

import pytest
import torch

from hodata.evidence.gt import gt_clip_evidence
from hodata.fitting import FitConfig, ObjectInitConfig, fit_clip
from hodata.fitting.joint import (
    STAGE1_TERMS,
    STAGE2_TERMS,
    HandEvidence,
    compute_terms,
    make_hand_parameters,
    object_evidence,
    run_stage,
)
from hodata.fitting.object_init import crop_masks, silhouette_iou, translation_from_box
from hodata.fitting.scene import ObjectParameters
from hodata.geometry.camera import boxes_from_points, crop_intrinsics, project
from hodata.geometry.raster import render_silhouette
from hodata.geometry.rotations import random_rotations
from hodata.geometry.transforms import apply_similarity
from hodata.metrics.hand import vertex_error
from hodata.metrics.object import add_s


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from hodata.datasets.ho3d import HO3DDataset
    from hodata.datasets.synthetic import make_synthetic_ho3d
    from hodata.evidence.hand_init import SimulatedHandEstimator

    root = tmp_path_factory.mktemp("synthetic")
    cache = tmp_path_factory.mktemp("cache")
    make_synthetic_ho3d(root, sequences=1, frames=6, object_ids=("025_mug",), seed=0,
                        cache_dir=cache)
    ds = HO3DDataset(root, clip_length=6, stride=1, cache_dir=cache)
    clip = ds[0]
    estimator = SimulatedHandEstimator(seed=0)
    inits = estimator(clip)
    layer = estimator.layer("right", clip.gt_hands[0].model_name, torch.float32, torch.device("cpu"))
    return dict(clip=clip, model=ds.model_for_clip(clip), inits=inits, layers={"right": layer})


def test_translation_from_box_fits_the_detection(scene):
    model, clip = scene["model"], scene["clip"]
    rotations = random_rotations(16, generator=torch.Generator().manual_seed(0))
    box = torch.tensor([200.0, 120.0, 360.0, 300.0])
    t = translation_from_box(model.vertices, rotations, box, clip.K)
    placed = apply_similarity(model.vertices, rotations, t)
    proj = boxes_from_points(project(placed, clip.K))
    diag = (proj[:, 2:] - proj[:, :2]).norm(dim=-1)
    centre = (proj[:, :2] + proj[:, 2:]) / 2
    assert torch.allclose(diag, (box[2:] - box[:2]).norm().expand(16), rtol=0.02)
    assert (centre - (box[:2] + box[2:]) / 2).norm(dim=-1).max() < 1.5


def test_cropped_targets_line_up_with_roi_rendering(scene):
    clip, model = scene["clip"], scene["model"]
    gt = clip.gt_object
    verts = apply_similarity(model.vertices, gt.rotation, gt.translation)
    full = render_silhouette(verts, model.faces, clip.K, clip.image_size, mode="hard")
    boxes = clip.object_boxes
    roi = torch.cat([boxes[:, :2] - 10, boxes[:, 2:] + 10], -1)
    cropped = crop_masks(full, roi, 64)
    rendered = render_silhouette(verts, model.faces, crop_intrinsics(clip.K.expand(len(clip), 3, 3), roi, (64, 64)),
                                 (64, 64), mode="hard")
    assert silhouette_iou(rendered, cropped).min() > 0.9


def _fast_configs():
    init = ObjectInitConfig(n_samples=200, n_hypotheses=20, n_propagate=4, steps_first=40, steps_per_frame=20)
    config = FitConfig(steps_stage1=150, steps_stage2=60)
    return config, init


@pytest.fixture(scope="module")
def fits(scene):
    config, init = _fast_configs()
    return fit_clip(scene["clip"], gt_clip_evidence(scene["clip"], lambda _: scene["inits"]), scene["model"],
                    scene["layers"], config, init,
                    methods=("independent", "joint"), device="cpu", seed=0)


def test_joint_fit_recovers_object_and_beats_independent_composition(scene, fits):
    clip = scene["clip"]
    gt_hand = clip.gt_hands[0].vertices
    hand_error = {m: vertex_error(f.hands[0].vertices, gt_hand).mean().item() for m, f in fits.items()}
    adds = {m: add_s(f.objects[0].vertices, clip.gt_object.vertices).mean().item() for m, f in fits.items()}
    assert adds["joint"] < 0.01 and adds["independent"] < 0.01       # ADD-S under 1 cm
    assert hand_error["joint"] < hand_error["independent"] / 2         # scale-depth ambiguity resolved
    joint = fits["joint"]
    assert joint.losses["mask_iou"] > 0.85 and not joint.flags["nonfinite_optimiser"]
    assert set(joint.losses) >= {"obj", "v2d", "pca", "scale", "smooth", "centroid", "collision", "local", "occlusion"}
    assert "independent/v2d" in fits["independent"].loss_history and "stage2/collision" in joint.loss_history
    assert joint.hands[0].vertices.shape == gt_hand.shape and joint.hands[0].joints.shape == (len(clip), 21, 3)
    assert joint.hand_init == "simulated" and joint.hands[0].model_name == clip.gt_hands[0].model_name


def test_interaction_terms_move_only_the_hand_by_default(scene):
    clip, model = scene["clip"], scene["model"]
    gt = clip.gt_object
    config = FitConfig()
    evidence = object_evidence(model.vertices, model.faces, model.sdf, clip.K, clip.object_boxes, clip.object_masks,
                               config)
    hand_evidence = HandEvidence(scene["layers"]["right"], scene["inits"][0])
    hand = make_hand_parameters(hand_evidence, config)
    with torch.no_grad():  # push the hand into the object so both terms are active
        centre = apply_similarity(model.vertices, gt.rotation, gt.translation).mean(1)
        hand.translation.copy_(centre)
    for moves_objects in (False, True):
        obj = ObjectParameters(gt.rotation, gt.translation)
        cfg = FitConfig(interaction_moves_objects=moves_objects)
        values = compute_terms([hand], [hand_evidence], [obj], [evidence], clip.K, clip.image_size,
                               ("collision", "local"), cfg)
        assert values["collision"] > 0 and values["local"] > 0
        hand.translation.grad = None
        (values["collision"] + values["local"]).backward()
        object_grad = 0.0 if obj.translation.grad is None else obj.translation.grad.abs().max().item()
        assert hand.translation.grad.abs().max() > 0
        assert (object_grad > 0) == moves_objects


def test_non_finite_loss_restores_parameters_and_flags(scene):
    clip, model = scene["clip"], scene["model"]
    config = FitConfig()
    evidence = object_evidence(model.vertices, model.faces, model.sdf, clip.K, clip.object_boxes, clip.object_masks,
                               config)
    evidence.target[0, 0, 0] = math.nan
    obj = ObjectParameters(clip.gt_object.rotation, clip.gt_object.translation)
    before = obj.translation.detach().clone()
    outcome = run_stage([], [], [obj], [evidence], clip.K, clip.image_size, ("obj",), 30, config)
    assert not outcome.finite
    assert torch.equal(obj.translation.detach(), before)


def test_fit_clip_carries_the_object_through_a_missed_frame(scene):
    """A frame without object evidence (a missed detection) is fitted from its neighbours and
    flagged; a clip without object evidence in any frame is refused with one line."""
    from dataclasses import replace

    from hodata.errors import HodataError
    from hodata.metrics.object import add_s

    clip = scene["clip"]
    masks = clip.object_masks.clone()
    masks[2] = 0
    missed = replace(clip, object_masks=masks)
    config = FitConfig(steps_stage1=60, steps_stage2=10, roi_size=64)
    init = ObjectInitConfig(n_samples=200, n_hypotheses=10, n_propagate=3, steps_first=30, steps_per_frame=15)
    fit = fit_clip(missed, gt_clip_evidence(missed, lambda _: scene["inits"]), scene["model"], scene["layers"],
                   config, init, device="cpu")["joint"]
    assert fit.flags["missing_object_evidence"] and fit.loss_history["frames_without_object_evidence"] == [clip.frame_ids[2]]
    per_frame = add_s(fit.objects[0].vertices, clip.gt_object.vertices)
    assert per_frame[2] < 2 * per_frame[[1, 3]].max() + 0.005, per_frame
    with pytest.raises(HodataError, match="no object evidence in any frame"):
        empty = replace(clip, object_masks=torch.zeros_like(masks))
        fit_clip(empty, gt_clip_evidence(empty, lambda _: scene["inits"]), scene["model"], scene["layers"], device="cpu")


def test_fill_missing_boxes_interpolates_and_holds_the_ends():
    from hodata.fitting.pipeline import fill_missing_boxes

    boxes = torch.tensor([[0.0] * 4, [9.0] * 4, [2.0] * 4, [9.0] * 4, [9.0] * 4, [8.0] * 4, [9.0] * 4])
    known = torch.tensor([False, True, True, False, False, True, False])
    boxes[1], boxes[2], boxes[5] = 1.0, 2.0, 8.0
    out = fill_missing_boxes(boxes, known)
    assert out[:, 0].tolist() == [1.0, 1.0, 2.0, 4.0, 6.0, 8.0, 8.0]


def test_translation_from_box_on_the_hull_equals_all_vertices(scene):
    model, clip = scene["model"], scene["clip"]
    rotations = random_rotations(64, generator=torch.Generator().manual_seed(3))
    box = torch.tensor([180.0, 100.0, 380.0, 330.0])
    hull = translation_from_box(model.vertices, rotations, box, clip.K, use_hull=True)
    full = translation_from_box(model.vertices, rotations, box, clip.K, use_hull=False)
    assert torch.allclose(hull, full, rtol=0, atol=1e-6)


def test_hand_starts_are_the_init_and_the_independent_hand_fit(scene):
    """start_hands against an independent route: the "fitted" rows equal the independent
    baseline's hand (fit_hands_and_objects joint=False with as many steps), the "init" rows the
    init's own parameters."""
    from hodata.fitting.joint import fit_hands_and_objects, start_hands, tile_hand_evidence

    clip, model = scene["clip"], scene["model"]
    config = FitConfig(steps_stage1=12, hand_prefit_steps=12)
    evidence = object_evidence(model.vertices, model.faces, model.sdf, clip.K, clip.object_boxes, clip.object_masks,
                               config)
    hand_evidence = HandEvidence(scene["layers"]["right"], scene["inits"][0])
    gt = clip.gt_object
    independent, _, _ = fit_hands_and_objects([hand_evidence], [evidence], [(gt.rotation, gt.translation)], clip.K,
                                              clip.image_size, config, joint=False)
    at_init = make_hand_parameters(hand_evidence, config)
    starts = ("init", "fitted")
    hands = [make_hand_parameters(tile_hand_evidence(hand_evidence, 4), config, 4)]  # 2 object candidates x 2 starts
    start_hands(hands, [hand_evidence], starts, clip.K, clip.image_size, config)
    layer = hand_evidence.layer
    expected = {"init": at_init.meshes(layer).vertices, "fitted": independent[0].meshes(layer).vertices}
    assert (expected["init"] - expected["fitted"]).norm(dim=-1).mean() > 1e-3  # the two starts differ
    for c in range(4):
        got = hands[0].candidate(c).meshes(layer).vertices
        assert torch.allclose(got, expected[starts[c % 2]], atol=1e-6), c


def test_a_single_fitted_hand_start_is_used(scene):
    """hand_starts=("fitted",) alone starts the joint fit from the independent baseline's hand
    (it had been ignored: the hands started at the init)."""
    from dataclasses import replace

    from hodata.fitting.joint import fit_hands_and_objects

    clip, model = scene["clip"], scene["model"]
    config = FitConfig(steps_stage1=12, steps_stage2=0, hand_prefit_steps=12)
    evidence = object_evidence(model.vertices, model.faces, model.sdf, clip.K, clip.object_boxes, clip.object_masks,
                               config)
    hand_evidence = HandEvidence(scene["layers"]["right"], scene["inits"][0])
    gt = clip.gt_object
    layer = hand_evidence.layer
    independent, _, _ = fit_hands_and_objects([hand_evidence], [evidence], [(gt.rotation, gt.translation)], clip.K,
                                              clip.image_size, config, joint=False)
    no_steps = FitConfig(steps_stage1=0, steps_stage2=0, hand_prefit_steps=12)
    for starts, expected in ((("fitted",), independent[0]), (("init",), make_hand_parameters(hand_evidence, config))):
        hands, _, report = fit_hands_and_objects([hand_evidence], [evidence], [(gt.rotation, gt.translation)], clip.K,
                                                 clip.image_size, replace(no_steps, hand_starts=starts))
        assert torch.allclose(hands[0].meshes(layer).vertices, expected.meshes(layer).vertices, atol=1e-6), starts
        assert ("hand_starts" in report["seconds"]) == (starts == ("fitted",))
    # a list (a config read back from JSON) means the same as the tuple
    hands, _, _ = fit_hands_and_objects([hand_evidence], [evidence], [(gt.rotation, gt.translation)], clip.K,
                                        clip.image_size, replace(no_steps, hand_starts=["init"]))
    assert torch.allclose(hands[0].meshes(layer).vertices,
                          make_hand_parameters(hand_evidence, config).meshes(layer).vertices, atol=1e-6)


def test_joint_fit_keeps_both_hand_starts_and_picks_by_the_full_objective(scene):
    from hodata.fitting.joint import fit_hands_and_objects

    clip, model = scene["clip"], scene["model"]
    config = FitConfig(steps_stage1=10, steps_stage2=4, hand_prefit_steps=10)
    evidence = object_evidence(model.vertices, model.faces, model.sdf, clip.K, clip.object_boxes, clip.object_masks,
                               config)
    hand_evidence = HandEvidence(scene["layers"]["right"], scene["inits"][0])
    gt = clip.gt_object
    hands, objects, report = fit_hands_and_objects([hand_evidence], [evidence], [(gt.rotation, gt.translation)],
                                                   clip.K, clip.image_size, config)
    chosen = report["candidates"]
    assert len(chosen["total"]) == 2 and chosen["hand_start"] == ("init", "fitted")[
        min(range(2), key=lambda k: chosen["total"][k])]
    assert chosen["chosen"] == 0 and hands[0].candidates == 1 and objects[0].candidates == 1
    assert "hand_starts" in report["seconds"]
    _, _, single = fit_hands_and_objects([hand_evidence], [evidence], [(gt.rotation, gt.translation)], clip.K,
                                         clip.image_size, FitConfig(steps_stage1=10, steps_stage2=4,
                                                                    hand_starts=("init",)))
    assert "candidates" not in single and "hand_starts" not in single["seconds"]


def test_the_pick_after_stage_2_is_the_finished_fit_with_the_lower_objective(scene):
    """choose_after="stage2": both hand starts go through stage 2 side by side and the pick is
    the one the full objective scores lower then; against an independent route, each start
    fitted alone through both stages."""
    from dataclasses import replace

    from hodata.errors import HodataError
    from hodata.fitting.joint import choose_candidate, fit_hands_and_objects

    clip, model = scene["clip"], scene["model"]
    config = FitConfig(steps_stage1=10, steps_stage2=6, hand_prefit_steps=10, choose_after="stage2")
    evidence = object_evidence(model.vertices, model.faces, model.sdf, clip.K, clip.object_boxes, clip.object_masks,
                               config)
    hand_evidence = HandEvidence(scene["layers"]["right"], scene["inits"][0])
    gt = clip.gt_object
    layer = hand_evidence.layer

    def fit(cfg):
        return fit_hands_and_objects([hand_evidence], [evidence], [(gt.rotation, gt.translation)], clip.K,
                                     clip.image_size, cfg)

    hands, objects, report = fit(config)
    chosen = report["candidates"]
    best = min(range(2), key=lambda k: chosen["total"][k])
    assert chosen["hand_start"] == config.hand_starts[best]
    assert hands[0].candidates == 1 and objects[0].candidates == 1
    assert len(report["history"]["stage2/total"]) == 6  # the pick's own history, one value per step
    alone = {s: fit(replace(config, hand_starts=(s,))) for s in config.hand_starts}
    vertices = {s: a[0][0].meshes(layer).vertices for s, a in alone.items()}
    assert (vertices["init"] - vertices["fitted"]).norm(dim=-1).mean() > 1e-3  # the two finished fits differ
    assert torch.allclose(hands[0].meshes(layer).vertices, vertices[chosen["hand_start"]], atol=1e-4)
    # the scores are those of the finished fits (after stage 1 they would be the unrefined ones)
    for k, s in enumerate(config.hand_starts):
        score = choose_candidate(alone[s][0], [hand_evidence], alone[s][1], [evidence], clip.K, clip.image_size,
                                 config)[1]
        assert float(score[0]) == pytest.approx(chosen["total"][k], rel=1e-3), s
    with pytest.raises(HodataError, match="choose_after"):
        FitConfig(choose_after="stage3")


@pytest.mark.parametrize("starts", [(), ("init", "init"), ("init", "detected")])
def test_hand_starts_must_be_distinct_known_names(starts):
    from hodata.errors import HodataError

    with pytest.raises(HodataError, match="hand_starts"):
        FitConfig(hand_starts=starts)


def test_hand_size_prior_breaks_the_scale_depth_ambiguity_in_units_of_the_size_spread(scene):
    # The hand scaled by s about the camera centre projects exactly where it was (v2d cannot
    # tell the two apart); the hand-size prior does, at ((s - 1) / spread)^2, and the paper's
    # scale term only at (s - 1)^2.
    clip = scene["clip"]
    hand_evidence = HandEvidence(scene["layers"]["right"], scene["inits"][0])
    s, config = 0.9, FitConfig()
    near = make_hand_parameters(hand_evidence, config)
    far = make_hand_parameters(hand_evidence, config)
    with torch.no_grad():
        near.translation.mul_(s)
        near.log_scale.add_(math.log(s))
    layer = hand_evidence.layer
    assert torch.allclose(near.meshes(layer).vertices, s * far.meshes(layer).vertices, atol=1e-6)
    values = {}
    for name, params in (("near", near), ("far", far)):
        with torch.no_grad():
            values[name] = compute_terms([params], [hand_evidence], [], [], clip.K, clip.image_size,
                                         ("v2d", "scale", "hand_size"), config)
    assert torch.allclose(values["near"]["v2d"], values["far"]["v2d"], rtol=1e-4, atol=1e-9)
    assert float(values["far"]["hand_size"]) == pytest.approx(0.0, abs=1e-10)
    assert float(values["near"]["hand_size"]) == pytest.approx(((s - 1) / 0.07) ** 2, rel=1e-4)
    assert float(values["near"]["scale"]) == pytest.approx((s - 1) ** 2, rel=1e-4)
    # a stage-1 prior: stage 2 and the candidate choice leave the depth to contact and collision
    assert "hand_size" in config.active(STAGE1_TERMS) and "hand_size" not in STAGE2_TERMS
    assert "hand_size" not in FitConfig.paper().active(STAGE1_TERMS)


@pytest.mark.parametrize("spread", [0.0, -0.07])
def test_hand_scale_spread_must_be_positive(spread):
    from hodata.errors import HodataError

    with pytest.raises(HodataError, match="hand_scale_spread"):
        FitConfig(hand_scale_spread=spread)


@pytest.mark.parametrize("settings", [dict(occlusion_erode=-1), dict(occlusion_erode_m=-0.005),
                                      dict(occlusion_erode_m=float("nan"))])
def test_depth_order_erosion_must_not_be_negative(settings):
    from hodata.errors import HodataError

    with pytest.raises(HodataError, match="occlusion_erode"):
        FitConfig(**settings)


def test_depth_order_band_side_is_checked():
    from hodata.errors import HodataError

    with pytest.raises(HodataError, match="occlusion_band must be 'edges' or 'hand'"):
        FitConfig(occlusion_band="both")
