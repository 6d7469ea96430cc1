"""Tests of the five pseudo ground-truth generators, sampling, class weights and statistics."""

import numpy as np
import pytest

from refineloc_e2e.config import from_dict
from refineloc_e2e.datasets import Segment
from refineloc_e2e.errors import ConfigError
from refineloc_e2e.model.postprocess import PostprocessConfig, coverage, predict_segments
from refineloc_e2e.training.pseudo import (PseudoConfig, attention, class_activation, class_weights, distribution_aware,
                                  foreground_fraction, generate, pseudo_stats, sample_mask, segment_prediction,
                                  truth_labels, uniform_random, video_rng)


def _scores(T=10):
    """fg attention 0.95 on snippets 2-5, 0.6 on 6, 0.1 elsewhere; class 1 strong on 2-6."""
    fg = np.full(T, 0.1)
    fg[2:6] = 0.95
    fg[6] = 0.6
    cas = np.full((T, 3), 0.3)
    cas[2:7, 1] = 0.8
    cas[2:7, [0, 2]] = 0.1
    at = np.exp(fg) / np.exp(fg).sum()
    return {"cas": cas, "attention_bf": np.stack([1 - fg, fg], 1), "attention_time": at,
            "video_scores": (at[:, None] * cas).sum(0)}


def test_uniform_random_is_fair_and_seeded():
    a = uniform_random(10000, np.random.default_rng(1))
    assert a.dtype == np.uint8 and set(np.unique(a)) == {0, 1}
    assert abs(a.mean() - 0.5) < 0.03
    np.testing.assert_array_equal(a, uniform_random(10000, np.random.default_rng(1)))


def test_distribution_aware_follows_the_probability():
    a = distribution_aware(20000, np.random.default_rng(0), 0.3)
    assert abs(a.mean() - 0.3) < 0.02
    cfg = PseudoConfig(generator="distribution_aware")
    assert cfg.uses_strong_annotations and not PseudoConfig().uses_strong_annotations
    with pytest.raises(ValueError, match="strong"):
        generate(cfg, _scores(), np.random.default_rng(0))


def test_class_activation_thresholds_max_class_score():
    s = _scores()
    assert class_activation(s["cas"], 0.5).tolist() == [0, 0, 1, 1, 1, 1, 1, 0, 0, 0]
    assert class_activation(s["cas"], 0.2).sum() == 10
    cfg = PseudoConfig(generator="class_activation", class_threshold=0.5)
    np.testing.assert_array_equal(generate(cfg, s, np.random.default_rng(0)), class_activation(s["cas"], 0.5))


def test_attention_foreground_and_time_sources():
    s = _scores()
    assert attention(s["attention_bf"], s["attention_time"], 0.5, "foreground").tolist() == \
        [0, 0, 1, 1, 1, 1, 1, 0, 0, 0]
    assert attention(s["attention_bf"], s["attention_time"], 0.9, "foreground").tolist() == \
        [0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    # "time": T * attention_time >= threshold (1.0 = above the video's mean attention)
    time_lab = attention(s["attention_bf"], s["attention_time"], 1.0, "time")
    np.testing.assert_array_equal(time_lab, (s["attention_time"] * 10 >= 1.0).astype(np.uint8))
    assert time_lab[2:6].all() and not time_lab[0]
    with pytest.raises(ConfigError):
        attention(s["attention_bf"], s["attention_time"], 0.5, "logits")


def test_segment_prediction_uses_its_own_thresholds():
    s = _scores()
    cfg = PseudoConfig()  # released-code THUMOS values: fg >= 0.92, cas >= 0.1, top-2
    assert (cfg.segment.alpha_attention, cfg.segment.alpha_class, cfg.segment.top_k) == (0.08, 0.1, 2)
    lab = generate(cfg, s, np.random.default_rng(0))
    # snippets 2-5 pass fg >= 0.92 (6 does not); inflated by 2 -> 0..7
    assert lab.tolist() == [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    tight = PostprocessConfig(alpha_attention=0.08, alpha_class=0.1, top_k=2, inflate_snippets=0)
    assert segment_prediction(s, tight).tolist() == [0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    segs = predict_segments(s["cas"], s["attention_bf"], s["attention_time"], s["video_scores"], tight)
    np.testing.assert_array_equal(segment_prediction(s, tight), coverage(segs, 10))
    # classes_from_labels: only the given weak labels produce segments
    from_labels = PseudoConfig(classes_from_labels=True, segment=PostprocessConfig(
        alpha_attention=0.08, alpha_class=0.5, top_k=2, inflate_snippets=0))
    assert generate(from_labels, s, np.random.default_rng(0), label_indices=[0]).sum() == 0
    assert generate(from_labels, s, np.random.default_rng(0), label_indices=[1]).tolist() == \
        [0, 0, 1, 1, 1, 1, 0, 0, 0, 0]


def test_sample_mask_fraction_and_repeatability():
    m = sample_mask(100, 0.8, video_rng(0, 1, "v1"))
    assert m.dtype == bool and m.sum() == 80
    np.testing.assert_array_equal(m, sample_mask(100, 0.8, video_rng(0, 1, "v1")))
    assert not np.array_equal(m, sample_mask(100, 0.8, video_rng(0, 1, "v2")))
    assert not np.array_equal(m, sample_mask(100, 0.8, video_rng(0, 2, "v1")))
    assert sample_mask(7, 0.7, video_rng(0, 1, "x")).sum() == 5
    assert sample_mask(3, 0.01, video_rng(0, 1, "x")).sum() == 1
    assert sample_mask(4, 1.0, video_rng(0, 1, "x")).all()


def test_class_weights_inverse_frequency_and_never_nan():
    labels = [np.array([1, 0, 0, 0], np.uint8), np.array([0, 0, 1, 1], np.uint8)]
    sampled = [np.array([True, True, True, True]), np.array([True, True, True, False])]
    w = class_weights(labels, sampled)  # sampled: 5 bg, 2 fg of 7
    np.testing.assert_allclose(w, [7 / 10, 7 / 4])
    assert w[0] * 5 + w[1] * 2 == pytest.approx(7)  # mean weight per sampled snippet is 1
    all_bg = [np.zeros(5, np.uint8)]
    w0 = class_weights(all_bg, [np.ones(5, bool)])
    assert np.all(np.isfinite(w0)) and np.all(w0 > 0)
    assert np.all(np.isfinite(class_weights([np.ones(3, np.uint8)], [np.ones(3, bool)])))


def test_truth_labels_and_statistics():
    # snippet = 0.64 s; a segment [0.64, 2.0) s covers centres 1.5 and 2.5 (0.96 s, 1.6 s), not 3.5 (2.24 s)
    truth = truth_labels([Segment(0.64, 2.0, "A")], 5, fps=25.0, snippet_frames=16)
    assert truth.tolist() == [0, 1, 1, 0, 0]
    assert foreground_fraction([truth, np.ones(5, np.uint8)]) == pytest.approx(7 / 10)
    labels = [np.array([0, 1, 1, 1, 0], np.uint8)]
    st = pseudo_stats(labels, [np.ones(5, bool)], [truth])
    assert st["n_fg"] == 3 and st["fg_fraction"] == pytest.approx(0.6)
    assert st["precision_vs_truth"] == pytest.approx(2 / 3) and st["recall_vs_truth"] == pytest.approx(1.0)
    empty = pseudo_stats([np.zeros(5, np.uint8)], [np.ones(5, bool)], [truth])
    assert empty["n_fg"] == 0 and empty["precision_vs_truth"] is None and empty["n_videos_without_fg"] == 1


def test_config_rejects_bad_generator_and_keys():
    with pytest.raises(ConfigError, match="pseudo.generator"):
        from_dict(PseudoConfig, {"generator": "magic"})
    with pytest.raises(ConfigError, match="sample_fraction"):
        from_dict(PseudoConfig, {"sample_fraction": 0.0})
    with pytest.raises(ConfigError, match="segment.alpha_clas"):
        from_dict(PseudoConfig, {"segment": {"alpha_clas": 0.1}}, prefix="")
