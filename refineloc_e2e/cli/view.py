"""``refineloc-e2e view``: a results JSON -> one self-contained HTML page with each video and its segments."""

from __future__ import annotations

import click

from refineloc_e2e.cli.common import errors_to_exit
from refineloc_e2e.datasets import GROUND_TRUTH_SPECS
from refineloc_e2e.report.page import write_report


def page_summary(report, out_html) -> str:
    n_segments = sum(len(v.segments) for v in report.videos)
    found = sum(v.source is not None for v in report.videos)
    return (f"wrote {out_html}: {len(report.videos)} videos ({found} with their video file), {n_segments} segments; "
            f"open it in a browser")


@click.command()
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out_html", type=click.Path(dir_okay=False), default="report.html", show_default=True)
@click.option("--video-root", type=click.Path(file_okay=False), default=None,
              help="Folder holding the videos (by file name or video id), where the recorded paths do not lead.")
@click.option("--scores", "scores_dir", type=click.Path(file_okay=False), default=None,
              help="Scores saved by detect --save-scores: draws the attention and class curves.")
@click.option("--ground-truth", default=None, help=f"{GROUND_TRUTH_SPECS}: the annotated segments in their own "
                                                   f"lane, each with its best tIoU.")
@errors_to_exit
def view(results, out_html, video_root, scores_dir, ground_truth):
    """One HTML page (no server, no network) with each video, its segments on a timeline, and its curves."""
    report = write_report(results, out_html, scores_dir=scores_dir, ground_truth=ground_truth, video_root=video_root)
    click.echo(page_summary(report, out_html), err=True)
