"""Timeline PNG: rendered headless, valid PNG of the expected size, validation of inputs."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from refineloc_e2e.datasets import Segment
from refineloc_e2e.errors import InputError
from refineloc_e2e.detection.plot import _pack_rows, attention_curve, plot_timeline
from refineloc_e2e.model.postprocess import PostprocessConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", data[16:24])


def _inputs(n_snippets: int = 120):
    rng = np.random.default_rng(0)
    t = np.arange(n_snippets)
    attention = np.clip(0.1 + 0.8 * ((t > 20) & (t < 45)) + rng.normal(0, 0.05, n_snippets), 0, 1)
    names = ["Diving", "CliffDiving", "HighJump", "LongJump", "Shotput", "PoleVault", "Billiards"]
    scores = {c: np.clip(rng.normal(0.1, 0.05, n_snippets) + (k + 1) * ((t > 20 + 8 * k) & (t < 45 + 8 * k)), 0, None)
              for k, c in enumerate(names)}
    predictions = [{"label": "Diving", "score": 0.91, "segment": [13.2, 28.5]},
                   {"label": "CliffDiving", "score": 0.72, "segment": [14.0, 29.0]},
                   {"label": "HighJump", "score": 0.40, "segment": [51.0, 61.0]}]
    truth = [Segment(13.0, 29.0, "Diving"), Segment(13.0, 29.0, "CliffDiving"), Segment(52.0, 60.0, "HighJump")]
    return attention, scores, predictions, truth


def test_plot_timeline_writes_png(tmp_path):
    attention, scores, predictions, truth = _inputs()
    out = tmp_path / "sub" / "video_test_0000004.png"
    plot_timeline(out, video_id="video_test_0000004", duration_s=77.5, fps=25.0, snippet_frames=16,
                  fg_attention=attention, class_scores=scores, predictions=predictions, ground_truth=truth,
                  attention_threshold=0.5)
    assert _png_size(out) == (1200, 750)
    assert 20_000 < out.stat().st_size < 2_000_000
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp file left behind


def test_plot_timeline_minimal_inputs(tmp_path):
    """No classes, no predictions: the attention curve over the 3 snippets' 1.92 s, empty panels that say so."""
    out = tmp_path / "empty.png"
    fig = plot_timeline(out, video_id="v", duration_s=None, fps=25.0, snippet_frames=16, fg_attention=np.zeros(3),
                        class_scores={}, predictions=[], title="nothing detected")
    assert _png_size(out) == (1200, 750)
    ax_att, ax_cls, ax_seg = fig.axes
    assert fig.get_suptitle() == "nothing detected"
    assert [p.get_label() for p in ax_att.patches] == ["eq. 1 foreground probability\n(attention_norm: none)"]
    assert ax_att.get_ylabel() == "fg attention"
    np.testing.assert_allclose(ax_att.patches[0].get_data().edges, [0.0, 0.64, 1.28, 1.92])
    assert ax_seg.get_xlim() == (0.0, 1.92)  # no duration given: the snippets' end
    assert (list(ax_cls.patches), ax_cls.get_legend(), list(ax_seg.patches), list(ax_seg.texts)) == ([], None, [], [])
    assert ax_seg.get_title(loc="left") == "segments: 0 predicted"


def test_plot_timeline_many_predictions(tmp_path):
    attention, scores, _, _ = _inputs(50)
    predictions = [{"label": "Diving", "score": i / 100, "segment": [i * 0.2, i * 0.2 + 5]} for i in range(100)]
    out = tmp_path / "many.png"
    fig = plot_timeline(out, video_id="v", duration_s=32.0, fps=25.0, snippet_frames=16, fg_attention=attention,
                        class_scores=scores, predictions=predictions)
    assert _png_size(out) == (1200, 750)
    ax_att, ax_cls, ax_seg = fig.axes
    assert ax_seg.get_title(loc="left") == "segments: 100 predicted (70 lowest-scoring not drawn)"
    bars = ax_seg.patches  # the 30 best-scoring, at their times, labelled with their scores
    assert len(bars) == 30
    assert sorted((round(b.get_x(), 6), round(b.get_width(), 6)) for b in bars) == \
        [(round(i * 0.2, 6), 5.0) for i in range(70, 100)]
    assert sorted(t.get_text() for t in ax_seg.texts) == [f" Diving {i / 100:.2f}" for i in range(70, 100)]
    legend = [t.get_text() for t in ax_cls.get_legend().get_texts()]  # the 5 highest peaks, highest first: the
    assert len(legend) == 5 and legend[:4] == ["LongJump", "HighJump", "CliffDiving", "Diving"]  # 4 with a bump
    # in the 50 snippets (peaks 4, 3, 2, 1); the 5th is noise


def test_plot_timeline_rejects_bad_shapes(tmp_path):
    attention, scores, predictions, _ = _inputs()
    with pytest.raises(InputError, match=r"class_scores must each be float\[120\].*'Diving': \(5,\)"):
        plot_timeline(tmp_path / "x.png", video_id="v", duration_s=None, fps=25.0, snippet_frames=16,
                      fg_attention=attention, class_scores={"Diving": np.zeros(5)}, predictions=predictions)
    with pytest.raises(InputError, match=r"fg_attention must be float\[T\]"):
        plot_timeline(tmp_path / "x.png", video_id="v", duration_s=None, fps=25.0, snippet_frames=16,
                      fg_attention=np.zeros((2, 3)), class_scores={}, predictions=[])
    assert not (tmp_path / "x.png").exists()


def test_pack_rows():
    assert _pack_rows([(0, 5), (5, 8), (1, 3), (2, 9), (8, 10)]) == [0, 0, 1, 2, 0]
    assert _pack_rows([]) == []


@pytest.mark.parametrize("norm", ["none", "minmax", "logodds"])
def test_fg_panel_names_the_attention_norm(tmp_path, norm):
    """The fg panel plots what detection thresholds under the model's attention_norm and says which: logodds is
    unbounded (here -4.6 .. 4.6), its axis follows the data and its threshold is logodds_threshold."""
    fg = np.array([0.01, 0.2, 0.5, 0.9, 0.99])
    attention_bf = np.stack([1 - fg, fg], axis=1)  # [T, 2]
    pp = PostprocessConfig(attention_norm=norm, alpha_attention=0.4, logodds_threshold=-1.0)
    curve, threshold = attention_curve(attention_bf, pp)
    fig = plot_timeline(tmp_path / f"{norm}.png", video_id="v", duration_s=None, fps=25.0, snippet_frames=16,
                        fg_attention=curve, class_scores={}, predictions=[], attention_threshold=threshold,
                        attention_norm=norm)
    ax_att = fig.axes[0]
    assert ax_att.patches[0].get_label().endswith(f"(attention_norm: {norm})")
    lo, hi = ax_att.get_ylim()
    if norm == "logodds":
        np.testing.assert_allclose(curve, np.log(fg / (1 - fg)))
        assert threshold == -1.0 and ax_att.get_ylabel() == "fg log-odds"
        assert lo < curve.min() < -4.5 and hi > curve.max() > 4.5  # the curve is inside the axis, not clipped
        assert ax_att.get_legend().get_texts()[1].get_text() == "threshold -1 (logodds_threshold)"
    else:
        assert threshold == pytest.approx(0.6) and (lo, hi) == (pytest.approx(-0.02), pytest.approx(1.02))
        assert 0.0 <= curve.min() and curve.max() <= 1.0
        expected = fg if norm == "none" else (np.log(fg / (1 - fg)) + np.log(99)) / (2 * np.log(99))
        np.testing.assert_allclose(curve, expected)


def test_plot_timeline_rejects_unknown_norm(tmp_path):
    with pytest.raises(InputError, match="attention_norm must be one of"):
        plot_timeline(tmp_path / "x.png", video_id="v", duration_s=None, fps=25.0, snippet_frames=16,
                      fg_attention=np.zeros(3), class_scores={}, predictions=[], attention_norm="softmax")
    assert not (tmp_path / "x.png").exists()
