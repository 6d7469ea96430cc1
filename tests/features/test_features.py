import json
import os

import numpy as np
import pytest

from refineloc_e2e.errors import CacheError
from refineloc_e2e.features.cache import (FORMAT_VERSION, VideoLock, assign_video_ids, feature_paths, is_up_to_date,
                                    read_features, source_identity, write_features)


def _write(tmp_path, vid="v1", T=5, D=8, **meta):
    src = tmp_path / f"{vid}.mp4"
    src.write_bytes(b"video bytes " + vid.encode())
    arr = np.arange(T * D, dtype=np.float32).reshape(T, D)
    write_features(tmp_path / "feats", vid, arr, {"source": source_identity(src), "settings_hash": "h1",
                                                  "fps": 25.0, "snippet_frames": 16, **meta})
    return src, arr


def test_round_trip(tmp_path):
    _, arr = _write(tmp_path)
    back, meta = read_features(tmp_path / "feats", "v1")
    np.testing.assert_array_equal(back, arr)
    assert meta["n_snippets"] == 5 and meta["dim"] == 8 and meta["format_version"] == FORMAT_VERSION


def test_missing_entry_message(tmp_path):
    with pytest.raises(CacheError, match=r"nope.json: no feature metadata \(features for 'nope' were never extracted"):
        read_features(tmp_path, "nope")


def test_truncated_npy_is_detected(tmp_path):
    _write(tmp_path)
    npy, _ = feature_paths(tmp_path / "feats", "v1")
    data = npy.read_bytes()
    npy.write_bytes(data[: len(data) // 2])
    with pytest.raises(CacheError, match=r"v1.npy: truncated or corrupt feature array"):
        read_features(tmp_path / "feats", "v1")


def test_tampered_content_is_detected(tmp_path):
    _write(tmp_path)
    npy, _ = feature_paths(tmp_path / "feats", "v1")
    arr = np.load(npy)
    arr[0, 0] += 1
    np.save(npy, arr)
    with pytest.raises(CacheError, match="content does not match the checksum"):
        read_features(tmp_path / "feats", "v1")


def test_older_format_is_rejected(tmp_path):
    _write(tmp_path)
    _, js = feature_paths(tmp_path / "feats", "v1")
    meta = json.loads(js.read_text())
    meta["format_version"] = 0
    js.write_text(json.dumps(meta))
    with pytest.raises(CacheError, match=r"v1.json: feature metadata format 0 is not the current format 1; re-extract"):
        read_features(tmp_path / "feats", "v1")


def test_up_to_date_rules(tmp_path):
    src, _ = _write(tmp_path)
    feats = tmp_path / "feats"
    assert is_up_to_date(feats, "v1", source=src, settings_hash="h1")
    assert not is_up_to_date(feats, "v1", source=src, settings_hash="h2")  # a setting changed
    os.utime(src, ns=(1, 1))  # touched, same content -> still up to date (sha256 decides)
    assert is_up_to_date(feats, "v1", source=src, settings_hash="h1")
    src.write_bytes(b"other content!!!!!!!!")  # changed content -> stale
    assert not is_up_to_date(feats, "v1", source=src, settings_hash="h1")


def test_same_stem_in_different_folders_gets_distinct_ids(tmp_path):
    a, b, c = tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4", tmp_path / "b" / "other.mp4"
    ids = assign_video_ids([a, b, c])
    assert ids[c] == "other"
    assert ids[a] != ids[b] and ids[a].startswith("clip-") and ids[b].startswith("clip-")


def test_lock_is_exclusive(tmp_path):
    first, second = VideoLock.for_video(tmp_path, "v"), VideoLock.for_video(tmp_path, "v")
    assert first.acquire(blocking=False)
    assert not second.acquire(blocking=False)
    first.release()
    assert second.acquire(blocking=False)
    second.release()
