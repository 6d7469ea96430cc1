"""What the training benchmarks share: train one run into its folder or reuse it, and the mAP@0.5 they report."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from refineloc_e2e.config import settings_hash, to_dict
from refineloc_e2e.training.refinement import run_training
from refineloc_e2e.training.run_config import load_run_config


def train_or_reuse(cfg, run_dir: Path, *, dataset, features, feature_meta: dict, label: str | None = None,
                   replace_other: bool = False, log_file: Path | None = None, **train_kw) -> dict:
    """The metrics of the run of ``cfg`` in ``run_dir``, training it through ``run_training`` as needed.

    A finished run of the SAME resolved config (config.yaml hash) is read back; an unfinished one is resumed; a
    run of other settings is refused (``replace_other``: deleted and trained anew). The run's table goes to
    ``log_file`` with its log messages when given, else it is printed after the run under ``--- <label> (N s)``."""
    metrics_path, cfg_path = run_dir / "metrics.json", run_dir / "config.yaml"
    if cfg_path.is_file():
        # the stored config read through today's RunConfig: an option added since, at its default, is the same run
        same = settings_hash(to_dict(load_run_config(cfg_path, []))) == settings_hash(to_dict(cfg))
        finished = metrics_path.is_file() and "selected_iteration" in json.loads(metrics_path.read_text())
        if same and finished:
            return json.loads(metrics_path.read_text())
        if not same and replace_other:
            shutil.rmtree(run_dir)
        elif not same and finished:  # e.g. another --epochs into the same --out
            raise SystemExit(f"{run_dir}: finished with other settings than these; use another --out")
    t0 = time.perf_counter()
    kw = dict(dataset=dataset, features=features, run_dir=run_dir, feature_meta=feature_meta, progress=False,
              resume=True, **train_kw)
    if log_file is None:
        res = run_training(cfg, **kw)  # its warnings reach stderr (logging's last resort); info stays quiet
        print(f"--- {label or run_dir.name} ({time.perf_counter() - t0:.0f} s)\n{res.table}\n{res.saved_line}",
              flush=True)
        return res.metrics
    log_file.parent.mkdir(parents=True, exist_ok=True)
    logger, handler = logging.getLogger("refineloc_e2e"), logging.FileHandler(log_file, mode="w")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        res = run_training(cfg, **kw)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
    with open(log_file, "a") as f:
        f.write(f"{res.table}\n{res.saved_line}\n")
    return res.metrics


def map05(entry: dict) -> float:
    """Test mAP@0.5 (%) of one iteration's metrics entry (runs evaluated at tIoU 0.5 among others)."""
    t = entry["test"]
    return 100 * t["map_per_tiou"][t["tious"].index(0.5)]
