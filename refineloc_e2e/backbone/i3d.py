"""Inception-v1 I3D (Carreira & Zisserman, CVPR 2017) with TensorFlow "SAME" padding, inference only.

Architecture and numerics follow DeepMind's ``kinetics-i3d`` release, so its checkpoints give its
logits: convolutions and max-pools pad "SAME" the TensorFlow way (the output size is ``ceil(n / stride)``;
when the total padding is odd the extra element goes at the *end*), max-pools pad with ``-inf``,
BatchNorm uses ``eps = 1e-3`` and always its running statistics (the backbone is a frozen feature
extractor: ``train()`` does not switch BatchNorm to batch statistics).

Input: ``Tensor[B, C, T, H, W]`` float32 in ``[-1, 1]`` (C = 3 RGB or 2 flow x/y), any ``T, H, W >= 1``;
224x224 and ``T`` a multiple of 8 are what the weights were trained on. Either memory format works
(``channels_last_3d`` input and model can be faster on CPU).
Nothing here assumes a device: the model runs where its parameters and the input are.

``forward(x) -> (features Tensor[B, 1024], logits Tensor[B, num_classes])``:
- features: mean of ``Mixed_5c`` over T', H', W' (for a 16x224x224 snippet ``Mixed_5c`` is
  ``[B, 1024, 2, 7, 7]``, so this equals DeepMind's 2x7x7 average pool);
- logits: DeepMind's head: average pool with a ``2x7x7`` window, stride 1, VALID, then a 1x1x1
  convolution with bias, then the mean over the remaining positions (DeepMind averages over time and
  squeezes H, W, which are 1 at 224x224; we average over T, H, W so larger inputs work too). When
  ``Mixed_5c`` is smaller than the window (fewer than 9 input frames, or less than ~200 px) the window is
  clamped to the available size, so short inputs still give logits (DeepMind's graph would fail).
  The 1x1x1 convolution commutes with the mean, so it is applied to the mean (same result, cheaper).

State-dict keys (our own names, mapped from DeepMind's scopes and piergiaj's module names in
``weights.py``)::

    conv3d_1a_7x7.conv.weight            [64, C, 7, 7, 7]      (DeepMind Conv3d_1a_7x7)
    conv3d_1a_7x7.bn.{weight,bias,running_mean,running_var}  [64]
    conv3d_2b_1x1.*, conv3d_2c_3x3.*                           (Conv3d_2b_1x1, Conv3d_2c_3x3)
    mixed_3b.b0_1x1.*   Branch_0/Conv3d_0a_1x1     mixed_3b.b1_1x1.*   Branch_1/Conv3d_0a_1x1
    mixed_3b.b1_3x3.*   Branch_1/Conv3d_0b_3x3     mixed_3b.b2_1x1.*   Branch_2/Conv3d_0a_1x1
    mixed_3b.b2_3x3.*   Branch_2/Conv3d_0b_3x3     mixed_3b.b3_1x1.*   Branch_3/Conv3d_0b_1x1 (after max-pool)
    ... likewise mixed_3c, mixed_4b..mixed_4f, mixed_5b, mixed_5c
    logits.weight [num_classes, 1024, 1, 1, 1], logits.bias [num_classes]   (Logits/Conv3d_0c_1x1)
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

BN_EPS = 1e-3
FEATURE_DIM = 1024
LOGITS_WINDOW = (2, 7, 7)  # DeepMind's final average pool, VALID, stride 1

STEM_UNITS = ("conv3d_1a_7x7", "conv3d_2b_1x1", "conv3d_2c_3x3")
# branch name -> kernel size; the order is the channel order of the concatenated output
BRANCHES = (("b0_1x1", 1), ("b1_1x1", 1), ("b1_3x3", 3), ("b2_1x1", 1), ("b2_3x3", 3), ("b3_1x1", 1))
# name -> output channels of (b0_1x1, b1_1x1, b1_3x3, b2_1x1, b2_3x3, b3_1x1), in network order
MIXED = (
    ("mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("mixed_5c", (384, 192, 384, 48, 128, 128)),
)
UNIT_NAMES = STEM_UNITS + tuple(f"{m}.{b}" for m, _ in MIXED for b, _ in BRANCHES)  # every conv+BN unit


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding of one dimension: ``(before, after)``, the odd element after."""
    n_out = -(-size // stride)  # ceil(size / stride)
    total = max((n_out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _same_pads(x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> list[tuple[int, int]]:
    return [same_padding(n, k, s) for n, k, s in zip(x.shape[2:], kernel, stride)]


def _flat_pad(pads: list[tuple[int, int]]) -> tuple[int, ...]:
    """``[(t0, t1), (h0, h1), (w0, w1)]`` -> ``F.pad`` order ``(w0, w1, h0, h1, t0, t1)``."""
    return tuple(p for pair in reversed(pads) for p in pair)


def max_pool3d_same(x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> Tensor:
    """Max-pool ``Tensor[B, C, T, H, W]`` with TF "SAME" padding (padded elements are ``-inf``)."""
    pads = _same_pads(x, kernel, stride)
    if all(b == a and b <= k // 2 for (b, a), k in zip(pads, kernel)):
        return F.max_pool3d(x, kernel, stride, padding=tuple(b for b, _ in pads))  # implicit -inf pad
    x = F.pad(x, _flat_pad(pads), value=-math.inf)
    return F.max_pool3d(x, kernel, stride)


class FrozenBatchNorm3d(nn.Module):
    """BatchNorm over C of ``Tensor[B, C, T, H, W]`` that always uses its running statistics.

    ``weight`` (scale, gamma) and ``bias`` (offset, beta) are parameters; ``running_mean`` and
    ``running_var`` are buffers. DeepMind's checkpoints have no learned scale: loaders set it to 1.
    """

    def __init__(self, channels: int, eps: float = BN_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, eps=self.eps)


class Unit3D(nn.Module):
    """Conv3d (no bias, TF "SAME" padding) -> FrozenBatchNorm3d -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1):
        super().__init__()
        self.kernel = (kernel,) * 3
        self.stride = (stride,) * 3
        self.conv = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, padding=0, bias=False)
        self.bn = FrozenBatchNorm3d(out_channels)

    def forward(self, x: Tensor) -> Tensor:  # [B, Cin, T, H, W] -> [B, Cout, T/s, H/s, W/s] (ceil)
        pads = _same_pads(x, self.kernel, self.stride)
        if all(b == a for b, a in pads):  # symmetric: let the convolution pad (no copy)
            x = F.conv3d(x, self.conv.weight, None, self.stride, tuple(b for b, _ in pads))
        else:
            x = F.conv3d(F.pad(x, _flat_pad(pads)), self.conv.weight, None, self.stride)
        return F.relu(self.bn(x))


class InceptionModule(nn.Module):
    """Four parallel branches concatenated over channels: 1x1 | 1x1->3x3 | 1x1->3x3 | maxpool3->1x1."""

    def __init__(self, in_channels: int, out_channels: tuple[int, ...]):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = out_channels
        self.b0_1x1 = Unit3D(in_channels, c0, 1)
        self.b1_1x1 = Unit3D(in_channels, c1a, 1)
        self.b1_3x3 = Unit3D(c1a, c1b, 3)
        self.b2_1x1 = Unit3D(in_channels, c2a, 1)
        self.b2_3x3 = Unit3D(c2a, c2b, 3)
        self.b3_1x1 = Unit3D(in_channels, c3, 1)
        self.out_channels = c0 + c1b + c2b + c3

    def forward(self, x: Tensor) -> Tensor:  # [B, Cin, T, H, W] -> [B, Cout, T, H, W]
        b0 = self.b0_1x1(x)
        b1 = self.b1_3x3(self.b1_1x1(x))
        b2 = self.b2_3x3(self.b2_1x1(x))
        b3 = self.b3_1x1(max_pool3d_same(x, (3, 3, 3), (1, 1, 1)))
        return torch.cat([b0, b1, b2, b3], dim=1)


class InceptionI3d(nn.Module):
    """Inception-v1 I3D: ``Tensor[B, C, T, H, W]`` in [-1, 1] -> (features [B, 1024], logits [B, K]).

    ``in_channels``: 3 for RGB, 2 for optical flow (x, y). ``num_classes``: size of the logits layer
    (400 for Kinetics-400). Spatio-temporal strides: Mixed_5c is ``[B, 1024, ceil(T/8), ceil(H/32),
    ceil(W/32)]``.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 400):
        super().__init__()
        if in_channels not in (2, 3):
            raise ValueError(f"in_channels must be 3 (RGB) or 2 (flow), got {in_channels}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.conv3d_1a_7x7 = Unit3D(in_channels, 64, 7, stride=2)
        self.conv3d_2b_1x1 = Unit3D(64, 64, 1)
        self.conv3d_2c_3x3 = Unit3D(64, 192, 3)
        channels = 192
        for name, outs in MIXED:
            block = InceptionModule(channels, outs)
            self.add_module(name, block)
            channels = block.out_channels
        assert channels == FEATURE_DIM  # architecture constant, not user input
        self.logits = nn.Conv3d(FEATURE_DIM, num_classes, 1, bias=True)

    def feature_map(self, x: Tensor) -> Tensor:
        """The last feature map (Mixed_5c): ``Tensor[B, C, T, H, W]`` -> ``Tensor[B, 1024, T/8, H/32, W/32]`` (ceil)."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"I3D expects Tensor[B, {self.in_channels}, T, H, W], got shape {tuple(x.shape)}")
        x = self.conv3d_1a_7x7(x)                             # [B, 64, T/2, H/2, W/2]
        x = max_pool3d_same(x, (1, 3, 3), (1, 2, 2))          # [B, 64, T/2, H/4, W/4]
        x = self.conv3d_2c_3x3(self.conv3d_2b_1x1(x))         # [B, 192, T/2, H/4, W/4]
        x = max_pool3d_same(x, (1, 3, 3), (1, 2, 2))          # [B, 192, T/2, H/8, W/8]
        x = self.mixed_3c(self.mixed_3b(x))                   # [B, 480, T/2, H/8, W/8]
        x = max_pool3d_same(x, (3, 3, 3), (2, 2, 2))          # [B, 480, T/4, H/16, W/16]
        for name in ("mixed_4b", "mixed_4c", "mixed_4d", "mixed_4e", "mixed_4f"):
            x = getattr(self, name)(x)                        # -> [B, 832, T/4, H/16, W/16]
        x = max_pool3d_same(x, (2, 2, 2), (2, 2, 2))          # [B, 832, T/8, H/32, W/32]
        return self.mixed_5c(self.mixed_5b(x))                # [B, 1024, T/8, H/32, W/32]

    def head(self, fmap: Tensor) -> tuple[Tensor, Tensor]:
        """``Mixed_5c`` map ``Tensor[B, 1024, t, h, w]`` -> (features [B, 1024], logits [B, K])."""
        features = fmap.mean(dim=(2, 3, 4))                   # [B, 1024]
        window = tuple(min(k, n) for k, n in zip(LOGITS_WINDOW, fmap.shape[2:]))  # clamp short inputs
        pooled = F.avg_pool3d(fmap, window, stride=1)         # [B, 1024, t', h', w'] (VALID)
        pooled_mean = pooled.mean(dim=(2, 3, 4))              # [B, 1024]
        logits = F.linear(pooled_mean, self.logits.weight.flatten(1), self.logits.bias)  # [B, K]
        return features, logits

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``Tensor[B, C, T, H, W]`` in [-1, 1] -> (features ``Tensor[B, 1024]``, logits ``Tensor[B, K]``)."""
        return self.head(self.feature_map(x))


def i3d_state_shapes(in_channels: int = 3, num_classes: int = 400) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of :class:`InceptionI3d` and its shape (built on the meta device, no memory)."""
    with torch.device("meta"):
        model = InceptionI3d(in_channels, num_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
