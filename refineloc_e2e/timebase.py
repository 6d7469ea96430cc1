"""The project's one time base: snippet index <-> seconds, for windows of ``snippet_frames`` frames taken every
``stride_frames`` frames of the video resampled to ``fps``.

Snippet ``t`` is the window of frames ``[t * stride, t * stride + snippet_frames)``. It stands for the
``stride``-long cell centred on that window, so snippet *boundary* ``b`` (the edge between snippets ``b - 1``
and ``b``; fractional indices allowed) is at

    seconds(b) = (b * stride + (snippet_frames - stride) / 2) / fps

With non-overlapping windows (``stride == snippet_frames``, the default when no stride is given) the offset
vanishes and snippet t covers ``[t * snippet_frames / fps, (t + 1) * snippet_frames / fps)``: with the I3D
convention (25 fps, 16 frames) snippet t starts at ``16 t / 25`` s. With overlapping windows (ActionFormer's
THUMOS'14 I3D features: 16-frame windows every 4 frames) consecutive snippets are ``stride / fps`` apart and
each is centred on its window, as ActionFormer converts them. ``fps`` is the rate the windows were cut at,
never a different native rate (a common bug: sujoyp/wtalc-pytorch issue 9).

Every conversion in the code base goes through these functions; they accept floats or numpy arrays. A
feature file's metadata carries ``fps``, ``snippet_frames`` and (when it is not ``snippet_frames``)
``stride_frames``; :func:`time_base` reads them.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

# The I3D convention of the field (DeepMind kinetics-i3d; W-TALC, BaS-Net, CoLA, RefineLoc for THUMOS'14 and
# ActivityNet): frames resampled to 25 fps, non-overlapping 16-frame snippets (the paper, 4.2: 15 for TSN).
I3D_FPS = 25.0
I3D_SNIPPET_FRAMES = 16


def _stride(snippet_frames: int, stride_frames: int | None) -> int:
    return snippet_frames if stride_frames is None else stride_frames


def snippet_to_seconds(index, *, fps: float, snippet_frames: int, stride_frames: int | None = None):
    """Time in seconds of snippet boundary ``index`` (3.0 -> where snippet 3's cell starts; see the module
    docstring). ``stride_frames`` None: non-overlapping windows (stride = ``snippet_frames``)."""
    stride = _stride(snippet_frames, stride_frames)
    return (index * stride + (snippet_frames - stride) / 2) / fps


def seconds_to_snippet(t_s, *, fps: float, snippet_frames: int, stride_frames: int | None = None):
    """Fractional snippet index of time ``t_s`` seconds (inverse of :func:`snippet_to_seconds`)."""
    stride = _stride(snippet_frames, stride_frames)
    return (t_s * fps - (snippet_frames - stride) / 2) / stride


def expected_snippets(duration_s: float, *, fps: float, snippet_frames: int, stride_frames: int | None = None) -> int:
    """How many windows a video of ``duration_s`` seconds gives: every start ``k * stride`` whose window
    begins inside the video, ``ceil(duration_s * fps / stride)`` (at least 1). Extractors differ by a few at
    the tail (padding the last window or dropping it), so compare with a tolerance."""
    stride = _stride(snippet_frames, stride_frames)
    return max(1, math.ceil(duration_s * fps / stride - 1e-9))


def time_base(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``{"fps", "snippet_frames", "stride_frames"}`` of a feature file's (or a model's) metadata, ready to
    pass as keyword arguments; ``stride_frames`` defaults to ``snippet_frames`` (files written before strides
    were recorded are non-overlapping)."""
    sf = int(meta["snippet_frames"])
    stride = meta.get("stride_frames")
    return {"fps": float(meta["fps"]), "snippet_frames": sf, "stride_frames": sf if stride is None else int(stride)}


def with_stride(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``meta`` with ``stride_frames`` filled in where it is missing (metadata written before strides were
    recorded is non-overlapping: stride = ``snippet_frames``), so that settings compare like with like."""
    meta = dict(meta)
    if meta.get("stride_frames") is None and meta.get("snippet_frames") is not None:
        meta["stride_frames"] = meta["snippet_frames"]
    return meta
