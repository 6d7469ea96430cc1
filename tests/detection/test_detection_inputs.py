"""detection.inputs: which model detect uses, and which options may override the model's extraction settings."""

import os
from pathlib import Path

import pytest

from refineloc_e2e.config import to_dict
from refineloc_e2e.detection.inputs import extract_config_for_model, pick_model
from refineloc_e2e.features.extractor import ExtractConfig
from refineloc_e2e.video.decode import DecodeConfig


def _model(root: Path, name: str, mtime_s: int) -> Path:
    path = root / "runs" / name / "model.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    os.utime(path, (mtime_s, mtime_s))
    return path


def test_given_model_is_used_as_is(tmp_path):
    assert pick_model("elsewhere/m.pt", cwd=tmp_path) == (Path("elsewhere/m.pt"), None)


def test_newest_run_model_is_picked(tmp_path):
    builtin = ("kinetics400", "model: kinetics400, the built-in Kinetics-400 detector (no runs/*/model.pt here; "
                              "--model FILE for a trained one)")
    assert pick_model(None, cwd=tmp_path) == builtin  # nothing trained here: the built-in detector
    (tmp_path / "runs" / "empty").mkdir(parents=True)  # a run folder without a model.pt is not a model
    assert pick_model(None, cwd=tmp_path) == builtin
    _model(tmp_path, "old", 1_000_000)
    assert pick_model(None, cwd=tmp_path) == (
        Path("runs/old/model.pt"), "model: runs/old/model.pt (the newest runs/*/model.pt; --model FILE for another, "
                                   "--model kinetics400 for the built-in Kinetics-400 detector)")
    _model(tmp_path, "new", 2_000_000)
    _model(tmp_path, "zzz_older", 1_500_000)  # newest by time, not by name
    assert pick_model(None, cwd=tmp_path) == (
        Path("runs/new/model.pt"),
        "model: runs/new/model.pt (the newest runs/*/model.pt, newest of 3; --model FILE for another, "
        "--model kinetics400 for the built-in Kinetics-400 detector)")


def test_builtin_names_are_reserved_and_files_use_a_path(tmp_path):
    (tmp_path / "kinetics400").write_bytes(b"")
    assert pick_model("kinetics400", cwd=tmp_path) == ("kinetics400", None)  # the name, even beside such a file
    assert pick_model("./kinetics400", cwd=tmp_path) == (Path("kinetics400"), None)  # the file


def _meta(cfg: ExtractConfig) -> dict:
    """The feature metadata a model trained on ``cfg``'s rgb features records (the keys the rule reads)."""
    return {"decode": to_dict(cfg.decode), "streams": ["rgb"],
            "backbone": {"rgb": {"weights_id": cfg.rgb_weights}}}


def test_speed_only_options_keep_the_models_settings():
    model = ExtractConfig(decode=DecodeConfig(short_side=64, crop_size=56), streams="rgb")
    cfg = extract_config_for_model(_meta(model), None, ["workers=2", "device=cpu", "batch_snippets=1"])
    assert (cfg.decode.crop_size, cfg.decode.short_side, cfg.streams) == (56, 64, "rgb")  # the model's
    assert (cfg.workers, cfg.device, cfg.batch_snippets) == (2, "cpu", 1)
    assert extract_config_for_model(_meta(model), None, []).decode.crop_size == 56


def test_a_numbers_changing_option_makes_the_given_settings_count(tmp_path):
    model = ExtractConfig(decode=DecodeConfig(short_side=64, crop_size=56), streams="rgb")
    cfg = extract_config_for_model(_meta(model), None, ["workers=2", "decode.crop_size=48"])
    assert (cfg.decode.crop_size, cfg.decode.short_side, cfg.streams, cfg.workers) == (48, 256, "both", 2)
    (tmp_path / "e.yaml").write_text("decode:\n  crop_size: 40\n")
    cfg = extract_config_for_model(_meta(model), tmp_path / "e.yaml", ["workers=2"])  # a config file counts too
    assert (cfg.decode.crop_size, cfg.streams, cfg.workers) == (40, "both", 2)
    assert extract_config_for_model({}, None, ["workers=2"]).decode.crop_size == 224  # nothing recorded: defaults
