"""The results page in a real browser: headless Chromium from the system's packages, driven by Playwright.

The page is opened from disk, as a user opens it. The video is a generated VP9 WebM with a keyframe on every
frame and the frame index painted into the pixels as 8 black/white stripes, so that the frame the browser
shows after a seek is read back through a canvas (not taken from ``currentTime``). Without a browser these
tests fail with one line saying how to get one (``make test`` installs Chromium where it can); only an explicit
``REFINELOC_SKIP_BROWSER=1`` deselects them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from refineloc_e2e.cli import main
from refineloc_e2e.detection.detect import results_json
from refineloc_e2e.fileio import atomic_write_json
from refineloc_e2e.model.postprocess import save_scores
from refineloc_e2e.report.page import write_report
from testing.page_bench import browser_missing, chromium, write_thumos_sized_results
from support import SMALL_EXTRACT, TRAIN_FAST as FAST, _fake_real_weights

FPS = 25
N_FRAMES = 100  # 4 s
STRIPES = 8  # bits of the painted frame index, most significant left
HOSTILE = "<img src=x onerror=alert(1)>"
CLIP_ID = "跳高 clip #1"  # Unicode, a space and a '#': the page's address for it must be percent-encoded


def paint(i: int, w: int = 64, h: int = 48) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    for b in range(STRIPES):
        if (i >> (STRIPES - 1 - b)) & 1:
            img[:, b * w // STRIPES:(b + 1) * w // STRIPES] = 255
    return img


def write_painted_video(path: Path, codec: str, options: dict[str, str]) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=FPS)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.options = options
        for i in range(N_FRAMES):
            for p in s.encode(av.VideoFrame.from_ndarray(paint(i), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


# the shown frame, read through a canvas: one pixel in the middle of each stripe
READ_FRAME = """(video) => {
  const c = document.createElement('canvas'); c.width = video.videoWidth; c.height = video.videoHeight;
  const g = c.getContext('2d'); g.drawImage(video, 0, 0);
  let n = 0;
  for (let b = 0; b < %d; b++) {
    const px = g.getImageData(Math.floor((b + 0.5) * c.width / %d), c.height >> 1, 1, 1).data;
    n = 2 * n + (px[0] > 127 ? 1 : 0);
  }
  return n;
}""" % (STRIPES, STRIPES)

SEGMENTS = [  # (label, start_s, end_s, score): starts inside frames 30, 52 and 80
    ("HighJump", 1.21, 1.95, 0.91),
    (HOSTILE, 2.09, 2.80, 0.40),
    ("HighJump", 3.21, 3.90, 0.66),
]


# an explicit choice of the user's, never a silent one: without it a missing browser fails the tests
pytestmark = pytest.mark.skipif(os.environ.get("REFINELOC_SKIP_BROWSER") == "1",
                                reason="REFINELOC_SKIP_BROWSER=1: the results page's browser tests were deselected")

@pytest.fixture(scope="module")
def browser():
    reason = browser_missing()
    if reason is not None:
        pytest.fail(f"the results page's browser tests need a browser: {reason} (or REFINELOC_SKIP_BROWSER=1 to "
                    f"deselect them)")
    with chromium(file_pixels=True) as context:
        yield context


@pytest.fixture(scope="module")
def page_files(tmp_path_factory):
    """videos/<clip>.webm and .mp4, results.json (3 videos, one of them empty, with a Kinetics-style
    external_data), saved scores of two kinds, a ground-truth file; the page goes to pages/report.html."""
    root = tmp_path_factory.mktemp("page")
    (root / "videos").mkdir()
    webm = write_painted_video(root / "videos" / f"{CLIP_ID}.webm", "libvpx-vp9",
                               {"g": "1", "lossless": "1", "deadline": "realtime", "cpu-used": "8"})
    results = {CLIP_ID: [{"label": lab, "score": sc, "segment": [a, b]} for lab, a, b, sc in SEGMENTS],
               "no video here": [{"label": "Diving", "score": 0.5, "segment": [0.5, 1.5]},
                                 {"label": "Diving", "score": 0.3, "segment": [1.0, 2.5]}],
               "abstained": []}
    external = {"sources": {CLIP_ID: str(webm), "no video here": str(root / "videos" / "gone.mp4")},
                "durations_s": {CLIP_ID: N_FRAMES / FPS}, "abstained": ["abstained"],
                "model": {"name": "kinetics400", "classes": "kinetics400", "weights": "i3d-kinetics400-rgb"},
                "something_new": {"nested": [1, 2]}}
    atomic_write_json(root / "results.json", results_json(results, external))
    names = np.array(["Diving", "HighJump", HOSTILE], dtype=str)
    t = 7
    cas = np.full((t, 3), 0.2, np.float32)
    cas[2:5, 1] = 0.9
    fg = np.linspace(0.1, 0.9, t).astype(np.float32)
    base = {"class_names": names, "fps": np.float64(25.0), "snippet_frames": np.int64(16),
            "stride_frames": np.int64(16), "duration_s": np.float64(N_FRAMES / FPS)}
    save_scores(root / "scores" / f"{CLIP_ID}.npz", {**base, "cas": cas, "attention_bf": np.stack([1 - fg, fg], 1),
                                                    "attention_time": fg / fg.sum(), "video_scores": cas.mean(0)})
    # a detector that saves class probabilities and no attention (the Kinetics-400 one)
    np.savez(root / "scores" / "no video here.npz", class_probs=cas, **base)
    truth = {"database": {CLIP_ID: {"subset": "validation", "duration": N_FRAMES / FPS,
                                    "annotations": [{"label": "HighJump", "segment": [1.21, 2.0]},
                                                    {"label": "Diving", "segment": [3.0, 3.5]}]}}}
    (root / "truth.json").write_text(json.dumps(truth), encoding="utf-8")
    out = root / "pages" / "report.html"
    out.parent.mkdir()
    write_report(root / "results.json", out, scores_dir=root / "scores", ground_truth=str(root / "truth.json"))
    return root, out


@pytest.fixture(scope="module")
def page(browser, page_files):
    """The page opened from disk; every request it makes and every dialog it opens is recorded."""
    root, out = page_files
    p = browser.new_page()
    p.set_default_timeout(10_000)  # a missing element fails in 10 s, not Playwright's 30
    p.set_viewport_size({"width": 1280, "height": 900})
    p.requests, p.dialogs, p.errors = [], [], []
    p.on("request", lambda r: p.requests.append(r.url))
    p.on("dialog", lambda d: (p.dialogs.append(d.message), d.dismiss()))
    p.on("pageerror", lambda e: p.errors.append(str(e)))
    p.goto(out.as_uri())
    p.wait_for_selector("html[data-ready='1']")
    yield p
    p.close()


def _clip(page):
    return page.locator("section.video:has(video)")


def _section(page, vid: str):
    return page.locator("section.video", has=page.locator("h2 bdi", has_text=vid))


def _clip_video(page):
    video = _clip(page).locator("video")
    state = video.evaluate("""(v) => new Promise((done) => {
      const report = () => done({error: v.error ? v.error.code : null, ready: v.readyState});
      if (v.readyState >= 1 || v.error) report();
      else { v.addEventListener('loadedmetadata', report, {once: true}); v.addEventListener('error', report, {once: true}); }
    })""")
    assert state["error"] is None, f"the browser could not load the clip: MediaError {state['error']}"
    return video


def _seeked_frame(video, action) -> tuple[float, int]:
    """Run ``action`` (which seeks the video), wait for ``seeked``, and read the frame shown then."""
    video.evaluate("(v) => { v.__seeked = new Promise((r) => v.addEventListener('seeked', r, {once: true})); }")
    action()
    video.evaluate("(v) => v.__seeked")
    return video.evaluate("(v) => v.currentTime"), video.evaluate(READ_FRAME)


def test_segment_bars_match_the_results_json(page, page_files):
    results = json.loads((page_files[0] / "results.json").read_text(encoding="utf-8"))["results"]
    sections = page.locator("section.video")
    assert sections.count() == len(results) == page.locator("#index tbody tr").count()
    for k, vid in enumerate(results):  # the page keeps the file's order
        assert sections.nth(k).locator("h2 bdi").text_content() == vid  # ids shown as they are
        assert sections.nth(k).locator(".seg.pred").count() == len(results[vid])
    assert page.locator(".seg.pred").count() == sum(map(len, results.values())) == 5
    assert page.locator(".seg.gt").count() == 2
    assert "the detector abstained" in _section(page, "abstained").text_content()
    assert ("Video not found: expected at " + str(page_files[0] / "videos" / "gone.mp4")
            in _section(page, "no video here").text_content())
    assert page.errors == []


def _bar(page, start_s):
    return _clip(page).locator(f".seg.pred[data-start='{start_s}']")


def test_click_seeks_to_the_segment_start_and_plays(page):
    video = _clip_video(page)
    assert video.evaluate("(v) => v.canPlayType('video/webm; codecs=\"vp9\"')") != ""
    video.evaluate("(v) => { v.__plays = 0; v.play = () => { v.__plays++; return Promise.resolve(); }; }")
    for _, start_s, _, _ in SEGMENTS:
        t, frame = _seeked_frame(video, lambda: _bar(page, start_s).click())
        assert abs(t - start_s) < 1e-3
        assert abs(frame - int(start_s * FPS)) <= 1, (start_s, frame)
    assert video.evaluate("(v) => v.__plays") == len(SEGMENTS)
    # and it really plays: the stub removed, a click starts playback from the segment
    video.evaluate("(v) => { delete v.play; v.muted = true; "
                   "v.__playing = new Promise((r) => v.addEventListener('playing', r, {once: true})); }")
    _bar(page, SEGMENTS[0][1]).click()
    video.evaluate("(v) => v.__playing")
    assert video.evaluate("(v) => !v.paused && v.currentTime >= 1.2")
    video.evaluate("(v) => v.pause()")


def test_keys_n_and_p_step_through_segments(page):
    video = _clip_video(page)
    video.evaluate("(v) => { v.play = () => Promise.resolve(); }")
    starts = sorted(s[1] for s in SEGMENTS)
    _seeked_frame(video, lambda: _bar(page, starts[0]).click())
    t, frame = _seeked_frame(video, lambda: page.keyboard.press("n"))
    assert abs(t - starts[1]) < 1e-3 and abs(frame - int(starts[1] * FPS)) <= 1
    t, _ = _seeked_frame(video, lambda: page.keyboard.press("n"))
    assert abs(t - starts[2]) < 1e-3
    t, _ = _seeked_frame(video, lambda: page.keyboard.press("p"))
    assert abs(t - starts[1]) < 1e-3
    assert _bar(page, starts[1]).get_attribute("class").split() == ["seg", "pred", "selected"]


def test_hostile_label_is_text(page):
    lane = _clip(page).locator(".row.lane .name", has_text="<img")
    assert lane.text_content() == HOSTILE
    assert page.locator("img").count() == 0  # no element was made of it
    _bar(page, SEGMENTS[1][1]).hover()
    assert page.locator("#tip").text_content().splitlines()[0] == HOSTILE
    assert page.dialogs == [] and page.errors == []


def test_truth_lane_and_curves(page):
    first = _clip(page)
    tips = []
    for k in range(2):
        first.locator(".seg.gt").nth(k).hover()
        tips.append(page.locator("#tip").text_content())
    # HighJump [1.21, 2.0] against the predicted [1.21, 1.95]: tIoU 0.74 / 0.79; Diving: none predicted there
    assert tips[0].splitlines()[-1] == f"best tIoU with a predicted HighJump: {0.74 / 0.79:.3f}"
    assert tips[1].splitlines()[-1] == "no predicted Diving in this video"
    assert [first.locator(".row.curve .name").nth(k).text_content() for k in range(2)] == \
        ["fg attention", "class probability"]
    second = _section(page, "no video here")  # class probabilities only (no attention saved)
    assert second.locator(".row.curve .name").all_text_contents() == ["class probability"]


def test_h264_mp4_plays(page, page_files):
    """Users' clips are H.264 in MP4: Debian's Chromium plays them (its FFmpeg has the H.264 decoder)."""
    assert page.evaluate("document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.42E01E\"')") != "", \
        "this Chromium cannot play H.264 MP4 (a build without proprietary codecs): users' clips would not play"
    mp4 = write_painted_video(page_files[0] / "videos" / "clip.mp4", "libx264",
                              {"g": "1", "crf": "12", "profile": "baseline", "preset": "ultrafast"})
    video = _clip(page).locator("video")
    video.evaluate("(v, src) => new Promise((done, fail) => { v.addEventListener('loadeddata', done, {once: true});"
                   " v.addEventListener('error', () => fail('MediaError ' + v.error.code), {once: true}); v.src = src; })",
                   "../videos/clip.mp4")
    t, frame = _seeked_frame(video, lambda: video.evaluate("(v) => { v.currentTime = 2.5; }"))
    assert abs(frame - int(2.5 * FPS)) <= 1
    assert mp4.is_file()


def test_no_network_request(page, page_files):
    page.wait_for_timeout(200)
    root = page_files[0]
    allowed = {page_files[1].as_uri()} | {p.as_uri() for p in (root / "videos").iterdir()}
    assert page.requests and set(page.requests) <= allowed, page.requests


def test_index_of_213_videos_builds_sections_on_demand(browser, tmp_path):
    results_path, scores = write_thumos_sized_results(tmp_path, predictions_per_instance=1)
    out = tmp_path / "report.html"
    write_report(results_path, out, scores_dir=scores)
    results = json.loads(results_path.read_text(encoding="utf-8"))["results"]
    p = browser.new_page()
    try:
        p.goto(out.as_uri())
        p.wait_for_selector("html[data-ready='1']")
        assert p.locator("#index tbody tr").count() == 213
        assert "with no video: the timelines alone are shown" in p.locator("#notes").text_content()
        assert p.locator(".seg.pred").count() < sum(map(len, results.values()))  # far sections not built yet
        last = list(results)[-1]
        p.locator("#index tbody tr").last.click()
        section = p.locator("section.video").last
        assert section.locator("h2 bdi").text_content() == last
        assert section.locator(".seg.pred").count() == len(results[last])
        p.fill("#filter", "video_test_0000004")
        assert p.locator("#index tbody tr:not([hidden])").count() == 1
        p.screenshot(path=str(tmp_path / "report.png"))  # kept by pytest's tmp_path for a look
        assert (tmp_path / "report.png").stat().st_size > 10_000
    finally:
        p.close()


@pytest.mark.slow
def test_detect_clip_html_plays_the_clip(request, tmp_path, monkeypatch, make_video, one_thread):
    """`detect clip.mp4 --html r.html` after extract and train (I3D with small random weights under the real
    weights' name, as in test_cli_pipeline): the page plays the H.264 clip beside its segments and curves."""

    _fake_real_weights(monkeypatch)
    monkeypatch.chdir(tmp_path)
    Path("videos").mkdir()
    db = {}
    for i in range(4):
        make_video(Path("videos") / f"v{i}.mp4", n=40, size=(80, 64), seed=i)
        db[f"v{i}"] = {"subset": "training", "duration": 1.6, "annotations": [{"label": f"C{i % 2}", "segment": [0.3, 1.2]}]}
    make_video("clip.mp4", n=48, size=(80, 64), seed=9)
    Path("ann.json").write_text(json.dumps({"taxonomy": ["C0", "C1"], "database": db}))
    runner = CliRunner()
    r = runner.invoke(main, ["extract", "videos", "-o", "feats", *SMALL_EXTRACT])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["train", "--annotations", "ann.json", "--features", "feats", "--run-dir", "run", *FAST,
                             "--set", "head.feature_dim=1024", "--set", "guard.enabled=false"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["detect", "clip.mp4", "--model", "run/model.pt", "--cache", "cache", "-q", "-o", "s.json",
                             "--html", "r.html"])
    assert r.exit_code == 0, r.output
    external = json.loads(Path("s.json").read_text())["external_data"]
    assert external["sources"] == {"clip": str(tmp_path / "clip.mp4")}
    assert external["durations_s"]["clip"] == pytest.approx(48 / 25)
    n_segments = len(json.loads(Path("s.json").read_text())["results"]["clip"])
    browser = request.getfixturevalue("browser")  # the page's file is checked above with or without a browser
    p = browser.new_page()
    try:
        p.set_default_timeout(10_000)
        p.goto((tmp_path / "r.html").as_uri())
        p.wait_for_selector("html[data-ready='1']")
        assert p.locator("video").get_attribute("src") == "clip.mp4"
        _clip_video(p)
        assert p.locator(".seg.pred").count() == n_segments
        # the demo config's attention_norm (minmax), as detect --plot names it
        assert p.locator(".row.curve .name").all_text_contents() == ["fg attention (min-max)", "class probability"]
    finally:
        p.close()
