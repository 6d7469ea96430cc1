"""Detection coverage of the released ActivityNet v1.2 I3D run's published predictions: the guard's reference, by proxy.

The guard's coverage rule (``training/guard.py``) compares iteration k's pseudo-label foreground fraction with
iteration 0's held-out detection coverage c0: the pooled fraction of the held-out TRAINING videos' snippets that
iteration 0's detections cover. The released event files do not log it (they have no held-out training videos).
HumamAlwassel/RefineLoc does publish ``trained_models/activitynet_v1-2/best_model_i3d/
valid_predictions_iteration_{0000,0001,0003}.json``: that run's detections on the VALIDATION split (their test
split) after iterations 0, 1 and 3. Their pooled coverage is the closest published stand-in for c0; it is a proxy
(another split, and the split those models never trained on). The repository has no licence, so the files are not
copied: bring a checkout, and the figures are carried in ``refineloc_e2e.evaluation.released_runs``:

    python -m benchmarks.experiments.released_coverage --repo RefineLoc
    python -m benchmarks.experiments.released_coverage --repo RefineLoc --check   # carried figures == files

Coverage here: per validation video of the bundled ActivityNet v1.2 annotations, the union of its detected
segments (every label) clipped to [0, duration]; summed over the videos and divided by their summed duration (a
video with no detections covers 0). The released segments are snippet-aligned, so this is the snippet fraction
up to the last partial snippet.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from refineloc_e2e.datasets import load_dataset
from refineloc_e2e.evaluation import released_runs as rr


def covered_s(segments: list[tuple[float, float]], duration_s: float) -> float:
    """Seconds of [0, duration_s] inside the union of ``segments`` ([start_s, end_s] pairs)."""
    total, end = 0.0, 0.0
    for a, b in sorted((max(0.0, a), min(duration_s, b)) for a, b in segments):
        a = max(a, end)
        if b > a:
            total += b - a
            end = b
    return total


def pooled_coverage(predictions: dict, durations: dict[str, float]) -> float:
    """Pooled covered fraction of the videos in ``durations`` by ``predictions`` ({video: [{"segment": ...}]})."""
    covered = sum(covered_s([tuple(d["segment"]) for d in predictions.get(v, [])], t) for v, t in durations.items())
    return covered / sum(durations.values())


def read_predictions(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    return data["results"] if "results" in data else data  # iteration 1's file has no ActivityNet wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", required=True, type=Path, help="a checkout of HumamAlwassel/RefineLoc")
    ap.add_argument("--check", action="store_true", help="exit 1 unless the carried figures match the files")
    a = ap.parse_args()
    ds = load_dataset("activitynet12")
    durations = {v.video_id: v.duration_s for v in ds.videos.values() if v.subset == "test"}
    truth = sum(covered_s([(s.start_s, s.end_s) for s in ds.videos[v].segments], t) for v, t in durations.items())
    print(f"{len(durations)} validation videos, annotated share {truth / sum(durations.values()):.4f}")
    bad = []
    for (run, k), rel in rr.PREDICTION_FILES.items():
        preds = read_predictions(a.repo / rel)
        c = pooled_coverage(preds, durations)
        logged = rr.RELEASED_RUNS[run].fg_fraction()[k] if k < len(rr.RELEASED_RUNS[run].fg_fraction()) else None
        carried = rr.VALID_DETECTION_COVERAGE[run][k]
        print(f"{run} iteration {k}: {sum(map(len, preds.values()))} detections on {len(preds)} videos; coverage "
              f"{c:.4f} (carried {carried:.4f}); pseudo labels it made for iteration {k + 1}: "
              + (f"{logged:.4f} (ratio {logged / c:.3f})" if logged is not None else "-"))
        if round(c, 4) != carried:
            bad.append((run, k, c, carried))
    if a.check and bad:
        sys.exit(f"carried figures differ from the files: {bad}")


if __name__ == "__main__":
    main()
