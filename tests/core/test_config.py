from dataclasses import dataclass, field

import pytest

from refineloc_e2e.config import (from_dict, load_config, parse_overrides, read_config_chain, settings_hash,
                                   shipped_config, to_dict)
from refineloc_e2e.errors import ConfigError


@dataclass
class Inner:
    rate: float = 0.5
    n: int = 2


@dataclass
class Outer:
    name: str = "x"
    flag: bool = False
    inner: Inner = field(default_factory=Inner)
    tious: list[float] | None = None


def test_defaults_and_nested_values():
    cfg = from_dict(Outer, {"inner": {"n": 5}, "tious": [0.1, 0.5]})
    assert cfg.inner.n == 5 and cfg.inner.rate == 0.5 and cfg.tious == [0.1, 0.5]


def test_int_accepted_for_float():
    assert from_dict(Inner, {"rate": 1}).rate == 1.0


@pytest.mark.parametrize("data,message", [
    ({"nme": "y"}, "unknown config key 'nme'"),
    ({"inner": {"rat": 1.0}}, "unknown config key 'inner.rat'"),
    ({"inner": {"n": 1.5}}, "config key 'inner.n': expected an integer, got 1.5"),
    ({"flag": "yes"}, "config key 'flag': expected true/false, got 'yes'"),
    ({"name": 3}, "config key 'name': expected a string, got 3"),
    ({"tious": "0.5"}, "config key 'tious'"),
])
def test_rejects_unknown_keys_and_wrong_types(data, message):
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, data)
    assert message in str(e.value)


def test_yaml_file_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: fromfile\ninner:\n  n: 3\n")
    cfg = load_config(Outer, p, ["inner.rate=0.25", "flag=true"])
    assert (cfg.name, cfg.inner.n, cfg.inner.rate, cfg.flag) == ("fromfile", 3, 0.25, True)


def test_error_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("inner:\n  bogus: 1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'inner.bogus'"):
        load_config(Outer, p)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_overrides(["novalue"])
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}


def test_settings_hash_changes_with_values():
    assert settings_hash(Outer()) == settings_hash(Outer())
    assert settings_hash(Outer()) != settings_hash(Outer(inner=Inner(rate=0.6)))


@dataclass
class WithFactory:
    inner: Inner = field(default_factory=lambda: Inner(rate=0.9, n=7))


def test_partial_nested_keys_keep_the_field_default():
    """A YAML giving one key of a nested config keeps the others from the field's default (its
    default_factory), not from the nested class's own defaults: one loader, one meaning."""
    cfg = from_dict(WithFactory, {"inner": {"n": 1}})
    assert (cfg.inner.rate, cfg.inner.n) == (0.9, 1)


def test_base_chain_merges_depth_first(tmp_path):
    """``base:`` names the file a config is a delta from; the base's base is read first, the naming file wins."""
    (tmp_path / "root.yaml").write_text("name: root\ninner:\n  rate: 0.1\n  n: 9\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mid.yaml").write_text("base: ../root.yaml\ninner:\n  n: 4\nflag: true\n")
    (tmp_path / "top.yaml").write_text("base: sub/mid.yaml\nname: top\n")
    cfg = load_config(Outer, tmp_path / "top.yaml", ["inner.rate=0.7"])
    assert (cfg.name, cfg.flag, cfg.inner.n, cfg.inner.rate) == ("top", True, 4, 0.7)
    data, chain = read_config_chain(tmp_path / "top.yaml")
    assert data == {"name": "top", "inner": {"rate": 0.1, "n": 4}, "flag": True}
    assert chain == [tmp_path / "top.yaml", tmp_path / "sub" / "mid.yaml", tmp_path / "sub" / "../root.yaml"]


def test_base_may_be_a_shipped_config_name(tmp_path):
    from refineloc_e2e.training.run_config import RunConfig, load_run_config

    (tmp_path / "mine.yaml").write_text("base: thumos14-paper\ntrain:\n  epochs: 7\n")
    cfg = load_run_config(tmp_path / "mine.yaml")
    paper = load_run_config(shipped_config("thumos14-paper"))
    assert cfg.train.epochs == 7 and cfg.pseudo.beta == paper.pseudo.beta == 2.0 != RunConfig().pseudo.beta
    assert to_dict(cfg) == to_dict(load_run_config(shipped_config("thumos14-paper"), ["train.epochs=7"]))


def test_base_cycle_is_named(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: c.yaml\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\n")
    with pytest.raises(ConfigError) as e:
        load_config(Outer, tmp_path / "a.yaml")
    assert str(e.value) == (f"{tmp_path / 'a.yaml'}: config 'base' chain loops: {tmp_path / 'b.yaml'} -> "
                            f"{tmp_path / 'c.yaml'} -> {tmp_path / 'b.yaml'}")
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    with pytest.raises(ConfigError, match=r"self.yaml: config 'base' chain loops: .*self.yaml -> .*self.yaml$"):
        load_config(Outer, tmp_path / "self.yaml")


def test_base_that_is_nowhere(tmp_path):
    (tmp_path / "a.yaml").write_text("base: nosuch\n")
    with pytest.raises(ConfigError) as e:
        load_config(Outer, tmp_path / "a.yaml")
    assert str(e.value).startswith(f"{tmp_path / 'a.yaml'}: base 'nosuch' is neither a file nor a shipped config "
                                   f"(shipped: activitynet12, ")
    (tmp_path / "a.yaml").write_text("base: [1]\n")
    with pytest.raises(ConfigError, match=r"a.yaml: 'base' must be a shipped config name or a YAML path, got \[1\]"):
        load_config(Outer, tmp_path / "a.yaml")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("inner:\n  bogus: 1\n")
    with pytest.raises(ConfigError) as e:  # the chain is named: the bad key may sit in any of its files
        load_config(Outer, tmp_path / "a.yaml")
    assert str(e.value).startswith(f"{tmp_path / 'a.yaml'} (with its bases {tmp_path / 'b.yaml'}): unknown config "
                                   f"key 'inner.bogus'")
