"""The WSTAL base models: RefineLoc's (paper section 3.1, eqs. 1-2: per-snippet classifier + bg/fg attention)
and BaS-Net (:mod:`basnet`), chosen by ``HeadConfig.base``.

The network returns raw logits only (:meth:`WSTALHead.forward`); :func:`compute_scores` turns them into
the paper's quantities, and :func:`video_loss` is the video-label cross-entropy. Padded snippets
(``mask == False``) never enter a softmax over time or a loss, so a video's outputs do not depend on
what it is batched with.

Checkpoints (:func:`save_head` / :func:`load_head`) are a torch file holding only tensors and one JSON
string, so they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from refineloc_e2e import __version__
from refineloc_e2e.backbone.i3d import FEATURE_DIM
from refineloc_e2e.config import from_dict
from refineloc_e2e.errors import ConfigError, WeightsError
from refineloc_e2e.fileio import atomic_save_with, torch_load_untrusted
from refineloc_e2e.model import basnet
from refineloc_e2e.model.basnet import BaSNetConfig, BaSNetHead
from refineloc_e2e.model.postprocess import PostprocessConfig

CHECKPOINT_FORMAT = "refineloc-e2e-head/1"
VIDEO_LOSSES = ("paper", "released")
BASES = ("refineloc", "basnet")


@dataclass
class HeadConfig:
    # the WSTAL base model: "refineloc" (paper 3.1; n_layers, dropout, attention_time_input, video_loss apply) or
    # "basnet" (BaS-Net, AAAI 2020; its settings are ``basnet``). Refinement supervises the attention of either.
    base: str = "refineloc"
    feature_dim: int = 2 * FEATURE_DIM  # D: per-snippet feature size (I3D rgb|flow = 2 x 1024; paper 3.1)
    n_layers: int = 2  # L FC layers per MLP, each hidden width half the previous (paper 4.2: L = 2)
    dropout: float = 0.0  # dropout after each hidden ReLU; 0 = paper / released code (no regularisation)
    # what eq. 2's softmax over time is taken of: "probability" = the foreground probability of eq. 1, as the
    # paper writes it; "logit" = the foreground log-odds (A_fg - A_bg). With "probability" the time weights
    # span at most a factor e and the gradient vanishes once p_fg saturates, so the attention can collapse
    # (conventions.md, "attention level drift"); "logit" keeps a full-range, non-saturating signal.
    attention_time_input: str = "probability"
    # video-label loss. "paper": cross-entropy of y-hat = sum_t A_time(t) C(t) (paper 3.1-3.2); "released":
    # -sum_n y_n sum_t A_time(t) log C(t, n), the attention-weighted mean of per-snippet log-probabilities
    # (released code model.py; an upper bound of "paper" by Jensen, which pushes every attended snippet to be
    # confidently of the video's class). Both use all labels of a multi-label video (the released code: first only).
    video_loss: str = "paper"
    basnet: BaSNetConfig = field(default_factory=BaSNetConfig)  # base "basnet" only

    def validate(self) -> None:
        if self.base not in BASES:
            raise ConfigError(f"config key 'head.base' must be one of {BASES}, got {self.base!r}")
        self.basnet.validate()
        if self.video_loss not in VIDEO_LOSSES:
            raise ConfigError(f"config key 'head.video_loss' must be one of {VIDEO_LOSSES}, got {self.video_loss!r}")
        if self.attention_time_input not in ("probability", "logit"):
            raise ConfigError(f"config key 'head.attention_time_input' must be probability or logit, "
                              f"got {self.attention_time_input!r}")
        if self.feature_dim < 1:
            raise ConfigError(f"config key 'head.feature_dim' must be >= 1, got {self.feature_dim}")
        if self.n_layers < 1:
            raise ConfigError(f"config key 'head.n_layers' must be >= 1, got {self.n_layers}")
        if self.feature_dim >> (self.n_layers - 1) < 1:
            raise ConfigError(f"config key 'head.n_layers' = {self.n_layers} halves feature_dim "
                              f"{self.feature_dim} below 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"config key 'head.dropout' must be in [0, 1), got {self.dropout}")


def _mlp(in_dim: int, out_dim: int, n_layers: int, dropout: float) -> nn.Sequential:
    """L FC layers D -> D/2 -> ... -> D/2^(L-1) -> out_dim with ReLU (+ optional dropout) between."""
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(n_layers - 1):
        layers += [nn.Linear(width, width // 2), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width //= 2
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class WSTALHead(nn.Module):
    """Snippet-level classification MLP (-> N class logits) and bg/fg attention MLP (-> 2 logits)."""

    def __init__(self, cfg: HeadConfig, n_classes: int):
        super().__init__()
        self.cfg = cfg
        self.n_classes = n_classes
        self.classifier = _mlp(cfg.feature_dim, n_classes, cfg.n_layers, cfg.dropout)
        self.attention = _mlp(cfg.feature_dim, 2, cfg.n_layers, cfg.dropout)

    def forward(self, features: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """features Tensor[B, T, D] float, mask BoolTensor[B, T] (True = real snippet).

        Returns ``cas_logits`` Tensor[B, T, N] and ``attention_logits`` Tensor[B, T, 2] (index 0 =
        background, 1 = foreground). Only valid snippets go through the MLPs; padded positions are 0.
        """
        return self.forward_packed(features[mask], mask)  # features[mask]: (n_valid, D)

    def forward_packed(self, x: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """:meth:`forward` on the valid snippets only: ``x`` Tensor[n_valid, D] holds them in ``mask``'s
        row-major order (video 0's snippets, then video 1's, ...), i.e. ``features[mask]``. Training builds
        this directly (no padded [B, T, D] copy); the outputs are the same [B, T, ...] tensors."""
        D = x.shape[-1]
        if D != self.cfg.feature_dim:
            raise ValueError(f"features have D={D}, the head expects {self.cfg.feature_dim}")
        n_valid = int(mask.sum())
        if x.shape[0] != n_valid:
            raise ValueError(f"{x.shape[0]} packed snippets but the mask marks {n_valid} valid")
        B, T = mask.shape
        cas = x.new_zeros(B, T, self.n_classes)  # (B, T, N)
        att = x.new_zeros(B, T, 2)  # (B, T, 2)
        cas[mask] = self.classifier(x)  # (n_valid, N)
        att[mask] = self.attention(x)  # (n_valid, 2)
        if self.cfg.attention_time_input == "logit":
            time_input = att[..., 1] - att[..., 0]  # (B, T) foreground log-odds
        else:
            time_input = torch.softmax(att, dim=-1)[..., 1]  # (B, T) eq. 1 foreground probability
        return {"cas_logits": cas, "attention_logits": att, "attention_time_input": time_input}


def build_head(cfg: HeadConfig, n_classes: int) -> WSTALHead | BaSNetHead:
    """A freshly initialised head of ``cfg.base``."""
    if n_classes < 1:
        raise ConfigError(f"n_classes must be >= 1, got {n_classes}")
    cfg.validate()
    return BaSNetHead(cfg, n_classes) if cfg.base == "basnet" else WSTALHead(cfg, n_classes)


def _log_attention_time(raw: dict[str, Tensor], mask: Tensor) -> Tensor:
    """log of eq. 2: log-softmax over time of the foreground PROBABILITY (or log-odds, see
    ``HeadConfig.attention_time_input``), padded snippets at -inf. [B, T]."""
    fg = raw.get("attention_time_input")
    if fg is None:  # raw outputs from before the option existed: the paper's form
        fg = torch.softmax(raw["attention_logits"], dim=-1)[..., 1]
    fg = fg.masked_fill(~mask, float("-inf"))  # (B, T)
    return torch.log_softmax(fg, dim=1)  # (B, T)


def compute_scores(raw: dict[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
    """The paper's scores from raw logits.

    - ``cas`` Tensor[B, T, N]: softmax over classes of the class activation map (C-bar).
    - ``attention_bf`` Tensor[B, T, 2]: eq. 1, softmax over (background, foreground).
    - ``attention_time`` Tensor[B, T]: eq. 2, softmax over valid snippets of ``attention_bf[..., 1]``
      (the probability, as the paper writes it); 0 at padded snippets; sums to 1 per video.
    - ``video_scores`` Tensor[B, N]: y-hat = sum_t attention_time(t) * cas(t); sums to 1 per video.

    A BaS-Net head's outputs get the same keys from :func:`basnet.compute_scores`.
    """
    if basnet.is_basnet_output(raw):
        return basnet.compute_scores(raw, mask)
    cas = torch.softmax(raw["cas_logits"], dim=-1)  # (B, T, N)
    attention_bf = torch.softmax(raw["attention_logits"], dim=-1)  # (B, T, 2)
    attention_time = _log_attention_time(raw, mask).exp()  # (B, T), exactly 0 where padded
    video_scores = torch.einsum("bt,btn->bn", attention_time, cas)  # (B, N)
    logodds = raw["attention_logits"][..., 1] - raw["attention_logits"][..., 0]  # (B, T)
    return {"cas": cas, "attention_bf": attention_bf, "attention_time": attention_time,
            "video_scores": video_scores, "attention_logodds": logodds}


def log_video_scores(raw: dict[str, Tensor], mask: Tensor) -> Tensor:
    """log y-hat, computed stably as logsumexp_t(log A_time(t) + log C-bar(t, n)). Tensor[B, N]."""
    log_cas = torch.log_softmax(raw["cas_logits"], dim=-1)  # (B, T, N)
    log_time = _log_attention_time(raw, mask)  # (B, T), -inf where padded
    return torch.logsumexp(log_time.unsqueeze(-1) + log_cas, dim=1)  # (B, N)


def video_loss(raw: dict[str, Tensor], mask: Tensor, targets: Tensor, form: str = "paper",
               cfg: HeadConfig | None = None) -> Tensor:
    """Per-video cross-entropy between y-hat and the label distribution. Tensor[B].

    ``targets`` Tensor[B, N]: normalised multi-hot (a video with k labels has 1/k on each), so every
    label of a multi-label video enters the loss. ``form`` "released": see ``HeadConfig.video_loss``.
    A BaS-Net head's outputs get BaS-Net's three losses (:func:`basnet.basnet_losses`, weighted by
    ``cfg.basnet``; the released weights without ``cfg``).
    """
    if basnet.is_basnet_output(raw):
        return basnet.basnet_losses(raw, mask, targets, (cfg or HeadConfig()).basnet)["total"]
    if form == "released":
        log_cas = torch.log_softmax(raw["cas_logits"], dim=-1)  # (B, T, N)
        time = _log_attention_time(raw, mask).exp()  # (B, T), 0 where padded
        weighted = torch.einsum("bt,btn->bn", time, log_cas.masked_fill(~mask.unsqueeze(-1), 0.0))  # (B, N)
        return -(targets * weighted).sum(dim=1)  # (B,)
    if form != "paper":
        raise ConfigError(f"video loss form {form!r} is not one of {VIDEO_LOSSES}")
    return -(targets * log_video_scores(raw, mask)).sum(dim=1)  # (B,)


def label_targets(label_indices: list[list[int]], n_classes: int) -> Tensor:
    """Normalised multi-hot targets Tensor[B, N] from each video's class indices."""
    out = torch.zeros(len(label_indices), n_classes)
    for b, idx in enumerate(label_indices):
        if not idx:
            raise ValueError(f"video {b} of the batch has no labels")
        out[b, sorted(set(idx))] = 1.0 / len(set(idx))
    return out


# --------------------------------------------------------------------------------------------- I/O

@dataclass
class LoadedHead:
    model: WSTALHead | BaSNetHead
    class_names: list[str]
    feature_meta: dict
    head_config: HeadConfig
    postprocess_config: Any  # postprocess.PostprocessConfig (typed loosely: postprocess sits below head)
    extra: dict
    package_version: str | None = None  # the refineloc-e2e that wrote the file (None: written before 0.3.0)


def save_head(path: str | Path, head: WSTALHead | BaSNetHead, *, class_names: list[str], feature_meta: dict,
              head_config: HeadConfig, postprocess_config: Any, extra: dict | None = None) -> None:
    """Write ``{"state_dict": tensors, "meta_json": str}`` atomically.

    feature_meta must carry what detection must match: dim, fps, snippet_frames, streams, backbone ids.
    """
    if head_config.base != head.cfg.base:
        raise ValueError(f"head_config says base {head_config.base!r} but the head is a {head.cfg.base!r} head")
    if len(class_names) != head.n_classes:
        raise ValueError(f"{len(class_names)} class names for a head with {head.n_classes} classes")
    meta = {
        "format": CHECKPOINT_FORMAT,
        "package_version": __version__,  # which behaviour made the file (not checked on load)
        "base": head_config.base,
        "class_names": list(class_names),
        "feature_meta": feature_meta,
        "head_config": dataclasses.asdict(head_config),
        "postprocess_config": dataclasses.asdict(postprocess_config),
        "extra": extra or {},
    }
    state = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
    blob = {"state_dict": state, "meta_json": json.dumps(meta)}
    atomic_save_with(path, lambda f: torch.save(blob, f))


def load_head(path: str | Path, device: str | torch.device = "cpu") -> LoadedHead:
    """Load a checkpoint written by :func:`save_head` (weights-only; no code runs). Raises WeightsError."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint not found")
    blob = torch_load_untrusted(path)
    if not isinstance(blob, dict) or "meta_json" not in blob or "state_dict" not in blob:
        raise WeightsError(f"{path}: not a refineloc-e2e head checkpoint (no state_dict/meta_json)")
    try:
        meta = json.loads(blob["meta_json"])
    except (TypeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{path}: checkpoint metadata is not valid JSON ({e})") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"{path}: checkpoint format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    try:
        head_cfg = from_dict(HeadConfig, meta["head_config"])
        post_cfg = from_dict(PostprocessConfig, meta["postprocess_config"])
    except ConfigError as e:
        raise WeightsError(f"{path}: checkpoint configuration invalid: {e}") from None
    weights_base = state_dict_base(blob["state_dict"])
    if weights_base is not None and weights_base != head_cfg.base:
        raise WeightsError(f"{path}: head_config says base {head_cfg.base!r} but the weights are a "
                           f"{weights_base!r} head")
    model = build_head(head_cfg, len(meta["class_names"]))
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise WeightsError(f"{path}: weights do not match the head configuration: "
                           f"{str(e).splitlines()[0]}") from None
    model.to(device).eval()
    return LoadedHead(model=model, class_names=list(meta["class_names"]), feature_meta=meta["feature_meta"],
                      head_config=head_cfg, postprocess_config=post_cfg, extra=meta.get("extra", {}),
                      package_version=meta.get("package_version"))


def state_dict_base(state: Any) -> str | None:
    """Which base a state dict's parameter names belong to ("refineloc", "basnet"), or None if neither."""
    if not isinstance(state, dict):
        return None
    names = {str(k).split(".")[0] for k in state}
    if {"filter", "cas_1"} <= names:
        return "basnet"
    if {"classifier", "attention"} <= names:
        return "refineloc"
    return None
