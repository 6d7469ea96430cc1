"""Timeline PNGs: foreground attention, class activations and segments of one video, x axis in seconds.

Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global backend switch).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from refineloc_e2e.datasets import Segment
from refineloc_e2e.errors import InputError
from refineloc_e2e.fileio import atomic_writer
from refineloc_e2e.model.postprocess import PostprocessConfig, background_score, foreground_logodds
from refineloc_e2e.timebase import snippet_to_seconds

MAX_BARS = 30  # predicted segments drawn (highest scores); the rest are counted in the panel title
# what the fg panel's curve is under each postprocess.attention_norm (model.postprocess.background_score)
ATTENTION_CURVES = {
    "none": ("fg attention", "eq. 1 foreground probability"),
    "minmax": ("fg attention (min-max)", "foreground log-odds min-max scaled within the video"),
    "logodds": ("fg log-odds", "foreground log-odds A_fg - A_bg"),
    "class_prob": ("best class probability", "the built-in Kinetics detector: smoothed probability of the best class"),
}


def _pack_rows(spans: list[tuple[float, float]]) -> list[int]:
    """Row per span so that spans on one row do not overlap (greedy, in the given order)."""
    row_ends: list[float] = []
    rows = []
    for start_s, end_s in spans:
        for r, last_end in enumerate(row_ends):
            if start_s >= last_end:
                row_ends[r] = end_s
                rows.append(r)
                break
        else:
            row_ends.append(end_s)
            rows.append(len(row_ends) - 1)
    return rows


def attention_curve(attention_bf: np.ndarray, pp: PostprocessConfig,
                    attention_logodds: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """(float[T] curve, threshold) of the fg panel: what detection compares under ``pp.attention_norm``.
    ``none`` / ``minmax``: 1 - the background score against 1 - alpha_attention (in [0, 1]); ``logodds``: the
    foreground log-odds against ``logodds_threshold`` (unbounded)."""
    if pp.attention_norm == "logodds":
        return foreground_logodds(attention_bf, attention_logodds), pp.logodds_threshold
    return 1.0 - background_score(attention_bf, pp, attention_logodds), 1.0 - pp.alpha_attention


def plot_timeline(path: str | Path, *, video_id: str, duration_s: float | None, fps: float, snippet_frames: int,
                  stride_frames: int | None = None, fg_attention: np.ndarray,
                  class_scores: Mapping[str, np.ndarray], predictions: Sequence[dict],
                  ground_truth: Sequence[Segment] | None = None, title: str | None = None,
                  attention_threshold: float | None = None, top_k_classes: int = 5,
                  attention_norm: str = "none") -> Figure:
    """Write a three-panel timeline PNG to ``path`` (atomically); returns the drawn figure (panels
    ``fig.axes``: attention, class activations, segments) so what was drawn can be inspected.

    ``fg_attention``: float[T] foreground attention per snippet; ``class_scores``: class -> float[T]
    activations (the ``top_k_classes`` with the highest peak are drawn); ``predictions``: ActivityNet
    entries {label, score, segment: [start_s, end_s]}; ``ground_truth``: optional strong annotations.
    Snippet t is drawn over [t, t + 1) snippets converted with :func:`timebase.snippet_to_seconds`.
    ``attention_norm``: the normalisation ``fg_attention`` is in (``ATTENTION_CURVES``; the model's
    ``postprocess.attention_norm``): named in the panel; ``logodds`` is unbounded, its axis follows the data.
    """
    if attention_norm not in ATTENTION_CURVES:
        raise InputError(f"plot_timeline({video_id}): attention_norm must be one of {sorted(ATTENTION_CURVES)}, "
                         f"got {attention_norm!r}")
    attention = np.asarray(fg_attention, dtype=np.float64)  # [T]
    if attention.ndim != 1 or len(attention) == 0:
        raise InputError(f"plot_timeline({video_id}): fg_attention must be float[T] with T > 0, "
                         f"got shape {attention.shape}")
    n_snippets = len(attention)
    scores = {c: np.asarray(s, dtype=np.float64) for c, s in class_scores.items()}  # each [T]
    bad = {c: s.shape for c, s in scores.items() if s.shape != (n_snippets,)}
    if bad:
        raise InputError(f"plot_timeline({video_id}): class_scores must each be float[{n_snippets}], got {bad}")
    edges_s = snippet_to_seconds(np.arange(n_snippets + 1), fps=fps, snippet_frames=snippet_frames,
                                 stride_frames=stride_frames)  # [T + 1]
    end_s = float(duration_s) if duration_s is not None else float(edges_s[-1])

    top = sorted(scores, key=lambda c: -float(scores[c].max()))[:top_k_classes]
    labels = list(dict.fromkeys(top + sorted({p["label"] for p in predictions})
                                + sorted({g.label for g in ground_truth or []})))
    palette = [f"C{i}" for i in range(10)]
    color = {c: palette[i % 10] for i, c in enumerate(labels)}

    fig = Figure(figsize=(12, 7.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_att, ax_cls, ax_seg = fig.subplots(3, 1, sharex=True, height_ratios=[1, 1.4, 1.6])
    every = "" if stride_frames in (None, snippet_frames) else f" every {stride_frames}"
    fig.suptitle(title or f"{video_id}  ({end_s:.1f} s, {n_snippets} snippets of {snippet_frames} frames{every} "
                          f"at {fps:g} fps)")

    axis_label, what = ATTENTION_CURVES[attention_norm]
    ax_att.stairs(attention, edges_s, color="black", linewidth=1.2,
                  label=f"{what}\n(attention_norm: {attention_norm})")
    outside = {"loc": "upper left", "bbox_to_anchor": (1.005, 1.0), "fontsize": 8, "borderaxespad": 0.0}
    if attention_threshold is not None:
        ax_att.axhline(attention_threshold, color="tab:red", linestyle="--", linewidth=1,
                       label=f"threshold {attention_threshold:g}"
                             + (" (logodds_threshold)" if attention_norm == "logodds" else ""))
    ax_att.set_ylabel(axis_label)
    if attention_norm == "logodds":  # unbounded: the data and the threshold decide the axis
        lo = min(attention.min(), attention_threshold if attention_threshold is not None else attention.min())
        hi = max(attention.max(), attention_threshold if attention_threshold is not None else attention.max())
        pad = 0.05 * max(hi - lo, 1.0)
        ax_att.set_ylim(lo - pad, hi + pad)
    else:
        ax_att.set_ylim(min(0.0, attention.min()) - 0.02, max(1.0, attention.max()) + 0.02)
    ax_att.legend(**outside)

    for c in top:
        ax_cls.stairs(scores[c], edges_s, color=color[c], linewidth=1.2, label=c)
    ax_cls.set_ylabel("class activation")
    ax_cls.set_ylim(bottom=min(0.0, min((float(scores[c].min()) for c in top), default=0.0)))
    if top:
        ax_cls.legend(**outside, title=f"top {len(top)} classes\n(by peak)", title_fontsize=8)

    shown = sorted(predictions, key=lambda p: -p["score"])[:MAX_BARS]
    truth = list(ground_truth or [])
    lanes = list(dict.fromkeys(sorted({g.label for g in truth}) + sorted({p["label"] for p in shown})))
    ticks, tick_labels, y = [], [], 0.0  # one lane per class: its ground-truth rows, then its predicted rows
    for c in lanes:
        lane_gt, lane_pred = [g for g in truth if g.label == c], [p for p in shown if p["label"] == c]
        for kind, items in (("GT", lane_gt), ("pred", lane_pred)):
            spans = [(g.start_s, g.end_s) if kind == "GT" else tuple(g["segment"]) for g in items]
            rows = _pack_rows(spans)
            for item, (start, stop), r in zip(items, spans, rows):
                if kind == "GT":
                    ax_seg.barh(y + r, stop - start, left=start, height=0.8, color=color[c], alpha=0.35, hatch="//",
                                edgecolor=color[c])
                else:
                    ax_seg.barh(y + r, stop - start, left=start, height=0.8, color=color[c], edgecolor="black",
                                linewidth=0.5)
                    ax_seg.text(start, y + r, f" {c} {item['score']:.2f}", va="center", fontsize=7, clip_on=True)
            n_rows = max(rows, default=-1) + 1
            if n_rows:
                ticks.append(y + (n_rows - 1) / 2)
                tick_labels.append(f"{c} ({kind})")
            y += n_rows
        if c != lanes[-1]:
            ax_seg.axhline(y - 0.5, color="grey", linewidth=0.5)
    ax_seg.set_yticks(ticks, tick_labels, fontsize=8)
    ax_seg.set_ylim(-0.6, max(y, 1.0) - 0.4)
    ax_seg.invert_yaxis()
    hidden = len(predictions) - len(shown)
    ax_seg.set_title(f"segments: {len(predictions)} predicted"
                     + (f" ({hidden} lowest-scoring not drawn)" if hidden else "")
                     + (f", {len(truth)} ground truth (hatched)" if truth else ""), fontsize=9, loc="left")
    ax_seg.set_xlabel("time (s)")
    ax_seg.set_xlim(0.0, max(end_s, float(edges_s[-1])))
    for ax in (ax_att, ax_cls, ax_seg):
        ax.grid(axis="x", alpha=0.3)

    with atomic_writer(path, "wb") as f, warnings.catch_warnings():
        # a video id or class name in a script the installed fonts lack (e.g. CJK with matplotlib's DejaVu Sans)
        # is drawn with boxes; the file name keeps the id: one warning per glyph would only bury the output
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        fig.savefig(f, format="png")
    return fig
