"""Fault hooks for tests and benchmarks, injected into a Ray batch (``extract_batch_ray(before_extract=...)``).

Production code never reads these from the environment: a test passes one in, Ray pickles it to the worker,
and the worker calls it just before it extracts a video, under that video's lock. Ray pickles the class by
reference, so a worker must be able to import ``testing``: Ray puts the driver's working directory on its workers'
``sys.path``, and the tests' cluster (tests/features/test_distributed.py) also starts its nodes with the repository root on
``PYTHONPATH``, so the hooks need not ship in the wheel.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from refineloc_e2e.features.cache import feature_paths
from refineloc_e2e.fileio import atomic_writer


@dataclass
class FaultHook:
    """``hook(out_dir, video_id)`` in a worker: append ``<video_id> <pid>`` to ``<folder>/starts.log`` (one line
    per extraction started, so a test can count them), sleep ``sleep_s`` (to give a test time to kill
    something mid-batch), and for a video in ``kill_once`` the first time only: leave half a temp file,
    record ``<folder>/<video_id>.killed`` and SIGKILL this worker process."""
    folder: str
    kill_once: frozenset[str] = field(default_factory=frozenset)
    sleep_s: float = 0.0

    def __call__(self, out_dir: Path, video_id: str) -> None:
        folder = Path(self.folder)
        with open(folder / "starts.log", "a", encoding="utf-8") as f:
            f.write(f"{video_id} {os.getpid()}\n")
        if self.sleep_s:
            time.sleep(self.sleep_s)
        marker = folder / f"{video_id}.killed"
        if video_id not in self.kill_once or marker.exists():
            return
        marker.write_text(str(os.getpid()))
        with atomic_writer(feature_paths(out_dir, video_id)[0]) as f:
            f.write(b"half an array")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def starts(self) -> list[str]:
        """The video ids whose extraction started, in order (one per attempt)."""
        path = Path(self.folder) / "starts.log"
        return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []
