"""End-to-end ``extract`` with the two TV-L1 backends side by side: OpenCV (the published implementation)
and the torch port (``video/tvl1_torch.py``), same settings, same process, same threads.

On the first ``--seconds`` of ``refineloc_e2e/data/samples/bikes.mp4`` (re-encoded losslessly to a temp
file), both streams, the ``--preset`` flow preset: seconds of video per wall second per backend, the
torch / OpenCV ratio, the per-stage seconds, and the cosine similarity of the flow-stream features (the
issue's bound: >= 0.995). I3D weights: the real RGB weights when fetched (flow: cross-modality init),
else random weights (``--random-weights``; the speed does not depend on them).

    .venv/bin/python -m benchmarks.speed.extract_backends [--seconds 2] [--preset fast] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch


from refineloc_e2e.backbone.i3d import InceptionI3d
from refineloc_e2e.fileio import package_data
from refineloc_e2e.features.extractor import ExtractConfig, FeatureExtractor
from refineloc_e2e.video.flow import cv2_optflow, flow_config


def trimmed(src: Path, seconds: float, dst: Path) -> Path:
    """The first ``seconds`` of ``src``, re-encoded losslessly (FFV1) so both runs decode the same frames."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        rate = vin.average_rate
        s = out.add_stream("ffv1", rate=rate)
        s.width, s.height, s.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        for frame in itertools.islice(inp.decode(vin), int(round(seconds * float(rate)))):
            for pkt in s.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return dst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--preset", default="fast", choices=["fast", "paper"])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--random-weights", action="store_true")
    ap.add_argument("--video", default=str(package_data("data", "samples", "bikes.mp4")))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2_optflow().setNumThreads(args.threads)  # both backends on the same number of threads
    models = None
    if args.random_weights:
        torch.manual_seed(0)
        prov = {"sha256": None, "init": "random (benchmark)"}
        models = {"rgb": (InceptionI3d(3, 400), dict(prov)), "flow": (InceptionI3d(2, 400), dict(prov))}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = trimmed(Path(args.video), args.seconds, Path(tmp) / "clip.mkv")
        for backend in ("opencv", "torch"):
            cfg = ExtractConfig(device="cpu", flow=dataclasses.replace(flow_config(args.preset), backend=backend))
            with FeatureExtractor(cfg, models=models) as ex:
                t0 = time.perf_counter()
                feats, meta = ex.extract(clip)
                wall = time.perf_counter() - t0
            rows[backend] = (feats, meta["duration_s"] / wall, dict(ex.stage_s))
            stages = ", ".join(f"{k} {v:.1f}" for k, v in ex.stage_s.items())
            print(f"{backend:>7}: {meta['duration_s']:.2f} s of video in {wall:.1f} s = {rows[backend][1]:.3f} s of "
                  f"video per wall second ({stages})", flush=True)
    (f_cv, r_cv, s_cv), (f_t, r_t, s_t) = rows["opencv"], rows["torch"]
    a, b = f_cv[:, 1024:], f_t[:, 1024:]
    cos = float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))
    print(f"torch / opencv end to end: {r_t / r_cv:.2f}x; flow compute only: {s_cv['flow'] / s_t['flow']:.2f}x "
          f"({args.preset} preset, {args.threads} threads, {Path(args.video).name} first {args.seconds:g} s)")
    print(f"flow-stream feature cosine torch vs opencv: {cos:.5f} (bound 0.995); RGB stream identical: "
          f"{np.array_equal(f_cv[:, :1024], f_t[:, :1024])}")
    return 0 if cos >= 0.995 else 1


if __name__ == "__main__":
    raise SystemExit(main())
