"""Small generated videos with a known answer: a smooth random texture translated by a fixed step per frame.

Test and benchmark support (``testing`` is not installed): the tests' decode, flow and extraction videos
(through ``tests/conftest.py``) and ``benchmarks.speed.ray_scaling``'s clips. Lossless by default, so decode and flow
have a known answer.
"""

from __future__ import annotations

import av
import cv2
import numpy as np


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random texture, uint8 [h, w, 3] (TV-L1 needs gradients)."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2.0)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)


def write_moving_video(path, *, n: int, size=(80, 48), step_px=(1, 0), codec="ffv1", options=None):
    """``n`` frames of a texture translated by ``step_px`` (x, y) per frame; lossless by default (the tests'
    and the speed benchmarks' small videos: decode and flow have a known answer)."""
    w, h = size
    big = texture(h + 4 * n, w + 4 * n)
    with av.open(str(path), "w", options=options or {}) as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            x0, y0 = 2 * n - i * step_px[0], 2 * n - i * step_px[1]
            img = np.ascontiguousarray(big[y0:y0 + h, x0:x0 + w])
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path
