"""A fuzz corpus (``testing.fuzz``) through ONE ``extract`` batch, with a per-video wall-clock bound.

Extraction is cheap and needs no download: random-weight I3D streams, 48-pixel short side, 32-pixel crops,
8-frame snippets, the ``fast`` TV-L1 preset (``--streams both``; default ``rgb``). Printed:

* tracebacks (an exception escaping the batch; must be 0) and hangs (no video finished within ``--bound-s``
  seconds: a watchdog prints every thread's stack and exits 3; must be 0);
* extracted vs failed, the failures grouped by cause;
* peak RSS of the process (``ru_maxrss``), and the largest RSS growth over the batch;
* the "decode error after N frames (S s)" messages checked against two facts: ``S`` equals ``N`` source
  frames at the stream's frame rate (constant-rate sources), and decoding the same file with
  ``decode.partial_ok`` gives ``ceil(S * fps)`` frames (within the message's 2-decimal rounding).

Exit status 0 only if there were no traceback, no hang and no inconsistent message.

    nice -n 10 .venv/bin/python -m benchmarks.robustness.fuzz_extract [--n 500] [--seed 0] [--bound-s 60] [--streams rgb]
"""

from __future__ import annotations

import argparse
import collections
import faulthandler
import os
import re
import resource
import sys
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path

import torch

from refineloc_e2e.backbone.i3d import InceptionI3d
from refineloc_e2e.features.batch import extract_batch
from refineloc_e2e.features.extractor import ExtractConfig, FeatureExtractor
from refineloc_e2e.video.decode import DecodeConfig
from refineloc_e2e.video.flow import flow_config

from testing.fuzz import DECODE_ERROR, build_corpus, check_decode_message


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bound-s", type=float, default=60.0, help="per-video wall-clock bound (seconds)")
    ap.add_argument("--streams", default="rgb", choices=("rgb", "flow", "both"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--keep", default=None, help="write the corpus and features here (default: a temp folder)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fuzz_extract_"))
    t0 = time.perf_counter()
    corpus = build_corpus(work / "corpus", n=args.n, seed=args.seed)
    print(f"corpus: {len(corpus)} inputs in {work / 'corpus'} ({time.perf_counter() - t0:.1f} s to build)")
    decode = DecodeConfig(short_side=48, crop_size=32, snippet_frames=8)
    cfg = ExtractConfig(decode=decode, flow=flow_config("fast"), streams=args.streams, device="cpu",
                        batch_snippets=2)
    prov = {"sha256": None, "init": "random (benchmark)"}
    models = {"rgb": (InceptionI3d(3, 10), dict(prov)), "flow": (InceptionI3d(2, 10), dict(prov))}
    extractor = FeatureExtractor(cfg, models=models)
    videos = [work / "corpus" / c.name for c in corpus]

    # watchdog: a video (or a failure) must finish every bound_s seconds
    finished = [0]
    last = [time.monotonic()]
    slowest = [0.0, ""]
    rss_start = rss_mb()

    def tick(video: str) -> None:
        now = time.monotonic()
        if now - last[0] > slowest[0]:
            slowest[:] = [now - last[0], video]
        last[0] = now
        finished[0] += 1

    def watchdog() -> None:
        while True:
            time.sleep(1.0)
            if time.monotonic() - last[0] > args.bound_s:
                current = videos[finished[0]] if finished[0] < len(videos) else "?"
                print(f"HANG: no video finished within {args.bound_s:g} s; probably {current}", flush=True)
                faulthandler.dump_traceback(all_threads=True)
                print("hangs: 1", flush=True)
                os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    errors: list[str] = []

    def log(msg: str) -> None:
        if msg.startswith("error: "):
            errors.append(msg)
            tick(msg)

    tracebacks = 0
    n_warnings = collections.Counter()
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = extract_batch(videos, work / "feats", cfg, extractor=extractor, progress=False, log=log,
                                    on_ready=lambda v, vid, f, m: tick(str(v)))
        for w in caught:
            n_warnings[w.category.__name__] += 1
    except BaseException:  # anything escaping the batch is a bug
        tracebacks += 1
        traceback.print_exc()
        summary = None
    wall_s = time.perf_counter() - t0

    print(f"tracebacks: {tracebacks}")
    print("hangs: 0")
    if summary is None:
        return 1
    print(f"extracted: {len(summary.extracted)}, failed with a cause: {len(summary.failed)} "
          f"(of {len(videos)}; {wall_s:.1f} s, slowest {slowest[0]:.1f} s: {Path(slowest[1]).name})")
    print(f"warnings: {dict(n_warnings)}")
    by_cause = collections.Counter(re.sub(r"\d+(\.\d+)?", "N", why)[:110] for _, why in summary.failed)
    for why, k in by_cause.most_common():
        print(f"  {k:4d}  {why}")
    empty = [p for p, why in summary.failed if not why.strip()]
    print(f"failures without a cause: {len(empty)}")
    print(f"peak RSS: {rss_mb():.0f} MB (at the start of the batch: {rss_start:.0f} MB)")
    bad = []
    checked = 0
    for path, why in summary.failed:
        if DECODE_ERROR.search(why):
            checked += 1
            problem = check_decode_message(Path(path), why, decode)
            if problem:
                bad.append(f"{Path(path).name}: {problem}")
    print(f"decode-error messages checked: {checked}, inconsistent: {len(bad)}")
    for line in bad:
        print(f"  {line}")
    return 0 if not (tracebacks or bad or empty) else 1


if __name__ == "__main__":
    sys.exit(main())
