"""Videos -> cached two-stream I3D features ``[n_snippets, 2048] = [rgb | flow]``.

One video: ``decode.iter_frames`` (25 fps, shorter side 256) -> per frame RGB and TV-L1 flow
(``flow.iter_flow``, one field per frame) -> 16-frame snippets (tail padded by repeating the last frame)
-> centre crop 224 -> batched I3D per stream -> 1024-d Mixed_5c mean per snippet and stream.
Everything streams: at most ``batch_snippets`` snippets of frames are in memory, whatever the length.

A batch of videos: each video is looked up in the feature cache (``features.py``) first; a failure is
recorded with its reason and the batch goes on; the summary lists extracted / skipped / failed.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from . import __version__
from .config import from_dict, read_yaml, deep_merge, parse_overrides, settings_hash, to_dict
from .decode import DecodeConfig, iter_frames, probe_video
from .errors import ConfigError, InputError, RefineLocError
from .features import (FORMAT_VERSION, VideoLock, assign_video_ids, disambiguated_id, is_up_to_date,
                       owner_conflict, source_identity, write_features)
from .flow import FlowConfig, flow_config, flow_config_from_mapping, iter_flow
from .snippets import center_crop, n_snippets, normalize_rgb
from .timebase import snippet_to_seconds

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".gif", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv",
                    ".3gp", ".ts", ".mts", ".ogv"}
STREAMS = ("rgb", "flow")


@dataclass
class ExtractConfig:
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    flow: FlowConfig = field(default_factory=lambda: flow_config("fast"))
    streams: str = "both"                          # rgb | flow | both; features are [rgb | flow] in that order
    rgb_weights: str = "i3d-kinetics400-rgb"        # manifest name or path (see weights/manifest.json)
    flow_weights: str = "cross-modality-from-rgb"   # manifest name, path, or the named init method
    batch_snippets: int = 8                         # snippets per I3D forward
    device: str = "auto"                            # auto | cpu | cuda | cuda:N

    def validate(self) -> None:
        if self.streams not in ("rgb", "flow", "both"):
            raise ConfigError(f"config key 'streams': expected rgb, flow or both, got {self.streams!r}")
        if self.batch_snippets < 1:
            raise ConfigError(f"config key 'batch_snippets': must be >= 1, got {self.batch_snippets}")

    @property
    def stream_list(self) -> list[str]:
        return list(STREAMS) if self.streams == "both" else [self.streams]


def load_extract_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExtractConfig:
    """Defaults <- YAML <- ``key=value`` overrides. ``flow`` starts from its ``preset`` (default ``fast``)."""
    data: dict = read_yaml(path) if path is not None else {}
    if overrides:
        data = deep_merge(data, parse_overrides(overrides))
    flow_data = data.pop("flow", None) or {}
    try:
        flow = flow_config_from_mapping(flow_data)
        cfg = from_dict(ExtractConfig, data, base=ExtractConfig(flow=flow))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from None
    return cfg


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; an explicit cuda request without CUDA is an error (no silent fallback)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{spec}' requested but CUDA is not available (torch {torch.__version__}); "
                          f"use --device cpu or auto")
    try:
        return torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"device '{spec}' is not a valid torch device (use auto, cpu or cuda)") from None


def collect_inputs(inputs: Iterable[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files, folders (recursively, video extensions only) and globs, in a stable order.

    Returns ``(videos, failures)``; a missing path or unreadable folder is a failure, not an exception.
    """
    videos: list[Path] = []
    failures: list[tuple[str, str]] = []
    for item in inputs:
        s = str(item)
        p = Path(s)
        if any(c in s for c in "*?[") and not p.exists():
            matches = sorted(glob.glob(s, recursive=True))
            if not matches:
                failures.append((s, "no file matches this pattern"))
            videos.extend(Path(m) for m in matches if Path(m).is_file())
        elif p.is_dir():
            if not os.access(p, os.R_OK | os.X_OK):
                failures.append((s, "directory is not readable (permission denied)"))
                continue
            found, errs = _walk_videos(p)
            failures.extend(errs)
            videos.extend(found)
        elif p.is_symlink() and not p.exists():
            failures.append((s, "broken symbolic link"))
        elif not p.exists():
            failures.append((s, "no such file or directory"))
        else:
            videos.append(p)
    seen: set[Path] = set()
    unique = []
    for v in videos:
        key = v.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(v)
    return unique, failures


def _walk_videos(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    found: list[Path] = []
    errs: list[tuple[str, str]] = []

    def onerror(e: OSError) -> None:
        errs.append((str(e.filename), f"directory is not readable ({e.strerror})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return found, errs


class FeatureExtractor:
    """Holds the I3D streams for one configuration; ``extract(path)`` -> (features, metadata)."""

    def __init__(self, cfg: ExtractConfig, *, models: dict[str, tuple[torch.nn.Module, dict]] | None = None):
        from .backbone.weights import build_i3d

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.models: dict[str, torch.nn.Module] = {}
        self.provenance: dict[str, dict] = {}
        for stream in cfg.stream_list:
            if models is not None and stream in models:
                model, prov = models[stream]
            else:
                spec = cfg.rgb_weights if stream == "rgb" else cfg.flow_weights
                model, prov = build_i3d(stream, spec, self.device, rgb_spec=cfg.rgb_weights)
            self.models[stream] = model.to(self.device).eval()
            self.provenance[stream] = prov
        self.settings = self._settings()
        self.settings_hash = settings_hash(self.settings)

    def _settings(self) -> dict[str, Any]:
        """Every setting that changes the numbers (hashed into the cache key)."""
        s: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "decode": dataclasses.asdict(self.cfg.decode),
            "streams": self.cfg.stream_list,
            "weights": {k: {"sha256": v.get("sha256"), "init": v.get("init")} for k, v in self.provenance.items()},
        }
        if "flow" in self.cfg.stream_list:
            s["flow"] = dataclasses.asdict(self.cfg.flow)
        return s

    @torch.inference_mode()
    def _embed(self, stream: str, clips: list[np.ndarray]) -> np.ndarray:
        x = torch.from_numpy(np.stack(clips))  # (B, T, H, W, C)
        x = x.permute(0, 4, 1, 2, 3).contiguous().to(self.device)  # (B, C, T, H, W)
        feats, _ = self.models[stream](x)  # (B, 1024)
        return feats.float().cpu().numpy()

    def extract(self, path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
        """Features ``float32 [n_snippets, 1024 * n_streams]`` for one video, and its metadata."""
        path = Path(path)
        info = probe_video(path)
        dcfg, S = self.cfg.decode, self.cfg.decode.snippet_frames
        want_flow = "flow" in self.cfg.stream_list
        buffers: dict[str, list[np.ndarray]] = {s: [] for s in self.cfg.stream_list}
        pending: dict[str, list[np.ndarray]] = {s: [] for s in self.cfg.stream_list}
        outputs: dict[str, list[np.ndarray]] = {s: [] for s in self.cfg.stream_list}
        n_frames = 0

        def flush(force: bool) -> None:
            for s in self.cfg.stream_list:
                if pending[s] and (force or len(pending[s]) >= self.cfg.batch_snippets):
                    outputs[s].append(self._embed(s, pending[s]))
                    pending[s] = []

        def push(rgb: np.ndarray, flow_field: np.ndarray | None) -> None:
            if "rgb" in buffers:
                buffers["rgb"].append(rgb)
            if flow_field is not None:
                buffers["flow"].append(flow_field)
            if len(buffers[self.cfg.stream_list[0]]) == S:
                close_snippet()

        def close_snippet() -> None:
            for s in self.cfg.stream_list:
                frames = buffers[s]
                while len(frames) < S:  # tail: repeat the last frame (see snippets.n_snippets)
                    frames.append(frames[-1])
                clip = np.stack(frames)  # (S, H, W, C)
                clip = center_crop(clip, dcfg.crop_size)
                pending[s].append(normalize_rgb(clip) if s == "rgb" else clip.astype(np.float32))
                buffers[s] = []
            flush(force=False)

        for rgb, flow_field in _frames_with_flow(iter_frames(path, dcfg), self.cfg.flow if want_flow else None):
            n_frames += 1
            push(rgb, flow_field)
        if n_frames == 0:
            raise InputError(f"{path}: no frames could be decoded")
        if buffers[self.cfg.stream_list[0]]:
            close_snippet()
        flush(force=True)
        per_stream = [np.concatenate(outputs[s], axis=0) for s in self.cfg.stream_list]
        features = np.concatenate(per_stream, axis=1).astype(np.float32)  # (T, 1024 * n_streams)
        T = n_snippets(n_frames, S)
        if features.shape[0] != T:
            raise RefineLocError(f"{path}: internal error: {features.shape[0]} snippets, expected {T}")
        meta = self.metadata(path, info, n_frames=n_frames, n_snippets=T)
        return features, meta

    def metadata(self, path: Path, info, *, n_frames: int, n_snippets: int) -> dict[str, Any]:
        dcfg = self.cfg.decode
        return {
            "source": source_identity(path),
            "native_fps": info.native_fps,
            "native_size": [info.width, info.height],
            "rotation_deg": info.rotation_deg,
            "fps": dcfg.fps,
            "snippet_frames": dcfg.snippet_frames,
            "n_frames": n_frames,
            "duration_s": n_frames / dcfg.fps,
            "snippet_start_s": [round(float(snippet_to_seconds(t, fps=dcfg.fps, snippet_frames=dcfg.snippet_frames)), 6)
                                for t in range(n_snippets)],
            "tail": "last partial snippet padded by repeating its last frame",
            "streams": self.cfg.stream_list,
            "stream_dims": {s: 1024 for s in self.cfg.stream_list},
            "backbone": {s: {"architecture": "inception-v1-i3d", "feature": "mean of Mixed_5c over time and space",
                             **self.provenance[s]} for s in self.cfg.stream_list},
            "decode": dataclasses.asdict(dcfg),
            "flow": ({"method": "tvl1", "implementation": "cv2.optflow.DualTVL1OpticalFlow",
                      "last_frame": "repeats the previous frame's field", **dataclasses.asdict(self.cfg.flow)}
                     if "flow" in self.cfg.stream_list else None),
            "rgb_input": "RGB, shorter side resized (bilinear), centre crop, x / 127.5 - 1",
            "settings_hash": self.settings_hash,
            "package_version": __version__,
        }


def _frames_with_flow(frames: Iterator[np.ndarray], flow_cfg: FlowConfig | None
                      ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Pair each decoded frame with its flow field (flow of frame i needs frame i+1: at most 2 frames buffered)."""
    if flow_cfg is None:
        for f in frames:
            yield f, None
        return
    held: deque[np.ndarray] = deque()

    def tap() -> Iterator[np.ndarray]:
        for f in frames:
            held.append(f)
            yield f

    for field_ in iter_flow(tap(), flow_cfg):
        yield held.popleft(), field_


@dataclass
class BatchSummary:
    extracted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)  # source path -> video_id

    @property
    def ok(self) -> bool:
        return not self.failed

    def format(self) -> str:
        lines = [f"extracted {len(self.extracted)}, skipped (up to date) {len(self.skipped)}, failed {len(self.failed)}"]
        lines += [f"  FAILED {p}: {why}" for p, why in self.failed]
        return "\n".join(lines)


def extract_batch(inputs: Iterable[str | Path], out_dir: str | Path, cfg: ExtractConfig, *,
                  extractor: FeatureExtractor | None = None, progress: bool = True,
                  log: Callable[[str], None] | None = None) -> BatchSummary:
    """Extract every input video into ``out_dir``; failures are recorded, never raised (except set-up errors)."""
    from tqdm import tqdm

    log = log or (lambda msg: print(msg, file=sys.stderr))
    out_dir = Path(out_dir)
    summary = BatchSummary()
    videos, failures = collect_inputs(inputs)
    for p, why in failures:
        log(f"error: {p}: {why}")
    summary.failed.extend(failures)
    if not videos:
        return summary
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out_dir}: cannot create the output folder ({e.strerror})") from None
    if not os.access(out_dir, os.W_OK):
        raise InputError(f"{out_dir}: output folder is not writable")
    extractor = extractor or FeatureExtractor(cfg)
    ids = assign_video_ids(videos)
    deferred: list[Path] = []
    bar = tqdm(total=len(videos), desc="extract", unit="video", disable=not progress, file=sys.stderr)

    def process(video: Path, blocking: bool) -> bool:
        vid = ids[video]
        if owner_conflict(out_dir, vid, video):
            vid = disambiguated_id(vid, video)
        lock = VideoLock.for_video(out_dir, vid)
        if not lock.acquire(blocking=blocking):
            return False
        try:
            if is_up_to_date(out_dir, vid, source=video, settings_hash=extractor.settings_hash):
                summary.skipped.append(str(video))
            else:
                bar.set_postfix_str(video.name[-40:])
                feats, meta = extractor.extract(video)
                write_features(out_dir, vid, feats, meta)
                summary.extracted.append(str(video))
            summary.outputs[str(video)] = vid
        except RefineLocError as e:
            log(f"error: {e}")
            summary.failed.append((str(video), _reason(e, video)))
        except OSError as e:
            log(f"error: {video}: {e.strerror or e}")
            summary.failed.append((str(video), str(e.strerror or e)))
        finally:
            lock.release()
        bar.update(1)
        return True

    for video in videos:
        if not process(video, blocking=False):
            deferred.append(video)  # another process holds it: come back when it is done
    for video in deferred:
        process(video, blocking=True)
    bar.close()
    return summary


def _reason(e: Exception, video: Path) -> str:
    msg = str(e)
    prefix = f"{video}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg
