"""Connecting to Ray and proving the output folder is shared: the set-up half of ``features.distributed``.

``ray_session(address)``: ``local`` starts a loopback-only runtime; ``auto``, ``host:port`` and ``ray://`` join a
cluster (Ray's private API only through ``features.ray_compat``). ``check_shared_folder``: a probe file with a
random token, read back by a task pinned to each alive node.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from refineloc_e2e.errors import ConfigError, InputError
from refineloc_e2e.features.ray_compat import canonicalize_address, loopback_only
from refineloc_e2e.fileio import atomic_write_json

try:  # the optional [ray] extra
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError:
    ray = None

RAY_INSTALL = "pip install 'refineloc-e2e[ray]'"
PROBE_TIMEOUT_S = 60.0  # the shared-folder check: how long every node gets to answer
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def require_ray() -> None:
    if ray is None:
        raise ConfigError(f"--ray needs Ray, which is not installed; install it with: {RAY_INSTALL}")


# ----------------------------------------------------------------------------- connecting

def _host(address: str) -> str:
    return address.rsplit(":", 1)[0].strip("[]")


@contextmanager
def ray_session(address: str) -> Iterator[None]:
    """Connected to Ray at ``address`` (see the module docstring) inside the block; disconnected (a local
    runtime stopped) after it. An existing connection (a test, a notebook) is used and left open."""
    require_ray()
    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "logging_level": "warning"}
    if address == "local":
        loopback = True
        kwargs.update(address="local", _node_ip_address="127.0.0.1")
    elif address.startswith("ray://"):
        loopback = False
        kwargs = {"address": address, "logging_level": "warning"}
    else:
        resolved = canonicalize_address(address)  # the address of `auto`, a loopback one kept
        if resolved is None:
            raise InputError(f"--ray {address}: no running Ray cluster found (start one with `ray start --head` "
                             f"on this machine, or give its address)")
        loopback = _host(resolved) in _LOOPBACK or _host(resolved).startswith("127.")
        kwargs["address"] = resolved
    try:
        with loopback_only(loopback):
            ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise InputError(f"--ray {address}: cannot connect to Ray ({e})") from None
    try:
        yield
    finally:
        ray.shutdown()


# ----------------------------------------------------------------------------- the shared output folder

# a probe pinned to a node that has just died fails with one of these: that node is no longer part of the batch
_NODE_GONE = tuple(getattr(ray.exceptions, name) for name in ("TaskUnschedulableError", "NodeDiedError",
                                                              "WorkerCrashedError") if hasattr(ray.exceptions, name)) \
    if ray is not None else ()

def _node_label(node: dict[str, Any]) -> str:
    return f"{node.get('NodeManagerAddress')} ({node['NodeID'][:8]})"


def _probe(folder: str, token: str) -> str | None:
    """On one node: None if ``folder`` holds the driver's probe file for ``token`` and is writable, else why not."""
    path = Path(folder) / f".probe-{token}.json"
    try:
        if token not in path.read_text(encoding="utf-8"):
            return f"{path} holds another token (a different folder at the same path)"
    except OSError as e:
        return f"cannot read the probe file {path} ({e.strerror or e})"
    mine = Path(folder) / f".probe-{token}-{os.getpid()}"
    try:
        mine.write_bytes(b"ok")
        mine.unlink()
    except OSError as e:
        return f"cannot write in {folder} ({e.strerror or e})"
    return None


def _write_probe(out_dir: Path, token: str) -> Path:
    path = out_dir / f".probe-{token}.json"
    atomic_write_json(path, {"token": token})
    return path


def check_shared_folder(out_dir: Path, *, timeout_s: float = PROBE_TIMEOUT_S) -> list[str]:
    """Every alive node must see ``out_dir`` (an absolute path): the driver writes a probe file holding a
    random token and a task pinned to each node reads it back and writes beside it. Returns the node labels;
    raises InputError naming each node that cannot, or that does not answer within ``timeout_s``."""
    token = secrets.token_hex(16)
    probe = out_dir / f".probe-{token}.json"
    try:  # everything after writing the probe is inside: a Ctrl-C anywhere here still removes it
        probe = _write_probe(out_dir, token)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        remote = ray.remote(_probe)
        refs = [remote.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(out_dir), token) for n in nodes]
        ready, late = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        problems, gone = [], []
        for node, ref in zip(nodes, refs):
            try:
                why = ray.get(ref) if ref in ready else f"did not answer within {timeout_s:g} s"
            except _NODE_GONE:  # it died after ray.nodes() listed it (a lost node stays listed a while)
                gone.append(node)
                continue
            if why is not None:
                problems.append(f"node {_node_label(node)}: {why}")
        for ref in late:
            ray.cancel(ref, force=True)
    finally:
        probe.unlink(missing_ok=True)
    if problems:
        raise InputError(f"{out_dir}: the output folder must be one shared filesystem path, mounted at the same "
                         f"path on every Ray node; " + "; ".join(problems))
    return [_node_label(n) for n in nodes if n not in gone]
