"""``RunConfig``: everything a training run reads (head, training, pseudo labels, detection thresholds, guard,
iteration selection), loaded as defaults <- YAML (with its ``base:`` chain) <- ``key=value`` overrides."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from refineloc_e2e.config import is_shipped_config, key_origin, load_config, parse_overrides
from refineloc_e2e.errors import ConfigError
from refineloc_e2e.model.head import HeadConfig
from refineloc_e2e.model.postprocess import PostprocessConfig
from refineloc_e2e.training.detection_norm import validate_candidates
from refineloc_e2e.training.fit import TrainConfig
from refineloc_e2e.training.guard import GuardConfig
from refineloc_e2e.training.pseudo import PseudoConfig
from refineloc_e2e.training.selection import SELECT_MODES

log = logging.getLogger(__name__)

FIXED_SELECTS = ("fixed", "fixed_wap")  # the modes that read select_iteration

@dataclass
class RunConfig:
    dataset: str = ""  # "thumos14" | "activitynet12" | path to an ActivityNet-format JSON (informational)
    head: HeadConfig = field(default_factory=HeadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)  # detection thresholds
    guard: GuardConfig = field(default_factory=GuardConfig)  # training/guard.py: stop on implausible pseudo labels
    # which iteration becomes model.pt: one of selection.SELECT_MODES (see training/selection.py)
    select: str = "fixed"
    select_iteration: int | None = None  # "fixed": this iteration (paper 4.3: eta = 3); None = the last one
    heldout_map_tiou: float = 0.5  # select "heldout_map": the tIoU of the held-out detection mAP
    select_margin: float = 0.0  # wap / wap_dup / heldout_map: a later iteration must beat the kept one by more
    eval_tious: list[float] | None = None  # None: the dataset's standard thresholds (evaluation.metrics.default_tious)
    # detection-time attention_norm per iteration from held-out coverage vs detection_coverage_range
    # (training/detection_norm.py; ours, issue 17). None: postprocess.attention_norm as given.
    attention_norm_candidates: list[str] | None = None
    # the dataset's annotated foreground fraction, that held-out DETECTION coverage is compared with (detection
    # norm); None: pseudo.fg_fraction_range. Separate since issue 25: real pseudo labels legitimately cover far
    # more than the annotations (the released THUMOS'14 runs start at 0.59-0.75 against 0.28 annotated)
    detection_coverage_range: list[float] | None = None

    def coverage_range(self) -> list[float] | None:
        """The range detection coverage is compared with (``detection_coverage_range``, else the pseudo range)."""
        return self.detection_coverage_range if self.detection_coverage_range is not None \
            else self.pseudo.fg_fraction_range

    def validate(self) -> None:
        if self.select not in SELECT_MODES:
            raise ConfigError(f"config key 'select': {self.select!r} is not one of {SELECT_MODES}")
        if self.select in FIXED_SELECTS and self.select_iteration is not None \
                and not 0 <= self.select_iteration <= self.train.n_iterations:
            raise ConfigError(f"config key 'select_iteration' = {self.select_iteration} is outside the "
                              f"iterations 0..{self.train.n_iterations} (train.n_iterations); leave it unset "
                              f"(null) to save the last iteration")
        if not 0.0 <= self.select_margin < 1.0:
            raise ConfigError(f"config key 'select_margin' must be in [0, 1), got {self.select_margin}")
        if not 0.0 < self.heldout_map_tiou <= 1.0:
            raise ConfigError(f"config key 'heldout_map_tiou' must be in (0, 1], got {self.heldout_map_tiou}")
        r = self.detection_coverage_range
        if r is not None and not (len(r) == 2 and 0.0 <= r[0] <= r[1] <= 1.0):
            raise ConfigError(f"config key 'detection_coverage_range' must be [lo, hi] with 0 <= lo <= hi <= 1, "
                              f"got {r!r}")
        validate_candidates(self.attention_norm_candidates, self.coverage_range())


def _shipped_select_iteration(path: str | Path | None, overrides: list[str]) -> tuple[Path, object] | None:
    """``(shipped file, value)`` when ``select_iteration`` comes from a shipped config (the named one or a base of
    it); None when the user gave it (``--set``, or a file of their own) or nobody did."""
    if path is None or "select_iteration" in parse_overrides(overrides):
        return None
    origin = key_origin(path, "select_iteration")
    return origin if origin is not None and is_shipped_config(origin[0]) else None


def load_run_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults <- YAML <- ``key=value`` overrides; a partial ``pseudo.segment`` keeps the pseudo defaults.

    A fixed ``select_iteration`` that a SHIPPED config sets (e.g. the paper's eta = 3, inherited through ``base:``)
    and that lies beyond the ``train.n_iterations`` asked for is dropped: the last iteration is saved and one log
    line says so, so ``--set train.n_iterations=1`` alone shortens any shipped run (issue 32). A value the user
    gave (``--set`` or a key in their own config file) is still checked by :meth:`RunConfig.validate`."""
    overrides = list(overrides or [])
    shipped = _shipped_select_iteration(path, overrides)
    if shipped is not None:
        cfg = load_config(RunConfig, path, overrides + ["select_iteration=null"], base=RunConfig())
        where, value = shipped
        if cfg.select in FIXED_SELECTS and isinstance(value, int) and value > cfg.train.n_iterations:
            log.info(f"select_iteration = {value} ({where.name}) is beyond train.n_iterations = "
                     f"{cfg.train.n_iterations}: the last iteration ({cfg.train.n_iterations}) is saved")
            return cfg
    return load_config(RunConfig, path, overrides, base=RunConfig())
