"""Reading and validating the features and annotations; the training sampler and the SCL exemplar draw.

The layout is the one of the CO2-Net / STCL-Net release (docs/METHOD.md#10-data-layout)::

    <path-dataset>/<name>-I3D-JOINTFeatures.npy    object array of (T_i, D) float arrays
    <path-dataset>/<name>-Annotations/
        classlist.npy, videoname.npy, subset.npy, duration.npy,
        labels_all.npy, labels.npy, segments.npy, Ambiguous_test.txt (optional)

The files are read by :mod:`utils.layout` (the one safe reader: a pickle in them cannot
run code), and every video name passes its name rule. Every problem with these files is
raised as ``utils.errors.DataError`` naming the file, the video and what is wrong.
Segments that reach past their video's duration are only warned about (the real THUMOS-14
annotations have 30 of them) and kept as they are.
"""
from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from dataset_record import RECORDS, DatasetRecord, record_for_subsets
from feature_store import FeatureStore
from utils.atomic import write_text
from utils.errors import DataError
from utils.layout import (AMBIGUOUS_FILE, REQUIRED_ANNOTATIONS, annotations_path, as_text, check_video_name,
                          features_path, has_store, load_npy, missing_file, store_paths, text_array)

_log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- samplers

def random_perturb(length: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Random-perturb sampling of a video of `length` snippets down or up to `n` (docs/METHOD.md#5-objective).

    With f_i = (i * length) // n: index i is drawn uniformly from f_i .. f_(i+1) inclusive
    (neighbouring bins share their boundary), the last from f_(n-1) .. length - 1.
    Returns (n,) int64; the identity when length == n; indices repeat when length < n.
    """
    if length == n:
        return np.arange(n, dtype=np.int64)
    floors = uniform_sample(length, n)
    highs = np.append(floors[1:], length - 1)  # f_(n-1) <= length - 1 always
    return floors + rng.integers(0, highs - floors + 1)


def uniform_sample(length: int, n: int) -> np.ndarray:
    """The released uniform sampling: (n,) int64 indices floor(i * length / n), exactly."""
    return np.arange(n, dtype=np.int64) * length // n


# ----------------------------------------------------------------------------- reading

def _per_video(path: Path, num_videos: int, videoname_path: Path) -> np.ndarray:
    """An annotation array with one entry per video; its length must match videoname.npy."""
    array = load_npy(path, "annotation file")
    if not isinstance(array, np.ndarray) or array.ndim == 0:
        raise DataError(f"{path}: expected one entry per video, got {type(array).__name__}")
    if len(array) != num_videos:
        raise DataError(f"{path} has {len(array)} entries but {videoname_path} names {num_videos} videos")
    return array


def _class_indices(value, class_index: dict[str, int], path: Path, video: str) -> list[int]:
    """Class names of one video (a list of str/bytes) as indices into the class list."""
    if isinstance(value, (str, bytes, np.str_, np.bytes_)) or not hasattr(value, "__iter__"):
        raise DataError(f"{path}: video {video}: expected a list of class names, got {value!r}")
    indices = []
    for item in value:
        name = as_text(item, path, f"video {video}")
        if name not in class_index:
            raise DataError(f"{path}: video {video}: label {name!r} is not in classlist.npy")
        indices.append(class_index[name])
    return indices


def _segment_array(value, path: Path, video: str) -> np.ndarray:
    """One video's segments as (n, 2) float64 seconds, finite, with start <= end."""
    try:
        segments = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DataError(f"{path}: video {video}: segments are not [start, end] number pairs: {value!r}") from error
    if segments.size == 0:
        return np.zeros((0, 2))
    if segments.ndim != 2 or segments.shape[1] != 2:
        raise DataError(f"{path}: video {video}: expected a list of [start, end] pairs, got shape {segments.shape}")
    if not np.isfinite(segments).all():
        raise DataError(f"{path}: video {video}: a segment time is NaN or infinite")
    reversed_rows = np.flatnonzero(segments[:, 1] < segments[:, 0])
    if len(reversed_rows):
        start, end = segments[reversed_rows[0]]
        raise DataError(f"{path}: video {video}: segment {reversed_rows[0]} ends before it starts ({start} > {end})")
    return segments


@dataclass(frozen=True)
class _Annotations:
    """The annotation folder, validated. V videos, C classes."""

    class_names: list[str]  # (C,)
    video_names: list[str]  # (V,)
    subset: list[str]  # (V,)
    duration: np.ndarray  # (V,) float64 seconds
    video_classes: list[list[int]]  # (V,) class indices from labels_all
    segments: list[np.ndarray]  # (V,) of (n_i, 2) float64 seconds
    segment_labels: list[np.ndarray]  # (V,) of (n_i,) int64


def _read_class_names(folder: Path, num_class: int) -> list[str]:
    path = folder / "classlist.npy"
    names = text_array(path)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DataError(f"{path}: class names listed twice: {duplicates}")
    if len(names) != num_class:
        raise DataError(f"{path} lists {len(names)} classes but num_class is {num_class} (set --num-class)")
    return names


def _read_video_names(path: Path) -> list[str]:
    names = text_array(path)
    seen: set[str] = set()
    for index, name in enumerate(names):
        check_video_name(name, f"{path}: entry {index}")
        if name in seen:
            raise DataError(f"{path}: video {name} is listed twice (again at index {index})")
        seen.add(name)
    return names


def _read_duration(path: Path, num_videos: int) -> np.ndarray:
    raw = _per_video(path, num_videos, path.parent / "videoname.npy")
    try:
        duration = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DataError(f"{path}: durations are not numbers") from error
    if duration.shape not in ((num_videos,), (num_videos, 1)):
        raise DataError(f"{path}: expected shape ({num_videos}, 1), got {duration.shape}")
    duration = duration.reshape(num_videos)
    bad = np.flatnonzero(~np.isfinite(duration) | (duration < 0))
    if len(bad):
        raise DataError(f"{path}: video index {bad[0]} has duration {duration[bad[0]]}")
    return duration


def _read_annotations(folder: Path, num_class: int) -> _Annotations:
    """Read and validate every required annotation file of `folder`."""
    if not folder.is_dir():
        raise missing_file(folder, "annotation folder")
    for name in REQUIRED_ANNOTATIONS:
        if not (folder / f"{name}.npy").is_file():
            raise missing_file(folder / f"{name}.npy", "annotation file")
    class_names = _read_class_names(folder, num_class)
    class_index = {name: c for c, name in enumerate(class_names)}
    videoname_path = folder / "videoname.npy"
    video_names = _read_video_names(videoname_path)
    num_videos = len(video_names)
    subset_path = folder / "subset.npy"
    subset = text_array(subset_path)
    if len(subset) != num_videos:
        raise DataError(f"{subset_path} has {len(subset)} entries but {videoname_path} names {num_videos} videos")
    duration = _read_duration(folder / "duration.npy", num_videos)
    labels_all_path, labels_path, segments_path = (folder / f"{n}.npy" for n in ("labels_all", "labels", "segments"))
    labels_all = _per_video(labels_all_path, num_videos, videoname_path)
    labels = _per_video(labels_path, num_videos, videoname_path)
    raw_segments = _per_video(segments_path, num_videos, videoname_path)

    video_classes, segments, segment_labels = [], [], []
    for video, name in enumerate(video_names):
        video_classes.append(_class_indices(labels_all[video], class_index, labels_all_path, name))
        video_segments = _segment_array(raw_segments[video], segments_path, name)
        labels_of_segments = _class_indices(labels[video], class_index, labels_path, name)
        if len(labels_of_segments) != len(video_segments):
            raise DataError(f"video {name}: {labels_path} gives {len(labels_of_segments)} segment labels "
                            f"but {segments_path} gives {len(video_segments)} segments")
        segments.append(video_segments)
        segment_labels.append(np.asarray(labels_of_segments, dtype=np.int64))
    return _Annotations(class_names, video_names, subset, duration, video_classes, segments, segment_labels)


#: How many videos a warning names; the full list goes to a file (see `warn_about_videos`).
WARNING_NAMES = 5
LATE_SEGMENTS_FILE = "segments_past_duration.txt"


def late_segments(video_names: list[str], segments: list[np.ndarray], duration: np.ndarray) -> list[tuple[str, int]]:
    """(video name, how many of its segments end after its duration), for every such video."""
    return [(name, int((seg[:, 1] > length).sum()))
            for name, seg, length in zip(video_names, segments, duration) if (seg[:, 1] > length).any()]


def warn_about_videos(what: str, videos: list[tuple[str, int]], report_dir: Path | None, file_name: str,
                      stacklevel: int = 3) -> Path | None:
    """One readable warning about many videos: the count, the first WARNING_NAMES of them and,
    when there are more, where the full list is (``report_dir/file_name``, one "name count"
    line per video, written atomically; without a report_dir, the dataset attribute).

    videos: (name, count) pairs. Returns the path of the full list, if one was written.
    """
    shown = ", ".join(f"{name} ({count})" for name, count in videos[:WARNING_NAMES])
    message = f"{what} in {len(videos)} videos: {shown}"
    written = None
    if len(videos) > WARNING_NAMES:
        message += f" and {len(videos) - WARNING_NAMES} more"
        if report_dir is not None:
            written = write_text(Path(report_dir) / file_name, "".join(f"{name} {count}\n" for name, count in videos))
            message += f"; the full list is in {written}"
        else:
            message += "; SampleDataset.late_segments lists them all"
    warnings.warn(message, stacklevel=stacklevel)
    return written


def _choose_record(dataset_name: str, subset: list[str], path: Path) -> DatasetRecord:
    """The record whose split this dataset follows: its own if listed in dataset_record.RECORDS,
    else THUMOS-14 (validation/test) or ActivityNet (training/validation) from the subset values."""
    record = RECORDS.get(dataset_name) or record_for_subsets(subset)
    unexpected = sorted(set(subset) - set(record.subsets))
    if unexpected:
        known = "" if dataset_name in RECORDS else " (THUMOS-14), or training/validation/testing (ActivityNet)"
        raise DataError(f"{path}: unexpected subset values {unexpected}; the {record.name} record expects "
                        f"{list(record.subsets)}{known}")
    return record


def check_snippet_features(value, where: str, feature_size: int, channels_hint: str = "") -> np.ndarray:
    """One video's snippet features as (T, D) float32, checked for type, shape and finiteness.

    ``where`` starts every message (the file, and the video when the file holds several);
    ``channels_hint`` ends the message about a wrong D. Used by the loader and by localize.py.
    """
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise DataError(f"{where}: features are not real numbers (dtype {array.dtype})")
    if array.ndim != 2:
        raise DataError(f"{where}: expected (T, {feature_size}) snippet features, got shape {array.shape}")
    if array.shape[1] != feature_size:
        raise DataError(f"{where}: features have {array.shape[1]} channels{channels_hint}")
    if array.shape[0] == 0:
        raise DataError(f"{where}: features have zero snippets (a video shorter than one 16-frame snippet?)")
    array = array.astype(np.float32, copy=False)
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=1))
        raise DataError(f"{where}: features hold {int((~finite).sum())} NaN/Inf values, in {len(bad)} of "
                        f"{len(array)} snippets (first: snippet {bad[0]})")
    return array


def _video_features(value, path: Path, video: str, feature_size: int) -> np.ndarray:
    """One video of the joint features file as (T, D) float32 (:func:`check_snippet_features`)."""
    return check_snippet_features(value, f"{path}: video {video}", feature_size,
                                  f" but feature_size is {feature_size} (set --feature-size)")


def _read_features(path: Path, video_names: list[str], feature_size: int) -> list[np.ndarray]:
    """The features file as a list of (T_i, D) float32 arrays, one per video of videoname.npy."""
    raw = load_npy(path, "features file")
    if isinstance(raw, np.ndarray) and raw.dtype != object:
        raise DataError(f"{path}: expected one (T_i, {feature_size}) array per video (a 1-D object array), "
                        f"got a {raw.dtype} array of shape {raw.shape}")
    if not isinstance(raw, (np.ndarray, list, tuple)) or np.ndim(raw) != 1:
        raise DataError(f"{path}: expected a 1-D object array (or list) of per-video features, "
                        f"got {type(raw).__name__}")
    if len(raw) != len(video_names):
        raise DataError(f"{path} holds {len(raw)} feature arrays but videoname.npy names {len(video_names)} videos")
    return [_video_features(value, path, name, feature_size) for value, name in zip(raw, video_names)]


def _read_ambiguous(path: Path, video_index: dict[str, int]) -> dict[int, np.ndarray]:
    """Ambiguous_test.txt as {video index: (K, 2) float64 seconds}; lines of absent videos are skipped."""
    if not path.is_file():
        return {}
    intervals: dict[int, list[tuple[float, float]]] = {}
    absent: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        name, start, end = _parse_ambiguous_line(line, path, number)
        if name in video_index:
            intervals.setdefault(video_index[name], []).append((start, end))
        else:
            absent.append(name)
    if absent:
        _log.info("%s: %d lines name videos that are not in the dataset and are ignored: %s",
                  path, len(absent), sorted(set(absent)))
    return {video: np.asarray(times, dtype=np.float64) for video, times in intervals.items()}


def _parse_ambiguous_line(line: str, path: Path, number: int) -> tuple[str, float, float]:
    fields = line.split()
    problem = f"{path}, line {number}: expected 'video_name start_s end_s', got {line!r}"
    if len(fields) != 3:
        raise DataError(problem)
    try:
        start, end = float(fields[1]), float(fields[2])
    except ValueError as error:
        raise DataError(problem) from error
    if not (np.isfinite(start) and np.isfinite(end) and start <= end):
        raise DataError(f"{problem} (times must be finite with start <= end)")
    return fields[0], start, end


# ----------------------------------------------------------------------------- the dataset

class SampleDataset:
    """Features, annotations, training batches and the SCL exemplar draw of one dataset
    (the exemplar videos themselves come from ``exemplar_source.ExemplarSource``).

    V videos, C classes, D feature channels, N = max_seqlen resampled snippets.

    Attributes:
        class_names: (C,) list[str], the order of every class axis.
        video_names: (V,) list[str].
        features: (V,) sequence of (T_i, D) float32 arrays (views of an in-memory store;
            read from disk on access when the store is memory-mapped).
        labels: (V, C) float32 multi-hot video labels, from labels_all.npy.
        train_index, test_index: int64 video indices of the training and test lists
            (THUMOS: subsets 'validation' / 'test'; ActivityNet: 'training' / 'validation',
            both without the videos of fewer than `min_snippets` snippets).
        class_train_index: (C,) list of int64 arrays, the exemplar pools: training-subset
            videos labelled with class c whose features are not all zero, before the
            short-video drop (docs/METHOD.md#6-activitynet). Training pairs are drawn from them too.
        train_videos: (V_train,) int64, every video of the training subset, in order.
        evaluation_index: int64, every video of the test subset, short ones included: the
            detection ground truth covers them all (their instances count as misses).
        store: the :class:`feature_store.FeatureStore` every video's snippets are read
            from: in memory (the joint features file) or memory-mapped (a feature store).
        train_offsets, train_lengths: (V_train,) int64, where each of those videos starts
            in `store.snippets` and how many snippets it has.
        segments: (V,) list of (n_i, 2) float64 ground-truth [start, end] in seconds.
        segment_labels: (V,) list of (n_i,) int64 class index of each segment.
        duration: (V,) float64 seconds.
        ambiguous: {video index: (K, 2) float64 seconds} from Ambiguous_test.txt (THUMOS
            only; lines naming videos that are not in the dataset are skipped).
        holdout_index: int64, the training videos kept out of training by ``holdout`` (a
            fraction of train_index, drawn with ``holdout_seed``; empty when it is 0): they are
            in neither train_index nor class_train_index, and :meth:`holdout_view` evaluates on them.
        late_segments: (name, count) of every video with segments ending after its
            duration; they are kept, and one warning names the first few (the full list is
            written to ``report_dir``/segments_past_duration.txt when a report_dir is given,
            e.g. the run folder).
        dataset_name, record: the name, and the dataset record whose split it follows.
        num_class, feature_size, max_seqlen, num_similar, batch_size: as given.

    ``require_training=False`` accepts a dataset without training videos (only test
    videos, e.g. for a checkpoint that carries its exemplar bank): nothing can then be
    trained or drawn from it, only evaluated.
    """

    def __init__(self, path_dataset, dataset_name="Thumos14reduced", *, num_class=20, feature_size=2048,
                 max_seqlen=500, num_similar=3, batch_size=10, min_snippets=None, feature_format="auto",
                 holdout=0.0, holdout_seed=0, require_training=True, report_dir=None):
        _check_sampling_options(max_seqlen, num_similar, batch_size)
        self.num_class = num_class
        self.feature_size = feature_size
        self.max_seqlen = max_seqlen
        self.num_similar = num_similar
        self.batch_size = batch_size

        folder = annotations_path(path_dataset, dataset_name)
        feature_format = _choose_feature_format(path_dataset, dataset_name, feature_format)
        feature_file = features_path(path_dataset, dataset_name)
        if feature_format == "joint" and not feature_file.is_file():
            raise missing_file(feature_file, "features file")
        annotations = _read_annotations(folder, num_class)
        #: (video name, count) of every video with segments ending after its duration (kept as they are)
        self.late_segments = late_segments(annotations.video_names, annotations.segments, annotations.duration)
        if self.late_segments:
            warn_about_videos(f"{folder / 'segments.npy'}: {sum(n for _, n in self.late_segments)} segments end "
                              "after their video's duration (kept as they are)", self.late_segments, report_dir,
                              LATE_SEGMENTS_FILE)
        self.dataset_name = dataset_name
        #: the dataset record whose split this dataset follows (dataset_record.py)
        self.record = record = _choose_record(dataset_name, annotations.subset, folder / "subset.npy")
        if feature_format == "store":
            self.store = FeatureStore.open(path_dataset, dataset_name, annotations.video_names, feature_size)
        else:
            self.store = FeatureStore.from_arrays(_read_features(feature_file, annotations.video_names, feature_size))
        if min_snippets is None:
            min_snippets = record.min_snippets

        self.class_names = annotations.class_names
        self.video_names = annotations.video_names
        self.duration = annotations.duration
        self.segments = annotations.segments
        self.segment_labels = annotations.segment_labels
        self.labels = _multi_hot(annotations.video_classes, num_class)

        subset = np.asarray(annotations.subset)
        lengths = self.store.lengths
        long_enough = lengths >= min_snippets
        self.train_index = np.flatnonzero((subset == record.train_subset) & long_enough)
        self.test_index = np.flatnonzero((subset == record.test_subset) & long_enough)
        self.train_videos = np.flatnonzero(subset == record.train_subset)
        self.evaluation_index = np.flatnonzero(subset == record.test_subset)
        self.class_train_index = [np.flatnonzero((subset == record.train_subset) & self.store.has_signal
                                                 & (self.labels[:, c] > 0)) for c in range(num_class)]
        self.holdout_index = np.zeros(0, dtype=np.int64)
        if holdout > 0:
            self._hold_out(folder, holdout, holdout_seed)
        if require_training:
            self._check_training_lists(folder, min_snippets)

        self.train_lengths = lengths[self.train_videos]
        self.train_offsets = self.store.offsets[self.train_videos]
        self.features = _Videos(self.store)

        self.ambiguous = _read_ambiguous(folder / AMBIGUOUS_FILE, {n: i for i, n in enumerate(self.video_names)})
        self._pair_classes = np.array([c for c, pool in enumerate(self.class_train_index) if len(pool) >= 2])
        if require_training and num_similar > 0 and len(self._pair_classes) == 0:
            raise DataError(f"{folder}: no class has two training videos, so no training pair can be drawn "
                            "(set --num-similar 0)")
        self._small_pools_warned: set[int] = set()

    def _hold_out(self, folder: Path, fraction: float, seed: int) -> None:
        """Keep round(fraction * len(train_index)) seeded training videos (at least one) out of training."""
        count = max(1, round(fraction * len(self.train_index)))
        held = np.sort(np.random.default_rng(seed).choice(self.train_index, size=count, replace=False))
        what = (f"--holdout {fraction:g} (--holdout-seed {seed}) keeps {count} of the {len(self.train_index)} "
                "training videos")
        if not any(len(self.segments[v]) for v in held):
            raise DataError(f"{folder}: {what} out of training, and none of them has a temporal annotation "
                            "(segments.npy) to select a checkpoint on; raise --holdout or change --holdout-seed")
        pools = [np.setdiff1d(pool, held) for pool in self.class_train_index]
        for c, (before, after) in enumerate(zip(self.class_train_index, pools)):
            if len(after) < 2 and len(after) < len(before):
                raise DataError(f"{folder}: {what} out of training and leaves class {self.class_names[c]!r} with "
                                f"{len(after)} training video(s) of its {len(before)}; every class keeps at least two "
                                "(training pairs, exemplars): lower --holdout or change --holdout-seed")
        self.holdout_index = held
        self.train_index = np.setdiff1d(self.train_index, held)
        self.class_train_index = pools

    def holdout_view(self) -> "SampleDataset":
        """This dataset with the held-out training videos as its test list: evaluating it (inference.test,
        protocol.Reference.from_dataset) scores them against their temporal annotations. Shares every array."""
        if len(self.holdout_index) == 0:
            raise ValueError("no video is held out (holdout=0)")
        view = copy.copy(self)
        view.test_index = view.evaluation_index = self.holdout_index
        view.ambiguous = {}
        return view

    def _check_training_lists(self, folder: Path, min_snippets: int) -> None:
        for c, pool in enumerate(self.class_train_index):
            if len(pool) == 0:
                raise DataError(f"{folder}: class {self.class_names[c]!r} has no training video "
                                "(labels_all.npy / subset.npy), so it has no exemplars")
        if len(self.train_index) == 0:
            raise DataError(f"{folder}: no training video has at least {min_snippets} snippets")

    @property
    def num_test(self) -> int:
        """Number of test videos."""
        return len(self.test_index)

    def load_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One training batch (docs/METHOD.md#5-objective).

        `num_similar` classes drawn with replacement, two distinct videos of each at
        positions (2i, 2i+1), then batch_size - 2 * num_similar training videos drawn with
        replacement; each resampled to N = max_seqlen snippets by random-perturb.
        Returns features (B, N, D) float32, labels (B, C) float32, video indices (B,) int64.
        """
        extra = rng.choice(self.train_index, size=self.batch_size - 2 * self.num_similar)
        video_indices = np.concatenate([self._draw_pairs(rng), extra]).astype(np.int64)
        store = self.store
        rows = np.stack([store.offsets[v] + random_perturb(int(store.lengths[v]), self.max_seqlen, rng)
                         for v in video_indices])
        return store.gather(rows), self.labels[video_indices], video_indices

    def _draw_pairs(self, rng: np.random.Generator) -> np.ndarray:
        """(2 * num_similar,) video indices: two distinct videos of each of num_similar random classes."""
        if self.num_similar == 0:
            return np.zeros(0, dtype=np.int64)
        classes = rng.choice(self._pair_classes, size=self.num_similar)
        return np.concatenate([rng.choice(self.class_train_index[c], size=2, replace=False) for c in classes])

    def exemplar_draw(self, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The SCL exemplar draw (docs/METHOD.md#3-scl): videos (C, M) and their snippets (C, M, N), int64.

        Per class, M distinct videos of its pool (with replacement, and a warning once per
        class, when the pool holds fewer than M), each resampled by random-perturb to N;
        ``samples[c, j]`` are snippet indices within video ``videos[c, j]``.
        """
        videos = np.empty((self.num_class, m), dtype=np.int64)
        samples = np.empty((self.num_class, m, self.max_seqlen), dtype=np.int64)
        for c, pool in enumerate(self.class_train_index):
            for j, video in enumerate(self._draw_exemplar_videos(c, pool, m, rng)):
                videos[c, j] = video
                samples[c, j] = random_perturb(int(self.store.lengths[video]), self.max_seqlen, rng)
        return videos, samples

    def _draw_exemplar_videos(self, c: int, pool: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
        if len(pool) >= m:
            return rng.choice(pool, size=m, replace=False)
        if c not in self._small_pools_warned:
            self._small_pools_warned.add(c)
            warnings.warn(f"class {self.class_names[c]!r} has {len(pool)} training videos, fewer than the {m} "
                          "exemplars per class; drawing them with replacement", stacklevel=3)
        return rng.choice(pool, size=m, replace=True)

    def test_videos(self) -> Iterator[tuple[np.ndarray, np.ndarray, str, int]]:
        """Yield (features (T, D) float32, labels (C,) float32, name, video index) over test_index."""
        for video in self.test_index:
            yield self.features[video], self.labels[video], self.video_names[video], int(video)


class _Videos(Sequence):
    """``features[v]``: video v of a FeatureStore as (T_v, D) float32 (see FeatureStore.video)."""

    def __init__(self, store: FeatureStore):
        self._store = store

    def __len__(self) -> int:
        return len(self._store)

    def __getitem__(self, v):
        if isinstance(v, slice):
            return [self._store.video(i) for i in range(*v.indices(len(self)))]
        return self._store.video(int(v))


def _choose_feature_format(path_dataset, dataset_name: str, feature_format: str) -> str:
    """'joint' (the released pickled file) or 'store' (memory-mapped); 'auto' takes the store when there is one."""
    if feature_format not in ("auto", "joint", "store"):
        raise ValueError(f"feature_format must be auto, joint or store, got {feature_format!r}")
    if feature_format == "auto":
        return "store" if has_store(path_dataset, dataset_name) else "joint"
    if feature_format == "store" and not has_store(path_dataset, dataset_name):
        raise missing_file(store_paths(path_dataset, dataset_name)[2], "feature store")
    return feature_format


def _check_sampling_options(max_seqlen: int, num_similar: int, batch_size: int) -> None:
    if max_seqlen < 1:
        raise ValueError(f"max_seqlen must be at least 1, got {max_seqlen}")
    if num_similar < 0 or batch_size < 2 * num_similar:
        raise ValueError(f"a batch of {batch_size} videos cannot hold {num_similar} pairs")


def _multi_hot(video_classes: list[list[int]], num_class: int) -> np.ndarray:
    """(V, C) float32 with a 1 for every class a video is labelled with."""
    labels = np.zeros((len(video_classes), num_class), dtype=np.float32)
    for video, classes in enumerate(video_classes):
        labels[video, classes] = 1.0
    return labels


def build_dataset(args, *, training: bool = True, require_training: bool = True, report_dir=None) -> SampleDataset:
    """The dataset of the options: the one builder of main.py, test.py and localize.py.

    args: the parsed options (``--path-dataset``, ``--dataset-name``, ``--num-class``,
    ``--feature-size``, ``--max-seqlen``, ``--feature-format``; with ``training`` the batch
    composition ``--batch-size``, ``--num-similar``). With ``--select-on holdout`` (restored
    from the checkpoint by test.py and localize.py) the held-out training videos are kept
    out of the training lists and the exemplar pools, at training and at evaluation alike;
    ``require_training=False`` (a checkpoint with its exemplar bank: no exemplar is drawn)
    reads the test videos only, so the training videos may be absent. ``report_dir``: where
    the lists behind its warnings go (the run folder).
    """
    sampling = ({"num_similar": args.num_similar, "batch_size": args.batch_size} if training
                else {"num_similar": 0})  # evaluation draws exemplars, never training pairs
    holdout = args.holdout if args.select_on == "holdout" and require_training else 0.0
    return SampleDataset(args.path_dataset, args.dataset_name, num_class=args.num_class,
                         feature_size=args.feature_size, max_seqlen=args.max_seqlen,
                         feature_format=args.feature_format, holdout=holdout, holdout_seed=args.holdout_seed,
                         require_training=require_training, report_dir=report_dir, **sampling)
