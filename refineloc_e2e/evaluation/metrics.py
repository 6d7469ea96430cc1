"""ActivityNet-protocol detection mAP (the protocol nearly all Python WSTAL code reports).

Per class and tIoU threshold:

1. Predictions are sorted by score, descending. **Ties** keep a canonical order independent of dict
   ordering: video id ascending, then the prediction's position in that video's list (a stable sort).
2. In that order each prediction is matched to the not-yet-matched ground truth of the same video and
   class with the highest tIoU; it is a true positive if that tIoU >= the threshold, else a false
   positive (so duplicates of a matched instance are false positives). Ground truths with equal tIoU:
   the earlier one (segments sorted by start, end) is taken first.
3. AP is the area under the precision/recall curve with all-point interpolation: precision is made
   monotonically non-increasing from the right, then summed over the recall steps (no 11/101 points).

A class with ground truth but no predictions has AP 0. mAP is the mean over the classes that have at
least one ground-truth instance in the evaluated videos; classes without any are excluded and listed in
:attr:`EvalResult.excluded_classes`. Predictions for videos outside the evaluated set are ignored and
counted in :attr:`EvalResult.n_ignored_predictions`. tIoU of two segments whose union has zero length is 0.

Results keys are matched to annotation keys as video ids (``ids.video_id``). Two annotation keys of the
evaluated videos, or two results keys, that give one id are an error naming both: the mAP would depend on
which one was taken.

``drop_ambiguous`` (THUMOS'14): before matching, a prediction is removed if it intersects any
``Ambiguous`` span of its video by a positive length (tIoU > 0; touching end points do not count). This
is what W-TALC's ``filter_segments`` does; the official MATLAB kit also discounts them. Off by default.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from refineloc_e2e.datasets import Dataset
from refineloc_e2e.errors import DatasetError, InputError
from refineloc_e2e.ids import collision_text, index_by_id, video_id

THUMOS_TIOUS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
ACTIVITYNET_TIOUS = [round(0.5 + 0.05 * i, 2) for i in range(10)]  # 0.5:0.05:0.95


@dataclass
class EvalResult:
    tious: list[float]
    map_per_tiou: list[float]  # fraction in [0, 1], one per tIoU
    average_map: float  # mean of map_per_tiou
    ap_per_class: dict[str, list[float]]  # class -> AP per tIoU (evaluated classes only)
    n_predictions: int  # predictions on evaluated videos, after any ambiguous-span removal
    n_ground_truth: int  # ground-truth segments in the evaluated videos
    excluded_classes: list[str] = field(default_factory=list)  # no ground truth in the evaluated videos
    n_ignored_predictions: int = 0  # predictions for videos outside the evaluated set
    n_dropped_ambiguous: int = 0  # predictions removed by drop_ambiguous
    n_videos: int = 0  # evaluated videos


def default_tious(dataset_name: str) -> list[float]:
    """THUMOS: 0.1..0.7 step 0.1; anything else (ActivityNet protocol): 0.5:0.05:0.95."""
    return list(THUMOS_TIOUS) if "thumos" in dataset_name.lower() else list(ACTIVITYNET_TIOUS)


TIOU_SYNTAX = "a number, a list (0.1,0.3,0.5) or a range start:stop:step with stop included (0.5:0.95:0.05)"


def parse_tious(specs: Iterable[str]) -> list[float]:
    """tIoU thresholds from command-line strings, each a number (``0.5``), a comma-separated list
    (``0.1,0.3,0.5``) or a numpy-style range ``start:stop:step`` whose stop is included (``0.5:0.95:0.05`` ->
    0.5, 0.55, ..., 0.95). Duplicates are dropped, the order kept; ``InputError`` names a bad one."""
    out: list[float] = []
    for spec in specs:
        for part in str(spec).split(","):
            part = part.strip()
            try:
                if ":" in part:
                    start, stop, step = (float(x) for x in part.split(":"))
                    if not step > 0 or stop < start:
                        raise ValueError
                    n = int(math.floor((stop - start) / step + 1e-9)) + 1
                    values = [round(start + i * step, 10) for i in range(n)]
                else:
                    values = [float(part)]
            except ValueError:
                raise InputError(f"--tiou {part!r}: expected {TIOU_SYNTAX}") from None
            for t in values:
                if not 0.0 < t <= 1.0:
                    raise InputError(f"--tiou {part!r}: thresholds must be in (0, 1], got {t:g}")
                if t not in out:
                    out.append(t)
    return out


def _check_prediction(p: Any, where: str, err: type[Exception]) -> tuple[str, float, float, float]:
    """Validate one ``{label, score, segment: [s, e]}``; returns (label, score, start_s, end_s)."""
    if not isinstance(p, Mapping):
        raise err(f"{where}: expected {{'label', 'score', 'segment'}}, got {p!r}")
    label, score, seg = p.get("label"), p.get("score"), p.get("segment")
    if not isinstance(label, str):
        raise err(f"{where}: 'label' must be a class name, got {label!r}")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise err(f"{where}: 'score' must be a finite number, got {score!r}")
    if (not isinstance(seg, (list, tuple)) or len(seg) != 2
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in seg)
            or seg[1] < seg[0]):
        raise err(f"{where}: 'segment' must be [start_s, end_s] with finite start <= end, got {seg!r}")
    return label, float(score), float(seg[0]), float(seg[1])


def load_predictions(path: str | Path) -> dict[str, list[dict]]:
    """Read an ActivityNet results JSON and return its validated ``results`` mapping
    (video id -> [{"label", "score", "segment": [start_s, end_s]}]), ready for :func:`evaluate`."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise InputError(f"{path}: predictions file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict):
        raise InputError(f"{path}: expected an ActivityNet results object with a 'results' mapping "
                         f"of video id -> list of predictions")
    results = {}
    for vid, preds in doc["results"].items():
        if not isinstance(preds, list):
            raise InputError(f"{path}: results[{vid!r}] must be a list, got {type(preds).__name__}")
        checked = [_check_prediction(p, f"{path}: results[{vid!r}][{i}]", InputError) for i, p in enumerate(preds)]
        results[vid] = [{"label": lab, "score": s, "segment": [a, b]} for lab, s, a, b in checked]
    return results


def tiou(seg: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """tIoU of each row of ``seg`` (float[P, 2] seconds) with each row of ``gt`` (float[K, 2]) -> float[P, K]."""
    s, e = seg[:, :1], seg[:, 1:]  # [P, 1]
    inter = np.clip(np.minimum(e, gt[None, :, 1]) - np.maximum(s, gt[None, :, 0]), 0.0, None)  # [P, K]
    union = (e - s) + (gt[None, :, 1] - gt[None, :, 0]) - inter  # [P, K]
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def average_precision(is_tp: np.ndarray, n_ground_truth: int) -> float:
    """All-point interpolated AP from a score-ordered bool[N] TP/FP vector."""
    if n_ground_truth == 0 or len(is_tp) == 0:
        return 0.0
    tp = np.cumsum(is_tp, dtype=np.float64)  # [N]
    precision = tp / np.arange(1, len(is_tp) + 1)  # [N]
    recall = tp / n_ground_truth  # [N]
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # non-increasing from the right
    recall_steps = np.diff(np.concatenate([[0.0], recall]))  # [N]
    return float(np.sum(recall_steps * precision))


def _class_tp(preds: list[tuple[float, str, int, float, float]], gt: dict[str, np.ndarray],
              tious: np.ndarray) -> np.ndarray:
    """bool[N, n_tious] TP flags for one class's predictions, already in score order.

    Matching in one video never affects another, so each video's predictions (in their global order) are
    matched on their own, with one tIoU matrix per video. With one ground truth (most videos) the first
    prediction reaching a threshold takes it; with more, predictions below every threshold are skipped and
    the rest are matched one by one (the greedy rule of the module docstring). O(N K) numpy work in all.
    """
    is_tp = np.zeros((len(preds), len(tious)), dtype=bool)
    rows_of: dict[str, list[int]] = {}
    for n, p in enumerate(preds):
        if p[1] in gt:
            rows_of.setdefault(p[1], []).append(n)
    for vid, rows in rows_of.items():
        g = gt[vid]  # [K, 2]
        rows = np.asarray(rows)  # [P] positions in the class's score order
        ious = tiou(np.asarray([preds[n][3:5] for n in rows], dtype=np.float64), g)  # [P, K]
        if len(g) == 1:
            reach = ious[:, :1] >= tious[None, :]  # [P, n_tious]
            hit = reach.any(axis=0)  # [n_tious]
            is_tp[rows[reach.argmax(axis=0)[hit]], np.flatnonzero(hit)] = True
            continue
        used = np.zeros((len(tious), len(g)), dtype=bool)  # [n_tious, K]
        for r in np.flatnonzero(ious.max(axis=1) >= tious.min()):
            order = np.argsort(-ious[r], kind="stable")  # best tIoU first, earlier ground truth on ties
            free = (ious[r, order][None, :] >= tious[:, None]) & ~used[:, order]  # [n_tious, K]
            hit = free.any(axis=1)  # [n_tious]
            pick = order[free.argmax(axis=1)]  # [n_tious]
            used[np.flatnonzero(hit), pick[hit]] = True
            is_tp[rows[r]] = hit
    return is_tp


def _keys_by_id(videos: Mapping[str, Any], predictions: Mapping[str, Any], name: str, subset: str) -> dict[str, str]:
    """{video id: annotation key} of the evaluated videos; DatasetError naming them where two annotation keys,
    or two results keys, give one id (a result could then count for either video, or twice for one)."""
    as_id, shared = index_by_id(sorted(videos))
    for vid, keys in shared.items():
        raise DatasetError(f"dataset {name!r} subset {subset!r}: {collision_text(vid, keys, 'annotation keys')}: "
                           f"a result for it could be either video's; rename one of them")
    _, shared = index_by_id(sorted(predictions))
    for vid, keys in shared.items():
        if vid in as_id:
            raise DatasetError(f"predictions: {collision_text(vid, keys, 'results keys')} (annotation key "
                               f"'{as_id[vid]}'): both would be scored as one video; merge them or drop one")
    return as_id


def evaluate(predictions: Mapping[str, list[dict]], dataset: Dataset, *, subset: str = "test",
             tious: Sequence[float] | None = None, drop_ambiguous: bool = False,
             video_ids: Iterable[str] | None = None) -> EvalResult:
    """Detection mAP of ``predictions`` (video id -> [{label, score, segment}]) against ``dataset``'s
    ``subset``, optionally restricted to ``video_ids``. See the module docstring for the protocol."""
    tious = list(tious) if tious is not None else default_tious(dataset.name)
    if not tious or not all(0.0 < t <= 1.0 for t in tious):
        raise DatasetError(f"tIoU thresholds must be in (0, 1], got {tious}")
    videos = {v.video_id: v for v in dataset.subset(subset)}
    if video_ids is not None:
        wanted = set(video_ids)
        missing = sorted(wanted - set(videos))
        if missing:
            raise DatasetError(f"dataset {dataset.name!r} subset {subset!r} has no videos {missing[:5]}"
                               f"{' ...' if len(missing) > 5 else ''} ({len(missing)} requested ids missing)")
        videos = {k: v for k, v in videos.items() if k in wanted}
    gt: dict[str, dict[str, list[tuple[float, float]]]] = {}  # class -> video -> spans
    for vid, v in videos.items():
        for g in v.segments:
            gt.setdefault(g.label, {}).setdefault(vid, []).append((g.start_s, g.end_s))
    classes = [c for c in dataset.classes if c in gt]
    per_class: dict[str, list] = {c: [] for c in classes}
    n_pred = n_ignored = n_dropped = 0
    known = set(dataset.classes)
    as_id = _keys_by_id(videos, predictions, dataset.name, subset)  # annotation keys as ids
    for key in sorted(predictions):
        vid = key if key in videos else as_id.get(video_id(key), key)
        for i, p in enumerate(predictions[key]):
            label, score, start_s, end_s = _check_prediction(p, f"predictions[{key!r}][{i}]", DatasetError)
            if label not in known:
                raise DatasetError(f"predictions[{key!r}][{i}]: label {label!r} is not a class of dataset "
                                   f"{dataset.name!r}")
            if vid not in videos:
                n_ignored += 1
                continue
            if drop_ambiguous and any(min(end_s, b) - max(start_s, a) > 0 for a, b in dataset.ambiguous.get(vid, [])):
                n_dropped += 1
                continue
            n_pred += 1
            if label in per_class:
                per_class[label].append((-score, vid, i, start_s, end_s))
    thresholds = np.asarray(tious, dtype=np.float64)  # [n_tious]
    ap_per_class = {}
    for c in classes:
        preds = sorted(per_class[c], key=lambda r: r[:3])  # score desc, then video id, then list position
        class_gt = {vid: np.asarray(spans, dtype=np.float64) for vid, spans in gt[c].items()}  # [K, 2]
        n_gt = sum(len(g) for g in class_gt.values())
        is_tp = _class_tp(preds, class_gt, thresholds)  # [N, n_tious]
        ap_per_class[c] = [average_precision(is_tp[:, k], n_gt) for k in range(len(tious))]
    map_per_tiou = [float(np.mean([ap[k] for ap in ap_per_class.values()])) if classes else 0.0
                    for k in range(len(tious))]
    return EvalResult(tious=[float(t) for t in tious], map_per_tiou=map_per_tiou,
                      average_map=float(np.mean(map_per_tiou)), ap_per_class=ap_per_class,
                      n_predictions=n_pred, n_ground_truth=sum(len(v.segments) for v in videos.values()),
                      excluded_classes=[c for c in dataset.classes if c not in gt],
                      n_ignored_predictions=n_ignored, n_dropped_ambiguous=n_dropped, n_videos=len(videos))


def format_table(result: EvalResult, *, per_class: bool = False) -> str:
    """mAP (%) per tIoU and their average, two decimals; with ``per_class`` one AP row per class."""
    name_w = max([6] + [len(c) for c in result.ap_per_class] if per_class else [6])
    head = f"{'tIoU':<{name_w}} " + " ".join(f"{t:>6.2f}" for t in result.tious) + f" {'Avg':>6}"

    def row(name: str, values: list[float]) -> str:
        cells = " ".join(f"{100 * x:6.2f}" for x in values)
        return f"{name:<{name_w}} {cells} {100 * float(np.mean(values)):6.2f}"

    lines = [head, row("mAP(%)", result.map_per_tiou)]
    if per_class:
        lines.append("-" * len(head))
        lines += [row(c, aps) for c, aps in result.ap_per_class.items()]
    lines.append(f"{result.n_videos} videos, {result.n_ground_truth} ground-truth segments, "
                 f"{result.n_predictions} predictions ({result.n_ignored_predictions} on other videos ignored, "
                 f"{result.n_dropped_ambiguous} dropped as ambiguous)")
    if result.excluded_classes:
        lines.append(f"excluded (no ground truth here): {', '.join(result.excluded_classes)}")
    return "\n".join(lines)
