"""The ``refineloc-e2e`` command: a thin click layer over the library (parse -> config -> library call -> write).

One module per command; ``common`` holds what they share. Every ``RefineLocError`` becomes one line on
stderr (``error: <file>: <cause>``) and exit status 1; a batch in which some inputs failed exits with
status 1 after finishing the others. Every option may also be set in the environment as
``REFINELOC_E2E_<COMMAND>_<PARAMETER>``, the parameter being the option's Python name (e.g.
``REFINELOC_E2E_EXTRACT_OVERRIDES="decode.crop_size=56 streams=rgb"`` for ``--set``; a repeatable option's
values are separated by spaces); the command line wins.
"""

from __future__ import annotations

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
from refineloc_e2e.cli.weights import weights
from refineloc_e2e.device import configure_cpu_math

ENV_PREFIX = "REFINELOC_E2E"  # any option can also come from $REFINELOC_E2E_<COMMAND>_<PARAMETER> (click auto envvars)


@click.group(context_settings={"auto_envvar_prefix": ENV_PREFIX})
@click.version_option(__version__, prog_name="refineloc-e2e")
def main() -> None:
    """Weakly-supervised temporal action localisation: videos -> I3D features -> RefineLoc -> segments."""
    configure_cpu_math()


for _command in (extract, classify, weights, train, detect, evaluate, import_features, import_wtalc, export_features,
                 demo, doctor):
    main.add_command(_command)
