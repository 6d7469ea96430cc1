import numpy as np
import pytest

from refineloc_e2e.timebase import expected_snippets, seconds_to_snippet, snippet_to_seconds, time_base, with_stride


def test_i3d_convention_16_frames_at_25_fps():
    assert snippet_to_seconds(1, fps=25.0, snippet_frames=16) == pytest.approx(0.64)
    assert snippet_to_seconds(10, fps=25.0, snippet_frames=16) == pytest.approx(6.4)
    # not the native 30 fps (sujoyp/wtalc-pytorch issue 9)
    assert snippet_to_seconds(10, fps=25.0, snippet_frames=16) != pytest.approx(10 * 16 / 30)


@pytest.mark.parametrize("fps,snippet_frames,stride_frames", [(25.0, 16, None), (25.0, 15, None), (30.0, 16, None),
                                                              (10.0, 8, None), (29.97, 16, None), (25.0, 16, 16),
                                                              (30.0, 16, 4), (29.97, 16, 8), (25.0, 64, 16)])
def test_round_trip_property(fps, snippet_frames, stride_frames):
    tb = {"fps": fps, "snippet_frames": snippet_frames, "stride_frames": stride_frames}
    rng = np.random.default_rng(0)
    idx = rng.uniform(0, 5000, size=1000)
    np.testing.assert_allclose(seconds_to_snippet(snippet_to_seconds(idx, **tb), **tb), idx, rtol=1e-12, atol=1e-9)
    t = rng.uniform(0, 3600, size=1000)
    np.testing.assert_allclose(snippet_to_seconds(seconds_to_snippet(t, **tb), **tb), t, rtol=1e-12, atol=1e-9)


def test_default_stride_is_the_window():
    """25 fps / 16 / 16 is the old, non-overlapping convention: giving the stride changes nothing."""
    idx = np.arange(100) * 0.5
    np.testing.assert_array_equal(snippet_to_seconds(idx, fps=25.0, snippet_frames=16, stride_frames=16),
                                  snippet_to_seconds(idx, fps=25.0, snippet_frames=16))
    assert time_base({"fps": 25, "snippet_frames": 16}) == {"fps": 25.0, "snippet_frames": 16, "stride_frames": 16}
    assert with_stride({"snippet_frames": 16})["stride_frames"] == 16
    assert with_stride({"snippet_frames": 16, "stride_frames": 4})["stride_frames"] == 4


def test_overlapping_windows_are_centred():
    """ActionFormer's THUMOS'14 I3D: 16-frame windows every 4 frames at 30 fps. Snippets are 4/30 s apart and
    snippet t's cell is centred on its window: centre (4 t + 8) / 30 s, as ActionFormer converts it."""
    tb = {"fps": 30.0, "snippet_frames": 16, "stride_frames": 4}
    np.testing.assert_allclose(np.diff(snippet_to_seconds(np.arange(5), **tb)), 4 / 30)
    centres = snippet_to_seconds(np.arange(5) + 0.5, **tb)
    np.testing.assert_allclose(centres, (4 * np.arange(5) + 8) / 30)
    assert snippet_to_seconds(0, **tb) == pytest.approx(6 / 30)  # first cell starts half a stride before 8/30


@pytest.mark.parametrize("duration_s,tb,expected", [
    (10.0, {"fps": 25.0, "snippet_frames": 16}, 16),  # 250 frames -> ceil(250 / 16)
    (0.01, {"fps": 25.0, "snippet_frames": 16}, 1),
    (10.0, {"fps": 30.0, "snippet_frames": 16, "stride_frames": 4}, 75),
])
def test_expected_snippets(duration_s, tb, expected):
    assert expected_snippets(duration_s, **tb) == expected


def test_integer_indices_map_to_snippet_starts():
    starts = snippet_to_seconds(np.arange(5), fps=25.0, snippet_frames=16)
    np.testing.assert_allclose(np.diff(starts), 0.64)


def test_consumers_take_the_stride():
    """Segment seconds and strong-label truth use the same stride-aware time base, and agree."""
    from refineloc_e2e.datasets import Segment
    from refineloc_e2e.training.pseudo import truth_labels
    from refineloc_e2e.model.postprocess import SnippetSegment, segments_to_results

    tb = {"fps": 30.0, "snippet_frames": 16, "stride_frames": 4}
    (res,) = segments_to_results([SnippetSegment(0, 10, 20, 0.9)], ["A"], n_snippets=100, **tb)
    assert res["segment"] == pytest.approx([(10 * 4 + 6) / 30, (20 * 4 + 6) / 30])
    truth = truth_labels([Segment(*res["segment"], "A")], 100, **tb)
    assert np.flatnonzero(truth).tolist() == list(range(10, 20))
    # the same snippets with the non-overlapping default would land elsewhere
    (old,) = segments_to_results([SnippetSegment(0, 10, 20, 0.9)], ["A"], n_snippets=100, fps=30.0, snippet_frames=16)
    assert old["segment"] == pytest.approx([160 / 30, 320 / 30])
