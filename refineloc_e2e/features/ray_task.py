"""The Ray task of ``features.distributed``: one video into the cache on a worker, stoppable by its driver.

Each worker process builds the I3D models once per (config, cache folder, GPUs) and reuses them for every video
it is given. A task stops cooperatively when its batch's cancel marker appears (``_StopWatch``): before it starts
(returns ``cancelled`` at once) or within a snippet while it extracts (``errors.Cancelled``, nothing written).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from refineloc_e2e.config import settings_hash, to_dict
from refineloc_e2e.device import configure_cpu_math
from refineloc_e2e.errors import Cancelled
from refineloc_e2e.features.batch import LazyExtractor, VideoOutcome, process_video
from refineloc_e2e.features.extractor import ExtractConfig
from refineloc_e2e.features.ray_session import ray

CANCEL_POLL_S = 0.2  # how often a running task looks for its batch's cancel marker


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
