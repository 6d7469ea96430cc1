"""A normal install works: build the wheel, install it into a fresh venv, run the tool from another folder.

Nothing is downloaded: the wheel is built without build isolation (the setuptools already installed), the
venv reuses this environment's torch/numpy/av/cv2/... through a ``.pth`` line (a venv made from a venv sees
the *base* interpreter's packages, not ours), and the package comes only from the wheel. ``PYTHONPATH`` is
cleared so the source tree cannot be imported by accident.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

from refineloc_e2e.datasets import load_thumos14
from refineloc_e2e.features.cache import write_features
from support import REPO

_ANYWHERE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                   "*.tmp")
_AT_ROOT = {"runs", "demo_out", "features", "weights"}  # a checkout's outputs (refineloc_e2e/features/ is code)
# test and benchmark support lives in the checkout's `testing/` package; these once shipped in refineloc_e2e/tools/
MOVED_OUT = ("tools/fuzz.py", "tools/faults.py", "tools/proc_scan.py", "tools/wstal_bench.py", "tools/synthetic.py",
             "tools/page_bench.py")
NOT_THE_PRODUCT = ("testing", "tests", "conftest", "benchmarks")  # top-level names no shipped module may import


def _not_source(folder: str, names: list[str]) -> set[str]:
    return set(_ANYWHERE(folder, names)) | (_AT_ROOT & set(names) if Path(folder) == REPO else set())


def _sh(cmd, *, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, clean environment) with the wheel of this checkout installed and nothing else of it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        setuptools = tuple(int(x) for x in version("setuptools").split(".")[:2])
    except PackageNotFoundError:
        setuptools = (0, 0)
    if setuptools < (70, 1):  # older ones need the 'wheel' package to build a wheel; `make install` provides it
        pytest.fail(f"building the wheel offline needs setuptools >= 70.1 in {sys.prefix} (pip install "
                    f"'setuptools>=70.1', as `make install` does)")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=_not_source)  # build from a copy: no build/ or egg-info in the checkout
    _sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", tmp / "dist", src], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("refineloc_e2e-*.whl")
    venv = tmp / "venv"
    _sh([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    py = venv / "bin" / "python"
    site = Path(_sh([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp).stdout.strip())
    ours = [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]  # torch, numpy, av, cv2, click, ...
    (site / "_reuse_test_env.pth").write_text("\n".join(dict.fromkeys(ours)) + "\n")
    _sh([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", wheel], cwd=tmp)
    home = tmp / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "REFINELOC_WEIGHTS_DIR", "XDG_CACHE_HOME", "VIRTUAL_ENV")}
    env.update(HOME=str(home), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1")
    return venv / "bin", env, site, home, wheel


@pytest.mark.slow
def test_wheel_install_runs_from_anywhere(installed, tmp_path):
    bin_dir, env, site, home, _ = installed
    tool = bin_dir / "refineloc-e2e"
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _sh([bin_dir / "python", "-c", "import refineloc_e2e; print(refineloc_e2e.__file__)"], cwd=work, env=env)
    package = Path(where.stdout.strip()).parent
    assert package == site / "refineloc_e2e"  # the wheel's copy, not the source tree
    for data in ("configs/thumos14.yaml", "backbone/manifest.json", "data/thumos14/video_info.json",
                 "data/thumos14/wtalc/Thumos14reduced-Annotations/videoname.npy", "data/samples/bikes.mp4",
                 "data/released_runs.json", "features/importers.py", "report/assets/page.html",
                 "report/assets/page.css", "report/assets/page.js"):
        assert (package / data).is_file(), f"{data} missing from the wheel"

    weights_dir = home / ".cache" / "refineloc-e2e" / "weights"
    r = _sh([tool, "doctor", "--cache", tmp_path / "cache"], cwd=work, env=env)
    assert f"[ok  ] weights folder         {weights_dir} (manifest: {package / 'backbone' / 'manifest.json'})" \
        in r.stdout.splitlines()
    r = _sh([tool, "weights", "list"], cwd=work, env=env)
    assert r.stdout.splitlines()[0].startswith(f"weights folder: {weights_dir}")
    assert any(x.startswith("i3d-kinetics400-rgb ") and "not present" in x for x in r.stdout.splitlines())

    # a few THUMOS'14 videos' features (W-TALC-like metadata); most of the dataset has none: --skip-missing
    ds = load_thumos14()
    rng = np.random.default_rng(0)
    train = [v.video_id for v in ds.subset("train")[:6]]
    test = [v.video_id for v in ds.subset("test") if v.labels][:3]
    for vid in train + test:
        write_features(work / "F", vid, rng.normal(size=(20, 32)).astype(np.float32),
                       {"origin": "imported", "fps": 25.0, "snippet_frames": 16, "stride_frames": 16,
                        "streams": ["rgb"], "backbone": {}, "duration_s": ds.videos[vid].duration_s})
    r = _sh([tool, "train", "--dataset", "thumos14", "--features", "F", "--skip-missing", "-q",
             "--set", "head.feature_dim=32", "--set", "train.epochs=1", "--set", "train.n_iterations=0"],
            cwd=work, env=env)
    assert "skipped 1 video(s) without features that carry no action label: video_test_0001292" in r.stderr
    assert (work / "runs" / "thumos14" / "model.pt").is_file()
    _sh([tool, "detect", "--features", "F", "--model", "runs/thumos14/model.pt", "-o", "p.json"] + test, cwd=work,
        env=env)
    r = _sh([tool, "evaluate", "--predictions", "p.json", "--ground-truth", "thumos14-test", "--tiou", "0.3:0.5:0.1"],
            cwd=work, env=env)
    assert r.stdout.splitlines()[0].split() == ["tIoU", "0.30", "0.40", "0.50", "Avg"]
    assert set(json.loads((work / "p.json").read_text())["results"]) == set(test)
    assert not (package / "weights").exists() and not list(package.rglob("*.ckpt"))  # nothing written into it


def _imported_top_names(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.slow
def test_the_wheel_ships_no_test_support(installed, tmp_path):
    bin_dir, env, site, _, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"refineloc_e2e", f"{wheel.name.rsplit('-', 3)[0]}.dist-info"}
    assert not [n for n in names if n.removeprefix("refineloc_e2e/") in MOVED_OUT]
    assert sorted(n for n in names if n.startswith("refineloc_e2e/tools/")) == [
        "refineloc_e2e/tools/__init__.py", "refineloc_e2e/tools/demo.py", "refineloc_e2e/tools/demo_dataset.py",
        "refineloc_e2e/tools/doctor.py"]
    with zipfile.ZipFile(wheel) as z:
        leaks = {n: sorted(_imported_top_names(z.read(n).decode()) & set(NOT_THE_PRODUCT))
                 for n in names if n.endswith(".py")}
    assert {n: v for n, v in leaks.items() if v} == {}
    # installed, the test support cannot be imported (the source tree is not on the path; the wheel lacks it)
    r = subprocess.run([bin_dir / "python", "-c", "import testing.fuzz"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "ModuleNotFoundError: No module named 'testing'" in r.stderr
    assert not (site / "testing").exists() and not (site / "refineloc_e2e" / "tools" / "fuzz.py").exists()
