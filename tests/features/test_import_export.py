"""import-features / export-features: the published per-video layouts in, ActionFormer's and W-TALC's out,
bitwise round trips, the stated time base (overlapping windows) used end to end, and exact errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from refineloc_e2e.cli import main
from refineloc_e2e.features.cache import read_features, write_features
from refineloc_e2e.timebase import snippet_to_seconds
from support import CONFIGS

D = 8  # one stream's width in these tests (--stream-dim 8): small files, same code path as 1024
TB16 = ["--fps", "25", "--snippet-frames", "16"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _feats(rng, t: int, width: int = 2 * D) -> np.ndarray:
    x = rng.normal(size=(t, width)).astype(np.float32)
    x[:, width // 2:] *= -1e-3  # flow half small and of its own sign pattern: a swapped order would show
    return x


def _cache(folder: Path, ids, rng, *, width=2 * D, stride=None, fps=25.0, t=6) -> dict[str, np.ndarray]:
    """A feature folder as `extract` writes it (2 streams of width/2)."""
    arrays = {}
    for vid in ids:
        arrays[vid] = _feats(rng, t, width)
        meta = {"fps": fps, "snippet_frames": 16, "streams": ["rgb", "flow"], "backbone": {},
                "duration_s": t * 16 / fps, "origin": "extracted by refineloc-e2e"}
        if stride:
            meta["stride_frames"] = stride
        write_features(folder, vid, arrays[vid], meta)
    return arrays


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ----------------------------------------------------------------------------- round trips

def test_actionformer_export_imports_back_bitwise(tmp_path):
    rng = np.random.default_rng(0)
    arrays = _cache(tmp_path / "ours", ["a", "b", "video_test_0000004"], rng)
    r = run("export-features", tmp_path / "ours", "-o", tmp_path / "af", "--layout", "actionformer")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "af").iterdir()) == ["a.npy", "b.npy", "refineloc_export.json",
                                                                   "video_test_0000004.npy"]
    cfg = json.loads((tmp_path / "af" / "refineloc_export.json").read_text())["actionformer_config"]
    assert (cfg["input_dim"], cfg["default_fps"], cfg["feat_stride"], cfg["num_frames"]) == (2 * D, 25.0, 16, 16)
    r = run("import-features", tmp_path / "af", "-o", tmp_path / "back", *TB16, "--stream-dim", D, "-q")
    assert r.exit_code == 0, r.output
    assert r.stderr == f"imported 3 videos (joint layout, 25 fps, 16-frame windows every 16 frames) into " \
                       f"{tmp_path / 'back'}\n"
    for vid, want in arrays.items():
        got, meta = read_features(tmp_path / "back", vid)
        assert _same_bits(got, want), vid
        assert meta["origin"] == "imported" and meta["streams"] == ["rgb", "flow"]
        assert (meta["fps"], meta["snippet_frames"], meta["stride_frames"]) == (25.0, 16, 16)


def test_wtalc_export_follows_wtalc_order_and_imports_back_bitwise(tmp_path):
    rng = np.random.default_rng(1)
    ids = ["video_test_0000004", "video_validation_0000051", "video_test_0000006"]
    arrays = _cache(tmp_path / "ours", ids, rng, width=2048, t=5)
    r = run("export-features", tmp_path / "ours", "-o", tmp_path / "wt", "--layout", "wtalc")
    assert r.exit_code == 0, r.output
    joint = tmp_path / "wt" / "Thumos14reduced-I3D-JOINTFeatures.npy"
    names = [x.decode() for x in np.load(tmp_path / "wt" / "videoname.npy")]
    assert names == ["video_validation_0000051", "video_test_0000004", "video_test_0000006"]  # W-TALC's order
    rows = np.load(joint, allow_pickle=True)
    assert rows.dtype == object and all(_same_bits(rows[i], arrays[v]) for i, v in enumerate(names))
    np.testing.assert_allclose(np.load(tmp_path / "wt" / "duration.npy"), [[3.2]] * 3)
    r = run("import-wtalc", joint, "-o", tmp_path / "back", "--annotations", tmp_path / "wt", "-q")
    assert r.exit_code == 0, r.output
    for vid, want in arrays.items():
        assert _same_bits(read_features(tmp_path / "back", vid)[0], want), vid


def test_wtalc_export_refuses_other_time_bases(tmp_path):
    _cache(tmp_path / "ours", ["a"], np.random.default_rng(0), stride=4, fps=30.0)
    r = run("export-features", tmp_path / "ours", "-o", tmp_path / "wt", "--layout", "wtalc")
    assert (r.exit_code, r.stderr) == (1, f"error: {tmp_path / 'ours' / 'a.json'}: 30 fps, 16-frame windows every "
                                          f"4 frames; W-TALC's code assumes 25 fps, 16-frame non-overlapping "
                                          f"snippets (use --layout actionformer)\n")


# ----------------------------------------------------------------------------- the published layouts

def test_video_features_separate_files_npy_npz_and_pickles(tmp_path):
    """video_features: {id}_rgb.npy + {id}_flow.npy (or its pickled dict); npz with one or several arrays."""
    rng = np.random.default_rng(2)
    src = tmp_path / "vf"
    src.mkdir()
    rgb, flow = {}, {}
    for vid in ("v1", "v2"):
        rgb[vid], flow[vid] = _feats(rng, 7, D), _feats(rng, 7, D)
    np.save(src / "v1_rgb.npy", rgb["v1"])
    np.save(src / "v1_flow.npy", flow["v1"])
    np.savez(src / "v2_rgb.npz", rgb["v2"])  # one unnamed array
    np.savez(src / "v2_flow.npz", flow["v2"])
    r = run("import-features", src, "-o", tmp_path / "out", *TB16, "--stream-dim", D, "-q")
    assert r.exit_code == 0, r.output
    assert "(separate layout," in r.stderr
    for vid in ("v1", "v2"):
        got, meta = read_features(tmp_path / "out", vid)
        assert _same_bits(got, np.concatenate([rgb[vid], flow[vid]], axis=1))
        assert set(meta["source"]["files"]) == {"rgb", "flow"} and meta["source"]["layout"] == "separate"
    # video_features' pickle output: one dict per video with both streams and its own fps/timestamps
    pk = tmp_path / "pk"
    pk.mkdir()
    with open(pk / "v3.pkl", "wb") as f:
        pickle.dump({"rgb": rgb["v1"], "flow": flow["v1"], "fps": np.array(25.0),
                     "timestamps_ms": np.arange(7) * 640.0}, f)
    np.savez(pk / "v4.npz", rgb=rgb["v2"], flow=flow["v2"])
    r = run("import-features", pk, "-o", tmp_path / "out2", *TB16, "--stream-dim", D, "-q")
    assert r.exit_code == 0, r.output
    assert _same_bits(read_features(tmp_path / "out2", "v3")[0], np.concatenate([rgb["v1"], flow["v1"]], axis=1))
    assert _same_bits(read_features(tmp_path / "out2", "v4")[0], np.concatenate([rgb["v2"], flow["v2"]], axis=1))


def test_basnet_tree_and_stream_order(tmp_path):
    """features/{train,test}/{rgb,flow}/{id}.npy (BaS-Net, CoLA); a joint file stated as flow,rgb is written
    [rgb | flow]; an rgb-only folder gives 1-stream features."""
    rng = np.random.default_rng(3)
    tree = tmp_path / "features"
    arrays = {}
    for split, vid in (("train", "video_validation_0000051"), ("test", "video_test_0000004")):
        arrays[vid] = (_feats(rng, 4, D), _feats(rng, 4, D))
        for stream, a in zip(("rgb", "flow"), arrays[vid]):
            (tree / split / stream).mkdir(parents=True, exist_ok=True)
            np.save(tree / split / stream / f"{vid}.npy", a)
    r = run("import-features", tree, "-o", tmp_path / "out", *TB16, "--stream-dim", D, "-q")
    assert r.exit_code == 0, r.output
    assert "(tree layout," in r.stderr
    for vid, (a, b) in arrays.items():
        assert _same_bits(read_features(tmp_path / "out", vid)[0], np.concatenate([a, b], axis=1))
    a, b = arrays["video_test_0000004"]
    (tmp_path / "swapped").mkdir()
    np.save(tmp_path / "swapped" / "x.npy", np.concatenate([b, a], axis=1))  # [flow | rgb]
    r = run("import-features", tmp_path / "swapped", "-o", tmp_path / "o2", *TB16, "--stream-dim", D,
            "--streams", "flow,rgb", "-q")
    assert r.exit_code == 0, r.output
    got, meta = read_features(tmp_path / "o2", "x")
    assert _same_bits(got, np.concatenate([a, b], axis=1)) and meta["source"]["stream_order"] == ["flow", "rgb"]
    r = run("import-features", tmp_path / "swapped", "-o", tmp_path / "o3", *TB16, "--stream-dim", 2 * D,
            "--streams", "rgb", "-q")
    assert r.exit_code == 0, r.output
    assert read_features(tmp_path / "o3", "x")[1]["streams"] == ["rgb"]


# ----------------------------------------------------------------------------- errors: one exact line each

def test_import_errors_are_one_line_naming_the_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "a.npy", np.zeros((5, 2 * D + 1), np.float32))
    r = run("import-features", src, "-o", tmp_path / "o", *TB16, "--stream-dim", D)
    assert (r.exit_code, r.stderr) == (1, f"error: {src / 'a.npy'}: width 17, expected 16 (2 x 8: rgb,flow; "
                                          f"set --streams / --stream-dim)\n")
    bad = np.zeros((5, 2 * D), np.float32)
    bad[3, 2] = np.nan
    np.save(src / "a.npy", bad)
    r = run("import-features", src, "-o", tmp_path / "o", *TB16, "--stream-dim", D)
    assert (r.exit_code, r.stderr) == (1, f"error: {src / 'a.npy'}: contains NaN or infinite values "
                                          f"(first in row 3)\n")
    sep = tmp_path / "sep"
    sep.mkdir()
    np.save(sep / "v_rgb.npy", np.zeros((5, D), np.float32))
    r = run("import-features", sep, "-o", tmp_path / "o", *TB16, "--stream-dim", D)
    assert (r.exit_code, r.stderr) == (1, f"error: {sep / 'v_rgb.npy'}: no flow stream file for video 'v' "
                                          f"(pattern '{{id}}_flow.{{ext}}' under {sep})\n")
    np.save(sep / "v_flow.npy", np.zeros((4, D), np.float32))
    r = run("import-features", sep, "-o", tmp_path / "o", *TB16, "--stream-dim", D)
    assert (r.exit_code, r.stderr) == (1, f"error: {sep / 'v_flow.npy'}: 4 flow rows, but 5 rgb rows in "
                                          f"{sep / 'v_rgb.npy'}; the streams must cover the same snippets\n")
    r = run("import-features", tmp_path / "nowhere", "-o", tmp_path / "o", *TB16)
    assert (r.exit_code, r.stderr) == (1, f"error: {tmp_path / 'nowhere'}: not a folder of per-video feature "
                                          f"files\n")
    (tmp_path / "empty").mkdir()
    r = run("import-features", tmp_path / "empty", "-o", tmp_path / "o", *TB16)
    assert (r.exit_code, r.stderr) == (1, f"error: {tmp_path / 'empty'}: no file matches '{{id}}.{{ext}}' "
                                          f"(extensions npy, npz, pkl, pickle)\n")
    r = run("import-features", src, "-o", tmp_path / "o", *TB16, "--streams", "rgb,depth")
    assert (r.exit_code, r.stderr) == (1, "error: streams: expected a comma-separated order of rgb and/or flow, "
                                          "got rgb,depth\n")
    r = run("import-features", src, "-o", tmp_path / "o")
    assert r.exit_code == 2 and "Missing option '--fps'" in r.stderr  # the time base must be stated


def test_import_checks_row_counts_against_the_dataset(tmp_path):
    """THUMOS'14 video_validation_0000051 lasts 169.7 s: ~266 rows at 25 fps / 16, ~1273 at 30 fps / 4."""
    src = tmp_path / "src"
    src.mkdir()
    vid = "video_validation_0000051"
    np.save(src / f"{vid}.npy", np.zeros((1274, 2 * D), np.float32))
    r = run("import-features", src, "-o", tmp_path / "o", *TB16, "--stream-dim", D, "--dataset", "thumos14")
    assert (r.exit_code, r.stderr) == (1, f"error: {src / (vid + '.npy')}: 1274 snippets, but '{vid}' lasts "
                                          f"169.7 s in thumos14, which gives ~266 at 25 fps with 16-frame windows "
                                          f"every 16 frames (wrong --fps / --snippet-frames / --stride, or not "
                                          f"this video's features)\n")
    r = run("import-features", src, "-o", tmp_path / "o", "--fps", "30", "--snippet-frames", "16", "--stride", "4",
            "--stream-dim", D, "--dataset", "thumos14", "-q")
    assert r.exit_code == 0, r.output
    meta = read_features(tmp_path / "o", vid)[1]
    assert (meta["fps"], meta["snippet_frames"], meta["stride_frames"]) == (30.0, 16, 4)
    assert meta["duration_s"] == pytest.approx(169.7)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_pickles_that_run_code_are_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "v.pkl", "wb") as f:
        pickle.dump({"rgb": _RunsCode(tmp_path / "pwned")}, f)
    r = run("import-features", src, "-o", tmp_path / "o", *TB16)
    assert (r.exit_code, r.stderr) == (1, f"error: {src / 'v.pkl'}: refused to load: forbidden global posix.system "
                                          f"in pickle (only arrays and plain containers are allowed)\n")
    assert not (tmp_path / "pwned").exists()


# ----------------------------------------------------------------------------- the stated time base, end to end

FAST = ["--config", str(CONFIGS / "demo.yaml"),
        "--set", f"head.feature_dim={2 * D}", "--set", "train.epochs=8", "--set", "train.batch_size=2",
        "--set", "train.n_iterations=0",
        "--set", "train.holdout_fraction=0.0", "-q"]


def _overlapping_source(tmp_path: Path, n_videos=12, t=60):
    """ActionFormer-like joint files: 16-frame windows every 4 frames at 30 fps; the action fills windows
    30-45; the annotations (seconds) come from the same time base."""
    rng = np.random.default_rng(4)
    protos = rng.normal(size=(2, 2 * D)).astype(np.float32) * 4
    tb = {"fps": 30.0, "snippet_frames": 16, "stride_frames": 4}
    src, db = tmp_path / "af", {}
    src.mkdir()
    for i in range(n_videos):
        vid, c = f"v{i:02d}", i % 2
        x = rng.normal(size=(t, 2 * D)).astype(np.float32)
        x[30:45] += protos[c]
        np.save(src / f"{vid}.npy", x)
        seg = [float(snippet_to_seconds(30, **tb)), float(snippet_to_seconds(45, **tb))]
        db[vid] = {"subset": "training" if i < 8 else "validation", "duration": (t * 4 + 12) / 30,
                   "annotations": [{"label": f"C{c}", "segment": seg}]}
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"name": "toy", "taxonomy": [], "database": db}))
    return src, ann


def test_overlapping_windows_train_detect_evaluate(tmp_path, one_thread):
    """Imported at 30 fps / 16 every 4: segments come out where the annotations are; the model refuses
    features declared with another stride and features extracted here, saying why."""
    src, ann = _overlapping_source(tmp_path)
    r = run("import-features", src, "-o", tmp_path / "feats", "--fps", "30", "--snippet-frames", "16", "--stride", "4",
            "--stream-dim", D, "--dataset", ann, "--backbone", "actionformer-thumos-i3d", "-q")
    assert r.exit_code == 0, r.output
    r = run("train", "--annotations", ann, "--features", tmp_path / "feats", "--run-dir", tmp_path / "run", *FAST)
    assert r.exit_code == 0, r.output
    model = tmp_path / "run" / "model.pt"
    r = run("detect", "--features", tmp_path / "feats", "--model", model, "-o", tmp_path / "p.json")
    assert r.exit_code == 0, r.output
    preds = json.loads((tmp_path / "p.json").read_text())["results"]
    # every boundary is on the stride grid, (4 b + 6) / 30 s, and the action's edges (windows 30 and 45:
    # 4.2 s and 6.2 s) are found; ignoring the stride would put window 30 at 16 s
    bounds = np.array([x for v in ("v08", "v09", "v10", "v11") for p in preds[v] for x in p["segment"]])
    assert len(bounds) and np.allclose(np.round((bounds * 30 - 6) / 4), (bounds * 30 - 6) / 4)
    assert bounds.max() <= 8.2 + 1e-9 and {4.2, 6.2} & set(np.round(bounds, 6))
    r = run("evaluate", "--predictions", tmp_path / "p.json", "--ground-truth", ann, "--tiou", "0.5")
    assert r.exit_code == 0, r.output
    r = run("detect", "--features", tmp_path / "feats", "--model", model, "-o", tmp_path / "p1.json", "--plot",
            tmp_path / "plots", "--save-scores", tmp_path / "scores", "v09")
    assert r.exit_code == 0 and (tmp_path / "plots" / "v09.png").is_file(), r.output
    r = run("detect", "--from-scores", tmp_path / "scores", "--model", model, "-o", tmp_path / "p1b.json")
    assert r.exit_code == 0, r.output  # saved scores keep the stride: the same seconds come back
    assert json.loads((tmp_path / "p1b.json").read_text())["results"]["v09"] == preds["v09"]

    # the same arrays stated as non-overlapping: refused, naming the stride
    r = run("import-features", src, "-o", tmp_path / "f16", "--fps", "30", "--snippet-frames", "16",
            "--stream-dim", D, "--backbone", "actionformer-thumos-i3d", "-q")
    assert r.exit_code == 0, r.output
    r = run("detect", "--features", tmp_path / "f16", "--model", model, "-o", tmp_path / "p2.json", "v00")
    assert r.exit_code == 1
    assert f"error: v00: {model} was trained on other features than {tmp_path / 'f16' / 'v00.npy'}: " \
           f"stride_frames: model 4 vs features 16" in r.stderr

    # features as `extract` writes them (the same width and time base): refused, saying they are not imported
    write_features(tmp_path / "ext", "e1", np.zeros((5, 2 * D), np.float32),
                   {"origin": "extracted by refineloc-e2e", "fps": 30.0, "snippet_frames": 16, "stride_frames": 4,
                    "streams": ["rgb", "flow"], "settings_hash": "0123abcd",
                    "backbone": {"rgb": {"weights_id": "i3d-kinetics400-rgb"},
                                 "flow": {"weights_id": "cross-modality-from-rgb:i3d-kinetics400-rgb"}}})
    r = run("detect", "--features", tmp_path / "ext", "--model", model, "-o", tmp_path / "p3.json")
    assert r.exit_code == 1
    assert (f"{model} was trained on other features than {tmp_path / 'ext' / 'e1.npy'}: origin: model 'imported' "
            f"vs features 'extracted by refineloc-e2e'; flow backbone: model 'imported:actionformer-thumos-i3d' vs "
            f"features 'cross-modality-from-rgb:i3d-kinetics400-rgb'; rgb backbone: model "
            f"'imported:actionformer-thumos-i3d' vs features 'i3d-kinetics400-rgb'") in r.stderr
