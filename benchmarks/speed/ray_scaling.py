"""The same batch on one process vs. a local 2-node Ray cluster (1 CPU per node) on this machine.

A batch of ``--videos`` generated clips (textures moving a pixel per frame, ``--frames`` frames each at
``--size``) is extracted three times into fresh folders, with the two I3D streams (random weights saved as a
file, so no download: speed does not depend on the weights) and the ``fast`` TV-L1 preset:

1. ``extract_batch`` in this process, torch on all cores (what ``refineloc-e2e extract`` does);
2. ``extract_batch_ray`` on a local ``ray.cluster_utils.Cluster`` of 2 nodes x 1 CPU, bound to 127.0.0.1,
   one video per task (each task's torch on 1 thread, as Ray sets ``OMP_NUM_THREADS=num_cpus``).

Reported: wall seconds (for Ray with and without starting the cluster; connecting and the shared-folder
probe are included), video-seconds per wall second, speed-up, and the largest feature difference (0 only at
equal torch thread counts: the tests check bitwise equality with one thread on both sides).

    .venv/bin/python -m benchmarks.speed.ray_scaling [--videos 6] [--frames 64] [--size 160x120]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from refineloc_e2e.backbone.formats import save_i3d
from refineloc_e2e.backbone.i3d import InceptionI3d
from refineloc_e2e.features.batch import extract_batch
from refineloc_e2e.features.cache import read_features
from refineloc_e2e.features.distributed import extract_batch_ray
from refineloc_e2e.features.extractor import ExtractConfig
from refineloc_e2e.ids import video_id_of
from refineloc_e2e.video.decode import DecodeConfig

from testing.videos import write_moving_video


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--size", default="160x120", help="WxH of the generated clips")
    ap.add_argument("--short-side", type=int, default=128)
    ap.add_argument("--crop", type=int, default=112)
    args = ap.parse_args()
    w, h = map(int, args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="rl-bench-", dir="/tmp"))  # short: Ray's socket paths
    os.environ.update(RAY_TMPDIR=str(work), RAY_USAGE_STATS_ENABLED="0")
    try:
        torch.manual_seed(0)
        save_i3d(work / "rgb.pt", InceptionI3d(3, 10).state_dict(), {"note": "random weights (benchmark)"})
        videos = [write_moving_video(work / f"v{i}.mkv", n=args.frames, size=(w, h), step_px=(1, i % 2))
                  for i in range(args.videos)]
        video_s = args.videos * args.frames / 25.0
        cfg = ExtractConfig(decode=DecodeConfig(short_side=args.short_side, crop_size=args.crop), device="cpu",
                            rgb_weights=str(work / "rgb.pt"), flow_weights="cross-modality-from-rgb")
        print(f"{args.videos} videos x {args.frames} frames ({video_s:.1f} video-s), {w}x{h} -> crop {args.crop}, "
              f"both streams, {os.cpu_count()} CPUs, torch {torch.get_num_threads()} threads in process")

        t0 = time.perf_counter()
        one = extract_batch(videos, work / "one", cfg, progress=False, log=lambda m: None)
        t_one = time.perf_counter() - t0
        assert len(one.extracted) == args.videos, one.format()
        print(f"1 process:            {t_one:6.1f} s  {video_s / t_one:5.2f} video-s/s")

        from ray.cluster_utils import Cluster

        t0 = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={"node_ip_address": "127.0.0.1", "num_cpus": 1,
                                                                "include_dashboard": False})
        try:
            cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)
            cluster.wait_for_nodes(timeout=60)
            t_start = time.perf_counter() - t0
            t0 = time.perf_counter()
            two = extract_batch_ray(videos, work / "ray", cfg, address=cluster.address, progress=False,
                                    log=lambda m: None, timeout_s=1800)
            t_ray = time.perf_counter() - t0
        finally:
            cluster.shutdown()
        assert len(two.extracted) == args.videos, two.format()
        diff = max(float(np.abs(read_features(work / "one", video_id_of(v))[0]
                                - read_features(work / "ray", video_id_of(v))[0]).max()) for v in videos)
        print(f"Ray, 2 nodes x 1 CPU: {t_ray:6.1f} s  {video_s / t_ray:5.2f} video-s/s  "
              f"(+{t_start:.1f} s to start the cluster)  per node: {dict(sorted(two.per_node.items()))}")
        print(f"speed-up {t_one / t_ray:.2f}x (with cluster start {t_one / (t_ray + t_start):.2f}x); "
              f"features max |1 process - Ray| = {diff:.2g} (0 = bitwise; torch on 2 threads vs 1 sums in another "
              f"order: run the process with torch.set_num_threads(1) for bitwise, as the tests do)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
