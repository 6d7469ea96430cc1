"""What refinement may legitimately look at between iterations: the held-out TRAINING videos.

Weak supervision gives the held-out videos' class labels and nothing temporal. This module turns that
into three things :mod:`train` uses every iteration:

- :func:`calibrate_segment`: the pseudo-label attention threshold, calibrated on the held-out videos'
  pooled foreground log-odds (``pseudo.calibration``): Otsu's split (no prior) or a quantile (a prior on
  the foreground fraction), or the threshold at which the held-out pseudo labels cover as many snippets as
  the same model's detections do (``detection_coverage``). The threshold follows the attention's *ranking* across videos, not its
  absolute level (which drifts freely: conventions.md "attention level drift"), and sets no per-video quota
  (a video without confident foreground gets none).
- :func:`weak_label_map`: a localisation proxy for choosing the saved iteration: the detections on
  held-out videos, scored as if each video's weak labels were its only ground truth (a detection of a
  labelled class is a hit, of any other class a false alarm), mean AP over classes. ``dup`` counts a
  second detection of the same (video, class) as a false alarm (penalises fragmented segments).
- :func:`fraction_warning`: the text of a warning when the pseudo foreground fraction leaves a range.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from refineloc_e2e.evaluation.metrics import average_precision
from refineloc_e2e.model.postprocess import (PostprocessConfig, coverage, foreground_logodds,
                                          predict_segments_from_scores)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` float[M]: maximises the between-class variance of the split.

    The range is clipped to the 0.5-99.5 percentiles first so a few saturated log-odds do not squeeze
    the histogram. A constant input returns that constant.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("otsu_threshold needs at least one value")
    lo, hi = np.percentile(v, [0.5, 99.5])
    if hi <= lo:
        return float(lo)
    hist, edges = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)  # (bins,) counts at or below each bin
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2  # (bins,)
    return float(edges[int(np.argmax(between)) + 1])


def covered_fraction(scores: Sequence[Mapping[str, np.ndarray]], cfg: PostprocessConfig) -> float:
    """Pooled fraction of the videos' snippets covered by a segment of ``cfg``'s segment prediction."""
    n = sum(len(s["attention_time"]) for s in scores)
    covered = sum(int(coverage(predict_segments_from_scores(s, cfg), len(s["attention_time"])).sum()) for s in scores)
    return covered / n if n else 0.0


def coverage_matched_threshold(segment: PostprocessConfig, scores: Sequence[Mapping[str, np.ndarray]],
                               target: float) -> tuple[float, float]:
    """(log-odds threshold, achieved fraction): the threshold on the pooled foreground log-odds at which
    ``segment``'s segment prediction (attention filter ``logodds``) covers the pooled fraction of snippets
    closest to ``target``.

    Coverage is non-increasing in the threshold (a higher threshold keeps a subset of snippets, so every
    run, joined run and inflated segment is a subset of one it had), so a binary search over the sorted
    distinct pooled log-odds finds the crossing. A target of 0 gives a threshold above every snippet.
    """
    lo = np.unique(np.concatenate([foreground_logodds(s["attention_bf"], s.get("attention_logodds"))
                                   for s in scores]))  # ascending
    if target <= 0.0:
        return float(lo[-1] + 1.0), 0.0

    def frac(i: int) -> float:
        return covered_fraction(scores, dataclasses.replace(segment, attention_norm="logodds",
                                                            logodds_threshold=float(lo[i])))

    a, b = 0, len(lo) - 1  # find the first index whose coverage <= target (coverage falls with the index)
    fa = frac(a)
    if fa <= target:
        return float(lo[a]), fa
    fb = frac(b)
    if fb > target:
        return float(lo[b]), fb
    while b - a > 1:  # invariant: frac(a) > target >= frac(b)
        m = (a + b) // 2
        fm = frac(m)
        if fm > target:
            a, fa = m, fm
        else:
            b, fb = m, fm
    return (float(lo[a]), fa) if fa - target < target - fb else (float(lo[b]), fb)


def calibrate_segment(segment: PostprocessConfig, heldout_scores: Sequence[Mapping[str, np.ndarray]],
                      method: str, fraction: float = 0.3,
                      detection: PostprocessConfig | None = None) -> tuple[PostprocessConfig, dict]:
    """``segment`` with its attention filter replaced by a calibrated foreground log-odds threshold.

    method "none" returns ``segment`` unchanged; "otsu" / "quantile" pool the held-out videos' log-odds.
    "detection_coverage": the target is the fraction of held-out snippets that the SAME model's
    detections (``detection``: the postprocess thresholds) cover, a foreground fraction estimated from
    weak supervision only, with no prior; the threshold is chosen so that the pseudo labels (``segment``'s
    whole segment path: class filter, grouping, inflation) cover that fraction of the held-out snippets.
    Returns (config, info) where info records the method, threshold and held-out fraction above it.
    """
    if method == "none" or not heldout_scores:
        return segment, {"method": "none" if method == "none" else f"{method} (no held-out videos: not applied)"}
    lo = np.concatenate([foreground_logodds(s["attention_bf"], s.get("attention_logodds")) for s in heldout_scores])
    extra: dict = {}
    if method == "otsu":
        thr = otsu_threshold(lo)
    elif method == "quantile":
        thr = float(np.quantile(lo, 1.0 - fraction))
    elif method == "detection_coverage":
        if detection is None:
            raise ValueError("calibration 'detection_coverage' needs the detection (postprocess) config")
        target = covered_fraction(heldout_scores, detection)
        thr, achieved = coverage_matched_threshold(segment, heldout_scores, target)
        extra = {"target_fraction": target, "heldout_pseudo_fraction": achieved}
    else:
        raise ValueError(f"calibration method {method!r} is not one of none, otsu, quantile, detection_coverage")
    cfg = dataclasses.replace(segment, attention_norm="logodds", logodds_threshold=thr)
    return cfg, {"method": method, "logodds_threshold": thr, "heldout_fraction_above": float(np.mean(lo >= thr)),
                 **extra}


def weak_label_map(heldout_scores: Sequence[Mapping[str, np.ndarray]], label_indices: Sequence[Sequence[int]],
                   cfg: PostprocessConfig, n_classes: int, *, dup: bool = False) -> tuple[float, int]:
    """(mean over classes of the weak-label detection AP, number of detections) on held-out videos.

    Each (video, labelled class) is one positive; a detection of class n in a video labelled n is a hit
    (its first detection only; later ones are ignored, or false alarms with ``dup``), in a video not
    labelled n a false alarm. Classes without a held-out positive are left out of the mean.
    """
    dets: list[list[tuple[float, int]]] = [[] for _ in range(n_classes)]  # per class: (score, hit)
    n_pos = np.zeros(n_classes, dtype=int)
    n_dets = 0
    for s, labels in zip(heldout_scores, label_indices):
        labels = set(labels)
        for n in labels:
            n_pos[n] += 1
        segs = sorted(predict_segments_from_scores(s, cfg), key=lambda g: -g.score)
        n_dets += len(segs)
        seen: set[int] = set()
        for g in segs:
            if g.class_index in labels and g.class_index in seen:
                if dup:
                    dets[g.class_index].append((g.score, 0))
                continue
            hit = int(g.class_index in labels)
            seen.add(g.class_index)
            dets[g.class_index].append((g.score, hit))
    aps = []
    for n in range(n_classes):
        if n_pos[n] == 0:
            continue
        ranked = sorted(dets[n], key=lambda d: -d[0])
        aps.append(average_precision(np.array([h for _, h in ranked], dtype=bool), int(n_pos[n])))
    return (float(np.mean(aps)) if aps else 0.0), n_dets


def fraction_warning(fg_fraction: float, fg_range: Sequence[float] | None, iteration: int) -> str | None:
    """A warning text when ``fg_fraction`` is outside ``fg_range`` = [lo, hi] (None: no check)."""
    if fg_range is None:
        return None
    lo, hi = fg_range
    if lo <= fg_fraction <= hi:
        return None
    return (f"warning: iteration {iteration}: pseudo-label foreground fraction {fg_fraction:.3f} is outside the "
            f"expected range [{lo:.2f}, {hi:.2f}] (pseudo.fg_fraction_range): the pseudo labels are "
            f"{'nearly all background' if fg_fraction < lo else 'nearly all foreground'}")
