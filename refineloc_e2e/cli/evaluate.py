"""``refineloc-e2e evaluate``: mAP of an ActivityNet results JSON against ground truth."""

from __future__ import annotations

import dataclasses

import click

from refineloc_e2e.cli.common import errors_to_exit
from refineloc_e2e.datasets import GROUND_TRUTH_SPECS, load_ground_truth
from refineloc_e2e.evaluation.metrics import (default_tious, evaluate as run_eval, format_table, load_predictions,
                                              parse_tious)
from refineloc_e2e.fileio import atomic_write_json


@click.command()
@click.option("--predictions", type=click.Path(dir_okay=False), required=True, help="ActivityNet results JSON.")
@click.option("--ground-truth", required=True, help=GROUND_TRUTH_SPECS)
@click.option("--tiou", "tious", multiple=True,
              help="tIoU thresholds: 0.5, a list 0.1,0.3,0.5 or a numpy-style range start:stop:step with the stop "
                   "included, 0.5:0.95:0.05 (repeatable; default: THUMOS 0.1:0.7:0.1, else 0.5:0.95:0.05).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the metrics as JSON.")
@click.option("--per-class", is_flag=True, help="Also print per-class AP.")
@click.option("--drop-ambiguous", is_flag=True, help="THUMOS: drop predictions overlapping Ambiguous spans (official kit).")
@errors_to_exit
def evaluate(predictions, ground_truth, tious, json_out, per_class, drop_ambiguous):
    """mAP of predictions against ground truth (ActivityNet protocol)."""
    ds, subset = load_ground_truth(ground_truth)
    preds = load_predictions(predictions)
    result = run_eval(preds, ds, subset=subset, tious=parse_tious(tious) or default_tious(ds.name),
                      drop_ambiguous=drop_ambiguous)
    click.echo(format_table(result, per_class=per_class))
    if json_out:
        atomic_write_json(json_out, dataclasses.asdict(result))
