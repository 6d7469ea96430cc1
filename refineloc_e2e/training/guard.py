"""The refinement guard: pseudo labels that a run's own diagnostics call broken are not trained on.

Refinement retrains on the previous model's snippet-level pseudo labels. When those labels collapse (nearly
every snippet foreground, or nearly none), the next model learns the collapse and refinement lowers mAP, and
the fixed eta of the paper then saves the worst iteration (issue 17: 2.74 -> 1.30 mAP@0.5 with 97 % foreground
pseudo labels). The guard decides before training iteration k >= 1, from data the run may look at:

- **coverage**: the pseudo-label foreground fraction against iteration 0's own detection coverage on the
  held-out TRAINING videos (the fraction of their snippets that iteration 0's detections cover: weak
  supervision only, no prior). Outside ``[c0 / coverage_ratio, c0 * coverage_ratio]`` is implausible: pseudo
  labels that disagree that much with what the model itself detects come from a threshold, not the data.
- **range**: outside ``pseudo.fg_fraction_range``, a prior the dataset's config states (THUMOS'14 truth
  is ~0.25-0.3 of snippets, ActivityNet's most of a video).

By default either rule refuses (``coverage_rule: alone``, as in 0.3.0). Held against the released runs
(docs/refinement.md "The coverage rule against the released runs"), the coverage rule would have refused the
THUMOS'14 I3D run the defaults rest on only had its iteration 0 covered less than 0.25 of the held-out snippets
(0.89x the annotated share), which nothing published shows; on ActivityNet the published predictions put it at
1.0x. The option ``coverage_rule: with_range`` (issue 32) lets the coverage rule refuse only together with
``pseudo.fg_fraction_range`` where one is stated, naming it in a warning otherwise: it never refuses a released run
whatever its coverage, but on the generated ``noisy`` member it saved below iteration 0 (worst -0.68 mAP@0.5), so it
is not the default.

An implausible iteration is recorded with its reason, is neither trained nor saved, refinement stops there,
and the saved model comes from the sound iterations (``selection.select_iteration``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from refineloc_e2e.errors import ConfigError


COVERAGE_RULES = ("with_range", "alone")


@dataclass
class GuardConfig:
    # ours (issue 17); the paper and the released code have no guard (their configs set enabled: false)
    enabled: bool = True
    # pseudo fg fraction must lie within [c0 / r, c0 * r] of iteration 0's held-out detection coverage c0
    # (None: no coverage check). 3.0: healthy refinements on the benchmark family stay within 1.6x of c0;
    # the collapses of issue 17 are 3.2x (0.97 vs 0.30) and 1/25x (0.012 vs 0.30); docs/refinement.md.
    coverage_ratio: float | None = 3.0
    # below this held-out detection coverage iteration 0 detects (almost) nothing: no reference, no check
    min_reference_coverage: float = 0.01
    # one of COVERAGE_RULES. "alone" (0.3.0, kept): either rule refuses. "with_range" (an option, issue 32): where
    # pseudo.fg_fraction_range is set, only the range refuses and the coverage rule warns; without a range the
    # coverage rule refuses. Why "alone" stays: docs/refinement.md "The coverage rule against the released runs"
    coverage_rule: str = "alone"

    def validate(self) -> None:
        if self.coverage_rule not in COVERAGE_RULES:
            raise ConfigError(f"config key 'guard.coverage_rule': {self.coverage_rule!r} is not one of "
                              f"{COVERAGE_RULES}")
        if self.coverage_ratio is not None and self.coverage_ratio < 1.0:
            raise ConfigError(f"config key 'guard.coverage_ratio' must be >= 1 or null, got {self.coverage_ratio}")
        if not 0.0 <= self.min_reference_coverage < 1.0:
            raise ConfigError(f"config key 'guard.min_reference_coverage' must be in [0, 1), "
                              f"got {self.min_reference_coverage}")


def coverage_finding(cfg: GuardConfig, fg_fraction: float, reference_coverage: float | None,
                     iteration: int) -> str | None:
    """The coverage rule: None when ``fg_fraction`` is within ``coverage_ratio`` of iteration 0's held-out detection
    coverage (or there is no usable reference), else the one-line finding."""
    if cfg.coverage_ratio is None or reference_coverage is None or reference_coverage < cfg.min_reference_coverage:
        return None
    r = cfg.coverage_ratio
    if reference_coverage / r <= fg_fraction <= reference_coverage * r:
        return None
    side = "too little" if fg_fraction < reference_coverage / r else "too much"
    return (f"iteration {iteration}'s pseudo labels are {fg_fraction:.3f} foreground against iteration 0's held-out "
            f"detection coverage {reference_coverage:.3f} ({side}: more than {r:g}x apart, guard.coverage_ratio)")


def check_pseudo(cfg: GuardConfig, fg_fraction: float, reference_coverage: float | None,
                 fg_range: Sequence[float] | None, iteration: int) -> str | None:
    """None when the guard trains on iteration ``iteration``'s pseudo labels, else the one-line reason it refuses.

    A coverage finding that does not refuse (``coverage_rule: with_range`` and a range that admits the labels) is
    :func:`coverage_warning`'s."""
    if not cfg.enabled:
        return None
    coverage = coverage_finding(cfg, fg_fraction, reference_coverage, iteration)
    if fg_range is not None:
        lo, hi = fg_range
        if not lo <= fg_fraction <= hi:
            side = "nearly all background" if fg_fraction < lo else "nearly all foreground"
            also = f"; also {coverage.split(' are ', 1)[1]}" if coverage else ""
            return (f"iteration {iteration}'s pseudo labels are {fg_fraction:.3f} foreground, outside "
                    f"[{lo:.2f}, {hi:.2f}] (pseudo.fg_fraction_range): {side}{also}")
        if cfg.coverage_rule == "with_range":
            return None
    return coverage


def coverage_warning(cfg: GuardConfig, fg_fraction: float, reference_coverage: float | None,
                     fg_range: Sequence[float] | None, iteration: int) -> str | None:
    """The coverage finding on labels the guard trains on (``coverage_rule: with_range`` inside the range), as a
    warning line; None when there is none or when the guard refuses (:func:`check_pseudo` says why)."""
    if not cfg.enabled or check_pseudo(cfg, fg_fraction, reference_coverage, fg_range, iteration) is not None:
        return None
    coverage = coverage_finding(cfg, fg_fraction, reference_coverage, iteration)
    return (f"guard: {coverage}; trained on: pseudo.fg_fraction_range admits them and the coverage rule refuses "
            f"only together with it (guard.coverage_rule: with_range)") if coverage else None
