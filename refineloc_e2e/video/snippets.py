"""Snippet arithmetic, grouping frames into snippets, centre crop and RGB normalisation.

Definitions (docs/conventions.md "What every output's metadata records" states them):

* **Snippet.** Snippet ``t`` is frames ``[t * S, (t + 1) * S)`` of the video resampled to ``fps``
  (``S = snippet_frames``, 16 for I3D), non-overlapping; its time span comes from ``timebase.py``.
* **Tail rule.** The last snippet, if partial, is padded by repeating its last frame, so a video of
  ``N`` frames gives ``n_snippets = ceil(N / S)`` snippets; a video of 1 .. S-1 frames gives 1 snippet.
  ``N = 0`` is an error (``decode.iter_frames`` never yields an empty video; it raises instead).
* **Crop.** ``center_crop`` takes the central ``size x size`` window; the offset is
  ``(H - size) // 2`` rows and ``(W - size) // 2`` columns (an odd margin leaves the extra pixel at the
  bottom / right).
* **RGB scaling.** ``x / 127.5 - 1``: uint8 ``[0, 255]`` -> float32 ``[-1, 1]`` (I3D's convention).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from refineloc_e2e.errors import RefineLocError


def n_snippets(n_frames: int, snippet_frames: int) -> int:
    """``ceil(n_frames / snippet_frames)`` (the tail is padded); ``n_frames`` must be >= 1."""
    if snippet_frames < 1:
        raise ValueError(f"snippet_frames must be >= 1, got {snippet_frames}")
    if n_frames < 1:
        raise RefineLocError(f"a video with {n_frames} frames has no snippet (at least 1 frame is needed)")
    return -(-n_frames // snippet_frames)


def pad_tail(frames: list[np.ndarray], snippet_frames: int) -> list[np.ndarray]:
    """The tail rule: a partial last snippet (1 .. S-1 frames) is completed by repeating its last frame."""
    if not 0 < len(frames) <= snippet_frames:
        raise ValueError(f"pad_tail expects 1..{snippet_frames} frames, got {len(frames)}")
    return frames + [frames[-1]] * (snippet_frames - len(frames))


def iter_snippets(frames: Iterable[np.ndarray], snippet_frames: int) -> Iterator[np.ndarray]:
    """Group ``frames`` (each ``[H, W, C]``) into ``[S, H, W, C]`` snippets, streaming; pads the tail.

    Holds at most ``snippet_frames`` frames. Yields nothing for an empty input (the caller decides
    whether that is an error; ``n_snippets`` treats it as one).
    """
    if snippet_frames < 1:
        raise ValueError(f"snippet_frames must be >= 1, got {snippet_frames}")
    buf: list[np.ndarray] = []
    for frame in frames:
        buf.append(frame)
        if len(buf) == snippet_frames:
            yield np.stack(buf)  # [S, H, W, C]
            buf = []
    if buf:
        yield np.stack(pad_tail(buf, snippet_frames))  # [S, H, W, C]


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Central ``size x size`` window of ``frames[..., H, W, C]`` -> ``[..., size, size, C]`` (a view)."""
    if frames.ndim < 3:
        raise ValueError(f"center_crop expects [..., H, W, C], got shape {frames.shape}")
    h, w = frames.shape[-3], frames.shape[-2]
    if size < 1 or size > h or size > w:
        raise RefineLocError(f"centre crop of {size}x{size} does not fit in frames of {h}x{w} (H x W)")
    top, left = (h - size) // 2, (w - size) // 2
    return frames[..., top:top + size, left:left + size, :]  # [..., size, size, C]


def centre_window(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Central ``h x w`` window of ``a[..., H, W]`` (channels first or none: gray frames, flow as [P, 2, H, W])."""
    H, W = a.shape[-2:]
    if not (1 <= h <= H and 1 <= w <= W):
        raise RefineLocError(f"a centre window of {h}x{w} does not fit in arrays of {H}x{W} (H x W)")
    top, left = (H - h) // 2, (W - w) // 2
    return a[..., top:top + h, left:left + w]  # [..., h, w]


def normalize_rgb(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[..., 3]`` -> float32 in ``[-1, 1]`` via ``x / 127.5 - 1``."""
    if frames.dtype != np.uint8:
        raise ValueError(f"normalize_rgb expects uint8 frames, got {frames.dtype}")
    return frames.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
