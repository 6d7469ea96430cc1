"""Video ids keep the file's own name in any script (refineloc_e2e/ids.py): the id function itself, the
collision suffixes, the property every id the package hands out has (``video_id(i) == i``, on names hypothesis
generates), extract -> train -> detect through the CLI, import/export, evaluate, and the carrying over of cache
entries that older versions named otherwise (``_``-style, or 0.3's over-long suffixed ids). Collisions are
tests/core/test_id_collisions.py."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st

from refineloc_e2e.cli import main
from refineloc_e2e.datasets import load_dataset
from refineloc_e2e.evaluation.metrics import evaluate
from refineloc_e2e.features.cache import (assign_video_ids, disambiguated_id, legacy_ids, migrate_legacy_entry,
                                          read_features, write_features)
from refineloc_e2e.ids import MAX_ID_BYTES, collision_key, suffixed_id, video_id, video_id_of

NFD_NAME = unicodedata.normalize("NFD", "ünïcødé clip")  # as macOS hands such a name out
NFC_NAME = unicodedata.normalize("NFC", "ünïcødé clip")
LONG_NAME = "跳" * 80  # 240 UTF-8 bytes: a valid video name, too long with the .json and temp-file suffixes
NAMES = ["跳高", "跳远", "مرحبا بالعالم", "🏃‍♀️ run", "my clip (1)", NFD_NAME]  # CJK, RTL, emoji, spaces, NFD


# ----------------------------------------------------------------------------- the id function

@pytest.mark.parametrize("stem", ["跳高", "ünïcødé clip", "مرحبا بالعالم", "🏃‍♀️ run", "my clip (1)", "Ωμέγα",
                                  "video_test_0000004", "v_-0SmJ3GxK3k", "a.b.c", " leading space"])
def test_a_valid_name_is_its_own_id(stem):
    assert video_id(stem) == stem
    assert video_id_of(Path("videos") / f"{stem}.mp4") == stem


def test_a_decomposed_name_gives_the_composed_id():
    assert NFD_NAME != NFC_NAME
    assert video_id(NFD_NAME) == NFC_NAME


@pytest.mark.parametrize("stem, want", [
    ('a/b\\c:d*e?f"g<h>i|j', "a_b_c_d_e_f_g_h_i_j"),  # each character no file system allows -> "_"
    ("tab\there\x7f", "tab_here_"),  # control characters
    ("bad\udcffbyte", "bad_byte"),  # an undecodable byte of a Linux name (surrogate escape)
    ("clip. . ", "clip"), ("...", "video"), ("", "video"),  # trailing dots and spaces dropped
    ("CON", "CON_"), ("nul", "nul_"), ("Com7", "Com7_"), ("lpt1.backup", "lpt1_.backup"), ("COM²", "COM²_"),
    ("CONSOLE", "CONSOLE"), ("COM10", "COM10"), ("my CON", "my CON"),  # not reserved
])
def test_what_no_file_system_allows_is_replaced(stem, want):
    assert video_id(stem) == want


def test_ids_are_idempotent():
    for stem in NAMES + [LONG_NAME, "x" * 500, "CON.x", "a:b.", "e" + "\u0301" * 300]:
        once = video_id(stem)
        assert video_id(once) == once, stem


# ----------------------------------------------------------------------------- the id property, on generated names

PROPERTY = settings(deadline=None, database=None, max_examples=300)  # a loaded 2-core machine: no deadline
# the characters names are built from: any code point (surrogates included: undecodable bytes of a Linux name),
# and, more often, the ones that make ids interesting: what no file system allows, dots and spaces at the end,
# combining marks (NFD), Hangul jamo (composed by NFC), 3- and 4-byte characters (CJK, emoji with a ZWJ)
TRICKY = list('/\\:*?"<>|. -_') + ["\t", "\x7f", "\udcff", "e", "E", "\u0301", "\u0323", "\u0328", "\u1100",
                                   "\u1161", "\u11a8", "跳", "高", "Ω", "ǅ", "ß", "\u212b", "🏃", "\u200d", "♀", "\ufe0f",
                                   "C", "O", "N", "\u00b9", "1"]
CHARS = st.one_of(st.characters(codec=None, categories=None), st.sampled_from(TRICKY))
GENERATED = st.one_of(st.text(CHARS, max_size=30),
                  st.text(st.sampled_from(TRICKY), min_size=40, max_size=120),  # often over 200 bytes
                  st.builds(lambda a, n, b: a + "跳" * n + b, st.text(CHARS, max_size=5),
                            st.integers(55, 75), st.text(CHARS, max_size=5)))  # around the 200-byte cut
HEX8 = st.text("0123456789abcdef", min_size=8, max_size=8)


def _is_an_id(vid: str) -> None:
    assert video_id(vid) == vid
    assert 0 < len(vid.encode("utf-8")) <= MAX_ID_BYTES and unicodedata.is_normalized("NFC", vid)


@PROPERTY
@given(GENERATED)
def test_video_id_is_idempotent_on_any_name(name):
    _is_an_id(video_id(name))


@PROPERTY
@given(GENERATED, HEX8)
@example("跳" * 66, "c1ec8028")  # 198 bytes: with the suffix 207, which 0.3 gave and then cut again
@example("x" * 191, "00000000")
def test_a_suffixed_id_is_its_own_id(name, suffix):
    vid = suffixed_id(video_id(name), suffix)
    _is_an_id(vid)
    if len(f"{video_id(name)}-{suffix}".encode("utf-8")) <= MAX_ID_BYTES:
        assert vid == f"{video_id(name)}-{suffix}"  # the ids 0.3 gave and caches hold stay as they were


def _variants(name: str) -> list[str]:
    """Names a user may have for one video: its NFC and NFD forms, upper and lower case."""
    return [name, unicodedata.normalize("NFD", name), name.upper(), name.lower()]


@PROPERTY
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "跳 高", "x" * 150]), GENERATED, st.integers(0, 3)),
                min_size=1, max_size=8))
def test_every_assigned_id_is_its_own_id_and_none_is_shared(entries):
    root = Path("/nonexistent-videos")  # resolve() needs no files
    stems = [_variants(name.replace("/", "_").replace("\x00", "_"))[v] for _, name, v in entries]  # file names
    paths = list(dict.fromkeys(root / folder / f"{stem}.mp4" for (folder, _, _), stem in zip(entries, stems)))
    ids = assign_video_ids(paths, log=lambda line: None)
    for p, vid in ids.items():
        _is_an_id(vid)
        _is_an_id(disambiguated_id(vid, p))  # an entry of another source under this id moves it here
        assert vid not in legacy_ids(p)  # never taken for an old entry to carry over
    # no two inputs share a file, on a case-sensitive file system or not
    assert len({collision_key(vid) for vid in ids.values()}) == len(paths)


def test_long_names_that_differ_only_in_their_cut_tail_stay_apart():
    # both ids keep the first 191 bytes and differ only in their hash; each name in two folders: four ids
    a, b = "x" * 195 + "a" * 10, "x" * 195 + "b" * 10
    paths = [Path(f"/nonexistent-videos/{folder}/{name}.mp4") for folder in ("f1", "f2") for name in (a, b)]
    ids = assign_video_ids(paths, log=lambda line: None)
    assert len(set(ids.values())) == 4 and all(video_id(v) == v for v in ids.values())


def test_the_cjk_example_of_issue_32(tmp_path):
    # two folders each with a 198-byte CJK stem: 0.3 gave 207-byte ids that video_id cut again
    paths = [tmp_path / folder / f"{'跳' * 66}.mp4" for folder in ("one", "two")]
    ids = assign_video_ids(paths, log=lambda line: None)
    for vid in ids.values():
        assert video_id(vid) == vid and len(vid.encode("utf-8")) <= MAX_ID_BYTES
        assert vid.startswith("跳" * 63 + "-") and len(vid.rsplit("-", 1)[1]) == 8  # the name's characters, one hash
    assert len(set(ids.values())) == 2
    # the entry 0.3 wrote under its 207-byte id is one to carry over
    old = f"{video_id('跳' * 66)}-{hashlib.sha1(str(paths[0].resolve().parent).encode()).hexdigest()[:8]}"
    assert len(old.encode("utf-8")) == 207 and old in legacy_ids(paths[0])
    write_features(tmp_path / "feats", old, np.zeros((2, 4), np.float32), {"source": {"path": str(paths[0])}})
    notes = migrate_legacy_entry(tmp_path / "feats", ids[paths[0]], paths[0])
    assert notes == [f"note: {paths[0]}: cache entry '{old}' renamed to '{ids[paths[0]]}' (ids keep the file's name)"]
    assert read_features(tmp_path / "feats", ids[paths[0]])[1]["video_id"] == ids[paths[0]]


def test_an_overlong_name_is_cut_on_a_character_with_a_hash(tmp_path):
    vid = video_id(LONG_NAME)
    assert len(vid.encode("utf-8")) <= MAX_ID_BYTES
    cut, digest = vid.rsplit("-", 1)
    assert set(cut) == {"跳"} and len(digest) == 8  # whole characters only
    assert video_id(LONG_NAME + "2") != vid  # names sharing the first 200 bytes stay apart
    # written with a collision suffix it still fits the 255-byte name limit, temp files included
    a, b = tmp_path / "a" / f"{LONG_NAME}.mp4", tmp_path / "b" / f"{LONG_NAME}.mp4"
    ids = assign_video_ids([a, b])
    write_features(tmp_path / "feats", ids[a], np.zeros((2, 4), np.float32), {})
    assert read_features(tmp_path / "feats", ids[a])[1]["video_id"] == ids[a]


def test_names_that_end_up_equal_get_suffixes(tmp_path):
    nfc, nfd = tmp_path / "é.mp4", tmp_path / unicodedata.normalize("NFD", "é.mp4")  # two files on Linux
    upper, lower = tmp_path / "a" / "Clip.mp4", tmp_path / "b" / "clip.mp4"  # one file on macOS and Windows
    other = tmp_path / "跳高.mp4"
    ids = assign_video_ids([nfc, nfd, upper, lower, other])
    assert ids[other] == "跳高"
    assert ids[nfc] != ids[nfd] and ids[nfc].startswith("é-") and ids[nfd].startswith("é-")
    assert ids[upper].startswith("Clip-") and ids[lower].startswith("clip-")
    assert ids[upper].casefold() != ids[lower].casefold()


def test_names_safe_before_have_no_legacy_ids(tmp_path):
    assert legacy_ids(tmp_path / "video_test_0000004.mp4") == []
    assert legacy_ids(tmp_path / "跳高.mp4")[0] == "_"
    assert legacy_ids(tmp_path / "my clip (1).mp4")[0] == "my_clip_1_"


# ----------------------------------------------------------------------------- through the CLI

def _fake_real_weights(monkeypatch):
    from support import _fake_real_weights as fake

    fake(monkeypatch)


def _videos(folder: Path, make_video, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        make_video(folder / f"{name}.mp4", n=40, size=(80, 64), seed=i)


def _annotations(path: Path, keys_subsets: dict[str, str]) -> None:
    db = {k: {"subset": s, "duration": 1.6, "annotations": [{"label": f"C{i % 2}", "segment": [0.3, 1.2]}]}
          for i, (k, s) in enumerate(keys_subsets.items())}
    path.write_text(json.dumps({"taxonomy": ["C0", "C1"], "database": db}, ensure_ascii=False), encoding="utf-8")


def test_extract_train_detect_keep_the_names(tmp_path, monkeypatch, make_video, one_thread):
    from support import SMALL_EXTRACT
    from support import TRAIN_FAST as FAST

    _fake_real_weights(monkeypatch)
    monkeypatch.chdir(tmp_path)
    twins = ["é", unicodedata.normalize("NFD", "é")]  # two files on Linux, one id
    _videos(tmp_path / "videos", make_video, NAMES + [LONG_NAME] + twins)
    runner = CliRunner()
    r = runner.invoke(main, ["extract", "videos", "-o", "feats", *SMALL_EXTRACT])
    assert r.exit_code == 0, r.output
    written = sorted(p.name for p in (tmp_path / "feats").glob("*.npy"))
    twin_files = [n for n in written if n.startswith("é-")]
    assert len(twin_files) == 2 and all(unicodedata.is_normalized("NFC", n) for n in twin_files)
    assert sorted(set(written) - set(twin_files)) == sorted(f"{video_id(n)}.npy" for n in NAMES + [LONG_NAME])
    assert (tmp_path / "feats" / "跳高.npy").is_file() and (tmp_path / "feats" / f"{NFC_NAME}.npy").is_file()
    # the user's own annotation file, keyed by the file stems as other tools key theirs (one key decomposed,
    # one with a trailing dot Windows would drop): every video is matched
    keys = {"跳高": "training", "跳远": "training", "مرحبا بالعالم": "training", "🏃‍♀️ run": "training",
            LONG_NAME: "training", "my clip (1).": "validation", NFD_NAME: "validation"}
    _annotations(tmp_path / "mine.json", keys)
    r = runner.invoke(main, ["train", "--annotations", "mine.json", "--features", "feats", "--run-dir", "run",
                             *FAST, "--set", "head.feature_dim=1024"])
    assert r.exit_code == 0, r.output
    assert "no usable features" not in r.output and "skipp" not in r.output
    r = runner.invoke(main, ["detect", "videos/跳高.mp4", "--model", "run/model.pt", "--cache", "feats", "-q",
                             "--save-scores", "scores", "-o", "seg.json"])
    assert r.exit_code == 0, r.output
    assert list(json.loads((tmp_path / "seg.json").read_text(encoding="utf-8"))["results"]) == ["跳高"]
    assert [p.name for p in (tmp_path / "scores").iterdir()] == ["跳高.npz"]
    # on the cached features, an id typed in another normal form (or as a stem with a trailing dot) is the same
    r = runner.invoke(main, ["detect", "--features", "feats", NFD_NAME, "my clip (1).", "--model", "run/model.pt",
                             "-o", "seg2.json"])
    assert r.exit_code == 0, r.output
    results = json.loads((tmp_path / "seg2.json").read_text(encoding="utf-8"))["results"]
    assert sorted(results) == sorted([NFC_NAME, "my clip (1)"]) and all(results.values())
    # and evaluate matches the results' ids to the annotation keys (the validation videos) the same way
    r = runner.invoke(main, ["evaluate", "--predictions", "seg2.json", "--ground-truth", "mine.json"])
    assert r.exit_code == 0, r.output
    assert f"2 videos, 2 ground-truth segments, {sum(map(len, results.values()))} predictions (0 on other " \
           f"videos ignored" in r.output


def test_train_names_the_closest_feature_file(tmp_path):
    rng = np.random.default_rng(0)
    for name in ["跳高", "跳远", "clip one", "clip two"]:
        write_features(tmp_path / "feats", video_id(name), rng.normal(size=(30, 32)).astype(np.float32),
                       {"fps": 25.0, "snippet_frames": 16, "streams": ["rgb"], "backbone": {}, "duration_s": 19.2})
    keys = {"跳高跳": "training", "跳远": "training", "clip one": "training", "nothing alike": "validation",
            "clip two": "validation"}
    _annotations(tmp_path / "mine.json", keys)
    r = CliRunner().invoke(main, ["train", "--annotations", str(tmp_path / "mine.json"), "--features",
                                  str(tmp_path / "feats"), "--run-dir", str(tmp_path / "run"), "-q"])
    assert r.exit_code == 1
    error = r.stderr.strip().splitlines()[-1]
    # the near miss names the one feature file no key names; the unrelated key names none
    assert "2 of 5 listed videos have no usable features: nothing alike, 跳高跳 (closest feature file: 跳高);" in error


def test_evaluate_matches_keys_after_normalisation(tmp_path):
    _annotations(tmp_path / "gt.json", {"a": "training", NFD_NAME: "validation", "b": "validation"})
    ds = load_dataset(tmp_path / "gt.json")
    preds = {NFC_NAME: [{"label": "C1", "score": 0.9, "segment": [0.3, 1.2]}],
             "b": [{"label": "C0", "score": 0.9, "segment": [0.3, 1.2]}]}
    result = evaluate(preds, ds, subset="test")
    assert result.n_ignored_predictions == 0 and result.average_map == pytest.approx(1.0)


def test_import_and_export_keep_the_names(tmp_path):
    src = tmp_path / "af"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name in ["跳高", NFD_NAME]:
        np.save(src / f"{name}.npy", rng.normal(size=(6, 16)).astype(np.float32))
    r = CliRunner().invoke(main, ["import-features", str(src), "-o", str(tmp_path / "ours"), "--fps", "25",
                                  "--snippet-frames", "16", "--stream-dim", "8", "-q"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "ours").glob("*.npy")) == sorted([f"{NFC_NAME}.npy", "跳高.npy"])
    r = CliRunner().invoke(main, ["export-features", str(tmp_path / "ours"), "-o", str(tmp_path / "out"),
                                  "--layout", "actionformer"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npy")) == sorted([f"{NFC_NAME}.npy", "跳高.npy"])


# ----------------------------------------------------------------------------- old caches

def _old_id(path: Path, suffix_from: str | None) -> str:
    """The id an older version gave: every run of characters outside [A-Za-z0-9._-] one "_", plus its
    collision suffix (sha1 of the resolved folder or path)."""
    import re

    base = re.sub(r"[^A-Za-z0-9._\-]+", "_", path.stem) or "video"
    if suffix_from is None:
        return base
    key = str(path.resolve().parent if suffix_from == "folder" else path.resolve())
    return f"{base}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def _move_entry(feats: Path, vid: str, old: str, **source) -> None:
    """Turn the entry ``vid`` into an entry an older version wrote under ``old`` (its source edited)."""
    meta = json.loads((feats / f"{vid}.json").read_text(encoding="utf-8"))
    meta["video_id"] = old
    meta["source"].update(source)
    (feats / f"{vid}.npy").rename(feats / f"{old}.npy")
    (feats / f"{old}.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    (feats / f"{vid}.json").unlink()


def test_an_old_entry_is_carried_over(tmp_path, monkeypatch, make_video, one_thread):
    from support import SMALL_EXTRACT

    _fake_real_weights(monkeypatch)
    monkeypatch.chdir(tmp_path)
    _videos(tmp_path / "videos", make_video, ["跳高", "跳远", "my clip (1)"])
    runner = CliRunner()
    assert runner.invoke(main, ["extract", "videos", "-o", "feats", *SMALL_EXTRACT]).exit_code == 0
    feats = tmp_path / "feats"
    want = {vid: read_features(feats, vid)[0] for vid in ["跳高", "跳远", "my clip (1)"]}
    old_high = _old_id(tmp_path / "videos" / "跳高.mp4", "path")  # '_-<hash>': both CJK names were '_'
    _move_entry(feats, "跳高", old_high)
    _move_entry(feats, "my clip (1)", "my_clip_1_")
    # the source matches: renamed, not re-extracted; the JSON names the new id
    r = runner.invoke(main, ["extract", "videos", "-o", "feats", *SMALL_EXTRACT])
    assert r.exit_code == 0, r.output
    assert "extracted 0, skipped (up to date) 3, failed 0" in r.output
    assert f"cache entry '{old_high}' renamed to '跳高'" in r.output
    assert "cache entry 'my_clip_1_' renamed to 'my clip (1)'" in r.output
    assert sorted(p.name for p in feats.iterdir() if p.is_file()) == sorted(
        f"{v}.{ext}" for v in want for ext in ("npy", "json"))
    for vid, array in want.items():
        got, meta = read_features(feats, vid)
        assert got.tobytes() == array.tobytes() and meta["video_id"] == vid
    # a rerun has nothing left to say
    r = runner.invoke(main, ["extract", "videos", "-o", "feats", *SMALL_EXTRACT])
    assert "note:" not in r.output and "skipped (up to date) 3" in r.output


def test_an_old_entry_of_another_source(tmp_path, monkeypatch, make_video, one_thread):
    from support import SMALL_EXTRACT

    _fake_real_weights(monkeypatch)
    monkeypatch.chdir(tmp_path)
    _videos(tmp_path / "videos", make_video, ["跳高"])
    _videos(tmp_path / "elsewhere", make_video, ["跑步"])
    runner = CliRunner()
    assert runner.invoke(main, ["extract", "videos", "elsewhere", "-o", "feats", *SMALL_EXTRACT]).exit_code == 0
    feats = tmp_path / "feats"
    # an older version, given videos/消失.mp4 and elsewhere/跑步.mp4 (both '_') and later 跑步 alone:
    gone = tmp_path / "videos" / "消失.mp4"  # since deleted
    old_gone = _old_id(gone, "folder")  # also a name 跳高.mp4 (same folder) had then
    _move_entry(feats, "跳高", old_gone, path=str(gone.resolve()))
    _move_entry(feats, "跑步", "_")  # '_' made from another video that still exists
    r = runner.invoke(main, ["extract", "videos", "-o", "feats", *SMALL_EXTRACT])
    assert r.exit_code == 0, r.output
    assert "extracted 1, skipped (up to date) 0, failed 0" in r.output  # re-extracted under its own id
    assert f"removed the old cache entry '{old_gone}' (made from {gone.resolve()}, which is gone)" in r.output
    assert sorted(p.name for p in feats.iterdir() if p.is_file()) == ["_.json", "_.npy", "跳高.json", "跳高.npy"]
    # '_' belongs to 跑步.mp4: left alone above, carried over when that video is extracted
    r = runner.invoke(main, ["extract", "elsewhere", "-o", "feats", *SMALL_EXTRACT])
    assert "extracted 0, skipped (up to date) 1, failed 0" in r.output, r.output
    assert "cache entry '_' renamed to '跑步'" in r.output
    assert sorted(p.name for p in feats.iterdir() if p.is_file()) == ["跑步.json", "跑步.npy", "跳高.json", "跳高.npy"]
