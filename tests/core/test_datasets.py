"""Annotation loaders (bundled THUMOS'14 / ActivityNet v1.2 files, generic JSON) and the W-TALC importer."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from refineloc_e2e import datasets
from refineloc_e2e.features import cache as cache_mod
from refineloc_e2e.features import importers
from refineloc_e2e.datasets import (Dataset, Segment, VideoAnnotation, dataset_to_activitynet_json, load_activitynet12,
                                    load_activitynet_json, load_dataset, load_thumos14)
from refineloc_e2e.errors import DatasetError, InputError

THUMOS_CLASSES = ["BaseballPitch", "BasketballDunk", "Billiards", "CleanAndJerk", "CliffDiving", "CricketBowling",
                  "CricketShot", "Diving", "FrisbeeCatch", "GolfSwing", "HammerThrow", "HighJump", "JavelinThrow",
                  "LongJump", "PoleVault", "Shotput", "SoccerPenalty", "TennisSwing", "ThrowDiscus",
                  "VolleyballSpiking"]
BUNDLED = Path(datasets.__file__).parent / "data"


@pytest.fixture(scope="module")
def thumos() -> Dataset:
    return load_thumos14()


def test_thumos_counts(thumos):
    assert thumos.classes == THUMOS_CLASSES
    train, test = thumos.subset("train"), thumos.subset("test")
    assert (len(train), len(test)) == (200, 213)
    assert all(v.video_id.startswith("video_validation_") for v in train)
    assert all(v.video_id.startswith("video_test_") for v in test)
    assert sum(len(v.segments) for v in train) == 3007
    assert sum(len(v.segments) for v in test) == 3358
    assert sum(len(v.labels) > 1 for v in train) == 27
    assert sum(len(v.labels) > 1 for v in test) == 34
    assert [v.video_id for v in train + test if not v.labels] == ["video_test_0001292"]
    assert all(vid in thumos.videos for vid in datasets.THUMOS14_OFTEN_DROPPED_TEST)
    assert [v.video_id for v in test] == sorted(v.video_id for v in test)


def test_thumos_fields(thumos):
    v = thumos.videos["video_test_0000004"]
    assert v.subset == "test" and v.native_fps == 30.0 and v.duration_s == pytest.approx(33.4, abs=0.5)
    assert v.labels == sorted(set(v.labels)) == sorted({g.label for g in v.segments})
    assert all(a.start_s <= b.start_s for a, b in zip(v.segments, v.segments[1:]))
    assert "Ambiguous" not in thumos.classes
    assert thumos.ambiguous["video_test_0001292"] == sorted(thumos.ambiguous["video_test_0001292"])
    assert len(thumos.ambiguous["video_test_0001292"]) == 3
    assert thumos.class_index("BaseballPitch") == 0 and thumos.class_index("VolleyballSpiking") == 19


def test_thumos_cliffdiving_also_diving(thumos):
    for v in thumos.videos.values():
        cliff = {(g.start_s, g.end_s) for g in v.segments if g.label == "CliffDiving"}
        diving = {(g.start_s, g.end_s) for g in v.segments if g.label == "Diving"}
        assert cliff <= diving
        if cliff:
            assert {"CliffDiving", "Diving"} <= set(v.labels)


def test_thumos_drop_videos():
    ds = load_thumos14(drop_videos=datasets.THUMOS14_OFTEN_DROPPED_TEST)
    assert len(ds.subset("test")) == 210
    assert "video_test_0001292" not in ds.ambiguous


def test_unknown_subset_and_class(thumos):
    with pytest.raises(DatasetError, match="unknown subset 'validation'.*known: test, train"):
        thumos.subset("validation")
    with pytest.raises(DatasetError, match="unknown class 'Cricket'"):
        thumos.class_index("Cricket")


def _copy_thumos(tmp_path: Path) -> Path:
    root = tmp_path / "thumos"
    shutil.copytree(BUNDLED / "thumos14" / "annotations", root / "annotations")
    return root


@pytest.mark.parametrize("line, match", [("video_test_0000004 1.0\n", "expected 'video_name start_s end_s'"),
                                         ("video_test_0000004 abc 3.0\n", "not numbers"),
                                         ("video_test_0000004 5.0 3.0\n", r"invalid segment \[5.0, 3.0\]"),
                                         ("video_test_0000004 -1 3.0\n", "invalid segment"),
                                         ("video_test_0000004 nan 3.0\n", "invalid segment")])
def test_thumos_malformed_line_names_file_and_line(tmp_path, line, match):
    root = _copy_thumos(tmp_path)
    path = root / "annotations" / "test" / "Billiards_test.txt"
    n_lines = len(path.read_text().splitlines())
    with open(path, "a") as f:
        f.write(line)
    with pytest.raises(DatasetError, match=f"Billiards_test.txt:{n_lines + 1}: .*{match}"):
        load_thumos14(root=root)


def test_thumos_without_video_info_and_missing_folder(tmp_path):
    root = _copy_thumos(tmp_path)
    ds = load_thumos14(root=root)
    assert ds.videos["video_test_0000004"].duration_s is None
    shutil.rmtree(root / "annotations" / "val")
    with pytest.raises(DatasetError, match="no '<Class>_val.txt'"):
        load_thumos14(root=root)


def test_activitynet12():
    ds = load_activitynet12()
    assert len(ds.classes) == 100 and ds.classes == sorted(ds.classes)
    assert (len(ds.subset("train")), len(ds.subset("test"))) == (4702, 2303)
    assert sum(len(v.segments) for v in ds.videos.values()) == 6994 + 3459
    v = ds.videos["--1DO2V4K74"]  # ids kept as the CSV gives them (no v_ prefix added)
    assert v.subset == "test" and v.labels == ["Rock climbing"]
    assert v.duration_s == pytest.approx(211.54) and v.native_fps == pytest.approx(29.97, abs=0.01)
    assert ds.ambiguous == {}


def test_activitynet12_bad_csv(tmp_path):
    for name in ("activitynet_v1-2_train_groundtruth.csv", "activitynet_v1-2_valid_groundtruth.csv"):
        shutil.copy(BUNDLED / "activitynet12" / name, tmp_path / name)
    bad = tmp_path / "activitynet_v1-2_valid_groundtruth.csv"
    with open(bad, "a") as f:
        f.write("abc,3.0,1.0,Rock climbing,10.0,30.0,300\n")
    n = len(bad.read_text().splitlines())
    with pytest.raises(DatasetError, match=f"valid_groundtruth.csv:{n}: invalid segment"):
        load_activitynet12(data_dir=tmp_path)
    bad.write_text("video,start,end\n")
    with pytest.raises(DatasetError, match="valid_groundtruth.csv:1: header"):
        load_activitynet12(data_dir=tmp_path)


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_activitynet_json(tmp_path):
    db = {"a": {"subset": "training", "duration": 10.0, "annotations": [{"label": "Run", "segment": [1, 2]}]},
          "b": {"subset": "validation", "duration": 5.0, "annotations": [], "labels": ["Jump"]},
          "c": {"subset": "testing", "duration": 5.0, "annotations": []},
          "d": {"subset": "validation", "annotations": [{"label": "Run", "segment": [0.5, 4.0]},
                                                         {"label": "Jump", "segment": [0.0, 1.0]}],
                "ambiguous": [[4.5, 5.0]]}}
    ds = load_dataset(_write(tmp_path / "mini.json", {"database": db}))
    assert ds.name == "mini" and ds.classes == ["Jump", "Run"]
    assert sorted(ds.videos) == ["a", "b", "d"]  # 'testing' has no public labels: skipped
    assert ds.videos["b"].labels == ["Jump"] and ds.videos["b"].segments == []
    assert ds.videos["d"].labels == ["Jump", "Run"] and ds.videos["d"].duration_s is None
    assert ds.videos["d"].segments[0] == Segment(0.0, 1.0, "Jump")
    assert ds.ambiguous == {"d": [(4.5, 5.0)]}
    assert [v.video_id for v in ds.subset("test")] == ["b", "d"]
    with_taxonomy = load_activitynet_json(_write(tmp_path / "tax.json", {"taxonomy": ["Jump", "Run", "Swim"],
                                                                        "database": db}))
    assert with_taxonomy.classes == ["Jump", "Run", "Swim"] and with_taxonomy.name == "tax"
    with pytest.raises(DatasetError, match=r"missing: \['Run'\]"):
        load_activitynet_json(_write(tmp_path / "cls.json", {"classes": ["Jump"], "database": db}))
    # ActivityNet's own files: an empty taxonomy, or one of node objects -> the labels found (as its evaluator)
    empty = load_activitynet_json(_write(tmp_path / "empty.json", {"taxonomy": [], "database": db}))
    nodes = [{"nodeId": 0, "nodeName": "Root", "parentId": None, "parentName": None},
             {"nodeId": 1, "nodeName": "Jump", "parentId": 0, "parentName": "Root"}]
    tree = load_activitynet_json(_write(tmp_path / "nodes.json", {"taxonomy": nodes, "database": db}))
    assert empty.classes == tree.classes == ["Jump", "Run"]


@pytest.mark.parametrize("entry, match", [
    ({"subset": "val"}, "subset 'val' is not one of"),
    ({"subset": "training", "annotations": [{"label": "Run", "segment": [3, 1]}]},
     r"annotations\[0\]: invalid segment"),
    ({"subset": "training", "annotations": [{"label": "Run"}]}, r"annotations\[0\]: need"),
    ({"subset": "training", "annotations": [{"label": "Run", "segment": [0, 1]}], "labels": ["Jump"]},
     r"segment labels \['Run'\] are missing"),
    ({"subset": "training", "duration": "long"}, "duration: start/end"),
    ({"subset": "training", "ambiguous": [1.0, 2.0]}, "ambiguous: expected"),
])
def test_activitynet_json_errors_name_the_entry(tmp_path, entry, match):
    path = _write(tmp_path / "bad.json", {"database": {"vid1": entry}})
    with pytest.raises(DatasetError, match=f"bad.json: database\\['vid1'\\].*{match}"):
        load_activitynet_json(path)


def test_json_file_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_activitynet_json(tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InputError, match="broken.json: not valid JSON"):
        load_activitynet_json(tmp_path / "broken.json")
    with pytest.raises(DatasetError, match="'database' mapping"):
        load_activitynet_json(_write(tmp_path / "x.json", {"results": {}}))
    with pytest.raises(DatasetError, match="unknown dataset 'thumos15'"):
        load_dataset("thumos15")


def test_json_round_trip(thumos, tmp_path):
    doc = dataset_to_activitynet_json(thumos)
    back = load_activitynet_json(_write(tmp_path / "t.json", doc))
    assert back.name == "thumos14" and back.classes == thumos.classes
    assert back.videos == thumos.videos and back.ambiguous == thumos.ambiguous


def test_weak_labels_are_video_level():
    v = VideoAnnotation("x", "train", ["A", "B"], [Segment(0, 1, "B"), Segment(2, 3, "A")], None, None)
    ds = Dataset("toy", ["A", "B"], {"x": v}, {})
    assert ds.subset("train")[0].labels == ["A", "B"]


# --- W-TALC importer ------------------------------------------------------------------------------------

@pytest.fixture
def features():
    return cache_mod


def _wtalc_annotations(tmp_path: Path, n_snippets: np.ndarray) -> Path:
    """Bundled videoname.npy (the real order) with durations that match ``n_snippets`` at 25/16 per second."""
    ann = tmp_path / "ann"
    ann.mkdir()
    shutil.copy(BUNDLED / "thumos14/wtalc/Thumos14reduced-Annotations/videoname.npy", ann / "videoname.npy")
    np.save(ann / "duration.npy", (n_snippets * 16.0 / 25.0)[:, None])
    return ann


def _object_array(rows: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(rows), dtype=object)
    for i, r in enumerate(rows):
        out[i] = r
    return out


def _names() -> list[str]:
    raw = np.load(BUNDLED / "thumos14/wtalc/Thumos14reduced-Annotations/videoname.npy")
    return [x.decode() for x in raw]


@pytest.mark.slow  # 412 atomic (fsynced) file pairs
def test_import_wtalc(tmp_path, features):
    names = _names()
    assert len(names) == 412 and names[0] == "video_validation_0000051"
    rng = np.random.default_rng(0)
    n_snippets = rng.integers(2, 5, size=len(names))
    rows = [np.full((t, 2048), i, dtype=np.float64) + rng.random((t, 2048)) * 0.5 for i, t in enumerate(n_snippets)]
    for r in rows:
        r[:, 1024:] *= -1  # flow half negative: the stream order must survive the import
    src = tmp_path / "Thumos14reduced-I3D-JOINTFeatures.npy"
    np.save(src, _object_array(rows), allow_pickle=True)
    ann = _wtalc_annotations(tmp_path, n_snippets)
    out = tmp_path / "features"
    assert importers.import_wtalc_features(src, out, annotations_dir=ann, quiet=True) == 412
    for i in (0, 199, 411):
        feats, meta = features.read_features(out, names[i])
        assert feats.dtype == np.float32 and feats.shape == (n_snippets[i], 2048)
        np.testing.assert_allclose(feats, rows[i].astype(np.float32))
        assert (feats[:, :1024] >= i).all() and (feats[:, 1024:] <= -i).all()
        assert meta["fps"] == 25.0 and meta["snippet_frames"] == 16 and meta["dim"] == 2048
        assert meta["streams"] == ["rgb", "flow"] and set(meta["backbone"]) == {"rgb", "flow"}
        assert all({"weights_id", "init"} <= set(b) for b in meta["backbone"].values())
        assert meta["source"]["name"] == "W-TALC Thumos14reduced-I3D-JOINTFeatures.npy"
        assert meta["source"]["sha256"] == importers.sha256_file(src) and meta["source"]["row"] == i
        assert meta["video_id"] == names[i] and meta["n_snippets"] == n_snippets[i]


def test_import_wtalc_rejects_wrong_order_and_shapes(tmp_path, features):
    names = _names()
    n_snippets = np.full(len(names), 3)
    n_snippets[5] = 40
    ann = _wtalc_annotations(tmp_path, n_snippets)
    rows = [np.zeros((3, 2048), dtype=np.float32) for _ in names]
    src = tmp_path / "f.npy"
    np.save(src, _object_array(rows), allow_pickle=True)
    with pytest.raises(DatasetError, match=f"row 5 \\({names[5]}\\) has 3 snippets"):
        importers.import_wtalc_features(src, tmp_path / "o", annotations_dir=ann, quiet=True)
    np.save(src, _object_array(rows[:-1]), allow_pickle=True)
    with pytest.raises(DatasetError, match="411 feature rows, but .* lists 412 videos"):
        importers.import_wtalc_features(src, tmp_path / "o", annotations_dir=ann, quiet=True)
    n_snippets[5] = 3
    (tmp_path / "b").mkdir()
    ann2 = _wtalc_annotations(tmp_path / "b", n_snippets)
    rows[7] = np.zeros((3, 1024), dtype=np.float32)
    np.save(src, _object_array(rows), allow_pickle=True)
    with pytest.raises(DatasetError, match=r"row 7 .* expected float\[T, 2048\]"):
        importers.import_wtalc_features(src, tmp_path / "o", annotations_dir=ann2, quiet=True)
    with pytest.raises(InputError, match="not found"):
        importers.import_wtalc_features(tmp_path / "missing.npy", tmp_path / "o", annotations_dir=ann2, quiet=True)


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` (BINSTRING), as W-TALC's Python-2 era files do."""

    def save_bytes(self, obj):
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes


def test_import_wtalc_reads_python2_pickles(tmp_path):
    rows = [np.full((2, 2048), -1.5 - i, dtype=np.float32) for i in range(3)]  # sign byte 0xbf: not ASCII
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(_object_array(rows))
    src = tmp_path / "py2.npy"
    with open(src, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": (len(rows),)})
        f.write(buf.getvalue())
    with pytest.raises(UnicodeDecodeError):
        importers.load_npy_untrusted(src)  # the plain loader cannot: the importer's latin-1 path is needed
    back = importers._load_object_npy(src)
    assert len(back) == 3
    for got, want in zip(back, rows):
        np.testing.assert_array_equal(got, want)
