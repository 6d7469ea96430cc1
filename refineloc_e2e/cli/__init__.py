"""The ``refineloc-e2e`` command: a thin click layer over the library (parse -> config -> library call -> write).

One module per command; ``common`` holds what they share. Every ``RefineLocError`` becomes one line on
stderr (``error: <file>: <cause>``) and exit status 1; a batch in which some inputs failed exits with
status 1 after finishing the others. Every option may also be set in the environment as
``REFINELOC_E2E_<COMMAND>_<PARAMETER>``, the parameter being the option's Python name (e.g.
``REFINELOC_E2E_EXTRACT_OVERRIDES="decode.crop_size=56 streams=rgb"`` for ``--set``; a repeatable option's
values are separated by spaces); the command line wins.

The library logs (``logging.getLogger(__name__)`` in every module); this layer decides what the user sees:
messages of ``refineloc_e2e.*`` at INFO and above go to stderr as plain lines (``-q``: warnings only, ``-v``:
debug too). Results (tables, the saved model, JSON) are printed by the commands on stdout.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from refineloc_e2e import __version__
from refineloc_e2e.cli.classify import classify
from refineloc_e2e.cli.demo import demo
from refineloc_e2e.cli.detect import detect
from refineloc_e2e.cli.doctor import doctor
from refineloc_e2e.cli.evaluate import evaluate
from refineloc_e2e.cli.export_features import export_features
from refineloc_e2e.cli.extract import extract
from refineloc_e2e.cli.import_features import import_features
from refineloc_e2e.cli.import_wtalc import import_wtalc
from refineloc_e2e.cli.train import train
from refineloc_e2e.cli.view import view
from refineloc_e2e.cli.weights import weights
from refineloc_e2e.device import configure_cpu_math
from refineloc_e2e.stdlib_compat import run_exit_handlers
from refineloc_e2e.stopping import StopExit, finish_on_stop_signals, run_kill_hooks, set_program

ENV_PREFIX = "REFINELOC_E2E"  # any option can also come from $REFINELOC_E2E_<COMMAND>_<PARAMETER> (click auto envvars)


class _EchoHandler(logging.Handler):
    """Log records as plain lines on the CURRENT stderr (click.echo resolves it per call, so CliRunner sees them)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise from emit
            self.handleError(record)


def configure_logging(verbosity: int):
    """The package logger's level and handler for one command (-1 warnings only, 0 info, 1+ debug); returns the
    function that puts the logger back as it was."""
    logger = logging.getLogger("refineloc_e2e")
    handler, level = _EchoHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG)

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return restore


class _Program(click.Group):
    """The group as a program (``main()``, the console script; ``CliRunner`` calls ``main.main`` instead): a
    command stopped by a signal exits as soon as its clean-up and the ``atexit`` handlers have run, without the
    interpreter's teardown (about 1 s with torch imported on the 2-core machine, docs/stopping.md). A command
    that finished exits at once with its own status on a stop signal while the interpreter exits: its result
    stands."""

    def __call__(self, *args, **kwargs):
        set_program()
        try:
            return self.main(*args, **kwargs)
        except StopExit as e:
            # the flow workers first: stopped outside an extraction (between videos) their pool is idle, and
            # multiprocessing's atexit would wait for its workers, which wait for work (threading's exit hook
            # that shuts the pool down is part of the teardown skipped here)
            run_kill_hooks()
            # multiprocessing's finalizers (its semaphores), logging, ...; where Python offers no way to run them
            # now, the ordinary exit runs them (with the teardown)
            if not run_exit_handlers():
                raise SystemExit(e.code) from None
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(e.code)
        except SystemExit as e:  # the command finished (its status decided): a stop signal now cannot make it a stop
            finish_on_stop_signals(_decided_status(e.code))
            raise


def _decided_status(code) -> int:
    """The status Python exits with for ``SystemExit(code)``: None is 0, a number is itself, anything else
    (a message) is 1."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


@click.group(cls=_Program, context_settings={"auto_envvar_prefix": ENV_PREFIX})
@click.version_option(__version__, prog_name="refineloc-e2e")
@click.option("-v", "--verbose", count=True, help="More messages on stderr (debug).")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only on stderr (results still on stdout).")
def main(verbose: int, quiet: bool) -> None:
    """Weakly-supervised temporal action localisation: videos -> I3D features -> RefineLoc -> segments."""
    restore = configure_logging(-1 if quiet else verbose)
    click.get_current_context().call_on_close(restore)  # in-process callers (tests, notebooks) get it back
    configure_cpu_math()


for _command in (extract, classify, weights, train, detect, evaluate, view, import_features, import_wtalc,
                 export_features, demo, doctor):
    main.add_command(_command)
