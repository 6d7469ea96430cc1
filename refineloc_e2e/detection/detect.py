"""Videos -> labelled time segments (ActivityNet results JSON), through the feature cache.

``detect_videos``: the trained head (loaded once, by the caller or here) is checked against the extraction
settings (dim, fps, snippet length, backbone weights, settings hash) *before* any work; then each video's
features come from ``features.batch.extract_batch`` as they are ready (freshly extracted: the arrays in
memory; up to date in the cache: the arrays its validity check loaded), never re-read. Per video: the head's
raw scores (``model.inference``), optionally saved, post-processed into segments
(``model.postprocess.predict_segments_from_scores``, the same function the segment-prediction pseudo-label
generator uses), converted to seconds through the one time base, and plotted (optional).
``detect_features`` does the same on a folder of cached/imported features (each file checked against the
model once), and ``redetect_from_scores`` re-runs only the post-processing on saved scores, so thresholds
can be tuned without the network.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from refineloc_e2e import __version__
from refineloc_e2e.backbone.i3d import FEATURE_DIM
from refineloc_e2e.backbone.weights import CROSS_MODALITY
from refineloc_e2e.config import from_dict, parse_overrides, to_dict
from refineloc_e2e.datasets import Dataset
from refineloc_e2e.detection.plot import attention_curve, plot_timeline
from refineloc_e2e.device import resolve_device
from refineloc_e2e.errors import CacheError, ConfigError, InputError, ModelMismatchError, RefineLocError
from refineloc_e2e.features.batch import extract_batch
from refineloc_e2e.features.cache import cached_ids, read_features
from refineloc_e2e.features.distributed import extract_batch_ray
from refineloc_e2e.features.extractor import ORIGIN, ExtractConfig, FeatureExtractor
from refineloc_e2e.fileio import atomic_write_json
from refineloc_e2e.ids import one_per_id
from refineloc_e2e.model.head import LoadedHead, load_head
from refineloc_e2e.model.inference import predict_scores
from refineloc_e2e.model.postprocess import (PostprocessConfig, load_scores,
                                          predict_segments_from_scores, save_scores, segments_to_results)
from refineloc_e2e.timebase import time_base, with_stride
from refineloc_e2e.video.flow import FlowConfig
from refineloc_e2e.progress import log_lines

logger = logging.getLogger(__name__)

RESULTS_VERSION = "VERSION 1.3"


def expected_feature_meta(extractor: FeatureExtractor) -> dict[str, Any]:
    cfg = extractor.cfg
    return {
        "origin": ORIGIN,
        "settings_hash": extractor.settings_hash,
        "dim": FEATURE_DIM * len(cfg.stream_list),
        "fps": cfg.decode.fps,
        "snippet_frames": cfg.decode.snippet_frames,
        "stride_frames": cfg.decode.snippet_frames,
        "streams": cfg.stream_list,
        "backbone": {s: {"weights_id": p.get("weights_id"), "init": p.get("init")}
                     for s, p in extractor.provenance.items()},
    }


def extract_config_from_meta(meta: dict) -> ExtractConfig | None:
    """Rebuild the extraction settings recorded in a model's feature metadata (None if they were not recorded,
    e.g. features imported from W-TALC, or a stream's weights came from a file the manifest does not name)."""
    decode, streams, backbone = meta.get("decode"), meta.get("streams"), meta.get("backbone") or {}
    if not decode or not streams:
        return None
    data: dict[str, Any] = {"decode": decode, "streams": "both" if list(streams) == ["rgb", "flow"] else streams[0]}
    for s in streams:
        wid = (backbone.get(s) or {}).get("weights_id") or ""
        if wid.startswith("file:"):
            return None
        data[f"{s}_weights"] = CROSS_MODALITY if wid.startswith(CROSS_MODALITY) else wid
    if "flow" not in streams and "rgb" in streams:
        data.pop("flow_weights", None)
    if "rgb" not in streams:
        rgb = (backbone.get("flow") or {}).get("weights_id", "")
        if rgb.startswith(CROSS_MODALITY + ":"):
            data["rgb_weights"] = rgb.split(":", 1)[1]
    flow_meta = dict(meta.get("flow") or {})
    flow_meta.setdefault("backend", "opencv")  # recorded only since backends exist: before, always OpenCV
    if "region" in flow_meta:
        data["flow_region"] = flow_meta.pop("region")
    margin = flow_meta.pop("region_margin_px", None)
    if margin is not None:  # None: full-frame flow, where the margin does not apply
        data["flow_margin_px"] = margin
    if meta.get("precision"):
        data["precision"] = meta["precision"]
    tvl1_keys = {f.name for f in dataclasses.fields(FlowConfig)}
    flow_keys = {k: v for k, v in flow_meta.items() if k in tvl1_keys}
    data["flow"] = flow_keys
    return from_dict(ExtractConfig, data)


def check_compatible(model_meta: dict, feature_meta: dict, *, model_name: str, feature_name: str) -> None:
    """Raise ``ModelMismatchError`` naming both sides unless the features are what the model was trained on."""
    problems = []
    model_meta, feature_meta = with_stride(model_meta), with_stride(feature_meta)
    both_non_overlapping = all(m.get("stride_frames") == m.get("snippet_frames") for m in (model_meta, feature_meta))
    for key in ("origin", "dim", "fps", "snippet_frames", "stride_frames", "streams", "settings_hash"):
        a, b = model_meta.get(key), feature_meta.get(key)
        if key == "stride_frames" and both_non_overlapping:
            continue  # the strides follow the windows: snippet_frames says it all
        if a is not None and b is not None and a != b:
            problems.append(f"{key}: model {a!r} vs features {b!r}")
    mb, fb = model_meta.get("backbone") or {}, feature_meta.get("backbone") or {}
    for s in sorted(set(mb) & set(fb)):
        a, b = mb[s].get("weights_id"), fb[s].get("weights_id")
        if a and b and a != b:
            problems.append(f"{s} backbone: model {a!r} vs features {b!r}")
    if problems:
        raise ModelMismatchError(f"{model_name} was trained on other features than {feature_name}: "
                                 + "; ".join(problems))


@dataclass
class DetectSummary:
    results: dict[str, list[dict]] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # video id -> its file, absolute (detect_videos)
    durations_s: dict[str, float] = field(default_factory=dict)  # video id -> seconds, where the features know

    @property
    def ok(self) -> bool:
        return not self.failed


def results_json(results: dict[str, list[dict]], external: dict[str, Any]) -> dict[str, Any]:
    """The ActivityNet results document; videos in id order, so that it does not depend on which video finished
    first (one process or a Ray cluster give the same file)."""
    return {"version": RESULTS_VERSION, "results": {vid: results[vid] for vid in sorted(results)},
            "external_data": external}


def load_model(model_path: str | Path) -> LoadedHead:
    """The trained head at ``model_path`` (on the CPU; moved to the run's device by the detect functions)."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise InputError(f"{model_path}: model file not found")
    return load_head(model_path, device="cpu")


def model_overrides(overrides: Iterable[str], loaded: LoadedHead, model_name: str | Path) -> list[str]:
    """``--set`` items minus the ``head.*`` ones, which may only restate the trained model's settings: a
    trained head cannot change (e.g. ``head.base=refineloc`` on a BaS-Net model is a ``ModelMismatchError``)."""
    rest = []
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not key.startswith("head."):
            rest.append(item)
            continue
        given = parse_overrides([item])["head"]
        saved = to_dict(loaded.head_config)
        for sub, value in _leaves(given):
            node = saved
            for part in sub.split("."):
                if not isinstance(node, dict) or part not in node:
                    raise ConfigError(f"--set {item}: unknown head setting 'head.{sub}'")
                node = node[part]
            if node != value:
                raise ModelMismatchError(f"{model_name}: the model's head.{sub} is {node!r} but --set asks for "
                                         f"{value!r}; a trained head's settings cannot change at detect")
    return rest


def _leaves(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in tree.items():
        out += _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return out


@dataclass
class _Detector:
    """The head, its post-processing and the outputs, applied to one video's features at a time."""
    loaded: LoadedHead
    device: Any
    pp: PostprocessConfig
    plot_dir: str | Path | None
    scores_dir: str | Path | None
    ground_truth: Dataset | None
    summary: DetectSummary
    log: Callable[[str], None]

    def __post_init__(self) -> None:
        self.model = self.loaded.model.to(self.device).eval()
        self.gt_keys = one_per_id(self.ground_truth.videos if self.ground_truth else [], "annotation keys",
                                  self.log)  # {video id: annotation key}, for the plots

    def __call__(self, source: str, vid: str, feats: np.ndarray, meta: dict) -> None:
        try:
            scores = predict_scores(self.model, feats, self.device)
            if self.scores_dir is not None:
                save_scores(Path(self.scores_dir) / f"{vid}.npz",
                            _scores_with_context(scores, self.loaded.class_names, meta))
            segs = predict_segments_from_scores(scores, self.pp)
            results = segments_to_results(segs, self.loaded.class_names, **time_base(meta),
                                          n_snippets=meta["n_snippets"],
                                          duration_s=meta.get("duration_s"))
            self.summary.results[vid] = results
            if meta.get("duration_s") is not None:
                self.summary.durations_s[vid] = float(meta["duration_s"])
            if self.plot_dir is not None:
                gt = self.ground_truth.videos[self.gt_keys[vid]].segments if vid in self.gt_keys else None
                self.summary.plots.append(str(_plot(self.plot_dir, vid, meta, scores, self.loaded.class_names,
                                                    results, self.pp, gt)))
        except RefineLocError as e:
            self.log(f"error: {source}: {e}")
            self.summary.failed.append((source, str(e)))


def detect_videos(videos: Iterable[str | Path], *, model_path: str | Path, out_json: str | Path,
                  extract_cfg: ExtractConfig, cache_dir: str | Path, postprocess=None,
                  plot_dir: str | Path | None = None, scores_dir: str | Path | None = None,
                  ground_truth=None, progress: bool = True, extractor: FeatureExtractor | None = None,
                  model: LoadedHead | None = None, log: Callable[[str], None] | None = None,
                  ray_address: str | None = None) -> DetectSummary:
    """Detect actions in ``videos`` with the head at ``model_path`` (or the already loaded ``model``);
    writes ``out_json`` (also on partial failure). With ``ray_address`` the features are extracted on that
    Ray cluster (``features.distributed``; the head runs here, on each video's features as they arrive)."""
    log = log or log_lines(logger)
    model_path = Path(model_path)
    loaded = model or load_model(model_path)
    extractor = extractor or FeatureExtractor(extract_cfg)
    check_compatible(loaded.feature_meta, expected_feature_meta(extractor), model_name=str(model_path),
                     feature_name=f"the extraction settings (streams {extract_cfg.stream_list}, "
                                  f"{extract_cfg.decode.fps:g} fps, {extract_cfg.decode.snippet_frames}-frame snippets)")
    pp = postprocess or loaded.postprocess_config
    summary = DetectSummary()
    detector = _Detector(loaded, extractor.device, pp, plot_dir, scores_dir, ground_truth, summary, log)
    # the cache only hands over entries with the extractor's settings hash: checked above, once
    def ready(video, vid, feats, meta) -> None:
        summary.sources[vid] = str(Path(video).resolve())  # the results page (`view`) finds the video by it
        detector(str(video), vid, feats, meta)

    if ray_address is not None:
        batch = extract_batch_ray(videos, cache_dir, extract_cfg, address=ray_address, progress=progress, log=log,
                                  on_ready=ready)
    else:
        batch = extract_batch(videos, cache_dir, extract_cfg, extractor=extractor, progress=progress, log=log,
                              on_ready=ready)
    summary.failed[:0] = batch.failed
    external = {
        "tool": f"refineloc-e2e {__version__}",
        "model": {"path": str(model_path), **loaded.extra.get("provenance", {})},
        "features": expected_feature_meta(extractor) | {"backbone": extractor.provenance},
        "extract_config": to_dict(extract_cfg),
        "postprocess": to_dict(pp),
        "sources": {vid: summary.sources[vid] for vid in sorted(summary.results)},
        "durations_s": {vid: summary.durations_s[vid] for vid in sorted(summary.durations_s)},
    }
    atomic_write_json(out_json, results_json(summary.results, external))
    return summary


def detect_features(features_dir: str | Path, video_ids: Iterable[str] | None, *, model_path: str | Path,
                    out_json: str | Path, postprocess=None, plot_dir=None, scores_dir=None, ground_truth=None,
                    device: str = "cpu", model: LoadedHead | None = None,
                    log: Callable[[str], None] | None = None) -> DetectSummary:
    """Detect on already-extracted features (``<id>.npy/.json``, e.g. imported from W-TALC); all ids if None.

    Each file is read once and checked against the model once."""
    log = log or log_lines(logger)
    features_dir, model_path = Path(features_dir), Path(model_path)
    if not features_dir.is_dir():
        raise InputError(f"{features_dir}: features folder not found")
    loaded = model or load_model(model_path)
    stems = cached_ids(features_dir, log=log)  # {video id: its files' stem}
    ids = list(one_per_id(video_ids, "ids", log)) if video_ids else list(stems)  # as typed: the same normalisation
    if not ids:
        raise InputError(f"{features_dir}: no feature files (<video_id>.json) found")
    pp = postprocess or loaded.postprocess_config
    summary = DetectSummary()
    detector = _Detector(loaded, resolve_device(device), pp, plot_dir, scores_dir, ground_truth, summary, log)
    for vid in ids:
        try:
            feats, meta = read_features(features_dir, stems.get(vid, vid))
            check_compatible(loaded.feature_meta, meta, model_name=str(model_path),
                             feature_name=str(features_dir / f"{stems.get(vid, vid)}.npy"))
        except RefineLocError as e:
            log(f"error: {vid}: {e}")
            summary.failed.append((vid, str(e)))
            continue
        detector(vid, vid, feats, meta)
    external = {"tool": f"refineloc-e2e {__version__}",
                "model": {"path": str(model_path), **loaded.extra.get("provenance", {})},
                "features": {"folder": str(features_dir), **loaded.feature_meta}, "postprocess": to_dict(pp),
                "durations_s": {vid: summary.durations_s[vid] for vid in sorted(summary.durations_s)}}
    atomic_write_json(out_json, results_json(summary.results, external))
    return summary


def _scores_with_context(scores: dict[str, np.ndarray], class_names: list[str], meta: dict) -> dict[str, np.ndarray]:
    out = dict(scores)
    out["class_names"] = np.array(class_names, dtype=str)
    out["fps"] = np.float64(meta["fps"])
    out["snippet_frames"] = np.int64(meta["snippet_frames"])
    out["stride_frames"] = np.int64(time_base(meta)["stride_frames"])
    out["duration_s"] = np.float64(meta.get("duration_s") or np.nan)
    return out


def _plot(plot_dir, vid, meta, scores, class_names, results, pp, gt) -> Path:
    vs = scores["video_scores"]
    top = np.argsort(-vs)[: max(pp.top_k, 1)]
    path = Path(plot_dir) / f"{vid}.png"
    fg, threshold = attention_curve(scores["attention_bf"], pp, scores.get("attention_logodds"))
    plot_timeline(path, video_id=vid, duration_s=meta.get("duration_s"), **time_base(meta), fg_attention=fg,
                  class_scores={class_names[i]: scores["cas"][:, i] for i in top}, predictions=results,
                  ground_truth=gt, attention_threshold=threshold, attention_norm=pp.attention_norm)
    return path


def redetect_from_scores(scores_dir: str | Path, out_json: str | Path, postprocess) -> dict[str, list[dict]]:
    """Re-run post-processing on scores saved by ``detect --save-scores`` (no network, no video)."""
    scores_dir = Path(scores_dir)
    files = sorted(scores_dir.glob("*.npz"))
    if not files:
        raise InputError(f"{scores_dir}: no saved scores (*.npz) found")
    results: dict[str, list[dict]] = {}
    taken = one_per_id([f.stem for f in files], "saved scores", log_lines(logger))  # {video id: file stem}
    id_of = {stem: vid for vid, stem in taken.items()}
    for f in files:
        if f.stem not in id_of:
            continue  # another file of the same id was taken (warned above)
        s = load_scores(f)
        try:
            names = [str(n) for n in s["class_names"]]
            fps, sf = float(s["fps"]), int(s["snippet_frames"])
            stride = int(s["stride_frames"]) if "stride_frames" in s else sf  # scores saved before strides
        except KeyError as e:
            raise CacheError(f"{f}: saved scores lack {e} (not written by detect --save-scores)") from None
        segs = predict_segments_from_scores(s, postprocess)
        results[id_of[f.stem]] = segments_to_results(
            segs, names, fps=fps, snippet_frames=sf, stride_frames=stride, n_snippets=int(s["cas"].shape[0]),
            duration_s=None if np.isnan(s["duration_s"]) else float(s["duration_s"]))
    atomic_write_json(out_json, results_json(results, {"tool": f"refineloc-e2e {__version__}",
                                                       "rescored_from": str(scores_dir),
                                                       "postprocess": to_dict(postprocess)}))
    return results
