"""The authors' released runs as carried figures (evaluation.released_runs) and the replays of our defaults against
them (training.replay): issue 25. The figures come from the event files (``python -m
benchmarks.experiments.released_runs --logs ... --check`` compares them); here they are checked for consistency
with what the paper and the issue report, and the shipped configs are replayed through them."""

from __future__ import annotations

import pytest

from refineloc_e2e.config import shipped_config
from refineloc_e2e.evaluation.released_runs import REFERENCE_FOR_DATASET, RELEASED_RUNS
from refineloc_e2e.training.replay import (IterationFigures, admissibility, is_admissible, replay_early_stopping,
                                           replay_fg_range, replay_iteration_choice)
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
        assert max(truth) - min(truth) <= 1e-9 * n[0] + 0, run.name  # the annotations do not change
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
            k, score = replay_iteration_choice(run, cfg.train.n_iterations)
            assert k >= 1 and score >= run.map_by_iteration[0] + 1.0, (config, name)


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
