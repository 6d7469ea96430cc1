"""TV-L1 optical flow (OpenCV contrib) between consecutive frames, with named parameter presets.

Definitions (docs/conventions.md "What every output's metadata records" states them):

* **Input.** RGB frames from ``decode.iter_frames`` (shorter side 256, not cropped), converted to
  grayscale (``cv2.COLOR_RGB2GRAY``); flow is computed on the full frame, cropped later (the default;
  ``extract``'s opt-in ``flow_region=crop`` runs TV-L1 on the 224 crop plus a margin only, see
  ``flow_chunks.py``: 1.45-1.9x faster on bikes.mp4's 602x256 frames with a 32 px margin, but 0.14-1.1 px mean
  endpoint error against full-frame flow with the same preset, median 0.03-0.9 px, depending on the motion).
* **Field per frame.** ``iter_flow`` yields one field per input frame: field ``i`` is the flow from frame
  ``i`` to frame ``i + 1``; the last frame's field repeats the previous field; a 1-frame video gives one
  all-zero field. So flow snippets line up with RGB snippets frame for frame.
* **Layout and sign.** ``float32 [H, W, 2]``, channel 0 = x (positive = motion to the right), channel 1 =
  y (positive = motion downwards), in pixels of the 256-short-side frame: a point at ``(x, y)`` in frame
  ``i`` is at ``(x + u, y + v)`` in frame ``i + 1``.
* **Scaling.** ``postprocess_flow``: clip to ``[-bound, bound]`` (bound 20 px) and divide by ``bound`` ->
  float32 in ``[-1, 1]``. Kept as floats (no JPEG quantisation as in many published pipelines).
* **Presets.** ``paper``: OpenCV's defaults (the published convention). ``fast`` (the default): 3 scales
  with step 0.5, 3 warps, epsilon 0.02. On ``refineloc_e2e/data/samples/bikes.mp4`` (602x256, fast motion) it was 7.5-9.5x
  faster than ``paper`` with an endpoint error against it of 0.66-0.90 px mean, ~0.1 px median, in the
  224 centre crop; ``paper`` is itself unconverged there (epsilon 0.005 instead of 0.01 moves it by
  0.88 px mean, 0.03 px median). ``benchmarks/speed/flow_presets.py`` measures it; ``epsilon=0.01`` on top of
  ``fast`` is closer to ``paper`` (0.47 px mean, 0.03 px median) at only 3.2x.

``compute_flow`` is a pure function of two grayscale frames (plus the TV-L1 object), so it can be run in
parallel over frame pairs by a caller.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import torch

from refineloc_e2e.config import from_dict
from refineloc_e2e.errors import ConfigError, RefineLocError
from refineloc_e2e.video.tvl1_torch import tvl1_flow

_CONTRIB_HINT = ("TV-L1 optical flow needs OpenCV's contrib modules: run `pip uninstall opencv-python "
                 "opencv-python-headless opencv-contrib-python` then `pip install "
                 "opencv-contrib-python-headless` (installing both the plain and the contrib package "
                 "breaks cv2)")


@dataclass
class FlowConfig:
    preset: str = "fast"  # the preset the values below started from (recorded; the values are what count)
    tau: float = 0.25  # time step of the numerical scheme
    lambda_: float = 0.15  # data-term weight (smaller = smoother flow)
    theta: float = 0.3  # tightness of the coupling between the two variables
    nscales: int = 3  # pyramid levels (paper / OpenCV: 5)
    warps: int = 3  # warpings per scale (paper / OpenCV: 5)
    epsilon: float = 0.02  # stopping tolerance per iteration (paper / OpenCV: 0.01)
    inner_iterations: int = 30  # inner iterations per warp
    outer_iterations: int = 10  # outer iterations per warp
    scale_step: float = 0.5  # downscale factor between pyramid levels (paper / OpenCV: 0.8)
    gamma: float = 0.0  # weight of the illumination-variation term (0 = off)
    median_filtering: int = 5  # median filter kernel size applied to the flow (1 = off)
    use_initial_flow: bool = False  # start each pair from the previous pair's flow
    bound: float = 20.0  # clip |flow| to this many pixels, then divide by it -> [-1, 1]
    backend: str = "auto"  # opencv | torch (video/tvl1_torch.py, a port of OpenCV's) | auto (resolve_backend)
    fixed_iterations: bool = False  # torch only: no epsilon test, every inner/outer iteration runs (GPU option)

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"config key 'preset': unknown flow preset {self.preset!r} "
                              f"(known: {', '.join(sorted(PRESETS))})")
        for key in ("tau", "lambda_", "theta", "epsilon", "bound"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"config key '{key}': must be > 0, got {getattr(self, key)!r}")
        for key in ("nscales", "warps", "inner_iterations", "outer_iterations", "median_filtering"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config key '{key}': must be >= 1, got {getattr(self, key)!r}")
        if not 0 < self.scale_step < 1:
            raise ConfigError(f"config key 'scale_step': must be in (0, 1), got {self.scale_step!r}")
        if self.gamma < 0:
            raise ConfigError(f"config key 'gamma': must be >= 0, got {self.gamma!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"config key 'backend': expected one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.fixed_iterations and self.backend == "opencv":
            raise ConfigError("config key 'fixed_iterations': only the torch backend has it (OpenCV always stops "
                              "on epsilon); use backend=torch or drop it")

    @classmethod
    def config_base(cls, data: Mapping[str, Any], base: FlowConfig | None, prefix: str = "") -> FlowConfig | None:
        """``config.from_dict`` hook: keys given with a ``preset`` apply to that preset, else to ``base``."""
        if "preset" not in data:
            return base
        preset = data["preset"]
        if not isinstance(preset, str):
            raise ConfigError(f"config key '{prefix}preset': expected a string, got {preset!r}")
        if preset not in PRESETS:
            raise ConfigError(f"unknown flow preset {preset!r} (known: {', '.join(sorted(PRESETS))})")
        return dataclasses.replace(FlowConfig(), preset=preset, **PRESETS[preset])


BACKENDS = ("auto", "opencv", "torch")

# Parameter sets; a preset is the dataclass defaults with these values replaced.
PRESETS: dict[str, dict[str, Any]] = {
    # OpenCV's DualTVL1OpticalFlow defaults, used by the published I3D / W-TALC feature pipelines
    "paper": dict(tau=0.25, lambda_=0.15, theta=0.3, nscales=5, warps=5, epsilon=0.01, inner_iterations=30,
                  outer_iterations=10, scale_step=0.8, gamma=0.0, median_filtering=5, use_initial_flow=False),
    # chosen by benchmarks/speed/flow_presets.py (speed vs endpoint error against "paper")
    "fast": dict(nscales=3, warps=3, epsilon=0.02, scale_step=0.5),
}


def flow_config(preset: str = "fast", **overrides) -> FlowConfig:
    """The ``preset``'s FlowConfig with ``overrides`` (FlowConfig field names) applied and validated."""
    if "preset" in overrides:
        raise ConfigError("flow_config: pass the preset as the first argument, not as an override")
    return from_dict(FlowConfig, {"preset": preset, **overrides})


def flow_config_from_mapping(data: Mapping[str, Any] | None) -> FlowConfig:
    """Resolve a YAML mapping like ``{preset: fast, warps: 4}``: start from the preset, apply the other keys.

    A missing ``preset`` means the defaults (which are the ``fast`` preset); unknown keys and wrong types
    raise ``ConfigError``.
    """
    return from_dict(FlowConfig, dict(data or {}))


def cv2_plain():
    """``cv2`` without contrib (colour conversion; the torch TV-L1's CPU kernels): plain OpenCV is enough."""
    try:
        import cv2
    except ImportError as e:
        raise RefineLocError(f"cannot import cv2 ({e}); {_CONTRIB_HINT}") from e
    return cv2


def cv2_optflow():
    """``cv2`` with its contrib TV-L1; imported here, not at the top, so that a wrong OpenCV package (plain
    ``opencv-python``, or two of them) gives the actionable message below instead of a bare ImportError."""
    try:
        import cv2
    except ImportError as e:
        raise RefineLocError(f"cannot import cv2 ({e}); {_CONTRIB_HINT}") from e
    if not hasattr(cv2, "optflow") or not hasattr(cv2.optflow, "DualTVL1OpticalFlow_create"):
        raise RefineLocError(f"cv2 {cv2.__version__} has no cv2.optflow.DualTVL1OpticalFlow_create; "
                             f"{_CONTRIB_HINT}")
    return cv2


def make_tvl1(cfg: FlowConfig):
    """A ``cv2.optflow.DualTVL1OpticalFlow`` object with every parameter taken from ``cfg``."""
    cfg.validate()
    cv2 = cv2_optflow()
    return cv2.optflow.DualTVL1OpticalFlow_create(
        tau=cfg.tau, lambda_=cfg.lambda_, theta=cfg.theta, nscales=cfg.nscales, warps=cfg.warps,
        epsilon=cfg.epsilon, innnerIterations=cfg.inner_iterations, outerIterations=cfg.outer_iterations,
        scaleStep=cfg.scale_step, gamma=cfg.gamma, medianFiltering=cfg.median_filtering,
        useInitialFlow=cfg.use_initial_flow)


def to_gray(frame_rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` -> uint8 grayscale ``[H, W]`` (plain OpenCV: no contrib needed)."""
    cv2 = cv2_plain()
    return cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)  # [H, W]


def compute_flow(prev_gray: np.ndarray, next_gray: np.ndarray, tvl1,
                 init_flow: np.ndarray | None = None) -> np.ndarray:
    """TV-L1 flow ``prev -> next`` in raw pixels: float32 ``[H, W, 2]`` (x, y). Inputs: uint8 ``[H, W]``.

    ``init_flow`` (``[H, W, 2]``) is only used when the TV-L1 object was made with ``use_initial_flow``
    (zeros if not given).
    """
    if prev_gray.shape != next_gray.shape or prev_gray.ndim != 2:
        raise ValueError(f"compute_flow expects two [H, W] grayscale frames of one size, got "
                         f"{prev_gray.shape} and {next_gray.shape}")
    if init_flow is not None:
        flow = np.array(init_flow, dtype=np.float32, copy=True)  # calc() writes into it
    elif tvl1.getUseInitialFlow():
        flow = np.zeros((*prev_gray.shape, 2), np.float32)  # [H, W, 2]
    else:
        flow = None
    flow = tvl1.calc(prev_gray, next_gray, flow)  # [H, W, 2]
    return np.asarray(flow, dtype=np.float32)


def postprocess_flow(raw: np.ndarray, bound: float) -> np.ndarray:
    """Clip raw flow to ``[-bound, bound]`` pixels and divide by ``bound`` -> float32 in ``[-1, 1]``."""
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    b = np.float32(bound)
    return np.clip(raw, -b, b).astype(np.float32) / b


def resolve_backend(cfg: FlowConfig, device_type: str) -> FlowConfig:
    """``backend: auto`` made concrete for a device: torch everywhere. On CUDA OpenCV's TV-L1 has no GPU path
    in pip's build; on the CPU the port (1 thread, cv2 remap/median, in-place steps) was measured ~2x OpenCV
    per pair at 1 thread, and ``extract`` runs it in one single-thread process per core (docs/measured.md).
    ``use_initial_flow`` keeps OpenCV on the CPU: it chains every pair, so it cannot use the processes."""
    if cfg.backend != "auto":
        return cfg
    if device_type != "cuda" and cfg.use_initial_flow:
        return dataclasses.replace(cfg, backend="opencv")
    return dataclasses.replace(cfg, backend="torch")


class FlowEngine:
    """Raw TV-L1 fields of consecutive frame pairs with the configured backend, on ``device``.

    ``pairs(grays)``: uint8 ``[n + 1, H, W]`` -> float32 ``[n, H, W, 2]`` pixels (numpy). OpenCV runs the
    pairs one by one; torch runs them as one batch (``video.tvl1_torch.tvl1_flow``), except with
    ``use_initial_flow``, which chains each pair to the previous one and so runs them in order. torch on the
    CPU runs with 1 intra-op thread (restored afterwards): 2 threads on a busy 2-core machine made a pair
    3-10x slower (``tvl1_torch``'s "CPU speed"); parallelism comes from flow processes instead.
    """

    def __init__(self, cfg: FlowConfig, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.cfg = resolve_backend(cfg, self.device.type)
        self.cfg.validate()
        self._tvl1 = make_tvl1(self.cfg) if self.cfg.backend == "opencv" else None
        if self.cfg.backend == "opencv" and self.device.type != "cpu":
            raise ConfigError(f"flow backend opencv runs on the CPU only, not on {self.device}; use backend=torch")

    def pairs(self, grays: np.ndarray, init_flow: np.ndarray | None = None) -> np.ndarray:
        if self._tvl1 is None and self.device.type == "cpu":
            with one_torch_thread():
                return self._pairs(grays, init_flow)
        return self._pairs(grays, init_flow)

    def _pairs(self, grays: np.ndarray, init_flow: np.ndarray | None = None) -> np.ndarray:
        n = grays.shape[0] - 1
        if n < 1:
            return np.zeros((0, *grays.shape[1:], 2), np.float32)
        if self._tvl1 is not None:
            out, raw = [], init_flow
            for i in range(n):
                raw = compute_flow(grays[i], grays[i + 1], self._tvl1, raw if self.cfg.use_initial_flow else None)
                out.append(raw)
            return np.stack(out)  # [n, H, W, 2]
        if self.cfg.use_initial_flow:
            out, raw = [], init_flow
            for i in range(n):
                init = None if raw is None else raw[None]
                raw = tvl1_flow(grays[i:i + 1], grays[i + 1:i + 2], self.cfg, init_flow=init, device=self.device,
                                fixed_iterations=self.cfg.fixed_iterations)[0].cpu().numpy()
                out.append(raw)
            return np.stack(out)  # [n, H, W, 2]
        frames = torch.from_numpy(np.ascontiguousarray(grays))  # [n + 1, H, W] uint8
        if self.device.type == "cuda":  # one pinned uint8 copy to the GPU per chunk; flow is computed there
            frames = frames.pin_memory().to(self.device, non_blocking=True)
        fields = tvl1_flow(frames[:-1], frames[1:], self.cfg, device=self.device,
                           fixed_iterations=self.cfg.fixed_iterations)  # [n, H, W, 2]
        return fields.cpu().numpy()


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch's intra-op threads set to 1 for the block, then restored (process-wide, like the setting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def last_field(previous: np.ndarray | None, shape_hw: tuple[int, int]) -> np.ndarray:
    """The last frame's field: a copy of the previous pair's field, or zeros ``[H, W, 2]`` for a 1-frame video."""
    if previous is None:  # a single frame: no motion
        return np.zeros((*shape_hw, 2), np.float32)  # [H, W, 2]
    return previous.copy()


def iter_flow(frames_rgb: Iterable[np.ndarray], cfg: FlowConfig | None = None, *,
              postprocess: bool = True) -> Iterator[np.ndarray]:
    """One flow field per input frame, streaming: field i = flow(frame i -> frame i+1), the last repeats.

    ``frames_rgb``: uint8 ``[H, W, 3]``. Yields float32 ``[H, W, 2]``: clipped and scaled to ``[-1, 1]``
    (``postprocess=True``) or raw pixels. A 1-frame input gives one zero field; an empty input gives none.
    """
    engine = FlowEngine(cfg or FlowConfig())
    cfg = engine.cfg

    def out(raw: np.ndarray) -> np.ndarray:
        return postprocess_flow(raw, cfg.bound) if postprocess else raw

    prev_gray = None
    field = None  # raw flow of the previous pair, [H, W, 2]
    for frame in frames_rgb:
        gray = to_gray(frame)  # [H, W]
        if prev_gray is not None:
            if gray.shape != prev_gray.shape:
                raise ValueError(f"iter_flow: frame size changed from {prev_gray.shape} to {gray.shape}")
            field = engine.pairs(np.stack([prev_gray, gray]), field)[0]  # [H, W, 2]
            yield out(field)
        prev_gray = gray
    if prev_gray is None:
        return
    yield out(last_field(field, prev_gray.shape))
