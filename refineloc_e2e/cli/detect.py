"""``refineloc-e2e detect``: videos (or cached features, or saved scores) in, labelled time segments out."""

from __future__ import annotations

import dataclasses
import sys

import click

from refineloc_e2e.cli.common import (DEFAULT_CACHE, announce_flow_init, errors_to_exit, extract_options,
                                      option_overrides, ray_option)
from refineloc_e2e.cli.view import page_summary
from refineloc_e2e.datasets import GROUND_TRUTH_SPECS, load_ground_truth
from refineloc_e2e.detection.detect import (detect_features, detect_videos, load_model, model_overrides,
                                            redetect_from_scores)
from refineloc_e2e.detection.inputs import extract_config_for_model, pick_model
from refineloc_e2e.detection.kinetics import is_builtin
from refineloc_e2e.detection.kinetics_detect import is_kinetics_scores
from refineloc_e2e.cli.kinetics import run_kinetics
from refineloc_e2e.errors import InputError
from refineloc_e2e.features.extractor import FeatureExtractor
from refineloc_e2e.model.postprocess import PostprocessConfig
from refineloc_e2e.report.page import scores_for_page, write_report


@click.command()
@click.argument("videos", nargs=-1)
@click.option("-o", "--output", "out_json", type=click.Path(dir_okay=False), default="segments.json", show_default=True)
@click.option("--model", "model_path", default=None, metavar="FILE|NAME",
              help="A trained head FILE or the built-in kinetics400 (default: the newest runs/*/model.pt, else "
                   "kinetics400). Built-in names are reserved: a file of that name is ./kinetics400.")
@click.option("--classes", "classes", default=None, metavar="NAME|FILE.json",
              help="kinetics400 only: kinetics400 (default) | thumos14 | activitynet12 | FILE.json mapping your "
                   "class names to Kinetics classes.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=str(DEFAULT_CACHE), show_default=True,
              help="Feature cache folder (with --ray: a shared folder every node sees).")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None, help="Write one timeline PNG per video.")
@click.option("--save-scores", "scores_dir", type=click.Path(file_okay=False), default=None,
              help="Save the head's raw per-snippet scores (.npz) for re-running post-processing.")
@click.option("--features", "features_dir", type=click.Path(file_okay=False), default=None,
              help="Run on already-extracted features in this folder; VIDEOS are then video ids (default: all).")
@click.option("--from-scores", "from_scores", type=click.Path(file_okay=False), default=None,
              help="Re-run post-processing on saved scores instead of running the network.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the results page: each video with its segments and curves (as `view` writes it).")
@click.option("--ground-truth", default=None, help=f"{GROUND_TRUTH_SPECS}: draw true segments in plots and the page.")
@click.option("--alpha-attention", type=float, default=None, help="Drop snippets whose background attention exceeds this.")
@click.option("--alpha-class", type=float, default=None, help="Per-class activation threshold.")
@click.option("--top-k", type=int, default=None, help="How many top video-level classes to localise.")
@extract_options
@ray_option
@errors_to_exit(stopped_hint="the features of finished videos are kept in the cache, run the same command "
                            "again to continue")
def detect(videos, out_json, model_path, classes, cache_dir, plot_dir, scores_dir, features_dir, from_scores,
           html_out, ground_truth, alpha_attention, alpha_class, top_k, config_path, overrides, streams, device,
           flow_weights, quiet, workers, ray_address):
    """Videos in, labelled time segments out (ActivityNet results JSON).

    With no trained model here (runs/*/model.pt), the built-in kinetics400 detector: I3D's own Kinetics-400
    classes, no training (docs/kinetics.md)."""
    if html_out is not None and not from_scores:  # the page draws its curves from saved scores (kept or temporary)
        scores_dir = str(click.get_current_context().with_resource(scores_for_page(scores_dir)))
    pp_over = {k: v for k, v in (("alpha_attention", alpha_attention), ("alpha_class", alpha_class),
                                 ("top_k", top_k)) if v is not None}
    kinetics_run = dict(videos=videos, out_json=out_json, classes=classes, cache_dir=cache_dir, plot_dir=plot_dir,
                        scores_dir=scores_dir, features_dir=features_dir,
                        ground_truth=_load_ground_truth(ground_truth) if ground_truth else None,
                        pp_over=pp_over, config_path=config_path, overrides=overrides, quiet=quiet,
                        ray_address=ray_address, extra=option_overrides(streams=streams, device=device,
                                                                          flow_weights=flow_weights, workers=workers))
    if from_scores and (is_kinetics_scores(from_scores) or is_builtin(model_path)):
        ok = run_kinetics(from_scores=from_scores, model=model_path, **kinetics_run)
        _page(out_json, html_out, from_scores, kinetics_run["ground_truth"])
        _exit_unless(ok)
        return
    if classes is not None and not is_builtin(model_path) and (from_scores or model_path is not None):
        raise InputError("--classes applies to the built-in kinetics400 model only (a trained model keeps the "
                         "classes it was trained on)")
    if from_scores:  # the saved scores need no model; one given supplies its post-processing settings
        base_pp = load_model(model_path).postprocess_config if model_path is not None else PostprocessConfig()
        res = redetect_from_scores(from_scores, out_json, dataclasses.replace(base_pp, **pp_over))
        click.echo(f"wrote {out_json}: {sum(map(len, res.values()))} segments in {len(res)} videos", err=True)
        _page(out_json, html_out, from_scores, _load_ground_truth(ground_truth))
        return
    model_path, picked = pick_model(model_path)
    if picked is not None:
        click.echo(picked, err=True)
    if is_builtin(model_path):
        ok = run_kinetics(from_scores=None, model=model_path, **kinetics_run)
        _page(out_json, html_out, scores_dir, kinetics_run["ground_truth"])
        _exit_unless(ok)
        return
    if classes is not None:
        raise InputError("--classes applies to the built-in kinetics400 model only (a trained model keeps the "
                         "classes it was trained on)")
    loaded = load_model(model_path)  # the one load of the checkpoint
    overrides = model_overrides(overrides, loaded, model_path)  # --set head.* may only restate the trained head
    base_pp = loaded.postprocess_config
    pp = dataclasses.replace(base_pp, **pp_over) if (base_pp and pp_over) else base_pp
    gt = _load_ground_truth(ground_truth)
    if features_dir:
        summary = detect_features(features_dir, list(videos) or None, model_path=model_path, out_json=out_json,
                                  postprocess=pp, plot_dir=plot_dir, scores_dir=scores_dir, ground_truth=gt,
                                  device=device or "auto", model=loaded)
        _page(out_json, html_out, scores_dir, gt)
        _report_detect(out_json, summary)
        return
    if not videos:
        raise InputError("no video given (or use --features DIR or --from-scores DIR)")
    extra = list(overrides) + option_overrides(streams=streams, device=device, flow_weights=flow_weights,
                                               workers=workers)
    cfg = extract_config_for_model(loaded.feature_meta, config_path, extra)
    extractor = FeatureExtractor(cfg)
    announce_flow_init(extractor)
    summary = detect_videos(videos, model_path=model_path, out_json=out_json, extract_cfg=cfg, cache_dir=cache_dir,
                            postprocess=pp, plot_dir=plot_dir, scores_dir=scores_dir, ground_truth=gt,
                            progress=not quiet, extractor=extractor, model=loaded, ray_address=ray_address)
    _page(out_json, html_out, scores_dir, gt)
    _report_detect(out_json, summary)


def _report_detect(out_json, summary) -> None:
    n = sum(len(v) for v in summary.results.values())
    click.echo(f"wrote {out_json}: {n} segments in {len(summary.results)} videos; failed {len(summary.failed)}", err=True)
    for p, why in summary.failed:
        click.echo(f"  FAILED {p}: {why}", err=True)
    _exit_unless(summary.ok)


def _exit_unless(ok: bool) -> None:
    if not ok:
        sys.exit(1)


def _load_ground_truth(spec: str | None):
    return load_ground_truth(spec)[0] if spec else None


def _page(out_json, html_out, scores_dir, dataset) -> None:
    if html_out is not None:
        report = write_report(out_json, html_out, scores_dir=scores_dir, dataset=dataset)
        click.echo(page_summary(report, html_out), err=True)
