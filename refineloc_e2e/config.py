"""Config machinery: dataclasses loaded from YAML (or dicts) with unknown keys and wrong types rejected.

Each stage defines its own ``@dataclass`` config next to its code, and its defaults are THE defaults;
the shipped YAMLs (``refineloc_e2e/configs/``, read through ``importlib.resources``) hold only what
differs from them, each line with its source. This module builds a config from nested mappings (the one
loader, :func:`load_config`), applies ``key.sub=value`` overrides, and hashes the settings that change
numbers. A dataclass may define ``config_base(data, base, prefix)`` (a classmethod) to choose the base its
keys apply to, e.g. a flow preset.

A YAML file may name its base config with a top-level ``base:`` key: a shipped config's name
(``base: thumos14-paper``) or a path (relative to the file that names it). Bases are read depth-first
(the base's own base first) and merged key by key, the naming file winning; a chain that returns to a
file already in it is an error that names the whole loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, TypeVar

from refineloc_e2e.errors import ConfigError

try:
    import yaml
except ImportError as e:  # extraction runs without it (a bare GPU machine); reading YAML names the fix (_yaml)
    yaml, _YAML_ERROR = None, e

T = TypeVar("T")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp, key: str):
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:  # Optional[X] and X | None
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': expected {tp}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}': expected a mapping for {_type_name(tp)}, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    return value


def _default_instance(cls):
    """``cls()`` when every field has a default, else None."""
    try:
        return cls()
    except TypeError:
        return None


def from_dict(cls: type[T], data: Mapping[str, Any], *, prefix: str = "", base: T | None = None) -> T:
    """Build dataclass ``cls`` from ``data``; keys missing from ``data`` keep their defaults (or ``base``'s).

    Raises ``ConfigError`` naming the full dotted key for an unknown key or a value of the wrong type.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"config '{prefix.rstrip('.') or '<root>'}': expected a mapping, got {data!r}")
    hook = getattr(cls, "config_base", None)
    if hook is not None:
        base = hook(data, base, prefix)
    if base is None:
        base = _default_instance(cls)  # nested keys then apply to the field's own default (its default_factory)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key '{prefix}{key}' (known keys: {known})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            tp = hints[name]
            value = data[name]
            if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
                sub_base = getattr(base, name) if base is not None else None
                kwargs[name] = from_dict(tp, value, prefix=f"{prefix}{name}.", base=sub_base)
            else:
                kwargs[name] = _coerce(value, tp, prefix + name)
        elif base is not None:
            kwargs[name] = getattr(base, name)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def _yaml():
    """PyYAML, needed only where a YAML text is read: extraction itself (e.g. on a bare GPU machine with only
    torch, numpy and OpenCV, ``benchmarks/device/gpu_check.sh``) must not need it."""
    if yaml is None:
        raise ConfigError(f"reading YAML needs PyYAML, which cannot be imported ({_YAML_ERROR}): pip install pyyaml")
    return yaml


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict:
    """Turn ``["train.lr=0.001", "head.n_layers=3"]`` into a nested dict; values are parsed as YAML."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override '{item}' has an empty key")
        yaml = _yaml()
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"override '{item}': cannot parse value: {e}") from None
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with another override of '{p}'")
        node[parts[-1]] = value
    return out


def deep_merge(a: Mapping, b: Mapping) -> dict:
    """Recursive merge: values of ``b`` win; nested mappings are merged."""
    out = dict(a)
    for k, v in b.items():
        if k in out and isinstance(out[k], Mapping) and isinstance(v, Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    yaml = _yaml()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


BASE_KEY = "base"  # top-level YAML key naming the config a file is a delta from


def _base_path(value: Any, path: Path) -> Path:
    """Where ``base: <value>`` in ``path`` points: a shipped config's name, else a file relative to ``path``."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: 'base' must be a shipped config name or a YAML path, got {value!r}")
    candidate = Path(value)
    if not candidate.is_absolute():
        candidate = path.parent / candidate
    if candidate.is_file():
        return candidate
    if candidate.suffix == "" and "/" not in value and shipped_config(value) is not None:
        return shipped_config(value)
    names = ", ".join(shipped_config_names())
    raise ConfigError(f"{path}: base '{value}' is neither a file nor a shipped config (shipped: {names})")


def read_config_layers(path: str | Path) -> list[tuple[Path, dict]]:
    """``(file, its own keys without 'base')`` for the YAML at ``path`` and each file of its ``base:`` chain,
    from ``path`` down to the root base. A chain that loops raises ``ConfigError`` naming every file of the loop.
    """
    chain: list[Path] = []
    layers: list[dict] = []
    current: Path | None = Path(path)
    while current is not None:
        key = current.resolve()
        if key in [c.resolve() for c in chain]:
            loop = " -> ".join(str(c) for c in chain[[c.resolve() for c in chain].index(key):] + [current])
            raise ConfigError(f"{chain[0]}: config 'base' chain loops: {loop}")
        chain.append(current)
        data = read_yaml(current)
        base = data.pop(BASE_KEY, None)
        layers.append(data)
        current = _base_path(base, current) if base is not None else None
    return list(zip(chain, layers))


def read_config_chain(path: str | Path) -> tuple[dict, list[Path]]:
    """The YAML at ``path`` with its ``base:`` chain merged in (bases first), and the chain itself.

    Returns ``(data, chain)``: ``data`` has no ``base`` key; ``chain`` lists the files from ``path`` down to
    the root base.
    """
    layers = read_config_layers(path)
    merged: dict = {}
    for _, layer in reversed(layers):  # root base first, the named file last (it wins)
        merged = deep_merge(merged, layer)
    return merged, [p for p, _ in layers]


def key_origin(path: str | Path, key: str) -> tuple[Path, Any] | None:
    """``(file, value)`` of the file in ``path``'s ``base:`` chain whose value of the dotted ``key`` the merged
    config holds (the named file first, then its bases), or None when no file of the chain sets it."""
    for file, data in read_config_layers(path):
        node: Any = data
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            return file, node
    return None


def shipped_config(name: str) -> Path | None:
    """The shipped config ``refineloc_e2e/configs/<name>.yaml`` (package data), or None if there is none."""
    entry = resources.files("refineloc_e2e") / "configs" / f"{name}.yaml"
    return Path(str(entry)) if entry.is_file() else None


def is_shipped_config(path: str | Path) -> bool:
    """True when ``path`` is one of the shipped configs (package data), not a file of the user's."""
    folder = Path(str(resources.files("refineloc_e2e") / "configs")).resolve()
    return Path(path).resolve().parent == folder and Path(path).suffix == ".yaml"


def shipped_config_names() -> list[str]:
    """Names of the shipped configs (``thumos14``, ``activitynet12``, ``demo``, ...)."""
    folder = resources.files("refineloc_e2e") / "configs"
    return sorted(e.name[:-5] for e in folder.iterdir() if e.name.endswith(".yaml"))


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                *, base: T | None = None) -> T:
    """THE config loader: defaults (or ``base``) <- the YAML's ``base:`` chain <- YAML file <- ``--set`` overrides,
    validated into ``cls``."""
    data, chain = read_config_chain(path) if path is not None else ({}, [])
    if overrides:
        data = deep_merge(data, parse_overrides(overrides))
    try:
        return from_dict(cls, data, base=base)
    except ConfigError as e:
        where = f"{path}: " if path is not None else ""
        if len(chain) > 1:  # the bad key may sit in any file of the chain
            where = f"{path} (with its bases {' -> '.join(str(p) for p in chain[1:])}): "
        raise ConfigError(f"{where}{e}") from None


def to_dict(obj) -> dict:
    """Dataclass -> plain nested dict (JSON/YAML serialisable)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def settings_hash(obj) -> str:
    """sha256 over the canonical JSON of ``obj`` (a dataclass or plain data): changes iff a value changes."""
    data = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()
