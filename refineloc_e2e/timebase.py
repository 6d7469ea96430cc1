"""The project's one time base: snippet index <-> seconds.

Snippet ``t`` covers frames ``[t * snippet_frames, (t + 1) * snippet_frames)`` of the video resampled
to ``fps``, i.e. seconds ``[t * snippet_frames / fps, (t + 1) * snippet_frames / fps)``.
With the I3D convention (25 fps, 16 frames) snippet t starts at ``16 t / 25`` s. Note that ``fps`` is
the *resampled* rate, never the video's native one (a common bug: sujoyp/wtalc-pytorch issue 9).

Every conversion in the code base goes through these two functions. They accept floats or numpy arrays.
"""

from __future__ import annotations

# The I3D convention of the field (DeepMind kinetics-i3d; W-TALC, BaS-Net, CoLA, RefineLoc for THUMOS'14 and
# ActivityNet): frames resampled to 25 fps, non-overlapping 16-frame snippets (the paper, 4.2: 15 for TSN).
I3D_FPS = 25.0
I3D_SNIPPET_FRAMES = 16


def snippet_to_seconds(index, *, fps: float, snippet_frames: int):
    """Start time in seconds of snippet ``index`` (fractional indices allowed: 3.0 -> start of snippet 3)."""
    return index * (snippet_frames / fps)


def seconds_to_snippet(t_s, *, fps: float, snippet_frames: int):
    """Fractional snippet index of time ``t_s`` seconds (inverse of :func:`snippet_to_seconds`)."""
    return t_s * (fps / snippet_frames)
