"""Inference: the head's raw scores for whole videos (padding masked), shared by training and detection."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from refineloc_e2e.model.head import WSTALHead, compute_scores


@torch.no_grad()
def predict_batch(head: WSTALHead, features: list[np.ndarray] | list[Tensor], device: torch.device | str,
                  batch_size: int = 32) -> list[dict[str, np.ndarray]]:
    """Scores of several videos: per video cas [T, N], attention_bf [T, 2], attention_time [T],
    video_scores [N] (numpy float32), computed in eval mode with padding masked out."""
    device = torch.device(device)
    head.eval()
    out = []
    for i in range(0, len(features), batch_size):
        # a read-only array (e.g. from Ray's object store) is copied: torch does not take non-writable memory
        chunk = [torch.as_tensor(f if isinstance(f, Tensor) or f.flags.writeable else np.array(f),
                                 dtype=torch.float32) for f in features[i:i + batch_size]]
        lengths = [c.shape[0] for c in chunk]
        # the valid snippets back to back: no padded [B, T, D] copy (one long video would pad every other one)
        x = torch.cat(chunk).to(device)  # (n_valid, D)
        mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]  # (B, T)
        mask = mask.to(device)
        scores = compute_scores(head.forward_packed(x, mask), mask)
        for b, t in enumerate(lengths):
            out.append({"cas": scores["cas"][b, :t].cpu().numpy(),
                        "attention_bf": scores["attention_bf"][b, :t].cpu().numpy(),
                        "attention_time": scores["attention_time"][b, :t].cpu().numpy(),
                        "video_scores": scores["video_scores"][b].cpu().numpy(),
                        "attention_logodds": scores["attention_logodds"][b, :t].cpu().numpy()})
    return out


def predict_scores(head: WSTALHead, features: np.ndarray | Tensor, device: torch.device | str = "cpu"
                   ) -> dict[str, np.ndarray]:
    """Scores of one video, features float[T, D] -> dict of numpy arrays (see :func:`predict_batch`)."""
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be [T, D] with T >= 1, got shape {tuple(features.shape)}")
    return predict_batch(head, [features], device, batch_size=1)[0]
