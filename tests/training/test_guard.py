"""The refinement guard (training/guard.py): real training on generated data in both collapse directions and a
healthy refinement that passes; the decision rule on hand-made numbers; what is saved when refinement stops."""

import pytest

from support import make_dataset  # noqa: E402  (generated weakly-labelled features)
from refineloc_e2e.errors import ConfigError
from refineloc_e2e.model.head import HeadConfig
from refineloc_e2e.training.fit import TrainConfig
from refineloc_e2e.training.guard import GuardConfig, check_pseudo, coverage_warning
from refineloc_e2e.training.refinement import run_training
from refineloc_e2e.training.run_config import RunConfig, load_run_config

META = {"dim": 64, "fps": 25.0, "snippet_frames": 16, "streams": ["rgb", "flow"], "backbone": {}}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return make_dataset(n_train=40, n_test=12, dim=64, seed=3, t_range=(40, 90))


def _run(tmp_path, data, overrides, name):
    ds, feats = data
    base = RunConfig(dataset="synthetic", head=HeadConfig(feature_dim=64),
                     train=TrainConfig(epochs=12, batch_size=8, n_iterations=2, device="cpu", holdout_fraction=0.25),
                     eval_tious=[0.3, 0.5])
    cfg = base
    for key_value in overrides:  # dotted overrides on the dataclass, as --set does
        cfg = _with(cfg, key_value)
    return run_training(cfg, dataset=ds, features=feats, run_dir=tmp_path / name, feature_meta=META, progress=False)


def _with(cfg, key_value):
    import dataclasses
    key, value = key_value.split("=")
    *path, leaf = key.split(".")
    objs = [cfg]
    for p in path:
        objs.append(getattr(objs[-1], p))
    old = getattr(objs[-1], leaf)
    new = dataclasses.replace(objs[-1], **{leaf: (value == "True") if isinstance(old, bool) else type(old)(value)})
    for obj, p in zip(reversed(objs[:-1]), reversed(path)):
        new = dataclasses.replace(obj, **{p: new})
    return new


def test_healthy_refinement_passes_the_guard(tmp_path, data):
    # a form whose pseudo labels are sound on this data (precision >= 0.6 against the truth) and raise mAP
    res = _run(tmp_path, data, ["head.attention_time_input=logit", "pseudo.segment.alpha_attention=0.3"], "healthy")
    m = res.metrics
    assert "guard" not in m, m.get("guard")
    assert [e["iteration"] for e in m["iterations"]] == [0, 1, 2] and res.selected_iteration == 2
    c0 = m["iterations"][0]["heldout"]["coverage"]
    fg = [e["pseudo"]["fg_fraction"] for e in m["iterations"][1:]]
    assert 0.05 < c0 < 0.9 and all(c0 / 3 <= f <= 3 * c0 for f in fg), (c0, fg)
    assert all(e["pseudo"]["precision_vs_truth"] > 0.5 for e in m["iterations"][1:])  # sound labels
    maps = [e["test"]["map_per_tiou"][1] for e in m["iterations"]]
    assert maps[2] > maps[0]  # and refinement helps: the guard must let this through
    assert "not trained" not in res.table


@pytest.mark.parametrize("overrides, side", [
    # every snippet passes both filters: pseudo labels all foreground (iteration 0 covers 0.42 of the held-out
    # snippets here, so the ratio is 2: with 3 any fraction up to 1.26 would pass and only a range can catch it)
    (["pseudo.segment.alpha_attention=1.0", "pseudo.segment.alpha_class=0.0", "guard.coverage_ratio=2.0"],
     "too much"),
    # no snippet passes the attention filter (background probability <= 0): all background
    (["pseudo.segment.alpha_attention=0.0"], "too little"),
])
def test_collapsed_pseudo_labels_stop_refinement_and_keep_iteration_0(tmp_path, data, overrides, side):
    res = _run(tmp_path, data, overrides, "collapse")
    m, run = res.metrics, tmp_path / "collapse"
    assert m["guard"]["iteration"] == 1 and side in m["guard"]["reason"]
    fg = m["guard"]["pseudo"]["fg_fraction"]
    assert (fg > 0.9) if side == "too much" else (fg < 0.01)
    assert [e["iteration"] for e in m["iterations"]] == [0]  # iteration 1 was neither trained nor saved
    assert not (run / "iter_1.pt").exists() and res.selected_iteration == 0
    assert (run / "model.pt").read_bytes() == (run / "iter_0.pt").read_bytes()
    assert "the guard stopped refinement at iteration 1" in m["select_reason"]
    assert "1 not trained (guard): iteration 1's pseudo labels" in res.table
    # the same run with the guard off trains on the collapsed labels (what the guard prevents)
    off = _run(tmp_path, data, overrides + ["guard.enabled=False"], "off")
    assert "guard" not in off.metrics and off.selected_iteration == 2


def test_rule_range_then_coverage():
    g = GuardConfig(coverage_rule="with_range")  # the option of issue 32; the default is "alone" (below)
    assert check_pseudo(g, 0.30, 0.28, [0.1, 0.5], 1) is None
    assert "outside [0.10, 0.50]" in check_pseudo(g, 0.97, 0.90, [0.1, 0.5], 1)  # the range catches what
    assert "nearly all background" in check_pseudo(g, 0.012, None, [0.1, 0.5], 2)  # coverage alone would not
    assert "too much" in check_pseudo(g, 0.97, 0.30, None, 1)
    assert "too little" in check_pseudo(g, 0.09, 0.30, None, 1)
    assert check_pseudo(g, 0.11, 0.30, None, 1) is None  # within 3x
    assert check_pseudo(g, 0.9, 0.001, None, 1) is None  # no detections at iteration 0: no reference
    assert check_pseudo(GuardConfig(enabled=False), 0.99, 0.3, [0.1, 0.5], 1) is None
    # with a range, the coverage rule acts only together with it (issue 32): alone it warns, and the labels train
    assert check_pseudo(g, 0.75, 0.20, [0.05, 0.9], 1) is None
    assert coverage_warning(g, 0.75, 0.20, [0.05, 0.9], 1) == (
        "guard: iteration 1's pseudo labels are 0.750 foreground against iteration 0's held-out detection coverage "
        "0.200 (too much: more than 3x apart, guard.coverage_ratio); trained on: pseudo.fg_fraction_range admits "
        "them and the coverage rule refuses only together with it (guard.coverage_rule: with_range)")
    assert check_pseudo(g, 0.95, 0.20, [0.05, 0.9], 1) == (
        "iteration 1's pseudo labels are 0.950 foreground, outside [0.05, 0.90] (pseudo.fg_fraction_range): nearly "
        "all foreground; also 0.950 foreground against iteration 0's held-out detection coverage 0.200 (too much: "
        "more than 3x apart, guard.coverage_ratio)")
    assert coverage_warning(g, 0.95, 0.20, [0.05, 0.9], 1) is None  # refused: the reason says it
    assert coverage_warning(g, 0.50, 0.20, [0.05, 0.9], 1) is None  # within 3x
    alone = GuardConfig()  # the default, as in 0.3.0: either rule refuses
    assert alone.coverage_rule == "alone"
    assert "too much" in check_pseudo(alone, 0.75, 0.20, [0.05, 0.9], 1)
    assert coverage_warning(alone, 0.75, 0.20, [0.05, 0.9], 1) is None
    with pytest.raises(ConfigError, match="guard.coverage_rule"):
        load_run_config(None, ["guard.coverage_rule=sometimes"])
    with pytest.raises(ConfigError, match="guard.coverage_ratio"):
        load_run_config(None, ["guard.coverage_ratio=0.5"])
    with pytest.raises(ConfigError, match="guard.enabled"):
        load_run_config(None, ["guard.enabled=maybe"])


def test_shipped_paper_forms_have_no_guard_and_ours_do():
    from refineloc_e2e.config import shipped_config
    for name in ("thumos14-paper", "thumos14-released", "activitynet12-paper", "activitynet12-released"):
        assert load_run_config(shipped_config(name)).guard.enabled is False, name
    for name in ("thumos14", "activitynet12"):
        assert load_run_config(shipped_config(name)).guard.enabled is True, name
