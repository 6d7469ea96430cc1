"""``refineloc-e2e extract``: videos, folders or globs -> the feature cache."""

from __future__ import annotations

import sys

import click

from refineloc_e2e.cli.common import (VIDEOS_KEPT, backbone_option, errors_to_exit, extract_options, load_extract_cfg,
                                      ray_option)
from refineloc_e2e.features.batch import extract_batch
from refineloc_e2e.features.distributed import extract_batch_ray
from refineloc_e2e.training.inputs import EXTRACT_OUTPUT


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for <video_id>.npy + <video_id>.json (with --ray: a shared folder every node sees); "
                   "default: features, where `train` looks for them.")
@extract_options
@backbone_option
@ray_option
@errors_to_exit(stopped_hint=VIDEOS_KEPT)
def extract(inputs, out_dir, config_path, overrides, streams, device, flow_weights, quiet, workers, backbone,
            ray_address):
    """Extract [n_snippets, 2048] = [rgb | flow] I3D features for videos, folders (recursive) or globs."""
    cfg = load_extract_cfg(config_path, overrides, streams, device, flow_weights, workers, backbone)
    if out_dir is None:
        out_dir = EXTRACT_OUTPUT
        click.echo(f"features: writing to {EXTRACT_OUTPUT}/ (where `train` looks for them; -o DIR for another)",
                   err=True)
    if ray_address is not None:
        summary = extract_batch_ray(inputs, out_dir, cfg, address=ray_address, progress=not quiet)
    else:
        summary = extract_batch(inputs, out_dir, cfg, progress=not quiet)  # models load on first need
    click.echo(summary.format(), err=True)
    if not summary.ok:
        sys.exit(1)
