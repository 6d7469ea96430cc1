"""Decode-stage hardening (split from test_hardening.py): a generated bad-input corpus through ``extract``.

Every bad input gives one exact ``error: <path>: <cause>`` line, the batch goes on, the summary lists it
and the exit status is 1; valid but unusual inputs are extracted; a 4K video's memory stays bounded. The
corpus is generated here, not stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from support import SMALL_EXTRACT, write_test_video
from refineloc_e2e.features import batch as batch_mod
from refineloc_e2e.cli import main
from refineloc_e2e.features.cache import FORMAT_VERSION, read_features

from testing.fuzz import audio_only

CLI = [sys.executable, "-c", "from refineloc_e2e.cli import main; main()"]

pytestmark = pytest.mark.usefixtures("one_thread")  # shared 2-core machine


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)



@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Bad and valid-but-unusual inputs (generated, ~6 s). Returns (folder, bad names, valid names -> n_snippets)."""
    d = tmp_path_factory.mktemp("corpus")
    ok = write_test_video(d / "ok.mp4", n=48, size=(80, 60))
    (d / "zero.mp4").write_bytes(b"")
    (d / "half.mp4").write_bytes(ok.read_bytes()[: ok.stat().st_size // 2])
    (d / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    (d / "audio.mp4").write_bytes(audio_only("mp4"))  # aac, no video stream (the fuzz corpus' generator)
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
