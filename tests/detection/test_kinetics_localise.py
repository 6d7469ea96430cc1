"""The built-in Kinetics detector without weights: localisation on constructed probability curves, the
vocabularies and mapping files, which features the head may score, and the built-in model names."""

import json

import numpy as np
import pytest

from refineloc_e2e.config import from_dict
from refineloc_e2e.detection.kinetics import KineticsHead, is_builtin, scorable_problem
from refineloc_e2e.detection.kinetics_detect import detect_features_kinetics, kinetics_extract_config
from refineloc_e2e.detection.localise import (LocaliseConfig, class_segments, localise, outer_inner_contrast,
                                              pooled_evidence, smooth)
from refineloc_e2e.detection.vocab import load_vocab
from refineloc_e2e.errors import ConfigError, InputError
from refineloc_e2e.features.cache import write_features
from refineloc_e2e.features.extractor import ORIGIN


def test_smoothing_is_a_centred_mean_clipped_to_the_video():
    probs = np.zeros((6, 1))
    probs[2, 0] = 1.0
    s = smooth(probs, 4)[:, 0]  # snippet t averages [t - 2, t + 2) within [0, 6)
    np.testing.assert_allclose(s, [0.0, 1 / 3, 1 / 4, 1 / 4, 1 / 4, 0.0])
    np.testing.assert_allclose(smooth(probs, 1), probs)


def test_selection_is_from_pooled_evidence_not_per_snippet_argmax():
    T = 20
    probs = np.full((T, 3), 0.0)
    probs[:, 0] = 0.45          # steady: never a snippet's argmax below
    probs[5, 1] = 0.9           # one isolated spike: the argmax there, noise after smoothing
    probs[:, 2] = 1 - probs[:, 0] - probs[:, 1]
    probs[:, 2] = np.where(np.arange(T) == 5, 0.0, 0.10)
    probs[5, 0] = 0.10
    cfg = LocaliseConfig()
    pooled = pooled_evidence(smooth(probs, cfg.smooth_snippets))
    assert pooled[1] == pytest.approx(0.9 / 4) and pooled[0] == pytest.approx(0.45)
    loc = localise(probs, cfg)
    assert loc.selected == [0] and {s.class_index for s in loc.segments} == {0}


def test_no_confident_class_abstains_and_names_the_top_class():
    probs = np.full((12, 4), 0.25)
    probs[3, 1], probs[3, 0] = 0.4, 0.1
    loc = localise(probs, LocaliseConfig())
    assert loc.abstained and loc.segments == [] and loc.top_class == 1


def test_a_class_that_does_not_stand_out_from_the_next_is_no_confident_class():
    """vtest.avi's shape: two different classes both confident, 0.08 apart -> abstain; a clear leader is kept; the
    same curve in two columns (two dataset classes mapped to one Kinetics class) is one evidence, not a rival."""
    T = 24
    rivals = np.zeros((T, 3))
    rivals[:, 0], rivals[:, 1], rivals[:, 2] = 0.65, 0.57, 1 - 0.65 - 0.57 + 0.22  # rows need not sum to 1 here
    assert localise(rivals, LocaliseConfig()).abstained
    assert localise(rivals, LocaliseConfig(min_margin=0.0)).selected == [0, 1]  # the rule off: both localised
    leader = rivals.copy()
    leader[:, 1] = 0.30
    assert localise(leader, LocaliseConfig()).selected == [0]
    shared = leader.copy()
    shared[:, 1] = shared[:, 0]  # CricketShot and CricketBowling: both are Kinetics' `playing cricket`
    assert localise(shared, LocaliseConfig()).selected == [0, 1]


def test_a_plateau_gives_one_segment_with_its_bounds_best_first():
    curve = np.zeros(30)
    curve[10:18] = 0.9  # the action, snippets [10, 18)
    segs = class_segments(smooth(curve[:, None], 1)[:, 0], LocaliseConfig())
    assert segs[0][:2] == (10, 18)
    assert segs[0][2] == pytest.approx(0.9)  # inner 0.9, outer band (2 snippets each side) 0
    assert all(sc <= segs[0][2] for _, _, sc in segs)


def test_outer_inner_contrast_and_whole_video_segments():
    curve = np.array([0.2, 0.2, 0.8, 0.8, 0.8, 0.8, 0.2, 0.2])
    assert outer_inner_contrast(curve, 2, 6, 0.25) == pytest.approx(0.6)
    assert outer_inner_contrast(curve, 0, 8, 0.25) == pytest.approx(curve.mean())  # nothing outside: inner
    assert outer_inner_contrast(curve, 0, 2, 0.25) == pytest.approx(0.2 - 0.8)  # one side only (the other is off)


def test_smoothed_curve_recovers_a_noisy_action_and_nms_keeps_distinct_segments():
    rng = np.random.default_rng(0)
    T = 60
    curve = rng.uniform(0, 0.05, T)
    curve[10:20] = rng.uniform(0.5, 0.9, 10)
    curve[40:45] = rng.uniform(0.6, 0.9, 5)
    curve[30] = 0.8  # a one-snippet blip: smoothed away below the main runs
    loc = localise(curve[:, None], LocaliseConfig())
    spans = [(s.start, s.end) for s in loc.segments]
    assert loc.selected == [0]
    assert any(abs(s - 10) <= 2 and abs(e - 20) <= 2 for s, e in spans[:2])
    assert any(abs(s - 40) <= 2 and abs(e - 45) <= 2 for s, e in spans[:3])
    for i, a in enumerate(spans):  # NMS: no two kept segments overlap by tIoU >= 0.5
        for b in spans[i + 1:]:
            inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
            assert inter / (max(a[1], b[1]) - min(a[0], b[0])) < 0.5


def test_localise_config_rejects_bad_values_by_key():
    with pytest.raises(ConfigError, match="unknown config key 'localise.nosuch'"):
        from_dict(LocaliseConfig, {"nosuch": 1}, prefix="localise.")
    with pytest.raises(ConfigError, match="min_class_prob"):
        from_dict(LocaliseConfig, {"min_class_prob": 1.5})


def test_builtin_vocabularies_and_their_coverage():
    th, an = load_vocab("thumos14"), load_vocab("activitynet12")
    assert (len(th.classes), sorted(th.unmapped)) == (19, ["Billiards"])
    assert (len(an.classes), len(an.unmapped)) == (79, 21)
    assert not set(th.classes) & set(th.unmapped)
    probs = np.zeros((2, 400))
    k = load_vocab("kinetics400").classes
    probs[:, k.index("golf driving")], probs[:, k.index("golf putting")] = 0.3, 0.2
    mapped = th.map_probs(probs)  # [T, 19]: a class holds the summed probability of its Kinetics classes
    np.testing.assert_allclose(mapped[:, th.classes.index("GolfSwing")], 0.5)


def test_a_misspelt_kinetics_class_names_the_closest(tmp_path):
    f = tmp_path / "mine.json"
    f.write_text(json.dumps({"classes": {"Jump": ["high jump"], "Tennis": {"kinetics": ["playing tenis"]}}}))
    with pytest.raises(InputError) as e:
        load_vocab(str(f))
    assert str(e.value) == (f"{f}: class 'Tennis' maps to 'playing tenis', which is not a Kinetics-400 class; "
                            f"closest Kinetics classes: 'playing tennis', 'playing flute', 'playing chess'")
    f.write_text(json.dumps({"classes": {"Jump": "high jump"}, "unmapped": {"Other": "none"}}))
    v = load_vocab(str(f))
    assert (v.name, v.classes, v.unmapped) == ("mine", ["Jump"], {"Other": "none"})
    with pytest.raises(InputError, match="neither a vocabulary name"):
        load_vocab(str(tmp_path / "nope.json"))


def _meta(**over) -> dict:
    meta = {"origin": ORIGIN, "streams": ["rgb"], "decode": {"crop_size": 224}, "snippet_frames": 16,
            "precision": "fp32", "fps": 25.0, "duration_s": 1.28,
            "backbone": {"rgb": {"weights_id": "i3d-kinetics400-rgb", "num_classes": 400, "sha256": "ab" * 32}}}
    meta.update(over)
    return meta


@pytest.mark.parametrize("over, reason", [
    ({"origin": "imported"}, "imported features (origin 'imported')"),
    ({"streams": ["flow"]}, "no RGB stream (streams ['flow'])"),
    ({"decode": {"crop_size": 112}}, "crop 112: the logits equal W f + b only at crop 224"),
    ({"snippet_frames": 8}, "8-frame snippets: the logits equal W f + b only for 16-frame snippets"),
    ({"precision": "bf16"}, "precision bf16: the head is applied to fp32 features only"),
    ({"backbone": {"rgb": {"weights_id": "mine", "num_classes": 20, "sha256": "x"}}},
     "RGB weights 'mine' have 20 classes, not a 400-class Kinetics head"),
])
def test_features_the_head_cannot_score_are_refused_with_a_reason(over, reason):
    assert scorable_problem(_meta()) is None
    assert scorable_problem(_meta(**over)).startswith(reason)


def test_refused_features_fail_naming_the_file(tmp_path):
    write_features(tmp_path, "imp", np.zeros((2, 1024), np.float32), _meta(origin="imported"))
    summary = detect_features_kinetics(tmp_path, None, out_json=tmp_path / "out.json", log=lambda m: None)
    assert [vid for vid, _ in summary.failed] == ["imp"]
    assert summary.failed[0][1].startswith(f"{tmp_path / 'imp.npy'}: cannot be scored by the built-in kinetics400 "
                                           f"model: imported features")
    assert json.loads((tmp_path / "out.json").read_text())["results"] == {}


def test_builtin_names_and_which_streams_are_scored():
    assert is_builtin("kinetics400") and not is_builtin("./kinetics400") and not is_builtin(None)
    cfg, line = kinetics_extract_config(None, [])
    assert cfg.streams == "rgb" and line.startswith("kinetics400: RGB stream only")
    cfg, line = kinetics_extract_config(None, ["backbone=standard"])
    assert cfg.streams == "both" and line.startswith("kinetics400: two streams, RGB + flow logits")
    with pytest.raises(ConfigError, match="streams=flow"):
        kinetics_extract_config(None, ["streams=flow"])
    with pytest.raises(ConfigError) as e:  # refused before any extraction
        kinetics_extract_config(None, ["decode.crop_size=112"])
    assert str(e.value) == ("the built-in kinetics400 model cannot score these settings: crop 112: the logits equal "
                            "W f + b only at crop 224 (Mixed_5c 7x7 = the head's window)")


def test_two_stream_logits_are_the_sum_of_the_streams_heads():
    rng = np.random.default_rng(1)
    W = {s: (rng.normal(size=(400, 1024)).astype(np.float32), rng.normal(size=400).astype(np.float32))
         for s in ("rgb", "flow")}
    feats = rng.normal(size=(3, 2048)).astype(np.float32)  # [T, rgb | flow]
    meta = {"streams": ["rgb", "flow"]}
    rgb_only = KineticsHead({"rgb": W["rgb"]}, {}).logits(feats, meta)
    np.testing.assert_allclose(rgb_only, feats[:, :1024].astype(np.float64) @ W["rgb"][0].T + W["rgb"][1], rtol=1e-9)
    both = KineticsHead(W, {}).logits(feats, meta)
    np.testing.assert_allclose(both, rgb_only + feats[:, 1024:].astype(np.float64) @ W["flow"][0].T + W["flow"][1],
                               rtol=1e-9)
