"""Every bad input to the loader is a DataError (or, for late segments, a warning) naming the file and video."""
import copy
import functools
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset.make_demo import make_demo_dataset
from tests.helpers import exemplar_rows
from utils.errors import DataError
from wsad_dataset import REQUIRED_ANNOTATIONS, SampleDataset

NAME = "Thumos14reduced"
FEATURES = f"{NAME}-I3D-JOINTFeatures.npy"
ANNOTATIONS = f"{NAME}-Annotations"
OBJECT_FILES = ("labels_all", "labels", "segments")
NUM_CLASS, FEATURE_SIZE = 2, 8


def _object_array(items):
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    return array


@functools.cache
def _base_layout() -> dict:
    """A valid small dataset (10 training and 4 test videos, 2 classes, D = 8) as editable Python values."""
    with tempfile.TemporaryDirectory() as tmp:
        root = make_demo_dataset(tmp, num_train=10, num_test=4, num_class=NUM_CLASS, feature_size=FEATURE_SIZE)
        folder = root / ANNOTATIONS
        layout = {name: list(np.load(folder / f"{name}.npy", allow_pickle=True)) for name in REQUIRED_ANNOTATIONS}
        layout["duration"] = np.load(folder / "duration.npy")
        layout["features"] = list(np.load(root / FEATURES, allow_pickle=True))
        layout["ambiguous"] = (folder / "Ambiguous_test.txt").read_text().splitlines()
    return layout


@pytest.fixture
def layout():
    return copy.deepcopy(_base_layout())


def _write(root: Path, layout: dict) -> Path:
    folder = root / ANNOTATIONS
    folder.mkdir(exist_ok=True)
    for name in REQUIRED_ANNOTATIONS:
        values = layout[name]
        array = _object_array(values) if name in OBJECT_FILES else np.array(values)
        np.save(folder / f"{name}.npy", array, allow_pickle=True)
    (folder / "Ambiguous_test.txt").write_text("".join(line + "\n" for line in layout["ambiguous"]))
    np.save(root / FEATURES, _object_array(layout["features"]), allow_pickle=True)
    return root


def _load(root: Path) -> SampleDataset:
    return SampleDataset(root, NAME, num_class=NUM_CLASS, feature_size=FEATURE_SIZE, max_seqlen=16,
                         num_similar=2, batch_size=6)


def _error(root: Path) -> str:
    with pytest.raises(DataError) as caught:
        _load(root)
    return str(caught.value)


def _video(layout, subset=b"validation", at_least_segments=0):
    """Index and name of the first video of `subset` with enough segments."""
    index = next(i for i, (s, seg) in enumerate(zip(layout["subset"], layout["segments"]))
                 if s == subset and len(seg) >= at_least_segments)
    return index, layout["videoname"][index].decode()


def test_the_base_layout_loads(tmp_path, layout):
    dataset = _load(_write(tmp_path, layout))
    assert len(dataset.train_index) == 10 and dataset.num_test == 4


# ----------------------------------------------------------------------------- missing and unreadable files

def test_missing_features_file_says_where_and_how_to_get_data(tmp_path, layout):
    root = _write(tmp_path, layout)
    (root / FEATURES).unlink()
    message = _error(root)
    assert str(root / FEATURES) in message
    assert "python -m dataset.make_demo" in message and "CO2-Net/STCL-Net release" in message


def test_missing_annotation_folder(tmp_path):
    np.save(tmp_path / FEATURES, _object_array([np.zeros((3, FEATURE_SIZE))]), allow_pickle=True)
    message = _error(tmp_path)
    assert str(tmp_path / ANNOTATIONS) in message and "make_demo" in message


@pytest.mark.parametrize("name", REQUIRED_ANNOTATIONS)
def test_missing_annotation_file(tmp_path, layout, name):
    root = _write(tmp_path, layout)
    (root / ANNOTATIONS / f"{name}.npy").unlink()
    assert str(root / ANNOTATIONS / f"{name}.npy") in _error(root)


@pytest.mark.parametrize("relative", [FEATURES, f"{ANNOTATIONS}/segments.npy", f"{ANNOTATIONS}/classlist.npy"])
def test_truncated_file(tmp_path, layout, relative):
    root = _write(tmp_path, layout)
    path = root / relative
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated") as caught:
        _load(root)
    assert str(path) in str(caught.value) and caught.value.__cause__ is not None


def test_file_that_is_not_npy(tmp_path, layout):
    root = _write(tmp_path, layout)
    (root / ANNOTATIONS / "subset.npy").write_text("validation,test\n")
    assert "subset.npy" in _error(root)


# ----------------------------------------------------------------------------- features

def test_number_of_feature_arrays_differs_from_number_of_videos(tmp_path, layout):
    layout["features"].pop()
    message = _error(_write(tmp_path, layout))
    assert FEATURES in message and "13 feature arrays" in message and "14 videos" in message


def test_features_as_one_numeric_array_are_refused(tmp_path, layout):
    root = _write(tmp_path, layout)
    np.save(root / FEATURES, np.zeros((14, 100, FEATURE_SIZE), dtype=np.float32))
    assert "object array" in _error(root)


@pytest.mark.parametrize("bad, problem", [
    (lambda f: f[:, 0], "shape"),
    (lambda f: f[:, :-1], "feature_size"),
    (lambda f: f[:0], "zero snippets"),
    (lambda f: np.where(np.arange(len(f))[:, None] == 3, np.nan, f), "NaN/Inf"),
    (lambda f: np.where(np.arange(len(f))[:, None] == 3, np.inf, f), "NaN/Inf"),
    (lambda f: f.astype(str), "not real numbers"),
])
def test_bad_video_features_name_the_video(tmp_path, layout, bad, problem):
    index, name = _video(layout, b"test")
    layout["features"][index] = bad(layout["features"][index])
    message = _error(_write(tmp_path, layout))
    assert FEATURES in message and name in message and problem in message


# ----------------------------------------------------------------------------- annotations

@pytest.mark.parametrize("name", ["subset", "duration", "labels_all", "labels", "segments"])
def test_annotation_arrays_of_mismatched_lengths(tmp_path, layout, name):
    layout[name] = layout[name][:-1]
    message = _error(_write(tmp_path, layout))
    assert f"{name}.npy" in message and "videoname.npy" in message


@pytest.mark.parametrize("name", ["labels_all", "labels"])
def test_label_not_in_classlist(tmp_path, layout, name):
    index, video = _video(layout, at_least_segments=1)
    layout[name][index] = ["Juggling"] + layout[name][index][1:]
    message = _error(_write(tmp_path, layout))
    assert f"{name}.npy" in message and video in message and "'Juggling'" in message


def test_labels_as_a_bare_string(tmp_path, layout):
    index, video = _video(layout)
    layout["labels_all"][index] = layout["labels_all"][index][0]
    message = _error(_write(tmp_path, layout))
    assert video in message and "list of class names" in message


def test_segment_ending_before_it_starts(tmp_path, layout):
    index, video = _video(layout, b"test", at_least_segments=2)
    start, end = layout["segments"][index][1]
    layout["segments"][index][1] = [end, start]
    message = _error(_write(tmp_path, layout))
    assert "segments.npy" in message and video in message and "segment 1 ends before it starts" in message


def test_segment_that_is_not_a_pair(tmp_path, layout):
    index, video = _video(layout, at_least_segments=1)
    layout["segments"][index][0] = [1.0, 2.0, 3.0]
    assert video in _error(_write(tmp_path, layout))


def test_segment_past_the_duration_is_a_warning_and_is_kept(tmp_path, layout):
    index, video = _video(layout, b"test", at_least_segments=1)
    late_end = float(layout["duration"][index, 0]) + 5.0
    layout["segments"][index][-1][1] = late_end
    with pytest.warns(UserWarning, match="end after their video's duration") as caught:
        dataset = _load(_write(tmp_path, layout))
    assert f"{video} (1)" in str(caught[0].message)
    assert dataset.segments[index][-1, 1] == late_end


def test_segment_labels_and_segments_of_different_counts(tmp_path, layout):
    index, video = _video(layout, at_least_segments=1)
    layout["labels"][index] = layout["labels"][index] + layout["labels"][index][:1]
    message = _error(_write(tmp_path, layout))
    assert video in message and "labels.npy" in message and "segments.npy" in message


def test_class_without_training_video(tmp_path, layout):
    for i, subset in enumerate(layout["subset"]):
        if subset == b"validation":
            layout["labels_all"][i] = [name for name in layout["labels_all"][i] if name != "Action1"] or ["Action0"]
    message = _error(_write(tmp_path, layout))
    assert "'Action1' has no training video" in message and ANNOTATIONS in message


@pytest.mark.parametrize("values", [[b"train"], [b"training", b"test"], [b""]])
def test_unexpected_subset_values(tmp_path, layout, values):
    for i, value in enumerate(values):
        layout["subset"][i] = value
    message = _error(_write(tmp_path, layout))
    assert "subset.npy" in message and repr(values[-1].decode()) in message


def test_class_count_differs_from_num_class(tmp_path, layout):
    root = _write(tmp_path, layout)
    with pytest.raises(DataError, match="classlist.npy lists 2 classes but num_class is 20"):
        SampleDataset(root, NAME, num_class=20, feature_size=FEATURE_SIZE)


def test_video_listed_twice(tmp_path, layout):
    layout["videoname"][3] = layout["videoname"][2]
    assert f"video {layout['videoname'][2].decode()} is listed twice" in _error(_write(tmp_path, layout))


def test_negative_duration(tmp_path, layout):
    layout["duration"][4, 0] = -1.0
    assert "duration.npy" in _error(_write(tmp_path, layout))


# ----------------------------------------------------------------------------- Ambiguous_test.txt

@pytest.mark.parametrize("line", ["video_test_0000001 12.0", "video_test_0000001  1.0 two", "a 3.0 1.0"])
def test_ambiguous_line_that_does_not_parse(tmp_path, layout, line):
    layout["ambiguous"].insert(1, line)
    message = _error(_write(tmp_path, layout))
    assert "Ambiguous_test.txt, line 2" in message


def test_ambiguous_lines_of_absent_videos_are_ignored(tmp_path, layout):
    layout["ambiguous"].append("video_test_0001292  78.4 113.2")
    layout["ambiguous"].append("")
    dataset = _load(_write(tmp_path, layout))
    assert sum(len(times) for times in dataset.ambiguous.values()) == len(layout["ambiguous"]) - 2


# ----------------------------------------------------------------------------- random malformed sets

def _pick(data, items):
    return data.draw(st.integers(0, len(items) - 1)) if len(items) else 0


def _drop_entry(layout, data):
    name = data.draw(st.sampled_from(REQUIRED_ANNOTATIONS + ("features",)))
    layout[name] = layout[name][:-1]


def _bad_label(layout, data):
    name = data.draw(st.sampled_from(["labels_all", "labels"]))
    i = _pick(data, layout[name])
    layout[name][i] = list(layout[name][i]) + ["NoSuchClass"]


def _reverse_segment(layout, data):
    i = _pick(data, layout["segments"])
    if len(layout["segments"][i]):
        start, end = layout["segments"][i][0]
        layout["segments"][i][0] = [end + 1.0, start]


def _ragged_segment(layout, data):
    i = _pick(data, layout["segments"])
    layout["segments"][i] = list(layout["segments"][i]) + [[1.0]]


def _late_segment(layout, data):
    i = _pick(data, layout["segments"])
    if len(layout["segments"][i]) and i < len(layout["duration"]):
        layout["segments"][i][-1][1] = float(layout["duration"][i, 0]) + 3.0


def _bad_subset(layout, data):
    layout["subset"][_pick(data, layout["subset"])] = data.draw(st.sampled_from([b"train", b"val", b"", b"testing"]))


def _move_to_test(layout, data):
    layout["subset"][_pick(data, layout["subset"])] = b"test"


def _feature_value(value):
    def mutate(layout, data):
        i = _pick(data, layout["features"])
        features = layout["features"][i].copy()
        if len(features):
            features[_pick(data, features)] = value
        layout["features"][i] = features
    return mutate


def _feature_shape(shape):
    def mutate(layout, data):
        layout["features"][_pick(data, layout["features"])] = np.ones(shape, dtype=np.float32)
    return mutate


def _zero_video(layout, data):
    i = _pick(data, layout["features"])
    layout["features"][i] = np.zeros_like(layout["features"][i])


def _drop_segment_label(layout, data):
    i = _pick(data, layout["labels"])
    layout["labels"][i] = list(layout["labels"][i])[1:]


def _unlabel_class(layout, data):
    layout["labels_all"] = [[n for n in names if n != "Action0"] for names in layout["labels_all"]]


def _ambiguous_line(line):
    def mutate(layout, data):
        layout["ambiguous"].append(line)
    return mutate


def _duplicate_name(layout, data):
    layout["videoname"][-1] = layout["videoname"][0]


MUTATIONS = {
    "drop_entry": _drop_entry, "bad_label": _bad_label, "reverse_segment": _reverse_segment,
    "ragged_segment": _ragged_segment,
    "late_segment": _late_segment, "bad_subset": _bad_subset, "move_to_test": _move_to_test,
    "nan": _feature_value(np.nan), "inf": _feature_value(-np.inf), "huge": _feature_value(1e30),
    "wide": _feature_shape((20, FEATURE_SIZE + 1)), "empty": _feature_shape((0, FEATURE_SIZE)),
    "flat": _feature_shape((FEATURE_SIZE,)), "one_snippet": _feature_shape((1, FEATURE_SIZE)),
    "zero_video": _zero_video, "drop_segment_label": _drop_segment_label, "unlabel_class": _unlabel_class,
    "garbage_ambiguous": _ambiguous_line("not a line"), "absent_ambiguous": _ambiguous_line("video_x  1.0 2.0"),
    "duplicate_name": _duplicate_name,
}
# Mutations that keep the set valid (at most three of them never empty a class of 5+ training videos).
HARMLESS = {"late_segment", "move_to_test", "zero_video", "one_snippet", "absent_ambiguous", "huge"}


def _check_consistent(dataset: SampleDataset, layout: dict) -> None:
    num_videos = len(layout["videoname"])
    assert len(dataset.features) == len(dataset.video_names) == len(dataset.labels) == num_videos
    assert not set(dataset.train_index) & set(dataset.test_index)
    assert all(layout["subset"][i] == b"validation" for i in dataset.train_index)
    assert all(layout["subset"][i] == b"test" for i in dataset.test_index)
    for c, pool in enumerate(dataset.class_train_index):
        assert len(pool) and np.isin(pool, dataset.train_videos).all() and dataset.labels[pool, c].all()
    assert len(dataset.store.snippets) == dataset.store.lengths.sum()
    assert all(np.isfinite(f).all() and f.shape[1] == FEATURE_SIZE for f in dataset.features)
    assert all(len(s) == len(labels) and (s[:, 1] >= s[:, 0]).all()
               for s, labels in zip(dataset.segments, dataset.segment_labels))
    rng = np.random.default_rng(0)
    features, labels, videos = dataset.load_batch(rng)
    assert features.shape == (6, 16, FEATURE_SIZE) and np.isfinite(features).all()
    assert exemplar_rows(dataset, 3, rng).max() < len(dataset.store.snippets)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(names=st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=3), data=st.data())
def test_malformed_sets_load_consistently_or_raise_data_error(names, data):
    layout = copy.deepcopy(_base_layout())
    for name in names:
        MUTATIONS[name](layout, data)
    with tempfile.TemporaryDirectory() as root, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _write(Path(root), layout)
        try:
            dataset = _load(Path(root))
        except DataError:
            assert not set(names) <= HARMLESS, "a valid set was refused"
            return
        _check_consistent(dataset, layout)
