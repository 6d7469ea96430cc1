"""Seconds per epoch and per refinement iteration, before (all ``--before-epochs`` epochs) vs after (early
stopping on the held-out loss, held-out batches collated once), from the runs of refine_ablation.py.

"after" is measured (each iteration's wall time: pseudo labels + training + held-out proxy + test
evaluation); "before" is extrapolated: the same iteration's seconds per epoch times ``--before-epochs``.
It does not re-measure the old per-epoch held-out collation, so the per-epoch cost is taken as equal.

    python benchmarks/iteration_speed.py /tmp/ablation [--before-epochs 50]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ablation_dir")
    ap.add_argument("--before-epochs", type=int, default=50)
    a = ap.parse_args()
    rows = []
    for m in sorted(Path(a.ablation_dir, "runs").glob("*/metrics.json")):
        for e in json.loads(m.read_text())["iterations"]:
            n = e.get("epochs_run") or len(e["train_losses"])
            rows.append((e["iteration"] > 0, e["wall_s"] / n, n, e["wall_s"], e["best_epoch"]))
    print(f"| iterations | n | s/epoch | epochs run (kept) | s/iteration after | s/iteration before "
          f"({a.before_epochs} epochs) | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for refine in (False, True):
        r = np.array([x[1:] for x in rows if x[0] == refine])
        if not len(r):
            continue
        per_epoch, n, wall, kept = r[:, 0].mean(), r[:, 1].mean(), r[:, 2].mean(), r[:, 3].mean()
        before = per_epoch * a.before_epochs
        print(f"| {'refinement (>= 1)' if refine else '0'} | {len(r)} | {per_epoch:.2f} | {n:.1f} ({kept:.1f}) | "
              f"{wall:.0f} | {before:.0f} | {before / wall:.1f}x |")


if __name__ == "__main__":
    main()
