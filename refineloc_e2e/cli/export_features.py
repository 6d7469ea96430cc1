"""``refineloc-e2e export-features``: the feature cache -> ActionFormer's or W-TALC's layout."""

from __future__ import annotations

import click

from refineloc_e2e.cli.common import errors_to_exit
from refineloc_e2e.features.exporters import EXPORT_LAYOUTS, export_features as run_export


@click.command("export-features")
@click.argument("features_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), required=True, help="Folder to write.")
@click.option("--layout", type=click.Choice(EXPORT_LAYOUTS), required=True,
              help="actionformer: OUT/<video_id>.npy [T, D] + refineloc_export.json (its config values); "
                   "wtalc: OUT/<name>-I3D-JOINTFeatures.npy (object array) + videoname.npy + duration.npy, "
                   "in W-TALC's THUMOS'14 order (25 fps / 16-frame snippets only).")
@click.option("--name", default=None, help="wtalc: file name stem (default Thumos14reduced for THUMOS ids, "
                                           "else features).")
@errors_to_exit
def export_features(features_dir, out_dir, layout, name):
    """Write extracted (or imported) features in the layout another codebase reads."""
    ids = run_export(features_dir, out_dir, layout=layout, name=name)
    click.echo(f"exported {len(ids)} videos ({layout} layout) into {out_dir}", err=True)
