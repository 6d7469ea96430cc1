"""The three product commands, verbatim and in order, in one folder:

    refineloc-e2e extract videos/
    refineloc-e2e train --dataset thumos14
    refineloc-e2e detect clip.mp4 -o segments.json

The videos are generated and named after THUMOS'14 video ids (6 of its training videos from two classes,
2 of its test videos), so `train --dataset thumos14` reads the bundled THUMOS'14 labels for them; their
content is noise, so this checks that the commands chain (features/ -> runs/thumos14/model.pt ->
segments.json), not what the model learns. What a user would otherwise type as options comes through
click's environment variables (REFINELOC_E2E_<COMMAND>_<PARAMETER>, the same a shell user can set): small
extraction settings, a 2-epoch 1-iteration head of the rgb stream's width, the feature cache in the
test folder, and --skip-missing (the other 405 THUMOS'14 videos have no features here). I3D keeps its
architecture with small random parameters under the real weights' name (as in test_cli_pipeline).
"""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from refineloc_e2e.cli import main
from refineloc_e2e.datasets import load_dataset
from refineloc_e2e.features.cache import read_features
from support import SHORTENED, _fake_real_weights

ENV = {
    "REFINELOC_E2E_EXTRACT_STREAMS": "rgb",
    "REFINELOC_E2E_EXTRACT_OVERRIDES": "decode.short_side=64 decode.crop_size=56",
    "REFINELOC_E2E_EXTRACT_QUIET": "1",
    # guard off: a 2-epoch head on random-weight features gives collapsed pseudo labels, which the guard refuses
    "REFINELOC_E2E_TRAIN_OVERRIDES": ("head.feature_dim=1024 train.epochs=2 train.n_iterations=1 "
                                      "guard.enabled=false"),
    "REFINELOC_E2E_TRAIN_SKIP_MISSING": "1",
    "REFINELOC_E2E_TRAIN_QUIET": "1",
    "REFINELOC_E2E_DETECT_CACHE_DIR": "cache",
    "REFINELOC_E2E_DETECT_QUIET": "1",
}


def _thumos_ids() -> list[str]:
    """3 training videos of each of two THUMOS'14 classes and 2 test videos (the first, by id)."""
    ds = load_dataset("thumos14")
    train = [v for v in sorted(ds.videos) if ds.videos[v].subset == "train"]
    classes = sorted({ds.videos[v].labels[0] for v in train})[:2]
    picked = [v for c in classes for v in [v for v in train if ds.videos[v].labels == [c]][:3]]
    return picked + [v for v in sorted(ds.videos) if ds.videos[v].subset == "test"][:2]


@pytest.mark.slow
def test_extract_train_detect_verbatim(tmp_path, monkeypatch, make_video, one_thread):
    _fake_real_weights(monkeypatch)
    monkeypatch.chdir(tmp_path)
    ids = _thumos_ids()
    Path("videos").mkdir()
    for i, vid in enumerate(ids):
        make_video(Path("videos") / f"{vid}.mp4", n=40, size=(80, 64), seed=i)
    make_video("clip.mp4", n=48, size=(80, 64), seed=99)
    runner = CliRunner()

    def cmd(line: str):
        r = runner.invoke(main, line.split()[1:], env=ENV)
        assert r.exit_code == 0, f"{line}\n{r.output}"
        return r.stderr.splitlines()

    out = cmd("refineloc-e2e extract videos/")
    assert out[0] == "features: writing to features/ (where `train` looks for them; -o DIR for another)"
    assert out[-1] == f"extracted {len(ids)}, skipped (up to date) 0, failed 0"
    assert sorted(p.stem for p in Path("features").glob("*.npy")) == sorted(ids)
    _, meta = read_features(tmp_path / "features", ids[0])
    assert (meta["streams"], meta["decode"]["crop_size"]) == (["rgb"], 56)  # the environment's settings

    out = cmd("refineloc-e2e train --dataset thumos14")
    assert out[0] == SHORTENED  # the paper's eta = 3 of thumos14's base, beyond the environment's 1 iteration
    assert out[1] == "features: features/ (what `refineloc-e2e extract` writes; --features DIR for another)"
    assert out[-1] == "run folder: runs/thumos14  (model: runs/thumos14/model.pt)"
    metrics = json.loads(Path("runs/thumos14/metrics.json").read_text())
    assert [it["iteration"] for it in metrics["iterations"]] == [0, 1]

    out = cmd("refineloc-e2e detect clip.mp4 -o segments.json")
    assert out[0] == ("model: runs/thumos14/model.pt (the newest runs/*/model.pt; --model FILE for another, "
                      "--model kinetics400 for the built-in Kinetics-400 detector)")
    assert out[-1].startswith("wrote segments.json: ") and out[-1].endswith(" in 1 videos; failed 0")
    results = json.loads(Path("segments.json").read_text())["results"]
    assert list(results) == ["clip"]
    _, meta = read_features(tmp_path / "cache", "clip")
    assert (meta["streams"], meta["decode"]["crop_size"]) == (["rgb"], 56)  # the model's settings, not defaults
