"""Factor-controlled scenes (hodata.datasets.synthetic_scenes): each factor is what was asked,
measured from the written files through the real adapter, not from the generator's record."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from hodata.datasets.ho3d import HO3DDataset, read_segmentation
from hodata.datasets.synthetic_scenes import (
    CLIP_LENGTH,
    FACTOR_FIELDS,
    NOMINAL,
    STRIDE,
    SceneSpec,
    benchmark_specs,
    hand_noise_kwargs,
    make_scene_ho3d,
    mask_iou,
    perturb_mask,
    read_scene_records,
    uniform_rotations,
)
from hodata.errors import HodataError
from hodata.geometry.raster import render_labels
from hodata.geometry.rotations import geodesic_distance
from hodata.geometry.sdf import mesh_signed_distance

SIZE = (240, 320)
FITTED = list(range(0, 37, STRIDE))
SPECS = [
    # motion, occlusion, distance and focal off their nominal values at once (each measured on its own);
    # a hand of the mean size, as the simulated init's, so the depth test below measures the depth
    # order alone (a hand 9 % larger, as its seed draws, also moves the hand's depth along its rays)
    SceneSpec("MOVE", translation_m=0.015, rotation_deg=10.0, occlusion=0.4, distance_m=0.35, focal_px=1000.0,
              hand_size=0.0, seed=11),
    SceneSpec("TURN", translation_m=0.0, rotation_deg=15.0, occlusion=0.0, seed=12),
    SceneSpec("PINCH", grasp="pinch", seed=13),
    SceneSpec("PALM", grasp="palm", object_id="004_sugar_box", seed=14),
    SceneSpec("OFF", fingers_off=("ring", "little"), seed=15),
    SceneSpec("UPRIGHT", orientation="uniform", occlusion=None, seed=16),
    SceneSpec("NOISY", mask_iou=0.8, missed_frames=1, seed=17),
    SceneSpec("ROLL", in_hand_roll_deg=10.0, seed=18),
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mesh_cache")


@pytest.fixture(scope="module")
def root(tmp_path_factory, cache):
    return make_scene_ho3d(tmp_path_factory.mktemp("scenes"), SPECS, image_size=SIZE, cache_dir=cache)


@pytest.fixture(scope="module")
def clips(root, cache):
    ds = HO3DDataset(root, clip_length=CLIP_LENGTH, stride=STRIDE, cache_dir=cache, dtype=torch.float64)
    return {clip.sequence: (clip, ds.model_for_clip(clip)) for clip in ds}


def _hand_faces():
    from hodata import handmodel

    return handmodel.load("right", use_pca=False, flat_hand_mean=True).faces.long()


def test_adapter_reads_every_scene(root, clips):
    assert sorted(clips) == sorted(s.name for s in SPECS)
    for clip, _ in clips.values():
        assert clip.dataset == "synthetic" and len(clip) == CLIP_LENGTH
        assert clip.frame_ids == [f"{t:04d}" for t in FITTED]
        assert clip.image_size == SIZE and clip.gt_hands and clip.gt_hands[0].vertices.shape[1] > 0
    assert set(read_scene_records(root)) == {s.name for s in SPECS}


def test_motion_per_fitted_frame_is_as_asked(clips):
    for name in ("MOVE", "TURN", "PINCH"):
        spec = next(s for s in SPECS if s.name == name)
        clip, _ = clips[name]
        centroids = clip.gt_object.vertices.mean(1)
        steps = (centroids[1:] - centroids[:-1]).norm(dim=-1)
        angles = geodesic_distance(clip.gt_object.rotation[:-1], clip.gt_object.rotation[1:]) * 180 / math.pi
        assert float(steps.mean()) == pytest.approx(spec.translation_m, abs=1e-4), name
        assert float(angles.mean()) == pytest.approx(spec.rotation_deg, abs=0.1), name
        if spec.translation_m > 0:  # the speed varies along the clip, as in real manipulation
            assert float(steps.max() - steps.min()) > 0.2 * spec.translation_m
        # the hand moves with the object: hand-to-object offset in the object's frame is constant
        hand_c = clip.gt_hands[0].vertices.mean(1)
        local = ((hand_c - clip.gt_object.translation)[:, None] @ clip.gt_object.rotation)[:, 0]
        assert float((local - local[0]).norm(dim=-1).max()) < 1e-4


def test_occlusion_from_rendered_labels(root, clips):
    hand_faces = _hand_faces()
    for name, target in (("MOVE", 0.4), ("TURN", 0.0), ("PINCH", 0.2)):
        clip, model = clips[name]
        alone = render_labels([(clip.gt_object.vertices, model.faces)], clip.K, SIZE)[0] == 1
        hidden = []
        for t, frame in enumerate(clip.frame_ids):
            obj, hand = read_segmentation(root / "train" / name / "seg" / f"{frame}.png", SIZE)
            hidden.append(1.0 - obj.sum() / alone[t].sum().item())
            assert not (obj & ~alone[t].numpy()).any(), "visible object pixels lie inside the object's silhouette"
        assert np.mean(hidden) == pytest.approx(target, abs=0.1), name
    # the occluder really is the hand: re-rendering both meshes gives the written labels
    clip, model = clips["MOVE"]
    labels = render_labels([(clip.gt_object.vertices, model.faces), (clip.gt_hands[0].vertices, hand_faces)],
                           clip.K, SIZE)[0]
    obj, hand = read_segmentation(root / "train" / "MOVE" / "seg" / "0016.png", SIZE)
    assert mask_iou(obj, labels[4].numpy() == 1) > 0.97 and mask_iou(hand, labels[4].numpy() == 2) > 0.97


def test_camera_distance_and_focal(clips):
    clip, _ = clips["MOVE"]
    assert float(clip.K[0, 0]) == pytest.approx(1000.0 * SIZE[1] / 640, rel=1e-6)
    assert float(clip.K[1, 1]) == pytest.approx(1000.0 * SIZE[1] / 640, rel=1e-6)
    assert float(clip.gt_object.vertices.mean(1)[:, 2].mean()) == pytest.approx(0.35, abs=0.01)
    nominal, _ = clips["PINCH"]
    assert float(nominal.K[0, 0]) == pytest.approx(NOMINAL.focal_px * SIZE[1] / 640, rel=1e-6)
    assert float(nominal.gt_object.vertices.mean(1)[:, 2].mean()) == pytest.approx(0.5, abs=0.01)
    for clip, _ in clips.values():  # the object stays in the image
        pix = clip.gt_object.vertices @ clip.K.T
        pix = pix[..., :2] / pix[..., 2:]
        assert float(pix.min()) >= 0 and float(pix[..., 0].max()) <= SIZE[1] - 1 and float(pix[..., 1].max()) <= SIZE[0] - 1


def test_uniform_orientations_cover_so3():
    rotations = uniform_rotations(np.random.default_rng(0), 4000)
    angles = geodesic_distance(torch.eye(3, dtype=rotations.dtype), rotations).numpy()
    # Haar measure: angle density (1 - cos a) / pi on [0, pi], CDF (a - sin a) / pi
    assert stats.kstest(angles, lambda a: (a - np.sin(a)) / np.pi).pvalue > 0.01
    up = rotations[:, :, 2].numpy()   # where the object's z axis points in the camera
    assert abs(float((up[:, 1] > 0).mean()) - 0.5) < 0.03, "upside down (image y down) as often as upright"
    assert np.abs(up.mean(0)).max() < 0.05


def test_uniform_scene_writes_the_drawn_rotation(root, clips):
    record = read_scene_records(root)["UPRIGHT"]
    clip, _ = clips["UPRIGHT"]
    drawn = torch.tensor(record["realised"]["object_rotation_frame0"], dtype=torch.float64)
    assert float(geodesic_distance(drawn, clip.gt_object.rotation[0])) < 1e-4
    assert record["realised"]["occlusion"] <= 0.6 + 0.05


def test_grasps_touch_without_penetration(clips):
    for name in ("PINCH", "PALM", "OFF", "MOVE"):
        clip, model = clips[name]
        hand = clip.gt_hands[0]
        sdf = mesh_signed_distance(hand.vertices, clip.gt_object.vertices, model.faces)  # (T, V)
        assert float(sdf.min()) > -1e-3, f"{name}: {float(-sdf.min()) * 1000:.2f} mm inside the object"
        assert float(sdf.min(1).values.max()) < 2e-3, f"{name}: the hand touches the object in every frame"
        tips = mesh_signed_distance(hand.joints[:, 16:21], clip.gt_object.vertices, model.faces)[0]  # thumb..little
        if name == "PINCH":  # fingertips on it, the palm off it
            assert float(tips[0]) < 0.01 and float(tips[1:3].min()) < 0.01
            palm = mesh_signed_distance(hand.joints[:1, [0, 1, 4, 7, 10]].mean(1, keepdim=True),
                                        clip.gt_object.vertices[:1], model.faces)[0, 0]
            assert float(palm) > 0.01
        if name == "OFF":  # ring and little fingertips off the object
            assert float(tips[3:].min()) > 0.008


def test_mask_noise_in_the_evidence_only(root, clips):
    clip, model = clips["NOISY"]
    record = read_scene_records(root)["NOISY"]
    missed = record["realised"]["missed_frames"]
    assert len(missed) == 1 and missed[0] in FITTED and missed[0] != 0
    ious = []
    for t, frame in enumerate(clip.frame_ids):
        true_obj, _ = read_segmentation(root / "train" / "NOISY" / "seg_true" / f"{frame}.png", SIZE)
        evidence = (clip.object_masks[t] > 0).numpy()
        if int(frame) in missed:
            assert not evidence.any(), "the missed detection has no object mask"
            continue
        ious.append(mask_iou(evidence, true_obj))
    assert np.mean(ious) == pytest.approx(0.8, abs=0.03) and min(ious) > 0.72
    # the ground truth is untouched: the true labels are the rendered ground truth
    labels = render_labels([(clip.gt_object.vertices, model.faces), (clip.gt_hands[0].vertices, _hand_faces())],
                           clip.K, SIZE)[0]
    true_obj, _ = read_segmentation(root / "train" / "NOISY" / "seg_true" / "0008.png", SIZE)
    assert mask_iou(true_obj, labels[2].numpy() == 1) > 0.97


def test_perturb_mask_reaches_the_target_with_ragged_edges():
    yy, xx = np.mgrid[0:200, 0:240]
    disc = (yy - 100) ** 2 + (xx - 120) ** 2 <= 50 ** 2
    for target in (0.9, 0.8, 0.7):
        noisy = perturb_mask(disc, target, np.random.default_rng(int(target * 10)))
        assert mask_iou(noisy, disc) == pytest.approx(target, abs=0.01)
        assert (noisy & ~disc).any() or (disc & ~noisy).any()
    noisy = perturb_mask(disc, 0.7, np.random.default_rng(3))
    from scipy.ndimage import binary_erosion, label

    core = binary_erosion(disc, iterations=15)
    assert (core & ~noisy).any(), "holes inside, not only edge changes"
    assert label(~noisy)[1] >= 2, "a hole is a separate background component"
    assert np.array_equal(perturb_mask(disc, 1.0, np.random.default_rng(0)), disc)


def test_benchmark_varies_each_factor_on_its_own():
    specs = benchmark_specs()
    assert len(specs) >= 30 and len({s.name for s in specs}) == len(specs)
    bookkeeping = {"name", "factor", "level", "seed", "move_back"}
    nominal = dataclasses.asdict(NOMINAL)
    for spec in specs:
        if spec.factor == "all":
            continue
        changed = {k for k, v in dataclasses.asdict(spec).items() if nominal[k] != v} - bookkeeping
        assert changed <= set(FACTOR_FIELDS[spec.factor]), f"{spec.name} changes {changed}"
        assert spec.factor == "nominal" or changed, f"{spec.name} changes nothing"
    by = {f: [s for s in specs if s.factor == f] for f in FACTOR_FIELDS}
    assert max(s.translation_m for s in by["motion"]) == pytest.approx(0.02)
    assert max(s.rotation_deg for s in by["motion"]) == 15.0 and min(s.rotation_deg for s in by["motion"]) == 0.0
    assert {"037_scissors", "011_banana", "003_cracker_box", "019_pitcher_base"} <= {s.object_id for s in by["size"]}
    assert max(s.occlusion for s in by["occlusion"]) == 0.6
    assert {s.distance_m for s in by["distance"]} | {NOMINAL.distance_m} >= {0.3, 0.8}
    assert min(s.focal_px for s in by["focal"]) == 500.0 and max(s.focal_px for s in by["focal"]) == 1400.0
    assert {s.grasp for s in by["grasp"]} >= {"pinch", "palm"} and any(s.fingers_off for s in by["grasp"])
    assert any(s.missed_frames for s in by["mask_noise"]) and min(s.mask_iou for s in by["mask_noise"]) <= 0.7
    assert len(by["orientation"]) >= 3 and all(s.orientation == "uniform" for s in by["orientation"])
    assert len([s for s in specs if s.factor == "all"]) >= 3


def test_hand_size_scenes_come_last_and_set_only_the_size_coefficient():
    from hodata import handmodel
    from hodata.datasets.synthetic_scenes import hand_betas

    specs = benchmark_specs()
    assert [s.name for s in specs[:44]][-1] == "RB43_all"  # earlier names and seeds unchanged
    sizes = [s for s in specs if s.factor == "hand_size"]
    assert [s.hand_size for s in sizes] == [-2.0, 2.0] and specs[44:46] == sizes
    drawn = hand_betas(NOMINAL, np.random.default_rng(5))
    large = hand_betas(dataclasses.replace(NOMINAL, hand_size=2.0), np.random.default_rng(5))
    assert large[0] == 2.0 and torch.equal(large[1:], drawn[1:])
    # betas[0] is the size: +-2 units make the open hand about 10 % larger and smaller
    layer = handmodel.load(side="right", model="open", use_pca=False, dtype=torch.float64)
    zeros = torch.zeros(1, 3)

    def spread(b0: float) -> float:
        betas = torch.zeros(1, 10, dtype=torch.float64)
        betas[0, 0] = b0
        v = layer(global_orient=torch.eye(3, dtype=torch.float64)[None], hand_pose=torch.zeros(1, 45, dtype=torch.float64),
                  betas=betas, transl=zeros.double()).vertices[0]
        return float((v - v.mean(0)).norm(dim=-1).mean())

    small, mean, big = spread(-2.0), spread(0.0), spread(2.0)
    assert 1.08 < big / mean < 1.2 and 0.8 < small / mean < 0.92
    # the other scenes draw the size with the spread of adult hands (~7 %: 1.4 units of 5 %),
    # the rest of the shape as before
    rng = np.random.default_rng(7)
    draws = torch.stack([hand_betas(NOMINAL, rng) for _ in range(4000)])
    assert float(draws[:, 0].std()) == pytest.approx(1.4, rel=0.05) and float(draws[:, 0].abs().max()) <= 3.0
    assert float(draws[:, 1:].std()) < 0.5 and float(draws[:, 1:].abs().max()) <= 1.0
    size_spread = float(draws[:, 0].std()) * (big / mean - 1) / 2.0
    assert 0.06 < size_spread < 0.085


def test_grasp_change_turns_the_object_in_the_hand_and_keeps_contact(clips):
    from hodata.datasets.synthetic_scenes import CONTACT_MM

    clip, model = clips["ROLL"]
    hand, obj = clip.gt_hands[0], clip.gt_object
    # the object's rotation in the hand's frame turns by the asked mean angle between fitted frames
    in_hand = hand.global_orient.transpose(-1, -2) @ obj.rotation
    angles = geodesic_distance(in_hand[:-1], in_hand[1:]) * 180 / math.pi
    assert float(angles.mean()) == pytest.approx(10.0, abs=0.5)
    assert float(angles.max() - angles.min()) > 1.0  # at a varying speed
    # the fingers close on it afresh: the articulation changes, the grasp touches and does not
    # enter the object in any fitted frame (exact signed distance of the written meshes)
    assert float((hand.hand_pose[1:] - hand.hand_pose[:-1]).abs().max()) > 0.01
    placed = obj.vertices
    gaps = mesh_signed_distance(hand.vertices, placed, model.faces).amin(-1)
    assert float(gaps.max()) * 1000 <= CONTACT_MM + 0.5 and float(gaps.min()) * 1000 > -1.5
    # the rigid scenes keep the hand-object unit: the same scene without the roll
    rigid = benchmark_specs()
    assert [s.in_hand_roll_deg for s in rigid if s.factor == "grasp_change"] == [5.0, 10.0]
    assert all(s.in_hand_roll_deg == 0.0 for s in rigid if s.factor != "grasp_change")
    assert [s.factor for s in rigid[-2:]] == ["grasp_change"] * 2


def test_hand_noise_levels_scale_the_estimator_defaults():
    from hodata.evidence.hand_init import SimulatedHandEstimator

    default = SimulatedHandEstimator()
    doubled = SimulatedHandEstimator(**hand_noise_kwargs(2.0))
    for key in ("pixel_jitter", "scale_error", "pose_noise", "rotation_noise_deg", "vertex_jitter"):
        assert getattr(doubled, key) == pytest.approx(2.0 * getattr(default, key)), key
    assert SimulatedHandEstimator(**hand_noise_kwargs(1.0)).pose_noise == default.pose_noise


def test_bad_specs_are_refused(tmp_path):
    with pytest.raises(HodataError, match="grasp"):
        SceneSpec("X", grasp="claw").check()
    with pytest.raises(HodataError, match="unknown catalog object"):
        SceneSpec("X", object_id="999_nothing").check()
    with pytest.raises(HodataError, match="unique"):
        make_scene_ho3d(tmp_path, [SceneSpec("A"), SceneSpec("A")])
    with pytest.raises(HodataError, match="does not fit"):
        from hodata.datasets.synthetic_scenes import write_scene

        write_scene(tmp_path, SceneSpec("BIG", distance_m=0.15, focal_px=1400.0),
                    image_size=SIZE, cache_dir=tmp_path / "cache")


def _bench_module():
    path = Path(__file__).resolve().parents[1] / "bench" / "bench_robust.py"
    spec = importlib.util.spec_from_file_location("bench_robust", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_overrides_and_one_short_fit(root, cache):
    bench = _bench_module()
    fit, init = bench.parse_overrides(["weights.smooth=5", "steps_stage1=3", "init.n_hypotheses=4",
                                       "interaction_moves_objects=true"], ["collision"])
    assert fit.weights["smooth"] == 5.0 and fit.steps_stage1 == 3 and isinstance(fit.steps_stage1, int)
    assert init.n_hypotheses == 4 and fit.interaction_moves_objects is True and "collision" in fit.disabled
    with pytest.raises(SystemExit, match="fit.roi_size or init.roi_size"):
        bench.parse_overrides(["roi_size=3"], [])
    with pytest.raises(SystemExit, match="no such field"):
        bench.parse_overrides(["no_such_field=1"], [])
    with pytest.raises(SystemExit, match="target_error must lie in"):
        bench.main(["--target-error", "2", "--work", str(cache / "unused"), "--build-only"])
    assert bench.parse_overrides(["occlusion_erode_m=none"], [])[0].occlusion_erode_m is None
    assert bench.parse_overrides(["occlusion_erode_m=0.01"], [])[0].occlusion_erode_m == 0.01
    fit, init = bench.parse_overrides(["steps_stage1=3", "steps_stage2=3", "init.n_hypotheses=4",
                                       "init.n_samples=20", "init.steps_first=3", "init.steps_per_frame=2"], [])
    result = bench.fit_scene(str(root), "NOISY", 1.0, str(cache), dataclasses.asdict(fit), dataclasses.asdict(init),
                             ("independent", "joint"), 0)
    # the missed detection is carried by its neighbours (fit_clip flags it instead of failing)
    assert result["status"] == "fitted" and set(result["methods"]) == {"independent", "joint", "init"}
    result = bench.fit_scene(str(root), "PINCH", 1.0, str(cache), dataclasses.asdict(fit), dataclasses.asdict(init),
                             ("independent", "joint"), 0)
    assert result["status"] == "fitted" and set(result["methods"]) == {"independent", "joint", "init"}
    for method in ("independent", "joint"):
        metrics = result["methods"][method]
        for key in ("object_adds_cm", "hand_vertex_cm", "hand_vertex_pa_cm", "penetration_mm", "contact_pct",
                    "object_rotation_deg"):
            assert metrics[key] is not None and math.isfinite(metrics[key]), (method, key)
    # the 2D target carrying the init's own error reaches the fit (the init itself is unchanged)
    carried = bench.fit_scene(str(root), "PINCH", 1.0, str(cache), dataclasses.asdict(fit), dataclasses.asdict(init),
                              ("independent",), 0, {"target_error": 1.0, "target_scale_jitter": 0.05})
    assert carried["status"] == "fitted"
    assert carried["methods"]["init"]["hand_vertex_cm"] == pytest.approx(result["methods"]["init"]["hand_vertex_cm"])
    pa = [r["methods"]["independent"]["hand_vertex_pa_cm"] for r in (carried, result)]
    assert pa[0] != pa[1]
    table = bench.factor_table({"conditions": {"methods": ["independent", "joint"]},
                                "clips": {"PINCH": {"spec": {"factor": "grasp", "level": "pinch"}, "result": result}}})
    assert "grasp: pinch" in table and "ALL clips" in table


def _depth_order_values(clip, model, hand_vertices):
    """Both directions of the depth-order term (hand behind object, object behind hand) for the
    true object and the given hand vertices, against the clip's masks."""
    from hodata.fitting import FitConfig
    from hodata.fitting import losses as L
    from hodata.fitting.joint import object_evidence
    from hodata.geometry.camera import project
    from hodata.geometry.depth_order import (eroded_labels, front_depth_at, front_depth_grid, label_at,
                                             mean_edge_pixels)

    config = FitConfig(roi_size=64)
    evidence = object_evidence(model.vertices, model.faces, model.sdf, clip.K, clip.object_boxes,
                               clip.object_masks, config)
    object_vertices = clip.gt_object.vertices
    hand_px, object_px = project(hand_vertices, evidence.K_roi), project(object_vertices, evidence.K_roi)
    cell = torch.maximum(mean_edge_pixels(hand_px, _hand_faces()),
                         mean_edge_pixels(object_px, model.faces)).clamp_min(2)
    object_shown, hand_shown = eroded_labels(evidence.target, config.occlusion_erode)
    grid = config.roi_size // 2 + 1
    front_object = front_depth_at(front_depth_grid(object_px, object_vertices[..., 2], cell, grid), hand_px, cell)
    front_hand = front_depth_at(front_depth_grid(hand_px, hand_vertices[..., 2], cell, grid), object_px, cell)
    hand_behind = L.depth_order_loss(hand_vertices[..., 2], front_object, label_at(object_shown, hand_px))
    object_behind = L.depth_order_loss(object_vertices[..., 2], front_hand, label_at(hand_shown, object_px))
    return float(hand_behind), float(object_behind)


def test_depth_order_from_the_masks_holds_at_the_truth_and_fails_off_it(clips):
    # The masks were z-buffered by the scene generator, an independent route: the true hand
    # satisfies the order they show (up to the vertex grid's reach), while the same hand slid
    # along the viewing rays (scaled about the camera: the same image) 15 % in front of the
    # object, or behind it, breaks it.
    totals = {"truth": [0.0, 0.0], "nearer": [0.0, 0.0], "farther": [0.0, 0.0]}
    for name in ("MOVE", "TURN", "PINCH", "PALM", "OFF", "UPRIGHT"):
        clip, model = clips[name]
        truth = clip.gt_hands[0].vertices
        for key, factor in (("truth", 1.0), ("nearer", 0.85), ("farther", 1.15)):
            values = _depth_order_values(clip, model, truth * factor)
            totals[key] = [a + b for a, b in zip(totals[key], values)]
    assert totals["nearer"][0] > 0 and totals["farther"][1] > 0, totals  # each direction has evidence
    assert sum(totals["truth"]) < 0.05 * min(totals["nearer"][0], totals["farther"][1]), totals


def _slid_init(init, layer, factor):
    """The hand init slid along its viewing rays by `factor` (its image kept at its own size)."""
    with torch.no_grad():
        rest = layer(global_orient=init.global_orient, hand_pose=init.hand_pose,
                     betas=init.betas.expand(init.hand_pose.shape[0], -1), transl=init.transl).vertices.mean(1)
    return dataclasses.replace(init, transl=init.transl + (factor - 1.0) * rest)


@pytest.mark.parametrize("factor", [0.85, 1.15])
def test_joint_fit_puts_a_hand_init_off_in_depth_where_the_masks_order_it(root, cache, factor):
    # The hand init 15 % of its depth in front of the object or behind it (the simulated init's
    # one-sigma depth error is 15 %); the joint fit must bring the hand back to the object:
    # its centroid's depth error relative to the object under 1.5 cm.
    from hodata.evidence.gt import gt_clip_evidence
    from hodata.evidence.hand_init import SimulatedHandEstimator
    from hodata.fitting import FitConfig, ObjectInitConfig, fit_clip

    ds = HO3DDataset(root, sequences=["MOVE"], clip_length=CLIP_LENGTH, stride=STRIDE, cache_dir=cache)
    clip = ds[0]
    # The 2D target is the true hand's projection: this test isolates the depth order. With the
    # default target (the estimator's own hand, session 13) the relative depth ends 1.6-1.9 cm
    # off here: the target's articulation error moves the hand's 2D fit, and so its depth.
    estimator = SimulatedHandEstimator(seed=0, scale_error=0.0, target_error=0.0, target_scale_jitter=0.0)
    layer = estimator.layer("right", clip.gt_hands[0].model_name, torch.float32, torch.device("cpu"))
    init = _slid_init(estimator(clip)[0], layer, factor)
    config = FitConfig(steps_stage1=80, steps_stage2=40, roi_size=64)
    init_config = ObjectInitConfig(n_samples=200, n_hypotheses=20, n_propagate=5, steps_first=30,
                                   steps_per_frame=15, roi_size=64)
    fit = fit_clip(clip, gt_clip_evidence(clip, lambda _: [init]), ds.model_for_clip(clip), {"right": layer},
                   config, init_config, methods=("joint",), device="cpu", seed=0)["joint"]
    truth_hand, truth_object = clip.gt_hands[0].vertices.float(), clip.gt_object.vertices.float()
    with torch.no_grad():
        start = layer(global_orient=init.global_orient, hand_pose=init.hand_pose,
                      betas=init.betas.expand(len(clip), -1), transl=init.transl).vertices
    gap = lambda hand, obj: (hand.mean(1)[:, 2] - obj.mean(1)[:, 2])  # noqa: E731
    before = (gap(start, truth_object) - gap(truth_hand, truth_object)).abs().mean()
    after = (gap(fit.hands[0].vertices, fit.objects[0].vertices) - gap(truth_hand, truth_object)).abs().mean()
    assert before > 0.04  # the scene is what the test claims
    assert after < 0.015, (float(before), float(after))
