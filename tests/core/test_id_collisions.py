"""A collision is never silent (issue 32): two videos, cache entries, annotation keys, results keys or score
files that give one video id are named together in one line; an error where a result would be wrong
(training, evaluation, an import that would overwrite), a warning where one is taken by ``ids.TAKEN_RULE``."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from refineloc_e2e.cli import main
from refineloc_e2e.datasets import Dataset, Segment, VideoAnnotation, load_dataset
from refineloc_e2e.detection.detect import detect_features, redetect_from_scores
from refineloc_e2e.errors import DatasetError
from refineloc_e2e.evaluation.metrics import evaluate
from refineloc_e2e.features.cache import cached_ids, write_features
from refineloc_e2e.features.importers import FolderImport, import_feature_folder, import_wtalc_features
from refineloc_e2e.ids import TAKEN_RULE, collision_text, index_by_id
from refineloc_e2e.model.head import HeadConfig, build_head, save_head
from refineloc_e2e.model.postprocess import PostprocessConfig, save_scores
from refineloc_e2e.training.data import load_training_features
from refineloc_e2e.training.inputs import dataset_videos

from support import SMALL_EXTRACT, _fake_real_weights

NFC, NFD = "\u00e9", "e\u0301"  # one name as Linux keeps it and as macOS hands it out: two files, one id
BOTH = f"'{NFD}' (e\\u0301) and '{NFC}' (\\xe9) both give the video id '{NFC}'"  # how a line names them
META = {"fps": 25.0, "snippet_frames": 16, "streams": ["rgb"], "backbone": {}, "duration_s": 3.2}


def _entry(folder: Path, stem: str, seed: int = 0, dim: int = 8) -> None:
    rng = np.random.default_rng(seed)
    write_features(folder, stem, rng.normal(size=(5, dim)).astype(np.float32), META)


def _dataset(keys_subsets: dict[str, str], duration_s: float = 3.2) -> Dataset:
    videos = {k: VideoAnnotation(k, s, ["A"], [Segment(0.5, 2.0, "A")], duration_s, None)
              for k, s in keys_subsets.items()}
    return Dataset("mine", ["A", "B"], dict(sorted(videos.items())))


def test_the_line_names_each_name_and_tells_look_alikes_apart():
    taken, shared = index_by_id(["a:b", "a*b", "c", "a_b."])
    assert taken == {"a_b": "a*b", "c": "c"}  # none is the id itself: the first in code-point order
    assert shared == {"a_b": ["a:b", "a*b", "a_b."]}
    assert collision_text("a_b", shared["a_b"], "cache entries") == \
        "cache entries 'a:b', 'a*b' and 'a_b.' all give the video id 'a_b'"
    assert index_by_id([NFD, NFC])[0] == {NFC: NFC}  # the name that is the id itself wins
    assert collision_text(NFC, sorted([NFC, NFD]), "annotation keys") == f"annotation keys {BOTH}"


# ----------------------------------------------------------------------------- cache entries

def test_two_cache_entries_of_one_id_are_named_and_one_is_read(tmp_path):
    _entry(tmp_path, NFC)
    _entry(tmp_path, NFD, seed=1)
    _entry(tmp_path, "a:b")
    _entry(tmp_path, "a*b")
    lines = []
    assert cached_ids(tmp_path, log=lines.append) == {NFC: NFC, "a_b": "a*b"}
    assert lines == [f"warning: {tmp_path}: cache entries 'a*b' and 'a:b' both give the video id 'a_b'; using "
                     f"'a*b' ({TAKEN_RULE})",
                     f"warning: {tmp_path}: cache entries {BOTH}; using 'é' ({TAKEN_RULE})"]


def test_export_says_which_entry_it_exported(tmp_path):
    _entry(tmp_path / "feats", NFC)
    _entry(tmp_path / "feats", NFD, seed=1)
    r = CliRunner().invoke(main, ["export-features", str(tmp_path / "feats"), "-o", str(tmp_path / "out"),
                                  "--layout", "actionformer"])
    assert r.exit_code == 0, r.output
    assert f"cache entries {BOTH}; using 'é'" in r.stderr
    assert [p.name for p in (tmp_path / "out").glob("*.npy")] == [f"{NFC}.npy"]


# ----------------------------------------------------------------------------- training: errors

def test_two_annotation_keys_of_one_id_do_not_train_on_one_file_twice(tmp_path):
    _entry(tmp_path, NFC)
    _entry(tmp_path, "other")
    with pytest.raises(DatasetError) as e:
        load_training_features(_dataset({NFC: "train", NFD: "train", "other": "test"}), tmp_path,
                               skip_missing=False)
    assert str(e.value) == (f"dataset 'mine': annotation keys {BOTH}, so both would train on one feature file; "
                            f"rename one of them")


def test_two_cache_entries_of_a_key_are_an_error_in_training_only_for_keys_it_reads(tmp_path):
    for stem in ("a:b", "a*b", "x:y", "x*y", "other"):
        _entry(tmp_path, stem)
    with pytest.raises(DatasetError) as e:
        load_training_features(_dataset({"a_b": "train", "other": "test"}), tmp_path, skip_missing=False)
    assert str(e.value) == (f"{tmp_path}: cache entries 'a*b' and 'a:b' both give the video id 'a_b', the id of "
                            f"annotation key 'a_b': which holds its features is a guess; remove the other")
    # x:y and x*y are no annotation key's: training reads neither
    features, _, _ = load_training_features(_dataset({"other": "train", "x": "test"}), tmp_path,
                                            skip_missing=True, log=lambda line: None)
    assert list(features) == ["other"]


def test_train_names_both_keys(tmp_path):
    _entry(tmp_path / "feats", NFC)
    db = {k: {"subset": "training", "duration": 3.2, "annotations": [{"label": "A", "segment": [0.5, 2.0]}]}
          for k in (NFC, NFD)}
    (tmp_path / "mine.json").write_text(json.dumps({"database": db}), encoding="utf-8")
    r = CliRunner().invoke(main, ["train", "--annotations", str(tmp_path / "mine.json"), "--features",
                                  str(tmp_path / "feats"), "--run-dir", str(tmp_path / "run"), "-q"])
    assert r.exit_code == 1
    assert f"annotation keys {BOTH}, so both would train on one feature file" in r.stderr.strip().splitlines()[-1]


def test_two_videos_named_after_one_key_are_an_error(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "clip.mp4").write_bytes(b"not decoded here")
    with pytest.raises(DatasetError) as e:
        dataset_videos(_dataset({"clip": "train"}), tmp_path)
    assert str(e.value) == (f"{tmp_path}: videos '{tmp_path / 'a' / 'clip.mp4'}' and '{tmp_path / 'b' / 'clip.mp4'}' "
                            f"both give the video id 'clip', a 'mine' video id: which one to train on is a guess; "
                            f"keep one")


# ----------------------------------------------------------------------------- evaluation: errors

PRED = [{"label": "A", "score": 0.9, "segment": [0.5, 2.0]}]


def test_evaluate_refuses_two_annotation_keys_of_one_id():
    with pytest.raises(DatasetError) as e:
        evaluate({NFC: PRED}, _dataset({NFC: "test", NFD: "test", "x": "test"}))
    assert str(e.value) == (f"dataset 'mine' subset 'test': annotation keys {BOTH}: a result for it could be "
                            f"either video's; rename one of them")
    # keys of the other subset are not evaluated: no error
    assert evaluate({NFC: PRED}, _dataset({NFC: "test", NFD: "train"})).average_map == pytest.approx(1.0)


def test_evaluate_refuses_two_results_keys_of_one_video():
    with pytest.raises(DatasetError) as e:
        evaluate({NFC: PRED, NFD: PRED}, _dataset({NFC: "test", "x": "test"}))
    assert str(e.value) == (f"predictions: results keys {BOTH} (annotation key 'é'): both would be scored as one "
                            f"video; merge them or drop one")
    # results of a video that is not evaluated are ignored, as any other
    result = evaluate({"y:z": PRED, "y*z": PRED, NFC: PRED}, _dataset({NFC: "test", "x": "test"}))
    assert result.n_ignored_predictions == 2


# ----------------------------------------------------------------------------- detect: warnings

def _model(path: Path, dim: int = 8) -> None:
    cfg = HeadConfig(feature_dim=dim)
    save_head(path, build_head(cfg, 2), class_names=["A", "B"], head_config=cfg, postprocess_config=PostprocessConfig(),
              feature_meta={"dim": dim, "fps": 25.0, "snippet_frames": 16, "streams": ["rgb"]})


def test_detect_on_features_warns_once_per_shared_id(tmp_path):
    for stem in (NFC, "other"):
        _entry(tmp_path / "feats", stem)
    _model(tmp_path / "model.pt")
    lines = []
    ground_truth = _dataset({NFC: "test", NFD: "test", "other": "test"})
    summary = detect_features(tmp_path / "feats", [NFD, NFC, "other"], model_path=tmp_path / "model.pt",
                              out_json=tmp_path / "seg.json", plot_dir=tmp_path / "plots",
                              ground_truth=ground_truth, log=lines.append)
    assert summary.ok and sorted(summary.results) == sorted([NFC, "other"])  # one video, detected once
    warnings = [line for line in lines if line.startswith("warning:")]
    # the plots' annotation keys are matched once for the run, not once per plotted video
    assert warnings == [f"warning: ids {BOTH}; using 'é' ({TAKEN_RULE})",
                        f"warning: annotation keys {BOTH}; using 'é' ({TAKEN_RULE})"]
    assert len(summary.plots) == 2


def test_redetect_takes_one_score_file_per_id(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for stem in (NFC, NFD):
        fg = rng.uniform(size=20).astype(np.float32)
        save_scores(tmp_path / f"{stem}.npz", {
            "cas": rng.dirichlet(np.ones(2), size=20).astype(np.float32), "attention_bf": np.stack([1 - fg, fg], 1),
            "attention_time": fg / fg.sum(), "video_scores": np.array([0.6, 0.4], np.float32),
            "class_names": np.array(["A", "B"]), "fps": np.float64(25), "snippet_frames": np.int64(16),
            "stride_frames": np.int64(16), "duration_s": np.float64(12.8)})
    with caplog.at_level("WARNING", logger="refineloc_e2e"):
        results = redetect_from_scores(tmp_path, tmp_path / "seg.json", PostprocessConfig())
    assert list(results) == [NFC]
    assert caplog.messages == [f"warning: saved scores {BOTH}; using 'é' ({TAKEN_RULE})"]


# ----------------------------------------------------------------------------- import

def test_import_features_matches_dataset_keys_as_ids(tmp_path):
    src = tmp_path / "af"
    src.mkdir()
    np.save(src / f"{NFC}.npy", np.zeros((5, 16), np.float32))  # 5 rows: 3.2 s at 25 fps / 16 frames
    spec = FolderImport(fps=25.0, snippet_frames=16, stream_dim=8)
    # the annotation key is decomposed: the file is matched through the id, its length checked against it
    lines = []
    import_feature_folder(src, tmp_path / "ours", spec, dataset=_dataset({NFD: "train"}), log=lines.append,
                          quiet=True)
    assert lines == []  # not "not in mine, their length was not checked"
    with pytest.raises(DatasetError, match="5 snippets, but 'é' lasts 60.0 s in mine"):
        import_feature_folder(src, tmp_path / "ours", spec, dataset=_dataset({NFD: "train"}, duration_s=60.0),
                              quiet=True)
    # two keys of that id: named, and the length is checked against the one taken
    import_feature_folder(src, tmp_path / "ours", spec, dataset=_dataset({NFD: "train", NFC: "test"}),
                          log=lines.append, quiet=True)
    assert lines == [f"warning: dataset 'mine': annotation keys {BOTH}; using 'é' ({TAKEN_RULE})"]


def test_wtalc_names_of_one_id_are_an_error(tmp_path):
    ann = tmp_path / "ann"
    ann.mkdir()
    np.save(ann / "videoname.npy", np.array([NFD, NFC, "x"]))
    np.save(ann / "duration.npy", np.array([3.2, 3.2, 3.2]))
    (tmp_path / "joint.npy").write_bytes(b"never read")
    with pytest.raises(DatasetError) as e:
        import_wtalc_features(tmp_path / "joint.npy", tmp_path / "ours", annotations_dir=ann, quiet=True)
    assert str(e.value) == f"{ann / 'videoname.npy'}: video names {BOTH}; the last row would overwrite the other"


# ----------------------------------------------------------------------------- extract: notes

def test_extract_names_videos_that_share_an_id(tmp_path, monkeypatch, make_video, one_thread):

    _fake_real_weights(monkeypatch)
    monkeypatch.chdir(tmp_path)
    for i, folder in enumerate(("a", "b", "c")):
        (tmp_path / folder).mkdir()
        make_video(tmp_path / folder / "clip.mp4", n=40, size=(80, 64), seed=i)
    extract = [x for x in SMALL_EXTRACT if x != "-q"]
    runner = CliRunner()
    r = runner.invoke(main, ["extract", "a/clip.mp4", "-o", "feats", *extract])
    assert r.exit_code == 0 and "note:" not in r.output, r.output
    # another run, another clip.mp4: the entry 'clip' is a's, this one moves to a suffixed id, naming both
    r = runner.invoke(main, ["extract", "b/clip.mp4", "-o", "feats", *extract])
    assert r.exit_code == 0, r.output
    b_id = next(p.stem for p in (tmp_path / "feats").glob("clip-*.json"))
    assert (f"note: b/clip.mp4 shares the video id 'clip' with {tmp_path / 'a' / 'clip.mp4'}, whose cache entry "
            f"it is; b/clip.mp4 is written as '{b_id}'") in r.output
    # two in one run: both suffixed, in one line
    r = runner.invoke(main, ["extract", "b/clip.mp4", "c/clip.mp4", "-o", "feats", *extract])
    assert r.exit_code == 0, r.output
    c_id = sorted({p.stem for p in (tmp_path / "feats").glob("clip-*.json")} - {b_id})[0]
    assert (f"note: videos b/clip.mp4 and c/clip.mp4 would share the video id 'clip'; written as '{b_id}' and "
            f"'{c_id}'") in r.output
    assert "extracted 1, skipped (up to date) 1, failed 0" in r.output


def test_the_bundled_datasets_have_no_keys_of_one_id():
    # so the errors above never stop a run on THUMOS'14 or ActivityNet v1.2 as shipped
    for name in ("thumos14", "activitynet12"):
        dataset = load_dataset(name)
        assert index_by_id(dataset.videos)[1] == {}, name
        assert len(dataset.videos) > 400
