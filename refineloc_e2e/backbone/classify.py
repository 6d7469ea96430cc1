"""Kinetics-400 top-k of the RGB I3D stream for one clip: the end-to-end check of weights + preprocessing.

Preprocessing is the feature extractor's: ``decode.iter_frames`` (25 fps, shorter side 256, RGB) ->
``snippets.center_crop`` (224) -> ``snippets.normalize_rgb`` ([-1, 1]).

Temporal extent: like DeepMind's sample (all 79 frames of the CricketShot clip in one input), a clip
goes through the network as one input of all its frames, up to ``max_frames`` (default 128, ~5 s at
25 fps; memory grows linearly with it: classifying the 79-frame sample peaks at ~0.85 GB of process
memory on CPU). A longer clip is cut
into consecutive passes of ``max_frames`` frames (the last one shorter) and the logits of the passes
are averaged, weighted by their frame counts, which is what the network's own mean over time does
within one pass.

This is the whole-clip answer. For *when* each action happens, ``detect --model kinetics400``
(``detection.kinetics``, docs/kinetics.md) applies the same logits layer to every cached 16-frame snippet.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import Tensor

from refineloc_e2e.backbone.i3d import InceptionI3d
from refineloc_e2e.backbone.weights import build_i3d
from refineloc_e2e.video.decode import DecodeConfig, iter_frames
from refineloc_e2e.errors import ConfigError, WeightsError
from refineloc_e2e.video.snippets import center_crop, normalize_rgb

DEFAULT_MAX_FRAMES = 128


def kinetics400_labels() -> list[str]:
    """The 400 Kinetics class names in logit order (``data/kinetics/label_map.txt``)."""
    text = resources.files("refineloc_e2e").joinpath("data/kinetics/label_map.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


@torch.inference_mode()
def clip_logits(model: InceptionI3d, frames: Iterable[np.ndarray], *, crop_size: int = 224,
                max_frames: int = DEFAULT_MAX_FRAMES) -> Tensor:
    """Frame-weighted mean logits ``Tensor[K]`` (on CPU) of uint8 RGB frames ``[H, W, 3]``.

    Frames are centre-cropped to ``crop_size`` and scaled to [-1, 1]; each pass holds at most
    ``max_frames`` frames (see the module docstring). Runs on the model's device.
    """
    if max_frames < 1:
        raise ConfigError(f"max_frames must be >= 1, got {max_frames}")
    device = next(model.parameters()).device
    total = None
    n_total = 0

    def run(chunk: list[np.ndarray]) -> Tensor:
        clip = normalize_rgb(center_crop(np.stack(chunk), crop_size))     # [T, S, S, 3] float32
        x = torch.from_numpy(clip).permute(3, 0, 1, 2).unsqueeze(0)       # [1, 3, T, S, S]
        _, logits = model(x.to(device))                                   # [1, K]
        return logits[0].float().cpu() * len(chunk)

    chunk: list[np.ndarray] = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == max_frames:
            total = run(chunk) if total is None else total + run(chunk)
            n_total += len(chunk)
            chunk = []
    if chunk:
        total = run(chunk) if total is None else total + run(chunk)
        n_total += len(chunk)
    if total is None:
        raise ValueError("clip_logits got no frames")  # iter_frames raises on empty videos before this
    return total / n_total                                                # [K]


def classify(video_path: str | Path, *, k: int = 5, weights: str | None = None, device: str = "cpu",
             max_frames: int = DEFAULT_MAX_FRAMES) -> list[tuple[str, float, float]]:
    """Top-``k`` Kinetics-400 classes of a clip: ``[(label, logit, softmax probability), ...]``, best first.

    ``weights``: RGB weights spec (manifest name or file; default ``i3d-kinetics400-rgb``, which must
    have been fetched). ``device``: where the network runs (``"cpu"``, ``"cuda"``, ...).
    """
    labels = kinetics400_labels()
    if not 1 <= k <= len(labels):
        raise ConfigError(f"top-k must be between 1 and {len(labels)}, got {k}")
    model, provenance = build_i3d("rgb", weights, device)
    if model.num_classes != len(labels):
        raise WeightsError(f"{provenance['weights_id']}: has {model.num_classes} classes, not the "
                           f"{len(labels)} Kinetics-400 classes; classify needs a Kinetics-400 head")
    cfg = DecodeConfig()
    logits = clip_logits(model, iter_frames(video_path, cfg), crop_size=cfg.crop_size, max_frames=max_frames)
    probs = logits.softmax(dim=0)                                         # [400]
    top = torch.topk(logits, k)
    return [(labels[i], float(logits[i]), float(probs[i])) for i in top.indices.tolist()]
