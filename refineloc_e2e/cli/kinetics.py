"""``refineloc-e2e detect`` with the built-in ``kinetics400`` model: parse -> configs -> library -> report.

``--set localise.KEY=VALUE`` sets a :class:`~refineloc_e2e.detection.localise.LocaliseConfig` value (the
others go to the extraction settings); ``--top-k`` is ``localise.max_classes``. ``--alpha-attention`` and
``--alpha-class`` are a trained head's post-processing and mean nothing here: refused.
"""

from __future__ import annotations

import click

from refineloc_e2e.config import from_dict, parse_overrides
from refineloc_e2e.detection.kinetics import is_builtin
from refineloc_e2e.detection.kinetics_detect import (KineticsSummary, detect_features_kinetics, detect_videos_kinetics,
                                                     kinetics_extract_config, redetect_kinetics_scores)
from refineloc_e2e.detection.localise import LocaliseConfig
from refineloc_e2e.detection.vocab import load_vocab
from refineloc_e2e.errors import InputError

LOCALISE_PREFIX = "localise."


def split_overrides(overrides) -> tuple[list[str], LocaliseConfig]:
    """``--set`` items -> (extraction items, the localisation config from the ``localise.*`` ones)."""
    loc = [o for o in overrides if o.split("=", 1)[0].strip().startswith(LOCALISE_PREFIX)]
    rest = [o for o in overrides if o not in loc]
    data = parse_overrides(loc).get("localise", {})
    return rest, from_dict(LocaliseConfig, data, prefix=LOCALISE_PREFIX)


def run_kinetics(*, videos, out_json, model, classes, cache_dir, plot_dir, scores_dir, features_dir, from_scores,
                 ground_truth, pp_over, config_path, overrides, quiet, ray_address, extra) -> bool:
    """Writes ``out_json`` and reports; True when no video failed (the caller sets the exit status)."""
    if model is not None and not is_builtin(model):
        raise InputError(f"{from_scores}: these scores were saved by the built-in kinetics400 model, not by "
                         f"--model {model}")
    refused = sorted(f"--{k.replace('_', '-')}" for k in pp_over if k != "top_k")
    if refused:
        raise InputError(f"{', '.join(refused)}: a trained head's post-processing, meaningless for the built-in "
                         f"kinetics400 model (see --set localise.min_class_prob=... in docs/kinetics.md)")
    rest, loc = split_overrides(overrides)
    if "top_k" in pp_over:
        loc = from_dict(LocaliseConfig, {"max_classes": pp_over["top_k"]}, prefix=LOCALISE_PREFIX, base=loc)
    if from_scores:
        if classes is not None:
            raise InputError("--classes: saved scores keep the vocabulary they were saved with")
        res = redetect_kinetics_scores(from_scores, out_json, loc)
        return _report(out_json, res)
    vocab = load_vocab(classes or "kinetics400")
    if features_dir:
        res = detect_features_kinetics(features_dir, list(videos) or None, out_json=out_json, vocab=vocab, cfg=loc,
                                       plot_dir=plot_dir, scores_dir=scores_dir, ground_truth=ground_truth)
        return _report(out_json, res)
    if not videos:
        raise InputError("no video given (or use --features DIR or --from-scores DIR)")
    cfg, line = kinetics_extract_config(config_path, list(rest) + list(extra))
    click.echo(line, err=True)
    res = detect_videos_kinetics(videos, out_json=out_json, extract_cfg=cfg, cache_dir=cache_dir, vocab=vocab,
                                 cfg=loc, plot_dir=plot_dir, scores_dir=scores_dir, ground_truth=ground_truth,
                                 progress=not quiet, ray_address=ray_address)
    return _report(out_json, res)


def _report(out_json, summary: KineticsSummary) -> bool:
    n = sum(len(v) for v in summary.results.values())
    click.echo(f"wrote {out_json}: {n} segments in {len(summary.results)} videos; abstained "
               f"{len(summary.abstained)}; failed {len(summary.failed)}", err=True)
    for p, why in summary.failed:
        click.echo(f"  FAILED {p}: {why}", err=True)
    return summary.ok
