"""Torch TV-L1 (``video.tvl1_torch``): known shifts, agreement with OpenCV (parts and whole), batch = singles,
CPU vs CUDA, fixed iteration counts."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import refineloc_e2e
from refineloc_e2e.video.decode import DecodeConfig, iter_frames
from refineloc_e2e.errors import ConfigError
from refineloc_e2e.video.flow import compute_flow, flow_config, make_tvl1, to_gray
from refineloc_e2e.video import tvl1_torch
from refineloc_e2e.video.tvl1_torch import compute_flow_torch, tvl1_flow

BIKES = Path(refineloc_e2e.__file__).parent / "data" / "samples" / "bikes.mp4"
CROP = 224
SIZE, MARGIN = 64, 12  # synthetic frames; pixels near the border see content entering/leaving


def _wave_frame(dx: float, dy: float, seed: int = 0, size: int = SIZE) -> np.ndarray:
    """A smooth random texture whose content is moved by (dx, dy) px (exact, also sub-pixel): uint8 [H, W]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.zeros((size, size))
    for _ in range(12):
        kx, ky = rng.uniform(-0.6, 0.6, 2)
        img += np.cos(kx * (x - dx) + ky * (y - dy) + rng.uniform(0, 2 * np.pi))
    return np.clip(128 + 30 * img, 0, 255).astype(np.uint8)


def _epe(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1)  # [..., H, W]


def _crop(flow: np.ndarray, size: int = CROP) -> np.ndarray:
    h, w = flow.shape[-3:-1]
    top, left = (h - size) // 2, (w - size) // 2
    return flow[..., top:top + size, left:left + size, :]


@pytest.fixture(autouse=True)
def _torch_one_thread(one_thread):
    """Torch on one thread (conftest): two threads on a shared 2-core box are slower, not faster."""


@pytest.fixture(scope="module")
def bikes_gray():
    frames = itertools.islice(iter_frames(BIKES, DecodeConfig()), 50, 53)  # frames 50..52: cyclists moving
    return [to_gray(f) for f in frames]  # 3 x uint8 [256, 602]


# --- building blocks against the cv2 function they port --------------------------------------------------

def _smooth_noise(h=40, w=53, seed=0):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur((rng.random((h, w)) * 255).astype(np.float32), (0, 0), 1.5)  # float32 [H, W]


@pytest.mark.parametrize("step", [0.8, 0.5])
def test_resize_matches_cv2(step):
    img = _smooth_noise()
    ref = cv2.resize(img, None, fx=step, fy=step, interpolation=cv2.INTER_LINEAR)
    out = tvl1_torch.resize_linear(torch.from_numpy(img), ref.shape, (1 / step, 1 / step)).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-3)
    up = cv2.resize(ref, (53, 40), interpolation=cv2.INTER_LINEAR)  # back to a size, as between levels
    out_up = tvl1_torch.resize_linear(torch.from_numpy(ref), (40, 53), (1 / (40 / ref.shape[0]),
                                                                        1 / (53 / ref.shape[1]))).numpy()
    np.testing.assert_allclose(out_up, up, atol=1e-3)


@pytest.mark.parametrize("remap", ["remap_cubic", "remap_cubic_torch"])  # the CPU dispatch (cv2) and the gathers
def test_remap_cubic_matches_cv2_including_borders(remap):
    img = _smooth_noise()
    rng = np.random.default_rng(1)
    u = (rng.standard_normal((2, 40, 53)) * 4).astype(np.float32)
    u[0, :, :8] -= 12  # samples left of the image: taps read 0
    u[1, -6:] += 9  # below the image
    mx = (np.arange(53)[None] + u[0]).astype(np.float32)
    my = (np.arange(40)[:, None] + u[1]).astype(np.float32)
    ref = cv2.remap(img, mx, my, cv2.INTER_CUBIC)  # default border: constant 0
    out = getattr(tvl1_torch, remap)(torch.from_numpy(img)[None, None], torch.from_numpy(u[0])[None],
                                     torch.from_numpy(u[1])[None])[0, 0].numpy()
    np.testing.assert_allclose(out, ref, atol=2e-3)


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("median", ["median_blur", "median_blur_torch"])  # the CPU dispatch (cv2) and the network
def test_median_blur_matches_cv2(k, median):
    u = np.random.default_rng(2).standard_normal((40, 53)).astype(np.float32)
    out = getattr(tvl1_torch, median)(torch.from_numpy(u)[None, None], k)[0, 0].numpy()
    np.testing.assert_array_equal(out, cv2.medianBlur(u, k))  # a selection: exact, border replicated


def test_cpu_kernels_keep_batch_and_channels_apart():
    """The cv2 CPU paths loop over pairs and channels: each plane must land where the torch paths put it."""
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((2, 3, 24, 31)).astype(np.float32))  # [n, C, H, W]
    u1, u2 = (torch.from_numpy(rng.standard_normal((2, 24, 31)).astype(np.float32) * 3) for _ in range(2))
    torch.testing.assert_close(tvl1_torch.remap_cubic(x, u1, u2), tvl1_torch.remap_cubic_torch(x, u1, u2),
                               atol=2e-3, rtol=0)
    assert torch.equal(tvl1_torch.median_blur(x, 5), tvl1_torch.median_blur_torch(x, 5))


# --- known answer ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["fast", "paper"])
@pytest.mark.parametrize("dx, dy", [(3.0, -2.0), (1.5, 0.75)])
def test_known_shift_sign_and_magnitude(preset, dx, dy):
    a, b = _wave_frame(0, 0), _wave_frame(dx, dy)  # content moves dx right, dy down
    flow = compute_flow_torch(a, b, flow_config(preset))
    assert flow.shape == (SIZE, SIZE, 2) and flow.dtype == np.float32
    interior = flow[MARGIN:-MARGIN, MARGIN:-MARGIN]  # [h, w, 2]
    assert np.median(interior[..., 0]) == pytest.approx(dx, abs=0.1)  # channel 0 = x, + = right
    assert np.median(interior[..., 1]) == pytest.approx(dy, abs=0.1)  # channel 1 = y, + = down
    assert np.abs(interior - [dx, dy]).mean() < 0.2


# --- agreement with OpenCV --------------------------------------------------------------------------------

def _agreement(pairs, cfg):
    tvl1 = make_tvl1(cfg)
    ref = np.stack([compute_flow(a, b, tvl1) for a, b in pairs])  # [P, H, W, 2]
    out = tvl1_flow(np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs]), cfg).numpy()
    return _epe(_crop(out), _crop(ref))  # [P, CROP, CROP]


@pytest.mark.real
@pytest.mark.parametrize("preset, n_pairs", [("fast", 2), ("paper", 1)])
def test_agrees_with_opencv_on_bikes(bikes_gray, preset, n_pairs):
    pairs = list(zip(bikes_gray[:-1], bikes_gray[1:]))[:n_pairs]
    epe = _agreement(pairs, flow_config(preset))
    assert np.median(epe) <= 0.05 and epe.mean() <= 0.2, (np.median(epe), epe.mean())


@pytest.mark.real
@pytest.mark.slow
def test_agrees_with_opencv_on_bikes_more_pairs():
    frames = itertools.islice(iter_frames(BIKES, DecodeConfig()), 150, 154)  # another scene, 3 pairs
    gray = [np.ascontiguousarray(to_gray(f)[:, 131:471]) for f in frames]  # centre 256x340
    pairs = list(zip(gray[:-1], gray[1:]))
    for preset in ("fast", "paper"):
        epe = _agreement(pairs, flow_config(preset))
        assert np.median(epe) <= 0.05 and epe.mean() <= 0.2, (preset, np.median(epe), epe.mean())


@pytest.mark.parametrize("overrides", [dict(gamma=0.1), dict(use_initial_flow=True), dict(median_filtering=1),
                                       dict(median_filtering=3, warps=2, nscales=2)])
def test_other_parameters_agree_with_opencv(overrides):
    a, b = _wave_frame(0, 0, seed=3), _wave_frame(2.5, -1.25, seed=3)
    cfg = flow_config("fast", **overrides)
    init = np.zeros((SIZE, SIZE, 2), np.float32)
    init[..., 0] = 2.0  # a guess close to the answer
    ref = compute_flow(a, b, make_tvl1(cfg), init if cfg.use_initial_flow else None)
    out = tvl1_flow(a[None], b[None], cfg, init_flow=init[None])[0].numpy()
    epe = _epe(out, ref)
    assert np.median(epe) <= 0.01 and epe.mean() <= 0.05, (np.median(epe), epe.mean())


# --- batching ----------------------------------------------------------------------------------------------

def test_batch_equals_single_calls_with_early_exit(monkeypatch):
    shifts = [(3.0, -2.0), (0.5, 0.25), (-1.5, 1.0), (0.0, 0.0)]  # converge after different numbers of steps
    prev = np.stack([_wave_frame(0, 0, seed=i) for i in range(len(shifts))])
    nxt = np.stack([_wave_frame(dx, dy, seed=i) for i, (dx, dy) in enumerate(shifts)])
    cfg = flow_config("fast")
    singles = [tvl1_flow(prev[i:i + 1], nxt[i:i + 1], cfg)[0] for i in range(len(shifts))]
    sizes = []
    step = tvl1_torch._step
    monkeypatch.setattr(tvl1_torch, "_step", lambda state, *a, **k: (sizes.append(len(state[0])), step(state, *a, **k))[1])
    batch = tvl1_flow(prev, nxt, cfg)  # [N, H, W, 2]
    assert 1 <= min(sizes) < len(shifts) == max(sizes)  # pairs did leave the working set early
    for i, single in enumerate(singles):
        torch.testing.assert_close(batch[i], single, rtol=0, atol=1e-5)


def test_fixed_iterations_runs_and_stays_close():
    a, b = _wave_frame(0, 0, seed=5), _wave_frame(2.0, -1.5, seed=5)
    cfg = flow_config("fast")
    early = tvl1_flow(a[None], b[None], cfg)[0].numpy()
    fixed = tvl1_flow(a[None], b[None], cfg, fixed_iterations=True)[0].numpy()  # 300 steps per warp
    assert np.isfinite(fixed).all() and not np.array_equal(fixed, early)  # it did run other steps
    epe = _epe(fixed, early)[MARGIN:-MARGIN, MARGIN:-MARGIN]
    assert np.median(epe) <= 0.05 and epe.mean() <= 0.1, (np.median(epe), epe.mean())
    assert np.median(fixed[MARGIN:-MARGIN, MARGIN:-MARGIN], axis=(0, 1)) == pytest.approx([2.0, -1.5], abs=0.1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_agree(bikes_gray):
    prev, nxt = np.stack(bikes_gray[:-1]), np.stack(bikes_gray[1:])
    for preset in ("fast", "paper"):
        cfg = flow_config(preset)
        cpu = tvl1_flow(prev, nxt, cfg).numpy()
        gpu = tvl1_flow(torch.from_numpy(prev).cuda(), torch.from_numpy(nxt).cuda(), cfg)
        assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
        epe = _epe(gpu.cpu().numpy(), cpu)
        assert np.median(epe) <= 0.01 and epe.mean() <= 0.05, (preset, np.median(epe), epe.mean())


# --- inputs ------------------------------------------------------------------------------------------------

def test_float_frames_are_taken_as_0_to_1():
    a, b = _wave_frame(0, 0), _wave_frame(1.0, 0.5)
    as_u8 = tvl1_flow(a[None], b[None], flow_config("fast"))
    as_float = tvl1_flow(torch.from_numpy(a[None]) / 255.0, torch.from_numpy(b[None]) / 255.0, flow_config("fast"))
    torch.testing.assert_close(as_float, as_u8, rtol=0, atol=1e-3)


def test_bad_inputs_name_the_value():
    a = np.zeros((1, 32, 32), np.uint8)
    with pytest.raises(ValueError, match=r"differ in shape: \(1, 32, 32\) vs \(1, 32, 31\)"):
        tvl1_flow(a, a[..., :31], flow_config("fast"))
    with pytest.raises(ValueError, match=r"\[N, H, W\], got shape \(32, 32\)"):
        tvl1_flow(a[0], a[0], flow_config("fast"))
    with pytest.raises(ConfigError, match="'median_filtering': must be odd"):
        tvl1_flow(a, a, dataclasses.replace(flow_config("fast"), median_filtering=4))
