"""Tests of the RefineLoc head: shapes, masking, eqs. 1-2, the video loss, checkpoints."""

import math

import numpy as np
import pytest
import torch

from refineloc_e2e.config import from_dict
from refineloc_e2e.errors import ConfigError, WeightsError
from refineloc_e2e.model.head import (HeadConfig, build_head, compute_scores, label_targets, load_head, save_head,
                                video_loss)
from refineloc_e2e.model.postprocess import PostprocessConfig


pytestmark = pytest.mark.usefixtures("one_thread")


def _head(D=16, N=3, **kw):
    torch.manual_seed(0)
    return build_head(HeadConfig(feature_dim=D, **kw), N).eval()


def test_mlp_layout_halves_width():
    h = build_head(HeadConfig(feature_dim=2048, n_layers=2), 20)
    shapes = [tuple(m.weight.shape) for m in h.classifier if isinstance(m, torch.nn.Linear)]
    assert shapes == [(1024, 2048), (20, 1024)]
    shapes = [tuple(m.weight.shape) for m in h.attention if isinstance(m, torch.nn.Linear)]
    assert shapes == [(1024, 2048), (2, 1024)]
    h3 = build_head(HeadConfig(feature_dim=64, n_layers=3), 5)
    assert [m.out_features for m in h3.classifier if isinstance(m, torch.nn.Linear)] == [32, 16, 5]
    assert any(isinstance(m, torch.nn.ReLU) for m in h3.attention)


def test_head_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="n_layers"):
        from_dict(HeadConfig, {"n_layers": 0})
    with pytest.raises(ConfigError, match="dropout"):
        from_dict(HeadConfig, {"dropout": 1.5})
    with pytest.raises(ConfigError, match="head_size"):
        from_dict(HeadConfig, {"head_size": 3})


def test_shapes_and_padding():
    h = _head()
    x = torch.randn(2, 7, 16)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    raw = h(x, mask)
    assert raw["cas_logits"].shape == (2, 7, 3) and raw["attention_logits"].shape == (2, 7, 2)
    assert torch.all(raw["cas_logits"][1, 4:] == 0) and torch.all(raw["attention_logits"][1, 4:] == 0)
    s = compute_scores(raw, mask)
    assert s["cas"].shape == (2, 7, 3) and s["attention_bf"].shape == (2, 7, 2)
    assert s["attention_time"].shape == (2, 7) and s["video_scores"].shape == (2, 3)
    torch.testing.assert_close(s["attention_time"].sum(1), torch.ones(2))
    assert torch.all(s["attention_time"][1, 4:] == 0)
    torch.testing.assert_close(s["video_scores"].sum(1), torch.ones(2))


def test_video_outputs_do_not_depend_on_batching():
    h = _head()
    a, b = torch.randn(5, 16), torch.randn(9, 16)
    alone = compute_scores(h(a[None], torch.ones(1, 5, dtype=torch.bool)), torch.ones(1, 5, dtype=torch.bool))
    x = torch.zeros(2, 9, 16)
    x[0, :5], x[1] = a, b
    x[0, 5:] = 100.0  # junk in the padding must not leak anywhere
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, :5] = True
    mask[1] = True
    raw = h(x, mask)
    both = compute_scores(raw, mask)
    for key in ("cas", "attention_bf", "attention_time"):
        torch.testing.assert_close(both[key][0, :5], alone[key][0], rtol=0, atol=1e-6)
    torch.testing.assert_close(both["video_scores"][0], alone["video_scores"][0], rtol=0, atol=1e-6)
    t = label_targets([[1], [0]], 3)
    raw1 = h(a[None], torch.ones(1, 5, dtype=torch.bool))
    l1 = video_loss(raw1, torch.ones(1, 5, dtype=torch.bool), t[:1])
    l2 = video_loss(raw, mask, t)
    torch.testing.assert_close(l2[0], l1[0], rtol=0, atol=1e-6)


def test_eq1_eq2_and_video_scores_by_hand():
    ln3 = math.log(3.0)
    raw = {"attention_logits": torch.tensor([[[0.0, 0.0], [0.0, ln3], [ln3, 0.0]]]),  # fg = .5, .75, .25
           "cas_logits": torch.tensor([[[0.0, 0.0], [ln3, 0.0], [0.0, ln3]]])}  # cas0 = .5, .75, .25
    mask = torch.ones(1, 3, dtype=torch.bool)
    s = compute_scores(raw, mask)
    torch.testing.assert_close(s["attention_bf"][0, :, 1], torch.tensor([0.5, 0.75, 0.25]))
    torch.testing.assert_close(s["attention_bf"][0, :, 0], torch.tensor([0.5, 0.25, 0.75]))
    e = [math.exp(0.5), math.exp(0.75), math.exp(0.25)]  # eq. 2: softmax of the PROBABILITY
    at = torch.tensor([v / sum(e) for v in e])
    torch.testing.assert_close(s["attention_time"][0], at)
    y0 = float(at @ torch.tensor([0.5, 0.75, 0.25]))
    torch.testing.assert_close(s["video_scores"][0], torch.tensor([y0, 1 - y0]))
    # with the last snippet padded, eq. 2 runs over the first two only
    mask2 = torch.tensor([[True, True, False]])
    at2 = compute_scores(raw, mask2)["attention_time"][0]
    torch.testing.assert_close(at2, torch.tensor([e[0] / (e[0] + e[1]), e[1] / (e[0] + e[1]), 0.0]))


def test_video_loss_uses_every_label():
    t = label_targets([[0, 2], [1]], 3)
    torch.testing.assert_close(t, torch.tensor([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]]))
    ln3 = math.log(3.0)
    raw = {"attention_logits": torch.zeros(1, 2, 2), "cas_logits": torch.tensor([[[ln3, 0.0, 0.0],
                                                                                  [0.0, 0.0, ln3]]])}
    mask = torch.ones(1, 2, dtype=torch.bool)
    # uniform attention over 2 snippets: y-hat = mean of cas rows = [.4, .2, .4]
    loss = video_loss(raw, mask, label_targets([[0, 2]], 3))
    torch.testing.assert_close(loss, torch.tensor([-(0.5 * math.log(0.4) + 0.5 * math.log(0.4))]))
    loss_b = video_loss(raw, mask, label_targets([[0, 1]], 3))  # the second label changes the loss
    assert float(loss_b) > float(loss) + 0.3
    with pytest.raises(ValueError):
        label_targets([[]], 3)


def test_dropout_only_in_training_mode():
    h = _head(D=32, dropout=0.5)
    x, m = torch.randn(1, 6, 32), torch.ones(1, 6, dtype=torch.bool)
    h.eval()
    torch.testing.assert_close(h(x, m)["cas_logits"], h(x, m)["cas_logits"])
    h.train()
    assert not torch.equal(h(x, m)["cas_logits"], h(x, m)["cas_logits"])


def test_checkpoint_round_trip(tmp_path):
    h = _head(D=16, N=3)
    meta = {"dim": 16, "fps": 25.0, "snippet_frames": 16, "streams": ["rgb", "flow"],
            "backbone": {"rgb": {"weights_id": "r"}, "flow": {"weights_id": "f"}}}
    pp = PostprocessConfig(alpha_class=0.2)
    path = tmp_path / "m.pt"
    save_head(path, h, class_names=["a", "b", "c"], feature_meta=meta, head_config=h.cfg,
              postprocess_config=pp, extra={"iteration": 2})
    blob = torch.load(path, weights_only=True)  # tensors + a JSON string only
    assert isinstance(blob["meta_json"], str)
    loaded = load_head(path)
    assert loaded.class_names == ["a", "b", "c"] and loaded.feature_meta == meta
    assert loaded.head_config == h.cfg and loaded.postprocess_config == pp and loaded.extra == {"iteration": 2}
    x, m = torch.randn(1, 4, 16), torch.ones(1, 4, dtype=torch.bool)
    assert torch.equal(loaded.model(x, m)["cas_logits"], h(x, m)["cas_logits"])
    assert not loaded.model.training


def test_checkpoint_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="bad.pt"):
        load_head(bad)
    with pytest.raises(WeightsError, match="not found"):
        load_head(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}, "meta_json": '{"format": "something-else"}'}, other)
    with pytest.raises(WeightsError, match="format"):
        load_head(other)
    h = _head(D=16, N=3)
    path = tmp_path / "m.pt"
    save_head(path, h, class_names=["a", "b", "c"], feature_meta={}, head_config=h.cfg,
              postprocess_config=PostprocessConfig())
    blob = torch.load(path, weights_only=True)
    blob["state_dict"] = {k: v[..., :1] for k, v in blob["state_dict"].items()}  # wrong shapes
    torch.save(blob, path)
    with pytest.raises(WeightsError, match="do not match"):
        load_head(path)


def test_class_name_count_must_match(tmp_path):
    h = _head(D=16, N=3)
    with pytest.raises(ValueError):
        save_head(tmp_path / "m.pt", h, class_names=["a"], feature_meta={}, head_config=h.cfg,
                  postprocess_config=PostprocessConfig())
    assert not np.any([p.name.endswith(".tmp") for p in tmp_path.iterdir()])


def test_forward_packed_equals_padded_forward():
    """Training feeds the valid snippets back to back (fit.collate); the outputs equal the padded path's."""
    from refineloc_e2e.training.fit import VideoItem, collate
    torch.manual_seed(0)
    head = build_head(HeadConfig(feature_dim=16), 3)
    items = [VideoItem("a", torch.randn(4, 16), [0]), VideoItem("b", torch.randn(7, 16), [1, 2]),
             VideoItem("c", torch.randn(1, 16), [2])]
    batch = collate(items, 3, torch.device("cpu"))
    padded = torch.zeros(3, 7, 16)
    for b, it in enumerate(items):
        padded[b, :len(it.features)] = it.features
    ref, packed = head(padded, batch.mask), head.forward_packed(batch.valid, batch.mask)
    for key in ref:
        torch.testing.assert_close(packed[key], ref[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match="packed snippets"):
        head.forward_packed(batch.valid[:-1], batch.mask)
