"""Robustness benchmark: fit factor-controlled HO-3D-layout scenes and report per factor.

    python bench/bench_robust.py [--factors motion,size] [--clips RB03,RB04 | --clips 5]
        [--steps 200] [--workers 2] [--out bench/robust.json] [--resume]
        [--config smooth_mode=accel --config weights.smooth=100 --config init.n_hypotheses=20]
        [--disable smooth]
    python bench/bench_robust.py --compare bench/robust_baseline.json after.json
    python bench/bench_robust.py --show bench/robust_baseline.json

Scenes: `hodata.datasets.synthetic_scenes.benchmark_specs` (48 scenes: 3 nominal replicates,
each factor varied on its own around the nominal scene, 4 scenes with every factor drawn at
once, 2 with a small and a large hand, 2 with the object turning in the hand), written once under `--work` (default bench/_work/robust, gitignored) and reused while
their spec is unchanged. Each scene is one clip of 10 frames at stride 4 read back through the
real adapter (HO3DDataset, `gt` evidence: boxes from the ground truth, masks from the written
seg files, which carry the scene's mask noise). Hand init: SimulatedHandEstimator with the
scene's noise level (default noise x `hand_noise`); its 2D target carries A x its own pose and rotation
error and a per-frame size error of sigma S (`--target-error A --target-scale-jitter S`, default the
estimator's 0.5 and 0.05: a regressor's target is the projection of its own hand; 0 0 is the true hand's
projection, the default before session 13). Both methods share one object init per
clip (`hodata.fitting.fit_clip`). Metrics: `hodata.app.evaluate.evaluate_fit_against_clip` (the
`hodata eval` route: exact SDF for penetration / contact, contact tolerance 0 as the paper),
plus the object rotation error, the per-frame ADD-S maximum, and the hand init's own errors
(method "init").

Table: rows = factor level, cells "independent / joint" means over that level's clips;
"joint wins" = share of clips where joint has the lower hand vertex error; "rot<=20" = share
of clips whose mean object rotation error is within 20 degrees (the silhouette flip shows in
the symmetric rows). Clips that fail are counted per row and left out of the means.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_WORK = HERE / "_work" / "robust"
METHODS = ("independent", "joint")
COLUMNS = (  # (result key, header, format)
    ("object_vertex_cm", "obj vtx cm", "{:.2f}"),
    ("object_adds_cm", "ADD-S cm", "{:.2f}"),
    ("hand_vertex_cm", "hand vtx cm", "{:.2f}"),
    ("hand_joint_st_cm", "mepe al. cm", "{:.2f}"),
    ("hand_vertex_pa_cm", "PA vtx cm", "{:.2f}"),
    ("penetration_mm", "pen. mm", "{:.1f}"),
    ("contact_pct", "contact %", "{:.0f}"),
)
ROTATION_OK_DEG = 20.0


# ------------------------------------------------------------------------------ options


def parse_overrides(pairs: list[str], disabled: list[str]):
    """FitConfig and ObjectInitConfig with `key=value` overrides applied.

    A key names a field of FitConfig or ObjectInitConfig (prefix `fit.` or `init.` when both
    have it, e.g. roi_size); `weights.NAME=value` sets one loss weight. Values are parsed by
    the field's current value type (bool: true/false/1/0; tuple: comma-separated; otherwise
    JSON, then the raw string). Unknown keys raise SystemExit naming the known ones.
    """
    from hodata.fitting import FitConfig, ObjectInitConfig

    fit, init = FitConfig(), ObjectInitConfig()
    fit_fields = {f.name for f in dataclasses.fields(fit)}
    init_fields = {f.name for f in dataclasses.fields(init)}
    fit_changes, init_changes = {}, {}
    weights = dict(fit.weights)
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--config {pair!r}: expected key=value")
        key, raw = pair.split("=", 1)
        key = key.strip()
        target = None
        if key.startswith("fit."):
            key, target = key[4:], "fit"
        elif key.startswith("init."):
            key, target = key[5:], "init"
        if key.startswith("weights."):
            name = key.split(".", 1)[1]
            weights[name] = float(raw)
            continue
        if target is None:
            in_fit, in_init = key in fit_fields, key in init_fields
            if in_fit and in_init:
                raise SystemExit(f"--config {key}: both FitConfig and ObjectInitConfig have it; write fit.{key} or "
                                 f"init.{key}")
            target = "fit" if in_fit else "init" if in_init else None
        fields = fit_fields if target == "fit" else init_fields if target == "init" else set()
        if key not in fields:
            raise SystemExit(f"--config {key}: no such field; FitConfig: {', '.join(sorted(fit_fields))}; "
                             f"ObjectInitConfig: {', '.join(sorted(init_fields))}")
        current = getattr(fit if target == "fit" else init, key)
        value = _parse_value(raw, current, key)
        (fit_changes if target == "fit" else init_changes)[key] = value
    fit_changes["weights"] = weights
    if disabled:
        fit_changes["disabled"] = tuple(dict.fromkeys(tuple(fit_changes.get("disabled", fit.disabled)) +
                                                      tuple(disabled)))
    return dataclasses.replace(fit, **fit_changes), dataclasses.replace(init, **init_changes)


def _parse_value(raw: str, current, key: str):
    if raw.lower() in ("none", "null"):  # an optional setting switched off (occlusion_erode_m=none)
        return None
    if isinstance(current, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise SystemExit(f"--config {key}={raw}: expected true or false")
    if isinstance(current, tuple):
        return tuple(s for s in raw.split(",") if s)
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        try:
            return type(current)(float(raw)) if isinstance(current, int) and float(raw).is_integer() else float(raw)
        except ValueError:
            raise SystemExit(f"--config {key}={raw}: expected a number") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def select_specs(clips: str | None, factors: str | None):
    from hodata.datasets.synthetic_scenes import benchmark_specs

    specs = benchmark_specs()
    if factors:
        wanted = [f.strip() for f in factors.split(",") if f.strip()]
        known = sorted({s.factor for s in specs})
        unknown = [f for f in wanted if f not in known]
        if unknown:
            raise SystemExit(f"--factors {', '.join(unknown)}: unknown; choose from {', '.join(known)}")
        specs = [s for s in specs if s.factor in wanted]
    if clips:
        if clips.isdigit():
            specs = specs[: int(clips)]
        else:
            names = [c.strip() for c in clips.split(",") if c.strip()]
            chosen = [s for s in specs if any(s.name == n or s.name.startswith(n + "_") for n in names)]
            if not chosen:
                raise SystemExit(f"--clips {clips}: no scene matches; names look like {specs[0].name}")
            specs = chosen
    return specs


# ------------------------------------------------------------------------------ workers


def _init_worker(nice: int) -> None:
    import torch

    torch.set_num_threads(1)
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass


def _same_spec(recorded: dict | None, spec) -> bool:
    """Whether a scene record was written for `spec`; fields added to SceneSpec after the
    record was written count at their defaults (the scene they describe is the same)."""
    from hodata.datasets.synthetic_scenes import SceneSpec

    try:
        return SceneSpec.from_dict(recorded).to_dict() == spec.to_dict()
    except (TypeError, AttributeError):
        return False


def build_scene(root: str, spec_dict: dict, image_size: tuple[int, int], cache: str) -> dict:
    """Worker: write one scene (unless its record already matches the spec) -> its record."""
    from hodata.datasets.synthetic_scenes import SCENES_DIR, SceneSpec, scene_version, write_scene

    spec = SceneSpec.from_dict(spec_dict)
    path = Path(root) / SCENES_DIR / f"{spec.name}.json"
    if path.is_file():
        record = json.loads(path.read_text())
        if (_same_spec(record.get("spec"), spec) and record.get("image_size") == list(image_size)
                and record.get("version", 1) == scene_version(spec)):
            return record
    return write_scene(root, spec, image_size=image_size, cache_dir=cache)


def _rotation_error_deg(pred, gt):
    import torch

    from hodata.geometry.rotations import geodesic_distance

    return geodesic_distance(pred.rotation.to(torch.float64), gt.rotation.to(torch.float64)) * (180.0 / math.pi)


def _depth_errors(hand_pred, hand_gt, object_pred, object_gt) -> dict:
    """Signed depth errors (cm, mean over frames) of the hand centroid, alone and relative to the object."""
    hand_dz = hand_pred.mean(1)[:, 2] - hand_gt.mean(1)[:, 2]
    object_dz = object_pred.mean(1)[:, 2].to(hand_dz) - object_gt.mean(1)[:, 2].to(hand_dz)
    return {"hand_depth_cm": float(hand_dz.mean()) * 100.0,
            "hand_relative_depth_cm": float((hand_dz - object_dz).mean()) * 100.0,
            "hand_centroid_cm": float((hand_pred.mean(1) - hand_gt.mean(1)).norm(dim=-1).mean()) * 100.0}


def fit_scene(root: str, name: str, hand_noise: float, cache: str, fit_config: dict, init_config: dict,
              methods: tuple[str, ...], seed: int, hand_target: dict | None = None) -> dict:
    """Worker: fit one scene's clip with every method and measure it -> result dict.

    hand_target: SimulatedHandEstimator's 2D-target noise (target_error, target_scale_jitter),
    the same in every scene (not scaled by the scene's hand_noise level).
    """
    import torch

    from hodata.datasets.ho3d import HO3DDataset
    from hodata.datasets.synthetic_scenes import CLIP_LENGTH, STRIDE, hand_noise_kwargs
    from hodata.errors import HodataError
    from hodata.app.evaluate import ObjectModelCache, evaluate_fit_against_clip
    from hodata.evidence.gt import gt_clip_evidence
    from hodata.evidence.hand_init import SimulatedHandEstimator
    from hodata.fitting import FitConfig, ObjectInitConfig, fit_clip
    from hodata.fitting.object_init import near_symmetries, rotation_error_up_to_symmetry
    from hodata.metrics import hand as hand_metrics
    from hodata.metrics.object import add_s, posed_object_vertices

    start = time.perf_counter()
    config = FitConfig(**{**fit_config, "disabled": tuple(fit_config["disabled"])})
    init_config = ObjectInitConfig(**init_config)
    try:
        ds = HO3DDataset(root, sequences=[name], clip_length=CLIP_LENGTH, stride=STRIDE, cache_dir=cache)
        clip = ds[0]
        model = ds.model_for_clip(clip)
        estimator = SimulatedHandEstimator(seed=seed, **hand_noise_kwargs(hand_noise), **(hand_target or {}))
        inits = estimator(clip)
        layers = {h.side: estimator.layer(h.side, h.model_name, torch.float32, torch.device("cpu"))
                  for h in clip.gt_hands}
        evidence = gt_clip_evidence(clip, lambda _: inits)
        fits = fit_clip(clip, evidence, model, layers, config, init_config, methods=methods, device="cpu", seed=seed)
    except HodataError as exc:
        return {"status": "failed", "message": str(exc), "seconds": time.perf_counter() - start}

    models = ObjectModelCache(Path(cache), torch.device("cpu"), torch.float32)
    gt_obj, gt_hand = clip.gt_object, clip.gt_hands[0]
    canonical = model.vertices.to(torch.float32)
    gt_verts = posed_object_vertices(gt_obj, canonical)
    symmetries = near_symmetries(canonical)
    out = {"status": "fitted", "methods": {}, "near_symmetries": int(symmetries.shape[0]) - 1}
    for method, fit in fits.items():
        metrics = evaluate_fit_against_clip(fit, clip, models)
        pred = fit.objects[0]
        rot_err = _rotation_error_deg(pred, gt_obj)
        pred_verts = posed_object_vertices(pred, canonical)
        adds_frames = add_s(pred_verts, gt_verts) * 100.0
        moved_pred = (pred_verts.mean(1)[1:] - pred_verts.mean(1)[:-1]).norm(dim=-1) * 100.0
        moved_gt = (gt_verts.mean(1)[1:] - gt_verts.mean(1)[:-1]).norm(dim=-1) * 100.0
        metrics.update({
            "object_rotation_deg": float(rot_err.mean()),
            "object_rotation_ok": bool(float(rot_err.mean()) <= ROTATION_OK_DEG),
            # up to the model's near-exact half turns (poses placing the same surface within 2 %
            # of its diameter; hodata.fitting.object_init.near_symmetries)
            "object_rotation_sym_deg": float(rotation_error_up_to_symmetry(pred.rotation.to(torch.float32),
                                                                           gt_obj.rotation.to(torch.float32),
                                                                           symmetries)),
            "object_adds_max_cm": float(adds_frames.max()),
            "object_motion_cm": float(moved_pred.mean()),
            "object_motion_gt_cm": float(moved_gt.mean()),
            "object_candidate": fit.losses.get("object_candidate"),
            # which hand start the full objective chose (FitConfig.hand_starts index)
            "hand_start": fit.losses.get("hand_start"),
            "mask_iou": fit.losses.get("mask_iou"),
            "v2d_px": fit.losses.get("v2d_px"),
            # the weighted objective at the end of the method's last stage
            "objective": fit.losses.get("total"),
            "seconds": float(sum(fit.loss_history.get("timings_s", []))),
            # per frame, for the label-quality validation (bench/bench_quality.py)
            "hand_vertex_cm_frames": [float(v) * 100.0 for v in
                                      hand_metrics.vertex_error(fit.hands[0].vertices.to(gt_hand.vertices),
                                                                gt_hand.vertices).tolist()],
            "object_adds_cm_frames": [float(v) for v in adds_frames.tolist()],
            # where the hand's error comes from: its centroid along the camera's z axis, alone
            # and relative to the object's centroid (signed, fit minus truth; + = too far)
            **_depth_errors(fit.hands[0].vertices.to(gt_hand.vertices), gt_hand.vertices, pred_verts, gt_verts),
            "quality": fit.quality,
        })
        out["methods"][method] = metrics
    # the hand init itself (what joint fitting should keep or improve)
    init = inits[0]
    layer = layers[init.side]
    with torch.no_grad():
        init_out = layer(global_orient=init.global_orient, hand_pose=init.hand_pose,
                         betas=init.betas.expand(init.hand_pose.shape[0], -1), transl=init.transl)
    gt_v = gt_hand.vertices.to(init_out.vertices)
    gt_j = gt_hand.joints.to(init_out.joints)
    out["methods"]["init"] = {
        "hand_vertex_cm": float(hand_metrics.vertex_error(init_out.vertices, gt_v).mean()) * 100.0,
        "hand_vertex_pa_cm": float(hand_metrics.pa_error(init_out.vertices, gt_v).mean()) * 100.0,
        "hand_joint_st_cm": float(hand_metrics.st_joint_error(init_out.joints, gt_j).mean()) * 100.0,
        "hand_depth_cm": float((init_out.vertices.mean(1)[:, 2] - gt_v.mean(1)[:, 2]).mean()) * 100.0,
        "frames": len(clip),
    }
    out["seconds"] = time.perf_counter() - start
    return out


# ------------------------------------------------------------------------------ tables


def _mean(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(values) / len(values) if values else None


def _fmt(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def group_rows(clips: dict) -> list[tuple[str, list[str]]]:
    """[(row label, clip names)]: one row per (factor, level) in benchmark order, then "all"."""
    rows: dict[str, list[str]] = {}
    for name, clip in clips.items():
        spec = clip["spec"]
        label = spec["factor"] if spec["factor"] in ("nominal", "all") else f"{spec['factor']}: {spec['level']}"
        rows.setdefault(label, []).append(name)
    return list(rows.items()) + [("ALL clips", list(clips))]


def row_values(clips: dict, names: list[str], method: str) -> dict:
    fitted = [clips[n] for n in names if clips[n]["result"]["status"] == "fitted"]
    values = {}
    for key, _, _ in COLUMNS:
        values[key] = _mean([c["result"]["methods"].get(method, {}).get(key) for c in fitted])
    values["rot_ok"] = _mean([100.0 * c["result"]["methods"][method]["object_rotation_ok"] for c in fitted
                              if method in c["result"]["methods"] and "object_rotation_ok" in c["result"]["methods"][method]])
    values["rot_sym_ok"] = _mean([100.0 * (c["result"]["methods"][method]["object_rotation_sym_deg"] <= ROTATION_OK_DEG)
                                  for c in fitted if "object_rotation_sym_deg" in c["result"]["methods"].get(method, {})])
    values["failed"] = len(names) - len(fitted)
    return values


def joint_wins(clips: dict, names: list[str]) -> float | None:
    wins = []
    for n in names:
        res = clips[n]["result"]
        if res["status"] != "fitted" or not {"joint", "independent"} <= set(res["methods"]):
            continue
        j, i = res["methods"]["joint"].get("hand_vertex_cm"), res["methods"]["independent"].get("hand_vertex_cm")
        if j is not None and i is not None:
            wins.append(100.0 * (j < i))
    return _mean(wins)


def factor_table(results: dict) -> str:
    """Markdown table of a results JSON (module docstring)."""
    clips = results["clips"]
    methods = [m for m in results["conditions"]["methods"] if m in METHODS]
    header = ["factor level", "clips"] + [h for _, h, _ in COLUMNS] + ["joint wins hand %", "rot<=20 %",
                                                                       "rot<=20 up to sym. %", "init PA cm"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, names in group_rows(clips):
        per_method = {m: row_values(clips, names, m) for m in methods}
        cells = [label, str(len(names)) + (f" ({per_method[methods[0]]['failed']} failed)"
                                           if per_method[methods[0]]["failed"] else "")]
        for key, _, fmt in COLUMNS:
            cells.append(" / ".join(_fmt(per_method[m][key], fmt) for m in methods))
        cells.append(_fmt(joint_wins(clips, names), "{:.0f}"))
        cells.append(" / ".join(_fmt(per_method[m]["rot_ok"], "{:.0f}") for m in methods))
        cells.append(" / ".join(_fmt(per_method[m]["rot_sym_ok"], "{:.0f}") for m in methods))
        init_pa = _mean([clips[n]["result"]["methods"]["init"]["hand_vertex_pa_cm"] for n in names
                         if clips[n]["result"]["status"] == "fitted"])
        cells.append(_fmt(init_pa, "{:.2f}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scenes_table(results: dict) -> str:
    """Markdown table: each scene's realised factors (from its generation record)."""
    header = ["scene", "object", "motion cm / deg per fitted frame", "occlusion %", "distance m", "focal px",
              "grasp", "mask IoU", "min hand-object gap mm", "hand noise x", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, clip in results["clips"].items():
        spec, real = clip["spec"], clip["realised"]
        grasp = spec["grasp"] + (f" ({'+'.join(spec['fingers_off'])} off)" if spec["fingers_off"] else "")
        iou = f"{real['mask_iou']:.2f}" + (f", missed {real['missed_frames']}" if real["missed_frames"] else "")
        lines.append("| " + " | ".join([
            name, spec["object_id"], f"{100 * real['translation_m']:.2f} / {real['rotation_deg']:.1f}",
            f"{100 * real['occlusion']:.0f}", f"{real['distance_m']:.2f}", f"{real['focal_px']:.0f}", grasp, iou,
            f"{real['min_clearance_mm']:.2f}", f"{spec['hand_noise']:g}", clip["result"]["status"]]) + " |")
    return "\n".join(lines)


def compare_table(a: dict, b: dict) -> str:
    """Per factor level: metric A -> B for each method, over clips fitted in both runs."""
    common = [n for n in a["clips"] if n in b["clips"]
              and a["clips"][n]["result"]["status"] == "fitted" and b["clips"][n]["result"]["status"] == "fitted"]
    clips_a = {n: a["clips"][n] for n in common}
    clips_b = {n: b["clips"][n] for n in common}
    methods = [m for m in METHODS if m in a["conditions"]["methods"] and m in b["conditions"]["methods"]]
    keys = [("object_adds_cm", "ADD-S cm", "{:.2f}"), ("hand_vertex_cm", "hand vtx cm", "{:.2f}"),
            ("hand_vertex_pa_cm", "PA vtx cm", "{:.2f}"), ("penetration_mm", "pen. mm", "{:.1f}"),
            ("contact_pct", "contact %", "{:.0f}")]
    header = ["factor level", "clips"] + [f"{h} {m[:5]}" for _, h, _ in keys for m in methods] + [
        "joint wins hand %", "rot<=20 % joint", "rot<=20 up to sym. % joint"]
    lines = [f"A = {a['conditions'].get('label', 'A')}, B = {b['conditions'].get('label', 'B')}; cells A -> B; "
             f"{len(common)} clips fitted in both", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, names in group_rows(clips_a):
        cells = [label, str(len(names))]
        for key, _, fmt in keys:
            for m in methods:
                va = row_values(clips_a, names, m)[key]
                vb = row_values(clips_b, names, m)[key]
                cells.append(f"{_fmt(va, fmt)} -> {_fmt(vb, fmt)}")
        cells.append(f"{_fmt(joint_wins(clips_a, names), '{:.0f}')} -> {_fmt(joint_wins(clips_b, names), '{:.0f}')}")
        ra = row_values(clips_a, names, "joint")["rot_ok"] if "joint" in methods else None
        rb = row_values(clips_b, names, "joint")["rot_ok"] if "joint" in methods else None
        cells.append(f"{_fmt(ra, '{:.0f}')} -> {_fmt(rb, '{:.0f}')}")
        sa = row_values(clips_a, names, "joint")["rot_sym_ok"] if "joint" in methods else None
        sb = row_values(clips_b, names, "joint")["rot_sym_ok"] if "joint" in methods else None
        cells.append(f"{_fmt(sa, '{:.0f}')} -> {_fmt(sb, '{:.0f}')}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    os.replace(tmp, path)


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    from hodata.evidence.hand_init import TARGET_ERROR, TARGET_SCALE_JITTER

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factors", help="comma-separated factors to run (nominal, motion, size, orientation, grasp, "
                                          "occlusion, distance, focal, mask_noise, hand_noise, symmetric, all, "
                                          "hand_size)")
    parser.add_argument("--clips", help="scene names or prefixes (RB03,RB04), or a count N (the first N selected)")
    parser.add_argument("--steps", type=int, help="steps of each joint-fit stage (default FitConfig's 200)")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="FitConfig / ObjectInitConfig override, repeatable (fit.KEY, init.KEY, weights.NAME)")
    parser.add_argument("--disable", action="append", default=[], metavar="TERM",
                        help="loss term to switch off (FitConfig.disabled), repeatable")
    parser.add_argument("--methods", default="independent,joint", help="comma-separated: independent, joint")
    parser.add_argument("--workers", type=int, default=1, help="separate processes (each 1 torch thread)")
    parser.add_argument("--nice", type=int, default=5, help="niceness added in the worker processes")
    parser.add_argument("--out", type=Path, help="write per-clip results and conditions to this JSON")
    parser.add_argument("--label", default="", help="name of this run in the JSON and in --compare")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scene and mesh cache folder")
    parser.add_argument("--image-size", default="480x640", help="HxW of the written frames")
    parser.add_argument("--seed", type=int, default=0, help="hand-init noise and object-init seed")
    parser.add_argument("--target-error", type=float, default=TARGET_ERROR,
                        help="share in [0, 1] of the hand init's pose and rotation noise carried into its 2D target "
                             f"(a regressor's target is its own hand; default {TARGET_ERROR:g}, the estimator's; "
                             "0 = the true hand's projection)")
    parser.add_argument("--target-scale-jitter", type=float, default=TARGET_SCALE_JITTER,
                        help="sigma of the per-frame log error of the 2D target's size "
                             f"(default {TARGET_SCALE_JITTER:g}, the estimator's; 0 = none)")
    parser.add_argument("--build-only", action="store_true", help="write the scenes and stop")
    parser.add_argument("--resume", action="store_true",
                        help="keep the clips already in --out when its conditions match (config, methods, seed, size, "
                             "2D target noise)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"),
                        help="print the per-factor comparison of two saved runs and stop")
    parser.add_argument("--show", type=Path, metavar="RUN.json",
                        help="print the per-factor table and the scenes' realised factors of a saved run and stop")
    args = parser.parse_args(argv)
    from hodata.errors import HodataError
    from hodata.evidence.hand_init import check_target_noise

    try:
        check_target_noise(args.target_error, args.target_scale_jitter)
    except HodataError as exc:
        raise SystemExit(f"--target-error / --target-scale-jitter: {exc}") from None

    if args.show:
        saved = json.loads(args.show.read_text())
        print(factor_table(saved))
        print()
        print(scenes_table(saved))
        return 0
    if args.compare:
        a, b = (json.loads(p.read_text()) for p in args.compare)
        print(compare_table(a, b))
        return 0

    methods = tuple(m for m in args.methods.split(",") if m)
    if not methods or any(m not in METHODS for m in methods):
        raise SystemExit(f"--methods {args.methods}: choose from {', '.join(METHODS)}")
    overrides = list(args.config)
    if args.steps:
        overrides = [f"steps_stage1={args.steps}", f"steps_stage2={args.steps}"] + overrides
    fit_config, init_config = parse_overrides(overrides, args.disable)
    height, width = (int(v) for v in args.image_size.lower().split("x"))
    specs = select_specs(args.clips, args.factors)
    work = args.work.resolve()
    root, cache = work / f"scenes_{height}x{width}", work / "mesh_cache"
    root.mkdir(parents=True, exist_ok=True)

    from hodata.datasets.synthetic_scenes import benchmark_specs, read_scene_records, record_listing

    # 1. scenes (cached)
    t0 = time.perf_counter()
    records = {}
    todo = [s for s in specs]
    with ProcessPoolExecutor(max_workers=max(args.workers, 1), initializer=_init_worker,
                             initargs=(args.nice,)) as pool:
        futures = {pool.submit(build_scene, str(root), s.to_dict(), (height, width), str(cache)): s for s in todo}
        for future in as_completed(futures):
            spec = futures[future]
            try:
                records[spec.name] = future.result()
            except Exception as exc:  # one bad scene never stops the run
                print(f"scene {spec.name}: not built ({type(exc).__name__}: {exc})", flush=True)
    # the listing covers every scene on disk (a later subset run keeps the others)
    on_disk = read_scene_records(root)
    order = [s.name for s in benchmark_specs()]
    names = [n for n in order if n in on_disk]
    record_listing(root, names, [line for n in names for line in on_disk[n]["listing"]], (height, width))
    print(f"{len(records)} scene(s) ready under {root} in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.build_only:
        return 0

    # 2. fits
    conditions = {
        "label": args.label or (args.out.stem if args.out else "run"),
        "methods": list(methods), "fit_config": dataclasses.asdict(fit_config),
        "init_config": dataclasses.asdict(init_config), "overrides": overrides, "disabled": args.disable,
        "workers": args.workers, "seed": args.seed, "image_size": [height, width], "commit": _git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": platform.processor() or platform.machine(),
        "torch_threads_per_worker": 1, "contact_tolerance_m": 0.0,
        "hand_target": {"target_error": args.target_error, "target_scale_jitter": args.target_scale_jitter},
    }
    results = {"conditions": conditions, "clips": {}}
    if args.resume and args.out and args.out.is_file():
        previous = json.loads(args.out.read_text())
        same = ("methods", "fit_config", "init_config", "seed", "image_size", "hand_target")
        if all(json.loads(json.dumps(previous["conditions"].get(k), default=float)) ==
               json.loads(json.dumps(conditions[k], default=float)) for k in same):
            results["clips"] = {n: c for n, c in previous["clips"].items() if c["result"]["status"] == "fitted"}
            print(f"resuming: {len(results['clips'])} clip(s) kept from {args.out}", flush=True)
        else:
            raise SystemExit(f"--resume: {args.out} was run with other conditions; use another --out")
    fit_dict = dataclasses.asdict(fit_config)
    init_dict = dataclasses.asdict(init_config)
    t0 = time.perf_counter()
    todo = interleaved([n for n in records if n not in results["clips"]], records)
    with ProcessPoolExecutor(max_workers=max(args.workers, 1), initializer=_init_worker,
                             initargs=(args.nice,)) as pool:
        futures = {pool.submit(fit_scene, str(root), name, records[name]["spec"]["hand_noise"], str(cache), fit_dict,
                               init_dict, methods, args.seed, conditions["hand_target"]): name for name in todo}
        for future in as_completed(futures):
            name = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # a crash in one clip is recorded, the run goes on
                result = {"status": "failed", "message": f"{type(exc).__name__}: {exc}"}
            results["clips"][name] = {"spec": records[name]["spec"], "realised": records[name]["realised"],
                                      "result": result}
            summary = {m: round(v.get("hand_vertex_cm") or float("nan"), 2) for m, v in result.get("methods", {}).items()}
            adds = {m: round(v.get("object_adds_cm") or float("nan"), 2) for m, v in result.get("methods", {}).items()
                    if m in METHODS}
            print(f"{name}: {result['status']} hand vtx cm {summary} ADD-S cm {adds} "
                  f"({result.get('seconds', 0):.0f} s){' ' + result.get('message', '') if result['status'] != 'fitted' else ''}",
                  flush=True)
            if args.out:
                _write_json(args.out, _ordered(results, order))
    results = _ordered(results, order)
    conditions["wall_seconds"] = time.perf_counter() - t0
    if args.out:
        _write_json(args.out, results)
    print()
    print(factor_table(results))
    return 0


def interleaved(names: list[str], records: dict) -> list[str]:
    """Fit order: one scene of every factor, then a second of every factor, ... so that an
    interrupted run still covers every factor."""
    by_factor: dict[str, list[str]] = {}
    for name in names:
        by_factor.setdefault(records[name]["spec"]["factor"], []).append(name)
    order = []
    while any(by_factor.values()):
        for queue in by_factor.values():
            if queue:
                order.append(queue.pop(0))
    return order


def _ordered(results: dict, order: list[str]) -> dict:
    clips = results["clips"]
    return {**results, "clips": {n: clips[n] for n in order if n in clips}}


if __name__ == "__main__":
    sys.exit(main())
