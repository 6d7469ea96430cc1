"""``refineloc-e2e import-features``: a folder of per-video feature arrays -> the feature cache."""

from __future__ import annotations

from pathlib import Path

import click

from refineloc_e2e.cli.common import errors_to_exit
from refineloc_e2e.datasets import load_dataset
from refineloc_e2e.errors import ConfigError
from refineloc_e2e.features.importers import LAYOUTS, FolderImport, import_feature_folder


def _streams(value: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip())


@click.command("import-features")
@click.argument("src", type=click.Path(file_okay=False))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Feature folder to write (<video_id>.npy + .json, as `extract` writes them).")
@click.option("--fps", type=float, required=True,
              help="Frame rate the windows were cut at (25 for the I3D convention; ActionFormer's THUMOS'14: 30).")
@click.option("--snippet-frames", type=click.IntRange(min=1), required=True, help="Frames per window (I3D: 16).")
@click.option("--stride", "stride_frames", type=click.IntRange(min=1), default=None,
              help="Frames between window starts (default: --snippet-frames, i.e. non-overlapping; "
                   "ActionFormer's THUMOS'14 I3D: 4).")
@click.option("--streams", default="rgb,flow", show_default=True,
              help="The streams present; in a joint file, the order of its halves (e.g. flow,rgb or rgb). "
                   "Written as [rgb | flow] whatever the source order.")
@click.option("--stream-dim", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Width of one stream's feature.")
@click.option("--layout", type=click.Choice(["auto", *LAYOUTS]), default="auto", show_default=True,
              help="joint: {id}.npy with the streams side by side; separate: {id}_rgb.npy + {id}_flow.npy "
                   "(video_features); tree: */rgb/{id}.npy + */flow/{id}.npy (BaS-Net/CoLA "
                   "features/{train,test}/{rgb,flow}); auto: the first that matches (tree, separate, joint).")
@click.option("--pattern", default=None, help="Joint files' name pattern under SRC, e.g. 'i3d_{id}.npz' "
                                              "({id}: the video id, {ext}: npy|npz|pkl|pickle, *: any).")
@click.option("--rgb-pattern", default=None, help="RGB files' name pattern, e.g. '{id}_rgb.npy'.")
@click.option("--flow-pattern", default=None, help="Flow files' name pattern, e.g. '{id}_flow.npy'.")
@click.option("--key", default=None, help="Array name inside .npz / pickled files that hold several.")
@click.option("--backbone", default="unknown", show_default=True,
              help="What computed the features (recorded; a model trained on them demands the same).")
@click.option("--dataset", "dataset_spec", default=None,
              help="thumos14 | activitynet12 | FILE.json: check each video's row count against its duration.")
@click.option("-q", "--quiet", is_flag=True, help="No progress line.")
@errors_to_exit
def import_features(src, out_dir, fps, snippet_frames, stride_frames, streams, stream_dim, layout, pattern,
                    rgb_pattern, flow_pattern, key, backbone, dataset_spec, quiet):
    """Import a folder of per-video feature arrays (.npy/.npz/pickle) with the time base you state."""
    patterns = {k: v for k, v in (("joint", pattern), ("rgb", rgb_pattern), ("flow", flow_pattern)) if v}
    if pattern and (rgb_pattern or flow_pattern):
        raise ConfigError("give --pattern (one file per video) or --rgb-pattern/--flow-pattern (one per stream), "
                          "not both")
    spec = FolderImport(fps=fps, snippet_frames=snippet_frames, stride_frames=stride_frames,
                        streams=_streams(streams), stream_dim=stream_dim, layout=layout, patterns=patterns, key=key,
                        backbone=backbone)
    dataset = load_dataset(dataset_spec) if dataset_spec else None
    ids, used = import_feature_folder(Path(src), Path(out_dir), spec, dataset=dataset,
                                      log=lambda m: click.echo(m, err=True), quiet=quiet)
    click.echo(f"imported {len(ids)} videos ({used} layout, {fps:g} fps, {snippet_frames}-frame windows every "
               f"{stride_frames or snippet_frames} frames) into {out_dir}", err=True)
