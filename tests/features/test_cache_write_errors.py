"""Feature-cache writes under failure (split from test_hardening.py): stale temp files of dead writers, a full
disk reported per video while the batch goes on.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from support import _tmp_files, write_test_video
from refineloc_e2e import fileio
from refineloc_e2e.features.batch import extract_batch
from refineloc_e2e.config import load_config
from refineloc_e2e.features.extractor import ExtractConfig
from refineloc_e2e.features.cache import read_features, source_identity

pytestmark = pytest.mark.usefixtures("one_thread")  # shared 2-core machine


def test_remove_stale_temps_only_touches_dead_writers(tmp_path):
    target = tmp_path / "v.npy"
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".v.npy.{dead.pid}-abc.tmp"
    live = tmp_path / f".v.npy.{os.getpid()}-def.tmp"  # a concurrent writer (this very process)
    fresh_dead = tmp_path / f".v.npy.{dead.pid}-ghi.tmp"  # written after the run started: left alone
    other = tmp_path / f".w.npy.{dead.pid}-abc.tmp"  # another target's temp
    for p in (stale, live, other):
        p.write_bytes(b"partial")
        os.utime(p, (time.time() - 60, time.time() - 60))
    fresh_dead.write_bytes(b"partial")
    assert fileio.remove_stale_temps(target, older_than=time.time() - 30) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, fresh_dead, other))
    # the atomic writer names its temp after its pid, in the target folder, and leaves nothing behind
    fileio.atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~fileio._umask()


class FakeExtractor:
    """Stands in for the I3D extractor in batch tests (no weights): [3, 8] features per video."""

    settings_hash = "fake-settings"
    provenance: dict = {}

    def __init__(self):
        self.calls: list[str] = []

    def extract(self, path, info=None):
        self.calls.append(Path(path).name)
        feats = np.random.default_rng(len(self.calls)).normal(size=(3, 8)).astype(np.float32)  # (T, D)
        return feats, {"source": source_identity(path), "settings_hash": self.settings_hash, "fps": 25.0,
                       "snippet_frames": 16, "streams": ["rgb"], "duration_s": 0.32}


@pytest.mark.parametrize("failing", ["b.npy", "b.json"])
def test_disk_full_is_reported_and_the_batch_goes_on(tmp_path, monkeypatch, failing):
    videos = [write_test_video(tmp_path / f"{n}.mp4", n=4) for n in "abc"]
    out = tmp_path / "feats"
    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(out / f".{failing}.")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    lines: list[str] = []
    summary = extract_batch(videos, out, load_config(ExtractConfig), extractor=FakeExtractor(), progress=False,
                            log=lines.append)
    cause = f"{out}/{failing}: cannot write (No space left on device); free some disk space and run again"
    assert lines == [f"error: {videos[1]}: {cause}"]
    assert summary.failed == [(str(videos[1]), cause)]
    assert summary.extracted == [str(videos[0]), str(videos[2])]
    assert summary.format().splitlines()[-1] == f"  FAILED {videos[1]}: {cause}"
    assert _tmp_files(out) == [] and not (out / "b.json").exists()
    assert (out / "b.npy").exists() == (failing == "b.json")  # the array may land; without its JSON it is no entry
    monkeypatch.setattr(fileio.os, "fsync", real_fsync)
    fake = FakeExtractor()
    again = extract_batch(videos, out, load_config(ExtractConfig), extractor=fake, progress=False, log=lines.append)
    assert (fake.calls, len(again.skipped), again.ok) == (["b.mp4"], 2, True)
    assert read_features(out, "b")[0].shape == (3, 8)
