"""Batches of videos -> the feature cache: input expansion, per-video locking, skip/re-extract, summary.

``extract_batch`` never stops on one bad video: each failure is logged as ``error: <path>: <cause>``,
recorded in the :class:`BatchSummary`, and the other videos go on. Models are built on first need,
so a rerun that only skips up-to-date videos loads none (its settings hash is remembered in
``<out>/.settings/``). Each video is handled under its :class:`~refineloc_e2e.features.VideoLock`, so
concurrent runs on one cache compute every video once.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from tqdm import tqdm

from refineloc_e2e import __version__
from refineloc_e2e.backbone.weights import expected_sha256, load_manifest
from refineloc_e2e.config import settings_hash, to_dict
from refineloc_e2e.errors import InputError, RefineLocError
from refineloc_e2e.features.cache import (FORMAT_VERSION, VideoLock, assign_video_ids, check_entry, disambiguated_id,
                                          feature_paths, owner_conflict, remove_stale_entry_temps, write_features)
from refineloc_e2e.features.extractor import ExtractConfig, FeatureExtractor
from refineloc_e2e.fileio import atomic_write_json, sha256_file
from refineloc_e2e.video.decode import probe_video

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".gif", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv",
                    ".3gp", ".ts", ".mts", ".ogv"}


def collect_inputs(inputs: Iterable[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files, folders (recursively, video extensions only) and globs, in a stable order.

    Returns ``(videos, failures)``; a missing path or unreadable folder is a failure, not an exception.
    """
    videos: list[Path] = []
    failures: list[tuple[str, str]] = []
    for item in inputs:
        s = str(item)
        p = Path(s)
        if any(c in s for c in "*?[") and not p.exists():
            matches = sorted(glob.glob(s, recursive=True))
            if not matches:
                failures.append((s, "no file matches this pattern"))
            videos.extend(Path(m) for m in matches if Path(m).is_file())
        elif p.is_dir():
            if not os.access(p, os.R_OK | os.X_OK):
                failures.append((s, "directory is not readable (permission denied)"))
                continue
            found, errs = _walk_videos(p)
            failures.extend(errs)
            videos.extend(found)
            if not found and not errs:
                failures.append((s, "folder holds no video file (none with a video extension such as .mp4)"))
        elif p.is_symlink() and not p.exists():
            failures.append((s, f"broken symbolic link (its target {os.readlink(p)} does not exist)"))
        elif not p.exists():
            failures.append((s, "no such file or directory"))
        else:
            videos.append(p)
    seen: set[Path] = set()
    unique = []
    for v in videos:
        key = v.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(v)
    return unique, failures


def _walk_videos(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    found: list[Path] = []
    errs: list[tuple[str, str]] = []

    def onerror(e: OSError) -> None:
        errs.append((str(e.filename), f"directory is not readable ({e.strerror})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return found, errs


@dataclass
class BatchSummary:
    extracted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input path, cause)
    outputs: dict[str, str] = field(default_factory=dict)  # source path -> video_id
    loaded_models: bool = False  # False when every video was skipped or failed before extraction

    @property
    def ok(self) -> bool:
        return not self.failed

    def format(self) -> str:
        lines = [f"extracted {len(self.extracted)}, skipped (up to date) {len(self.skipped)}, failed {len(self.failed)}"]
        lines += [f"  FAILED {p}: {why}" for p, why in self.failed]
        return "\n".join(lines)


def _settings_memo_path(out_dir: Path, cfg: ExtractConfig) -> Path | None:
    """Where the settings hash of ``cfg`` is remembered, keyed by the config and the weights' sha256.

    The real hash comes from the built extractor (its provenance); remembering it lets a rerun that only
    skips decide "up to date" without loading any model. None if a weights spec cannot be resolved cheaply.
    """
    entries = load_manifest()
    shas = {}
    for key in ("rgb_weights", "flow_weights"):
        spec = getattr(cfg, key)
        if spec in entries:
            shas[key] = expected_sha256(entries[spec])
        elif Path(spec).expanduser().is_file():
            shas[key] = sha256_file(Path(spec).expanduser())
        else:
            shas[key] = spec  # a named initialisation (cross-modality-from-rgb): the spec is its identity
        if shas[key] is None:
            return None
    key = settings_hash({"config": to_dict(cfg), "weights_sha256": shas, "format_version": FORMAT_VERSION,
                         "package_version": __version__,
                         "cuda": torch.cuda.is_available()})  # device/backend "auto" resolve by it
    return out_dir / ".settings" / f"{key}.json"


def _read_memo(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("settings_hash")
    except (OSError, ValueError, AttributeError):
        return None  # unreadable memo: the extractor is built and the memo rewritten
    return value if isinstance(value, str) else None


def extract_batch(inputs: Iterable[str | Path], out_dir: str | Path, cfg: ExtractConfig, *,
                  extractor: FeatureExtractor | None = None, progress: bool = True,
                  log: Callable[[str], None] | None = None,
                  on_ready: Callable[[Path, str, np.ndarray, dict[str, Any]], None] | None = None) -> BatchSummary:
    """Extract every input video into ``out_dir``; per-video failures are recorded and logged as
    ``error: <path>: <cause>``, never raised. Set-up errors (output folder, weights) raise.

    Without ``extractor`` the I3D models are built on first need, so a rerun that only skips loads none.
    Each video is handled under its :class:`VideoLock` (concurrent runs compute it once); temp files
    of killed writers of that video are removed first; a cached entry is reused only if it loads with
    its recorded shape and checksum, for the same source content and settings (``check_entry``).
    ``on_ready(video, video_id, features, meta)`` is called for each video whose features are ready
    (extracted now, or up to date in the cache) with the arrays already in memory, so a caller such as
    detect never re-reads what was just written or checked.
    """
    started = time.time()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    out_dir = Path(out_dir)
    summary = BatchSummary()
    videos, failures = collect_inputs(inputs)
    for p, why in failures:
        log(f"error: {p}: {why}")
    summary.failed.extend(failures)
    if not videos:
        return summary
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out_dir}: cannot create the output folder ({e.strerror})") from None
    if not os.access(out_dir, os.W_OK):
        raise InputError(f"{out_dir}: output folder is not writable")
    memo = None if extractor is not None else _settings_memo_path(out_dir, cfg)
    state: dict[str, Any] = {"extractor": extractor,
                             "hash": extractor.settings_hash if extractor is not None else _read_memo(memo)}

    def get_extractor() -> FeatureExtractor:
        if state["extractor"] is None:
            ex = FeatureExtractor(cfg)  # set-up errors (weights missing, bad checksum, ...) propagate
            prov = ex.provenance.get("flow")
            if prov is not None:
                log(f"flow stream initialised from: {prov.get('weights_id')} ({prov.get('init')})")
            if memo is not None:
                atomic_write_json(memo, {"settings_hash": ex.settings_hash, "settings": ex.settings})
            state["extractor"], state["hash"] = ex, ex.settings_hash
            summary.loaded_models = True
        return state["extractor"]

    ids = assign_video_ids(videos)
    bar = tqdm(total=len(videos), desc="extract", unit="video", disable=not progress, file=sys.stderr)

    def fail(video: Path, e: Exception) -> None:
        msg = str(e) if isinstance(e, RefineLocError) else str(getattr(e, "strerror", None) or e)
        line = msg if msg.startswith(f"{video}: ") else f"{video}: {msg}"
        log(f"error: {line}")
        summary.failed.append((str(video), line[len(f"{video}: "):]))

    def process(video: Path, blocking: bool) -> bool:
        vid = ids[video]
        if owner_conflict(out_dir, vid, video):
            vid = disambiguated_id(vid, video)
        lock = VideoLock.for_video(out_dir, vid)
        if not lock.acquire(blocking=blocking):
            return False
        try:
            has_entry = feature_paths(out_dir, vid)[1].exists()
            if has_entry and state["hash"] is None:
                get_extractor()  # no remembered settings hash: the models tell it (set-up errors propagate)
            try:
                remove_stale_entry_temps(out_dir, vid, older_than=started)
                problem, entry = (check_entry(out_dir, vid, source=video, settings_hash=state["hash"])
                                  if has_entry else ("missing", None))
                if problem is None:
                    summary.skipped.append(str(video))
                    summary.outputs[str(video)] = vid
                    if on_ready is not None:
                        on_ready(video, vid, *entry)
                    return True
                if problem.startswith("cached entry unusable"):
                    log(f"note: {video}: re-extracting ({problem})")
                info = probe_video(video)  # cheap; a bad file fails here, before any model is loaded
            except (RefineLocError, OSError) as e:
                fail(video, e)
                return True
            ex = get_extractor()
            try:
                bar.set_postfix_str(video.name[-40:])
                feats, meta = ex.extract(video, info)
                meta = write_features(out_dir, vid, feats, meta)
                summary.extracted.append(str(video))
                summary.outputs[str(video)] = vid
                if on_ready is not None:
                    on_ready(video, vid, feats, meta)
            except (RefineLocError, OSError) as e:
                fail(video, e)
            return True
        finally:
            lock.release()
            bar.update(1)

    deferred = [v for v in videos if not process(v, blocking=False)]  # held by another process
    for video in deferred:  # come back when the other process is done: then usually up to date
        process(video, blocking=True)
    bar.close()
    return summary
