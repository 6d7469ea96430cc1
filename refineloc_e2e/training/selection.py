"""Which iteration of a refinement run becomes ``model.pt`` (``RunConfig.select``), and why.

- ``fixed``: ``select_iteration`` (the paper's eta; None = the last iteration), or the last SOUND iteration
  when the guard stopped refinement before it.
- ``val_loss``: the lowest held-out video loss (measures classification; iteration 0 trains on it alone).
- ``wap`` / ``wap_dup``: the highest held-out weak-label detection mAP (calibrate.weak_label_map: video labels
  only).
- ``fixed_wap``: the ``fixed`` iteration, unless its held-out weak-label detection mAP is more than ``select_margin``
  below the best of the iterations up to it; then that best (the earliest of equals). The paper's eta where the
  held-out videos cannot tell the iterations apart (their weak-label mAP saturates: ~20 videos, often all
  detected), and no later iteration that they show worse (issue 25).
- ``heldout_map``: the highest detection mAP@``heldout_map_tiou`` of the held-out TRAINING videos against
  their TEMPORAL annotations. It uses more than video-level labels (THUMOS'14's validation videos are fully
  annotated, so a weakly supervised setting that keeps a few annotated videos can use it); off by default.

Ties go to the earlier iteration, so a criterion never saves a later iteration that only equals an earlier one;
with ``select_margin`` a later iteration must beat the kept one by more than the margin (the held-out part is ~20
THUMOS'14 videos, so one video moves the weak-label mAP by 3-5 points: a smaller rise is not evidence).
"""

from __future__ import annotations

import numpy as np

SELECT_MODES = ("fixed", "fixed_wap", "val_loss", "wap", "wap_dup", "heldout_map")


def select_iteration(iterations: list[dict], select: str, fixed_iteration: int | None,
                     guard_stop: dict | None = None, margin: float = 0.0) -> tuple[int, str]:
    """(iteration saved, one-line reason) among the trained ``iterations`` (a guard-rejected one is not there)."""
    last = len(iterations) - 1
    stopped = (f"; the guard stopped refinement at iteration {guard_stop['iteration']}: {guard_stop['reason']}"
               if guard_stop else "")
    if select == "fixed":
        if fixed_iteration is None:
            if guard_stop:
                return last, f"fixed: the last sound iteration ({last}){stopped}"
            return last, f"fixed: the last iteration ({last})"
        if fixed_iteration > last:
            return last, (f"fixed: select_iteration = {fixed_iteration} was not reached, kept the last sound "
                          f"iteration {last}{stopped}")
        return fixed_iteration, f"fixed: select_iteration = {fixed_iteration}"
    if select == "fixed_wap":
        k, why = select_iteration(iterations, "fixed", fixed_iteration, guard_stop)
        values = [(e.get("heldout") or {}).get("wap") for e in iterations[:k + 1]]
        known = [(v, i) for i, v in enumerate(values) if v is not None]
        if not known or values[k] is None:
            return k, f"fixed_wap: no held-out value, {why}"
        best_v, best_i = max(known, key=lambda t: (t[0], -t[1]))
        if values[k] < best_v - margin:
            return best_i, (f"fixed_wap: iteration {k}'s held-out weak-label detection mAP {100 * values[k]:.2f} is "
                            f"more than {100 * margin:g} below iteration {best_i}'s {100 * best_v:.2f}; kept {best_i}"
                            f"{stopped}")
        return k, f"fixed_wap: {why} (held-out weak-label detection mAP {100 * values[k]:.2f}, best {100 * best_v:.2f})"
    if select == "val_loss":
        losses = [e["heldout_video_loss"] if e["heldout_video_loss"] is not None else e["train_loss"]
                  for e in iterations]
        k = int(np.argmin(losses))
        return k, f"val_loss: lowest held-out video loss {losses[k]:.4f}{stopped}"
    values = [(e.get("heldout") or {}).get(select) for e in iterations]
    if all(v is None for v in values):  # no held-out videos (or no annotations): nothing to choose on
        return 0, f"{select}: no held-out value, kept iteration 0{stopped}"
    k = next(i for i, v in enumerate(values) if v is not None)
    for i, v in enumerate(values):  # a later iteration must beat the kept one by more than ``margin``
        if v is not None and v > values[k] + margin:
            k = i
    best = values[k]
    what = ("held-out detection mAP against temporal annotations" if select == "heldout_map"
            else "held-out weak-label detection mAP")
    return k, f"{select}: highest {what} {100 * best:.2f} (iteration 0: {100 * (values[0] or 0):.2f}){stopped}"
