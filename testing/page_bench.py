"""Headless Chromium for the results page (``tests/report/test_report_browser.py``, ``benchmarks/report/page_load.py``),
and a THUMOS'14-sized results file to load in it.

The browser is the system's Chromium (Debian: ``apt-get install chromium``), driven by Playwright through its
executable path: nothing is downloaded. It starts headless with a fresh profile, with the background services
that would reach out to the network switched off (``CHROMIUM_FLAGS``), and with ``--no-sandbox`` when run as root
(CI), where Chromium's sandbox refuses to start.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from refineloc_e2e.datasets import load_thumos14
from refineloc_e2e.detection.detect import results_json
from refineloc_e2e.fileio import atomic_write_json
from refineloc_e2e.model.postprocess import save_scores
from refineloc_e2e.timebase import I3D_FPS, I3D_SNIPPET_FRAMES, expected_snippets

try:  # the test extra; only the browser tests and the page benchmark need it
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the installed extras
    sync_playwright = None

CHROMIUM_FLAGS = ("--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
CHROMIUM_NAMES = ("chromium", "chromium-browser")  # Debian's and Ubuntu's/Fedora's executable names
BROWSER_HINT = "`apt-get install -y chromium` (Debian/Ubuntu), or set $REFINELOC_CHROMIUM to a Chromium executable"


def find_chromium() -> str | None:
    """$REFINELOC_CHROMIUM, else the first Chromium on $PATH, else None."""
    given = os.environ.get("REFINELOC_CHROMIUM")
    if given:
        return given
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def browser_missing() -> str | None:
    """Why the browser cannot start here (one line), or None when it can."""
    if sync_playwright is None:
        return "no playwright to drive the browser: pip install -e '.[test]' (and a Chromium: " + BROWSER_HINT + ")"
    if find_chromium() is None:
        return "no Chromium on $PATH: " + BROWSER_HINT
    return None


@contextmanager
def chromium(*, file_pixels: bool = False) -> Iterator[Any]:
    """A Playwright browser context on the system Chromium (a fresh profile, removed afterwards).

    ``file_pixels``: let a page opened from disk read the pixels of a video opened from disk through a canvas
    (``--allow-file-access-from-files``; without it Chromium taints the canvas, every ``file:`` URL being its
    own origin). Only the tests that read a shown frame need it; the page itself never reads pixels."""
    reason = browser_missing()
    if reason is not None:
        raise RuntimeError(reason)
    args = list(CHROMIUM_FLAGS) + (["--no-sandbox"] if getattr(os, "geteuid", lambda: 1)() == 0 else [])
    if file_pixels:
        args.append("--allow-file-access-from-files")
    with tempfile.TemporaryDirectory(prefix="refineloc-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(profile, executable_path=find_chromium(), headless=True,
                                                        args=args)
        try:
            yield context
        finally:
            context.close()


def write_thumos_sized_results(folder: str | Path, *, seed: int = 0,
                               predictions_per_instance: int = 3) -> tuple[Path, Path]:
    """A results file and saved scores the size of THUMOS'14 test: its 213 videos with their durations and
    annotated classes (bundled annotations), ``predictions_per_instance`` jittered predictions per annotated
    instance plus one of another class, and per-snippet scores (25 fps, 16-frame snippets) for all 20 classes.
    The numbers are generated; only the sizes are THUMOS'14's. Returns (results JSON, scores folder)."""
    folder = Path(folder)
    ds = load_thumos14()
    rng = np.random.default_rng(seed)
    scores_dir = folder / "scores"
    results, durations = {}, {}
    for ann in ds.subset("test"):
        # video_test_0000270's instances run past its recorded duration (datasets.py): the longer of the two
        duration_s = max([ann.duration_s or 60.0] + [g.end_s for g in ann.segments])
        n = expected_snippets(duration_s, fps=I3D_FPS, snippet_frames=I3D_SNIPPET_FRAMES)
        preds = []
        for g in ann.segments:
            for _ in range(predictions_per_instance):
                start = min(max(0.0, g.start_s + rng.normal(0, 1.0)), duration_s - 0.64)
                preds.append({"label": g.label, "score": float(rng.uniform(0.2, 1.6)),
                              "segment": [start, min(duration_s, max(start + 0.64, g.end_s + rng.normal(0, 1.0)))]})
        other = ds.classes[int(rng.integers(len(ds.classes)))]
        start = float(rng.uniform(0, max(duration_s - 3, 0.1)))
        preds.append({"label": other, "score": float(rng.uniform(0.1, 0.5)),
                      "segment": [start, min(duration_s, start + 3.0)]})
        results[ann.video_id] = sorted(preds, key=lambda p: -p["score"])
        durations[ann.video_id] = duration_s
        logits = rng.normal(0, 1, (n, len(ds.classes))).astype(np.float32)  # [T, C]
        cas = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # [T, C]
        fg = rng.uniform(0, 1, n).astype(np.float32)  # [T]
        save_scores(scores_dir / f"{ann.video_id}.npz", {
            "cas": cas, "attention_bf": np.stack([1 - fg, fg], axis=1), "attention_time": fg / fg.sum(),
            "video_scores": cas.mean(axis=0), "class_names": np.array(ds.classes, dtype=str),
            "fps": np.float64(I3D_FPS), "snippet_frames": np.int64(I3D_SNIPPET_FRAMES),
            "stride_frames": np.int64(I3D_SNIPPET_FRAMES), "duration_s": np.float64(duration_s)})
    out = folder / "results.json"
    atomic_write_json(out, results_json(results, {"tool": "page_bench (generated numbers)",
                                                  "durations_s": durations}))
    return out, scores_dir
