"""Where the README says the tool runs (Linux, macOS, Windows), the package imports and ``extract``, ``train`` and
``detect`` run without what only some platforms have: ``signal.SIGXFSZ``, ``signal.SIGKILL``, ``os.statvfs`` and
``os.geteuid`` (not on Windows), ``os.fchmod`` (Windows before Python 3.13), a non-blocking pipe for the stop's wake-up
(``os.set_blocking``: Windows before 3.12) and ``prctl`` (Linux only). Each command runs in a process that
deletes them before ``import refineloc_e2e.cli``, since some are read at import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from support import SMALL_EXTRACT, write_test_video
from refineloc_e2e.features.cache import read_features, write_features

STRIPPED = """
import ctypes, os, signal, sys
for mod, name in ((signal, "SIGXFSZ"), (signal, "SIGKILL"), (os, "statvfs"), (os, "geteuid"), (os, "fchmod"),
                  (os, "set_blocking")):
    delattr(mod, name)
_CDLL = ctypes.CDLL


class _NoOwnSymbols(_CDLL):  # this process's own symbols (where prctl is) cannot be loaded, as off Linux
    def __init__(self, name, *args, **kwargs):
        if name is None:
            raise OSError("no prctl on this platform")
        super().__init__(name, *args, **kwargs)


ctypes.CDLL = _NoOwnSymbols
from refineloc_e2e import fileio, stopping
from refineloc_e2e.cli import main

assert stopping._PRCTL is None and fileio.free_bytes(".") is None  # no prctl; free space unknown
print("stripped:", hasattr(signal, "SIGXFSZ"), hasattr(signal, "SIGKILL"), hasattr(os, "statvfs"), file=sys.stderr)
main(sys.argv[1:], prog_name="refineloc-e2e")
"""


def _run(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-c", STRIPPED, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.stderr.startswith("stripped: False False False\n"), r.stderr  # the platform is as described
    return r


def _generated(root: Path, dim: int = 32) -> tuple[Path, Path]:
    """12 videos of generated features (two classes, one action each) and their ActivityNet-style annotations."""
    rng = np.random.default_rng(0)
    protos = rng.normal(size=(2, dim)).astype(np.float32) * 3
    db = {}
    for i in range(12):
        vid, T, c = f"vid{i:02d}", 30, i % 2
        x = rng.normal(size=(T, dim)).astype(np.float32)
        x[10:20] += protos[c]
        write_features(root / "feats", vid, x, {"fps": 25.0, "snippet_frames": 16, "streams": ["rgb"],
                                                "backbone": {}, "duration_s": T * 16 / 25})
        db[vid] = {"subset": "training" if i < 8 else "validation", "duration": T * 16 / 25,
                   "annotations": [{"label": f"Class{c}", "segment": [10 * 0.64, 20 * 0.64]}]}
    ann = root / "ann.json"
    ann.write_text(json.dumps({"name": "toy", "taxonomy": ["Class0", "Class1"], "database": db}))
    return ann, root / "feats"


def test_extract_train_detect_without_the_posix_and_linux_only_parts(tmp_path, real_weights, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # shared 2-core machine
    write_test_video(tmp_path / "v.mp4", n=40)
    r = _run("extract", "v.mp4", "-o", "out", *SMALL_EXTRACT, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    feats, meta = read_features(tmp_path / "out", "v")
    assert feats.shape[0] == meta["n_snippets"] >= 2

    ann, gen = _generated(tmp_path)
    r = _run("train", "--annotations", ann, "--features", gen, "--run-dir", "run", "--config", "demo",
             "--set", "head.feature_dim=32", "--set", "train.epochs=2", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "model.pt").is_file()

    r = _run("detect", "--features", gen, "--model", tmp_path / "run" / "model.pt", "-o", "p.json", "-q",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert set(json.loads((tmp_path / "p.json").read_text())["results"]) == {f"vid{i:02d}" for i in range(12)}
