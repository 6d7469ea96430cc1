"""Progress output: a bar on a terminal, plain lines (no carriage returns) when redirected, nothing with -q."""

from __future__ import annotations

import io

import numpy as np
from click.testing import CliRunner

from support import TINY_DECODE, tiny_cfg, write_moving_video
from refineloc_e2e.cli import main
from refineloc_e2e.features.batch import extract_batch
from refineloc_e2e.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _drive(stream, **kw):
    with Progress(3, desc="extract", unit="video", stream=stream, **kw) as bar:
        for name in ("a.mp4", "b.mp4", "c.mp4"):
            bar.note(name)
            bar.update(1, note=name)
    return stream.getvalue()


def test_terminal_gets_a_bar_redirected_gets_lines():
    assert "\r" in _drive(Terminal())  # tqdm redraws in place
    assert _drive(io.StringIO()) == "extract: 1/3 videos a.mp4\nextract: 2/3 videos b.mp4\nextract: 3/3 videos c.mp4\n"
    assert _drive(io.StringIO(), enabled=False) == ""
    assert _drive(Terminal(), enabled=False) == ""


def test_one_line_per_task():
    out = io.StringIO()
    bar = Progress(2_500_000, desc="w", unit="B", lines="end", start="downloading http://x/w.pt", stream=out)
    for _ in range(25):
        bar.update(100_000)
    bar.close()
    bar.close()  # idempotent
    lines = out.getvalue().splitlines()
    assert lines[0] == "w: downloading http://x/w.pt"
    assert len(lines) == 2 and lines[1].startswith("w: 2.5 MB of 2.5 MB in ") and lines[1].endswith(" s")


def test_redirected_extract_batch_prints_a_line_per_video(tmp_path, tiny_models, capsys):
    from refineloc_e2e.features.extractor import FeatureExtractor

    videos = [write_moving_video(tmp_path / f"v{i}.mkv", n=8) for i in range(2)]
    extractor = FeatureExtractor(tiny_cfg(decode=TINY_DECODE), models=tiny_models)
    summary = extract_batch(videos, tmp_path / "feats", extractor.cfg, extractor=extractor, progress=True)
    assert summary.ok
    err = capsys.readouterr().err
    assert "\r" not in err
    assert [x for x in err.splitlines() if x.startswith("extract:")] == ["extract: 1/2 videos v0.mkv",
                                                                        "extract: 2/2 videos v1.mkv"]
    extract_batch(videos, tmp_path / "feats", extractor.cfg, extractor=extractor, progress=False)  # -q
    assert capsys.readouterr().err == ""


def test_redirected_import_has_no_carriage_returns(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for vid in ("a", "b", "c"):
        np.save(src / f"{vid}.npy", rng.standard_normal((5, 2 * 8)).astype(np.float32))
    args = ["import-features", str(src), "-o", str(tmp_path / "out"), "--fps", "25", "--snippet-frames", "16",
            "--stream-dim", "8"]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "\r" not in r.stderr
    assert r.stderr.splitlines()[:3] == ["src: 1/3 videos a", "src: 2/3 videos b", "src: 3/3 videos c"]
    r = CliRunner().invoke(main, args + ["-o", str(tmp_path / "out2"), "-q"], catch_exceptions=False)
    assert r.exit_code == 0 and "videos a" not in r.stderr


def test_redirected_training_prints_one_summary_line_per_epoch(capsys):
    import torch

    from refineloc_e2e.model.head import HeadConfig
    from refineloc_e2e.training.fit import TrainConfig, VideoItem, fit_model

    g = torch.Generator().manual_seed(0)
    items = [VideoItem(f"v{i}", torch.randn(6, 8, generator=g), [i % 2]) for i in range(6)]
    cfg = TrainConfig(epochs=3, batch_size=4, device="cpu")
    res = fit_model(items[:4], items[4:], n_classes=2, head_cfg=HeadConfig(feature_dim=8), cfg=cfg, iteration=1,
                    beta=0.0, class_weights=None, device=torch.device("cpu"), progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert [x.split(" train ")[0] for x in lines] == [f"iteration 1: {e}/3 epochs" for e in (1, 2, 3)]
    assert lines[0].endswith(f"train {res.train_losses[0]:.4f}, held-out {res.heldout_losses[0]:.4f}")
