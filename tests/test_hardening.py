"""Hardening: a bad-input corpus, interrupted (SIGKILL) and concurrent runs, disk full, untrusted cache files,
features or models that do not match, and ``train --resume`` through the CLI.

Every bad input gives one exact ``error: <path>: <cause>`` line, the batch goes on, the summary lists it
and the exit status is 1; valid but unusual inputs are extracted. The corpus is generated here, not stored.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import SMALL_EXTRACT, write_test_video
from refineloc_e2e.features import batch as batch_mod
from refineloc_e2e import fileio
from refineloc_e2e.cli import main
from refineloc_e2e.features.batch import extract_batch
from refineloc_e2e.config import load_config
from refineloc_e2e.features.extractor import ExtractConfig
from refineloc_e2e.features.cache import FORMAT_VERSION, read_features, source_identity, write_features

CLI = [sys.executable, "-c", "from refineloc_e2e.cli import main; main()"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machine
    yield
    torch.set_num_threads(n)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _tmp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


# ----------------------------------------------------------------------------- temp files, disk full

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


# ----------------------------------------------------------------------------- the corpus

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Bad and valid-but-unusual inputs (generated, ~6 s). Returns (folder, bad names, valid names -> n_snippets)."""
    d = tmp_path_factory.mktemp("corpus")
    ok = write_test_video(d / "ok.mp4", n=48, size=(80, 60))
    (d / "zero.mp4").write_bytes(b"")
    (d / "half.mp4").write_bytes(ok.read_bytes()[: ok.stat().st_size // 2])
    (d / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    import av
    with av.open(str(d / "audio.mp4"), "w") as c:
        s = c.add_stream("aac", rate=16000)
        for i in range(20):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, i * 1024
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    cv2.imwrite(str(d / "still.png"), np.full((48, 64, 3), 128, np.uint8))
    os.replace(d / "still.png", d / "still.mp4")
    (d / "x.mp4").mkdir()
    os.symlink("nowhere.mp4", d / "broken.mp4")
    valid = {  # name -> expected n_snippets (25 fps output, 16-frame snippets, tail padded)
        "one.mp4": (write_test_video(d / "one.mp4", n=1), 1),
        "short.mp4": (write_test_video(d / "short.mp4", n=10), 1),
        "vfr.mp4": (write_test_video(d / "vfr.mp4", n=9, pts_ms=[0, 40, 200, 210, 500, 520, 900, 1000, 1100],
                                     last_dur_ms=100), 2),  # ends at 1.2 s -> 30 frames
        "rotated.mp4": (write_test_video(d / "rotated.mp4", n=20, size=(64, 48), rotation=90), 2),
        "odd642.mp4": (write_test_video(d / "odd642.mp4", n=5, size=(642, 362)), 1),
        "tiny16.mp4": (write_test_video(d / "tiny16.mp4", n=5, size=(16, 16)), 1),
        "odd33.mkv": (write_test_video(d / "odd33.mkv", n=5, size=(33, 17), codec="ffv1", pix_fmt="yuv444p"), 1),
        "4k.mp4": (write_test_video(d / "4k.mp4", n=24, size=(3840, 2160), noise=False,
                                    codec_options={"preset": "ultrafast"}), 2),
    }
    (d / "dir with space").mkdir()
    valid["dir with space/clip é ü.mp4"] = (write_test_video(d / "dir with space" / "clip é ü.mp4", n=5), 1)
    ok.unlink()
    return d, {k: v[1] for k, v in valid.items()}


NOT_A_CONTAINER = ("cannot open as a video container (InvalidDataError: Invalid data found when processing input); "
                   "truncated, corrupt or not a video file")
BAD = [  # (input, cause): the exact line is "error: <input>: <cause>"; input-level problems come first
    ("x.mp4", "folder holds no video file (none with a video extension such as .mp4)"),
    ("broken.mp4", "broken symbolic link (its target nowhere.mp4 does not exist)"),
    ("zero.mp4", "empty file (0 bytes), not a video"),
    ("half.mp4", NOT_A_CONTAINER),  # mp4 cut at half its size: the index (moov) is gone
    ("random.mp4", NOT_A_CONTAINER),
    ("audio.mp4", "no video stream (streams found: audio)"),
    ("still.mp4", "is a still image (png_pipe), not a video"),
]


@pytest.mark.real
@pytest.mark.slow
def test_corpus_through_extract(corpus, real_weights, monkeypatch):
    d, valid = corpus
    monkeypatch.chdir(d)
    builds = []
    real_cls = batch_mod.FeatureExtractor

    class Counting(real_cls):
        def __init__(self, *a, **k):
            builds.append(1)
            super().__init__(*a, **k)

    monkeypatch.setattr(batch_mod, "FeatureExtractor", Counting)
    args = ["extract", "zero.mp4", "half.mp4", "random.mp4", "audio.mp4", "still.mp4", "x.mp4", "broken.mp4",
            *valid, "-o", "feats", *SMALL_EXTRACT]
    r = run(*args)
    assert r.exit_code == 1
    failed_lines = [f"  FAILED {p}: {why}" for p, why in BAD]
    assert r.stderr.splitlines() == ([f"error: {p}: {why}" for p, why in BAD]
                                     + [f"extracted {len(valid)}, skipped (up to date) 0, failed {len(BAD)}"]
                                     + failed_lines)
    metas = {}
    for j in Path("feats").glob("*.json"):
        feats, meta = read_features("feats", j.stem)
        metas[str(Path(meta["source"]["path"]).relative_to(d))] = (feats, meta)
    assert sorted(metas) == sorted(valid)
    for name, n_snip in valid.items():
        feats, meta = metas[name]
        assert feats.shape == (n_snip, 1024) and np.isfinite(feats).all(), name
        assert len(meta["snippet_start_s"]) == n_snip and meta["settings_hash"] == metas["one.mp4"][1]["settings_hash"]
    assert metas["rotated.mp4"][1]["rotation_deg"] == 90 and metas["rotated.mp4"][1]["native_size"] == [64, 48]
    assert metas["vfr.mp4"][1]["n_frames"] == 30 and metas["one.mp4"][1]["n_frames"] == 1
    assert metas["odd33.mkv"][1]["native_size"] == [33, 17] and metas["4k.mp4"][1]["native_size"] == [3840, 2160]
    assert "clip" in next(j.stem for j in Path("feats").glob("clip*.json"))
    assert builds == [1]

    # rerun: everything valid is skipped without loading a model; the failures are reported again
    r = run(*args)
    assert r.exit_code == 1 and builds == [1]
    assert f"extracted 0, skipped (up to date) {len(valid)}, failed {len(BAD)}" in r.stderr.splitlines()

    # damaged cache entries are re-extracted, each with one note naming the file and the problem
    one_npy = Path("feats/one.npy")
    one_npy.write_bytes(one_npy.read_bytes()[: one_npy.stat().st_size // 2])  # truncated
    short_json = Path("feats/short.json")
    short_json.write_text(json.dumps(dict(json.loads(short_json.read_text()), format_version=0)))  # older format
    np.save("feats/vfr.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)  # a pickle in the cache
    r = run(*args)
    lines = r.stderr.splitlines()
    assert r.exit_code == 1 and builds == [1, 1]
    assert lines[len(BAD)].startswith("note: one.mp4: re-extracting (cached entry unusable: feats/one.npy: "
                                          "truncated or corrupt feature array (")
    assert lines[len(BAD) + 1] == ("note: short.mp4: re-extracting (cached entry unusable: feats/short.json: feature "
                                   f"metadata format 0 is not the current format {FORMAT_VERSION}; re-extract this video)")
    assert lines[len(BAD) + 2] == ("note: vfr.mp4: re-extracting (cached entry unusable: feats/vfr.npy: holds "
                                   "pickled Python objects, refused (feature files are plain float32 arrays; loading "
                                   "pickles could run code); re-extract)")
    assert f"extracted 3, skipped (up to date) {len(valid) - 3}, failed {len(BAD)}" in lines
    for vid in ("one", "short", "vfr"):
        assert read_features("feats", vid)[0].shape[1] == 1024


@pytest.mark.real
@pytest.mark.slow
def test_4k_memory_stays_bounded(corpus, real_weights):
    """Peak RSS grows by far less than the 24 decoded 4K frames (24 x 12 MB YUV, 24 x 25 MB RGB)."""
    d, _ = corpus
    script = ("import resource, torch; torch.set_num_threads(1)\n"
              "from refineloc_e2e.config import load_config\nfrom refineloc_e2e.features.extractor import ExtractConfig, FeatureExtractor\n"
              "ex = FeatureExtractor(load_config(ExtractConfig, None, ['streams=rgb', 'decode.short_side=64', "
              "'decode.crop_size=56']))\n"
              "rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
              "ex.extract('rotated.mp4'); a = rss(); f, m = ex.extract('4k.mp4'); b = rss()\n"
              "print(a, b, f.shape[0])\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=d, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, REFINELOC_WEIGHTS_DIR=real_weights))
    assert out.returncode == 0, out.stderr
    before_mb, after_mb, n_snip = out.stdout.split()
    assert int(n_snip) == 2
    assert float(after_mb) - float(before_mb) < 200, out.stdout


# ----------------------------------------------------------------------------- kill, rerun, concurrency

def _batch_videos(folder: Path, n: int) -> list[Path]:
    folder.mkdir()
    return [write_test_video(folder / f"v{i}.mp4", n=48, size=(80, 60), seed=i) for i in range(n)]


def _env(weights: str) -> dict:
    return dict(os.environ, REFINELOC_WEIGHTS_DIR=weights, OMP_NUM_THREADS="1")


def _summary_counts(stderr: str) -> tuple[int, int, int]:
    m = re.search(r"^extracted (\d+), skipped \(up to date\) (\d+), failed (\d+)$", stderr, re.M)
    assert m, stderr
    return tuple(int(x) for x in m.groups())


def _check_outputs(out: Path, n: int) -> None:
    hashes = set()
    for i in range(n):
        feats, meta = read_features(out, f"v{i}")  # shape and checksum agree with the metadata
        assert feats.shape == (3, 1024) and meta["n_snippets"] == 3 and len(meta["snippet_start_s"]) == 3
        hashes.add(meta["settings_hash"])
    assert len(hashes) == 1 and _tmp_files(out) == []


@pytest.mark.real
@pytest.mark.slow
def test_sigkill_mid_batch_then_rerun_resumes(tmp_path, real_weights):
    videos = _batch_videos(tmp_path / "videos", 6)
    out = tmp_path / "feats"
    args = [*CLI, "extract", *map(str, videos), "-o", str(out), *SMALL_EXTRACT]
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=_env(real_weights), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(list(out.glob("*.json"))) < 2 and proc.poll() is None and time.perf_counter() - t0 < 240:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_after_s = time.perf_counter() - t0
    done = {p.stem: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert 2 <= len(done) < 6, "the kill did not land mid-batch"
    # what a writer killed inside atomic_writer leaves, and a live concurrent writer's temp file
    pending = sorted(set(f"v{i}" for i in range(6)) - set(done))[0]
    stale = out / f".{pending}.npy.{proc.pid}-killed.tmp"
    stale.write_bytes(b"\x93NUMPY half")
    os.utime(stale, (time.time() - 5, time.time() - 5))
    live = out / f".{pending}.json.{os.getpid()}-live.tmp"
    live.write_bytes(b"{")
    t1 = time.perf_counter()
    rerun = subprocess.run(args, env=_env(real_weights), capture_output=True, text=True, timeout=300)
    rerun_s = time.perf_counter() - t1
    assert rerun.returncode == 0, rerun.stderr
    assert _summary_counts(rerun.stderr) == (6 - len(done), len(done), 0)
    assert {p: (out / f"{p}.json").stat().st_mtime_ns for p in done} == done  # finished videos not recomputed
    assert not stale.exists() and live.exists()  # the live writer's file is not touched
    live.unlink()
    _check_outputs(out, 6)
    print(f"\nkilled after {killed_after_s:.1f} s with {len(done)}/6 done; rerun {rerun_s:.1f} s "
          f"for {6 - len(done)} videos")


@pytest.mark.real
@pytest.mark.slow
def test_two_concurrent_runs_compute_each_video_once(tmp_path, real_weights):
    videos = _batch_videos(tmp_path / "videos", 4)
    out = tmp_path / "feats"
    args = [*CLI, "extract", *map(str, videos), "-o", str(out), *SMALL_EXTRACT]
    procs = [subprocess.Popen(args, env=_env(real_weights), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stderr.close()
        p.stdout.close()
    assert [rc for rc, _ in results] == [0, 0], results
    counts = [_summary_counts(err) for _, err in results]
    assert sum(c[0] for c in counts) == 4 and sum(c[1] for c in counts) == 4, counts  # each computed once
    _check_outputs(out, 4)


# ----------------------------------------------------------------------------- train / detect mismatches

def _features_and_annotations(root: Path, dims=(16, 16, 16, 16, 16, 16, 16, 16, 16, 16), seed=0):
    from refineloc_e2e.datasets import Dataset, Segment, VideoAnnotation, dataset_to_activitynet_json

    rng = np.random.default_rng(seed)
    feats_dir, videos = root / "feats", {}
    for i, dim in enumerate(dims):
        vid, T, c = f"v{i}", int(rng.integers(20, 40)), i % 2
        x = rng.normal(size=(T, dim)).astype(np.float32)  # (T, D)
        x[5:12, c] += 2.0  # the action, in the class's own direction
        write_features(feats_dir, vid, x, {"fps": 25.0, "snippet_frames": 16, "streams": ["rgb"], "backbone": {},
                                           "duration_s": T * 16 / 25.0})
        videos[vid] = VideoAnnotation(vid, "train" if i < 7 else "test", [f"A{c}"],
                                      [Segment(5 * 0.64, 12 * 0.64, f"A{c}")], T * 0.64, 25.0)
    ann = root / "ann.json"
    ann.write_text(json.dumps(dataset_to_activitynet_json(Dataset("tiny", ["A0", "A1"], videos))))
    return ann, feats_dir


TRAIN_SET = ["--set", "head.feature_dim=16", "--set", "train.epochs=2", "--set", "train.n_iterations=2",
             "--set", "train.batch_size=4", "--set", "train.device=cpu", "--set", "select_iteration=2", "-q"]


def test_train_reports_unusable_or_mismatched_features(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ann, feats = _features_and_annotations(tmp_path)
    r = run("train", "--annotations", ann, "--features", "feats", "--run-dir", "r0", "-q")  # default head: 2048-d
    assert (r.exit_code, r.stderr) == (1, "error: feats: features are 16-d (streams ['rgb']) but the head expects "
                                          "head.feature_dim=2048 (built-in config); extract with matching --streams "
                                          "or pass --set head.feature_dim=16\n")
    meta = json.loads((feats / "v3.json").read_text())
    (feats / "v3.json").write_text(json.dumps(dict(meta, format_version=0)))
    r = run("train", "--annotations", ann, "--features", "feats", "--run-dir", "r1", *TRAIN_SET)
    assert (r.exit_code, r.stderr) == (1, "error: feats: 1 of 10 listed videos have no usable features: v3; first: "
                                          "feats/v3.json: feature metadata format 0 is not the current format 1; "
                                          "re-extract this video (extract them, or pass --skip-missing)\n")
    (feats / "v3.json").write_text(json.dumps(meta))
    np.save(feats / "v3.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    r = run("train", "--annotations", ann, "--features", "feats", "--run-dir", "r1", *TRAIN_SET)
    assert r.exit_code == 1 and r.stderr.endswith(
        "first: feats/v3.npy: holds pickled Python objects, refused (feature files are plain float32 arrays; loading "
        "pickles could run code); re-extract (extract them, or pass --skip-missing)\n")
    _, _ = _features_and_annotations(tmp_path / "mixed", dims=(16, 32) + (16,) * 8)
    r = run("train", "--annotations", ann, "--features", tmp_path / "mixed" / "feats", "--run-dir", "r2", *TRAIN_SET)
    assert r.exit_code == 1
    assert r.stderr == (f"error: {tmp_path}/mixed/feats: features of 'v1' were extracted with other settings than "
                        f"those of 'v0' (dim: 32 vs 16); extract all videos with one setting\n")


def test_train_resume_through_the_cli(tmp_path, monkeypatch):
    import refineloc_e2e.training.refinement as train_mod
    from refineloc_e2e.model.head import load_head

    monkeypatch.chdir(tmp_path)
    ann, _ = _features_and_annotations(tmp_path)
    base = ["train", "--annotations", ann, "--features", "feats", *TRAIN_SET]
    assert run(*base, "--run-dir", "full").exit_code == 0
    real_fit = train_mod.fit_model

    def crash_on_2(*a, **kw):
        if kw["iteration"] == 2:
            raise KeyboardInterrupt  # what Ctrl-C (or a kill between iterations) does
        return real_fit(*a, **kw)

    monkeypatch.setattr(train_mod, "fit_model", crash_on_2)
    r = run(*base, "--run-dir", "cut")
    assert (r.exit_code, r.stderr.splitlines()[-1]) == (
        130, "error: interrupted; finished work is kept, run the same command again to continue")
    monkeypatch.setattr(train_mod, "fit_model", real_fit)
    assert sorted(p.name for p in Path("cut").glob("iter_*.pt")) == ["iter_0.pt", "iter_1.pt"]
    r = run(*base, "--run-dir", "cut")
    assert (r.exit_code, r.stderr) == (1, "error: cut: already holds a training run; pass resume=True (--resume) "
                                          "to continue it or choose another run folder\n")
    assert run(*base, "--run-dir", "cut", "--resume").exit_code == 0
    full, cut = (json.loads(Path(d, "metrics.json").read_text()) for d in ("full", "cut"))
    strip = lambda its: [{k: v for k, v in e.items() if k not in ("wall_s", "timing", "epoch_s")} for e in its]  # noqa: E731
    assert strip(full["iterations"]) == strip(cut["iterations"]) and len(cut["iterations"]) == 3
    assert full["selected_iteration"] == cut["selected_iteration"]
    a, b = load_head("full/model.pt").model.state_dict(), load_head("cut/model.pt").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _tmp_files(tmp_path) == []


@pytest.mark.real
def test_detect_with_a_model_trained_on_other_features(tmp_path, monkeypatch, real_weights):
    from refineloc_e2e.model.head import HeadConfig, build_head, save_head
    from refineloc_e2e.model.segments import PostprocessConfig

    monkeypatch.chdir(tmp_path)
    write_test_video("v.mp4", n=8)
    cfg = HeadConfig(feature_dim=2048)
    save_head("model.pt", build_head(cfg, 2), class_names=["A", "B"], head_config=cfg,
              postprocess_config=PostprocessConfig(),
              feature_meta={"dim": 2048, "fps": 25.0, "snippet_frames": 8, "streams": ["rgb", "flow"],
                            "backbone": {"rgb": {"weights_id": "piergiaj-rgb-imagenet"}}})
    r = run("detect", "v.mp4", "--model", "model.pt", "--cache", "feats", *SMALL_EXTRACT)
    assert r.exit_code == 1
    assert r.stderr.splitlines()[-1] == (
        "error: model.pt was trained on other features than the extraction settings (streams ['rgb'], 25 fps, "
        "16-frame snippets): dim: model 2048 vs features 1024; snippet_frames: model 8 vs features 16; streams: "
        "model ['rgb', 'flow'] vs features ['rgb']; rgb backbone: model 'piergiaj-rgb-imagenet' vs features "
        "'i3d-kinetics400-rgb'")
    assert not Path("feats").exists() or not list(Path("feats").glob("*.npy"))  # checked before any work
