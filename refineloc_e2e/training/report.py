"""The per-iteration table a training run reports (``TrainResult.table``; ``refineloc-e2e train`` prints it)."""

from __future__ import annotations


def format_iteration_table(iterations: list[dict], selected: int | None = None, guard: dict | None = None) -> str:
    """One row per iteration: test mAP (%) per tIoU + average, held-out loss and video loss, held-out
    weak-label detection mAP (wAP, %), kept/run epochs, pseudo-fg fraction and its precision / recall / F1
    against the strong annotations (reporting only). ``*`` marks the selected iteration; an iteration the guard
    refused (``guard``: metrics["guard"]) gets one line saying why it was not trained."""
    tests = [e.get("test") for e in iterations]
    tious = next((t["tious"] for t in tests if t), [])
    head = (f"{'iter':>5} " + " ".join(f"{t:>6.2f}" for t in tious) + f" {'Avg':>6} {'heldout':>8} {'h-video':>8}"
            f" {'h-wAP':>6} {'h-cov':>6} {'epoch':>7} {'pseudo-fg':>9} {'P':>5} {'R':>5} {'F1':>5}")
    lines = [head]

    def num(v, fmt, width, scale=1.0):
        return f"{'-':>{width}}" if v is None else f"{scale * v:{width}{fmt}}"

    for e, t in zip(iterations, tests):
        maps = " ".join(f"{100 * m:6.2f}" for m in t["map_per_tiou"]) + f" {100 * t['average_map']:6.2f}" \
            if t else " ".join(f"{'-':>6}" for _ in tious) + f" {'-':>6}"
        ps = e.get("pseudo") or {}
        mark = "*" if selected is not None and e["iteration"] == selected else " "
        epochs = f"{e.get('best_epoch', -1)}/{e.get('epochs_run', len(e.get('train_losses', [])))}"
        lines.append(f"{mark}{e['iteration']:>4} {maps} {num(e.get('heldout_loss'), '.4f', 8)} "
                     f"{num(e.get('heldout_video_loss'), '.4f', 8)} {num((e.get('heldout') or {}).get('wap'), '.2f', 6, 100)} "
                     f"{num((e.get('heldout') or {}).get('coverage'), '.3f', 6)} {epochs:>7} {num(ps.get('fg_fraction'), '.3f', 9)} {num(ps.get('precision_vs_truth'), '.2f', 5)} "
                     f"{num(ps.get('recall_vs_truth'), '.2f', 5)} {num(ps.get('f1_vs_truth'), '.2f', 5)}")
    if guard:
        lines.append(f"{'':1}{guard['iteration']:>4} not trained (guard): {guard['reason']}")
    return "\n".join(lines)
