"""Seconds per training epoch with and without flushing denormal floats to zero, side by side in one process.

Trains iteration 0 of the shipped ``thumos14`` config (``--epochs`` epochs, early stopping off so every epoch
runs) on a benchmark-family member twice with the same seed: first as the process starts (denormals kept:
how training ran before device.configure_cpu_math), then with flush-to-zero. Prints the seconds of epochs 1,
5, 10 and 20 and in all, and checks that the results are the same: per-epoch losses, the kept epoch and test
mAP at every tIoU.

    python -m benchmarks.speed.epoch_denormals --out /tmp/denorm                 # the full THUMOS'14 layout
    python -m benchmarks.speed.epoch_denormals --out /tmp/denorm --subsample 3   # a third of the videos
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_data.family import MEMBERS, write_member
from benchmarks.experiments.refine_family import subsample
from refineloc_e2e.config import shipped_config
from refineloc_e2e.datasets import load_dataset
from refineloc_e2e.training.data import load_training_features
from refineloc_e2e.training.refinement import run_training
from refineloc_e2e.training.run_config import load_run_config

REPORT_EPOCHS = (1, 5, 10, 20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--member", default="context", choices=list(MEMBERS))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--subsample", type=int, default=1)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ann = write_member(a.out / "data", a.member, 0)
    ds = subsample(load_dataset(str(ann)), a.subsample)
    feats, meta, _ = load_training_features(ds, a.out / "data" / "features", skip_missing=False)
    cfg = load_run_config(shipped_config("thumos14"), ["train.n_iterations=0", f"train.epochs={a.epochs}",
                                                       "train.early_stop_patience=0"])
    results = {}
    for label, flush in (("denormals kept", False), ("flush-to-zero", True)):
        torch.set_flush_denormal(flush)
        run = a.out / f"run-{int(flush)}"
        shutil.rmtree(run, ignore_errors=True)
        res = run_training(cfg, dataset=ds, features=feats, run_dir=run, feature_meta=meta, progress=False,
                           flush_denormal=flush)  # returns its table; prints nothing
        results[label] = res.metrics["iterations"][0]
    n_snip = sum(len(feats[v.video_id]) for v in ds.subset("train"))
    print(f"{a.member}: {len(ds.subset('train'))} training videos ({n_snip} snippets), {a.epochs} epochs, "
          f"{torch.get_num_threads()} threads")
    shown = [e for e in REPORT_EPOCHS if e <= a.epochs]
    print(f"{'':<16}" + "".join(f"{'epoch ' + str(e):>10}" for e in shown) + f"{'all':>10}")
    for label, e in results.items():
        print(f"{label:<16}" + "".join(f"{e['epoch_s'][k - 1]:9.2f}s" for k in shown) + f"{sum(e['epoch_s']):9.1f}s")
    before, after = results.values()
    ratio = [b / f for b, f in zip(before["epoch_s"], after["epoch_s"])]
    print(f"{'ratio':<16}" + "".join(f"{ratio[k - 1]:9.2f}x" for k in shown) +
          f"{sum(before['epoch_s']) / sum(after['epoch_s']):9.2f}x")
    dl = max(abs(x - y) for x, y in zip(before["train_losses"], after["train_losses"]))
    same_map = np.allclose(before["test"]["map_per_tiou"], after["test"]["map_per_tiou"], atol=1e-9)
    print(f"max |train loss difference| over epochs {dl:.2e}; kept epoch {before['best_epoch']} vs "
          f"{after['best_epoch']}; test mAP per tIoU identical: {same_map} "
          f"({', '.join(f'{100 * m:.2f}' for m in after['test']['map_per_tiou'])})")


if __name__ == "__main__":
    main()
