"""The refinement options of issue 12: released-code variants, calibrated pseudo labels, held-out selection,
early stopping, and the shipped paper / released configs."""

import dataclasses

import numpy as np
import pytest
import torch

from refineloc_e2e.training.calibrate import (calibrate_segment, coverage_matched_threshold, fraction_warning,
                                             otsu_threshold, weak_label_map)
from refineloc_e2e.errors import ConfigError
from refineloc_e2e.model.head import HeadConfig, video_loss
from refineloc_e2e.model.postprocess import PostprocessConfig, kept_by_attention, predict_segments
from refineloc_e2e.datasets import load_dataset, load_thumos14
from refineloc_e2e.training.pseudo import PseudoConfig, class_weights, generate, truth_labels
from refineloc_e2e.training.data import load_training_features
from refineloc_e2e.training.fit import TrainConfig, VideoItem, fit_model
from refineloc_e2e.training.report import format_iteration_table
from refineloc_e2e.training.run_config import RunConfig, load_run_config
from refineloc_e2e.training.selection import select_iteration

from support import CONFIGS
from testing.wstal_bench import BenchSpec, write_thumos14_layout


def _scores(fg_prob, cas_col0):
    fg = np.asarray(fg_prob, dtype=np.float64)
    T = len(fg)
    cas = np.stack([np.asarray(cas_col0, dtype=np.float64), 1 - np.asarray(cas_col0, dtype=np.float64)], axis=1)
    bf = np.stack([1 - fg, fg], axis=1)
    return {"cas": cas, "attention_bf": bf, "attention_time": np.full(T, 1.0 / T), "video_scores": np.array([0.7, 0.3]),
            "attention_logodds": np.log(fg) - np.log(1 - fg)}


def test_mean_fg_segment_score_uses_fg_probability_not_time_attention():
    s = _scores([0.1, 0.9, 0.7, 0.1], [0.1, 0.8, 0.6, 0.1])
    cfg = PostprocessConfig(inflate_snippets=0, top_k=1, segment_score="mean_fg")
    (seg,) = predict_segments(s["cas"], s["attention_bf"], s["attention_time"], s["video_scores"], cfg)
    assert (seg.start, seg.end) == (1, 3)
    assert seg.score == pytest.approx(0.7 + 0.8 + 0.7)  # mean cas + mean fg + y-hat
    (paper,) = predict_segments(s["cas"], s["attention_bf"], s["attention_time"], s["video_scores"],
                                PostprocessConfig(inflate_snippets=0, top_k=1))
    assert paper.score == pytest.approx(0.25 + 0.7 + 0.7)  # eq. 3: A_time = 1/T


def test_dilation_grouping_joins_gaps_up_to_two_and_grows_by_one():
    kept = [0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0]  # gaps of 2 then 3
    fg = np.where(np.array(kept) == 1, 0.9, 0.1)
    s = _scores(fg, np.full(12, 0.9))
    cfg = PostprocessConfig(inflate_snippets=0, top_k=1, grouping="dilation")
    segs = predict_segments(s["cas"], s["attention_bf"], s["attention_time"], s["video_scores"], cfg)
    assert [(g.start, g.end) for g in segs] == [(1, 7), (8, 11)]
    gap = PostprocessConfig(inflate_snippets=0, top_k=1, grouping="gap", max_gap=1)
    segs = predict_segments(s["cas"], s["attention_bf"], s["attention_time"], s["video_scores"], gap)
    assert [(g.start, g.end) for g in segs] == [(2, 3), (5, 6), (9, 10)]


def test_logodds_attention_filter_and_option_validation():
    s = _scores([0.2, 0.6, 0.99], [0.9, 0.9, 0.9])
    cfg = PostprocessConfig(attention_norm="logodds", logodds_threshold=0.0)
    assert kept_by_attention(s["attention_bf"], cfg, s["attention_logodds"]).tolist() == [False, True, True]
    for key, bad in (("segment_score", "sum"), ("grouping", "morph"), ("attention_norm", "zscore")):
        with pytest.raises(ConfigError, match=key):
            PostprocessConfig(**{key: bad}).validate()


def test_released_video_loss_is_attention_weighted_log_probability():
    torch.manual_seed(0)
    raw = {"cas_logits": torch.randn(2, 5, 3), "attention_logits": torch.randn(2, 5, 2)}
    raw["attention_time_input"] = torch.softmax(raw["attention_logits"], -1)[..., 1]
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    targets = torch.tensor([[1.0, 0, 0], [0, 0.5, 0.5]])
    got = video_loss(raw, mask, targets, "released")
    for b, t in enumerate((5, 3)):
        a = torch.softmax(raw["attention_time_input"][b, :t], 0)
        lc = torch.log_softmax(raw["cas_logits"][b, :t], -1)
        want = -(targets[b] * (a[:, None] * lc).sum(0)).sum()
        assert got[b] == pytest.approx(float(want), rel=1e-5)
    assert torch.all(got >= video_loss(raw, mask, targets, "paper") - 1e-6)  # Jensen: an upper bound
    with pytest.raises(ConfigError, match="video_loss"):
        HeadConfig(video_loss="focal").validate()


def test_class_weighting_modes():
    labels, sampled = [np.array([1, 0, 0, 0], np.uint8)], [np.ones(4, bool)]
    np.testing.assert_allclose(class_weights(labels, sampled), [4 / 6, 2.0])
    np.testing.assert_allclose(class_weights(labels, sampled, "none"), [1.0, 1.0])
    np.testing.assert_allclose(class_weights(labels, sampled, "released_sqrt"), [1.0, np.sqrt(0.75)])


def test_generators_follow_released_segment_path_and_attention_options():
    s = _scores([0.1, 0.95, 0.95, 0.1, 0.1, 0.1], [0.05, 0.9, 0.9, 0.9, 0.9, 0.05])
    seg = PostprocessConfig(alpha_attention=0.08, alpha_class=0.1, top_k=1, inflate_snippets=0)
    ca = generate(PseudoConfig(generator="class_activation", segment=seg), s, np.random.default_rng(0))
    assert ca.tolist() == [0, 1, 1, 1, 1, 0]  # CAS filter only
    at = generate(PseudoConfig(generator="attention", segment=seg), s, np.random.default_rng(0))
    assert at.tolist() == [0, 1, 1, 0, 0, 0]  # attention filter only
    lo = PostprocessConfig(attention_norm="logodds", logodds_threshold=-10.0, top_k=1, inflate_snippets=0)
    at_lo = generate(PseudoConfig(generator="attention", segment=lo), s, np.random.default_rng(0))
    assert at_lo.tolist() == [1, 1, 1, 1, 1, 1]  # respects the attention option
    assert generate(PseudoConfig(generator="class_activation", class_threshold=0.96), s,
                    np.random.default_rng(0)).sum() == 0  # a number keeps the paper's simple threshold


def test_otsu_and_quantile_calibration_track_ranking_not_level():
    rng = np.random.default_rng(0)
    for level in (0.0, -60.0):  # the attention level drifts; the split must follow
        lo = np.concatenate([rng.normal(level - 4, 1, 700), rng.normal(level + 4, 1, 300)])
        thr = otsu_threshold(lo)
        assert level - 2 < thr < level + 2
        s = [{"attention_bf": np.full((1000, 2), 0.5), "attention_logodds": lo}]
        cfg, info = calibrate_segment(PostprocessConfig(), s, "quantile", 0.3)
        assert cfg.attention_norm == "logodds" and info["heldout_fraction_above"] == pytest.approx(0.3, abs=0.01)
    same, info = calibrate_segment(PostprocessConfig(), s, "none")
    assert same == PostprocessConfig() and info["method"] == "none"


def _ramp_scores(level, T=20):
    lo = level + 5.0 - np.abs(np.arange(T) - 7.5)  # peak at snippets 7-8, > level outside 3..12
    fg = 1.0 / (1.0 + np.exp(-lo))
    cas = np.stack([np.full(T, 0.9), np.full(T, 0.1)], axis=1)  # class context on every snippet
    return {"cas": cas, "attention_bf": np.stack([1 - fg, fg], axis=1), "attention_time": np.full(T, 1.0 / T),
            "video_scores": np.array([0.7, 0.3]), "attention_logodds": lo}


def test_detection_coverage_calibration_matches_pseudo_fraction_to_detections():
    seg = PostprocessConfig(alpha_attention=0.08, alpha_class=0.1, top_k=1, inflate_snippets=2)
    det = PostprocessConfig(alpha_attention=0.5, alpha_class=0.35, top_k=1, inflate_snippets=0)
    s = _ramp_scores(0.0)
    # detections keep fg prob > 0.5 (snippets 3..12): 10 of 20; the pseudo path inflates by 2, so it must keep 6
    cfg, info = calibrate_segment(seg, [s, s], "detection_coverage", detection=det)
    assert info["target_fraction"] == pytest.approx(0.5) and info["heldout_pseudo_fraction"] == pytest.approx(0.5)
    assert cfg.attention_norm == "logodds" and cfg.logodds_threshold == pytest.approx(2.5)
    lab = generate(PseudoConfig(segment=cfg), s, np.random.default_rng(0))
    assert lab.tolist() == [0] * 3 + [1] * 10 + [0] * 7  # keeps 5..10, inflated to 3..12
    with pytest.raises(ValueError):
        calibrate_segment(seg, [s], "detection_coverage")  # needs the detection config
    # the threshold follows the attention's level (drift) and keeps the covered fraction
    for level in (0.0, -60.0):
        thr, frac = coverage_matched_threshold(seg, [_ramp_scores(level)], 0.3)
        assert thr == pytest.approx(level + 4.5) and frac == pytest.approx(0.3)
    thr, frac = coverage_matched_threshold(seg, [s], 0.0)  # no detections: no pseudo foreground
    assert frac == 0.0 and generate(PseudoConfig(segment=PostprocessConfig(**{**seg.__dict__, "attention_norm": "logodds",
                                                                          "logodds_threshold": thr})),
                                    s, np.random.default_rng(0)).sum() == 0
    PseudoConfig(calibration="detection_coverage").validate()


def test_weak_label_map_and_fraction_warning():
    s = _scores([0.9, 0.9, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1])
    cfg = PostprocessConfig(top_k=1, inflate_snippets=0)
    assert weak_label_map([s, s], [[0], [0]], cfg, 2) == (1.0, 2)
    wap, _ = weak_label_map([s, s], [[0], [1]], cfg, 2)
    assert wap == pytest.approx(0.5)  # class 0: AP 1; class 1 (never detected): AP 0
    assert fraction_warning(0.5, [0.15, 0.45], 1) and "nearly all foreground" in fraction_warning(0.5, [0.15, 0.45], 1)
    assert fraction_warning(0.3, [0.15, 0.45], 1) is None and fraction_warning(0.9, None, 1) is None


def test_early_stopping_stops_after_patience_and_keeps_best_epoch():
    g = torch.Generator().manual_seed(0)
    items = [VideoItem(f"v{i}", torch.randn(6, 8, generator=g), [i % 2]) for i in range(6)]
    cfg = TrainConfig(epochs=40, batch_size=4, lr=0.05, early_stop_patience=2, device="cpu")
    res = fit_model(items[:4], items[4:], n_classes=2, head_cfg=HeadConfig(feature_dim=8), cfg=cfg, iteration=0,
                    beta=0.0, class_weights=None, device=torch.device("cpu"), progress=False)
    assert res.epochs_run == res.best_epoch + 3 and res.epochs_run < 40
    assert res.heldout_losses[res.best_epoch] == min(res.heldout_losses)
    with pytest.raises(ConfigError, match="early_stop_patience"):
        TrainConfig(early_stop_patience=-1).validate()


def test_select_by_heldout_proxy_never_below_iteration_zero_and_table_marks_it():
    its = [{"iteration": k, "heldout_video_loss": 1.0 - 0.1 * k, "train_loss": 0.0, "heldout": {"wap": w},
            "best_epoch": 1, "epochs_run": 4, "pseudo": None if k == 0 else
            {"fg_fraction": 0.3, "precision_vs_truth": 0.6, "recall_vs_truth": 0.5, "f1_vs_truth": 0.545}}
           for k, w in enumerate([0.5, 0.7, 0.7, 0.4])]
    k, why = select_iteration(its, "wap", None)
    assert k == 1 and "0.70" not in why and "70.00" in why
    assert select_iteration(its, "val_loss", None)[0] == 3
    assert select_iteration(its, "fixed", 2)[0] == 2
    assert select_iteration(its, "fixed", None) == (3, "fixed: the last iteration (3)")
    table = format_iteration_table(its, selected=1)
    assert " F1" in table and "*   1" in table and "0.55" in table


@pytest.mark.parametrize("name", ["thumos14-paper", "thumos14-released", "activitynet12-paper",
                                  "activitynet12-released"])
def test_paper_and_released_configs_load(name):
    cfg = load_run_config(CONFIGS / f"{name}.yaml")
    if name == "thumos14-paper":
        assert cfg.pseudo.beta == 2.0 and cfg.head.attention_time_input == "probability"
        assert cfg.postprocess.attention_norm == "none" and cfg.pseudo.sample_fraction == 0.8
    if name == "thumos14-released":
        assert (cfg.pseudo.sample_fraction, cfg.pseudo.beta, cfg.train.epochs, cfg.train.plateau_patience) == \
            (0.7, 2.0, 100, 1)
        assert cfg.head.video_loss == "released" and cfg.postprocess.grouping == "dilation"
    if name == "activitynet12-released":
        assert (cfg.pseudo.segment.top_k, cfg.pseudo.segment.alpha_class, cfg.pseudo.segment.alpha_attention) == \
            (3, 0.05, 0.5)
        assert cfg.pseudo.class_weighting == "none"


def test_noinflate_labels_only_kept_snippets():
    """pseudo.segment.inflate_snippets=0 (the ablation's paper+noinflate form) labels the kept snippets only."""
    no = load_run_config(CONFIGS / "thumos14-paper.yaml", ["pseudo.segment.inflate_snippets=0"])
    assert no.pseudo.segment.inflate_snippets == 0 and no.postprocess.inflate_snippets == 2  # detection unchanged
    s = _scores([0.1, 0.1, 0.95, 0.95, 0.1, 0.1, 0.1], [0.9] * 7)  # class context everywhere
    lab = generate(dataclasses.replace(no.pseudo, segment=dataclasses.replace(no.pseudo.segment, top_k=1)),
                   s, np.random.default_rng(0))
    assert lab.tolist() == [0, 0, 1, 1, 0, 0, 0]  # the inflated default would label 0..5


def test_thumos14_shaped_benchmark_has_the_real_videos_and_instances(tmp_path):
    """testing.wstal_bench's thumos14 layout (the speed benchmark's set): the bundled THUMOS'14 videos, their
    durations and annotated instances, in the feature-cache layout the training path reads."""
    ann = write_thumos14_layout(tmp_path, BenchSpec(dim=4))
    ds, real = load_dataset(ann), load_thumos14()
    assert len(ds.subset("train")) == 200 and len(ds.subset("test")) == len([v for v in real.subset("test") if v.labels])
    assert ds.classes == real.classes
    feats, meta, _ = load_training_features(ds, tmp_path / "features", skip_missing=False)
    n_train = sum(len(feats[v.video_id]) for v in ds.subset("train"))
    assert 60_000 < n_train < 70_000  # ~65k snippets, as the real training split at 25 fps / 16 frames
    v = real.videos["video_validation_0000051"]
    assert ds.videos[v.video_id].segments == v.segments
    assert len(feats[v.video_id]) == int(v.duration_s * 25 / 16)
    fg = truth_labels(v.segments, len(feats[v.video_id]), fps=meta["fps"], snippet_frames=meta["snippet_frames"])
    assert 0 < fg.mean() < 1
