"""The synthetic demo: the THUMOS-14 layout, read by the same loader, deterministic, and as hard as asked."""
import warnings

import numpy as np
import pytest

import dataset.make_demo as make_demo
from dataset.make_demo import ensure_demo, main, make_demo_dataset
from wsad_dataset import SampleDataset

NAME = "Thumos14reduced"
ANNOTATIONS = f"{NAME}-Annotations"
FEATURES = f"{NAME}-I3D-JOINTFeatures.npy"


def _load(root, num_class=5, feature_size=64):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the demo must not trip the late-segment warning
        return SampleDataset(root, NAME, num_class=num_class, feature_size=feature_size, max_seqlen=100)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return _load(make_demo_dataset(tmp_path_factory.mktemp("demo")))


def test_the_loader_reads_the_demo(demo):
    assert len(demo.train_index) == 40 and demo.num_test == 30
    assert demo.class_names == [f"Action{c}" for c in range(5)]
    assert all(len(pool) >= 8 for pool in demo.class_train_index)
    assert demo.video_names[0] == "video_validation_0000001" and demo.video_names[40] == "video_test_0000001"
    assert len(demo.ambiguous) == 4 and set(demo.ambiguous) <= set(demo.test_index.tolist())


def test_videos_instances_and_times_have_the_advertised_sizes(demo):
    lengths = np.array([len(f) for f in demo.features])
    assert lengths.min() >= 80 and lengths.max() <= 300
    np.testing.assert_allclose(demo.duration, lengths * 16 / 25, atol=0.005)
    assert {int(v.sum()) for v in demo.labels} == {1, 2}  # single and co-occurring classes
    for video, segments in enumerate(demo.segments):
        snippets = segments * 25 / 16
        np.testing.assert_allclose(snippets, np.round(snippets), atol=0.01)  # boundaries on snippets
        sizes = np.round(snippets[:, 1] - snippets[:, 0])
        assert sizes.min() >= 4 and sizes.max() <= 40
        assert set(demo.segment_labels[video].tolist()) == set(np.flatnonzero(demo.labels[video]).tolist())


def test_files_have_the_dtypes_of_the_real_annotations(tmp_path, thumos_annotations):
    root = make_demo_dataset(tmp_path, num_train=10, num_test=3, num_class=2, feature_size=8)
    for name in make_demo.ANNOTATION_FILES:
        ours = np.load(root / ANNOTATIONS / f"{name}.npy", allow_pickle=True)
        real = np.load(thumos_annotations / f"{name}.npy", allow_pickle=True)
        assert (ours.dtype.kind, ours.ndim) == (real.dtype.kind, real.ndim), name
        if ours.dtype == object:
            assert type(ours[0]) is type(real[0]) is list, name
    assert type(np.load(root / ANNOTATIONS / "segments.npy", allow_pickle=True)[0][0]) is list
    features = np.load(root / FEATURES, allow_pickle=True)
    assert features.dtype == object and features.shape == (13,) and features[0].dtype == np.float32
    first_line = (root / ANNOTATIONS / "Ambiguous_test.txt").read_text().splitlines()[0]
    assert first_line.startswith("video_test_") and "  " in first_line


def test_same_seed_same_files_other_seed_other_features(tmp_path):
    first = make_demo_dataset(tmp_path / "a", seed=3)
    second = make_demo_dataset(tmp_path / "b", seed=3)
    other = make_demo_dataset(tmp_path / "c", seed=4)
    paths = [p.relative_to(first) for p in sorted(first.rglob("*")) if p.is_file()]
    assert len(paths) == 11
    for path in paths:
        assert (first / path).read_bytes() == (second / path).read_bytes(), path
    assert (first / FEATURES).read_bytes() != (other / FEATURES).read_bytes()


def _instance_snippets(dataset, videos):
    features, classes = [], []
    for video in videos:
        for (start, end), label in zip(np.round(dataset.segments[video] * 25 / 16).astype(int),
                                       dataset.segment_labels[video]):
            features.append(dataset.features[video][start:end])
            classes.append(np.full(end - start, label))
    return np.concatenate(features), np.concatenate(classes)


def _nearest_class_mean_accuracy(dataset):
    """Accuracy on the test instances' snippets of the class means of the training instances' snippets."""
    train_x, train_y = _instance_snippets(dataset, dataset.train_index)
    test_x, test_y = _instance_snippets(dataset, dataset.test_index)
    means = np.stack([train_x[train_y == c].mean(0) for c in range(dataset.num_class)])
    predicted = np.argmin(((test_x[:, None] - means[None]) ** 2).sum(-1), axis=1)
    return (predicted == test_y).mean()


def test_difficulty_controls_how_separable_the_classes_are(tmp_path):
    easy = _nearest_class_mean_accuracy(_load(make_demo_dataset(tmp_path / "easy", difficulty=0.0)))
    medium = _nearest_class_mean_accuracy(_load(make_demo_dataset(tmp_path / "medium", difficulty=0.5)))
    hard = _nearest_class_mean_accuracy(_load(make_demo_dataset(tmp_path / "hard", difficulty=1.0)))
    assert easy > 0.99
    assert medium < easy - 0.05 and hard < medium - 0.1
    assert hard > 0.4  # still far above chance (0.2): learnable


def test_context_snippets_carry_the_class_but_not_the_actionness(demo):
    """The snippets around an instance point to its class, but not along the direction shared by all actions."""
    actions, contexts, classes = [], [], []
    for video in range(len(demo.video_names)):
        features = demo.features[video]
        instances = np.round(demo.segments[video] * 25 / 16).astype(int)
        near = np.zeros(len(features), dtype=bool)
        for start, end in instances:
            near[start - make_demo.CONTEXT:end + make_demo.CONTEXT] = True
        background = features[~near].mean(0)
        for (start, end), label in zip(instances, demo.segment_labels[video]):
            actions.append(features[start:end].mean(0) - background)
            around = np.concatenate([features[start - make_demo.CONTEXT:start], features[end:end + make_demo.CONTEXT]])
            contexts.append(around.mean(0) - background)
            classes.append(label)
    actions, contexts, classes = np.array(actions), np.array(contexts), np.array(classes)
    means = np.stack([actions[classes == c].mean(0) for c in range(5)])
    shared = means.mean(0)  # what every action has: the actionness direction
    class_directions = means - shared
    assert ((contexts @ class_directions.T).argmax(1) == classes).mean() > 0.5  # chance: 0.2
    assert np.median(contexts @ shared / (shared @ shared)) < 0.1  # an instance itself has 1


def test_ensure_demo_builds_only_when_missing(tmp_path):
    root = ensure_demo(tmp_path, num_train=10, num_test=3, num_class=2, feature_size=8)
    features = root / FEATURES
    stamp = features.stat().st_mtime_ns
    ensure_demo(tmp_path, num_train=10, num_test=3, num_class=2, feature_size=8, seed=5)
    assert features.stat().st_mtime_ns == stamp
    features.unlink()
    ensure_demo(tmp_path, num_train=10, num_test=3, num_class=2, feature_size=8)
    assert features.is_file() and _load(root, num_class=2, feature_size=8).num_test == 3


def test_a_failed_rebuild_leaves_the_previous_demo_untouched(tmp_path, monkeypatch):
    root = make_demo_dataset(tmp_path, num_train=10, num_test=3, num_class=2, feature_size=8)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    real_save = np.save

    def failing_save(path, array, **kwargs):
        if str(path).endswith(FEATURES):
            raise OSError("disk full")
        real_save(path, array, **kwargs)

    monkeypatch.setattr(make_demo.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        make_demo_dataset(tmp_path, num_train=10, num_test=3, num_class=2, feature_size=8, seed=9)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert not list(root.glob(".make_demo-*"))


def test_rebuilding_replaces_the_previous_demo(tmp_path):
    make_demo_dataset(tmp_path, num_train=10, num_test=3, num_class=2, feature_size=8, seed=1)
    make_demo_dataset(tmp_path, num_train=12, num_test=3, num_class=3, feature_size=8, seed=2)
    assert len(_load(tmp_path, num_class=3, feature_size=8).train_index) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == [ANNOTATIONS, FEATURES]


def test_command_line(tmp_path, capsys):
    out = main(["--out", str(tmp_path / "cli"), "--num-class", "3", "--feature-size", "16", "--num-train", "9",
                "--num-test", "2", "--difficulty", "0.2", "--seed", "1"])
    assert "--num-class 3 --feature-size 16" in capsys.readouterr().out
    assert _load(out, num_class=3, feature_size=16).num_test == 2


@pytest.mark.parametrize("kwargs", [{"difficulty": 1.5}, {"feature_size": 63}, {"num_train": 3, "num_class": 2}])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        make_demo_dataset(tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- the ActivityNet layout

def test_activitynet_layout_reads_as_activitynet(tmp_path):
    root = make_demo_dataset(tmp_path, num_train=240, num_test=120, num_class=40, layout="activitynet")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no late segments, every class has M = 5 exemplar videos
        demo = SampleDataset(root, "ActivityNet1.2", num_class=40, feature_size=64, max_seqlen=60)
    assert demo.record.name == "ActivityNet1.2"
    assert not (root / "ActivityNet1.2-Annotations" / "Ambiguous_test.txt").exists()
    assert len(demo.train_videos) == 240 and len(demo.evaluation_index) == 120
    lengths = np.array([len(f) for f in demo.features])
    assert 150 <= np.median(lengths) <= 200 and lengths.max() <= 340  # ActivityNet 1.2's median is 173
    short = np.flatnonzero(lengths <= 10)
    assert len(short) > 0 and not set(short) & (set(demo.train_index) | set(demo.test_index))  # dropped
    assert {int(v.sum()) for v in demo.labels} == {1} and all(len(p) >= 5 for p in demo.class_train_index)
    counts = [len(s) for s in demo.segments]
    assert set(counts) == {1, 2}
    coverage = [(s[:, 1] - s[:, 0]).sum() / d for s, d in zip(demo.segments, demo.duration)]
    assert 0.55 <= np.median(coverage) <= 0.7 and min(coverage) >= 0.3
