"""The RefineLoc authors' four released runs, read from their TensorBoard event files.

HumamAlwassel/RefineLoc publishes ``trained_models/{thumos14,activitynet_v1-2}/best_model_{i3d,untrimmednet}/
events.out.tfevents.*`` (the repository has no licence, so the files are not copied here: bring a checkout).
This script reads them with tensorboard's own reader (``pip install '.[tensorboard]'``) and prints, per run,
the per-iteration table that ``refineloc_e2e.evaluation.released_runs`` carries as constants:

    python -m benchmarks.experiments.released_runs --logs RefineLoc/trained_models
    python -m benchmarks.experiments.released_runs --logs RefineLoc/trained_models --check   # constants == logs

``--write-module FILE`` writes the constants module from the logs (how it was made; review the diff).
"""

from __future__ import annotations

import argparse
import math
import pprint
import sys
from pathlib import Path

from refineloc_e2e.config import shipped_config
from refineloc_e2e.evaluation import released_runs as rr
from refineloc_e2e.training.replay import (coverage_bounds, replay_early_stopping, replay_fg_range,
                                           replay_iteration_choice)
from refineloc_e2e.training.run_config import load_run_config

# run name -> (folder under trained_models, metric, dataset)
RUN_FOLDERS = {
    "thumos14_i3d": "thumos14/best_model_i3d",
    "thumos14_tsn": "thumos14/best_model_untrimmednet",
    "activitynet12_i3d": "activitynet_v1-2/best_model_i3d",
    "activitynet12_tsn": "activitynet_v1-2/best_model_untrimmednet",
}
CONFIG_KEYS = ("stream", "input_size", "max_epoch", "initial_lr", "batch_size", "alpha_pseudo_gt_loss",
               "pseudo_gt_loss_dim", "weighted_psgt_loss", "pseudo_gt_dropout", "refinement_min_attention_score",
               "refinement_min_cas_score", "refinement_top_k_labels", "refinement_padding", "min_attention_score",
               "min_cas_score", "top_k_labels", "refinement_iterations", "refinement_early_stopping",
               "valid_loss_early_stopping", "lr_patience", "lr_decay", "snippet_size", "num_layers", "seed")


def _sig(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x


def read_event_file(path: Path) -> dict:
    """Everything the constants module carries, from one event file (tensorboard's reader)."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        sys.exit("tensorboard is not installed: pip install '.[tensorboard]' (the optional extra)")
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()

    def series(tag: str) -> list[tuple[int, float]]:
        return [(e.step, e.value) for e in acc.Scalars(tag)]

    config = {k: _sig(acc.Scalars(f"config/{k}")[0].value) for k in CONFIG_KEYS}
    max_epoch = int(config["max_epoch"])
    maps = [v for _, v in sorted(series("refinement_valid/refined_avg_mAP"))]
    n_iter = len(maps)

    def per_iteration(tag: str) -> list[float]:  # logged at step (k + 1) * max_epoch after iteration k
        return [v for _, v in sorted(series(tag))]

    def per_epoch(tag: str) -> list[list[float]]:  # logged at step k * max_epoch + epoch (epoch 1-based)
        by_it: list[list[float]] = [[] for _ in range(n_iter)]
        for step, v in sorted(series(tag)):
            by_it[(step - 1) // max_epoch].append(_sig(v))
        return by_it

    return {
        "config": config,
        "map_by_iteration": [_sig(v) for v in maps],
        "pseudo_fg": [int(v) for v in per_iteration("refinement_train/total_pseudo_fg")],
        "pseudo_bg": [int(v) for v in per_iteration("refinement_train/total_pseudo_bg")],
        "true_fg": [int(v) for v in per_iteration("refinement_train/num_true_fg")],
        "true_bg": [int(v) for v in per_iteration("refinement_train/num_true_bg")],
        "valid_loss_by_epoch": per_epoch("valid/loss"),
        "valid_map_by_epoch": per_epoch("valid/avg_mAP"),
    }


def find_event_files(root: Path) -> dict[str, Path]:
    found = {}
    for name, folder in RUN_FOLDERS.items():
        files = sorted((root / folder).glob("events.out.tfevents.*"))
        if not files:
            files = sorted((root / "trained_models" / folder).glob("events.out.tfevents.*"))
        if len(files) != 1:
            sys.exit(f"{root / folder}: expected one events.out.tfevents.* file, found {len(files)}")
        found[name] = files[0]
    return found


def table(runs: dict[str, rr.ReleasedRun]) -> str:
    head = ("| run (stream) | iteration 0 | best (iteration) | last iteration | pseudo fg by iteration 1.. (truth) "
            "| P first -> last | R first -> last |")
    lines = [head, "|" + "---|" * 7]
    for run in runs.values():
        fg = run.fg_fraction()
        fgs = ", ".join(f"{f:.3f}" for f in fg[:5]) + (f" ... {fg[-1]:.3f}" if len(fg) > 5 else "")
        p, r = run.precision(), run.recall()
        best = run.best_iteration()
        lines.append(f"| {run.name} ({run.stream_label}) | {run.map_by_iteration[0]:.2f} | "
                     f"{run.map_by_iteration[best]:.2f} ({best}) | {run.map_by_iteration[-1]:.2f} "
                     f"({len(run.map_by_iteration) - 1}) | {fgs} ({run.truth_fg_fraction():.2f}) | "
                     f"{p[0]:.2f} -> {p[-1]:.2f} | {r[0]:.2f} -> {r[-1]:.2f} |")
    return "\n".join(lines)


def replay_report(runs: dict[str, rr.ReleasedRun], patiences=(3, 5, 10)) -> str:
    """The shipped configs' rules replayed on the logged figures (training.replay)."""
    lines = ["| run | shipped config | guard range: refused (iteration, fg) | coverage rule alone: admits c0 in | "
             "eta (n_iterations): saved vs it 0 | "
             + " | ".join(f"patience {p}: mean / worst per iteration" for p in patiences) + " |",
             "|" + "---|" * (5 + len(patiences))]
    for run in runs.values():
        cfg = load_run_config(shipped_config(run.dataset), [])
        refused = replay_fg_range(run, cfg.pseudo.fg_fraction_range)
        k, score = replay_iteration_choice(run, cfg)
        lo, hi = coverage_bounds(run, cfg.guard.coverage_ratio, cfg.train.n_iterations)
        cells = []
        for p in patiences:
            d = [r.kept_score - r.full_score for r in replay_early_stopping(run, p)]
            cells.append(f"{sum(d) / len(d):+.2f} / {min(d):+.2f}")
        lines.append(f"| {run.name} | {run.dataset} {cfg.pseudo.fg_fraction_range} | "
                     f"{', '.join(f'({i}, {f:.3f})' for i, f in refused) or 'none'} | [{lo:.3f}, {hi:.3f}] | "
                     f"{k}: {score:.2f} vs {run.map_by_iteration[0]:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", type=Path, help="RefineLoc's trained_models/ folder (or the checkout root)")
    ap.add_argument("--check", action="store_true", help="exit 1 unless the constants module equals the logs")
    ap.add_argument("--write-module", type=Path, help="write the constants module from the logs")
    args = ap.parse_args(argv)
    if args.logs is None:
        print("constants carried in refineloc_e2e.evaluation.released_runs (no --logs given):")
        print(table(rr.RELEASED_RUNS))
        print("\nthe shipped configs replayed on them (early stopping: kept epoch's score - the full run's):")
        print(replay_report(rr.RELEASED_RUNS))
        return 0
    logs = {name: read_event_file(path) for name, path in find_event_files(args.logs).items()}
    if args.write_module:
        body = pprint.pformat(logs, width=118, compact=True, sort_dicts=False)
        args.write_module.write_text(f"LOGGED = {body}\n", encoding="utf-8")
        print(f"wrote {args.write_module}")
    runs = {name: rr.ReleasedRun.from_logged(name, logged) for name, logged in logs.items()}
    print(f"read from {args.logs} with tensorboard's EventAccumulator:")
    print(table(runs))
    if args.check:
        bad = [name for name in logs if rr.LOGGED[name] != logs[name]]
        if bad:
            print(f"constants differ from the logs for: {', '.join(bad)}", file=sys.stderr)
            return 1
        print("constants module equals the logs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
