"""Evidence benchmark (issue 10): masks, tracking and keypoint hand init against ground truth.

    python bench/bench_evidence.py [--clips 5] [--frames 8] [--out bench/_work/evidence]

1. Masks: synthetic HO-3D clips (one per catalog object, 640x480), GrabCut object mask from
   the object box with the hand marked from keypoints, and the keypoint-skeleton hand mask,
   against the rendered ground-truth seg (visible object, visible hand). Keypoints are the
   ground-truth joints projected plus pixel noise (MediaPipe does not see the rendered hand);
   the box is the ground-truth box, optionally jittered. Per object and per factor.
2. Tracking: box sequences (smooth random motion, 100 frames, one object, one right hand)
   with missed and wrong-side detections and a spurious hand in 10 % of frames; fraction of
   frames with a box at IoU >= 0.5 and AP@0.5 (VOC all-point), before (raw detections, the
   right side's for the hand) and after tracking (one box per covered frame).
3. Keypoint hand init: the same synthetic clips' ground-truth hands, keypoints with pixel
   noise, metric keypoints with noise and a detector scale error; PA joint error, depth error
   of the hand centroid, time per frame.
4. MediaPipe time per frame on the real Core50 frame (if installed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OBJECTS = ["025_mug", "006_mustard_bottle", "004_sugar_box", "010_potted_meat_can", "021_bleach_cleanser",
           "003_cracker_box", "019_pitcher_base"]


def voc_ap(scores: list[float], tp: list[bool], num_gt: int) -> float:
    """All-point interpolated average precision (PASCAL VOC 2010+)."""
    if num_gt == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = np.asarray(tp, dtype=np.float64)[order]
    tp_cum, fp_cum = np.cumsum(hits), np.cumsum(1 - hits)
    recall = tp_cum / num_gt
    precision = tp_cum / np.maximum(tp_cum + fp_cum, 1e-12)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]).sum())


def score_boxes(per_frame: list[list[tuple[np.ndarray, float]]], gt: np.ndarray) -> tuple[float, float]:
    """(fraction of frames with a box at IoU >= 0.5, AP@0.5) of per-frame (box, score) lists."""
    from hodata.evidence.tracking import box_iou_np

    scores, tps, found = [], [], 0
    for boxes, g in zip(per_frame, gt):
        matched = False
        for box, score in sorted(boxes, key=lambda b: -b[1]):
            hit = (not matched) and box_iou_np(box[None], g[None])[0, 0] >= 0.5
            matched |= hit
            scores.append(score)
            tps.append(bool(hit))
        found += matched
    return found / len(gt), voc_ap(scores, tps, len(gt))


def bench_tracking(seeds: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_evidence_tracking import corrupted_sequence

    from hodata.evidence.tracking import track_clip

    print("\n## tracking: frames at IoU>=0.5 / AP@0.5, before -> after (mean over seeds)")
    print("| missed | wrong side | hand frames | hand AP | object frames | object AP |")
    print("|---|---|---|---|---|---|")
    for miss in (0.1, 0.3, 0.5):
        for wrong in (0.0, 0.1, 0.2):
            rows = []
            for seed in range(seeds):
                obj, hand, obj_dets, hand_dets = corrupted_sequence(seed, miss=miss, wrong_side=wrong)
                raw_hand = [[(b, s) for b, s, side in zip(d.boxes, d.scores, d.sides) if side == "right"] for d in hand_dets]
                raw_obj = [[(b, s) for b, s in zip(d.boxes, d.scores)] for d in obj_dets]
                result = track_clip(obj_dets, hand_dets, known_sides=["right"])

                def tracked(track):
                    return [[(track.boxes[t].numpy(), float(track.scores[t]))] if track.covered[t] else []
                            for t in range(len(track.boxes))]

                rows.append(score_boxes(raw_hand, hand) + score_boxes(tracked(result.hands["right"]), hand)
                            + score_boxes(raw_obj, obj) + score_boxes(tracked(result.object), obj))
            m = np.mean(rows, 0)
            print(f"| {miss:.0%} | {wrong:.0%} | {m[0]:.2f} -> {m[2]:.2f} | {m[1]:.2f} -> {m[3]:.2f} "
                  f"| {m[4]:.2f} -> {m[6]:.2f} | {m[5]:.2f} -> {m[7]:.2f} |", flush=True)


def make_clips(out: Path, count: int, frames: int):
    from hodata.datasets.ho3d import HO3DDataset
    from hodata.datasets.synthetic import make_synthetic_ho3d

    root = out / "ho3d"
    if not (root / "train.txt").is_file():
        make_synthetic_ho3d(root, sequences=count, frames=frames, object_ids=OBJECTS[:count], seed=11,
                            cache_dir=out / "cache")
    return list(HO3DDataset(root, clip_length=frames, stride=1, cache_dir=out / "cache"))


def bench_masks(clips, pixel_noises=(0.0, 2.0, 5.0), box_jitters=(0.0, 0.05)) -> None:
    from hodata.evidence.masks import clip_masks, mask_iou
    from hodata.evidence.mediapipe_hands import read_rgb
    from hodata.geometry.camera import project

    print("\n## masks: mean IoU vs rendered ground truth (visible object / visible hand)")
    print("| object | keypoint noise px | box jitter | object IoU | hand IoU | object IoU, hand not marked | s/frame |")
    print("|---|---|---|---|---|---|---|")
    totals: dict[tuple, list] = {}
    for clip in clips:
        images = [read_rgb(p) for p in clip.image_paths]
        joints = clip.gt_hands[0].joints.double()
        kp3d = (joints - joints.mean(1, keepdim=True)).numpy()
        for noise in pixel_noises:
            for jitter in box_jitters:
                gen = np.random.default_rng(0)
                kp2d = project(joints, clip.K.double()).numpy() + gen.normal(0, noise, (len(clip), 21, 2))
                boxes = clip.object_boxes.double().clone()
                size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
                boxes += torch.as_tensor(gen.normal(0, jitter, boxes.shape)) * size
                t0 = time.perf_counter()
                target, hand = clip_masks(images, boxes, [[(kp2d[t], kp3d[t])] for t in range(len(clip))])
                dt = (time.perf_counter() - t0) / len(clip)
                plain, _ = clip_masks(images, boxes, [[] for _ in images])
                obj_iou = float(mask_iou(target == 1, clip.object_masks == 1).mean())
                hand_iou = float(mask_iou(hand, clip.hand_masks).mean())
                plain_iou = float(mask_iou(plain == 1, clip.object_masks == 1).mean())
                totals.setdefault((noise, jitter), []).append((obj_iou, hand_iou, plain_iou, dt))
                name = clip.object_model_id.split("_", 1)[1].rsplit("_", 1)[0]
                print(f"| {name} | {noise:g} | {jitter:.0%} | {obj_iou:.3f} | {hand_iou:.3f} | {plain_iou:.3f} | {dt:.2f} |",
                      flush=True)
    for (noise, jitter), rows in totals.items():
        m = np.mean(rows, 0)
        print(f"| **all** | {noise:g} | {jitter:.0%} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} | {m[3]:.2f} |")


def bench_hand_masks(clips, pixel_noises=(0.0, 2.0, 5.0)) -> None:
    """Hand mask from the keypoint skeleton vs the silhouette of the keypoint-init hand mesh."""
    from hodata.evidence.detected import default_layer
    from hodata.evidence.keypoint_init import keypoint_hand_init
    from hodata.evidence.masks import clip_masks, mask_iou, mesh_hand_mask
    from hodata.evidence.mediapipe_hands import read_rgb
    from hodata.geometry.camera import project

    print("\n## hand masks: skeleton vs keypoint-init mesh silhouette (minus the GrabCut object), mean IoU")
    print("| keypoint noise px | skeleton | init mesh |")
    print("|---|---|---|")
    layer = default_layer(clips[0].gt_hands[0].side)
    for noise in pixel_noises:
        skel, mesh = [], []
        for i, clip in enumerate(clips):
            images = [read_rgb(p) for p in clip.image_paths]
            joints = clip.gt_hands[0].joints.double()
            gen = np.random.default_rng(i)
            kp2d = project(joints, clip.K.double()).numpy() + gen.normal(0, noise, (len(clip), 21, 2))
            kp3d = (joints - joints.mean(1, keepdim=True)).numpy()
            target, hand = clip_masks(images, clip.object_boxes, [[(kp2d[t], kp3d[t])] for t in range(len(clip))])
            init, _ = keypoint_hand_init(layer, torch.as_tensor(kp2d), torch.as_tensor(kp3d), clip.K.double())
            verts = layer(global_orient=init.global_orient, hand_pose=init.hand_pose, transl=init.transl).vertices
            silhouette = mesh_hand_mask(verts, layer.faces, clip.K.double(), clip.image_size) & ~(target == 1)
            skel.append(float(mask_iou(hand, clip.hand_masks).mean()))
            mesh.append(float(mask_iou(silhouette, clip.hand_masks).mean()))
        print(f"| {noise:g} | {np.mean(skel):.3f} | {np.mean(mesh):.3f} |", flush=True)


def bench_keypoint_init(clips) -> None:
    from hodata.evidence.detected import default_layer
    from hodata.evidence.keypoint_init import keypoint_hand_init
    from hodata.geometry.camera import project
    from hodata.metrics.hand import pa_error

    print("\n## keypoint hand init on the synthetic clips' hands (median over frames of all clips)")
    print("| pixel noise px | metric noise mm | detector scale | PA joint mm | centroid depth error % | joint error mm | s/frame |")
    print("|---|---|---|---|---|---|---|")
    layer = default_layer(clips[0].gt_hands[0].side)
    for pixel, metric, scale in ((1.0, 3.0, 1.0), (2.0, 3.0, 1.0), (5.0, 3.0, 1.0), (2.0, 6.0, 1.0), (2.0, 3.0, 1.2),
                                 (2.0, 3.0, 0.8)):
        pa, depth, err, times = [], [], [], []
        for i, clip in enumerate(clips):
            gen = torch.Generator().manual_seed(i)
            joints = clip.gt_hands[0].joints.double()
            kp2d = project(joints, clip.K.double()) + pixel * torch.randn(joints.shape[:2] + (2,), generator=gen, dtype=torch.float64)
            kp3d = scale * (joints - joints.mean(1, keepdim=True))
            kp3d = kp3d + metric / 1000 * torch.randn(kp3d.shape, generator=gen, dtype=torch.float64)
            t0 = time.perf_counter()
            init, _ = keypoint_hand_init(layer, kp2d, kp3d, clip.K.double())
            times.append((time.perf_counter() - t0) / len(clip))
            pred = layer(global_orient=init.global_orient, hand_pose=init.hand_pose, transl=init.transl).joints
            pa += (pa_error(pred, joints) * 1000).tolist()
            depth += ((pred.mean(1)[:, 2] / joints.mean(1)[:, 2] - 1).abs() * 100).tolist()
            err += ((pred - joints).norm(dim=-1).mean(-1) * 1000).tolist()
        print(f"| {pixel:g} | {metric:g} | {scale:g} | {statistics.median(pa):.1f} | {statistics.median(depth):.1f} "
              f"(max {max(depth):.1f}) | {statistics.median(err):.1f} | {statistics.mean(times):.2f} |", flush=True)


def bench_mediapipe(shared: Path) -> None:
    from hodata.evidence import mediapipe_hands

    if not mediapipe_hands.mediapipe_available() or not shared.is_dir():
        print("\n(MediaPipe or ../shared/data not available: skipped)")
        return
    image = mediapipe_hands.read_rgb(shared / "core50" / "real" / "seg_original.png")
    full = mediapipe_hands.read_rgb(shared / "core50" / "real" / "C_05_33_179.png")
    with mediapipe_hands.MediaPipeHands() as detector:
        detector.detect(image)
        for name, im in (("seg_original 128x128 (upscaled to 480)", image), ("C_05_33_179 350x350 (upscaled to 480)", full)):
            t0 = time.perf_counter()
            for _ in range(10):
                found = detector.detect(im)
            print(f"\nMediaPipe {name}: {(time.perf_counter() - t0) / 10 * 1000:.0f} ms/frame, "
                  f"{len(found)} hand(s) {[(h.side, round(h.score, 2)) for h in found]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=5)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=10, help="box sequences per tracking setting")
    parser.add_argument("--out", type=Path, default=Path("bench/_work/evidence"))
    parser.add_argument("--only", default="tracking,masks,init,mediapipe", help="comma-separated parts to run")
    args = parser.parse_args()
    args.only = args.only.split(",")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if "tracking" in args.only:
        bench_tracking(args.seeds)
    clips = make_clips(args.out, args.clips, args.frames)
    if "masks" in args.only:
        bench_masks(clips)
        bench_hand_masks(clips)
    if "init" in args.only:
        bench_keypoint_init(clips)
    if "mediapipe" in args.only:
        bench_mediapipe(Path(__file__).resolve().parents[2] / "shared" / "data")


if __name__ == "__main__":
    main()
