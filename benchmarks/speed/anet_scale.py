"""ActivityNet v1.2-sized runs on generated features: ``import-features``, ``train`` and ``detect --features``
on 10 %, 50 % and 100 % of the dataset's videos, with each command's peak RSS and its progress output.

The video ids and durations are the real ones (``refineloc_e2e/data/activitynet12/*.csv``: the training and
validation splits). Each video gets seeded random features of ``--dim`` columns under the real time base
with long windows (25 fps, ``--snippet-frames`` 128 frames = 5.12 s per row, so a 2-minute video has 24
rows), written as ``{id}.npy`` and imported through the real ``import-features`` (which checks every row
count against the video's duration). Then ``train`` (``--epochs``, no refinement iteration) and ``detect
--features`` on the validation videos. Each command runs in its own process; its peak RSS is that process's
``ru_maxrss`` (from ``wait4``). Its stderr is kept, and its size in lines and bytes is reported with its last line,
so one can see whether the progress output of a redirected run stays readable.

    nice -n 10 .venv/bin/python -m benchmarks.speed.anet_scale [--fractions 0.1,0.5,1] [--epochs 3] [--dim 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from refineloc_e2e.datasets import load_dataset
from refineloc_e2e.timebase import expected_snippets

CLI = [sys.executable, "-c", "import torch; torch.set_flush_denormal(True); from refineloc_e2e.cli import main; "
                             "main()"]
FPS = 25.0


def run(args: list[str], log: Path) -> tuple[float, float, int]:
    """Run ``refineloc-e2e ARGS`` with stderr to ``log``; (wall s, peak RSS MiB, exit status)."""
    t0 = time.perf_counter()
    with open(log, "wb") as err:
        proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=err,
                                env=dict(os.environ, OMP_NUM_THREADS="1"))
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, proc.returncode


def describe_log(log: Path) -> str:
    data = log.read_bytes()
    lines = data.split(b"\n")
    longest = max(len(x) for x in lines)
    last = next((x for x in reversed(lines) if x.strip()), b"").split(b"\r")[-1].decode(errors="replace")
    return f"stderr {len(lines) - 1} lines, {len(data)} bytes, longest line {longest} bytes; last: {last[:100]!r}"


def main() -> int:
    torch.set_flush_denormal(True)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fractions", default="0.1,0.5,1")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--snippet-frames", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", default=None, help="work folder (default: a temp folder)")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="anet_scale_"))
    ds = load_dataset("activitynet12")
    train = sorted(v.video_id for v in ds.subset("train"))
    val = sorted(v.video_id for v in ds.subset("test"))
    print(f"activitynet12: {len(train)} training + {len(val)} validation videos, {len(ds.classes)} classes; "
          f"features {args.dim}-d, {args.snippet_frames}-frame rows at {FPS:g} fps; work folder {work}")
    src_all = work / "src_all"
    src_all.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    rows = 0
    for vid in train + val:
        n = expected_snippets(ds.videos[vid].duration_s, fps=FPS, snippet_frames=args.snippet_frames)
        np.save(src_all / f"{vid}.npy", rng.standard_normal((n, args.dim), dtype=np.float32))
        rows += n
    print(f"generated {len(train) + len(val)} feature files, {rows} rows, in {time.perf_counter() - t0:.1f} s")
    order = np.random.default_rng(args.seed + 1)
    train_order, val_order = order.permutation(train), order.permutation(val)
    table = []
    for frac in (float(f) for f in args.fractions.split(",")):
        n_train, n_val = round(frac * len(train)), round(frac * len(val))
        tag = f"{round(100 * frac)}pct"
        src = work / f"src_{tag}"
        src.mkdir(exist_ok=True)
        for vid in [*train_order[:n_train], *val_order[:n_val]]:
            link = src / f"{vid}.npy"
            if not link.exists():
                link.symlink_to(src_all / f"{vid}.npy")
        feats, run_dir, seg = work / f"feats_{tag}", work / f"run_{tag}", work / f"segments_{tag}.json"
        stages = [
            ("import-features", ["import-features", str(src), "-o", str(feats), "--fps", str(FPS),
                                 "--snippet-frames", str(args.snippet_frames), "--streams", "rgb",
                                 "--stream-dim", str(args.dim), "--layout", "joint", "--dataset", "activitynet12"]),
            ("train", ["train", "--dataset", "activitynet12", "--features", str(feats), "--skip-missing",
                       "--run-dir", str(run_dir), "--set", f"head.feature_dim={args.dim}",
                       "--set", f"train.epochs={args.epochs}", "--set", "train.n_iterations=0",
                       "--set", "select_iteration=0", "--set", "train.device=cpu"]),
            ("detect --features", ["detect", "--features", str(feats), "--model", str(run_dir / "model.pt"),
                                   "-o", str(seg), "--device", "cpu", "--", *map(str, val_order[:n_val])]),
        ]  # "--": ActivityNet ids may start with "-"
        for name, cmd in stages:
            log = work / f"{tag}_{name.split()[0]}.log"
            wall, rss, rc = run(cmd, log)
            line = (f"{round(100 * frac):>3}% ({n_train + n_val} videos)  {name:<17} exit {rc}  {wall:7.1f} s  "
                    f"peak RSS {rss:7.0f} MiB")
            print(line + "\n      " + describe_log(log), flush=True)
            table.append((frac, name, rc, wall, rss))
            if rc != 0:
                print(log.read_text(errors="replace")[-2000:])
                return 1
        n_segs = sum(len(v) for v in json.loads(seg.read_text())["results"].values())
        print(f"      segments.json: {n_segs} segments")
    print("\npeak RSS (MiB) by fraction of the dataset:")
    for name in ("import-features", "train", "detect --features"):
        print(f"  {name:<17} " + "  ".join(f"{round(100 * f):>3}%: {r:6.0f}" for f, n, _, _, r in table if n == name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
