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
  waits up to ``WRITE_WAIT_S`` for an atomic write in progress (:func:`no_hard_stop`), prints the same line (the
  last: later output goes to ``/dev/null``), runs the kill hooks (:func:`on_hard_stop`: the flow workers) and
  multiprocessing's finalizers (its semaphores) and exits with the same status. Every wait on that path is
  bounded: a watchdog ends the process ``HARD_STOP_LIMIT_S`` after the deadline whatever is still running.
* **Finished is finished.** Once the command's work is over (:meth:`StopControl.close`: it returned or
  failed), a stop signal is ignored and the watch thread ends nothing: a signal that lands while the command
  exits never turns its result into a stop.
* **Children die with their parent.** :func:`die_with_parent` (called in a child) and
  :func:`parent_death_command` (a program for ``subprocess``, e.g. ``pip``) ask Linux to SIGKILL the child when
  its parent dies (``prctl(PR_SET_PDEATHSIG)``), then check ``getppid()`` for a parent that died before the
  request. The command is a small Python that asks for the signal and then execs the program, so no
  ``preexec_fn`` runs in this process with threads (the Python docs call that unsafe). Linux sends that signal
  when the *thread* that started the child exits, so a child started outside the main thread gets a watch
  thread instead (it polls ``getppid()``), as on other systems (best effort; a program run with ``subprocess``
  there is not tied).

Signals and calls that a platform lacks (``SIGXFSZ``, ``SIGKILL``, ``prctl``, a pipe for the wake-up) are
looked up, never assumed: without them the stop is still a stop, only without that part.
"""

from __future__ import annotations

import ctypes
import inspect
import os
import signal
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from typing import Callable, Iterator

from refineloc_e2e.stdlib_compat import run_multiprocessing_finalizers

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
DEADLINE_S = 1.0  # a signal the main thread has not taken this long after it came: the watch thread stops
WATCH_INTERVAL_S = 0.5  # the watch thread's getppid() period where the parent-death signal is not used
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SIGXFSZ = getattr(signal, "SIGXFSZ", None)  # POSIX: the file size limit's signal (ignored within stop_signals)
KILL_SIGNAL = getattr(signal, "SIGKILL", signal.SIGTERM)  # what a child gets when its parent dies
# the stop's deadline path (the watch thread), each wait bounded: a write in progress (a model's torch.save, a
# plot's savefig: seconds at most; an abandoned one leaves only its temp file, which the next run removes), the
# flush of Python's stdout/stderr buffers (their lock may be held by the stuck main thread), and all of it
WRITE_WAIT_S = 10.0
FLUSH_WAIT_S = 1.0
HARD_STOP_LIMIT_S = WRITE_WAIT_S + 5.0


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
_writing: weakref.WeakSet = weakref.WeakSet()  # one token per write in progress, held by its frame


class _WriteToken:
    """One write in progress; held weakly, so a write whose clean-up never ran (a stop between two bytecodes of
    it) cannot stay counted: its token goes with its frame."""


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
    """A section a stop's deadline waits for, up to ``WRITE_WAIT_S`` (an atomic write: its temp file is renamed or
    removed; one abandoned after that leaves only its temp file, never a partial result)."""
    token = _WriteToken()
    try:
        with _writes:
            _writing.add(token)  # one call: a stop lands before it (nothing counted) or after it (removed below)
        yield
    finally:
        with _writes:
            _writing.discard(token)
            _writes.notify_all()


def writes_in_progress() -> int:
    """How many :func:`no_hard_stop` sections are running now (in any thread)."""
    with _writes:
        return len(_writing)


class StopControl:
    """Who finishes a stop: the main thread (``claim()`` True: it prints and exits) or the deadline's thread; and
    whether the command's work is over (:meth:`close`: stop signals are ignored from then on)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # never taken by the signal handler (it may run while the main thread holds it)
        self._owner: str | None = None  # None, "main", "deadline", or "done" (closed with no stop to finish)
        self.received = False  # the main thread took the signal (its handler ran): it handles the stop itself
        self.closed = False  # the work is over: the handler ignores stop signals
        self.signum: int | None = None  # the signal the deadline's thread is finishing
        self.deadline_checked = threading.Event()  # the watch thread has woken for a signal and decided (tests)

    def claim(self, who: str = "main") -> bool:
        """Take the stop for ``who``; False when the other one has it. The main thread handling a
        ``KeyboardInterrupt`` after :meth:`close` (one raised by hand, not by a signal) still takes it."""
        with self._lock:
            if self._owner is None or (who == "main" and self._owner == "done"):
                self._owner = who
            return self._owner == who

    def close(self) -> bool:
        """The command's work is over (it returned or failed): a stop signal from now on is ignored, and one the
        main thread did not take cannot be finished by the deadline's thread any more. False when that thread
        already owns the stop: it is ending the process (:meth:`await_hard_stop`)."""
        self.closed = True  # one store: a signal handled before it raises Stopped, after it is ignored
        with self._lock:
            if self._owner is None and not self.received:
                self._owner = "done"
            return self._owner != "deadline"

    def await_hard_stop(self) -> None:
        """The deadline's thread owns the stop: wait for its exit, at most as long as its own watchdog allows,
        then end the process here with the same status."""
        time.sleep(HARD_STOP_LIMIT_S + 1.0)
        os._exit(128 + int(self.signum or signal.SIGTERM))


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


def _line_bytes(line: str) -> bytes:
    return (line + "\n").encode(errors="replace")


def write_stop_line(line: str) -> None:
    """The main thread's stop line, written like the deadline thread's: ``os.write`` on stderr's descriptor
    (no buffered stream's lock), after what Python still buffers for stderr. A stderr without a descriptor (an
    in-process caller capturing it, e.g. click's CliRunner) gets it the ordinary way."""
    stream = sys.stderr
    try:
        stream.flush()
    except Exception:  # noqa: BLE001 - closed, broken, or interrupted mid-write (reentrant): nothing to keep
        pass
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both OSError and ValueError
        stream.write(line + "\n")
        stream.flush()
        return
    os.write(fd, _line_bytes(line))


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - closed or broken: nothing to keep
            pass


def _bounded(fn: Callable[[], None], timeout_s: float) -> None:
    """``fn()`` in a helper thread, waited for at most ``timeout_s`` (it may block on a lock the main thread holds)."""
    t = threading.Thread(target=fn, name="refineloc-stop-bounded", daemon=True)
    t.start()
    t.join(timeout_s)


def _hard_stop(signum: int, line: str) -> None:
    """End the process from the watch thread while the main thread still runs: its line is the last output.
    Every wait is bounded; a watchdog ends the process ``HARD_STOP_LIMIT_S`` from now whatever still runs."""
    status = 128 + signum
    watchdog = threading.Timer(HARD_STOP_LIMIT_S, os._exit, args=(status,))
    watchdog.daemon = True
    watchdog.start()
    try:
        with _writes:  # no atomic write is left half done, within WRITE_WAIT_S; none starts after this (lock kept)
            end = time.monotonic() + WRITE_WAIT_S
            while _writing and time.monotonic() < end:
                _writes.wait(0.1)  # a write's token may also go with its frame, unannounced: look again
            _bounded(_flush_std_streams, FLUSH_WAIT_S)
            os.write(2, _line_bytes(line))
            # what the main thread prints from now on (a worker it sees die, ...) would follow the stop's line
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            run_kill_hooks()
            # multiprocessing's finalizers of priority >= 0 unlink its semaphores (no resource-tracker warning);
            # not all of atexit: the lower ones join a queue's feeder thread, which waits on the killed workers
            run_multiprocessing_finalizers(0)
    finally:
        os._exit(status)


def _watch_for_stop(read_fd: int, control: StopControl, deadline_s: float, line: Callable[[int], str]) -> None:
    decided = False
    try:
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                data = b""
            if not data:  # closed: the command ended
                return
            got = [b for b in data if b in STOP_SIGNALS]
            if not got or decided:
                continue
            time.sleep(deadline_s)
            decided = True
            # only a main thread that could not take the signal (a long native call) is overtaken: one that took it
            # is cleaning up, which may take its time (a Ray driver waits for its tasks to stop); a closed command
            # is over (StopControl.close)
            claimed = not control.received and control.claim("deadline")
            if claimed:
                control.signum = got[0]
            control.deadline_checked.set()
            if claimed:
                _hard_stop(got[0], line(got[0]))
    finally:
        os.close(read_fd)


def _wakeup_pipe() -> tuple[int, int, int] | None:
    """(read end, write end, previous wake-up fd) of a pipe that the signal's C handler writes to; None where
    the platform has none (Windows: no non-blocking pipe before Python 3.12, and the wake-up fd must be a socket)."""
    read_fd, write_fd = os.pipe()
    try:
        os.set_blocking(write_fd, False)
        previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except (OSError, ValueError, AttributeError):
        os.close(read_fd)
        os.close(write_fd)
        return None
    return read_fd, write_fd, previous_fd


@contextmanager
def stop_signals(*, deadline_s: float | None = None, line: Callable[[int], str] | None = None
                 ) -> Iterator[StopControl]:
    """Within: SIGINT and SIGTERM raise :class:`Stopped` in the main thread (a second one exits at once),
    SIGXFSZ (where it exists) is ignored; the previous handlers come back on leaving. Outside the main thread:
    nothing.

    ``deadline_s`` (with ``line(signum)``, the one-line message): see the module doc (no deadline where the
    platform has no wake-up pipe). The caller calls ``close()`` on the yielded control when its work is over
    (leaving does it too), and the one that handles :class:`Stopped` calls ``claim()`` before printing; False
    means the deadline's thread is ending the process.
    """
    control = StopControl()
    if threading.current_thread() is not threading.main_thread():
        yield control
        return
    stopping: list[int] = []

    def handler(signum, frame):
        if stopping:  # the first stop is being handled and a second signal came: end now
            os._exit(128 + signum)
        if control.closed:  # the work is over: the command's result stands
            return
        stopping.append(signum)
        control.received = True
        raise Stopped(signum)

    ignored = (SIGXFSZ,) if SIGXFSZ is not None else ()
    previous = {s: signal.getsignal(s) for s in (*STOP_SIGNALS, *ignored)}
    wakeup = _wakeup_pipe() if deadline_s is not None and line is not None else None
    if wakeup is not None:
        threading.Thread(target=_watch_for_stop, args=(wakeup[0], control, deadline_s, line),
                         name="refineloc-stop-deadline", daemon=True).start()
    for s in STOP_SIGNALS:
        signal.signal(s, handler)
    for s in ignored:
        signal.signal(s, signal.SIG_IGN)
    try:
        yield control
    finally:
        if not control.close():  # the deadline's thread is ending the process: its line is the last word
            control.await_hard_stop()
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        if wakeup is not None:
            signal.set_wakeup_fd(wakeup[2])
            os.close(wakeup[1])  # the watch thread reads EOF, closes its end and ends


def finish_on_stop_signals(status: int) -> None:
    """From now on SIGINT and SIGTERM end the process at once with ``status``: for a program whose command has
    finished and that is only exiting. Its result is decided, so a stop signal cannot make it a stop (no 143), and a
    teardown that hangs still ends on the user's Ctrl-C (ignoring the signals would leave only SIGKILL)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def finish(signum, frame):
        _bounded(_flush_std_streams, FLUSH_WAIT_S)
        os._exit(status)

    for s in STOP_SIGNALS:
        signal.signal(s, finish)


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


def die_with_parent(parent_pid: int, *, parent_death_signal: bool = True, sig: int = KILL_SIGNAL) -> None:
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


# run as ``python -I -S -c`` PARENT_PID SIGNAL PROGRAM ARGS...: ask for the signal, then become PROGRAM (the
# request survives exec); only the standard library, nothing of this package is imported
_EXEC_WITH_PARENT_DEATH = """\
import ctypes, os, sys
parent, sig = int(sys.argv[1]), int(sys.argv[2])
if ctypes.CDLL(None, use_errno=True).prctl(%d, sig, 0, 0, 0) == 0 and os.getppid() != parent:
    os.kill(os.getpid(), sig)
os.execv(sys.argv[3], sys.argv[3:])
""" % PR_SET_PDEATHSIG


def parent_death_command(cmd: list[str], sig: int = KILL_SIGNAL) -> list[str]:
    """``cmd`` (its program an absolute path, e.g. ``sys.executable``) to run with ``subprocess`` so that it gets
    ``sig`` when this process dies: a small Python that asks Linux for the signal and then execs ``cmd``, in
    place of a ``preexec_fn`` (which the Python docs call unsafe in a process with threads). ``cmd`` itself
    where the signal is not used (not Linux, or not the main thread: see the module doc)."""
    if _PRCTL is None or not started_in_main_thread():
        return list(cmd)
    return [sys.executable, "-I", "-S", "-c", _EXEC_WITH_PARENT_DEATH, str(os.getpid()), str(int(sig)), *cmd]
