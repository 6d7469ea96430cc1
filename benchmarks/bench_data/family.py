"""A family of generated weakly-supervised benchmarks, each in a real dataset's layout.

Why a family: a default chosen on one generated set is a bet on that set's quirks (issue 17: a form that gained
+4.8 mAP@0.5 on the repo's THUMOS'14-shaped set lost on an independent one). Every member here keeps the REAL
video list, durations and annotated instances of THUMOS'14 (or ActivityNet v1.2 for ``long``) and differs in
what makes weak supervision hard. Features are what I3D features look like, never isotropic Gaussians:

    z_t  = scene_v + class_bias(labels) + signal_t + ar1_noise_t         # (T, K) latent, K = 64
    x_t  = relu(z_t @ W + b) + small non-negative jitter                  # (T, 2048), W fixed per (member, seed)

so features are non-negative, correlated across dimensions and low-rank up to the ReLU, like pooled Mixed_5c
activations. ``signal_t`` holds, per snippet: the class action direction inside instances (ramped at their
edges), a generic "something moves" direction shared by all classes inside actions and in background bursts,
and the class direction at a fraction of its strength in the seconds just before and after each instance
(run-ups, replays).

Every knob (:class:`FamilySpec`) and why it is there is in docs/benchmarks.md. ``write_member(out, name, seed)``
writes ``out/features/<video_id>.{npy,json}`` (the feature-cache layout, read by ``train --features``) and
``out/annotations.json`` (ActivityNet JSON with the real instances: evaluation and pseudo-label P/R only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refineloc_e2e.datasets import Dataset, load_activitynet12, load_thumos14
from refineloc_e2e.features.cache import write_features
from refineloc_e2e.fileio import atomic_write_json
from refineloc_e2e.timebase import I3D_FPS, I3D_SNIPPET_FRAMES

PER_S = I3D_FPS / I3D_SNIPPET_FRAMES  # snippets per second (25 / 16)


@dataclass(frozen=True)
class FamilySpec:
    layout: str = "thumos14"  # "thumos14": the 200 + 213 real videos; "activitynet12": a class subset of v1.2
    latent_dim: int = 64  # K: rank of the feature manifold before the ReLU
    dim: int = 2048  # D: [rgb | flow] width (the runner's --dim 512 trains 4x cheaper on the same latent geometry)
    relu_bias: float = -0.1  # b: with W's unit-norm columns about 40 % of units are active
    action: float = 1.6  # norm of the class action direction at an instance's middle
    shared: float = 0.9  # norm of the class-agnostic "motion" direction inside actions
    edge_snippets: float = 2.0  # instances ramp in over this many snippets (weak boundaries)
    context_s: float = 0.0  # seconds before AND after each instance that carry the class direction
    context: float = 0.0  # its strength, as a fraction of ``action``
    scene: float = 0.8  # norm of the per-video scene (a random mix of ``n_scenes`` directions)
    class_bias: float = 0.3  # norm of the class's own scene direction on EVERY snippet of its videos
    burst_rate_per_min: float = 0.5  # background bursts of the shared motion direction
    burst_len_s: tuple[float, float] = (1.0, 4.0)
    burst: float = 0.8  # their strength (shared direction); plus 0.4 x ``action`` of a random other class
    noise: float = 0.3  # std per latent dimension of the per-video AR(1) nuisance
    noise_rho: float = 0.7  # its correlation between neighbouring snippets
    jitter: float = 0.02  # independent per-feature noise after the ReLU (|N(0, jitter)|)
    # cutaway shots (issue 25): this fraction of each video's BACKGROUND time is in shots of another place (crowd,
    # studio, scoreboard): the video's scene and class bias are replaced there by another random scene mix, so
    # not every background snippet looks like the action's venue (0: off, and nothing extra is drawn)
    cutaway_fraction: float = 0.0
    cutaway_len_s: tuple[float, float] = (2.0, 8.0)
    cutaway_scene: float = 1.0  # the other place's scene strength, as a fraction of ``scene`` (0: blank shots)
    n_scenes: int = 8
    max_classes: int = 10  # activitynet12 only: the first N classes (alphabetical) of v1.2
    max_videos_per_class: tuple[int, int] = (30, 15)  # activitynet12 only: (train, test) videos per class
    # the range the 0.3.0 development's thumos14 config stated (never released); part of the set's identity (its key seeds the generator), no longer
    # read: refine_family takes the ranges from the layout's shipped config (issue 25)
    fg_fraction_range: tuple[float, float] = (0.1, 0.5)

    def key(self) -> str:
        # knobs added after a member was first measured enter the key only when set, so every earlier member keeps
        # its key, and with it its random draws: the numbers measured on it before stay reproducible
        d = {k: v for k, v in dataclasses.asdict(self).items() if not (k in _LATER and v == _LATER[k])}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


# knobs added since the first members (issue 25), at their "off" values
_LATER = {"cutaway_fraction": 0.0, "cutaway_len_s": (2.0, 8.0), "cutaway_scene": 1.0}

# The members. Each changes one or two things from the base (``FamilySpec()``), so a loss on one member
# points at one cause; docs/benchmarks.md gives the reason for each value.
MEMBERS: dict[str, FamilySpec] = {
    # run-ups and replays: the class signal at 40 % strength for 4 s either side (the independent set of issue 17)
    "context": FamilySpec(context_s=4.0, context=0.4),
    # the scene predicts the class: every snippet of a video carries a strong class direction
    "scene": FamilySpec(class_bias=1.0, scene=1.2),
    # background bursts: generic motion + a weak other class, often, outside the actions
    "bursts": FamilySpec(burst_rate_per_min=3.0, burst_len_s=(1.0, 6.0), burst=1.1),
    # a camera that never settles: strong, slowly varying nuisance, weaker actions
    "noisy": FamilySpec(noise=0.5, noise_rho=0.9, action=1.3),
    # ActivityNet-like long instances (real v1.2 durations and instances) with moderate context
    "long": FamilySpec(layout="activitynet12", context_s=4.0, context=0.3, fg_fraction_range=(0.3, 0.98)),
    # issue 25: cutaway shots (half the background elsewhere) on the venue-heavy and the long-instance members
    "scene-cutaways": FamilySpec(class_bias=1.0, scene=1.2, cutaway_fraction=0.5),
    "long-cutaways": FamilySpec(layout="activitynet12", context_s=4.0, context=0.3, fg_fraction_range=(0.3, 0.98),
                                cutaway_fraction=0.5),
    "long-blank": FamilySpec(layout="activitynet12", context_s=4.0, context=0.3, fg_fraction_range=(0.3, 0.98),
                             cutaway_fraction=0.5, cutaway_scene=0.0),
}


def _unit(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    v = rng.normal(size=(n, k))
    return v / np.linalg.norm(v, axis=1, keepdims=True)  # (n, k)


def _dataset(spec: FamilySpec) -> Dataset:
    if spec.layout == "thumos14":
        return load_thumos14()
    if spec.layout != "activitynet12":
        raise ValueError(f"FamilySpec.layout must be thumos14 or activitynet12, got {spec.layout!r}")
    full = load_activitynet12()
    keep = set(sorted(full.classes)[:spec.max_classes])
    videos, counts = {}, {}
    for vid in sorted(full.videos):
        v = full.videos[vid]
        if not v.labels or not set(v.labels) <= keep or not v.duration_s:
            continue
        cap = spec.max_videos_per_class[0 if v.subset == "train" else 1]
        key = (v.labels[0], v.subset)
        if counts.get(key, 0) >= cap:
            continue
        counts[key] = counts.get(key, 0) + 1
        videos[vid] = v
    return Dataset(name="activitynet12-subset", classes=sorted(keep), videos=videos)


def _ar1(rng: np.random.Generator, T: int, k: int, std: float, rho: float) -> np.ndarray:
    eps = rng.normal(size=(T, k)) * std
    out = np.empty_like(eps)  # (T, k)
    out[0] = eps[0]
    c = np.sqrt(1.0 - rho ** 2)
    for t in range(1, T):
        out[t] = rho * out[t - 1] + c * eps[t]
    return out


def make_video(rng: np.random.Generator, spec: FamilySpec, dirs: dict, T: int, labels: list[int],
               inst: list[tuple[int, int, int]]) -> np.ndarray:
    """Latent (T, K) of one video: scene, class bias, instances with context, bursts, AR(1) nuisance."""
    k = spec.latent_dim
    z = np.zeros((T, k))
    venue = spec.scene * (rng.dirichlet(np.ones(spec.n_scenes)) @ dirs["scene"])  # (K,) whole-video scene
    for c in labels:
        venue = venue + spec.class_bias / np.sqrt(len(labels)) * dirs["bias"][c]
    z += venue
    fg = np.zeros(T, dtype=bool)
    ctx_n = int(round(spec.context_s * PER_S))
    for s, e, c in inst:
        if e <= s:
            continue
        pos = np.arange(e - s)
        ramp = np.minimum(1.0, np.minimum(pos + 1, e - s - pos) / max(spec.edge_snippets, 1e-6))  # (L,)
        z[s:e] += ramp[:, None] * (spec.action * dirs["action"][c] + spec.shared * dirs["shared"])
        fg[s:e] = True
        if ctx_n and spec.context:
            for a, b in ((max(0, s - ctx_n), s), (e, min(T, e + ctx_n))):
                z[a:b] += spec.context * spec.action * dirs["action"][c]
    n_bursts = rng.poisson(spec.burst_rate_per_min * T / PER_S / 60.0)
    for _ in range(n_bursts):
        L = max(1, int(round(rng.uniform(*spec.burst_len_s) * PER_S)))
        s = int(rng.integers(0, max(1, T - L)))
        if fg[s:s + L].any():
            continue
        other = int(rng.integers(len(dirs["action"])))
        z[s:s + L] += spec.burst * dirs["shared"] + 0.4 * spec.action * dirs["action"][other]
    if spec.cutaway_fraction > 0:
        _cutaways(rng, spec, dirs, z, fg, venue)
    z += _ar1(rng, T, k, spec.noise, spec.noise_rho)
    return z


def _cutaways(rng: np.random.Generator, spec: FamilySpec, dirs: dict, z: np.ndarray, fg: np.ndarray,
              venue: np.ndarray) -> None:
    """Shots of another place on ``spec.cutaway_fraction`` of the background: ``venue`` (K,), the video's scene
    plus its class bias, is replaced there by another scene mix; instances are left alone."""
    T = len(z)
    free = ~fg  # (T,) background not yet cut away
    budget = int(round(spec.cutaway_fraction * free.sum()))
    for _ in range(200):  # bounded: shots are drawn until the budget is spent
        if budget <= 0:
            break
        L = min(budget, max(1, int(round(rng.uniform(*spec.cutaway_len_s) * PER_S))))
        s = int(rng.integers(0, max(1, T - L)))
        span = np.arange(s, min(T, s + L))
        span = span[free[span]]
        if not len(span):
            continue
        other = spec.cutaway_scene * spec.scene * (rng.dirichlet(np.ones(spec.n_scenes)) @ dirs["scene"])  # (K,)
        z[span] += other - venue
        free[span] = False
        budget -= len(span)


def write_member(out_dir: str | Path, name: str, seed: int, spec: FamilySpec | None = None) -> Path:
    """Write member ``name`` (or ``spec``) with ``seed`` to ``out_dir``; returns the annotations path.

    Deterministic in (spec, seed). A folder already holding the same (spec, seed) is reused as is."""
    spec = spec or MEMBERS[name]
    out_dir = Path(out_dir)
    stamp = out_dir / "family_member.json"
    ident = {"name": name, "seed": seed, "spec_key": spec.key(), "spec": dataclasses.asdict(spec)}
    if stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(ident)):
        return out_dir / "annotations.json"
    ds = _dataset(spec)
    rng = np.random.default_rng([seed, int(spec.key(), 16) % (2 ** 31)])
    n_cls = len(ds.classes)
    k = spec.latent_dim
    dirs = {"action": _unit(rng, n_cls, k), "bias": _unit(rng, n_cls, k), "scene": _unit(rng, spec.n_scenes, k),
            "shared": _unit(rng, 1, k)[0]}
    W = rng.normal(size=(k, spec.dim)) / np.sqrt(k)  # (K, D): columns of unit expected norm
    b = spec.relu_bias * np.ones(spec.dim)
    feat_dir = out_dir / "features"
    feat_dir.mkdir(parents=True, exist_ok=True)
    meta = {"fps": I3D_FPS, "snippet_frames": I3D_SNIPPET_FRAMES, "streams": "both",
            "settings_hash": f"family-{name}-{spec.key()}-{seed}",
            "layout": "[rgb | flow] (generated: no real streams)", "generated_by": f"benchmarks.bench_data.family {name}"}
    database = {}
    for vid in sorted(ds.videos):
        v = ds.videos[vid]
        if not v.labels or not v.duration_s:
            continue
        T = max(1, int(v.duration_s * PER_S))
        labels = [ds.class_index(lab) for lab in v.labels]
        inst = [(min(T - 1, int(np.floor(g.start_s * PER_S))), min(T, int(np.ceil(g.end_s * PER_S))),
                 ds.class_index(g.label)) for g in v.segments]
        z = make_video(rng, spec, dirs, T, labels, inst)  # (T, K)
        x = np.maximum(z @ W + b, 0.0) + np.abs(rng.normal(size=(T, spec.dim))) * spec.jitter  # (T, D) >= 0
        write_features(feat_dir, vid, x.astype(np.float32), meta)
        database[vid] = {"subset": "training" if v.subset == "train" else "validation", "duration": v.duration_s,
                         "fps": I3D_FPS, "annotations": [{"label": g.label, "segment": [g.start_s, g.end_s]}
                                                         for g in v.segments]}
    ann = out_dir / "annotations.json"
    atomic_write_json(ann, {"name": f"family-{name}", "version": f"benchmarks.bench_data.family {name} seed {seed}",
                            "taxonomy": ds.classes, "database": database})
    atomic_write_json(stamp, ident)
    return ann
