"""The RefineLoc authors' four released runs, read from their TensorBoard event files.

HumamAlwassel/RefineLoc publishes ``trained_models/{thumos14,activitynet_v1-2}/best_model_{i3d,untrimmednet}/
events.out.tfevents.*`` (the repository has no licence, so the files are not copied here: bring a checkout).
This script reads them with tensorboard's own reader (``pip install '.[tensorboard]'``) and prints, per run,
the per-iteration table of the figures the package carries (``refineloc_e2e/data/released_runs.json``, loaded by
``refineloc_e2e.evaluation.released_runs``):

    python -m benchmarks.experiments.released_runs --logs RefineLoc/trained_models
    python -m benchmarks.experiments.released_runs --logs RefineLoc/trained_models --check   # data file == logs
    python -m benchmarks.experiments.released_runs --logs RefineLoc/trained_models --write   # (re)write it

``--write`` writes that data file from the logs, atomically and formatted deterministically (the same logs give the
same bytes; review the diff); ``--write FILE`` writes elsewhere. ``--commit`` names the RefineLoc commit the logs
are from (recorded in the file's ``source``; default: the one carried now).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from refineloc_e2e.config import shipped_config
from refineloc_e2e.evaluation import released_runs as rr
from refineloc_e2e.fileio import atomic_writer
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
SOURCE_REPO = "HumamAlwassel/RefineLoc"
LICENCE_NOTE = "the repository has no licence: its files are not copied, only figures read from them"
LINE_WIDTH = 118  # the data file's number lists wrap at this width


def _sig(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x


def read_event_file(path: Path) -> dict:
    """Everything the data file carries per run, from one event file (tensorboard's reader)."""
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


def build_document(logs: dict[str, dict], event_files: dict[str, str], commit: str) -> dict:
    """The data file's content: where the figures come from, then the figures per run."""
    return {
        "about": "The RefineLoc authors' four released runs: figures read from their TensorBoard event files "
                 "(refineloc_e2e.evaluation.released_runs documents the fields).",
        "source": {"repository": SOURCE_REPO, "commit": commit, "event_files": event_files,
                   "read_with": "tensorboard's EventAccumulator: python -m benchmarks.experiments.released_runs "
                                "--logs <RefineLoc checkout>/trained_models --write",
                   "licence": LICENCE_NOTE},
        "runs": logs,
    }


def format_json(obj, indent: int = 0) -> str:
    """JSON, deterministically: one key per line, a list of numbers on as few lines as fit ``LINE_WIDTH``, a list of
    lists one inner list per line. Keys keep their order; floats are written as ``repr`` (they read back equal)."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k)}: {format_json(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}" if items else "{}"
    if isinstance(obj, list) and any(isinstance(v, (list, dict)) for v in obj):
        return "[\n" + ",\n".join(inner + format_json(v, indent + 1) for v in obj) + f"\n{pad}]"
    if isinstance(obj, list):
        words = [json.dumps(v, allow_nan=False) for v in obj]
        if len(pad) + 2 + sum(len(w) + 2 for w in words) <= LINE_WIDTH:
            return "[" + ", ".join(words) + "]"
        lines, line = [], ""
        for w in words:
            if line and len(inner) + len(line) + len(w) + 3 > LINE_WIDTH:  # ", " + w + ","
                lines.append(line)
                line = ""
            line += (", " if line else "") + w
        return "[\n" + ",\n".join(inner + x for x in lines + [line]) + f"\n{pad}]"
    return json.dumps(obj, allow_nan=False)


def write_document(path: Path, doc: dict) -> None:
    with atomic_writer(path, "w") as f:
        f.write(format_json(doc) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", type=Path, help="RefineLoc's trained_models/ folder (or the checkout root)")
    ap.add_argument("--check", action="store_true", help="exit 1 unless the carried data file equals the logs")
    ap.add_argument("--write", type=Path, nargs="?", const=rr.DATA_FILE, metavar="FILE",
                    help=f"write the data file from the logs (default FILE: {rr.DATA_FILE})")
    ap.add_argument("--commit", help="the RefineLoc commit the logs are from (default: the carried file's)")
    args = ap.parse_args(argv)
    if args.logs is None:
        if args.check or args.write:
            ap.error("--check and --write need --logs")
        print(f"figures carried in {rr.DATA_FILE} (no --logs given):")
        print(table(rr.load_runs()))
        print("\nthe shipped configs replayed on them (early stopping: kept epoch's score - the full run's):")
        print(replay_report(rr.load_runs()))
        return 0
    files = find_event_files(args.logs)
    logs = {name: read_event_file(path) for name, path in files.items()}
    event_files = {name: f"trained_models/{RUN_FOLDERS[name]}/{path.name}" for name, path in files.items()}
    doc = build_document(logs, event_files, args.commit or rr.document()["source"]["commit"])
    if args.write:
        write_document(args.write, doc)
        print(f"wrote {args.write}")
    runs = {name: rr.ReleasedRun.from_logged(name, logged) for name, logged in logs.items()}
    print(f"read from {args.logs} with tensorboard's EventAccumulator:")
    print(table(runs))
    if args.check:
        carried = rr.document()
        bad = [name for name in logs if carried["runs"].get(name) != logs[name]]
        bad += [f"{name} (event file name)" for name in event_files
                if carried["source"]["event_files"].get(name) != event_files[name]]
        if bad:
            print(f"{rr.DATA_FILE} differs from the logs for: {', '.join(bad)}", file=sys.stderr)
            return 1
        print(f"{rr.DATA_FILE} equals the logs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
