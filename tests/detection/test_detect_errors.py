"""Detection refused before any work when the model was trained on other features (split from test_hardening.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from support import SMALL_EXTRACT, write_test_video
from refineloc_e2e.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # shared 2-core machine


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)



@pytest.mark.real
def test_detect_with_a_model_trained_on_other_features(tmp_path, monkeypatch, real_weights):
    from refineloc_e2e.model.head import HeadConfig, build_head, save_head
    from refineloc_e2e.model.postprocess import PostprocessConfig

    monkeypatch.chdir(tmp_path)
    write_test_video("v.mp4", n=8)
    cfg = HeadConfig(feature_dim=2048)
    save_head("model.pt", build_head(cfg, 2), class_names=["A", "B"], head_config=cfg,
              postprocess_config=PostprocessConfig(),
              feature_meta={"dim": 2048, "fps": 25.0, "snippet_frames": 8, "streams": ["rgb", "flow"],
                            "backbone": {"rgb": {"weights_id": "piergiaj-rgb-imagenet"}}})
    r = run("detect", "v.mp4", "--model", "model.pt", "--cache", "feats", *SMALL_EXTRACT)
    assert r.exit_code == 1
    assert r.stderr.splitlines()[-1] == (
        "error: model.pt was trained on other features than the extraction settings (streams ['rgb'], 25 fps, "
        "16-frame snippets): dim: model 2048 vs features 1024; snippet_frames: model 8 vs features 16; streams: "
        "model ['rgb', 'flow'] vs features ['rgb']; rgb backbone: model 'piergiaj-rgb-imagenet' vs features "
        "'i3d-kinetics400-rgb'")
    assert not Path("feats").exists() or not list(Path("feats").glob("*.npy"))  # checked before any work
