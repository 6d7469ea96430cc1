"""Tests of action segment prediction (paper 3.1, eq. 3), seconds conversion and saved scores."""

import numpy as np
import pytest

from refineloc_e2e.config import from_dict
from refineloc_e2e.errors import CacheError, ConfigError
from refineloc_e2e.model.postprocess import (PostprocessConfig, SnippetSegment, coverage, load_scores, predict_segments,
                                       save_scores, segments_to_results, top_classes)
from refineloc_e2e.timebase import snippet_to_seconds

T = 12


def _case():
    """Class 0 kept at 1,2,4,5,8,11 (3 = one-snippet gap, 6-7 dropped by background), class 1 at 0,
    class 2 high everywhere but not in the top 2 of y-hat."""
    cas = np.full((T, 3), 0.1)
    cas[[1, 2, 4, 5, 8, 11], 0] = 0.8
    cas[6, 0] = 0.9  # high class score but dropped by background attention
    cas[0, 1] = 0.6
    cas[:, 2] = 0.9
    bg = np.full(T, 0.2)
    bg[[6, 7]] = 0.9
    attention_bf = np.stack([bg, 1 - bg], axis=1)
    attention_time = np.linspace(0.01, 0.12, T)
    video_scores = np.array([0.5, 0.3, 0.2])
    return cas, attention_bf, attention_time, video_scores


def _eq3(cas, attention_time, video_scores, n, t1, t2):
    return float(np.mean(attention_time[t1:t2] + cas[t1:t2, n]) + video_scores[n])


def test_segments_by_hand():
    cas, abf, at, ys = _case()
    segs = predict_segments(cas, abf, at, ys, PostprocessConfig())
    got = sorted((s.class_index, s.start, s.end) for s in segs)
    assert got == [(0, 0, 8), (0, 6, 11), (0, 9, 12), (1, 0, 3)]  # inflated by 2, clipped to [0, T)
    score = {(s.class_index, s.start): s.score for s in segs}
    assert score[(0, 0)] == pytest.approx(_eq3(cas, at, ys, 0, 1, 6))  # gap snippet 3 inside the mean
    assert score[(0, 6)] == pytest.approx(_eq3(cas, at, ys, 0, 8, 9))
    assert score[(1, 0)] == pytest.approx(_eq3(cas, at, ys, 1, 0, 1))


def test_gap_inflation_and_topk_options():
    cas, abf, at, ys = _case()
    segs = predict_segments(cas, abf, at, ys, PostprocessConfig(max_gap=0, inflate_snippets=0, top_k=1))
    assert sorted((s.start, s.end) for s in segs) == [(1, 3), (4, 6), (8, 9), (11, 12)]
    assert {s.class_index for s in segs} == {0}
    # gaps of two snippets are joined with max_gap=2
    segs = predict_segments(cas, abf, at, ys, PostprocessConfig(max_gap=2, inflate_snippets=0, top_k=1))
    assert sorted((s.start, s.end) for s in segs) == [(1, 12)]
    # background threshold: alpha_attention=0.95 keeps snippets 6-7 too
    segs = predict_segments(cas, abf, at, ys, PostprocessConfig(alpha_attention=0.95, inflate_snippets=0, top_k=1))
    assert sorted((s.start, s.end) for s in segs) == [(1, 9), (11, 12)]
    # explicit classes replace the top-k of y-hat
    segs = predict_segments(cas, abf, at, ys, PostprocessConfig(inflate_snippets=0), class_indices=[2])
    assert [(s.class_index, s.start, s.end) for s in segs] == [(2, 0, 6), (2, 8, 12)]


def test_no_segments_when_everything_is_background():
    cas, abf, at, ys = _case()
    abf = np.stack([np.full(T, 0.99), np.full(T, 0.01)], axis=1)
    assert predict_segments(cas, abf, at, ys, PostprocessConfig()) == []


def test_shape_mismatch_is_an_error():
    cas, abf, at, ys = _case()
    with pytest.raises(ValueError, match="shapes"):
        predict_segments(cas, abf[:5], at, ys, PostprocessConfig())


def test_top_classes_and_coverage():
    assert list(top_classes(np.array([0.1, 0.5, 0.5, 0.2]), 3)) == [1, 2, 3]
    cov = coverage([SnippetSegment(0, 1, 3, 1.0), SnippetSegment(1, 5, 6, 1.0)], 7)
    assert cov.tolist() == [False, True, True, False, False, True, False]


def test_segments_to_results_uses_the_time_base():
    segs = [SnippetSegment(0, 0, 8, 0.5), SnippetSegment(1, 9, 12, 0.9), SnippetSegment(0, 12, 13, 0.1)]
    res = segments_to_results(segs, ["A", "B"], fps=25.0, snippet_frames=16, n_snippets=13, duration_s=7.5)
    assert [r["label"] for r in res] == ["B", "A"]  # best first; the one starting past 7.5 s is left out
    assert res[0]["segment"] == [pytest.approx(9 * 16 / 25), 7.5]
    assert res[1]["segment"] == [0.0, pytest.approx(float(snippet_to_seconds(8, fps=25.0, snippet_frames=16)))]
    res = segments_to_results(segs[:1], ["A", "B"], fps=25.0, snippet_frames=16, n_snippets=13)
    assert res[0]["segment"][1] == pytest.approx(5.12)
    with pytest.raises(ValueError):
        segments_to_results([SnippetSegment(0, 3, 20, 1.0)], ["A"], fps=25.0, snippet_frames=16, n_snippets=10)


def test_scores_round_trip_and_errors(tmp_path):
    cas, abf, at, ys = _case()
    path = tmp_path / "v.npz"
    save_scores(path, {"cas": cas, "attention_bf": abf, "attention_time": at, "video_scores": ys})
    got = load_scores(path)
    for k, v in {"cas": cas, "attention_bf": abf, "attention_time": at, "video_scores": ys}.items():
        np.testing.assert_array_equal(got[k], v)
    assert predict_segments(got["cas"], got["attention_bf"], got["attention_time"], got["video_scores"],
                            PostprocessConfig()) == predict_segments(cas, abf, at, ys, PostprocessConfig())
    with pytest.raises(CacheError, match="not found"):
        load_scores(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(CacheError, match="bad.npz"):
        load_scores(bad)
    partial = tmp_path / "partial.npz"
    save_scores(partial, {"cas": cas})
    with pytest.raises(CacheError, match="lacks"):
        load_scores(partial)
    with pytest.raises(ValueError, match="object"):
        save_scores(tmp_path / "o.npz", {"cas": np.array([{"a": 1}], dtype=object)})


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match="alpha_clas"):
        from_dict(PostprocessConfig, {"alpha_clas": 0.2})
    with pytest.raises(ConfigError, match="top_k"):
        from_dict(PostprocessConfig, {"top_k": "two"})
    with pytest.raises(ConfigError, match="alpha_attention"):
        from_dict(PostprocessConfig, {"alpha_attention": 1.5})
    assert from_dict(PostprocessConfig, {"alpha_class": 0.005}).alpha_class == 0.005
