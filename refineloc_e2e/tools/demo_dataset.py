"""The demo's generated dataset: weakly-labelled videos written in the official layouts (videos + ActivityNet JSON).

Real THUMOS'14 videos cannot be had here, so the demo (and the tests of the whole pipeline) generate videos whose
actions are visible motion patterns on a textured background, encode them with H.264 at a THUMOS-like native rate
(30 fps, 320x180), and write the annotations as an ActivityNet "database" JSON. Everything downstream
(decode, flow, I3D, cache, training, detection, evaluation) then runs on them exactly as on real data.
The strong annotations in that JSON are used for evaluation only; training reads the weak labels.

Classes (each a different appearance and motion, so both I3D streams see them):
- ``BouncingBall``: a red disc moving quickly up and down.
- ``SlidingBox``: a blue square sliding left and right.
- ``PulsingRing``: a green ring growing and shrinking in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from refineloc_e2e.fileio import atomic_write_json

CLASSES = ("BouncingBall", "PulsingRing", "SlidingBox")


@dataclass
class SyntheticSpec:
    n_train: int = 16
    n_test: int = 8
    duration_s: float = 8.0
    native_fps: float = 30.0
    width: int = 320
    height: int = 180
    min_action_s: float = 1.5
    max_action_s: float = 3.0
    seed: int = 0


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random texture (uint8 [H, W, 3])."""
    gray = rng.uniform(70, 170, size=(h // 12 + 2, w // 12 + 2, 1)).astype(np.float32)
    tint = rng.uniform(0.85, 1.15, size=(1, 1, 3)).astype(np.float32)
    small = gray * tint  # muted texture: the coloured actors stand out
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def _draw(frame: np.ndarray, label: str, phase_s: float) -> None:
    h, w = frame.shape[:2]
    if label == "BouncingBall":
        y = int(h * (0.5 + 0.35 * np.sin(2 * np.pi * 1.5 * phase_s)))
        cv2.circle(frame, (w // 2, y), h // 8, (220, 30, 30), -1)
    elif label == "SlidingBox":
        x = int(w * (0.5 + 0.35 * np.sin(2 * np.pi * 1.0 * phase_s)))
        s = h // 6
        cv2.rectangle(frame, (x - s, h // 2 - s), (x + s, h // 2 + s), (30, 60, 230), -1)
    elif label == "PulsingRing":
        r = int(h * (0.15 + 0.12 * np.sin(2 * np.pi * 2.0 * phase_s)))
        cv2.circle(frame, (w // 2, h // 2), max(r, 3), (30, 210, 60), max(h // 30, 2))
    else:
        raise ValueError(f"unknown synthetic class {label!r}")


def _instances(rng: np.random.Generator, spec: SyntheticSpec) -> list[tuple[float, float, str]]:
    """1-2 non-overlapping action instances; a second class appears in about a quarter of the videos."""
    main = CLASSES[rng.integers(len(CLASSES))]
    labels = [main]
    if rng.random() < 0.5:
        labels.append(main if rng.random() < 0.5 else CLASSES[rng.integers(len(CLASSES))])
    out: list[tuple[float, float, str]] = []
    slot = spec.duration_s / len(labels)
    for i, lab in enumerate(labels):
        hi = min(spec.max_action_s, slot * 0.8)
        length = rng.uniform(min(spec.min_action_s, hi * 0.75), hi)
        start = i * slot + rng.uniform(0.1 * slot, slot - length)
        out.append((round(start, 3), round(start + length, 3), lab))
    return out


def write_video(path: Path, spec: SyntheticSpec, instances: list[tuple[float, float, str]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    bg = _background(rng, spec.height, spec.width)
    n = int(round(spec.duration_s * spec.native_fps))
    tmp = path.with_name(f".{path.name}.partial")
    with av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=int(spec.native_fps))
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for i in range(n):
            t = i / spec.native_fps
            frame = bg.copy()
            frame = np.roll(frame, int(2 * np.sin(t)), axis=1)  # slight camera sway: background is not static
            for start, end, lab in instances:
                if start <= t < end:
                    _draw(frame, lab, t - start)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.replace(path)


def generate_dataset(out_dir: str | Path, spec: SyntheticSpec) -> Path:
    """Write ``out_dir/videos/*.mp4`` and ``out_dir/annotations.json``; returns the annotations path.

    Existing videos are kept (generation is deterministic given the spec), so a rerun resumes.
    """
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    database = {}
    for subset, count in (("training", spec.n_train), ("validation", spec.n_test)):
        for i in range(count):
            vid = f"synthetic_{subset}_{i:04d}"
            inst = _instances(rng, spec)
            seed = int(rng.integers(2**31))
            path = out_dir / "videos" / f"{vid}.mp4"
            if not path.is_file():
                write_video(path, spec, inst, seed)
            database[vid] = {
                "subset": subset,
                "duration": spec.duration_s,
                "fps": spec.native_fps,
                "annotations": [{"label": lab, "segment": [s, e]} for s, e, lab in inst],
            }
    ann = out_dir / "annotations.json"
    atomic_write_json(ann, {"name": "generated", "version": "generated by refineloc-e2e tools/demo_dataset.py",
                            "taxonomy": list(CLASSES),
                            "database": database})
    return ann
