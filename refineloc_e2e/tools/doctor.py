"""``refineloc-e2e doctor``: the first thing to run when something is off.

Each check yields ``(ok, name, detail)`` with ok True (fine), False (the tool cannot work) or None
(works, but something is worth knowing, e.g. weights not fetched yet).
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import av
import numpy
import torch

from refineloc_e2e import __version__
from refineloc_e2e.backbone.weights import list_weights, manifest_path, preset_status, weights_dir
from refineloc_e2e.errors import RefineLocError
from refineloc_e2e.training.tensorboard_log import HAVE_TENSORBOARD, INSTALL_HINT

Check = tuple[bool | None, str, str]


def run_checks(cache_dir: Path) -> Iterator[Check]:
    yield True, "refineloc-e2e", f"{__version__} (python {platform.python_version()}, {sys.executable})"
    yield from _versions()
    yield from _devices()
    yield from _tvl1()
    yield from _weights()
    yield _writable(cache_dir)


def _versions() -> Iterator[Check]:
    yield True, "torch", torch.__version__
    yield True, "numpy", numpy.__version__
    yield True, "av (PyAV)", f"{av.__version__}, FFmpeg libavcodec {av.library_versions.get('libavcodec')}"
    yield True, "tensorboard", ("installed: train writes TensorBoard event files" if HAVE_TENSORBOARD else
                                f"not installed (optional: train's curves; {INSTALL_HINT})")


def _devices() -> Iterator[Check]:
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        yield True, "device", f"CUDA: {names} (device auto -> cuda)"
    else:
        yield True, "device", f"CPU only ({os.cpu_count()} cores; device auto -> cpu)"


def _tvl1() -> Iterator[Check]:
    try:
        import cv2  # here, not at the top: a broken OpenCV install is what this check reports
    except ImportError as e:
        yield False, "opencv", f"cannot import cv2 ({e}); pip install opencv-contrib-python-headless"
        return
    has = hasattr(cv2, "optflow") and hasattr(cv2.optflow, "DualTVL1OpticalFlow_create")
    if has:
        yield True, "TV-L1 (opencv)", f"cv2 {cv2.__version__}: cv2.optflow.DualTVL1OpticalFlow_create available"
    else:
        yield False, "TV-L1 (opencv)", (f"cv2 {cv2.__version__} has no cv2.optflow: install "
                                        f"opencv-contrib-python-headless and uninstall opencv-python")


def _weights() -> Iterator[Check]:
    try:
        entries = list_weights()
    except RefineLocError as e:
        yield False, "weights manifest", str(e)
        return
    yield True, "weights folder", f"{weights_dir()} (manifest: {manifest_path()})"
    for w in entries:
        name = f"weights {w['name']}"
        if not w.get("present"):
            hint = "refineloc-e2e weights fetch " + w["name"] if w.get("fetchable") else "bring your own file"
            yield None, name, f"not present ({hint})"
        elif w.get("sha256_ok") is None:  # a user file not registered yet: nothing to compare with
            yield None, name, f"{w.get('status', 'present, no recorded sha256')} ({w.get('path')})"
        elif w.get("sha256_ok"):
            yield True, name, f"present, sha256 ok ({w.get('path')})"
        else:
            again = "fetch it again" if w.get("fetchable") else "register the right file again"
            yield False, name, f"present but sha256 MISMATCH ({w.get('path')}): delete it and {again}"
    for p in preset_status(entries):
        pair = f"rgb {p['weights']['rgb']} + flow {p['weights']['flow']}"
        if p["complete"]:
            yield True, f"backbone {p['name']}", f"complete ({pair})"
        else:
            names = " ".join(n for n, _ in p["missing"])
            yield None, f"backbone {p['name']}", (f"incomplete ({pair}): {', '.join(n for n, _ in p['missing'])} "
                                                 f"missing or unverified (refineloc-e2e weights fetch {names})")


def _writable(cache_dir: Path) -> Check:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache_dir, prefix=".doctor-", delete=True):
            pass
    except OSError as e:
        return False, "feature cache", f"{cache_dir}: not writable ({e.strerror or e})"
    return True, "feature cache", f"{cache_dir}: writable"
