"""The results page without a browser: what `view` and `detect --html` put in it, escaping, addresses, errors.
(`test_report_browser.py` opens it in Chromium.)"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from refineloc_e2e.cli import main
from refineloc_e2e.detection.detect import results_json
from refineloc_e2e.errors import CacheError, InputError
from refineloc_e2e.fileio import atomic_write_json
from refineloc_e2e.model.postprocess import save_scores
from refineloc_e2e.report.inputs import gather
from refineloc_e2e.report.page import quantise, render_html, video_address
from testing.page_bench import browser_missing
from support import TRAIN_FAST as FAST, _layout

HOSTILE = "<img src=x onerror=alert(1)>"


def page_json(html: str) -> dict:
    block = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(block)


def _results(tmp_path: Path, results: dict, external: dict | None = None) -> Path:
    path = tmp_path / "results.json"
    atomic_write_json(path, results_json(results, external or {}))
    return path


def test_everything_from_the_files_is_data_not_markup(tmp_path):
    vid = "</script><script>alert(2)</script>"
    path = _results(tmp_path, {vid: [{"label": HOSTILE, "score": 0.5, "segment": [1.0, 2.0]}]},
                    {"sources": {vid: "</script>.mp4"}})
    html = render_html(gather(path), tmp_path)
    assert html.count("<script") == 2 and html.count("</script>") == 2  # the data block and the page's script
    assert HOSTILE not in html and "<img" not in html
    data = page_json(html)
    assert data["videos"][0]["id"] == vid and data["labels"] == [HOSTILE]
    assert data["videos"][0]["expected"] == str(tmp_path / "</script>.mp4")
    # the Content-Security-Policy lets only the page's own script run (by its hash): no inline handler, no URL
    script = re.search(r"<script>(.*)</script>", html, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html).group(1)
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # no CDN, no external font or script


def test_video_address_is_relative_and_percent_encoded(tmp_path):
    clip = tmp_path / "videos" / "a b#c%d 跳.mp4"
    assert video_address(clip, tmp_path / "pages") == "../videos/a%20b%23c%25d%20%E8%B7%B3.mp4"
    assert video_address(clip, tmp_path / "videos") == "a%20b%23c%25d%20%E8%B7%B3.mp4"
    assert video_address(tmp_path / "javascript:alert(1).mp4", tmp_path) == "javascript%3Aalert%281%29.mp4"


def test_sources_recorded_relative_or_found_under_video_root(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "v").mkdir()
    (tmp_path / "run" / "here.mp4").write_bytes(b"x")
    (tmp_path / "v" / "moved.mp4").write_bytes(b"x")
    (tmp_path / "v" / "Ünï.webm").write_bytes(b"x")
    seg = [{"label": "A", "score": 1.0, "segment": [0.0, 1.0]}]
    path = _results(tmp_path / "run", {"here": seg, "moved": seg, "Ünï": seg, "lost": seg},
                    {"sources": {"here": "here.mp4", "moved": "/elsewhere/moved.mp4", "lost": "/elsewhere/lost.mp4"}})
    by_id = {v.video_id: v for v in gather(path).videos}
    assert by_id["here"].source == tmp_path / "run" / "here.mp4"
    assert by_id["moved"].source is None and by_id["moved"].expected == "/elsewhere/moved.mp4"
    by_id = {v.video_id: v for v in gather(path, video_root=tmp_path / "v").videos}
    assert by_id["moved"].source == tmp_path / "v" / "moved.mp4"  # by the recorded file name
    assert by_id["Ünï"].source == tmp_path / "v" / "Ünï.webm"  # by its id
    assert by_id["lost"].expected == f"/elsewhere/lost.mp4 or {tmp_path / 'v'}/lost.mp4"
    with pytest.raises(InputError, match=r"nowhere: video folder not found \(--video-root\)"):
        gather(path, video_root=tmp_path / "nowhere")


def test_kinetics_style_results_empty_lists_and_extra_keys(tmp_path):
    path = _results(tmp_path, {"bikes": [], "jump": [{"label": "high jump", "score": 0.8, "segment": [8.9, 14.7]}]},
                    {"model": {"name": "kinetics400", "classes": "kinetics400"}, "abstained": ["bikes"],
                     "postprocess": {"smoothing_snippets": 4}, "anything": {"new": 1}})
    names = np.array(["abseiling", "high jump", "javelin throw"], dtype=str)
    probs = np.zeros((30, 3), np.float32)  # [T, C]
    probs[14:23, 1] = 0.9
    base = {"class_names": names, "fps": np.float64(25.0), "snippet_frames": np.int64(16),
            "duration_s": np.float64(19.2)}
    (tmp_path / "scores").mkdir()
    np.savez(tmp_path / "scores" / "jump.npz", class_probs=probs, **base)
    np.savez(tmp_path / "scores" / "bikes.npz", class_probs=probs[:, [0, 2, 1]], **base)
    report = gather(path, scores_dir=tmp_path / "scores")
    assert report.model == "kinetics400"
    bikes, jump = report.videos
    assert bikes.abstained and bikes.segments == [] and not jump.abstained
    assert jump.curves.attention is None and list(jump.curves.classes) == ["high jump"]
    assert jump.curves.classes_key == "class_probs" and jump.duration_s == pytest.approx(19.2)
    assert list(bikes.curves.classes)[0] == "javelin throw"  # no label: the classes with the highest peak
    assert any("not RefineLoc's" in n for n in report.notes)  # another detector's post-processing settings
    data = page_json(render_html(report, tmp_path))
    assert data["videos"][0]["seg"] == [] and data["videos"][0]["abstained"] is True
    assert data["videos"][1]["curves"]["cls"]["name"] == "class probability"


def test_curves_are_quantised_to_8_bits():
    v = np.array([0.0, 0.25, 1.0, 2.0, np.nan])
    q = np.frombuffer(base64.b64decode(quantise(v, 0.0, 1.0)), np.uint8)
    assert q.tolist() == [0, 64, 255, 255, 0]


def test_truth_lane_gets_the_best_tiou_of_its_label(tmp_path):
    path = _results(tmp_path, {"v1": [{"label": "A", "score": 0.9, "segment": [1.0, 3.0]},
                                      {"label": "A", "score": 0.5, "segment": [2.0, 4.0]},
                                      {"label": "B", "score": 0.7, "segment": [10.0, 12.0]}],
                               "v2": []})
    truth = {"database": {"v1": {"subset": "validation", "duration": 20.0,
                                 "annotations": [{"label": "A", "segment": [2.0, 4.0]},
                                                 {"label": "C", "segment": [10.0, 12.0]}]}}}
    (tmp_path / "gt.json").write_text(json.dumps(truth))
    report = gather(path, ground_truth=str(tmp_path / "gt.json"))
    v1, v2 = report.videos
    assert [(t.segment.label, t.best_tiou) for t in v1.truth] == [("A", 1.0), ("C", None)]
    assert v1.duration_s == 20.0 and v2.truth is None
    assert report.notes[-1] == "ground truth: gt, 1 of the 2 videos annotated"


def test_view_errors_name_the_file(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["view", str(tmp_path / "none.json"), "-o", str(tmp_path / "r.html")])
    assert (r.exit_code, r.stderr) == (1, f"error: {tmp_path / 'none.json'}: predictions file not found\n")
    path = _results(tmp_path, {"v": [{"label": "A", "score": 1.0, "segment": [0.0, 1.0]}]})
    (tmp_path / "scores").mkdir()
    (tmp_path / "scores" / "v.npz").write_bytes(b"not a zip")
    r = runner.invoke(main, ["view", str(path), "--scores", str(tmp_path / "scores"), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 1 and r.stderr.startswith(f"error: {tmp_path / 'scores' / 'v.npz'}: ")
    np.savez(tmp_path / "scores" / "v.npz", cas=np.zeros((3, 1)))
    with pytest.raises(CacheError, match=r"v\.npz: saved scores lack their time base"):
        gather(path, scores_dir=tmp_path / "scores")
    assert not (tmp_path / "r.html").exists()  # nothing half-written
    r = runner.invoke(main, ["view", str(path), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0 and r.stderr == f"wrote {tmp_path / 'r.html'}: 1 videos (0 with their video file), " \
                                            f"1 segments; open it in a browser\n"


def test_detect_features_html_shows_timelines_without_video(tmp_path):
    """detect --features ... --html: the curves come from scores saved for the page in a temporary folder (gone
    afterwards); the page says the results have no video."""
    ann, feats = _layout(tmp_path)
    runner = CliRunner()
    temps = lambda: set(Path(tempfile.gettempdir()).glob("refineloc-page-scores-*"))  # noqa: E731
    before = temps()
    r = runner.invoke(main, ["train", "--annotations", str(ann), "--features", str(feats),
                             "--run-dir", str(tmp_path / "run"), *FAST])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["detect", "--features", str(feats), "--model", str(tmp_path / "run" / "model.pt"),
                             "-o", str(tmp_path / "p.json"), "--html", str(tmp_path / "p.html"),
                             "--ground-truth", str(ann)])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["external_data"]["durations_s"]["vid00"] == pytest.approx(30 * 16 / 25)
    data = page_json((tmp_path / "p.html").read_text(encoding="utf-8"))
    assert data["no_video"].startswith(f"these results were computed from features in {feats}, with no video")
    assert [v["id"] for v in data["videos"]] == sorted(doc["results"])
    assert all(v["curves"]["att"]["n"] == 30 and v["curves"]["cls"]["q"] for v in data["videos"])
    assert sum(len(v["seg"]) for v in data["videos"]) == sum(map(len, doc["results"].values()))
    assert all(len(v["gt"]) == 1 for v in data["videos"])
    assert temps() <= before
    assert f"wrote {tmp_path / 'p.html'}: 12 videos (0 with their video file)" in r.stderr
    # re-scored from saved scores with the model's post-processing: the same curves, and the page says where the
    # results came from (the page goes to a folder that does not exist yet)
    r = runner.invoke(main, ["detect", "--features", str(feats), "--model", str(tmp_path / "run" / "model.pt"),
                             "-o", str(tmp_path / "q.json"), "--save-scores", str(tmp_path / "sc")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["detect", "--from-scores", str(tmp_path / "sc"), "-o", str(tmp_path / "f.json"),
                             "--model", str(tmp_path / "run" / "model.pt"), "--html", str(tmp_path / "out" / "f.html")])
    assert r.exit_code == 0, r.output
    again = page_json((tmp_path / "out" / "f.html").read_text(encoding="utf-8"))
    assert again["no_video"].startswith(f"these results were computed from scores saved in {tmp_path / 'sc'}")
    assert [v["curves"] for v in again["videos"]] == [v["curves"] for v in data["videos"]]


def test_browser_missing_says_how_to_get_one(monkeypatch):
    monkeypatch.delenv("REFINELOC_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", "")
    reason = browser_missing()
    assert reason is not None and "\n" not in reason and "apt-get install -y chromium" in reason
