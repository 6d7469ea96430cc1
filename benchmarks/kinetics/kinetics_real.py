"""The built-in kinetics400 detector on real clips with real temporal annotations (nothing trained).

The annotations (``--annotations``, default ``benchmarks/kinetics/real_clips.json``: ActivityNet-style ``database``;
a video's optional ``kinetics_classes`` names the Kinetics classes its label stands for, else the label itself must
be one) name each clip and where it comes from (``source``: public repository, commit, path, sha256; the clips are
not in this repository, their footage being third-party). CLIPS is a folder holding those clips' features under
``CLIPS/features/`` (``refineloc-e2e extract CLIPS -o CLIPS/features --streams rgb``, default settings), or the
clips themselves as ``<video_id>.<ext>`` (then extracted, RGB only, into ``--cache``). A ``CLIPS/annotations.json``
replaces the default annotations. Negatives (default: the bundled
``bikes.mp4``, no action of any Kinetics class) must give no segment.

Prints per clip: the annotation, the top pooled class, the top segment and its tIoU with the best-matching
annotated instance of its class (0 for a wrong class), and mAP at tIoU 0.3 / 0.5 / 0.7 (ActivityNet protocol,
``evaluation.metrics``) with the annotated labels in Kinetics names.

    nice -n 10 .venv/bin/python -m benchmarks.kinetics.kinetics_real CLIPS \\
        [--set localise.min_class_prob=0.3 ...] [--negative VIDEO ...] [--sweep]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from refineloc_e2e.cli.kinetics import split_overrides
from refineloc_e2e.datasets import Dataset, Segment, VideoAnnotation
from refineloc_e2e.detection.kinetics_detect import (detect_features_kinetics, detect_videos_kinetics,
                                                     kinetics_extract_config)
from refineloc_e2e.detection.vocab import load_vocab
from refineloc_e2e.evaluation.metrics import evaluate, tiou
from refineloc_e2e.fileio import package_data, user_cache_dir

TIOUS = [0.3, 0.5, 0.7]


REAL_CLIPS = Path(__file__).resolve().parent / "real_clips.json"  # the clips' annotations and sources


def ground_truth(annotations: Path) -> Dataset:
    """The annotations with each label replaced by its (first) Kinetics class."""
    doc = json.loads(annotations.read_text(encoding="utf-8"))
    videos = {}
    for vid, e in doc["database"].items():
        kin = (e.get("kinetics_classes") or [None])[0]
        segs = [Segment(float(a["segment"][0]), float(a["segment"][1]), kin or a["label"]) for a in e["annotations"]]
        videos[vid] = VideoAnnotation(vid, "test", sorted({s.label for s in segs}), segs, e.get("duration"), None)
    return Dataset("realclips", sorted({s.label for v in videos.values() for s in v.segments}), videos)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("clips", type=Path)
    ap.add_argument("--annotations", type=Path, default=None,
                    help="annotations JSON (default: CLIPS/annotations.json if present, else real_clips.json)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="localise.KEY=VALUE")
    ap.add_argument("--negative", action="append", default=None, help="a video with no action (default bikes.mp4)")
    ap.add_argument("--cache", type=Path, default=user_cache_dir("features"))
    ap.add_argument("--sweep", action="store_true", help="also: smoothing window x selection threshold")
    args = ap.parse_args(argv)
    _, loc = split_overrides(args.overrides)
    own = args.clips / "annotations.json"
    gt = ground_truth(args.annotations or (own if own.is_file() else REAL_CLIPS))
    negatives = args.negative or [str(package_data("data", "samples", "bikes.mp4"))]
    print(f"localise: {loc}")
    with tempfile.TemporaryDirectory() as tmp:
        # the annotated classes as a --classes FILE.json mapping: what a user who knows what to look for gives
        table = {"classes": {c: [c] for c in gt.classes}}
        (Path(tmp) / "annotated.json").write_text(json.dumps(table), encoding="utf-8")
        for name in ("kinetics400", str(Path(tmp) / "annotated.json")):
            vocab = load_vocab(name)
            print(f"\n--classes {'kinetics400 (all 400 classes)' if name == 'kinetics400' else 'the annotated classes only'}")
            report(args, gt, vocab, loc, negatives, Path(tmp))
        if args.sweep:
            print()
            sweep(args, gt, loc, negatives, Path(tmp))
    return 0


def detect_all(args, gt: Dataset, vocab, loc, negatives, tmp: Path):
    """(the clips' summary, the negatives' summary, seconds per clip) for one vocabulary and localisation."""
    out = tmp / "segments.json"
    t0 = time.perf_counter()
    if (args.clips / "features").is_dir():
        res = detect_features_kinetics(args.clips / "features", list(gt.videos), out_json=out, vocab=vocab, cfg=loc)
    else:
        cfg, _ = kinetics_extract_config(None, [])
        res = detect_videos_kinetics([args.clips / f"{v}.mp4" for v in gt.videos], out_json=out, extract_cfg=cfg,
                                     cache_dir=args.cache, vocab=vocab, cfg=loc, progress=False)
    per_video_s = (time.perf_counter() - t0) / max(len(gt.videos), 1)
    cfg, _ = kinetics_extract_config(None, [])
    neg = detect_videos_kinetics(negatives, out_json=tmp / "neg.json", extract_cfg=cfg, cache_dir=args.cache,
                                 vocab=vocab, cfg=loc, progress=False)
    return res, neg, per_video_s


def top_tiou(preds: list[dict], video) -> float:
    """tIoU of the top segment with the best-matching annotated instance of its class (0: none or wrong class)."""
    if not preds:
        return 0.0
    top = preds[0]
    truth = [(s.start_s, s.end_s) for s in video.segments if s.label == top["label"]]
    return float(tiou(np.array([top["segment"]], float), np.array(truth, float)).max()) if truth else 0.0


def scored(res, gt: Dataset):
    known = set(gt.classes)  # predictions of classes never annotated here have no ground truth to score against
    return evaluate({v: [p for p in ps if p["label"] in known] for v, ps in res.results.items()}, gt,
                    subset="test", tious=TIOUS)


def sweep(args, gt: Dataset, loc, negatives, tmp: Path) -> None:
    """Sensitivity of the two main choices: the smoothing window and the selection threshold."""
    vocab = load_vocab("kinetics400")
    print("smooth_snippets min_class_prob  top ok  mAP@0.3 @0.5 @0.7  negatives")
    for window in (1, 2, 4, 8):
        for threshold in (0.2, 0.3, 0.35, 0.5):
            cfg = dataclasses.replace(loc, smooth_snippets=window, min_class_prob=threshold)
            res, neg, _ = detect_all(args, gt, vocab, cfg, negatives, tmp)
            ok = sum(top_tiou(res.results.get(v, []), a) >= 0.5 for v, a in gt.videos.items())
            m = scored(res, gt).map_per_tiou
            negs = " ".join(f"{v}:{'[]' if not ps else 'FP'}" for v, ps in neg.results.items())
            print(f"{window:>15} {threshold:>14}  {ok:>2}/{len(gt.videos):<3}  "
                  + " ".join(f"{x * 100:5.1f}" for x in m) + f"  {negs}")


def report(args, gt: Dataset, vocab, loc, negatives, tmp: Path) -> None:
    res, neg, per_video_s = detect_all(args, gt, vocab, loc, negatives, tmp)
    print(f"{'clip':<18} {'annotated':<34} {'top segment':<40} {'tIoU':>5}  ok")
    for vid, v in gt.videos.items():
        ann = "; ".join(f"{s.label} {s.start_s:.2f}-{s.end_s:.2f}" for s in v.segments)
        preds = res.results.get(vid, [])
        if not preds:
            print(f"{vid:<18} {ann:<34} {'(none: abstained)':<40} {0:>5.2f}  no")
            continue
        top, best = preds[0], top_tiou(preds, v)
        seg = f"{top['label']} {top['segment'][0]:.2f}-{top['segment'][1]:.2f} ({top['score']:.2f})"
        print(f"{vid:<18} {ann:<34} {seg:<40} {best:>5.2f}  {'yes' if best >= 0.5 else 'no'}")
    for vid, preds in neg.results.items():
        got = ", ".join(f"{p['label']} {p['segment'][0]:.1f}-{p['segment'][1]:.1f}" for p in preds) or "[] (abstained)"
        print(f"{vid:<18} {'(no action)':<34} {got[:100]}")
    result = scored(res, gt)
    print("mAP " + "  ".join(f"@{t:.1f} {m * 100:.1f}" for t, m in zip(TIOUS, result.map_per_tiou))
          + f"   ({result.n_videos} videos, {result.n_ground_truth} instances, {result.n_predictions} predictions)")
    print(f"time per video on cached features: {per_video_s * 1000:.0f} ms (head load included once)")


if __name__ == "__main__":
    raise SystemExit(main())
