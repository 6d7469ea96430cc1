"""Which generated benchmarks may vote on a refinement default: do they behave like the authors' real runs?

A member of the benchmark family (``benchmarks.bench_data.family``; ``repo`` = the repo's THUMOS'14-shaped set)
is ADMISSIBLE when the released form of its layout (``thumos14-released`` / ``activitynet12-released``: full
feature width, no stream selection), at the family's measuring size, reproduces on EVERY seed the logged shape of
the released I3D run of that layout (``training.replay.admissibility``: iteration 1's pseudo labels, their drift,
never below iteration 0, the gain). Scores are the layout's metric: mAP@0.5 (THUMOS'14), average mAP 0.5:0.95
(ActivityNet). Issue 25; docs/refinement.md "Admissible benchmarks".

    python -m benchmarks.experiments.admissibility --out /tmp/adm --dim 256 --set train.epochs=20 \\
        --set train.n_iterations=5

Runs go through ``refine_family``'s runner (the same folders, so runs are shared with it and reused).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.bench_data.family import MEMBERS, FamilySpec
from benchmarks.experiments.refine_family import load_set, run_one, runs_dir
from refineloc_e2e.config import shipped_config
from refineloc_e2e.device import configure_cpu_math
from refineloc_e2e.evaluation.released_runs import REFERENCE_FOR_DATASET, RELEASED_RUNS
from refineloc_e2e.training.replay import IterationFigures, admissibility, is_admissible
from refineloc_e2e.training.run_config import load_run_config
from refineloc_e2e.training.tensorboard_log import released_metric

RELEASED_FORM = {"thumos14": ("released", "thumos14-released"), "activitynet12": ("anet12-released",
                                                                                   "activitynet12-released")}

def figures(metrics: dict) -> list[IterationFigures]:
    """Per iteration: the test score in the released code's metric (tensorboard_log.released_metric: mAP@0.5 on the
    THUMOS'14 layout, average mAP 0.5:0.95 on the ActivityNet one) and the pseudo labels it trained on."""
    out = []
    for e in metrics["iterations"]:
        ps = e.get("pseudo") or {}
        out.append(IterationFigures(released_metric(e["test"])[1], ps.get("fg_fraction"), ps.get("precision_vs_truth"),
                                    ps.get("recall_vs_truth")))
    return out

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--members", default=",".join(MEMBERS), help=f"from {', '.join(MEMBERS)}, and 'repo'")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--subsample", type=int, default=1)
    a = ap.parse_args()
    configure_cpu_math()
    table = []
    for member in a.members.split(","):
        layout = (FamilySpec() if member == "repo" else MEMBERS[member]).layout
        form, config = RELEASED_FORM[layout]
        ref = RELEASED_RUNS[REFERENCE_FOR_DATASET[layout]]
        verdicts = []
        for seed in (int(s) for s in a.seeds.split(",")):
            fs = load_set(a.out, member, seed, a.dim, a.subsample)
            set_name, ds, feats, meta = fs.name, fs.ds, fs.feats, fs.meta
            cfg = load_run_config(shipped_config(config), [f"train.seed={seed}", f"head.feature_dim={fs.dim}",
                                                           *a.overrides])
            runs = runs_dir(a.out, fs, a.subsample, a.overrides)
            m = run_one(runs / form, cfg, ds, feats, meta, a.out / "fit_cache")
            figs = figures(m)
            crit = admissibility(figs, ref)
            verdicts.append(is_admissible(crit))
            scores = " ".join(f"{f.score:.2f}" for f in figs)
            fgs = " ".join("-" if f.fg_fraction is None else f"{f.fg_fraction:.2f}" for f in figs[1:])
            print(f"{set_name:<16} {form:<16} scores {scores} | fg {fgs}", flush=True)
            for c in crit:
                print(f"    {'ok ' if c.ok else 'NO '} {c.name:<14} {c.detail}", flush=True)
            table.append((member, seed, crit))
        print(f"== {member}: {'ADMISSIBLE' if all(verdicts) else 'not admissible'} "
              f"({sum(verdicts)}/{len(verdicts)} seeds, against {ref.name})", flush=True)
    print("\n| member | seed | " + " | ".join(c.name for c in table[0][2]) + " |")
    print("|---|---|" + "---|" * len(table[0][2]))
    for member, seed, crit in table:
        print(f"| {member} | {seed} | " + " | ".join(("ok: " if c.ok else "no: ") + c.detail for c in crit) + " |")

if __name__ == "__main__":
    main()
