"""Stopping a command cleanly, and child processes that never outlive it.

* **Stop signals.** :func:`stop_signals` (the CLI wraps every command in it, ``cli.common.errors_to_exit``)
  makes SIGTERM a stop like SIGINT: either raises :class:`Stopped` (a ``KeyboardInterrupt``) in the main
  thread, so the code that already cleans up after Ctrl-C (flow workers killed, temp files removed, finished
  videos kept) runs for ``timeout``, a scheduler's cancel or a container stop too. The command then exits
  with ``128 + signal number`` (:func:`exit_status`: 130 for SIGINT, 143 for SIGTERM). A second stop signal
  while the first is being handled ends the process at once (``os._exit``; the next run removes what it
  left). SIGXFSZ is ignored, so a file size limit (``ulimit -f``) fails the write with an error naming the file
  instead of killing the process.
* **Children die with their parent.** :func:`die_with_parent` (called in a child) and
  :func:`parent_death_preexec` (for ``subprocess``) ask Linux to SIGKILL the child when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``), then check ``getppid()`` for a parent that died before the request. Linux
  sends that signal when the *thread* that started the child exits, so a child started outside the main
  thread gets a watch thread instead (it polls ``getppid()``), as on other systems (best effort).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_INTERVAL_S = 0.5  # the watch thread's getppid() period where the parent-death signal is not used
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """A stop signal (SIGINT or SIGTERM) arrived; handled like Ctrl-C. ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def signal_name(exc: BaseException) -> str:
    """``SIGTERM`` / ``SIGINT`` for a :class:`Stopped`; a plain ``KeyboardInterrupt`` is a SIGINT."""
    return signal.Signals(getattr(exc, "signum", signal.SIGINT)).name


def exit_status(exc: BaseException) -> int:
    """The shell's status for a process stopped by ``exc``'s signal: 128 + its number (130, 143)."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


@contextmanager
def stop_signals() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise :class:`Stopped` in the main thread (a second one exits at once),
    SIGXFSZ is ignored; the previous handlers come back on leaving. Outside the main thread: nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping: list[int] = []

    def handler(signum, frame):
        if stopping:  # the first stop is being handled and a second signal came: end now
            os._exit(128 + signum)
        stopping.append(signum)
        raise Stopped(signum)

    previous = {s: signal.getsignal(s) for s in (*STOP_SIGNALS, signal.SIGXFSZ)}
    for s in STOP_SIGNALS:
        signal.signal(s, handler)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


# ---- children that die with their parent ----

def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # loaded here, not after fork: a forked child of a threaded parent must not dlopen


def _set_parent_death_signal(parent_pid: int, sig: int) -> bool:
    """Linux: ``sig`` to this process when its parent dies; True if set. A parent already gone -> ``sig`` now."""
    if _PRCTL is None or _PRCTL(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent_pid:  # the parent died before the prctl: nothing would ever send the signal
        os.kill(os.getpid(), sig)
    return True


def _watch_parent(parent_pid: int, sig: int) -> None:
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(WATCH_INTERVAL_S)
        os.kill(os.getpid(), sig)

    threading.Thread(target=watch, name="refineloc-parent-watch", daemon=True).start()


def die_with_parent(parent_pid: int, *, parent_death_signal: bool = True, sig: int = signal.SIGKILL) -> None:
    """In a child process (e.g. a pool initializer): get ``sig`` when ``parent_pid`` exits.

    ``parent_death_signal=False`` when the parent started this child outside its main thread (Linux would
    send the signal when that thread ends): a watch thread is used, as where ``prctl`` is unavailable.
    """
    if parent_death_signal and _set_parent_death_signal(parent_pid, sig):
        return
    _watch_parent(parent_pid, sig)


def started_in_main_thread() -> bool:
    """Whether a child started now from this thread may use the parent-death signal (see module doc)."""
    return threading.current_thread() is threading.main_thread()


def parent_death_preexec(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess`` that makes the child get ``sig`` when this process dies (Linux,
    main thread only; else None: no preexec)."""
    if _PRCTL is None or not started_in_main_thread():
        return None
    parent = os.getpid()

    def preexec() -> None:
        _set_parent_death_signal(parent, sig)

    return preexec
