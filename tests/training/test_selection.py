"""Which iteration is saved (training/selection.py), including select: heldout_map on a real run."""

import pytest

from support import make_dataset  # noqa: E402  (generated weakly-labelled features)
from refineloc_e2e.errors import DatasetError
from refineloc_e2e.model.head import HeadConfig
from refineloc_e2e.training.fit import TrainConfig
from refineloc_e2e.training.guard import GuardConfig
from refineloc_e2e.training.refinement import run_training
from refineloc_e2e.training.run_config import RunConfig
from refineloc_e2e.training.selection import select_iteration

META = {"dim": 32, "fps": 25.0, "snippet_frames": 16, "streams": ["rgb", "flow"], "backbone": {}}
pytestmark = pytest.mark.usefixtures("one_thread")


def _its(values, key="heldout_map"):
    return [{"iteration": k, "heldout_video_loss": 1.0, "train_loss": 1.0, "heldout": {key: v}}
            for k, v in enumerate(values)]


def test_fixed_follows_the_run_length_and_the_guard():
    its = _its([0.1, 0.2, 0.3])
    assert select_iteration(its, "fixed", None) == (2, "fixed: the last iteration (2)")
    assert select_iteration(its, "fixed", 1) == (1, "fixed: select_iteration = 1")
    stop = {"iteration": 1, "reason": "iteration 1's pseudo labels are 0.970 foreground"}
    k, why = select_iteration(its[:1], "fixed", 3, stop)
    assert k == 0 and "select_iteration = 3 was not reached" in why and "0.970 foreground" in why


def test_fixed_wap_keeps_eta_unless_the_held_out_videos_show_it_worse():
    # saturated held-out wAP (every iteration detects all ~20 held-out videos): the paper's eta, not iteration 0
    k, why = select_iteration(_its([1.0, 1.0, 1.0, 1.0], "wap"), "fixed_wap", 3, margin=0.05)
    assert k == 3 and why.startswith("fixed_wap: fixed: select_iteration = 3")
    # within the margin: still eta
    assert select_iteration(_its([0.80, 0.90, 0.88, 0.86], "wap"), "fixed_wap", 3, margin=0.05)[0] == 3
    # more than the margin below an earlier iteration: that one (the earliest of equals)
    k, why = select_iteration(_its([0.80, 0.90, 0.90, 0.70], "wap"), "fixed_wap", 3, margin=0.05)
    assert k == 1 and "more than 5 below iteration 1's 90.00" in why
    # the guard stopped refinement before eta: the last sound iteration, checked the same way
    stop = {"iteration": 2, "reason": "iteration 2's pseudo labels are 0.970 foreground"}
    k, why = select_iteration(_its([0.9, 0.7], "wap"), "fixed_wap", 3, stop, margin=0.05)
    assert k == 0 and "0.970 foreground" in why
    assert select_iteration(_its([0.9, 0.95], "wap"), "fixed_wap", 3, stop, margin=0.05)[0] == 1
    # no held-out videos: the fixed iteration
    assert select_iteration(_its([None, None], "wap"), "fixed_wap", None)[0] == 1


def test_heldout_map_picks_the_best_earliest_and_says_what_it_uses():
    k, why = select_iteration(_its([0.30, 0.42, 0.42, 0.35]), "heldout_map", None)
    assert k == 1 and "temporal annotations 42.00" in why and "iteration 0: 30.00" in why
    assert select_iteration(_its([None, None]), "heldout_map", None)[0] == 0


def test_heldout_map_on_a_real_run(tmp_path):
    ds, feats = make_dataset(n_train=24, n_test=6, dim=32, seed=5, t_range=(30, 60))
    cfg = RunConfig(dataset="synthetic", head=HeadConfig(feature_dim=32), select="heldout_map",
                    train=TrainConfig(epochs=4, batch_size=8, n_iterations=2, device="cpu", holdout_fraction=0.25),
                    eval_tious=[0.5], guard=GuardConfig(enabled=False))
    res = run_training(cfg, dataset=ds, features=feats, run_dir=tmp_path / "run", feature_meta=META, progress=False)
    values = [e["heldout"]["heldout_map"] for e in res.metrics["iterations"]]
    assert all(v is not None and 0.0 <= v <= 1.0 for v in values)
    assert res.selected_iteration == values.index(max(values))
    assert res.metrics["uses_strong_annotations_for_selection"] is True
    # without held-out videos there is nothing to score: a clear error, not a silent iteration 0
    no_held = RunConfig(**{**cfg.__dict__, "train": TrainConfig(epochs=2, batch_size=8, n_iterations=1,
                                                               device="cpu", holdout_fraction=0.0)})
    with pytest.raises(DatasetError, match="heldout_map.*held-out training videos with temporal annotations"):
        run_training(no_held, dataset=ds, features=feats, run_dir=tmp_path / "r2", feature_meta=META, progress=False)


def test_a_margin_keeps_the_earlier_iteration_unless_the_rise_is_real():
    its = _its([0.70, 0.733, 0.60], key="wap")  # one held-out video's worth of rise, then a fall
    assert select_iteration(its, "wap", None)[0] == 1
    assert select_iteration(its, "wap", None, margin=0.05)[0] == 0
    its = _its([0.34, 0.43, 0.37], key="wap")
    assert select_iteration(its, "wap", None, margin=0.05)[0] == 1
