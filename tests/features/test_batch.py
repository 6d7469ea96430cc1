"""The feature cache seen through extract_batch: skip, invalidation on a changed setting, distinct ids,
no half-written file (random-weight I3D on tiny frames, so this runs without the real weights)."""

import json
import os

import numpy as np

from refineloc_e2e.features.batch import extract_batch
from refineloc_e2e.features.extractor import ExtractConfig, FeatureExtractor
from refineloc_e2e.features.cache import read_features
from refineloc_e2e.video.flow import flow_config
from support import tiny_cfg, write_moving_video


def _run(videos, out, cfg, models):
    with FeatureExtractor(cfg, models=models) as ex:
        return extract_batch(videos, out, cfg, extractor=ex, progress=False, log=lambda m: None)


def test_skip_then_reextract_when_a_setting_changes(tmp_path, tiny_models):  # noqa: F811
    video = write_moving_video(tmp_path / "clip.mkv", n=20)
    out = tmp_path / "feats"
    first = _run([video], out, tiny_cfg(), tiny_models)
    assert (first.extracted, first.skipped, first.failed) == ([str(video)], [], [])
    mtime = os.stat(out / "clip.json").st_mtime_ns
    again = _run([video], out, tiny_cfg(), tiny_models)
    assert again.skipped == [str(video)] and again.extracted == []
    assert os.stat(out / "clip.json").st_mtime_ns == mtime  # not rewritten
    paper = _run([video], out, tiny_cfg(flow=flow_config("paper")), tiny_models)
    assert paper.extracted == [str(video)]  # a setting that changes the numbers re-extracts
    feats, meta = read_features(out, "clip")
    assert feats.shape == (3, 2048) and meta["flow"]["preset"] == "paper"
    assert meta["streams"] == ["rgb", "flow"] and meta["n_frames"] == 20


def test_same_stem_in_two_folders_and_no_temp_files(tmp_path, tiny_models):  # noqa: F811
    a = write_moving_video((tmp_path / "a").mkdir() or tmp_path / "a" / "clip.mkv", n=9)
    b = write_moving_video((tmp_path / "b").mkdir() or tmp_path / "b" / "clip.mkv", n=9, step_px=(0, 1))
    out = tmp_path / "feats"
    summary = _run([tmp_path / "a", tmp_path / "b"], out, tiny_cfg(streams="rgb"), tiny_models)
    assert len(summary.extracted) == 2 and not summary.failed
    ids = sorted(summary.outputs.values())
    assert len(set(ids)) == 2 and all(i.startswith("clip-") for i in ids)
    sources = {json.loads((out / f"{i}.json").read_text())["source"]["path"] for i in ids}
    assert sources == {str(a.resolve()), str(b.resolve())}
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
    for i in ids:
        assert read_features(out, i)[0].dtype == np.float32


def test_settings_memo_key_names_the_resolved_flow_backend(tmp_path, monkeypatch):
    """A memo written while ``auto`` meant OpenCV on the CPU must not vouch for torch-computed settings."""
    import dataclasses

    import refineloc_e2e.features.batch as batch_mod
    from refineloc_e2e.video.flow import resolve_backend
    cfg = ExtractConfig(device="cpu")
    now = batch_mod._settings_memo_path(tmp_path, cfg)
    monkeypatch.setattr(batch_mod, "resolve_backend",
                        lambda f, d: dataclasses.replace(resolve_backend(f, d), backend="opencv"))  # the former rule
    assert now is not None and batch_mod._settings_memo_path(tmp_path, cfg) != now


def test_should_stop_cancels_mid_video_with_nothing_written_and_the_lock_free(tmp_path, tiny_models):  # noqa: F811
    """The cooperative stop a Ray driver uses instead of ray.cancel: polled once a snippet, it raises
    Cancelled part-way through the video; the lock is released and no file (final or temp) is left."""
    import pytest

    from refineloc_e2e.errors import Cancelled
    from refineloc_e2e.features.batch import LazyExtractor, process_video
    from refineloc_e2e.features.cache import VideoLock

    video = write_moving_video(tmp_path / "long.mkv", n=40)
    out = tmp_path / "feats"
    out.mkdir()
    calls = []

    def stop_on_third_snippet() -> bool:
        calls.append(1)
        return len(calls) >= 3

    cfg = tiny_cfg()
    with FeatureExtractor(cfg, models=tiny_models) as ex:
        source = LazyExtractor(cfg, out, extractor=ex)
        with pytest.raises(Cancelled):
            process_video(video, "long", out, source, started=0.0, blocking=False,
                          should_stop=stop_on_third_snippet)
        assert len(calls) == 3  # checked at the start of snippets 1, 2, 3 of 5: stopped part-way
        assert sorted(os.listdir(out)) == [".locks"]  # no entry, no temp file: only the lock folder
        lock = VideoLock.for_video(out, "long")
        assert lock.acquire(blocking=False)
        lock.release()
        done = process_video(video, "long", out, source, started=0.0, blocking=False)  # the same extractor works
    assert done.status == "extracted" and done.features.shape == (5, 2048)
