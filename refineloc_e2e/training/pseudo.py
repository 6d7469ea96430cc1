"""Pseudo ground-truth generators (paper section 3.2) and the bookkeeping around them.

Each generator maps one video's scores (from the previous iteration's model) to a background /
foreground label per snippet, ``uint8[T]`` with 0 = background, 1 = foreground:

1. ``uniform_random``      - a fair coin per snippet.
2. ``distribution_aware``  - a biased coin whose foreground probability is the foreground fraction of
   the TRAINING set measured from STRONG (temporal) annotations. This breaks the weakly-supervised
   setting; it is a reference baseline only, and runs using it are flagged in their metadata.
3. ``class_activation``    - by default (``class_threshold: null``) the released code's path: covered by a
   segment of the segment-prediction path with ``pseudo.segment``'s class threshold and NO attention filter;
   with a number, foreground iff ``max_n cas[t, n] >= class_threshold`` (the paper's wording).
4. ``attention``           - by default (``attention_threshold: null``) the released path: covered by a segment
   of the segment-prediction path with ``pseudo.segment``'s attention filter (so its ``attention_norm`` and
   calibration apply) and NO class filter; with a number, the foreground attention >= the threshold.
   The paper thresholds A^time (eq. 2), whose scale depends on T (it sums to 1 over the video), so the
   source is configurable: ``"foreground"`` (default) thresholds ``attention_bf[:, 1]`` (eq. 1, a
   probability, independent of T); ``"time"`` thresholds ``T * attention_time`` (1 = the video's mean).
5. ``segment_prediction``  - foreground iff covered by :func:`model.postprocess.predict_segments` run with the
   generator's OWN thresholds (default: released-code THUMOS values, top-2, alpha_C 0.1, fg attention
   >= 0.92). The paper's final choice.

Only a sampled fraction S of each video's snippets enters the pseudo-label loss (:func:`sample_mask`).
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from refineloc_e2e.errors import ConfigError
from refineloc_e2e.model.postprocess import PostprocessConfig, coverage, predict_segments_from_scores
from refineloc_e2e.timebase import seconds_to_snippet

GENERATORS = ("uniform_random", "distribution_aware", "class_activation", "attention", "segment_prediction")
ATTENTION_SOURCES = ("foreground", "time")
CLASS_WEIGHTINGS = ("inverse_frequency", "none", "released_sqrt")
CALIBRATIONS = ("none", "quantile", "otsu", "detection_coverage")


def _released_code_segment_thresholds() -> PostprocessConfig:
    # released RefineLoc code, THUMOS pseudo labels: top-2 classes, CAS >= 0.1, fg attention >= 0.92
    # (background <= 0.08); gap and inflation as in the paper's segment prediction (3.1).
    return PostprocessConfig(alpha_attention=0.08, alpha_class=0.1, top_k=2, max_gap=1, inflate_snippets=2)


@dataclass
class PseudoConfig:
    generator: str = "segment_prediction"  # one of GENERATORS (paper 3.2; segment prediction = final model)
    sample_fraction: float = 0.8  # S: fraction of snippets per video in the pseudo loss (paper 4.2: 80%)
    beta: float = 4.0  # weight of the pseudo-label loss in eq. 4; paper supplementary Table 6c (TSN): 4 best, Table 6b
    #                    (I3D, THUMOS'14): 2 best (configs/thumos14-paper.yaml); the main text's "4" is the TSN one
    class_threshold: float | None = None  # class_activation: None = released path (see module doc); a number:
    #                                        fg iff max_n cas >= it (paper's wording; value not given)
    attention_source: str = "foreground"  # attention (numeric threshold): "foreground" = attention_bf[:,1], "time"
    attention_threshold: float | None = None  # attention: None = released path; a number: fg iff attention >= it
    segment: PostprocessConfig = field(default_factory=_released_code_segment_thresholds)  # segment_prediction
    classes_from_labels: bool = False  # segment_prediction: use the video's weak labels, not top-k of y-hat
    # weights of the pseudo-label CE over (background, foreground). "inverse_frequency": n / (2 n_c) on the
    # sampled fit videos (ours; paper 3.2 says "class-weighted" without the formula); "none": 1, 1 (released
    # ActivityNet run, weighted_psgt_loss 0); "released_sqrt": background 1, foreground sqrt(bg fraction)
    # (released THUMOS run: BCE pos_weight; <= 1, it DOWN-weights foreground, conventions.md pitfall).
    class_weighting: str = "inverse_frequency"
    # where pseudo.segment's attention filter sits. "none": as configured (alpha_attention on the probability,
    # or attention_norm). "otsu": every iteration, a foreground log-odds threshold is calibrated on the HELD-OUT
    # training videos' pooled attention (Otsu's between-class-variance split: no prior on the fg fraction;
    # tracks the ranking, not the drifting level, and no per-video quota); "quantile": the threshold above
    # which ``calibration_fraction`` of held-out snippets lie; "detection_coverage": the threshold at which the
    # held-out videos' pseudo labels cover the same fraction of snippets as the generating model's detections
    # (``postprocess`` thresholds) do: a foreground fraction from weak supervision, no prior. See calibrate.py.
    calibration: str = "none"
    calibration_fraction: float = 0.3  # quantile calibration only: target pooled fg fraction
    # warn when the pseudo foreground fraction leaves [lo, hi] (None: no check). THUMOS'14 truth ~0.25-0.3.
    fg_fraction_range: list[float] | None = None

    def validate(self) -> None:
        if self.generator not in GENERATORS:
            raise ConfigError(f"config key 'pseudo.generator': {self.generator!r} is not one of {GENERATORS}")
        if self.attention_source not in ATTENTION_SOURCES:
            raise ConfigError(f"config key 'pseudo.attention_source': {self.attention_source!r} is not one "
                              f"of {ATTENTION_SOURCES}")
        if not 0.0 < self.sample_fraction <= 1.0:
            raise ConfigError(f"config key 'pseudo.sample_fraction' must be in (0, 1], got {self.sample_fraction}")
        if self.beta < 0:
            raise ConfigError(f"config key 'pseudo.beta' must be >= 0, got {self.beta}")
        if self.class_weighting not in CLASS_WEIGHTINGS:
            raise ConfigError(f"config key 'pseudo.class_weighting': {self.class_weighting!r} is not one of "
                              f"{CLASS_WEIGHTINGS}")
        if self.calibration not in CALIBRATIONS:
            raise ConfigError(f"config key 'pseudo.calibration': {self.calibration!r} is not one of {CALIBRATIONS}")
        if not 0.0 < self.calibration_fraction < 1.0:
            raise ConfigError(f"config key 'pseudo.calibration_fraction' must be in (0, 1), "
                              f"got {self.calibration_fraction}")
        r = self.fg_fraction_range
        if r is not None and (len(r) != 2 or not 0.0 <= r[0] <= r[1] <= 1.0):
            raise ConfigError(f"config key 'pseudo.fg_fraction_range' must be [lo, hi] with 0 <= lo <= hi <= 1, "
                              f"got {r}")
        self.segment.validate()

    @property
    def uses_strong_annotations(self) -> bool:
        """True when the generator needs statistics of STRONG annotations (not weakly supervised)."""
        return self.generator == "distribution_aware"


# ---------------------------------------------------------------------------------------- generators

def uniform_random(n_snippets: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 2, size=n_snippets).astype(np.uint8)  # (T,)


def distribution_aware(n_snippets: int, rng: np.random.Generator, fg_probability: float) -> np.ndarray:
    """Foreground with probability ``fg_probability`` (from STRONG annotations: see module docstring)."""
    return (rng.random(n_snippets) < fg_probability).astype(np.uint8)  # (T,)


def class_activation(cas: np.ndarray, threshold: float) -> np.ndarray:
    """cas float[T, N] -> fg iff max over classes >= threshold."""
    return (np.asarray(cas).max(axis=1) >= threshold).astype(np.uint8)  # (T,)


def attention(attention_bf: np.ndarray, attention_time: np.ndarray, threshold: float,
              source: str = "foreground") -> np.ndarray:
    """attention_bf float[T, 2], attention_time float[T] -> fg iff the chosen attention >= threshold."""
    if source == "foreground":
        values = np.asarray(attention_bf)[:, 1]  # (T,)
    elif source == "time":
        values = np.asarray(attention_time) * len(attention_time)  # (T,), mean 1 over the video
    else:
        raise ConfigError(f"attention source {source!r} is not one of {ATTENTION_SOURCES}")
    return (values >= threshold).astype(np.uint8)


def segment_prediction(scores: Mapping[str, np.ndarray], cfg: PostprocessConfig,
                       class_indices: Sequence[int] | None = None) -> np.ndarray:
    """fg iff covered by a segment of :func:`model.postprocess.predict_segments` (with ``cfg``'s thresholds)."""
    segs = predict_segments_from_scores(scores, cfg, class_indices=class_indices)
    return coverage(segs, len(scores["attention_time"])).astype(np.uint8)


def generate(cfg: PseudoConfig, scores: Mapping[str, np.ndarray], rng: np.random.Generator, *,
             fg_probability: float | None = None, label_indices: Sequence[int] | None = None) -> np.ndarray:
    """Pseudo labels uint8[T] for one video from its scores (cas [T, N], attention_bf [T, 2], ...)."""
    n = len(scores["attention_time"])
    if cfg.generator == "uniform_random":
        return uniform_random(n, rng)
    if cfg.generator == "distribution_aware":
        if fg_probability is None:
            raise ValueError("distribution_aware needs fg_probability (from strong annotations)")
        return distribution_aware(n, rng, fg_probability)
    classes = label_indices if cfg.classes_from_labels else None
    if cfg.generator == "class_activation":
        if cfg.class_threshold is None:  # released: segment path, attention filter off
            no_att = dataclasses.replace(cfg.segment, attention_norm="none", alpha_attention=1.0)
            return segment_prediction(scores, no_att, classes)
        return class_activation(scores["cas"], cfg.class_threshold)
    if cfg.generator == "attention":
        if cfg.attention_threshold is None:  # released: segment path, class filter off
            return segment_prediction(scores, dataclasses.replace(cfg.segment, alpha_class=0.0), classes)
        return attention(scores["attention_bf"], scores["attention_time"], cfg.attention_threshold,
                         cfg.attention_source)
    if cfg.generator == "segment_prediction":
        return segment_prediction(scores, cfg.segment, classes)
    raise ConfigError(f"config key 'pseudo.generator': {cfg.generator!r} is not one of {GENERATORS}")


# ------------------------------------------------------------------------------ sampling and weights

def video_rng(seed: int, iteration: int, video_id: str) -> np.random.Generator:
    """A generator that depends only on (seed, iteration, video id): repeatable, order-independent."""
    return np.random.default_rng([seed, iteration, zlib.crc32(video_id.encode("utf-8"))])


def sample_mask(n_snippets: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """bool[T] with exactly round(fraction * T) True (at least one when T > 0), chosen at random."""
    k = min(n_snippets, max(1, int(round(fraction * n_snippets)))) if n_snippets > 0 else 0
    mask = np.zeros(n_snippets, dtype=bool)
    mask[rng.choice(n_snippets, size=k, replace=False)] = True
    return mask


def class_weights(labels: Sequence[np.ndarray], sampled: Sequence[np.ndarray],
                  mode: str = "inverse_frequency") -> np.ndarray:
    """float32[2] (background, foreground) weights for the pseudo-label cross-entropy.

    Inverse frequency among the SAMPLED pseudo labels, normalised so the mean weight per sampled
    snippet is 1: ``w_c = n / (2 n_c)``. When one class is absent (e.g. an all-background set) both
    weights are 1: the absent class's weight is never used, and nothing is 0, inf or NaN.
    ``mode`` (``PseudoConfig.class_weighting``): "none" -> [1, 1]; "released_sqrt" -> [1, sqrt(n_bg / n)].
    """
    if mode not in CLASS_WEIGHTINGS:
        raise ConfigError(f"class weighting {mode!r} is not one of {CLASS_WEIGHTINGS}")
    n_fg = int(sum(int(lab[s].sum()) for lab, s in zip(labels, sampled)))
    n = int(sum(int(s.sum()) for s in sampled))
    n_bg = n - n_fg
    if mode == "none" or n_fg == 0 or n_bg == 0:
        return np.ones(2, dtype=np.float32)
    if mode == "released_sqrt":
        return np.array([1.0, np.sqrt(n_bg / n)], dtype=np.float32)
    return np.array([n / (2.0 * n_bg), n / (2.0 * n_fg)], dtype=np.float32)


# ------------------------------------------------------------------ strong annotations (reporting only)

def truth_labels(segments, n_snippets: int, *, fps: float, snippet_frames: int,
                 stride_frames: int | None = None) -> np.ndarray:
    """uint8[T] from STRONG annotations: snippet t is fg iff its centre lies in a segment [start, end).

    For reporting (pseudo-label precision/recall) and the distribution-aware baseline only.
    """
    centres = np.arange(n_snippets) + 0.5  # (T,)
    out = np.zeros(n_snippets, dtype=np.uint8)
    for seg in segments:
        s = seconds_to_snippet(seg.start_s, fps=fps, snippet_frames=snippet_frames, stride_frames=stride_frames)
        e = seconds_to_snippet(seg.end_s, fps=fps, snippet_frames=snippet_frames, stride_frames=stride_frames)
        out[(centres >= s) & (centres < e)] = 1
    return out


def foreground_fraction(truths: Sequence[np.ndarray]) -> float:
    """Pooled foreground fraction of snippets over the given (training) videos' strong labels."""
    total = sum(len(t) for t in truths)
    return float(sum(int(t.sum()) for t in truths) / total) if total else 0.0


def pseudo_stats(labels: Sequence[np.ndarray], sampled: Sequence[np.ndarray],
                 truths: Sequence[np.ndarray] | None = None) -> dict:
    """Sizes of the pseudo-label set (watch for collapse) and, given truth, precision/recall of fg."""
    n = int(sum(len(lab) for lab in labels))
    n_fg = int(sum(int(lab.sum()) for lab in labels))
    stats = {
        "n_videos": len(labels),
        "n_snippets": n,
        "n_fg": n_fg,
        "fg_fraction": n_fg / n if n else 0.0,
        "n_sampled": int(sum(int(s.sum()) for s in sampled)),
        "n_fg_sampled": int(sum(int(lab[s].sum()) for lab, s in zip(labels, sampled))),
        "class_weights": [float(w) for w in class_weights(labels, sampled)],
        "n_videos_without_fg": int(sum(1 for lab in labels if lab.sum() == 0)),
    }
    if truths is not None:
        tp = int(sum(int((lab.astype(bool) & t.astype(bool)).sum()) for lab, t in zip(labels, truths)))
        n_true = int(sum(int(t.sum()) for t in truths))
        p = tp / n_fg if n_fg else None
        r = tp / n_true if n_true else None
        stats["precision_vs_truth"] = p
        stats["recall_vs_truth"] = r
        stats["f1_vs_truth"] = 2 * p * r / (p + r) if p is not None and r is not None and p + r > 0 else None
    return stats
