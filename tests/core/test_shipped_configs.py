"""One source of truth per setting: the dataclass defaults are the defaults, a shipped YAML is a delta from its
``base:`` (another shipped config, or the defaults), and every line of it carries its source and either differs
from its base or says it restates it (``# ... restates default`` / ``# ... restates base``), truthfully.
Resolving the deltas gives exactly the values of the golden snapshot."""

from __future__ import annotations

import json
import re

import pytest

from refineloc_e2e.config import BASE_KEY, read_config_chain, shipped_config, shipped_config_names, to_dict
from refineloc_e2e.training.run_config import RunConfig, load_run_config
from support import DATA

GOLDEN = DATA / "shipped_configs_resolved.json"  # `pytest --regen-golden` rewrites it

MARK = "restates default"  # a line that equals the dataclass default
MARK_BASE = "restates base"  # a line that equals its base config's value
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


def _base_values(path) -> tuple[dict, str]:
    """The resolved values a shipped YAML is a delta from (its ``base:``, else the defaults), and its name."""
    chain = read_config_chain(path)[1]
    if len(chain) == 1:
        return to_dict(RunConfig()), "the defaults"
    return to_dict(load_run_config(chain[1])), chain[1].name


def check_shipped_yaml(path) -> list[str]:
    """Why the lines of the shipped YAML ``path`` are not a sourced delta from its base (empty: they are).

    Each ``key: value`` line must (1) carry its source in a comment; (2) differ from its base's value unless
    marked "restates default" or "restates base"; (3) if marked "restates default", equal the dataclass default;
    if marked "restates base", equal the base's value."""
    text = path.read_text(encoding="utf-8")
    defaults = to_dict(RunConfig())
    base, base_name = _base_values(path)
    resolved = to_dict(load_run_config(path))
    problems = []
    for key, line, n in yaml_leaves(text):
        if key == BASE_KEY:
            continue
        where = f"{path.name}:{n}: {key}"
        value, base_value, default = _lookup(resolved, key), _lookup(base, key), _lookup(defaults, key)
        if "#" not in line:
            problems.append(f"{where} has no source comment")
        if MARK in line:
            if value != default:
                problems.append(f"{where} = {value!r} is marked '{MARK}' but the default is {default!r}")
        elif MARK_BASE in line:
            if value != base_value:
                problems.append(f"{where} = {value!r} is marked '{MARK_BASE}' but {base_name} has {base_value!r}")
        elif value == base_value:
            problems.append(f"{where} = {value!r} restates {base_name} unmarked")
    return problems


@pytest.mark.parametrize("name", shipped_config_names())
def test_shipped_yaml_is_a_sourced_delta_from_its_base(name):
    assert check_shipped_yaml(shipped_config(name)) == []


def test_the_delta_check_catches_each_kind_of_line(tmp_path):
    """The check above can fail: one bad line of each kind is named."""
    p = tmp_path / "x.yaml"
    p.write_text("base: thumos14-paper\n"
                 "train:\n"
                 "  epochs: 50           # paper 4.2\n"          # restates the base, unmarked
                 "  lr: 0.002            # restates default\n"   # marked, but not the default
                 "  batch_size: 16       # restates base\n"      # marked, but not the base's
                 "  seed: 1\n"                                  # no source
                 "pseudo:\n"
                 "  beta: 4.0            # restates default\n"   # fine: the default, differs from the base
                 "  sample_fraction: 0.8 # restates base\n")     # fine
    assert check_shipped_yaml(p) == [
        "x.yaml:3: train.epochs = 50 restates thumos14-paper.yaml unmarked",
        "x.yaml:4: train.lr = 0.002 is marked 'restates default' but the default is 0.001",
        "x.yaml:5: train.batch_size = 16 is marked 'restates base' but thumos14-paper.yaml has 32",
        "x.yaml:6: train.seed has no source comment",
    ]


def test_shipped_bases():
    """Which shipped config each is a delta from (the paper and released forms: the dataclass defaults)."""
    bases = {name: [p.stem for p in read_config_chain(shipped_config(name))[1][1:]] for name in shipped_config_names()}
    assert bases == {"thumos14-paper": [], "thumos14-released": [], "activitynet12-paper": [],
                     "activitynet12-released": [], "thumos14": ["thumos14-paper"],
                     "activitynet12": ["activitynet12-paper"], "demo": ["thumos14", "thumos14-paper"],
                     "thumos14-basnet": [], "thumos14-basnet-refined": ["thumos14", "thumos14-paper"]}


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
