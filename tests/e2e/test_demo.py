"""The README's main job (``make demo``) at a smaller size: the same code path, end to end."""

import json

import pytest
from click.testing import CliRunner

from refineloc_e2e.cli import main
from refineloc_e2e.tools.demo import SAMPLES, run_demo


@pytest.mark.real
@pytest.mark.slow
def test_tiny_demo_runs_every_stage(tmp_path, real_weights):
    lines = []
    out = run_demo(tmp_path / "demo", size="tiny", progress=False, echo=lines.append)
    text = "\n".join(lines)
    # plain about what is real and what is generated
    assert "REAL: Kinetics-400 RGB I3D weights" in text and "GENERATED:" in text
    # the real weights on the real clip
    first = next(i for i, line in enumerate(lines) if "[1/7]" in line)
    assert lines[first + 1].split()[-2:] == ["playing", "cricket"]
    seg = json.loads((tmp_path / "demo" / "segments.json").read_text())
    assert set(seg) == {"version", "results", "external_data"}
    assert "bikes" in seg["results"] and len(seg["results"]) == 3  # 2 generated test videos + the real clip
    for preds in seg["results"].values():
        for p in preds:
            assert 0.0 <= p["segment"][0] < p["segment"][1] and isinstance(p["label"], str)
    assert seg["external_data"]["features"]["backbone"]["flow"]["init"].startswith("cross-modality-from-rgb")
    assert len(out["plots"]) == 3 and all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in out["plots"])
    assert "mAP(%)" in text
    metrics = json.loads((tmp_path / "demo" / "run" / "metrics.json").read_text())
    assert len(metrics["iterations"]) == 2
    # the results page, and the built-in Kinetics-400 detector on the real clips (no training)
    page = (tmp_path / "demo" / "report.html").read_text(encoding="utf-8")
    assert all(vid in page for vid in seg["results"]) and "bikes.mp4" in page  # each video, with its source
    assert out["kinetics"]["bikes"] == [] and "bikes: nothing confident: [] (no invented action)" in text
    assert out["kinetics"]["v_CricketShot_g04_c01_rgb"][0]["label"] == "playing cricket"

    # the CLI's detect takes the model's own extraction settings: the demo's cached features are reused
    r = CliRunner().invoke(main, ["detect", str(SAMPLES / "bikes.mp4"), "--model", str(tmp_path / "demo" / "run" / "model.pt"),
                                  "--cache", str(tmp_path / "demo" / "features"), "-o", str(tmp_path / "cli.json"), "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "cli.json").read_text())["results"]["bikes"] == seg["results"]["bikes"]
