"""Detection and classification mAP (utils/evaluation.py) against hand-worked numbers and a
plain loop-by-loop ActivityNet-toolkit implementation (tests/oracles/activitynet_toolkit.py)."""
import math

import numpy as np
import pytest

from tests.oracles import activitynet_toolkit as reference
from utils.errors import DataError
from utils.evaluation import (
    ACTIVITYNET_TIOU, THUMOS_TIOU, SegmentTable, classification_map, detection_ap,
    format_table, ground_truth_from_annotations,
    seconds_to_snippets, summarize, tiou, video_class_scores,
)


def table(rows, with_score=True):
    """SegmentTable from rows (video, label, start, end[, score])."""
    columns = np.array(rows, dtype=np.float64).reshape(-1, 5 if with_score else 4).T
    score = columns[4] if with_score else np.ones(columns.shape[1])
    return SegmentTable(columns[0], columns[1], columns[2], columns[3], score)


def ap_one_class(detections, ground_truth, thresholds=(0.5,)):
    """AP per threshold of class 0 from rows (video, start, end, score) / (video, start, end)."""
    dets = table([(v, 0, s, e, p) for v, s, e, p in detections])
    gt = table([(v, 0, s, e) for v, s, e in ground_truth], with_score=False)
    return detection_ap(dets, gt, thresholds, num_classes=1)[:, 0]


TWO_GT = [(0, 0, 10), (0, 20, 30)]


# ---------------------------------------------------------------- tables and conversions

def test_segment_table_coerces_validates_and_selects():
    t = SegmentTable([0, 1], [2, 3], [1, 2], [3, 4], [0.5, 0.7])
    assert t.video.dtype == np.int64 and t.start.dtype == np.float64 and len(t) == 2
    assert len(SegmentTable.empty()) == 0 and len(SegmentTable.concat([])) == 0
    both = SegmentTable.concat([t, t.select(np.array([False, True]))])
    np.testing.assert_array_equal(both.label, [2, 3, 3])
    with pytest.raises(ValueError, match="length"):
        SegmentTable([0, 1], [0], [0], [1], [1])


@pytest.mark.parametrize("seconds, snippet", [
    (0.32, 0),   # 0.32 * 25 / 16 == 0.5 exactly -> even 0 (half-up would give 1)
    (0.96, 2),   # 1.5 -> 2
    (1.6, 2),    # 2.5 -> 2
    (2.88, 4),   # 4.5 -> 4
    (13.12, 20),  # 20.5 -> 20
    (0.8, 1),    # 1.25 -> 1
])
def test_seconds_to_snippets_rounds_halves_to_even(seconds, snippet):
    assert seconds * 25 / 16 % 1 in (0.5, 0.25)
    assert seconds_to_snippets(seconds) == snippet == round(seconds * 25 / 16)


def load_thumos_test(annotations):
    """(segments, labels as class indices) of the THUMOS-14 test videos."""
    classes = [c.decode() for c in np.load(annotations / "classlist.npy")]
    test = np.flatnonzero(np.load(annotations / "subset.npy") == b"test")
    segments = np.load(annotations / "segments.npy", allow_pickle=True)[test]
    labels = np.load(annotations / "labels.npy", allow_pickle=True)[test]
    return list(segments), [[classes.index(name) for name in video] for video in labels]


@pytest.fixture(scope="module")
def thumos_ground_truth(thumos_annotations):
    segments, labels = load_thumos_test(thumos_annotations)
    return ground_truth_from_annotations(segments, labels, np.arange(len(segments)))


def test_thumos_ground_truth_matches_python_round(thumos_annotations, thumos_ground_truth):
    segments, _ = load_thumos_test(thumos_annotations)
    bounds = [t for video in segments for segment in video for t in segment]
    expected = [round(t * 25 / 16) for t in bounds]
    np.testing.assert_array_equal(seconds_to_snippets(bounds), expected)
    assert len(thumos_ground_truth) == 3358 and thumos_ground_truth.video.max() == 211
    bounds_in_snippets = np.column_stack([thumos_ground_truth.start, thumos_ground_truth.end])
    np.testing.assert_array_equal(bounds_in_snippets.ravel(), expected)


def test_ground_truth_from_annotations_rejects_mismatched_labels():
    with pytest.raises(DataError, match="video 7: 2 segments but 1 labels"):
        ground_truth_from_annotations([[[0.0, 1.0], [2.0, 3.0]]], [[0]], [7])


# ---------------------------------------------------------------- tIoU

def test_tiou_has_no_plus_one_and_zero_length_is_zero():
    # [0,10) vs [5,15): intersection 5, union 15; vs [10,20): touching, 0.
    overlaps = tiou([0, 10], [[5, 15], [10, 20], [0, 10], [3, 3]])
    np.testing.assert_allclose(overlaps, [1 / 3, 0, 1, 0])
    assert tiou([4, 4], [[4, 4]])[0] == 0  # 0 / 0 in the toolkit; 0 here, never NaN


# ---------------------------------------------------------------- hand-worked APs

def test_perfect_detections_have_ap_one():
    dets = [(0, 0, 10, 0.9), (0, 20, 30, 0.8)]
    np.testing.assert_array_equal(ap_one_class(dets, TWO_GT, THUMOS_TIOU), np.ones(9))


def test_false_positive_ranked_first():
    # Ranked: FP, TP, TP over 2 ground truths. precision 0, 1/2, 2/3; recall 0, 1/2, 1.
    # Made monotone from the right: 2/3 at both recall steps, so AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3
    # (without the interpolation it would be 1/2 * 1/2 + 1/2 * 2/3 = 7/12).
    dets = [(0, 50, 60, 0.9), (0, 0, 10, 0.8), (0, 20, 30, 0.7)]
    assert ap_one_class(dets, TWO_GT)[0] == pytest.approx(2 / 3, abs=1e-15)


def test_duplicate_detection_is_a_false_positive():
    # [1,10) overlaps the already matched [0,10) at tIoU 0.9 and nothing else: TP, FP, TP.
    # precision 1, 1/2, 2/3; recall 1/2, 1/2, 1 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    dets = [(0, 0, 10, 0.9), (0, 1, 10, 0.8), (0, 20, 30, 0.7)]
    assert ap_one_class(dets, TWO_GT)[0] == pytest.approx(5 / 6, abs=1e-15)


def test_detection_in_a_video_without_ground_truth_is_a_false_positive():
    # FP (video 1), then TP: precision 0, 1/2; recall 0, 1 -> AP = 1 * 1/2.
    dets = [(1, 0, 10, 0.9), (0, 0, 10, 0.8)]
    assert ap_one_class(dets, [(0, 0, 10)])[0] == pytest.approx(0.5, abs=1e-15)


def test_class_without_detections_scores_zero_and_class_without_ground_truth_is_ignored():
    gt = table([(0, 0, 0, 10), (0, 1, 20, 30)], with_score=False)
    # class 2 has no ground truth: its detection is ignored, its AP is NaN
    dets = table([(0, 0, 0, 10, 0.9), (0, 2, 20, 30, 1.0)])
    ap = detection_ap(dets, gt, [0.5], num_classes=3)
    np.testing.assert_array_equal(ap, [[1.0, 0.0, np.nan]])
    np.testing.assert_array_equal(np.nanmean(ap, axis=1), [0.5])  # protocol.evaluate's mAP


def test_score_ties_keep_input_order():
    fp, tp = (0, 50, 60, 0.5), (0, 0, 10, 0.5)
    # FP then TP: precision 0, 1/2 at recall 0, 1 -> 1/2; TP then FP: 1.
    assert ap_one_class([fp, tp], [(0, 0, 10)])[0] == 0.5
    assert ap_one_class([tp, fp], [(0, 0, 10)])[0] == 1.0


def test_zero_length_segments_never_match():
    assert ap_one_class([(0, 5, 5, 0.9), (0, 4, 6, 0.8)], [(0, 5, 5)], THUMOS_TIOU).max() == 0
    assert ap_one_class([(0, 3, 3, 0.9)], [(0, 0, 10)], THUMOS_TIOU).max() == 0


def test_equal_tiou_goes_to_the_first_ground_truth_in_annotation_order():
    # [5,15) has tIoU 1/3 with both [0,10) and [10,20) and takes the first listed; [0,9)
    # only overlaps [0,10) (tIoU 0.9).
    dets = [(0, 5, 15, 0.9), (0, 0, 9, 0.8)]
    # [0,10) listed first: it goes to [5,15), so [0,9) is a FP -> precision 1, 1/2 at
    # recall 1/2, 1/2 -> AP 1/2.
    assert ap_one_class(dets, [(0, 0, 10), (0, 10, 20)], [0.3])[0] == 0.5
    # [10,20) listed first: [5,15) takes it, [0,9) takes [0,10) -> AP 1.
    assert ap_one_class(dets, [(0, 10, 20), (0, 0, 10)], [0.3])[0] == 1.0


def test_a_detection_whose_best_ground_truth_is_taken_matches_the_next_best():
    # [0,12) has tIoU 10/12 with the matched [0,10) and 4/20 = 0.2 with [8,20):
    # at 0.1 it takes [8,20) (AP 1), at 0.5 it is a FP (TP, FP over 2 gts: AP 1/2).
    dets = [(0, 0, 10, 0.9), (0, 0, 12, 0.8)]
    np.testing.assert_allclose(ap_one_class(dets, [(0, 0, 10), (0, 8, 20)], [0.1, 0.5]), [1.0, 0.5])


# ---------------------------------------------------------------- against the loop reference

def random_detections(ground_truth, num_videos, n, rng, integer_bounds=False):
    """Half jittered copies of ground truth (mostly the right class), half random segments."""
    half = n // 2
    pick = rng.integers(0, len(ground_truth), half)
    length = ground_truth.end[pick] - ground_truth.start[pick] + 1
    start = ground_truth.start[pick] + rng.normal(0, 0.2, half) * length
    end = np.maximum(ground_truth.end[pick] + rng.normal(0, 0.2, half) * length, start + 0.01)
    wrong_class = rng.random(half) < 0.2
    label = np.where(wrong_class, rng.integers(0, 20, half), ground_truth.label[pick])
    random_start = rng.uniform(0, 300, n - half)
    dets = SegmentTable(
        np.concatenate([ground_truth.video[pick], rng.integers(0, num_videos, n - half)]),
        np.concatenate([label, rng.integers(0, 20, n - half)]),
        np.concatenate([start, random_start]),
        np.concatenate([end, random_start + rng.exponential(20, n - half)]),
        rng.random(n),
    )
    if integer_bounds:
        dets = SegmentTable(dets.video, dets.label, np.round(dets.start), np.round(dets.end),
                            np.round(dets.score, 1))
    return dets


def reference_ap(detections, ground_truth, thresholds, num_classes):
    rows = list(zip(detections.video.tolist(), detections.label.tolist(), detections.start.tolist(),
                    detections.end.tolist(), detections.score.tolist()))
    gt_rows = list(zip(ground_truth.video.tolist(), ground_truth.label.tolist(),
                       ground_truth.start.tolist(), ground_truth.end.tolist()))
    return np.array(reference.detection_ap(rows, gt_rows, thresholds, num_classes))


def test_matches_loop_reference_on_thumos_ground_truth(thumos_ground_truth):
    rng = np.random.default_rng(14)
    dets = random_detections(thumos_ground_truth, 212, 4000, rng)
    assert len(np.unique(dets.score)) == len(dets)  # no ties: both sorts agree on any order
    ap = detection_ap(dets, thumos_ground_truth, THUMOS_TIOU, 20)
    expected = reference_ap(dets, thumos_ground_truth, THUMOS_TIOU, 20)
    assert np.nanmin(ap[0]) > 0.05 and not np.isnan(ap).any()  # the test sees real matches
    np.testing.assert_allclose(ap, expected, rtol=0, atol=1e-9)


def test_matches_loop_reference_with_ties_and_zero_length_segments(thumos_ground_truth):
    # Integer boundaries and one-decimal scores: many equal scores and equal tIoUs, and
    # zero-length segments (17 ground truths are zero-length in snippets).
    rng = np.random.default_rng(25)
    few_videos = thumos_ground_truth.select(thumos_ground_truth.video < 40)
    dets = random_detections(few_videos, 40, 1500, rng, integer_bounds=True)
    assert (dets.end == dets.start).any() and len(np.unique(dets.score)) <= 11
    ap = detection_ap(dets, few_videos, ACTIVITYNET_TIOU, 20)
    np.testing.assert_allclose(ap, reference_ap(dets, few_videos, ACTIVITYNET_TIOU, 20),
                               rtol=0, atol=1e-9)



def test_a_detection_late_in_a_long_ground_truth_that_holds_short_ones_matches_it():
    # [0,100) holds [10,20) and [30,40); [50,95) overlaps only the long one: tIoU 45/100.
    # (Ground truth sorted by start has ends 100, 20, 40: the search for overlapping rows
    # must use their running maximum.)
    assert ap_one_class([(0, 50, 95, 0.9)], [(0, 0, 100), (0, 10, 20), (0, 30, 40)], [0.4])[0] == pytest.approx(1 / 3)

def test_a_crowded_group_matches_the_loop_reference_across_block_boundaries(monkeypatch):
    # One (video, class) group: 40 ground truths, nested and overlapping (a long one holds
    # short ones, so the running maximum of ends matters), and 1,500 detections, some with
    # tied scores. Tiny blocks make the matching cross many block boundaries and drop
    # detections that can no longer match at a block start.
    import utils.evaluation as evaluation

    rng = np.random.default_rng(3)
    g_start = rng.integers(0, 400, 40).astype(float)
    g_end = g_start + rng.integers(1, 60, 40)
    g_start[:3], g_end[:3] = 0, [450, 200, 120]  # long ground truths that hold the others
    gt = SegmentTable(np.zeros(40), np.zeros(40), g_start, g_end, np.ones(40))
    pick = rng.integers(0, 40, 1500)
    start = np.round(g_start[pick] + rng.normal(0, 4, 1500))
    dets = SegmentTable(np.zeros(1500), np.zeros(1500), start,
                        np.maximum(start, np.round(g_end[pick] + rng.normal(0, 4, 1500))),
                        np.round(rng.random(1500), 2))
    expected = reference_ap(dets, gt, ACTIVITYNET_TIOU, 1)
    np.testing.assert_allclose(detection_ap(dets, gt, ACTIVITYNET_TIOU, 1), expected, rtol=0, atol=1e-12)
    monkeypatch.setattr(evaluation, "_BLOCK_STEPS", 3)
    monkeypatch.setattr(evaluation, "_BLOCK_PAIRS", 50)
    np.testing.assert_allclose(detection_ap(dets, gt, ACTIVITYNET_TIOU, 1), expected, rtol=0, atol=1e-12)
    assert 0.05 < expected.min() < expected.max() < 0.95  # real matches and real misses


@pytest.mark.parametrize("column, value, reason", [
    ("score", np.nan, "score is not finite"),
    ("score", np.inf, "score is not finite"),
    ("start", -np.inf, "start is not finite"),
    ("end", 1.5, "it ends before it starts"),
    ("video", 1.5, "video id is not an integer"),
    ("label", 0.2, "label id is not an integer"),
])
def test_bad_detection_rows_are_refused_naming_the_row(column, value, reason):
    rows = {"video": [0, 0, 0], "label": [0, 0, 0], "start": [0, 2, 4], "end": [1, 3, 5], "score": [0.9, 0.8, 0.7]}
    rows[column][1] = value
    with pytest.raises(DataError, match=f"segment row 1 .*: {reason}"):
        SegmentTable(**rows)


def test_a_label_outside_the_classes_is_refused_naming_the_row():
    dets = table([(0, 0, 0, 1, 0.5), (2, 7, 0, 1, 0.4)])
    with pytest.raises(DataError, match=r"detections row 1 \(video 2, label 7\): class labels must lie in 0..4"):
        detection_ap(dets, table([(0, 0, 0, 1)], with_score=False), [0.5], num_classes=5)

# ---------------------------------------------------------------- classification

def test_classification_map_by_hand():
    scores = np.array([[0.9, 0.2, 0.5], [0.8, 0.7, 0.4], [0.1, 0.3, 0.3]])
    labels = np.array([[0, 1, 0], [1, 0, 0], [1, 0, 0]])
    # class 0 ranks v0 (neg), v1, v2: precision 1/2, 2/3 at the positives -> 7/12;
    # class 1 ranks v1, v2, v0 (pos): 1/3; class 2 has no positive and is left out.
    assert classification_map(scores, labels) == pytest.approx((7 / 12 + 1 / 3) / 2, abs=1e-15)


def test_classification_map_breaks_ties_by_video_order():
    # equal scores: the positive v0 first -> 1; the positive v1 after the negative v0 -> 1/2
    assert classification_map([[0.5], [0.5]], [[1], [0]]) == 1.0
    assert classification_map([[0.5], [0.5]], [[0], [1]]) == 0.5


def test_video_class_scores_by_hand():
    cas = np.array([[math.log(4), 0, 0], [0, 0, 0], [-9, -9, -9]])
    # k=1: maxima (ln 4, 0, 0) -> softmax (4, 1, 1) / 6, background dropped
    np.testing.assert_allclose(video_class_scores(cas), [4 / 6, 1 / 6])
    # k=2: means of the top two (ln 2, 0, 0) -> (2, 1, 1) / 4
    np.testing.assert_allclose(video_class_scores(cas, k=2), [1 / 2, 1 / 4])


# ---------------------------------------------------------------- reporting

def test_summarize_reports_percent_and_the_averages_present():
    summary = summarize(np.linspace(0.9, 0.1, 9), THUMOS_TIOU)
    assert summary["mAP@0.1"] == pytest.approx(90) and summary["mAP@0.9"] == pytest.approx(10)
    assert summary["avg 0.1:0.5"] == pytest.approx(70)   # 90, 80, 70, 60, 50
    assert summary["avg 0.3:0.7"] == pytest.approx(50)
    assert summary["avg 0.1:0.7"] == pytest.approx(60)
    assert summary["avg 0.1:0.9"] == pytest.approx(50)
    assert "avg 0.5:0.95" not in summary
    anet = summarize(np.full(10, 0.25), ACTIVITYNET_TIOU)
    assert list(anet)[-1] == "avg 0.5:0.95" and anet["avg 0.5:0.95"] == pytest.approx(25)
    assert "mAP@0.55" in anet and not any(k.startswith("avg 0.1") for k in anet)


def test_format_table_lists_thresholds_and_averages():
    text = format_table(summarize(np.linspace(0.9, 0.1, 9), THUMOS_TIOU))
    lines = text.splitlines()
    assert len(lines) == 4 and "0.9" in lines[0] and "10.00" in lines[1]
    assert "0.1:0.5" in lines[2] and "70.00" in lines[3]
