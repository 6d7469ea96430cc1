"""Extraction on a local 2-node Ray cluster (1 CPU each, bound to 127.0.0.1): the same features as one process,
a SIGKILLed worker retried, a corrupt file reported once, Ctrl-C leaving no temp file, reruns that skip,
a folder some node cannot see. Random-weight I3D on tiny frames, saved as a weights file the workers load."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from support import REPO, tiny_cfg, write_moving_video
from refineloc_e2e.backbone.formats import save_i3d
from refineloc_e2e.backbone.i3d import InceptionI3d
from refineloc_e2e.cli import main
from refineloc_e2e.errors import InputError
from refineloc_e2e.features import distributed, ray_session, ray_task
from refineloc_e2e.features.batch import extract_batch
from refineloc_e2e.features.cache import read_features
from refineloc_e2e.features.distributed import extract_batch_ray

from testing.faults import FaultHook

TIMEOUT_S = 90  # every Ray call in these tests gives up after this long
NOT_A_VIDEO = ("cannot open as a video container (InvalidDataError: Invalid data found when processing input); "
               "truncated, corrupt or not a video file")


def test_ray_missing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(ray_session, "ray", None)  # as if `import ray` had failed (require_ray looks there)
    video = write_moving_video(tmp_path / "v.mkv", n=9)
    r = CliRunner().invoke(main, ["extract", str(video), "-o", str(tmp_path / "out"), "--ray", "local"])
    assert r.exit_code == 1
    assert r.stderr == ("error: --ray needs Ray, which is not installed; install it with: "
                        "pip install 'refineloc-e2e[ray]'\n")


def test_ray_private_api_gone_is_one_clear_error(monkeypatch):
    import ray._private.ray_constants as constants

    from refineloc_e2e.errors import ConfigError
    from refineloc_e2e.features import ray_compat

    monkeypatch.delattr(constants, "ENABLE_RAY_CLUSTER")
    with pytest.raises(ConfigError) as e:
        with ray_compat.loopback_only(True):
            pass
    import ray
    assert str(e.value) == (f"Ray {ray.__version__}: its private ray._private.ray_constants.ENABLE_RAY_CLUSTER, which "
                            f"--ray needs to keep a local cluster on 127.0.0.1, is gone; install a Ray between 2.40 "
                            f"and 2.60 (pip install 'ray>=2.40,<=2.60') or report it")
    with ray_compat.loopback_only(False):  # nothing private is touched when not needed
        pass


def test_no_test_hook_is_read_from_the_environment():
    source = "".join(Path(m.__file__).read_text() for m in (distributed, ray_session, ray_task))
    assert "os.environ.get" not in source and "REFINELOC_TEST" not in source


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two Ray nodes of 1 CPU on 127.0.0.1, its files in a short /tmp folder; stopped whatever happens."""
    from ray.cluster_utils import Cluster

    ray_tmp = tempfile.mkdtemp(prefix="rl-ray-", dir="/tmp")  # Ray's socket paths must stay short
    kill_dir = tmp_path_factory.mktemp("kill")
    patch = pytest.MonkeyPatch()
    # the workers unpickle testing.faults' hooks: the repository root on their path, wherever pytest was started
    python_path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    for key, value in {"RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": python_path}.items():
        patch.setenv(key, value)  # the nodes (and so their workers) inherit these
    weights = tmp_path_factory.mktemp("weights") / "rgb.pt"
    torch.manual_seed(0)
    save_i3d(weights, InceptionI3d(3, 10).state_dict(), {"note": "random weights for tests"})
    c = None
    try:
        c = Cluster(initialize_head=True, head_node_args={"node_ip_address": "127.0.0.1", "num_cpus": 1,
                                                          "include_dashboard": False})
        c.add_node(node_ip_address="127.0.0.1", num_cpus=1)
        c.wait_for_nodes(timeout=60)
        yield SimpleNamespace(address=c.address, kill_dir=kill_dir, handle=c,
                              cfg=tiny_cfg(rgb_weights=str(weights), flow_weights="cross-modality-from-rgb"),
                              weights=weights)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if c is not None:
            c.shutdown()
        patch.undo()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _ray(videos, out, cluster, **kw):
    kw.setdefault("log", lambda m: None)
    return extract_batch_ray(videos, out, cluster.cfg, address=cluster.address, progress=False,
                             timeout_s=TIMEOUT_S, **kw)


def _tmp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


@pytest.mark.ray
def test_cluster_features_equal_one_process_and_a_rerun_skips(tmp_path, cluster, one_thread):
    videos = [write_moving_video(tmp_path / f"v{i}.mkv", n=9 + 5 * i, step_px=(1, i % 2)) for i in range(4)]
    single = extract_batch(videos, tmp_path / "single", cluster.cfg, progress=False, log=lambda m: None)
    assert (len(single.extracted), single.failed) == (4, [])
    summary = _ray(videos, tmp_path / "ray", cluster)
    assert (sorted(summary.extracted), summary.skipped, summary.failed) == (sorted(map(str, videos)), [], [])
    assert sum(summary.per_node.values()) == 4 and len(summary.per_node) == 2  # both nodes worked
    assert 1 <= summary.model_builds <= 2  # once per worker process, not once per video
    for video in videos:
        a, meta_a = read_features(tmp_path / "single", video.stem)
        b, meta_b = read_features(tmp_path / "ray", video.stem)
        assert a.shape == b.shape and a.shape[1] == 2048
        assert np.array_equal(a[:, :1024], b[:, :1024])  # RGB: bitwise
        # flow: torch TV-L1 in the single process's flow pool and in a Ray task (one CPU, in-process) agree
        # to float rounding, not bitwise (known since the torch CPU backend became the default; issue 19)
        np.testing.assert_allclose(a[:, 1024:], b[:, 1024:], rtol=1e-4, atol=1e-9)
        assert meta_a["settings_hash"] == meta_b["settings_hash"]
    # the same command through the CLI: everything up to date, no model built, the usual summary
    r = CliRunner().invoke(main, ["extract", *map(str, videos), "-o", str(tmp_path / "ray"), "--ray", cluster.address,
                                  "-q", "--device", "cpu", "--set", "decode.short_side=48", "--set",
                                  "decode.crop_size=32", "--set", "decode.snippet_frames=8", "--set", "batch_snippets=2", "--set",
                                  f"rgb_weights={cluster.weights}", "--flow-weights", "cross-modality-from-rgb"])
    lines = r.stderr.splitlines()
    assert r.exit_code == 0, r.stderr
    assert lines[0] == "extracted 0, skipped (up to date) 4, failed 0"
    assert lines[1].startswith("  per node: 127.0.0.1 (") and len(lines) == 2


@pytest.mark.ray
def test_killed_worker_is_retried_and_a_corrupt_file_fails_once(tmp_path, cluster):
    videos = [write_moving_video(tmp_path / f"k{i}.mkv", n=12) for i in range(3)]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    hook = FaultHook(str(cluster.kill_dir), kill_once=frozenset({"k1"}))  # the first worker extracting k1
    lines: list[str] = []                                                  # SIGKILLs itself mid-write
    summary = _ray([*videos, bad], tmp_path / "out", cluster, log=lines.append, before_extract=hook)
    assert (cluster.kill_dir / "k1.killed").exists()  # it did die once ...
    assert sorted(summary.extracted) == sorted(map(str, videos))  # ... and Ray ran it again
    assert summary.failed == [(str(bad), NOT_A_VIDEO)]  # its own failure: once, not retried
    assert [x for x in lines if x.startswith("error:")] == [f"error: {bad}: {NOT_A_VIDEO}"]
    assert _tmp_files(tmp_path / "out") == []  # the killed attempt's half-written temp was removed
    for video in videos:
        assert read_features(tmp_path / "out", video.stem)[0].shape == (2, 2048)
    again = _ray([*videos, bad], tmp_path / "out", cluster)
    assert (again.extracted, sorted(again.skipped)) == ([], sorted(map(str, videos)))
    assert again.failed == [(str(bad), NOT_A_VIDEO)] and again.model_builds == 0


@pytest.mark.ray
def test_interrupt_cancels_the_rest_and_leaves_no_temp_file(tmp_path, cluster):
    videos = [write_moving_video(tmp_path / f"c{i}.mkv", n=32) for i in range(4)]

    def interrupt(*_):
        raise KeyboardInterrupt  # Ctrl-C in the driver while the other videos run or wait

    with pytest.raises(KeyboardInterrupt):
        _ray(videos, tmp_path / "out", cluster, on_ready=interrupt)
    done = sorted(p.stem for p in (tmp_path / "out").glob("*.json"))
    assert 1 <= len(done) < 4 and _tmp_files(tmp_path / "out") == []
    rest = _ray(videos, tmp_path / "out", cluster)  # the rerun computes only what is missing
    assert sorted(Path(v).stem for v in rest.skipped) == done
    assert len(rest.extracted) == 4 - len(done) and not rest.failed


@pytest.mark.ray
def test_a_node_that_cannot_see_the_folder_is_named(tmp_path, cluster, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    real = ray_session._write_probe
    monkeypatch.setattr(ray_session, "_write_probe", lambda out_dir, token: real(elsewhere, token))
    video = write_moving_video(tmp_path / "v.mkv", n=9)
    with pytest.raises(InputError) as e:
        _ray([video], tmp_path / "out", cluster)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'out'}: the output folder must be one shared filesystem path, mounted at "
                          f"the same path on every Ray node; node 127.0.0.1 (")
    assert msg.count("cannot read the probe file") == 2 and not list((tmp_path / "out").glob("*.json"))


# ----------------------------------------------------------------------------- cluster faults

DRIVER = """
import pickle, signal, sys
# Ctrl-C as a terminal delivers it: a child inherits ignored (and blocked) signals from the test process. In the
# full suite, without this, the driver twice ran to the end after its SIGINT (it passed alone)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
signal.signal(signal.SIGINT, signal.default_int_handler)
from refineloc_e2e.features.distributed import extract_batch_ray
from testing.faults import FaultHook
cfg, out, address, folder, videos = pickle.load(open(sys.argv[1], "rb"))
try:
    extract_batch_ray(videos, out, cfg, address=address, progress=False, timeout_s=120,
                      log=lambda m: print(m, flush=True), before_extract=FaultHook(folder, sleep_s=3.0))
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


def _driver(tmp_path, cluster, videos, out, hook_dir):
    """A driver process running one Ray batch, started in the background. Each extraction is slowed by 3 s, so a
    signal sent after the first video is handled (the driver wakes every WAIT_STEP_S = 1 s) while the next ones
    still sleep: with 1 s, one clean-clone CI run saw all 6 videos finish before the driver acted on SIGINT."""
    import pickle
    import subprocess
    import sys

    args = tmp_path / "driver_args.pkl"
    args.write_bytes(pickle.dumps((cluster.cfg, str(out), cluster.address, str(hook_dir), list(map(str, videos)))))
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(args)], stdout=subprocess.PIPE, text=True)


def _entries(out: Path) -> list[str]:
    """Video ids with a finished cache entry (not the shared-folder probe, ``.probe-<token>.json``)."""
    return sorted(p.stem for p in out.glob("*.json") if not p.name.startswith("."))


def _wait_for_outputs(out: Path, proc, n: int, limit_s: float = 120) -> None:
    import time

    t0 = time.monotonic()
    while len(_entries(out)) < n and proc.poll() is None and time.monotonic() - t0 < limit_s:
        time.sleep(0.05)
    assert proc.poll() is None, "the driver ended before it could be interrupted"
    assert len(_entries(out)) >= n


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGKILL"])
def test_driver_signal_then_rerun_finishes_only_what_is_missing(tmp_path, cluster, sig):
    """A real SIGINT to the driver cancels its tasks, waits for them and leaves no temp file; after a SIGKILL
    Ray ends the dead driver's tasks and their flock-based video locks die with them, so the rerun is not
    blocked and removes what they left. Either way the rerun extracts only the videos not finished."""
    import signal as signals

    videos = [write_moving_video(tmp_path / f"s{i}.mkv", n=9) for i in range(6)]
    out, hook_dir = tmp_path / "out", tmp_path / "hook"
    hook_dir.mkdir()
    proc = _driver(tmp_path, cluster, videos, out, hook_dir)
    _wait_for_outputs(out, proc, 1)
    proc.send_signal(getattr(signals, sig))
    stdout, _ = proc.communicate(timeout=90)
    done = _entries(out)
    assert 1 <= len(done) < 6, done
    if sig == "SIGINT":
        assert proc.returncode == 130 and "interrupted" in stdout
        assert _tmp_files(out) == [] and list(out.glob(".probe-*")) == []  # cancelled, waited for, cleaned
    else:
        assert proc.returncode == -signals.SIGKILL
    hook = FaultHook(str(hook_dir))
    started_before = len(hook.starts())
    rest = _ray(videos, out, cluster, before_extract=hook)
    assert sorted(Path(v).stem for v in rest.skipped) == done  # nothing finished is computed again
    assert sorted(Path(v).stem for v in rest.extracted) == sorted(set(v.stem for v in videos) - set(done))
    assert rest.failed == [] and _tmp_files(out) == []
    assert sorted(hook.starts()[started_before:]) == sorted(Path(v).stem for v in rest.extracted)
    for video in videos:
        assert read_features(out, video.stem)[0].shape[1] == 2048


@pytest.mark.ray
@pytest.mark.slow
def test_a_worker_node_killed_mid_batch(tmp_path, cluster):
    """A third node dies while it extracts: its video is retried on the other nodes, every video is extracted
    once, and no finished video is computed again (at most one extra start: the one the dead node had)."""
    videos = [write_moving_video(tmp_path / f"n{i}.mkv", n=9) for i in range(6)]
    node = cluster.handle.add_node(node_ip_address="127.0.0.1", num_cpus=1)
    cluster.handle.wait_for_nodes(timeout=60)
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    hook = FaultHook(str(hook_dir), sleep_s=1.0)
    killed = []

    def kill_node(*_):
        if not killed:
            killed.append(1)
            cluster.handle.remove_node(node, allow_graceful=False)

    summary = _ray(videos, tmp_path / "out", cluster, on_ready=kill_node, before_extract=hook)
    assert killed and summary.failed == []
    assert sorted(summary.extracted) == sorted(map(str, videos))  # each video reported once
    starts = hook.starts()
    assert set(starts) == {v.stem for v in videos} and len(starts) - len(videos) <= 1, starts
    assert _tmp_files(tmp_path / "out") == []


@pytest.mark.ray
@pytest.mark.slow
def test_detect_on_the_cluster_writes_the_same_json_as_one_process(tmp_path, cluster, one_thread):
    import json

    from refineloc_e2e.detection.detect import detect_videos, expected_feature_meta
    from refineloc_e2e.features.extractor import FeatureExtractor
    from refineloc_e2e.model.head import HeadConfig, build_head, save_head
    from refineloc_e2e.model.postprocess import PostprocessConfig

    videos = [write_moving_video(tmp_path / f"d{i}.mkv", n=20 + 9 * i, step_px=(1, i % 2)) for i in range(3)]
    extractor = FeatureExtractor(cluster.cfg)
    head_cfg = HeadConfig(feature_dim=2048)
    torch.manual_seed(0)
    save_head(tmp_path / "model.pt", build_head(head_cfg, 2), class_names=["A", "B"], head_config=head_cfg,
              postprocess_config=PostprocessConfig(), feature_meta=expected_feature_meta(extractor))
    runs = {}
    for name, address in (("single", None), ("ray", cluster.address)):
        detect_videos(videos, model_path=tmp_path / "model.pt", out_json=tmp_path / f"{name}.json",
                      extract_cfg=cluster.cfg, cache_dir=tmp_path / f"cache_{name}", progress=False,
                      scores_dir=tmp_path / f"scores_{name}", extractor=extractor if address is None else None,
                      log=lambda m: None, ray_address=address)
        runs[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert runs["single"] == runs["ray"]
    assert (tmp_path / "single.json").read_text() == (tmp_path / "ray.json").read_text()
    assert sorted(runs["ray"]["results"]) == sorted(v.stem for v in videos)
    for v in videos:
        a, b = (np.load(tmp_path / f"scores_{n}" / f"{v.stem}.npz") for n in ("single", "ray"))
        assert all(np.array_equal(a[k], b[k]) for k in a.files)


@pytest.mark.ray
def test_ctrl_c_during_the_shared_folder_check_leaves_no_probe_file(tmp_path, cluster, monkeypatch):
    """Ctrl-C between writing the probe file and asking the nodes (found by a real SIGINT) removes it."""
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed.ray, "nodes", interrupted)
    video = write_moving_video(tmp_path / "v.mkv", n=9)
    with pytest.raises(KeyboardInterrupt):
        _ray([video], tmp_path / "out", cluster)
    assert list((tmp_path / "out").glob(".probe-*")) == []
