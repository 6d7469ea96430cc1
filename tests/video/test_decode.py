"""Decode: resampling rule and frame count, sizes, rotation, odd inputs and every error path."""

from __future__ import annotations

import math
import re
import warnings
from fractions import Fraction

import av
import numpy as np
import pytest

from refineloc_e2e.video.decode import (DecodeConfig, DecodeWarning, VideoInfo, count_output_frames, iter_frames,
                                  probe_video)
from refineloc_e2e.errors import ConfigError, DecodeError, InputError
from refineloc_e2e.video.snippets import iter_snippets, n_snippets
from support import LEVEL_STEP, SAMPLES, write_video  # shared generated-video writer, bundled real clips


def source_index(frame: np.ndarray) -> int:
    """Which source frame an output frame shows (from its gray level)."""
    return int(round(float(frame.mean()) / LEVEL_STEP))


def test_config_validate():
    DecodeConfig().validate()
    with pytest.raises(ConfigError, match="fps"):
        DecodeConfig(fps=0).validate()
    with pytest.raises(ConfigError, match="crop_size"):
        DecodeConfig(short_side=128, crop_size=224).validate()


@pytest.mark.parametrize("native_fps,n_src", [(10, 5), (30, 30), (30, 31), (25, 7)])
def test_constant_rate_resampling(tmp_path, native_fps, n_src):
    path = write_video(tmp_path / "v.mkv", n=n_src, fps=native_fps)
    frames = list(iter_frames(path))
    # documented count: N = ceil(n * fps / r); output k shows source floor(k * r / fps)
    assert len(frames) == math.ceil(Fraction(n_src * 25, native_fps))
    assert len(frames) == count_output_frames(n_src / native_fps, 25.0)
    assert [source_index(f) for f in frames] == [k * native_fps // 25 for k in range(len(frames))]


def test_variable_frame_rate(tmp_path):
    pts_ms = [0, 40, 200, 210, 500]  # irregular; the last frame lasts 100 ms -> end 0.6 s
    path = write_video(tmp_path / "vfr.mkv", n=5, pts_ms=pts_ms, last_dur_ms=100)
    got = [source_index(f) for f in iter_frames(path)]
    assert len(got) == 15  # ceil(0.6 * 25)
    # output k at 40k ms shows the latest source frame with pts <= 40k ms (k=5 hits 200 ms exactly);
    # frame 3 (210 ms) replaces frame 2 before any output time reaches it, so frame 2 shows once
    assert got == [0, 1, 1, 1, 1, 2, 3, 3, 3, 3, 3, 3, 3, 4, 4]


def test_msmpeg4_avi_10fps(tmp_path):
    path = write_video(tmp_path / "v.avi", n=4, fps=10, size=(768, 576), codec="msmpeg4v2")
    info = probe_video(path)
    assert (info.width, info.height, info.native_fps, info.codec) == (768, 576, 10.0, "msmpeg4v2")
    frames = list(iter_frames(path))
    assert len(frames) == 10  # 0.4 s at 25 fps
    assert frames[0].shape == (256, 341, 3) and frames[0].dtype == np.uint8  # 768 * 256 / 576 = 341.3
    assert [source_index(f) for f in frames] == [k * 10 // 25 for k in range(10)]


@pytest.mark.parametrize("size,pix_fmt,expected_hw", [
    ((642, 362), "yuv420p", (256, 454)),  # 642 * 256 / 362 = 453.99
    ((16, 16), "yuv420p", (256, 256)),
    ((17, 11), "yuv444p", (256, 396)),  # odd sizes; 17 * 256 / 11 = 395.6
    ((180, 320), "yuv420p", (455, 256)),  # portrait: width is the short side; 320 * 256 / 180 = 455.1
])
def test_output_size(tmp_path, size, pix_fmt, expected_hw):
    path = write_video(tmp_path / "v.mkv", n=2, size=size, pix_fmt=pix_fmt)
    frames = list(iter_frames(path, DecodeConfig(short_side=256)))
    assert {f.shape for f in frames} == {(*expected_hw, 3)}


def test_sample_aspect_ratio_applied(tmp_path):
    path = tmp_path / "anamorphic.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        s.codec_context.sample_aspect_ratio = Fraction(2, 1)  # pixels twice as wide as tall
        for p in [*s.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")),
                  *s.encode()]:
            c.mux(p)
    assert next(iter_frames(path)).shape == (256, 512, 3)


def test_frames_are_rgb(tmp_path):
    path = tmp_path / "red.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv444p"
        img = np.zeros((32, 32, 3), np.uint8)
        img[..., 0] = 200  # red
        for p in [*s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")), *s.encode()]:
            c.mux(p)
    frame = next(iter_frames(path))
    r, g, b = frame.reshape(-1, 3).mean(0)
    assert r > 150 and g < 50 and b < 50


@pytest.mark.parametrize("rotation,bright_corner", [(90, "bottom_left"), (-90, "top_right"), (0, "top_left")])
def test_rotation_applied(tmp_path, rotation, bright_corner):
    path = tmp_path / "rot.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        s.set_display_rotation(rotation)
        img = np.zeros((32, 64, 3), np.uint8)
        img[:16, :16] = 255  # bright block in the top-left corner of the coded picture
        for p in [*s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")), *s.encode()]:
            c.mux(p)
    assert probe_video(path).rotation_deg == rotation
    frame = next(iter_frames(path, DecodeConfig(short_side=32, crop_size=16)))
    assert frame.shape == ((32, 64, 3) if rotation == 0 else (64, 32, 3))
    h, w = frame.shape[:2]
    corners = {"top_left": frame[:8, :8], "top_right": frame[:8, -8:],
               "bottom_left": frame[-8:, :8], "bottom_right": frame[-8:, -8:]}
    for name, patch in corners.items():
        assert (patch.mean() > 200) == (name == bright_corner), name


def test_one_frame_and_shorter_than_snippet(tmp_path):
    one = write_video(tmp_path / "one.avi", n=1, fps=10, codec="mpeg4")
    frames = list(iter_frames(one))
    assert len(frames) == 3  # one frame lasting 0.1 s -> ceil(2.5)
    assert n_snippets(len(frames), 16) == 1
    snippets = list(iter_snippets(frames, 16))
    assert len(snippets) == 1 and snippets[0].shape == (16, *frames[0].shape)


def test_repeated_frames_read_only(tmp_path):
    frames = list(iter_frames(write_video(tmp_path / "v.mkv", n=2, fps=10)))
    assert frames[0] is frames[1]  # 10 -> 25 fps repeats source frame 0 at k = 0, 1, 2
    assert not frames[0].flags.writeable


class _SpyContainer:
    """Wraps a PyAV container: counts decoded source frames and records whether it was closed."""

    def __init__(self, container):
        self._c, self.decoded, self.closed = container, 0, False

    def __getattr__(self, name):
        return getattr(self._c, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed = True
        return self._c.__exit__(*exc)

    def decode(self, *args, **kwargs):
        for frame in self._c.decode(*args, **kwargs):
            self.decoded += 1
            yield frame


def test_streaming_stops_early(tmp_path, monkeypatch):
    path = write_video(tmp_path / "v.mkv", n=10)
    spies = []
    real_open = av.open

    def spy_open(*args, **kwargs):
        spies.append(_SpyContainer(real_open(*args, **kwargs)))
        return spies[-1]

    monkeypatch.setattr(av, "open", spy_open)
    gen = iter_frames(path)
    first = next(gen)
    assert first.ndim == 3 and len(spies) == 1
    gen.close()  # closes the container without decoding the rest
    assert spies[0].closed
    assert spies[0].decoded <= 2  # one frame out needs at most the next source frame to place it in time
    assert len(list(iter_frames(path))) == 10  # the same file decodes fully when read to the end


@pytest.mark.real
def test_bikes_mp4():
    path = SAMPLES / "bikes.mp4"
    info = probe_video(path)
    assert info == VideoInfo(path=str(path), native_fps=25.0, duration_s=10.0, width=640, height=272,
                             n_frames_native=250, codec="h264", rotation_deg=0)
    n = 0
    for frame in iter_frames(path):
        assert frame.shape == (256, 602, 3)  # 640 * 256 / 272 = 602.4
        n += 1
    assert n == 250


@pytest.mark.real
def test_gif():
    # PyAV reports GIF timing in 1/100 s; this one has 79 frames of 4/100 s -> exactly 25 fps
    path = SAMPLES / "v_CricketShot_g04_c01_rgb.gif"
    info = probe_video(path)
    assert (info.codec, info.native_fps, info.n_frames_native) == ("gif", 25.0, 79)
    frames = list(iter_frames(path))
    assert len(frames) == 79 and frames[0].shape == (256, 256, 3)


# ---- errors -------------------------------------------------------------------------------------------

def _first_error(path, cfg=None):
    with pytest.raises((DecodeError, InputError)) as info:
        list(iter_frames(path, cfg))
    assert str(info.value).startswith(str(path))
    return info.value


def test_missing_and_directory(tmp_path):
    assert isinstance(_first_error(tmp_path / "nope.mp4"), InputError)
    assert isinstance(_first_error(tmp_path), InputError)
    with pytest.raises(InputError, match="no such file"):
        probe_video(tmp_path / "nope.mp4")


def test_empty_random_audio_only(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert "empty file" in str(_first_error(empty))
    rand = tmp_path / "rand.mp4"
    rand.write_bytes(np.random.default_rng(0).bytes(4096))
    err = _first_error(rand)
    assert isinstance(err, DecodeError) and "InvalidDataError" in str(err)
    assert isinstance(err.__cause__, av.FFmpegError)
    wav = tmp_path / "audio.wav"
    with av.open(str(wav), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in [*s.encode(frame), *s.encode()]:
            c.mux(p)
    err = _first_error(wav)
    assert isinstance(err, DecodeError) and "no video stream" in str(err) and "audio" in str(err)
    with pytest.raises(DecodeError, match="no video stream"):
        probe_video(wav)


def test_no_decodable_frame(tmp_path):
    full = write_video(tmp_path / "v.mkv", n=20, noise=True)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(full.read_bytes()[:600])  # headers only
    assert "no decodable frame" in str(_first_error(cut))


def test_truncated_mp4_mid_stream_error(tmp_path):
    # index first, so a cut copy still opens; FFmpeg then fails on the cut packet
    full = write_video(tmp_path / "v.mp4", n=75, size=(64, 64), codec="libx264", noise=True,
                       options={"movflags": "faststart"})
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    got = []
    with pytest.raises(DecodeError, match="decode error after .*partial_ok=true") as info:
        for f in iter_frames(cut):
            got.append(f)
    assert str(info.value).startswith(str(cut)) and isinstance(info.value.__cause__, av.FFmpegError)
    assert 0 < len(got) < 75
    with pytest.warns(DecodeWarning, match="rest of the video is dropped"):
        partial = list(iter_frames(cut, DecodeConfig(partial_ok=True)))
    # strict mode raised while the last good frame was still held; partial_ok shows it for its duration
    assert len(partial) == len(got) + 1


def test_silently_truncated_mkv_warns(tmp_path):
    # FFmpeg decodes this cut file without an error; the length check against the declared duration warns
    full = write_video(tmp_path / "v.mkv", n=75, size=(64, 64), noise=True)  # 3 s
    cut = tmp_path / "cut.mkv"
    data = full.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    with pytest.warns(DecodeWarning, match="may be truncated"):
        frames = list(iter_frames(cut))
    assert 0 < len(frames) < 75
    with warnings.catch_warnings():
        warnings.simplefilter("error", DecodeWarning)
        assert len(list(iter_frames(full))) == 75  # the intact file does not warn


def test_decode_error_states_frames_and_seconds_decoded(tmp_path):
    # "after N frames (S s)": S is what those N frames cover (last frame's time + its duration), so
    # partial_ok yields ceil(S * 25) frames; it used to print the last frame's start (1 frame -> 0.00 s)
    full = write_video(tmp_path / "v.mp4", n=75, size=(64, 64), codec="libx264", noise=True,
                       options={"movflags": "faststart"})
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(DecodeError) as info:
        list(iter_frames(cut))
    n_src, seconds = re.search(r"decode error after (\d+) frames \((\d+\.\d\d) s\)", str(info.value)).groups()
    with pytest.warns(DecodeWarning, match=rf"decode error after {n_src} frames \({seconds} s\)"):
        partial = list(iter_frames(cut, DecodeConfig(partial_ok=True)))
    assert int(n_src) > 0 and float(seconds) == pytest.approx(int(n_src) / 25)  # 25 fps source, no gaps
    assert len(partial) == math.ceil(float(seconds) * 25 - 1e-9)


def test_corrupt_timestamps_are_refused_not_expanded(tmp_path):
    # a 10**6 s jump would otherwise yield 25 million copies of one frame (hours of I3D work)
    jump = write_video(tmp_path / "jump.mkv", n=4, pts_ms=[0, 40, 10**9, 10**9 + 40])
    with pytest.raises(DecodeError, match=r"jump\.mkv: declared duration 1000000 s is beyond the 86400 s limit"):
        probe_video(jump)
    with pytest.raises(DecodeError, match=r"timestamp jump of 1000000 s \(more than 600 s\) between two frames "
                                          r"after 2 frames \(0\.08 s\); corrupt timestamps; set decode\.partial_ok"):
        list(iter_frames(jump))
    with pytest.warns(DecodeWarning, match="timestamp jump"):
        # frames 0 and 1 (written with 41 ms durations: 0.081 s -> 3 output frames at 25 fps)
        assert [source_index(f) for f in iter_frames(jump, DecodeConfig(partial_ok=True))] == [0, 1, 1]
    # a huge first timestamp is an offset, not a length: decoded normally
    late = write_video(tmp_path / "late.mkv", n=8, pts_ms=[10**12 + 40 * i for i in range(8)])
    probe_video(late)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DecodeWarning)  # not "truncated": the offset is not part of the length
        assert len(list(iter_frames(late))) == 9  # 7 x 40 ms + the last frame's 41 ms -> ceil(8.025)


def test_absurd_aspect_ratio_is_refused(tmp_path):
    # 1024 x 2 would become 131072 x 256 pixels per frame at the default short side (a 100 MB RGB frame)
    wide = write_video(tmp_path / "wide.mkv", n=3, size=(1024, 2))
    msg = r"wide\.mkv: frames of 1024 x 2 pixels \(display aspect ratio 512:1\) exceed the 8:1 limit"
    with pytest.raises(DecodeError, match=msg):
        probe_video(wide)
    with pytest.raises(DecodeError, match=msg):
        list(iter_frames(wide))
    assert len(list(iter_frames(write_video(tmp_path / "ok.mkv", n=3, size=(256, 32))))) == 3  # 8:1 is fine
