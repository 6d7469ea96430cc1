"""The feature cache: ``<dir>/<video_id>.npy`` (float32 [n_snippets, dim]) + ``<dir>/<video_id>.json`` (metadata).

``video_id`` is the file's own name in any script (``refineloc_e2e.ids``), with a suffix where two inputs
would share one (:func:`assign_video_ids`); entries older versions named otherwise (every character outside
``[A-Za-z0-9._-]`` as ``_``) are carried over on the next extraction (:func:`migrate_legacy_entry`).

A cache entry describes itself: the JSON records the source video's identity (resolved path, size, mtime,
sha256), every setting that changes the numbers (hashed into ``settings_hash``), each stream's weights
and how they were initialised, the time base (fps, snippet_frames) and the array's shape and sha256.

Write order: the ``.npy`` first, then the ``.json``, each atomically (temp file + rename). The JSON is the
commit marker: an entry is only valid when the JSON exists, its format version is current and the array's
shape and checksum agree with it. A killed writer can leave at most a stale pair, never half a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from refineloc_e2e import __version__
from refineloc_e2e.errors import CacheError
from refineloc_e2e.fileio import atomic_save_npy, atomic_write_json, remove_stale_temps, sha256_file
from refineloc_e2e.ids import collision_key, index_by_id, one_per_id, suffixed_id, video_id_of
from refineloc_e2e.progress import log_lines

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_LEGACY_UNSAFE = re.compile(r"[^A-Za-z0-9._\-]+")  # ids before Unicode ids: each run of other characters -> "_"


def feature_paths(features_dir: str | Path, video_id: str) -> tuple[Path, Path]:
    d = Path(features_dir)
    return d / f"{video_id}.npy", d / f"{video_id}.json"


def cache_index(features_dir: str | Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``({video id: the stem of its files}, {video id: every stem that gives it, where several do})`` for the
    entries (``<stem>.json``) in ``features_dir``, in id order (``ids.index_by_id``).

    The stem is the id for every entry written here; it differs only for files another tool named, e.g. a
    decomposed (NFD) name copied from macOS, which is then found under its NFC id. Where two stems give one
    id, the one taken follows ``ids.TAKEN_RULE`` (the stem that is the id itself, else the first)."""
    found, shared = index_by_id(_entry_stems(features_dir))
    return dict(sorted(found.items())), shared


def _entry_stems(features_dir: str | Path) -> list[str]:
    return sorted(p.stem for p in Path(features_dir).glob("*.json"))


def cached_ids(features_dir: str | Path, *, log: Callable[[str], None] | None = None) -> dict[str, str]:
    """{video id: the stem of its files} (:func:`cache_index`), with one warning per id that several entries
    give, naming them all and the one taken. Training, where taking one would be a guess, reads
    :func:`cache_index` and refuses instead."""
    found = one_per_id(_entry_stems(features_dir), "cache entries", log or log_lines(logger), where=str(features_dir))
    return dict(sorted(found.items()))


def array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def write_features(features_dir: str | Path, video_id: str, array: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
    """Atomically write ``array`` (float32 [T, D]) and its metadata; fills n_snippets, dim, format fields.

    Returns the metadata as written."""
    array = np.asarray(array)
    if array.ndim != 2:
        raise CacheError(f"{video_id}: features must be 2-D [n_snippets, dim], got shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    npy_path, json_path = feature_paths(features_dir, video_id)
    meta = dict(meta)
    meta.update(
        format_version=FORMAT_VERSION,
        video_id=video_id,
        n_snippets=int(array.shape[0]),
        dim=int(array.shape[1]),
        array_sha256=array_sha256(array),
    )
    meta.setdefault("package_version", __version__)
    atomic_save_npy(npy_path, array)
    atomic_write_json(json_path, meta)
    return meta


def read_meta(features_dir: str | Path, video_id: str) -> dict[str, Any]:
    """The metadata of a cache entry; CacheError if missing, unreadable or from another format version."""
    _, json_path = feature_paths(features_dir, video_id)
    if not json_path.is_file():
        raise CacheError(f"{json_path}: no feature metadata (features for '{video_id}' were never extracted "
                         f"or their extraction did not finish)")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CacheError(f"{json_path}: unreadable feature metadata ({e}); delete it to re-extract") from None
    if not isinstance(meta, dict):
        raise CacheError(f"{json_path}: feature metadata is not a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CacheError(f"{json_path}: feature metadata format {version!r} is not the current format "
                         f"{FORMAT_VERSION}; re-extract this video")
    return meta


def read_features(features_dir: str | Path, video_id: str, *, verify: bool = True) -> tuple[np.ndarray, dict]:
    """Load a cache entry: (float32 [n_snippets, dim], metadata). CacheError names the file and the problem."""
    meta = read_meta(features_dir, video_id)
    npy_path, json_path = feature_paths(features_dir, video_id)
    try:
        array = np.load(npy_path, allow_pickle=False)
    except FileNotFoundError:
        raise CacheError(f"{npy_path}: feature array missing (metadata {json_path.name} exists); re-extract") from None
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise CacheError(f"{npy_path}: holds pickled Python objects, refused (feature files are plain "
                             f"float32 arrays; loading pickles could run code); re-extract") from None
        raise CacheError(f"{npy_path}: truncated or corrupt feature array ({e}); re-extract") from None
    except (OSError, EOFError) as e:
        raise CacheError(f"{npy_path}: truncated or corrupt feature array ({e}); re-extract") from None
    expected = (meta.get("n_snippets"), meta.get("dim"))
    if array.ndim != 2 or tuple(array.shape) != expected:
        raise CacheError(f"{npy_path}: shape {tuple(array.shape)} does not match its metadata "
                         f"[n_snippets, dim] = {list(expected)}; re-extract")
    if array.dtype != np.float32:
        raise CacheError(f"{npy_path}: dtype {array.dtype}, expected float32")
    if verify and meta.get("array_sha256") and array_sha256(array) != meta["array_sha256"]:
        raise CacheError(f"{npy_path}: content does not match the checksum in {json_path.name}; re-extract")
    return array, meta


def source_identity(path: str | Path, *, with_sha256: bool = True) -> dict[str, Any]:
    """Identity of a source video: resolved path, size, mtime_ns and (optionally) content sha256."""
    p = Path(path)
    st = p.stat()
    ident: dict[str, Any] = {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if with_sha256:
        ident["sha256"] = sha256_file(p)
    return ident


def check_entry(features_dir: str | Path, video_id: str, *, source: str | Path, settings_hash: str
                ) -> tuple[str | None, tuple[np.ndarray, dict[str, Any]] | None]:
    """``(None, (array, meta))`` if a valid entry exists for this very source content and these settings,
    else ``(why not, None)``.

    Valid: current format, the array loads with the shape and checksum its metadata records (so a
    truncated or corrupt ``.npy`` is re-extracted, never skipped), the same ``settings_hash``, and the
    same source: size and mtime equal -> same content (no re-hash); otherwise the content sha256
    decides, so a touched but unchanged file is not re-extracted. ``"missing"`` when there is no entry.
    The loaded entry is handed back so that a caller never reads it twice.
    """
    _, json_path = feature_paths(features_dir, video_id)
    if not json_path.exists():
        return "missing", None
    try:
        array, meta = read_features(features_dir, video_id)
    except CacheError as e:
        return f"cached entry unusable: {e}", None
    if meta.get("settings_hash") != settings_hash:
        return "cached with other settings", None
    if source_matches(meta, source):
        return None, (array, meta)
    return "source video changed", None


def source_matches(meta: dict[str, Any], source: str | Path) -> bool:
    """Whether an entry's recorded source is this very content: size and mtime equal -> same content (no
    re-hash); otherwise the content sha256 decides, so a touched but unchanged file still matches."""
    old = meta.get("source", {})
    now = source_identity(source, with_sha256=False)
    if old.get("size") != now["size"]:
        return False
    return old.get("mtime_ns") == now["mtime_ns"] or old.get("sha256") == sha256_file(source)


def entry_problem(features_dir: str | Path, video_id: str, *, source: str | Path, settings_hash: str) -> str | None:
    """None if a valid entry exists for this very source content and these settings, else why not
    (see :func:`check_entry`)."""
    return check_entry(features_dir, video_id, source=source, settings_hash=settings_hash)[0]


def is_up_to_date(features_dir: str | Path, video_id: str, *, source: str | Path, settings_hash: str) -> bool:
    """True if a valid entry exists for this very source content and these settings (see :func:`entry_problem`)."""
    return entry_problem(features_dir, video_id, source=source, settings_hash=settings_hash) is None


def remove_stale_entry_temps(features_dir: str | Path, video_id: str, *, older_than: float) -> list[Path]:
    """Remove temp files of ``video_id``'s ``.npy``/``.json`` left by killed writers (call under its VideoLock)."""
    removed = []
    for path in feature_paths(features_dir, video_id):
        removed += remove_stale_temps(path, older_than=older_than)
    return removed


def assign_video_ids(paths: list[Path], *, log: Callable[[str], None] | None = None) -> dict[Path, str]:
    """video_id = :func:`refineloc_e2e.ids.video_id_of` (the file stem, Unicode kept; THUMOS/ActivityNet ids
    are stems); ids shared by several inputs, also ids that differ only in case (one file on macOS and
    Windows), get a suffix from their resolved folder so two ``clip.mp4`` in different folders never
    overwrite each other (from their resolved path when two of them share a folder). The suffixed id keeps to
    the id's byte budget (``ids.suffixed_id``), and one note per shared id names the videos and their ids."""
    log = log or log_lines(logger)
    base = {p: video_id_of(p) for p in paths}
    by_key: dict[str, list[Path]] = {}
    for p in paths:
        by_key.setdefault(collision_key(base[p]), []).append(p)
    ids: dict[Path, str] = {}
    for group in by_key.values():
        if len(group) == 1:
            ids[group[0]] = base[group[0]]
            continue
        parents = [str(p.resolve().parent) for p in group]
        same_folder = len(set(parents)) < len(parents)  # e.g. 'e\u0301.mp4' and '\u00e9.mp4' (NFD, NFC): one id
        for p, parent in zip(group, parents):
            key = str(p.resolve()) if same_folder else parent
            ids[p] = suffixed_id(base[p], _short_hash(key))
        shared = sorted({base[p] for p in group})
        what = (f"the video id '{shared[0]}'" if len(shared) == 1 else
                f"one file name on macOS and Windows ({' and '.join(repr(v) for v in shared)} differ only in case)")
        log(f"note: videos {' and '.join(str(p) for p in group)} would share {what}; written as "
            f"{' and '.join(repr(ids[p]) for p in group)}")
    return ids


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", errors="surrogateescape")).hexdigest()[:8]


def _suffixes(source: Path) -> list[str]:
    """The collision suffixes :func:`assign_video_ids` and :func:`disambiguated_id` may give ``source``: a hash of
    its resolved folder, or of its resolved path."""
    resolved = source.resolve()
    return [_short_hash(str(resolved.parent)), _short_hash(str(resolved))]


def legacy_ids(source: str | Path) -> list[str]:
    """The ids that earlier versions gave ``source`` and the current one never gives it: before Unicode ids
    (0.2: every run of characters outside ``[A-Za-z0-9._-]`` as ``_``, never cut), and 0.3's suffixed ids over
    :data:`~refineloc_e2e.ids.MAX_ID_BYTES` (a long name's id plus its collision suffix, not cut again). Empty
    for names that were safe then, e.g. ``video_test_0000004.mp4``."""
    source = Path(source)
    base, suffixes = video_id_of(source), _suffixes(source)
    current = {base, *(suffixed_id(base, h) for h in suffixes)}
    before = _LEGACY_UNSAFE.sub("_", source.stem) or "video"
    old = [before, *(f"{before}-{h}" for h in suffixes), *(f"{base}-{h}" for h in suffixes)]
    return list(dict.fromkeys(vid for vid in old if vid not in current))


def _remove_pair(features_dir: str | Path, vid: str) -> None:
    for path in feature_paths(features_dir, vid):
        path.unlink(missing_ok=True)


def migrate_legacy_entry(features_dir: str | Path, video_id: str, source: str | Path) -> list[str]:
    """Carry an entry that an older version wrote under one of ``source``'s :func:`legacy_ids` over to
    ``video_id`` (call under ``video_id``'s lock, before checking its entry); returns one note per change.

    An old entry whose recorded source path is ``source`` is renamed to ``video_id`` (the array, then the JSON
    with its ``video_id`` updated, then the old JSON removed: the JSON stays the commit marker), or removed
    when ``video_id`` already has one. One whose recorded source no longer exists is removed (its video is
    gone; ``source`` is extracted as usual). One made from another file that still exists is left to that file.
    Imported features (no source video) are never touched. Nothing is left duplicated."""
    here = str(Path(source).resolve())
    notes = []
    for old in legacy_ids(source):
        old_npy, old_json = feature_paths(features_dir, old)
        try:
            meta = json.loads(old_json.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        recorded = (meta.get("source") or {}).get("path") if isinstance(meta, dict) else None
        if not isinstance(recorded, str) or meta.get("origin") == "imported":
            continue
        new_npy, new_json = feature_paths(features_dir, video_id)
        try:
            if recorded == here and not new_json.exists() and old_npy.exists():
                os.replace(old_npy, new_npy)
                atomic_write_json(new_json, {**meta, "video_id": video_id})
                old_json.unlink()
                notes.append(f"note: {source}: cache entry '{old}' renamed to '{video_id}' (ids keep the file's name)")
            elif recorded == here:
                _remove_pair(features_dir, old)
                notes.append(f"note: {source}: removed the old cache entry '{old}' (superseded by '{video_id}')")
            elif not os.path.exists(recorded):
                _remove_pair(features_dir, old)
                notes.append(f"note: {source}: removed the old cache entry '{old}' (made from {recorded}, which "
                             f"is gone)")
        except OSError as e:
            notes.append(f"note: {source}: could not carry the old cache entry '{old}' over to '{video_id}' "
                         f"({e.strerror or e})")
    return notes


def owner_conflict(features_dir: str | Path, video_id: str, source: str | Path) -> str | None:
    """The source path of an existing entry under ``video_id`` that was made from a different file, else None."""
    try:
        meta = read_meta(features_dir, video_id)
    except CacheError:
        return None
    old_path = meta.get("source", {}).get("path")
    return old_path if old_path and old_path != str(Path(source).resolve()) else None


def disambiguated_id(video_id: str, source: str | Path) -> str:
    """The id ``source`` moves to when ``video_id``'s entry was made from another file: a suffix from its
    resolved folder, as :func:`assign_video_ids` gives, within the id's byte budget (``ids.suffixed_id``)."""
    return suffixed_id(video_id, _short_hash(str(Path(source).resolve().parent)))


@dataclass
class VideoLock:
    """An exclusive per-video lock file (``<video_id>.lock``) so concurrent runs compute each video once."""

    path: Path
    _fd: int | None = None

    @classmethod
    def for_video(cls, features_dir: str | Path, video_id: str) -> "VideoLock":
        return cls(Path(features_dir) / ".locks" / f"{video_id}.lock")

    def acquire(self, blocking: bool) -> bool:
        import fcntl  # POSIX only: imported where used so that the rest of the cache works without it

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        import fcntl  # POSIX only (see acquire)

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
