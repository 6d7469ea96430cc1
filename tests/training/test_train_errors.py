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

from support import TRAIN_SET, _features_and_annotations, _tmp_files
from refineloc_e2e.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # shared 2-core machine


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)



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
