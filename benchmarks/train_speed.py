"""Wall time of RefineLoc training per refinement iteration on a THUMOS-sized set of generated features.

200 training videos x ~280 snippets (uniform 200-360) x 2048-d random features, 20 classes, 1-2 weak
labels per video; hyperparameters from refineloc_e2e/configs/thumos14.yaml. Each iteration runs ``--measure-epochs``
epochs (default: all of the config's) and the per-epoch time is extrapolated to the config's epochs.

    .venv/bin/python benchmarks/train_speed.py                      # full 50 epochs per iteration
    .venv/bin/python benchmarks/train_speed.py --measure-epochs 3   # measure 3, extrapolate to 50
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from refineloc_e2e.model.pseudo import class_weights, generate, sample_mask, video_rng
from refineloc_e2e.device import resolve_device
from refineloc_e2e.model.inference import predict_batch
from refineloc_e2e.training.fit import VideoItem, fit_model
from refineloc_e2e.training.refinement import _holdout_split, load_run_config

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "refineloc_e2e" / "configs" / "thumos14.yaml"))
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--snippets", type=int, default=280, help="mean snippets per video (+-80)")
    ap.add_argument("--measure-epochs", type=int, default=None, help="epochs to run (default: the config's)")
    ap.add_argument("--iterations", type=int, default=2, help="iterations to time (0 = video loss only, then refinement)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    cfg = load_run_config(args.config, [f"train.device={args.device}"])
    device = resolve_device(cfg.train.device)
    rng = np.random.default_rng(0)
    n_classes, D = 20, cfg.head.feature_dim
    items = []
    for i in range(args.videos):
        T = int(rng.integers(args.snippets - 80, args.snippets + 81))
        labels = sorted(rng.choice(n_classes, size=int(rng.integers(1, 3)), replace=False).tolist())
        items.append(VideoItem(f"v{i:04d}", torch.from_numpy(rng.normal(size=(T, D)).astype(np.float32)), labels))
    by_id = {it.video_id: it for it in items}
    fit_ids, held_ids = _holdout_split(sorted(by_id), cfg.train.holdout_fraction, cfg.train.seed)
    fit_items, held_items = [by_id[i] for i in fit_ids], [by_id[i] for i in held_ids]
    epochs = args.measure_epochs or cfg.train.epochs
    train_cfg = type(cfg.train)(**{**cfg.train.__dict__, "epochs": epochs})
    n_snip = sum(it.features.shape[0] for it in items)
    print(f"{args.videos} videos, {n_snip} snippets x {D}, batch {cfg.train.batch_size}, device {device}, "
          f"torch threads {torch.get_num_threads()}, measuring {epochs} of {cfg.train.epochs} epochs")
    prev = None
    for k in range(args.iterations):
        t0 = time.perf_counter()
        weights = None
        if k > 0:
            scores = predict_batch(prev, [it.features for it in items], device, cfg.train.batch_size)
            for it, s in zip(items, scores):
                r = video_rng(cfg.train.seed, k, it.video_id)
                it.pseudo = generate(cfg.pseudo, s, r, label_indices=it.label_indices)
                it.sampled = sample_mask(len(it.pseudo), cfg.pseudo.sample_fraction, r)
            weights = class_weights([it.pseudo for it in fit_items], [it.sampled for it in fit_items])
        t_pseudo = time.perf_counter() - t0
        t1 = time.perf_counter()
        res = fit_model(fit_items, held_items, n_classes=n_classes, head_cfg=cfg.head, cfg=train_cfg, iteration=k,
                        beta=cfg.pseudo.beta if k else 0.0, class_weights=weights, device=device, progress=False)
        t_fit = time.perf_counter() - t1
        per_epoch = t_fit / epochs
        print(f"iteration {k}: pseudo labels {t_pseudo:6.2f} s, {epochs} epochs {t_fit:7.1f} s "
              f"({per_epoch:5.2f} s/epoch incl. held-out loss) -> {cfg.train.epochs} epochs: "
              f"{t_pseudo + per_epoch * cfg.train.epochs:7.1f} s ({(t_pseudo + per_epoch * cfg.train.epochs) / 60:.1f} min)")
        prev = res.model


if __name__ == "__main__":
    main()
