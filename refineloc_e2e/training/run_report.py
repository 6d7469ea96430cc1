"""``<run_dir>/report.png``: a training run at a glance, no TensorBoard needed.

Three panels drawn from ``metrics.json``: the test mAP per iteration (in the released code's metric,
``tensorboard_log.released_metric``) with the held-out weak-label mAP that selection reads; the pseudo labels per
iteration (foreground fraction, and precision / recall where the training videos have temporal annotations) with
the guard's bands and decisions; the held-out loss per epoch over the whole run (x = the TensorBoard step,
``k * train.epochs + epoch``). The saved iteration is marked in each. A run on the bundled thumos14 or activitynet12
annotations also shows the authors' released I3D run of that dataset (``evaluation.released_runs``) as a reference,
in its metric and labelled with its source.

matplotlib's object API on the Agg canvas (no pyplot, no display); the file is written atomically.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from refineloc_e2e import __version__
from refineloc_e2e.evaluation.released_runs import REFERENCE_FOR_DATASET, ReleasedRun, load_runs
from refineloc_e2e.fileio import atomic_writer
from refineloc_e2e.training.tensorboard_log import released_metric

REPORT_NAME = "report.png"
_OURS, _REF = "-", ":"  # line styles: this run, the authors' released run


def reference_run(dataset_name: str) -> ReleasedRun | None:
    """The authors' released I3D run of a bundled dataset (thumos14, activitynet12), else None."""
    name = REFERENCE_FOR_DATASET.get(dataset_name)
    return load_runs()[name] if name else None  # the data file is read here, once


def _mark_selected(ax, selected: int | None) -> None:
    if selected is not None:
        ax.axvspan(selected - 0.3, selected + 0.3, color="gold", alpha=0.25, lw=0, label=f"saved iteration {selected}")


def _map_panel(ax, its: list[dict], guard: dict | None, selected: int | None, ref: ReleasedRun | None,
               n_show: int) -> str | None:
    """Test mAP (and held-out wAP) per iteration; returns the metric's name (None without test videos)."""
    ks = [e["iteration"] for e in its]
    metrics = [released_metric(e.get("test")) for e in its]
    name = next((m[0] for m in metrics if m), None)
    if name:
        pts = [(k, m[1]) for k, m in zip(ks, metrics) if m]
        ax.plot(*zip(*pts), _OURS, marker="o", color="C0", label=f"this run: test {name}")
        if selected is not None and selected in ks and metrics[ks.index(selected)]:
            ax.plot([selected], [metrics[ks.index(selected)][1]], marker="*", ms=16, color="C0", ls="")
    wap = [(k, 100 * e["heldout"]["wap"]) for k, e in zip(ks, its) if (e.get("heldout") or {}).get("wap") is not None]
    if wap:
        ax.plot(*zip(*wap), "--", marker="s", ms=4, color="C2", label="this run: held-out weak-label mAP (wAP)")
    if ref is not None and name == ref.metric:
        m = min(len(ref.map_by_iteration), n_show)
        ax.plot(range(m), ref.map_by_iteration[:m], _REF, marker=".", color="C3",
                label=f"authors' released {ref.features.upper()} run: test {ref.metric} "
                      f"(iterations 0-{m - 1} of {len(ref.map_by_iteration)})")
    if guard:
        ax.axvline(guard["iteration"], color="tab:red", ls="--", lw=1, label=f"guard stopped at {guard['iteration']}")
    _mark_selected(ax, selected)
    ax.set_ylabel("%")
    ax.set_title(f"detection: test {name or '(no test videos)'} per iteration", fontsize=10, loc="left")
    return name


def _pseudo_panel(ax, its: list[dict], guard: dict | None, selected: int | None, ref: ReleasedRun | None, cfg,
                  n_show: int) -> None:
    """Pseudo-label fg fraction, P and R per iteration (k >= 1), the guard's bands and its refusal."""
    rows = [(e["iteration"], e["pseudo"]) for e in its if e.get("pseudo")]
    if guard and guard.get("pseudo"):
        rows.append((guard["iteration"], guard["pseudo"]))
    for key, label, color in (("fg_fraction", "fg fraction", "C0"), ("precision_vs_truth", "precision", "C1"),
                              ("recall_vs_truth", "recall", "C2")):
        pts = [(k, p[key]) for k, p in rows if p.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), _OURS, marker="o", color=color, label=f"this run: {label}")
    if guard and guard.get("pseudo"):
        ax.plot([guard["iteration"]], [guard["pseudo"]["fg_fraction"]], "x", ms=12, mew=2.5, color="tab:red",
                label="refused by the guard (not trained)")
    if cfg.guard.enabled:  # the guard's decision on each iteration's pseudo labels, along the top
        for k, _ in rows:
            ok = not guard or k != guard["iteration"]
            ax.text(k, 1.04, "guard: accepted" if ok else "guard: refused", ha="center", va="bottom", fontsize=7,
                    color="tab:green" if ok else "tab:red")
    c0 = guard.get("reference_coverage") if guard else None
    if c0 is None and its:
        c0 = (its[0].get("heldout") or {}).get("coverage")
    if cfg.guard.enabled and cfg.guard.coverage_ratio and c0 is not None and c0 >= cfg.guard.min_reference_coverage:
        r = cfg.guard.coverage_ratio
        ax.axhspan(c0 / r, min(c0 * r, 1.0), color="C0", alpha=0.08, lw=0,
                   label=f"guard: iteration 0's held-out coverage {c0:.2f} x/÷ {r:g}"
                   + (" (warns; the range refuses)" if cfg.guard.coverage_rule == "with_range"
                      and cfg.pseudo.fg_fraction_range is not None else ""))
    if cfg.guard.enabled and cfg.pseudo.fg_fraction_range is not None:
        lo, hi = cfg.pseudo.fg_fraction_range
        for y in (lo, hi):
            ax.axhline(y, color="grey", lw=0.8, ls="-.")
        ax.plot([], [], color="grey", lw=0.8, ls="-.", label=f"guard: pseudo.fg_fraction_range [{lo:g}, {hi:g}]")
    if ref is not None:
        m = min(len(ref.pseudo_fg), max(n_show - 1, 0))
        for values, color in ((ref.fg_fraction(), "C0"), (ref.precision(), "C1"), (ref.recall(), "C2")):
            ax.plot(range(1, m + 1), values[:m], _REF, marker=".", color=color, alpha=0.7)
        if m:
            ax.plot([], [], _REF, color="grey", label=f"authors' released {ref.features.upper()} run (same colours)")
    _mark_selected(ax, selected)
    ax.set_ylim(0.0, 1.1)  # fractions; the guard's decisions above 1
    ax.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_title("pseudo labels of iteration k (made by k - 1's model)" if rows else
                 "pseudo labels: none (iteration 0 only)", fontsize=10, loc="left")


def _loss_panel(ax, its: list[dict], selected: int | None, max_epoch: int) -> None:
    """Held-out (and training) loss per epoch, x = k * max_epoch + epoch; the kept epoch of each iteration."""
    for e in its:
        k, base = e["iteration"], e["iteration"] * max_epoch
        held, train = e.get("heldout_losses") or [], e.get("train_losses") or []
        first = k == its[0]["iteration"]
        if train:
            ax.plot([base + i + 1 for i in range(len(train))], train, color="grey", lw=0.8, alpha=0.6,
                    label="training loss" if first else None)
        if held:
            ax.plot([base + i + 1 for i in range(len(held))], held, color="C0", lw=1.3,
                    label="held-out loss (training videos held out)" if first else None)
            b = e.get("best_epoch", -1)
            if 0 <= b < len(held):
                ax.plot([base + b + 1], [held[b]], "o", color="C1", ms=5, label="kept epoch" if first else None)
        if k:
            ax.axvline(base + 0.5, color="black", lw=0.5, alpha=0.5)
        ax.text(base + 1, 1.0, f" it {k}", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
        if k == selected:
            ax.axvspan(base + 0.5, base + max_epoch + 0.5, color="gold", alpha=0.2, lw=0,
                       label=f"saved iteration {selected}")
    ax.set_xlabel(f"step = iteration x {max_epoch} + epoch (as in TensorBoard)")
    ax.set_ylabel("eq. 4 loss")
    ax.set_title("loss per epoch", fontsize=10, loc="left")


def write_report(path: str | Path, metrics: dict, cfg, *, title: str | None = None) -> Figure:
    """Draw ``metrics`` (a run's metrics.json; ``cfg``: its RunConfig) to ``path`` atomically; returns the figure."""
    its = metrics.get("iterations") or []
    guard, selected = metrics.get("guard"), metrics.get("selected_iteration")
    ref = reference_run(metrics.get("dataset", ""))
    n_show = max([e["iteration"] for e in its] + [guard["iteration"] if guard else 0]) + 1
    fig = Figure(figsize=(13, 8.5), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplot_mosaic([["map", "pseudo"], ["loss", "loss"]], height_ratios=[1.1, 1])
    name = _map_panel(axes["map"], its, guard, selected, ref, n_show)
    _pseudo_panel(axes["pseudo"], its, guard, selected, ref, cfg, n_show)
    _loss_panel(axes["loss"], its, selected, cfg.train.epochs)
    for key in ("map", "pseudo"):
        axes[key].set_xlabel("refinement iteration")
        axes[key].set_xticks(range(n_show))
        axes[key].set_xlim(-0.5, n_show - 0.5)
        axes[key].grid(alpha=0.3)
        axes[key].legend(fontsize=7, loc="best")
    axes["loss"].grid(alpha=0.3)
    axes["loss"].legend(fontsize=7, loc="best")
    why = metrics.get("select_reason", "")
    head = title or f"{metrics.get('dataset', '')} run"
    fig.suptitle(f"{head}  (refineloc-e2e {metrics.get('package_version', __version__)})\n"
                 + textwrap.shorten(f"saved iteration {selected}: {why}", 170), fontsize=10)
    notes = []
    if guard:
        notes.append(f"guard: {guard['reason']}")
    if ref is not None and name == ref.metric:
        notes.append(f"reference: the authors' released run {ref.name} ({ref.stream_label}, {ref.max_epoch} epochs "
                     f"per iteration), {ref.source}")
    elif ref is not None:
        notes.append(f"no reference line: this run's test metric is {name}, the released run's {ref.metric}")
    if notes:
        fig.text(0.005, 0.002, "\n".join(textwrap.fill(n, 190) for n in notes), fontsize=7, va="bottom")
        bottom = 0.022 * len(notes) + 0.01  # room for the notes under the panels
        fig.get_layout_engine().set(rect=(0, bottom, 1, 1 - bottom))
    with atomic_writer(path, "wb") as f:
        fig.savefig(f, format="png")
    return fig
