"""Training ONE model of the refinement (paper eq. 4): batching, loss, epochs, held-out selection.

:func:`fit_model` trains a freshly initialised :class:`head.WSTALHead` on
``video loss + beta * class-weighted CE(attention_bf, pseudo labels)`` over the sampled snippets, with
Adam, LR x ``lr_decay`` on a held-out-loss plateau, and keeps a COPY of the weights of the epoch with
the lowest held-out eq.-4 loss. :mod:`train` runs the iterations around it.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from refineloc_e2e.errors import ConfigError
from refineloc_e2e.progress import Progress
from refineloc_e2e.model.head import HeadConfig, WSTALHead, build_head, label_targets, video_loss


@dataclass
class TrainConfig:
    lr: float = 1e-3  # Adam initial LR (paper 4.2: 1e-3 THUMOS14, 1e-4 ActivityNet)
    weight_decay: float = 0.0  # Adam L2; 0 = paper / released code
    batch_size: int = 32  # videos per mini-batch (released code: 32 THUMOS, 256 ActivityNet)
    epochs: int = 50  # per refinement iteration (paper 4.2)
    lr_decay: float = 0.9  # LR factor when the held-out loss plateaus (paper 4.2)
    plateau_patience: int = 5  # epochs without improvement before decaying (not given by the paper)
    holdout_fraction: float = 0.1  # part of the TRAINING videos held out for epoch selection / LR decay
    seed: int = 0  # everything random derives from (seed, iteration, ...): runs repeat bitwise on CPU
    n_iterations: int = 3  # refinement iterations after iteration 0 (paper 4.3: best at eta = 3)
    # stop an iteration after this many epochs without a lower held-out loss (0 = off: run all ``epochs``).
    # The kept epoch is the same lowest-held-out-loss epoch; only epochs after it that cannot win are skipped.
    early_stop_patience: int = 0
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...

    def validate(self) -> None:
        checks = [("lr", self.lr > 0), ("weight_decay", self.weight_decay >= 0),
                  ("batch_size", self.batch_size >= 1), ("epochs", self.epochs >= 1),
                  ("lr_decay", 0 < self.lr_decay <= 1), ("plateau_patience", self.plateau_patience >= 0),
                  ("holdout_fraction", 0 <= self.holdout_fraction < 1), ("n_iterations", self.n_iterations >= 0),
                  ("early_stop_patience", self.early_stop_patience >= 0)]
        for key, ok in checks:
            if not ok:
                raise ConfigError(f"config key 'train.{key}' has an invalid value {getattr(self, key)!r}")


def derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


@dataclass
class VideoItem:
    """One training video: features float32[T, D], weak label indices, optional pseudo labels."""
    video_id: str
    features: Tensor  # (T, D) float32, CPU
    label_indices: list[int]
    pseudo: np.ndarray | None = None  # uint8[T]
    sampled: np.ndarray | None = None  # bool[T]: snippets in the pseudo loss


@dataclass
class Batch:
    valid: Tensor  # (n_valid, D): the videos' snippets back to back, in ``mask``'s row-major order (no padding)
    mask: Tensor  # (B, T) bool
    targets: Tensor  # (B, N)
    pseudo: Tensor  # (B, T) long, 0 where padded
    sampled: Tensor  # (B, T) bool, False where padded or not sampled


def collate(items: list[VideoItem], n_classes: int, device: torch.device) -> Batch:
    B = len(items)
    T = max(it.features.shape[0] for it in items)
    valid = torch.cat([it.features for it in items])  # (n_valid, D): one copy, no padded [B, T, D] tensor
    mask = torch.zeros(B, T, dtype=torch.bool)  # (B, T)
    pseudo = torch.zeros(B, T, dtype=torch.long)  # (B, T)
    sampled = torch.zeros(B, T, dtype=torch.bool)  # (B, T)
    for b, it in enumerate(items):
        t = it.features.shape[0]
        mask[b, :t] = True
        if it.pseudo is not None:
            pseudo[b, :t] = torch.from_numpy(it.pseudo.astype(np.int64))
            sampled[b, :t] = torch.from_numpy(it.sampled)
    targets = label_targets([it.label_indices for it in items], n_classes)  # (B, N)
    return Batch(valid.to(device), mask.to(device), targets.to(device), pseudo.to(device), sampled.to(device))


def eq4_loss(raw: dict[str, Tensor], batch: Batch, class_weights: Tensor | None, beta: float,
             video_loss_form: str = "paper", head_cfg: HeadConfig | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Per-video eq. 4: (total, video part, pseudo part), each Tensor[B].

    pseudo part = sum over sampled valid snippets of w[g_t] * CE(attention_bf_t, g_t) divided by the
    number of sampled valid snippets of the video (0 when there are none or ``class_weights`` is None).
    With a BaS-Net head the "video part" is BaS-Net's own loss (``head_cfg.basnet`` weights) and the pseudo
    part, on ``attention_logits`` = [0, z], is the cross-entropy of its filter weights w = sigmoid(z).
    """
    v_loss = video_loss(raw, batch.mask, batch.targets, video_loss_form, head_cfg)  # (B,)
    if class_weights is None or beta == 0:
        zero = torch.zeros_like(v_loss)
        return v_loss, v_loss, zero
    log_bf = torch.log_softmax(raw["attention_logits"], dim=-1)  # (B, T, 2)
    ce = -log_bf.gather(-1, batch.pseudo.unsqueeze(-1)).squeeze(-1)  # (B, T)
    w = class_weights[batch.pseudo] * batch.sampled  # (B, T), 0 off the sample and at padding
    n = batch.sampled.sum(dim=1).clamp(min=1)  # (B,)
    p_loss = (w * ce).sum(dim=1) / n  # (B,)
    return v_loss + beta * p_loss, v_loss, p_loss


@dataclass
class FitResult:
    model: WSTALHead  # holds the best epoch's weights (a copy, loaded back at the end)
    best_epoch: int
    best_heldout_loss: float | None
    best_heldout_video_loss: float | None
    train_losses: list[float] = field(default_factory=list)
    heldout_losses: list[float] = field(default_factory=list)
    lr_final: float = 0.0
    epochs_run: int = 0
    epoch_s: list[float] = field(default_factory=list)  # wall seconds of each epoch (training + held-out pass)
    lr_by_epoch: list[float] = field(default_factory=list)  # the LR each epoch trained with (before its plateau step)


EVAL_BATCH_VIDEOS = 128  # videos per forward pass without gradients (held-out loss, scores)


def eval_batches(items: list[VideoItem], n_classes: int, device: torch.device,
                 batch_size: int = EVAL_BATCH_VIDEOS, collate_fn: Callable[..., Batch] = collate) -> list[Batch]:
    """Collate ``items`` once into length-sorted batches (less padding) for repeated evaluation."""
    order = sorted(range(len(items)), key=lambda i: items[i].features.shape[0])
    return [collate_fn([items[j] for j in order[i:i + batch_size]], n_classes, device)
            for i in range(0, len(order), batch_size)]


@torch.no_grad()
def mean_loss(model: WSTALHead, items: list[VideoItem] | list[Batch], n_classes: int, device: torch.device,
              class_weights: Tensor | None, beta: float, batch_size: int = EVAL_BATCH_VIDEOS) -> tuple[float, float]:
    """(mean eq.-4 loss, mean video loss) over ``items`` (videos, or batches from :func:`eval_batches`)."""
    model.eval()
    batches = items if items and isinstance(items[0], Batch) else eval_batches(items, n_classes, device, batch_size)
    total, video, n = 0.0, 0.0, 0
    for batch in batches:
        raw = model.forward_packed(batch.valid, batch.mask)
        t, v, _ = eq4_loss(raw, batch, class_weights, beta, model.cfg.video_loss, model.cfg)
        total += float(t.sum())
        video += float(v.sum())
        n += batch.mask.shape[0]
    return total / n, video / n


def fit_model(train_items: list[VideoItem], heldout_items: list[VideoItem], *, n_classes: int,
              head_cfg: HeadConfig, cfg: TrainConfig, iteration: int, beta: float,
              class_weights: np.ndarray | None, device: torch.device, progress: bool = True,
              collate_fn: Callable[..., Batch] = collate,
              on_epoch: Callable[[dict], None] | None = None) -> FitResult:
    """Train a FRESH head (of ``head_cfg.base``) for ``cfg.epochs`` epochs; return it with the best held-out epoch's weights.

    Without held-out videos the last epoch is kept and the LR plateau watches the training loss.
    ``collate_fn``: how a batch is built (:func:`collate`; a benchmark times another form with the same values).
    ``on_epoch``: called after each epoch with ``{"epoch": 1-based, "train_loss", "heldout_loss" (or None), "lr",
    "epoch_s"}`` (the run's TensorBoard log, ``tensorboard_log``).
    """
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derived_seed(cfg.seed, iteration, 1))
        model = build_head(head_cfg, n_classes).to(device)
        weights = torch.as_tensor(class_weights, dtype=torch.float32, device=device) \
            if class_weights is not None else None
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        # lr_decay 1 = a constant LR (e.g. released BaS-Net); torch's plateau scheduler refuses factor 1
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.lr_decay,
                                                           patience=cfg.plateau_patience) if cfg.lr_decay < 1 else None
        best_state, best = None, (float("inf"), None, None, -1)  # (loss, loss, video loss, epoch)
        result = FitResult(model=model, best_epoch=-1, best_heldout_loss=None, best_heldout_video_loss=None)
        bar = Progress(cfg.epochs, desc=f"iteration {iteration}", unit="epoch", enabled=progress, leave=False)
        held_batches = (eval_batches(heldout_items, n_classes, device, collate_fn=collate_fn)  # collated once
                        if heldout_items else [])
        for epoch in range(cfg.epochs):
            t_epoch = time.perf_counter()
            lr = float(opt.param_groups[0]["lr"])
            model.train()
            order = np.random.default_rng([cfg.seed, iteration, epoch]).permutation(len(train_items))
            running = 0.0
            for i in range(0, len(order), cfg.batch_size):
                batch = collate_fn([train_items[j] for j in order[i:i + cfg.batch_size]], n_classes, device)
                raw = model.forward_packed(batch.valid, batch.mask)
                loss, _, _ = eq4_loss(raw, batch, weights, beta, head_cfg.video_loss, head_cfg)
                opt.zero_grad(set_to_none=True)
                loss.mean().backward()
                opt.step()
                running += float(loss.detach().sum())
            train_loss = running / len(train_items)
            result.train_losses.append(train_loss)
            if heldout_items:
                h_loss, h_video = mean_loss(model, held_batches, n_classes, device, weights, beta)
                result.heldout_losses.append(h_loss)
                watched = h_loss
            else:
                h_loss = h_video = None
                watched = -epoch  # keep the latest epoch
            if sched is not None:
                sched.step(train_loss if h_loss is None else h_loss)
            result.epoch_s.append(time.perf_counter() - t_epoch)
            result.lr_by_epoch.append(lr)
            if on_epoch is not None:
                on_epoch({"epoch": epoch + 1, "train_loss": train_loss, "heldout_loss": h_loss, "lr": lr,
                          "epoch_s": result.epoch_s[-1]})
            if watched < best[0]:
                best = (watched, h_loss, h_video, epoch)
                best_state = copy.deepcopy(model.state_dict())  # a copy, never the live weights
            bar.update(1, note=f"train {train_loss:.4f}, held-out " + ("-" if h_loss is None else f"{h_loss:.4f}"))
            result.epochs_run = epoch + 1
            if cfg.early_stop_patience and h_loss is not None and epoch - best[3] >= cfg.early_stop_patience:
                break
        bar.close()
        model.load_state_dict(best_state)
        model.eval()
        result.best_epoch = best[3]
        result.best_heldout_loss = best[1]
        result.best_heldout_video_loss = best[2]
        result.lr_final = float(opt.param_groups[0]["lr"])
    return result
