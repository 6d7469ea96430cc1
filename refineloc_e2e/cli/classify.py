"""``refineloc-e2e classify``: Kinetics-400 top-k of the RGB stream (checks weights and preprocessing)."""

from __future__ import annotations

import click

from refineloc_e2e.backbone.classify import classify as run_classify
from refineloc_e2e.backbone.weights import DEFAULT_WEIGHTS
from refineloc_e2e.cli.common import errors_to_exit
from refineloc_e2e.device import resolve_device


@click.command()
@click.argument("video", type=click.Path())
@click.option("-k", "--top-k", default=5, show_default=True, help="How many classes to print.")
@click.option("--weights", default=None,
              help=f"RGB weights: manifest name or file (default {DEFAULT_WEIGHTS['rgb']}).")
@click.option("--device", default="auto", show_default=True)
@errors_to_exit
def classify(video, top_k, weights, device):
    """Kinetics-400 top-k of the RGB I3D stream for a clip (checks weights and preprocessing).

    The whole-clip answer; for *when* each action happens, `detect VIDEO --model kinetics400` (docs/kinetics.md)."""
    for label, logit, prob in run_classify(video, k=top_k, weights=weights, device=str(resolve_device(device))):
        click.echo(f"{prob:9.6f}  {logit:8.3f}  {label}")
