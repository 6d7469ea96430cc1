"""Batches of videos across a Ray cluster: one task per video, the cache rules of ``batch.py`` unchanged.

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
tests inject faults with ``before_extract`` (``tools.faults.FaultHook``), never through the environment.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from refineloc_e2e.config import settings_hash, to_dict
from refineloc_e2e.device import configure_cpu_math
from refineloc_e2e.errors import Cancelled, ConfigError, InputError, RefineLocError
from refineloc_e2e.features.batch import (BatchSummary, LazyExtractor, VideoOutcome, begin_batch,
                                          process_video, record)
from refineloc_e2e.features.cache import (VideoLock, assign_video_ids, disambiguated_id,
                                          owner_conflict, remove_stale_entry_temps)
from refineloc_e2e.features.extractor import ExtractConfig
from refineloc_e2e.features.ray_compat import canonicalize_address, loopback_only
from refineloc_e2e.fileio import atomic_write_json
from refineloc_e2e.progress import Progress, log_lines

logger = logging.getLogger(__name__)


try:  # the optional [ray] extra
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError:
    ray = None

RAY_INSTALL = "pip install 'refineloc-e2e[ray]'"
MAX_RETRIES = 2  # a task whose worker process dies is run at most 1 + MAX_RETRIES times
CANCEL_WAIT_S = 30.0  # after Ctrl-C or a set-up error: how long cancelled tasks get to clean up
CANCEL_POLL_S = 0.2  # how often a running task looks for its batch's cancel marker
PROBE_TIMEOUT_S = 60.0  # the shared-folder check: how long every node gets to answer
WAIT_STEP_S = 1.0  # the driver wakes at least this often (Ctrl-C, deadline)
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def require_ray() -> None:
    if ray is None:
        raise ConfigError(f"--ray needs Ray, which is not installed; install it with: {RAY_INSTALL}")


# ----------------------------------------------------------------------------- connecting

def _host(address: str) -> str:
    return address.rsplit(":", 1)[0].strip("[]")


@contextmanager
def ray_session(address: str) -> Iterator[None]:
    """Connected to Ray at ``address`` (see the module docstring) inside the block; disconnected (a local
    runtime stopped) after it. An existing connection (a test, a notebook) is used and left open."""
    require_ray()
    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "logging_level": "warning"}
    if address == "local":
        loopback = True
        kwargs.update(address="local", _node_ip_address="127.0.0.1")
    elif address.startswith("ray://"):
        loopback = False
        kwargs = {"address": address, "logging_level": "warning"}
    else:
        resolved = canonicalize_address(address)  # the address of `auto`, a loopback one kept
        if resolved is None:
            raise InputError(f"--ray {address}: no running Ray cluster found (start one with `ray start --head` "
                             f"on this machine, or give its address)")
        loopback = _host(resolved) in _LOOPBACK or _host(resolved).startswith("127.")
        kwargs["address"] = resolved
    try:
        with loopback_only(loopback):
            ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise InputError(f"--ray {address}: cannot connect to Ray ({e})") from None
    try:
        yield
    finally:
        ray.shutdown()


# ----------------------------------------------------------------------------- the shared output folder

# a probe pinned to a node that has just died fails with one of these: that node is no longer part of the batch
_NODE_GONE = tuple(getattr(ray.exceptions, name) for name in ("TaskUnschedulableError", "NodeDiedError",
                                                              "WorkerCrashedError") if hasattr(ray.exceptions, name)) \
    if ray is not None else ()

def _node_label(node: dict[str, Any]) -> str:
    return f"{node.get('NodeManagerAddress')} ({node['NodeID'][:8]})"


def _probe(folder: str, token: str) -> str | None:
    """On one node: None if ``folder`` holds the driver's probe file for ``token`` and is writable, else why not."""
    path = Path(folder) / f".probe-{token}.json"
    try:
        if token not in path.read_text(encoding="utf-8"):
            return f"{path} holds another token (a different folder at the same path)"
    except OSError as e:
        return f"cannot read the probe file {path} ({e.strerror or e})"
    mine = Path(folder) / f".probe-{token}-{os.getpid()}"
    try:
        mine.write_bytes(b"ok")
        mine.unlink()
    except OSError as e:
        return f"cannot write in {folder} ({e.strerror or e})"
    return None


def _write_probe(out_dir: Path, token: str) -> Path:
    path = out_dir / f".probe-{token}.json"
    atomic_write_json(path, {"token": token})
    return path


def check_shared_folder(out_dir: Path, *, timeout_s: float = PROBE_TIMEOUT_S) -> list[str]:
    """Every alive node must see ``out_dir`` (an absolute path): the driver writes a probe file holding a
    random token and a task pinned to each node reads it back and writes beside it. Returns the node labels;
    raises InputError naming each node that cannot, or that does not answer within ``timeout_s``."""
    token = secrets.token_hex(16)
    probe = out_dir / f".probe-{token}.json"
    try:  # everything after writing the probe is inside: a Ctrl-C anywhere here still removes it
        probe = _write_probe(out_dir, token)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        remote = ray.remote(_probe)
        refs = [remote.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(out_dir), token) for n in nodes]
        ready, late = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        problems, gone = [], []
        for node, ref in zip(nodes, refs):
            try:
                why = ray.get(ref) if ref in ready else f"did not answer within {timeout_s:g} s"
            except _NODE_GONE:  # it died after ray.nodes() listed it (a lost node stays listed a while)
                gone.append(node)
                continue
            if why is not None:
                problems.append(f"node {_node_label(node)}: {why}")
        for ref in late:
            ray.cancel(ref, force=True)
    finally:
        probe.unlink(missing_ok=True)
    if problems:
        raise InputError(f"{out_dir}: the output folder must be one shared filesystem path, mounted at the same "
                         f"path on every Ray node; " + "; ".join(problems))
    return [_node_label(n) for n in nodes if n not in gone]


# ----------------------------------------------------------------------------- the task (runs on a worker)

@dataclass
class TaskResult:
    outcome: VideoOutcome
    node: str  # "<ip> (<node id[:8]>)"
    pid: int  # the worker process
    built_models: bool  # this task built the worker's I3D models (once per worker process)


_SOURCES: dict[tuple, LazyExtractor] = {}  # per worker process: (config, cache folder, GPU ids) -> models


def _worker_source(cfg: ExtractConfig, out_dir: Path) -> LazyExtractor:
    key = (settings_hash(to_dict(cfg)), str(out_dir), tuple(ray.get_gpu_ids()))
    if key not in _SOURCES:
        _SOURCES[key] = LazyExtractor(cfg, out_dir)
    return _SOURCES[key]


class _StopWatch:
    """In a worker: ``stop()`` turns True once the driver's cancel marker exists (polled on a daemon thread
    every CANCEL_POLL_S, so the extractor's once-a-snippet check costs nothing)."""

    def __init__(self, marker: Path):
        self.marker, self._set, self._done = marker, threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.wait(CANCEL_POLL_S):
            if self.marker.exists():
                self._set.set()
                return

    def stop(self) -> bool:
        return self._set.is_set()

    def close(self) -> None:
        self._done.set()


def _extract_task(video: str, video_id: str, out_dir: str, cfg: ExtractConfig, blocking: bool,
                  keep_arrays: bool, before_extract: Callable[[Path, str], None] | None = None,
                  cancel_marker: str | None = None) -> TaskResult:
    configure_cpu_math()  # a Ray worker is its own process: the CLI's setting does not reach it
    started = time.time()  # under the video's lock no other writer of it is alive: older temps are stale
    out = Path(out_dir)
    ctx = ray.get_runtime_context()
    node = f"{ray.util.get_node_ip_address()} ({ctx.get_node_id()[:8]})"
    if cancel_marker is not None and Path(cancel_marker).exists():  # the driver gave up before this started
        return TaskResult(VideoOutcome(video, video_id, "cancelled"), node, os.getpid(), False)
    source = _worker_source(cfg, out)
    notes: list[str] = []
    source.log, built_before = notes.append, source.built
    hook = None if before_extract is None else (lambda: before_extract(out, video_id))
    watch = None if cancel_marker is None else _StopWatch(Path(cancel_marker))
    try:
        outcome = process_video(Path(video), video_id, out, source, started=started, blocking=blocking,
                                before_extract=hook, should_stop=None if watch is None else watch.stop)
    except Cancelled:  # the extractor saw the marker: its lock is released, no file was written
        return TaskResult(VideoOutcome(video, video_id, "cancelled"), node, os.getpid(), False)
    finally:
        if watch is not None:
            watch.close()
        if source.extractor is not None:
            source.extractor.should_stop = None
    outcome.notes[:0] = notes
    if not keep_arrays:
        outcome.features = None  # the driver does not need them: do not ship them
    return TaskResult(outcome, node, os.getpid(), source.built and not built_before)


# ----------------------------------------------------------------------------- the driver

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
    lock (tests inject faults there, e.g. ``tools.faults.KillOnce``); it must be picklable.
    """
    log = log or log_lines(logger)
    require_ray()
    out_dir = Path(os.path.abspath(out_dir))  # the workers' working folders are not ours
    summary, videos = begin_batch(inputs, out_dir, log)
    if not videos:
        return summary
    ids = assign_video_ids(videos)
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
