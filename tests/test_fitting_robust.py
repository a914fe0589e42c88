"""Acceptance tests of the fit mechanisms of issue 9, on short synthetic clips (small images,
few steps, small ROI; the full measurement is bench/RESULTS.md "Fit mechanisms (issue 9)"):

- an object moving over 1 cm per fitted frame is followed, not frozen by the smoothness term;
- a near-symmetric bottle whose silhouette-only initialisation swaps its two ends ends within
  20 degrees of the truth after the joint fit with 4 object-pose candidates, up to the bottle's near-exact half turn about
  its long axis (2.6 mm, which no silhouette or contact term can see; bench/RESULTS.md
  "Near-symmetric objects").
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from hodata.errors import HodataError
from hodata.evidence.gt import gt_clip_evidence
from hodata.fitting import FitConfig, ObjectInitConfig, fit_clip
from hodata.fitting.joint import HandEvidence, compute_terms, fit_hands_and_objects, make_hand_parameters
from hodata.fitting.joint import object_evidence
from hodata.fitting.joint import tile_hand_evidence, tile_object_evidence
from hodata.fitting.object_init import distinct_candidates, principal_flips, rotation_angle_between
from hodata.fitting.scene import ObjectParameters
from hodata.geometry.rotations import random_rotations
from hodata.geometry.transforms import apply_similarity
from hodata.metrics.object import add_s

IMAGE_SIZE = (240, 320)


def _clip(tmp_path_factory, name, object_id, seed, frames, clip_length, stride, **estimator_kwargs):
    from hodata.datasets.ho3d import HO3DDataset
    from hodata.datasets.synthetic import make_synthetic_ho3d
    from hodata.evidence.hand_init import SimulatedHandEstimator

    root = tmp_path_factory.mktemp(name)
    cache = tmp_path_factory.mktemp(f"{name}_cache")
    make_synthetic_ho3d(root, sequences=1, frames=frames, object_ids=(object_id,), seed=seed, image_size=IMAGE_SIZE,
                        cache_dir=cache)
    ds = HO3DDataset(root, clip_length=clip_length, stride=stride, cache_dir=cache)
    clip = ds[0]
    estimator = SimulatedHandEstimator(seed=0, **estimator_kwargs)
    layer = estimator.layer("right", clip.gt_hands[0].model_name, torch.float32, torch.device("cpu"))
    return dict(clip=clip, model=ds.model_for_clip(clip), inits=estimator(clip), layers={"right": layer})


def _init_config():
    return ObjectInitConfig(n_samples=200, n_hypotheses=20, n_propagate=5, steps_first=30, steps_per_frame=15,
                            roi_size=64)


@pytest.fixture(scope="module")
def moving(tmp_path_factory):
    # 4 fitted frames 7 video frames apart: the sugar box moves 1.2-1.3 cm between fitted frames
    return _clip(tmp_path_factory, "moving", "004_sugar_box", seed=1, frames=22, clip_length=4, stride=7)


def test_fit_follows_an_object_moving_over_1cm_per_fitted_frame(moving):
    clip = moving["clip"]
    truth = clip.gt_object.vertices
    true_motion = (truth[1:] - truth[:-1]).norm(dim=-1).mean(-1)
    assert true_motion.min() >= 0.01  # the scene is what the test claims
    results = {}
    for name, config in (("hodata", FitConfig(steps_stage1=100, steps_stage2=20, roi_size=64, object_candidates=1)),
                         ("paper", FitConfig.paper(steps_stage1=100, steps_stage2=20, roi_size=64))):
        evidence = gt_clip_evidence(clip, lambda _: moving["inits"])
        results[name] = fit_clip(clip, evidence, moving["model"], moving["layers"], config, _init_config(),
                                 methods=("joint",), device="cpu", seed=0)["joint"]
    fitted = results["hodata"].objects[0].vertices
    per_frame = add_s(fitted, truth)
    assert per_frame.max() < 0.015, per_frame
    ratio = (fitted[1:] - fitted[:-1]).norm(dim=-1).mean(-1) / true_motion
    assert (ratio > 0.75).all(), ratio
    # the paper's velocity term at weight 2000 holds the same object back (issue 9): this
    # scene tells the two apart
    frozen = results["paper"].objects[0].vertices
    frozen_ratio = (frozen[1:] - frozen[:-1]).norm(dim=-1).mean(-1) / true_motion
    assert frozen_ratio.mean() < 0.75 and frozen_ratio.mean() < ratio.mean() - 0.15, (frozen_ratio, ratio)


def test_principal_flips_are_half_turns_about_the_model_centroid():
    vertices = torch.randn(200, 3) * torch.tensor([0.08, 0.03, 0.02]) + torch.tensor([0.01, -0.02, 0.03])
    rotation = random_rotations(3, generator=torch.Generator().manual_seed(1))
    translation = torch.randn(3, 3) * 0.1 + torch.tensor([0.0, 0.0, 0.5])
    flip_r, flip_t = principal_flips(vertices, rotation, translation)
    assert flip_r.shape == (3, 3, 3, 3) and flip_t.shape == (3, 3, 3)
    assert torch.allclose(rotation_angle_between(flip_r, rotation.expand(3, 3, 3, 3)), torch.tensor(180.0), atol=0.1)
    # independent route: rotate the centred model by pi about each principal axis, place it
    centre = vertices.mean(0)
    _, axes = torch.linalg.eigh((vertices - centre).T @ (vertices - centre))
    for a in range(3):
        e = axes[:, a]
        turned = 2 * (vertices - centre) @ e[:, None] * e - (vertices - centre) + centre  # Rodrigues at pi
        expected = apply_similarity(turned, rotation, translation)
        got = apply_similarity(vertices, flip_r[a], flip_t[a])
        assert torch.allclose(got, expected, atol=1e-5)
        # same placed centroid: a flip turns the object in place
        assert torch.allclose(got.mean(1), apply_similarity(vertices, rotation, translation).mean(1), atol=1e-5)


def test_candidates_side_by_side_give_the_values_of_separate_fits(moving):
    clip, model = moving["clip"], moving["model"]
    config = FitConfig(roi_size=32)
    evidence = object_evidence(model.vertices, model.faces, model.sdf, clip.K, clip.object_boxes, clip.object_masks,
                               config)
    hand_evidence = HandEvidence(moving["layers"]["right"], moving["inits"][0])
    gt = clip.gt_object
    rotations, translations = principal_flips(model.vertices, gt.rotation, gt.translation)
    poses = [(gt.rotation, gt.translation), (rotations[0], translations[0])]
    terms = ("obj", "v2d", "pca", "scale", "smooth", "centroid", "collision", "local", "occlusion")
    separate = []
    for r, t in poses:
        hand = make_hand_parameters(hand_evidence, config)
        separate.append(compute_terms([hand], [hand_evidence], [ObjectParameters(r, t)], [evidence], clip.K,
                                      clip.image_size, terms, config))
    tiled_hand = tile_hand_evidence(hand_evidence, 2)
    hand = make_hand_parameters(tiled_hand, config, candidates=2)
    objects = ObjectParameters(torch.cat([poses[0][0], poses[1][0]]), torch.cat([poses[0][1], poses[1][1]]),
                               candidates=2)
    together = compute_terms([hand], [tiled_hand], [objects], [tile_object_evidence(evidence, 2)], clip.K,
                             clip.image_size, terms, config)
    for t in terms:
        expected = torch.cat([separate[0][t], separate[1][t]])
        assert torch.allclose(together[t], expected, rtol=1e-4, atol=1e-7), (t, together[t], expected)
    assert together["obj"][1] > together["obj"][0]  # the flipped box does not fit the silhouette


@pytest.fixture(scope="module")
def bottle(tmp_path_factory):
    # A mustard bottle held in the hand, 4 frames: its silhouette-only init is flipped (asserted below).
    # The hand's 2D target is the true hand's projection here (target_error = 0): with the
    # default target, which carries the estimator's own error, the choice on this clip goes to
    # the swapped ends (167 deg): this test's cheap object init places both candidates 9 cm too
    # near, and the depth order, which moves only the hand in stage 1, then scores the swapped
    # candidate better (bench/RESULTS.md "Session 13").
    return _clip(tmp_path_factory, "bottle", "006_mustard_bottle", seed=0, frames=4, clip_length=4, stride=1,
                 target_error=0.0, target_scale_jitter=0.0)


def test_a_bottle_whose_silhouette_init_swaps_its_ends_ends_near_the_truth_after_the_joint_fit(bottle):
    # Issue 9's acceptance, with one stated departure: "within 20 degrees of the truth" is
    # measured up to the bottle's near-exact symmetry (the half turn about its long axis maps
    # the model onto itself within 2.6 mm: the true pose and that turn give the same silhouette,
    # contact and collision, and differ only in the label's texture, which hodata does not see).
    # The init's flip here is the other kind, the two ends swapped (7 mm: the cap and the base
    # differ), which the evidence can tell apart.
    from hodata.fitting.object_init import initialise_object_pose, near_symmetries, rotation_error_up_to_symmetry

    clip, model = bottle["clip"], bottle["model"]
    truth = clip.gt_object.rotation
    symmetries = near_symmetries(model.vertices)
    assert symmetries.shape[0] == 2  # the identity and the long-axis half turn, not the end swaps
    init = initialise_object_pose(model.vertices, model.faces, clip.K, clip.object_boxes, clip.object_masks,
                                  _init_config(), generator=torch.Generator().manual_seed(0))
    assert rotation_error_up_to_symmetry(init.rotation, truth, symmetries) > 150  # silhouette-only: ends swapped
    # with coarse_mode="contact" the full objective picks the swapped candidate here (167 deg;
    # bench/RESULTS.md "Depth order from the masks")
    config = FitConfig(steps_stage1=60, steps_stage2=20, roi_size=64, object_candidates=4)
    evidence = gt_clip_evidence(clip, lambda _: bottle["inits"])
    fits = fit_clip(clip, evidence, model, bottle["layers"], config, _init_config(),
                    methods=("independent", "joint"), device="cpu", seed=0)
    # the independent baseline keeps the init's pose; the joint fit turns the bottle round
    assert rotation_error_up_to_symmetry(fits["independent"].objects[0].rotation, truth, symmetries) > 150
    error = rotation_error_up_to_symmetry(fits["joint"].objects[0].rotation, truth, symmetries)
    assert error < 20, error
    assert fits["joint"].losses["object_candidate"] != 0  # not the init's choice
    # the chosen hand start is recorded beside it, as an index into config.hand_starts
    assert fits["joint"].losses["hand_start"] in (0.0, 1.0)
    assert "hand_start" not in fits["independent"].losses


def test_distinct_candidates_skip_near_duplicates(bottle):
    from hodata.fitting.object_init import ObjectInitResult

    model = bottle["model"]
    gt = bottle["clip"].gt_object
    # the init's second candidate duplicates its first (5 degrees about z in every frame)
    c, s = torch.cos(torch.tensor(0.087)), torch.sin(torch.tensor(0.087))
    turn = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    near = gt.rotation @ turn
    result = ObjectInitResult(gt.rotation, gt.translation, torch.ones(len(gt.rotation)), torch.ones(2),
                              torch.stack([gt.rotation, near]), torch.stack([gt.translation, gt.translation]))
    rotations, translations = distinct_candidates(result, model.vertices, count=6, min_angle=30.0)
    # the init's duplicate is dropped; the best and its three half turns remain
    assert rotations.shape[0] == 4 and translations.shape == (4,) + gt.translation.shape
    assert torch.equal(rotations[0], gt.rotation)
    one, _ = distinct_candidates(result, model.vertices, count=1)
    assert one.shape[0] == 1


def test_joint_fit_with_candidates_keeps_the_one_the_evidence_fits(moving):
    clip, model = moving["clip"], moving["model"]
    # no pruning by the silhouette: both candidates reach the full objective
    # one hand start: the object candidates alone (hand starts: tests/test_fitting.py)
    config = FitConfig(steps_stage1=5, steps_stage2=2, roi_size=32, object_candidates=2, candidate_steps=2,
                       candidate_margin=1e9, hand_starts=("init",))
    evidence = object_evidence(model.vertices, model.faces, model.sdf, clip.K, clip.object_boxes, clip.object_masks,
                               config)
    gt = clip.gt_object
    # a wrong candidate first (turned 60 degrees about the view axis through the object's
    # centroid: a clearly different silhouette), the true pose second
    c, s = 0.5, 3**0.5 / 2
    turn = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    centre = model.vertices.mean(0)
    turned = turn @ gt.rotation
    turned_t = (gt.rotation @ centre + gt.translation) - turned @ centre
    rotations = torch.stack([turned, gt.rotation])
    translations = torch.stack([turned_t, gt.translation])
    hand_evidence = [HandEvidence(moving["layers"]["right"], moving["inits"][0])]
    hands, objects, report = fit_hands_and_objects(hand_evidence, [evidence], [(rotations, translations)], clip.K,
                                                   clip.image_size, config)
    assert report["candidates"]["chosen"] == 1 and len(report["candidates"]["total"]) == 2
    assert objects[0].rotation.shape == (len(clip), 3, 3) and objects[0].candidates == 1
    assert hands[0].pca_pose.shape[0] == len(clip) and "stage2/collision" in report["history"]
    assert rotation_angle_between(objects[0].rotation, gt.rotation).max() < 10
    # with both hand starts: 2 object candidates x 2 starts, the object of the lowest total kept
    both = replace(config, hand_starts=("init", "fitted"), hand_prefit_steps=5)
    _, objects, report = fit_hands_and_objects(hand_evidence, [evidence], [(rotations, translations)], clip.K,
                                               clip.image_size, both)
    totals = report["candidates"]["total"]
    best = min(range(4), key=lambda k: totals[k])
    assert len(totals) == 4 and report["candidates"]["hand_start"] == both.hand_starts[best % 2]
    assert report["candidates"]["chosen"] == report["candidates_fitted"][best // 2] == 1
    assert rotation_angle_between(objects[0].rotation, gt.rotation).max() < 10


def test_candidates_the_silhouette_rules_out_do_not_reach_the_joint_stage(moving):
    clip, model = moving["clip"], moving["model"]
    config = FitConfig(steps_stage1=2, steps_stage2=2, roi_size=32, object_candidates=3, candidate_steps=5,
                       hand_starts=("init",))
    evidence = object_evidence(model.vertices, model.faces, model.sdf, clip.K, clip.object_boxes, clip.object_masks,
                               config)
    gt = clip.gt_object
    centre = model.vertices.mean(0)
    poses = []
    for angle in (60.0, 0.0):  # a pose turned 60 degrees about the view axis, then the truth
        a = torch.deg2rad(torch.tensor(angle))
        turn = torch.tensor([[torch.cos(a), -torch.sin(a), 0.0], [torch.sin(a), torch.cos(a), 0.0], [0.0, 0.0, 1.0]])
        rotation = turn @ gt.rotation
        poses.append((rotation, (gt.rotation @ centre + gt.translation) - rotation @ centre))
    # the truth again, moved by 1 mm: the same surface as the truth
    poses.append((gt.rotation, gt.translation + 0.001))
    rotations = torch.stack([r for r, _ in poses])
    translations = torch.stack([t for _, t in poses])
    hand_evidence = [HandEvidence(moving["layers"]["right"], moving["inits"][0])]
    hands, objects, report = fit_hands_and_objects(hand_evidence, [evidence], [(rotations, translations)], clip.K,
                                                   clip.image_size, config)
    silhouette = report["candidate_silhouette"]
    assert silhouette[0] > (1 + config.candidate_margin) * min(silhouette[1:])
    # the turned pose is ruled out by its silhouette, the copy merged with the truth: one left
    assert len(report["candidates_fitted"]) == 1 and report["candidates_fitted"][0] in (1, 2)
    assert report["candidates"]["chosen"] == report["candidates_fitted"][0] and report["candidates"]["total"] == []
    assert objects[0].candidates == 1 and objects[0].rotation.shape == (len(clip), 3, 3)


def test_pooled_silhouette_evidence_lines_up_with_rendering_at_the_lower_resolution(bottle):
    # independent route: the model rendered at the full ROI and pooled by hand, against the
    # same pose rendered directly at half the ROI with the pooled camera
    from hodata.fitting.joint import pooled_evidence
    from hodata.geometry.raster import render_silhouette

    clip, model = bottle["clip"], bottle["model"]
    gt = clip.gt_object
    config = FitConfig(roi_size=64)
    evidence = object_evidence(model.vertices, model.faces, model.sdf, clip.K, clip.object_boxes, clip.object_masks,
                               config)
    verts = apply_similarity(model.vertices, gt.rotation, gt.translation)
    full = render_silhouette(verts, model.faces, evidence.K_roi, (64, 64), mode="hard")
    pooled = pooled_evidence(replace(evidence, target=full), 2)
    assert pooled.target.shape == (len(clip), 32, 32)
    assert torch.allclose(pooled.target, full.reshape(len(clip), 32, 2, 32, 2).mean(dim=(2, 4)))

    def mismatch(shift):  # the pooled camera, its principal point moved by `shift` pooled pixels
        K_roi = pooled.K_roi.clone()
        K_roi[:, :2, 2] += shift
        return (render_silhouette(verts, model.faces, K_roi, (32, 32)) - pooled.target).abs().mean()

    # the pooled camera lines up better than one a quarter pixel off either way
    assert mismatch(0.0) < mismatch(0.25) and mismatch(0.0) < mismatch(-0.25)
    assert mismatch(0.0) < 0.1
    # hand-occluded pixels stay ignored: one -1 pixel makes its whole block -1
    target = evidence.target.clone()
    target[:, 0, 0] = -1
    assert (pooled_evidence(replace(evidence, target=target), 2).target[:, 0, 0] == -1).all()



def test_a_metric_band_erodes_the_labels_where_hand_points_count_as_hidden(moving):
    clip, model = moving["clip"], moving["model"]
    hand_evidence = HandEvidence(moving["layers"]["right"], moving["inits"][0])
    gt = clip.gt_object

    def occlusion(config, evidence):
        hand = make_hand_parameters(hand_evidence, config)
        with torch.no_grad():  # along the viewing rays to 5 cm in front of the object (the init is behind it)
            hand.translation *= (gt.translation[:, 2:3] - 0.05) / hand.translation[:, 2:3]
        return compute_terms([hand], [hand_evidence], [ObjectParameters(gt.rotation, gt.translation)], [evidence],
                             clip.K, clip.image_size, ("occlusion",), config)["occlusion"]

    config = FitConfig(roi_size=32, occlusion_erode_m=None, occlusion_band="edges")
    evidence = object_evidence(model.vertices, model.faces, model.sdf, clip.K, clip.object_boxes, clip.object_masks,
                               config)
    pixels = occlusion(config, evidence)
    assert float(pixels) > 0  # hand points where the object is shown lie in front of it
    assert torch.equal(occlusion(replace(config, occlusion_erode_m=0.0), evidence), pixels)  # below the minimum
    # a band wider than the object leaves no pixel where a hand point counts as hidden: the value
    # is that of the same targets without their object labels
    wide = occlusion(replace(config, occlusion_erode_m=1.0), evidence)
    no_object = replace(evidence, target=torch.where(evidence.target > 0.5, 0.0, evidence.target))
    assert torch.allclose(wide, occlusion(config, no_object))
    assert float(wide) < float(pixels)
    # a 3 cm band (about 5 ROI pixels on this sugar box) lies in between
    assert float(wide) <= float(occlusion(replace(config, occlusion_erode_m=0.03), evidence)) < float(pixels)
    # cut beside the hand only: the object pixels it drops are a subset of those the erosion
    # drops (hand pixels are not object pixels), so the value lies between the two; at the
    # pixel minimum both are the same 2 px erosion
    edges = occlusion(replace(config, occlusion_erode_m=0.03), evidence)
    beside = occlusion(replace(config, occlusion_erode_m=0.03, occlusion_band="hand"), evidence)
    assert float(edges) <= float(beside) <= float(pixels)
    assert torch.equal(occlusion(replace(config, occlusion_erode_m=0.0, occlusion_band="hand"), evidence), pixels)


def test_the_depth_order_moves_the_object_only_when_asked(moving):
    # The hand 5 cm in front of the object: the depth order's value does not depend on the
    # setting, its gradient reaches the object only with "always", and then it brings the
    # object toward the hand (the hand points on object-shown pixels lie in front of it).
    from hodata.fitting.joint import stage_config

    clip, model = moving["clip"], moving["model"]
    hand_evidence = HandEvidence(moving["layers"]["right"], moving["inits"][0])
    gt = clip.gt_object
    base = FitConfig(roi_size=32)
    evidence = object_evidence(model.vertices, model.faces, model.sdf, clip.K, clip.object_boxes, clip.object_masks,
                               base)

    def value_and_object_gradient(setting):
        config = replace(base, occlusion_moves_objects=setting)
        hand = make_hand_parameters(hand_evidence, config)
        with torch.no_grad():
            hand.translation *= (gt.translation[:, 2:3] - 0.05) / hand.translation[:, 2:3]
        obj = ObjectParameters(gt.rotation, gt.translation)
        value = compute_terms([hand], [hand_evidence], [obj], [evidence], clip.K, clip.image_size, ("occlusion",),
                              config)["occlusion"].sum()
        value.backward()
        gradient = obj.translation.grad
        return float(value), (torch.zeros_like(obj.translation) if gradient is None else gradient)

    never, never_grad = value_and_object_gradient("never")
    always, always_grad = value_and_object_gradient("always")
    assert never > 0 and always == pytest.approx(never, rel=1e-6)
    assert not never_grad.any()
    assert float(always_grad[:, 2].sum()) > 0  # descent moves the object nearer, toward the hand
    # "stage2" is resolved per stage: the hand alone in stage 1, both in stage 2
    config = replace(base, occlusion_moves_objects="stage2")
    assert stage_config(config, "stage1").occlusion_moves_objects == "never"
    assert stage_config(config, "stage2").occlusion_moves_objects == "always"
    assert stage_config(base, "stage2") is base
    with pytest.raises(HodataError, match="occlusion_moves_objects"):
        FitConfig(occlusion_moves_objects="sometimes")
