"""Training through the CLI on unusable or mismatched features, and ``train --resume`` after an interruption
(split from test_hardening.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import _tmp_files
from refineloc_e2e.cli import main
from refineloc_e2e.features.cache import write_features

pytestmark = pytest.mark.usefixtures("one_thread")  # shared 2-core machine


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)



def _features_and_annotations(root: Path, dims=(16, 16, 16, 16, 16, 16, 16, 16, 16, 16), seed=0):
    from refineloc_e2e.datasets import Dataset, Segment, VideoAnnotation, dataset_to_activitynet_json

    rng = np.random.default_rng(seed)
    feats_dir, videos = root / "feats", {}
    for i, dim in enumerate(dims):
        vid, T, c = f"v{i}", int(rng.integers(20, 40)), i % 2
        x = rng.normal(size=(T, dim)).astype(np.float32)  # (T, D)
        x[5:12, c] += 2.0  # the action, in the class's own direction
        write_features(feats_dir, vid, x, {"fps": 25.0, "snippet_frames": 16, "streams": ["rgb"], "backbone": {},
                                           "duration_s": T * 16 / 25.0})
        videos[vid] = VideoAnnotation(vid, "train" if i < 7 else "test", [f"A{c}"],
                                      [Segment(5 * 0.64, 12 * 0.64, f"A{c}")], T * 0.64, 25.0)
    ann = root / "ann.json"
    ann.write_text(json.dumps(dataset_to_activitynet_json(Dataset("tiny", ["A0", "A1"], videos))))
    return ann, feats_dir


TRAIN_SET = ["--set", "head.feature_dim=16", "--set", "train.epochs=2", "--set", "train.n_iterations=2",
             "--set", "train.batch_size=4", "--set", "train.device=cpu", "--set", "select_iteration=2",
             "--set", "guard.enabled=false", "-q"]  # guard off: 2-epoch toy heads give collapsed pseudo labels


def test_train_reports_unusable_or_mismatched_features(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ann, feats = _features_and_annotations(tmp_path)
    r = run("train", "--annotations", ann, "--features", "feats", "--run-dir", "r0", "-q")  # default head: 2048-d
    assert (r.exit_code, r.stderr) == (1, "error: feats: features are 16-d (streams ['rgb']) but the head expects "
                                          "head.feature_dim=2048 (built-in config); extract with matching --streams "
                                          "or pass --set head.feature_dim=16\n")
    meta = json.loads((feats / "v3.json").read_text())
    (feats / "v3.json").write_text(json.dumps(dict(meta, format_version=0)))
    r = run("train", "--annotations", ann, "--features", "feats", "--run-dir", "r1", *TRAIN_SET)
    assert (r.exit_code, r.stderr) == (1, "error: feats: 1 of 10 listed videos have no usable features: v3; first: "
                                          "feats/v3.json: feature metadata format 0 is not the current format 1; "
                                          "re-extract this video (extract them, or pass --skip-missing)\n")
    (feats / "v3.json").write_text(json.dumps(meta))
    np.save(feats / "v3.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    r = run("train", "--annotations", ann, "--features", "feats", "--run-dir", "r1", *TRAIN_SET)
    assert r.exit_code == 1 and r.stderr.endswith(
        "first: feats/v3.npy: holds pickled Python objects, refused (feature files are plain float32 arrays; loading "
        "pickles could run code); re-extract (extract them, or pass --skip-missing)\n")
    _, _ = _features_and_annotations(tmp_path / "mixed", dims=(16, 32) + (16,) * 8)
    r = run("train", "--annotations", ann, "--features", tmp_path / "mixed" / "feats", "--run-dir", "r2", *TRAIN_SET)
    assert r.exit_code == 1
    assert r.stderr == (f"error: {tmp_path}/mixed/feats: features of 'v1' were extracted with other settings than "
                        f"those of 'v0' (dim: 32 vs 16); extract all videos with one setting\n")


def test_train_resume_through_the_cli(tmp_path, monkeypatch):
    import refineloc_e2e.training.refinement as train_mod
    from refineloc_e2e.model.head import load_head

    monkeypatch.chdir(tmp_path)
    ann, _ = _features_and_annotations(tmp_path)
    base = ["train", "--annotations", ann, "--features", "feats", *TRAIN_SET]
    assert run(*base, "--run-dir", "full").exit_code == 0
    real_fit = train_mod.fit_model

    def crash_on_2(*a, **kw):
        if kw["iteration"] == 2:
            raise KeyboardInterrupt  # what Ctrl-C (or a kill between iterations) does
        return real_fit(*a, **kw)

    monkeypatch.setattr(train_mod, "fit_model", crash_on_2)
    r = run(*base, "--run-dir", "cut")
    assert (r.exit_code, r.stderr.splitlines()[-1]) == (
        130, "error: stopped (SIGINT); completed iterations are kept, add --resume to the same command to continue "
             "after the last one")
    monkeypatch.setattr(train_mod, "fit_model", real_fit)
    assert sorted(p.name for p in Path("cut").glob("iter_*.pt")) == ["iter_0.pt", "iter_1.pt"]
    r = run(*base, "--run-dir", "cut")
    assert (r.exit_code, r.stderr) == (1, "error: cut: already holds a training run; pass resume=True (--resume) "
                                          "to continue it or choose another run folder\n")
    assert run(*base, "--run-dir", "cut", "--resume").exit_code == 0
    full, cut = (json.loads(Path(d, "metrics.json").read_text()) for d in ("full", "cut"))
    strip = lambda its: [{k: v for k, v in e.items() if k not in ("wall_s", "timing", "epoch_s")} for e in its]  # noqa: E731
    assert strip(full["iterations"]) == strip(cut["iterations"]) and len(cut["iterations"]) == 3
    assert full["selected_iteration"] == cut["selected_iteration"]
    a, b = load_head("full/model.pt").model.state_dict(), load_head("cut/model.pt").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _tmp_files(tmp_path) == []
