"""The BaS-Net WSTAL base (Lee et al., AAAI 2020, "Background Suppression Network for Weakly-supervised
Temporal Action Localization"), written from the paper and the authors' released code
(Pilhyeon/BaSNet-pytorch: model.py, train.py, options.py, config.py; cited as "released <file>").

- a filtering module gives every snippet a foreground weight w_t = sigmoid(z_t) (two 1x1 temporal
  convolutions, D -> 512 -> 1, LeakyReLU between: released model.py Filter_Module);
- ONE class-activation module (two kernel-3 temporal convolutions D -> 2048 -> 2048 with LeakyReLU, dropout
  0.7, a bias-free 1x1 convolution to C + 1 classes, background the last) runs twice with shared weights:
  on the features (base branch) and on w_t * features (suppression branch);
- each branch's video score is the softmax over the C + 1 classes of the mean of its k highest activations
  per class over time, k = T // r (released r = 8, of T = 750 sampled snippets);
- losses (released train.py BaS_Net_loss): the base branch is told "labels + background", the suppression
  branch "labels, no background" (each target normalised to sum 1), each as the mean over the C + 1 classes
  of the binary cross-entropy of the softmax score (nn.BCELoss; the paper writes a cross-entropy), plus
  alpha * the L1 norm over time of the weights (alpha = 1e-4, released options.py).

Variable-length videos are kept packed (the valid snippets back to back, as :mod:`head`): the kernel-3
convolutions see zeros beyond each video's ends, as the released code's zero padding does, so a video's
outputs do not depend on what it is batched with; k is taken per video from its own length.

How the rest of the pipeline reads it (:func:`compute_scores`): the suppression branch's CAS is the class
map, the filter weights are the attention. ``attention_logits`` = [0, z_t], so eq. 1's softmax gives
(1 - w_t, w_t) and the refinement's pseudo-label cross-entropy on it is the binary cross-entropy of w_t: the
pseudo ground truth supervises the filtering module (RefineLoc paper sec. 4.4, Table 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from refineloc_e2e.errors import ConfigError

BCE_LOG_FLOOR = -100.0  # nn.BCELoss clamps its log terms at -100 (released train.py uses nn.BCELoss)


@dataclass
class BaSNetConfig:
    filter_width: int = 512  # released model.py Filter_Module: Conv1d(D, 512, 1)
    cas_width: int = 2048  # released model.py CAS_Module: Conv1d(D, 2048, 3), Conv1d(2048, 2048, 3)
    cas_kernel: int = 3  # released model.py CAS_Module: kernel_size=3, padding=1 (odd: centred)
    dropout: float = 0.7  # released model.py CAS_Module: nn.Dropout(p=0.7) before the last conv
    topk_ratio: int = 8  # r in k = T // r (released model.py: self.k = num_segments // 8)
    base_weight: float = 1.0  # released train.py: loss_base + loss_supp + alpha * loss_norm (paper eq. 8)
    supp_weight: float = 1.0  # released train.py
    norm_weight: float = 1e-4  # alpha (released options.py --alpha 0.0001)

    def validate(self) -> None:
        for key in ("filter_width", "cas_width", "topk_ratio"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config key 'head.basnet.{key}' must be >= 1, got {getattr(self, key)}")
        if self.cas_kernel < 1 or self.cas_kernel % 2 == 0:
            raise ConfigError(f"config key 'head.basnet.cas_kernel' must be odd and >= 1, got {self.cas_kernel}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"config key 'head.basnet.dropout' must be in [0, 1), got {self.dropout}")
        for key in ("base_weight", "supp_weight", "norm_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"config key 'head.basnet.{key}' must be >= 0, got {getattr(self, key)}")


def shifted(x: Tensor, starts: Tensor, offset: int) -> Tensor:
    """Packed x Tensor[n, D] -> row t holds row t + offset of the SAME video, zeros past its ends.

    ``starts`` LongTensor[n]: each row's video start row, ``ends`` implied by the next video's start."""
    n = x.shape[0]
    idx = torch.arange(n, device=x.device) + offset  # (n,)
    video = torch.bucketize(torch.arange(n, device=x.device), starts, right=True)  # (n,) 1-based video id
    inside = (idx >= 0) & (idx < n)
    same = inside.clone()
    same[inside] = video[idx[inside]] == video[inside]  # (n,)
    out = x.new_zeros(x.shape)  # (n, D)
    out[same] = x[idx[same]]
    return out


class PackedConv1d(nn.Module):
    """A centred temporal convolution (``nn.Conv1d`` weights, zero padding (k-1)/2) over packed videos:
    sum_j W[:, :, j] x_{t + j - (k-1)/2}, with x = 0 outside each video."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int, bias: bool = True):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, kernel, padding=kernel // 2, bias=bias)  # holds W [O, I, k], b

    def forward(self, x: Tensor, starts: Tensor) -> Tensor:
        k = self.conv.kernel_size[0]
        w = self.conv.weight  # (O, I, k)
        out = F.linear(x, w[:, :, k // 2], self.conv.bias)  # (n, O): the centre tap
        for j in range(k):
            if j != k // 2:
                out = out + F.linear(shifted(x, starts, j - k // 2), w[:, :, j])  # (n, O)
        return out


class BaSNetHead(nn.Module):
    """Filtering module (-> 1 foreground logit) and one shared CAS module (-> C + 1 logits), run twice."""

    def __init__(self, cfg, n_classes: int):  # cfg: head.HeadConfig (base "basnet")
        super().__init__()
        b: BaSNetConfig = cfg.basnet
        self.cfg = cfg
        self.n_classes = n_classes
        D = cfg.feature_dim
        self.filter = nn.Sequential(nn.Linear(D, b.filter_width), nn.LeakyReLU(),
                                    nn.Linear(b.filter_width, 1))  # 1x1 convs == per-snippet linear layers
        self.cas_1 = PackedConv1d(D, b.cas_width, b.cas_kernel)
        self.cas_2 = PackedConv1d(b.cas_width, b.cas_width, b.cas_kernel)
        self.cas_drop = nn.Dropout(b.dropout)
        self.cas_out = nn.Linear(b.cas_width, n_classes + 1, bias=False)  # background = index n_classes

    def _cas(self, x: Tensor, starts: Tensor) -> Tensor:
        h = F.leaky_relu(self.cas_1(x, starts))  # (n, W)
        h = F.leaky_relu(self.cas_2(h, starts))  # (n, W)
        return self.cas_out(self.cas_drop(h))  # (n, C + 1)

    def forward(self, features: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """features Tensor[B, T, D], mask BoolTensor[B, T]; see :meth:`forward_packed`."""
        return self.forward_packed(features[mask], mask)  # features[mask]: (n_valid, D)

    def forward_packed(self, x: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """x Tensor[n_valid, D]: the valid snippets in ``mask``'s row-major order. Returns padded raw logits:
        ``base_cas_logits`` / ``supp_cas_logits`` Tensor[B, T, C + 1], ``filter_logits`` Tensor[B, T] (z_t,
        w_t = sigmoid(z_t)), ``attention_logits`` Tensor[B, T, 2] = [0, z_t] (0 at padded positions) and each
        branch's top-k pooled video logits ``base_video_logits`` / ``supp_video_logits`` Tensor[B, C + 1]."""
        D = x.shape[-1]
        if D != self.cfg.feature_dim:
            raise ValueError(f"features have D={D}, the head expects {self.cfg.feature_dim}")
        lengths = mask.sum(dim=1)  # (B,)
        if x.shape[0] != int(lengths.sum()):
            raise ValueError(f"{x.shape[0]} packed snippets but the mask marks {int(lengths.sum())} valid")
        B, T = mask.shape
        starts = torch.cumsum(lengths, 0) - lengths  # (B,) first row of each video
        row_starts = starts[lengths > 0]  # (B',) empty videos own no rows
        z = self.filter(x).squeeze(-1)  # (n,)
        both = self._cas(torch.cat([x, torch.sigmoid(z)[:, None] * x]),  # (2n, D): base rows, then suppressed
                         torch.cat([row_starts, row_starts + x.shape[0]]))  # (2n, C + 1)
        base_cas = x.new_zeros(B, T, self.n_classes + 1)  # (B, T, C + 1)
        supp_cas = x.new_zeros(B, T, self.n_classes + 1)  # (B, T, C + 1)
        filt = x.new_zeros(B, T)  # (B, T)
        base_cas[mask] = both[:x.shape[0]]
        supp_cas[mask] = both[x.shape[0]:]
        filt[mask] = z
        att = torch.stack([torch.zeros_like(filt), filt], dim=-1)  # (B, T, 2): softmax -> (1 - w, w)
        ratio = self.cfg.basnet.topk_ratio
        return {"base_cas_logits": base_cas, "supp_cas_logits": supp_cas, "filter_logits": filt,
                "attention_logits": att,
                "base_video_logits": topk_pool(base_cas, mask, ratio),  # (B, C + 1)
                "supp_video_logits": topk_pool(supp_cas, mask, ratio)}  # (B, C + 1)


def is_basnet_output(raw: dict[str, Tensor]) -> bool:
    return "supp_cas_logits" in raw


def topk_pool(cas_logits: Tensor, mask: Tensor, ratio: int) -> Tensor:
    """Mean of each class's k = max(1, T_b // ratio) highest activations over the video's valid snippets.

    cas_logits Tensor[B, T, K], mask BoolTensor[B, T] -> Tensor[B, K]."""
    lengths = mask.sum(dim=1)  # (B,)
    k = torch.clamp(lengths // ratio, min=1)  # (B,)
    ranked = cas_logits.masked_fill(~mask[..., None], float("-inf")).sort(dim=1, descending=True).values  # (B, T, K)
    top = torch.arange(mask.shape[1], device=mask.device)[None, :] < k[:, None]  # (B, T): rank < k
    summed = ranked.masked_fill(~top[..., None], 0.0).sum(dim=1)  # (B, K)
    return summed / k[:, None].to(summed.dtype)  # (B, K)


def branch_scores(raw: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(base, suppression) video scores: softmax over C + 1 of the top-k pooled CAS. Tensor[B, C + 1] each."""
    base = torch.softmax(raw["base_video_logits"], dim=-1)  # (B, C + 1)
    supp = torch.softmax(raw["supp_video_logits"], dim=-1)  # (B, C + 1)
    return base, supp


def _bce(p: Tensor, target: Tensor) -> Tensor:
    """Mean over the last axis of nn.BCELoss's terms (logs floored at -100). p, target Tensor[B, K] -> [B]."""
    log_p = torch.log(p).clamp(min=BCE_LOG_FLOOR)  # (B, K)
    log_q = torch.log1p(-p).clamp(min=BCE_LOG_FLOOR)  # (B, K)
    return -(target * log_p + (1 - target) * log_q).mean(dim=-1)  # (B,)


def basnet_losses(raw: dict[str, Tensor], mask: Tensor, targets: Tensor, cfg: BaSNetConfig) -> dict[str, Tensor]:
    """Per-video BaS-Net losses (released train.py), each Tensor[B]: ``base``, ``supp``, ``norm`` and
    ``total`` = base_weight * base + supp_weight * supp + norm_weight * norm.

    ``targets`` Tensor[B, C] (any non-negative label weights; only which are > 0 matters): the base branch's
    target is (labels, background 1), the suppression branch's (labels, background 0), each normalised to sum 1.
    ``norm`` = sum over the video's valid snippets of |w_t| (L1 norm over time; the batch mean of it is
    released ``torch.mean(torch.norm(fore_weights, p=1, dim=1))``).
    """
    labels = (targets > 0).to(targets.dtype)  # (B, C)
    ones = torch.ones_like(labels[:, :1])  # (B, 1)
    t_base = torch.cat([labels, ones], dim=1)  # (B, C + 1)
    t_supp = torch.cat([labels, 0 * ones], dim=1)  # (B, C + 1)
    t_base = t_base / t_base.sum(dim=1, keepdim=True)
    t_supp = t_supp / t_supp.sum(dim=1, keepdim=True).clamp(min=1e-12)
    p_base, p_supp = branch_scores(raw)
    w = torch.sigmoid(raw["filter_logits"]) * mask  # (B, T), 0 at padding
    out = {"base": _bce(p_base, t_base), "supp": _bce(p_supp, t_supp), "norm": w.sum(dim=1)}
    out["total"] = cfg.base_weight * out["base"] + cfg.supp_weight * out["supp"] + cfg.norm_weight * out["norm"]
    return out


def compute_scores(raw: dict[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
    """The pipeline's scores (same keys and shapes as :func:`head.compute_scores`) from BaS-Net's outputs:

    - ``cas`` Tensor[B, T, N]: softmax over the N action classes of the SUPPRESSION branch's CAS;
    - ``attention_bf`` Tensor[B, T, 2]: (1 - w_t, w_t), the filter weights as eq. 1's attention;
    - ``attention_time`` Tensor[B, T]: w_t / sum of w over the video (0 at padding; sums to 1);
    - ``video_scores`` Tensor[B, N]: the suppression branch's video score without background, renormalised;
    - ``attention_logodds`` Tensor[B, T]: z_t (the filter's logit).
    """
    N = raw["supp_cas_logits"].shape[-1] - 1
    cas = torch.softmax(raw["supp_cas_logits"][..., :N], dim=-1)  # (B, T, N)
    z = raw["filter_logits"]  # (B, T)
    w = torch.sigmoid(z) * mask  # (B, T)
    attention_bf = torch.stack([1 - torch.sigmoid(z), torch.sigmoid(z)], dim=-1)  # (B, T, 2)
    attention_time = w / w.sum(dim=1, keepdim=True).clamp(min=1e-12)  # (B, T)
    _, supp = branch_scores(raw)  # (B, N + 1)
    video_scores = supp[:, :N] / supp[:, :N].sum(dim=1, keepdim=True).clamp(min=1e-12)  # (B, N)
    return {"cas": cas, "attention_bf": attention_bf, "attention_time": attention_time,
            "video_scores": video_scores, "attention_logodds": z}
