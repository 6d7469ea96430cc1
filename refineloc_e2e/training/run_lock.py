"""One ``train`` per run folder at a time: an exclusive lock on ``<run_dir>/.train.lock``.

The lock is an ``flock`` on that file, and the file holds the holder's pid, host and start time (for the
message a refused run prints). **Lifetime:** the lock lives exactly as long as the process that holds it;
the kernel drops it when that process ends in any way (return, exception, SIGKILL, the OOM killer), so a lock
file left by a dead process is stale by construction and the next run simply takes it and rewrites it. The
file itself is kept (deleting it would let a waiter lock an unlinked file while a third run locks a new one).
On a network filesystem ``flock`` must be supported (NFSv4 emulates it with POSIX locks; the lock then lives
as long as the holder's NFS client lease as well).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from refineloc_e2e.errors import ConfigError

LOCK_NAME = ".train.lock"


class RunFolderLock:
    """``with RunFolderLock(run_dir):`` -- ConfigError naming the holder if another live process has it."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunFolderLock:
        import fcntl  # POSIX only: imported where used, as in features.cache.VideoLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ConfigError(f"{self.path.parent}: another `train` is running in this run folder ({holder}; "
                              f"lock {self.path}, held while that process lives); wait for it to finish or "
                              f"choose another run folder") from None
        except OSError as e:
            os.close(fd)
            raise ConfigError(f"{self.path}: cannot lock the run folder ({e.strerror}); the filesystem must "
                              f"support flock") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        import fcntl  # POSIX only (see __enter__)

        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no holder any more
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
