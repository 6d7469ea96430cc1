"""The decode-ahead thread: same items in the same order, errors re-raised, an early stop ends the thread."""

from __future__ import annotations

import threading
import time

import pytest

from support import tiny_cfg, write_moving_video
from refineloc_e2e.features import extractor as extractor_mod
from refineloc_e2e.features.extractor import FeatureExtractor
from refineloc_e2e.video.prefetch import prefetch


def test_same_items_in_order():
    assert list(prefetch(range(100), 4)) == list(range(100))
    assert list(prefetch(range(5), 0)) == list(range(5))  # inline


def test_error_is_reraised_after_the_items_before_it():
    def gen():
        yield 1
        yield 2
        raise ValueError("corrupt packet at frame 2")

    got = []
    with pytest.raises(ValueError, match="corrupt packet"):
        for x in prefetch(gen(), 8):
            got.append(x)
    assert got == [1, 2]


def test_early_stop_closes_the_source_and_ends_the_thread():
    closed = threading.Event()

    def gen():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    it = prefetch(gen(), 2)
    assert next(it) == 0
    it.close()
    assert closed.wait(5)
    deadline = time.time() + 5
    while any(t.name == "refineloc-decode" for t in threading.enumerate()) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "refineloc-decode" for t in threading.enumerate())


def test_extractor_with_decode_ahead_gives_the_same_features(tmp_path, tiny_models, monkeypatch):
    """The GPU path's decode thread, forced on for a CPU run: bitwise the same features."""
    video = write_moving_video(tmp_path / "v.mkv", n=21)
    with FeatureExtractor(tiny_cfg(), models=tiny_models) as ex:
        inline, _ = ex.extract(video)
    depths = []

    def forced(items, depth):
        depths.append(depth)
        return prefetch(items, 8)

    monkeypatch.setattr(extractor_mod, "prefetch", forced)
    with FeatureExtractor(tiny_cfg(), models=tiny_models) as ex:
        ahead, _ = ex.extract(video)
    assert depths == [0]  # on the CPU the extractor decodes inline; forced to 8 here
    assert (inline == ahead).all()
