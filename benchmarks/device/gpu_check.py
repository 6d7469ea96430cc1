"""Unattended device check of the torch TV-L1 backend (issues 9, 19): throughput, agreement, memory.

Prints, for the ``paper`` preset at ``--size`` (default 256x340, the centre 340 columns of bikes.mp4's
256-short-side frames): batched flow pairs/s on ``--device`` (fp32; epsilon early exit and fixed
iteration counts) per batch size, peak device memory (``torch.cuda.max_memory_allocated``), and the
endpoint error against the same torch TV-L1 on this machine's CPU at identical parameters over the 224
centre crop (or the whole frame if smaller). The CPU port is the reference because the device machine
has no OpenCV contrib (no ``cv2.optflow``); the port itself is checked against OpenCV's TV-L1 on the
build machine (``tests/video/test_tvl1_torch.py``, ``benchmarks/speed/flow_backends.py``). Exits non-zero on any
error, on a device that is not there, or if the early-exit mode's EPE is above the issue's bounds
(median 0.05 px, mean 0.2 px). Then the end-to-end ``extract`` of a generated clip (default 60 s at
1280x720, both streams, flow backend torch on the device, random I3D weights): video seconds per wall
second and peak memory. Not reaching the 1,000 pairs/s or 50x real-time targets is reported, not a failure.

Needs torch, numpy, plain OpenCV and PyAV only; ``benchmarks/device/gpu_check.sh`` installs the package
``--no-deps`` plus the PyAV wheel of ``make device-bundle`` on a bare machine (docs/extracting.md "GPU device check").

    benchmarks/device/gpu_check.sh                     # on a CUDA machine, < 5 minutes
    benchmarks/device/gpu_check.sh --device cpu --threads 1 --size 128x170 --batch-sizes 2 --epe-pairs 2 \
        --e2e-seconds 1 --e2e-size 320x240   # the same path on the CPU
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from refineloc_e2e.backbone.i3d import InceptionI3d
from refineloc_e2e.features.extractor import ExtractConfig, FeatureExtractor
from refineloc_e2e.video.decode import DecodeConfig, iter_frames
from refineloc_e2e.video.flow import flow_config, to_gray
from refineloc_e2e.video.snippets import centre_window
from refineloc_e2e.video.tvl1_torch import tvl1_flow

BIKES = resources.files("refineloc_e2e") / "data/samples/bikes.mp4"  # package data: checks the install too

TARGET_PAIRS_S = 1000.0  # issue 9, one H200-class GPU, paper preset, 256x340
MAX_MEDIAN_EPE, MAX_MEAN_EPE = 0.05, 0.2


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(prev: torch.Tensor, nxt: torch.Tensor, cfg, device, fixed: bool) -> tuple[float, torch.Tensor]:
    sync(device)
    t0 = time.perf_counter()
    flow = tvl1_flow(prev, nxt, cfg, fixed_iterations=fixed)  # [B, H, W, 2] on device
    sync(device)
    return len(prev) / (time.perf_counter() - t0), flow


def write_clip(path: Path, seconds: float, width: int, height: int) -> Path:
    """A generated clip: a smooth random texture panning 3 px/frame, 25 fps, MPEG-4 part 2 (in every FFmpeg)."""
    n = int(round(seconds * 25))
    rng = np.random.default_rng(0)
    big = cv2.resize(rng.uniform(0, 255, (height // 8 + 8, (width + 3 * n) // 8 + 8, 3)).astype(np.float32),
                     (width + 3 * n + 64, height + 64), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt, s.bit_rate = width, height, "yuv420p", 8_000_000
        for i in range(n):
            img = np.ascontiguousarray(big[16:16 + height, 3 * i:3 * i + width])
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def end_to_end(args, device: torch.device) -> tuple[float, float]:
    """``extract`` of a generated clip, both streams, the torch flow backend on ``device``: (video s per wall s,
    peak MiB). The I3D weights are random (the device machine has no network; speed does not depend on them)."""
    w, h = (int(v) for v in args.e2e_size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "clip.mp4", args.e2e_seconds, w, h)
        torch.manual_seed(0)
        prov = {"sha256": None, "init": "random (gpu_check)"}
        models = {"rgb": (InceptionI3d(3, 400), dict(prov)), "flow": (InceptionI3d(2, 400), dict(prov))}
        cfg = ExtractConfig(device=str(device), batch_snippets=32 if device.type == "cuda" else 8,
                            flow=flow_config("fast", backend="torch"))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with FeatureExtractor(cfg, models=models) as ex:
            t0 = time.perf_counter()
            feats, meta = ex.extract(clip)
            wall = time.perf_counter() - t0
        if not np.isfinite(feats).all() or feats.shape[1] != 2048:
            raise SystemExit(f"FAIL: end-to-end features {feats.shape}, finite={np.isfinite(feats).all()}")
        print("end-to-end stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in ex.stage_s.items()))
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
        return meta["duration_s"] / wall, peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", default="256x340", help="HxW centre window of the 256-short-side frames")
    ap.add_argument("--batch-sizes", default="16,64")
    ap.add_argument("--epe-pairs", type=int, default=8, help="pairs compared with the torch port on the CPU")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--video", default=str(BIKES))
    ap.add_argument("--e2e-seconds", type=float, default=60.0, help="generated clip length (0: skip end-to-end)")
    ap.add_argument("--e2e-size", default="1280x720", help="WxH of the generated clip")
    args = ap.parse_args()
    t_start = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"FAIL: --device {args.device} but torch {torch.__version__} sees no CUDA device", file=sys.stderr)
        return 2
    h, w = (int(v) for v in args.size.split("x"))
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    n_frames = max(batch_sizes + [args.epe_pairs]) + 1
    frames = list(itertools.islice(iter_frames(args.video, DecodeConfig()), n_frames))
    if len(frames) < n_frames:
        raise SystemExit(f"{args.video}: {len(frames)} frames, need {n_frames}")
    if h > frames[0].shape[0] or w > frames[0].shape[1]:
        raise SystemExit(f"--size {h}x{w} does not fit in frames of {frames[0].shape[0]}x{frames[0].shape[1]}")
    gray = np.ascontiguousarray(centre_window(np.stack([to_gray(f) for f in frames]), h, w))  # [F, h, w] uint8
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {name}; torch {torch.__version__}; cv2 {cv2.__version__} (optflow: {hasattr(cv2, 'optflow')}); "
          f"av {av.__version__}; python {sys.version.split()[0]}; {Path(args.video).name} at {h}x{w}; "
          f"preset paper, fp32")
    cfg = flow_config("paper")

    frames_dev = torch.from_numpy(gray).to(device)  # [F, h, w] uint8, copied once
    tvl1_flow(frames_dev[:2, :32, :32], frames_dev[1:3, :32, :32], cfg)  # warm-up: kernels, allocator
    print(f"{'batch':>6}{'mode':>8}{'pairs/s':>10}{'peak MiB':>10}")
    best = 0.0
    for b in batch_sizes:
        for fixed in (False, True):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rate, flow = timed(frames_dev[:b], frames_dev[1:b + 1], cfg, device, fixed)
            if not torch.isfinite(flow).all():
                raise SystemExit(f"FAIL: non-finite flow at batch {b} (fixed_iterations={fixed})")
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
            best = max(best, rate)
            print(f"{b:>6}{'fixed' if fixed else 'epsilon':>8}{rate:10.1f}{peak:10.0f}", flush=True)
    print(f"best {best:.1f} pairs/s; target >= {TARGET_PAIRS_S:.0f} pairs/s on one H200-class GPU: "
          f"{'reached' if best >= TARGET_PAIRS_S else 'not reached'}")

    k = args.epe_pairs
    t0 = time.perf_counter()
    ref = tvl1_flow(gray[:k], gray[1:k + 1], cfg, device="cpu").numpy()  # [k, h, w, 2], the port on this CPU
    print(f"reference: torch TV-L1 on this machine's CPU, {k} pairs in {time.perf_counter() - t0:.1f} s "
          f"({torch.get_num_threads()} threads)")
    crop = min(224, h, w)
    failed = False
    for fixed in (False, True):
        out = tvl1_flow(frames_dev[:k], frames_dev[1:k + 1], cfg, fixed_iterations=fixed).cpu().numpy()
        epe = np.linalg.norm(centre_window(np.moveaxis(out - ref, -1, 1), crop, crop), axis=1)  # [k, crop, crop]
        med, mean = float(np.median(epe)), float(epe.mean())
        ok = med <= MAX_MEDIAN_EPE and mean <= MAX_MEAN_EPE
        if not fixed:
            failed |= not ok
        print(f"EPE {device.type} vs CPU ({k} pairs, {crop}x{crop} centre, {'fixed' if fixed else 'epsilon'}): "
              f"median {med:.4f} px, mean {mean:.4f} px"
              + ("" if fixed else f" -> {'ok' if ok else 'FAIL'} (bounds {MAX_MEDIAN_EPE} / {MAX_MEAN_EPE})"))
    if args.e2e_seconds > 0:
        rate, peak = end_to_end(args, device)
        print(f"end-to-end extract ({args.e2e_seconds:g} s generated clip at {args.e2e_size}, both streams, flow "
              f"backend torch, fp32): {rate:.2f} s of video per wall second ({rate * 25:.0f} frames/s); "
              f"peak device memory {peak:.0f} MiB; target >= 50x real time on one H200-class GPU: "
              f"{'reached' if rate >= 50 else 'not reached'}")
    print(f"total {time.perf_counter() - t_start:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
