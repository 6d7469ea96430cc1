"""A generated weakly-supervised localisation benchmark, harder than the demo's, on disk like real data.

``write_benchmark(out_dir, spec)`` writes ``out_dir/features/<video_id>.{npy,json}`` in the project's feature
cache format (features.cache.write_features: float32 [T, 2048], fps 25, 16-frame snippets, [rgb | flow]) and
``out_dir/annotations.json`` (ActivityNet "database" JSON, training / validation subsets). Training then
runs through ``datasets.load_dataset`` + ``training.refinement.run_training(features=<dir>)``, the same path as
``refineloc-e2e train --annotations ... --features ...``. It is test and benchmark support (``testing``, not
installed), not a benchmark script, because the tests check its THUMOS'14 layout; the benchmarks write it with
``python -m benchmarks.bench_data.wstal``.

What makes it hard (each can be turned down in :class:`BenchSpec`):
- long untrimmed videos (``min_snippets``..``max_snippets``), 2-5 action instances, ~25-35% foreground;
- 25% of videos hold two classes;
- class context outside the actions: every snippet of a video of class c carries a "scene" direction of c
  (``context``), so the video label is predictable from background and a classifier-only model smears
  detections over the whole video;
- background "motion" bursts: short spans outside actions carry a generic action-like direction shared by all
  classes (``distractor``), plus a weak copy of another class's direction, so attention cannot key on
  "something moves";
- actions ramp in and out (weak at their boundaries);
- per-video offsets and temporally correlated (AR(1)) noise larger than the per-snippet signal, so a
  linear probe on single snippets does not separate foreground from background (``--check-probe``).

    python -m benchmarks.bench_data.wstal OUT_DIR [--train 90 --test 60] [--layout thumos14]
    python -m benchmarks.experiments.wstal_probe OUT_DIR      # the linear-probe check of that set
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refineloc_e2e.datasets import load_thumos14
from refineloc_e2e.features.cache import write_features
from refineloc_e2e.fileio import atomic_write_json

FPS = 25.0
SNIPPET_FRAMES = 16


@dataclass
class BenchSpec:
    n_train: int = 80
    n_test: int = 50
    n_classes: int = 10
    dim: int = 2048
    min_snippets: int = 60
    max_snippets: int = 120
    action: float = 1.0  # norm of the class action direction at the middle of an instance
    shared: float = 0.8  # norm of the generic "action" direction shared by all classes inside actions
    context: float = 0.8  # norm of the class scene direction on EVERY snippet of a video of that class
    distractor: float = 0.7  # norm of the shared direction in background motion bursts
    noise: float = 0.12  # per-dimension std of the AR(1) noise: its projection on any signal direction is as
    #                     a sizeable fraction of the signals (single snippets are often ambiguous)
    noise_rho: float = 0.6  # AR(1) correlation of the noise between neighbouring snippets
    seed: int = 0


def class_names(n: int) -> list[str]:
    return [f"Action{i:02d}" for i in range(n)]


def _unit(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    v = rng.normal(size=(k, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _instances(rng: np.random.Generator, T: int, labels: list[int]) -> list[tuple[int, int, int]]:
    """2-5 non-overlapping [start, end) snippet spans, each of one of ``labels``, ~25-35% of T."""
    n = int(rng.integers(2, 6))
    target = rng.uniform(0.22, 0.36) * T
    lengths = rng.dirichlet(np.ones(n) * 3) * target
    lengths = np.maximum(3, np.round(lengths)).astype(int)
    gaps = rng.dirichlet(np.ones(n + 1)) * (T - lengths.sum())
    out, t = [], 0.0
    for i in range(n):
        t += gaps[i]
        s = int(round(t))
        e = min(T, s + int(lengths[i]))
        lab = labels[i % len(labels)] if i < len(labels) else labels[int(rng.integers(len(labels)))]
        out.append((s, e, lab))
        t = e
    return out


def make_video(rng: np.random.Generator, spec: BenchSpec, dirs: dict, labels: list[int], *,
               T: int | None = None, inst: list[tuple[int, int, int]] | None = None
               ) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Features of one video; ``T`` and ``inst`` (snippet spans) are drawn unless given (thumos14 layout)."""
    if T is None:
        T = int(rng.integers(spec.min_snippets, spec.max_snippets + 1))
    d = spec.dim
    if inst is None:
        inst = _instances(rng, T, labels)
    x = np.zeros((T, d), dtype=np.float64)
    x += 0.8 * _unit(rng, 1, d)  # per-video offset (camera, lighting)
    scene_mix = rng.dirichlet(np.ones(len(dirs["scene"])))
    x += 0.6 * (scene_mix @ dirs["scene"])  # generic background scene
    for c in labels:
        x += spec.context / np.sqrt(len(labels)) * dirs["context"][c]  # class context everywhere
    fg = np.zeros(T, dtype=bool)
    for s, e, c in inst:
        L = e - s
        if L <= 0:
            continue
        ramp = np.minimum(1.0, np.minimum(np.arange(1, L + 1), np.arange(L, 0, -1)) / 2.0)  # weak at edges
        x[s:e] += ramp[:, None] * (spec.action * dirs["action"][c] + spec.shared * dirs["shared"])
        fg[s:e] = True
    n_bursts = int(rng.integers(1, 4))  # background motion: shared direction + weak other class
    for _ in range(n_bursts):
        L = int(rng.integers(2, 6))
        s = int(rng.integers(0, max(1, T - L)))
        if fg[s:s + L].any():
            continue
        other = int(rng.integers(spec.n_classes))
        x[s:s + L] += spec.distractor * dirs["shared"] + 0.4 * spec.action * dirs["action"][other]
    eps = rng.normal(size=(T, d)) * spec.noise
    noise = np.empty_like(eps)
    noise[0] = eps[0]
    for t in range(1, T):
        noise[t] = spec.noise_rho * noise[t - 1] + np.sqrt(1 - spec.noise_rho ** 2) * eps[t]
    x += noise
    return x.astype(np.float32), inst


def write_benchmark(out_dir: str | Path, spec: BenchSpec) -> Path:
    """Write features + annotations (deterministic given ``spec``); returns the annotations path."""
    out_dir = Path(out_dir)
    feat_dir = out_dir / "features"
    feat_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    d = spec.dim
    dirs = {"action": _unit(rng, spec.n_classes, d), "context": _unit(rng, spec.n_classes, d),
            "scene": _unit(rng, 6, d), "shared": _unit(rng, 1, d)[0]}
    names = class_names(spec.n_classes)
    database = {}
    meta = {"fps": FPS, "snippet_frames": SNIPPET_FRAMES, "streams": "both", "settings_hash": f"wstal_bench-{spec}",
            "layout": "[rgb | flow] (generated: no real streams)", "generated_by": "testing.wstal_bench"}
    for subset, count in (("training", spec.n_train), ("validation", spec.n_test)):
        for i in range(count):
            vid = f"bench_{subset}_{i:04d}"
            first = int(rng.integers(spec.n_classes))
            labels = [first]
            if rng.random() < 0.25:
                labels.append(int((first + rng.integers(1, spec.n_classes)) % spec.n_classes))
            x, inst = make_video(rng, spec, dirs, labels)
            write_features(feat_dir, vid, x, meta)
            dur = x.shape[0] * SNIPPET_FRAMES / FPS
            database[vid] = {"subset": subset, "duration": dur, "fps": FPS,
                             "annotations": [{"label": names[c], "segment": [s * SNIPPET_FRAMES / FPS,
                                                                             e * SNIPPET_FRAMES / FPS]}
                                             for s, e, c in inst]}
    ann = out_dir / "annotations.json"
    atomic_write_json(ann, {"name": "wstal_bench", "version": f"testing.wstal_bench {spec}",
                            "taxonomy": names, "database": database})
    return ann


def write_thumos14_layout(out_dir: str | Path, spec: BenchSpec) -> Path:
    """THUMOS'14-shaped: the bundled THUMOS'14 videos (200 validation = training, 213 test), their real
    durations, classes and annotated instances (seconds -> snippets at 25 fps / 16 frames), with the generated
    features of :func:`make_video` around them. About 65k training snippets, as on the real dataset.
    ``spec.n_classes`` / counts / lengths are ignored; the signal and noise levels are used."""
    ds = load_thumos14()
    out_dir = Path(out_dir)
    feat_dir = out_dir / "features"
    feat_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    n = len(ds.classes)
    d = spec.dim
    dirs = {"action": _unit(rng, n, d), "context": _unit(rng, n, d),
            "scene": _unit(rng, 6, d), "shared": _unit(rng, 1, d)[0]}
    spec = BenchSpec(**{**spec.__dict__, "n_classes": n})
    meta = {"fps": FPS, "snippet_frames": SNIPPET_FRAMES, "streams": "both",
            "settings_hash": f"wstal_bench-thumos14-{spec}", "layout": "[rgb | flow] (generated: no real streams)",
            "generated_by": "testing.wstal_bench (thumos14 layout)"}
    database = {}
    per_s = FPS / SNIPPET_FRAMES
    for vid, v in ds.videos.items():
        if not v.labels or not v.duration_s:
            continue
        T = max(1, int(v.duration_s * per_s))
        labels = [ds.class_index(lab) for lab in v.labels]
        inst = [(min(T - 1, int(np.floor(g.start_s * per_s))), min(T, int(np.ceil(g.end_s * per_s))),
                 ds.class_index(g.label)) for g in v.segments]
        x, _ = make_video(rng, spec, dirs, labels, T=T, inst=inst)
        write_features(feat_dir, vid, x, meta)
        database[vid] = {"subset": "training" if v.subset == "train" else "validation", "duration": v.duration_s,
                         "fps": FPS, "annotations": [{"label": g.label, "segment": [g.start_s, g.end_s]}
                                                     for g in v.segments]}
    ann = out_dir / "annotations.json"
    atomic_write_json(ann, {"name": "wstal_bench-thumos14", "version": f"testing.wstal_bench thumos14 {spec}",
                            "taxonomy": ds.classes, "database": database})
    return ann
