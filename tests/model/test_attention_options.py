"""The two non-paper options against attention-level drift: eq. 2 over log-odds, and min-max alpha_A."""

import numpy as np
import pytest
import torch

from refineloc_e2e.errors import ConfigError
from refineloc_e2e.model.head import HeadConfig, build_head, compute_scores
from refineloc_e2e.model.postprocess import PostprocessConfig, background_score, predict_segments


class _FirstTwo(torch.nn.Module):
    def forward(self, x):
        return x[:, :2]


def _raw_for(cfg_input: str, att: torch.Tensor, n_classes=2):
    head = build_head(HeadConfig(feature_dim=4, attention_time_input=cfg_input), n_classes)
    head.attention = _FirstTwo()  # features -> attention logits directly
    feats = torch.cat([att, torch.zeros(*att.shape[:2], 2)], dim=-1)  # (B, T, 4)
    mask = torch.ones(att.shape[:2], dtype=torch.bool)
    return compute_scores(head(feats, mask), mask)


def test_eq2_over_probability_is_the_paper_and_over_logit_is_full_range():
    att = torch.tensor([[[0.0, -40.0], [0.0, -30.0], [0.0, -50.0]]])  # (1, 3, 2): drifted fg logits
    paper = _raw_for("probability", att)["attention_time"][0]
    # p_fg ~ 1e-13..1e-22 everywhere: the paper's softmax over probabilities is uniform, no signal left
    torch.testing.assert_close(paper, torch.full((3,), 1 / 3), rtol=0, atol=1e-6)
    logit = _raw_for("logit", att)["attention_time"][0]
    expected = torch.softmax(torch.tensor([-40.0, -30.0, -50.0]), dim=0)
    torch.testing.assert_close(logit, expected)


def test_attention_time_input_is_validated():
    with pytest.raises(ConfigError, match="head.attention_time_input' must be probability or logit, got 'x'"):
        HeadConfig(attention_time_input="x").validate()


def test_minmax_background_score_survives_drift():
    lo = np.array([-90.0, -80.0, -60.0, -85.0])  # drifted: p_bg ~ 1 everywhere
    bf = np.stack([np.ones(4), np.exp(lo)], axis=1)
    np.testing.assert_allclose(background_score(bf, PostprocessConfig()), 1.0)  # paper: all dropped
    np.testing.assert_allclose(background_score(bf, PostprocessConfig(attention_norm="minmax"), lo),
                               [1.0, 2 / 3, 0.0, 5 / 6])
    flat = background_score(bf, PostprocessConfig(attention_norm="minmax"), np.full(4, -70.0))
    np.testing.assert_allclose(flat, 0.0)  # no contrast: nothing is dropped by attention


def test_minmax_gives_detections_where_the_paper_threshold_gives_none():
    T = 10
    lo = np.full(T, -80.0)
    lo[3:6] = -50.0
    bf = np.stack([np.ones(T), np.exp(lo)], axis=1)
    cas = np.tile([0.9, 0.1], (T, 1))
    at = np.full(T, 1 / T)
    vs = np.array([0.9, 0.1])
    paper = predict_segments(cas, bf, at, vs, PostprocessConfig(inflate_snippets=0), attention_logodds=lo)
    assert paper == []
    ours = predict_segments(cas, bf, at, vs, PostprocessConfig(inflate_snippets=0, attention_norm="minmax"),
                            attention_logodds=lo)
    assert [(s.class_index, s.start, s.end) for s in ours] == [(0, 3, 6)]
