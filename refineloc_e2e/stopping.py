"""Stopping a command cleanly, and child processes that never outlive it.

* **Stop signals.** :func:`stop_signals` (the CLI wraps every command in it, ``cli.common.errors_to_exit``)
  makes SIGTERM a stop like SIGINT: either raises :class:`Stopped` (a ``KeyboardInterrupt``) in the main
  thread, so the code that already cleans up after Ctrl-C (flow workers killed, temp files removed, finished
  videos kept) runs for ``timeout``, a scheduler's cancel or a container stop too. The command then exits
  with ``128 + signal number`` (:func:`exit_status`: 130 for SIGINT, 143 for SIGTERM). A second stop signal
  while the first is being handled ends the process at once (``os._exit``; the next run removes what it
  left). SIGXFSZ is ignored, so a file size limit (``ulimit -f``) fails the write with an error naming the file
  instead of killing the process.
* **A deadline for the stop.** Python runs a signal handler between bytecodes of the main thread, so one long
  native call (the first convolution of an I3D batch takes seconds on a small CPU) delays it. With
  ``deadline_s`` (the program, not in-process callers), a watch thread woken by the signal itself
  (``signal.set_wakeup_fd``) finishes the stop when the main thread has not taken the signal within
  ``deadline_s`` (one that has is cleaning up, e.g. a Ray driver waiting for its tasks, and is left to it): it
  waits for any atomic write in progress (:func:`no_hard_stop`), prints the same line (the last: later output
  goes to ``/dev/null``), runs the kill hooks (:func:`on_hard_stop`: the flow workers) and multiprocessing's
  finalizers (its semaphores) and exits with the same status.
* **Children die with their parent.** :func:`die_with_parent` (called in a child) and
  :func:`parent_death_preexec` (for ``subprocess``) ask Linux to SIGKILL the child when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``), then check ``getppid()`` for a parent that died before the request. Linux
  sends that signal when the *thread* that started the child exits, so a child started outside the main
  thread gets a watch thread instead (it polls ``getppid()``), as on other systems (best effort).
"""

from __future__ import annotations

import ctypes
import inspect
import multiprocessing.util
import os
import signal
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from typing import Callable, Iterator

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
DEADLINE_S = 1.0  # a signal the main thread has not taken this long after it came: the watch thread stops
WATCH_INTERVAL_S = 0.5  # the watch thread's getppid() period where the parent-death signal is not used
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """A stop signal (SIGINT or SIGTERM) arrived; handled like Ctrl-C. ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


class StopExit(SystemExit):
    """The exit of a command stopped by a signal (status ``128 + signum``), raised by the CLI."""


def signal_name(exc: BaseException) -> str:
    """``SIGTERM`` / ``SIGINT`` for a :class:`Stopped`; a plain ``KeyboardInterrupt`` is a SIGINT."""
    return signal.Signals(getattr(exc, "signum", signal.SIGINT)).name


def exit_status(exc: BaseException) -> int:
    """The shell's status for a process stopped by ``exc``'s signal: 128 + its number (130, 143)."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


_program = [False]


def set_program(on: bool = True) -> None:
    """This process is the ``refineloc-e2e`` program (not a library caller): stops get their deadline."""
    _program[0] = on


def program_deadline_s() -> float | None:
    return DEADLINE_S if _program[0] else None


_hooks_lock = threading.Lock()
_kill_hooks: dict[int, Callable[[], Callable[[], None] | None]] = {}  # key -> () -> the hook, or None if gone
_writes = threading.Condition()  # guards _writing, the atomic writes in progress (no_hard_stop)
_writing = [0]


def on_hard_stop(key: int, fn: Callable[[], None] | None) -> None:
    """Register ``fn`` (e.g. kill a process pool) under ``key``, run if a stop's deadline passes; None removes it.
    A bound method is held weakly: registering does not keep its object (a pool that stops when collected) alive."""
    with _hooks_lock:
        if fn is None:
            _kill_hooks.pop(key, None)
        else:
            _kill_hooks[key] = weakref.WeakMethod(fn) if inspect.ismethod(fn) else (lambda: fn)


@contextmanager
def no_hard_stop() -> Iterator[None]:
    """A section a stop's deadline waits for (an atomic write: its temp file is renamed or removed)."""
    with _writes:
        _writing[0] += 1
    try:
        yield
    finally:
        with _writes:
            _writing[0] -= 1
            _writes.notify_all()


class StopControl:
    """Who finishes a stop: the main thread (``claim()`` True: it prints and exits) or the deadline's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: str | None = None
        self.received = False  # the main thread took the signal (its handler ran): it handles the stop itself

    def claim(self, who: str = "main") -> bool:
        with self._lock:
            if self._owner is None:
                self._owner = who
            return self._owner == who


def run_kill_hooks() -> None:
    """Run every :func:`on_hard_stop` hook (kill the flow workers): before a stopped program's exit, whichever
    thread ends it (an idle pool's workers would otherwise be joined, waiting for work, forever)."""
    with _hooks_lock:
        hooks = [ref() for ref in _kill_hooks.values()]
    for fn in hooks:
        try:
            if fn is not None:
                fn()
        except Exception:  # noqa: BLE001 - best effort: the process exits next, its children with it
            pass


def _hard_stop(signum: int, line: str) -> None:
    """End the process from the watch thread while the main thread still runs: its line is the last output."""
    with _writes:  # no atomic write is left half done; none starts after this (the lock is kept)
        while _writing[0]:
            _writes.wait()
        try:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001 - closed or broken: nothing to keep
                    pass
            os.write(2, (line + "\n").encode(errors="replace"))
            # what the main thread prints from now on (a worker it sees die, ...) would follow the stop's line
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            run_kill_hooks()
            # multiprocessing's finalizers of priority >= 0 unlink its semaphores (no resource-tracker warning);
            # not all of atexit: the lower ones join a queue's feeder thread, which waits on the killed workers
            run_finalizers = getattr(multiprocessing.util, "_run_finalizers", None)
            if run_finalizers is not None:
                run_finalizers(0)
        finally:
            os._exit(128 + signum)


def _watch_for_stop(read_fd: int, control: StopControl, deadline_s: float, line: Callable[[int], str]) -> None:
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:
            data = b""
        if not data:  # closed: the command ended
            os.close(read_fd)
            return
        got = [b for b in data if b in STOP_SIGNALS]
        if got:
            break
    time.sleep(deadline_s)
    # only a main thread that could not take the signal (a long native call) is overtaken: one that took it is
    # cleaning up, which may take its time (a Ray driver waits for its tasks to stop)
    if not control.received and control.claim("deadline"):
        _hard_stop(got[0], line(got[0]))


@contextmanager
def stop_signals(*, deadline_s: float | None = None, line: Callable[[int], str] | None = None
                 ) -> Iterator[StopControl]:
    """Within: SIGINT and SIGTERM raise :class:`Stopped` in the main thread (a second one exits at once),
    SIGXFSZ is ignored; the previous handlers come back on leaving. Outside the main thread: nothing.

    ``deadline_s`` (with ``line(signum)``, the one-line message): see the module doc. The caller that handles
    :class:`Stopped` calls ``claim()`` on the yielded control before printing; False means the deadline's
    thread is ending the process.
    """
    control = StopControl()
    if threading.current_thread() is not threading.main_thread():
        yield control
        return
    stopping: list[int] = []

    def handler(signum, frame):
        if stopping:  # the first stop is being handled and a second signal came: end now
            os._exit(128 + signum)
        stopping.append(signum)
        control.received = True
        raise Stopped(signum)

    previous = {s: signal.getsignal(s) for s in (*STOP_SIGNALS, signal.SIGXFSZ)}
    read_fd = write_fd = None
    if deadline_s is not None and line is not None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        threading.Thread(target=_watch_for_stop, args=(read_fd, control, deadline_s, line),
                         name="refineloc-stop-deadline", daemon=True).start()
    for s in STOP_SIGNALS:
        signal.signal(s, handler)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield control
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        if write_fd is not None:
            signal.set_wakeup_fd(previous_fd)
            os.close(write_fd)  # the watch thread reads EOF and ends (it closes nothing: read_fd is left to it)


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
