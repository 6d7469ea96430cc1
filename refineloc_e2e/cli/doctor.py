"""``refineloc-e2e doctor``: installation checks."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from refineloc_e2e.cli.common import DEFAULT_CACHE, errors_to_exit
from refineloc_e2e.tools.doctor import run_checks


@click.command()
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=str(DEFAULT_CACHE), show_default=True,
              help="Feature cache folder to check.")
@errors_to_exit
def doctor(cache_dir):
    """Check the installation: versions, devices, TV-L1, weights and their checksums, cache writability."""
    problems = 0
    for ok, name, detail in run_checks(Path(cache_dir)):
        mark = {True: "ok  ", False: "FAIL", None: "warn"}[ok]
        click.echo(f"[{mark}] {name:<22} {detail}")
        problems += ok is False
    if problems:
        click.echo(f"{problems} problem(s) found", err=True)
        sys.exit(1)
