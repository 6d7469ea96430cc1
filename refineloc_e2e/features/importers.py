"""Importers: features computed elsewhere -> the feature cache (``<video_id>.npy`` + ``.json``).

- W-TALC's joint THUMOS'14 file (``Thumos14reduced-I3D-JOINTFeatures.npy``): an object array of per-video
  ``float[T, 2048]`` rows in the order of W-TALC's ``videoname.npy`` (bundled).
- Folders of per-video arrays (:func:`import_feature_folder`): one file per video with the streams side by
  side (ActionFormer), or one file per stream (video_features' ``{id}_rgb.npy``; BaS-Net/CoLA's
  ``features/{train,test}/{rgb,flow}/{id}.npy``), as ``.npy``, ``.npz`` or pickles (read through the
  restricted loaders: never code). The time base is what the user states (fps, window, stride).

Imported features record ``origin: imported`` and their backbone as ``imported:<name>``, so a model trained
on them refuses features extracted here (and the other way round), naming why.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from refineloc_e2e.backbone.i3d import FEATURE_DIM
from refineloc_e2e.errors import ConfigError, DatasetError, InputError
from refineloc_e2e.features.cache import write_features
from refineloc_e2e.fileio import (RestrictedUnpickler, load_arrays_untrusted, load_npy_untrusted, package_data,
                                  sha256_file)
from refineloc_e2e.ids import collision_text, index_by_id, one_per_id, video_id
from refineloc_e2e.progress import Progress, log_lines
from refineloc_e2e.timebase import I3D_FPS, I3D_SNIPPET_FRAMES, expected_snippets

logger = logging.getLogger(__name__)


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
    for vid, same in index_by_id(names)[1].items():  # two rows would be written to one entry
        raise DatasetError(f"{ann / 'videoname.npy'}: {collision_text(vid, same, 'video names')}; the last "
                           f"row would overwrite the other")
    durations = np.asarray(load_npy_untrusted(ann / "duration.npy"), dtype=np.float64).ravel()  # [N] seconds
    rows = _load_object_npy(features_npy)
    if getattr(rows, "ndim", 1) != 1 or len(rows) != len(names) or len(durations) != len(names):
        raise DatasetError(f"{features_npy}: {len(rows)} feature rows, but {ann} lists {len(names)} videos "
                           f"and {len(durations)} durations (is this the Thumos14reduced file?)")
    source = {"name": WTALC_SOURCE, "path": str(features_npy.resolve()), "size": features_npy.stat().st_size,
              "sha256": sha256_file(features_npy)}
    bar = Progress(len(names), desc=features_npy.name, unit="video", enabled=not quiet)
    for i, (name, duration_s) in enumerate(zip(names, durations)):
        vid = video_id(name)
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
        meta = {"origin": "imported", "fps": I3D_FPS, "snippet_frames": I3D_SNIPPET_FRAMES,
                "stride_frames": I3D_SNIPPET_FRAMES, "duration_s": float(duration_s), "dim": 2 * FEATURE_DIM,
                "streams": ["rgb", "flow"], "backbone": WTALC_BACKBONE, "source": {**source, "row": i}}
        write_features(out_dir, vid, feats.astype(np.float32), meta)
        bar.update(1, note=vid)
    bar.close()
    return len(names)


# ----------------------------------------------------------------------------- folders of per-video arrays

STREAM_NAMES = ("rgb", "flow")  # the order features are written in here: [rgb | flow]
ARRAY_EXTENSIONS = ("npy", "npz", "pkl", "pickle")
# file-name patterns relative to SRC: {id} = the video id, {ext} = one of ARRAY_EXTENSIONS, * = any name part
LAYOUTS = {
    "joint": {"joint": "{id}.{ext}"},  # one file per video, the streams side by side (ActionFormer, ours exported)
    "separate": {"rgb": "{id}_rgb.{ext}", "flow": "{id}_flow.{ext}"},  # video_features' i3d output
    "tree": {"rgb": "*/rgb/{id}.{ext}", "flow": "*/flow/{id}.{ext}"},  # BaS-Net/CoLA features/{train,test}/{rgb,flow}
}


@dataclass
class FolderImport:
    """How to read a folder of per-video feature arrays, and the time base they were computed with."""

    fps: float  # frame rate the windows were cut at (e.g. 25 after resampling, or the native 30)
    snippet_frames: int  # frames per window (16 for I3D)
    stride_frames: int | None = None  # frames between window starts (None: = snippet_frames, non-overlapping)
    streams: tuple[str, ...] = STREAM_NAMES  # the streams present; in a joint file, the order of its halves
    stream_dim: int = 1024  # width of one stream's feature (I3D Mixed_5c: 1024)
    layout: str = "auto"  # auto | joint | separate | tree (see LAYOUTS)
    patterns: dict[str, str] = field(default_factory=dict)  # override the layout's: "joint" or "rgb"/"flow"
    key: str | None = None  # the array's name inside an .npz / pickled dict holding several
    backbone: str = "unknown"  # what computed them, recorded as the streams' weights_id "imported:<backbone>"

    def validate(self) -> None:
        if not (self.fps > 0 and self.snippet_frames >= 1 and (self.stride_frames is None or self.stride_frames >= 1)):
            raise ConfigError(f"time base: need fps > 0, snippet frames >= 1 and stride >= 1, got fps {self.fps}, "
                              f"snippet frames {self.snippet_frames}, stride {self.stride_frames}")
        streams = set(self.streams)
        if not self.streams or len(streams) != len(self.streams) or not streams <= set(STREAM_NAMES):
            raise ConfigError(f"streams: expected a comma-separated order of rgb and/or flow, got "
                              f"{','.join(self.streams) or 'nothing'}")
        if self.layout not in ("auto", *LAYOUTS):
            raise ConfigError(f"layout: expected auto, {', '.join(LAYOUTS)}; got {self.layout!r}")
        if self.stream_dim < 1:
            raise ConfigError(f"stream dim: expected >= 1, got {self.stream_dim}")


def _pattern_regex(pattern: str) -> re.Pattern:
    if pattern.count("{id}") != 1:
        raise ConfigError(f"file pattern {pattern!r}: needs exactly one {{id}}")
    parts = re.split(r"(\{id\}|\{ext\}|\*)", pattern)
    table = {"{id}": r"(?P<id>[^/]+?)", "{ext}": "(?:" + "|".join(ARRAY_EXTENSIONS) + ")", "*": "[^/]*"}
    return re.compile("".join(table.get(p, re.escape(p)) for p in parts) + "$")


def _find(src: Path, files: list[str], pattern: str) -> dict[str, Path]:
    """{video id: file} of the files (posix paths relative to ``src``) that match ``pattern``."""
    regex, found = _pattern_regex(pattern), {}
    for rel in files:
        m = regex.match(rel)
        if m is None:
            continue
        vid = video_id(m.group("id"))  # the file's own name, as `extract` would name that video
        if vid in found:
            raise DatasetError(f"{src / rel}: video '{vid}' also matches {found[vid]} (pattern {pattern!r}); "
                               f"keep one, or give a narrower pattern")
        found[vid] = src / rel
    return found


def _choose_layout(spec: FolderImport, files: list[str]) -> tuple[str, dict[str, str]]:
    if spec.patterns:
        layout = "joint" if "joint" in spec.patterns else "separate"
        base = LAYOUTS[layout] if spec.layout == "auto" else LAYOUTS[spec.layout]
        return (layout if spec.layout == "auto" else spec.layout), {**base, **spec.patterns}
    if spec.layout != "auto":
        return spec.layout, LAYOUTS[spec.layout]
    for layout in ("tree", "separate"):  # the more specific layouts first; joint matches any array file
        regexes = [_pattern_regex(LAYOUTS[layout][s]) for s in spec.streams]
        if any(r.match(rel) for r in regexes for rel in files):
            return layout, LAYOUTS[layout]
    return "joint", LAYOUTS["joint"]


def _pick(obj: Any, path: Path, key: str | None, streams: tuple[str, ...] | None = None) -> Any:
    """The array in ``obj`` (an array, or a dict from an .npz / pickle); with ``streams``, a dict holding
    every stream by name (video_features' pickles) is returned as {stream: array}."""
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == ():
        obj = obj.item()  # np.save of a dict
    if not isinstance(obj, dict):
        if key is not None:
            raise InputError(f"{path}: holds a single array, not named arrays; drop --key {key}")
        return obj
    if key is not None:
        if key not in obj:
            raise InputError(f"{path}: has no array '{key}' (it holds: {', '.join(map(str, obj)) or 'nothing'})")
        return obj[key]
    if streams is not None and all(s in obj for s in streams):
        return {s: obj[s] for s in streams}
    arrays = [k for k, v in obj.items() if isinstance(v, np.ndarray) and v.ndim == 2]
    if len(arrays) == 1:
        return obj[arrays[0]]
    raise InputError(f"{path}: holds {', '.join(map(str, obj)) or 'nothing'}; say which array with --key NAME")


def _as_features(x: Any, path: Path, width: int, what: str) -> np.ndarray:
    """float32 [T, width] or an InputError naming the file: wrong rank, width, type, empty, NaN."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu" or arr.ndim != 2:
        raise InputError(f"{path}: {arr.dtype}{list(arr.shape)} is not a 2-D numeric [T, D] feature array")
    if arr.shape[1] != width:
        raise InputError(f"{path}: width {arr.shape[1]}, expected {width} ({what}; set --streams / --stream-dim)")
    if arr.shape[0] == 0:
        raise InputError(f"{path}: no rows (an empty feature array)")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise InputError(f"{path}: contains NaN or infinite values (first in row {int(np.flatnonzero(bad)[0])})")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _file_identity(path: Path) -> dict[str, Any]:
    return {"path": str(path.resolve()), "size": path.stat().st_size, "sha256": sha256_file(path)}


def import_feature_folder(src: Path, out_dir: Path, spec: FolderImport, *, dataset=None,
                          log: Callable[[str], None] | None = None, quiet: bool = False) -> tuple[list[str], str]:
    """Import a folder of per-video feature arrays into the feature cache; returns (video ids, layout used).

    Each video's streams are checked (2-D, width ``stream_dim`` per stream, finite, equal row counts and,
    with ``dataset``, a row count that fits the video's duration under the stated time base), written as
    ``[rgb | flow]`` float32 with the time base, the stream order, the backbone as stated and every source
    file's identity in its metadata. Stops at the first bad file, naming it.
    """
    log = log or log_lines(logger)
    spec.validate()
    src, out_dir = Path(src), Path(out_dir)
    if not src.is_dir():
        raise InputError(f"{src}: not a folder of per-video feature files")
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    layout, patterns = _choose_layout(spec, files)
    tb = {"fps": float(spec.fps), "snippet_frames": int(spec.snippet_frames),
          "stride_frames": int(spec.stride_frames or spec.snippet_frames)}
    joint = "joint" in patterns and layout == "joint"
    found = {"joint": _find(src, files, patterns["joint"])} if joint else \
        {s: _find(src, files, patterns[s]) for s in spec.streams}
    ids = sorted(set().union(*found.values()))
    if not ids:
        wanted = " or ".join(repr(patterns[k]) for k in found)
        raise InputError(f"{src}: no file matches {wanted} (extensions {', '.join(ARRAY_EXTENSIONS)})")
    order = [s for s in STREAM_NAMES if s in spec.streams]  # written order: [rgb | flow]
    keys = one_per_id(dataset.videos, "annotation keys", log, where=f"dataset '{dataset.name}'") \
        if dataset is not None else {}  # {video id: annotation key}: files are matched to keys as ids
    not_in_dataset = []
    bar = Progress(len(ids), desc=src.name, unit="video", enabled=not quiet)
    for vid in ids:
        if joint:
            path = found["joint"][vid]
            obj = _pick(load_arrays_untrusted(path), path, spec.key, spec.streams if len(spec.streams) > 1 else None)
            if isinstance(obj, dict):  # one named array per stream
                per = {s: (_as_features(obj[s], path, spec.stream_dim, f"stream '{s}'"), path) for s in spec.streams}
            else:
                whole = _as_features(obj, path, spec.stream_dim * len(spec.streams),
                                     f"{len(spec.streams)} x {spec.stream_dim}: {','.join(spec.streams)}")
                per = {s: (whole[:, i * spec.stream_dim:(i + 1) * spec.stream_dim], path)
                       for i, s in enumerate(spec.streams)}
            sources = {"joint": _file_identity(path)}
        else:
            have = {s: found[s][vid] for s in spec.streams if vid in found[s]}
            for s in spec.streams:
                if s not in have:
                    other = next(iter(have.values()))
                    raise InputError(f"{other}: no {s} stream file for video '{vid}' (pattern {patterns[s]!r} "
                                     f"under {src})")
            per = {s: (_as_features(_pick(load_arrays_untrusted(p), p, spec.key), p, spec.stream_dim,
                                    f"one {s} stream of {spec.stream_dim}"), p) for s, p in have.items()}
            sources = {s: _file_identity(p) for s, p in have.items()}
        rows = {s: a.shape[0] for s, (a, _) in per.items()}
        if len(set(rows.values())) > 1:
            (s0, (_, p0)), (s1, (_, p1)) = list(per.items())[:2]
            raise InputError(f"{p1}: {rows[s1]} {s1} rows, but {rows[s0]} {s0} rows in {p0}; the streams must "
                             f"cover the same snippets")
        feats = np.concatenate([per[s][0] for s in order], axis=1)  # [T, stream_dim * n_streams]
        duration_s = _check_duration(dataset, keys.get(vid), vid, feats.shape[0], per[order[0]][1], tb,
                                     not_in_dataset)
        meta = {"origin": "imported", **tb, "streams": order, "stream_dims": {s: spec.stream_dim for s in order},
                "duration_s": duration_s,
                "time_base_source": f"stated at import: {tb['fps']:g} fps, {tb['snippet_frames']}-frame windows "
                                    f"every {tb['stride_frames']} frames",
                "backbone": {s: {"weights_id": f"imported:{spec.backbone}",
                                 "init": f"as stated at import: {spec.backbone}"} for s in order},
                "source": {"folder": str(src.resolve()), "layout": layout, "patterns": patterns,
                           "stream_order": list(spec.streams), "key": spec.key, "files": sources}}
        write_features(out_dir, vid, feats, meta)
        bar.update(1, note=vid)
    bar.close()
    if not_in_dataset:
        log(f"warning: {len(not_in_dataset)} imported videos are not in {dataset.name}, their length was not "
            f"checked: {', '.join(not_in_dataset[:10])}{' ...' if len(not_in_dataset) > 10 else ''}")
    return ids, layout


def _check_duration(dataset, key: str | None, vid: str, n_rows: int, path: Path, tb: dict,
                    not_in_dataset: list) -> float | None:
    """The duration of the video with annotation key ``key`` (matched to the file's id ``vid``) from ``dataset``
    (None if unknown); DatasetError if ``n_rows`` does not fit it."""
    if dataset is None:
        return None
    video = dataset.videos.get(key) if key is not None else None
    if video is None:
        not_in_dataset.append(vid)
        return None
    if video.duration_s is None:
        return None
    expected = expected_snippets(video.duration_s, **tb)
    tolerance = max(3.0, math.ceil(tb["snippet_frames"] / tb["stride_frames"]) + 1, 0.05 * expected)
    if abs(n_rows - expected) > tolerance:
        raise DatasetError(f"{path}: {n_rows} snippets, but '{vid}' lasts {video.duration_s:.1f} s in "
                           f"{dataset.name}, which gives ~{expected} at {tb['fps']:g} fps with "
                           f"{tb['snippet_frames']}-frame windows every {tb['stride_frames']} frames (wrong "
                           f"--fps / --snippet-frames / --stride, or not this video's features)")
    return float(video.duration_s)
