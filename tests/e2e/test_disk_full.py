"""Out of disk in every command that writes: the message names the cause (no space, or the file size limit),
no partial file is left, what was there survives, and a rerun with space equals a clean run. No space is
injected as ``OSError(ENOSPC)`` at the write; the size limit is a real ``RLIMIT_FSIZE`` in a subprocess."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from support import TRAIN_SET, _features_and_annotations, _tmp_files
from refineloc_e2e import fileio
from refineloc_e2e.cli import main

try:
    import resource  # POSIX only
except ImportError:  # Windows: the module is skipped below
    resource = None

CLI = [sys.executable, "-c", "from refineloc_e2e.cli import main; main()"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
NO_SPACE = "cannot write (No space left on device); free some disk space and run again"

pytestmark = [
    pytest.mark.usefixtures("one_thread"),  # shared 2-core machine
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only: no_space_at names the written file "
                       "through /proc/self/fd, and run_limited needs resource.RLIMIT_FSIZE and SIGXFSZ"),
]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def no_space_at(monkeypatch, *names: str) -> None:
    """Every write to a file whose name contains one of ``names`` fails with ENOSPC (what a full disk does)."""
    real = os.fdopen

    def fdopen(fd, *a, **kw):
        f = real(fd, *a, **kw)
        if any(n in os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) for n in names):
            def write(data):
                raise OSError(errno.ENOSPC, "No space left on device")
            f.write = write
        return f

    monkeypatch.setattr(fileio.os, "fdopen", fdopen)


def run_limited(args, limit_bytes: int) -> subprocess.CompletedProcess:
    """The CLI in a subprocess whose files may not grow past ``limit_bytes`` (SIGXFSZ ignored, as the CLI does)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.RLIM_INFINITY))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return subprocess.run([*CLI, *map(str, args)], env=ENV, capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)


def size_limit_error(path: Path, limit_bytes: int) -> str:
    return (f"error: {path}: cannot write (File too large: the file size limit of {limit_bytes} bytes was reached, "
            f"see ulimit -f); raise the limit and run again")


def _strip(its):
    return [{k: v for k, v in e.items() if k not in ("wall_s", "timing", "epoch_s")} for e in its]


def test_a_short_write_without_errno_is_named(tmp_path, monkeypatch):
    """numpy reports a short write as ``N requested and M written``, no errno: the cause is inferred."""
    e = OSError("32768 requested and 16352 written")
    part = tmp_path / "part"
    part.write_bytes(b"x" * 1000)
    monkeypatch.setattr(fileio, "file_size_limit", lambda: 1000)
    assert fileio.write_failure(e, tmp_path, part) == (
        "cannot write (32768 requested and 16352 written: the file size limit of 1000 bytes was reached, see ulimit "
        "-f); raise the limit and run again")
    monkeypatch.setattr(fileio, "file_size_limit", lambda: None)
    monkeypatch.setattr(fileio, "free_bytes", lambda folder: 12288)
    assert fileio.write_failure(e, tmp_path, part) == (
        "cannot write (32768 requested and 16352 written: no space left on device, 12288 bytes free); free some "
        "disk space and run again")
    monkeypatch.setattr(fileio, "free_bytes", lambda folder: 10 << 30)
    assert fileio.write_failure(e, tmp_path, part) == "cannot write (32768 requested and 16352 written)"


# ---- train ----

@pytest.fixture(scope="module")
def clean_train(tmp_path_factory):
    root = tmp_path_factory.mktemp("disk_full_train")
    ann, feats = _features_and_annotations(root)
    r = subprocess.run([*CLI, "train", "--annotations", ann, "--features", feats, "--run-dir", root / "clean",
                        *TRAIN_SET], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return root, ann, feats


@pytest.mark.slow
def test_train_at_the_file_size_limit_then_resume_equals_a_clean_run(clean_train):
    root, ann, feats = clean_train
    cut = root / "limited"
    args = ["train", "--annotations", ann, "--features", feats, "--run-dir", cut, *TRAIN_SET]
    limit = (root / "clean" / "iter_0.pt").stat().st_size // 2  # config.yaml fits, a checkpoint does not
    r = run_limited(args, limit)
    assert (r.returncode, r.stderr.splitlines()[-1]) == (1, size_limit_error(cut / "iter_0.pt", limit)), r.stderr
    assert _tmp_files(cut) == [] and not list(cut.glob("*.pt"))
    r = subprocess.run([*CLI, *map(str, args), "--resume"], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    clean, resumed = (json.loads((d / "metrics.json").read_text()) for d in (root / "clean", cut))
    assert _strip(clean["iterations"]) == _strip(resumed["iterations"])
    assert (cut / "model.pt").read_bytes() == (root / "clean" / "model.pt").read_bytes()


@pytest.mark.parametrize("full", ["model.pt", "metrics.json", "iter_1.pt"])
def test_train_with_no_space_keeps_the_previous_files(tmp_path, monkeypatch, full):
    monkeypatch.chdir(tmp_path)
    ann, feats = _features_and_annotations(tmp_path)
    base = ["train", "--annotations", ann, "--features", feats, "--run-dir", "run", *TRAIN_SET]
    if full == "iter_1.pt":  # while training: iteration 0 is kept, --resume goes on from it
        no_space_at(monkeypatch, "iter_1.pt")
        r = run(*base)
        assert (r.exit_code, r.stderr.splitlines()[-1]) == (1, f"error: run/iter_1.pt: {NO_SPACE}")
        assert sorted(p.name for p in Path("run").glob("iter_*.pt")) == ["iter_0.pt"]
    else:  # a finished run resumed: its model.pt and metrics.json are rewritten; the old ones must survive
        assert run(*base).exit_code == 0
        before = {n: Path("run", n).read_bytes() for n in ("model.pt", "metrics.json")}
        no_space_at(monkeypatch, full)
        r = run(*base, "--resume")
        assert (r.exit_code, r.stderr.splitlines()[-1]) == (1, f"error: run/{full}: {NO_SPACE}")
        assert {n: Path("run", n).read_bytes() for n in before} == before
    assert _tmp_files(tmp_path) == []
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert run(*base, "--resume").exit_code == 0
    assert run(*base[:-len(TRAIN_SET)], "--run-dir", "clean", *TRAIN_SET).exit_code == 0
    a, b = (json.loads(Path(d, "metrics.json").read_text()) for d in ("run", "clean"))
    assert _strip(a["iterations"]) == _strip(b["iterations"])
    assert Path("run/model.pt").read_bytes() == Path("clean/model.pt").read_bytes()


# ---- detect -o and --plot ----

@pytest.fixture
def trained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ann, feats = _features_and_annotations(tmp_path)
    assert run("train", "--annotations", ann, "--features", feats, "--run-dir", "run", *TRAIN_SET).exit_code == 0
    r = run("detect", "--features", feats, "--model", "run/model.pt", "-o", "clean.json", "--plot", "clean-plots", "-q")
    assert r.exit_code == 0, r.output
    return tmp_path, feats


def _results(path) -> dict:
    return json.loads(Path(path).read_text())["results"]


@pytest.mark.parametrize("full", ["out.json", "v3.png"])
def test_detect_with_no_space(trained, monkeypatch, full):
    tmp_path, feats = trained
    args = ["detect", "--features", feats, "--model", "run/model.pt", "-o", "out.json", "--plot", "plots", "-q"]
    no_space_at(monkeypatch, full)
    r = run(*args)
    path = "out.json" if full == "out.json" else "plots/v3.png"
    assert r.exit_code == 1 and f"{path}: {NO_SPACE}" in r.stderr.splitlines()[-1], r.stderr
    assert _tmp_files(tmp_path) == [] and not Path(path).exists()
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert run(*args).exit_code == 0
    assert _results("out.json") == _results("clean.json")
    assert sorted(p.name for p in Path("plots").iterdir()) == sorted(p.name for p in Path("clean-plots").iterdir())


@pytest.mark.slow
def test_detect_plot_at_the_file_size_limit(trained):
    tmp_path, feats = trained
    limit = min(p.stat().st_size for p in (tmp_path / "clean-plots").iterdir()) // 2  # the JSON fits, a PNG not
    assert (tmp_path / "clean.json").stat().st_size < limit
    args = ["detect", "--features", feats, "--model", "run/model.pt", "-o", "out.json", "--plot", "plots", "-q"]
    r = run_limited(args, limit)
    assert r.returncode == 1 and "cannot write (" in r.stderr, r.stderr
    last = r.stderr.splitlines()[-1]
    assert "the file size limit of" in last and last.endswith("; raise the limit and run again"), r.stderr
    assert _tmp_files(tmp_path) == [] and all(p.stat().st_size < limit for p in (tmp_path / "plots").iterdir())
    assert run(*args).exit_code == 0
    assert _results(tmp_path / "out.json") == _results(tmp_path / "clean.json")


# ---- export-features ----

def test_export_features_out_of_space_then_rerun(tmp_path, monkeypatch):
    _, feats = _features_and_annotations(tmp_path)
    assert run("export-features", feats, "-o", tmp_path / "clean", "--layout", "actionformer").exit_code == 0
    no_space_at(monkeypatch, "v4.npy")
    r = run("export-features", feats, "-o", tmp_path / "af", "--layout", "actionformer")
    assert (r.exit_code, r.stderr.splitlines()[-1]) == (1, f"error: {tmp_path / 'af' / 'v4.npy'}: {NO_SPACE}")
    assert _tmp_files(tmp_path) == [] and not (tmp_path / "af" / "v4.npy").exists()
    monkeypatch.undo()
    limit = (tmp_path / "clean" / "v4.npy").stat().st_size // 2
    r = run_limited(["export-features", feats, "-o", tmp_path / "lim", "--layout", "actionformer"], limit)
    assert r.returncode == 1 and r.stderr.splitlines()[-1].startswith(f"error: {tmp_path / 'lim'}/v"), r.stderr
    assert "the file size limit of" in r.stderr and _tmp_files(tmp_path) == []
    assert run("export-features", feats, "-o", tmp_path / "af", "--layout", "actionformer").exit_code == 0
    clean = {p.name: p.read_bytes() for p in (tmp_path / "clean").iterdir()}
    again = {p.name: p.read_bytes() for p in (tmp_path / "af").iterdir()}
    assert again.keys() == clean.keys()
    assert {k: v for k, v in again.items() if k.endswith(".npy")} == {k: v for k, v in clean.items()
                                                                       if k.endswith(".npy")}
    a, c = (json.loads(d["refineloc_export.json"]) for d in (again, clean))
    assert a["actionformer_config"].pop("feat_folder") == str(tmp_path / "af")  # the one difference: the folder
    c["actionformer_config"].pop("feat_folder")
    assert a == c
    assert np.load(tmp_path / "af" / "v4.npy").shape[1] == 16
