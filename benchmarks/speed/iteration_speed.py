"""Wall time per refinement iteration, before vs after, measured side by side in one run on a THUMOS-sized set.

The set is testing.wstal_bench's ``thumos14`` layout: the real THUMOS'14 videos' durations and
annotated instances (200 training videos, ~65k training snippets; 212 test videos), generated features.
For every seed it trains the same config twice through the real path (feature cache ->
load_training_features -> run_training):

- before: the config with ``train.early_stop_patience=0`` (every one of ``train.epochs`` epochs), and batches
  built as before this change: a zero-padded [B, T, D] copy of the batch, then the valid rows gathered out of
  it, for training and for the scores that make the pseudo labels (``--before-collate padded``; ``packed`` =
  today's one-copy batches, to time early stopping alone);
- after: the config with the ``--after`` overrides (default: early stopping with patience 5), today's batches.

Per iteration it prints seconds per epoch, epochs run and kept, seconds per iteration (pseudo labels +
training + held-out proxy; the test-split evaluation is listed apart, it is reporting), the speed-up
before/after, and test mAP@0.5 of each iteration and of the saved model, paired by seed. Runs are cached
in ``--out``; a rerun with other settings into the same ``--out`` is refused.

    nice -n 10 python -m benchmarks.speed.iteration_speed --out /tmp/itspeed               # 3 seeds, iterations 0-1
    nice -n 10 python -m benchmarks.speed.iteration_speed --out /tmp/itspeed --seeds 0 --after train.early_stop_patience=3
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from benchmarks.runs import map05, train_or_reuse
from refineloc_e2e.config import shipped_config, to_dict
from refineloc_e2e.datasets import load_dataset
from refineloc_e2e.model.head import compute_scores
from refineloc_e2e.training.data import load_training_features
from refineloc_e2e.training.fit import collate
from refineloc_e2e.training.run_config import load_run_config

from testing.wstal_bench import BenchSpec, write_thumos14_layout


def padded_collate(items, n_classes, device):
    """The batches as main built them before: zeros [B, T, D], copy each video in, then ``features[mask]`` (that
    gather ran inside the head's forward). Same values as :func:`fit.collate`, the old memory traffic."""
    batch = collate(items, n_classes, device)
    B, T = batch.mask.shape
    features = torch.zeros(B, T, items[0].features.shape[1])
    for b, it in enumerate(items):
        features[b, :it.features.shape[0]] = it.features
    batch.valid = features.to(device)[batch.mask]
    return batch


@torch.no_grad()
def padded_predict_batch(head, features, device, batch_size=32):
    """inference.predict_batch as main had it: each chunk zero-padded to its longest video, [B, T, D]."""
    head.eval()
    out = []
    for i in range(0, len(features), batch_size):
        chunk = [torch.as_tensor(f, dtype=torch.float32) for f in features[i:i + batch_size]]
        lengths = [c.shape[0] for c in chunk]
        x = torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True).to(device)  # (B, T, D)
        mask = (torch.arange(x.shape[1])[None, :] < torch.tensor(lengths)[:, None]).to(device)
        scores = compute_scores(head(x, mask), mask)
        out += [{k: (scores[k][b] if k == "video_scores" else scores[k][b, :t]).cpu().numpy() for k in scores}
                for b, t in enumerate(lengths)]
    return out


def _config(args, seed: int, overrides: list[str], iterations: int):
    return load_run_config(shipped_config(args.config),
                           [f"train.seed={seed}", f"train.n_iterations={iterations}", "train.device=cpu",
                            f"select_iteration={iterations}", "eval_tious=[0.5]"] + ([f"train.epochs={args.epochs}"] if args.epochs else []) + overrides)


def run_one(name: str, overrides: list[str], seed: int, args, ds, feats, meta, out: Path,
            old_batches: bool = False, iterations: int | None = None) -> dict:
    """One cached run; ``old_batches``: the zero-padded batches above instead of the library's packed ones."""
    cfg = _config(args, seed, overrides, args.iterations if iterations is None else iterations)
    batching = dict(collate_fn=padded_collate, predict_fn=padded_predict_batch) if old_batches else {}
    return train_or_reuse(cfg, out / "runs" / f"{name}_s{seed}", dataset=ds, features=feats, feature_meta=meta,
                          label=f"{name} seed {seed}", **batching)


def _iter_s(e: dict) -> float:
    """Seconds of one iteration without the test-split evaluation (reporting only)."""
    return e["wall_s"] - e["timing"]["test_s"]


def _ms(v) -> str:
    v = np.asarray(v, dtype=float)
    return f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0:.1f}"


def summarise(before: list[dict], after: list[dict]) -> str:
    lines = ["| iteration | s/epoch before | s/epoch after | epochs run (kept) before | epochs run (kept) after "
             "| s/iteration before | s/iteration after | speed-up | mAP@0.5 before | mAP@0.5 after | after - before, "
             "paired [worst] |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    n_it = min(len(r["iterations"]) for r in before + after)
    for k in range(n_it):
        b = [r["iterations"][k] for r in before]
        a = [r["iterations"][k] for r in after]
        spe = [[e["timing"]["fit_s"] / e["epochs_run"] for e in x] for x in (b, a)]
        ep = [f"{np.mean([e['epochs_run'] for e in x]):.1f} ({', '.join(str(e['best_epoch']) for e in x)})"
              for x in (b, a)]
        its = [[_iter_s(e) for e in x] for x in (b, a)]
        m = [np.array([map05(e) for e in x]) for x in (b, a)]
        d = m[1] - m[0]
        lines.append(f"| {k} | {_ms(spe[0])} | {_ms(spe[1])} | {ep[0]} | {ep[1]} | {_ms(its[0])} | {_ms(its[1])} | "
                     f"{np.mean(its[0]) / np.mean(its[1]):.2f}x | {_ms(m[0])} | {_ms(m[1])} | "
                     f"{d.mean():+.2f} [{d[np.argmax(np.abs(d))]:+.2f}] |")
    sel = [np.array([map05(r["iterations"][r["selected_iteration"]]) for r in x]) for x in (before, after)]
    d = sel[1] - sel[0]
    tot = [[sum(_iter_s(e) for e in r["iterations"]) for r in x] for x in (before, after)]
    test_s = np.mean([e["timing"]["test_s"] for r in before + after for e in r["iterations"]])
    lines += ["", f"saved model (select: {before[0]['select']}): iterations before "
              f"{[r['selected_iteration'] for r in before]}, after {[r['selected_iteration'] for r in after]}; "
              f"test mAP@0.5 before {_ms(sel[0])}, after {_ms(sel[1])}, paired {d.mean():+.2f} "
              f"[worst {d.min():+.2f}]",
              f"whole run (iterations 0..{n_it - 1}, no test evaluation): before {_ms(tot[0])} s, after "
              f"{_ms(tot[1])} s, speed-up {np.mean(tot[0]) / np.mean(tot[1]):.2f}x; test-split evaluation "
              f"{test_s:.1f} s per iteration (both)"]
    return "\n".join(lines)


def extend(tag: str, seed: int, args, ds, feats, meta, out: Path) -> dict:
    """The 'after' run of ``seed`` continued to ``--extend-to`` iterations (a copy; its iterations 0..--iterations
    are reused: an iteration depends only on the previous checkpoint and (seed, iteration), not on how many
    iterations the run was given). Quality only: its timings are not compared with anything."""
    name = f"{tag}_to{args.extend_to}"
    dst = out / "runs" / f"{name}_s{seed}"
    if not dst.exists():
        src = out / "runs" / f"{tag}_s{seed}"
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        (tmp / "model.pt").unlink()
        metrics = json.loads((tmp / "metrics.json").read_text())
        for key in ("selected_iteration", "select", "select_reason"):
            metrics.pop(key, None)
        (tmp / "metrics.json").write_text(json.dumps(metrics))
        cfg = _config(args, seed, args.after, args.extend_to)
        (tmp / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        tmp.rename(dst)
    return run_one(name, args.after, seed, args, ds, feats, meta, out, iterations=args.extend_to)


def quality_table(runs: list[dict]) -> str:
    """mAP@0.5 per iteration over seeds, paired gain over iteration 0, and what each selection would ship."""
    lines = ["| iteration | mAP@0.5 | minus iteration 0, paired [worst] | kept/run epochs | pseudo-fg | F1 vs truth |",
             "|---|---|---|---|---|---|"]
    m0 = np.array([map05(r["iterations"][0]) for r in runs])
    for k in range(min(len(r["iterations"]) for r in runs)):
        es = [r["iterations"][k] for r in runs]
        m = np.array([map05(e) for e in es])
        d = m - m0
        ps = [e.get("pseudo") or {} for e in es]
        fg = f"{np.mean([p['fg_fraction'] for p in ps]):.2f}" if k else "-"
        f1 = f"{np.mean([p['f1_vs_truth'] for p in ps]):.2f}" if k and ps[0].get("f1_vs_truth") is not None else "-"
        lines.append(f"| {k} | {_ms(m)} | {'-' if k == 0 else f'{d.mean():+.2f} ± {d.std(ddof=1) if len(d) > 1 else 0:.2f} [{d.min():+.2f}]'} "
                     f"| {np.mean([e['best_epoch'] for e in es]):.1f}/{np.mean([e['epochs_run'] for e in es]):.1f} "
                     f"| {fg} | {f1} |")
    last = min(len(r["iterations"]) for r in runs) - 1
    lines.append("")
    for crit, pick in (("fixed (eta = last)", lambda its: last),
                       ("val_loss", lambda its: int(np.argmin([e["heldout_video_loss"] for e in its])))):
        ks = [pick(r["iterations"]) for r in runs]
        m = np.array([map05(r["iterations"][k]) for r, k in zip(runs, ks)])
        lines.append(f"select {crit}: iterations {ks}, test mAP@0.5 {_ms(m)}, vs iteration 0 "
                     f"{(m - m0).mean():+.2f} (worst {(m - m0).min():+.2f})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default="thumos14", help="a shipped config name (default: thumos14)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--iterations", type=int, default=1, help="refinement iterations after iteration 0")
    ap.add_argument("--epochs", type=int, default=None, help="train.epochs (default: the config's)")
    ap.add_argument("--extend-to", type=int, default=None,
                    help="then continue each 'after' run to this many iterations and print its quality table")
    ap.add_argument("--before-collate", choices=["padded", "packed"], default="padded")
    ap.add_argument("--after", nargs="+", default=["train.early_stop_patience=5"],
                    help="overrides that make the 'after' run")
    args = ap.parse_args()
    out = Path(args.out)
    bench = out / "bench"
    ann = bench / "annotations.json"
    if not ann.is_file():
        write_thumos14_layout(bench, BenchSpec())
    ds = load_dataset(ann)
    feats, meta, _ = load_training_features(ds, bench / "features", skip_missing=False)
    t0 = time.perf_counter()
    tag = "after_" + "_".join(o.split(".")[-1].replace("=", "") for o in args.after)
    before, after = [], []
    for s in args.seeds:  # pairs in turn: a cut-short run still has whole pairs
        before.append(run_one(f"before_{args.before_collate}", ["train.early_stop_patience=0"], s, args, ds, feats,
                              meta, out, old_batches=args.before_collate == "padded"))
        after.append(run_one(tag, args.after, s, args, ds, feats, meta, out))
    table = summarise(before, after)
    (out / f"{tag}.md").write_text(table + "\n")
    print(table)
    print(f"config {args.config}; after = {' '.join(args.after)}; seeds {args.seeds}; iterations 0..{args.iterations}; "
          f"torch threads {torch.get_num_threads()}; {time.perf_counter() - t0:.0f} s")
    if args.extend_to:
        runs = [extend(tag, s, args, ds, feats, meta, out) for s in args.seeds]
        q = quality_table(runs)
        (out / f"{tag}_to{args.extend_to}.md").write_text(q + "\n")
        print(f"\n'after' runs continued to iteration {args.extend_to}:\n{q}")


if __name__ == "__main__":
    main()
