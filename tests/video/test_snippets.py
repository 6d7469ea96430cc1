"""Snippets: the tail rule, streaming grouping, centre crop and RGB scaling."""

from __future__ import annotations

import numpy as np
import pytest

from refineloc_e2e.errors import RefineLocError
from refineloc_e2e.video.snippets import center_crop, iter_snippets, n_snippets, normalize_rgb


@pytest.mark.parametrize("n_frames,expected",
                         [(1, 1), (15, 1), (16, 1), (17, 2), (32, 2), (33, 3), (250, 16)])
def test_n_snippets_tail_rule(n_frames, expected):
    assert n_snippets(n_frames, 16) == expected


def test_n_snippets_zero_frames_is_an_error():
    with pytest.raises(RefineLocError, match="0 frames"):
        n_snippets(0, 16)


def _frames(n, h=4, w=5, c=3):
    return [np.full((h, w, c), i, np.uint8) for i in range(n)]


@pytest.mark.parametrize("n", [1, 5, 16, 17, 40])
def test_iter_snippets_pads_tail_with_last_frame(n):
    snippets = list(iter_snippets(iter(_frames(n)), 16))  # a generator: streaming input
    assert len(snippets) == n_snippets(n, 16)
    assert all(s.shape == (16, 4, 5, 3) for s in snippets)
    ids = np.concatenate([s[:, 0, 0, 0] for s in snippets])
    assert list(ids[:n]) == list(range(n))
    assert (ids[n:] == n - 1).all()  # padding repeats the last real frame


def test_iter_snippets_empty_and_streaming():
    assert list(iter_snippets(iter([]), 16)) == []
    consumed = []

    def gen():
        for f in _frames(40):
            consumed.append(int(f[0, 0, 0]))
            yield f

    first = next(iter_snippets(gen(), 16))
    assert first.shape[0] == 16 and len(consumed) == 16  # nothing read beyond the first snippet


def test_center_crop_rgb_and_flow():
    rgb = np.arange(2 * 256 * 340 * 3).reshape(2, 256, 340, 3)  # [S, H, W, 3]
    out = center_crop(rgb, 224)
    assert out.shape == (2, 224, 224, 3)
    np.testing.assert_array_equal(out, rgb[:, 16:240, 58:282])
    flow = np.zeros((3, 256, 455, 2), np.float32)  # [S, H, W, 2], odd margin 231
    flow[:, 16, 115] = 1.0  # the crop's top-left pixel: (256-224)//2 = 16, (455-224)//2 = 115
    out = center_crop(flow, 224)
    assert out.shape == (3, 224, 224, 2) and (out[:, 0, 0] == 1.0).all() and out.sum() == 6.0
    assert center_crop(rgb[0], 224).shape == (224, 224, 3)  # a single frame [H, W, C]


def test_center_crop_too_large():
    with pytest.raises(RefineLocError, match="224x224 does not fit in frames of 200x300"):
        center_crop(np.zeros((200, 300, 3), np.uint8), 224)


def test_normalize_rgb():
    x = np.array([0, 255, 127, 128], np.uint8).reshape(1, 1, 4, 1).repeat(3, -1)
    y = normalize_rgb(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[0, 0, :, 0], [-1.0, 1.0, 127 / 127.5 - 1, 128 / 127.5 - 1], atol=1e-7)
    with pytest.raises(ValueError, match="uint8"):
        normalize_rgb(y)
