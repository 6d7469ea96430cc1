"""``refineloc-e2e evaluate`` on ~100k predictions for the ActivityNet v1.2 validation videos.

Writes a seeded ActivityNet results JSON (``--per-video`` predictions for each of the 2,383 validation
videos, ~100k in all): noisy copies of the ground truth with random scores, which is the slow case (most
predictions overlap a ground truth of their class, so they are matched), plus ``--clutter`` random ones.
Then times the ``evaluate`` command end to end (JSON read and validation, matching, AP; 10 tIoUs) in a
subprocess, and the library call alone, and prints both with the mAP.

    nice -n 10 .venv/bin/python -m benchmarks.speed.evaluate_scale [--per-video 42] [--clutter 0.2] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from refineloc_e2e.datasets import load_dataset
from refineloc_e2e.evaluation.metrics import evaluate, load_predictions


def make_predictions(ds, per_video: int, clutter: float, rng: np.random.Generator) -> dict:
    results = {}
    for v in ds.subset("test"):  # activitynet12's "test" subset is its validation split
        preds = []
        for i in range(per_video):
            if rng.random() < clutter or not v.segments:
                label = ds.classes[int(rng.integers(len(ds.classes)))]
                start = float(rng.uniform(0, v.duration_s))
                end = start + float(rng.uniform(0.1, v.duration_s / 2))
            else:
                g = v.segments[i % len(v.segments)]
                jitter = rng.normal(0, 0.1 * (g.end_s - g.start_s) + 0.1, 2)
                label, start = g.label, max(0.0, g.start_s + float(jitter[0]))
                end = start + max(0.01, g.end_s - g.start_s + float(jitter[1]))
            preds.append({"label": label, "score": round(float(rng.random()), 4), "segment": [start, end]})
        results[v.video_id] = preds
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-video", type=int, default=42)
    ap.add_argument("--clutter", type=float, default=0.2, help="fraction of predictions placed at random")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ds = load_dataset("activitynet12")
    results = make_predictions(ds, args.per_video, args.clutter, np.random.default_rng(args.seed))
    n = sum(len(p) for p in results.values())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "results.json"
        path.write_text(json.dumps({"version": "VERSION 1.3", "results": results, "external_data": {}}))
        t0 = time.perf_counter()
        preds = load_predictions(path)
        t1 = time.perf_counter()
        result = evaluate(preds, ds, subset="test")
        t2 = time.perf_counter()
        print(f"{n} predictions on {len(results)} videos, {len(result.tious)} tIoUs: library: read + validate "
              f"{t1 - t0:.2f} s, evaluate {t2 - t1:.2f} s; average mAP {100 * result.average_map:.2f}%")
        cmd = [sys.executable, "-c", "from refineloc_e2e.cli import main; main()", "evaluate", "--predictions",
               str(path), "--ground-truth", "activitynet12-val"]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        print(f"`refineloc-e2e evaluate` end to end (incl. interpreter start and imports): {wall:.2f} s")
        print(out.stdout.strip().splitlines()[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
