"""What the results page shows, gathered from the files: the results JSON, the videos, saved scores, the truth.

- **Segments**: ``results`` of an ActivityNet results JSON (checked by ``evaluation.metrics.load_predictions``;
  an empty list, e.g. a video the detector abstained on, is a video with no segment).
- **The video** of each id: ``external_data.sources[id]`` (``detect`` records the absolute path; a relative one
  is taken from the results file's folder); else, under ``video_root``, the file of that name, or a video file
  whose id (``ids.video_id_of``) is the id. Not found: where it was expected, said on the page.
- **Curves** from a scores file ``<scores_dir>/<id>.npz`` (``detect --save-scores``): the time base (``fps``,
  ``snippet_frames``, ``stride_frames``) is required; the attention curve is drawn where ``attention_bf`` is
  there (as ``detect --plot`` draws it, ``detection.plot.attention_curve``, under the results' own
  post-processing settings); the class curves come from the first of :data:`CLASS_CURVE_KEYS` holding a
  float[T, C] array, C = ``len(class_names)`` (a detector that saves class probabilities under another key adds
  it there). Which classes: the video's predicted labels, then its annotated ones; when none of them has a
  curve, the :data:`MAX_CLASS_CURVES` classes with the highest peak.
- **Truth** (``ground_truth``: ``datasets.load_ground_truth``'s values): the annotated segments of each video,
  each with the highest tIoU of a predicted segment of its label (``evaluation.metrics.tiou``).

Every other ``external_data`` key is ignored; a file that cannot be read is a ``RefineLocError`` naming it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from refineloc_e2e.config import from_dict
from refineloc_e2e.datasets import Dataset, Segment, load_ground_truth
from refineloc_e2e.detection.plot import ATTENTION_CURVES, attention_curve
from refineloc_e2e.errors import CacheError, ConfigError, InputError
from refineloc_e2e.evaluation.metrics import load_predictions, tiou
from refineloc_e2e.features.batch import VIDEO_EXTENSIONS
from refineloc_e2e.fileio import load_arrays_untrusted
from refineloc_e2e.ids import video_id, video_id_of
from refineloc_e2e.model.postprocess import PostprocessConfig
from refineloc_e2e.timebase import snippet_to_seconds, time_base

logger = logging.getLogger(__name__)

# a scores file's per-class curves, float[T, C]: the first key present is drawn ("cas": the RefineLoc and
# BaS-Net heads' softmax class activation, detect --save-scores)
CLASS_CURVE_KEYS = ("class_probs", "probs", "cas")
MAX_CLASS_CURVES = 5  # class curves drawn per video (the plot PNG's top_k_classes is 5 too)


@dataclass
class Curves:
    """Per-snippet curves of one video; snippet t spans ``[start_s + t * step_s, start_s + (t + 1) * step_s)``
    (``timebase.snippet_to_seconds``)."""
    start_s: float
    step_s: float
    attention: np.ndarray | None  # float[T]: the fg panel of detect --plot, or None
    attention_name: str  # what ``attention`` is (``detection.plot.ATTENTION_CURVES``)
    attention_threshold: float | None
    attention_bounded: bool  # in [0, 1] (attention_norm none / minmax); logodds is not
    classes: dict[str, np.ndarray]  # label -> float[T]
    classes_key: str | None  # the scores key the class curves came from


@dataclass
class TruthSegment:
    segment: Segment
    best_tiou: float | None  # highest tIoU of a predicted segment with its label; None: no such prediction


@dataclass
class VideoView:
    video_id: str
    segments: list[dict]  # ActivityNet entries {label, score, segment: [start_s, end_s]}, as in the file
    duration_s: float | None
    source: Path | None  # the video file, found
    expected: str | None  # where the video was looked for when not found (None: no video recorded at all)
    curves: Curves | None = None
    truth: list[TruthSegment] | None = None  # None: no ground truth given, or this video is not annotated
    abstained: bool = False


@dataclass
class Report:
    results_path: Path
    videos: list[VideoView]
    model: str | None  # what made the results, in words (external_data.model), if recorded
    no_video: str | None  # why no video is shown at all (results from features), or None
    notes: list[str] = field(default_factory=list)


def read_results(path: str | Path) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """(results, external_data) of an ActivityNet results JSON; the results checked entry by entry."""
    path = Path(path)
    results = load_predictions(path)
    with open(path, encoding="utf-8") as f:
        external = json.load(f).get("external_data")
    return results, external if isinstance(external, dict) else {}


def _model_words(external: Mapping[str, Any]) -> str | None:
    model = external.get("model")
    if isinstance(model, str):
        return model
    if isinstance(model, dict):
        for key in ("name", "path"):
            if isinstance(model.get(key), str):
                return model[key]
    return None


def _videos_under(root: Path) -> dict[str, Path]:
    """Video files directly in ``root`` by their id (the first in name order where two ids collide)."""
    found: dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            found.setdefault(video_id_of(p), p)
    return found


def find_source(vid: str, recorded: str | None, *, results_dir: Path, video_root: Path | None,
                under_root: Mapping[str, Path]) -> tuple[Path | None, str | None]:
    """(the video file, None) or (None, where it was expected; None when nothing says where)."""
    expected = []
    if recorded:
        p = Path(recorded) if Path(recorded).is_absolute() else results_dir / recorded
        if p.is_file():
            return p, None
        expected.append(str(p))
        if video_root is not None and (video_root / p.name).is_file():
            return video_root / p.name, None
    if video_root is not None:
        if vid in under_root:
            return under_root[vid], None
        expected.append(f"{video_root}/{Path(recorded).name if recorded else vid + '.*'}")
    return None, " or ".join(dict.fromkeys(expected)) or None


def _postprocess(external: Mapping[str, Any], notes: list[str]) -> PostprocessConfig:
    recorded = external.get("postprocess")
    if not isinstance(recorded, dict):
        return PostprocessConfig()
    try:
        return from_dict(PostprocessConfig, recorded)
    except ConfigError as e:  # another detector's settings: the curves are drawn under the paper's defaults
        notes.append(f"the results' post-processing settings are not RefineLoc's ({e}); attention curves use "
                     f"the defaults")
        return PostprocessConfig()


def read_curves(path: Path, labels: list[str], pp: PostprocessConfig) -> tuple[Curves, float | None]:
    """The curves of one scores file for ``labels`` (see the module docstring), and its duration (or None)."""
    s = load_arrays_untrusted(path)
    if not isinstance(s, dict):
        raise CacheError(f"{path}: not a scores .npz")
    try:
        tb = time_base({k: s[k].item() if k in s else None for k in ("fps", "snippet_frames", "stride_frames")})
    except (KeyError, TypeError, ValueError):
        raise CacheError(f"{path}: saved scores lack their time base (fps, snippet_frames): "
                         f"not written by detect --save-scores") from None
    start_s = float(snippet_to_seconds(0, **tb))
    step_s = float(snippet_to_seconds(1, **tb)) - start_s
    names = [str(n) for n in s["class_names"]] if "class_names" in s else []
    attention, threshold, name = None, None, ATTENTION_CURVES[pp.attention_norm][0]
    if "attention_bf" in s:
        attention, threshold = attention_curve(np.asarray(s["attention_bf"], np.float64), pp,
                                               s.get("attention_logodds"))
    key = next((k for k in CLASS_CURVE_KEYS if k in s and s[k].ndim == 2 and s[k].shape[1] == len(names)
                and names), None)
    classes: dict[str, np.ndarray] = {}
    if key is not None:
        table = np.asarray(s[key], np.float64)  # [T, C]
        col = {n: i for i, n in enumerate(names)}
        picked = [c for c in dict.fromkeys(labels) if c in col][:MAX_CLASS_CURVES]
        if not picked:  # none of the video's labels is a class of the scores (or no label at all)
            picked = [names[i] for i in np.argsort(-table.max(axis=0), kind="stable")[:MAX_CLASS_CURVES]]
        classes = {c: table[:, col[c]] for c in picked}
    duration = s.get("duration_s")
    duration_s = float(duration) if duration is not None and np.isfinite(duration) else None
    return Curves(start_s, step_s, attention, name, threshold, pp.attention_norm != "logodds", classes,
                  key), duration_s


def truth_with_tiou(truth: list[Segment], predictions: list[dict]) -> list[TruthSegment]:
    """Each annotated segment with the highest tIoU of a predicted segment of the same label."""
    out = []
    for g in truth:
        same = np.asarray([p["segment"] for p in predictions if p["label"] == g.label], np.float64).reshape(-1, 2)
        best = float(tiou(same, np.asarray([[g.start_s, g.end_s]])).max()) if len(same) else None  # [P, 1]
        out.append(TruthSegment(g, best))
    return out


def gather(results_path: str | Path, *, scores_dir: str | Path | None = None, ground_truth: str | None = None,
           video_root: str | Path | None = None, dataset: Dataset | None = None) -> Report:
    """Everything the page shows for the results at ``results_path`` (see the module docstring).
    ``dataset``: an already loaded ground truth (instead of the ``ground_truth`` spec)."""
    results_path = Path(results_path)
    results, external = read_results(results_path)
    notes: list[str] = []
    root = Path(video_root) if video_root is not None else None
    if root is not None and not root.is_dir():
        raise InputError(f"{root}: video folder not found (--video-root)")
    under_root = _videos_under(root) if root is not None else {}
    sources = external.get("sources") if isinstance(external.get("sources"), dict) else {}
    durations = external.get("durations_s") if isinstance(external.get("durations_s"), dict) else {}
    abstained = set(external.get("abstained") or []) if isinstance(external.get("abstained"), list) else set()
    scores = Path(scores_dir) if scores_dir is not None else None
    if scores is not None and not scores.is_dir():
        raise InputError(f"{scores}: scores folder not found (--scores)")
    pp = _postprocess(external, notes) if scores is not None else PostprocessConfig()
    if dataset is None and ground_truth is not None:
        dataset, _ = load_ground_truth(ground_truth)
    annotated = {}
    if dataset is not None:
        annotated = {video_id(k): k for k in dataset.videos}
        annotated.update({k: k for k in dataset.videos})  # an exact key wins over a normalised one
    videos, no_scores = [], []
    for vid, preds in results.items():
        source, expected = find_source(vid, sources.get(vid), results_dir=results_path.parent, video_root=root,
                                       under_root=under_root)
        duration_s = durations.get(vid)
        view = VideoView(vid, preds, float(duration_s) if isinstance(duration_s, (int, float)) else None,
                         source, expected, abstained=vid in abstained)
        key = annotated.get(vid)
        if key is not None:
            ann = dataset.videos[key]
            view.truth = truth_with_tiou(ann.segments, preds)
            if view.duration_s is None:
                view.duration_s = ann.duration_s
        if scores is not None:
            f = scores / f"{vid}.npz"
            if f.is_file():
                labels = [p["label"] for p in preds] + [t.segment.label for t in view.truth or []]
                view.curves, scores_duration_s = read_curves(f, labels, pp)
                view.duration_s = view.duration_s if view.duration_s is not None else scores_duration_s
            else:
                no_scores.append(vid)
        videos.append(view)
    if no_scores:
        notes.append(f"no saved scores in {scores} for {len(no_scores)} of {len(videos)} videos "
                     f"(e.g. {no_scores[0]}.npz): no curves for them")
    if dataset is not None:
        notes.append(f"ground truth: {dataset.name}, {sum(v.truth is not None for v in videos)} of the "
                     f"{len(videos)} videos annotated")
    no_video = None
    if not sources and not under_root:
        features = external.get("features") if isinstance(external.get("features"), dict) else {}
        origin = (f"features in {features['folder']}" if features.get("folder") else
                  f"scores saved in {external['rescored_from']}" if external.get("rescored_from") else "features")
        no_video = (f"these results were computed from {origin}, with no video: the timelines alone are shown "
                    f"(--video-root DIR finds the videos)")
    for line in notes:
        logger.info("%s", line)
    return Report(results_path, videos, _model_words(external), no_video, notes)
