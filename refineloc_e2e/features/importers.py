"""Importers: features computed elsewhere -> the feature cache (``<video_id>.npy`` + ``.json``).

W-TALC's joint THUMOS'14 file (``Thumos14reduced-I3D-JOINTFeatures.npy``): an object array of per-video
``float[T, 2048]`` rows in the order of W-TALC's ``videoname.npy`` (bundled).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from refineloc_e2e.backbone.i3d import FEATURE_DIM
from refineloc_e2e.errors import DatasetError, InputError
from refineloc_e2e.features.cache import write_features
from refineloc_e2e.fileio import RestrictedUnpickler, load_npy_untrusted, package_data, sha256_file
from refineloc_e2e.timebase import I3D_FPS, I3D_SNIPPET_FRAMES, expected_snippets

_DATA_DIR = package_data("data")

# sujoyp/wtalc-pytorch: issue #4 "First RGB then FLOW"; issue #5: non-overlapping 16-frame chunks through
# DeepMind's kinetics-i3d; issue #9: frames extracted at 25 fps (extracted_fps.npy's 10 is for UNT: ignore).
WTALC_SOURCE = "W-TALC Thumos14reduced-I3D-JOINTFeatures.npy"
WTALC_ANNOTATIONS = "Thumos14reduced-Annotations"
WTALC_BACKBONE = {stream: {"weights_id": f"deepmind/kinetics-i3d {stream} (variant not stated by W-TALC)",
                           "init": "Kinetics-400 pre-trained two-stream I3D (ImageNet inflation not stated)"}
                  for stream in ("rgb", "flow")}


def _decode_names(array: Any, path: Path) -> list[str]:
    try:
        return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in np.asarray(array).ravel()]
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: video names are not UTF-8 ({e})") from None


def _load_object_npy(path: Path) -> Any:
    """Object ``.npy`` through the restricted unpickler; Python-2 pickles (str data) are read as latin-1."""
    try:
        return load_npy_untrusted(path)
    except UnicodeDecodeError:
        with open(path, "rb") as f:
            if np.lib.format.read_magic(f) == (1, 0):  # skip the header; the payload is a pickle
                np.lib.format.read_array_header_1_0(f)
            else:
                np.lib.format.read_array_header_2_0(f)
            return RestrictedUnpickler(f, encoding="latin1").load()


def import_wtalc_features(features_npy: Path, out_dir: Path, *, annotations_dir: Path | None = None,
                          quiet: bool = False) -> int:
    """Split W-TALC's joint THUMOS'14 feature file into the feature cache; returns the number of videos.

    ``features_npy`` is an object array of per-video ``float[T, 2048]`` (``[rgb | flow]``, 25 fps,
    16-frame snippets) whose rows follow ``videoname.npy`` in ``annotations_dir`` (default: the bundled
    ``Thumos14reduced-Annotations``). ``T`` is checked against ``duration.npy`` (25/16 snippets per second).
    """
    features_npy, out_dir = Path(features_npy), Path(out_dir)
    ann = Path(annotations_dir) if annotations_dir is not None else _DATA_DIR / "thumos14/wtalc" / WTALC_ANNOTATIONS
    if not features_npy.is_file():
        raise InputError(f"{features_npy}: W-TALC feature file not found")
    names = _decode_names(load_npy_untrusted(ann / "videoname.npy"), ann / "videoname.npy")
    durations = np.asarray(load_npy_untrusted(ann / "duration.npy"), dtype=np.float64).ravel()  # [N] seconds
    rows = _load_object_npy(features_npy)
    if getattr(rows, "ndim", 1) != 1 or len(rows) != len(names) or len(durations) != len(names):
        raise DatasetError(f"{features_npy}: {len(rows)} feature rows, but {ann} lists {len(names)} videos "
                           f"and {len(durations)} durations (is this the Thumos14reduced file?)")
    source = {"name": WTALC_SOURCE, "path": str(features_npy.resolve()), "size": features_npy.stat().st_size,
              "sha256": sha256_file(features_npy)}
    for i, (vid, duration_s) in enumerate(zip(names, durations)):
        feats = np.asarray(rows[i])  # [T, 2048]
        if feats.ndim != 2 or feats.shape[1] != 2 * FEATURE_DIM or feats.shape[0] == 0 or feats.dtype.kind != "f":
            raise DatasetError(f"{features_npy}: row {i} ({vid}) is {feats.dtype}{list(feats.shape)}, "
                               f"expected float[T, 2048]")
        expected_t = expected_snippets(duration_s, fps=I3D_FPS, snippet_frames=I3D_SNIPPET_FRAMES)
        if abs(feats.shape[0] - expected_t) > max(3.0, 0.05 * expected_t):
            raise DatasetError(f"{features_npy}: row {i} ({vid}) has {feats.shape[0]} snippets but its duration "
                               f"{duration_s:.1f} s gives ~{expected_t:.0f} at 25 fps / 16 frames: rows do not "
                               f"follow {ann / 'videoname.npy'}")
        if not np.isfinite(feats).all():
            raise DatasetError(f"{features_npy}: row {i} ({vid}) contains NaN or infinite values")
        meta = {"fps": I3D_FPS, "snippet_frames": I3D_SNIPPET_FRAMES, "stride_frames": I3D_SNIPPET_FRAMES, "dim": 2 * FEATURE_DIM, "streams": ["rgb", "flow"],
                "backbone": WTALC_BACKBONE, "source": {**source, "row": i}}
        write_features(out_dir, vid, feats.astype(np.float32), meta)
        if not quiet:
            print(f"\r{features_npy.name}: {i + 1}/{len(names)} videos", end="", file=sys.stderr, flush=True)
    if not quiet:
        print(file=sys.stderr)
    return len(names)
