"""Decode ahead on a CPU thread: ``prefetch(frames, depth)`` yields the same items in the same order while a
background thread fills a bounded queue (PyAV releases the GIL while decoding), so decoding overlaps flow
and I3D on the device. Errors are re-raised in the consumer; closing the consumer stops the thread."""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()
_POLL_S = 0.1  # how often a blocked producer looks at the stop flag


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """``items`` read ahead by at most ``depth`` on a daemon thread; ``depth < 1`` reads them inline."""
    if depth < 1:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(items)
        try:
            for item in it:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # handed to the consumer, which re-raises it
            put(_Failure(e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # e.g. the decoder's container, when the consumer stopped early

    thread = threading.Thread(target=produce, name="refineloc-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)
