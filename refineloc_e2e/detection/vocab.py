"""Vocabularies for the built-in Kinetics detector: which class names come out, from which Kinetics classes.

``kinetics400``: the 400 Kinetics classes as they are. ``thumos14`` and ``activitynet12``: the datasets'
classes, each mapped to one or more Kinetics classes by the shipped tables (``data/vocab/<name>.json``: every
row says why; classes with no Kinetics counterpart are listed under ``unmapped`` and never predicted). A
user's JSON file has the same form::

    {"classes": {"MyJump": {"kinetics": ["high jump"], "why": "..."},   # or just "MyJump": ["high jump"]
                 ...},
     "unmapped": {"MyOther": "why"}}                                      # optional

A dataset class's probability per snippet is the sum of its Kinetics classes' softmax probabilities (the
classes of one softmax are exclusive events, so the sum is the probability of any of them).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from refineloc_e2e.backbone.classify import kinetics400_labels
from refineloc_e2e.errors import InputError
from refineloc_e2e.fileio import package_data

BUILTIN_VOCABS = ("kinetics400", "thumos14", "activitynet12")


@dataclass
class Vocab:
    name: str
    classes: list[str]                                   # output class names, in column order
    kinetics: list[list[int]]                            # per class, the Kinetics indices summed into it
    unmapped: dict[str, str] = field(default_factory=dict)  # class -> why no Kinetics class stands for it

    def map_probs(self, probs: np.ndarray) -> np.ndarray:
        """Kinetics probabilities float[T, 400] -> this vocabulary's float[T, C]."""
        if self.name == "kinetics400":
            return probs
        return np.stack([probs[:, idx].sum(axis=1) for idx in self.kinetics], axis=1)  # [T, C]

    def describe(self) -> dict:
        return {"name": self.name, "mapped": len(self.classes), "unmapped": sorted(self.unmapped)}


def _table(data: object, where: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    if not isinstance(data, dict) or not isinstance(data.get("classes"), dict):
        raise InputError(f"{where}: expected a JSON object with a 'classes' mapping "
                         f"{{class name: [Kinetics class, ...]}}")
    out: dict[str, list[str]] = {}
    for name, row in data["classes"].items():
        kin = row.get("kinetics") if isinstance(row, dict) else row
        if isinstance(kin, str):
            kin = [kin]
        if not isinstance(kin, list) or not kin or not all(isinstance(k, str) for k in kin):
            raise InputError(f"{where}: class {name!r}: expected a non-empty list of Kinetics class names, got {kin!r}")
        out[str(name)] = kin
    unmapped = data.get("unmapped") or {}
    if not isinstance(unmapped, dict):
        raise InputError(f"{where}: 'unmapped' must map class names to reasons, got {unmapped!r}")
    return out, {str(k): str(v) for k, v in unmapped.items()}


def vocab_from_table(name: str, data: object, where: str) -> Vocab:
    """A :class:`Vocab` from a mapping table (see the module docstring); a Kinetics name that is not one is an
    ``InputError`` naming it and the closest Kinetics names."""
    labels = kinetics400_labels()
    index = {label: i for i, label in enumerate(labels)}
    table, unmapped = _table(data, where)
    if not table:
        raise InputError(f"{where}: maps no class to a Kinetics class")
    kinetics = []
    for cls, names in table.items():
        for k in names:
            if k not in index:
                close = difflib.get_close_matches(k, labels, n=3, cutoff=0.5)
                hint = f"closest Kinetics classes: {', '.join(repr(c) for c in close)}" if close else \
                    "no Kinetics class is close (see refineloc_e2e/data/kinetics/label_map.txt)"
                raise InputError(f"{where}: class {cls!r} maps to {k!r}, which is not a Kinetics-400 class; {hint}")
        kinetics.append([index[k] for k in names])
    return Vocab(name, list(table), kinetics, unmapped)


def load_vocab(spec: str) -> Vocab:
    """``kinetics400`` | ``thumos14`` | ``activitynet12`` | a JSON mapping file (names are reserved: a file of
    such a name is given as ``./thumos14``)."""
    if spec == "kinetics400":
        labels = kinetics400_labels()
        return Vocab("kinetics400", labels, [[i] for i in range(len(labels))])
    if spec in BUILTIN_VOCABS:
        path = package_data("data", "vocab", f"{spec}.json")
        return vocab_from_table(spec, json.loads(path.read_text(encoding="utf-8")), str(path))
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"{spec}: neither a vocabulary name ({', '.join(BUILTIN_VOCABS)}) nor a JSON mapping file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable JSON mapping file ({e})") from None
    name = data.get("name") if isinstance(data, dict) and isinstance(data.get("name"), str) else path.stem
    return vocab_from_table(name, data, str(path))
