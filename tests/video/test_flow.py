"""Flow: sign convention and magnitude on a known shift, clipping, per-frame field rule, presets, config."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from refineloc_e2e.errors import ConfigError, RefineLocError
from refineloc_e2e.video.flow import (PRESETS, FlowConfig, compute_flow, flow_config, flow_config_from_mapping,
                                iter_flow, make_tvl1, postprocess_flow)

DX, DY = 3, -2  # content moves 3 px right and 2 px up between the two frames
SIZE = 64
MARGIN = 12  # pixels near the border see content entering/leaving the frame


def _texture(seed=0, size=SIZE + 40):
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (size, size)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 1.5) * 3 - 256, 0, 255).astype(np.uint8)  # [H, W]


def _shifted_pair(dx=DX, dy=DY):
    big = _texture()
    y0 = x0 = 20
    a = big[y0:y0 + SIZE, x0:x0 + SIZE]
    b = big[y0 - dy:y0 - dy + SIZE, x0 - dx:x0 - dx + SIZE]  # b[y, x] = a[y - dy, x - dx]
    return np.ascontiguousarray(a), np.ascontiguousarray(b)  # [H, W] uint8 each


@pytest.mark.parametrize("preset", ["fast", "paper"])
def test_known_shift_sign_and_magnitude(preset):
    a, b = _shifted_pair()
    raw = compute_flow(a, b, make_tvl1(flow_config(preset)))
    assert raw.shape == (SIZE, SIZE, 2) and raw.dtype == np.float32
    interior = raw[MARGIN:-MARGIN, MARGIN:-MARGIN]  # [h, w, 2]
    assert np.median(interior[..., 0]) == pytest.approx(DX, abs=0.25)  # channel 0 = x, + = right
    assert np.median(interior[..., 1]) == pytest.approx(DY, abs=0.25)  # channel 1 = y, + = down
    assert np.abs(interior - [DX, DY]).mean() < 0.5


def test_compute_flow_is_pure_and_checks_shapes():
    a, b = _shifted_pair()
    tvl1 = make_tvl1(flow_config("fast"))
    np.testing.assert_array_equal(compute_flow(a, b, tvl1), compute_flow(a, b, tvl1))
    with pytest.raises(ValueError, match="grayscale"):
        compute_flow(a, b[:-1], tvl1)


def test_postprocess_clips_and_scales():
    raw = np.array([[[30.0, -50.0], [10.0, -5.0], [20.0, -20.0]]], np.float32)  # [1, 3, 2]
    out = postprocess_flow(raw, 20.0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[[1.0, -1.0], [0.5, -0.25], [1.0, -1.0]]])


def _rgb(gray):
    return np.repeat(gray[..., None], 3, axis=-1)  # [H, W, 3]


def test_iter_flow_count_and_last_field_rule():
    a, b = _shifted_pair()
    _, c = _shifted_pair(2 * DX, 2 * DY)
    frames = [_rgb(a), _rgb(b), _rgb(c)]
    fields = list(iter_flow(iter(frames), flow_config("fast")))
    assert len(fields) == 3 and all(f.shape == (SIZE, SIZE, 2) and f.dtype == np.float32 for f in fields)
    np.testing.assert_array_equal(fields[2], fields[1])  # the last frame repeats the previous field
    assert fields[2] is not fields[1]
    assert np.median(fields[0][MARGIN:-MARGIN, MARGIN:-MARGIN, 0]) == pytest.approx(DX / 20, abs=0.02)
    raw = list(iter_flow(iter(frames[:2]), flow_config("fast"), postprocess=False))
    assert len(raw) == 2
    assert np.median(raw[0][MARGIN:-MARGIN, MARGIN:-MARGIN, 1]) == pytest.approx(DY, abs=0.25)  # pixels


def test_iter_flow_clips_at_bound():
    a, b = _shifted_pair()
    fields = list(iter_flow([_rgb(a), _rgb(b)], flow_config("fast", bound=2.0)))
    interior = fields[0][MARGIN:-MARGIN, MARGIN:-MARGIN]
    assert interior.min() >= -1.0 and interior.max() <= 1.0
    assert np.median(interior[..., 0]) == 1.0  # 3 px clipped to 2 px, / 2
    assert np.median(interior[..., 1]) == pytest.approx(-1.0, abs=0.01)  # -2 px at the bound


def test_iter_flow_one_and_zero_frames():
    a, _ = _shifted_pair()
    fields = list(iter_flow([_rgb(a)]))
    assert len(fields) == 1 and fields[0].shape == (SIZE, SIZE, 2) and not fields[0].any()
    assert list(iter_flow([])) == []


def test_iter_flow_use_initial_flow_runs():
    a, b = _shifted_pair()
    _, c = _shifted_pair(2 * DX, 2 * DY)  # steady motion: the previous field is a good start
    frames = [_rgb(a), _rgb(b), _rgb(c)]
    fields = list(iter_flow(frames, flow_config("fast", use_initial_flow=True), postprocess=False))
    assert len(fields) == 3  # one field per frame, the last repeating the previous one
    np.testing.assert_array_equal(fields[2], fields[1])
    for field in fields[:2]:
        assert np.median(field[MARGIN:-MARGIN, MARGIN:-MARGIN, 0]) == pytest.approx(DX, abs=0.25)
    # the second pair starts from the first pair's field, so it differs from a cold start of the same pair
    # (auto keeps OpenCV on the CPU for use_initial_flow, so the cold start names it)
    cold = list(iter_flow(frames, flow_config("fast", backend="opencv"), postprocess=False))
    np.testing.assert_array_equal(cold[0], fields[0])
    assert not np.array_equal(cold[1], fields[1])


def test_paper_preset_is_opencv_defaults():
    default = cv2.optflow.DualTVL1OpticalFlow_create()
    ours = make_tvl1(flow_config("paper"))
    for getter in ("Tau", "Lambda", "Theta", "ScalesNumber", "WarpingsNumber", "Epsilon", "InnerIterations",
                   "OuterIterations", "ScaleStep", "Gamma", "MedianFiltering", "UseInitialFlow"):
        assert getattr(ours, "get" + getter)() == pytest.approx(getattr(default, "get" + getter)()), getter


def test_fast_is_the_default_and_make_tvl1_uses_every_field():
    assert FlowConfig() == flow_config("fast")
    cfg = flow_config("paper", warps=4, nscales=3, inner_iterations=7, outer_iterations=6, scale_step=0.6,
                      epsilon=0.03, tau=0.2, lambda_=0.1, theta=0.4, gamma=0.1, median_filtering=3,
                      use_initial_flow=True)
    t = make_tvl1(cfg)
    got = (t.getWarpingsNumber(), t.getScalesNumber(), t.getInnerIterations(), t.getOuterIterations(),
           t.getScaleStep(), t.getEpsilon(), t.getTau(), t.getLambda(), t.getTheta(), t.getGamma(),
           t.getMedianFiltering(), t.getUseInitialFlow())
    assert got == pytest.approx((4, 3, 7, 6, 0.6, 0.03, 0.2, 0.1, 0.4, 0.1, 3, True))


def test_flow_config_errors():
    with pytest.raises(ConfigError, match=r"unknown flow preset 'medium' \(known: fast, paper\)"):
        flow_config("medium")
    with pytest.raises(ConfigError, match="unknown config key 'wraps'"):
        flow_config("fast", wraps=3)
    with pytest.raises(ConfigError, match="'warps'"):
        flow_config("fast", warps="many")
    with pytest.raises(ConfigError, match="scale_step"):
        flow_config("fast", scale_step=1.5)


def test_flow_config_from_mapping():
    cfg = flow_config_from_mapping({"preset": "paper", "warps": 4})
    assert cfg == flow_config("paper", warps=4) and cfg.preset == "paper" and cfg.nscales == 5
    assert flow_config_from_mapping({}) == flow_config("fast")
    assert flow_config_from_mapping({"bound": 10}).bound == 10.0
    with pytest.raises(ConfigError, match="unknown config key 'foo'"):
        flow_config_from_mapping({"preset": "fast", "foo": 1})
    with pytest.raises(ConfigError, match="unknown flow preset"):
        flow_config_from_mapping({"preset": "slow"})
    assert set(PRESETS) == {"paper", "fast"}


def test_missing_contrib_module_is_explained(monkeypatch):
    monkeypatch.delattr(cv2, "optflow")
    with pytest.raises(RefineLocError, match="pip install opencv-contrib-python-headless"):
        make_tvl1(flow_config("fast"))
    with pytest.raises(RefineLocError, match="opencv-contrib-python-headless"):
        next(iter_flow([np.zeros((8, 8, 3), np.uint8)], flow_config("fast", backend="opencv")))
