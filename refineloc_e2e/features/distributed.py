"""Batches of videos across a Ray cluster: one task per video, the cache rules of ``batch.py`` unchanged.

Three modules: ``ray_session`` (connecting, the shared-folder probe), ``ray_task`` (the worker's task) and this
one, the driver (submit, collect, retry accounting, cancel).

``address``: ``local`` starts a Ray runtime on this machine only (loopback, sized by Ray to its cores and
GPUs); ``auto`` joins the cluster this machine belongs to (``ray start``); ``ray://host:port`` (Ray Client)
or ``host:port`` joins that one. The output folder must be one shared filesystem path (NFS, Lustre, ...),
mounted at the same path on every node and supporting ``flock``: :func:`check_shared_folder` proves it at
start (a probe file with a random token, read back by a task pinned to each node), so a node that cannot
see it is an error naming that node, never a silent write to its local disk.

Each task runs :func:`~refineloc_e2e.features.batch.process_video` (lock, skip if up to date, atomic
write, settings hash) and requests ``num_cpus = cfg.workers`` (its flow processes) and ``num_gpus = 1``
when it extracts on CUDA, so a GPU node runs as many videos at once as it has GPUs. The I3D models are
built once per worker process (``_SOURCES``: keyed by the config, the cache folder and the GPUs Ray gave
that process), not once per video.

Faults. A task whose worker process dies (SIGKILL, the OOM killer, a lost node) is retried by Ray up to
``MAX_RETRIES`` times, then reported as failed; its killed attempt's temp files are removed by the retry
(under the video's lock, no other writer of it can be alive). A video that fails for its own reasons
(corrupt file, disk full) is a returned outcome, never an exception, so Ray never retries it: it is
reported once with its cause. A set-up error (weights missing) cancels the other tasks and is raised.
Ctrl-C stops the outstanding tasks cooperatively (a cancel marker file in the output folder: a task not
started returns at once, a running one stops within a snippet), waits at most ``CANCEL_WAIT_S`` for them
and their locks, removes what is left, and re-raises (``ray.cancel`` is not used: see :func:`_cancel`).
A driver killed outright (SIGKILL) cannot clean up: Ray ends a dead driver's tasks, and each video's lock is
an ``flock`` held by the worker process extracting it, so **a lock lives exactly as long as that worker**
and never outlives it; the rerun waits for a video still held (a task Ray has not ended yet) and then
removes the temp files its killed writer left. Rerunning the same command after any failure computes only
what is missing. Ray's private API is used only through ``features.ray_compat`` (version-checked);
tests inject faults with ``before_extract`` (the repository's ``testing/faults.py``), never through the environment.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from refineloc_e2e.errors import ConfigError, RefineLocError
from refineloc_e2e.features.batch import BatchSummary, VideoOutcome, begin_batch, record
from refineloc_e2e.features.cache import (VideoLock, assign_video_ids, disambiguated_id, owner_conflict,
                                          remove_stale_entry_temps)
from refineloc_e2e.features.extractor import ExtractConfig
from refineloc_e2e.features.ray_session import check_shared_folder, ray, ray_session, require_ray
from refineloc_e2e.features.ray_task import TaskResult, _extract_task
from refineloc_e2e.progress import Progress, log_lines

logger = logging.getLogger(__name__)

MAX_RETRIES = 2  # a task whose worker process dies is run at most 1 + MAX_RETRIES times
CANCEL_WAIT_S = 30.0  # after Ctrl-C or a set-up error: how long cancelled tasks get to clean up
WAIT_STEP_S = 1.0  # the driver wakes at least this often (Ctrl-C, deadline)


def task_resources(cfg: ExtractConfig) -> tuple[dict[str, float], ExtractConfig]:
    """Ray resources of one video's task, and the config the workers use: ``num_cpus`` = its flow processes,
    ``num_gpus`` = 1 on CUDA (``cuda``/``cuda:N``, or ``auto`` on a cluster with GPUs). A worker's device is
    the one Ray gave it (``cuda``), or ``cpu`` (device does not change the features or their hash)."""
    gpus = ray.cluster_resources().get("GPU", 0)
    on_gpu = cfg.device.startswith("cuda") or (cfg.device == "auto" and gpus >= 1)
    if on_gpu and gpus < 1:
        raise ConfigError(f"config key 'device': {cfg.device} asks for a GPU, but the Ray cluster has none")
    if cfg.workers == 0:  # auto: one CPU per task; Ray spreads the videos over the cores instead
        cfg = dataclasses.replace(cfg, workers=1)
    per_node = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not any(r.get("CPU", 0) >= cfg.workers for r in per_node):
        raise ConfigError(f"config key 'workers': each video's task needs {cfg.workers} CPUs, but no Ray node has "
                          f"that many (largest: {max((r.get('CPU', 0) for r in per_node), default=0):g})")
    return ({"num_cpus": cfg.workers, "num_gpus": 1 if on_gpu else 0},
            dataclasses.replace(cfg, device="cuda" if on_gpu else "cpu"))


def _cancel(pending: dict[Any, Path], ids: dict[Path, str], out_dir: Path, marker: Path) -> None:
    """Stop the tasks of ``pending`` cooperatively: write the batch's cancel marker (a task not yet started
    returns at once; a running one sees it within a snippet, raises ``errors.Cancelled`` and drops its flow
    chunks). Then, for each of their videos, wait (at most CANCEL_WAIT_S in all) until no task holds its lock
    and remove any temp file left, so that the driver returns with no half-written file behind.

    Not ``ray.cancel``: cancelling a task while its reply is arriving aborts the driver process in Ray
    (a RAY_CHECK in the task manager, ray-project/ray#54846 and PR #54798; seen here with Ray 2.60 on a
    Ctrl-C). A task still running after the wait is ended by Ray when this driver exits; its lock (a flock)
    dies with its worker and the next run removes what it left (``remove_stale_entry_temps``)."""
    deadline = time.monotonic() + CANCEL_WAIT_S
    try:
        marker.write_text("cancelled\n")
    except OSError:
        pass  # the folder went away: the tasks fail on their own, the wait below is still bounded
    try:
        refs = list(pending)
        while refs and time.monotonic() < deadline:
            _, refs = ray.wait(refs, num_returns=len(refs), timeout=min(1.0, max(0.0, deadline - time.monotonic())))
        for video in pending.values():
            vid = ids[video]
            if owner_conflict(out_dir, vid, video):
                vid = disambiguated_id(vid, video)
            lock = VideoLock.for_video(out_dir, vid)
            while not lock.acquire(blocking=False):  # bounded by the deadline
                if time.monotonic() > deadline:
                    return  # still held: the next run removes what that task leaves (remove_stale_entry_temps)
                time.sleep(0.1)
            try:
                remove_stale_entry_temps(out_dir, vid, older_than=time.time() + 1)  # under its lock: no writer
            finally:
                lock.release()
    finally:
        marker.unlink(missing_ok=True)


def extract_batch_ray(inputs: Iterable[str | Path], out_dir: str | Path, cfg: ExtractConfig, *,
                      address: str = "local", progress: bool = True, log: Callable[[str], None] | None = None,
                      on_ready: Callable[[Path, str, np.ndarray, dict[str, Any]], None] | None = None,
                      max_retries: int = MAX_RETRIES, timeout_s: float | None = None,
                      before_extract: Callable[[Path, str], None] | None = None) -> BatchSummary:
    """:func:`~refineloc_e2e.features.batch.extract_batch` on a Ray cluster: the same inputs, cache, log lines
    and summary (plus ``per_node``). ``on_ready`` runs here, in the driver, with the arrays the workers send
    back. ``timeout_s``: give up (cancelling every task) after that long; None waits as long as it takes.
    ``before_extract(out_dir, video_id)``: called in the worker just before a video is extracted, under its
    lock (tests inject faults there); it must be picklable, and importable where the workers run.
    """
    log = log or log_lines(logger)
    require_ray()
    out_dir = Path(os.path.abspath(out_dir))  # the workers' working folders are not ours
    summary, videos = begin_batch(inputs, out_dir, log)
    if not videos:
        return summary
    ids = assign_video_ids(videos, log=log)
    with ray_session(address):
        check_shared_folder(out_dir)
        resources, worker_cfg = task_resources(cfg)
        task = ray.remote(_extract_task).options(**resources, max_retries=max_retries, retry_exceptions=False)
        pending: dict[Any, Path] = {}
        marker = out_dir / f".cancel-{secrets.token_hex(8)}"  # this batch's: written only to stop its tasks

        def submit(video: Path, blocking: bool) -> None:
            ref = task.remote(os.path.abspath(video), ids[video], str(out_dir), worker_cfg, blocking,
                              on_ready is not None, before_extract, str(marker))
            pending[ref] = video

        for video in videos:
            submit(video, blocking=False)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        bar = Progress(len(videos), desc="extract (ray)", unit="video", enabled=progress)
        video_s, notes_seen, deferred = 0.0, set(), []
        finished = False
        try:
            while pending:  # each pass takes at most WAIT_STEP_S and ends when every task has reported
                if deadline is not None and time.monotonic() > deadline:
                    raise RefineLocError(f"the Ray batch did not finish within {timeout_s:g} s; finished work "
                                         f"is kept, run the same command again to continue")
                done, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_STEP_S)
                for ref in done:
                    video = pending.pop(ref)
                    result = _result(ref, video, ids[video], max_retries)
                    outcome = result.outcome
                    if outcome.status == "busy":  # another run holds it: come back when it is done
                        deferred.append(video)
                    else:
                        outcome.video = str(video)  # the path as the user gave it, as in extract_batch
                        outcome.notes = [n for n in outcome.notes if n not in notes_seen]
                        notes_seen.update(outcome.notes)
                        record(summary, outcome, log, on_ready)
                        if result.pid != -1:  # not a worker that died every time
                            summary.per_node[result.node] = summary.per_node.get(result.node, 0) + 1
                        summary.loaded_models |= result.built_models
                        summary.model_builds += int(result.built_models)
                        video_s += outcome.duration_s
                        bar.update(1, note=f"{video.name[-40:]} ({video_s:.0f} video-s so far)")
                if not pending and deferred:
                    for video in deferred:
                        submit(video, blocking=True)
                    deferred = []
            finished = True
        finally:
            if not finished:  # Ctrl-C, a set-up error, the deadline: stop the cluster's work on this batch
                _cancel(pending, ids, out_dir, marker)
            bar.close()
    return summary


def _result(ref, video: Path, video_id: str, max_retries: int) -> TaskResult:
    """The task's result; a worker that died 1 + max_retries times is this video's failure; a set-up error
    raised in the task is raised here as itself (a RefineLocError), anything else keeps its traceback."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, RefineLocError):
            raise e.cause from None
        raise
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.LocalRayletDiedError,
            ray.exceptions.OutOfMemoryError) as e:
        cause = (f"the Ray worker extracting it died {1 + max_retries} times ({type(e).__name__}); "
                 f"run the same command again to retry it")
        return TaskResult(VideoOutcome(str(video), video_id, "failed", cause=cause), "-", -1, False)
