"""The one device rule: ``auto`` -> CUDA if available, else CPU; an explicit CUDA request without CUDA is an
error (never a silent CPU fallback). Every stage (extraction, training, detection, classify) calls this.

:func:`configure_cpu_math` is the one process-wide float setting: denormal floats flushed to zero. It is set
at start-up by every entry point (the CLI, flow worker processes, Ray tasks, ``run_training``)."""

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


def configure_cpu_math() -> bool:
    """Flush denormal (subnormal) floats to zero on the CPU (x86 FTZ/DAZ, ARM FZ); True where supported.

    Why: training the head makes denormals as the attention saturates. The attention branch's gradients
    through eq. 1/2 for snippets whose time weight is exp(-large) fall below float32's smallest normal
    (1.2e-38); from the 4th THUMOS'14-sized epoch on about 1e-4 of the attention activations' gradients are
    denormal (measured with backward hooks on benchmarks.bench_data.family 'context'), and every GEMM that
    touches them runs on the CPU's slow microcode path: epochs grew ~6x (issue 17). Values that small never
    change a result at float32 precision; the benchmark ``python -m benchmarks.speed.epoch_denormals``
    checks losses, kept epoch and mAP side by side. Idempotent; per process (workers call it too).
    """
    return bool(torch.set_flush_denormal(True))
