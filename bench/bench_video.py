"""`hodata fit video` on the rendered test recording (hodata.datasets.video_synthetic): how
close the fit lands in 2D and in depth, with the true focal length and with wrong guesses,
and how long the stages take.

    PYTHONPATH=. python bench/bench_video.py [--frames 24] [--steps1 60] [--steps2 20]

Per camera setting: mean 2D error of the fitted hand joints and ball centre against the
rendered ones (pixels, through the true camera), and the ratio of fitted to true depth of
the ball centre and of the hand (mean of its joints), over all fitted frames.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--clip-length", type=int, default=12)
    parser.add_argument("--steps1", type=int, default=60)
    parser.add_argument("--steps2", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from typer.testing import CliRunner

    from hodata.cli import app
    from hodata.datasets.video_synthetic import FOCAL, render_clip, write_mp4
    from hodata.geometry.camera import project
    from hodata.shards import load

    work = Path(tempfile.mkdtemp(prefix="bench_video_"))
    cache = work / "mesh_cache"
    truth = render_clip(frames=args.frames, cache=cache)
    clip = write_mp4(truth["frames"], work / "clip.mp4")
    K = truth["K"]
    settings = [("--focal 300 (true)", ["--focal", str(FOCAL)]), ("default guess (--fov 65: f 251)", []),
                ("--fov 50 (f 343)", ["--fov", "50"])]
    rows = []
    for label, camera in settings:
        out = work / f"out{len(rows)}"
        start = time.perf_counter()
        result = CliRunner().invoke(app, ["fit", "video", str(clip), "--object", "ball", "--output", str(out),
                                          "--mesh-cache", str(cache), "--clip-length", str(args.clip_length),
                                          "--steps1", str(args.steps1), "--steps2", str(args.steps2),
                                          "--hypotheses", "8", "--roi-size", "64", *camera])
        seconds = time.perf_counter() - start
        if result.exit_code != 0:
            rows.append({"camera": label, "error": result.output.strip().splitlines()[-1]})
            continue
        samples = sorted(load(out / "joint"), key=lambda s: s["meta"]["frame"])
        frames = [int(s["meta"]["frame"]) for s in samples]
        joints = torch.stack([torch.as_tensor(s["right_joints"]) for s in samples]).double()
        centres = torch.stack([torch.as_tensor(s["object_vertices"]).double().mean(0) for s in samples])
        true_joints, true_centres = truth["joints"][frames], truth["ball_centres"][frames]
        rows.append({
            "camera": label, "fitted_focal_px": float(samples[0]["K"][0][0]), "frames": len(frames),
            "hand_joints_px": float((project(joints, K) - project(true_joints, K)).norm(dim=-1).mean()),
            "ball_centre_px": float((project(centres, K) - project(true_centres, K)).norm(dim=-1).mean()),
            "ball_depth_ratio": float((centres[:, 2] / true_centres[:, 2]).mean()),
            "hand_depth_ratio": float((joints[..., 2].mean(-1) / true_joints[..., 2].mean(-1)).mean()),
            "ball_scale": float(samples[0]["object_scale"]), "seconds": seconds,
        })
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    print("| camera | focal used (px) | hand joints 2D (px) | ball centre 2D (px) | ball depth fit/true | "
          "hand depth fit/true | run (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['camera']} | failed: {r['error']} |")
            continue
        print(f"| {r['camera']} | {r['fitted_focal_px']:.0f} | {r['hand_joints_px']:.1f} | {r['ball_centre_px']:.1f} | "
              f"{r['ball_depth_ratio']:.3f} | {r['hand_depth_ratio']:.3f} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
