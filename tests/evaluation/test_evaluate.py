"""ActivityNet-protocol mAP: hand-computed cases and agreement with a brute-force reimplementation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from refineloc_e2e.datasets import Dataset, Segment, VideoAnnotation, load_thumos14
from refineloc_e2e.errors import DatasetError, InputError
from refineloc_e2e.evaluation.metrics import (ACTIVITYNET_TIOUS, EvalResult, average_precision, default_tious, evaluate,
                                    format_table, load_predictions)


def make_dataset(gt: dict[str, list[tuple[float, float, str]]], classes=("A", "B", "C"),
                 ambiguous=None, subset="test") -> Dataset:
    videos = {vid: VideoAnnotation(vid, subset, sorted({g[2] for g in segs}), [Segment(*g) for g in segs], 100.0, 30.0)
              for vid, segs in gt.items()}
    return Dataset("toy", sorted(classes), videos, ambiguous or {})


def P(label, score, start, end):
    return {"label": label, "score": score, "segment": [start, end]}


def test_default_tious():
    assert default_tious("thumos14") == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    assert default_tious("activitynet12") == pytest.approx(list(np.arange(0.5, 0.951, 0.05)))
    assert ACTIVITYNET_TIOUS[-1] == 0.95 and len(ACTIVITYNET_TIOUS) == 10


def test_perfect_predictions():
    ds = make_dataset({"v1": [(0, 10, "A"), (20, 30, "B")], "v2": [(5, 8, "A")]}, classes=("A", "B"))
    preds = {vid: [P(g.label, 1.0, g.start_s, g.end_s) for g in v.segments] for vid, v in ds.videos.items()}
    r = evaluate(preds, ds, tious=[0.5, 0.95])
    assert r.map_per_tiou == [1.0, 1.0] and r.average_map == 1.0
    assert r.n_predictions == 3 and r.n_ground_truth == 3 and r.n_videos == 2 and r.excluded_classes == []


def test_all_wrong():
    ds = make_dataset({"v1": [(0, 10, "A")], "v2": [(0, 10, "B")]}, classes=("A", "B"))
    preds = {"v1": [P("A", 0.9, 50, 60), P("B", 0.8, 0, 10)], "v2": [P("A", 0.7, 0, 10)]}
    r = evaluate(preds, ds, tious=[0.1])
    assert r.ap_per_class == {"A": [0.0], "B": [0.0]} and r.average_map == 0.0


def test_duplicates_are_false_positives_and_order_does_not_matter():
    ds = make_dataset({"v1": [(0, 10, "A"), (20, 30, "A")]})
    preds = [P("A", 0.9, 0, 10), P("A", 0.8, 0, 10), P("A", 0.7, 20, 30)]
    # ranks: TP, FP (duplicate), TP -> precision 1, 1/2, 2/3; recall 1/2, 1/2, 1
    expected = 0.5 * 1.0 + 0.5 * (2 / 3)
    assert evaluate({"v1": preds}, ds, tious=[0.5]).ap_per_class["A"] == pytest.approx([expected])
    shuffled = [preds[2], preds[0], preds[1]]
    assert evaluate({"v1": shuffled}, ds, tious=[0.5]).ap_per_class["A"] == pytest.approx([expected])


def test_threshold_is_inclusive_and_matching_prefers_highest_tiou():
    ds = make_dataset({"v1": [(0, 10, "A"), (8, 18, "A")]})
    r = evaluate({"v1": [P("A", 1.0, 0, 5)]}, ds, tious=[0.5, 0.6])  # tIoU with (0, 10) is exactly 0.5
    assert r.ap_per_class["A"] == pytest.approx([0.5, 0.0])
    # P1 overlaps (0,10) at 3/17 and (8,18) at 9/11 -> takes (8,18), even at tIoU 0.1 where (0,10) would do;
    # P2 overlaps (0,10) at 1/19 only, so it is a false positive at both thresholds
    r = evaluate({"v1": [P("A", 0.9, 7, 17), P("A", 0.8, 9, 19)]}, ds, tious=[0.5, 0.1])
    assert r.ap_per_class["A"] == pytest.approx([0.5, 0.5])


def test_ties_follow_video_id_then_list_position():
    ds = make_dataset({"a": [(0, 10, "A")], "b": [(50, 60, "B")]})
    # equal scores: video 'a' (true positive) ranks before video 'b' (false positive) -> AP 1, not 0.5
    preds = {"b": [P("A", 0.5, 0, 10)], "a": [P("A", 0.5, 0, 10)]}
    assert evaluate(preds, ds, tious=[0.5]).ap_per_class["A"] == [1.0]
    # within one video the earlier list entry ranks first: FP then TP -> AP 0.5
    preds = {"a": [P("A", 0.5, 30, 40), P("A", 0.5, 0, 10)]}
    assert evaluate(preds, ds, tious=[0.5]).ap_per_class["A"] == [0.5]


def test_class_without_predictions_and_without_ground_truth():
    ds = make_dataset({"v1": [(0, 10, "A"), (20, 30, "B")]}, classes=("A", "B", "C"))
    r = evaluate({"v1": [P("A", 0.9, 0, 10), P("C", 0.9, 0, 10)]}, ds, tious=[0.5])
    assert r.ap_per_class == {"A": [1.0], "B": [0.0]}  # B: no predictions -> 0; C: no ground truth -> excluded
    assert r.excluded_classes == ["C"] and r.map_per_tiou == [0.5]
    assert r.n_predictions == 2


def test_video_without_ground_truth_counts_false_positives():
    ds = make_dataset({"v1": [(0, 10, "A")], "empty": []})
    r = evaluate({"empty": [P("A", 0.9, 0, 10)], "v1": [P("A", 0.5, 0, 10)]}, ds, tious=[0.5])
    assert r.ap_per_class["A"] == [0.5]  # FP (score 0.9) ranks first, then the TP


def test_predictions_outside_the_subset_are_ignored_and_counted():
    ds = make_dataset({"v1": [(0, 10, "A")]})
    ds.videos["t1"] = VideoAnnotation("t1", "train", ["A"], [Segment(0, 5, "A")], None, None)
    r = evaluate({"v1": [P("A", 0.5, 0, 10)], "t1": [P("A", 0.9, 50, 60)], "zz": [P("B", 1, 0, 1)] * 2}, ds,
                 tious=[0.5])
    assert r.ap_per_class["A"] == [1.0] and r.n_ignored_predictions == 3 and r.n_predictions == 1
    assert r.n_ground_truth == 1


def test_video_ids_restricts_evaluation():
    ds = make_dataset({"v1": [(0, 10, "A")], "v2": [(0, 10, "A"), (0, 10, "B")]})
    r = evaluate({"v1": [P("A", 0.5, 0, 10)], "v2": [P("A", 0.9, 50, 60)]}, ds, tious=[0.5], video_ids=["v1"])
    assert r.ap_per_class == {"A": [1.0]} and r.excluded_classes == ["B", "C"] and r.n_ignored_predictions == 1
    with pytest.raises(DatasetError, match=r"has no videos \['v9'\]"):
        evaluate({}, ds, video_ids=["v1", "v9"])
    with pytest.raises(DatasetError, match="unknown subset 'train'"):
        evaluate({}, ds, subset="train")


def test_drop_ambiguous():
    ds = make_dataset({"v1": [(0, 10, "A")]}, ambiguous={"v1": [(20.0, 30.0)]})
    preds = {"v1": [P("A", 0.9, 25, 40), P("A", 0.8, 30, 35), P("A", 0.5, 0, 10)]}
    kept = evaluate(preds, ds, tious=[0.5])
    assert kept.ap_per_class["A"] == [pytest.approx(1 / 3)] and kept.n_dropped_ambiguous == 0
    dropped = evaluate(preds, ds, tious=[0.5], drop_ambiguous=True)
    # (25, 40) intersects the span and is removed; (30, 35) only touches it and stays (a false positive)
    assert dropped.n_dropped_ambiguous == 1 and dropped.n_predictions == 2
    assert dropped.ap_per_class["A"] == [0.5]


def test_bad_predictions_name_the_entry():
    ds = make_dataset({"v1": [(0, 10, "A")]})
    with pytest.raises(DatasetError, match=r"predictions\['v1'\]\[1\]: 'segment'"):
        evaluate({"v1": [P("A", 1, 0, 1), P("A", 1, 5, 1)]}, ds)
    with pytest.raises(DatasetError, match=r"predictions\['v1'\]\[0\]: label 'Z' is not a class"):
        evaluate({"v1": [P("Z", 1, 0, 1)]}, ds)
    with pytest.raises(DatasetError, match="'score' must be a finite number"):
        evaluate({"v1": [P("A", float("nan"), 0, 1)]}, ds)
    with pytest.raises(DatasetError, match=r"tIoU thresholds must be in \(0, 1\]"):
        evaluate({}, ds, tious=[0.0])


def test_load_predictions(tmp_path):
    path = tmp_path / "results.json"
    doc = {"version": "x", "results": {"v1": [P("A", 0.5, 0, 10)]}, "external_data": {}}
    path.write_text(json.dumps(doc))
    assert load_predictions(path) == {"v1": [P("A", 0.5, 0.0, 10.0)]}
    doc["results"]["v2"] = [P("A", 0.5, 0, 10), {"label": "A", "score": "high", "segment": [0, 1]}]
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"results.json: results\['v2'\]\[1\]: 'score' must be a finite number"):
        load_predictions(path)
    path.write_text(json.dumps({"database": {}}))
    with pytest.raises(InputError, match="results.json: expected an ActivityNet results object"):
        load_predictions(path)
    path.write_text("{]")
    with pytest.raises(InputError, match="results.json: not valid JSON"):
        load_predictions(path)
    with pytest.raises(InputError, match="nope.json: predictions file not found"):
        load_predictions(tmp_path / "nope.json")


def test_format_table():
    r = EvalResult(tious=[0.1, 0.5], map_per_tiou=[0.5, 0.25], average_map=0.375,
                   ap_per_class={"A": [1.0, 0.5], "LongClassName": [0.0, 0.0]}, n_predictions=3, n_ground_truth=2,
                   excluded_classes=["C"], n_videos=1)
    table = format_table(r, per_class=True)
    lines = table.splitlines()
    assert lines[0].split() == ["tIoU", "0.10", "0.50", "Avg"]
    assert lines[1].split() == ["mAP(%)", "50.00", "25.00", "37.50"]
    assert lines[3].split() == ["A", "100.00", "50.00", "75.00"]
    assert "excluded (no ground truth here): C" in table
    assert "LongClassName" not in format_table(r)


def test_ground_truth_as_predictions_on_thumos():
    ds = load_thumos14()
    preds = {v.video_id: [P(g.label, 1.0, g.start_s, g.end_s) for g in v.segments] for v in ds.subset("test")}
    r = evaluate(preds, ds)
    assert r.map_per_tiou == [1.0] * 7 and len(r.ap_per_class) == 20 and r.excluded_classes == []
    assert r.n_ground_truth == 3358 and r.n_videos == 213
    assert evaluate({}, ds).average_map == 0.0


# --- an independent, deliberately simple implementation -----------------------------------------------

def brute_force_map(preds: dict, gt: dict, classes: list[str], tiou: float) -> dict[str, float]:
    """Per class: Python-sorted list, each prediction takes the best still-free ground truth (plain loops);
    AP = (1/n_gt) * sum over true-positive ranks k of max_{j >= k} precision_j."""
    out = {}
    for c in classes:
        truth = [(vid, s, e) for vid, segs in gt.items() for s, e, lab in segs if lab == c]
        if not truth:
            continue
        ranked = sorted(((p["score"], vid, i, p["segment"]) for vid, ps in preds.items() for i, p in enumerate(ps)
                         if p["label"] == c), key=lambda x: (-x[0], x[1], x[2]))
        free = [True] * len(truth)
        hits = []
        for _, vid, _, (ps, pe) in ranked:
            best, best_iou = None, -1.0
            for j, (gv, gs, ge) in enumerate(truth):
                if gv != vid or not free[j]:
                    continue
                inter = max(0.0, min(pe, ge) - max(ps, gs))
                union = (pe - ps) + (ge - gs) - inter
                iou = inter / union if union > 0 else 0.0
                if iou > best_iou:
                    best, best_iou = j, iou
            hit = best is not None and best_iou >= tiou
            if hit:
                free[best] = False
            hits.append(hit)
        precision = [sum(hits[: k + 1]) / (k + 1) for k in range(len(hits))]
        out[c] = sum(max(precision[k:]) for k in range(len(hits)) if hits[k]) / len(truth)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    classes = ["A", "B", "C", "D"]
    gt = {}
    for v in range(12):
        segs = []
        for _ in range(rng.integers(0, 5)):
            s = float(rng.uniform(0, 90))
            segs.append((s, s + float(rng.uniform(0.5, 10)), str(rng.choice(classes[:3]))))  # D never in the truth
        gt[f"v{v:02d}"] = segs
    preds = {}
    for vid, segs in gt.items():
        ps = []
        for s, e, lab in segs:  # noisy copies and duplicates of the truth
            for _ in range(rng.integers(0, 3)):
                j = rng.normal(0, 1.5, 2)
                ps.append(P(lab if rng.random() < 0.8 else str(rng.choice(classes)), float(rng.integers(0, 8)) / 8,
                            max(0.0, s + j[0]), max(0.0, s + j[0]) + max(0.1, e - s + j[1])))
        for _ in range(rng.integers(0, 4)):  # clutter, with tied scores
            s = float(rng.uniform(0, 90))
            ps.append(P(str(rng.choice(classes)), float(rng.integers(0, 8)) / 8, s, s + float(rng.uniform(0.5, 15))))
        rng.shuffle(ps)
        preds[vid] = ps
    ds = make_dataset(gt, classes=classes)
    tious = [0.1, 0.3, 0.5, 0.7, 0.9]
    result = evaluate(preds, ds, tious=tious)
    for k, t in enumerate(tious):
        expected = brute_force_map(preds, gt, classes, t)
        assert set(expected) == set(result.ap_per_class)
        for c, ap in expected.items():
            assert result.ap_per_class[c][k] == pytest.approx(ap, abs=1e-12), (c, t)
        assert result.map_per_tiou[k] == pytest.approx(np.mean(list(expected.values())), abs=1e-12)
    assert result.excluded_classes == ["D"]


def test_average_precision_edge_cases():
    assert average_precision(np.array([], dtype=bool), 3) == 0.0
    assert average_precision(np.array([True, False]), 0) == 0.0
    assert average_precision(np.array([False, True]), 1) == 0.5
    assert average_precision(np.array([True, True, False, False]), 4) == 0.5


def test_parse_tious_lists_ranges_and_errors():
    from refineloc_e2e.evaluation.metrics import parse_tious

    assert parse_tious(["0.5"]) == [0.5]
    assert parse_tious(["0.1,0.3,0.5"]) == [0.1, 0.3, 0.5]
    assert parse_tious(["0.5:0.95:0.05"]) == pytest.approx(ACTIVITYNET_TIOUS)
    assert parse_tious(["0.5:0.95:0.05"])[-1] == 0.95 and len(parse_tious(["0.5:0.95:0.05"])) == 10
    assert parse_tious(["0.1:0.7:0.1"]) == pytest.approx(default_tious("thumos14"))
    assert parse_tious(["0.3", "0.5", "0.3"]) == [0.3, 0.5]  # repeated flags still work; duplicates dropped
    assert parse_tious([]) == []
    with pytest.raises(InputError) as e:
        parse_tious(["0.5:0.95"])
    assert str(e.value) == ("--tiou '0.5:0.95': expected a number, a list (0.1,0.3,0.5) or a range start:stop:step "
                            "with stop included (0.5:0.95:0.05)")
    with pytest.raises(InputError, match=r"--tiou '1.5': thresholds must be in \(0, 1\], got 1.5"):
        parse_tious(["0.5,1.5"])
    with pytest.raises(InputError, match="expected a number"):
        parse_tious(["0.9:0.5:0.1"])
