"""The features a training run reads: every train/test video of a dataset from a feature folder.

The one missing-video policy: a listed video that carries no action label and has no feature file is
skipped with one warning line naming it (there is nothing to learn from it nor to detect in it: W-TALC's
THUMOS'14 features leave out ``video_test_0001292``, which has only Ambiguous spans). A video is found under
the id of its annotation key (``ids.video_id``: the same normalisation as the file names); two keys that give
one id, or two cache entries that give a key's id, are an error naming both (one would train twice, or on a
guess). Any other listed
video without usable features is an error that names it, unless ``skip_missing`` (then each is reported
and skipped; absent ones are counted in one line naming the first few). All videos must share one extraction setting; the
shared part becomes the ``feature_meta`` a trained head demands of detect's features.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Callable

from refineloc_e2e.errors import CacheError, DatasetError
from refineloc_e2e.features.cache import cache_index, feature_paths, read_features
from refineloc_e2e.ids import collision_text, index_by_id, video_id
from refineloc_e2e.timebase import with_stride
from refineloc_e2e.progress import log_lines

logger = logging.getLogger(__name__)


MAX_NAMED = 10  # absent videos named in the --skip-missing warning (a dataset-sized run misses thousands)


def load_training_features(dataset, features_dir: Path, *, skip_missing: bool,
                           log: Callable[[str], None] | None = None):
    """Read the cached features of every train/test video of ``dataset``; returns (features, meta, missing)."""
    log = log or log_lines(logger)
    stems, shared_stems = cache_index(features_dir)  # {video id: its files' stem}, {id: stems giving it}
    _refuse_shared_ids(dataset, features_dir, shared_stems)
    stem = {vid: stems.get(video_id(vid), video_id(vid)) for vid in dataset.videos}  # annotation key -> files
    features, metas, missing, unlabelled = {}, {}, [], []
    for vid in sorted(dataset.videos):
        if not dataset.videos[vid].labels and not feature_paths(features_dir, stem[vid])[1].exists():
            unlabelled.append(vid)  # nothing to learn or score there (e.g. W-TALC has no THUMOS test 1292)
            continue
        try:
            features[vid], metas[vid] = read_features(features_dir, stem[vid])
        except CacheError as e:
            missing.append((vid, str(e)))
    if unlabelled:
        log(f"warning: skipped {len(unlabelled)} video(s) without features that carry no action label: "
            f"{', '.join(unlabelled)}")
    absent_set = {vid for vid, _ in missing if not feature_paths(features_dir, stem[vid])[1].exists()}
    claimed = set(stem.values())
    unclaimed = [vid for vid, st in stems.items() if st not in claimed]  # feature files no annotation key names
    if missing and not skip_missing:
        listed = ", ".join(_closest(v, unclaimed) if v in absent_set else v for v, _ in missing[:20]) \
            + (" ..." if len(missing) > 20 else "")
        raise DatasetError(f"{features_dir}: {len(missing)} of {len(dataset.videos)} listed videos have no usable "
                           f"features: {listed}; first: {missing[0][1]} (extract them, or pass --skip-missing)")
    absent = [vid for vid, _ in missing if vid in absent_set]
    for vid, why in missing:  # a damaged entry is worth its own line; plainly absent ones are counted below
        if vid not in absent_set:
            log(f"warning: skipped: {why}")
    if missing:
        named = ", ".join(_closest(v, unclaimed) for v in absent[:MAX_NAMED]) \
            + (" ..." if len(absent) > MAX_NAMED else "")
        log(f"warning: skipping {len(missing)} videos without features (--skip-missing)"
            + (f"; {len(absent)} have no feature file: {named}" if absent else ""))
    if not features:
        raise DatasetError(f"{features_dir}: none of the {len(dataset.videos)} videos of '{dataset.name}' has features")
    feature_meta = _common_meta(metas, features_dir)
    return features, feature_meta, missing


def _refuse_shared_ids(dataset, features_dir: Path, shared_stems: dict[str, list[str]]) -> None:
    """DatasetError naming them where two annotation keys give one id (both would train on one feature file) or
    where two cache entries give the id of an annotation key (its features would be a guess)."""
    _, shared_keys = index_by_id(sorted(dataset.videos))
    for vid, keys in shared_keys.items():
        raise DatasetError(f"dataset '{dataset.name}': {collision_text(vid, keys, 'annotation keys')}, so both "
                           f"would train on one feature file; rename one of them")
    for key in sorted(dataset.videos):
        stems = shared_stems.get(video_id(key))
        if stems:
            raise DatasetError(f"{features_dir}: {collision_text(video_id(key), stems, 'cache entries')}, the id "
                               f"of annotation key '{key}': which holds its features is a guess; remove the other")


def _closest(key: str, ids: list[str]) -> str:
    """``key``, and the closest of ``ids`` (the feature files no annotation key names) when its difflib ratio
    is >= 0.6: a near miss (another spelling, an extension left in the key) shows itself."""
    near = difflib.get_close_matches(video_id(key), list(ids), n=1, cutoff=0.6)
    return f"{key} (closest feature file: {near[0]})" if near else key


def _common_meta(metas: dict, features_dir: Path) -> dict:
    """The feature settings every video shares (what the trained head will demand of detect's features)."""
    keys = ("origin", "dim", "fps", "snippet_frames", "stride_frames", "streams", "settings_hash")
    metas = {vid: with_stride(m) for vid, m in metas.items()}
    origin = next((m["origin"] for m in metas.values() if m.get("origin")), None)  # entries older than the key:
    metas = {vid: {**m, "origin": m.get("origin") or origin} for vid, m in metas.items()}  # take the others'
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
