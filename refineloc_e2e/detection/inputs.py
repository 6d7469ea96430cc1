"""What detection uses when the command line leaves it open: the trained model, and the extraction settings.

The picking policy, in one place (``refineloc-e2e detect`` parses its options, calls these and prints the
line saying what was picked):

- model: ``--model FILE`` or a built-in name (``kinetics400``; reserved, a file of that name is
  ``./kinetics400``), else the newest ``runs/*/model.pt`` (what ``refineloc-e2e train`` writes), by
  modification time; none there: the built-in ``kinetics400`` detector (``detection.kinetics``);
- extraction settings: the model's own (recorded in its feature metadata) with only speed options on top
  (``SPEED_ONLY_KEYS``: device, workers, batch size, ...); any option that changes the numbers (a config
  file, another ``--set``, ``--streams``, ``--flow-weights``) makes the given settings the ones used, and
  the model then demands they match what it was trained on.
"""

from __future__ import annotations

from pathlib import Path

from refineloc_e2e.config import deep_merge, from_dict, load_config, parse_overrides, to_dict
from refineloc_e2e.detection.detect import extract_config_from_meta
from refineloc_e2e.detection.kinetics import is_builtin
from refineloc_e2e.features.extractor import SPEED_ONLY_KEYS, ExtractConfig

BUILTIN_DEFAULT = "kinetics400"  # what detect uses when nothing is trained here
RUNS_DIR = Path("runs")  # `refineloc-e2e train`'s run folders: runs/<name>/model.pt (relative to the cwd)


def pick_model(model_path: str | Path | None, *, cwd: Path | None = None) -> tuple[Path | str, str | None]:
    """The model to detect with (a file, or a built-in name: ``detection.kinetics.is_builtin``), and a line
    saying what was picked (None when ``model_path`` was given)."""
    if model_path is not None:
        return (model_path if is_builtin(model_path) else Path(model_path)), None
    root = cwd or Path.cwd()
    found = sorted((root / RUNS_DIR).glob("*/model.pt"), key=lambda p: (p.stat().st_mtime_ns, str(p)))
    if not found:
        return BUILTIN_DEFAULT, (f"model: {BUILTIN_DEFAULT}, the built-in Kinetics-400 detector (no "
                                 f"{RUNS_DIR}/*/model.pt here; --model FILE for a trained one)")
    newest = found[-1].relative_to(root)
    more = f", newest of {len(found)}" if len(found) > 1 else ""
    return newest, (f"model: {newest} (the newest {RUNS_DIR}/*/model.pt{more}; --model FILE for another, "
                    f"--model {BUILTIN_DEFAULT} for the built-in Kinetics-400 detector)")


def extract_config_for_model(model_meta: dict, config_path: str | Path | None,
                             overrides: list[str] | tuple[str, ...]) -> ExtractConfig:
    """The extraction settings to run a model with (see the module docstring): ``overrides`` are ``key=value``
    items (``--set`` and the dedicated options)."""
    given = parse_overrides(list(overrides))
    speed_only = config_path is None and set(given) <= set(SPEED_ONLY_KEYS)
    model_cfg = extract_config_from_meta(model_meta) if speed_only else None
    if model_cfg is None:
        return load_config(ExtractConfig, config_path, list(overrides))
    return from_dict(ExtractConfig, deep_merge(to_dict(model_cfg), given))
