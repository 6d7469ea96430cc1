"""The private standard-library names the package relies on (``refineloc_e2e.stdlib_compat``): a Python that
moves one fails here, not in a user's stopped command; and each helper falls back safely without its name."""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from refineloc_e2e import stdlib_compat


def test_every_private_name_is_where_the_package_expects_it():
    assert stdlib_compat.missing() == []


RUN_EXIT_HANDLERS = """
import atexit, os, sys
from refineloc_e2e.stdlib_compat import run_exit_handlers
atexit.register(lambda: print("atexit ran", flush=True))
assert run_exit_handlers()
os._exit(0)  # no interpreter exit: only run_exit_handlers can have run it
"""


def test_run_exit_handlers_runs_the_atexit_handlers_now():
    r = subprocess.run([sys.executable, "-c", RUN_EXIT_HANDLERS], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "atexit ran\n"), r


def test_run_multiprocessing_finalizers_runs_them():
    ran = []

    class Owner:
        pass

    owner = Owner()
    multiprocessing.util.Finalize(owner, ran.append, args=("done",), exitpriority=5)
    assert stdlib_compat.run_multiprocessing_finalizers(0)
    assert ran == ["done"]


def _sleep(s: float) -> float:
    time.sleep(s)
    return s


def test_kill_pool_workers_kills_a_busy_worker_at_once():
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    try:
        pool.submit(_sleep, 0).result(timeout=120)  # the worker is up
        pool.submit(_sleep, 60)
        workers = [p for p in multiprocessing.active_children() if p.name.startswith("SpawnProcess")]
        assert workers and all(p.is_alive() for p in workers)
        t0 = time.monotonic()
        assert stdlib_compat.kill_pool_workers(pool)
        for p in workers:
            p.join(timeout=30)
        assert not any(p.is_alive() for p in workers) and time.monotonic() - t0 < 30
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    assert stdlib_compat.kill_pool_workers(pool)  # shut down: nothing to kill
    assert stdlib_compat.kill_pool_workers(None)


def test_each_helper_falls_back_without_its_name(monkeypatch):
    monkeypatch.delattr(atexit, "_run_exitfuncs")
    monkeypatch.delattr(multiprocessing.util, "_run_finalizers")
    assert stdlib_compat.run_exit_handlers() is False  # the caller exits the ordinary way
    assert stdlib_compat.run_multiprocessing_finalizers(0) is False  # the resource tracker cleans up instead

    class Renamed:  # a pool whose process table moved, on a Python without kill_workers()
        pass

    assert stdlib_compat.kill_pool_workers(Renamed()) is False  # the caller waits for the running tasks
    assert stdlib_compat.missing()[:2] == ["atexit._run_exitfuncs", "multiprocessing.util._run_finalizers"]
