"""Extraction throughput: the naive two-stream TV-L1 + I3D recipe and the optimised extractor, side by side.

Both run in this process on the same clips: the first ``--seconds`` of ``refineloc_e2e/data/samples/bikes.mp4`` (real
footage, 640x272 -> 602x256) and a 1280x720 H.264 clip generated from it. Per pipeline and clip it prints
the seconds per stage (decode, flow, I3D rgb, I3D flow, write), seconds of video per wall second, peak RSS
(this process, and with the flow workers), then the ratio optimised / baseline, the per-stream cosine
similarity of the features over snippets, and the endpoint error of each flow optimisation against the
baseline's flow (raw pixels over the 224 centre crop, on the first ``--epe-pairs`` pairs).

* **Baseline** (the published recipe, plainly): ``paper`` TV-L1 (OpenCV defaults) on the whole
  256-short-side frame, then the 224 centre crop; float32 eager I3D, contiguous memory, one snippet per
  forward; decode -> flow -> I3D rgb -> I3D flow in sequence, snippet by snippet.
* **Optimised** (``FeatureExtractor`` defaults plus ``workers``): ``fast`` TV-L1 on the whole frame,
  ``--workers`` flow processes overlapping decode and I3D, I3D in batches of 8 with ``channels_last_3d``.
  Also run with ``workers=1`` (the worker count must not change the features) and with the opt-in
  ``flow_region=crop`` (TV-L1 on the crop plus 32 px only).

``--before-after`` runs only the issue-19 comparison instead: today's former CPU default (``opencv`` TV-L1 in
this process, ``workers=1``) against the current default (``ExtractConfig(device="cpu")``: ``auto`` backend and
workers), alternating ``--reps`` times on the first ``--seconds`` of bikes.mp4 (``--video`` for another clip),
each extractor warmed up first; prints seconds of video per wall second of each, the ratio, the per-stream
feature cosine (RGB must be identical), the load before and after, and what ``auto`` resolved to. I3D weights:
the real ones when fetched, else random (``--random-weights`` forces them; speed does not depend on them).

``--long`` adds the memory check: a generated 30-minute video, decoded and extracted for its first
``--long-minutes`` minutes with RSS sampled at every snippet (peak and slope in MiB per minute of video).

    .venv/bin/python -m benchmarks.speed.extract_throughput [--seconds 2] [--workers 2] [--long]
    .venv/bin/python -m benchmarks.speed.extract_throughput --before-after --seconds 10 [--reps 1]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from refineloc_e2e.backbone.weights import build_i3d
from refineloc_e2e.video.decode import DecodeConfig, iter_frames
from refineloc_e2e.features.extractor import ExtractConfig, FeatureExtractor
from refineloc_e2e.features.cache import write_features
from refineloc_e2e.fileio import package_data
from refineloc_e2e.video.flow import compute_flow, flow_config, iter_flow, make_tvl1, postprocess_flow, to_gray
from refineloc_e2e.video.flow_chunks import flow_window
from refineloc_e2e.video.snippets import center_crop, normalize_rgb

BIKES = package_data("data", "samples", "bikes.mp4")

PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 2 ** 20


def rss_bytes(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (FileNotFoundError, ProcessLookupError):
        return 0  # a worker that just exited


class RssSampler:
    """Peak RSS of this process and of this process plus its children, sampled every ``period_s``."""

    def __init__(self, period_s: float = 0.02):
        self.period_s, self.peak_main, self.peak_total = period_s, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _children(self) -> list[str]:
        pids = []
        for task in os.listdir("/proc/self/task"):
            try:
                pids += open(f"/proc/self/task/{task}/children").read().split()
            except FileNotFoundError:
                continue
        return pids

    def _run(self) -> None:
        while not self._stop.is_set():
            main = rss_bytes()
            self.peak_main = max(self.peak_main, main)
            self.peak_total = max(self.peak_total, main + sum(rss_bytes(p) for p in self._children()))
            time.sleep(self.period_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# ---- inputs ----
def trim_copy(src: Path, dst: Path, seconds: float) -> Path:
    """The first ``seconds`` of ``src`` by packet copy (no re-encode; starts at the first keyframe)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        s_in = inp.streams.video[0]
        s_out = out.add_stream_from_template(s_in)
        for pkt in inp.demux(s_in):
            if pkt.dts is None:
                continue
            if pkt.pts is not None and float(pkt.pts * s_in.time_base) >= seconds:
                break
            pkt.stream = s_out
            out.mux(pkt)
    return dst


def make_720p(src: Path, dst: Path, seconds: float) -> Path:
    """Re-encode the first ``seconds`` of ``src`` as 1280x720 H.264 at 25 fps (16:9 centre part, upscaled)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        s = out.add_stream("libx264", rate=25, options={"crf": "18", "preset": "veryfast"})
        s.width, s.height, s.pix_fmt = 1280, 720, "yuv420p"
        for i, frame in enumerate(inp.decode(video=0)):
            if i >= seconds * 25:
                break
            img = frame.to_ndarray(format="rgb24")  # [272, 640, 3]
            w = img.shape[0] * 16 // 9
            x0 = (img.shape[1] - w) // 2
            big = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:, x0:x0 + w]), format="rgb24")
            for p in s.encode(big.reformat(width=1280, height=720, interpolation="BICUBIC")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return dst


def make_long(dst: Path, minutes: float, native_fps: int = 5, size=(320, 240)) -> Path:
    """A ``minutes`` long H.264 video of a drifting texture (low native fps: cheap to write, decode resamples)."""
    import cv2

    w, h = size
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.integers(0, 256, (h + 64, w + 64, 3), dtype=np.uint8), (0, 0), 2.0)
    with av.open(str(dst), "w") as out:
        s = out.add_stream("libx264", rate=native_fps, options={"preset": "ultrafast", "g": "250"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(int(minutes * 60 * native_fps)):
            dx, dy = int(16 + 15 * np.sin(i / 7)), int(16 + 15 * np.cos(i / 11))
            img = np.ascontiguousarray(tex[dy:dy + h, dx:dx + w])
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return dst


# ---- the two pipelines ----
def timed(it, stage_s: dict, key: str):
    it = iter(it)
    while True:
        t0 = time.perf_counter()
        try:
            x = next(it)
        except StopIteration:
            return
        finally:
            stage_s[key] += time.perf_counter() - t0
        yield x


def baseline(path: Path, models: dict, out_dir: Path):
    """The plain recipe; returns (features [T, 2048], stage seconds, raw paper flow crops [N, 224, 224, 2])."""
    dcfg, paper = DecodeConfig(), flow_config("paper")
    S, crop = dcfg.snippet_frames, dcfg.crop_size
    st = dict.fromkeys(("decode", "flow", "i3d_rgb", "i3d_flow", "write"), 0.0)
    held: list[np.ndarray] = []  # decoded frames whose field is not out yet (iter_flow reads one ahead)

    def tap(it):
        for f in it:
            held.append(f)
            yield f

    raw_crops, feats = [], {"rgb": [], "flow": []}
    rgb_buf, flow_buf = [], []

    def embed(stream, clip):
        t0 = time.perf_counter()
        x = torch.from_numpy(clip[None]).permute(0, 4, 1, 2, 3).contiguous()  # (1, C, T, H, W)
        with torch.inference_mode():
            f, _ = models[stream](x)  # (1, 1024)
        feats[stream].append(f.numpy())
        st[f"i3d_{stream}"] += time.perf_counter() - t0

    def close():
        while len(rgb_buf) < S:
            rgb_buf.append(rgb_buf[-1])
            flow_buf.append(flow_buf[-1])
        embed("rgb", normalize_rgb(center_crop(np.stack(rgb_buf), crop)))  # (S, crop, crop, 3)
        embed("flow", postprocess_flow(center_crop(np.stack(flow_buf), crop), paper.bound))
        rgb_buf.clear()
        flow_buf.clear()

    decoded = timed(iter_frames(path, dcfg), st, "decode")
    for field in timed(iter_flow(tap(decoded), paper, postprocess=False), st, "flow"):
        rgb_buf.append(held.pop(0))
        flow_buf.append(field)
        raw_crops.append(center_crop(field, crop).copy())
        if len(rgb_buf) == S:
            close()
    if rgb_buf:
        close()
    st["flow"] -= st["decode"]  # decoding ran inside the flow generator's next()
    out = np.concatenate([np.concatenate(feats["rgb"]), np.concatenate(feats["flow"])], axis=1)  # (T, 2048)
    t0 = time.perf_counter()
    write_features(out_dir, "baseline", out, {"settings_hash": "baseline", "n_snippets": len(out)})
    st["write"] = time.perf_counter() - t0
    return out, st, np.stack(raw_crops)


def optimised(path: Path, ex: FeatureExtractor, out_dir: Path, name: str):
    feats, meta = ex.extract(path)
    st = dict(ex.stage_s)
    t0 = time.perf_counter()
    write_features(out_dir, name, feats, meta)
    st["write"] = time.perf_counter() - t0
    return feats, st


def run_measured(fn):
    with RssSampler() as mem:
        t0 = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - t0
    return result, wall, mem


def print_row(name, st, wall, video_s, mem):
    stages = "  ".join(f"{k} {v:6.1f}" for k, v in st.items())
    print(f"  {name:<22} wall {wall:7.1f} s  video/wall {video_s / wall:6.3f}  peak RSS {mem.peak_main / MiB:6.0f} MiB"
          f" (+workers {mem.peak_total / MiB:6.0f})\n  {'':<22} stage s: {stages}")


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def flow_epe(path: Path, ref_raw: np.ndarray, n_pairs: int) -> list[tuple[str, float, float, float]]:
    """EPE (px, mean / median / p99) against the baseline's raw flow of each flow optimisation, alone and combined."""
    dcfg = DecodeConfig()
    frames = [to_gray(f) for f in itertools.islice(iter_frames(path, dcfg), n_pairs + 1)]
    rows = []
    for name, preset, region in [("fast preset, full frame", "fast", "full"),
                                 ("paper, crop + 32 px", "paper", "crop"),
                                 ("fast, crop + 32 px (optimised)", "fast", "crop")]:
        win = flow_window(*frames[0].shape, dcfg.crop_size, region, 32)
        tvl1 = make_tvl1(flow_config(preset))
        got = np.stack([win.crop_of(compute_flow(np.ascontiguousarray(win.region_of(a)),
                                                 np.ascontiguousarray(win.region_of(b)), tvl1))
                        for a, b in zip(frames[:-1], frames[1:])])  # [P, 224, 224, 2]
        epe = np.linalg.norm(got - ref_raw[:len(got)], axis=-1)
        rows.append((name, float(epe.mean()), float(np.median(epe)), float(np.percentile(epe, 99))))
    return rows


def bench_clip(label: str, path: Path, args, models: dict, extractors: dict[str, FeatureExtractor],
               out_dir: Path) -> dict:
    n_frames = sum(1 for _ in iter_frames(path))
    video_s = n_frames / 25.0
    h, w = next(iter_frames(path)).shape[:2]
    print(f"\n== {label}: {path.name}, {video_s:.2f} s ({n_frames} frames at {w}x{h} after resize), "
          f"load {os.getloadavg()[0]:.2f}")
    (fb, sb, raw), wb, mb = run_measured(lambda: baseline(path, models, out_dir))
    print_row("baseline", sb, wb, video_s, mb)
    feats, walls = {}, {}
    for name, ex in extractors.items():
        (feats[name], st), walls[name], mem = run_measured(lambda: optimised(path, ex, out_dir, f"{label}-{name}"))
        print_row(name, st, walls[name], video_s, mem)
    main_name, one_name = list(extractors)[:2]
    print("  ratio optimised/baseline (video per wall second): "
          + ", ".join(f"{n} {wb / walls[n]:.2f}x" for n in extractors))
    print(f"  {main_name} vs {one_name} features: max abs diff {np.abs(feats[main_name] - feats[one_name]).max():.3g}")
    for name in extractors:
        for i, s in enumerate(("rgb", "flow")):
            c = cosine(feats[name][:, 1024 * i:1024 * (i + 1)], fb[:, 1024 * i:1024 * (i + 1)])
            print(f"  cosine({name}, baseline) {s:<4}: mean {c.mean():.4f}  min {c.min():.4f}  over {len(c)} snippets")
    mag = np.linalg.norm(raw, axis=-1)
    print(f"  flow EPE vs baseline (paper, full frame) over the first {args.epe_pairs} pairs; baseline |flow| "
          f"mean {mag.mean():.2f} px, p99 {np.percentile(mag, 99):.2f} px:")
    for name, mean, med, p99 in flow_epe(path, raw, args.epe_pairs):
        print(f"    {name:<32} mean {mean:.3f} px  median {med:.3f} px  p99 {p99:.2f} px")
    return {"speedup": wb / walls[main_name]}


def warm_up(models: dict, extractors: dict[str, FeatureExtractor], clip: Path) -> float:
    """Start the flow workers and let oneDNN build its kernels, outside the timings (both pipelines)."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s, c in (("rgb", 3), ("flow", 2)):
            models[s](torch.zeros(1, c, 16, 224, 224))
    for ex in extractors.values():
        ex.extract(clip)
    return time.perf_counter() - t0


def bench_long(args, ex: FeatureExtractor, tmp: Path) -> None:
    t0 = time.perf_counter()
    path = make_long(tmp / "long30.mp4", 30.0)
    print(f"\n== memory: generated a 30-minute video ({path.stat().st_size / MiB:.1f} MiB, 320x240 at 5 fps, "
          f"resampled to 25 fps) in {time.perf_counter() - t0:.0f} s; extracting its first {args.long_minutes} min")
    limit = int(args.long_minutes * 60 * 25)
    samples: list[tuple[int, int]] = []  # (frame index, RSS bytes) at every snippet

    def limited(p, cfg=None):  # the first minutes only, RSS at every snippet
        for i, f in enumerate(itertools.islice(iter_frames(p, cfg), limit)):
            if i % 16 == 0:
                samples.append((i, rss_bytes() + sum(rss_bytes(c.pid) for c in _children())))
            yield f

    def _children():
        import multiprocessing
        return multiprocessing.active_children()

    (feats, meta), wall, mem = run_measured(lambda: ex.extract(path, frames=limited(path, ex.cfg.decode)))
    idx = np.array([i for i, _ in samples], float) / 25 / 60  # minutes of video
    rss = np.array([r for _, r in samples], float) / MiB
    keep = idx >= min(0.25, idx.max() / 4)  # after warm-up
    slope = np.polyfit(idx[keep], rss[keep], 1)[0]
    print(f"  {feats.shape[0]} snippets in {wall:.0f} s ({limit / 25 / wall:.3f} s video per wall s); "
          f"peak RSS {mem.peak_main / MiB:.0f} MiB (+workers {mem.peak_total / MiB:.0f} MiB)")
    print(f"  RSS (process + workers) at snippet 0 / 25% / 50% / 75% / end: "
          + " / ".join(f"{rss[int(q * (len(rss) - 1))]:.0f}" for q in (0, .25, .5, .75, 1)) + " MiB")
    print(f"  RSS slope after the first {idx[keep][0] * 60:.0f} s: {slope:+.2f} MiB per minute of video "
          f"(a 30-minute video would add {30 * slope:+.0f} MiB; the [T, 2048] output itself is 8 KiB per snippet)")


def before_after_models(force_random: bool) -> tuple[dict | None, str]:
    """Real I3D weights when fetched (None: the extractors load them), else random ones, and a label."""
    from refineloc_e2e.backbone.i3d import InceptionI3d
    from refineloc_e2e.errors import WeightsError
    if not force_random:
        try:
            build_i3d("rgb", None)
            return None, "real RGB weights (flow: cross-modality init)"
        except WeightsError:
            pass
    torch.manual_seed(0)
    prov = {"sha256": None, "init": "random (benchmark)"}
    return ({"rgb": (InceptionI3d(3, 400), dict(prov)), "flow": (InceptionI3d(2, 400), dict(prov))},
            "random I3D weights (real ones not fetched)")


def before_after(args) -> int:
    """Issue 19: the former CPU default and the current one on the same clip, alternating, in this process."""
    import dataclasses
    models, label = before_after_models(args.random_weights)
    former = dataclasses.replace(flow_config("fast"), backend="opencv")
    cfgs = {"before (opencv, workers=1)": ExtractConfig(device="cpu", workers=1, flow=former),
            "after (default: auto)": ExtractConfig(device="cpu")}
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp_:
        clip = trim_copy(Path(args.video), Path(tmp_) / "clip.mp4", args.seconds)
        video_s = sum(1 for _ in iter_frames(clip)) / 25.0
        exs = {name: FeatureExtractor(c, models=models) for name, c in cfgs.items()}
        try:
            for name, ex in exs.items():
                print(f"{name}: flow backend {ex.cfg.flow.backend}, workers {ex.cfg.workers}, "
                      f"torch threads {torch.get_num_threads()}, settings hash {ex.settings_hash[:12]}")
            warm = trim_copy(Path(args.video), Path(tmp_) / "warm.mp4", 0.8)
            for ex in exs.values():
                ex.extract(warm)  # worker start, oneDNN kernels: outside the timings
            walls: dict[str, list[float]] = {n: [] for n in exs}
            feats: dict[str, np.ndarray] = {}
            print(f"{Path(args.video).name} first {video_s:.2f} s of video, {label}; "
                  f"load {' '.join(f'{x:.2f}' for x in load0)}")
            for rep in range(args.reps):
                for name, ex in exs.items():  # alternating: the load drifts, both see it
                    t0 = time.perf_counter()
                    feats[name], _ = ex.extract(clip)
                    walls[name].append(time.perf_counter() - t0)
                    stages = ", ".join(f"{k} {v:.1f}" for k, v in ex.stage_s.items())
                    print(f"  run {rep + 1} {name:<27} wall {walls[name][-1]:6.1f} s = "
                          f"{video_s / walls[name][-1]:.3f} s of video per wall s ({stages})", flush=True)
        finally:
            for ex in exs.values():
                ex.close()
    (nb, fb), (na, fa) = feats.items()
    rb, ra = video_s * args.reps / sum(walls[nb]), video_s * args.reps / sum(walls[na])
    print(f"before {rb:.3f}, after {ra:.3f} s of video per wall second: after / before = {ra / rb:.2f}x "
          f"(load after {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    def cos_min(a: np.ndarray, b: np.ndarray) -> float:  # per snippet, no epsilon (random features are small)
        return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())

    cos = [cos_min(fa[:, 1024 * i:1024 * (i + 1)], fb[:, 1024 * i:1024 * (i + 1)]) for i in range(2)]
    same_rgb = np.array_equal(fa[:, :1024], fb[:, :1024])
    print(f"features after vs before, min cosine over {len(fa)} snippets: rgb {cos[0]:.5f} (identical: {same_rgb}), "
          f"flow {cos[1]:.5f} (bound 0.995)")
    return 0 if same_rgb and cos[1] >= 0.995 else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before-after", action="store_true", help="only the former vs current CPU default (issue 19)")
    ap.add_argument("--reps", type=int, default=1, help="--before-after: alternating runs of each")
    ap.add_argument("--video", default=str(BIKES))
    ap.add_argument("--random-weights", action="store_true", help="--before-after: random I3D weights")
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds of each clip (baseline ~3 s/frame on bikes)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epe-pairs", type=int, default=12)
    ap.add_argument("--long", action="store_true", help="also run the 30-minute memory check")
    ap.add_argument("--long-minutes", type=float, default=1.0)
    ap.add_argument("--skip-clips", action="store_true", help="only the --long check")
    args = ap.parse_args()
    if args.before_after:
        sys.exit(before_after(args))
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), {os.cpu_count()} CPUs, "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; no GPU used (none on this machine)")
    models = {s: build_i3d(s, None)[0] for s in ("rgb", "flow")}  # float32, contiguous
    cfgs = {f"optimised workers={args.workers}": ExtractConfig(device="cpu", workers=args.workers),
            "optimised workers=1": ExtractConfig(device="cpu", workers=1),
            f"optimised+crop workers={args.workers}": ExtractConfig(device="cpu", workers=args.workers,
                                                                   flow_region="crop")}
    extractors = {name: FeatureExtractor(c) for name, c in cfgs.items()}
    for name, c in cfgs.items():
        print(f"{name}: flow {c.flow.preset} region={c.flow_region}"
              f"{f'+{c.flow_margin_px}px' if c.flow_region == 'crop' else ''} batch={c.batch_snippets} "
              f"channels_last={c.channels_last} precision={c.precision}")
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        tiny = trim_copy(BIKES, tmp / "warm.mp4", 0.2)
        print(f"warm-up (worker start, oneDNN kernels): {warm_up(models, extractors, tiny):.1f} s")
        if not args.skip_clips:
            bikes = trim_copy(BIKES, tmp / "bikes_first.mp4", args.seconds)
            hd = make_720p(BIKES, tmp / "bikes_720p.mp4", args.seconds)
            res = [bench_clip(lbl, p, args, models, extractors, tmp) for lbl, p in (("bikes", bikes), ("720p", hd))]
            print(f"\nspeed-up optimised/baseline ({list(cfgs)[0]}): "
                  + ", ".join(f"{r['speedup']:.2f}x" for r in res))
        if args.long:
            bench_long(args, extractors[list(cfgs)[0]], tmp)
    for ex in extractors.values():
        ex.close()


if __name__ == "__main__":
    main()
