"""How hard is a generated set (``python -m benchmarks.bench_data.wstal OUT_DIR``) for a snippet classifier?

Fits a ridge least-squares linear foreground / background probe on single snippets of the training videos
with their STRONG labels, and prints its accuracy on the test videos next to the all-background guess. Near the
guess means single snippets do not separate foreground from background (the set is meant to be like that).

    python -m benchmarks.experiments.wstal_probe OUT_DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from refineloc_e2e.features.cache import read_features

from testing.wstal_bench import FPS, SNIPPET_FRAMES


def probe_accuracy(out_dir: Path) -> tuple[float, float]:
    """(test accuracy of the probe, test foreground fraction)."""
    doc = json.loads((out_dir / "annotations.json").read_text())
    X, y, split = [], [], []
    for vid, e in doc["database"].items():
        f, _ = read_features(out_dir / "features", vid)
        lab = np.zeros(len(f))
        for a in e["annotations"]:
            s, t = (int(round(v * FPS / SNIPPET_FRAMES)) for v in a["segment"])
            lab[s:t] = 1
        X.append(f), y.append(lab), split.append(np.full(len(f), e["subset"] == "training"))
    X, y, tr = np.concatenate(X), np.concatenate(y), np.concatenate(split)
    A = np.hstack([X, np.ones((len(X), 1))])
    w = np.linalg.lstsq(A[tr].T @ A[tr] + 10.0 * np.eye(A.shape[1]), A[tr].T @ (2 * y[tr] - 1), rcond=None)[0]
    pred = (A[~tr] @ w) > 0
    return float(np.mean(pred == (y[~tr] > 0))), float(np.mean(y[~tr]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    a = ap.parse_args()
    acc, base = probe_accuracy(a.out_dir)
    print(f"linear fg/bg probe on single snippets (strong labels): test accuracy {acc:.3f} "
          f"(all-background guess {1 - base:.3f})")


if __name__ == "__main__":
    main()
