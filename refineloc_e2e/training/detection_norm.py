"""Detection-time attention normalisation chosen per trained iteration from its held-out coverage (an option).

``postprocess.attention_norm: none`` keeps snippets whose eq.-1 foreground probability reaches alpha_A. A head
trained from video labels can put its attention high on whole videos; detection then covers far more of a video
than its actions can. On the repo's THUMOS'14-shaped set (seed 0) iteration 0 of the ``thumos14`` default covers
0.70 of the held-out snippets (truth ~0.3) and scores 23.8 mAP@0.5 on the test videos; the same model with
``minmax`` covers 0.39 and scores 45.8. On the ActivityNet-like member of the benchmark family it is the other
way round (``none`` 72.7, ``minmax`` 11.6), so no single value is right for every dataset (docs/refinement.md).

Rule (ours, issue 17): the candidates are tried in order, on the held-out TRAINING videos; the first whose
detection coverage (the fraction of snippets its segments cover) lies in ``detection_coverage_range`` (else
``pseudo.fg_fraction_range``) is used;
when none does, the one closest to that range. It looks at video features and a dataset-level prior only (the
range the dataset's config states, which the guard uses too), never at temporal annotations. The chosen value
is written into the iteration's model file, so ``detect`` uses it, and recorded in ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from refineloc_e2e.errors import ConfigError
from refineloc_e2e.model.postprocess import ATTENTION_NORMS, PostprocessConfig
from refineloc_e2e.training.calibrate import covered_fraction


def validate_candidates(candidates: Sequence[str] | None, fg_range: Sequence[float] | None) -> None:
    if candidates is None:
        return
    if not candidates or any(c not in ATTENTION_NORMS for c in candidates):
        raise ConfigError(f"config key 'attention_norm_candidates' must be null or a non-empty list from "
                          f"{ATTENTION_NORMS}, got {list(candidates)!r}")
    if fg_range is None:
        raise ConfigError("config key 'attention_norm_candidates' needs detection_coverage_range or "
                          "pseudo.fg_fraction_range (the dataset's foreground prior that the held-out coverage is "
                          "compared with)")


def _distance(value: float, fg_range: Sequence[float]) -> float:
    lo, hi = fg_range
    return max(lo - value, 0.0, value - hi)


def choose_attention_norm(scores: Sequence[Mapping[str, np.ndarray]], postprocess: PostprocessConfig,
                          candidates: Sequence[str], fg_range: Sequence[float]
                          ) -> tuple[PostprocessConfig, dict]:
    """(``postprocess`` with the chosen ``attention_norm``, a record for metrics.json). ``scores``: the
    iteration's predictions on the held-out training videos (``inference.predict_batch``)."""
    coverages = {c: covered_fraction(scores, dataclasses.replace(postprocess, attention_norm=c))
                 for c in candidates}
    inside = [c for c in candidates if _distance(coverages[c], fg_range) == 0.0]
    chosen = inside[0] if inside else min(candidates, key=lambda c: _distance(coverages[c], fg_range))
    lo, hi = fg_range
    why = (f"held-out coverage {coverages[chosen]:.3f} in [{lo:.2f}, {hi:.2f}]" if inside else
           f"no candidate's held-out coverage in [{lo:.2f}, {hi:.2f}]; {coverages[chosen]:.3f} is the closest")
    return (dataclasses.replace(postprocess, attention_norm=chosen),
            {"chosen": chosen, "coverage": coverages, "reason": why})
