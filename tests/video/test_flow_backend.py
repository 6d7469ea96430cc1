"""The flow backend option in the extraction pipeline: OpenCV (the published implementation) or the torch
port (video/tvl1_torch.py), the same FlowConfig for both, recorded and hashed so caches and models tell them apart."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from support import tiny_cfg, write_moving_video
from refineloc_e2e.detection.detect import extract_config_from_meta
from refineloc_e2e.errors import ConfigError, RefineLocError
from refineloc_e2e.features.extractor import FeatureExtractor
from refineloc_e2e.video.flow import FlowConfig, FlowEngine, flow_config, iter_flow, resolve_backend, to_gray
from refineloc_e2e.video.flow_chunks import auto_workers
from refineloc_e2e.video.tvl1_torch import tvl1_flow


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_auto_backend_resolves_by_device():
    assert resolve_backend(FlowConfig(), "cpu").backend == "torch"  # measured faster in 1-thread processes
    assert resolve_backend(FlowConfig(), "cuda").backend == "torch"
    chained = flow_config("fast", use_initial_flow=True)  # cannot use flow processes: OpenCV on the CPU
    assert resolve_backend(chained, "cpu").backend == "opencv" and resolve_backend(chained, "cuda").backend == "torch"
    assert resolve_backend(flow_config("fast", backend="torch"), "cpu").backend == "torch"
    with pytest.raises(ConfigError, match="config key 'backend'"):
        flow_config("fast", backend="cuda")
    with pytest.raises(ConfigError, match="only the torch backend"):
        flow_config("fast", backend="opencv", fixed_iterations=True)
    with pytest.raises(ConfigError, match="CPU only"):
        FlowEngine(flow_config("fast", backend="opencv"), "cuda")


def test_torch_backend_through_the_extractor(tmp_path, tiny_models):
    video = write_moving_video(tmp_path / "v.mkv", n=20, step_px=(2, 1))
    one_thread = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opencv_flow = dataclasses.replace(tiny_cfg().flow, backend="opencv")
        with FeatureExtractor(tiny_cfg(flow=opencv_flow), models=tiny_models) as ex_cv:
            f_cv, m_cv = ex_cv.extract(video)
        torch_flow = dataclasses.replace(tiny_cfg().flow, backend="torch")
        with FeatureExtractor(tiny_cfg(flow=torch_flow), models=tiny_models) as ex_t:
            f_t, m_t = ex_t.extract(video)
    finally:
        torch.set_num_threads(one_thread)
    assert f_cv.shape == f_t.shape
    half = f_cv.shape[1] // 2
    np.testing.assert_array_equal(f_cv[:, :half], f_t[:, :half])  # the RGB stream does not see flow
    assert _cos(f_cv[:, half:], f_t[:, half:]) >= 0.995  # the bound for flow-stream features
    # recorded and hashed: a cache or model never mixes the two; OpenCV keeps its pre-backend settings
    assert m_cv["flow"]["implementation"].startswith("cv2.") and "backend" not in m_cv["flow"]
    assert m_t["flow"]["backend"] == "torch" and "tvl1_torch" in m_t["flow"]["implementation"]
    assert "backend" not in ex_cv.settings["flow"] and ex_t.settings["flow"]["backend"] == "torch"
    assert ex_cv.settings_hash != ex_t.settings_hash
    # a model's recorded settings rebuild the same backend (and OpenCV for metadata from before backends)
    assert extract_config_from_meta({**m_t, "dim": 2048}).flow.backend == "torch"
    assert extract_config_from_meta({**m_cv, "dim": 2048}).flow.backend == "opencv"


def test_torch_engine_chains_initial_flow_pair_by_pair(tmp_path):
    frames = [np.roll(np.tile(np.linspace(0, 255, 48, dtype=np.float32), (40, 1)), 2 * i, axis=1) for i in range(3)]
    rgb = [np.repeat(f.astype(np.uint8)[..., None], 3, axis=2) for f in frames]
    cfg = flow_config("fast", backend="torch", use_initial_flow=True)
    chained = list(iter_flow(rgb, cfg, postprocess=False))
    cold = list(iter_flow(rgb, flow_config("fast", backend="torch"), postprocess=False))
    assert len(chained) == 3
    np.testing.assert_allclose(chained[0], cold[0], atol=1e-5)  # the first pair has nothing to start from
    assert not np.array_equal(chained[1], cold[1])  # the second starts from the first's field:
    grays = np.stack([to_gray(f) for f in rgb])  # [3, H, W]
    from_first = tvl1_flow(grays[1:2], grays[2:3], cfg, init_flow=chained[0][None])[0].numpy()
    np.testing.assert_array_equal(chained[1], from_first)  # exactly TV-L1 started from the first pair's field
    for field in (*chained[:2], *cold[:2]):  # and it is right: the ramp moves 2 px right per frame
        np.testing.assert_allclose(np.median(field[8:-8, 12:-12], axis=(0, 1)), [2.0, 0.0], atol=0.01)


def test_auto_workers_rule():
    assert auto_workers("torch", "cpu", cores=2) == 2 and auto_workers("torch", "cpu", cores=16) == 16
    assert auto_workers("torch", "cpu", cores=1) == 1  # one core: in this process
    assert auto_workers("opencv", "cpu", cores=8) == 1  # OpenCV threads a pair itself
    assert auto_workers("torch", "cuda", cores=8) == 1  # the GPU takes a chunk at once
    assert auto_workers("torch", "cpu", use_initial_flow=True, cores=8) == 1


def test_default_extractor_resolves_backend_and_workers(tiny_models, monkeypatch):
    import refineloc_e2e.video.flow_chunks as fc
    monkeypatch.setattr(fc, "usable_cores", lambda: 3)
    ex = FeatureExtractor(tiny_cfg(), models=tiny_models)  # workers 0 and backend auto: the defaults
    assert (ex.cfg.flow.backend, ex.cfg.workers) == ("torch", 3)
    assert ex.settings["flow"]["backend"] == "torch"  # hashed: a different cache key from OpenCV's features


def test_torch_engine_on_cpu_runs_one_thread_and_restores(monkeypatch):
    seen = []
    import refineloc_e2e.video.flow as flow_mod
    real = flow_mod.tvl1_flow
    monkeypatch.setattr(flow_mod, "tvl1_flow", lambda *a, **k: (seen.append(torch.get_num_threads()), real(*a, **k))[1])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        FlowEngine(flow_config("fast", backend="torch"), "cpu").pairs(np.zeros((2, 24, 24), np.uint8))
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_torch_backend_needs_no_opencv_contrib(monkeypatch):
    """The GPU machine has plain OpenCV (no cv2.optflow): the default backend, grayscale conversion and the
    CPU kernels must work there; only the opencv backend asks for contrib, with the fix in the message."""
    import cv2
    monkeypatch.delattr(cv2, "optflow", raising=False)
    frames = np.stack([to_gray(np.full((24, 30, 3), v, np.uint8)) for v in (10, 20)])  # [2, 24, 30]
    fields = FlowEngine(FlowConfig(), "cpu").pairs(frames)  # auto -> torch
    assert fields.shape == (1, 24, 30, 2) and np.isfinite(fields).all()
    with pytest.raises(RefineLocError, match="opencv-contrib-python-headless"):
        FlowEngine(flow_config("fast", backend="opencv"), "cpu")


def test_extraction_modules_import_without_yaml():
    """gpu_check.sh installs the package --no-deps next to torch, numpy and plain OpenCV: no PyYAML there."""
    code = ("import sys; sys.modules['yaml'] = None; "  # any `import yaml` now raises ImportError
            "import refineloc_e2e.features.extractor, refineloc_e2e.video.tvl1_torch; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
