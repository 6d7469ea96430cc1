"""What a training run reads when the command line leaves it open: the dataset's config, the feature
folder, the videos to extract.

The picking policy, in one place (``refineloc-e2e train`` parses its options, calls
:func:`plan_training` and prints ``TrainingPlan.picked``, the choices it made for the user):

- config: ``--config`` (a YAML path or a shipped config's name), else the shipped config named after the
  dataset (``thumos14``, ``activitynet12``), else the built-in defaults for one's own ``--annotations``;
- features: ``--features DIR``; else, with ``--data-root``, the user feature cache; else ``./features``
  (what ``refineloc-e2e extract VIDEOS`` writes) when that folder exists; else an error saying how to
  make one;
- videos (with ``--data-root``): the files under it named after one of the dataset's video ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from refineloc_e2e.config import shipped_config
from refineloc_e2e.datasets import Dataset, load_dataset
from refineloc_e2e.errors import ConfigError, DatasetError, InputError
from refineloc_e2e.features.batch import VIDEO_EXTENSIONS
from refineloc_e2e.fileio import user_cache_dir
from refineloc_e2e.ids import collision_text, video_id, video_id_of
from refineloc_e2e.training.data import load_training_features
from refineloc_e2e.training.run_config import RunConfig, load_run_config

DATASET_CONFIGS = ("thumos14", "activitynet12")  # datasets with a shipped run config of the same name
EXTRACT_OUTPUT = Path("features")  # `refineloc-e2e extract`'s default output folder (relative to the cwd)


def default_run_config(dataset: str) -> Path | None:
    """The shipped run config of ``dataset`` (``thumos14``, ``activitynet12``), or None."""
    return shipped_config(dataset) if dataset in DATASET_CONFIGS else None


def resolve_config_arg(value: str) -> Path:
    """``--config``: a YAML file, or the name of a shipped config (``thumos14-paper``, ``thumos14-released``, ...)."""
    path = Path(value)
    if not path.exists() and path.suffix == "" and shipped_config(value) is not None:
        return shipped_config(value)
    return path


def pick_features_dir(features_dir: str | Path | None, data_root: str | Path | None, *,
                      cwd: Path | None = None) -> tuple[Path, str | None]:
    """The feature folder a run reads, and a line saying what was picked (None when it was given)."""
    if features_dir is not None:
        return Path(features_dir), None
    if data_root is not None:
        cache = user_cache_dir("features")
        return cache, f"features: extracting into {cache} (the feature cache; --features DIR for another)"
    here = (cwd or Path.cwd()) / EXTRACT_OUTPUT
    if here.is_dir():
        return EXTRACT_OUTPUT, (f"features: {EXTRACT_OUTPUT}/ (what `refineloc-e2e extract` writes; "
                                f"--features DIR for another)")
    raise InputError(f"no features to train on: there is no {EXTRACT_OUTPUT}/ folder here; make it with "
                     f"`refineloc-e2e extract VIDEOS...`, or give --features DIR (extracted features) or "
                     f"--data-root DIR (videos to extract)")


def dataset_videos(dataset: Dataset, data_root: str | Path) -> list[Path]:
    """The video files under ``data_root`` (recursive) named after one of ``dataset``'s video ids."""
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise InputError(f"{data_root}: --data-root is not a folder")
    wanted = {video_id(k) for k in dataset.videos}  # annotation keys and file names as ids
    videos = [p for p in sorted(data_root.rglob("*")) if p.suffix.lower() in VIDEO_EXTENSIONS
              and video_id_of(p) in wanted]
    if not videos:
        raise DatasetError(f"{data_root}: no video named after a '{dataset.name}' video id "
                           f"(e.g. {sorted(dataset.videos)[0]}.mp4)")
    by_id: dict[str, list[Path]] = {}
    for p in videos:
        by_id.setdefault(video_id_of(p), []).append(p)
    for vid, paths in by_id.items():
        if len(paths) > 1:  # extracted under two suffixed ids, neither the annotation key's: refuse, naming them
            raise DatasetError(f"{data_root}: {collision_text(vid, [str(p) for p in paths], 'videos')}, a "
                               f"'{dataset.name}' video id: which one to train on is a guess; keep one")
    return videos


@dataclass
class TrainingPlan:
    dataset: Dataset
    dataset_key: str  # "thumos14" | "activitynet12" | "custom" (--annotations)
    config_path: Path | None  # None: the built-in defaults
    config: RunConfig
    features_dir: Path
    videos: list[Path]  # to extract into features_dir first (from --data-root); empty: read features_dir as is
    run_dir: Path
    picked: list[str] = field(default_factory=list)  # one line per choice made for the user


def plan_training(*, dataset: str, annotations: str | None = None, features_dir: str | Path | None = None,
                  data_root: str | Path | None = None, config: str | None = None,
                  overrides: list[str] | tuple[str, ...] = (), run_dir: str | Path | None = None,
                  name: str | None = None, cwd: Path | None = None) -> TrainingPlan:
    """Resolve ``train``'s options into what the run reads and where it writes (nothing is read or written)."""
    ds = load_dataset(annotations or dataset)
    ds_key = ds.name if annotations is None else "custom"
    cfg_path = resolve_config_arg(config) if config else default_run_config(ds_key)
    if cfg_path is None and annotations is None:
        raise ConfigError(f"no config for dataset '{dataset}'; pass --config")
    cfg = load_run_config(cfg_path, list(overrides))
    feats, line = pick_features_dir(features_dir, data_root, cwd=cwd)
    picked = [line] if line is not None else []
    videos = dataset_videos(ds, data_root) if data_root is not None else []
    out = Path(run_dir) if run_dir else Path("runs") / (name or ds_key)
    return TrainingPlan(ds, ds_key, cfg_path, cfg, feats, videos, out, picked)


def plan_features(plan: TrainingPlan, *, skip_missing: bool) -> tuple[dict, dict]:
    """(features by video id, feature metadata) of ``plan``'s dataset from its feature folder; DatasetError when
    their width is not the head's (``head.feature_dim``), naming the folder, the config and the fix."""
    feats, meta, _ = load_training_features(plan.dataset, plan.features_dir, skip_missing=skip_missing)
    dim = plan.config.head.feature_dim
    if meta.get("dim") != dim:
        raise DatasetError(f"{plan.features_dir}: features are {meta.get('dim')}-d (streams {meta.get('streams')}) "
                           f"but the head expects head.feature_dim={dim} ({plan.config_path or 'built-in config'}); "
                           f"extract with matching --streams or pass --set head.feature_dim={meta.get('dim')}")
    return feats, meta
