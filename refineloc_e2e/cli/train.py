"""``refineloc-e2e train``: the RefineLoc head from video-level labels, with iterative refinement."""

from __future__ import annotations

from pathlib import Path

import click

from refineloc_e2e.cli.common import DEFAULT_CACHE, errors_to_exit, load_extract_cfg
from refineloc_e2e.config import shipped_config
from refineloc_e2e.datasets import load_dataset
from refineloc_e2e.errors import ConfigError, DatasetError, InputError
from refineloc_e2e.features.batch import VIDEO_EXTENSIONS, extract_batch
from refineloc_e2e.training.features import load_training_features
from refineloc_e2e.training.refinement import load_run_config, run_training

DATASET_CONFIGS = ("thumos14", "activitynet12")  # datasets with a shipped run config of the same name


def default_run_config(dataset: str) -> Path | None:
    return shipped_config(dataset) if dataset in DATASET_CONFIGS else None


def resolve_config_arg(value: str) -> Path:
    """``--config``: a YAML file, or the name of a shipped config (``thumos14-paper``, ``thumos14-released``, ...)."""
    path = Path(value)
    if not path.exists() and path.suffix == "" and shipped_config(value) is not None:
        return shipped_config(value)
    return path


@click.command()
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
              help="Run config: a YAML file or a shipped config's name (thumos14, thumos14-paper, thumos14-released, "
                   "thumos14-basnet, thumos14-basnet-refined, "
                   "activitynet12, activitynet12-paper, activitynet12-released, demo); default: the dataset's.")
@click.option("--extract-config", type=click.Path(dir_okay=False), default=None,
              help="With --data-root: the extraction config YAML (default: the built-in defaults).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value (repeatable).")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None, help="Run folder (default runs/<name>).")
@click.option("--name", default=None, help="Run name (default: the dataset name).")
@click.option("--seed", type=int, default=None, help="Random seed (overrides train.seed).")
@click.option("--skip-missing", is_flag=True, help="Train on the videos that have features; report the others.")
@click.option("--resume", is_flag=True, help="Continue after the last completed refinement iteration.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@errors_to_exit
def train(dataset, annotations, features_dir, data_root, config_path, extract_config, overrides, run_dir, name, seed,
          skip_missing, resume, quiet):
    """Train the RefineLoc head from video-level labels, with iterative pseudo-label refinement."""
    spec = annotations or dataset
    ds = load_dataset(spec)
    ds_key = ds.name if annotations is None else "custom"
    cfg_path = resolve_config_arg(config_path) if config_path else default_run_config(ds_key)
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
    if not data_root.is_dir():
        raise InputError(f"{data_root}: --data-root is not a folder")
    wanted = set(ds.videos)
    videos = [p for p in sorted(data_root.rglob("*")) if p.suffix.lower() in VIDEO_EXTENSIONS and p.stem in wanted]
    if not videos:
        raise DatasetError(f"{data_root}: no video named after a '{ds.name}' video id (e.g. {sorted(wanted)[0]}.mp4)")
    summary = extract_batch(videos, features_dir, load_extract_cfg(config_path, ()), progress=not quiet)
    click.echo(summary.format(), err=True)
