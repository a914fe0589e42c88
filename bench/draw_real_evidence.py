"""Draw the detected evidence of the real Core50 frames in ../shared/data/core50/real/ to PNG.

    python bench/draw_real_evidence.py [--out bench/_work/evidence_real]

Per frame one PNG, left to right: MediaPipe keypoints (with side and score), the GrabCut
object target (object green, hand occluder red) with the object box hint, and the initial
hand of the keypoint initialisation (active hand model) rendered over the frame.
Camera: Core50's is unknown; the reference uses f = 480, c = image centre (REFERENCE.md §6).
Object box hints: C_05_33_179 from the public bbox file (core50_bbox_s5_CropC_o33.txt, line
Color179); seg_original (a 128x128 crop without a bbox file) from a box drawn by hand
around the mug, handle included.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "core50" / "real"


def bbox_line(path: Path, frame: int) -> list[float]:
    for line in path.read_text().splitlines():
        name, _, values = line.partition(":")
        if name.strip() == f"Color{frame:03d}":
            return [float(v) for v in values.split()]
    raise SystemExit(f"{path}: no line Color{frame:03d}")


def main() -> None:
    from hodata.evidence import draw
    from hodata.evidence.detected import default_layer, detect_clip_evidence
    from hodata.evidence.mediapipe_hands import read_rgb

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/_work/evidence_real"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    frames = {
        "seg_original": ([20.0, 20.0, 96.0, 85.0], 4.0),
        "C_05_33_179": (bbox_line(REAL / "core50_bbox_s5_CropC_o33.txt", 179), 1.5),
    }
    for name, (box, scale) in frames.items():
        image = read_rgb(REAL / f"{name}.png")
        h, w = image.shape[:2]
        K = torch.tensor([[480.0, 0.0, w / 2], [0.0, 480.0, h / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
        result = detect_clip_evidence([image], K, sides=None, object_boxes=torch.tensor([box], dtype=torch.float64),
                                      num_hands=1, min_frames=0, dtype=torch.float64)
        ev = result.evidence
        found = result.detections[0]
        label = ", ".join(f"{d.side} {d.score:.2f}" for d in found) or "no hand found"
        panels = []
        kp_panel = draw.upscale(image, scale)
        for hand in ev.hands:
            if bool(hand.keypoints_valid[0]):
                kp_panel = draw.draw_keypoints(kp_panel, hand.keypoints_2d[0].numpy() * scale, label=label)
        if not ev.hands:
            kp_panel = draw.draw_keypoints(kp_panel, np.full((21, 2), np.nan), label=label)
        panels.append(kp_panel)
        target = draw.draw_object_target(image, ev.object_masks[0].numpy(), scale=scale)
        panels.append(draw.draw_boxes(target, [(np.array(box) * scale, draw.OBJECT_COLOUR, "hint")]))
        mesh = draw.upscale(image, scale)
        for hand in ev.hands:
            if hand.init is not None:
                layer = default_layer(hand.side)
                out = layer(global_orient=hand.init.global_orient, hand_pose=hand.init.hand_pose, transl=hand.init.transl)
                mesh = draw.draw_hand_mesh(image, out.vertices[0], layer.faces, K, scale=scale)
        panels.append(mesh)
        path = draw.save_png(draw.side_by_side(*panels), args.out / f"{name}_evidence.png")
        print(f"{path}: {label}; object pixels {int((ev.object_masks[0] == 1).sum())}, "
              f"occluder pixels {int((ev.object_masks[0] == -1).sum())}; provenance {ev.provenance}")


if __name__ == "__main__":
    main()
