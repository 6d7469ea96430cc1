"""The one device rule: ``auto`` -> CUDA if available, else CPU; an explicit CUDA request without CUDA is an
error (never a silent CPU fallback). Every stage (extraction, training, detection, classify) calls this."""

from __future__ import annotations

import torch

from refineloc_e2e.errors import ConfigError


def resolve_device(spec: str, *, key: str = "device") -> torch.device:
    """``auto | cpu | cuda | cuda:N`` -> a ``torch.device``; ``key`` names the setting in error messages."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ConfigError(f"config key '{key}': {spec!r} is not a torch device (use auto, cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config key '{key}': device '{spec}' requested but CUDA is not available "
                          f"(torch {torch.__version__}); use cpu or auto")
    return device
