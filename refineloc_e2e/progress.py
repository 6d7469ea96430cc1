"""Progress output: a tqdm bar on a terminal, plain lines when stderr is redirected (as pip does).

Every progress display of the package goes through :class:`Progress`. On a terminal it is a tqdm bar
(redrawn in place with carriage returns); otherwise each finished unit of work is one line (a video, an
epoch's summary), or, with ``lines="end"``, the whole task is one line when it ends (a download, counted
in bytes). ``enabled=False`` (the CLI's ``-q``) prints nothing at all.

Messages that are not progress go to loggers; :func:`log_lines` turns a logger into the ``log=`` callable
that batch functions take.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any, Callable

from tqdm import tqdm


def is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


def log_lines(logger: logging.Logger) -> Callable[[str], None]:
    """A ``log=`` callable sending each message line to ``logger``: ``error: ...`` at ERROR, ``warning: ...`` at
    WARNING, anything else at INFO (the text unchanged, so the CLI shows the same lines as before)."""
    def log(msg: str) -> None:
        level = (logging.ERROR if msg.startswith("error:") else logging.WARNING if msg.startswith("warning:")
                 else logging.INFO)
        logger.log(level, msg)
    return log


def format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class Progress:
    """Counts units of work towards ``total`` (None: unknown).

    ``update(n, note=...)`` adds ``n`` done units; ``note`` is shown beside the count (the video's name,
    the epoch's losses). ``lines``: ``"each"`` (one plain line per update) or ``"end"`` (one at close).
    ``leave``: keep the terminal bar after close. ``start``: a plain line printed now (e.g. the URL a
    download comes from; with ``lines="end"`` nothing else is printed until the end). Use as a context
    manager or call ``close()``.
    """

    def __init__(self, total: int | None, *, desc: str, unit: str = "it", enabled: bool = True,
                 lines: str = "each", leave: bool = True, start: str | None = None, stream: IO[str] | None = None):
        if lines not in ("each", "end"):
            raise ValueError(f"lines: expected 'each' or 'end', got {lines!r}")
        self.total, self.desc, self.unit, self.lines = total, desc, unit, lines
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr  # looked up now: tests capture stderr
        self.done = 0
        self.started = time.monotonic()
        self._closed = False
        self._bar: tqdm | None = None
        if enabled and is_terminal(self.stream):
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=leave,
                             unit_scale=unit == "B", unit_divisor=1000)
        elif enabled and start:
            self._line(start)

    def update(self, n: int = 1, *, note: str | None = None) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            if note is not None:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(n)
        elif self.lines == "each":
            self._line(self._count() + (f" {note}" if note else ""))

    def note(self, text: str) -> None:
        """Show ``text`` beside a terminal bar now (e.g. the video being extracted); no plain line."""
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def close(self, *, note: str | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self.lines == "end":
            elapsed_s = time.monotonic() - self.started
            self._line(f"{self._count()} in {elapsed_s:.1f} s" + (f" {note}" if note else ""))

    def _count(self) -> str:
        if self.unit == "B":
            done = format_bytes(self.done)
            return done if self.total is None else f"{done} of {format_bytes(self.total)}"
        total = "" if self.total is None else f"/{self.total}"
        return f"{self.done}{total} {self.unit}{'s' if (self.total or self.done) != 1 else ''}"

    def _line(self, text: str) -> None:
        self.stream.write(f"{self.desc}: {text}\n")  # one write: a stop signal never cuts the line from its end
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
