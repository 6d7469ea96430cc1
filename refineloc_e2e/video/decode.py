"""Streaming video decode with PyAV: any container/codec FFmpeg reads -> RGB frames resampled to ``fps``.

Definitions (docs/conventions.md "What every output's metadata records" states them):

* **Time origin.** Source frame ``i`` has time ``t_i = (pts_i - pts_0) * time_base`` seconds, measured from
  the first decoded frame (a stream ``start_time`` offset is dropped). A frame without a pts follows the
  previous one by the previous frame's duration (else the last gap, else ``1 / native_fps``); a pts that
  goes backwards is clamped to the previous frame's time (the later frame then replaces the earlier one).
* **End of the video.** ``end_s = t_last + d_last`` where ``d_last`` is the last frame's own duration if the
  container gives one (> 0), else the last gap between two source frames, else ``1 / native_fps``, else
  ``1 / fps``.
* **Resampling (nearest previous).** Output frame ``k`` has time ``k / fps`` and shows the latest source frame
  whose time is ``<= k / fps``. Source frames are repeated (upsampling, e.g. 10 -> 25 fps) or dropped
  (downsampling, e.g. 30 -> 25 fps). Output stops at the first ``k`` with ``k / fps >= end_s``, so a video
  gives ``N = ceil(end_s * fps)`` output frames (exact rational arithmetic on the pts; ``fps`` is taken as
  the nearest fraction with denominator <= 10**6; ``N >= 1`` whenever one frame decodes). A constant-rate
  video of ``n`` frames at ``r`` fps gives ``N = ceil(n * fps / r)``: 250 frames at 25 fps -> 250;
  5 frames at 10 fps -> 13; 30 frames at 30 fps -> 25.
* **Size.** Each output frame is ``uint8 [H', W', 3]`` RGB, resized with bilinear interpolation (FFmpeg
  swscale) so that the *shorter* side is ``short_side`` and the longer side is
  ``round(short_side * long / short)`` (half up), aspect kept, not cropped (flow uses the full frame).
  The display size is used: a non-square sample aspect ratio stretches the width first, and the
  display-matrix rotation is applied (multiples of 90 degrees; the value is rounded to the nearest one;
  flips in the matrix are ignored). The output size is fixed by the first frame; later frames of a
  different size are scaled to it.
* **Errors.** Missing path / directory -> ``InputError``. Empty file, unreadable container, no video stream,
  no decodable frame -> ``DecodeError``. An FFmpeg error part-way through the stream raises ``DecodeError``
  (naming how much decoded), unless ``DecodeConfig.partial_ok`` is true: then the video ends at the last good
  frame and a :class:`DecodeWarning` says so. Truncation that FFmpeg does not report (e.g. a cut Matroska
  file) is decoded as far as it goes, with a ``DecodeWarning`` when the decoded length falls short of the
  declared duration by more than ``max(0.5 s, 2 %)``. The "after N frames (S s)" of these messages counts
  the source frames decoded and the seconds they cover (the last one's time plus its duration, as for
  ``end_s``): ``partial_ok`` then yields ``ceil(S * fps)`` frames.
* **Absurd frame shapes.** A display aspect ratio above ``MAX_ASPECT_RATIO`` is a ``DecodeError`` (at probe
  time and in ``iter_frames``): scaling the shorter side up would make every frame and flow field huge.
* **Corrupt timestamps.** A jump of more than ``MAX_FRAME_GAP_S`` between two source frames, or a time
  (decoded, or declared by the container at probe time) beyond ``MAX_DURATION_S``, is a ``DecodeError``
  (with ``partial_ok``: the video ends before it, with a warning), so a damaged pts never turns a few
  frames into days of repeated output.

Memory is bounded whatever the video length: one source frame and one converted frame are held at a time.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import av
import numpy as np

from refineloc_e2e.errors import ConfigError, DecodeError, InputError
from refineloc_e2e.timebase import I3D_FPS, I3D_SNIPPET_FRAMES


# Corrupt timestamps must not turn a few frames into days of repeated output frames (hours of I3D work):
MAX_DURATION_S = 24 * 3600  # a longer video (decoded or declared) is refused as corrupt
MAX_FRAME_GAP_S = 600  # one source frame shown for longer than this is a timestamp jump: refused as corrupt
# Shorter side -> short_side makes a 1024 x 2 frame 24576 x 48 at short_side 48 (131072 x 256 at the default):
MAX_ASPECT_RATIO = 8  # wider (or taller) display frames are refused; real videos stay below ~4:1


class DecodeWarning(UserWarning):
    """A video decoded only in part (truncated file, or a decode error accepted with ``partial_ok``)."""


@dataclass
class DecodeConfig:
    """How a video becomes snippets of frames: resampling, resizing, and (applied downstream in
    ``video/snippets.py``) the crop and snippet length. One group, because together they define the time
    base and the backbone input that a trained model depends on; the keys (``decode.crop_size``, ...) are
    part of the CLI and of every feature file's metadata, so they keep their names."""
    fps: float = I3D_FPS  # output frame rate after resampling (I3D convention: 25)
    short_side: int = 256  # the shorter side of every output frame, pixels
    crop_size: int = 224  # centre crop fed to the backbone (applied in snippets.py, not here)
    snippet_frames: int = I3D_SNIPPET_FRAMES  # frames per snippet (I3D: 16, non-overlapping)
    partial_ok: bool = False  # keep the frames before a mid-stream decode error (with a warning)

    def validate(self) -> None:
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ConfigError(f"config key 'fps': must be a positive number, got {self.fps!r}")
        if self.short_side < 1:
            raise ConfigError(f"config key 'short_side': must be >= 1, got {self.short_side!r}")
        if not 1 <= self.crop_size <= self.short_side:
            raise ConfigError(f"config key 'crop_size': must be in [1, short_side={self.short_side}], "
                              f"got {self.crop_size!r}")
        if self.snippet_frames < 1:
            raise ConfigError(f"config key 'snippet_frames': must be >= 1, got {self.snippet_frames!r}")


@dataclass
class VideoInfo:
    path: str
    native_fps: float | None  # the stream's average frame rate, None if unknown
    duration_s: float | None  # declared duration of the video stream (or the container), None if unknown
    width: int  # coded width in pixels, before rotation and sample-aspect correction
    height: int  # coded height in pixels
    n_frames_native: int | None  # frame count declared by the container, None if not declared
    codec: str  # FFmpeg decoder name, e.g. "h264"
    rotation_deg: int  # counter-clockwise display rotation applied by iter_frames (0, 90, 180, -90)


def _check_path(path) -> str:
    path = os.fspath(path)
    if os.path.islink(path) and not os.path.exists(path):
        raise InputError(f"{path}: broken symbolic link (its target {os.readlink(path)} does not exist)")
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, expected a video file")
    if not os.path.isfile(path):
        raise InputError(f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise DecodeError(f"{path}: empty file (0 bytes), not a video")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: not readable (permission denied)")
    return path


def _av_cause(e: BaseException) -> str:
    # FFmpegError's str() repeats the file name ("[Errno N] Invalid data ...: 'x.mp4'"); the message
    # already starts with the path, so keep the cause only
    text = getattr(e, "strerror", None) or str(e)
    return f"{type(e).__name__}: {text}"



def _open(path: str):
    """Open ``path`` and return ``(container, video_stream)``; DecodeError if unreadable or no video."""
    try:
        container = av.open(path, metadata_errors="replace")
    except av.FFmpegError as e:
        raise DecodeError(f"{path}: cannot open as a video container ({_av_cause(e)}); truncated, "
                          f"corrupt or not a video file") from e
    fmt = container.format.name
    if fmt.startswith("image2") or fmt.endswith("_pipe"):
        container.close()
        raise DecodeError(f"{path}: is a still image ({fmt}), not a video")
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise DecodeError(f"{path}: no video stream (streams found: {', '.join(kinds)})")
    stream = container.streams.video[0]
    # no frame threading: with it FFmpeg does not report a corrupt packet to the caller (measured on a cut
    # H.264 mp4); slice threading (PyAV's default) does. Decoding is cheap next to optical flow.
    return container, stream


def _native_fps(stream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def _declared_duration_s(stream, container) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _declared_span_s(stream, container) -> float | None:
    """The declared duration without a start offset that Matroska's container duration counts from 0."""
    declared = _declared_duration_s(stream, container)
    start_s = (container.start_time or 0) / av.time_base
    return declared - start_s if declared is not None and 0 < start_s < declared else declared


def _rotation_quarter_turns(frame) -> int:
    """Counter-clockwise display rotation of ``frame`` in quarter turns (0..3)."""
    return int(round(frame.rotation / 90.0)) % 4


def _output_size(width: int, height: int, sar: Fraction | None, quarter_turns: int,
                 short_side: int) -> tuple[int, int]:
    """Output ``(width, height)`` in display orientation: shorter side ``short_side``, aspect kept."""
    disp_w = width * sar if sar and sar > 0 else Fraction(width)
    disp_h = Fraction(height)
    if quarter_turns % 2:
        disp_w, disp_h = disp_h, disp_w
    if disp_w <= disp_h:
        return short_side, max(1, math.floor(short_side * disp_h / disp_w + Fraction(1, 2)))
    return max(1, math.floor(short_side * disp_w / disp_h + Fraction(1, 2))), short_side


def _check_aspect(path: str, frame, stream) -> None:
    """DecodeError if the display aspect ratio exceeds MAX_ASPECT_RATIO (its output frames would be huge)."""
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    disp_w = frame.width * sar if sar and sar > 0 else Fraction(frame.width)
    ratio = max(disp_w, Fraction(frame.height)) / max(Fraction(1, 10**6), min(disp_w, Fraction(frame.height)))
    if ratio > MAX_ASPECT_RATIO:
        raise DecodeError(f"{path}: frames of {frame.width} x {frame.height} pixels (display aspect ratio "
                          f"{float(ratio):.0f}:1) exceed the {MAX_ASPECT_RATIO}:1 limit; corrupt or not a video")


def probe_video(path) -> VideoInfo:
    """Read a video's metadata and decode its first frame (to check it decodes and read its rotation)."""
    path = _check_path(path)
    container, stream = _open(path)
    with container:
        rotation = None
        try:
            for frame in container.decode(stream):
                rotation = 90 * _rotation_quarter_turns(frame)
                _check_aspect(path, frame, stream)
                break
        except av.FFmpegError as e:
            raise DecodeError(f"{path}: cannot decode the first video frame ({_av_cause(e)})") from e
        if rotation is None:
            raise DecodeError(f"{path}: the video stream has no decodable frame")
        declared = _declared_duration_s(stream, container)
        span_s = _declared_span_s(stream, container)
        if span_s is not None and span_s > MAX_DURATION_S:
            raise DecodeError(f"{path}: declared duration {span_s:.0f} s is beyond the {MAX_DURATION_S} s "
                              f"limit; corrupt timestamps")
        return VideoInfo(
            path=path,
            native_fps=_native_fps(stream),
            duration_s=declared,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            n_frames_native=stream.frames or None,
            codec=stream.codec_context.name,
            rotation_deg=rotation if rotation <= 180 else rotation - 360,
        )


class _Converter:
    """Source av.VideoFrame -> uint8 RGB [H', W', 3] at the output size fixed by the first frame."""

    def __init__(self, first_frame, stream, short_side: int):
        self.turns = _rotation_quarter_turns(first_frame)
        sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio  # container's first
        out_w, out_h = _output_size(first_frame.width, first_frame.height, sar, self.turns, short_side)
        # swscale works in coded orientation; rotate after scaling
        self.coded_w, self.coded_h = (out_h, out_w) if self.turns % 2 else (out_w, out_h)

    def __call__(self, frame, path: str) -> np.ndarray:
        try:
            rgb = frame.reformat(width=self.coded_w, height=self.coded_h, format="rgb24",
                                 interpolation="BILINEAR").to_ndarray()  # [h, w, 3] uint8
        except av.FFmpegError as e:
            raise DecodeError(f"{path}: cannot convert a {frame.format.name} frame to RGB "
                              f"({_av_cause(e)})") from e
        if self.turns:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=self.turns))  # [H', W', 3], counter-clockwise
        rgb.flags.writeable = False  # a repeated frame is the same array: read-only
        return rgb


def iter_frames(path, cfg: DecodeConfig | None = None) -> Iterator[np.ndarray]:
    """Yield the video's frames resampled to ``cfg.fps``: RGB ``uint8 [H', W', 3]``, shorter side 256.

    See the module docstring for the exact resampling rule and frame count. Streaming: frames are decoded,
    converted and yielded one by one; a repeated frame is yielded as the same read-only array.
    Raises ``InputError`` / ``DecodeError`` (messages start with the path); may warn ``DecodeWarning``.
    """
    cfg = cfg or DecodeConfig()
    cfg.validate()
    path = _check_path(path)
    fps = _as_fraction(cfg.fps)
    container, stream = _open(path)
    with container:
        native_fps = _native_fps(stream)
        default_dur = 1 / Fraction(native_fps) if native_fps else 1 / fps  # seconds, when nothing better
        convert: _Converter | None = None
        pts0 = None  # pts of the first frame, in stream time_base units
        held = None  # latest source frame not yet superseded: (av frame, time_s Fraction, duration_s)
        held_rgb = None  # its converted RGB image, computed on first use
        last_gap = None  # last positive gap between two source frames, seconds
        k = 0  # index of the next output frame
        n_src = 0
        cut_short = False  # a decode error ended the video early (partial_ok)
        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except av.FFmpegError as e:
                if held is None:
                    raise DecodeError(f"{path}: no video frame could be decoded ({_av_cause(e)})") from e
                cause = f"decode error after {n_src} frames ({float(_decoded_s(held, last_gap, default_dur)):.2f} s)"
                if not cfg.partial_ok:
                    raise DecodeError(f"{path}: {cause} ({_av_cause(e)}); set decode.partial_ok=true to keep "
                                      f"the frames before the error") from e
                warnings.warn(DecodeWarning(f"{path}: {cause}, the rest of the video is dropped "
                                            f"({_av_cause(e)})"), stacklevel=2)
                cut_short = True
                break
            tb = frame.time_base or stream.time_base
            dur_s = Fraction(frame.duration) * tb if frame.duration and tb else None
            if held is None:
                pts0 = frame.pts if frame.pts is not None else 0
                _check_aspect(path, frame, stream)
                convert = _Converter(frame, stream, cfg.short_side)
                t = Fraction(0)
            else:
                if frame.pts is not None and tb:
                    t = Fraction(frame.pts - pts0) * tb
                else:  # no pts: follow the previous frame by its duration
                    t = held[1] + (held[2] or last_gap or default_dur)
                t = max(t, held[1])  # non-increasing pts: the later frame replaces the earlier one
                bad = _bad_time(t, t - held[1])
                if bad:  # corrupt timestamps: never emit hours of one repeated frame
                    cause = (f"{bad} after {n_src} frames ({float(_decoded_s(held, last_gap, default_dur)):.2f} s); "
                             f"corrupt timestamps")
                    if not cfg.partial_ok:
                        raise DecodeError(f"{path}: {cause}; set decode.partial_ok=true to keep the frames before it")
                    warnings.warn(DecodeWarning(f"{path}: {cause}, the rest of the video is dropped"), stacklevel=2)
                    cut_short = True
                    break
                if t > held[1]:
                    last_gap = t - held[1]
                # every output time k/fps < t shows the held frame
                while k < t * fps:
                    if held_rgb is None:
                        held_rgb = convert(held[0], path)
                    yield held_rgb
                    k += 1
            held, held_rgb = (frame, t, dur_s), None
            n_src += 1
        if held is None:
            raise DecodeError(f"{path}: the video stream has no decodable frame")
        end_s = _decoded_s(held, last_gap, default_dur)
        if not cut_short and _bad_time(end_s, end_s - held[1]):
            raise DecodeError(f"{path}: {_bad_time(end_s, end_s - held[1])} (the last frame's duration); "
                              f"corrupt timestamps")
        while k < end_s * fps:
            if held_rgb is None:
                held_rgb = convert(held[0], path)
            yield held_rgb
            k += 1
        declared = _declared_span_s(stream, container)
        if not cut_short and declared is not None and float(end_s) < declared - max(0.5, 0.02 * declared):
            warnings.warn(DecodeWarning(
                f"{path}: decoded {float(end_s):.2f} s of a declared {declared:.2f} s; the file may be "
                f"truncated"), stacklevel=2)


def _decoded_s(held, last_gap, default_dur) -> Fraction:
    """Seconds decoded so far: the held (latest) frame's time plus its duration (module docstring, "End")."""
    return held[1] + (held[2] or last_gap or default_dur)


def _bad_time(t: Fraction, gap: Fraction) -> str | None:
    """Why a source frame at ``t`` seconds, ``gap`` seconds after the previous one, is not believable, or None."""
    if gap > MAX_FRAME_GAP_S:
        return f"timestamp jump of {float(gap):.0f} s (more than {MAX_FRAME_GAP_S} s) between two frames"
    if t > MAX_DURATION_S:
        return f"timestamp {float(t):.0f} s beyond the {MAX_DURATION_S} s limit"
    return None


def _as_fraction(x: float) -> Fraction:
    """A float as the nearest fraction with denominator <= 10**6 (29.97 -> 2997/100, 0.28 -> 7/25)."""
    return Fraction(x).limit_denominator(1_000_000)


def count_output_frames(end_s: float, fps: float) -> int:
    """``N = ceil(end_s * fps)``: output frames for a video whose last frame ends at ``end_s`` seconds.

    Both values are snapped to fractions first (see ``_as_fraction``), so ``count_output_frames(7 / 25, 25)``
    is 7, not 8. Useful to size a progress bar from ``probe_video(...).duration_s``.
    """
    return math.ceil(_as_fraction(end_s) * _as_fraction(fps))
