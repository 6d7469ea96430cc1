"""The built-in kinetics400 detector with the real Kinetics-400 RGB weights on the bundled real clips (marked real):
the identity logits = W f + b against forward() per snippet, DeepMind's CricketShot sample, bikes.mp4's abstention,
--features, --save-scores / --from-scores, and a dataset vocabulary scored by evaluate."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from refineloc_e2e.backbone.weights import build_i3d
from refineloc_e2e.cli import main
from refineloc_e2e.detection.kinetics import kinetics_head
from refineloc_e2e.features.cache import read_features, write_features
from refineloc_e2e.video.decode import iter_frames
from refineloc_e2e.video.snippets import center_crop, normalize_rgb, pad_tail

from support import SAMPLES

GIF = SAMPLES / "v_CricketShot_g04_c01_rgb.gif"  # DeepMind's kinetics-i3d sample: 79 frames, 3.16 s (LICENSE there)
BIKES = SAMPLES / "bikes.mp4"
CRICKET_ID = "v_CricketShot_g04_c01_rgb"
pytestmark = [pytest.mark.real, pytest.mark.slow]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def detected(real_weights, tmp_path_factory):
    """One `detect` of the two clips with no model and no runs: extraction (RGB only) into a fresh cache."""
    root = tmp_path_factory.mktemp("kinetics")
    out = root / "segments.json"
    r = run("detect", GIF, BIKES, "-o", out, "--cache", root / "cache", "-q", "--save-scores", root / "scores",
            "--plot", root / "plots", "--html", root / "page.html")
    return root, r, json.loads(out.read_text())


def test_the_results_page_comes_with_the_kinetics_results(detected):
    root, r, doc = detected
    assert r.exit_code == 0, r.stderr
    sources = doc["external_data"]["sources"]
    assert sorted(sources) == sorted([CRICKET_ID, "bikes"]) and Path(sources["bikes"]) == BIKES.resolve()
    page = (root / "page.html").read_text(encoding="utf-8")
    assert "playing cricket" in page and "bikes" in page and "<script src" not in page


def test_identity_logits_equal_forward_per_snippet(detected):
    """Features read from the extract-written .npy (the padded tail included) equal forward() of each snippet
    alone, and W f + b on them equals forward()'s logits (rtol, atol 1e-4 as tests/test_i3d.py)."""
    root, _, _ = detected
    feats, meta = read_features(root / "cache" / "rgb-only", CRICKET_ID)
    frames = [center_crop(f, 224) for f in iter_frames(GIF)]
    assert len(frames) == 79 and feats.shape == (5, 1024)  # 4 full snippets + a tail of 15 frames, padded
    model, _ = build_i3d("rgb", None, "cpu")
    logits = kinetics_head(meta, "test").logits(feats, meta)  # [5, 400]
    for t in range(5):
        snippet = pad_tail(frames[16 * t:16 * t + 16], 16)
        x = torch.from_numpy(normalize_rgb(np.stack(snippet))).permute(3, 0, 1, 2)[None]  # [1, 3, 16, 224, 224]
        with torch.inference_mode():
            f_ref, l_ref = model(x)
        np.testing.assert_allclose(feats[t], f_ref[0].numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(logits[t], l_ref[0].double().numpy(), rtol=1e-4, atol=1e-4)


def test_cricket_gets_a_playing_cricket_segment_over_most_of_the_clip(detected):
    _, r, doc = detected
    assert r.exit_code == 0, r.stderr
    top = doc["results"][CRICKET_ID][0]
    start_s, end_s = top["segment"]
    assert top["label"] == "playing cricket"
    assert (end_s - start_s) >= 0.8 * 79 / 25
    assert doc["external_data"]["model"]["name"] == "kinetics400"
    assert doc["external_data"]["model"]["weights"]["rgb"]["weights_id"] == "i3d-kinetics400-rgb"


def test_bikes_gets_no_invented_action(detected):
    root, r, doc = detected
    assert doc["results"]["bikes"] == [] and doc["external_data"]["abstained"] == ["bikes"]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("bikes: no confident class")]
    assert len(lines) == 1 and "the top pooled class is 'garbage collecting' at 0.20" in lines[0], r.stderr
    assert r.stderr.splitlines()[0].startswith("model: kinetics400, the built-in Kinetics-400 detector")
    assert sorted(p.name for p in (root / "plots").iterdir()) == ["bikes.png", f"{CRICKET_ID}.png"]


def test_features_folder_and_saved_scores_give_the_same_segments(detected, tmp_path):
    root, _, doc = detected
    r = run("detect", "--features", root / "cache" / "rgb-only", "-o", tmp_path / "f.json")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "f.json").read_text())["results"] == doc["results"]
    r = run("detect", "--from-scores", root / "scores", "-o", tmp_path / "s.json")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "s.json").read_text())["results"] == doc["results"]
    r = run("detect", "--from-scores", root / "scores", "-o", tmp_path / "x.json", "--alpha-attention", "0.3")
    assert r.exit_code == 1 and r.stderr.startswith("error: --alpha-attention: a trained head's post-processing")


def test_thumos14_vocabulary_output_scores_with_evaluate(detected, tmp_path):
    root, _, _ = detected
    scores = tmp_path / "scores"
    r = run("detect", "--features", root / "cache" / "rgb-only", CRICKET_ID, "--classes", "thumos14",
            "-o", tmp_path / "t.json", "--save-scores", scores)
    assert r.exit_code == 0, r.stderr
    labels = {p["label"] for p in json.loads((tmp_path / "t.json").read_text())["results"][CRICKET_ID]}
    assert labels == {"CricketShot", "CricketBowling"}  # Kinetics has one cricket class for both
    # keyed as a THUMOS'14 test video with CricketShot annotations, evaluate scores it as it stands
    shutil.move(scores / f"{CRICKET_ID}.npz", scores / "video_test_0000004.npz")
    r = run("detect", "--from-scores", scores, "-o", tmp_path / "v.json")
    assert r.exit_code == 0, r.stderr
    r = run("evaluate", "--predictions", tmp_path / "v.json", "--ground-truth", "thumos14-test",
            "--tiou", "0.1", "--json", tmp_path / "m.json")
    assert r.exit_code == 0, r.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n_predictions"] == 2 and metrics["n_ignored_predictions"] == 0  # both matched to its annotation


def test_a_cached_both_stream_entry_is_used_as_it_is(detected, tmp_path):
    """A both-stream entry of this very video in the cache is scored through its RGB half: nothing is extracted
    and no RGB-only entry is written beside it."""
    root, _, doc = detected
    feats, meta = read_features(root / "cache" / "rgb-only", CRICKET_ID)
    flow = {**meta["backbone"]["rgb"], "weights_id": "cross-modality-from-rgb:i3d-kinetics400-rgb", "stream": "flow"}
    both = dict(meta, streams=["rgb", "flow"], backbone={"rgb": meta["backbone"]["rgb"], "flow": flow})
    write_features(tmp_path / "cache", CRICKET_ID, np.concatenate([feats, np.zeros_like(feats)], axis=1), both)
    r = run("detect", GIF, "-o", tmp_path / "o.json", "--cache", tmp_path / "cache", "-q")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "o.json").read_text())["results"][CRICKET_ID] == doc["results"][CRICKET_ID]
    assert not (tmp_path / "cache" / "rgb-only").exists()
