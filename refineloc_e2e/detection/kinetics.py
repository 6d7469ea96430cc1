"""The built-in ``kinetics400`` model: I3D's own Kinetics-400 logits layer on cached features, no training.

The identity (``backbone/i3d.py``, ``InceptionI3d.head``): for one 16-frame snippet at the 224 crop, ``Mixed_5c``
is ``[1024, 2, 7, 7]``, so the head's 2x7x7 average pool is exactly the mean the cache stores per snippet (one
snippet per batch element, a padded tail included), and the snippet's logits are ``W f + b`` with ``W, b`` the
1x1x1 logits convolution of the *same* RGB weights. So the logits need no new pass over the video.

It holds only for features this tool extracted in fp32 at crop 224 with 16-frame snippets, with weights that
have a 400-class head; :func:`scorable_problem` names what breaks it:

- a smaller crop or 8 frames or fewer: the head clamps its window; ``W f + b`` still equals ``forward()``, but
  the weights never saw such inputs; a larger crop or longer snippets: the stride-1 pool is not the mean;
- bf16 / fp16: the cached mean is not the fp32 one the identity is checked at;
- imported features (``origin`` other than ours): their backbone or normalisation is not ours.

The weights are those the features' metadata records (weights id and sha256): loaded through the manifest
(verified against its sha256, or the recorded file's), then compared with the metadata's sha256.

Two streams: with flow weights that carry their own Kinetics head (piergiaj's ``flow_imagenet``), the
logits are ``rgb + flow``, as DeepMind's two-stream sample (``evaluate_sample.py``: ``model_logits =
rgb_logits + flow_logits``). The default cross-modality flow stream's logits layer is a copy of RGB's and means
nothing for flow, so then only RGB is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refineloc_e2e.backbone.i3d import FEATURE_DIM
from refineloc_e2e.backbone.weights import CROSS_MODALITY, load_manifest, resolve_stream
from refineloc_e2e.errors import ModelMismatchError, WeightsError
from refineloc_e2e.features.extractor import ORIGIN

BUILTIN_MODELS = ("kinetics400",)  # reserved --model names; a file of that name is given as ./kinetics400
KINETICS_CLASSES = 400
IDENTITY_CROP = 224          # Mixed_5c is 7x7 at 224: the head's 7x7 window is the spatial mean
IDENTITY_SNIPPET_FRAMES = 16  # Mixed_5c has 2 time steps at 16 frames: the head's 2-step window is the mean


def is_builtin(spec: str | Path | None) -> bool:
    """True when ``spec`` names a built-in model. The rule: a built-in name is exactly one of
    :data:`BUILTIN_MODELS`, with no path separator; any other string is a file (``./kinetics400`` for a file
    of that name)."""
    return isinstance(spec, str) and spec in BUILTIN_MODELS


def flow_has_kinetics_head(flow_weights: str) -> bool:
    """Whether a flow-weights spec carries its own Kinetics-400 logits layer: a manifest flow entry trained
    on Kinetics (not the cross-modality initialisation, whose logits layer is RGB's)."""
    if flow_weights.startswith(CROSS_MODALITY):
        return False
    entry = load_manifest().get(flow_weights)
    return entry is not None and entry["stream"] == "flow" and "Kinetics-400" in entry.get("trained_on", "")


def settings_problem(crop_size: int | None, snippet_frames: int | None, precision: str) -> str | None:
    """None when features extracted with these settings satisfy the identity, else why not."""
    if crop_size != IDENTITY_CROP:
        return (f"crop {crop_size}: the logits equal W f + b only at crop {IDENTITY_CROP} (Mixed_5c 7x7 = the "
                f"head's window)")
    if snippet_frames != IDENTITY_SNIPPET_FRAMES:
        return (f"{snippet_frames}-frame snippets: the logits equal W f + b only for {IDENTITY_SNIPPET_FRAMES}-frame "
                f"snippets (Mixed_5c 2 steps = the head's window)")
    if precision != "fp32":
        return f"precision {precision}: the head is applied to fp32 features only"
    return None


def scorable_problem(meta: dict[str, Any]) -> str | None:
    """None when the Kinetics head applies to features with this metadata, else why not (one line)."""
    if meta.get("origin") != ORIGIN:
        return (f"imported features (origin {meta.get('origin')!r}): their backbone and normalisation are not "
                f"this tool's, so I3D's Kinetics head does not apply; extract the videos with refineloc-e2e")
    streams = list(meta.get("streams") or [])
    if "rgb" not in streams:
        return f"no RGB stream (streams {streams}); the Kinetics head reads the RGB features"
    problem = settings_problem((meta.get("decode") or {}).get("crop_size"), meta.get("snippet_frames"),
                               meta.get("precision", "fp32"))
    if problem is not None:
        return problem + "; re-extract with the default settings"
    rgb = (meta.get("backbone") or {}).get("rgb") or {}
    if rgb.get("num_classes") != KINETICS_CLASSES:
        return (f"RGB weights {rgb.get('weights_id')!r} have {rgb.get('num_classes')} classes, not a "
                f"{KINETICS_CLASSES}-class Kinetics head")
    if not rgb.get("sha256"):
        return "the RGB weights' sha256 is not recorded, so the logits layer cannot be verified"
    return None


@dataclass
class KineticsHead:
    """The logits layer(s) of the weights that made some features: ``W`` float32[400, 1024], ``b`` [400] per
    stream used (``"rgb"``, and ``"flow"`` for a two-stream model with its own Kinetics head)."""
    weights: dict[str, tuple[np.ndarray, np.ndarray]]
    provenance: dict[str, dict[str, Any]]

    @property
    def streams(self) -> list[str]:
        return list(self.weights)

    def logits(self, feats: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
        """``feats`` float32[T, 1024 * n_streams] (streams as ``meta["streams"]``) -> logits float64[T, 400]."""
        order = list(meta["streams"])
        out = 0.0
        for s, (W, b) in self.weights.items():
            i = order.index(s)
            f = np.asarray(feats[:, i * FEATURE_DIM:(i + 1) * FEATURE_DIM], dtype=np.float64)  # [T, 1024]
            out = out + f @ W.T.astype(np.float64) + b.astype(np.float64)  # [T, 400]
        return out

    def describe(self) -> str:
        if len(self.weights) == 2:
            return ("two streams: RGB + flow logits (the flow weights carry their own Kinetics head; "
                    "DeepMind's two-stream sum)")
        return "RGB stream only (the flow stream has no Kinetics head of its own)"


_HEADS: dict[tuple, KineticsHead] = {}  # per process: (sha256 per stream) -> head; the weights load once


def _stream_spec(prov: dict[str, Any]) -> str:
    wid = prov.get("weights_id") or ""
    if wid.startswith("file:"):
        return str(prov.get("source") or "")  # a user file: its recorded path, verified by sha256 below
    return wid


def _logits_layer(stream: str, prov: dict[str, Any], rgb_prov: dict[str, Any], where: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    spec = _stream_spec(prov)
    try:
        state, got = resolve_stream(stream, spec, rgb_spec=_stream_spec(rgb_prov))
    except WeightsError as e:
        raise WeightsError(f"{where}: the {stream} weights the features were extracted with are not usable here: "
                           f"{e}") from None
    if got.get("sha256") != prov.get("sha256"):
        raise ModelMismatchError(f"{where}: features extracted with {stream} weights sha256 "
                                 f"{str(prov.get('sha256'))[:12]}, but '{spec}' here is {str(got.get('sha256'))[:12]}")
    W = state["logits.weight"].detach().float().flatten(1).numpy()  # [400, 1024]
    b = state["logits.bias"].detach().float().numpy()  # [400]
    if W.shape != (KINETICS_CLASSES, FEATURE_DIM):
        raise WeightsError(f"{where}: {spec} has a logits layer of shape {tuple(W.shape)}, not "
                           f"({KINETICS_CLASSES}, {FEATURE_DIM})")
    return W, b


def kinetics_head(meta: dict[str, Any], where: str) -> KineticsHead:
    """The Kinetics head for features with metadata ``meta`` (from the file ``where``); raises
    ``ModelMismatchError`` with :func:`scorable_problem`'s reason when it does not apply."""
    problem = scorable_problem(meta)
    if problem is not None:
        raise ModelMismatchError(f"{where}: cannot be scored by the built-in kinetics400 model: {problem}")
    backbone = meta["backbone"]
    streams = ["rgb"]
    flow = backbone.get("flow") or {}
    if ("flow" in meta["streams"] and flow.get("num_classes") == KINETICS_CLASSES
            and flow_has_kinetics_head(flow.get("weights_id") or "")):
        streams.append("flow")
    key = tuple((s, backbone[s].get("sha256")) for s in streams)
    if key not in _HEADS:
        weights = {s: _logits_layer(s, backbone[s], backbone["rgb"], where) for s in streams}
        prov = {s: {k: backbone[s].get(k) for k in ("weights_id", "sha256")} for s in streams}
        _HEADS[key] = KineticsHead(weights, prov)
    return _HEADS[key]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of float[T, K] (stable)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
