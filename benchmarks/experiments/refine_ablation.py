"""Ablation of the refinement forms over seeds on the generated benchmark (testing.wstal_bench).

Every run goes through the real path: datasets.load_dataset(annotations.json) + training.refinement.run_training reading
the feature cache directory. Per form and iteration it prints mean and spread (min..max over seeds) of
test mAP@0.5, the pseudo-label foreground fraction and precision / recall / F1 against the truth, the
kept / run epochs, and which iteration each selection criterion would save (with its test mAP), plus the
rank correlation between each held-out criterion and test mAP@0.5 over all (seed, iteration) pairs.

    nice -n 10 python -m benchmarks.experiments.refine_ablation --out /tmp/ablation            # 3 seeds, all forms
    nice -n 10 python -m benchmarks.experiments.refine_ablation --out /tmp/ablation --forms paper --seeds 0

Test mAP is reported only; it drives nothing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.runs import map05, train_or_reuse
from refineloc_e2e.config import shipped_config
from refineloc_e2e.datasets import load_dataset
from refineloc_e2e.training.data import load_training_features
from refineloc_e2e.training.run_config import load_run_config
from refineloc_e2e.training.selection import select_iteration

from testing.wstal_bench import BenchSpec, write_benchmark

# form -> (config file, overrides). Shared overrides (epochs, iterations, patience, eval) come from the CLI.
FORMS = {
    "paper": ("thumos14-paper.yaml", []),
    "released": ("thumos14-released.yaml", []),
    "paper+minmax": ("thumos14-paper.yaml", ["pseudo.segment.attention_norm=minmax", "postprocess.attention_norm=minmax"]),
    "paper+otsu": ("thumos14-paper.yaml", ["pseudo.calibration=otsu"]),
    "released+otsu": ("thumos14-released.yaml", ["pseudo.calibration=otsu"]),
    "paper+quantile": ("thumos14-paper.yaml", ["pseudo.calibration=quantile", "pseudo.calibration_fraction=0.3"]),
    "default": ("thumos14.yaml", []),
    # pseudo labels = the snippets that pass the filters, no inflation (grouping by gap <= max_gap; the released
    # form's dilation would grow every run by 1 again): see docs/refinement.md "where the pseudo labels lose it"
    "paper+noinflate": ("thumos14-paper.yaml", ["pseudo.segment.inflate_snippets=0"]),
    "released+noinflate": ("thumos14-released.yaml", ["pseudo.segment.inflate_snippets=0",
                                                       "pseudo.segment.grouping=gap"]),
    "paper+detcov": ("thumos14-paper.yaml", ["pseudo.calibration=detection_coverage"]),
}
CRITERIA = ("fixed3", "val_loss", "wap", "wap_dup")


def _spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1]) if len(a) > 2 else float("nan")


def _select(its: list[dict], crit: str) -> int:
    """The iteration ``crit`` saves: the library's rule (``fixed3``: select fixed, eta = 3)."""
    return select_iteration(its, "fixed", 3)[0] if crit == "fixed3" else select_iteration(its, crit, None)[0]


def run_config(form: str, seed: int, args):
    cfg_file, extra = FORMS[form]
    overrides = extra + [f"train.seed={seed}", f"train.epochs={args.epochs}", f"train.n_iterations={args.iterations}",
                         f"train.early_stop_patience={args.patience}", "train.device=cpu", "select=wap",
                         "eval_tious=[0.3, 0.5, 0.7]"]
    return load_run_config(shipped_config(cfg_file.removesuffix(".yaml")), overrides)


def summarise(results: dict[str, list[dict]]) -> str:
    lines = []
    lines.append("| form | iter | mAP@0.5 mean ± sd [min..max] | minus iter 0, paired: mean ± sd [min] | pseudo-fg | P | R "
                 "| F1 | kept/run epochs | h-wAP |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    pairs = {c: ([], []) for c in ("val_loss", "wap", "wap_dup")}
    sel_lines = []
    for form, runs in results.items():
        n_it = min(len(r["iterations"]) for r in runs)
        for k in range(n_it):
            es = [r["iterations"][k] for r in runs]
            m = np.array([map05(e) for e in es])
            ps = [e.get("pseudo") or {} for e in es]

            def avg(key):
                v = [p.get(key) for p in ps if p.get(key) is not None]
                return f"{np.mean(v):.2f}" if v else "-"
            ep = f"{np.mean([e['best_epoch'] for e in es]):.1f}/{np.mean([e.get('epochs_run', 0) for e in es]):.1f}"
            wap = np.mean([100 * e["heldout"]["wap"] for e in es])
            d = m - np.array([map05(r["iterations"][0]) for r in runs])  # paired by seed
            dtxt = "-" if k == 0 else f"{d.mean():+.2f} ± {d.std(ddof=1) if len(d) > 1 else 0:.2f} [{d.min():+.2f}]"
            lines.append(f"| {form} | {k} | {m.mean():.2f} ± {m.std(ddof=1) if len(m) > 1 else 0:.2f} "
                         f"[{m.min():.2f}..{m.max():.2f}] | {dtxt} | {avg('fg_fraction')} | {avg('precision_vs_truth')} | "
                         f"{avg('recall_vs_truth')} | {avg('f1_vs_truth')} | {ep} | {wap:.1f} |")
        for r in runs:
            its = r["iterations"]
            for e in its:
                for c in pairs:
                    v = e["heldout_video_loss"] if c == "val_loss" else e["heldout"][c]
                    pairs[c][0].append(-v if c == "val_loss" else v)
                    pairs[c][1].append(map05(e))
        for c in CRITERIA:
            chosen = [_select(r["iterations"], c) for r in runs]
            m = np.array([map05(r["iterations"][k]) for r, k in zip(runs, chosen)])
            m0 = np.array([map05(r["iterations"][0]) for r in runs])
            sel_lines.append(f"| {form} | {c} | {chosen} | {m.mean():.2f} ± {m.std(ddof=1) if len(m) > 1 else 0:.2f} "
                             f"| {(m - m0).mean():+.2f} (worst {(m - m0).min():+.2f}) |")
    lines.append("")
    lines.append("| form | select | chosen iteration per seed | test mAP@0.5 of the saved model | vs iteration 0 |")
    lines.append("|---|---|---|---|---|")
    lines += sel_lines
    lines.append("")
    lines.append("Spearman correlation with test mAP@0.5 over all (form, seed, iteration): "
                 + ", ".join(f"{'-held-out video loss' if c == 'val_loss' else c}: {_spearman(*pairs[c]):.2f}"
                             for c in pairs))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--forms", nargs="+", default=["paper", "released", "paper+quantile"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--patience", type=int, default=3, help="train.early_stop_patience (0 = off)")
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--train", type=int, default=BenchSpec.n_train)
    ap.add_argument("--test", type=int, default=BenchSpec.n_test)
    args = ap.parse_args()
    for form in FORMS:  # every form loads and validates before hours of training
        run_config(form, 0, args).validate()
    out = Path(args.out)
    bench = out / "bench"
    ann = bench / "annotations.json"
    if not ann.is_file():
        write_benchmark(bench, BenchSpec(n_train=args.train, n_test=args.test))
    ds = load_dataset(ann)
    t0 = time.perf_counter()
    # the CLI's path: the feature cache read by load_training_features (run_training takes a mapping)
    feats, meta, _ = load_training_features(ds, bench / "features", skip_missing=False)
    results = {f: [train_or_reuse(run_config(f, s, args), out / "runs" / f"{f}_s{s}", dataset=ds, features=feats,
                                  feature_meta=meta, label=f"{f} seed {s}") for s in args.seeds]
               for f in args.forms}
    table = summarise(results)
    (out / "ablation.md").write_text(table + "\n")
    print(table)
    print(f"total {time.perf_counter() - t0:.0f} s; epochs <= {args.epochs}, early_stop_patience {args.patience}, "
          f"iterations 0..{args.iterations}, seeds {args.seeds}")


if __name__ == "__main__":
    main()
