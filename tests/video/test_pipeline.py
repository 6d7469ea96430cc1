"""Flow region, chunked / parallel flow and the streaming extractor (tiny synthetic videos, random I3D)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from refineloc_e2e.cli import main
from refineloc_e2e.video.decode import iter_frames
from refineloc_e2e.errors import ConfigError, DecodeError, RefineLocError
from refineloc_e2e.features.extractor import FeatureExtractor
from refineloc_e2e.video.flow import flow_config, iter_flow, to_gray
from refineloc_e2e.video.flow_chunks import ChunkedFlow, FlowPool, flow_window
from refineloc_e2e.video.snippets import center_crop
from support import FAST, TINY_DECODE, texture, tiny_cfg, write_moving_video  # noqa: E402,F401

def test_flow_window_full_and_crop():
    full = flow_window(256, 602, 224, "full")
    assert (full.size_hw, full.crop_top, full.crop_left) == ((256, 602), 16, 189)
    crop = flow_window(256, 602, 224, "crop", 32)
    assert (crop.top, crop.bottom, crop.left, crop.right) == (0, 256, 157, 445)  # rows clamped to the frame
    assert (crop.crop_top, crop.crop_left) == (16, 32)
    frame = np.arange(256 * 602).reshape(256, 602, 1)
    np.testing.assert_array_equal(crop.crop_of(crop.region_of(frame)), center_crop(frame, 224))
    np.testing.assert_array_equal(full.crop_of(full.region_of(frame)), center_crop(frame, 224))
    with pytest.raises(ConfigError, match="flow_region"):
        flow_window(256, 602, 224, "middle")
    with pytest.raises(ConfigError, match="flow_margin_px"):
        flow_window(256, 602, 224, "crop", -1)


def test_crop_region_flow_shape_and_epe_on_a_shift():
    """A texture moving (+2, +1) px per frame: the crop-region field is [crop, crop, 2] and close to the truth."""
    big = texture(120, 200)
    frames = [np.ascontiguousarray(big[20 - i:20 - i + 64, 40 - 2 * i:40 - 2 * i + 128]) for i in range(5)]
    fields = {}
    for region in ("crop", "full"):
        win = flow_window(64, 128, 48, region, 8)
        cf = ChunkedFlow(FAST, win, source="shift", chunk_pairs=2)
        out = []
        for f in frames:
            out += cf.push(np.ascontiguousarray(to_gray(win.region_of(f))))
        out += cf.finish()
        fields[region] = np.stack(out) * FAST.bound  # [5, 48, 48, 2], back to pixels
    assert fields["crop"].shape == (5, 48, 48, 2)
    inner = (slice(None), slice(4, -4), slice(4, -4))  # the shift exposes new texture at the borders
    epe = np.linalg.norm(fields["crop"][inner] - np.array([2.0, 1.0], np.float32), axis=-1)
    assert epe.mean() < 0.25, epe.mean()
    epe_full = np.linalg.norm(fields["crop"] - fields["full"], axis=-1)
    assert epe_full.mean() < 0.25, epe_full.mean()
    np.testing.assert_array_equal(fields["crop"][-1], fields["crop"][-2])  # last frame repeats


@pytest.mark.parametrize("n_frames", [1, 2, 9, 10, 11])
def test_chunked_full_region_equals_iter_flow(n_frames):
    """Chunking does not change a single value: full-region chunks == flow.iter_flow, then cropped."""
    big = texture(60, 80)
    frames = [np.ascontiguousarray(big[i:i + 40, 2 * i:2 * i + 50]) for i in range(n_frames)]
    ref = [center_crop(f, 32) for f in iter_flow(frames, FAST)]
    win = flow_window(40, 50, 32, "full")
    cf = ChunkedFlow(FAST, win, source="x", chunk_pairs=4)
    got = []
    for f in frames:
        got += cf.push(to_gray(f))
    got += cf.finish()
    assert len(got) == len(ref) == n_frames
    np.testing.assert_array_equal(np.stack(got), np.stack(ref))


@pytest.mark.slow
def test_workers_2_equals_workers_1(tmp_path, tiny_models):
    video = write_moving_video(tmp_path / "v.mkv", n=27, step_px=(2, 1))
    with FeatureExtractor(tiny_cfg(workers=1, flow_region="crop"), models=tiny_models) as one, \
            FeatureExtractor(tiny_cfg(workers=2, flow_region="crop"), models=tiny_models) as two:
        f1, m1 = one.extract(video)
        f2, m2 = two.extract(video)
        f2b, _ = two.extract(video)  # the pool is reused across videos
        assert two._pool is not None and two._pool.alive
        assert two.stage_s["flow"] > 0 and set(two.stage_s) >= {"decode", "flow", "i3d_rgb", "i3d_flow"}
    assert two._pool is None  # closed by the context manager
    assert f1.shape == (4, 2048)  # ceil(27 / 8)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(f1, f2b)
    assert m1 == m2 and m1["settings_hash"] == m2["settings_hash"]
    assert m1["flow"]["region"] == "crop" and m1["flow"]["region_margin_px"] == 32


def test_full_region_features_match_streaming_reference(tmp_path, tiny_models):
    """flow_region=full reproduces the plain recipe (iter_flow on the whole frame, crop, I3D) exactly."""
    video = write_moving_video(tmp_path / "v.mkv", n=12, step_px=(1, 1))
    cfg = tiny_cfg(workers=1, streams="flow")  # flow_region=full is the default
    feats, _ = FeatureExtractor(cfg, models=tiny_models).extract(video)
    fields = [center_crop(f, 32) for f in iter_flow(iter_frames(video, TINY_DECODE), FAST)]
    fields += [fields[-1]] * 4  # tail padding to 16 frames
    x = torch.from_numpy(np.stack([np.stack(fields[:8]), np.stack(fields[8:])])).permute(0, 4, 1, 2, 3)
    with torch.inference_mode():
        ref, _ = tiny_models["flow"][0](x.contiguous())
    np.testing.assert_allclose(feats, ref.numpy(), rtol=0, atol=1e-5)


def test_settings_hash_tracks_only_what_changes_numbers(tiny_models):
    base = FeatureExtractor(tiny_cfg(), models=tiny_models).settings_hash
    same = [tiny_cfg(workers=3), tiny_cfg(batch_snippets=5), tiny_cfg(channels_last=False)]
    assert all(FeatureExtractor(c, models=tiny_models).settings_hash == base for c in same)
    changed = [tiny_cfg(flow_region="crop"), tiny_cfg(flow_region="crop", flow_margin_px=16),
               tiny_cfg(precision="bf16"), tiny_cfg(flow=flow_config("paper"))]
    hashes = {FeatureExtractor(c, models=tiny_models).settings_hash for c in changed}
    assert base not in hashes and len(hashes) == len(changed)


def test_config_errors_name_the_key(tiny_models):
    for kw, key in [(dict(workers=-1), "workers"), (dict(flow_region="x"), "flow_region"),
                    (dict(precision="fp8"), "precision"), (dict(precision="fp16"), "precision"),
                    (dict(workers=2, flow=flow_config("fast", use_initial_flow=True)), "workers")]:
        with pytest.raises(ConfigError, match=key):
            FeatureExtractor(tiny_cfg(**kw), models=tiny_models)


@pytest.mark.slow
def test_corrupt_input_mid_stream_with_workers_names_the_file(tmp_path, tiny_models):
    full = write_moving_video(tmp_path / "v.mp4", n=75, size=(64, 64), codec="libx264",
                              options={"movflags": "faststart"})
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[:len(data) * 9 // 10])  # the first frames (I-frame) stay whole
    dec = dataclasses.replace(TINY_DECODE, short_side=64)
    with FeatureExtractor(dataclasses.replace(tiny_cfg(workers=2), decode=dec), models=tiny_models) as ex:
        with pytest.raises(DecodeError) as info:
            ex.extract(cut)
        assert str(info.value).startswith(f"{cut}: decode error after")
        feats, _ = ex.extract(full)  # the pool survives a failed video
        assert feats.shape == (10, 2048)


@pytest.mark.slow
def test_worker_failure_is_a_clean_error_naming_the_file():
    win = flow_window(40, 50, 32, "full")
    with FlowPool(FAST, 2) as pool:
        cf = ChunkedFlow(FAST, win, source="/videos/bad.mp4", chunk_pairs=2, pool=pool)
        for _ in range(3):  # colour frames where grayscale is expected: the TV-L1 call raises in the worker
            cf.push(np.zeros((40, 50, 3), np.uint8))
        with pytest.raises(RefineLocError, match=r"^/videos/bad.mp4: optical flow failed in a worker on "
                                                 r"frames 0-2 \(ValueError: tvl1_flow: prev must be grayscale"):
            cf.finish()
        assert not cf._in_flight
        ok = ChunkedFlow(FAST, win, source="good", chunk_pairs=2, pool=pool)  # the pool is still usable
        out = [f for g in np.zeros((3, 40, 50), np.uint8) for f in ok.push(g)] + ok.finish()
        assert len(out) == 3


def test_cli_has_workers_option():
    for cmd in ("extract", "detect"):
        out = CliRunner().invoke(main, [cmd, "--help"]).output
        assert "--workers" in out
    res = CliRunner().invoke(main, ["extract", "x.mp4", "--workers", "0"])
    assert res.exit_code == 2 and "--workers" in res.output
