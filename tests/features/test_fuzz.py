"""A seeded 40-input subset of the fuzz corpus (``testing/fuzz.py``) through one extract batch.

Every input is either extracted (finite features) or reported once as ``error: <path>: <cause>``; nothing
escapes the batch, no input takes long, decode-error messages state frames and seconds that agree with
the file. ``benchmarks/robustness/fuzz_extract.py`` runs the full 500-input corpus the same way.
"""

from __future__ import annotations

import time

import numpy as np

from support import tiny_cfg
from refineloc_e2e.features.batch import extract_batch
from refineloc_e2e.features.extractor import FeatureExtractor

from testing.fuzz import DECODE_ERROR, MUTATIONS, build_corpus, check_decode_message

N_SUBSET = 40


def test_corpus_is_seeded_and_covers_the_mutations(tmp_path):
    a = build_corpus(tmp_path / "a", n=60, seed=3)
    b = build_corpus(tmp_path / "b", n=60, seed=3)
    assert [x.name for x in a] == [x.name for x in b]
    assert all((tmp_path / "a" / x.name).read_bytes() == (tmp_path / "b" / x.name).read_bytes() for x in a)
    big = build_corpus(tmp_path / "c", n=500, seed=0)
    assert len(big) == 500 and set(MUTATIONS) <= {x.kind for x in big}
    assert {"jump_huge", "audio_only", "zero_duration", "vfr", "tiny_2x2"} <= {x.kind for x in big}


def test_fuzz_subset_through_one_extract_batch(tmp_path, tiny_models, one_thread):
    corpus = build_corpus(tmp_path / "corpus", n=500, seed=0)
    rng = np.random.default_rng(21)
    keep = set(rng.choice(len(corpus), N_SUBSET, replace=False).tolist())
    keep |= {i for i, c in enumerate(corpus) if c.kind in ("jump_huge", "zero_duration", "wide_1024x2")}
    videos = [tmp_path / "corpus" / c.name for i, c in enumerate(corpus) if i in keep]
    cfg = tiny_cfg(streams="rgb")
    lines, times, ready = [], [], []
    last = [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    def log(msg):
        lines.append(msg)
        tick()

    with FeatureExtractor(cfg, models=tiny_models) as ex:
        summary = extract_batch(videos, tmp_path / "feats", cfg, extractor=ex, progress=False, log=log,
                                on_ready=lambda v, vid, f, m: (tick(), ready.append((v, f))))
    assert len(summary.extracted) + len(summary.failed) == len(videos) == len(ready) + len(lines)
    assert all(f.ndim == 2 and f.shape[0] >= 1 and np.isfinite(f).all() for _, f in ready)
    assert len(summary.extracted) >= 10 and len(summary.failed) >= 10  # the subset has both kinds
    assert lines == [f"error: {p}: {why}" for p, why in summary.failed]
    assert all(why.strip() and "\n" not in why for _, why in summary.failed)
    assert max(times) < 20, max(times)  # no input anywhere near a hang (tiny settings: ~1 s each at most)
    failed = dict(summary.failed)
    assert "declared duration 1000000 s is beyond the 86400 s limit; corrupt timestamps" in \
        failed[str(next(v for v in videos if v.name == "jump_huge.mkv"))]
    checked = [(p, why) for p, why in summary.failed if DECODE_ERROR.search(why)]
    assert checked, "the subset holds no mid-stream decode error"
    for p, why in checked:
        assert check_decode_message(p, why, cfg.decode) is None, (p, why)

