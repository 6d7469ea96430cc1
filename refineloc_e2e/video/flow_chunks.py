"""Flow for the feature extractor: only where the crop needs it, in chunks, optionally in worker processes.

* **Region.** ``flow_window`` picks the part of the 256-short-side frame that TV-L1 sees: the whole frame
  (``region="full"``, the published recipe) or the ``crop x crop`` centre window plus ``margin_px`` on each
  side, clamped to the frame (``region="crop"``). Either way the field is cut to the centre crop afterwards,
  so both give ``float32 [crop, crop, 2]`` fields (clipped and scaled to ``[-1, 1]``, ``flow.postprocess_flow``).
  On a 602x256 frame the crop region with a 32 px margin is 288x256: about half the pixels.
* **Chunks.** Frames are grouped into chunks of ``chunk_pairs + 1`` consecutive grayscale frames (consecutive
  chunks share one frame); a chunk gives ``chunk_pairs`` fields. Field ``i`` is the flow from frame ``i`` to
  ``i + 1``, the last frame repeats the previous field, a 1-frame video gets a zero field (as ``flow.iter_flow``).
* **Workers.** ``workers=1`` computes each chunk in this process as soon as it is complete. ``workers=N > 1``
  sends chunks to a ``spawn`` process pool (:class:`FlowPool`; torch + fork is unsafe) and returns fields in
  frame order, with at most ``max_in_flight`` chunks outstanding (bounded memory). Every chunk is computed by
  the same pure function from the same inputs, so the fields do not depend on ``workers``.
  ``use_initial_flow`` chains the pairs, so it runs with ``workers=1`` only. ``extract``'s default
  ``workers=0`` is resolved by :func:`auto_workers` (one single-thread process per core for the CPU's torch
  backend); each worker runs 1 OpenCV and 1 torch thread.
* **Backends.** A chunk's pairs go to ``flow.FlowEngine``: OpenCV pair by pair, or the torch port as one
  batch of ``chunk_pairs`` pairs on the extractor's device (CUDA: the frames go to the GPU once per chunk and
  only the crop comes back). Worker processes always run on the CPU.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from refineloc_e2e.device import configure_cpu_math
from refineloc_e2e.errors import ConfigError, RefineLocError
from refineloc_e2e.stdlib_compat import kill_pool_workers
from refineloc_e2e.stopping import die_with_parent, on_hard_stop, started_in_main_thread
from refineloc_e2e.video.flow import FlowConfig, FlowEngine, cv2_plain, last_field, postprocess_flow

REGIONS = ("crop", "full")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_workers(backend: str, device_type: str, use_initial_flow: bool = False, cores: int | None = None) -> int:
    """``workers: 0`` (auto) made concrete: how many flow processes ``extract`` runs.

    The rule (measured on bikes.mp4 with ``benchmarks/speed/extract_throughput.py --before-after``, docs/measured.md):
    the torch backend on the CPU gets one single-thread process per usable core when there are
    at least 2 (its 1-thread speed is ~2x OpenCV's, and 2 torch threads in one process were slower than 1);
    OpenCV runs in this process (it already spreads a pair over its own threads: ``--workers 2`` measured no
    gain); CUDA computes a chunk at once in this process; ``use_initial_flow`` chains pairs, so 1.
    """
    if device_type == "cuda" or use_initial_flow or backend != "torch":
        return 1
    n = usable_cores() if cores is None else cores
    return n if n >= 2 else 1


@dataclass(frozen=True)
class FlowWindow:
    """Where TV-L1 runs in the frame (``top:bottom, left:right``) and where the crop sits inside that region."""

    top: int
    bottom: int
    left: int
    right: int
    crop_top: int  # row of the centre crop inside the region
    crop_left: int  # column of the centre crop inside the region
    crop: int  # crop side, pixels

    @property
    def size_hw(self) -> tuple[int, int]:
        return self.bottom - self.top, self.right - self.left

    def region_of(self, frame: np.ndarray) -> np.ndarray:
        """``[H, W, ...]`` -> the flow region ``[h, w, ...]`` (a view)."""
        return frame[self.top:self.bottom, self.left:self.right]

    def crop_of_fields(self, fields: np.ndarray) -> np.ndarray:
        """Fields over the region ``[n, h, w, 2]`` -> their centre-crop parts ``[n, crop, crop, 2]`` (a view)."""
        return fields[:, self.crop_top:self.crop_top + self.crop, self.crop_left:self.crop_left + self.crop]

    def crop_of(self, field: np.ndarray) -> np.ndarray:
        """A field over the region ``[h, w, 2]`` -> its centre-crop part ``[crop, crop, 2]`` (a view)."""
        return field[self.crop_top:self.crop_top + self.crop, self.crop_left:self.crop_left + self.crop]


def flow_window(height: int, width: int, crop: int, region: str = "crop", margin_px: int = 32) -> FlowWindow:
    """The flow region of an ``height x width`` frame whose centre ``crop x crop`` is used (see module doc).

    The crop offset is ``snippets.center_crop``'s: ``(H - crop) // 2`` rows, ``(W - crop) // 2`` columns.
    """
    if region not in REGIONS:
        raise ConfigError(f"config key 'flow_region': expected crop or full, got {region!r}")
    if margin_px < 0:
        raise ConfigError(f"config key 'flow_margin_px': must be >= 0, got {margin_px!r}")
    if not 1 <= crop <= min(height, width):
        raise RefineLocError(f"centre crop of {crop}x{crop} does not fit in frames of {height}x{width} (H x W)")
    top, left = (height - crop) // 2, (width - crop) // 2
    if region == "full":
        return FlowWindow(0, height, 0, width, top, left, crop)
    r0, c0 = max(0, top - margin_px), max(0, left - margin_px)
    r1, c1 = min(height, top + crop + margin_px), min(width, left + crop + margin_px)
    return FlowWindow(r0, r1, c0, c1, top - r0, left - c0, crop)


def flow_chunk(grays: np.ndarray, engine: FlowEngine, window: FlowWindow, bound: float,
               init_flow: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fields of consecutive pairs of a chunk: uint8 ``[n + 1, h, w]`` region frames -> float32 ``[n, crop, crop, 2]``.

    Returns ``(fields, last_raw)``: fields clipped and scaled to ``[-1, 1]``, and the last pair's raw flow
    ``[h, w, 2]`` over the region (the next chunk's initial flow when ``use_initial_flow``).
    """
    raw = engine.pairs(grays, init_flow)  # [n, h, w, 2], pixels
    return postprocess_flow(window.crop_of_fields(raw), bound), raw[-1]


# ---- worker side (runs in spawned processes) ----
_WORKER: dict[str, Any] = {}


def _worker_init(cfg: FlowConfig, cv2_threads: int, parent_pid: int | None = None,
                 parent_death_signal: bool = True) -> None:
    if parent_pid is not None:
        die_with_parent(parent_pid, parent_death_signal=parent_death_signal)  # never outlives the extractor
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides and kills us
    configure_cpu_math()
    cv2_plain().setNumThreads(cv2_threads)
    torch.set_num_threads(cv2_threads)
    _WORKER["engine"] = FlowEngine(cfg, "cpu")
    _WORKER["bound"] = cfg.bound


def _worker_chunk(grays: np.ndarray, window: FlowWindow) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    fields, _ = flow_chunk(grays, _WORKER["engine"], window, _WORKER["bound"])
    return fields, time.perf_counter() - t0


class FlowPool:
    """A ``spawn`` pool of ``workers`` processes, each holding one TV-L1 object for ``cfg``.

    Each worker uses ``max(1, cpu_count // workers)`` OpenCV threads. Reused across videos; ``close()`` (or
    ``with``) stops it; the executor also stops its workers when garbage-collected or at interpreter exit.
    The workers die with this process (``stopping.die_with_parent``: nothing is left after a SIGKILL) and ignore
    SIGINT (a Ctrl-C reaches the whole process group; this process stops them): ``close(wait=False)`` kills
    them at once instead of waiting for their running chunks (what a stop does, ``extractor.extract``).
    Create and use the pool from one thread (the workers are started on ``submit``).
    """

    def __init__(self, cfg: FlowConfig, workers: int):
        if workers < 2:
            raise ValueError(f"FlowPool needs workers >= 2, got {workers}")
        self.cfg, self.workers = cfg, workers
        threads = max(1, (os.cpu_count() or 1) // workers)
        self._pool: ProcessPoolExecutor | None = ProcessPoolExecutor(  # stops its workers itself if garbage-collected
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init, initargs=(cfg, threads, os.getpid(), started_in_main_thread()))
        on_hard_stop(id(self), self._kill)

    def submit(self, grays: np.ndarray, window: FlowWindow) -> Future:
        if self._pool is None:
            raise RefineLocError("the flow worker pool was closed")
        return self._pool.submit(_worker_chunk, grays, window)

    @property
    def alive(self) -> bool:
        return self._pool is not None

    def close(self, *, wait: bool = True) -> None:
        """Stop the workers: after their running chunks (``wait``), or at once (killed: their results are
        not wanted; where Python offers no way to kill them, after their running chunks too). Either way no
        worker process is left when this returns."""
        if self._pool is not None:
            on_hard_stop(id(self), None)
            if not wait:
                self._kill()
            pool, self._pool = self._pool, None
            pool.shutdown(wait=True, cancel_futures=True)  # killed workers are reaped at once

    def _kill(self) -> None:
        """SIGKILL every worker (``stdlib_compat.kill_pool_workers``); one that already exited is skipped."""
        kill_pool_workers(self._pool)

    def __enter__(self) -> FlowPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close(wait=exc[0] is None)


class ChunkedFlow:
    """One video's flow fields, streaming: ``push`` region frames, get finished fields back in frame order.

    ``push(gray)`` and ``finish()`` return lists of ``float32 [crop, crop, 2]`` fields (views into chunk
    arrays). With a pool, ``push`` returns the chunks already done without waiting, and waits for the
    oldest only when ``max_in_flight`` chunks are outstanding. ``compute_s`` sums the time spent computing
    flow (in this process or in the workers); ``wait_s`` is the time this process spent blocked on workers.
    On any error call ``cancel()`` (``extract`` does).
    """

    def __init__(self, cfg: FlowConfig, window: FlowWindow, *, source: str, chunk_pairs: int = 16,
                 pool: FlowPool | None = None, max_in_flight: int | None = None, device: str | torch.device = "cpu"):
        if chunk_pairs < 1:
            raise ValueError(f"chunk_pairs must be >= 1, got {chunk_pairs}")
        if pool is not None and cfg.use_initial_flow:
            raise ConfigError("flow.use_initial_flow chains every pair to the previous one, so it cannot be "
                              "split over flow workers; use workers=1")
        self.cfg, self.window, self.source, self.chunk_pairs, self.pool = cfg, window, source, chunk_pairs, pool
        self.max_in_flight = max_in_flight or (2 * pool.workers if pool is not None else 1)
        self._engine = FlowEngine(cfg, device) if pool is None else None
        self._frames: list[np.ndarray] = []  # current chunk's region frames, each [h, w] uint8
        self._first = 0  # frame index of _frames[0]
        self._in_flight: deque[tuple[int, Future]] = deque()
        self._raw: np.ndarray | None = None  # last raw field (use_initial_flow)
        self._last: np.ndarray | None = None  # last field returned, [crop, crop, 2]
        self.n_frames = 0
        self.compute_s = 0.0
        self.wait_s = 0.0

    def push(self, gray_region: np.ndarray) -> list[np.ndarray]:
        """Add the next frame's grayscale flow region ``uint8 [h, w]``; returns the fields now ready."""
        self._frames.append(gray_region)
        self.n_frames += 1
        if len(self._frames) < self.chunk_pairs + 1:
            return self._collect(block=False)
        chunk = np.stack(self._frames)  # [chunk_pairs + 1, h, w]
        first = self._first
        self._frames, self._first = [gray_region], first + self.chunk_pairs
        return self._run(first, chunk)

    def finish(self) -> list[np.ndarray]:
        """The remaining fields, the last frame's repeated field included; waits for every worker chunk."""
        ready: list[np.ndarray] = []
        if len(self._frames) >= 2:
            chunk = np.stack(self._frames)  # [n + 1, h, w]
            ready += self._run(self._first, chunk)
        ready += self._collect(block=True, drain=True)
        if self.n_frames == 0:
            return ready
        ready.append(last_field(self._last, (self.window.crop, self.window.crop)))
        self._frames = []
        return ready

    def cancel(self) -> None:
        """Drop outstanding worker chunks (after an error); the pool itself stays usable."""
        for _, fut in self._in_flight:
            fut.cancel()
        self._in_flight.clear()

    def _run(self, first: int, chunk: np.ndarray) -> list[np.ndarray]:
        if self.pool is None:
            t0 = time.perf_counter()
            try:
                fields, self._raw = flow_chunk(chunk, self._engine, self.window, self.cfg.bound, self._raw)
            except Exception as e:  # cv2.error and friends: name the video and the frames
                raise RefineLocError(f"{self.source}: optical flow failed on frames {first}-"
                                     f"{first + len(chunk) - 1} ({type(e).__name__}: {e})") from e
            self.compute_s += time.perf_counter() - t0
            return self._emit(fields)
        self._in_flight.append((first, self.pool.submit(chunk, self.window)))
        return self._collect(block=len(self._in_flight) >= self.max_in_flight)

    def _collect(self, *, block: bool, drain: bool = False) -> list[np.ndarray]:
        """Fields of finished chunks, in order; waits for the oldest when ``block`` (for all when ``drain``)."""
        ready: list[np.ndarray] = []
        while self._in_flight and (self._in_flight[0][1].done() or block):
            first, fut = self._in_flight.popleft()
            t0 = time.perf_counter()
            try:
                fields, seconds = fut.result()
            except BrokenProcessPool as e:
                self.cancel()
                self.pool.close(wait=False)  # unusable now; the extractor starts a new one for the next video
                raise RefineLocError(f"{self.source}: a flow worker process died while computing frames "
                                     f"{first}-{first + self.chunk_pairs} ({e}); rerun with workers=1 to see "
                                     f"the error in this process") from e
            except Exception as e:  # the worker's exception, re-raised here
                self.cancel()
                raise RefineLocError(f"{self.source}: optical flow failed in a worker on frames {first}-"
                                     f"{first + self.chunk_pairs} ({type(e).__name__}: {e})") from e
            self.wait_s += time.perf_counter() - t0
            self.compute_s += seconds
            ready += self._emit(fields)
            block = drain
        return ready

    def _emit(self, fields: np.ndarray) -> list[np.ndarray]:
        if len(fields):
            self._last = fields[-1]
        return list(fields)
