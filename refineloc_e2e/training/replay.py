"""Our defaults replayed against the authors' released runs, and when a generated benchmark may vote on them.

The released runs (``evaluation.released_runs``) are the only real evidence about refinement here (issue 25).
Three replays put a default's rule on their logged figures:

- :func:`replay_fg_range`: the pseudo-label fg fractions every logged iteration trained on, through a
  ``pseudo.fg_fraction_range`` (the guard's range check): which would have been refused.
- :func:`replay_early_stopping`: per iteration, the epoch that ``train.early_stop_patience`` (``training.fit``'s
  rule: stop ``patience`` epochs after the lowest held-out loss, keep that epoch) would have kept from the logged
  per-epoch loss, and its logged score, against the full run's.
- :func:`replay_iteration_choice`: the iteration, and its score, that the config's ``select`` would have saved
  (``fixed``; a held-out criterion cannot be replayed: the logs have no held-out training videos).
- :func:`replay_guard`: the guard (both rules, ``guard.check_pseudo``) on the pseudo labels every logged iteration
  trained on, for a given iteration-0 held-out detection coverage c0 (not logged: :func:`coverage_bounds` gives the
  c0 under which the coverage rule alone would refuse a run; ``released_runs.VALID_DETECTION_COVERAGE`` a proxy).

:func:`admissibility` says whether a generated benchmark's run of the released form reproduces the logged shape of
the released I3D run of its layout (issue 25, "Benchmarks that behave like the real runs"); only an admissible
benchmark gets a vote on a default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from refineloc_e2e.evaluation.released_runs import ReleasedRun
from refineloc_e2e.training.guard import GuardConfig, check_pseudo
from refineloc_e2e.training.run_config import FIXED_SELECTS, RunConfig


def replay_fg_range(run: ReleasedRun, fg_range: Sequence[float] | None) -> list[tuple[int, float]]:
    """(iteration, fg fraction) of every logged pseudo-label set outside ``fg_range``: what the guard refuses."""
    if fg_range is None:
        return []
    lo, hi = fg_range
    return [(k, f) for k, f in enumerate(run.fg_fraction(), start=1) if not lo <= f <= hi]


@dataclass(frozen=True)
class EarlyStopReplay:
    iteration: int
    stopped_epoch: int | None     # 1-based epoch after which training stops (None: ran to the end)
    kept_epoch: int               # 1-based epoch kept under early stopping
    kept_score: float             # its logged test-split score (%)
    full_epoch: int               # 1-based epoch the full released run kept (lowest loss; ties to the later)
    full_score: float             # its logged score (%): the iteration's refined_avg_mAP

    @property
    def loss(self) -> float:
        return self.full_score - self.kept_score


def replay_early_stopping(run: ReleasedRun, patience: int) -> list[EarlyStopReplay]:
    """Per logged iteration: what ``early_stop_patience = patience`` keeps from the logged per-epoch loss."""
    out = []
    for k, (losses, scores) in enumerate(zip(run.valid_loss_by_epoch, run.valid_map_by_epoch)):
        best, stopped = 0, None
        for e in range(len(losses)):  # training.fit: strict improvement, stop ``patience`` epochs after the best
            if losses[e] < losses[best]:
                best = e
            if patience and e - best >= patience:
                stopped = e + 1
                break
        full = max(range(len(losses)), key=lambda e: (-losses[e], e))  # released train.py: ties go to the later
        out.append(EarlyStopReplay(k, stopped, best + 1, scores[best], full + 1, scores[full]))
    return out


def replay_iteration_choice(run: ReleasedRun, cfg: RunConfig) -> tuple[int, float]:
    """(iteration, logged score) that ``cfg``'s ``select`` saves: ``fixed`` (and ``fixed_wap``'s fixed part)
    saves ``select_iteration``, or the last iteration ``train.n_iterations`` runs, capped at the last one logged.
    Any other mode chooses on held-out figures the logs lack: ValueError."""
    if cfg.select not in FIXED_SELECTS:
        raise ValueError(f"select {cfg.select!r} chooses on held-out training videos, which the released logs do not "
                         f"have; only {FIXED_SELECTS} can be replayed")
    k = cfg.train.n_iterations if cfg.select_iteration is None else cfg.select_iteration
    k = min(k, len(run.map_by_iteration) - 1)
    return k, run.map_by_iteration[k]


def _trained_fractions(run: ReleasedRun, n_iterations: int) -> list[float]:
    """The pseudo-label fg fractions iterations 1..n trained on (at most the iterations the run trained)."""
    return run.fg_fraction()[:min(n_iterations, len(run.map_by_iteration) - 1)]


def replay_guard(run: ReleasedRun, guard: GuardConfig, fg_range, n_iterations: int,
                 reference_coverage: float) -> tuple[int, str] | None:
    """(iteration, reason) where the guard would have stopped the run (its first refused pseudo-label set among
    iterations 1..``n_iterations``) had iteration 0's held-out detection coverage been ``reference_coverage``;
    None when it trains them all."""
    for k, fg in enumerate(_trained_fractions(run, n_iterations), start=1):
        reason = check_pseudo(guard, fg, reference_coverage, fg_range, k)
        if reason:
            return k, reason
    return None


def coverage_bounds(run: ReleasedRun, ratio: float, n_iterations: int) -> tuple[float, float]:
    """(lo, hi): the coverage rule on its own (``coverage_rule: alone``) admits every pseudo-label set of iterations
    1..``n_iterations`` iff lo <= c0 <= hi; lo = max fg / ratio, hi = min fg * ratio."""
    fgs = _trained_fractions(run, n_iterations)
    return max(fgs) / ratio, min(fgs) * ratio


@dataclass(frozen=True)
class IterationFigures:
    """One iteration of a run, in the reference's terms: score in the layout's metric (%), and the pseudo labels
    it trained on (None for iteration 0): fg fraction, precision and recall against the annotations."""
    score: float
    fg_fraction: float | None = None
    precision: float | None = None
    recall: float | None = None


@dataclass(frozen=True)
class Criterion:
    name: str
    ok: bool
    detail: str


def admissibility(iterations: Sequence[IterationFigures], ref: ReleasedRun, *, label_tol: float = 0.1,
                  min_fg_change: float = 0.05, min_gain_abs: float = 1.0) -> list[Criterion]:
    """Issue 25's four tests of a run of the released form (iterations 0..n) against the released run ``ref``.

    1. iteration 1's pseudo fg fraction, precision and recall each within ``label_tol`` of the log's;
    2. fg(last) - fg(1) has the log's sign (same iteration count where the log has it) and moves >= ``min_fg_change``;
    3. every iteration 1..n scores at or above iteration 0;
    4. the best iteration gains at least half the log's relative gain (best over iteration 0) and ``min_gain_abs``.
    """
    if len(iterations) < 2 or iterations[1].fg_fraction is None:
        return [Criterion("run", False, "needs iteration 0 and at least one refinement iteration with pseudo labels")]
    n = len(iterations) - 1
    it1 = iterations[1]
    want = (ref.fg_fraction()[0], ref.precision()[0], ref.recall()[0])
    got = (it1.fg_fraction, it1.precision, it1.recall)
    labels_ok = all(g is not None and abs(g - w) <= label_tol for g, w in zip(got, want))
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    crit = [Criterion("labels@1", labels_ok, "fg/P/R " + "/".join(fmt(g) for g in got)
                      + " vs log " + "/".join(f"{w:.2f}" for w in want))]
    ref_fg = ref.fg_fraction()
    ref_delta = ref_fg[min(n, len(ref_fg)) - 1] - ref_fg[0]
    last = iterations[n].fg_fraction
    delta = None if last is None else last - it1.fg_fraction
    drift_ok = delta is not None and abs(delta) >= min_fg_change and (delta > 0) == (ref_delta > 0)
    crit.append(Criterion("drift", drift_ok, f"fg {n} - fg 1 = {'-' if delta is None else f'{delta:+.2f}'} "
                                             f"vs log {ref_delta:+.2f}"))
    scores = [it.score for it in iterations]
    below = [k for k in range(1, n + 1) if scores[k] < scores[0]]
    crit.append(Criterion("never below 0", not below,
                          "all >= iteration 0" if not below else f"below iteration 0 at {below}"))
    ref_gain = max(ref.map_by_iteration) / ref.map_by_iteration[0] - 1.0
    best = max(scores[1:])
    gain_rel = best / scores[0] - 1.0 if scores[0] > 0 else float("inf")
    gain_ok = gain_rel >= ref_gain / 2 and best - scores[0] >= min_gain_abs
    crit.append(Criterion("gain", gain_ok, f"best {best:.2f} vs {scores[0]:.2f} ({100 * gain_rel:+.1f} %) "
                                           f"vs needed {100 * ref_gain / 2:+.1f} % and +{min_gain_abs:g}"))
    return crit


def is_admissible(criteria: Sequence[Criterion]) -> bool:
    return all(c.ok for c in criteria)
