"""Which processes of a run are alive: the ones whose environment holds a marker (Linux ``/proc``).

A test or benchmark starts a command with ``{MARKER_ENV: <token>}`` in its environment; every process it
starts inherits it (flow workers, the multiprocessing resource tracker, ``pip``), so
:func:`tagged_processes` finds exactly that run's processes, whoever their parent is now (an orphan's is 1).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

MARKER_ENV = "REFINELOC_RUN_MARKER"


def new_marker() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class TaggedProcess:
    pid: int
    ppid: int
    rss_mb: float
    cmdline: str

    def describe(self) -> str:
        return f"pid {self.pid} (parent {self.ppid}, {self.rss_mb:.0f} MB resident): {self.cmdline[:120]}"


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:  # gone, or not ours to read
        return None


def tagged_processes(marker: str, proc: str | Path = "/proc") -> list[TaggedProcess]:
    """Live processes (zombies excluded) whose environment has ``MARKER_ENV=marker``."""
    want = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in Path(proc).iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        env = _read(entry / "environ")
        if env is None or want not in env.split(b"\0"):
            continue
        status = (_read(entry / "status") or b"").decode(errors="replace")
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("State", "").strip().startswith("Z"):
            continue  # exited, not yet reaped: holds no memory
        rss_kb = int(fields.get("VmRSS", "0 kB").split()[0])
        cmd = (_read(entry / "cmdline") or b"").replace(b"\0", b" ").decode(errors="replace").strip()
        found.append(TaggedProcess(int(entry.name), int(fields.get("PPid", "0").strip() or 0), rss_kb / 1024, cmd))
    return sorted(found, key=lambda p: p.pid)
