"""``refineloc-e2e import-wtalc``: W-TALC's joint THUMOS'14 feature file -> the feature cache."""

from __future__ import annotations

from pathlib import Path

import click

from refineloc_e2e.cli.common import errors_to_exit
from refineloc_e2e.features.importers import import_wtalc_features


@click.command("import-wtalc")
@click.argument("features_npy", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Feature folder to write (<video_id>.npy + .json).")
@click.option("--annotations", "annotations_dir", type=click.Path(file_okay=False), default=None,
              help="Folder with the videoname.npy and duration.npy the rows follow (default: W-TALC's "
                   "Thumos14reduced-Annotations, bundled; export-features --layout wtalc writes both).")
@click.option("-q", "--quiet", is_flag=True, help="No progress line.")
@errors_to_exit
def import_wtalc(features_npy, out_dir, annotations_dir, quiet):
    """Import W-TALC's Thumos14reduced-I3D-JOINTFeatures.npy into <video_id>.npy/.json features."""
    n = import_wtalc_features(Path(features_npy), Path(out_dir), quiet=quiet,
                              annotations_dir=Path(annotations_dir) if annotations_dir else None)
    click.echo(f"imported {n} videos into {out_dir}", err=True)
