"""``refineloc-e2e weights list | fetch``: the pretrained I3D weights of the manifest."""

from __future__ import annotations

import click

from refineloc_e2e.backbone.weights import DEFAULT_WEIGHTS, WEIGHTS_DIR_ENV, fetch, list_weights, weights_dir
from refineloc_e2e.cli.common import errors_to_exit


@click.group()
def weights():
    """List or fetch pretrained I3D weights (the package's manifest; files in ~/.cache/refineloc-e2e/weights
    or $REFINELOC_WEIGHTS_DIR)."""


@weights.command("list")
@errors_to_exit
def weights_list():
    """Show every manifest entry, whether it is present and whether its sha256 matches."""
    click.echo(f"weights folder: {weights_dir()}  (set {WEIGHTS_DIR_ENV} to use another)")
    for w in list_weights():
        state = "present, sha256 ok" if w.get("present") and w.get("sha256_ok") else (
            "present, SHA256 MISMATCH" if w.get("present") else "not present")
        click.echo(f"{w['name']:<28} {w['stream']:<5} {state:<22} {w.get('source', '')}")


@weights.command("fetch")
@click.argument("name", default=DEFAULT_WEIGHTS["rgb"])
@click.option("-q", "--quiet", is_flag=True)
@errors_to_exit
def weights_fetch(name, quiet):
    """Download a fetchable manifest entry (default: the real Kinetics-400 RGB weights) and check its sha256."""
    click.echo(str(fetch(name, quiet=quiet)))
