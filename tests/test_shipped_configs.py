"""One source of truth per setting: the dataclass defaults are the defaults, and every line of a shipped
YAML either differs from them or says it restates them (``# ... restates default``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from refineloc_e2e.config import load_config, shipped_config, shipped_config_names, to_dict
from refineloc_e2e.training.refinement import RunConfig, load_run_config

GOLDEN = Path(__file__).parent / "data" / "shipped_configs_resolved.json"  # `pytest --regen-golden` rewrites it

MARK = "restates default"
_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w]*):(?P<rest>.*)$")


def yaml_leaves(text: str) -> list[tuple[str, str, int]]:
    """(dotted key, the line, line number) of every ``key: value`` leaf of a block-style YAML mapping."""
    stack: list[tuple[int, str]] = []  # (indent, key) of the open mappings
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        m = _LINE.match(line)
        if not m:
            continue
        indent, key = len(m["indent"]), m["key"]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        value = m["rest"].split("#", 1)[0].strip()
        if value:
            out.append((".".join([k for _, k in stack] + [key]), line, n))
        else:
            stack.append((indent, key))
    return out


def _lookup(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def test_leaf_parser():
    leaves = yaml_leaves("a: 1\nb:\n  c: 2  # x\n  d:\n    e: [1, 2]\nf: 3\n")
    assert [k for k, _, _ in leaves] == ["a", "b.c", "b.d.e", "f"]


@pytest.mark.parametrize("name", shipped_config_names())
def test_shipped_yaml_holds_only_differences(name):
    path = shipped_config(name)
    text = path.read_text(encoding="utf-8")
    defaults = to_dict(RunConfig())
    resolved = to_dict(load_config(RunConfig, path))
    restated = []
    for key, line, n in yaml_leaves(text):
        value = _lookup(resolved, key)
        if value == _lookup(defaults, key) and MARK not in line:
            restated.append(f"{path.name}:{n}: {key} = {value!r} is the default")
    assert not restated, "\n".join(restated)


def test_shipped_configs_point_nowhere_outside_the_package():
    for name in shipped_config_names():
        text = shipped_config(name).read_text(encoding="utf-8")
        assert "/work/" not in text and "../shared" not in text, name


def test_resolved_shipped_configs_match_the_snapshot(request):
    """Every shipped config resolves to exactly the values in the golden snapshot (taken before the shipped
    YAMLs became deltas from their bases); a change here is a change of what a run does."""
    resolved = {name: to_dict(load_run_config(shipped_config(name))) for name in shipped_config_names()}
    if request.config.getoption("--regen-golden"):
        GOLDEN.write_text(json.dumps(resolved, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    assert resolved == json.loads(GOLDEN.read_text(encoding="utf-8"))
