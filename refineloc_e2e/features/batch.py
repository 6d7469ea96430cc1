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
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from refineloc_e2e import __version__
from refineloc_e2e.backbone.weights import expected_sha256, load_manifest
from refineloc_e2e.config import settings_hash, to_dict
from refineloc_e2e.device import configure_cpu_math
from refineloc_e2e.errors import InputError, RefineLocError
from refineloc_e2e.features.cache import (FORMAT_VERSION, VideoLock, assign_video_ids, check_entry, disambiguated_id,
                                          feature_paths, migrate_legacy_entry, owner_conflict,
                                          remove_stale_entry_temps, write_features)
from refineloc_e2e.features.extractor import ExtractConfig, FeatureExtractor
from refineloc_e2e.fileio import atomic_write_json, sha256_file
from refineloc_e2e.progress import Progress, log_lines
from refineloc_e2e.video.flow import resolve_backend
from refineloc_e2e.video.decode import probe_video

logger = logging.getLogger(__name__)


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
    model_builds: int = 0  # processes that built the I3D models (one per Ray worker that extracted)
    per_node: dict[str, int] = field(default_factory=dict)  # on a Ray cluster: node -> videos it handled

    @property
    def ok(self) -> bool:
        return not self.failed

    def format(self) -> str:
        lines = [f"extracted {len(self.extracted)}, skipped (up to date) {len(self.skipped)}, failed {len(self.failed)}"]
        lines += [f"  FAILED {p}: {why}" for p, why in self.failed]
        if self.per_node:
            lines.append("  per node: " + ", ".join(f"{n} {k}" for n, k in sorted(self.per_node.items())))
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
    cuda = torch.cuda.is_available()  # device/backend "auto" resolve by it
    device_type = "cuda" if cfg.device.startswith("cuda") or (cfg.device == "auto" and cuda) else "cpu"
    key = settings_hash({"config": to_dict(cfg), "weights_sha256": shas, "format_version": FORMAT_VERSION,
                         "package_version": __version__, "cuda": cuda,
                         # the backend "auto" picks (its rule changed once: OpenCV -> torch on the CPU)
                         "flow_backend": resolve_backend(cfg.flow, device_type).backend})
    return out_dir / ".settings" / f"{key}.json"


def _read_memo(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("settings_hash")
    except (OSError, ValueError, AttributeError):
        return None  # unreadable memo: the extractor is built and the memo rewritten
    return value if isinstance(value, str) else None


class LazyExtractor:
    """The I3D extractor of one config for one cache folder, built on first need, so that a rerun that only
    skips loads no model; its settings hash is known without building it when remembered in the memo.

    Used by :func:`extract_batch` (one per run) and by ``features.ray_task`` (one per worker process,
    reused by every video that process handles). ``log`` receives the flow-initialisation note once.
    """

    def __init__(self, cfg: ExtractConfig, out_dir: Path, *, extractor: FeatureExtractor | None = None,
                 log: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.log = log or (lambda msg: None)
        self.memo = None if extractor is not None else _settings_memo_path(out_dir, cfg)
        self.extractor = extractor
        self.settings_hash = extractor.settings_hash if extractor is not None else _read_memo(self.memo)
        self.built = False  # this object built the models (summary.loaded_models)

    def get(self) -> FeatureExtractor:
        """The extractor; set-up errors (weights missing, bad checksum, ...) propagate."""
        if self.extractor is None:
            ex = FeatureExtractor(self.cfg)
            prov = ex.provenance.get("flow")
            if prov is not None:
                self.log(f"flow stream initialised from: {prov.get('weights_id')} ({prov.get('init')})")
            if self.memo is not None:
                atomic_write_json(self.memo, {"settings_hash": ex.settings_hash, "settings": ex.settings})
            self.extractor, self.settings_hash, self.built = ex, ex.settings_hash, True
        return self.extractor


@dataclass
class VideoOutcome:
    """What became of one video in :func:`process_video`.

    ``status``: ``extracted`` | ``skipped`` (up to date) | ``failed`` (``cause`` says why) | ``busy`` (another
    run holds its lock; only when not blocking) | ``cancelled`` (a Ray batch stopped by its driver before or while
    extracting it; nothing written). ``features`` (float32 [n_snippets, dim]) and ``meta`` are
    set for extracted and skipped videos; ``notes`` are log lines for the caller (e.g. why it re-extracts).
    """
    video: str
    video_id: str
    status: str
    cause: str | None = None
    features: np.ndarray | None = None
    meta: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return float((self.meta or {}).get("duration_s") or 0.0)


def _cause(video: Path, e: Exception) -> str:
    msg = str(e) if isinstance(e, RefineLocError) else str(getattr(e, "strerror", None) or e)
    return msg[len(f"{video}: "):] if msg.startswith(f"{video}: ") else msg


def process_video(video: Path, video_id: str, out_dir: Path, source: LazyExtractor, *, started: float,
                  blocking: bool, before_extract: Callable[[], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> VideoOutcome:
    """One video into the cache under its :class:`VideoLock`: skip it if up to date, else extract it.

    The cache rules in one place, for one process or a cluster: an existing entry under ``video_id`` made
    from another source moves this video to a disambiguated id; an entry an older version wrote under another
    id is carried over (``migrate_legacy_entry``); temp files of killed writers older than
    ``started`` (a ``time.time()``) are removed first; an entry is reused only if ``check_entry`` accepts
    it; features are written atomically, JSON last. A per-video failure (corrupt file, disk full) is
    returned as ``failed`` with its cause, never raised; set-up errors (weights) raise. ``should_stop``: polled
    by the extractor once a snippet; when it turns True, ``errors.Cancelled`` is raised (nothing written).
    """
    vid, notes = video_id, []
    other = owner_conflict(out_dir, vid, video)
    if other:
        vid = disambiguated_id(vid, video)
        notes.append(f"note: {video} shares the video id '{video_id}' with {other}, whose cache entry it is; "
                     f"{video} is written as '{vid}'")
    lock = VideoLock.for_video(out_dir, vid)
    if not lock.acquire(blocking=blocking):
        return VideoOutcome(str(video), vid, "busy")
    try:
        notes += migrate_legacy_entry(out_dir, vid, video)  # an entry an older version named otherwise
        has_entry = feature_paths(out_dir, vid)[1].exists()
        if has_entry and source.settings_hash is None:
            source.get()  # no remembered settings hash: the models tell it (set-up errors propagate)
        try:
            remove_stale_entry_temps(out_dir, vid, older_than=started)
            problem, entry = (check_entry(out_dir, vid, source=video, settings_hash=source.settings_hash)
                              if has_entry else ("missing", None))
            if problem is None:
                return VideoOutcome(str(video), vid, "skipped", features=entry[0], meta=entry[1], notes=notes)
            if problem.startswith("cached entry unusable"):
                notes.append(f"note: {video}: re-extracting ({problem})")
            info = probe_video(video)  # cheap; a bad file fails here, before any model is loaded
        except (RefineLocError, OSError) as e:
            return VideoOutcome(str(video), vid, "failed", cause=_cause(video, e), notes=notes)
        ex = source.get()
        ex.should_stop = should_stop
        try:
            if before_extract is not None:
                before_extract()
            feats, meta = ex.extract(video, info)
            meta = write_features(out_dir, vid, feats, meta)
        except (RefineLocError, OSError) as e:
            return VideoOutcome(str(video), vid, "failed", cause=_cause(video, e), notes=notes)
        return VideoOutcome(str(video), vid, "extracted", features=feats, meta=meta, notes=notes)
    finally:
        lock.release()


def prepare_out_dir(out_dir: Path) -> None:
    """Create the output folder; InputError if it cannot be created or written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out_dir}: cannot create the output folder ({e.strerror})") from None
    if not os.access(out_dir, os.W_OK):
        raise InputError(f"{out_dir}: output folder is not writable")


def record(summary: BatchSummary, outcome: VideoOutcome, log: Callable[[str], None],
           on_ready: Callable[[Path, str, np.ndarray, dict[str, Any]], None] | None) -> None:
    """Log ``outcome``'s notes and failure, add it to ``summary``, hand ready features to ``on_ready``."""
    for note in outcome.notes:
        log(note)
    if outcome.status == "failed":
        log(f"error: {outcome.video}: {outcome.cause}")
        summary.failed.append((outcome.video, outcome.cause or ""))
        return
    (summary.extracted if outcome.status == "extracted" else summary.skipped).append(outcome.video)
    summary.outputs[outcome.video] = outcome.video_id
    if on_ready is not None:
        on_ready(Path(outcome.video), outcome.video_id, outcome.features, outcome.meta)


def begin_batch(inputs: Iterable[str | Path], out_dir: Path, log: Callable[[str], None]
                ) -> tuple[BatchSummary, list[Path]]:
    """Expand the inputs (each bad one logged and recorded as failed) and, if any video is left, prepare
    ``out_dir``: the start every batch runner shares."""
    summary = BatchSummary()
    videos, failures = collect_inputs(inputs)
    for p, why in failures:
        log(f"error: {p}: {why}")
    summary.failed.extend(failures)
    if videos:
        prepare_out_dir(out_dir)
    return summary, videos


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
    detect never re-reads what was just written or checked. ``features.distributed.extract_batch_ray``
    does the same across a Ray cluster.
    """
    configure_cpu_math()  # as the CLI, flow workers and Ray tasks: the same features whoever extracts them
    started = time.time()
    log = log or log_lines(logger)
    out_dir = Path(out_dir)
    summary, videos = begin_batch(inputs, out_dir, log)
    if not videos:
        return summary
    source = LazyExtractor(cfg, out_dir, extractor=extractor, log=log)
    ids = assign_video_ids(videos, log=log)
    bar = Progress(len(videos), desc="extract", unit="video", enabled=progress)

    def process(video: Path, blocking: bool) -> bool:
        busy = False
        try:
            outcome = process_video(video, ids[video], out_dir, source, started=started, blocking=blocking,
                                    before_extract=lambda: bar.note(video.name[-40:]))
            busy = outcome.status == "busy"
        finally:
            if not busy:  # a video held by another run is counted when it comes back
                bar.update(1, note=video.name[-40:])
        if busy:
            return False
        record(summary, outcome, log, on_ready)
        return True

    deferred = [v for v in videos if not process(v, blocking=False)]  # held by another process
    for video in deferred:  # come back when the other process is done: then usually up to date
        process(video, blocking=True)
    bar.close()
    summary.loaded_models, summary.model_builds = source.built, int(source.built)
    return summary
