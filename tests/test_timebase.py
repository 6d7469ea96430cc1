import numpy as np
import pytest

from refineloc_e2e.timebase import seconds_to_snippet, snippet_to_seconds


def test_i3d_convention_16_frames_at_25_fps():
    assert snippet_to_seconds(1, fps=25.0, snippet_frames=16) == pytest.approx(0.64)
    assert snippet_to_seconds(10, fps=25.0, snippet_frames=16) == pytest.approx(6.4)
    # not the native 30 fps (sujoyp/wtalc-pytorch issue 9)
    assert snippet_to_seconds(10, fps=25.0, snippet_frames=16) != pytest.approx(10 * 16 / 30)


@pytest.mark.parametrize("fps,snippet_frames", [(25.0, 16), (25.0, 15), (30.0, 16), (10.0, 8), (29.97, 16)])
def test_round_trip_property(fps, snippet_frames):
    rng = np.random.default_rng(0)
    idx = rng.uniform(0, 5000, size=1000)
    back = seconds_to_snippet(snippet_to_seconds(idx, fps=fps, snippet_frames=snippet_frames),
                              fps=fps, snippet_frames=snippet_frames)
    np.testing.assert_allclose(back, idx, rtol=1e-12, atol=1e-9)
    t = rng.uniform(0, 3600, size=1000)
    np.testing.assert_allclose(snippet_to_seconds(seconds_to_snippet(t, fps=fps, snippet_frames=snippet_frames),
                                                  fps=fps, snippet_frames=snippet_frames), t, rtol=1e-12, atol=1e-9)


def test_integer_indices_map_to_snippet_starts():
    starts = snippet_to_seconds(np.arange(5), fps=25.0, snippet_frames=16)
    np.testing.assert_allclose(np.diff(starts), 0.64)
