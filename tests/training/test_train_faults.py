"""Training runs under faults: a real SIGKILL during iteration 2's epochs then ``train --resume``, a damaged
checkpoint in the run folder, and two ``train`` processes on one run folder."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from support import _features_and_annotations
from refineloc_e2e.model.head import load_head
from refineloc_e2e.training.run_lock import LOCK_NAME, RunFolderLock

from testing.proc_scan import MARKER_ENV, new_marker, tagged_processes

CLI = [sys.executable, "-c", "from refineloc_e2e.cli import main; main()"]
# iteration 2 lasts ~1 s (120 epochs of 7 tiny videos), long enough to be killed in the middle of it
SLOW_SET = ["--set", "head.feature_dim=16", "--set", "train.epochs=120", "--set", "train.n_iterations=2",
            "--set", "train.batch_size=4", "--set", "train.device=cpu",
            "--set", "guard.enabled=false"]  # guard off: the toy pseudo labels collapse; these tests check resume
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _train(args, **kw):
    return subprocess.run([*CLI, "train", *map(str, args)], env=ENV, capture_output=True, text=True,
                          timeout=300, **kw)


def _strip(its):
    return [{k: v for k, v in e.items() if k not in ("wall_s", "timing", "epoch_s")} for e in its]


def _same_models(a: Path, b: Path) -> bool:
    sa, sb = load_head(a).model.state_dict(), load_head(b).model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """The uninterrupted reference run (a subprocess, like the interrupted one)."""
    root = tmp_path_factory.mktemp("train_faults")
    ann, feats = _features_and_annotations(root)
    r = _train(["--annotations", ann, "--features", feats, "--run-dir", root / "full", "-q", *SLOW_SET])
    assert r.returncode == 0, r.stderr
    return root, ann, feats


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=lambda s: s.name)
def test_signal_during_iteration_2_then_resume_equals_uninterrupted(full_run, sig):
    root, ann, feats = full_run
    cut = root / f"cut-{sig.name}"
    args = ["--annotations", ann, "--features", feats, "--run-dir", cut, *SLOW_SET]  # progress bars on stderr
    marker = new_marker()
    proc = subprocess.Popen([*CLI, "train", *map(str, args)], env=dict(ENV, **{MARKER_ENV: marker}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen, signalled = [], []

    def read():
        buf = b""
        while chunk := proc.stderr.read1(4096):
            buf += chunk
            if re.search(rb"iteration 2:\s+(\d+%\|[^|]*\|\s*)?[1-9]\d*/120", buf):  # >= 1 epoch of iteration 2 done (a bar, or a plain line when not a tty)
                seen.append(buf.decode(errors="replace").split("\r")[-1])
                signalled.append(time.monotonic())
                proc.send_signal(sig)
                break
        seen.append(buf.decode(errors="replace") + proc.stderr.read().decode(errors="replace"))

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(timeout=240)
    if proc.poll() is None and not signalled:
        proc.kill()
    proc.wait(timeout=60)
    exit_s = time.monotonic() - signalled[0] if signalled else None
    assert signalled, "never reached iteration 2's epochs"
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:  # a stop: the current iteration is lost, the completed ones kept
        assert proc.returncode == 143 and exit_s < 10, (proc.returncode, exit_s)
        assert seen[-1].splitlines()[-1] == ("error: stopped (SIGTERM); completed iterations are kept, add --resume "
                                             "to the same command to continue after the last one"), seen[-1]
    deadline = time.monotonic() + 5  # nothing of the run is left 5 s after it ended
    while tagged_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tagged_processes(marker) == []
    assert sorted(p.name for p in cut.glob("iter_*.pt")) == ["iter_0.pt", "iter_1.pt"], seen  # killed in it
    assert not (cut / "model.pt").exists() and not list(cut.glob("*.tmp")) and not list(cut.glob(".*.tmp"))

    r = _train(["--annotations", ann, "--features", feats, "--run-dir", cut, "-q", *SLOW_SET, "--resume"])
    assert r.returncode == 0, r.stderr
    assert f"resuming {cut} after iteration 1" in r.stderr
    full, resumed = (json.loads((d / "metrics.json").read_text()) for d in (root / "full", cut))
    assert _strip(full["iterations"]) == _strip(resumed["iterations"]) and len(full["iterations"]) == 3
    assert full["selected_iteration"] == resumed["selected_iteration"] == 2
    assert _same_models(root / "full" / "model.pt", cut / "model.pt")
    maps = [(a["test"]["average_map"], b["test"]["average_map"]) for a, b in zip(full["iterations"],
                                                                              resumed["iterations"])]
    assert all(abs(a - b) <= 1e-6 for a, b in maps), maps


@pytest.mark.slow
def test_truncated_checkpoint_is_named_and_trained_again(full_run):
    root, ann, feats = full_run
    run = root / "damaged"
    r = _train(["--annotations", ann, "--features", feats, "--run-dir", run, "-q", *SLOW_SET])
    assert r.returncode == 0, r.stderr
    ckpt = run / "iter_1.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    r = _train(["--annotations", ann, "--features", feats, "--run-dir", run, "-q", *SLOW_SET, "--resume"])
    assert r.returncode == 0, r.stderr
    warning = [line for line in r.stderr.splitlines() if line.startswith("warning: ") and ".pt" in line]
    assert len(warning) == 1 and warning[0].startswith(f"warning: {ckpt}: ") \
        and warning[0].endswith("; iteration 1 and later are trained again"), r.stderr
    assert f"resuming {run} after iteration 0" in r.stderr
    for name in ("iter_1.pt", "iter_2.pt", "model.pt"):
        assert _same_models(root / "full" / name, run / name), name
    full, again = (json.loads((d / "metrics.json").read_text()) for d in (root / "full", run))
    assert _strip(full["iterations"]) == _strip(again["iterations"])


@pytest.mark.slow
def test_a_second_train_in_the_same_run_folder_is_refused(tmp_path):
    ann, feats = _features_and_annotations(tmp_path)
    run = tmp_path / "run"
    args = ["--annotations", ann, "--features", feats, "--run-dir", run, "-q", *SLOW_SET]
    with RunFolderLock(run):  # this process is "the first train"
        r = _train(args)
    assert r.returncode == 1
    assert re.fullmatch(rf"error: {re.escape(str(run))}: another `train` is running in this run folder "
                        rf"\(pid {os.getpid()} on [^,]+, started [0-9: -]+; lock {re.escape(str(run / LOCK_NAME))}, "
                        rf"held while that process lives\); wait for it to finish or choose another run folder\n",
                        r.stderr), r.stderr
    assert not (run / "config.yaml").exists()  # refused before touching the run

    # a lock file left by a killed holder does not block: the lock died with its process
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from refineloc_e2e.training.run_lock "
                               "import RunFolderLock; l = RunFolderLock(sys.argv[1]).__enter__(); print(1, flush=True); "
                               "time.sleep(600)", str(run)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "1"
    assert f"pid {holder.pid}" in _train(args).stderr  # refused while it lives
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == holder.pid  # stale content left behind
    t0 = time.perf_counter()
    r = _train([*args[:-len(SLOW_SET)], *SLOW_SET[:2], "--set", "train.epochs=2", *SLOW_SET[4:]])
    assert r.returncode == 0, r.stderr
    assert (run / "model.pt").is_file() and (run / LOCK_NAME).read_text() == ""  # released at the end
    assert time.perf_counter() - t0 < 120
