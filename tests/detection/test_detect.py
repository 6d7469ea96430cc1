import json

import numpy as np
import pytest

from refineloc_e2e.detection.detect import check_compatible, extract_config_from_meta, redetect_from_scores
from refineloc_e2e.errors import InputError, ModelMismatchError
from refineloc_e2e.model.postprocess import PostprocessConfig, predict_segments, save_scores, segments_to_results

META = {"dim": 2048, "fps": 25.0, "snippet_frames": 16, "streams": ["rgb", "flow"],
        "backbone": {"rgb": {"weights_id": "i3d-kinetics400-rgb"},
                     "flow": {"weights_id": "cross-modality-from-rgb:i3d-kinetics400-rgb"}},
        "decode": {"fps": 25.0, "short_side": 128, "crop_size": 112, "snippet_frames": 16, "partial_ok": False},
        "flow": {"method": "tvl1", "implementation": "cv2.optflow.DualTVL1OpticalFlow", "preset": "paper",
                 "warps": 5, "nscales": 5, "region": "crop", "region_margin_px": 16}}


def test_compatible_features_pass():
    assert check_compatible(META, dict(META), model_name="m.pt", feature_name="v.npy") is None
    # keys one side does not record are not compared (e.g. imported features have no settings hash)
    partial = {k: v for k, v in META.items() if k != "settings_hash"}
    assert check_compatible(META, partial, model_name="m.pt", feature_name="v.npy") is None
    # but any recorded difference is refused, one key at a time
    for key, value in (("dim", 1), ("fps", 30.0), ("snippet_frames", 8), ("streams", ["rgb"])):
        with pytest.raises(ModelMismatchError, match=f"{key}: model"):
            check_compatible(META, dict(META, **{key: value}), model_name="m.pt", feature_name="v.npy")


def test_mismatch_names_both_sides():
    other = dict(META, dim=1024, snippet_frames=15,
                 backbone={"rgb": {"weights_id": "piergiaj-rgb-imagenet"}, "flow": META["backbone"]["flow"]})
    with pytest.raises(ModelMismatchError) as e:
        check_compatible(META, other, model_name="runs/x/model.pt", feature_name="feats/v.npy")
    msg = str(e.value)
    assert msg.startswith("runs/x/model.pt was trained on other features than feats/v.npy: ")
    assert "dim: model 2048 vs features 1024" in msg
    assert "snippet_frames: model 16 vs features 15" in msg
    assert "rgb backbone: model 'i3d-kinetics400-rgb' vs features 'piergiaj-rgb-imagenet'" in msg


def test_extract_config_rebuilt_from_model_metadata():
    cfg = extract_config_from_meta(META)
    assert cfg.decode.short_side == 128 and cfg.decode.crop_size == 112
    assert cfg.streams == "both" and cfg.flow_weights == "cross-modality-from-rgb"
    assert cfg.flow.preset == "paper" and cfg.flow.warps == 5
    assert cfg.flow_region == "crop" and cfg.flow_margin_px == 16
    assert extract_config_from_meta({"dim": 2048}) is None  # e.g. imported W-TALC features


def _scores(rng, T=40, N=3):
    cas = rng.dirichlet(np.ones(N), size=T).astype(np.float32)
    fg = rng.uniform(size=T).astype(np.float32)
    bf = np.stack([1 - fg, fg], axis=1)
    at = np.exp(fg) / np.exp(fg).sum()
    vs = (at[:, None] * cas).sum(0)
    return {"cas": cas, "attention_bf": bf, "attention_time": at.astype(np.float32), "video_scores": vs}


def test_redetect_from_saved_scores_matches_direct_postprocessing(tmp_path):
    rng = np.random.default_rng(0)
    names = ["A", "B", "C"]
    direct = {}
    pp = PostprocessConfig(alpha_class=0.3)
    for vid in ("v1", "v2"):
        s = _scores(rng)
        save_scores(tmp_path / f"{vid}.npz", {**s, "class_names": np.array(names), "fps": np.float64(25.0),
                                              "snippet_frames": np.int64(16), "duration_s": np.float64(25.6)})
        segs = predict_segments(s["cas"], s["attention_bf"], s["attention_time"], s["video_scores"], pp)
        direct[vid] = segments_to_results(segs, names, fps=25.0, snippet_frames=16, n_snippets=40, duration_s=25.6)
    out = tmp_path / "out.json"
    got = redetect_from_scores(tmp_path, out, pp)
    assert got == direct
    assert json.loads(out.read_text())["results"] == json.loads(json.dumps(direct))


def test_redetect_without_scores_is_an_error(tmp_path):
    with pytest.raises(InputError, match=r"no saved scores \(\*\.npz\) found"):
        redetect_from_scores(tmp_path, tmp_path / "o.json", PostprocessConfig())
