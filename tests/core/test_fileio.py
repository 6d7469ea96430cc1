import os
import pickle

import numpy as np
import pytest

from refineloc_e2e.errors import RefineLocError, WeightsError
from refineloc_e2e.fileio import (atomic_save_npy, atomic_writer, load_npy_untrusted, restricted_pickle_load,
                                  sha256_file, verify_sha256)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_refuses_code(tmp_path):
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"params": _Evil()}))
    with pytest.raises(WeightsError, match=r"evil.pkl: refused to load: forbidden global posix.system|"
                                           r"evil.pkl: refused to load: forbidden global os.system"):
        restricted_pickle_load(p)


def test_restricted_unpickler_admits_arrays_and_containers(tmp_path):
    p = tmp_path / "ok.pkl"
    obj = {"a": [np.arange(3, dtype=np.float32), (1, 2)], "b": {"c": np.eye(2)}}
    p.write_bytes(pickle.dumps(obj))
    back = restricted_pickle_load(p)
    np.testing.assert_array_equal(back["a"][0], obj["a"][0])
    np.testing.assert_array_equal(back["b"]["c"], np.eye(2))


def test_object_npy_goes_through_restricted_unpickler(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.array([np.zeros(2), np.ones(3)], dtype=object), allow_pickle=True)
    assert [a.tolist() for a in load_npy_untrusted(good)] == [[0.0, 0.0], [1.0, 1.0, 1.0]]
    bad = tmp_path / "bad.npy"
    np.save(bad, np.array([_Evil()], dtype=object), allow_pickle=True)
    with pytest.raises(WeightsError, match="bad.npy: refused to load"):
        load_npy_untrusted(bad)


def test_sha256_verify(tmp_path):
    p = tmp_path / "w.bin"
    p.write_bytes(b"abc")
    digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_file(p) == digest
    verify_sha256(p, digest)
    with pytest.raises(WeightsError, match=r"w.bin: sha256 mismatch \(expected 00"):
        verify_sha256(p, "00" * 32)


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.npy"
    atomic_save_npy(target, np.zeros(3, np.float32))
    with pytest.raises(RuntimeError):
        with atomic_writer(target) as f:
            f.write(b"partial")
            raise RuntimeError("killed")
    np.testing.assert_array_equal(np.load(target), np.zeros(3))  # old content intact
    assert sorted(os.listdir(tmp_path)) == ["out.npy"]  # no temp file left


def test_atomic_write_reports_disk_full(tmp_path, monkeypatch):
    import errno

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(RefineLocError, match=r"full.npy: cannot write \(No space left on device\)"):
        atomic_save_npy(tmp_path / "full.npy", np.zeros(3))
    assert os.listdir(tmp_path) == []
