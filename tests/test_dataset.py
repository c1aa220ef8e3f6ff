"""The loader on the real THUMOS-14 annotations (with small fake features), the samplers, and ActivityNet splits."""
import shutil
import warnings

import numpy as np
import pytest

from wsad_dataset import SampleDataset, random_perturb, uniform_sample
from tests.helpers import exemplar_rows, exemplar_videos

FEATURE_SIZE = 8
MAX_SEQLEN = 50


def _object_array(items):
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    return array


@pytest.fixture(scope="module")
def thumos_root(tmp_path_factory, thumos_annotations):
    """A dataset folder: a copy of the real annotations and fake features of 20..60 snippets, D = 8."""
    root = tmp_path_factory.mktemp("thumos")
    folder = root / "Thumos14reduced-Annotations"
    folder.mkdir()
    for source in thumos_annotations.iterdir():
        shutil.copyfile(source, folder / source.name)
    rng = np.random.default_rng(0)
    features = [rng.standard_normal((rng.integers(20, 61), FEATURE_SIZE)).astype(np.float32) for _ in range(412)]
    np.save(root / "Thumos14reduced-I3D-JOINTFeatures.npy", _object_array(features), allow_pickle=True)
    return root


@pytest.fixture(scope="module")
def thumos(thumos_root):
    with pytest.warns(UserWarning, match="30 segments end after") as caught:
        dataset = SampleDataset(thumos_root, feature_size=FEATURE_SIZE, max_seqlen=MAX_SEQLEN)
    assert "video_validation_0000364 (2)" in str(caught[0].message)
    return dataset


def _raw(thumos_root, name):
    return np.load(thumos_root / "Thumos14reduced-Annotations" / f"{name}.npy", allow_pickle=True)


# ----------------------------------------------------------------------------- THUMOS-14 annotations

def test_thumos_split_has_200_training_and_212_test_videos(thumos, thumos_root):
    subset = [s.decode() for s in _raw(thumos_root, "subset")]
    assert len(thumos.video_names) == 412 and len(thumos.class_names) == 20
    assert len(thumos.train_index) == 200 and thumos.num_test == 212
    assert {subset[i] for i in thumos.train_index} == {"validation"}
    assert {subset[i] for i in thumos.test_index} == {"test"}
    assert thumos.class_names[:2] == ["BaseballPitch", "BasketballDunk"]


def test_exemplar_pools_are_the_training_videos_of_each_class_in_labels_all(thumos, thumos_root):
    labels_all, subset = _raw(thumos_root, "labels_all"), _raw(thumos_root, "subset")
    for c, name in enumerate(thumos.class_names):
        expected = [i for i in range(412) if subset[i] == b"validation" and name in labels_all[i]]
        assert thumos.class_train_index[c].tolist() == expected
    sizes = sorted(len(pool) for pool in thumos.class_train_index)
    assert sizes == [10] * 15 + [11, 11, 13, 16, 20]
    # labels.npy would add CricketShot to video 171; the video labels come from labels_all.npy
    video = thumos.video_names.index("video_validation_0000171")
    assert thumos.labels[video].nonzero()[0].tolist() == [thumos.class_names.index("CricketBowling")]


def test_segments_labels_and_durations(thumos):
    video = thumos.video_names.index("video_validation_0000051")
    np.testing.assert_array_equal(thumos.segments[video], [[67.5, 75.9], [85.9, 90.6], [139.3, 148.2]])
    assert thumos.segment_labels[video].tolist() == [thumos.class_names.index("Billiards")] * 3
    assert thumos.duration.shape == (412,) and thumos.duration[video] == 169.794
    assert sum(len(thumos.segments[i]) for i in thumos.test_index) == 3358
    late = thumos.video_names.index("video_validation_0000364")
    assert thumos.segments[late][5].tolist() == [120.5, 127.0]  # past its 112.638 s, kept as is
    unlabelled = thumos.video_names.index("video_test_0000270")
    assert thumos.labels[unlabelled].sum() == 0 and len(thumos.segments[unlabelled]) == 29


def test_ambiguous_intervals_of_present_videos(thumos, thumos_annotations):
    lines = [line for line in (thumos_annotations / "Ambiguous_test.txt").read_text().splitlines() if line.strip()]
    assert len(lines) == 99
    assert len(thumos.ambiguous) == 36
    assert sum(len(times) for times in thumos.ambiguous.values()) == 96
    np.testing.assert_array_equal(thumos.ambiguous[thumos.video_names.index("video_test_0000278")],
                                  [[0.0, 1.4], [95.7, 97.2]])
    assert "video_test_0001292" not in thumos.video_names


def test_features_are_views_into_the_flat_snippet_table(thumos):
    np.testing.assert_array_equal(thumos.train_videos, thumos.train_index)
    snippets = thumos.store.snippets
    assert not thumos.store.mapped and snippets.dtype == np.float32
    assert snippets.shape == (thumos.store.lengths.sum(), FEATURE_SIZE) and len(thumos.store) == 412
    for video, offset, length in zip(thumos.train_videos, thumos.train_offsets, thumos.train_lengths):
        assert np.shares_memory(thumos.features[video], snippets)
        np.testing.assert_array_equal(snippets[offset:offset + length], thumos.features[video])


def test_test_videos_iterates_over_the_test_list_in_order(thumos):
    items = list(thumos.test_videos())
    assert [index for *_, index in items] == thumos.test_index.tolist()
    features, labels, name, index = items[0]
    assert name == thumos.video_names[index]
    np.testing.assert_array_equal(features, thumos.features[index])
    assert features.dtype == np.float32 and labels.shape == (20,)


# ----------------------------------------------------------------------------- random-perturb

def _seen(length, n, draws=3000):
    rng = np.random.default_rng(0)
    samples = np.stack([random_perturb(length, n, rng) for _ in range(draws)])
    return [set(column.tolist()) for column in samples.T]


def test_random_perturb_is_the_identity_when_lengths_match():
    assert random_perturb(7, 7, np.random.default_rng(0)).tolist() == list(range(7))


def test_random_perturb_repeats_snippets_of_a_short_video():
    # L=3, N=5: f = 0, 0, 1, 1, 2; equal neighbours give f_i, the last draws from f_4..L-1 = {2}
    assert _seen(3, 5) == [{0}, {0, 1}, {1}, {1, 2}, {2}]


def test_random_perturb_bins_of_a_long_video_share_their_boundaries():
    # L=10, N=4: f = 0, 2, 5, 7; the last index draws from 7..9
    assert _seen(10, 4) == [{0, 1, 2}, {2, 3, 4, 5}, {5, 6, 7}, {7, 8, 9}]


def test_random_perturb_floors_exactly_where_floating_point_would_not():
    # 11 * (30 / 22) = 14.999999999999998, but 11 * 30 // 22 = 15
    assert int(11 * (30 / 22)) == 14
    assert uniform_sample(30, 22)[11] == 15
    assert _seen(30, 22)[11] == {15, 16}


@pytest.mark.parametrize("length, n", [(1, 5), (2, 50), (49, 50), (51, 50), (137, 50), (1000, 7)])
def test_random_perturb_draws_stay_in_their_bins(length, n):
    floors = (np.arange(n) * length) // n
    highs = np.append(floors[1:], max(floors[-1], length - 1))
    rng = np.random.default_rng(1)
    for _ in range(200):
        sample = random_perturb(length, n, rng)
        assert sample.dtype == np.int64 and sample.shape == (n,)
        assert np.all(sample >= floors) and np.all(sample <= highs)


def test_uniform_sample():
    assert uniform_sample(10, 4).tolist() == [0, 2, 5, 7]
    assert uniform_sample(3, 5).tolist() == [0, 0, 1, 1, 2]
    assert uniform_sample(6, 6).tolist() == list(range(6))


# ----------------------------------------------------------------------------- batches and exemplars

def _source_rows(batch_video, features):
    """Index in `features` of each row of `batch_video` (the fake features have unique rows)."""
    lookup = {row.tobytes(): t for t, row in enumerate(features)}
    return np.array([lookup[row.tobytes()] for row in batch_video])


def test_load_batch_structure(thumos):
    features, labels, videos = thumos.load_batch(np.random.default_rng(3))
    assert features.shape == (10, MAX_SEQLEN, FEATURE_SIZE) and features.dtype == np.float32
    assert labels.shape == (10, 20) and videos.dtype == np.int64
    assert np.isin(videos, thumos.train_index).all()
    np.testing.assert_array_equal(labels, thumos.labels[videos])
    for b, video in enumerate(videos):
        rows = _source_rows(features[b], thumos.features[video])
        assert np.all(np.diff(rows) >= 0)  # random-perturb keeps the order of time


def test_load_batch_pairs_are_distinct_videos_sharing_a_class(thumos):
    rng = np.random.default_rng(4)
    for _ in range(100):
        _, labels, videos = thumos.load_batch(rng)
        for i in range(3):
            assert videos[2 * i] != videos[2 * i + 1]
            assert (labels[2 * i] * labels[2 * i + 1]).sum() >= 1


def test_load_batch_is_deterministic_for_a_seed(thumos):
    first = thumos.load_batch(np.random.default_rng(5))
    second = thumos.load_batch(np.random.default_rng(5))
    other = thumos.load_batch(np.random.default_rng(6))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[2], other[2])


def test_exemplar_rows_come_from_distinct_videos_of_their_class(thumos):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every THUMOS pool holds at least 10 videos
        rows = exemplar_rows(thumos, 10, np.random.default_rng(8))
    assert rows.shape == (20, 10, MAX_SEQLEN) and rows.dtype == np.int64
    blocks = np.searchsorted(thumos.train_offsets, rows, side="right") - 1
    assert np.all(blocks == blocks[..., :1])  # all N rows of an exemplar come from one video
    for c in range(20):
        videos = thumos.train_videos[blocks[c, :, 0]]
        assert len(set(videos.tolist())) == 10
        assert np.isin(videos, thumos.class_train_index[c]).all()
    assert np.all(rows - thumos.train_offsets[blocks] < thumos.train_lengths[blocks])
    np.testing.assert_array_equal(exemplar_videos(thumos, 10, np.random.default_rng(8)), thumos.store.snippets[rows])


def test_small_exemplar_pools_warn_once_per_class_and_draw_with_replacement(thumos):
    small = [name for name, pool in zip(thumos.class_names, thumos.class_train_index) if len(pool) < 12]
    assert len(small) == 17  # 15 pools of 10 and 2 of 11
    rng = np.random.default_rng(9)
    with pytest.warns(UserWarning) as caught:
        rows = exemplar_rows(thumos, 12, rng)
        exemplar_rows(thumos, 12, rng)
    messages = [str(w.message) for w in caught if "exemplars per class" in str(w.message)]
    assert len(messages) == 17 and all(any(repr(name) in m for m in messages) for name in small)
    assert rows.shape == (20, 12, MAX_SEQLEN)


# ----------------------------------------------------------------------------- ActivityNet-style splits

def _write_activitynet(root, videos):
    """videos: (name, subset, snippets, class or None for all-zero features of class 1)."""
    folder = root / "ActivityNet1.2-Annotations"
    folder.mkdir()
    rng = np.random.default_rng(0)
    classes = [b"Archery", b"Bowling"]
    np.save(folder / "classlist.npy", np.array(classes))
    np.save(folder / "videoname.npy", np.array([name.encode() for name, *_ in videos]))
    np.save(folder / "subset.npy", np.array([subset.encode() for _, subset, *_ in videos]))
    np.save(folder / "duration.npy", np.array([[t * 16 / 25] for _, _, t, _ in videos]))
    names = [classes[1 if c is None else c].decode() for *_, c in videos]
    np.save(folder / "labels_all.npy", _object_array([[n] for n in names]), allow_pickle=True)
    np.save(folder / "labels.npy", _object_array([[n] for n in names]), allow_pickle=True)
    np.save(folder / "segments.npy", _object_array([[[0.0, 1.0]] for _ in videos]), allow_pickle=True)
    features = [np.zeros((t, 4)) if c is None else rng.standard_normal((t, 4)) for _, _, t, c in videos]
    np.save(root / "ActivityNet1.2-I3D-JOINTFeatures.npy", _object_array(features), allow_pickle=True)


ACTIVITYNET_VIDEOS = [
    ("v_train_long", "training", 30, 0),
    ("v_train_short", "training", 8, 0),  # <= 10 snippets: out of the training list, still an exemplar
    ("v_train_zero", "training", 25, None),  # all-zero features: trains, but is no exemplar
    ("v_train_b", "training", 20, 1),
    ("v_train_b11", "training", 11, 1),  # 11 snippets: kept
    ("v_val_short", "validation", 10, 0),  # <= 10 snippets: out of the test list
    ("v_val", "validation", 40, 1),
    ("v_testing", "testing", 30, 1),  # the unlabelled ActivityNet test subset: unused
]


def test_activitynet_split_drops_short_videos_but_keeps_them_as_exemplars(tmp_path):
    _write_activitynet(tmp_path, ACTIVITYNET_VIDEOS)
    dataset = SampleDataset(tmp_path, "ActivityNet1.2", num_class=2, feature_size=4, max_seqlen=6,
                            num_similar=1, batch_size=3)
    assert dataset.train_index.tolist() == [0, 2, 3, 4]
    assert dataset.test_index.tolist() == [6]
    assert [pool.tolist() for pool in dataset.class_train_index] == [[0, 1], [3, 4]]
    assert dataset.train_videos.tolist() == [0, 1, 2, 3, 4]
    rows = exemplar_rows(dataset, 2, np.random.default_rng(0))
    blocks = np.searchsorted(dataset.train_offsets, rows[0, :, 0], side="right") - 1
    assert sorted(dataset.train_videos[blocks].tolist()) == [0, 1]


def test_activitynet_min_snippets_can_be_overridden(tmp_path):
    _write_activitynet(tmp_path, ACTIVITYNET_VIDEOS)
    dataset = SampleDataset(tmp_path, "ActivityNet1.2", num_class=2, feature_size=4, max_seqlen=6,
                            num_similar=1, batch_size=3, min_snippets=0)
    assert dataset.train_index.tolist() == [0, 1, 2, 3, 4]
    assert dataset.test_index.tolist() == [5, 6]
