"""Every use of Ray's private API in one place, behind a version check with a clear error.

Two private names are needed to keep a local or loopback cluster on 127.0.0.1 (Ray on Linux otherwise
replaces a loopback address by the machine's network address): ``ray._private.ray_constants.ENABLE_RAY_CLUSTER``
and ``ray._private.services.canonicalize_bootstrap_address``. They were checked on Ray ``TESTED_RAY``; on
another version they are looked up when first needed, and if they are gone the error names the Ray version,
the missing name and what to do, instead of an AttributeError from deep inside a batch.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from typing import Iterator

from refineloc_e2e.errors import ConfigError

try:  # the optional [ray] extra (features.distributed says how to install it)
    import ray
except ImportError:
    ray = None

TESTED_RAY = ("2.40", "2.60")  # oldest and newest Ray versions these private names were checked on


def _ray_version() -> str:
    return ray.__version__ if ray is not None else "(not installed)"


def _private(module: str, name: str):
    """``ray._private.<module>`` holding ``name``, or ConfigError naming the Ray version and the name."""
    try:
        mod = importlib.import_module(f"ray._private.{module}")
    except ImportError:
        mod = None
    if mod is None or not hasattr(mod, name):
        raise ConfigError(f"Ray {_ray_version()}: its private ray._private.{module}.{name}, which --ray needs to keep "
                          f"a local cluster on 127.0.0.1, is gone; install a Ray between {TESTED_RAY[0]} and "
                          f"{TESTED_RAY[1]} (pip install 'ray>={TESTED_RAY[0]},<={TESTED_RAY[1]}') or report it")
    return mod


@contextmanager
def loopback_only(on: bool) -> Iterator[None]:
    """Inside the block, Ray does not replace a loopback address by the machine's network address."""
    if not on:
        yield
        return
    constants = _private("ray_constants", "ENABLE_RAY_CLUSTER")
    old = constants.ENABLE_RAY_CLUSTER
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = old


def canonicalize_address(address: str) -> str | None:
    """The ``host:port`` of a running cluster for ``auto`` or ``host:port`` (a loopback one kept), None if none."""
    services = _private("services", "canonicalize_bootstrap_address")
    with loopback_only(True):
        return services.canonicalize_bootstrap_address(address)
