"""Detection-time attention_norm chosen per iteration from held-out coverage (training/detection_norm.py)."""

import numpy as np
import pytest

from refineloc_e2e.errors import ConfigError
from refineloc_e2e.model.postprocess import PostprocessConfig
from refineloc_e2e.training.detection_norm import choose_attention_norm, validate_candidates
from refineloc_e2e.training.run_config import load_run_config


def _scores(fg_prob):
    """One video, one class present everywhere (cas 0.9): only the attention filter decides coverage."""
    fg = np.asarray(fg_prob, dtype=np.float64)
    T = len(fg)
    return {"cas": np.stack([np.full(T, 0.9), np.full(T, 0.1)], axis=1),
            "attention_bf": np.stack([1 - fg, fg], axis=1), "attention_time": np.full(T, 1.0 / T),
            "video_scores": np.array([0.9, 0.1]), "attention_logodds": np.log(fg) - np.log(1 - fg)}


PP = PostprocessConfig(inflate_snippets=0, top_k=1)  # alpha_attention 0.5: fg probability >= 0.5 is kept


def test_high_attention_everywhere_switches_to_minmax():
    # fg probability 0.6-0.95 on all 20 snippets: "none" keeps all (coverage 1.0, outside [0.1, 0.5]);
    # min-max keeps the top half of the log-odds range: 6 of 20 snippets
    fg = np.r_[np.full(14, 0.6), np.full(6, 0.95)]
    post, rec = choose_attention_norm([_scores(fg)], PP, ["none", "minmax"], [0.1, 0.5])
    assert rec["coverage"] == {"none": 1.0, "minmax": pytest.approx(0.3)}
    assert post.attention_norm == "minmax" and rec["chosen"] == "minmax" and "in [0.10, 0.50]" in rec["reason"]
    assert post.alpha_attention == PP.alpha_attention and PP.attention_norm == "none"  # a copy, the rest kept


def test_plausible_coverage_keeps_the_first_candidate():
    fg = np.r_[np.full(14, 0.1), np.full(6, 0.95)]  # "none" covers 6 / 20 = 0.3: in range, kept
    post, rec = choose_attention_norm([_scores(fg)], PP, ["none", "minmax"], [0.1, 0.5])
    assert post.attention_norm == "none" and rec["coverage"]["none"] == pytest.approx(0.3)


def test_no_candidate_in_range_takes_the_closest():
    fg = np.r_[np.full(19, 0.1), [0.95]]  # "none" 0.05, "minmax" 0.05 too: a tie keeps the first
    post, rec = choose_attention_norm([_scores(fg)], PP, ["minmax", "none"], [0.1, 0.5])
    assert post.attention_norm == "minmax" and "closest" in rec["reason"]
    fg = np.full(20, 0.9)  # "none" covers all (distance 0.5); "minmax" of a constant video too: first kept
    post, rec = choose_attention_norm([_scores(fg)], PP, ["none", "minmax"], [0.1, 0.5])
    assert rec["coverage"] == {"none": 1.0, "minmax": 1.0} and post.attention_norm == "none"


def test_config_checks_name_the_key():
    with pytest.raises(ConfigError, match="attention_norm_candidates"):
        validate_candidates(["none", "zscore"], [0.1, 0.5])
    with pytest.raises(ConfigError, match="fg_fraction_range"):
        validate_candidates(["none", "minmax"], None)
    with pytest.raises(ConfigError, match="attention_norm_candidates"):
        load_run_config(None, ["attention_norm_candidates=[]", "pseudo.fg_fraction_range=[0.1, 0.5]"])


META = {"dim": 64, "fps": 25.0, "snippet_frames": 16, "streams": ["rgb", "flow"], "backbone": {}}


def _train(tmp_path, name, overrides):
    from support import make_dataset
    from refineloc_e2e.training.refinement import run_training

    ds, feats = make_dataset(n_train=24, n_test=8, dim=64, seed=3, t_range=(40, 90))
    cfg = load_run_config(None, ["dataset=synthetic", "head.feature_dim=64", "train.epochs=2", "train.batch_size=8",
                                 "train.holdout_fraction=0.25", "eval_tious=[0.5]", *overrides])
    return run_training(cfg, dataset=ds, features=feats, run_dir=tmp_path / name, feature_meta=META,
                        progress=False)


def test_training_writes_the_chosen_norm_into_each_iteration_and_its_model(tmp_path, one_thread):
    from refineloc_e2e.model.head import load_head

    res = _train(tmp_path, "run", ["train.n_iterations=1", "guard.enabled=false", "pseudo.fg_fraction_range=[0.0, 1.0]",
                                   "attention_norm_candidates=[none, minmax]"])
    for k, entry in enumerate(res.metrics["iterations"]):
        rec = entry["attention_norm"]
        assert rec["chosen"] == "none"  # the range [0, 1] admits anything: the first candidate
        assert set(rec["coverage"]) == {"none", "minmax"}
        assert entry["heldout"]["coverage"] == pytest.approx(rec["coverage"]["none"])
        assert load_head(tmp_path / "run" / f"iter_{k}.pt").postprocess_config.attention_norm == "none"
    res = _train(tmp_path, "run2", ["train.n_iterations=0", "pseudo.fg_fraction_range=[0.0, 1.0]",
                                    "attention_norm_candidates=[minmax]"])
    assert res.metrics["iterations"][0]["attention_norm"]["chosen"] == "minmax"
    assert load_head(tmp_path / "run2" / "model.pt").postprocess_config.attention_norm == "minmax"
    res = _train(tmp_path, "run3", ["train.n_iterations=0"])  # the option off: nothing recorded, as given
    assert "attention_norm" not in res.metrics["iterations"][0]
