"""One video -> two-stream I3D features ``[n_snippets, 2048] = [rgb | flow]``.

One video: ``decode.iter_frames`` (25 fps, shorter side 256) -> per frame the RGB centre crop 224 and one
TV-L1 flow field (``video.flow_chunks.ChunkedFlow``: on the whole frame, or the crop plus a margin, in chunks of 16
frame pairs, in worker processes when ``workers > 1``, by default one per core on the CPU) -> 16-frame snippets
(tail padded by repeating the last frame) -> batched I3D per stream -> 1024-d Mixed_5c mean per snippet and stream.
Everything streams: per stream at most ``batch_snippets`` snippets of frames are in memory, plus the flow
chunks in flight (``2 * workers``), whatever the length.

Batches of videos and the cache logic live in ``batch.py``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from refineloc_e2e import __version__
from refineloc_e2e.backbone.i3d import FEATURE_DIM
from refineloc_e2e.backbone.weights import BACKBONE_PRESETS, DEFAULT_WEIGHTS, build_i3d
from refineloc_e2e.config import settings_hash
from refineloc_e2e.device import resolve_device
from refineloc_e2e.errors import Cancelled, ConfigError, InputError, RefineLocError
from refineloc_e2e.features.cache import FORMAT_VERSION, source_identity
from refineloc_e2e.timebase import snippet_to_seconds
from refineloc_e2e.video.decode import DecodeConfig, VideoInfo, iter_frames, probe_video
from refineloc_e2e.video.flow import FlowConfig, resolve_backend, to_gray
from refineloc_e2e.video.flow_chunks import REGIONS, ChunkedFlow, FlowPool, auto_workers, flow_window
from refineloc_e2e.video.prefetch import prefetch
from refineloc_e2e.video.snippets import center_crop, n_snippets, pad_tail

STREAMS = ("rgb", "flow")
FLOW_IMPLEMENTATIONS = {"opencv": "cv2.optflow.DualTVL1OpticalFlow",
                        "torch": "refineloc_e2e.video.tvl1_torch (batched port of OpenCV's DualTVL1OpticalFlow)"}
ORIGIN = "extracted by refineloc-e2e"  # feature metadata "origin"; importers write "imported"
# settings that change speed or memory, never which features (not hashed; a model's settings keep them free);
# batch_snippets changes the float rounding of the I3D sums only (tests/e2e/test_cli_pipeline.py: rtol 1e-4)
DECODE_AHEAD_FRAMES = 64  # frames decoded ahead on a thread when the models run on CUDA
SPEED_ONLY_KEYS = ("device", "workers", "batch_snippets", "channels_last", "torch_compile")


@dataclass
class ExtractConfig:
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)  # TV-L1; the defaults are the `fast` preset
    streams: str = "both"                          # rgb | flow | both; features are [rgb | flow] in that order
    backbone: str = "default"                       # weights preset the two keys below start from (recorded;
                                                    # the weights are what count): default | standard
    rgb_weights: str = DEFAULT_WEIGHTS["rgb"]       # manifest name or path (see backbone/manifest.json)
    flow_weights: str = DEFAULT_WEIGHTS["flow"]     # manifest name, path, or the named init method
    batch_snippets: int = 8                         # snippets per I3D forward (32+ on a GPU)
    device: str = "auto"                            # auto | cpu | cuda | cuda:N
    flow_region: str = "full"                       # full: TV-L1 on the whole frame (published); crop: crop + margin
    flow_margin_px: int = 32                        # flow_region=crop: context kept on each side of the crop
    precision: str = "fp32"                         # fp32 | bf16 | fp16 (autocast; fp16 on CUDA only)
    workers: int = 0                                # flow processes (0: auto, flow_chunks.auto_workers; 1: here); same numbers
    channels_last: bool = True                      # channels_last_3d I3D (speed only)
    torch_compile: bool = False                     # torch.compile the I3D streams (speed only; slow first call)

    @classmethod
    def config_base(cls, data: Mapping[str, Any], base: ExtractConfig | None, prefix: str = ""
                    ) -> ExtractConfig | None:
        """``config.from_dict`` hook: with a ``backbone`` key, the weights keys start from that preset's pair
        (``rgb_weights`` / ``flow_weights`` given beside it still win), else from ``base``."""
        if "backbone" not in data:
            return base
        preset = data["backbone"]
        if not isinstance(preset, str) or preset not in BACKBONE_PRESETS:
            raise ConfigError(f"config key '{prefix}backbone': unknown backbone preset {preset!r} "
                              f"(known: {', '.join(BACKBONE_PRESETS)})")
        weights = BACKBONE_PRESETS[preset]
        return dataclasses.replace(base or cls(), backbone=preset, rgb_weights=weights["rgb"],
                                   flow_weights=weights["flow"])

    def validate(self) -> None:
        if self.backbone not in BACKBONE_PRESETS:
            raise ConfigError(f"config key 'backbone': unknown backbone preset {self.backbone!r} "
                              f"(known: {', '.join(BACKBONE_PRESETS)})")
        if self.streams not in ("rgb", "flow", "both"):
            raise ConfigError(f"config key 'streams': expected rgb, flow or both, got {self.streams!r}")
        if self.batch_snippets < 1:
            raise ConfigError(f"config key 'batch_snippets': must be >= 1, got {self.batch_snippets}")
        if self.flow_region not in REGIONS:
            raise ConfigError(f"config key 'flow_region': expected crop or full, got {self.flow_region!r}")
        if self.flow_margin_px < 0:
            raise ConfigError(f"config key 'flow_margin_px': must be >= 0, got {self.flow_margin_px}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"config key 'precision': expected fp32, bf16 or fp16, got {self.precision!r}")
        if self.workers < 0:
            raise ConfigError(f"config key 'workers': must be >= 1, or 0 for auto, got {self.workers}")
        if self.workers > 1 and self.flow.use_initial_flow:
            raise ConfigError("config key 'workers': flow.use_initial_flow chains each frame pair to the "
                              "previous one, so flow cannot be split over workers; use workers=1")

    @property
    def stream_list(self) -> list[str]:
        return list(STREAMS) if self.streams == "both" else [self.streams]


def _weights_identity(provenance: dict[str, Any]) -> dict[str, Any]:
    """What of a stream's weights provenance is hashed into the cache key: sha256 and init, plus URL and git
    blob id for published downloads (keys absent otherwise, so earlier caches keep their hash)."""
    ident = {"sha256": provenance.get("sha256"), "init": provenance.get("init")}
    ident.update({k: provenance[k] for k in ("url", "git_blob") if k in provenance})
    return ident


class FeatureExtractor:
    """Holds the I3D streams for one configuration; ``extract(path)`` -> (features, metadata).

    With ``cfg.workers > 1`` it also holds a pool of flow processes (started on first use, reused across
    videos): call ``close()`` or use it as a context manager to stop them early. ``stage_s`` holds the
    seconds per stage of the last ``extract`` call: ``decode``, ``flow`` (TV-L1 compute, summed over workers),
    ``flow_wait`` (this process blocked on workers), ``i3d_rgb``, ``i3d_flow``.
    """

    def __init__(self, cfg: ExtractConfig, *, models: dict[str, tuple[torch.nn.Module, dict]] | None = None):
        cfg.validate()
        self.should_stop: Callable[[], bool] | None = None  # polled once a snippet; True -> errors.Cancelled
        self.device = resolve_device(cfg.device, key="device")
        cfg = dataclasses.replace(cfg, flow=resolve_backend(cfg.flow, self.device.type))  # auto -> a backend
        if cfg.workers == 0:  # auto -> a count
            cfg = dataclasses.replace(cfg, workers=auto_workers(cfg.flow.backend, self.device.type,
                                                                cfg.flow.use_initial_flow))
        if cfg.workers > 1 and cfg.flow.backend == "torch" and self.device.type == "cuda":
            raise ConfigError("config key 'workers': flow worker processes run on the CPU; with the torch flow "
                              "backend on CUDA use workers=1 (the GPU computes a chunk of pairs at once)")
        self.cfg = cfg
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError(f"config key 'precision': fp16 needs a CUDA device, got device {self.device}; "
                              f"use fp32 or bf16")
        self.models: dict[str, torch.nn.Module] = {}
        self.provenance: dict[str, dict] = {}
        self._forward: dict[str, Callable] = {}
        for stream in cfg.stream_list:
            if models is not None and stream in models:
                model, prov = models[stream]
            else:
                spec = cfg.rgb_weights if stream == "rgb" else cfg.flow_weights
                model, prov = build_i3d(stream, spec, self.device, rgb_spec=cfg.rgb_weights)
            model = model.to(self.device).eval()
            if cfg.channels_last:
                model = model.to(memory_format=torch.channels_last_3d)
            self.models[stream] = model
            self._forward[stream] = torch.compile(model, dynamic=True) if cfg.torch_compile else model
            self.provenance[stream] = prov
        self.settings = self._settings()
        self.settings_hash = settings_hash(self.settings)
        self.stage_s: dict[str, float] = {}
        self._pool: FlowPool | None = None

    def _settings(self) -> dict[str, Any]:
        """Every setting that changes the numbers (hashed into the cache key); not workers, batch, memory format."""
        s: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "decode": dataclasses.asdict(self.cfg.decode),
            "streams": self.cfg.stream_list,
            "weights": {k: _weights_identity(v) for k, v in self.provenance.items()},
            "precision": self.cfg.precision,
        }
        if "flow" in self.cfg.stream_list:
            s["flow"] = {**self._flow_settings(), **self._flow_region()}
        return s

    def _flow_settings(self) -> dict[str, Any]:
        """The TV-L1 settings as hashed: the OpenCV backend keeps the keys it had before backends existed, so
        caches and models from earlier versions stay valid."""
        flow = dataclasses.asdict(self.cfg.flow)
        if flow["backend"] == "opencv":
            del flow["backend"], flow["fixed_iterations"]
        return flow

    def _flow_region(self) -> dict[str, Any]:
        return {"region": self.cfg.flow_region,
                "region_margin_px": self.cfg.flow_margin_px if self.cfg.flow_region == "crop" else None}

    def close(self, *, wait: bool = True) -> None:
        """Stop the flow worker processes, if any (a later ``extract`` starts new ones)."""
        if self._pool is not None:
            self._pool.close(wait=wait)
            self._pool = None

    def __enter__(self) -> FeatureExtractor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _flow_pool(self) -> FlowPool | None:
        if self.cfg.workers < 2:
            return None
        if self._pool is None or not self._pool.alive:
            self._pool = FlowPool(self.cfg.flow, self.cfg.workers)
        return self._pool

    @torch.inference_mode()
    def _embed(self, stream: str, clips: list[np.ndarray]) -> np.ndarray:
        """I3D features of snippets: ``uint8 [T, H, W, 3]`` RGB or ``float32 [T, H, W, 2]`` flow -> ``[B, FEATURE_DIM]``.

        Normalisation (RGB ``x / 127.5 - 1``, bitwise as ``snippets.normalize_rgb``) happens on the device.
        """
        t0 = time.perf_counter()
        x = torch.from_numpy(np.stack(clips))  # (B, T, H, W, C)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.to(self.device)
        if stream == "rgb":
            x = x.float() / 127.5 - 1.0  # (B, T, H, W, 3) in [-1, 1]
        x = x.permute(0, 4, 1, 2, 3)  # (B, C, T, H, W), channels_last_3d strides
        x = x.contiguous(memory_format=torch.channels_last_3d if self.cfg.channels_last
                         else torch.contiguous_format)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.cfg.precision)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            feats, _ = self._forward[stream](x)  # (B, FEATURE_DIM)
        out = feats.float().cpu().numpy()  # (B, FEATURE_DIM)
        self.stage_s[f"i3d_{stream}"] = self.stage_s.get(f"i3d_{stream}", 0.0) + time.perf_counter() - t0
        return out

    def extract(self, path: str | Path, info: VideoInfo | None = None, *,
                frames: Iterable[np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Features ``float32 [n_snippets, FEATURE_DIM * n_streams]`` for one video, and its metadata.

        Streams: RGB snippets are embedded as soon as ``batch_snippets`` are complete, flow snippets as
        their fields come back (from workers when ``workers > 1``, while decoding and RGB go on); memory
        holds at most ``batch_snippets`` snippets per stream plus the flow chunks in flight. ``frames``: the
        decoded 25 fps RGB frames to use instead of decoding ``path`` (a benchmark measuring part of a video).
        """
        path = Path(path)
        info = info or probe_video(path)  # the caller may have probed it already
        dcfg, S, crop = self.cfg.decode, self.cfg.decode.snippet_frames, self.cfg.decode.crop_size
        streams = self.cfg.stream_list
        buffers: dict[str, list[np.ndarray]] = {s: [] for s in streams}  # frames of the open snippet
        pending: dict[str, list[np.ndarray]] = {s: [] for s in streams}  # complete snippets, not yet embedded
        outputs: dict[str, list[np.ndarray]] = {s: [] for s in streams}  # [b, FEATURE_DIM] blocks, in order
        self.stage_s = {"decode": 0.0, **({"flow": 0.0, "flow_wait": 0.0} if "flow" in streams else {}),
                        **{f"i3d_{s}": 0.0 for s in streams}}

        def add(s: str, frames: Iterable[np.ndarray], *, last: bool = False) -> None:
            for f in frames:
                buffers[s].append(f)
                if len(buffers[s]) == S:
                    pending[s].append(np.stack(buffers[s]))  # (S, crop, crop, C)
                    buffers[s] = []
            if last and buffers[s]:  # the tail rule (snippets.pad_tail)
                pending[s].append(np.stack(pad_tail(buffers[s], S)))  # (S, crop, crop, C)
                buffers[s] = []
            if pending[s] and (last or len(pending[s]) >= self.cfg.batch_snippets):
                outputs[s].append(self._embed(s, pending[s]))  # (b, FEATURE_DIM)
                pending[s] = []

        flow: ChunkedFlow | None = None
        # on a GPU, decode on a CPU thread ahead of flow and I3D; on the CPU the cores are busy with flow already
        source = iter_frames(path, dcfg) if frames is None else iter(frames)
        frames = prefetch(source, DECODE_AHEAD_FRAMES if self.device.type == "cuda" else 0)
        n_frames = 0
        finished = False
        try:
            while True:
                t0 = time.perf_counter()
                rgb = next(frames, None)  # (H, W, 3) uint8
                self.stage_s["decode"] += time.perf_counter() - t0
                if rgb is None:
                    break
                if n_frames == 0 and "flow" in streams:
                    window = flow_window(rgb.shape[0], rgb.shape[1], crop, self.cfg.flow_region,
                                         self.cfg.flow_margin_px)
                    flow = ChunkedFlow(self.cfg.flow, window, source=str(path), chunk_pairs=S,
                                       pool=self._flow_pool(), device=self.device)
                n_frames += 1
                if self.should_stop is not None and n_frames % S == 1 and self.should_stop():
                    raise Cancelled(f"{path}: extraction cancelled")
                if "rgb" in streams:
                    add("rgb", [center_crop(rgb, crop)])  # (crop, crop, 3) view
                if flow is not None:
                    gray = np.ascontiguousarray(to_gray(flow.window.region_of(rgb)))  # (h, w) uint8
                    add("flow", flow.push(gray))
            if n_frames == 0:
                raise InputError(f"{path}: no frames could be decoded")
            if flow is not None:
                add("flow", flow.finish(), last=True)
            if "rgb" in streams:
                add("rgb", [], last=True)
            finished = True
        except KeyboardInterrupt:
            if flow is not None:
                flow.cancel()
            self.close(wait=False)  # do not wait for the workers' running chunks
            raise
        finally:
            if flow is not None:
                if not finished:
                    flow.cancel()  # an error: drop the outstanding worker chunks (idempotent)
                self.stage_s["flow"], self.stage_s["flow_wait"] = flow.compute_s, flow.wait_s
        per_stream = [np.concatenate(outputs[s], axis=0) for s in streams]
        features = np.concatenate(per_stream, axis=1).astype(np.float32)  # (T, FEATURE_DIM * n_streams)
        T = n_snippets(n_frames, S)
        if features.shape[0] != T:
            raise RefineLocError(f"{path}: internal error: {features.shape[0]} snippets, expected {T}")
        meta = self.metadata(path, info, n_frames=n_frames, n_snippets=T)
        return features, meta

    def metadata(self, path: Path, info, *, n_frames: int, n_snippets: int) -> dict[str, Any]:
        dcfg = self.cfg.decode
        return {
            "origin": ORIGIN,
            "source": source_identity(path),
            "native_fps": info.native_fps,
            "native_size": [info.width, info.height],
            "rotation_deg": info.rotation_deg,
            "fps": dcfg.fps,
            "snippet_frames": dcfg.snippet_frames,
            "stride_frames": dcfg.snippet_frames,  # non-overlapping windows
            "n_frames": n_frames,
            "duration_s": n_frames / dcfg.fps,
            "snippet_start_s": [round(float(snippet_to_seconds(t, fps=dcfg.fps, snippet_frames=dcfg.snippet_frames)), 6)
                                for t in range(n_snippets)],
            "tail": "last partial snippet padded by repeating its last frame",
            "streams": self.cfg.stream_list,
            "stream_dims": {s: FEATURE_DIM for s in self.cfg.stream_list},
            "backbone": {s: {"architecture": "inception-v1-i3d", "feature": "mean of Mixed_5c over time and space",
                             **self.provenance[s]} for s in self.cfg.stream_list},
            "decode": dataclasses.asdict(dcfg),
            "flow": ({"method": "tvl1", "implementation": FLOW_IMPLEMENTATIONS[self.cfg.flow.backend],
                      "last_frame": "repeats the previous frame's field", **self._flow_settings(),
                      **self._flow_region()}
                     if "flow" in self.cfg.stream_list else None),
            "precision": self.cfg.precision,
            "rgb_input": "RGB, shorter side resized (bilinear), centre crop, x / 127.5 - 1",
            "settings_hash": self.settings_hash,
            "package_version": __version__,
        }

