"""Refinement forms over the benchmark family (benchmarks.bench_data.family) x seeds: which form holds everywhere.

Every run goes through the real training path (datasets.load_dataset on the member's ActivityNet JSON, the
feature cache read by training.data.load_training_features, training.refinement.run_training). Per set
(member, seed) and form it prints iteration 0, the best iteration, the saved iteration, the gain (saved -
iteration 0), the pseudo-label foreground fraction and its precision / recall against the truth at iteration 1,
and what the guard did; across the family each form's mean and WORST saved mAP@0.5 and worst gain; and how
well each held-out selection criterion tracks test mAP (Spearman within runs, and the mAP lost by its pick).

    python -m benchmarks.experiments.refine_family --out /tmp/family                       # all forms
    python -m benchmarks.experiments.refine_family --out /tmp/family --forms default,v0.1 --seeds 0

A run is reused only if its folder holds a finished run of the SAME resolved config (config.yaml hash); an
unfinished one of the same config is resumed; any other is replaced. Test mAP is reported only; it drives nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

from benchmarks.bench_data.family import MEMBERS, FamilySpec, write_member
from benchmarks.runs import train_or_reuse
from refineloc_e2e.config import settings_hash, shipped_config
from refineloc_e2e.datasets import Dataset, load_dataset
from refineloc_e2e.device import configure_cpu_math
from refineloc_e2e.training.data import load_training_features
from refineloc_e2e.training.run_config import load_run_config
from refineloc_e2e.training.selection import select_iteration

from testing.wstal_bench import BenchSpec, write_thumos14_layout

_TI = "head.attention_time_input"
_DN = "postprocess.attention_norm"
_PN = "pseudo.segment.attention_norm"


_AC = "attention_norm_candidates"


def _combo(time_input: str, det: str, pse: str) -> tuple[str, list[str]]:
    return "thumos14", [f"{_TI}={time_input}", f"{_DN}={det}", f"{_PN}={pse}", f"{_AC}=null"]


_BAS_BUDGET = ["head.basnet.cas_width=512", "train.lr=0.001", "train.n_iterations=3"]

# form -> (shipped config, overrides). The 8 combinations of the eq.-2 time input and the two normalisations
# (detection time, fixed; pseudo-label time) on the shipped thumos14 config with its guard, plus the shipped
# default itself ("default": its detection norm chosen per iteration, training/detection_norm.py), the paper
# and the 0.2.0 default (the paper's form with 0.2.0's inflation 0 and patience 3, no guard; pinned here since the
# shipped thumos14 moved on in 0.3.0) for reference. "v0.1" = logit + both min-max.
FORMS: dict[str, tuple[str, list[str]]] = {
    "default": ("thumos14", []),
    "default-prob": ("thumos14", [f"{_TI}=probability"]),
    # the default with 0.2.0's pseudo-label inflation 0 (the default has the paper's and released 2 since 0.3.0)
    "default-inflate0": ("thumos14", ["pseudo.segment.inflate_snippets=0"]),
    "anet12": ("activitynet12", []),  # the ActivityNet default (its guard on)
    "anet12-noguard": ("activitynet12", ["guard.enabled=false"]),  # the same without the guard
    "basnet": ("thumos14-basnet-refined", []),  # the BaS-Net base (issue 18) with the default's refinement
    # BaS-Net within a CPU budget: its CAS 4x narrower, 10x its released lr (RefineLoc's) and RefineLoc's 3
    # iterations. The family's 20 epochs give it ~1/6 of its released 1500 steps, and at its own lr 1e-4 it then
    # detects nothing (docs/refinement.md)
    "basnet-budget": ("thumos14-basnet-refined", _BAS_BUDGET),
    # the same without the guard: what refinement does on the BaS-Net base where the guard stops it
    "basnet-budget-noguard": ("thumos14-basnet-refined", [*_BAS_BUDGET, "guard.enabled=false"]),
    "paper": ("thumos14-paper", []),
    # the authors' released runs' forms (issue 25: admissibility is judged on these, full feature width)
    "released": ("thumos14-released", []),
    "anet12-released": ("activitynet12-released", []),
    "v0.2": ("thumos14", [f"{_TI}=probability", f"{_DN}=none", f"{_PN}=none", "guard.enabled=false",
                          f"{_AC}=null", "pseudo.segment.inflate_snippets=0", "train.early_stop_patience=3"]),
    **{f"{t[:4]}/det-{d}/ps-{p}": _combo(t, d, p)
       for t in ("probability", "logit") for d in ("none", "minmax") for p in ("none", "minmax")},
}
FORMS["v0.1"] = FORMS.pop("logi/det-minmax/ps-minmax")
CRITERIA = ("val_loss", "wap", "wap_dup", "heldout_map")


def _spearman(a, b) -> float | None:
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def subsample(ds: Dataset, every: int) -> Dataset:
    """Every ``every``-th video of each subset (sorted ids): the same layout at 1/every of the cost."""
    if every <= 1:
        return ds
    keep = {}
    for subset in ("train", "test"):
        keep.update({v.video_id: v for v in ds.subset(subset)[::every]})
    return Dataset(name=ds.name, classes=ds.classes, videos=keep)


@dataclasses.dataclass
class FamilySet:
    """One generated set (member x seed), written if needed and read through the training path."""
    name: str  # e.g. "context-s0-d256"
    spec: FamilySpec
    dim: int
    ds: Dataset
    feats: dict
    meta: dict


def load_set(out: Path, member: str, seed: int, dim: int, every: int = 1) -> FamilySet:
    """Member ``member`` (or ``repo``: the repo's own THUMOS'14-shaped set, testing.wstal_bench, always
    2048-d) with ``seed`` under ``out/data``, every ``every``-th video kept."""
    repo = member == "repo"
    spec = FamilySpec() if repo else dataclasses.replace(MEMBERS[member], dim=dim)
    dim = 2048 if repo else dim
    set_name = f"{member}-s{seed}" + (f"-d{dim}" if dim != 2048 else "")
    data = out / "data" / set_name
    if repo:
        ann = data / "annotations.json"
        if not ann.is_file():
            ann = write_thumos14_layout(data, BenchSpec(seed=seed))
    else:
        ann = write_member(data, member, seed, spec)
    ds = subsample(load_dataset(str(ann)), every)
    feats, meta, _ = load_training_features(ds, data / "features", skip_missing=False)
    return FamilySet(set_name, spec, dim, ds, feats, meta)


def runs_dir(out: Path, fs: FamilySet, every: int, overrides: list[str]) -> Path:
    """Where the runs of one set live: one folder per (subsample, overrides)."""
    return out / "runs" / (fs.name + (f"-sub{every}" if every > 1 else "")
                           + (f"-set{settings_hash(overrides)[:8]}" if overrides else ""))


def run_one(run_dir: Path, cfg, ds, feats, meta, fit_cache: Path) -> dict:
    """Train (or reuse / resume / replace) one run, its output in ``<run_dir>.log``; returns its metrics."""
    return train_or_reuse(cfg, run_dir, dataset=ds, features=feats, feature_meta=meta, replace_other=True,
                          log_file=run_dir.parent / f"{run_dir.name}.log", fit_cache=fit_cache)


def summarise(m: dict) -> dict:
    """The per-run row: test mAP@0.5 per iteration, best, saved, gain, pseudo stats at iteration 1, guard."""
    its = m["iterations"]
    tious = its[0]["test"]["tious"]
    j = min(range(len(tious)), key=lambda i: abs(tious[i] - 0.5))
    maps = [100 * e["test"]["map_per_tiou"][j] for e in its]
    ps = (its[1].get("pseudo") if len(its) > 1 else None) or (m.get("guard") or {}).get("pseudo") or {}
    saved = m["selected_iteration"]
    return {"maps": maps, "it0": maps[0], "best_it": int(np.argmax(maps)), "best": max(maps), "saved_it": saved,
            "saved": maps[saved], "gain": maps[saved] - maps[0], "pseudo_fg": ps.get("fg_fraction"),
            "P": ps.get("precision_vs_truth"), "R": ps.get("recall_vs_truth"),
            "guard": (m.get("guard") or {}).get("iteration"), "c0": (its[0].get("heldout") or {}).get("coverage"),
            "epoch_s": float(np.mean([s for e in its for s in e.get("epoch_s", [])] or [float("nan")]))}


def criteria_report(runs: list[dict]) -> list[str]:
    """Mean within-run Spearman of each held-out criterion with test mAP@0.5, and the mAP its pick loses."""
    lines = [f"{'criterion':<12} {'spearman':>8} {'n runs':>6} {'mean loss of its pick':>22}"]
    for crit in CRITERIA:
        rhos, losses = [], []
        for m in runs:
            its = m["iterations"]
            if len(its) < 2:
                continue
            row = summarise(m)
            vals = [(e["heldout_video_loss"] if crit == "val_loss" else (e.get("heldout") or {}).get(crit))
                    for e in its]
            if any(v is None for v in vals):
                continue
            signed = [-v for v in vals] if crit == "val_loss" else vals
            rho = _spearman(signed, row["maps"])
            if rho is not None:
                rhos.append(rho)
            k, _ = select_iteration(its, crit, None)
            losses.append(row["best"] - row["maps"][k])
        lines.append(f"{crit:<12} {np.mean(rhos) if rhos else float('nan'):8.2f} {len(rhos):6d} "
                     f"{np.mean(losses) if losses else float('nan'):22.2f}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--members", default=",".join(MEMBERS),
                    help=f"from {', '.join(MEMBERS)}, and 'repo' (the repo's THUMOS'14-shaped set, always 2048-d)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--forms", default=",".join(FORMS), help=f"comma-separated, from: {', '.join(FORMS)}")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="applied to every form (e.g. train.epochs=20); part of each run's config")
    ap.add_argument("--subsample", type=int, default=1,
                    help="keep every K-th training and test video (K=3: a third of the cost; the default is all)")
    ap.add_argument("--dim", type=int, default=2048,
                    help="feature width of the generated sets (512: the same latent geometry, ~4x cheaper epochs)")
    ap.add_argument("--drop-data", action="store_true", help="delete each set's features after its runs (~1 GB each)")
    a = ap.parse_args()
    configure_cpu_math()
    forms = a.forms.split(",")
    unknown = [f for f in forms if f not in FORMS]
    if unknown:
        ap.error(f"unknown forms {unknown}; known: {', '.join(FORMS)}")
    rows: dict[str, list[tuple[str, dict]]] = {f: [] for f in forms}
    all_runs = []
    for member in a.members.split(","):
        for seed in (int(s) for s in a.seeds.split(",")):
            fs = load_set(a.out, member, seed, a.dim, a.subsample)
            set_name, spec, dim, ds, feats, meta = fs.name, fs.spec, fs.dim, fs.ds, fs.feats, fs.meta
            # the ranges of the LAYOUT's shipped config (thumos14 / activitynet12), so a form of another dataset's
            # config run on this layout uses this dataset's priors, in step with what `train --dataset` ships
            layout_cfg = load_run_config(shipped_config(spec.layout), [])
            print(f"\n== {set_name}  ({len(ds.subset('train'))} train / {len(ds.subset('test'))} test videos)")
            print(f"{'form':<28} {'it0':>6} {'best':>10} {'saved':>10} {'gain':>6} {'ps-fg':>6} {'P':>5} {'R':>5} "
                  f"{'c0':>5} {'s/ep':>5}  guard")
            for form in forms:
                name, extra = FORMS[form]
                over = [*extra, f"train.seed={seed}", f"head.feature_dim={dim}", *a.overrides]
                if load_run_config(shipped_config(name), []).pseudo.fg_fraction_range is not None:
                    over.append(f"pseudo.fg_fraction_range={list(layout_cfg.pseudo.fg_fraction_range)}")
                    over.append(f"detection_coverage_range={layout_cfg.coverage_range()}")
                cfg = load_run_config(shipped_config(name), over)
                runs = runs_dir(a.out, fs, a.subsample, a.overrides)
                m = run_one(runs / form.replace("/", "_"), cfg, ds, feats, meta, a.out / "fit_cache")
                r = summarise(m)
                rows[form].append((set_name, r))
                all_runs.append(m)
                fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
                print(f"{form:<28} {r['it0']:6.2f} {r['best']:6.2f}@{r['best_it']:<3} {r['saved']:6.2f}@{r['saved_it']:<3}"
                      f" {r['gain']:+6.2f} {fmt(r['pseudo_fg'], '6.3f')} {fmt(r['P'], '5.2f')} {fmt(r['R'], '5.2f')} "
                      f"{fmt(r['c0'], '5.3f')} {r['epoch_s']:5.1f}  {'stopped at ' + str(r['guard']) if r['guard'] else ''}",
                      flush=True)
            if a.drop_data:
                shutil.rmtree(a.out / "data" / set_name / "features")
                (a.out / "data" / set_name / "family_member.json").unlink()
    print("\n== across the family: saved mAP@0.5 (mean, worst), iteration 0 (mean, worst), gain (mean, worst)")
    summary = []
    for form in forms:
        rs = [r for _, r in rows[form]]
        if not rs:
            continue
        s = {k: [r[k] for r in rs] for k in ("saved", "it0", "gain")}
        summary.append((form, np.mean(s["saved"]), min(s["saved"]), np.mean(s["it0"]), min(s["it0"]),
                        np.mean(s["gain"]), min(s["gain"]), len(rs)))
    # regret: per set, how far a form's saved mAP is below the best form's on that set; the worst regret is a
    # worst case that the hardest set (where every form is near 0) does not decide on its own
    best_on = {}
    for form in forms:
        for set_name, r in rows[form]:
            best_on[set_name] = max(best_on.get(set_name, float("-inf")), r["saved"])
    regret = {form: max((best_on[sn] - r["saved"] for sn, r in rows[form]), default=float("nan")) for form in forms}
    summary.sort(key=lambda t: -t[2])
    print(f"{'form':<28} {'saved':>6} {'worst':>6} {'it0':>6} {'worst':>6} {'gain':>6} {'worst':>6} "
          f"{'max regret':>10} {'runs':>4}")
    for t in summary:
        print(f"{t[0]:<28} {t[1]:6.2f} {t[2]:6.2f} {t[3]:6.2f} {t[4]:6.2f} {t[5]:+6.2f} {t[6]:+6.2f} "
              f"{regret[t[0]]:10.2f} {t[7]:4d}")
    print("\n== held-out criteria vs test mAP@0.5 (iterations within a run)")
    print("\n".join(criteria_report(all_runs)))
    tag = f"-set{settings_hash(a.overrides)[:8]}" if a.overrides else ""
    (a.out / f"family{tag}.json").write_text(json.dumps({f: rows[f] for f in forms}, indent=1))


if __name__ == "__main__":
    main()
