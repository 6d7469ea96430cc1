"""``refineloc-e2e demo``: the whole tool end to end (behind ``make demo``)."""

from __future__ import annotations

import click

from refineloc_e2e.cli.common import errors_to_exit
from refineloc_e2e.tools.demo import run_demo


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="demo_out", show_default=True)
@click.option("--size", type=click.Choice(["default", "tiny"]), default="default", show_default=True,
              help="tiny: the test suite's smaller run of the same path.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@errors_to_exit
def demo(out_dir, size, quiet):
    """Run the whole tool end to end on bundled real clips + a generated weakly-labelled dataset."""
    run_demo(out_dir, size=size, progress=not quiet, echo=click.echo)
