"""The authors' released runs as carried figures (evaluation.released_runs) and the replays of our defaults against
them (training.replay): issue 25. The figures come from the event files (``python -m
benchmarks.experiments.released_runs --logs ... --check`` compares them); here they are checked for consistency
with what the paper and the issue report, and the shipped configs are replayed through them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from refineloc_e2e.config import shipped_config
from refineloc_e2e.errors import RefineLocError
from refineloc_e2e.evaluation import released_runs as rr
from refineloc_e2e.evaluation.released_runs import REFERENCE_FOR_DATASET, RELEASED_RUNS, VALID_DETECTION_COVERAGE
from refineloc_e2e.training.replay import (IterationFigures, admissibility, coverage_bounds, is_admissible,
                                           replay_early_stopping, replay_fg_range, replay_guard,
                                           replay_iteration_choice)
from refineloc_e2e.training.run_config import load_run_config


def test_figures_match_the_published_table():
    # paper Table 7b / the released logs' best_state: iteration 0 and the best refined score
    want = {"thumos14_i3d": (19.45, 23.12, 14), "thumos14_tsn": (2.91, 22.63, 4),
            "activitynet12_i3d": (9.66, 23.24, 3), "activitynet12_tsn": (13.80, 23.24, 2)}
    for name, (it0, best, best_it) in want.items():
        run = RELEASED_RUNS[name]
        assert run.map_by_iteration[0] == pytest.approx(it0, abs=0.005)
        assert run.best_iteration() == best_it
        assert run.map_by_iteration[best_it] == pytest.approx(best, abs=0.005)


def test_pseudo_label_statistics_are_consistent():
    for run in RELEASED_RUNS.values():
        n = [f + b for f, b in zip(run.pseudo_fg, run.pseudo_bg)]
        assert len(set(n)) == 1, run.name  # every iteration labels the same training snippets
        truth = [t + b - tb for t, b, tb in zip(run.true_fg, run.pseudo_bg, run.true_bg)]
        assert len(set(truth)) == 1, run.name  # the annotations do not change (snippet counts: exact)
        assert len(run.pseudo_fg) == len(run.map_by_iteration)  # one label set per trained iteration
        assert len(run.valid_loss_by_epoch) == len(run.map_by_iteration)
        assert all(len(e) == run.max_epoch for e in run.valid_loss_by_epoch)
    t = RELEASED_RUNS["thumos14_i3d"]
    assert t.fg_fraction()[0] == pytest.approx(0.75, abs=0.005)
    assert (t.precision()[0], t.recall()[0]) == (pytest.approx(0.348, abs=0.001), pytest.approx(0.932, abs=0.001))
    assert t.truth_fg_fraction() == pytest.approx(0.28, abs=0.005)
    assert RELEASED_RUNS["activitynet12_i3d"].truth_fg_fraction() == pytest.approx(0.63, abs=0.01)


def test_every_refined_score_is_the_lowest_loss_epochs_score():
    # the mapping of the tags: refined_avg_mAP of iteration k = valid/avg_mAP at the epoch of lowest valid/loss
    for run in RELEASED_RUNS.values():
        for r, logged in zip(replay_early_stopping(run, 0), run.map_by_iteration):
            assert r.stopped_epoch is None
            assert r.full_score == pytest.approx(logged, abs=1e-3)


@pytest.mark.parametrize("config, runs", [("thumos14", ["thumos14_i3d", "thumos14_tsn"]),
                                          ("activitynet12", ["activitynet12_i3d", "activitynet12_tsn"])])
def test_the_shipped_guard_range_refuses_no_logged_fraction(config, runs):
    cfg = load_run_config(shipped_config(config), [])
    assert cfg.guard.enabled
    for name in runs:
        assert replay_fg_range(RELEASED_RUNS[name], cfg.pseudo.fg_fraction_range) == [], name


def test_the_old_thumos14_range_refused_both_real_runs_at_iteration_1():
    # the range v0.2 shipped: it refused exactly what the released THUMOS'14 runs trained on first
    for name in ("thumos14_i3d", "thumos14_tsn"):
        refused = replay_fg_range(RELEASED_RUNS[name], [0.1, 0.5])
        assert refused and refused[0][0] == 1


def test_early_stopping_replay_reproduces_the_issue_figures():
    r = replay_early_stopping(RELEASED_RUNS["thumos14_i3d"], 3)
    assert (r[0].kept_epoch, r[0].full_epoch) == (11, 11)
    assert (r[1].stopped_epoch, r[1].kept_epoch, r[1].full_epoch) == (15, 12, 21)
    assert (round(r[1].kept_score, 2), round(r[1].full_score, 2)) == (19.27, 20.43)


def test_shipped_iteration_choice_saves_a_gain_on_every_released_run():
    for config in ("thumos14", "activitynet12"):
        cfg = load_run_config(shipped_config(config), [])
        for name, run in RELEASED_RUNS.items():
            if run.dataset != config:
                continue
            k, score = replay_iteration_choice(run, cfg)  # through the shipped select: a held-out mode cannot pass
            assert k >= 1 and score >= run.map_by_iteration[0] + 1.0, (config, name)


def test_the_iteration_replay_reads_select():
    run = RELEASED_RUNS["thumos14_i3d"]
    assert replay_iteration_choice(run, load_run_config(shipped_config("thumos14"), [])) == (3, run.map_by_iteration[3])
    assert replay_iteration_choice(run, load_run_config(shipped_config("thumos14-basnet-refined"), []))[0] == 5
    assert replay_iteration_choice(run, load_run_config(None, ["train.n_iterations=30"]))[0] == 19  # the last logged
    with pytest.raises(ValueError, match="select 'wap' chooses on held-out training videos"):
        replay_iteration_choice(run, load_run_config(shipped_config("thumos14-released"), []))


C0_GRID = [i / 100 for i in range(1, 101)]


@pytest.mark.parametrize("config", ["thumos14", "activitynet12"])
def test_the_with_range_option_refuses_no_released_run_whatever_its_coverage(config):
    """Iteration 0's held-out detection coverage c0 is not logged: with `guard.coverage_rule=with_range` (the option
    of issue 32) the shipped guard passes every released run of its dataset for any c0 (the range decides)."""
    assert load_run_config(shipped_config(config), []).guard.coverage_rule == "alone"  # the default (0.3.0's)
    cfg = load_run_config(shipped_config(config), ["guard.coverage_rule=with_range"])
    assert (cfg.guard.enabled, cfg.guard.coverage_rule, cfg.guard.coverage_ratio) == (True, "with_range", 3.0)
    for run in (r for r in RELEASED_RUNS.values() if r.dataset == config):
        for n in (cfg.train.n_iterations, len(run.map_by_iteration) - 1):  # the default's eta, and the whole run
            refused = [(c0, replay_guard(run, cfg.guard, cfg.pseudo.fg_fraction_range, n, c0)) for c0 in C0_GRID]
            assert [r for r in refused if r[1] is not None] == [], (run.name, n)


def test_the_default_coverage_rule_against_the_released_runs():
    """What the shipped rule (either rule refuses, as in 0.3.0) allows: the bounds on c0 in docs/refinement.md."""
    cfg = load_run_config(shipped_config("thumos14"), [])
    guard, fg_range, n = cfg.guard, cfg.pseudo.fg_fraction_range, cfg.train.n_iterations
    i3d, tsn = RELEASED_RUNS["thumos14_i3d"], RELEASED_RUNS["thumos14_tsn"]
    assert [round(b, 3) for b in coverage_bounds(i3d, 3.0, n)] == [0.250, 1.251]
    assert [round(b, 3) for b in coverage_bounds(tsn, 3.0, n)] == [0.195, 0.765]
    assert [round(b, 3) for b in coverage_bounds(tsn, 3.0, 7)] == [0.195, 0.375]  # its 7 trained iterations
    assert replay_guard(i3d, guard, fg_range, n, 0.249)[0] == 1 and "too much" in replay_guard(i3d, guard, fg_range,
                                                                                                n, 0.249)[1]
    assert replay_guard(i3d, guard, fg_range, n, 0.251) is None
    assert replay_guard(tsn, guard, fg_range, n, 0.194)[0] == 1 and replay_guard(tsn, guard, fg_range, n, 0.196) is None
    assert i3d.truth_fg_fraction() == pytest.approx(0.28, abs=0.005)  # the bound is 0.89x the annotated share
    # ActivityNet I3D: its published validation predictions (the proxy for c0) cover what its pseudo labels do
    an = RELEASED_RUNS["activitynet12_i3d"]
    c0 = VALID_DETECTION_COVERAGE["activitynet12_i3d"][0]
    assert an.fg_fraction()[0] / c0 == pytest.approx(1.0, abs=0.005)
    an_cfg = load_run_config(shipped_config("activitynet12"), [])
    assert replay_guard(an, an_cfg.guard, an_cfg.pseudo.fg_fraction_range, len(an.map_by_iteration) - 1, c0) is None


def _figs(scores, fgs, p1=0.35, r1=0.93):
    it = [IterationFigures(scores[0])]
    for k, (s, f) in enumerate(zip(scores[1:], fgs), start=1):
        it.append(IterationFigures(s, f, p1 if k == 1 else 0.5, r1 if k == 1 else 0.8))
    return it


def test_admissibility_on_a_small_fixture():
    ref = RELEASED_RUNS[REFERENCE_FOR_DATASET["thumos14"]]
    good = _figs([20.0, 21.0, 22.5, 22.0, 22.4, 22.2], [0.74, 0.50, 0.45, 0.41, 0.38])
    assert is_admissible(admissibility(good, ref))
    cases = {
        "labels@1": _figs([20.0, 21.0, 22.5, 22.0, 22.4, 22.2], [0.95, 0.50, 0.45, 0.41, 0.38]),
        "drift": _figs([20.0, 21.0, 22.5, 22.0, 22.4, 22.2], [0.74, 0.76, 0.75, 0.77, 0.76]),
        "never below 0": _figs([20.0, 19.9, 22.5, 22.0, 22.4, 22.2], [0.74, 0.50, 0.45, 0.41, 0.38]),
        "gain": _figs([20.0, 20.5, 21.0, 20.8, 21.5, 20.2], [0.74, 0.50, 0.45, 0.41, 0.38]),  # +7.5 % < 9.4 %
    }
    for failing, figs in cases.items():
        crit = {c.name: c.ok for c in admissibility(figs, ref)}
        assert not crit[failing] and all(ok for name, ok in crit.items() if name != failing), failing
    # ActivityNet's run drifts UP: a falling fg fraction is the wrong shape there
    anet = RELEASED_RUNS[REFERENCE_FOR_DATASET["activitynet12"]]
    crit = {c.name: c.ok for c in admissibility(_figs([5.0, 8, 9, 9, 9, 9], [0.78, 0.7, 0.6, 0.6, 0.6], 0.73, 0.9),
                                                anet)}
    assert crit["labels@1"] and not crit["drift"] and crit["gain"]
    assert not is_admissible(admissibility([IterationFigures(3.0)], ref))


def test_figures_are_package_data_read_on_first_use():
    # a fresh interpreter: importing the module (and the run report, which every `train` imports) reads nothing;
    # the first use reads the file once, and the module's names come from it
    code = ("import refineloc_e2e.training.run_report as report\n"
            "from refineloc_e2e.evaluation import released_runs as rr\n"
            "assert rr.document.cache_info().currsize == 0\n"
            "assert report.reference_run('thumos14').name == 'thumos14_i3d'\n"
            "assert rr.RELEASED_RUNS is rr.load_runs() and rr.LOGGED is rr.document()['runs']\n"
            "assert rr.document.cache_info().misses == 1\n"
            "print(rr.SOURCE_REPO, rr.SOURCE_COMMIT, rr.RELEASED_RUNS['thumos14_tsn'].source)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["HumamAlwassel/RefineLoc", "75e7ad8", "HumamAlwassel/RefineLoc@75e7ad8:trained_models/"
                                "thumos14/best_model_untrimmednet/events.out.tfevents.1573695234.kw60623"]
    assert rr.DATA_FILE == Path(rr.__file__).parents[1] / "data" / "released_runs.json"
    with pytest.raises(AttributeError, match="has no attribute 'NOT_THERE'"):
        rr.NOT_THERE  # noqa: B018


@pytest.mark.parametrize("content, problem", [
    (None, "cannot read the released runs' figures ([Errno 2] No such file or directory"),
    ('{"runs": {', "cannot read the released runs' figures (Expecting property name"),
    ('{"runs": {}}', "not the released runs' figures (expected an object with 'source' and 'runs')"),
])
def test_a_broken_data_file_is_named(tmp_path, monkeypatch, content, problem):
    path = tmp_path / "released_runs.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setattr(rr, "DATA_FILE", path)
    rr.document.cache_clear()
    rr.load_runs.cache_clear()
    try:
        with pytest.raises(RefineLocError) as e:
            rr.load_runs()
        assert str(e.value).startswith(f"{path}: {problem}") and str(e.value).endswith("; reinstall refineloc-e2e")
    finally:
        rr.document.cache_clear()
        rr.load_runs.cache_clear()
