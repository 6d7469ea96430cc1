"""CLI commands past extraction: train, detect, evaluate, import-wtalc, demo, doctor (registered on ``cli.main``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .cli import DEFAULT_CACHE, _announce_flow_init, _errors_to_exit, _extract_options, _load_extract_cfg, main
from .errors import CacheError, ConfigError, DatasetError, InputError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def default_run_config(dataset: str) -> Path | None:
    name = {"thumos14": "thumos14.yaml", "activitynet12": "activitynet12.yaml"}.get(dataset)
    if name and (CONFIG_DIR / name).is_file():
        return CONFIG_DIR / name
    return None


def load_training_features(dataset, features_dir: Path, *, skip_missing: bool, log=None):
    """Read the cached features of every train/test video of ``dataset``; returns (features, meta, missing)."""
    from .features import read_features

    log = log or (lambda m: click.echo(m, err=True))
    features, metas, missing = {}, {}, []
    for vid in sorted(dataset.videos):
        try:
            features[vid], metas[vid] = read_features(features_dir, vid)
        except CacheError as e:
            missing.append((vid, str(e)))
    if missing and not skip_missing:
        listed = ", ".join(v for v, _ in missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise DatasetError(f"{features_dir}: {len(missing)} of {len(dataset.videos)} listed videos have no usable "
                           f"features: {listed}; first: {missing[0][1]} (extract them, or pass --skip-missing)")
    for _, why in missing:
        log(f"warning: skipped: {why}")
    if missing:
        log(f"warning: skipping {len(missing)} videos without features (--skip-missing)")
    if not features:
        raise DatasetError(f"{features_dir}: none of the {len(dataset.videos)} videos of '{dataset.name}' has features")
    feature_meta = _common_meta(metas, features_dir)
    return features, feature_meta, missing


def _common_meta(metas: dict, features_dir: Path) -> dict:
    """The feature settings every video shares (what the trained head will demand of detect's features)."""
    keys = ("dim", "fps", "snippet_frames", "streams", "settings_hash")
    first_vid = next(iter(metas))
    first = metas[first_vid]
    ref = {k: first.get(k) for k in keys}
    ref_bb = {s: (b or {}).get("weights_id") for s, b in (first.get("backbone") or {}).items()}
    for vid, m in metas.items():
        got = {k: m.get(k) for k in keys}
        bb = {s: (b or {}).get("weights_id") for s, b in (m.get("backbone") or {}).items()}
        if got != ref or bb != ref_bb:
            diff = "; ".join(f"{k}: {got[k]!r} vs {ref[k]!r}" for k in keys if got[k] != ref[k])
            if bb != ref_bb:
                diff = (diff + "; " if diff else "") + f"backbone {bb} vs {ref_bb}"
            raise DatasetError(f"{features_dir}: features of '{vid}' were extracted with other settings than those "
                               f"of '{first_vid}' ({diff}); extract all videos with one setting")
    return {**ref, "backbone": first.get("backbone") or {}, "decode": first.get("decode"), "flow": first.get("flow")}


@main.command()
@click.option("--dataset", default="thumos14", show_default=True,
              help="thumos14 | activitynet12 (bundled annotations); see --annotations for your own.")
@click.option("--annotations", type=click.Path(dir_okay=False), default=None,
              help="Your own weakly-labelled videos: an ActivityNet-format JSON (overrides --dataset).")
@click.option("--features", "features_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of <video_id>.npy/.json features (as `extract` writes them).")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder of the dataset's videos: features are extracted on the fly into --features "
                   "(default ~/.cache/refineloc-e2e/features).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Run config YAML (default configs/<dataset>.yaml).")
@click.option("--extract-config", type=click.Path(dir_okay=False), default=None,
              help="With --data-root: the extraction config YAML (default: built-in, configs/extract.yaml).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value (repeatable).")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None, help="Run folder (default runs/<name>).")
@click.option("--name", default=None, help="Run name (default: the dataset name).")
@click.option("--seed", type=int, default=None, help="Random seed (overrides train.seed).")
@click.option("--skip-missing", is_flag=True, help="Train on the videos that have features; report the others.")
@click.option("--resume", is_flag=True, help="Continue after the last completed refinement iteration.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@_errors_to_exit
def train(dataset, annotations, features_dir, data_root, config_path, extract_config, overrides, run_dir, name, seed,
          skip_missing, resume, quiet):
    """Train the RefineLoc head from video-level labels, with iterative pseudo-label refinement."""
    from .datasets import load_dataset
    from .train import load_run_config, run_training

    spec = annotations or dataset
    ds = load_dataset(spec)
    ds_key = ds.name if annotations is None else "custom"
    cfg_path = config_path or default_run_config(ds_key)
    extra = list(overrides) + ([f"train.seed={seed}"] if seed is not None else [])
    if cfg_path is None and annotations is None:
        raise ConfigError(f"no config for dataset '{dataset}'; pass --config")
    cfg = load_run_config(cfg_path, extra)
    if features_dir is None and data_root is None:
        raise InputError("give --features DIR (extracted features) or --data-root DIR (videos to extract)")
    features_dir = Path(features_dir) if features_dir else DEFAULT_CACHE
    if data_root is not None:
        _extract_dataset_videos(ds, Path(data_root), features_dir, quiet, extract_config)
    feats, meta, _ = load_training_features(ds, features_dir, skip_missing=skip_missing)
    if meta.get("dim") != cfg.head.feature_dim:
        raise DatasetError(f"{features_dir}: features are {meta.get('dim')}-d (streams {meta.get('streams')}) but "
                           f"the head expects head.feature_dim={cfg.head.feature_dim} "
                           f"({cfg_path or 'built-in config'}); extract with matching --streams or pass "
                           f"--set head.feature_dim={meta.get('dim')}")
    run_dir = Path(run_dir) if run_dir else Path("runs") / (name or ds_key)
    result = run_training(cfg, dataset=ds, features=feats, run_dir=run_dir, feature_meta=meta,
                          progress=not quiet, resume=resume)
    click.echo(f"run folder: {run_dir}  (model: {run_dir / 'model.pt'})", err=True)
    return result


def _extract_dataset_videos(ds, data_root: Path, features_dir: Path, quiet: bool, config_path=None) -> None:
    from .batch import VIDEO_EXTENSIONS, extract_batch
    from .extract import load_extract_config

    if not data_root.is_dir():
        raise InputError(f"{data_root}: --data-root is not a folder")
    wanted = set(ds.videos)
    videos = [p for p in sorted(data_root.rglob("*")) if p.suffix.lower() in VIDEO_EXTENSIONS and p.stem in wanted]
    if not videos:
        raise DatasetError(f"{data_root}: no video named after a '{ds.name}' video id (e.g. {sorted(wanted)[0]}.mp4)")
    summary = extract_batch(videos, features_dir, load_extract_config(config_path), progress=not quiet)
    click.echo(summary.format(), err=True)


@main.command()
@click.argument("videos", nargs=-1)
@click.option("-o", "--output", "out_json", type=click.Path(dir_okay=False), default="segments.json", show_default=True)
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
              help="Trained head (runs/<name>/model.pt).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=str(DEFAULT_CACHE), show_default=True,
              help="Feature cache folder.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None, help="Write one timeline PNG per video.")
@click.option("--save-scores", "scores_dir", type=click.Path(file_okay=False), default=None,
              help="Save the head's raw per-snippet scores (.npz) for re-running post-processing.")
@click.option("--features", "features_dir", type=click.Path(file_okay=False), default=None,
              help="Run on already-extracted features in this folder; VIDEOS are then video ids (default: all).")
@click.option("--from-scores", "from_scores", type=click.Path(file_okay=False), default=None,
              help="Re-run post-processing on saved scores instead of running the network.")
@click.option("--ground-truth", default=None, help="thumos14-test | thumos14-val | FILE.json: draw true segments in plots.")
@click.option("--alpha-attention", type=float, default=None, help="Drop snippets whose background attention exceeds this.")
@click.option("--alpha-class", type=float, default=None, help="Per-class activation threshold.")
@click.option("--top-k", type=int, default=None, help="How many top video-level classes to localise.")
@_extract_options
@_errors_to_exit
def detect(videos, out_json, model_path, cache_dir, plot_dir, scores_dir, features_dir, from_scores, ground_truth,
           alpha_attention, alpha_class, top_k, config_path, overrides, streams, device, flow_weights, quiet):
    """Videos in, labelled time segments out (ActivityNet results JSON)."""
    import dataclasses

    from .detect import detect_features, detect_videos, redetect_from_scores
    from .extract import FeatureExtractor
    from .postprocess import PostprocessConfig

    pp_over = {k: v for k, v in (("alpha_attention", alpha_attention), ("alpha_class", alpha_class),
                                 ("top_k", top_k)) if v is not None}
    if from_scores:
        pp = dataclasses.replace(_model_postprocess(model_path) or PostprocessConfig(), **pp_over)
        res = redetect_from_scores(from_scores, out_json, pp)
        click.echo(f"wrote {out_json}: {sum(map(len, res.values()))} segments in {len(res)} videos", err=True)
        return
    if model_path is None:
        raise InputError("--model is required: a trained head, e.g. runs/thumos14/model.pt")
    if features_dir:
        gt = _load_ground_truth(ground_truth) if ground_truth else None
        base_pp = _model_postprocess(model_path)
        pp = dataclasses.replace(base_pp, **pp_over) if (base_pp and pp_over) else base_pp
        summary = detect_features(features_dir, list(videos) or None, model_path=model_path, out_json=out_json,
                                  postprocess=pp, plot_dir=plot_dir, scores_dir=scores_dir, ground_truth=gt,
                                  device=device or "auto")
        _report_detect(out_json, summary)
        return
    if not videos:
        raise InputError("no video given (or use --features DIR or --from-scores DIR)")
    cfg = _detect_extract_cfg(model_path, config_path, overrides, streams, device, flow_weights)
    base_pp = _model_postprocess(model_path)
    pp = dataclasses.replace(base_pp, **pp_over) if (base_pp and pp_over) else base_pp
    gt = _load_ground_truth(ground_truth) if ground_truth else None
    extractor = FeatureExtractor(cfg)
    _announce_flow_init(extractor, quiet)
    summary = detect_videos(videos, model_path=model_path, out_json=out_json, extract_cfg=cfg, cache_dir=cache_dir,
                            postprocess=pp, plot_dir=plot_dir, scores_dir=scores_dir, ground_truth=gt,
                            progress=not quiet, extractor=extractor)
    _report_detect(out_json, summary)


def _report_detect(out_json, summary) -> None:
    n = sum(len(v) for v in summary.results.values())
    click.echo(f"wrote {out_json}: {n} segments in {len(summary.results)} videos; failed {len(summary.failed)}", err=True)
    for p, why in summary.failed:
        click.echo(f"  FAILED {p}: {why}", err=True)
    if not summary.ok:
        sys.exit(1)


def _detect_extract_cfg(model_path, config_path, overrides, streams, device, flow_weights):
    """The model's own extraction settings unless the user gives a config (then they must match it)."""
    from .detect import extract_config_from_meta
    from .head import load_head

    if config_path is None and not overrides and streams is None and flow_weights is None:
        if not Path(model_path).is_file():
            raise InputError(f"{model_path}: model file not found")
        cfg = extract_config_from_meta(load_head(model_path).feature_meta)
        if cfg is not None:
            if device:
                cfg.device = device
            return cfg
    return _load_extract_cfg(config_path, overrides, streams, device, flow_weights)


def _model_postprocess(model_path):
    if model_path is None:
        return None
    from .head import load_head

    if not Path(model_path).is_file():
        raise InputError(f"{model_path}: model file not found")
    return load_head(model_path).postprocess_config


def _load_ground_truth(spec: str):
    from .datasets import load_dataset

    if spec in ("thumos14-test", "thumos14-val"):
        return load_dataset("thumos14")
    return load_dataset(spec)


@main.command()
@click.option("--predictions", type=click.Path(dir_okay=False), required=True, help="ActivityNet results JSON.")
@click.option("--ground-truth", required=True, help="thumos14-test | thumos14-val | activitynet12-val | FILE.json")
@click.option("--tiou", "tious", type=float, multiple=True, help="tIoU thresholds (default per dataset).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the metrics as JSON.")
@click.option("--per-class", is_flag=True, help="Also print per-class AP.")
@click.option("--drop-ambiguous", is_flag=True, help="THUMOS: drop predictions overlapping Ambiguous spans (official kit).")
@_errors_to_exit
def evaluate(predictions, ground_truth, tious, json_out, per_class, drop_ambiguous):
    """mAP of predictions against ground truth (ActivityNet protocol)."""
    import dataclasses

    from .datasets import load_dataset
    from .evaluate import default_tious, evaluate as run_eval, format_table, load_predictions
    from .fileio import atomic_write_json

    subset = "test"
    if ground_truth in ("thumos14-test", "thumos14-val"):
        ds = load_dataset("thumos14")
        subset = "test" if ground_truth.endswith("test") else "train"
    elif ground_truth in ("activitynet12-val", "activitynet12"):
        ds = load_dataset("activitynet12")
    else:
        ds = load_dataset(ground_truth)
    preds = load_predictions(predictions)
    result = run_eval(preds, ds, subset=subset, tious=list(tious) or default_tious(ds.name),
                      drop_ambiguous=drop_ambiguous)
    click.echo(format_table(result, per_class=per_class))
    if json_out:
        atomic_write_json(json_out, dataclasses.asdict(result))


@main.command("import-wtalc")
@click.argument("features_npy", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), required=True)
@click.option("-q", "--quiet", is_flag=True)
@_errors_to_exit
def import_wtalc(features_npy, out_dir, quiet):
    """Import W-TALC's Thumos14reduced-I3D-JOINTFeatures.npy into <video_id>.npy/.json features."""
    from .datasets import import_wtalc_features

    n = import_wtalc_features(Path(features_npy), Path(out_dir), quiet=quiet)
    click.echo(f"imported {n} videos into {out_dir}", err=True)


@main.command()
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=str(DEFAULT_CACHE), show_default=True,
              help="Feature cache folder to check.")
@_errors_to_exit
def doctor(cache_dir):
    """Check the installation: versions, devices, TV-L1, weights and their checksums, cache writability."""
    from .doctor import run_checks

    problems = 0
    for ok, name, detail in run_checks(Path(cache_dir)):
        mark = {True: "ok  ", False: "FAIL", None: "warn"}[ok]
        click.echo(f"[{mark}] {name:<22} {detail}")
        problems += ok is False
    if problems:
        click.echo(f"{problems} problem(s) found", err=True)
        sys.exit(1)


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="demo_out", show_default=True)
@click.option("--size", type=click.Choice(["default", "tiny"]), default="default", show_default=True,
              help="tiny: the test suite's smaller run of the same path.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@_errors_to_exit
def demo(out_dir, size, quiet):
    """Run the whole tool end to end on bundled real clips + a generated weakly-labelled dataset."""
    from .demo import run_demo

    run_demo(out_dir, size=size, progress=not quiet, echo=click.echo)
