"""`hodata fit DATASET`: fit hands and objects over a dataset's clips and write shards."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Optional

import typer

from hodata.errors import EXIT_PARTIAL, EXIT_SIGNAL_BASE, HodataError, Interrupted


def check_mano_dir(mano_dir: Optional[Path]) -> None:
    """An explicit --mano-dir must hold MANO files that load: checked up front, also when the
    data's own hand model would never read them (a wrong folder is not silently ignored)."""
    if mano_dir is None:
        return
    from hodata import handmodel

    status = handmodel.describe(mano_dir)
    if status.problems:
        raise HodataError(status.problems[0])
    if not status.found:
        raise HodataError(f"{mano_dir}: holds neither MANO_RIGHT.pkl nor MANO_LEFT.pkl; pass the folder holding them")


def _video_source(source: Optional[Path], root: Optional[Path]) -> Path:
    """`hodata fit video CLIP.mp4` (or `--root CLIP.mp4`): the one video file or frames folder."""
    if source is not None and root is not None and source != root:
        raise HodataError(f"give the video once: SOURCE {source} or --root {root}, not both")
    if source is None and root is None:
        raise HodataError("hodata fit video needs the recording: hodata fit video CLIP.mp4 --object MESH_OR_CATEGORY")
    return source if source is not None else root


def _ids(text: Optional[str]) -> Optional[list[str]]:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def fit(
    dataset: str = typer.Argument(..., help="Dataset adapter: ho3d (HO-3D v2/v3 layout, also hodata's synthetic "
                                  "sets), core50, epic (Epic-Kitchens-100), video (your own recording: give SOURCE)."),
    source: Optional[Path] = typer.Argument(None, help="video only: the video file (.mp4, .mov, .avi, ...) or a "
                                            "folder of frames.", show_default=False),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset root folder (HO-3D: holds train/, evaluation/, "
                                        "train.txt; Core50: holds core50_350x350/ and bbox/; Epic: holds "
                                        "PXX/rgb_frames/, hand-objects/ and the annotation CSVs). Not for video.",
                                        show_default=False),
    split: Optional[str] = typer.Option(None, "--split", help="HO-3D: train | evaluation (default train); "
                                        "Epic-Kitchens: train | validation (default validation)."),
    sequences: Optional[str] = typer.Option(None, "--sequences", help="HO-3D: comma-separated sequence names (default: all)."),
    category: Optional[str] = typer.Option(None, "--category", help="Core50 / Epic-Kitchens: object category to fit "
                                           "(e.g. cup, bottle, can, plate, phone); Epic needs it."),
    sessions: Optional[str] = typer.Option(None, "--sessions", help="Core50: sessions, e.g. 1,3,5-7 (default: all)."),
    objects: Optional[str] = typer.Option(None, "--objects", help="Core50: object ids, e.g. 41-45 (default: all)."),
    videos: Optional[str] = typer.Option(None, "--videos", help="Epic-Kitchens: comma-separated video ids (default: all)."),
    clips_file: Optional[Path] = typer.Option(None, "--clips", help="Epic-Kitchens: a clip selection written by "
                                              "`hodata select-clips` (fit exactly its kept clips)."),
    focal: Optional[float] = typer.Option(None, "--focal", min=1.0, help="Core50 / Epic / video: assumed focal length "
                                          "in pixels (defaults: Core50 480 at 350x350, Epic 200 at 640x360; video: "
                                          "pixels of the source frames, principal point at the centre, default a "
                                          "guess from --fov)."),
    # --- video (your own recording; hodata.datasets.video) ---
    object_: Optional[str] = typer.Option(None, "--object", help="video: the held object: a mesh file (obj, ply, "
                                          "stl, off, glb; metres unless its size says mm) fitted at its size, or a "
                                          "category (cup, bottle, can, ball, phone, ...) whose catalog mesh is "
                                          "fitted with its scale optimised under the category's size prior."),
    object_box: Optional[str] = typer.Option(None, "--object-box", help="video: x1,y1,x2,y2 pixel box of the object "
                                             "in the first kept frame (at --start). Without it the object is found "
                                             "next to the hand: GrabCut around the first hand MediaPipe detects, "
                                             "the hand as background. Either way the box is then tracked by "
                                             "GrabCut from frame to frame."),
    fps: Optional[float] = typer.Option(None, "--fps", min=0.001, help="video: keep this many frames per second "
                                        "(default: every frame)."),
    start: Optional[float] = typer.Option(None, "--start", min=0.0, help="video: first second to use (default 0)."),
    end: Optional[float] = typer.Option(None, "--end", min=0.0, help="video: second to stop at (default: the end)."),
    intrinsics: Optional[str] = typer.Option(None, "--intrinsics", help="video: the camera as fx,fy,cx,cy in pixels "
                                             "of the source frames (from a calibration)."),
    fov: Optional[float] = typer.Option(None, "--fov", help="video: the camera's horizontal field of view in degrees, "
                                        "for the focal guess fx = fy = (W/2) / tan(fov/2) with the principal point "
                                        "at the centre (default 65, a phone's main camera filming). A wrong guess "
                                        "scales every depth by the same factor (README)."),
    max_side: int = typer.Option(1280, "--max-side", min=64, help="video: frames are shrunk so the longer side is at "
                                 "most this many pixels (the camera is scaled with them)."),
    min_tracked: Optional[int] = typer.Option(None, "--min-tracked", min=0, help="video: the object and a hand must be "
                                              "tracked together over more than this many kept frames (default 10)."),
    source_fps: Optional[float] = typer.Option(None, "--source-fps", min=0.001, help="video, folder of frames: its "
                                               "frame rate (default 30)."),
    evidence: str = typer.Option("auto", "--evidence", help="2D evidence provider: gt (annotated boxes and masks, "
                                 "paper Fig. 4), detected (MediaPipe hands + motpy tracks + GrabCut masks from the "
                                 "dataset's object boxes), files:DIR (DIR/<sequence>/<frame>.json of external "
                                 "models, see hodata.evidence.files), pointrend:CONFIG:WEIGHTS (detected with "
                                 "detectron2 PointRend object masks; untested here). auto: gt on HO-3D, detected "
                                 "elsewhere."),
    hand_init: str = typer.Option("auto", "--hand-init", help="Hand initialisation: simulated (ground truth + "
                                  "documented noise, annotated data only), keypoints (fit to the evidence's 21 "
                                  "hand keypoints), files:DIR (the files' MANO fields). auto: simulated on HO-3D, "
                                  "keypoints elsewhere."),
    evidence_cache: Optional[Path] = typer.Option(None, "--evidence-cache", help="Evidence cache folder (as "
                                                  "written by `hodata evidence`): reuse its entries made by the same "
                                                  "providers, compute and add the missing ones."),
    output: Path = typer.Option(Path("out"), "--output", "-o", help="Output folder; one shard folder per method inside."),
    methods: str = typer.Option("joint", "--methods", help="Comma-separated: joint, independent (the paper's baseline)."),
    clip_length: int = typer.Option(10, "--clip-length", min=1, help="Frames per clip (reference: 10)."),
    stride: Optional[int] = typer.Option(None, "--stride", min=1, help="Frame stride inside a clip (default: 4 for "
                                         "HO-3D and Core50, 1 for Epic-Kitchens, as the reference; 1 for video)."),
    max_clips: Optional[int] = typer.Option(None, "--max-clips", min=0, help="Fit at most this many clips."),
    steps1: int = typer.Option(200, "--steps1", min=0, help="Adam steps of stage 1 (paper: 200)."),
    steps2: int = typer.Option(200, "--steps2", min=0, help="Adam steps of stage 2 (paper: 200)."),
    roi_size: int = typer.Option(128, "--roi-size", min=1, help="Object silhouette render size in pixels."),
    hypotheses: int = typer.Option(50, "--hypotheses", min=1, help="Object rotation hypotheses refined at initialisation (paper: 50)."),
    no_obj: bool = typer.Option(False, "--no-obj", help="Switch off the object silhouette term (Eq. 3)."),
    no_v2d: bool = typer.Option(False, "--no-v2d", help="Switch off the projected hand vertices term (Eq. 4)."),
    no_pca: bool = typer.Option(False, "--no-pca", help="Switch off the hand pose prior."),
    no_scale: bool = typer.Option(False, "--no-scale", help="Switch off the scale prior."),
    no_smooth: bool = typer.Option(False, "--no-smooth", help="Switch off temporal smoothness."),
    no_centroid: bool = typer.Option(False, "--no-centroid", help="Switch off the coarse (centroid) interaction."),
    no_collision: bool = typer.Option(False, "--no-collision", help="Switch off collision (Eq. 5)."),
    no_local: bool = typer.Option(False, "--no-local", help="Switch off local contact."),
    hand_starts: str = typer.Option("init,fitted", "--hand-starts", help="Where the joint fit starts each hand, "
                                    "comma-separated: init (the hand init as given), fitted (that init after the "
                                    "independent hand-only fit). With both, both are fitted through stage 1 and the "
                                    "full objective picks one per clip (1.2-1.3x the joint fit's time). "
                                    "--batch-clips > 1 batches only the init: --hand-starts init."),
    mano_dir: Optional[Path] = typer.Option(None, "--mano-dir", help="Folder with MANO_RIGHT.pkl / MANO_LEFT.pkl."),
    mesh_cache: Optional[Path] = typer.Option(None, "--mesh-cache", help="Mesh cache folder (default: $HODATA_MESH_CACHE or ./mesh_cache)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda[:N]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over instead of resuming clips already in the output."),
    save_frames: bool = typer.Option(True, "--save-frames/--no-save-frames", help="Store each frame (jpg) and masks (png) in the shards."),
    seed: int = typer.Option(0, "--seed", help="Random seed (object rotation hypotheses, simulated hand noise)."),
    # parallel fitting on Ray (hodata.app.parallel)
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Fit this many clips at once, each clip a "
                                          "Ray task (needs the ray extra of hodata). Without --ray: a local Ray "
                                          "with N workers for this run; 1 (default) without --ray fits in this "
                                          "process."),
    ray_address: Optional[str] = typer.Option(None, "--ray", help="Fit on Ray: ADDRESS of a running cluster "
                                              "(HOST:6379 or ray://HOST:10001; hodata and the data must be there "
                                              "too), or auto (the Ray running on this machine, else a local one "
                                              "started for this run). The output is written here, by this process."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Torch threads (and Ray CPUs) per clip "
                                          "(default: hodata --threads, i.e. 1)."),
    gpus_per_task: float = typer.Option(0.0, "--gpus-per-task", min=0.0, help="Ray: the fraction of a GPU each clip "
                                        "asks for (0.25: four clips share a GPU; 0: CPU only)."),
    batch_clips: int = typer.Option(1, "--batch-clips", min=1, help="Fit up to B clips in one batched problem "
                                    "(one optimiser over B x T frame rows, each clip's losses kept apart, so its "
                                    "labels are the ones it gets alone, up to float rounding): keeps a GPU busy. "
                                    "A batch holds clips with the same object model (one HO-3D object, one "
                                    "Core50 / Epic category mesh), frame count and hand sides; clips left without "
                                    "such company are fitted in smaller batches or one by one at the end. The "
                                    "object init stays per clip. 1 (default): one clip at a time. Not with "
                                    "--workers / --ray."),
    retries: int = typer.Option(2, "--retries", min=0, help="Ray: how often a clip whose worker died (killed, out "
                                "of memory) is run again before it is listed as failed."),
) -> None:
    """Fit hands and objects over DATASET's clips and write 3D labels as WebDataset shards.

    Your own recording: `hodata fit video CLIP.mp4 --object MESH_OR_CATEGORY` (or a folder of
    frames); the object is found next to the first hand MediaPipe detects (GrabCut), or where
    --object-box says, and tracked by GrabCut; the camera is --intrinsics, --focal or a guess
    from --fov (default 65 degrees horizontal). README "Your own video".

    Reruns into the same --output skip clips already written (resume; every shard is checked
    first and the clips of a missing or damaged one are fitted again); --overwrite starts over.
    A clip that fails (unreadable frame, no hand found, a fit error, a diverged fit) is skipped
    and listed; the others are written. One run at a time writes into an --output. The
    manifest and every sample record which providers made the evidence and the hand init.

    With --workers N or --ray, clips are fitted as Ray tasks on N workers (or a cluster) and
    this process writes their results as they arrive: the output is the same one dataset,
    resumable by a rerun with or without Ray.

    Exit code: 0 every clip was fitted or resumed; 1 the run finished but some clips failed
    or were unreadable (listed), or there was nothing to fit; 2 bad input or an unusable
    output (read-only, disk full, in use by another run) stopped it, one line says which;
    130 / 143 interrupted by SIGINT / SIGTERM (whole clips written are kept: rerun the same
    command to resume).
    """
    from hodata.app.console import clip_progress, console, progress_bar, report_summary
    from hodata.app.fit import build_configs, run_fit
    from hodata.app.parallel import parallel_options
    from hodata.app.providers import EvidenceProvider, default_specs
    from hodata.datasets import available_datasets, open_dataset
    from hodata.datasets.core50 import parse_id_list
    from hodata.device import resolve_device
    from hodata.fitting import METHODS

    resolve_device(device)
    if batch_clips > 1 and (ray_address is not None or (workers or 1) > 1):
        raise HodataError("--batch-clips > 1 fits its batches in this process; it does not combine with --workers "
                          "or --ray (one clip per Ray task): drop one of them")
    parallel = parallel_options(workers, ray_address, threads, gpus_per_task, retries)
    switches = dict(obj=no_obj, v2d=no_v2d, pca=no_pca, scale=no_scale, smooth=no_smooth, centroid=no_centroid,
                    collision=no_collision, local=no_local)
    disabled = tuple(t for t, off in switches.items() if off)
    method_list = tuple(m.strip() for m in methods.split(",") if m.strip())
    if not method_list or any(m not in METHODS for m in method_list):
        raise HodataError(f"--methods {methods!r}: choose one or more of {', '.join(METHODS)}, comma-separated")
    if dataset not in available_datasets():
        raise HodataError(f"no adapter for dataset {dataset!r}; available: {', '.join(available_datasets())}")
    check_mano_dir(mano_dir)
    config, init_config = build_configs(steps1, steps2, roi_size, hypotheses, disabled, hand_starts)
    options = dict(split=split, sequences=_ids(sequences), category=category,
                   sessions=parse_id_list(sessions, range(1, 12), "session"),
                   objects=parse_id_list(objects, range(1, 51), "object"), videos=_ids(videos), clips=clips_file,
                   focal=focal, stride=stride)
    if dataset == "video":
        root = _video_source(source, root)
        options.update(object=object_, object_box=object_box, fps=fps, start=start, end=end, intrinsics=intrinsics,
                       fov=fov, max_side=max_side, min_tracked=min_tracked, source_fps=source_fps,
                       frames_cache=output / "video_frames")
    elif source is not None or root is None:
        raise HodataError(f"dataset {dataset!r} takes its folder as --root DIR" +
                          (f" (SOURCE {source} is for `hodata fit video`)" if source is not None else ""))
    else:
        video_only = dict(object=object_, object_box=object_box, fps=fps, start=start, end=end,
                          intrinsics=intrinsics, fov=fov, min_tracked=min_tracked, source_fps=source_fps)
        options.update({k: v for k, v in video_only.items() if v is not None})
    ds = open_dataset(dataset, root, options, clip_length=clip_length, mano_dir=mano_dir, cache_dir=mesh_cache,
                      evidence="gt")
    auto_evidence, auto_init = default_specs(getattr(ds, "dataset_name", dataset))
    provider = EvidenceProvider(auto_evidence if evidence == "auto" else evidence,
                                auto_init if hand_init == "auto" else hand_init, mano_dir=mano_dir, seed=seed,
                                cache_dir=evidence_cache)
    console.print(f"{dataset}: {len(ds)} clip(s); evidence {provider.evidence}, hand init {provider.hand_init}")
    with terminate_as_interrupt():
        try:
            total = len(ds) if max_clips is None else min(max_clips, len(ds))
            with progress_bar() as progress:
                task = progress.add_task("fitting clips", total=total)
                summary = run_fit(ds, provider, output, method_list, config, init_config, device, overwrite,
                                  save_frames, seed, max_clips, clip_progress(progress, task), parallel=parallel,
                                  batch_clips=batch_clips)
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            if getattr(exc, "summary", None) is not None:
                report_summary(exc.summary, ds, output)
            typer.secho(f"interrupted by {signal.Signals(signum).name}: the clips written so far are kept in {output}; "
                        "rerun the same command to resume", fg=typer.colors.YELLOW, err=True)
            raise typer.Exit(EXIT_SIGNAL_BASE + signum) from None
    report_summary(summary, ds, output)
    if summary.failed or getattr(ds, "skipped_clips", []) or (not summary.fitted and not summary.resumed):
        raise typer.Exit(EXIT_PARTIAL)


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM unwinds like Ctrl-C (`Interrupted`) while fitting, so shards close with whole clips."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def register(app: typer.Typer) -> None:
    app.command("fit")(fit)
