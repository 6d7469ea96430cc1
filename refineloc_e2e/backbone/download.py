"""HTTP(S) download of a published weights file, verified by its git blob id before anything uses it.

:func:`download` streams ``url`` into ``<dest>.part`` beside the destination and resumes a ``.part`` left by
an interrupted run with an HTTP ``Range`` request (a server that ignores it sends the whole file again,
which restarts the ``.part``). Every request has a socket timeout (a stalled server fails, it never hangs)
and the whole download a deadline; a file larger than ``max_bytes`` is refused; a transfer cut short is
retried from where it stopped, at most ``attempts`` requests in all. :func:`git_blob_id` is the id git gives
the file's contents (SHA-1 of ``b"blob <size>\\0"`` + bytes), the checksum a GitHub repository publishes for
every file it holds. Only a ``.part`` whose blob id matches is renamed into place (``os.replace``, atomic).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from refineloc_e2e.errors import WeightsError
from refineloc_e2e.progress import Progress

READ_TIMEOUT_S = 60.0       # no byte for this long on one request: the server stalled
DEADLINE_S = 3600.0         # the whole download, all attempts
ATTEMPTS = 3                # requests per download (a cut transfer is resumed by the next one)
CHUNK_BYTES = 1 << 16
USER_AGENT = "refineloc-e2e weights fetch"


def git_blob_id(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """The git blob id of a file: SHA-1 over ``b"blob %d\\0" % size`` followed by its bytes."""
    path = Path(path)
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_bytes), b""):
            h.update(block)
    return h.hexdigest()


class _Cut(Exception):
    """One request ended before the whole file arrived (kept in ``.part``; the next request resumes)."""


def part_path(dest: str | Path) -> Path:
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def download(url: str, dest: str | Path, *, git_blob: str, max_bytes: int, timeout_s: float = READ_TIMEOUT_S,
             deadline_s: float = DEADLINE_S, attempts: int = ATTEMPTS, progress: bool = True,
             desc: str = "download", check: Callable[[Path], None] | None = None) -> Path:
    """Fetch ``url`` to ``dest`` (resuming ``<dest>.part``), check its git blob id, then ``check(part)``
    (e.g. that it loads as the expected weights), then rename it to ``dest``. Raises ``WeightsError``
    naming the URL and the cause; a ``.part`` with wrong contents is deleted, a cut one kept for the next run.
    """
    dest = Path(dest)
    part = part_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + deadline_s
    total: int | None = None
    last = ""
    for _ in range(attempts):
        if time.monotonic() > deadline:
            last = f"gave up after {deadline_s:g} s"
            break
        try:
            total = _request(url, part, max_bytes=max_bytes, timeout_s=timeout_s, deadline=deadline,
                             progress=progress, desc=desc)
            break
        except _Cut as e:
            last = str(e)
    else:
        total = None
    have = part.stat().st_size if part.exists() else 0
    if total is None or have != total:
        raise WeightsError(f"{url}: download incomplete after {attempts} request(s), {have} bytes kept in {part} "
                           f"({last}); run the same command again to resume")
    got = git_blob_id(part)
    if got != git_blob:
        part.unlink()
        raise WeightsError(f"{url}: git blob id {got}, expected {git_blob}: not the published file "
                           f"(a mirror or proxy serving something else?); the download was deleted")
    if check is not None:
        try:
            check(part)
        except WeightsError:
            part.unlink()
            raise
    os.replace(part, dest)
    return dest


def _request(url: str, part: Path, *, max_bytes: int, timeout_s: float, deadline: float, progress: bool,
             desc: str) -> int:
    """One GET, appending to ``part`` from its current size; returns the file's full size once ``part`` holds
    all of it; raises ``_Cut`` when the transfer stops early (the bytes received are kept)."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the range starts at or past the end: the .part is complete, or wrong
            e.close()
            return have
        e.close()
        raise WeightsError(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, OSError) and not isinstance(reason, TimeoutError):
            reason = reason.strerror or reason
        raise Offline(url, str(reason)) from None
    except TimeoutError:
        raise _Cut(f"no response within {timeout_s:g} s") from None
    except (http.client.HTTPException, ConnectionError) as e:
        raise _Cut(f"connection failed: {e}") from None
    with resp:
        if resp.status == 206:
            start = _range_start(resp.headers.get("Content-Range", ""))
            if start != have:
                part.unlink()
                raise WeightsError(f"{url}: asked for bytes from {have}, the server sent from {start}; the partial "
                                   f"download was deleted")
            mode = "ab"
        else:  # 200: the whole file (a server without range support restarts the .part)
            have, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None and length.isdigit() else None
        if total is not None and total > max_bytes:
            raise WeightsError(f"{url}: {total} bytes, over the {max_bytes}-byte bound for this file; refused")
        bar = Progress(total, desc=desc, unit="B", enabled=progress, lines="end",
                       start=f"{'resuming at byte ' + str(have) + ' of' if have else 'downloading'} {url}")
        bar.update(have)
        try:
            with open(part, mode) as out:
                while True:
                    if time.monotonic() > deadline:
                        raise _Cut("deadline passed")
                    try:
                        block = resp.read1(CHUNK_BYTES)  # what has arrived: nothing is lost to a stall
                    except TimeoutError:
                        raise _Cut(f"no data for {timeout_s:g} s (the server stalled)") from None
                    except (http.client.IncompleteRead, ConnectionError, http.client.HTTPException) as e:
                        raise _Cut(f"connection lost: {type(e).__name__}") from None
                    if not block:
                        break
                    have += len(block)
                    if have > max_bytes:
                        raise WeightsError(f"{url}: more than {max_bytes} bytes, over the bound for this file; "
                                           f"refused")
                    out.write(block)
                    bar.update(len(block))
                out.flush()
                os.fsync(out.fileno())
        except WeightsError:
            part.unlink(missing_ok=True)
            raise
        finally:
            bar.close()
    if total is not None and have < total:
        raise _Cut(f"the connection closed at byte {have} of {total}")
    return have if total is None else total


def _range_start(content_range: str) -> int | None:
    """``bytes 100-199/200`` -> 100."""
    try:
        unit, spec = content_range.split(" ", 1)
        return int(spec.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None


class Offline(WeightsError):
    """The host cannot be reached at all (DNS, refused connection, no route)."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"{url}: cannot connect ({reason})")
        self.url, self.reason = url, reason
