"""Flush-to-zero of denormal floats (device.configure_cpu_math): what it does and that entry points set it."""

import torch
from click.testing import CliRunner

from refineloc_e2e.cli import main
from refineloc_e2e.device import configure_cpu_math
from refineloc_e2e.video import flow_chunks
from refineloc_e2e.video.flow import flow_config

DENORMAL = 1e-40  # below float32's smallest normal 1.18e-38


def _flushes() -> bool:
    return float(torch.tensor([DENORMAL], dtype=torch.float32)[0] * 1.0) == 0.0


def test_configure_cpu_math_flushes_denormals_and_keeps_normals():
    torch.set_flush_denormal(False)
    try:
        assert float(torch.tensor([DENORMAL]) * 1.0) > 0.0  # kept as a denormal by default
        assert configure_cpu_math() is True  # x86 and ARM builds support it
        assert _flushes()
        assert float(torch.tensor([1.2e-38]) * 1.0) > 0.0  # the smallest normals are untouched
    finally:
        torch.set_flush_denormal(True)


def test_cli_and_flow_workers_set_it_at_start():
    torch.set_flush_denormal(False)
    try:
        result = CliRunner().invoke(main, ["weights", "list"])
        assert result.exit_code == 0, result.output
        assert _flushes()
        torch.set_flush_denormal(False)
        threads = torch.get_num_threads()
        flow_chunks._worker_init(flow_config("fast"), threads)  # what each spawned flow process runs first
        assert _flushes()
    finally:
        torch.set_flush_denormal(True)
        flow_chunks._WORKER.clear()
