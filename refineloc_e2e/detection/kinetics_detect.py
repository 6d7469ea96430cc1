"""Detection with the built-in ``kinetics400`` model: videos, feature folders or saved scores in, segments out.

Per video: the features' Kinetics logits (``detection.kinetics``: ``W f + b`` on the RGB half, + flow for a
two-stream model with its own Kinetics head) -> softmax -> the vocabulary's probabilities
(``detection.vocab``) -> ``detection.localise`` (smoothing, pooled selection, scored segments, or an
abstention) -> seconds through the one time base (``model.postprocess.segments_to_results``).

Features for videos (``detect_videos_kinetics``): an entry already in the cache for this very video that the
head can score (any settings: a both-stream entry is used as it is, through its RGB half) is used without
extraction; the others are extracted with :func:`kinetics_extract_config`'s settings into the cache's
``rgb-only/`` subfolder when RGB-only (so an RGB-only extraction never replaces a both-stream entry), into the
cache itself for a two-stream model.

An abstention: ``results[id] = []``, the id listed in ``external_data.abstained``, and one line naming the top
pooled class and its probability.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from refineloc_e2e import __version__
from refineloc_e2e.config import load_config, to_dict
from refineloc_e2e.datasets import Dataset
from refineloc_e2e.detection.detect import results_json
from refineloc_e2e.detection.kinetics import (KineticsHead, flow_has_kinetics_head, kinetics_head, scorable_problem,
                                              settings_problem, softmax)
from refineloc_e2e.detection.localise import LocaliseConfig, localise
from refineloc_e2e.detection.plot import plot_timeline
from refineloc_e2e.detection.vocab import Vocab, load_vocab
from refineloc_e2e.errors import CacheError, ConfigError, InputError, RefineLocError
from refineloc_e2e.features.batch import collect_inputs, extract_batch
from refineloc_e2e.features.cache import assign_video_ids, cached_ids, read_features, source_matches
from refineloc_e2e.features.distributed import extract_batch_ray
from refineloc_e2e.features.extractor import ExtractConfig
from refineloc_e2e.fileio import atomic_write_json
from refineloc_e2e.ids import one_per_id
from refineloc_e2e.model.postprocess import load_scores, save_scores, segments_to_results
from refineloc_e2e.progress import log_lines
from refineloc_e2e.timebase import time_base

logger = logging.getLogger(__name__)

MODEL_NAME = "kinetics400"
RGB_ONLY_SUBDIR = "rgb-only"  # where RGB-only extractions go inside the cache (never over a both-stream entry)
SCORE_KEYS = ("probs", "class_names", "model", "fps", "snippet_frames")


def kinetics_extract_config(config_path: str | Path | None, overrides: list[str]) -> tuple[ExtractConfig, str]:
    """The extraction settings for the built-in model, and one line saying which streams it scores: both when
    the flow weights carry their own Kinetics head (``--set backbone=standard``), else RGB only."""
    cfg = load_config(ExtractConfig, config_path, list(overrides))
    if cfg.streams == "flow":
        raise ConfigError("streams=flow: the built-in kinetics400 model reads the RGB stream; use rgb or both")
    problem = settings_problem(cfg.decode.crop_size, cfg.decode.snippet_frames, cfg.precision)
    if problem is not None:  # refused before any extraction
        raise ConfigError(f"the built-in kinetics400 model cannot score these settings: {problem}")
    if cfg.streams == "both" and flow_has_kinetics_head(cfg.flow_weights):
        return cfg, (f"kinetics400: two streams, RGB + flow logits ({cfg.flow_weights} has its own Kinetics "
                     f"head)")
    line = (f"kinetics400: RGB stream only (the flow stream {cfg.flow_weights} has no Kinetics head of its own; "
            f"--set backbone=standard for two streams)")
    return dataclasses.replace(cfg, streams="rgb"), line


@dataclass
class KineticsSummary:
    results: dict[str, list[dict]] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    abstained: list[str] = field(default_factory=list)
    weights: dict[str, Any] = field(default_factory=dict)  # the logits layers used: stream -> {weights_id, sha256}
    sources: dict[str, str] = field(default_factory=dict)  # video id -> its file, absolute (the results page finds it)
    durations_s: dict[str, float] = field(default_factory=dict)  # video id -> seconds, where the features know

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class KineticsScorer:
    """Scores one video's features at a time into ``summary`` (see the module docstring)."""
    vocab: Vocab
    cfg: LocaliseConfig
    summary: KineticsSummary
    log: Callable[[str], None]
    plot_dir: str | Path | None = None
    scores_dir: str | Path | None = None
    ground_truth: Dataset | None = None

    def __post_init__(self) -> None:
        self.gt_keys = one_per_id(self.ground_truth.videos if self.ground_truth else [], "annotation keys",
                                  self.log)  # {video id: annotation key}, for the plots, built once

    def features(self, source: str, vid: str, feats: np.ndarray, meta: dict, where: str) -> None:
        try:
            head = kinetics_head(meta, where)
            probs = self.vocab.map_probs(softmax(head.logits(feats, meta)))  # [T, C]
            if self.scores_dir is not None:
                save_scores(Path(self.scores_dir) / f"{vid}.npz", self._scores(probs, meta, head))
            self.summary.weights.update(head.provenance)
            self.probs(vid, probs, meta)
        except RefineLocError as e:
            self.log(f"error: {source}: {e}")
            self.summary.failed.append((source, str(e)))

    def _scores(self, probs: np.ndarray, meta: dict, head: KineticsHead) -> dict[str, np.ndarray]:
        return {"probs": probs, "class_names": np.array(self.vocab.classes, dtype=str),
                "model": np.array(MODEL_NAME), "classes": np.array(self.vocab.name),
                "weights_sha256": np.array([p["sha256"] for p in head.provenance.values()], dtype=str),
                "fps": np.float64(meta["fps"]), "snippet_frames": np.int64(meta["snippet_frames"]),
                "stride_frames": np.int64(time_base(meta)["stride_frames"]),
                "duration_s": np.float64(meta.get("duration_s") or np.nan)}

    def probs(self, vid: str, probs: np.ndarray, meta: dict) -> None:
        """Localise one video's vocabulary probabilities float[T, C] (from features or saved scores)."""
        loc = localise(probs, self.cfg)
        if meta.get("duration_s"):
            self.summary.durations_s[vid] = float(meta["duration_s"])
        results = segments_to_results(loc.segments, self.vocab.classes, **time_base(meta),
                                      n_snippets=probs.shape[0], duration_s=meta.get("duration_s"))
        self.summary.results[vid] = results
        if loc.abstained:
            top = loc.top_class
            self.summary.abstained.append(vid)
            why = (f"< min_class_prob {self.cfg.min_class_prob:g}" if loc.pooled[top] < self.cfg.min_class_prob
                   else f"leading the next class by less than min_margin {self.cfg.min_margin:g}")
            self.log(f"{vid}: no confident class; the top pooled class is '{self.vocab.classes[top]}' at "
                     f"{loc.pooled[top]:.3f} {why}: no segments")
        if self.plot_dir is not None:
            self.summary.plots.append(str(self._plot(vid, meta, loc, results)))

    def _plot(self, vid: str, meta: dict, loc, results: list[dict]) -> Path:
        top = np.argsort(-loc.pooled)[:5]
        gt = self.ground_truth.videos[self.gt_keys[vid]].segments if vid in self.gt_keys else None
        path = Path(self.plot_dir) / f"{vid}.png"
        plot_timeline(path, video_id=vid, duration_s=meta.get("duration_s"), **time_base(meta),
                      fg_attention=loc.smoothed.max(axis=1), class_scores={self.vocab.classes[i]: loc.smoothed[:, i]
                                                                            for i in top},
                      predictions=results, ground_truth=gt, attention_threshold=self.cfg.min_class_prob,
                      attention_norm="class_prob")
        return path


def _external(summary: KineticsSummary, vocab: Vocab, cfg: LocaliseConfig, **extra: Any) -> dict[str, Any]:
    return {"tool": f"refineloc-e2e {__version__}",
            "model": {"name": MODEL_NAME, "classes": vocab.describe(), "weights": summary.weights},
            "localise": to_dict(cfg), "abstained": sorted(summary.abstained),
            "sources": {vid: summary.sources[vid] for vid in sorted(summary.sources) if vid in summary.results},
            "durations_s": {vid: summary.durations_s[vid] for vid in sorted(summary.durations_s)}, **extra}


def _write(out_json: str | Path, summary: KineticsSummary, external: dict[str, Any]) -> None:
    atomic_write_json(out_json, results_json(summary.results, external))


def usable_cached(cache_dir: str | Path, vid: str, video: Path, cfg: ExtractConfig
                  ) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The cache's entry for ``video`` if it is this very content, scorable, and made with the RGB weights and
    decode ``cfg`` asks for (whatever else it holds, e.g. a flow stream), else None."""
    cache_dir = Path(cache_dir)
    if not (cache_dir / f"{vid}.json").is_file():
        return None
    try:
        feats, meta = read_features(cache_dir, vid)
    except CacheError:
        return None
    rgb = (meta.get("backbone") or {}).get("rgb") or {}
    if (scorable_problem(meta) is not None or meta.get("decode") != dataclasses.asdict(cfg.decode)
            or rgb.get("weights_id") != cfg.rgb_weights or not source_matches(meta, video)):
        return None
    if cfg.streams == "both" and "flow" not in meta["streams"]:
        return None  # two streams asked for: an RGB-only entry lacks the flow half
    return feats, meta


def detect_videos_kinetics(videos: Iterable[str | Path], *, out_json: str | Path, extract_cfg: ExtractConfig,
                           cache_dir: str | Path, vocab: Vocab | None = None, cfg: LocaliseConfig | None = None,
                           plot_dir=None, scores_dir=None, ground_truth=None, progress: bool = True,
                           ray_address: str | None = None, log: Callable[[str], None] | None = None
                           ) -> KineticsSummary:
    """The built-in detector on ``videos`` (see the module docstring); writes ``out_json`` (also on partial
    failure)."""
    log = log or log_lines(logger)
    vocab, cfg = vocab or load_vocab(MODEL_NAME), cfg or LocaliseConfig()
    summary = KineticsSummary()
    scorer = KineticsScorer(vocab, cfg, summary, log, plot_dir, scores_dir, ground_truth)
    paths, failures = collect_inputs(videos)
    for p, why in failures:
        log(f"error: {p}: {why}")
    summary.failed.extend(failures)
    ids = assign_video_ids(paths, log=log)
    summary.sources.update({ids[p]: str(Path(p).resolve()) for p in paths})
    rest = []
    for p in paths:
        hit = usable_cached(cache_dir, ids[p], p, extract_cfg)
        if hit is None:
            rest.append(p)
        else:
            scorer.features(str(p), ids[p], *hit, where=str(Path(cache_dir) / f"{ids[p]}.npy"))
    out_dir = Path(cache_dir) / RGB_ONLY_SUBDIR if extract_cfg.streams == "rgb" else Path(cache_dir)
    ready = lambda video, vid, feats, meta: scorer.features(  # noqa: E731
        str(video), vid, feats, meta, where=str(out_dir / f"{vid}.npy"))
    if rest:
        run = extract_batch_ray if ray_address is not None else extract_batch
        kw = {"address": ray_address} if ray_address is not None else {}
        batch = run(rest, out_dir, extract_cfg, progress=progress, log=log, on_ready=ready, **kw)
        summary.failed[:0] = batch.failed
    _write(out_json, summary, _external(summary, vocab, cfg, extract_config=to_dict(extract_cfg),
                                        cache=str(cache_dir)))
    return summary


def detect_features_kinetics(features_dir: str | Path, video_ids: Iterable[str] | None, *, out_json: str | Path,
                             vocab: Vocab | None = None, cfg: LocaliseConfig | None = None, plot_dir=None,
                             scores_dir=None, ground_truth=None, log: Callable[[str], None] | None = None
                             ) -> KineticsSummary:
    """The built-in detector on a folder of extracted features; features it cannot score fail, naming the
    file and why."""
    log = log or log_lines(logger)
    features_dir = Path(features_dir)
    if not features_dir.is_dir():
        raise InputError(f"{features_dir}: features folder not found")
    vocab, cfg = vocab or load_vocab(MODEL_NAME), cfg or LocaliseConfig()
    stems = cached_ids(features_dir, log=log)
    ids = list(one_per_id(video_ids, "ids", log)) if video_ids else list(stems)  # as typed: the same normalisation
    if not ids:
        raise InputError(f"{features_dir}: no feature files (<video_id>.json) found")
    summary = KineticsSummary()
    scorer = KineticsScorer(vocab, cfg, summary, log, plot_dir, scores_dir, ground_truth)
    for vid in ids:
        stem = stems.get(vid, vid)
        try:
            feats, meta = read_features(features_dir, stem)
        except RefineLocError as e:
            log(f"error: {vid}: {e}")
            summary.failed.append((vid, str(e)))
            continue
        scorer.features(vid, vid, feats, meta, where=str(features_dir / f"{stem}.npy"))
    _write(out_json, summary, _external(summary, vocab, cfg, features={"folder": str(features_dir)}))
    return summary


def is_kinetics_scores(scores_dir: str | Path) -> bool:
    """Whether a ``--save-scores`` folder holds the built-in model's scores (they record ``model``)."""
    files = sorted(Path(scores_dir).glob("*.npz"))
    if not files:
        return False
    try:
        with np.load(files[0], allow_pickle=False) as z:
            return "model" in z.files and str(z["model"]) == MODEL_NAME
    except (OSError, ValueError, EOFError):
        return False


def redetect_kinetics_scores(scores_dir: str | Path, out_json: str | Path, cfg: LocaliseConfig | None = None,
                             log: Callable[[str], None] | None = None) -> KineticsSummary:
    """Re-run only the localisation on the built-in model's saved scores (no features, no weights)."""
    log = log or log_lines(logger)
    cfg = cfg or LocaliseConfig()
    files = sorted(Path(scores_dir).glob("*.npz"))
    if not files:
        raise InputError(f"{scores_dir}: no saved scores (*.npz) found")
    summary = KineticsSummary()
    vocab = None
    taken = one_per_id([f.stem for f in files], "saved scores", log)  # {video id: file stem}
    id_of = {stem: vid for vid, stem in taken.items()}
    for f in files:
        if f.stem not in id_of:
            continue  # another file of the same id was taken (warned above)
        s = load_scores(f, required=SCORE_KEYS)
        if str(s["model"]) != MODEL_NAME:
            raise InputError(f"{f}: scores of model {str(s['model'])!r}, not {MODEL_NAME}")
        names = [str(n) for n in s["class_names"]]
        if vocab is None:
            vocab = Vocab(str(s.get("classes", MODEL_NAME)), names, [[i] for i in range(len(names))])
            scorer = KineticsScorer(vocab, cfg, summary, log)
        elif names != vocab.classes:
            raise InputError(f"{f}: another vocabulary than the first scores file's ({vocab.name})")
        meta = {"fps": float(s["fps"]), "snippet_frames": int(s["snippet_frames"]),
                "stride_frames": int(s.get("stride_frames", s["snippet_frames"])),
                "duration_s": None if np.isnan(s.get("duration_s", np.nan)) else float(s["duration_s"])}
        if "weights_sha256" in s:
            summary.weights["sha256"] = [str(x) for x in s["weights_sha256"]]
        scorer.probs(id_of[f.stem], np.asarray(s["probs"], dtype=np.float64), meta)
    _write(out_json, summary, _external(summary, vocab, cfg, rescored_from=str(scores_dir)))
    return summary
