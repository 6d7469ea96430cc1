"""Identical fits computed once: a content-addressed cache of :func:`fit.fit_model` results.

Training is deterministic on the CPU in its inputs (every random choice derives from (seed, iteration, ...)),
so a fit is fully named by: the head and train configs, the iteration and beta, the class weights, and every
training video's features, weak labels, pseudo labels and sampled snippets. Runs that differ only in what
happens after a fit (detection thresholds, the guard, selection) or that produce the same pseudo labels share
the fits: the benchmark family trains each distinct model once across its forms. Opt-in
(``run_training(fit_cache=DIR)``); the key covers every input, so a changed input is a miss, never a stale hit.
Entries are written atomically and read with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from refineloc_e2e.config import to_dict
from refineloc_e2e.fileio import atomic_save_with, torch_load_untrusted
from refineloc_e2e.model.head import HeadConfig, build_head
from refineloc_e2e.training.fit import FitResult, TrainConfig, VideoItem

FORMAT = "refineloc-e2e-fit-cache/1"


def features_digest(items: list[VideoItem]) -> str:
    """sha256 over the videos' ids, features and weak labels (once per run: ~1 s per GB)."""
    h = hashlib.sha256()
    for it in items:
        h.update(it.video_id.encode() + b"\0" + json.dumps(sorted(it.label_indices)).encode())
        h.update(np.ascontiguousarray(it.features.numpy()).tobytes())
    return h.hexdigest()


def fit_key(fit_items: list[VideoItem], held_items: list[VideoItem], features_key: str, *, head_cfg: HeadConfig,
            cfg: TrainConfig, n_classes: int, iteration: int, beta: float,
            class_weights: np.ndarray | None) -> str:
    h = hashlib.sha256(json.dumps({"format": FORMAT, "head": to_dict(head_cfg), "train": to_dict(cfg),
                                   "n_classes": n_classes, "iteration": iteration, "beta": beta,
                                   "class_weights": None if class_weights is None else
                                   [float(w) for w in class_weights], "features": features_key,
                                   "fit": [it.video_id for it in fit_items],
                                   "held": [it.video_id for it in held_items]}, sort_keys=True).encode())
    for it in fit_items + held_items:
        for arr in (it.pseudo, it.sampled):
            h.update(b"-" if arr is None else np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def cached_fit(cache_dir: Path, key: str, head_cfg: HeadConfig, n_classes: int,
               compute: Callable[[], FitResult]) -> tuple[FitResult, bool]:
    """(result, hit): the stored fit named ``key``, or ``compute()`` stored under it."""
    path = Path(cache_dir) / f"{key[:40]}.pt"
    if path.is_file():
        blob = torch_load_untrusted(path)
        meta = json.loads(blob["meta"])
        if meta.pop("key") == key:
            model = build_head(head_cfg, n_classes)
            model.load_state_dict(blob["state"])
            model.eval()
            return FitResult(model=model, **meta), True
    result = compute()
    meta = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name != "model"}
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
    atomic_save_with(path, lambda f: torch.save({"state": state, "meta": json.dumps({**meta, "key": key})}, f))
    return result, False
