"""Batch extraction interrupted and run twice (split from test_hardening.py): a SIGKILL mid-batch then a rerun
that resumes, and two concurrent runs that compute each video once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import SMALL_EXTRACT, _tmp_files, write_test_video
from refineloc_e2e.features.cache import read_features

CLI = [sys.executable, "-c", "from refineloc_e2e.cli import main; main()"]

pytestmark = pytest.mark.usefixtures("one_thread")  # shared 2-core machine


def _batch_videos(folder: Path, n: int) -> list[Path]:
    folder.mkdir()
    return [write_test_video(folder / f"v{i}.mp4", n=48, size=(80, 60), seed=i) for i in range(n)]


def _env(weights: str) -> dict:
    return dict(os.environ, REFINELOC_WEIGHTS_DIR=weights, OMP_NUM_THREADS="1")


def _summary_counts(stderr: str) -> tuple[int, int, int]:
    m = re.search(r"^extracted (\d+), skipped \(up to date\) (\d+), failed (\d+)$", stderr, re.M)
    assert m, stderr
    return tuple(int(x) for x in m.groups())


def _check_outputs(out: Path, n: int) -> None:
    hashes = set()
    for i in range(n):
        feats, meta = read_features(out, f"v{i}")  # shape and checksum agree with the metadata
        assert feats.shape == (3, 1024) and meta["n_snippets"] == 3 and len(meta["snippet_start_s"]) == 3
        hashes.add(meta["settings_hash"])
    assert len(hashes) == 1 and _tmp_files(out) == []


@pytest.mark.real
@pytest.mark.slow
def test_sigkill_mid_batch_then_rerun_resumes(tmp_path, real_weights):
    videos = _batch_videos(tmp_path / "videos", 6)
    out = tmp_path / "feats"
    args = [*CLI, "extract", *map(str, videos), "-o", str(out), *SMALL_EXTRACT]
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=_env(real_weights), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(list(out.glob("*.json"))) < 2 and proc.poll() is None and time.perf_counter() - t0 < 240:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_after_s = time.perf_counter() - t0
    done = {p.stem: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert 2 <= len(done) < 6, "the kill did not land mid-batch"
    # what a writer killed inside atomic_writer leaves, and a live concurrent writer's temp file
    pending = sorted(set(f"v{i}" for i in range(6)) - set(done))[0]
    stale = out / f".{pending}.npy.{proc.pid}-killed.tmp"
    stale.write_bytes(b"\x93NUMPY half")
    os.utime(stale, (time.time() - 5, time.time() - 5))
    live = out / f".{pending}.json.{os.getpid()}-live.tmp"
    live.write_bytes(b"{")
    t1 = time.perf_counter()
    rerun = subprocess.run(args, env=_env(real_weights), capture_output=True, text=True, timeout=300)
    rerun_s = time.perf_counter() - t1
    assert rerun.returncode == 0, rerun.stderr
    assert _summary_counts(rerun.stderr) == (6 - len(done), len(done), 0)
    assert {p: (out / f"{p}.json").stat().st_mtime_ns for p in done} == done  # finished videos not recomputed
    assert not stale.exists() and live.exists()  # the live writer's file is not touched
    live.unlink()
    _check_outputs(out, 6)
    print(f"\nkilled after {killed_after_s:.1f} s with {len(done)}/6 done; rerun {rerun_s:.1f} s "
          f"for {6 - len(done)} videos")


@pytest.mark.real
@pytest.mark.slow
def test_two_concurrent_runs_compute_each_video_once(tmp_path, real_weights):
    videos = _batch_videos(tmp_path / "videos", 4)
    out = tmp_path / "feats"
    args = [*CLI, "extract", *map(str, videos), "-o", str(out), *SMALL_EXTRACT]
    procs = [subprocess.Popen(args, env=_env(real_weights), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stderr.close()
        p.stdout.close()
    assert [rc for rc, _ in results] == [0, 0], results
    counts = [_summary_counts(err) for _, err in results]
    assert sum(c[0] for c in counts) == 4 and sum(c[1] for c in counts) == 4, counts  # each computed once
    _check_outputs(out, 4)
