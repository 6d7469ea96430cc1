"""A training run's TensorBoard event files (``<run_dir>/tensorboard/``), under the released code's tag names.

Written with ``torch.utils.tensorboard.SummaryWriter`` when the ``tensorboard`` package is installed (the optional
extra: ``pip install 'refineloc-e2e[tensorboard]'``). torch's writer rather than tensorboardX: it ships with torch,
and its one dependency, ``tensorboard``, is also the reader (``EventAccumulator``) that the tests and
``benchmarks.experiments.released_runs`` use, so one extra serves both; tensorboardX would be a second package
that still needs ``tensorboard`` to read the files back. Without the package the run logs one line saying how to
get curves, and nothing else changes (metrics.json and report.png hold the same figures).

Tags and steps follow the released RefineLoc code (HumamAlwassel/RefineLoc ``src/train.py``), ``max_epoch`` being
our ``train.epochs``, so a run overlays the authors' released event files in one TensorBoard:

- per epoch, at ``k * max_epoch + epoch`` (epoch 1-based): ``train/loss``, ``learning_rate``;
- the pseudo labels of iteration k (made by iteration k - 1's model), at ``k * max_epoch``:
  ``refinement_train/total_pseudo_fg``, ``refinement_train/total_pseudo_bg`` and, where the training videos have
  temporal annotations, ``refinement_train/num_true_fg/total_pseudo_fg`` (precision) and
  ``refinement_train/num_true_fg/total_fg`` (recall);
- per iteration, at step k: ``refinement_valid/refined_avg_mAP``, the test split in the released metric (%).

Our own quantities go under ``refineloc/`` (the released ``valid/*`` tags are test-split figures; our held-out
loss is not). docs/conventions.md has the table. A resumed run (``--resume``) continues the same folder: what an
interrupted iteration had logged is purged (``purge_step``), so the curves read as one uninterrupted run; a run
resumed without earlier event files is first back-filled from metrics.json.
"""

from __future__ import annotations

import logging
from pathlib import Path

from refineloc_e2e import __version__
from refineloc_e2e.evaluation.metrics import ACTIVITYNET_TIOUS
from refineloc_e2e.model.postprocess import ATTENTION_NORMS

try:  # the optional extra; torch.utils.tensorboard raises ImportError when the tensorboard package is missing
    from torch.utils.tensorboard import SummaryWriter
except ImportError:
    SummaryWriter = None

log = logging.getLogger(__name__)

HAVE_TENSORBOARD = SummaryWriter is not None
TENSORBOARD_DIR = "tensorboard"  # under the run folder
INSTALL_HINT = "pip install 'refineloc-e2e[tensorboard]'"
FLUSH_S = 15  # the writer's own flush period: epochs show up in a watching TensorBoard within this


def released_metric(test: dict | None) -> tuple[str, float] | None:
    """(name, value in %) of an iteration's test figures in the released code's metric, or None.

    The released code averages mAP over its ``tiou_thresholds``: 0.5:0.05:0.95 for ActivityNet, 0.5 alone for
    THUMOS'14. A run evaluated at 0.5:0.95 reports that average; else mAP@0.5 when 0.5 is evaluated (THUMOS'14's
    headline); else its average over ``eval_tious``."""
    if not test:
        return None
    tious = [round(t, 4) for t in test["tious"]]
    if tious == [round(t, 4) for t in ACTIVITYNET_TIOUS]:
        return "average mAP 0.5:0.95", 100.0 * test["average_map"]
    if 0.5 in tious:
        return "mAP@0.5", 100.0 * test["map_per_tiou"][tious.index(0.5)]
    return f"average mAP {tious[0]:g}:{tious[-1]:g}", 100.0 * test["average_map"]


class TrainingLog:
    """The event files of one run; every method does nothing when the extra is missing (``writer`` None)."""

    def __init__(self, writer, max_epoch: int, guard_enabled: bool):
        self.writer = writer
        self.max_epoch = max_epoch
        self.guard_enabled = guard_enabled
        self._live: dict[int, int] = {}  # iteration -> epochs logged while it trained

    @classmethod
    def open(cls, run_dir: Path, cfg, done: list[dict], *, enabled: bool = True) -> "TrainingLog":
        """The log of ``run_dir`` (``cfg``: its RunConfig; ``done``: the metrics of iterations completed before a
        resume). ``enabled`` False, or the extra missing (one info line), gives a log that writes nothing."""
        max_epoch, guard = cfg.train.epochs, cfg.guard.enabled
        if not enabled:
            return cls(None, max_epoch, guard)
        if not HAVE_TENSORBOARD:
            log.info(f"TensorBoard curves of this run: {INSTALL_HINT} (from a checkout: pip install "
                     f"'.[tensorboard]'); metrics.json and report.png have the same figures")
            return cls(None, max_epoch, guard)
        folder = Path(run_dir) / TENSORBOARD_DIR
        earlier = any(folder.glob("events.out.tfevents.*"))
        # resumed: what an interrupted iteration k = len(done) logged is hidden (TensorBoard purges steps >=
        # purge_step of the earlier files) from the step of its pseudo labels, k * max_epoch; that is also the step
        # of iteration k - 1's last epoch, which is logged again from metrics.json. Cut in iteration 0 (nothing
        # done): everything earlier, from step 0
        purge = len(done) * max_epoch if earlier else None
        writer = SummaryWriter(log_dir=str(folder), purge_step=purge, flush_secs=FLUSH_S)
        out = cls(writer, max_epoch, guard)
        writer.add_text("refineloc/run", f"refineloc-e2e {__version__}"
                        + (f", resumed after iteration {len(done) - 1}" if done else ""), len(done))
        if done and not earlier:  # resumed without earlier event files: the completed iterations from metrics.json
            for entry in done:
                if entry["iteration"] > 0 and entry.get("pseudo"):
                    out.pseudo_labels(entry["iteration"], entry["pseudo"], None)
                out.iteration(entry)
        elif done:
            out._epochs(done[-1], from_step=purge)
            writer.flush()
        log.info(f"TensorBoard: tensorboard --logdir {folder}")
        return out

    def _scalar(self, tag: str, value, step: int) -> None:
        if value is not None:
            self.writer.add_scalar(tag, float(value), step)

    def on_epoch(self, k: int):
        """The ``fit_model(on_epoch=...)`` callback of iteration ``k``: its epoch's figures, live."""
        if self.writer is None:
            return None
        self._live[k] = 0

        def record(e: dict) -> None:
            self._epoch(k, e["epoch"], e["train_loss"], e["heldout_loss"], e["lr"], e["epoch_s"])
            self._live[k] = e["epoch"]
        return record

    def _epoch(self, k: int, epoch: int, train_loss, heldout_loss, lr, epoch_s) -> None:
        step = k * self.max_epoch + epoch
        self._scalar("train/loss", train_loss, step)
        self._scalar("learning_rate", lr, step)
        self._scalar("refineloc/heldout/loss", heldout_loss, step)
        self._scalar("refineloc/epoch_s", epoch_s, step)

    def _epochs(self, entry: dict, from_step: int) -> None:
        """The epochs of a metrics.json entry whose step is >= ``from_step`` (a fit-cache hit, a back-fill)."""
        k = entry["iteration"]
        lrs, held, secs = (entry.get(key) or [] for key in ("lr_by_epoch", "heldout_losses", "epoch_s"))
        for i, loss in enumerate(entry.get("train_losses") or []):
            if k * self.max_epoch + i + 1 >= from_step:
                self._epoch(k, i + 1, loss, held[i] if i < len(held) else None, lrs[i] if i < len(lrs) else None,
                            secs[i] if i < len(secs) else None)

    def pseudo_labels(self, k: int, pseudo: dict, guard_reason: str | None) -> None:
        """Iteration ``k``'s pseudo labels (``metrics.json``'s ``pseudo``) and the guard's decision on them."""
        if self.writer is None:
            return
        step = k * self.max_epoch
        self._scalar("refinement_train/total_pseudo_fg", pseudo["n_fg"], step)
        self._scalar("refinement_train/total_pseudo_bg", pseudo["n_snippets"] - pseudo["n_fg"], step)
        if "precision_vs_truth" in pseudo:  # the training videos have temporal annotations; 0 for 0 / 0 as released
            self._scalar("refinement_train/num_true_fg/total_pseudo_fg", pseudo["precision_vs_truth"] or 0.0, step)
            self._scalar("refinement_train/num_true_fg/total_fg", pseudo["recall_vs_truth"] or 0.0, step)
        self._scalar("refineloc/pseudo/fg_fraction", pseudo["fg_fraction"], step)
        if self.guard_enabled:  # at the labels' step too: a resumed run purges and rewrites them with the labels
            self._scalar("refineloc/guard/accepted", guard_reason is None, step)
            if guard_reason:
                self.writer.add_text("refineloc/guard", guard_reason, step)
        self.writer.flush()

    def iteration(self, entry: dict) -> None:
        """A completed iteration (its ``metrics.json`` entry): the epochs not logged live, then its own figures."""
        if self.writer is None:
            return
        k = entry["iteration"]
        self._epochs(entry, from_step=k * self.max_epoch + self._live.get(k, 0) + 1)  # those not logged live
        metric = released_metric(entry.get("test"))
        if metric is not None:
            self._scalar("refinement_valid/refined_avg_mAP", metric[1], k)
        test = entry.get("test")
        if test:
            self._scalar("refineloc/test/average_mAP", 100.0 * test["average_map"], k)
            for t, m in zip(test["tious"], test["map_per_tiou"]):
                self._scalar(f"refineloc/test/mAP@{t:.2f}", 100.0 * m, k)
        h = entry.get("heldout") or {}
        for key, scale in (("wap", 100.0), ("wap_dup", 100.0), ("coverage", 1.0), ("n_detections", 1.0),
                           ("heldout_map", 100.0)):
            if h.get(key) is not None:
                self._scalar(f"refineloc/heldout/{key}", scale * h[key], k)
        self._scalar("refineloc/heldout/best_loss", entry.get("heldout_loss"), k)
        self._scalar("refineloc/heldout/best_video_loss", entry.get("heldout_video_loss"), k)
        self._scalar("refineloc/best_epoch", entry.get("best_epoch"), k)
        self._scalar("refineloc/iteration_s", entry.get("wall_s"), k)
        norm = entry.get("attention_norm")
        if norm:
            self._scalar("refineloc/detection_norm/chosen", ATTENTION_NORMS.index(norm["chosen"]), k)
            for name, coverage in norm["coverage"].items():
                self._scalar(f"refineloc/detection_norm/coverage_{name}", coverage, k)
            self.writer.add_text("refineloc/detection_norm", f"{norm['chosen']}: {norm['reason']}", k)
        self.writer.flush()

    def selection(self, selected: int, reason: str, n_trained: int) -> None:
        """The saved iteration, at the step where the last trained iteration ends (``n_trained * max_epoch``: a
        resumed run purges it there and logs it again)."""
        if self.writer is None:
            return
        step = n_trained * self.max_epoch
        self._scalar("refineloc/selected_iteration", selected, step)
        self.writer.add_text("refineloc/selection", f"saved iteration {selected}: {reason}", step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
