"""A seeded fuzz corpus of small videos: mutated real clips and generated streams, for extraction hardening.

:func:`build_corpus` writes ``n`` inputs into a folder, the same bytes for the same ``seed``. Seeds are the
bundled real clips (``data/samples/bikes.mp4`` cut to its first second by stream copy, the full file,
the Kinetics GIF and a byte prefix of it) and small generated videos in several containers and codecs
(mp4/h264, mkv/ffv1, avi/mpeg4, webm/vp9, gif). Each input is one of

* a **byte mutation** of a seed: bit flips, a zeroed span, a duplicated span, truncation at a random point,
  a garbled header, the header of another seed, or a wrong file extension;
* a **generated edge case**: absurd dimensions (2 x 2, 1024 x 2) and frame rates (0.5, 1000 fps),
  zero-duration (every frame at one timestamp) and single-frame streams, huge start timestamps,
  timestamp jumps, variable frame rate, audio-only and audio + video files.

Inputs are short and low-resolution so that extracting all of them is cheap. ``benchmarks/robustness/fuzz_extract.py``
runs a corpus through one ``extract`` batch; ``tests/features/test_fuzz.py`` runs a seeded subset.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from refineloc_e2e.fileio import package_data
from refineloc_e2e.video.decode import DecodeConfig, DecodeWarning, iter_frames, probe_video

SAMPLES = package_data("data", "samples")  # the bundled real clips (the package data)
BIKES, GIF = SAMPLES / "bikes.mp4", SAMPLES / "v_CricketShot_g04_c01_rgb.gif"
# (container format, codec, pix_fmt, extension) of the generated seeds
FORMATS = {
    "h264": ("mp4", "libx264", "yuv420p", ".mp4"),
    "ffv1": ("matroska", "ffv1", "yuv420p", ".mkv"),
    "mpeg4": ("avi", "mpeg4", "yuv420p", ".avi"),
    "vp9": ("webm", "libvpx-vp9", "yuv420p", ".webm"),
    "gif": ("gif", "gif", "rgb8", ".gif"),
}
MUTATIONS = ("bitflip", "zero_span", "dup_span", "truncate", "garble_header", "swap_header", "wrong_ext")
DECODE_ERROR = re.compile(r"decode error after (\d+) frames \((\d+\.\d\d) s\)")
BITEXACT = {"fflags": "+bitexact"}  # no random Matroska UIDs or encoder strings: the same bytes every time
WRONG_EXT = {".mp4": ".avi", ".mkv": ".mp4", ".avi": ".webm", ".webm": ".mkv", ".gif": ".mp4"}


@dataclass
class FuzzInput:
    name: str  # file name in the corpus folder
    seed_name: str  # the seed it came from, or "generated"
    kind: str  # the mutation (MUTATIONS) or the generated edge case


def encode(*, n: int, fmt: str = "h264", size: tuple[int, int] = (64, 48), fps: float = 25,
           pts_ms: list[int] | None = None, audio: bool = False, seed: int = 0) -> bytes:
    """``n`` frames of a moving noise texture, encoded in ``FORMATS[fmt]``; ``pts_ms``: explicit frame times."""
    container_fmt, codec, pix_fmt, _ = FORMATS[fmt]
    w, h = size
    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 256, (h + n, w + n, 3), dtype=np.uint8)  # [H + n, W + n, 3]
    buf = io.BytesIO()
    with av.open(buf, "w", format=container_fmt, options=BITEXACT) as c:
        if pts_ms is None:
            s = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        else:
            s = c.add_stream(codec)
            s.codec_context.time_base = s.time_base = Fraction(1, 1000)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if codec == "libvpx-vp9":
            s.options = {"deadline": "realtime", "cpu-used": "8"}
        elif codec == "libx264":
            s.options = {"preset": "ultrafast"}
        a = c.add_stream("aac", rate=8000) if audio else None
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(tex[i:i + h, i:i + w]), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
        if a is not None:
            for i in range(max(1, n // 3)):
                af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                af.sample_rate, af.pts = 8000, i * 1024
                for p in a.encode(af):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
    return buf.getvalue()


def audio_only(fmt: str) -> bytes:
    """A second of silence, video-less: mp4/aac, mkv/opus or webm/opus."""
    codec, rate = ("aac", 8000) if fmt == "mp4" else ("libopus", 48000)
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt, options=BITEXACT) as c:
        s = c.add_stream(codec, rate=rate)
        for i in range(rate // 960):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), format="fltp", layout="mono")
            af.sample_rate, af.pts = rate, i * 960
            for p in s.encode(af):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def cut_real_clip(path: Path, seconds: float) -> bytes:
    """The first ``seconds`` of a real clip by stream copy (its own packets, no re-encoding)."""
    buf = io.BytesIO()
    with av.open(str(path)) as src, av.open(buf, "w", format="mp4", options=BITEXACT) as dst:
        ins = src.streams.video[0]
        out = dst.add_stream_from_template(ins)
        for pkt in src.demux(ins):
            if pkt.dts is None:
                continue
            if pkt.pts is not None and pkt.pts * ins.time_base >= seconds:
                break
            pkt.stream = out
            dst.mux(pkt)
    return buf.getvalue()


def seed_files() -> dict[str, bytes]:
    """The seeds that byte mutations start from: real clips and generated ones, name (with extension) -> bytes."""
    gif = GIF.read_bytes()
    seeds = {"bikes_1s.mp4": cut_real_clip(BIKES, 1.0), "bikes.mp4": BIKES.read_bytes(), "cricket.gif": gif,
             "cricket_prefix.gif": gif[: 200_000] + b"\x3b"}  # the first frames and the GIF trailer
    for fmt, (_, _, _, ext) in FORMATS.items():
        seeds[f"gen_{fmt}{ext}"] = encode(n=12, fmt=fmt)
    return seeds


def edge_cases() -> dict[str, bytes]:
    """Generated structural edge cases, name -> bytes."""
    jump = [0, 40, 80, 120, 3_000, 3_040, 3_080]  # ms: a 2.9 s gap
    cases = {
        "tiny_2x2.mkv": encode(n=5, fmt="ffv1", size=(2, 2)),
        "wide_1024x2.mkv": encode(n=3, fmt="ffv1", size=(1024, 2)),  # refused: aspect ratio
        "wide_256x32.mkv": encode(n=3, fmt="ffv1", size=(256, 32)),  # 8:1, the widest accepted
        "tall_2x512.mp4": encode(n=3, fmt="h264", size=(2, 512)),
        "tall_16x128.mp4": encode(n=3, fmt="h264", size=(16, 128)),
        "fps_0.5.mkv": encode(n=3, fmt="ffv1", fps=0.5),
        "fps_1000.mkv": encode(n=40, fmt="ffv1", fps=1000),
        "fps_1000.mp4": encode(n=40, fmt="h264", fps=1000),
        "zero_duration.mkv": encode(n=5, fmt="ffv1", pts_ms=[0] * 5),
        "huge_start.mkv": encode(n=8, fmt="ffv1", pts_ms=[10**12 + 40 * i for i in range(8)]),
        "huge_start.mp4": encode(n=8, fmt="h264", pts_ms=[10**11 + 40 * i for i in range(8)]),
        "jump.mkv": encode(n=7, fmt="ffv1", pts_ms=jump),
        "jump.mp4": encode(n=7, fmt="h264", pts_ms=jump),
        "jump_huge.mkv": encode(n=4, fmt="ffv1", pts_ms=[0, 40, 10**9, 10**9 + 40]),  # 11.6 days
        "vfr.mkv": encode(n=9, fmt="ffv1", pts_ms=[0, 40, 200, 210, 500, 520, 900, 1000, 1100]),
        "vfr.mp4": encode(n=9, fmt="h264", pts_ms=[0, 40, 200, 210, 500, 520, 900, 1000, 1100]),
        "audio_only.mp4": audio_only("mp4"),
        "audio_only.mkv": audio_only("matroska"),
        "audio_only.webm": audio_only("webm"),
        "with_audio.mp4": encode(n=12, fmt="h264", audio=True),
        "with_audio.mkv": encode(n=12, fmt="ffv1", audio=True),
        "empty.mp4": b"",
    }
    for fmt, (_, _, _, ext) in FORMATS.items():
        cases[f"one_frame_{fmt}{ext}"] = encode(n=1, fmt=fmt)
    return cases


def mutate(data: bytes, kind: str, rng: np.random.Generator, other: bytes) -> bytes:
    """One byte-level mutation of ``data`` (``other``: another seed, for ``swap_header``)."""
    b = bytearray(data)
    n = len(b)
    if kind == "bitflip":
        for pos in rng.integers(0, n, int(rng.integers(1, 33))):
            b[pos] ^= 1 << int(rng.integers(0, 8))
    elif kind == "zero_span":
        start, span = int(rng.integers(0, n)), int(rng.integers(1, max(2, n // 8)))
        b[start:start + span] = bytes(len(b[start:start + span]))
    elif kind == "dup_span":
        start = int(rng.integers(0, n))
        span = b[start:start + int(rng.integers(1, max(2, n // 8)))]
        at = int(rng.integers(0, n))
        b[at:at] = span
    elif kind == "truncate":
        b = b[: int(rng.integers(1, n))]
    elif kind == "garble_header":
        k = min(n, int(rng.integers(4, 129)))
        start = int(rng.integers(0, k))
        b[start:k] = rng.integers(0, 256, k - start, dtype=np.uint8).tobytes()
    elif kind == "swap_header":
        k = int(rng.integers(8, 257))
        b[:k] = other[:k]
    elif kind != "wrong_ext":
        raise ValueError(f"unknown mutation {kind!r}; expected one of {MUTATIONS}")
    return bytes(b)


def build_corpus(folder: str | Path, n: int = 500, seed: int = 0) -> list[FuzzInput]:
    """Write ``n`` inputs (every edge case once, the rest byte mutations of the seeds) into ``folder``.

    The same ``(n, seed)`` gives the same files. Returns one :class:`FuzzInput` per file, in file order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out: list[FuzzInput] = []
    for name, data in edge_cases().items():
        if len(out) == n:
            return out
        (folder / name).write_bytes(data)
        out.append(FuzzInput(name, "generated", Path(name).stem))
    seeds = seed_files()
    names = sorted(seeds)
    # the full-size real clips are mutated less often: extraction time follows their length
    weights = np.array([0.25 if s in ("bikes.mp4", "cricket.gif") else 1.0 for s in names])
    weights /= weights.sum()
    i = 0
    while len(out) < n:
        seed_name = names[int(rng.choice(len(names), p=weights))]
        kind = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
        other = seeds[names[int(rng.integers(len(names)))]]
        data = mutate(seeds[seed_name], kind, rng, other)
        stem, ext = Path(seed_name).stem, Path(seed_name).suffix
        ext = WRONG_EXT[ext] if kind == "wrong_ext" else ext
        name = f"m{i:04d}_{kind}_{stem}{ext}"
        (folder / name).write_bytes(data)
        out.append(FuzzInput(name, seed_name, kind))
        i += 1
    return out


def check_decode_message(path: str | Path, cause: str, decode: DecodeConfig) -> str | None:
    """For a failure ``cause`` holding "decode error after N frames (S s)": None if N and S agree with the
    file, else what disagrees. S must give ``ceil(S * fps)`` frames when decoded with ``partial_ok`` (within
    the message's 2-decimal rounding) and equal N frames at the stream's rate (within rounding)."""
    m = DECODE_ERROR.search(cause)
    n_src, seconds = int(m.group(1)), float(m.group(2))
    slack = 0.005 * decode.fps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DecodeWarning)
        partial = DecodeConfig(**{**decode.__dict__, "partial_ok": True})
        n_out = sum(1 for _ in iter_frames(path, partial))
    if not math.ceil(seconds * decode.fps - slack) <= n_out <= math.ceil(seconds * decode.fps + slack):
        return f"partial decode gave {n_out} frames, the message says {seconds:.2f} s"
    native = probe_video(path).native_fps
    if native and abs(seconds - n_src / native) > 0.006:
        return f"{n_src} frames at {native:g} fps are {n_src / native:.3f} s, the message says {seconds:.2f} s"
    return None
