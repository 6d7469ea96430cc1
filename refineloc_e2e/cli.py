"""The ``refineloc-e2e`` command: a thin click layer over the library (parse -> config -> library call -> write).

Every ``RefineLocError`` becomes one line on stderr (``error: <file>: <cause>``) and exit status 1;
a batch in which some inputs failed exits with status 1 after finishing the others.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from . import __version__
from .errors import RefineLocError

DEFAULT_CACHE = Path.home() / ".cache" / "refineloc-e2e" / "features"


def _errors_to_exit(fn):
    """Turn library errors into one line and a non-zero exit (Ctrl-C: 130, finished work kept)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RefineLocError as e:
            raise UserError(str(e)) from None
        except KeyboardInterrupt:
            click.echo("error: interrupted; finished work is kept, run the same command again to continue",
                       err=True)
            sys.exit(130)
    return wrapper


class UserError(click.ClickException):
    """A ``RefineLocError`` on the command line: one ``error: <message>`` line on stderr, exit 1."""

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@click.group()
@click.version_option(__version__, prog_name="refineloc-e2e")
def main() -> None:
    """Weakly-supervised temporal action localisation: videos -> I3D features -> RefineLoc -> segments."""


def _extract_options(fn):
    fn = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                      help="Extraction config YAML (default: built-in, see configs/extract.yaml).")(fn)
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="Override a config value, e.g. --set flow.preset=paper (repeatable).")(fn)
    fn = click.option("--streams", type=click.Choice(["rgb", "flow", "both"]), default=None,
                      help="Which I3D streams to compute (default both: [rgb | flow]).")(fn)
    fn = click.option("--device", default=None, help="auto | cpu | cuda (default auto).")(fn)
    fn = click.option("--flow-weights", default=None,
                      help="Flow stream weights: manifest name, a file (e.g. flow_imagenet.pt), "
                           "or cross-modality-from-rgb (default).")(fn)
    fn = click.option("-q", "--quiet", is_flag=True, help="No progress bars.")(fn)
    return _workers_option(fn)


def _workers_option(fn):
    """``--workers N``: passed on as the ``workers=N`` override, so commands keep their own signature."""
    @functools.wraps(fn)
    def with_workers(*args, workers=None, overrides=(), **kwargs):
        if workers is not None:
            overrides = (*overrides, f"workers={workers}")
        return fn(*args, overrides=overrides, **kwargs)

    return click.option("--workers", type=click.IntRange(min=1), default=None,
                        help="Optical-flow processes (default 1 = in this process; the cores you can spare, "
                             "e.g. 2 on a 2-core machine). Does not change the features.")(with_workers)


def _load_extract_cfg(config_path, overrides, streams, device, flow_weights):
    from .extract import load_extract_config

    extra = list(overrides)
    if streams:
        extra.append(f"streams={streams}")
    if device:
        extra.append(f"device={device}")
    if flow_weights:
        extra.append(f"flow_weights={flow_weights}")
    return load_extract_config(config_path, extra)


def _announce_flow_init(extractor, quiet: bool) -> None:
    prov = extractor.provenance.get("flow")
    if prov is not None:
        click.echo(f"flow stream initialised from: {prov.get('weights_id')} ({prov.get('init')})", err=True)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default="features", show_default=True,
              help="Folder for <video_id>.npy + <video_id>.json.")
@_extract_options
@_errors_to_exit
def extract(inputs, out_dir, config_path, overrides, streams, device, flow_weights, quiet):
    """Extract [n_snippets, 2048] = [rgb | flow] I3D features for videos, folders (recursive) or globs."""
    from .batch import extract_batch

    cfg = _load_extract_cfg(config_path, overrides, streams, device, flow_weights)
    summary = extract_batch(inputs, out_dir, cfg, progress=not quiet)  # models load on first need
    click.echo(summary.format(), err=True)
    if not summary.ok:
        sys.exit(1)


@main.command()
@click.argument("video", type=click.Path())
@click.option("-k", "--top-k", default=5, show_default=True, help="How many classes to print.")
@click.option("--weights", default=None, help="RGB weights: manifest name or file (default i3d-kinetics400-rgb).")
@click.option("--device", default="auto", show_default=True)
@_errors_to_exit
def classify(video, top_k, weights, device):
    """Kinetics-400 top-k of the RGB I3D stream for a clip (checks weights and preprocessing)."""
    from .classify import classify as run_classify
    from .extract import resolve_device

    for label, logit, prob in run_classify(video, k=top_k, weights=weights, device=str(resolve_device(device))):
        click.echo(f"{prob:9.6f}  {logit:8.3f}  {label}")


@main.group()
def weights():
    """List or fetch pretrained I3D weights (weights/manifest.json)."""


@weights.command("list")
@_errors_to_exit
def weights_list():
    """Show every manifest entry, whether it is present and whether its sha256 matches."""
    from .backbone.weights import list_weights

    for w in list_weights():
        state = "present, sha256 ok" if w.get("present") and w.get("sha256_ok") else (
            "present, SHA256 MISMATCH" if w.get("present") else "not present")
        click.echo(f"{w['name']:<28} {w['stream']:<5} {state:<22} {w.get('source', '')}")


@weights.command("fetch")
@click.argument("name", default="i3d-kinetics400-rgb")
@click.option("-q", "--quiet", is_flag=True)
@_errors_to_exit
def weights_fetch(name, quiet):
    """Download a fetchable manifest entry (default: the real Kinetics-400 RGB weights) and check its sha256."""
    from .backbone.weights import fetch

    path = fetch(name, quiet=quiet)
    click.echo(str(path))


def _register_more() -> None:
    from . import cli_train  # noqa: F401  (train, detect, evaluate, import-wtalc, demo, doctor)


_register_more()
