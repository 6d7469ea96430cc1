"""The private parts of Python's standard library that the package uses, each behind one helper.

A stopped command ends with ``os._exit`` (no interpreter teardown, docs/stopping.md), so it
runs by hand what the teardown would have run, and it kills its flow workers instead of waiting for them. Python
offers no public way to do some of that, so three private names are used. Each helper below checks that its
name exists and falls back to something safe for the user when it does not (slower, or a warning from
multiprocessing's resource tracker, never a wrong result or a hang). ``tests/core/test_stdlib_compat.py`` fails when
one of them moves, so a new Python is caught by the tests, not by a user: :func:`missing` lists what is gone.
"""

from __future__ import annotations

import atexit
import multiprocessing.util
from concurrent.futures import ProcessPoolExecutor

# (module, name) of each private name used; missing() checks them all
PRIVATE_NAMES = (
    (atexit, "_run_exitfuncs"),  # what the interpreter's exit runs: the atexit handlers, now
    (multiprocessing.util, "_run_finalizers"),  # multiprocessing's finalizers of a priority and above
)
POOL_PROCESSES = "_processes"  # ProcessPoolExecutor's {pid: Process}, None once shut down (3.14: kill_workers())
_GONE = object()


def missing() -> list[str]:
    """The private names this module relies on that this Python lacks (``[]`` on the tested versions)."""
    gone = [f"{mod.__name__}.{name}" for mod, name in PRIVATE_NAMES if not callable(getattr(mod, name, None))]
    if not hasattr(ProcessPoolExecutor, "kill_workers") and not _has_processes_dict():
        gone.append(f"concurrent.futures.ProcessPoolExecutor.{POOL_PROCESSES} (and no kill_workers())")
    return gone


def _has_processes_dict() -> bool:
    with ProcessPoolExecutor(max_workers=1) as pool:  # no process is started until the first submit
        return isinstance(getattr(pool, POOL_PROCESSES, None), dict)


def run_exit_handlers() -> bool:
    """Run the ``atexit`` handlers now (multiprocessing's finalizers, logging's flush, temp folders), as the
    interpreter's exit would; False when this Python has no way to: the caller then exits the ordinary way
    (``sys.exit``: the same handlers, after the slower teardown)."""
    run = getattr(atexit, "_run_exitfuncs", None)
    if not callable(run):
        return False
    run()
    return True


def run_multiprocessing_finalizers(min_priority: int = 0) -> bool:
    """multiprocessing's finalizers of priority ``>= min_priority`` (0: they unlink its semaphores, so its
    resource tracker has nothing to warn about); False when missing: the tracker unlinks them itself, with a
    warning on stderr."""
    run = getattr(multiprocessing.util, "_run_finalizers", None)
    if not callable(run):
        return False
    run(min_priority)
    return True


def kill_pool_workers(pool: ProcessPoolExecutor | None) -> bool:
    """SIGKILL a process pool's workers at once (their running tasks are not wanted): ``kill_workers()`` where
    Python has it (3.14), else its ``{pid: process}`` table. False when neither exists: the caller waits for the
    running tasks instead (``shutdown(wait=True, cancel_futures=True)``: slower, nothing left running)."""
    if pool is None:
        return True
    kill = getattr(pool, "kill_workers", None)
    if callable(kill):
        kill()
        return True
    processes = getattr(pool, POOL_PROCESSES, _GONE)
    if processes is None:  # shut down: no worker left
        return True
    if not isinstance(processes, dict):
        return False
    for proc in list(processes.values()):  # a worker that already exited is skipped by Process.kill
        proc.kill()
    return True
