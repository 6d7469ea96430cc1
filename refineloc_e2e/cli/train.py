"""``refineloc-e2e train``: the RefineLoc head from video-level labels, with iterative refinement."""

from __future__ import annotations

import click

from refineloc_e2e.cli.common import errors_to_exit, load_extract_cfg
from refineloc_e2e.features.batch import extract_batch
from refineloc_e2e.training.inputs import plan_features, plan_training
from refineloc_e2e.training.refinement import run_training


@click.command()
@click.option("--dataset", default="thumos14", show_default=True,
              help="thumos14 | activitynet12 (bundled annotations); see --annotations for your own.")
@click.option("--annotations", type=click.Path(dir_okay=False), default=None,
              help="Your own weakly-labelled videos: an ActivityNet-format JSON (overrides --dataset).")
@click.option("--features", "features_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of <video_id>.npy/.json features (as `extract` writes them; default: ./features "
                   "when it exists and --data-root is not given).")
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
@click.option("--no-report", is_flag=True, help="Do not write <run folder>/report.png (the run's plot).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@errors_to_exit(stopped_hint="completed iterations are kept, add --resume to the same command to continue "
                            "after the last one")
def train(dataset, annotations, features_dir, data_root, config_path, extract_config, overrides, run_dir, name, seed,
          skip_missing, resume, no_report, quiet):
    """Train the RefineLoc head from video-level labels, with iterative pseudo-label refinement."""
    extra = list(overrides) + ([f"train.seed={seed}"] if seed is not None else [])
    plan = plan_training(dataset=dataset, annotations=annotations, features_dir=features_dir, data_root=data_root,
                         config=config_path, overrides=extra, run_dir=run_dir, name=name)
    for line in plan.picked:
        click.echo(line, err=True)
    cfg, features_dir = plan.config, plan.features_dir
    if plan.videos:
        summary = extract_batch(plan.videos, features_dir, load_extract_cfg(extract_config, ()), progress=not quiet)
        click.echo(summary.format(), err=True)
    feats, meta = plan_features(plan, skip_missing=skip_missing)  # width checked against head.feature_dim
    result = run_training(cfg, dataset=plan.dataset, features=feats, run_dir=plan.run_dir, feature_meta=meta,
                          progress=not quiet, resume=resume, tensorboard=True, report=not no_report)
    click.echo(result.table)
    click.echo(result.saved_line)
    click.echo(f"run folder: {plan.run_dir}  (model: {plan.run_dir / 'model.pt'})", err=True)
    return result
