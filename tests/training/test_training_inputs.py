"""training.inputs: which config, feature folder and videos a run reads when the command line leaves them open."""

from pathlib import Path

import pytest

from refineloc_e2e.config import shipped_config
from refineloc_e2e.datasets import load_dataset
from refineloc_e2e.errors import ConfigError, DatasetError, InputError
from refineloc_e2e.fileio import user_cache_dir
from refineloc_e2e.training.inputs import dataset_videos, pick_features_dir, plan_training, resolve_config_arg


def test_given_features_folder_is_used_as_is(tmp_path):
    assert pick_features_dir("elsewhere", None, cwd=tmp_path) == (Path("elsewhere"), None)
    assert pick_features_dir("elsewhere", "videos", cwd=tmp_path) == (Path("elsewhere"), None)


def test_data_root_alone_extracts_into_the_cache(tmp_path):
    cache = user_cache_dir("features")
    assert pick_features_dir(None, "videos", cwd=tmp_path) == (
        cache, f"features: extracting into {cache} (the feature cache; --features DIR for another)")


def test_extract_output_folder_is_picked_when_it_exists(tmp_path):
    with pytest.raises(InputError) as e:
        pick_features_dir(None, None, cwd=tmp_path)
    assert str(e.value) == ("no features to train on: there is no features/ folder here; make it with "
                            "`refineloc-e2e extract VIDEOS...`, or give --features DIR (extracted features) or "
                            "--data-root DIR (videos to extract)")
    (tmp_path / "features").write_text("a file, not the folder")
    with pytest.raises(InputError):
        pick_features_dir(None, None, cwd=tmp_path)
    (tmp_path / "features").unlink()
    (tmp_path / "features").mkdir()
    assert pick_features_dir(None, None, cwd=tmp_path) == (
        Path("features"), "features: features/ (what `refineloc-e2e extract` writes; --features DIR for another)")


def test_dataset_videos_are_those_named_after_its_ids(tmp_path):
    ds = load_dataset("thumos14")
    with pytest.raises(InputError, match=r"--data-root is not a folder"):
        dataset_videos(ds, tmp_path / "nope")
    (tmp_path / "sub").mkdir()
    (tmp_path / "other.mp4").write_bytes(b"")
    with pytest.raises(DatasetError) as e:
        dataset_videos(ds, tmp_path)
    assert str(e.value) == (f"{tmp_path}: no video named after a 'thumos14' video id "
                            f"(e.g. {sorted(ds.videos)[0]}.mp4)")
    (tmp_path / "sub" / "video_validation_0000051.mp4").write_bytes(b"")
    (tmp_path / "video_test_0000004.MKV").write_bytes(b"")
    (tmp_path / "video_test_0000004.txt").write_bytes(b"")
    assert dataset_videos(ds, tmp_path) == [tmp_path / "sub" / "video_validation_0000051.mp4",
                                            tmp_path / "video_test_0000004.MKV"]


def test_dataset_gets_its_shipped_config(tmp_path):
    (tmp_path / "features").mkdir()
    plan = plan_training(dataset="thumos14", cwd=tmp_path)
    assert plan.config_path == shipped_config("thumos14") and plan.dataset_key == "thumos14"
    assert plan.config.pseudo.fg_fraction_range == [0.05, 0.9]  # thumos14.yaml's own value, not the paper's
    assert (plan.features_dir, plan.videos, plan.run_dir) == (Path("features"), [], Path("runs") / "thumos14")
    assert plan.picked == ["features: features/ (what `refineloc-e2e extract` writes; --features DIR for another)"]
    plan = plan_training(dataset="thumos14", config="thumos14-paper", features_dir="f", name="x",
                         overrides=["train.seed=5"], cwd=tmp_path)
    assert (plan.config_path, plan.config.train.seed, plan.run_dir, plan.picked) == (
        shipped_config("thumos14-paper"), 5, Path("runs") / "x", [])


def test_own_annotations_run_on_the_defaults(tmp_path):
    ann = tmp_path / "a.json"
    ann.write_text('{"taxonomy": ["A"], "database": {"v": {"subset": "training", "duration": 2.0, '
                   '"annotations": [{"label": "A", "segment": [0.5, 1.0]}]}}}')
    plan = plan_training(dataset="thumos14", annotations=str(ann), features_dir="f", cwd=tmp_path)
    assert (plan.dataset_key, plan.config_path, plan.run_dir) == ("custom", None, Path("runs") / "custom")


def test_config_argument_is_a_file_or_a_shipped_name(tmp_path):
    assert resolve_config_arg("thumos14-released") == shipped_config("thumos14-released")
    assert resolve_config_arg(str(tmp_path / "mine.yaml")) == tmp_path / "mine.yaml"
    with pytest.raises(ConfigError, match=r"nosuch: config file not found"):
        plan_training(dataset="thumos14", config="nosuch", features_dir="f", cwd=tmp_path)
