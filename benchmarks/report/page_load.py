"""The results page at THUMOS'14 test size: file size, and load time in headless Chromium; targets < 5 MB and
interactive in < 2 s.

Writes ``testing.page_bench``'s generated results for the 213 THUMOS'14 test videos (their real durations and
annotated classes, ``--per-instance`` predictions per annotated instance plus one false one per video, scores for
all 20 classes at 25 fps / 16-frame snippets), with the bundled THUMOS'14 test annotations as ground truth, then
``refineloc-e2e view``'s page (``report.page.write_report``). Each load opens the page from disk in a fresh tab of
the system's Chromium and reads, from the page's own clock (ms since navigation start):

- ``interactive``: the ``report-ready`` mark, set when the index and every handler are in place;
- ``load``: the ``load`` event's end;

then the time to jump to the last video from the index (its section built on the click). Medians of
``--repeats`` loads; also the time to write the page. ``--screenshot PNG`` saves the first screen. ``--eager``
also measures the page with every section built at load (``report.page.EAGER_VIDEOS`` raised above 213), the
figure that the lazy building avoids.

    python -m benchmarks.report.page_load --out /tmp/page_load --per-instance 3 10
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from refineloc_e2e.report import page as page_module
from refineloc_e2e.report.page import write_report
from testing.page_bench import chromium, write_thumos_sized_results

TARGET_BYTES = 5_000_000
TARGET_INTERACTIVE_MS = 2000.0


def measure(context, page_path: Path, repeats: int, screenshot: Path | None) -> dict[str, float]:
    interactive, loaded, jump = [], [], []
    for k in range(repeats):
        page = context.new_page()
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.goto(page_path.as_uri(), wait_until="load")
        page.wait_for_selector("html[data-ready='1']")
        interactive.append(page.evaluate("performance.getEntriesByName('report-ready')[0].startTime"))
        loaded.append(page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
        if k == 0 and screenshot is not None:
            page.screenshot(path=str(screenshot))
        t0 = time.perf_counter()
        page.locator("#index tbody tr").last.click()
        page.locator("section.video").last.locator(".timeline").wait_for()
        jump.append(1000 * (time.perf_counter() - t0))
        page.close()
    return {"interactive_ms": statistics.median(interactive), "load_ms": statistics.median(loaded),
            "jump_ms": statistics.median(jump), "interactive_max_ms": max(interactive)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--per-instance", type=int, nargs="+", default=[3])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--screenshot", type=Path, default=None)
    ap.add_argument("--eager", action="store_true", help="also time the page with every section built at load")
    args = ap.parse_args()
    rows = []
    lazy = page_module.EAGER_VIDEOS
    with chromium() as context:
        for n in args.per_instance:
            folder = args.out / f"per{n}"
            results, scores = write_thumos_sized_results(folder, predictions_per_instance=n)
            for eager in ([False, True] if args.eager else [False]):
                page_module.EAGER_VIDEOS = 10_000 if eager else lazy
                page = folder / ("eager.html" if eager else "report.html")
                t0 = time.perf_counter()
                report = write_report(results, page, scores_dir=scores, ground_truth="thumos14-test")
                write_s = time.perf_counter() - t0
                shot = args.screenshot if n == args.per_instance[0] and not eager else None
                m = measure(context, page, args.repeats, shot)
                rows.append(("all at load" if eager else "on approach", len(report.videos),
                             sum(len(v.segments) for v in report.videos), page.stat().st_size, write_s, m))
    print(f"{'sections built':<14} {'videos':>6} {'segments':>8} {'size MB':>8} {'write s':>7} {'interactive ms':>14} "
          f"{'(max)':>6} {'load ms':>8} {'jump to last ms':>15}")
    for built, n_videos, n_segments, size, write_s, m in rows:
        print(f"{built:<14} {n_videos:>6} {n_segments:>8} {size / 1e6:>8.2f} {write_s:>7.2f} "
              f"{m['interactive_ms']:>14.0f} {m['interactive_max_ms']:>6.0f} {m['load_ms']:>8.0f} {m['jump_ms']:>15.0f}")
    shipped = [r for r in rows if r[0] == "on approach"]
    worst = max(shipped, key=lambda r: r[5]["interactive_ms"])
    ok = all(r[3] < TARGET_BYTES and r[5]["interactive_ms"] < TARGET_INTERACTIVE_MS for r in shipped)
    print(f"targets: < {TARGET_BYTES / 1e6:g} MB and interactive < {TARGET_INTERACTIVE_MS:g} ms: "
          f"{'met' if ok else 'NOT met'} by the shipped page (slowest median {worst[5]['interactive_ms']:.0f} ms)")


if __name__ == "__main__":
    main()
