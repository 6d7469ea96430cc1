"""Action segment prediction (paper section 3.1, eq. 3): scores of one video -> scored segments.

This is the ONE segment-prediction function: detection uses it with the detection thresholds and the
segment-prediction pseudo-label generator uses it with its own. It works on saved numpy scores, so
detection can be re-run without the network (:func:`save_scores` / :func:`load_scores`).

Snippet segments are half-open: ``SnippetSegment(start, end)`` covers snippets ``start <= t < end``,
which :func:`segments_to_results` turns into seconds ``[start_s, end_s)`` via :mod:`timebase`.
"""

from __future__ import annotations

from dataclasses import dataclass
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from refineloc_e2e.errors import CacheError, ConfigError
from refineloc_e2e.fileio import atomic_save_with
from refineloc_e2e.timebase import snippet_to_seconds


ATTENTION_NORMS = ("none", "minmax", "logodds")
SEGMENT_SCORES = ("paper", "mean_fg")
GROUPINGS = ("gap", "dilation")


@dataclass
class PostprocessConfig:
    alpha_attention: float = 0.5  # alpha_A: drop snippets whose BACKGROUND attention > this (paper 4.2)
    alpha_class: float = 0.35  # alpha_C: keep snippets with class score >= this (paper 4.2, THUMOS14)
    top_k: int = 2  # segments only for the top-k classes of y-hat (paper 4.2)
    max_gap: int = 1  # join kept runs separated by at most this many filtered-out snippets (paper 3.1)
    inflate_snippets: int = 2  # grow each segment by this many snippets at both ends (paper 3.1)
    # "none": alpha_attention applies to eq. 1's background probability (paper). "minmax": to 1 - the
    # foreground log-odds min-max scaled to [0, 1] within the video (ours: robust to the attention's free
    # absolute level, conventions.md "attention level drift"; needs the log-odds in the saved scores).
    # "logodds": keep snippets whose foreground log-odds >= ``logodds_threshold`` (alpha_attention unused);
    # the threshold is calibrated per iteration on held-out training videos (calibrate.py, pseudo labels).
    attention_norm: str = "none"
    logodds_threshold: float = 0.0  # attention_norm "logodds" only: 0.0 = fg probability 0.5
    # eq. 3 segment score. "paper": mean(A_time + C_n) + y_n (A_time sums to 1 over the video, so it adds ~1/T);
    # "mean_fg": mean(C_n) + mean(fg probability A_bf[:, 1]) + y_n (released code, dataset.py).
    segment_score: str = "paper"
    # "gap": join kept runs separated by <= max_gap snippets (paper 3.1); "dilation": binary dilation of the
    # kept mask by one snippet each side, then connected runs (released code: joins gaps <= 2 and grows every
    # segment by 1 snippet before inflate_snippets; max_gap unused).
    grouping: str = "gap"

    def validate(self) -> None:
        if self.attention_norm not in ATTENTION_NORMS:
            raise ConfigError(f"config key 'attention_norm' must be one of {ATTENTION_NORMS}, "
                              f"got {self.attention_norm!r}")
        if self.segment_score not in SEGMENT_SCORES:
            raise ConfigError(f"config key 'segment_score' must be one of {SEGMENT_SCORES}, "
                              f"got {self.segment_score!r}")
        if self.grouping not in GROUPINGS:
            raise ConfigError(f"config key 'grouping' must be one of {GROUPINGS}, got {self.grouping!r}")
        for key in ("alpha_attention", "alpha_class"):
            v = getattr(self, key)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"config key '{key}' must be in [0, 1], got {v}")
        for key in ("top_k", "max_gap", "inflate_snippets"):
            v = getattr(self, key)
            if v < 0 or (key == "top_k" and v < 1):
                raise ConfigError(f"config key '{key}' must be >= {1 if key == 'top_k' else 0}, got {v}")


class SnippetSegment(NamedTuple):
    class_index: int
    start: int  # first snippet (inclusive)
    end: int  # one past the last snippet (exclusive)
    score: float  # eq. 3


def _runs(kept: np.ndarray, max_gap: int) -> list[tuple[int, int]]:
    """Half-open [start, end) runs of True in ``kept``, joining runs separated by <= max_gap False."""
    idx = np.flatnonzero(kept)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > max_gap + 1)  # gap of > max_gap dropped snippets
    starts = np.concatenate([idx[:1], idx[breaks + 1]])
    lasts = np.concatenate([idx[breaks], idx[-1:]])
    return [(int(s), int(e) + 1) for s, e in zip(starts, lasts)]


def top_classes(video_scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest y-hat values, best first (ties: lower index first)."""
    order = np.argsort(-np.asarray(video_scores, dtype=np.float64), kind="stable")
    return order[:k]


def background_score(attention_bf: np.ndarray, cfg: PostprocessConfig,
                     attention_logodds: np.ndarray | None = None) -> np.ndarray:
    """float[T] compared with ``alpha_attention``: eq. 1's background probability, or (``attention_norm:
    minmax``) 1 - the foreground log-odds min-max scaled within the video (a constant video scores 0).
    With ``logodds`` use :func:`kept_by_attention` (the comparison is on the log-odds, not on a [0, 1] score)."""
    if cfg.attention_norm == "none":
        return np.asarray(attention_bf)[:, 0]
    lo = foreground_logodds(attention_bf, attention_logodds)
    if cfg.attention_norm == "logodds":
        return -lo  # "background-ness"; kept_by_attention compares it with -logodds_threshold
    span = lo.max() - lo.min()
    fg = (lo - lo.min()) / span if span > 0 else np.ones_like(lo)
    return 1.0 - fg


def foreground_logodds(attention_bf: np.ndarray, attention_logodds: np.ndarray | None = None) -> np.ndarray:
    """float64[T] foreground log-odds A_fg - A_bg (from the saved log-odds, else from eq. 1's probabilities)."""
    if attention_logodds is None:
        p = np.clip(np.asarray(attention_bf, dtype=np.float64), 1e-300, None)
        return np.log(p[:, 1]) - np.log(p[:, 0])
    return np.asarray(attention_logodds, dtype=np.float64)


def kept_by_attention(attention_bf: np.ndarray, cfg: PostprocessConfig,
                      attention_logodds: np.ndarray | None = None) -> np.ndarray:
    """bool[T]: snippets that pass the attention filter (step 1 of :func:`predict_segments`)."""
    if cfg.attention_norm == "logodds":
        return foreground_logodds(attention_bf, attention_logodds) >= cfg.logodds_threshold
    return background_score(attention_bf, cfg, attention_logodds) <= cfg.alpha_attention


def _dilated_runs(kept: np.ndarray) -> list[tuple[int, int]]:
    """Runs of the kept mask dilated by one snippet each side (scipy binary_dilation, 3-wide structure)."""
    grown = kept.copy()
    grown[1:] |= kept[:-1]
    grown[:-1] |= kept[1:]
    return _runs(grown, 0)


def predict_segments_from_scores(scores, cfg: PostprocessConfig,
                                 class_indices: np.ndarray | list[int] | None = None) -> list[SnippetSegment]:
    """:func:`predict_segments` on a scores mapping (as ``predict_scores`` returns or ``load_scores`` reads)."""
    return predict_segments(scores["cas"], scores["attention_bf"], scores["attention_time"], scores["video_scores"],
                            cfg, class_indices, attention_logodds=scores.get("attention_logodds"))


def predict_segments(cas: np.ndarray, attention_bf: np.ndarray, attention_time: np.ndarray,
                     video_scores: np.ndarray, cfg: PostprocessConfig,
                     class_indices: np.ndarray | list[int] | None = None, *,
                     attention_logodds: np.ndarray | None = None) -> list[SnippetSegment]:
    """Segments of one video.

    cas float[T, N] (softmax over classes), attention_bf float[T, 2] (0 = background, 1 = foreground),
    attention_time float[T] (eq. 2), video_scores float[N] (y-hat). ``class_indices`` replaces the
    top-k classes of y-hat when given (e.g. the known weak labels of a training video).

    1. drop snippets whose background attention exceeds ``alpha_attention`` (see :func:`background_score`);
    2. for each top-k class n keep the non-dropped snippets with ``cas[t, n] >= alpha_class``;
    3. join kept snippets separated by at most ``max_gap`` non-kept snippets into segments (t1..t2);
    4. score = mean_{t1<=t<=t2}(attention_time[t] + cas[t, n]) + y-hat[n]  (eq. 3; ``segment_score``
       "mean_fg": mean(cas[t, n]) + mean(attention_bf[t, 1]) + y-hat[n], released code);
    5. inflate by ``inflate_snippets`` at both ends, clipped to [0, T).
    """
    cas = np.asarray(cas)
    attention_bf = np.asarray(attention_bf)
    attention_time = np.asarray(attention_time)
    video_scores = np.asarray(video_scores)
    T, N = cas.shape
    if attention_bf.shape != (T, 2) or attention_time.shape != (T,) or video_scores.shape != (N,):
        raise ValueError(f"score shapes disagree: cas {cas.shape}, attention_bf {attention_bf.shape}, "
                         f"attention_time {attention_time.shape}, video_scores {video_scores.shape}")
    not_dropped = kept_by_attention(attention_bf, cfg, attention_logodds)  # (T,)
    classes = top_classes(video_scores, cfg.top_k) if class_indices is None else np.asarray(class_indices)
    out: list[SnippetSegment] = []
    for n in classes:
        n = int(n)
        kept = not_dropped & (cas[:, n] >= cfg.alpha_class)  # (T,)
        runs = _dilated_runs(kept) if cfg.grouping == "dilation" else _runs(kept, cfg.max_gap)
        for t1, t2 in runs:
            if cfg.segment_score == "mean_fg":
                score = float(np.mean(cas[t1:t2, n]) + np.mean(attention_bf[t1:t2, 1]) + video_scores[n])
            else:
                score = float(np.mean(attention_time[t1:t2] + cas[t1:t2, n]) + video_scores[n])
            start = max(0, t1 - cfg.inflate_snippets)
            end = min(T, t2 + cfg.inflate_snippets)
            out.append(SnippetSegment(n, start, end, score))
    return out


def coverage(segments: list[SnippetSegment], n_snippets: int) -> np.ndarray:
    """bool[T]: True where any segment covers the snippet."""
    covered = np.zeros(n_snippets, dtype=bool)
    for seg in segments:
        covered[seg.start:seg.end] = True
    return covered


def segments_to_results(segments: list[SnippetSegment], class_names: list[str], *, fps: float,
                        snippet_frames: int, n_snippets: int, duration_s: float | None = None,
                        stride_frames: int | None = None) -> list[dict]:
    """ActivityNet-style results ``[{"label", "score", "segment": [start_s, end_s]}]``, best score first.

    Seconds come only from :func:`timebase.snippet_to_seconds`; ``end_s`` is clipped to ``duration_s``
    (a segment starting at or after ``duration_s`` is left out).
    """
    results = []
    for seg in segments:
        if not 0 <= seg.start < seg.end <= n_snippets:
            raise ValueError(f"segment [{seg.start}, {seg.end}) outside [0, {n_snippets})")
        start_s, end_s = (float(snippet_to_seconds(b, fps=fps, snippet_frames=snippet_frames,
                                                   stride_frames=stride_frames)) for b in (seg.start, seg.end))
        if duration_s is not None:
            end_s = min(end_s, float(duration_s))
            if end_s <= start_s:  # starts at or after the annotated end of the video
                continue
        results.append({"label": class_names[seg.class_index], "score": float(seg.score),
                        "segment": [start_s, end_s]})
    results.sort(key=lambda r: -r["score"])
    return results


SCORE_KEYS = ("cas", "attention_bf", "attention_time", "video_scores")


def save_scores(path: str | Path, scores: dict[str, np.ndarray]) -> None:
    """Atomically write a dict of numpy arrays as ``.npz`` (no pickled objects)."""
    arrays = {k: np.asarray(v) for k, v in scores.items()}
    for k, v in arrays.items():
        if v.dtype.hasobject:
            raise ValueError(f"score '{k}' is an object array; only numeric arrays are saved")
    atomic_save_with(path, lambda f: np.savez(f, **arrays))


def load_scores(path: str | Path, required: tuple[str, ...] = SCORE_KEYS) -> dict[str, np.ndarray]:
    """Read scores written by :func:`save_scores`; raises CacheError naming the file if unreadable or
    lacking one of ``required``."""
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"{path}: scores file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            scores = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CacheError(f"{path}: not a readable scores .npz ({e})") from None
    missing = [k for k in required if k not in scores]
    if missing:
        raise CacheError(f"{path}: scores file lacks {', '.join(missing)}")
    return scores
