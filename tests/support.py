"""Helpers the tests import: generated videos and features, small extraction and training settings, paths.

Fixtures live in ``conftest.py``; constants and plain functions live here, imported as ``from support import X``
from any folder under ``tests/`` (setup.cfg's ``pythonpath = tests`` puts this folder on ``sys.path``). A
subprocess a test starts does not see that setting: one that needs these helpers must get ``tests/`` on its
``PYTHONPATH``.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

import refineloc_e2e
from refineloc_e2e.backbone.i3d import InceptionI3d
from refineloc_e2e.datasets import Dataset, Segment, VideoAnnotation, dataset_to_activitynet_json
from refineloc_e2e.features import extractor as extractor_mod
from refineloc_e2e.features.cache import write_features
from refineloc_e2e.features.extractor import ExtractConfig
from refineloc_e2e.timebase import snippet_to_seconds
from testing.videos import texture, write_moving_video  # noqa: F401  (tests import them from here)
from refineloc_e2e.video.decode import DecodeConfig
from refineloc_e2e.video.flow import flow_config

# ---- paths: from here, so that a test file may move between folders without changing them

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"  # small files the tests read: golden snapshots, tiny videos
REPO = TESTS.parent
PACKAGE = Path(refineloc_e2e.__file__).resolve().parent
CONFIGS = PACKAGE / "configs"  # the shipped configs
SAMPLES = PACKAGE / "data" / "samples"  # bundled real clips

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


# --- tiny extraction: moving-texture videos, random-weight I3D, small frames -----------------------------

TINY_DECODE = DecodeConfig(short_side=48, crop_size=32, snippet_frames=8)
FAST = flow_config("fast")


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


# ---- features on disk and short training runs through the CLI (pipeline, ids, BaS-Net, disk-full tests)

TRAIN_FAST = ["--config", str(CONFIGS / "demo.yaml"), "--set", "head.feature_dim=32", "--set", "train.epochs=2",
              "--set", "train.n_iterations=1", "-q"]
# the one line a shortened run of a thumos14 config says (its inherited select_iteration = 3 is beyond it)
SHORTENED = ("select_iteration = 3 (thumos14-paper.yaml) is beyond train.n_iterations = 1: the last iteration (1) "
             "is saved")


def _layout(tmp_path: Path, n_train=8, n_test=4, dim=32, skip=()):
    """features/<id>.npy+.json (as extract writes them) and an ActivityNet-format annotations JSON."""
    rng = np.random.default_rng(0)
    protos = rng.normal(size=(2, dim)).astype(np.float32) * 3
    db = {}
    for i in range(n_train + n_test):
        vid, T, c = f"vid{i:02d}", 30, i % 2
        x = rng.normal(size=(T, dim)).astype(np.float32)
        x[10:20] += protos[c]
        if vid not in skip:
            write_features(tmp_path / "feats", vid, x, {"fps": 25.0, "snippet_frames": 16, "streams": ["rgb"],
                                                       "backbone": {}, "duration_s": T * 16 / 25})
        db[vid] = {"subset": "training" if i < n_train else "validation", "duration": T * 16 / 25,
                   "annotations": [{"label": f"Class{c}", "segment": [10 * 0.64, 20 * 0.64]}]}
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"name": "toy", "taxonomy": ["Class0", "Class1"], "database": db}))
    return ann, tmp_path / "feats"


def _fake_real_weights(monkeypatch):
    """The extractor's I3D with the real weights' name and checksum but small random (seeded) parameters, so
    a trained model and detect see exactly what they would with the real ones, without fetching them."""

    def build_i3d(stream, spec=None, device="cpu", *, rgb_spec=None):
        torch.manual_seed(0)
        model = InceptionI3d(3 if stream == "rgb" else 2, 10).to(device).eval()
        return model, {"weights_id": spec or "i3d-kinetics400-rgb", "init": "pretrained",
                       "sha256": RGB_SHA256,
                       "stream": stream, "in_channels": 3 if stream == "rgb" else 2, "num_classes": 10}
    monkeypatch.setattr(extractor_mod, "build_i3d", build_i3d)


def _features_and_annotations(root: Path, dims=(16, 16, 16, 16, 16, 16, 16, 16, 16, 16), seed=0):
    rng = np.random.default_rng(seed)
    feats_dir, videos = root / "feats", {}
    for i, dim in enumerate(dims):
        vid, T, c = f"v{i}", int(rng.integers(20, 40)), i % 2
        x = rng.normal(size=(T, dim)).astype(np.float32)  # (T, D)
        x[5:12, c] += 2.0  # the action, in the class's own direction
        write_features(feats_dir, vid, x, {"fps": 25.0, "snippet_frames": 16, "streams": ["rgb"], "backbone": {},
                                           "duration_s": T * 16 / 25.0})
        videos[vid] = VideoAnnotation(vid, "train" if i < 7 else "test", [f"A{c}"],
                                      [Segment(5 * 0.64, 12 * 0.64, f"A{c}")], T * 0.64, 25.0)
    ann = root / "ann.json"
    ann.write_text(json.dumps(dataset_to_activitynet_json(Dataset("tiny", ["A0", "A1"], videos))))
    return ann, feats_dir


TRAIN_SET = ["--set", "head.feature_dim=16", "--set", "train.epochs=2", "--set", "train.n_iterations=2",
             "--set", "train.batch_size=4", "--set", "train.device=cpu",
             "--set", "guard.enabled=false", "-q"]  # guard off: 2-epoch toy heads give collapsed pseudo labels
