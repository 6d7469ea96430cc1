"""Where do the pseudo labels lose the attention's information? One iteration-0 checkpoint of the ablation,
all training videos: precision / recall / F1 against the truth of several foreground sets built from the
SAME scores (reporting only; strong annotations drive nothing).

    python -m benchmarks.experiments.pseudo_label_diag /tmp/ablation2 paper+quantile_s0 thumos14-paper.yaml
    python -m benchmarks.experiments.pseudo_label_diag /tmp/ablation2 released_s0 thumos14-released.yaml

(the iteration-0 model of ``paper+quantile`` is the paper form's: calibration only acts from iteration 1.)
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch


from refineloc_e2e.config import shipped_config
from refineloc_e2e.datasets import load_dataset
from refineloc_e2e.model.head import load_head
from refineloc_e2e.model.inference import predict_batch
from refineloc_e2e.training.pseudo import generate, truth_labels
from refineloc_e2e.model.postprocess import foreground_logodds
from refineloc_e2e.timebase import time_base
from refineloc_e2e.training.calibrate import calibrate_segment, covered_fraction
from refineloc_e2e.training.data import load_training_features
from refineloc_e2e.training.refinement import _holdout_split
from refineloc_e2e.training.run_config import load_run_config


def main() -> None:
    out, run, cfg_file = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    seed = int(run.rsplit("_s", 1)[1])
    ds = load_dataset(out / "bench" / "annotations.json")
    feats, meta, _ = load_training_features(ds, out / "bench" / "features", skip_missing=False, log=lambda m: None)
    cfg = load_run_config(shipped_config(cfg_file.removesuffix(".yaml")), [f"train.seed={seed}"])
    train = {v.video_id: v for v in ds.subset("train")}
    ids = sorted(train)
    _, held = _holdout_split(ids, cfg.train.holdout_fraction, seed)
    head = load_head(out / "runs" / run / "iter_0.pt", device=torch.device("cpu")).model
    scores = dict(zip(ids, predict_batch(head, [torch.from_numpy(np.ascontiguousarray(feats[i], dtype=np.float32))
                                                for i in ids], torch.device("cpu"), 16)))
    truth = np.concatenate([truth_labels(train[i].segments, len(scores[i]["attention_time"]), **time_base(meta))
                            for i in ids]).astype(bool)
    hs = [scores[i] for i in held]

    def row(name: str, lab: np.ndarray) -> None:
        lab = lab.astype(bool)
        tp = (lab & truth).sum()
        p, r = tp / max(lab.sum(), 1), tp / truth.sum()
        print(f"| {name} | {lab.mean():.3f} | {p:.2f} | {r:.2f} | {2 * p * r / max(p + r, 1e-9):.2f} |")

    def pseudo(segment) -> np.ndarray:
        pc = dataclasses.replace(cfg.pseudo, segment=segment)
        return np.concatenate([generate(pc, scores[i], np.random.default_rng(0)) for i in ids])

    print(f"{run} iteration 0; truth fg fraction {truth.mean():.3f}; held-out detection coverage "
          f"{covered_fraction(hs, cfg.postprocess):.3f}\n")
    print("| foreground set (all training videos) | fg | P | R | F1 |\n|---|---|---|---|---|")
    seg = cfg.pseudo.segment
    row(f"pseudo labels as configured (inflate {seg.inflate_snippets}, {seg.grouping})", pseudo(seg))
    for m in ("quantile", "otsu", "detection_coverage"):
        row(f"  + calibration {m}", pseudo(calibrate_segment(seg, hs, m, 0.3, detection=cfg.postprocess)[0]))
    row("detections (postprocess thresholds) as labels", pseudo(cfg.postprocess))
    lo = np.concatenate([foreground_logodds(scores[i]["attention_bf"], scores[i].get("attention_logodds"))
                         for i in ids])
    fg = np.concatenate([scores[i]["attention_bf"][:, 1] for i in ids])
    row("raw attention: fg probability >= 0.92 (no class filter, no grouping)", fg >= 0.92)
    row("raw attention: top 30 % of pooled held-out log-odds", lo >= np.quantile(np.concatenate(
        [foreground_logodds(s["attention_bf"], s.get("attention_logodds")) for s in hs]), 0.7))
    for infl in (0, 1):
        ng = dataclasses.replace(seg, inflate_snippets=infl, grouping="gap")
        row(f"pseudo path, inflate {infl}, gap grouping (max_gap {ng.max_gap})", pseudo(ng))
        row(f"  + calibration otsu", pseudo(calibrate_segment(ng, hs, "otsu", 0.3)[0]))


if __name__ == "__main__":
    main()
