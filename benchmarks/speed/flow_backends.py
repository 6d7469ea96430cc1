"""TV-L1 flow backends side by side on the CPU: OpenCV (``flow.compute_flow``) vs torch (``video.tvl1_torch``).

For each clip, frame size and preset, in one run: flow pairs per second of OpenCV (one call per pair) and of
torch (all pairs in one batched call), each with 1 thread and with all threads, and the endpoint error of
torch against OpenCV at identical parameters (pixels, raw flow, over the 224x224 centre crop: mean and
median over all pixels of all pairs). ``--fixed`` adds torch with ``fixed_iterations=True`` (1 thread):
its pairs/s and its EPE against OpenCV.

Sizes: ``256x340`` is the centre 340 columns of the 256-short-side frame (the usual I3D pre-crop size);
``224`` is the 224x224 centre crop itself (flow computed on the crop only). Frames come from
``decode.iter_frames`` (25 fps, shorter side 256) starting at ``--start``; pairs of identical frames
(repeated by the 25 fps resampling) are skipped and counted.

    nice -n 10 .venv/bin/python -m benchmarks.speed.flow_backends --pairs 4 [--vtest /path/to/vtest.avi]
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch


from refineloc_e2e.fileio import package_data
from refineloc_e2e.video.decode import DecodeConfig, iter_frames
from refineloc_e2e.video.flow import compute_flow, flow_config, make_tvl1, to_gray
from refineloc_e2e.video.snippets import centre_window
from refineloc_e2e.video.tvl1_torch import tvl1_flow

CROP = 224


def epe_crop(flow: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Endpoint error of ``flow`` against ``ref`` (both ``[P, H, W, 2]``) over the centre crop: ``[P, 224, 224]``."""
    return np.linalg.norm(centre_window(np.moveaxis(flow - ref, -1, 1), CROP, CROP), axis=1)


def gray_pairs(video: str, start: int, n_pairs: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``n_pairs`` consecutive grayscale pairs from frame ``start``, skipping pairs of identical frames
    (resampling a 10 fps clip such as vtest.avi to 25 fps repeats frames: zero flow, no work for either
    backend); returns prev, next ``[P, H, W]`` uint8 and the number of pairs skipped."""
    prev, nxt, skipped, last = [], [], 0, None
    for frame in itertools.islice(iter_frames(video, DecodeConfig()), start, None):
        gray = to_gray(frame)  # [H, W]
        if last is not None:
            if np.array_equal(gray, last):
                skipped += 1
            else:
                prev.append(last)
                nxt.append(gray)
                if len(prev) == n_pairs:
                    break
        last = gray
    if len(prev) < n_pairs:
        raise SystemExit(f"{video}: only {len(prev)} pairs of distinct frames from frame {start}, need {n_pairs}")
    return np.stack(prev), np.stack(nxt), skipped


def run_opencv(prev, nxt, cfg, threads: int) -> tuple[float, np.ndarray]:
    cv2.setNumThreads(threads)
    tvl1 = make_tvl1(cfg)
    t0 = time.perf_counter()
    flow = np.stack([compute_flow(a, b, tvl1) for a, b in zip(prev, nxt)])  # [P, H, W, 2]
    return len(prev) / (time.perf_counter() - t0), flow


def run_torch(prev, nxt, cfg, threads: int, fixed: bool = False) -> tuple[float, np.ndarray]:
    torch.set_num_threads(threads)
    tvl1_flow(prev[:1, :32, :32], nxt[:1, :32, :32], cfg)  # warm-up (allocator, first-call costs)
    t0 = time.perf_counter()
    flow = tvl1_flow(prev, nxt, cfg, fixed_iterations=fixed).numpy()  # [P, H, W, 2]
    return len(prev) / (time.perf_counter() - t0), flow


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=4, help="frame pairs per clip (default 4)")
    ap.add_argument("--start", type=int, default=50, help="first frame index used (default 50)")
    ap.add_argument("--presets", default="fast,paper")
    ap.add_argument("--sizes", default="256x340,224")
    ap.add_argument("--vtest", default=None, help="path to OpenCV's vtest.avi, benchmarked as a second clip")
    ap.add_argument("--fixed", action="store_true", help="also torch with fixed_iterations=True (1 thread)")
    args = ap.parse_args()
    all_threads = os.cpu_count() or 1
    videos = [str(package_data("data", "samples", "bikes.mp4"))] + ([args.vtest] if args.vtest else [])
    print(f"cv2 {cv2.__version__}, torch {torch.__version__}, {all_threads} CPU threads, {args.pairs} pairs per "
          f"clip from frame {args.start}; pairs/s (higher is better); EPE torch vs OpenCV over the {CROP} centre "
          f"crop, px")
    print(f"{'clip':<10}{'size':<9}{'preset':<7}{'cv2 1t':>8}{'torch 1t':>9}{'ratio':>7}"
          f"{f'cv2 {all_threads}t':>8}{f'torch {all_threads}t':>9}{'ratio':>7}{'EPE mean':>10}{'median':>8}"
          + (f"{'fixed 1t':>10}{'EPE mean':>10}{'median':>8}" if args.fixed else ""))
    for video in videos:
        prev_full, next_full, skipped = gray_pairs(video, args.start, args.pairs)
        if skipped:
            print(f"({Path(video).name}: skipped {skipped} pairs of identical frames)")
        for size in args.sizes.split(","):
            h, w = (CROP, CROP) if size == "224" else tuple(int(v) for v in size.split("x"))
            prev = np.ascontiguousarray(centre_window(prev_full, h, w))
            nxt = np.ascontiguousarray(centre_window(next_full, h, w))
            for preset in args.presets.split(","):
                cfg = flow_config(preset)
                cv1, ref = run_opencv(prev, nxt, cfg, 1)
                t1, out = run_torch(prev, nxt, cfg, 1)
                cvn, _ = run_opencv(prev, nxt, cfg, all_threads)
                tn, _ = run_torch(prev, nxt, cfg, all_threads)
                epe = epe_crop(out, ref)
                row = (f"{Path(video).stem:<10}{f'{h}x{w}':<9}{preset:<7}{cv1:8.2f}{t1:9.2f}{t1 / cv1:7.2f}"
                       f"{cvn:8.2f}{tn:9.2f}{tn / cvn:7.2f}{epe.mean():10.4f}{np.median(epe):8.4f}")
                if args.fixed:
                    tf, out_fixed = run_torch(prev, nxt, cfg, 1, fixed=True)
                    epe_f = epe_crop(out_fixed, ref)
                    row += f"{tf:10.2f}{epe_f.mean():10.4f}{np.median(epe_f):8.4f}"
                print(row, flush=True)


if __name__ == "__main__":
    main()
