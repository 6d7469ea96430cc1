"""The results page: one self-contained HTML file (inline CSS and JS, no network) from a :class:`Report`.

Everything taken from a file (ids, labels, paths) travels in one JSON block (``<script type="application/json">``,
with ``<``, ``>`` and ``&`` escaped as ``\\u003c`` ...) and is put on the page by the script as text
(``textContent``), never as markup; the page's Content-Security-Policy allows only its own script (by hash),
no connection, no font and no image from anywhere, and media from the page's own place (the videos).
Curves are quantised to 8 bits over their range and base64-encoded (1.33 bytes a snippet). The per-video parts
(video, timeline, curves) are built when they come near the screen, so a 213-video page opens at once
(``benchmarks/report/page_load.py``).

A video's address is its path relative to the page's folder, percent-encoded (a path that cannot be made
relative, another drive on Windows, is a ``file:`` URI).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import numpy as np

from refineloc_e2e import __version__
from refineloc_e2e.fileio import atomic_write_bytes, package_data
from refineloc_e2e.datasets import Dataset
from refineloc_e2e.report.inputs import Curves, Report, VideoView, gather

ASSETS = package_data("report", "assets")
EAGER_VIDEOS = 8  # up to this many videos every section is built at load; beyond, as it nears the screen
_PLACEHOLDER = re.compile(r"\{\{(TITLE|SCRIPT_HASH|CSS|DATA|SCRIPT)\}\}")
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def quantise(values: np.ndarray, lo: float, hi: float) -> str:
    """float[T] -> base64 of uint8[T], 0 = ``lo`` and 255 = ``hi`` (the page decodes ``lo + (hi - lo) q / 255``)."""
    v = np.asarray(values, np.float64)
    scaled = np.zeros_like(v) if hi <= lo else (np.clip(v, lo, hi) - lo) / (hi - lo)
    q = np.rint(np.nan_to_num(scaled) * 255).astype(np.uint8)  # [T]
    return base64.b64encode(q.tobytes()).decode("ascii")


def _range(arrays: list[np.ndarray], bounded: bool) -> tuple[float, float]:
    lo = min(float(np.nanmin(a)) for a in arrays)
    hi = max(float(np.nanmax(a)) for a in arrays)
    return (min(lo, 0.0), max(hi, 1.0)) if bounded else (lo, hi if hi > lo else lo + 1.0)


def _curves(c: Curves, label_index: dict[str, int]) -> dict:
    out: dict = {"t0": c.start_s, "dt": c.step_s}
    if c.attention is not None:
        lo, hi = _range([c.attention] + ([np.array([c.attention_threshold])] if c.attention_threshold is not None
                                         else []), c.attention_bounded)
        out["att"] = {"name": c.attention_name, "lo": lo, "hi": hi, "q": quantise(c.attention, lo, hi),
                      "thr": c.attention_threshold, "n": len(c.attention)}
    if c.classes:
        probabilities = all(0.0 <= float(np.min(v)) and float(np.max(v)) <= 1.0 for v in c.classes.values())
        lo, hi = _range(list(c.classes.values()), probabilities)
        out["cls"] = {"name": "class probability" if probabilities else "class score", "key": c.classes_key,
                      "lo": lo, "hi": hi, "n": len(next(iter(c.classes.values()))),
                      "q": [[label_index[k], quantise(v, lo, hi)] for k, v in c.classes.items()]}
    return out


def video_address(source: Path, page_dir: Path) -> str:
    """The ``src`` of a video for a page in ``page_dir``: relative and percent-encoded, else a ``file:`` URI."""
    try:
        rel = os.path.relpath(os.path.abspath(source), os.path.abspath(page_dir))
    except ValueError:  # another drive (Windows)
        return Path(os.path.abspath(source)).as_uri()
    return quote(Path(rel).as_posix(), safe="/")


def _video(v: VideoView, label_index: dict[str, int], page_dir: Path) -> dict:
    out: dict = {"id": v.video_id, "dur": v.duration_s,
                 "seg": [[label_index[p["label"]], p["segment"][0], p["segment"][1], p["score"]] for p in v.segments]}
    if v.source is not None:
        out["src"], out["file"] = video_address(v.source, page_dir), str(v.source)
    elif v.expected is not None:
        out["expected"] = v.expected
    if v.curves is not None:
        out["curves"] = _curves(v.curves, label_index)
    if v.truth is not None:
        out["gt"] = [[label_index[t.segment.label], t.segment.start_s, t.segment.end_s, t.best_tiou]
                     for t in v.truth]
    if v.abstained:
        out["abstained"] = True
    return out


def page_data(report: Report, page_dir: Path) -> dict:
    """The page's JSON: labels listed once (segments refer to them by index), one entry per video."""
    labels = sorted({p["label"] for v in report.videos for p in v.segments}
                    | {t.segment.label for v in report.videos for t in v.truth or []}
                    | {c for v in report.videos if v.curves for c in v.curves.classes})
    index = {c: i for i, c in enumerate(labels)}
    scores = [p["score"] for v in report.videos for p in v.segments]
    return {"tool": f"refineloc-e2e {__version__}", "results": report.results_path.name, "model": report.model,
            "no_video": report.no_video, "notes": report.notes, "labels": labels,
            "score_range": [min(scores), max(scores)] if scores else [0.0, 1.0],
            "eager": EAGER_VIDEOS, "videos": [_video(v, index, page_dir) for v in report.videos]}


def _script_json(data: dict) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return "".join(_JSON_ESCAPES.get(ch, ch) for ch in text) if any(ch in text for ch in _JSON_ESCAPES) else text


def render_html(report: Report, page_dir: Path) -> str:
    """The page as one string (see the module docstring)."""
    template = (ASSETS / "page.html").read_text(encoding="utf-8")
    css = (ASSETS / "page.css").read_text(encoding="utf-8")
    script = (ASSETS / "page.js").read_text(encoding="utf-8")
    script_hash = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    parts = {"{{TITLE}}": html.escape(f"{report.results_path.name}: {len(report.videos)} videos"),
             "{{SCRIPT_HASH}}": f"sha256-{script_hash}", "{{CSS}}": css,
             "{{DATA}}": _script_json(page_data(report, page_dir)), "{{SCRIPT}}": script}
    # one pass over the template: text inserted from the files is never searched for placeholders again
    return _PLACEHOLDER.sub(lambda m: parts[m.group(0)], template)


def write_page(report: Report, out_html: str | Path) -> Path:
    """Write the page atomically to ``out_html``; video addresses are relative to its folder."""
    out_html = Path(out_html)
    atomic_write_bytes(out_html, render_html(report, out_html.parent).encode("utf-8"))
    return out_html


def write_report(results_path: str | Path, out_html: str | Path, *, scores_dir: str | Path | None = None,
                 ground_truth: str | None = None, video_root: str | Path | None = None,
                 dataset: Dataset | None = None) -> Report:
    """``refineloc-e2e view``: gather what the page shows (``report.inputs.gather``) and write the page."""
    report = gather(results_path, scores_dir=scores_dir, ground_truth=ground_truth, video_root=video_root,
                    dataset=dataset)
    write_page(report, out_html)
    return report


@contextmanager
def scores_for_page(scores_dir: str | Path | None) -> Iterator[Path]:
    """Where ``detect --html`` saves the scores its page draws: ``--save-scores``'s folder when given (kept),
    else a temporary one (removed afterwards)."""
    if scores_dir is not None:
        yield Path(scores_dir)
        return
    with tempfile.TemporaryDirectory(prefix="refineloc-page-scores-") as tmp:
        yield Path(tmp)
