"""Per-snippet class probabilities -> scored segments, with the right to abstain (the built-in detector).

Input: ``probs`` float[T, C], each row a probability distribution over the vocabulary (or a part of one:
dataset classes hold the summed probability of their Kinetics classes). Steps, each a :class:`LocaliseConfig`
value:

1. **Smoothing** (:func:`smooth`): a centred moving average over ``smooth_snippets`` snippets, the length of
   the clips I3D was trained on (64 frames = 4 snippets of 16); at the ends the mean is over the snippets
   that exist.
2. **Video-level selection from pooled evidence** (:func:`pooled_evidence`, :func:`select_classes`): a
   class's evidence is the peak of its smoothed curve, i.e. its probability over the best training-length
   window, never one snippet's argmax. Classes whose evidence reaches ``min_class_prob`` are localised (at
   most ``max_classes``); none reaching it is an abstention, and so is a best class that leads the next one
   (another Kinetics evidence) by less than ``min_margin``: no class stands out.
3. **Grouping and scoring** (:func:`class_segments`): for each selected class, the runs of the smoothed
   curve above ``segment_fractions`` of the class's peak (several thresholds, as RefineLoc's released
   post-processing and W-TALC's evaluation do), each scored by the outer-inner contrast of AutoLoc (Shou et al.,
   ECCV 2018): the mean probability inside minus the mean over ``outer_fraction`` of its length on each side
   (over the snippets that exist: nothing is known outside the video). Candidates scoring <= ``min_score`` are
   dropped, the rest go through NMS at ``nms_tiou``.

Everything here is in snippets; :func:`to_snippet_segments` hands the results to the one time base
(``model.postprocess.segments_to_results``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from refineloc_e2e.errors import ConfigError
from refineloc_e2e.model.postprocess import SnippetSegment


@dataclass
class LocaliseConfig:
    # 64 frames = 4 snippets of 16: the clip length I3D was trained on (Carreira & Zisserman, CVPR 2017,
    # sec. 2.5: "64-frame snippets"); the measurements use this window (about 2.5 s at 25 fps)
    smooth_snippets: int = 4
    # pooled evidence a class needs to be localised, chosen on real footage (docs/kinetics.md): about the geometric
    # midpoint of bikes.mp4's best class (0.20, no action) and the weakest annotated class (long jump, 0.60)
    min_class_prob: float = 0.35
    max_classes: int = 3                    # classes localised per video, best pooled evidence first
    # abstain when the best class leads the runner-up by less than this, chosen on real footage (docs/kinetics.md):
    # OpenCV's vtest.avi (people walking across a yard, no action) has basketball 0.65 leading headbutting by 0.08;
    # the 13 annotated clips lead by 0.30 or more; 0.15 lies between (0 turns the rule off)
    min_margin: float = 0.15
    # run thresholds as fractions of the class's peak (multiple thresholds: RefineLoc's released code and
    # W-TALC's post-processing); the high-jump clip: > 0.1 absolute covers exactly the annotated jump
    segment_fractions: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    outer_fraction: float = 0.25            # AutoLoc's outer-inner contrast: the outer band is 25 % of the length
    min_score: float = 0.0                  # a candidate must be above its surroundings
    nms_tiou: float = 0.5                   # class-wise NMS over the thresholds' candidates (W-TALC: 0.5)

    def validate(self) -> None:
        if self.smooth_snippets < 1:
            raise ConfigError(f"config key 'smooth_snippets': must be >= 1, got {self.smooth_snippets}")
        if not 0.0 <= self.min_class_prob <= 1.0:
            raise ConfigError(f"config key 'min_class_prob': must be in [0, 1], got {self.min_class_prob}")
        if not 0.0 <= self.min_margin <= 1.0:
            raise ConfigError(f"config key 'min_margin': must be in [0, 1], got {self.min_margin}")
        if self.max_classes < 1:
            raise ConfigError(f"config key 'max_classes': must be >= 1, got {self.max_classes}")
        if not self.segment_fractions or any(not 0.0 < f <= 1.0 for f in self.segment_fractions):
            raise ConfigError(f"config key 'segment_fractions': need values in (0, 1], got {self.segment_fractions}")
        if self.outer_fraction < 0:
            raise ConfigError(f"config key 'outer_fraction': must be >= 0, got {self.outer_fraction}")
        if not 0.0 < self.nms_tiou <= 1.0:
            raise ConfigError(f"config key 'nms_tiou': must be in (0, 1], got {self.nms_tiou}")


@dataclass
class Localised:
    """What :func:`localise` found in one video (snippet units)."""
    segments: list[SnippetSegment]
    pooled: np.ndarray                      # float[C]: each class's pooled evidence
    smoothed: np.ndarray                    # float[T, C]
    selected: list[int] = field(default_factory=list)

    @property
    def abstained(self) -> bool:
        return not self.selected

    @property
    def top_class(self) -> int:
        return int(np.argmax(self.pooled))


def smooth(probs: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` snippets of ``probs`` float[T, C] -> float[T, C]; snippet t
    averages ``[t - window // 2, t - window // 2 + window)``, clipped to the video."""
    probs = np.asarray(probs, dtype=np.float64)
    T = probs.shape[0]
    csum = np.concatenate([np.zeros((1,) + probs.shape[1:]), np.cumsum(probs, axis=0)])  # [T + 1, C]
    start = np.arange(T) - window // 2
    lo, hi = np.clip(start, 0, T), np.clip(start + window, 0, T)
    return (csum[hi] - csum[lo]) / (hi - lo)[:, None]


def pooled_evidence(smoothed: np.ndarray) -> np.ndarray:
    """float[T, C] -> float[C]: the best training-length window's probability per class."""
    return smoothed.max(axis=0)


def select_classes(pooled: np.ndarray, cfg: LocaliseConfig, smoothed: np.ndarray | None = None) -> list[int]:
    """Classes to localise: pooled evidence >= ``min_class_prob``, best first, at most ``max_classes``; none when
    the best class leads the runner-up by less than ``min_margin``. Classes with the same curve as the best one in
    ``smoothed`` float[T, C] (dataset classes mapped to one Kinetics class, e.g. THUMOS'14's CricketShot and
    CricketBowling) are the same evidence, not a runner-up."""
    order = np.argsort(-pooled, kind="stable")
    top = order[0]
    rival = next((c for c in order[1:] if smoothed is None or not np.array_equal(smoothed[:, c], smoothed[:, top])),
                 None)  # the best class with other evidence than the top one
    if rival is not None and pooled[top] - pooled[rival] < cfg.min_margin:
        return []  # no class stands out from the next one: nothing confident
    return [int(c) for c in order if pooled[c] >= cfg.min_class_prob][: cfg.max_classes]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def outer_inner_contrast(curve: np.ndarray, start: int, end: int, outer_fraction: float) -> float:
    """Mean of ``curve`` over [start, end) minus its mean over ``outer_fraction`` of the length (at least one
    snippet) on each side, over the snippets that exist (a segment spanning the whole video: 0)."""
    inner = float(curve[start:end].mean())
    pad = max(1, int(round((end - start) * outer_fraction))) if outer_fraction > 0 else 0
    if pad == 0:
        return inner
    outer = np.concatenate([curve[max(start - pad, 0):start], curve[end:end + pad]])
    return inner - (float(outer.mean()) if outer.size else 0.0)


def tiou(a: tuple[int, int], b: tuple[int, int]) -> float:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def class_segments(curve: np.ndarray, cfg: LocaliseConfig) -> list[tuple[int, int, float]]:
    """``(start, end, score)`` candidates of one class's smoothed curve float[T], after NMS, best first."""
    peak = float(curve.max())
    cands: dict[tuple[int, int], float] = {}
    for frac in cfg.segment_fractions:
        for run in _runs(curve >= frac * peak):
            cands[run] = outer_inner_contrast(curve, run[0], run[1], cfg.outer_fraction)
    ranked = sorted(((s, e, sc) for (s, e), sc in cands.items() if sc > cfg.min_score), key=lambda x: (-x[2], x[0]))
    kept: list[tuple[int, int, float]] = []
    for s, e, sc in ranked:
        if all(tiou((s, e), (ks, ke)) < cfg.nms_tiou for ks, ke, _ in kept):
            kept.append((s, e, sc))
    return kept


def localise(probs: np.ndarray, cfg: LocaliseConfig) -> Localised:
    """``probs`` float[T, C] -> the selected classes' scored segments (see the module docstring)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"localise: probs must be float[T, C] with T > 0, got shape {probs.shape}")
    smoothed = smooth(probs, cfg.smooth_snippets)  # [T, C]
    pooled = pooled_evidence(smoothed)  # [C]
    selected = select_classes(pooled, cfg, smoothed)
    segments = [SnippetSegment(c, s, e, sc) for c in selected for s, e, sc in class_segments(smoothed[:, c], cfg)]
    return Localised(segments=segments, pooled=pooled, smoothed=smoothed, selected=selected)
