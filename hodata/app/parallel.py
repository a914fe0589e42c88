"""Fitting a dataset on Ray: one task per clip, on this machine or a cluster (`--workers`, `--ray`).

Design: workers fit, the driver writes. Each Ray task runs the same `fit_one_clip` as the
in-process loop (hodata.app.fit) and returns its `ClipOutcome` (the finite fits on the CPU,
the frames and evidence masks); the driver writes each outcome into the method folders as it
arrives, with the same `write_outcome`. So the output is written by one process holding each
folder's writer lock, exactly as today: one shard flushed per clip, the manifest replaced
atomically after each shard, resume verified by sha256, `--overwrite`, and `hodata eval` /
`show` / the loader need nothing new. Why not workers writing their own shards: the manifest,
the resume check and the lock would need a multi-writer protocol (a shard written by a worker
that is then killed, or retried after it wrote, must never be listed twice), and on a cluster
every node would need the output on a shared file system. Here a killed or retried worker has
written nothing, so a clip reaches the shards once, from the one attempt whose result the
driver received. The price: frames and fits travel through Ray's object store to the driver
(raw: ~12 MB for a 10-frame 640x480 clip with its masks; the driver encodes them, once for
every method), and the driver loads the clips (frame paths, masks, ground truth, and the
frames the adapter decoded for its image check, `Clip.images`, so a worker does not decode
them again) for the workers; both are small
against the tens of seconds a clip takes to fit, but on a large cluster the driver's disk
and one core for encoding bound the rate (there the other design would pay off).
bench/RESULTS.md "Parallel fitting (Ray)" has the measured overhead per clip.

The run keeps one clip per free slot running and one more loaded ahead, so a dataset of
thousands of clips is read lazily and results never pile up. A worker that dies
mid-clip (killed, out of memory) is retried by Ray up to `retries` times; when it keeps dying
the clip is failed with Ray's reason. A clip whose fit raises is failed inside the task (the
exception never leaves `fit_one_clip`). A driver killed mid-run leaves whole clips (the open
shard of the clip being written is a `.partial` that the next run removes): rerunning resumes.
Ctrl-C / SIGTERM cancels the outstanding tasks, closes the shards with whole clips and stops
Ray; the summary so far rides on the KeyboardInterrupt as `.summary`.

Ray start-up is kept light: a local Ray gets exactly workers x threads CPUs, no dashboard, a
small object store, its own temporary folder (removed afterwards), no log forwarding, no usage
statistics. `HODATA_RAY_WORKER_SETUP=module.function` is passed to Ray as the worker setup hook
(`runtime_env["worker_process_setup_hook"]`): run in every worker process before its first
clip, e.g. to configure logging or CUDA there (the tests use it to inject faults in workers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from hodata.errors import HodataError

INSTALL_HINT = 'pip install "hodata[ray]" (or `make setup`)'
SETUP_HOOK_ENV = "HODATA_RAY_WORKER_SETUP"


@dataclass(frozen=True)
class RayOptions:
    """How to run clips on Ray.

    address: None starts a private local Ray for this run; "auto" connects to the Ray
    cluster running on this machine (`ray start --head`) or, when there is none, starts a
    local one; anything else is passed to `ray.init(address=...)` ("HOST:6379",
    "ray://HOST:10001"). workers: clips fitted at once (a local Ray gets workers x threads
    CPUs; on a cluster, default: as many as its CPUs allow). threads: torch threads (and
    Ray CPUs) per task. gpus_per_task: the fraction of a GPU a task asks for (0.25: four
    clips share a GPU). retries: how often Ray reruns a clip whose worker died.
    """

    address: Optional[str] = None
    workers: Optional[int] = None
    threads: int = 1
    gpus_per_task: float = 0.0
    retries: int = 2
    object_store_mb: int = 256

    def __post_init__(self):
        if self.workers is not None and self.workers < 1:
            raise HodataError(f"--workers {self.workers}: give at least 1")
        if self.threads < 1:
            raise HodataError(f"--threads {self.threads}: give at least 1")
        if not 0 <= self.gpus_per_task or (self.gpus_per_task > 1 and not float(self.gpus_per_task).is_integer()):
            raise HodataError(f"--gpus-per-task {self.gpus_per_task}: give a fraction in [0, 1] or a whole number")
        if self.retries < 0:
            raise HodataError(f"--retries {self.retries}: give 0 or more")


def parallel_options(workers: Optional[int], ray_address: Optional[str], threads: Optional[int],
                     gpus_per_task: float, retries: int) -> Optional[RayOptions]:
    """RayOptions for `hodata fit --workers / --ray` (None: fit in this process, with
    --threads torch threads when given)."""
    if ray_address is None and (workers or 1) == 1:
        if gpus_per_task:
            raise HodataError("--gpus-per-task is for Ray runs: add --workers N or --ray ADDRESS")
        if threads:
            import torch

            torch.set_num_threads(threads)
        return None
    require_ray()
    import torch

    return RayOptions(address=ray_address, workers=workers, threads=threads or torch.get_num_threads(),
                      gpus_per_task=gpus_per_task, retries=retries)


def require_ray():
    """The ray module, or a HodataError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise HodataError(f"--workers / --ray need Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


@contextlib.contextmanager
def ray_session(options: RayOptions) -> Iterator[int]:
    """Connect to or start Ray as `options` says; yields the number of clips that can run at
    once. A Ray this session started or connected is shut down on the way out (an already
    initialised Ray, e.g. a caller's, is reused and left running)."""
    ray = require_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        yield _slots(ray, options)
        return
    common: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    hook = os.environ.get(SETUP_HOOK_ENV)
    if hook:
        common["runtime_env"] = {"worker_process_setup_hook": hook}
    temp_dir = None
    sigterm = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        connected = False
        if options.address is not None:
            try:
                ray.init(address=options.address, **common)
                connected = True
            except ConnectionError as exc:
                if options.address != "auto":
                    raise HodataError(f"--ray {options.address}: cannot connect to a Ray cluster there ({exc}); "
                                      "start one (`ray start --head`) or pass --ray auto") from None
        if not connected:
            workers = options.workers or max(1, (os.cpu_count() or 1) // options.threads)
            temp_dir = tempfile.mkdtemp(prefix="hodata-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
            ray.init(num_cpus=workers * options.threads, include_dashboard=False, _temp_dir=temp_dir,
                     object_store_memory=options.object_store_mb * 2**20, **common)
        if sigterm is not None:  # ray.init replaces it by sys.exit; hodata's (SIGTERM unwinds like Ctrl-C) stays
            signal.signal(signal.SIGTERM, sigterm)
        yield _slots(ray, options)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _slots(ray, options: RayOptions) -> int:
    """Clips that fit at once in the cluster's CPUs (and GPUs, for GPU tasks)."""
    resources = ray.cluster_resources()
    slots = int(resources.get("CPU", 1) // options.threads)
    if options.gpus_per_task > 0:
        slots = min(slots, int(resources.get("GPU", 0) // options.gpus_per_task))
        if slots < 1:
            raise HodataError(f"--gpus-per-task {options.gpus_per_task}: the Ray cluster has "
                              f"{resources.get('GPU', 0):g} GPU(s); pass --gpus-per-task 0 to fit on CPUs")
    if options.workers is not None:
        slots = min(slots, options.workers) if options.address is not None else options.workers
    return max(1, slots)


# ----------------------------------------------------------------------------- worker side

_CACHE: dict[str, Any] = {}  # per worker process: ObjectRef hex -> the run context / an object model
_CACHE_SIZE = 32


def _fetched(ref):
    """ray.get(ref), kept for the worker's next clips (the run context and the object models
    are the same for many clips: fetched and unpickled once per worker)."""
    import ray

    key = ref.hex()
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        _CACHE[key] = ray.get(ref)
    return _CACHE[key]


def _fit_task(refs: list, clip, methods: tuple[str, ...], threads: int):
    """Ray task: fit one clip with the run's context and its object model; returns a CPU-only
    ClipOutcome.

    refs = [context ref, object model ref], in a list so Ray passes the references, not the
    values, and `_fetched` can cache what they point to."""
    import torch

    from hodata.app.fit import fit_one_clip

    context, model = _fetched(refs[0]), _fetched(refs[1])
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    outcome = fit_one_clip(clip, lambda _clip: model, methods=methods, **context)
    return _on_cpu(outcome)


def _on_cpu(value):
    """`value` with every tensor detached and on the CPU (a CUDA tensor would not unpickle on
    a driver without a GPU; one with autograd history does not pickle at all)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _on_cpu(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(v) for v in value)
    return value


# ----------------------------------------------------------------------------- driver side


def _task_error(exc: BaseException, retries: int) -> str:
    """One line for a clip whose Ray task failed (its worker died more often than retried,
    or the task could not run)."""
    import ray

    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "no message")
    if isinstance(exc, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                        ray.exceptions.LocalRayletDiedError)):
        return (f"the Ray worker fitting it died {retries + 1} time(s) (killed, or out of memory); "
                f"{type(exc).__name__}: {first}")
    return f"Ray task failed: {type(exc).__name__}: {first}"


def fit_dataset_ray(
    clips: Iterable,
    object_model_for: Callable,
    evidence_for: Callable,
    hand_layers_for: Callable,
    output: Path,
    methods: tuple[str, ...],
    config,
    init_config,
    device: str,
    overwrite: bool,
    save_frames: bool,
    seed: int,
    on_clip: Optional[Callable[[str, str], None]],
    keep_results: bool,
    run_config: dict,
    options: RayOptions,
):
    """`hodata.app.fit.fit_dataset` with each clip a Ray task (module docstring); same
    arguments, same RunSummary, same output."""
    from hodata.app.fit import RunSummary, _close_all, open_writers

    ray = require_ray()
    summary = RunSummary()
    writers: dict = {}
    pending: dict = {}  # ObjectRef -> clip id
    try:
        with ray_session(options) as slots:
            writers = open_writers(output, methods, run_config, overwrite, summary)
            context = dict(evidence_for=evidence_for, hand_layers_for=hand_layers_for, config=config,
                           init_config=init_config, device=device, save_frames=save_frames, seed=seed)
            context_ref = ray.put(context)
            task = ray.remote(_fit_task).options(num_cpus=options.threads, num_gpus=options.gpus_per_task,
                                                 max_retries=options.retries, retry_exceptions=False)
            try:
                _run_tasks(ray, task, context_ref, object_model_for, clips, writers, methods, summary, pending,
                           slots, options.threads, options.retries, keep_results, on_clip)
            except BaseException:
                # whole clips first (Ray may be going down too: Ctrl-C in a terminal reaches a local
                # Ray's processes as well), then stop the clips still running
                done_writers, writers = writers, {}
                _close_all(done_writers.values(), raise_first=False)
                for ref in pending:
                    with contextlib.suppress(Exception):
                        ray.cancel(ref, force=True)
                raise
            done_writers, writers = writers, {}
            _close_all(done_writers.values())  # before Ray stops: an error closing the output is reported
    except BaseException as exc:
        _close_all(writers.values(), raise_first=False)
        if isinstance(exc, KeyboardInterrupt):
            exc.summary = summary
        raise
    return summary


def _run_tasks(ray, task, context_ref, object_model_for, clips, writers, methods, summary, pending: dict,
               window: int, threads: int, retries: int, keep_results: bool, on_clip) -> None:
    """Keep `window` clips running; write each outcome as it arrives. `pending` (ObjectRef ->
    clip id) is the caller's, so it can cancel what is left on an interrupt.

    One clip is loaded ahead while the workers fit, and a freed slot gets it before this
    process writes the finished clip, so a worker never waits for the driver's reading or
    writing. Object models are resolved here, where the dataset loaded them with the clip (an
    adapter copy in a worker would not hold them), and put into Ray's object store once each."""
    from hodata.app.fit import ClipOutcome, _clip_error, missing_methods, write_outcome

    models: dict[int, tuple[Any, Any]] = {}  # id(model) -> (model, its ObjectRef); the model kept alive
    clip_iter = iter(clips)
    ahead: list = []  # at most one (clip, missing methods, model ref) loaded ahead

    def prepare():
        """The next clip to fit with its object model, or None at the end; clips already done
        (resumed) and clips whose object model fails (failed) are recorded on the way."""
        for clip in clip_iter:
            missing = missing_methods(writers, methods, clip.clip_id)
            if not missing or clip.clip_id in pending.values():
                summary.resumed.append(clip.clip_id)
                if on_clip:
                    on_clip(clip.clip_id, "resumed")
                continue
            try:
                model = object_model_for(clip)
            except Exception as exc:  # noqa: BLE001 - one bad clip never stops a run
                write_outcome(writers, ClipOutcome(clip.clip_id, problems=[_clip_error(exc)]), summary, keep_results,
                              on_clip)
                continue
            if id(model) not in models:
                models[id(model)] = (model, ray.put(model))
            return clip, missing, models[id(model)][1]
        return None

    def submit() -> None:
        while len(pending) < window:
            job = ahead.pop() if ahead else prepare()
            if job is None:
                return
            clip, missing, model_ref = job
            pending[task.remote([context_ref, model_ref], clip, missing, threads)] = clip.clip_id

    submit()
    while pending:
        if not ahead:
            job = prepare()
            if job is not None:
                ahead.append(job)
        done, _ = ray.wait(list(pending), num_returns=1)
        outcomes = []
        for ref in done:
            clip_id = pending.pop(ref)
            try:
                outcomes.append(ray.get(ref))
            except ray.exceptions.RayError as exc:
                outcomes.append(ClipOutcome(clip_id, problems=[_task_error(exc, retries)]))
        submit()
        for outcome in outcomes:
            write_outcome(writers, outcome, summary, keep_results, on_clip)
