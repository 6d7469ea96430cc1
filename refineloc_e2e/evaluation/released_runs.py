"""The RefineLoc authors' four released runs, as figures: the real evidence about refinement.

The figures are package data, ``refineloc_e2e/data/released_runs.json``, read on first use and cached. That file
carries its provenance (``source``): HumamAlwassel/RefineLoc at commit 75e7ad8 ("WACV 2021 release" + "Added GT
files"), ``trained_models/<folder>/events.out.tfevents.*``, the TensorBoard logs of the authors' best runs, read
with tensorboard's ``EventAccumulator`` by ``python -m benchmarks.experiments.released_runs --logs
RefineLoc/trained_models --write`` (``--check`` compares the file with the event files). The repository has no
licence, so its files are not copied; these are figures read from them (public facts), kept here once for the
tests, the docs and the run report.

What the logs hold and how it maps (their train.py), per run under ``runs``:
- ``map_by_iteration`` from ``refinement_valid/refined_avg_mAP`` at step k: iteration k's test-split score (their
  code calls the test split "valid") at the epoch of lowest test loss; mAP@0.5 (%) on THUMOS'14, average mAP over
  tIoU 0.5:0.95 (%) on ActivityNet v1.2 (their ``tiou_thresholds``).
- ``pseudo_fg``, ``pseudo_bg``, ``true_fg``, ``true_bg`` from ``refinement_train/{total_pseudo_fg,total_pseudo_bg,
  num_true_fg,num_true_bg}`` at step (k + 1) * max_epoch: the pseudo labels that iteration k's model made for
  iteration k + 1 (``pseudo_fg[0]`` labels iteration 1), counted over all training snippets, and how many of them
  agree with the temporal annotations. The last entry labels an iteration that refinement early stopping never
  trained.
- ``valid_loss_by_epoch``, ``valid_map_by_epoch`` from ``valid/loss`` and ``valid/avg_mAP`` at step
  k * max_epoch + epoch (epoch 1-based): per epoch of iteration k.
- ``config`` from ``config/*``: the hyper-parameters (stream 0 = first 1024-d half of their features, 1 = second,
  2 = both).

``load_runs()`` gives the runs; the module names ``RELEASED_RUNS``, ``LOGGED`` (the file's ``runs``),
``SOURCE_REPO``, ``SOURCE_COMMIT`` and ``EVENT_FILES`` are read from the file when first used.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from refineloc_e2e.errors import RefineLocError
from refineloc_e2e.fileio import package_data

DATA_FILE = package_data("data", "released_runs.json")
# the metric of ``map_by_iteration``, per dataset
METRICS = {"thumos14": "mAP@0.5", "activitynet12": "average mAP 0.5:0.95"}
_STREAMS = {0: "stream 0: flow only", 1: "stream 1: RGB only", 2: "stream 2: both"}
# The I3D run of each dataset: the reference a generated benchmark of that layout must reproduce
# (issue 25), and the reference line of the run report.
REFERENCE_FOR_DATASET = {"thumos14": "thumos14_i3d", "activitynet12": "activitynet12_i3d"}


@functools.cache
def document() -> dict[str, Any]:
    """The data file as read (``source`` and ``runs``); read once, shared: do not modify it."""
    try:
        doc = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RefineLocError(f"{DATA_FILE}: cannot read the released runs' figures ({e}); reinstall refineloc-e2e") \
            from e
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), dict) or not isinstance(doc.get("source"), dict):
        raise RefineLocError(f"{DATA_FILE}: not the released runs' figures (expected an object with 'source' and "
                             f"'runs'); reinstall refineloc-e2e")
    return doc


@dataclass(frozen=True)
class ReleasedRun:
    name: str                       # thumos14_i3d, thumos14_tsn, activitynet12_i3d, activitynet12_tsn
    dataset: str                    # thumos14 | activitynet12 (our dataset names)
    features: str                   # i3d | tsn (their "untrimmednet" folders)
    config: dict                    # logged config/* values (subset)
    map_by_iteration: tuple         # (%) iteration 0, 1, ... in the dataset's metric (METRICS)
    pseudo_fg: tuple                # training snippets marked fg for iteration 1, 2, ... (by the previous model)
    pseudo_bg: tuple
    true_fg: tuple                  # of pseudo_fg, annotated fg
    true_bg: tuple                  # of pseudo_bg, annotated bg
    valid_loss_by_epoch: tuple = field(repr=False)  # [iteration][epoch - 1]: test-split loss
    valid_map_by_epoch: tuple = field(repr=False)   # [iteration][epoch - 1]: test-split score (%)

    @classmethod
    def from_logged(cls, name: str, logged: dict) -> "ReleasedRun":
        dataset, features = name.rsplit("_", 1)
        return cls(name=name, dataset=dataset, features=features, config=dict(logged["config"]),
                   map_by_iteration=tuple(logged["map_by_iteration"]),
                   pseudo_fg=tuple(logged["pseudo_fg"]), pseudo_bg=tuple(logged["pseudo_bg"]),
                   true_fg=tuple(logged["true_fg"]), true_bg=tuple(logged["true_bg"]),
                   valid_loss_by_epoch=tuple(tuple(e) for e in logged["valid_loss_by_epoch"]),
                   valid_map_by_epoch=tuple(tuple(e) for e in logged["valid_map_by_epoch"]))

    @property
    def metric(self) -> str:
        return METRICS[self.dataset]

    @property
    def stream_label(self) -> str:
        return _STREAMS[int(self.config["stream"])]

    @property
    def source(self) -> str:
        source = document()["source"]
        return f"{source['repository']}@{source['commit']}:{source['event_files'][self.name]}"

    @property
    def max_epoch(self) -> int:
        return int(self.config["max_epoch"])

    def fg_fraction(self) -> list[float]:
        """Pseudo-label fg fraction for iteration 1, 2, ...: total_pseudo_fg / (fg + bg)."""
        return [f / (f + b) for f, b in zip(self.pseudo_fg, self.pseudo_bg)]

    def precision(self) -> list[float]:
        """num_true_fg / total_pseudo_fg, for iteration 1, 2, ..."""
        return [t / f if f else 0.0 for t, f in zip(self.true_fg, self.pseudo_fg)]

    def recall(self) -> list[float]:
        """num_true_fg / total_fg, for iteration 1, 2, ... (total_fg = true_fg + pseudo-bg snippets annotated fg)."""
        return [t / (t + b - tb) for t, b, tb in zip(self.true_fg, self.pseudo_bg, self.true_bg)]

    def truth_fg_fraction(self) -> float:
        """The annotated foreground fraction of the training snippets."""
        t, b, tb, f = self.true_fg[0], self.pseudo_bg[0], self.true_bg[0], self.pseudo_fg[0]
        return (t + b - tb) / (f + b)

    def best_iteration(self) -> int:
        return max(range(len(self.map_by_iteration)), key=lambda k: (self.map_by_iteration[k], -k))


@functools.cache
def load_runs() -> Mapping[str, ReleasedRun]:
    """The four released runs by name (thumos14_i3d, thumos14_tsn, activitynet12_i3d, activitynet12_tsn)."""
    return MappingProxyType({name: ReleasedRun.from_logged(name, logged) for name, logged in document()["runs"].items()})


# Detection coverage of a released run's published predictions on the VALIDATION split (their test split): the
# pooled fraction of those videos' annotated duration that the union of iteration k's detections covers. Read from
# SOURCE_REPO@SOURCE_COMMIT:<PREDICTION_FILES path> with the bundled ActivityNet v1.2 annotations by
# ``python -m benchmarks.experiments.released_coverage --repo RefineLoc`` (``--check`` compares). The guard's
# reference c0 (training/guard.py) is the same quantity on held-out TRAINING videos, which no released file has:
# these are its proxy (docs/refinement.md "The coverage rule against the released runs"). Annotated share of the
# same videos: 0.6545. Only the ActivityNet I3D run published predictions.
PREDICTION_FILES = {
    ("activitynet12_i3d", 0): "trained_models/activitynet_v1-2/best_model_i3d/valid_predictions_iteration_0000.json",
    ("activitynet12_i3d", 1): "trained_models/activitynet_v1-2/best_model_i3d/valid_predictions_iteration_0001.json",
    ("activitynet12_i3d", 3): "trained_models/activitynet_v1-2/best_model_i3d/valid_predictions_iteration_0003.json",
}
VALID_DETECTION_COVERAGE = {"activitynet12_i3d": {0: 0.7765, 1: 0.9065, 3: 0.9701}}

_FROM_FILE = {
    "RELEASED_RUNS": load_runs,
    "LOGGED": lambda: document()["runs"],
    "SOURCE_REPO": lambda: document()["source"]["repository"],
    "SOURCE_COMMIT": lambda: document()["source"]["commit"],
    "EVENT_FILES": lambda: document()["source"]["event_files"],
}


def __getattr__(name: str) -> Any:  # PEP 562: the names read from the data file, on first use
    if name in _FROM_FILE:
        return _FROM_FILE[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
