"""Tests of training with iterative refinement: eq. 4, fitting, selection, configs, runs and resume."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from refineloc_e2e import device as device_mod
from refineloc_e2e.datasets import Dataset, Segment, VideoAnnotation
from refineloc_e2e.errors import ConfigError
from refineloc_e2e.model.head import HeadConfig, load_head
from refineloc_e2e.training.fit import Batch, TrainConfig, VideoItem, collate, eq4_loss, fit_model, mean_loss
from refineloc_e2e.timebase import snippet_to_seconds
from refineloc_e2e.model.inference import predict_batch, predict_scores
from refineloc_e2e.training import fit as fit_mod
from support import CONFIGS, make_dataset  # noqa: E402  (generated weakly-labelled features)
from refineloc_e2e.training.guard import GuardConfig
from refineloc_e2e.training.refinement import run_training
from refineloc_e2e.training.run_config import RunConfig, load_run_config

META = {"dim": 32, "fps": 25.0, "snippet_frames": 16, "streams": ["rgb", "flow"], "backbone": {}}
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def _items(ds, feats, subset="train"):
    return [VideoItem(v.video_id, torch.from_numpy(feats[v.video_id]), [ds.class_index(lab) for lab in v.labels])
            for v in ds.subset(subset)]


def _cfg(dim=32, epochs=3, n_iterations=2, **train):
    # the guard off: 3-epoch toy models give collapsed pseudo labels, and these tests check the loop's
    # mechanics (resume, files, selection); tests/training/test_guard.py tests the guard
    return RunConfig(dataset="synthetic", head=HeadConfig(feature_dim=dim),
                     train=TrainConfig(epochs=epochs, batch_size=8, n_iterations=n_iterations, device="cpu", **train),
                     select_iteration=min(3, n_iterations), eval_tious=[0.3, 0.5], guard=GuardConfig(enabled=False))


# ------------------------------------------------------------------------------------------ configs

def test_shipped_configs_load_with_paper_values():
    th = load_run_config(CONFIGS / "thumos14.yaml")
    # beta 2: paper supplementary Table 6b (I3D) and the released run; held-out selection (issue 12)
    assert (th.train.lr, th.train.epochs, th.train.lr_decay, th.pseudo.beta, th.pseudo.sample_fraction) == \
        (1e-3, 50, 0.9, 2.0, 0.8)
    # issue 25: the paper's form where the released runs decide (fixed eta = 3, no early stopping, the 2-snippet
    # pseudo-label inflation); the logit time input, the guard with a range that admits every logged fraction
    assert (th.select, th.select_iteration, th.head.attention_time_input) == ("fixed", 3, "logit")
    assert th.postprocess.attention_norm == th.pseudo.segment.attention_norm == "none" and th.guard.enabled
    assert th.train.early_stop_patience == 0  # patience 3 loses in the replay on the released THUMOS'14 runs
    assert (th.postprocess.alpha_attention, th.postprocess.alpha_class, th.postprocess.top_k) == (0.5, 0.35, 2)
    # pseudo labels: the released thresholds and the paper's inflation (detection inflates too)
    assert (th.pseudo.segment.alpha_attention, th.pseudo.segment.alpha_class) == (0.08, 0.1)
    assert (th.pseudo.segment.inflate_snippets, th.postprocess.inflate_snippets) == (2, 2)
    # the default is exactly the paper's form with these changes, each measured (docs/refinement.md, issue 25)
    paper = load_run_config(CONFIGS / "thumos14-paper.yaml", ["pseudo.fg_fraction_range=[0.05, 0.9]",
                                                               "head.attention_time_input=logit",
                                                               "guard.enabled=true",
                                                               "attention_norm_candidates=[none, minmax]",
                                                               "detection_coverage_range=[0.1, 0.5]"])
    assert paper == th
    an = load_run_config(CONFIGS / "activitynet12.yaml")
    assert (an.train.lr, an.postprocess.alpha_class, an.select, an.select_iteration) == (1e-4, 0.005, "fixed", 3)


def test_config_rejects_unknown_keys_and_wrong_types(tmp_path):
    with pytest.raises(ConfigError, match="train.lrr"):
        load_run_config(None, ["train.lrr=0.1"])
    with pytest.raises(ConfigError, match="train.epochs"):
        load_run_config(None, ["train.epochs=ten"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("pseudo:\n  segment:\n    alpha_clas: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*pseudo.segment.alpha_clas"):
        load_run_config(bad)
    with pytest.raises(ConfigError, match="select"):
        load_run_config(None, ["select=best_test_map"])
    # a select_iteration the user writes in their own --config file is checked (issue 32); one inherited from a
    # shipped base is not in the way of a shortened run (tests/e2e/test_cli_pipeline.py)
    assert load_run_config(CONFIGS / "thumos14.yaml", ["train.n_iterations=1"]).select_iteration is None
    own = tmp_path / "own.yaml"
    own.write_text("base: thumos14\nselect_iteration: 3\ntrain:\n  n_iterations: 1\n")
    with pytest.raises(ConfigError, match=r"own.yaml \(with its bases .*'select_iteration' = 3 is outside"):
        load_run_config(own)
    # a partial pseudo.segment override keeps the pseudo defaults (not the detection ones)
    cfg = load_run_config(None, ["pseudo.segment.alpha_class=0.2"])
    assert (cfg.pseudo.segment.alpha_class, cfg.pseudo.segment.alpha_attention) == (0.2, 0.08)
    if not torch.cuda.is_available():  # no silent CPU fallback
        with pytest.raises(ConfigError, match="CUDA"):
            device_mod.resolve_device("cuda")
    assert device_mod.resolve_device("cpu") == CPU


# ------------------------------------------------------------------------------------------- eq. 4

def test_eq4_by_hand():
    ln3 = math.log(3.0)
    raw = {"cas_logits": torch.zeros(1, 3, 2),  # y-hat = [.5, .5]
           "attention_logits": torch.tensor([[[0.0, ln3], [ln3, 0.0], [0.0, 0.0]]])}  # fg .75, .25, (pad)
    batch = Batch(valid=torch.zeros(2, 4), mask=torch.tensor([[True, True, False]]),
                  targets=torch.tensor([[1.0, 0.0]]), pseudo=torch.tensor([[1, 1, 0]]),
                  sampled=torch.tensor([[True, True, False]]))
    w = torch.tensor([0.5, 2.0])
    total, video, pseudo = eq4_loss(raw, batch, w, beta=4.0)
    ce = 2.0 * -math.log(0.75) + 2.0 * -math.log(0.25)  # both snippets labelled fg, weight w[1]
    assert float(video) == pytest.approx(math.log(2))
    assert float(pseudo) == pytest.approx(ce / 2)
    assert float(total) == pytest.approx(math.log(2) + 4.0 * ce / 2)
    # an unsampled snippet leaves the loss; padding never enters it
    batch.sampled = torch.tensor([[True, False, False]])
    assert float(eq4_loss(raw, batch, w, 4.0)[2]) == pytest.approx(2.0 * -math.log(0.75))
    # all-background pseudo labels: finite
    batch.pseudo = torch.zeros(1, 3, dtype=torch.long)
    assert torch.isfinite(eq4_loss(raw, batch, torch.ones(2), 4.0)[0]).all()
    # iteration 0: no pseudo part
    t0, v0, p0 = eq4_loss(raw, batch, None, 4.0)
    assert torch.equal(t0, v0) and float(p0) == 0.0


# ------------------------------------------------------------------------------------------ fitting

def test_overfits_one_batch():
    ds, feats = make_dataset(n_train=6, n_test=0, dim=32, seed=3)
    items = _items(ds, feats)
    res = fit_model(items, [], n_classes=4, head_cfg=HeadConfig(feature_dim=32),
                    cfg=TrainConfig(epochs=150, batch_size=8, lr=1e-2), iteration=0, beta=0.0,
                    class_weights=None, device=CPU, progress=False)
    assert res.train_losses[-1] < 0.05 < res.train_losses[0]


def test_best_epoch_is_a_copy_not_the_live_weights():
    ds, feats = make_dataset(n_train=24, n_test=0, dim=32, seed=4)
    items = _items(ds, feats)
    held = [dataclasses.replace(it, label_indices=[(it.label_indices[0] + 1) % 4]) for it in items[:6]]  # wrong labels
    res = fit_model(items[6:], held, n_classes=4, head_cfg=HeadConfig(feature_dim=32),
                    cfg=TrainConfig(epochs=12, batch_size=8, lr=1e-2), iteration=0, beta=0.0,
                    class_weights=None, device=CPU, progress=False)
    assert res.best_epoch < 11  # held-out loss rises while the model learns the true labels
    assert res.best_heldout_loss == pytest.approx(min(res.heldout_losses))
    again, _ = mean_loss(res.model, held, 4, CPU, None, 0.0, 8)
    assert again == pytest.approx(res.best_heldout_loss, rel=1e-6)  # the returned weights ARE the best epoch's
    assert again < res.heldout_losses[-1] - 1e-3


def test_fit_is_bitwise_repeatable_with_a_seed():
    ds, feats = make_dataset(n_train=10, n_test=0, dim=32, seed=5)
    items = _items(ds, feats)
    kw = dict(n_classes=4, head_cfg=HeadConfig(feature_dim=32, dropout=0.3),
              cfg=TrainConfig(epochs=3, batch_size=4), iteration=1, beta=0.0, class_weights=None,
              device=CPU, progress=False)
    a, b = fit_model(items[:8], items[8:], **kw), fit_model(items[:8], items[8:], **kw)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k


def test_predict_scores_shapes_and_consistency():
    ds, feats = make_dataset(n_train=4, n_test=0, dim=32, seed=6)
    items = _items(ds, feats)
    res = fit_model(items, [], n_classes=4, head_cfg=HeadConfig(feature_dim=32), cfg=TrainConfig(epochs=1),
                    iteration=0, beta=0.0, class_weights=None, device=CPU, progress=False)
    x = feats[items[0].video_id]
    s = predict_scores(res.model, x, "cpu")
    T = x.shape[0]
    assert s["cas"].shape == (T, 4) and s["attention_bf"].shape == (T, 2)
    assert s["attention_time"].shape == (T,) and s["video_scores"].shape == (4,)
    batched = predict_batch(res.model, [feats[it.video_id] for it in items], "cpu")
    np.testing.assert_allclose(batched[0]["video_scores"], s["video_scores"], atol=1e-6)
    with pytest.raises(ValueError):
        predict_scores(res.model, x[:0], "cpu")


def test_collate_pads_and_masks():
    items = [VideoItem("a", torch.ones(3, 4), [0], np.array([1, 0, 1], np.uint8), np.array([True, True, False])),
             VideoItem("b", torch.ones(5, 4), [1, 2], np.zeros(5, np.uint8), np.ones(5, bool))]
    b = collate(items, 3, CPU)
    assert b.valid.shape == (8, 4) and b.mask.shape == (2, 5) and b.mask.sum().item() == 8
    assert b.sampled[0].tolist() == [True, True, False, False, False]
    torch.testing.assert_close(b.targets[1], torch.tensor([0.0, 0.5, 0.5]))


# ------------------------------------------------------------------------------------------- runs

def test_run_folder_resume_equals_uninterrupted(tmp_path, monkeypatch):
    ds, feats = make_dataset(n_train=16, n_test=6, dim=32, seed=7, t_range=(20, 50))
    cfg = _cfg()
    full = run_training(cfg, dataset=ds, features=feats, run_dir=tmp_path / "full", feature_meta=META,
                        progress=False)
    for name in ("config.yaml", "iter_0.pt", "iter_1.pt", "iter_2.pt", "metrics.json", "model.pt"):
        assert (tmp_path / "full" / name).is_file(), name
    for e in full.metrics["iterations"]:  # seconds per stage (benchmarks/speed/iteration_speed.py reads them)
        assert set(e["timing"]) == {"pseudo_s", "fit_s", "heldout_proxy_s", "test_s"}
        assert sum(e["timing"].values()) <= e["wall_s"] and e["timing"]["fit_s"] > 0
    real_fit = fit_mod.fit_model

    def crash_on_2(*a, **kw):
        if kw["iteration"] == 2:
            raise KeyboardInterrupt
        return real_fit(*a, **kw)

    import refineloc_e2e.training.refinement as train_mod
    monkeypatch.setattr(train_mod, "fit_model", crash_on_2)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, dataset=ds, features=feats, run_dir=tmp_path / "cut", feature_meta=META, progress=False)
    monkeypatch.setattr(train_mod, "fit_model", real_fit)
    assert not (tmp_path / "cut" / "iter_2.pt").exists()
    with pytest.raises(ConfigError, match="resume"):
        run_training(cfg, dataset=ds, features=feats, run_dir=tmp_path / "cut", feature_meta=META, progress=False)
    other = dataclasses.replace(cfg, pseudo=dataclasses.replace(cfg.pseudo, beta=2.0))
    with pytest.raises(ConfigError, match="different configuration"):
        run_training(other, dataset=ds, features=feats, run_dir=tmp_path / "cut", feature_meta=META,
                     progress=False, resume=True)
    resumed = run_training(cfg, dataset=ds, features=feats, run_dir=tmp_path / "cut", feature_meta=META,
                           progress=False, resume=True)
    for k in range(3):
        a = load_head(tmp_path / "full" / f"iter_{k}.pt").model.state_dict()
        b = load_head(tmp_path / "cut" / f"iter_{k}.pt").model.state_dict()
        assert all(torch.equal(a[n], b[n]) for n in a), k
    strip = lambda its: [{k: v for k, v in e.items() if k not in ("wall_s", "timing", "epoch_s")} for e in its]  # noqa: E731
    assert strip(full.metrics["iterations"]) == strip(resumed.metrics["iterations"])
    assert (tmp_path / "cut" / "model.pt").read_bytes() == (tmp_path / "cut" / "iter_2.pt").read_bytes()


@pytest.mark.slow
def test_end_to_end_refinement_on_generated_data(tmp_path):
    ds, feats = make_dataset(n_train=60, n_test=30, dim=64, seed=0)
    cfg = RunConfig(dataset="synthetic", head=HeadConfig(feature_dim=64),
                    train=TrainConfig(epochs=40, batch_size=8, n_iterations=3, device="cpu"),
                    eval_tious=[0.1, 0.3, 0.5, 0.7])
    res = run_training(cfg, dataset=ds, features=feats, run_dir=tmp_path / "run",
                       feature_meta={**META, "dim": 64}, progress=False)
    its = res.metrics["iterations"]
    train_ids = {v.video_id for v in ds.subset("train")}
    assert set(res.metrics["heldout_video_ids"]) <= train_ids and len(res.metrics["heldout_video_ids"]) == 6
    assert its[0]["test"]["n_detections"] > 0  # no attention-level drift: iteration 0 detects actions
    for e in its[1:]:
        p = e["pseudo"]
        assert p["n_videos"] == len(train_ids)  # pseudo labels on training videos only
        assert 0.05 < p["fg_fraction"] < 0.6  # no collapse
        assert p["precision_vs_truth"] > 0.5 and p["recall_vs_truth"] > 0.8
        assert all(np.isfinite(p["class_weights"]))
    map05 = [e["test"]["map_per_tiou"][2] for e in its]
    assert its[0]["test"]["tious"][2] == 0.5
    # The refined model beats iteration 0 at tIoU 0.5 on this seed (69.1 -> 80.2). Honest caveat: over
    # seeds 0-4 of this generator the mean is 66.8 -> 69.8 with beta=4, but 66.8 -> 69.2 with beta=0
    # (fresh re-initialisation only), so this is a regression check, not evidence that refinement helps.
    assert map05[res.selected_iteration] > map05[0]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["selected_iteration"] == 3 and not saved["uses_strong_annotation_statistics"]
    rows = res.table.splitlines()  # returned, not printed: the CLI prints it
    assert rows[0].split()[0] == "iter" and [r[:5] for r in rows[1:]] == ["    0", "    1", "    2", "*   3"]


def test_inherited_select_iteration_beyond_the_run_saves_the_last(tmp_path, caplog):
    """A fixed eta that a SHIPPED config sets (thumos14 inherits the paper's 3) does not block a shorter run: the
    last iteration is saved and one line says so; within the run it stays (issue 32)."""
    with caplog.at_level("INFO", logger="refineloc_e2e"):
        cfg = load_run_config(CONFIGS / "thumos14.yaml", ["train.n_iterations=1"])
    assert (cfg.select, cfg.select_iteration) == ("fixed", None)
    lines = [r.getMessage() for r in caplog.records if "select_iteration" in r.getMessage()]
    assert lines == ["select_iteration = 3 (thumos14-paper.yaml) is beyond train.n_iterations = 1: the last "
                     "iteration (1) is saved"]
    assert load_run_config(CONFIGS / "thumos14.yaml", ["train.n_iterations=4"]).select_iteration == 3
    # a user's file whose base is shipped inherits the same way; only its own keys are the user's
    own = tmp_path / "own.yaml"
    own.write_text("base: thumos14-basnet-refined\ntrain:\n  n_iterations: 2\n")
    assert load_run_config(own).select_iteration is None
    own.write_text("base: thumos14-basnet-refined\ntrain:\n  n_iterations: 6\n")
    assert load_run_config(own).select_iteration == 5
