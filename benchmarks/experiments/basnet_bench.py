"""BaS-Net base vs the RefineLoc base, with refinement, on a generated benchmark (testing.wstal_bench).

For every seed it trains, through the real path (feature cache -> load_training_features -> run_training):

- ``refineloc``: the shipped ``thumos14`` config;
- ``basnet``: the shipped ``thumos14-basnet-refined`` config (BaS-Net, its filter supervised by the pseudo labels);

both with the same CLI-given epochs, batch size and iterations (early stopping off, so every epoch is timed),
the saved model the fixed last iteration and no guard (the paper's fixed eta, refinement as published; the
shipped configs select an iteration and guard it, which benchmarks.experiments.refine_family measures). It
prints test mAP@0.5 of iteration 0, the best refined iteration and the saved model, paired by seed, and seconds
per epoch (fit time of an iteration / epochs run, held-out loss included). Runs are cached in ``--out``.

    nice -n 10 python -m benchmarks.experiments.basnet_bench --out /tmp/basnet_bench      # 3 seeds, iterations 0-2
    nice -n 10 python -m benchmarks.experiments.basnet_bench --out /tmp/basnet_narrow --basnet-set head.basnet.cas_width=512
    nice -n 10 python -m benchmarks.experiments.basnet_bench --out /tmp/basnet_bench --speed   # s / epoch only, interleaved

Call ``torch.set_flush_denormal(True)`` first (done here): training slows ~6x on denormal floats otherwise.
Test mAP is reported only; it drives nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.runs import map05, train_or_reuse
from refineloc_e2e.config import shipped_config
from refineloc_e2e.datasets import load_dataset
from refineloc_e2e.training.data import load_training_features
from refineloc_e2e.training.fit import VideoItem, fit_model
from refineloc_e2e.training.run_config import load_run_config

from testing.wstal_bench import BenchSpec, write_benchmark

BASES = {"refineloc": "thumos14", "basnet": "thumos14-basnet-refined"}


def run_config(base: str, seed: int, args):
    overrides = [f"train.seed={seed}", f"train.epochs={args.epochs}", f"train.n_iterations={args.iterations}",
                 f"select_iteration={args.iterations}", "select=fixed", "guard.enabled=false",
                 f"train.batch_size={args.batch_size}",
                 "train.early_stop_patience=0", "train.device=cpu", "eval_tious=[0.3, 0.5, 0.7]"]
    overrides += args.basnet_set if base == "basnet" else []
    return load_run_config(shipped_config(BASES[base]), overrides)


def s_per_epoch(e: dict) -> float:
    return e["timing"]["fit_s"] / max(1, e["epochs_run"])


def _ms(v: list[float]) -> str:
    return f"{np.mean(v):.2f} ± {np.std(v):.2f} [{min(v):.2f}..{max(v):.2f}]"


def summarise(results: dict[str, list[dict]]) -> str:
    lines = ["| base | iter 0 mAP@0.5 | best refined (iter) | saved (iter) | saved - iter 0 (paired) | s / epoch |",
             "|---|---|---|---|---|---|"]
    for base, runs in results.items():
        it0 = [map05(m["iterations"][0]) for m in runs]
        refined = all(len(m["iterations"]) > 1 for m in runs)
        best = [max(map05(e) for e in m["iterations"][1:]) for m in runs] if refined else it0
        best_k = [int(np.argmax([map05(e) for e in m["iterations"][1:]])) + 1 for m in runs] if refined else [0]
        saved = [map05(m["iterations"][m["selected_iteration"]]) for m in runs]
        gain = [s - z for s, z in zip(saved, it0)]
        spe = [s_per_epoch(e) for m in runs for e in m["iterations"]]
        lines.append(f"| {base} | {_ms(it0)} | {_ms(best)} ({best_k}) | {_ms(saved)} "
                     f"({[m['selected_iteration'] for m in runs]}) | {_ms(gain)} (worst {min(gain):+.2f}) | {_ms(spe)} |")
    if "refineloc" in results and "basnet" in results:
        r = np.mean([s_per_epoch(e) for m in results["refineloc"] for e in m["iterations"]])
        b = np.mean([s_per_epoch(e) for m in results["basnet"] for e in m["iterations"]])
        d0 = [map05(bm["iterations"][0]) - map05(rm["iterations"][0])
              for bm, rm in zip(results["basnet"], results["refineloc"])]
        lines.append(f"\nBaS-Net / RefineLoc seconds per epoch: {b / r:.2f}x; iteration 0, BaS-Net - RefineLoc "
                     f"(paired by seed): {_ms(d0)}")
    return "\n".join(lines)


def speed(args, ds, feats: dict) -> str:
    """Seconds per training epoch (fit_model, one epoch incl. the held-out loss) of each base on the same videos,
    rounds interleaved in one process so machine load hits every base alike; median over ``--speed-rounds``."""
    variants = {"refineloc": ("refineloc", []), "basnet": ("basnet", []),
                "basnet cas_width 512": ("basnet", ["head.basnet.cas_width=512"])}
    items = [VideoItem(v.video_id, torch.from_numpy(np.ascontiguousarray(feats[v.video_id], dtype=np.float32)),
                       [ds.class_index(lab) for lab in v.labels]) for v in ds.subset("train")][:args.speed_videos]
    fit_items, held = items[:-2], items[-2:]
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.speed_rounds):
        for name, (base, extra) in variants.items():
            cfg = load_run_config(shipped_config(BASES[base]), extra + [f"train.batch_size={args.batch_size}"])
            t0 = time.perf_counter()
            fit_model(fit_items, held, n_classes=len(ds.classes), head_cfg=cfg.head,
                      cfg=dataclasses.replace(cfg.train, epochs=1, device="cpu"), iteration=0, beta=0.0,
                      class_weights=None, device=torch.device("cpu"), progress=False)
            times[name].append(time.perf_counter() - t0)
    ref = float(np.median(times["refineloc"]))
    n = sum(it.features.shape[0] for it in items)
    lines = [f"| base | s / epoch (median of {args.speed_rounds}) | x RefineLoc |", "|---|---|---|"]
    lines += [f"| {k} | {np.median(v):.2f} | {np.median(v) / ref:.2f}x |" for k, v in times.items()]
    return "\n".join(lines) + f"\n\n{len(items)} training videos, {n} snippets, batch {args.batch_size}, torch threads " \
        f"{torch.get_num_threads()}"


def main() -> None:
    torch.set_flush_denormal(True)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--bases", nargs="+", default=list(BASES), choices=list(BASES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--train", type=int, default=40)
    ap.add_argument("--test", type=int, default=30)
    ap.add_argument("--basnet-set", nargs="*", default=[], help="extra KEY=VALUE overrides of the BaS-Net runs")
    ap.add_argument("--speed", action="store_true", help="only time one epoch per base (interleaved rounds)")
    ap.add_argument("--speed-rounds", type=int, default=3)
    ap.add_argument("--speed-videos", type=int, default=20)
    ap.add_argument("--min-snippets", type=int, default=50)
    ap.add_argument("--max-snippets", type=int, default=100)
    args = ap.parse_args()
    out = Path(args.out)
    bench = out / "bench"
    ann = bench / "annotations.json"
    if not ann.is_file():
        write_benchmark(bench, BenchSpec(n_train=args.train, n_test=args.test, min_snippets=args.min_snippets,
                                         max_snippets=args.max_snippets))
    ds = load_dataset(ann)
    t0 = time.perf_counter()
    feats, meta, _ = load_training_features(ds, bench / "features", skip_missing=False)
    if args.speed:
        table = speed(args, ds, feats)
        (out / "basnet_speed.md").write_text(table + "\n")
        print(table)
        return
    results: dict[str, list[dict]] = {b: [] for b in args.bases}
    for s in args.seeds:  # seed-major: a partial run still pairs the bases
        for b in args.bases:
            results[b].append(train_or_reuse(run_config(b, s, args), out / "runs" / f"{b}_s{s}", dataset=ds,
                                             features=feats, feature_meta=meta, label=f"{b} seed {s}"))
        table = summarise(results)
        (out / "basnet_bench.md").write_text(table + "\n")
    print(table)
    print(f"total {time.perf_counter() - t0:.0f} s; BaS-Net overrides {args.basnet_set or 'none'}; "
          f"{args.epochs} epochs, batch {args.batch_size}, iterations "
          f"0..{args.iterations}, seeds {args.seeds}; set: {args.train} train / {args.test} test videos of "
          f"{args.min_snippets}-{args.max_snippets} snippets (BenchSpec defaults otherwise)")


if __name__ == "__main__":
    main()
