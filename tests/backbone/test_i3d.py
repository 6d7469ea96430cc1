"""InceptionI3d: shapes, TF "SAME" padding against hand computations, head, memory formats, batching."""

import pytest
import torch
import torch.nn.functional as F

from refineloc_e2e.backbone.i3d import (FEATURE_DIM, InceptionI3d, Unit3D, i3d_state_shapes, max_pool3d_same,
                                        same_padding)


@pytest.fixture(scope="module")
def model() -> InceptionI3d:
    torch.manual_seed(0)
    m = InceptionI3d(in_channels=3, num_classes=400)
    with torch.no_grad():  # non-trivial BatchNorm statistics so that BN errors show
        for name, buf in m.named_buffers():
            if name.endswith("running_mean"):
                buf.uniform_(-0.1, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
        for name, p in m.named_parameters():
            if name.endswith("bn.weight"):
                p.uniform_(0.8, 1.2)
            elif name.endswith("bn.bias"):
                p.uniform_(-0.1, 0.1)
    return m.eval()


@pytest.mark.slow
def test_output_shapes_16x224(model):
    x = torch.rand(1, 3, 16, 224, 224) * 2 - 1
    with torch.inference_mode():
        fmap = model.feature_map(x)
        assert fmap.shape == (1, FEATURE_DIM, 2, 7, 7)
        features, logits = model.head(fmap)
    assert features.shape == (1, 1024) and logits.shape == (1, 400)
    assert torch.isfinite(features).all() and torch.isfinite(logits).all()


@pytest.mark.parametrize("shape", [(2, 3, 5, 37, 50), (1, 3, 1, 1, 1), (1, 3, 9, 40, 33)])
def test_output_shapes_odd_sizes(model, shape):
    with torch.inference_mode():
        features, logits = model(torch.rand(shape) * 2 - 1)
    assert features.shape == (shape[0], 1024) and logits.shape == (shape[0], 400)
    assert torch.isfinite(logits).all()


def test_flow_model_and_bad_input():
    m = InceptionI3d(in_channels=2, num_classes=7).eval()
    with torch.inference_mode():
        features, logits = m(torch.zeros(1, 2, 8, 32, 32))
    assert features.shape == (1, 1024) and logits.shape == (1, 7)
    with pytest.raises(ValueError, match=r"\[B, 2, T, H, W\].*\(1, 3, 8, 32, 32\)"):
        m(torch.zeros(1, 3, 8, 32, 32))
    with pytest.raises(ValueError, match="in_channels"):
        InceptionI3d(in_channels=4)


@pytest.mark.parametrize("size,kernel,stride,expected", [
    (224, 7, 2, (2, 3)), (16, 7, 2, (2, 3)), (79, 7, 2, (3, 3)), (112, 3, 2, (0, 1)),
    (113, 3, 2, (1, 1)), (5, 2, 2, (0, 1)), (4, 2, 2, (0, 0)), (16, 3, 1, (1, 1)), (7, 1, 1, (0, 0)), (1, 7, 2, (3, 3)),
])
def test_same_padding_values(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected
    n_out = -(-size // stride)
    assert (size + sum(expected) - kernel) // stride + 1 == n_out  # TF: output = ceil(size / stride)


def _unit_identity_bn(cin, cout, kernel, stride) -> Unit3D:
    unit = Unit3D(cin, cout, kernel, stride).eval()
    with torch.no_grad():
        unit.bn.running_var.fill_(1 - unit.bn.eps)  # BN becomes the identity
    return unit


def test_conv_same_padding_by_hand():
    # 1-D along W: x = [1, 2, 3, 4], kernel of ones (3), stride 2. TF SAME pads 0 before, 1 after:
    # [1+2+3, 3+4+0] = [6, 7] (PyTorch's symmetric padding=1 would give [3, 9]).
    unit = _unit_identity_bn(1, 1, 3, 2)
    with torch.no_grad():
        unit.conv.weight.zero_()
        unit.conv.weight[0, 0, 1, 1, :] = 1.0  # only the W taps of the centre (t, h)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 1, 4)
    out = unit(x)
    assert out.shape == (1, 1, 1, 1, 2)
    torch.testing.assert_close(out.flatten(), torch.tensor([6.0, 7.0]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kernel,stride,shape", [(7, 2, (1, 2, 5, 6, 7)), (3, 1, (2, 3, 4, 5, 3)),
                                                 (7, 2, (1, 2, 16, 10, 9)), (1, 1, (1, 4, 3, 3, 3))])
def test_unit3d_matches_explicit_pad_then_conv(kernel, stride, shape):
    torch.manual_seed(1)
    unit = _unit_identity_bn(shape[1], 4, kernel, stride)
    x = torch.randn(shape)
    pads = []
    for n in reversed(shape[2:]):  # F.pad order: W, H, T
        n_out = -(-n // stride)
        total = max((n_out - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    expected = F.relu(F.conv3d(F.pad(x, pads), unit.conv.weight, stride=stride))
    torch.testing.assert_close(unit(x), expected, rtol=1e-5, atol=1e-5)


def test_max_pool_same_by_hand():
    x = torch.tensor([-4.0, -3.0, -2.0, -1.0]).view(1, 1, 1, 1, 4)
    # stride 2, kernel 3: pad 0 before, 1 after, padded with -inf: [max(-4,-3,-2), max(-2,-1)] (zero padding: 0)
    torch.testing.assert_close(max_pool3d_same(x, (1, 1, 3), (1, 1, 2)).flatten(), torch.tensor([-2.0, -1.0]))
    # stride 1, kernel 3: symmetric pad 1, still -inf
    torch.testing.assert_close(max_pool3d_same(x, (1, 1, 3), (1, 1, 1)).flatten(),
                               torch.tensor([-3.0, -2.0, -1.0, -1.0]))
    # 2x2x2 stride 2 on an odd length: the last window holds one element
    y = torch.tensor([-5.0, -6.0, -7.0]).view(1, 1, 3, 1, 1)
    torch.testing.assert_close(max_pool3d_same(y, (2, 2, 2), (2, 2, 2)).flatten(), torch.tensor([-5.0, -7.0]))


def test_head_matches_deepmind_logits_formula(model):
    # DeepMind: avg_pool [2,7,7] stride 1 VALID -> 1x1x1 conv (bias) -> squeeze H, W -> mean over time
    torch.manual_seed(2)
    fmap = torch.rand(2, 1024, 4, 7, 7)
    features, logits = model.head(fmap)
    pooled = F.avg_pool3d(fmap, (2, 7, 7), stride=1)                     # [2, 1024, 3, 1, 1]
    expected = F.conv3d(pooled, model.logits.weight, model.logits.bias)  # [2, 400, 3, 1, 1]
    expected = expected.squeeze(4).squeeze(3).mean(dim=2)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(features, fmap.mean(dim=(2, 3, 4)))
    # a map smaller than the window (short input): the window is clamped to the whole map
    small = torch.rand(1, 1024, 1, 2, 3)
    _, logits_small = model.head(small)
    expected_small = F.linear(small.mean(dim=(2, 3, 4)), model.logits.weight.flatten(1), model.logits.bias)
    torch.testing.assert_close(logits_small, expected_small, rtol=1e-5, atol=1e-5)


def test_batching_channels_last_and_train_mode_agree(model):
    torch.manual_seed(3)
    x = torch.rand(3, 3, 4, 32, 36) * 2 - 1
    with torch.inference_mode():
        f_batch, l_batch = model(x)
        f_one, l_one = model(x[1:2])
        torch.testing.assert_close(f_batch[1:2], f_one, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(l_batch[1:2], l_one, rtol=1e-4, atol=1e-4)
        cl_model = InceptionI3d(3, 400)
        cl_model.load_state_dict(model.state_dict())
        cl_model = cl_model.to(memory_format=torch.channels_last_3d).eval()
        f_cl, l_cl = cl_model(x.to(memory_format=torch.channels_last_3d))
        torch.testing.assert_close(f_cl, f_batch, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(l_cl, l_batch, rtol=1e-4, atol=1e-4)
        model.train()  # BatchNorm is frozen: train() changes nothing
        try:
            f_train, _ = model(x)
        finally:
            model.eval()
    torch.testing.assert_close(f_train, f_batch)


def test_forward_follows_the_device():
    # the meta device stands in for an accelerator: any tensor created on the CPU inside forward would fail
    with torch.device("meta"):
        m = InceptionI3d(3, 400).eval()
    features, logits = m(torch.empty(2, 3, 16, 224, 224, device="meta"))
    assert features.device.type == "meta" and features.shape == (2, 1024) and logits.shape == (2, 400)


def test_state_dict_keys_are_our_names():
    shapes = i3d_state_shapes(in_channels=2, num_classes=400)
    assert len(shapes) == 287
    assert shapes["conv3d_1a_7x7.conv.weight"] == (64, 2, 7, 7, 7)
    assert shapes["mixed_5b.b2_3x3.conv.weight"] == (128, 32, 3, 3, 3)
    assert shapes["mixed_5c.b3_1x1.bn.running_var"] == (128,)
    assert shapes["logits.weight"] == (400, 1024, 1, 1, 1) and shapes["logits.bias"] == (400,)
    assert not any("num_batches_tracked" in k for k in shapes)
