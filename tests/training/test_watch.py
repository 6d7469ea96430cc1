"""Watching a run: TensorBoard event files under the released tag names (read back with tensorboard's own
reader), the run without the extra, report.png, the version in what a run writes and out of cache keys."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import refineloc_e2e
from support import REPO, TESTS, make_dataset  # noqa: E402  (generated weakly-labelled features)
from refineloc_e2e.cli import main
from refineloc_e2e.config import settings_hash, to_dict
from refineloc_e2e.features.cache import check_entry, write_features
from refineloc_e2e.model.head import HeadConfig, load_head
from refineloc_e2e.training import fit as fit_mod
from refineloc_e2e.training import tensorboard_log
from refineloc_e2e.training.fit import TrainConfig, VideoItem
from refineloc_e2e.training.fit_cache import fit_key
from refineloc_e2e.training.guard import GuardConfig
from refineloc_e2e.training.refinement import run_training
from refineloc_e2e.training.run_config import RunConfig

try:  # the optional extra; the tests that read event files back need it, the one without it runs anyway
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
except ImportError:
    EventAccumulator = None
needs_tensorboard = pytest.mark.skipif(EventAccumulator is None, reason="reads event files back with tensorboard's "
                                       "EventAccumulator: pip install '.[tensorboard]'")

META = {"dim": 16, "fps": 25.0, "snippet_frames": 16, "streams": ["rgb", "flow"], "backbone": {}}
EPOCHS = 2
RELEASED_TAGS = {"train/loss", "learning_rate", "refinement_train/total_pseudo_fg", "refinement_train/total_pseudo_bg",
                 "refinement_train/num_true_fg/total_pseudo_fg", "refinement_train/num_true_fg/total_fg",
                 "refinement_valid/refined_avg_mAP"}
TIMING_TAGS = {"refineloc/epoch_s", "refineloc/iteration_s"}

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg() -> RunConfig:
    # the guard off: 2-epoch toy models give collapsed pseudo labels; the loop's logging is what is tested here
    return RunConfig(dataset="synthetic", head=HeadConfig(feature_dim=16),
                     train=TrainConfig(epochs=EPOCHS, batch_size=8, n_iterations=1, device="cpu"),
                     eval_tious=[0.3, 0.5], guard=GuardConfig(enabled=False))


def _data():
    return make_dataset(n_train=12, n_test=4, dim=16, seed=3, t_range=(20, 40))


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@needs_tensorboard
def test_run_writes_released_tags_report_and_version(tmp_path):
    ds, feats = _data()
    res = run_training(_cfg(), dataset=ds, features=feats, run_dir=tmp_path / "run", feature_meta=META,
                       progress=False, tensorboard=True, report=True)
    its = res.metrics["iterations"]
    tags = _scalars(tmp_path / "run" / "tensorboard")
    assert RELEASED_TAGS <= set(tags)
    assert {t for t in tags if not t.startswith("refineloc/")} == RELEASED_TAGS  # ours stay under refineloc/
    assert {"refineloc/heldout/loss", "refineloc/heldout/wap", "refineloc/heldout/coverage",
            "refineloc/selected_iteration"} | TIMING_TAGS <= set(tags)
    # the released steps: per epoch k * max_epoch + epoch, pseudo labels of iteration k at k * max_epoch,
    # refined_avg_mAP at k (mAP@0.5 in %, THUMOS'14's metric, as 0.5 is evaluated)
    assert [s for s, _ in tags["train/loss"]] == [1, 2, 3, 4]
    np.testing.assert_allclose([v for _, v in tags["train/loss"]], its[0]["train_losses"] + its[1]["train_losses"],
                               rtol=1e-6)
    assert [v for _, v in tags["learning_rate"]] == pytest.approx([1e-3] * 4)
    pseudo = its[1]["pseudo"]
    assert tags["refinement_train/total_pseudo_fg"] == [(EPOCHS, pseudo["n_fg"])]
    assert tags["refinement_train/total_pseudo_bg"] == [(EPOCHS, pseudo["n_snippets"] - pseudo["n_fg"])]
    assert tags["refinement_valid/refined_avg_mAP"] == \
        [(k, pytest.approx(100 * e["test"]["map_per_tiou"][1], rel=1e-6)) for k, e in enumerate(its)]
    assert tags["refineloc/selected_iteration"] == [(2 * EPOCHS, res.selected_iteration)]

    report = tmp_path / "run" / "report.png"
    assert report.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 30_000 < report.stat().st_size < 1_000_000
    assert not list((tmp_path / "run").glob("*.tmp"))

    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["package_version"] == refineloc_e2e.__version__
    assert [e["package_version"] for e in saved["iterations"]] == [refineloc_e2e.__version__] * 2
    assert load_head(tmp_path / "run" / "model.pt").package_version == refineloc_e2e.__version__


@needs_tensorboard
@pytest.mark.parametrize("cut_at", [0, 1])
def test_resumed_run_continues_the_curves(tmp_path, monkeypatch, cut_at):
    """A run cut inside iteration 0 or 1 and resumed reads, in TensorBoard, as the uninterrupted run: the same
    steps, each once, with the same values (timings aside)."""
    ds, feats = _data()
    full = _scalars(run_training(_cfg(), dataset=ds, features=feats, run_dir=tmp_path / "full", feature_meta=META,
                                 progress=False, tensorboard=True).run_dir / "tensorboard")
    real_fit = fit_mod.fit_model

    def cut_in_iteration(*a, **kw):  # one epoch of iteration ``cut_at`` logged live, then the process stops
        if kw["iteration"] == cut_at:
            kw["on_epoch"]({"epoch": 1, "train_loss": 9.0, "heldout_loss": 9.0, "lr": 1.0, "epoch_s": 0.0})
            raise KeyboardInterrupt
        return real_fit(*a, **kw)

    import refineloc_e2e.training.refinement as train_mod
    monkeypatch.setattr(train_mod, "fit_model", cut_in_iteration)
    with pytest.raises(KeyboardInterrupt):
        run_training(_cfg(), dataset=ds, features=feats, run_dir=tmp_path / "cut", feature_meta=META, progress=False,
                     tensorboard=True)
    monkeypatch.setattr(train_mod, "fit_model", real_fit)
    run_training(_cfg(), dataset=ds, features=feats, run_dir=tmp_path / "cut", feature_meta=META, progress=False,
                 tensorboard=True, resume=True)
    cut = _scalars(tmp_path / "cut" / "tensorboard")
    assert len(list((tmp_path / "cut" / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert set(cut) == set(full)
    for tag in set(full) - TIMING_TAGS:
        assert [s for s, _ in cut[tag]] == [s for s, _ in full[tag]], tag
        np.testing.assert_allclose([v for _, v in cut[tag]], [v for _, v in full[tag]], rtol=1e-6, err_msg=tag)
    run_training(_cfg(), dataset=ds, features=feats, run_dir=tmp_path / "cut", feature_meta=META, progress=False,
                 tensorboard=True, resume=True)  # a finished run resumed: nothing new, nothing twice
    again = _scalars(tmp_path / "cut" / "tensorboard")
    assert {tag: [s for s, _ in v] for tag, v in again.items()} == {tag: [s for s, _ in v] for tag, v in cut.items()}


WITHOUT_TENSORBOARD = """
import logging, sys
sys.modules["tensorboard"] = None  # as if the package were not installed: importing it raises ImportError
from support import make_dataset
from refineloc_e2e.training import tensorboard_log
from refineloc_e2e.training.refinement import run_training
from test_watch import META, _cfg, _data
assert not tensorboard_log.HAVE_TENSORBOARD and "tensorboard" not in [m.split(".")[0] for m in sys.modules
                                                                         if sys.modules[m] is not None]
logging.basicConfig(level=logging.INFO, format="LOG %(message)s", stream=sys.stdout)
res = run_training(_cfg(), dataset=_data()[0], features=_data()[1], run_dir=sys.argv[1], feature_meta=META,
                   progress=False, tensorboard=True)
print("ITERATIONS", len(res.metrics["iterations"]))
"""


def test_without_the_extra_one_line_and_nothing_else(tmp_path):
    """In a process where ``import tensorboard`` fails (whether or not this one has it): one line, no event files."""
    path = os.pathsep.join([str(TESTS / "training"), str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", WITHOUT_TENSORBOARD, str(tmp_path / "run")], cwd=TESTS / "training",
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": path})
    assert r.returncode == 0, r.stderr
    hints = [x for x in r.stdout.splitlines() if x.startswith("LOG ") and "tensorboard" in x.lower()]
    assert hints == ["LOG TensorBoard curves of this run: pip install 'refineloc-e2e[tensorboard]' (from a checkout: "
                     "pip install '.[tensorboard]'); metrics.json and report.png have the same figures"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == \
        [".train.lock", "config.yaml", "iter_0.pt", "iter_1.pt", "metrics.json", "model.pt"]
    assert "ITERATIONS 2" in r.stdout.splitlines()


def test_released_metric_per_protocol():
    thumos = {"tious": [0.1, 0.3, 0.5, 0.7], "map_per_tiou": [0.4, 0.3, 0.2, 0.1], "average_map": 0.25}
    assert tensorboard_log.released_metric(thumos) == ("mAP@0.5", pytest.approx(20.0))
    anet_tious = [round(0.5 + 0.05 * i, 2) for i in range(10)]
    anet = {"tious": anet_tious, "map_per_tiou": [0.1] * 10, "average_map": 0.1}
    assert tensorboard_log.released_metric(anet) == ("average mAP 0.5:0.95", pytest.approx(10.0))
    other = {"tious": [0.3, 0.7], "map_per_tiou": [0.2, 0.1], "average_map": 0.15}
    assert tensorboard_log.released_metric(other) == ("average mAP 0.3:0.7", pytest.approx(15.0))
    assert tensorboard_log.released_metric(None) is None


def test_cli_version_matches_changelog():
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", changelog, flags=re.M)
    assert released and r.output.strip() == f"refineloc-e2e, version {released[0]}"
    assert released == sorted(released, key=lambda v: tuple(map(int, v.split("."))), reverse=True)


def test_version_stays_out_of_cache_keys(tmp_path, monkeypatch):
    """A new package version keeps feature cache entries, fits in the fit cache and resumable runs valid: the
    version is recorded, never hashed into their keys. (The extraction memo of ``features.batch``, which only
    remembers how this code computes a settings hash, does depend on it: one model load after an upgrade.)"""
    write_features(tmp_path, "v1", np.zeros((3, 4), np.float32), {"settings_hash": "abc", "source": {}})
    src = tmp_path / "v1.mp4"
    src.write_bytes(b"x")
    meta = json.loads((tmp_path / "v1.json").read_text())
    st = src.stat()
    meta["source"] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    (tmp_path / "v1.json").write_text(json.dumps(meta))
    cfg = _cfg()
    items = [VideoItem("a", torch.zeros(3, 16), [0]), VideoItem("b", torch.ones(4, 16), [1])]
    key_kw = dict(head_cfg=cfg.head, cfg=cfg.train, n_classes=2, iteration=0, beta=0.0, class_weights=None)

    def keys():
        return (check_entry(tmp_path, "v1", source=src, settings_hash="abc")[0],
                fit_key(items[:1], items[1:], "features", **key_kw), settings_hash(to_dict(cfg)))

    before = keys()
    assert meta["package_version"] == refineloc_e2e.__version__ and before[0] is None
    for module in [m for name, m in sys.modules.items() if name.startswith("refineloc_e2e")]:
        if hasattr(module, "__version__"):
            monkeypatch.setattr(module, "__version__", "99.0.0")
    assert keys() == before
