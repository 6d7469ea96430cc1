"""Seconds to write ``report.png`` (``training.run_report.write_report``) for a 5-iteration run; target < 2 s.

Trains one real run first (through ``run_training``, the CLI's path): ``testing.wstal_bench``'s generated set at a small
width (40 training + 20 test videos, 256-d), the shipped thumos14 config with 50 epochs per iteration and no early
stopping, iterations 0..4, the guard off so that all five are trained (so the loss panel holds 250 epochs). Then, in
this process, with matplotlib already imported and its fonts loaded by one untimed draw, it times ``write_report`` on
that run's metrics.json ``--repeats`` times, as written (no reference line: the set is not a bundled dataset) and
with the thumos14 reference line (the same metrics, ``dataset`` set to ``thumos14`` in a copy), and prints the
median, min and max.

    python -m benchmarks.speed.report_speed --out /tmp/report_speed
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import matplotlib  # noqa: F401  (imported before timing: the target is the draw and the write)
import torch

from benchmarks.runs import train_or_reuse
from refineloc_e2e.config import shipped_config
from refineloc_e2e.datasets import load_dataset
from refineloc_e2e.training.data import load_training_features
from refineloc_e2e.training.run_config import load_run_config
from refineloc_e2e.training.run_report import write_report

from testing.wstal_bench import BenchSpec, write_benchmark

OVERRIDES = ["head.feature_dim=256", "train.epochs=50", "train.early_stop_patience=0", "train.n_iterations=4",
             "select=fixed", "guard.enabled=false"]


def _time(path: Path, metrics: dict, cfg, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        write_report(path, metrics, cfg, title="report_speed")
        out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for the generated set, the run and the PNGs")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ann = args.out / "bench" / "annotations.json"
    if not ann.is_file():
        write_benchmark(args.out / "bench", BenchSpec(n_train=40, n_test=20, dim=256, seed=0))
    dataset = load_dataset(ann)
    feats, meta, _ = load_training_features(dataset, args.out / "bench" / "features", skip_missing=False)
    cfg = load_run_config(shipped_config("thumos14"), OVERRIDES)
    metrics = train_or_reuse(cfg, args.out / "run", dataset=dataset, features=feats, feature_meta=meta,
                             label="5-iteration run")
    n_epochs = sum(len(e["train_losses"]) for e in metrics["iterations"])
    print(f"run: {len(metrics['iterations'])} iterations, {n_epochs} epochs ({args.out / 'run' / 'metrics.json'})")
    write_report(args.out / "warmup.png", metrics, cfg)  # fonts and the Agg canvas loaded, untimed
    as_written = _time(args.out / "report.png", metrics, cfg, args.repeats)
    with_ref = _time(args.out / "report_thumos14_reference.png", {**metrics, "dataset": "thumos14"}, cfg,
                     args.repeats)
    for label, secs, png in (("as written (no reference line)", as_written, "report.png"),
                             ("with the thumos14 reference line", with_ref, "report_thumos14_reference.png")):
        size_kb = (args.out / png).stat().st_size / 1024
        print(f"write_report {label}: median {statistics.median(secs):.3f} s, min {min(secs):.3f} s, "
              f"max {max(secs):.3f} s over {len(secs)} ({args.out / png}, {size_kb:.0f} KiB); target < 2 s")


if __name__ == "__main__":
    main()
