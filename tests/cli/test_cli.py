"""The click layer: every command has help; user errors are one exact line + exit 1 (no traceback)."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import click
from click.testing import CliRunner

from support import SMALL_EXTRACT
from refineloc_e2e.features import batch as batch_mod
from refineloc_e2e.cli import main
from refineloc_e2e.training.tensorboard_log import HAVE_TENSORBOARD


def _commands(group: click.Group, prefix=()):
    for name, cmd in sorted(group.commands.items()):
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))


def run(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kw)


def test_every_command_has_help():
    names = []
    for path, cmd in _commands(main):
        result = run(*path, "--help")
        assert result.exit_code == 0, path
        assert cmd.help and cmd.help.strip(), f"{' '.join(path)} has no help text"
        assert "Usage: main " + " ".join(path) in result.output
        names.append(" ".join(path))
    assert {"extract", "classify", "train", "detect", "evaluate", "import-wtalc", "import-features",
            "export-features", "demo", "doctor",
            "weights", "weights list", "weights fetch"} <= set(names)
    assert run("--help").exit_code == 0 and run("--version").output.startswith("refineloc-e2e, version ")


def test_extract_input_errors_exact(tmp_path, monkeypatch):
    """Missing path, non-video file, zero-byte file, unreadable folder, broken link, empty folder,
    a folder named like a video: one exact line each, the batch goes on, summary, exit 1. No input
    here needs a model, so none is loaded (the rgb weights are not even looked at)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REFINELOC_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    Path("notes.txt").write_text("not a video\n")
    Path("zero.mp4").write_bytes(b"")
    Path("locked").mkdir()
    (Path("locked") / "v.mp4").write_bytes(b"x")
    Path("empty").mkdir()
    Path("x.mp4").mkdir()
    os.symlink("gone.mp4", "link.mp4")
    real_access = os.access
    # the tests run as root, for whom chmod 000 changes nothing: deny the folder as an unprivileged user sees it
    os.chmod("locked", 0)
    monkeypatch.setattr(batch_mod.os, "access", lambda p, m, *a, **k: False if str(p) == "locked"
                        else real_access(p, m, *a, **k))
    try:
        result = run("extract", "missing.mp4", "notes.txt", "zero.mp4", "locked", "empty", "x.mp4", "link.mp4",
                     "-o", "feats", *SMALL_EXTRACT)
    finally:
        os.chmod("locked", 0o755)
    not_video = ("cannot open as a video container (InvalidDataError: Invalid data found when processing input); "
                 "truncated, corrupt or not a video file")
    no_video = "folder holds no video file (none with a video extension such as .mp4)"
    causes = [("missing.mp4", "no such file or directory"),
              ("locked", "directory is not readable (permission denied)"),
              ("empty", no_video),
              ("x.mp4", no_video),
              ("link.mp4", "broken symbolic link (its target gone.mp4 does not exist)"),
              ("notes.txt", not_video),
              ("zero.mp4", "empty file (0 bytes), not a video")]
    expected = ([f"error: {p}: {why}" for p, why in causes]
                + ["extracted 0, skipped (up to date) 0, failed 7"]
                + [f"  FAILED {p}: {why}" for p, why in causes])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == expected
    assert "Traceback" not in result.output


def test_config_and_usage_errors_exact(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run("extract", "v.mp4", "--set", "decode.fps=fast")
    assert (r.exit_code, r.stderr) == (1, "error: config key 'decode.fps': expected a number, got 'fast'\n")
    r = run("extract", "v.mp4", "--set", "decode.nosuch=1")
    assert r.exit_code == 1 and r.stderr.startswith("error: unknown config key 'decode.nosuch'")
    r = run("detect", "v.mp4", "--alpha-attention", "0.5")  # nothing trained here: the built-in detector
    assert (r.exit_code, r.stderr) == (1, "model: kinetics400, the built-in Kinetics-400 detector (no runs/*/model.pt "
                                          "here; --model FILE for a trained one)\nerror: --alpha-attention: a trained "
                                          "head's post-processing, meaningless for the built-in kinetics400 model "
                                          "(see --set localise.min_class_prob=... in docs/kinetics.md)\n")
    r = run("detect", "v.mp4", "--model", "nope.pt")
    assert (r.exit_code, r.stderr) == (1, "error: nope.pt: model file not found\n")
    r = run("train", "--dataset", "thumos14")
    assert (r.exit_code, r.stderr) == (1, "error: no features to train on: there is no features/ folder here; make "
                                          "it with `refineloc-e2e extract VIDEOS...`, or give --features DIR "
                                          "(extracted features) or --data-root DIR (videos to extract)\n")
    r = run("train", "--dataset", "nosuch")
    assert r.exit_code == 1 and r.stderr.startswith("error: unknown dataset 'nosuch'")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_weights_pickle_that_runs_code_is_refused(tmp_path, monkeypatch, make_video):
    monkeypatch.chdir(tmp_path)
    make_video("v.mp4", n=8)
    with open("evil.ckpt", "wb") as f:
        pickle.dump({"params": _RunsCode(tmp_path / "pwned")}, f)
    r = run("extract", "v.mp4", "-o", "feats", *SMALL_EXTRACT, "--set", "rgb_weights=evil.ckpt")
    assert r.exit_code == 1
    assert r.stderr == ("error: evil.ckpt: refused to load: forbidden global posix.system in pickle (only arrays "
                        "and plain containers are allowed)\n")
    assert not (tmp_path / "pwned").exists()


def test_model_pickle_that_runs_code_is_refused(tmp_path, monkeypatch, make_video):
    import torch

    monkeypatch.chdir(tmp_path)
    make_video("v.mp4", n=8)
    torch.save({"state_dict": _RunsCode(tmp_path / "pwned")}, "model.pt")
    r = run("detect", "v.mp4", "--model", "model.pt", "--cache", "feats", *SMALL_EXTRACT)
    assert r.exit_code == 1
    assert r.stderr == ("error: model.pt: refused or failed to load as a weights-only torch file: Trying to load "
                        "unsupported GLOBAL posix.system whose module posix is blocked.\n")
    assert not (tmp_path / "pwned").exists()


def test_weights_sha256_mismatch(tmp_path, monkeypatch, make_video):
    monkeypatch.chdir(tmp_path)
    wdir = tmp_path / "w"
    wdir.mkdir()
    (wdir / "i3d-kinetics400-rgb.ckpt").write_bytes(b"not the weights")
    monkeypatch.setenv("REFINELOC_WEIGHTS_DIR", str(wdir))
    make_video("v.mp4", n=8)
    r = run("extract", "v.mp4", "-o", "feats", *SMALL_EXTRACT)
    got = hashlib.sha256(b"not the weights").hexdigest()
    assert r.exit_code == 1
    assert r.stderr == (f"error: {wdir}/i3d-kinetics400-rgb.ckpt: sha256 mismatch (expected "
                        f"af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd, got {got}); the file is "
                        f"corrupt or not the one the manifest names - delete it and fetch again\n")
    # doctor says the same thing, and exits 1
    r = run("doctor", "--cache", tmp_path / "cache")
    assert r.exit_code == 1
    assert (f"[FAIL] weights i3d-kinetics400-rgb present but sha256 MISMATCH ({wdir}/i3d-kinetics400-rgb.ckpt): "
            f"delete it and fetch it again") in r.output.splitlines()


def test_doctor(tmp_path, monkeypatch):
    wdir = tmp_path / "w"
    wdir.mkdir()
    (wdir / "rgb_imagenet.pt").write_bytes(b"user file, never registered")  # no sha256 to compare: a warning
    monkeypatch.setenv("REFINELOC_WEIGHTS_DIR", str(wdir))
    r = run("doctor", "--cache", tmp_path / "cache")
    lines = r.output.splitlines()
    assert r.exit_code == 0, r.output
    assert lines[0].startswith("[ok  ] refineloc-e2e ")
    assert any(x.startswith("[ok  ] torch ") for x in lines) and any(x.startswith("[ok  ] device ") for x in lines)
    assert any(x.startswith("[ok  ] TV-L1 (opencv) ") and "DualTVL1OpticalFlow_create available" in x for x in lines)
    # the optional extra: the test extra carries it, but a bare install must pass too (the line says which)
    tb = ("installed: train writes TensorBoard event files" if HAVE_TENSORBOARD else
          "not installed (optional: train's curves; pip install 'refineloc-e2e[tensorboard]')")
    assert any(x.startswith("[ok  ] tensorboard ") and x.endswith(tb) for x in lines), lines
    assert "[warn] weights i3d-kinetics400-rgb not present (refineloc-e2e weights fetch i3d-kinetics400-rgb)" in lines
    assert (f"[warn] weights piergiaj-rgb-imagenet present, not registered (register it to record its sha256) "
            f"({wdir}/rgb_imagenet.pt)") in lines
    assert f"[ok  ] feature cache          {tmp_path / 'cache'}: writable" in lines
    (tmp_path / "file").write_text("")
    r = run("doctor", "--cache", tmp_path / "file" / "cache")
    assert r.exit_code == 1
    assert f"[FAIL] feature cache          {tmp_path / 'file' / 'cache'}: not writable (Not a directory)" in r.output
