"""Exporters: the feature cache -> the layouts other codebases read, so features extracted here feed them.

- ``actionformer``: ``OUT/<video_id>.npy``, float32 ``[T, D]`` (ActionFormer's ``feat_folder`` with an empty
  ``file_prefix`` and ``file_ext: .npy``), plus ``OUT/refineloc_export.json`` giving the values of its config
  keys (``default_fps``, ``feat_stride``, ``num_frames``, ``input_dim``) for these features.
- ``wtalc``: W-TALC's joint file, an object array of per-video ``float32 [T, 2048]`` rows
  (``OUT/<name>-I3D-JOINTFeatures.npy``), beside the ``videoname.npy`` (bytes) and ``duration.npy``
  (``float64 [N, 1]`` seconds) that say which row is which. Rows follow W-TALC's own ``videoname.npy``
  order for the THUMOS'14 videos it lists, then the other ids sorted. W-TALC's code assumes 25 fps,
  16-frame non-overlapping snippets, so other time bases are refused.

Both import back bitwise (``import-features`` and ``import-wtalc``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from refineloc_e2e.errors import DatasetError, InputError
from refineloc_e2e.features.cache import cached_ids, read_features
from refineloc_e2e.fileio import atomic_save_npy, atomic_write_json, atomic_writer, load_npy_untrusted, package_data
from refineloc_e2e.timebase import I3D_FPS, I3D_SNIPPET_FRAMES, time_base

EXPORT_LAYOUTS = ("actionformer", "wtalc")
WTALC_ORDER = package_data("data", "thumos14", "wtalc", "Thumos14reduced-Annotations", "videoname.npy")


def _entries(features_dir: Path) -> dict[str, str]:
    """{video id: the stem of its files} (``features.cache.cached_ids``)."""
    if not features_dir.is_dir():
        raise InputError(f"{features_dir}: features folder not found")
    ids = cached_ids(features_dir)
    if not ids:
        raise InputError(f"{features_dir}: no feature files (<video_id>.json) found")
    return ids


def _shared(features_dir: Path, vid: str, meta: dict, ref: dict | None, ref_vid: str | None) -> dict:
    """The time base, width and streams every exported video must share (one config for the other tool)."""
    got = {**time_base(meta), "dim": meta.get("dim"), "streams": meta.get("streams")}
    if ref is not None and got != ref:
        diff = "; ".join(f"{k}: {got[k]!r} vs {ref[k]!r}" for k in got if got[k] != ref[k])
        raise DatasetError(f"{features_dir / (vid + '.json')}: not computed like '{ref_vid}' ({diff}); "
                           f"export one setting at a time")
    return got


def export_features(features_dir: str | Path, out_dir: str | Path, *, layout: str,
                    name: str | None = None) -> list[str]:
    """Write every video of ``features_dir`` in ``layout`` (see the module docstring); returns the ids in the
    order written."""
    features_dir, out_dir = Path(features_dir), Path(out_dir)
    if layout not in EXPORT_LAYOUTS:
        raise InputError(f"unknown export layout {layout!r} (expected {' or '.join(EXPORT_LAYOUTS)})")
    stems = _entries(features_dir)
    if layout == "actionformer":
        return _export_actionformer(features_dir, out_dir, stems)
    return _export_wtalc(features_dir, out_dir, stems, name)


def _export_actionformer(features_dir: Path, out_dir: Path, stems: dict[str, str]) -> list[str]:
    ref, ids = None, list(stems)
    for vid in ids:
        feats, meta = read_features(features_dir, stems[vid])  # [T, D] float32, checksum verified
        ref = _shared(features_dir, stems[vid], meta, ref, ids[0])
        atomic_save_npy(out_dir / f"{vid}.npy", feats)
    atomic_write_json(out_dir / "refineloc_export.json", {
        "layout": "actionformer", "from": str(features_dir.resolve()), "n_videos": len(ids),
        "actionformer_config": {"feat_folder": str(out_dir.resolve()), "file_prefix": "", "file_ext": ".npy",
                                "input_dim": ref["dim"], "default_fps": ref["fps"],
                                "feat_stride": ref["stride_frames"], "num_frames": ref["snippet_frames"]},
        "streams": ref["streams"], "note": "features are [" + " | ".join(ref["streams"] or []) + "] side by side"})
    return ids


def _wtalc_order(ids: list[str]) -> list[str]:
    known = [x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(load_npy_untrusted(WTALC_ORDER))]
    present = set(ids)
    ordered = [v for v in known if v in present]
    return ordered + sorted(present - set(ordered))


def _export_wtalc(features_dir: Path, out_dir: Path, stems: dict[str, str], name: str | None) -> list[str]:
    ids = _wtalc_order(list(stems))
    rows = np.empty(len(ids), dtype=object)
    durations = np.empty((len(ids), 1), dtype=np.float64)  # [N, 1] seconds, as W-TALC's duration.npy
    for i, vid in enumerate(ids):
        feats, meta = read_features(features_dir, stems[vid])
        tb = time_base(meta)
        if (tb["fps"], tb["snippet_frames"], tb["stride_frames"]) != (I3D_FPS, I3D_SNIPPET_FRAMES, I3D_SNIPPET_FRAMES):
            raise DatasetError(f"{features_dir / (stems[vid] + '.json')}: {tb['fps']:g} fps, "
                               f"{tb['snippet_frames']}-frame windows every {tb['stride_frames']} frames; W-TALC's code assumes 25 fps, 16-frame "
                               f"non-overlapping snippets (use --layout actionformer)")
        rows[i] = feats
        duration_s: Any = meta.get("duration_s")
        durations[i, 0] = float(duration_s) if duration_s is not None else feats.shape[0] * I3D_SNIPPET_FRAMES / I3D_FPS
    stem = name or ("Thumos14reduced" if all(v.startswith("video_") for v in ids) else "features")
    with atomic_writer(out_dir / f"{stem}-I3D-JOINTFeatures.npy", "wb") as f:
        np.save(f, rows, allow_pickle=True)  # an object array is what W-TALC's code loads
    atomic_save_npy(out_dir / "videoname.npy", np.array([v.encode() for v in ids]))
    atomic_save_npy(out_dir / "duration.npy", durations)
    return ids
