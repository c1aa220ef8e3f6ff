"""ActivityNet 1.2 on its real annotations (with small synthetic features): the split, the
short-video drop, the exemplar pools, the ground truth and the 0.5:0.95 protocol (docs/METHOD.md#6-activitynet)."""
import shutil

import numpy as np
import pytest

from dataset_record import ACTIVITYNET12
from protocol import Reference, evaluate
from tests.helpers import exemplar_rows
from utils.evaluation import detection_ap, summarize
from wsad_dataset import LATE_SEGMENTS_FILE, SampleDataset

D, N, M = 4, 60, 5
ZEROED = 3  # training videos whose features are all zero: left out of the exemplar pools


def _object_array(items):
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    return array


def _raw(folder, name):
    values = np.load(folder / f"{name}.npy", allow_pickle=True)
    return [v.decode() if isinstance(v, bytes) else v for v in values]


@pytest.fixture(scope="module")
def anet_root(tmp_path_factory, activitynet_annotations):
    """A copy of the real annotations beside synthetic features of round(duration * 25 / 16) snippets."""
    root = tmp_path_factory.mktemp("activitynet")
    shutil.copytree(activitynet_annotations, root / "ActivityNet1.2-Annotations")
    duration = np.load(activitynet_annotations / "duration.npy").reshape(-1)
    lengths = np.maximum(1, np.round(duration * 25 / 16)).astype(int)
    rng = np.random.default_rng(0)
    features = [rng.standard_normal((t, D)).astype(np.float32) for t in lengths]
    subset = _raw(activitynet_annotations, "subset")
    for video in [v for v, s in enumerate(subset) if s == "training"][:ZEROED]:
        features[video][:] = 0
    np.save(root / "ActivityNet1.2-I3D-JOINTFeatures.npy", _object_array(features), allow_pickle=True)
    return root, lengths


@pytest.fixture(scope="module")
def anet(anet_root, tmp_path_factory):
    root, _ = anet_root
    report = tmp_path_factory.mktemp("run")
    with pytest.warns(UserWarning, match="185 segments end after their video's duration") as caught:
        dataset = SampleDataset(root, "ActivityNet1.2", num_class=100, feature_size=D, max_seqlen=N)
        SampleDataset(root, "ActivityNet1.2", num_class=100, feature_size=D, max_seqlen=N, report_dir=report)
    return dataset, [str(w.message) for w in caught], report


def test_split_is_4819_training_and_2383_validation_videos(anet, anet_root):
    dataset, _, _ = anet
    folder = anet_root[0] / "ActivityNet1.2-Annotations"
    subset = np.array(_raw(folder, "subset"))
    assert len(dataset.video_names) == 7202 and len(dataset.class_names) == 100
    assert len(dataset.train_videos) == 4819 and len(dataset.evaluation_index) == 2383
    assert set(subset[dataset.train_index]) == {"training"} and set(subset[dataset.test_index]) == {"validation"}
    assert dataset.record is ACTIVITYNET12


def test_videos_of_ten_snippets_or_fewer_leave_both_lists(anet, anet_root):
    dataset, _, _ = anet
    lengths = anet_root[1]
    short = set(np.flatnonzero(lengths <= 10))
    assert 0 < len(short & set(dataset.train_videos)) and 0 < len(short & set(dataset.evaluation_index))
    assert set(dataset.train_index) == set(dataset.train_videos) - short
    assert set(dataset.test_index) == set(dataset.evaluation_index) - short
    assert lengths[dataset.train_index].min() == 11 and lengths[dataset.test_index].min() == 11


def test_exemplar_pools_keep_short_videos_and_leave_out_all_zero_ones(anet, anet_root):
    dataset, _, _ = anet
    lengths = anet_root[1]
    zeroed = set(dataset.train_videos[:ZEROED])
    for c in range(100):
        labelled = {v for v in dataset.train_videos if dataset.labels[v, c]}
        assert set(dataset.class_train_index[c]) == labelled - zeroed
    pooled = set(np.concatenate(dataset.class_train_index))
    assert any(lengths[v] <= 10 for v in pooled)  # dropped from training, still an exemplar
    rows = exemplar_rows(dataset, M, np.random.default_rng(0))
    assert rows.shape == (100, M, N)
    features, labels, videos = dataset.load_batch(np.random.default_rng(0))
    assert features.shape == (10, N, D) and labels.shape == (10, 100) and set(videos) <= set(dataset.train_index)


def test_ground_truth_covers_every_validation_video_dropped_ones_included(anet):
    dataset, _, _ = anet
    reference = Reference.from_dataset(dataset)
    expected = sum(len(dataset.segments[v]) for v in dataset.evaluation_index)
    assert len(reference.ground_truth) == expected > 0
    dropped = [v for v in dataset.evaluation_index if v not in set(dataset.test_index)]
    rows_of_dropped = (reference.ground_truth.video >= dataset.num_test).sum()
    assert rows_of_dropped == sum(len(dataset.segments[v]) for v in dropped) > 0
    assert reference.video_names == [dataset.video_names[v] for v in dataset.test_index]


def test_protocol_is_ten_thresholds_from_0_5_to_0_95_and_dropped_instances_are_misses(anet):
    dataset, _, _ = anet
    reference = Reference.from_dataset(dataset)
    np.testing.assert_allclose(reference.tiou_thresholds, np.arange(10) * 0.05 + 0.5)
    gt = reference.ground_truth
    # detect every ground-truth instance of the evaluated videos exactly: the AP of a class
    # is then the share of its instances that lie in evaluated videos (the rest are misses)
    found = gt.select((gt.video < dataset.num_test) & (gt.end > gt.start))
    ap = detection_ap(found, gt, reference.tiou_thresholds, 100)
    share = np.array([((found.label == c).sum()) / (gt.label == c).sum() for c in range(100)])
    np.testing.assert_allclose(ap, np.broadcast_to(share, ap.shape), rtol=1e-12)
    assert share.min() < 1
    summary = summarize(np.nanmean(ap, axis=1), reference.tiou_thresholds, reference.averages)
    assert [k for k in summary if k.startswith("avg")] == ["avg 0.5:0.95"]
    assert reference.selection_score(summary) == pytest.approx(100 * share.mean())


def test_evaluate_reports_the_activitynet_table(anet):
    dataset, _, _ = anet
    reference = Reference.from_dataset(dataset)
    outputs = {}  # each video: its first label scores high, actionness one bump in the middle
    for name, v in zip(reference.video_names, dataset.test_index):
        t = len(dataset.features[v])
        cas = np.zeros((t, 101), np.float32)
        cas[:, np.flatnonzero(dataset.labels[v])[0]] = 5
        attn = (1 - np.abs(np.linspace(-1, 1, t, dtype=np.float32)))[:, None]
        outputs[name] = cas, attn
    result = evaluate(outputs, reference)
    assert list(result.summary) == [f"mAP@{t:g}" for t in reference.tiou_thresholds] + ["avg 0.5:0.95", "cmAP"]
    assert result.selection_score == pytest.approx(result.summary["avg 0.5:0.95"])


def test_the_warning_about_185_videos_names_five_and_says_where_the_list_is(anet):
    dataset, messages, report = anet
    plain, reported = messages
    first_five = "video_68 (1), video_74 (1), video_128 (1), video_159 (1), video_270 (1)"
    assert f"in 185 videos: {first_five} and 180 more" in plain
    assert "SampleDataset.late_segments lists them all" in plain and len(plain) < 400
    listing = report / LATE_SEGMENTS_FILE
    assert f"the full list is in {listing}" in reported
    lines = listing.read_text().splitlines()
    assert len(lines) == 185 == len(dataset.late_segments) and lines[0] == "video_68 1"
