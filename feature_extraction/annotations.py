"""Annotation importers: ActivityNet-style JSON or a CSV -> the .npy files the loader reads.

JSON (ActivityNet 1.3, HACS and most fully supervised codebases)::

    {"database": {"<video>": {"subset": "validation", "duration": 12.5,
                              "annotations": [{"segment": [1.0, 4.2], "label": "Archery"}, ...]}}}

Extra fields ("fps", "label_id", "segment(frames)", "url", ...) are ignored except "fps"
(-> original_fps.npy when every video has it) and "labels_all" (the video-level labels,
when they are not just the segments' labels, as in 28 THUMOS-14 videos; exported by
:func:`to_activitynet_json` so that a round trip gives back the same arrays).

CSV: a header ``video,subset,start,end,label`` (optional ``duration`` column); one row per
segment; a row with empty start, end and label lists a video without actions. Without a
duration column the durations come from the caller (e.g. read from the video files).

Subsets are lower-cased; "train" -> "training", "val" -> "validation"; with a "training"
subset (ActivityNet style) "test" becomes "testing", otherwise (THUMOS style: validation
trains, test tests) "testing" becomes "test". Classes: the given class list (a label outside
it is an error), else the JSON's top-level "classlist" when it has one, else the sorted labels.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from utils.atomic import save_npy, write_text
from utils.errors import DataError, OutputError
from utils.layout import check_video_name, load_npy, text_array
from utils.evaluation import FEATURE_FPS



@dataclass
class Annotations:
    """One dataset's annotations, V videos, C classes; times in seconds."""

    class_names: list[str]  # (C,)
    videos: list[str]  # (V,)
    subset: list[str]  # (V,)
    duration: list[float]  # (V,)
    segments: list[list[list[float]]]  # (V,) of [[start, end], ...]
    labels: list[list[str]]  # (V,) class name of each segment
    labels_all: list[list[str]]  # (V,) classes present in the video
    fps: Optional[list[float]] = field(default=None)  # (V,) original frame rate, when known


def _normalise_subsets(subsets: list[str]) -> list[str]:
    renamed = [{"train": "training", "val": "validation"}.get(s.strip().lower(), s.strip().lower()) for s in subsets]
    activitynet = "training" in renamed
    swap = {"test": "testing"} if activitynet else {"testing": "test"}
    return [swap.get(s, s) for s in renamed]


def _check_segment(start, end, path: Path, video: str, index: int) -> list[float]:
    try:
        start, end = float(start), float(end)
    except (TypeError, ValueError) as error:
        raise DataError(f"{path}: video {video}: segment {index} has non-numeric times ({start!r}, {end!r})") from error
    if not (math.isfinite(start) and math.isfinite(end)):
        raise DataError(f"{path}: video {video}: segment {index} has a time that is NaN or infinite")
    if end < start:
        raise DataError(f"{path}: video {video}: segment {index} ends before it starts ({start} > {end})")
    return [start, end]


def _class_list(labels: Sequence[Sequence[str]], classlist: Optional[Sequence[str]], path: Path,
                videos: Sequence[str]) -> list[str]:
    if classlist is None:
        return sorted({name for video_labels in labels for name in video_labels})
    known = set(classlist)
    for video, video_labels in zip(videos, labels):
        for name in video_labels:
            if name not in known:
                raise DataError(f"{path}: video {video}: label {name!r} is not in the class list")
    return list(classlist)


def read_classlist(path) -> list[str]:
    """A class list: one name per line (a .txt), or a classlist.npy."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: class list not found")
    if path.suffix == ".npy":
        return text_array(path, "class list")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_activitynet_json(path, classlist: Optional[Sequence[str]] = None) -> Annotations:
    """Annotations from an ActivityNet-style JSON file (see the module docstring)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise DataError(f"{path}: annotation file not found") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a JSON file ({error})") from error
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise DataError(f"{path}: expected an ActivityNet-style JSON object with a \"database\" mapping "
                        "video names to {\"subset\", \"duration\", \"annotations\"}")
    videos, subsets, durations, segments, labels, labels_all, fps = [], [], [], [], [], [], []
    for video, entry in data["database"].items():
        check_video_name(video, f"{path}: \"database\" entry {video!r}")
        if not isinstance(entry, dict):
            raise DataError(f"{path}: video {video}: expected an object, got {type(entry).__name__}")
        for key in ("subset", "duration"):
            if key not in entry:
                raise DataError(f"{path}: video {video}: has no \"{key}\"")
        try:
            duration = float(entry["duration"])
        except (TypeError, ValueError) as error:
            raise DataError(f"{path}: video {video}: duration {entry['duration']!r} is not a number") from error
        video_segments, video_labels = [], []
        for index, annotation in enumerate(entry.get("annotations", [])):
            if not isinstance(annotation, dict) or "segment" not in annotation or "label" not in annotation:
                raise DataError(f"{path}: video {video}: annotation {index} needs \"segment\" and \"label\"")
            segment = annotation["segment"]
            if not isinstance(segment, (list, tuple)) or len(segment) != 2:
                raise DataError(f"{path}: video {video}: annotation {index}: segment must be [start, end], "
                                f"got {segment!r}")
            video_segments.append(_check_segment(*segment, path, video, index))
            video_labels.append(str(annotation["label"]))
        videos.append(str(video))
        subsets.append(str(entry["subset"]))
        durations.append(duration)
        segments.append(video_segments)
        labels.append(video_labels)
        labels_all.append([str(x) for x in entry["labels_all"]] if "labels_all" in entry
                          else list(dict.fromkeys(video_labels)))
        fps.append(entry.get("fps"))
    if classlist is None and isinstance(data.get("classlist"), list):
        classlist = [str(name) for name in data["classlist"]]
    classes = _class_list([a + b for a, b in zip(labels, labels_all)], classlist, path, videos)
    known_fps = [float(f) for f in fps] if all(f is not None for f in fps) and fps else None
    return Annotations(classes, videos, _normalise_subsets(subsets), durations, segments, labels, labels_all, known_fps)


def read_csv(path, classlist: Optional[Sequence[str]] = None,
             durations: Optional[Mapping[str, float]] = None) -> Annotations:
    """Annotations from a CSV ``video,subset,start,end,label[,duration]`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in ("video", "subset", "start", "end", "label") if name not in header]
        if missing:
            raise DataError(f"{path}: the header must hold video,subset,start,end,label "
                            f"(missing: {', '.join(missing)})")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    order: dict[str, dict] = {}
    for line, row in enumerate(rows, start=2):
        video = row["video"]
        if not video:
            raise DataError(f"{path}, line {line}: empty video name")
        check_video_name(video, f"{path}, line {line}")
        entry = order.setdefault(video, {"subset": row["subset"], "segments": [], "labels": [], "duration": None})
        if row["subset"] != entry["subset"]:
            raise DataError(f"{path}, line {line}: video {video} is in subset {row['subset']!r} here "
                            f"but {entry['subset']!r} above")
        if row.get("duration"):
            entry["duration"] = row["duration"]
        if row["start"] or row["end"] or row["label"]:
            if not row["label"]:
                raise DataError(f"{path}, line {line}: video {video}: a segment without a label")
            entry["segments"].append(_check_segment(row["start"], row["end"], path, video, len(entry["segments"])))
            entry["labels"].append(row["label"])
    videos = list(order)
    duration = []
    for video in videos:
        value = order[video]["duration"]
        if value is None and durations is not None and video in durations:
            value = durations[video]
        if value is None:
            raise DataError(f"{path}: video {video} has no duration (add a duration column, or give the videos "
                            "so that their durations are read from the files)")
        try:
            duration.append(float(value))
        except ValueError as error:
            raise DataError(f"{path}: video {video}: duration {value!r} is not a number") from error
    labels = [order[v]["labels"] for v in videos]
    classes = _class_list(labels, classlist, path, videos)
    return Annotations(classes, videos, _normalise_subsets([order[v]["subset"] for v in videos]), duration,
                       [order[v]["segments"] for v in videos], labels, [list(dict.fromkeys(x)) for x in labels])


def read_annotations(path, classlist=None, durations=None) -> Annotations:
    """JSON or CSV by the file's extension."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return read_activitynet_json(path, classlist)
    if path.suffix.lower() == ".csv":
        return read_csv(path, classlist, durations)
    raise DataError(f"{path}: annotations must be an ActivityNet-style .json or a .csv (video,subset,start,end,label)")


def _objects(values) -> np.ndarray:
    """A 1-D object array of lists (np.array would make a 2-D array of equal-length lists)."""
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array


def write_annotations(folder, annotations: Annotations, ambiguous: Optional[Path] = None,
                      extracted_fps: float = FEATURE_FPS) -> Path:
    """Write the annotation folder the loader reads (docs/METHOD.md#10-data-layout); returns the folder.

    Ambiguous_test.txt is copied from `ambiguous` when given, else written empty.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"{folder}: cannot create the annotation folder ({error.strerror})") from error
    a = annotations
    arrays = {
        "classlist": np.array([name.encode() for name in a.class_names]),
        "videoname": np.array([name.encode() for name in a.videos]),
        "subset": np.array([name.encode() for name in a.subset]),
        "duration": np.asarray(a.duration, dtype=np.float64).reshape(-1, 1),
        "labels_all": _objects(a.labels_all),
        "labels": _objects(a.labels),
        "segments": _objects(a.segments),
        "extracted_fps": np.full(len(a.videos), extracted_fps, dtype=np.int64),
    }
    if a.fps is not None:
        arrays["original_fps"] = np.asarray(a.fps, dtype=np.float64)
    try:
        for name, array in arrays.items():
            save_npy(folder / f"{name}.npy", array)
        text = Path(ambiguous).read_text() if ambiguous is not None else ""
        write_text(folder / "Ambiguous_test.txt", text)
    except OutputError:
        raise
    except OSError as error:
        raise DataError(f"{folder}: cannot write the annotation files ({error})") from error
    return folder


def to_activitynet_json(folder) -> dict:
    """An annotation folder (.npy files) as an ActivityNet-style JSON object, with "labels_all"
    and (when original_fps.npy exists) "fps" per video, and "classlist" at the top."""
    folder = Path(folder)

    def load(name):
        return load_npy(folder / f"{name}.npy", "annotation file")

    def text(value):
        return value.decode() if isinstance(value, bytes) else str(value)

    fps = load("original_fps") if (folder / "original_fps.npy").is_file() else None
    subset, duration, labels_all = load("subset"), load("duration"), load("labels_all")
    segments, labels = load("segments"), load("labels")
    database = {}
    for i, video in enumerate(load("videoname")):
        entry = {"subset": text(subset[i]), "duration": float(np.ravel(duration[i])[0]),
                 "labels_all": [text(x) for x in labels_all[i]],
                 "annotations": [{"segment": [float(s), float(e)], "label": text(label)}
                                 for (s, e), label in zip(segments[i], labels[i])]}
        if fps is not None:
            entry["fps"] = float(fps[i])
        database[text(video)] = entry
    return {"classlist": [text(c) for c in load("classlist")], "database": database}
