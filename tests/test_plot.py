"""Timeline PNG: rendered headless, valid PNG of the expected size, validation of inputs."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from refineloc_e2e.datasets import Segment
from refineloc_e2e.errors import InputError
from refineloc_e2e.detection.plot import _pack_rows, plot_timeline

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
    assert [p.get_label() for p in ax_att.patches] == ["foreground attention"]
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
