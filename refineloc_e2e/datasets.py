"""Dataset annotations: THUMOS'14, ActivityNet v1.2 and generic ActivityNet-style JSON.

Every loader returns a :class:`Dataset` with subsets normalised to ``"train"`` / ``"test"``:

- THUMOS'14: the 200 temporally annotated *validation* videos are ``train``; the *test* videos are ``test``.
  The bundled files (``data/thumos14/annotations/{val,test}``) give 200 train videos (3007 instances,
  27 with several classes) and 212 test videos with action instances (3358 instances, 34 multi-class).
  ``video_test_0001292`` appears only in ``Ambiguous_test.txt``; it is kept as a 213th test video with no
  labels, so the test list is the 213 the community cites. ``video_test_0000270`` has HammerThrow instances
  up to 713 s although ``video_info.json`` gives it 176 s (test 0000814 and 0001081, validation 0000364 and
  0000856 also end a little past their duration); segments are kept as given. Some repositories drop 270, 1292 and 1496
  (:data:`THUMOS14_OFTEN_DROPPED_TEST`); all are kept unless ``drop_videos`` names them.
  Every CliffDiving instance also appears in Diving; both labels are kept, as the files say.
- ActivityNet v1.2 (bundled CSVs): ``training`` -> ``train``, ``validation`` -> ``test``; video ids are
  kept as the files give them (YouTube ids without the ``v_`` prefix). Two instances have zero length;
  they are kept (they can never be matched).
- ActivityNet JSON: ``training`` / ``train`` -> ``train``, ``validation`` / ``test`` -> ``test``;
  ``testing`` videos (no public labels in ActivityNet) are skipped.

``labels`` (weak, video-level) are the only thing training may read; ``segments`` are for evaluation.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable


from refineloc_e2e.errors import DatasetError, InputError
from refineloc_e2e.fileio import package_data

SUBSETS = ("train", "test")
THUMOS14_OFTEN_DROPPED_TEST = ("video_test_0000270", "video_test_0001292", "video_test_0001496")
ANET_CSV_COLUMNS = ["video-name", "t-start", "t-end", "label", "video-duration", "fps", "video-num-frames"]
_JSON_SUBSETS = {"training": "train", "train": "train", "validation": "test", "test": "test"}
_DATA_DIR = package_data("data")


@dataclass(frozen=True)
class Segment:
    start_s: float  # seconds from the start of the video
    end_s: float  # seconds, >= start_s
    label: str  # class name


@dataclass
class VideoAnnotation:
    video_id: str
    subset: str  # "train" | "test"
    labels: list[str]  # weak labels: sorted unique classes present (the only thing training may use)
    segments: list[Segment]  # strong annotations, sorted by (start_s, end_s, label): evaluation only
    duration_s: float | None  # video length in seconds where known
    native_fps: float | None  # the file's own frame rate (never the 25 fps time base)


@dataclass
class Dataset:
    name: str
    classes: list[str]  # sorted; list index = class id
    videos: dict[str, VideoAnnotation]
    ambiguous: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # THUMOS spans (s, e)

    def subset(self, name: str) -> list[VideoAnnotation]:
        """Videos of subset ``name`` sorted by video id; ``DatasetError`` listing the known subsets."""
        known = sorted({v.subset for v in self.videos.values()})
        if name not in known:
            raise DatasetError(f"dataset {self.name!r}: unknown subset {name!r} (known: {', '.join(known)})")
        return [self.videos[k] for k in sorted(self.videos) if self.videos[k].subset == name]

    def class_index(self, label: str) -> int:
        try:
            return self.classes.index(label)
        except ValueError:
            raise DatasetError(f"dataset {self.name!r}: unknown class {label!r} "
                               f"({len(self.classes)} classes: {', '.join(self.classes[:5])}, ...)") from None


def _video(video_id: str, subset: str, segments: list[Segment], duration_s: float | None,
           native_fps: float | None, extra_labels: Iterable[str] = ()) -> VideoAnnotation:
    segments = sorted(segments, key=lambda g: (g.start_s, g.end_s, g.label))
    labels = sorted({g.label for g in segments} | set(extra_labels))
    return VideoAnnotation(video_id, subset, labels, segments, duration_s, native_fps)


def _span(start: Any, end: Any, where: str) -> tuple[float, float]:
    """Parse and validate one (start, end) pair in seconds; ``DatasetError`` naming ``where``."""
    try:
        s, e = float(start), float(end)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: start/end {start!r}, {end!r} are not numbers") from None
    if not (math.isfinite(s) and math.isfinite(e)) or s < 0 or e < s:
        raise DatasetError(f"{where}: invalid segment [{s}, {e}] (need 0 <= start <= end, finite)")
    return s, e


def _read_thumos_file(path: Path) -> list[tuple[str, float, float]]:
    """Rows ``video_name start_s end_s`` of one class file; blank lines skipped."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                raise DatasetError(f"{path}:{line_no}: expected 'video_name start_s end_s', got {line.strip()!r}")
            rows.append((parts[0], *_span(parts[1], parts[2], f"{path}:{line_no}")))
    return rows


def load_thumos14(*, root: str | Path | None = None, drop_videos: Iterable[str] = ()) -> Dataset:
    """THUMOS'14 from ``root`` (default: the bundled ``data/thumos14``): ``annotations/{val,test}/*.txt``
    (one file per class, ``<Class>_<split>.txt``; ``Ambiguous_*`` go to ``ambiguous``) and
    ``video_info.json`` (duration and native fps, optional per video)."""
    root = Path(root) if root is not None else _DATA_DIR / "thumos14"
    info_path = root / "video_info.json"
    info = _read_json(info_path) if info_path.exists() else {}
    if not isinstance(info, dict):
        raise DatasetError(f"{info_path}: expected a mapping of video id -> {{duration, fps, ...}}")
    drop = set(drop_videos)
    classes: set[str] = set()
    segs: dict[tuple[str, str], list[Segment]] = {}
    ambiguous: dict[str, list[tuple[float, float]]] = {}
    for split, subset in (("val", "train"), ("test", "test")):
        folder = root / "annotations" / split
        files = sorted(folder.glob(f"*_{split}.txt"))
        if not files:
            raise DatasetError(f"{folder}: no '<Class>_{split}.txt' annotation files")
        for path in files:
            label = path.name[: -len(f"_{split}.txt")]
            for vid, s, e in _read_thumos_file(path):
                if vid in drop:
                    continue
                if label == "Ambiguous":
                    ambiguous.setdefault(vid, []).append((s, e))
                    segs.setdefault((vid, subset), [])
                else:
                    classes.add(label)
                    segs.setdefault((vid, subset), []).append(Segment(s, e, label))
    videos = {}
    for (vid, subset), video_segs in segs.items():
        if vid in videos:
            raise DatasetError(f"{root / 'annotations'}: video {vid} appears in both the val and test files")
        meta = info.get(vid, {})
        videos[vid] = _video(vid, subset, video_segs, meta.get("duration"), meta.get("fps"))
    return Dataset("thumos14", sorted(classes), dict(sorted(videos.items())),
                   {k: sorted(v) for k, v in sorted(ambiguous.items())})


def load_activitynet12(*, data_dir: str | Path | None = None) -> Dataset:
    """ActivityNet v1.2 from the two ground-truth CSVs (columns :data:`ANET_CSV_COLUMNS`)."""
    data_dir = Path(data_dir) if data_dir is not None else _DATA_DIR / "activitynet12"
    videos: dict[str, VideoAnnotation] = {}
    for name, subset in (("activitynet_v1-2_train_groundtruth.csv", "train"),
                         ("activitynet_v1-2_valid_groundtruth.csv", "test")):
        path = data_dir / name
        if not path.is_file():
            raise DatasetError(f"{path}: ActivityNet v1.2 ground-truth CSV not found")
        segs: dict[str, list[Segment]] = {}
        meta: dict[str, tuple[float, float]] = {}
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != ANET_CSV_COLUMNS:
                raise DatasetError(f"{path}:1: header {header} is not {ANET_CSV_COLUMNS}")
            for line_no, row in enumerate(reader, 2):
                if not row:
                    continue
                where = f"{path}:{line_no}"
                if len(row) != len(ANET_CSV_COLUMNS) or not row[0] or not row[3]:
                    raise DatasetError(f"{where}: expected {len(ANET_CSV_COLUMNS)} fields with a video id and "
                                       f"a label, got {row}")
                s, e = _span(row[1], row[2], where)
                duration_s, fps = _span(0.0, row[4], where)[1], _span(0.0, row[5], where)[1]
                if meta.setdefault(row[0], (duration_s, fps)) != (duration_s, fps):
                    raise DatasetError(f"{where}: video {row[0]} has a different duration/fps than its earlier rows")
                segs.setdefault(row[0], []).append(Segment(s, e, row[3]))
        for vid, video_segs in segs.items():
            if vid in videos:
                raise DatasetError(f"{path}: video {vid} is also in the other subset's CSV")
            videos[vid] = _video(vid, subset, video_segs, *meta[vid])
    classes = sorted({g.label for v in videos.values() for g in v.segments})
    return Dataset("activitynet12", classes, dict(sorted(videos.items())), {})


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None


def load_activitynet_json(path: str | Path) -> Dataset:
    """ActivityNet "database" JSON. Per video: ``subset``, optional ``duration`` (s), ``fps``,
    ``annotations`` [{label, segment: [s, e]}], ``labels`` (weak labels without segments) and
    ``ambiguous`` ([[s, e], ...]). Optional top level: ``name``, ``classes`` (the full class list; a
    ``taxonomy`` that is a non-empty plain list of names is used the same way; an empty taxonomy or one of
    ActivityNet's node objects means: the labels found in the annotations)."""
    path = Path(path)
    doc = _read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("database"), dict):
        raise DatasetError(f"{path}: expected an object with a 'database' mapping of video id -> entry")
    videos, ambiguous = {}, {}
    for vid, entry in doc["database"].items():
        where = f"{path}: database[{vid!r}]"
        if not isinstance(entry, dict):
            raise DatasetError(f"{where}: expected an object, got {type(entry).__name__}")
        raw_subset = entry.get("subset")
        if raw_subset == "testing":
            continue  # ActivityNet's unlabelled test server split
        if raw_subset not in _JSON_SUBSETS:
            raise DatasetError(f"{where}: subset {raw_subset!r} is not one of {sorted(_JSON_SUBSETS)} or 'testing'")
        if not isinstance(entry.get("annotations", []), list):
            raise DatasetError(f"{where}.annotations: expected a list, got {type(entry['annotations']).__name__}")
        segs = []
        for i, ann in enumerate(entry.get("annotations", [])):
            seg = ann.get("segment") if isinstance(ann, dict) else None
            if not isinstance(seg, (list, tuple)) or len(seg) != 2 or not isinstance(ann.get("label"), str):
                raise DatasetError(f"{where}.annotations[{i}]: need {{'label': str, 'segment': [start, end]}}, "
                                   f"got {ann!r}")
            segs.append(Segment(*_span(seg[0], seg[1], f"{where}.annotations[{i}]"), ann["label"]))
        weak = entry.get("labels", [])
        if not isinstance(weak, list) or not all(isinstance(x, str) for x in weak):
            raise DatasetError(f"{where}.labels: expected a list of class names, got {weak!r}")
        if weak and not {g.label for g in segs} <= set(weak):
            raise DatasetError(f"{where}: segment labels {sorted({g.label for g in segs} - set(weak))} "
                               f"are missing from its 'labels' {weak}")
        duration = entry.get("duration")
        duration_s = _span(0.0, duration, f"{where}.duration")[1] if duration is not None else None
        fps = entry.get("fps")
        videos[vid] = _video(vid, _JSON_SUBSETS[raw_subset], segs, duration_s,
                             _span(0.0, fps, f"{where}.fps")[1] if fps is not None else None, weak)
        spans = entry.get("ambiguous") or []
        if not isinstance(spans, list) or not all(isinstance(a, (list, tuple)) and len(a) == 2 for a in spans):
            raise DatasetError(f"{where}.ambiguous: expected [[start, end], ...], got {spans!r}")
        if spans:
            ambiguous[vid] = sorted(_span(a[0], a[1], f"{where}.ambiguous") for a in spans)
    found = sorted({lab for v in videos.values() for lab in v.labels})
    # A non-empty list of names is the class list. ActivityNet's own taxonomy is a list of node objects (parents
    # and leaves), and many files carry an empty one: like ActivityNet's evaluator, take the labels found.
    taxonomy = doc.get("taxonomy")
    names = taxonomy if isinstance(taxonomy, list) and taxonomy and all(isinstance(t, str) for t in taxonomy) \
        else found
    classes = doc.get("classes", names)
    if not isinstance(classes, list) or not set(found) <= set(classes) or len(set(classes)) != len(classes):
        raise DatasetError(f"{path}: 'classes' must be a list of unique names containing every label "
                           f"(missing: {sorted(set(found) - set(classes)) if isinstance(classes, list) else found})")
    if not videos:
        raise DatasetError(f"{path}: no training/validation videos in 'database'")
    return Dataset(str(doc.get("name", path.stem)), sorted(classes), dict(sorted(videos.items())), ambiguous)


def load_dataset(spec: str | Path) -> Dataset:
    """``"thumos14"`` | ``"activitynet12"`` | path to an ActivityNet-style ``.json``."""
    if str(spec) == "thumos14":
        return load_thumos14()
    if str(spec) == "activitynet12":
        return load_activitynet12()
    if str(spec).endswith(".json"):
        return load_activitynet_json(spec)
    raise DatasetError(f"unknown dataset {str(spec)!r}: use 'thumos14', 'activitynet12' or a path to a .json file")


GROUND_TRUTH_SPECS = "thumos14-test | thumos14-val | activitynet12-val | FILE.json"


def load_ground_truth(spec: str | Path) -> tuple[Dataset, str]:
    """The dataset and subset a ``--ground-truth`` value names (``GROUND_TRUTH_SPECS``; ``evaluate``, ``detect``
    and ``view`` take the same values): THUMOS'14 test or validation (whose annotated videos are the
    ``train`` subset), ActivityNet v1.2 validation (its ``test`` subset), or an ActivityNet-style JSON (its
    ``test`` subset)."""
    if str(spec) in ("thumos14-test", "thumos14-val"):
        return load_thumos14(), "test" if str(spec).endswith("test") else "train"
    if str(spec) in ("activitynet12-val", "activitynet12"):
        return load_activitynet12(), "test"
    return load_dataset(spec), "test"


def dataset_to_activitynet_json(ds: Dataset) -> dict:
    """The inverse of :func:`load_activitynet_json` (train -> "training", test -> "validation")."""
    back = {"train": "training", "test": "validation"}
    database = {}
    for vid, v in ds.videos.items():
        annotations = [{"label": g.label, "segment": [g.start_s, g.end_s]} for g in v.segments]
        entry: dict[str, Any] = {"subset": back[v.subset], "duration": v.duration_s, "annotations": annotations,
                                 "labels": list(v.labels)}
        if v.native_fps is not None:
            entry["fps"] = v.native_fps
        if ds.ambiguous.get(vid):
            entry["ambiguous"] = [list(a) for a in ds.ambiguous[vid]]
        database[vid] = entry
    return {"version": "refineloc-e2e dataset 1", "name": ds.name, "classes": list(ds.classes), "database": database}
