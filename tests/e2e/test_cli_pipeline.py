"""train -> detect --features -> evaluate through the CLI, on generated features in the official layouts."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from refineloc_e2e.cli import main
from refineloc_e2e.config import key_origin, shipped_config, shipped_config_names
from refineloc_e2e.features.cache import read_features, write_features
from refineloc_e2e.training.run_config import load_run_config

from support import CONFIGS, SHORTENED, TRAIN_FAST as FAST, _fake_real_weights, _layout


def test_train_detect_evaluate(tmp_path):
    ann, feats = _layout(tmp_path)
    runner = CliRunner()
    r = runner.invoke(main, ["train", "--annotations", str(ann), "--features", str(feats),
                             "--run-dir", str(tmp_path / "run"), *FAST])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "model.pt").is_file()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [it["iteration"] for it in metrics["iterations"]] == [0, 1]
    r = runner.invoke(main, ["detect", "--features", str(feats), "--model", str(tmp_path / "run" / "model.pt"),
                             "-o", str(tmp_path / "p.json")])
    assert r.exit_code == 0, r.output
    preds = json.loads((tmp_path / "p.json").read_text())
    assert set(preds["results"]) == {f"vid{i:02d}" for i in range(12)}
    r = runner.invoke(main, ["evaluate", "--predictions", str(tmp_path / "p.json"), "--ground-truth", str(ann),
                             "--tiou", "0.3", "--tiou", "0.5", "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0].split() == ["tIoU", "0.30", "0.50", "Avg"]
    assert json.loads((tmp_path / "e.json").read_text())["tious"] == [0.3, 0.5]
    r = runner.invoke(main, ["evaluate", "--predictions", str(tmp_path / "p.json"), "--ground-truth", str(ann),
                             "--tiou", "0.1,0.3", "--tiou", "0.5:0.7:0.1"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0].split() == ["tIoU", "0.10", "0.30", "0.50", "0.60", "0.70", "Avg"]
    r = runner.invoke(main, ["evaluate", "--predictions", str(tmp_path / "p.json"), "--ground-truth", str(ann),
                             "--tiou", "0.5:0.95"])
    assert (r.exit_code, r.stderr) == (1, "error: --tiou '0.5:0.95': expected a number, a list (0.1,0.3,0.5) or a "
                                          "range start:stop:step with stop included (0.5:0.95:0.05)\n")


@pytest.mark.parametrize("n_iterations", [1, 0])
@pytest.mark.parametrize("config", shipped_config_names())
def test_shortening_a_run_needs_one_flag(tmp_path, config, n_iterations):
    """Every shipped config trains with `--set train.n_iterations=N` and nothing else but `train.epochs=1` (issue
    32: the paper's fixed eta = 3, inherited through `base:`, once refused it); the last iteration is saved."""
    cfg = load_run_config(shipped_config(config), [])
    ann, feats = _layout(tmp_path, n_train=10, n_test=2, dim=cfg.head.feature_dim)
    r = CliRunner().invoke(main, ["train", "--annotations", str(ann), "--features", str(feats), "--config", config,
                                  "--run-dir", str(tmp_path / "run"), "--set", "train.epochs=1",
                                  "--set", f"train.n_iterations={n_iterations}", "-q"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    trained = len(metrics["iterations"]) - 1  # the guard may stop a 1-epoch toy run before the last one
    assert trained == n_iterations or "guard" in metrics
    fixed = cfg.select_iteration
    if cfg.select == "fixed":  # the shipped eta where the run reaches it, else the last iteration trained
        assert metrics["selected_iteration"] == (fixed if fixed is not None and fixed <= trained else trained)
    beyond = cfg.select in ("fixed", "fixed_wap") and (fixed or 0) > n_iterations
    origin = key_origin(shipped_config(config), "select_iteration")
    line = (f"select_iteration = {fixed} ({origin and origin[0].name}) is beyond train.n_iterations = "
            f"{n_iterations}: the last iteration ({n_iterations}) is saved")
    assert (line in r.output.splitlines()) == beyond


def test_train_lists_videos_without_features(tmp_path):
    ann, feats = _layout(tmp_path, skip=("vid03", "vid10"))
    r = CliRunner().invoke(main, ["train", "--annotations", str(ann), "--features", str(feats),
                                  "--run-dir", str(tmp_path / "run"), *FAST])
    assert r.exit_code == 1
    assert r.output.splitlines()[0] == SHORTENED  # demo inherits thumos14-paper's eta = 3
    assert r.output.splitlines()[1] == (f"error: {feats}: 2 of 12 listed videos have no usable features: vid03, vid10; "
                                f"first: {feats / 'vid03.json'}: no feature metadata (features for 'vid03' were "
                                f"never extracted or their extraction did not finish) (extract them, or pass "
                                f"--skip-missing)")
    r = CliRunner().invoke(main, ["train", "--annotations", str(ann), "--features", str(feats), "--skip-missing",
                                  "--run-dir", str(tmp_path / "run"), *FAST])
    assert r.exit_code == 0, r.output
    assert ("warning: skipping 2 videos without features (--skip-missing); 2 have no feature file: vid03, vid10"
            in r.output.splitlines())
    assert "warning: skipped: " not in r.output  # absent videos are counted, not listed one line each


def test_train_skips_unlabelled_videos_without_features(tmp_path):
    """W-TALC has no THUMOS'14 features for video_test_0001292 (only Ambiguous spans): a video without features
    and without any action label is skipped with one warning line, no flag needed; a labelled one is not."""
    ann, feats = _layout(tmp_path)
    doc = json.loads(ann.read_text())
    doc["database"]["ambiguous_only"] = {"subset": "validation", "duration": 19.2, "annotations": [],
                                         "ambiguous": [[1.0, 2.0]]}
    ann.write_text(json.dumps(doc))
    r = CliRunner().invoke(main, ["train", "--annotations", str(ann), "--features", str(feats),
                                  "--run-dir", str(tmp_path / "run"), *FAST])
    assert r.exit_code == 0, r.output
    warnings = [x for x in r.output.splitlines() if x.startswith("warning:")]
    assert warnings == ["warning: skipped 1 video(s) without features that carry no action label: ambiguous_only"]
    (feats / "vid05.json").unlink()  # a labelled video without features is still an error
    r = CliRunner().invoke(main, ["train", "--annotations", str(ann), "--features", str(feats),
                                  "--run-dir", str(tmp_path / "run2"), *FAST])
    assert r.exit_code == 1 and "1 of 13 listed videos have no usable features: vid05;" in r.output


def test_detect_refuses_features_of_another_width(tmp_path):
    ann, feats = _layout(tmp_path)
    assert CliRunner().invoke(main, ["train", "--annotations", str(ann), "--features", str(feats),
                                     "--run-dir", str(tmp_path / "run"), *FAST]).exit_code == 0
    write_features(tmp_path / "wide", "w1", np.zeros((5, 64), np.float32),
                   {"fps": 25.0, "snippet_frames": 16, "streams": ["rgb"], "backbone": {}})
    r = CliRunner().invoke(main, ["detect", "--features", str(tmp_path / "wide"), "--model",
                                  str(tmp_path / "run" / "model.pt"), "-o", str(tmp_path / "p.json")])
    assert r.exit_code == 1
    assert f"error: w1: {tmp_path / 'run' / 'model.pt'} was trained on other features than " \
           f"{tmp_path / 'wide' / 'w1.npy'}: dim: model 32 vs features 64" in r.output


@pytest.mark.real
@pytest.mark.slow
def test_train_extracts_on_the_fly_from_data_root(tmp_path, real_weights):
    from refineloc_e2e.tools.demo_dataset import SyntheticSpec, generate_dataset

    ann = generate_dataset(tmp_path / "gen", SyntheticSpec(n_train=4, n_test=2, duration_s=2.0))
    ecfg = tmp_path / "extract.yaml"
    ecfg.write_text("streams: rgb\ndecode:\n  short_side: 64\n  crop_size: 56\n")
    r = CliRunner().invoke(main, ["train", "--annotations", str(ann), "--data-root", str(tmp_path / "gen" / "videos"),
                                  "--features", str(tmp_path / "feats"), "--extract-config", str(ecfg),
                                  "--run-dir", str(tmp_path / "run"), *FAST, "--set", "head.feature_dim=1024"])
    assert r.exit_code == 0, r.output
    assert "extracted 6, skipped (up to date) 0, failed 0" in r.output
    meta = json.loads((tmp_path / "feats" / "synthetic_training_0000.json").read_text())
    assert meta["streams"] == ["rgb"] and meta["decode"]["crop_size"] == 56
    assert (tmp_path / "run" / "model.pt").is_file()


def test_detect_speed_only_options_keep_the_models_features(tmp_path, monkeypatch, make_video, one_thread):
    """A model trained on extracted features: `detect --workers 2 --device cpu --set batch_snippets=1` uses
    the model's own extraction settings (not the defaults), is not rejected, and computes the very same
    features; an option that changes the numbers is still refused."""
    from support import SMALL_EXTRACT

    _fake_real_weights(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "videos").mkdir()
    db = {}
    for i in range(6):
        make_video(tmp_path / "videos" / f"v{i}.mp4", n=40, size=(80, 64), seed=i)
        db[f"v{i}"] = {"subset": "training" if i < 4 else "validation", "duration": 1.6,
                       "annotations": [{"label": f"C{i % 2}", "segment": [0.3, 1.2]}]}
    (tmp_path / "ann.json").write_text(json.dumps({"taxonomy": ["C0", "C1"], "database": db}))
    runner = CliRunner()
    r = runner.invoke(main, ["extract", "videos", "-o", "feats", *SMALL_EXTRACT])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["train", "--annotations", "ann.json", "--features", "feats", "--run-dir", "run", *FAST,
                             "--set", "head.feature_dim=1024"])
    assert r.exit_code == 0, r.output
    want, want_meta = read_features(tmp_path / "feats", "v4")
    r = runner.invoke(main, ["detect", "videos/v4.mp4", "--model", "run/model.pt", "--cache", "cache2", "-q",
                             "--workers", "2", "--device", "cpu", "-o", "s.json"])
    assert r.exit_code == 0, r.output
    got, meta = read_features(tmp_path / "cache2", "v4")
    assert got.tobytes() == want.tobytes() and meta["settings_hash"] == want_meta["settings_hash"]
    assert meta["decode"]["crop_size"] == 56  # the model's setting, not the default 224
    ext = json.loads((tmp_path / "s.json").read_text())["external_data"]["extract_config"]
    assert (ext["workers"], ext["device"]) == (2, "cpu")
    # another I3D batch size: accepted, same settings hash; the numbers agree to float rounding only (a
    # convolution over 1 snippet sums in another order than over 8)
    r = runner.invoke(main, ["detect", "videos/v4.mp4", "--model", "run/model.pt", "--cache", "cache4", "-q",
                             "--set", "batch_snippets=1", "-o", "s4.json"])
    assert r.exit_code == 0, r.output
    got, meta = read_features(tmp_path / "cache4", "v4")
    assert meta["settings_hash"] == want_meta["settings_hash"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    r = runner.invoke(main, ["detect", "videos/v4.mp4", "--model", "run/model.pt", "--cache", "cache3", "-q",
                             "--workers", "2", "--set", "decode.crop_size=48", "-o", "s2.json"])
    assert r.exit_code == 1
    error = r.stderr.splitlines()[-1]  # a numbers-changing option makes the given settings (defaults + it) count
    assert error.startswith("error: run/model.pt was trained on other features than the extraction settings ")
    assert "settings_hash: model " in error
