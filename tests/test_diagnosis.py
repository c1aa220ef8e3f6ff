"""DETAD false-positive breakdown and per-class AP tables (utils/diagnosis.py)."""
import csv
from types import SimpleNamespace

import numpy as np
import pytest

from utils.diagnosis import (
    BACKGROUND, CATEGORIES, CONFUSION, DOUBLE_DETECTION, LOCALIZATION, NOT_RANKED,
    TRUE_POSITIVE, WRONG_LABEL, classify_detections, false_positive_breakdown,
    format_breakdown, per_class_ap_table, write_per_class_csv)
from utils.evaluation import summarize


def segments(rows):
    """Rows (video, label, start, end, score) -> an object with the five arrays."""
    video, label, start, end, score = (np.array(col) for col in zip(*rows))
    return SimpleNamespace(video=video, label=label, start=start, end=end, score=score)


# Two classes, three videos (video 2 has no ground truth). G_0 = G_1 = 2.
GROUND_TRUTH = segments([
    (0, 0, 0.0, 10.0, 1.0),
    (0, 1, 20.0, 30.0, 1.0),
    (1, 0, 0.0, 10.0, 1.0),
    (1, 1, 50.0, 60.0, 1.0),
])

# (video, label, start, end, score), expected category. Listed out of score order.
CASES = [
    ((1, 0, 0.0, 3.0, 0.6), LOCALIZATION),      # tIoU 0.3 with its class-0 gt
    ((0, 1, 20.0, 30.0, 0.95), TRUE_POSITIVE),
    ((0, 0, 1.0, 10.0, 0.8), DOUBLE_DETECTION),  # tIoU 0.9 with a gt the 0.9 one matched
    ((1, 0, 0.0, 10.0, 0.3), NOT_RANKED),        # would be a TP, but 7th of class 0 (top 6)
    ((0, 0, 0.0, 10.0, 0.9), TRUE_POSITIVE),
    ((1, 1, 50.0, 59.0, 0.9), TRUE_POSITIVE),    # tIoU 0.9
    ((0, 0, 20.0, 30.0, 0.7), WRONG_LABEL),      # tIoU 1 with the class-1 gt
    ((1, 1, 50.0, 51.0, 0.85), LOCALIZATION),    # tIoU exactly 0.1
    ((1, 0, 50.0, 53.0, 0.5), CONFUSION),        # tIoU 0.3 with the class-1 gt
    ((0, 1, 0.0, 0.9, 0.8), BACKGROUND),         # tIoU 0.09 (0.17 with a "+1": no +1 here)
    ((2, 1, 0.0, 10.0, 0.7), BACKGROUND),        # video without ground truth
    ((1, 0, 100.0, 110.0, 0.4), BACKGROUND),
    ((0, 1, 20.0, 30.0, 0.6), DOUBLE_DETECTION),
    ((1, 1, 0.0, 10.0, 0.6), NOT_RANKED),        # ties the one above, comes later: 7th
]
DETECTIONS = segments([row for row, _ in CASES])


def test_every_detection_gets_its_detad_category():
    category = classify_detections(DETECTIONS, GROUND_TRUTH, num_classes=2, top_k_factor=3)
    assert category.tolist() == [expected for _, expected in CASES]


def test_breakdown_counts_per_class_totals_and_shares():
    result = false_positive_breakdown(DETECTIONS, GROUND_TRUTH, num_classes=2, top_k_factor=3)
    # columns: TP, double, wrong label, localization, confusion, background
    assert result.counts.tolist() == [[1, 1, 1, 1, 1, 1], [2, 1, 0, 1, 0, 2]]
    assert result.totals.tolist() == [3, 2, 1, 2, 1, 3]
    np.testing.assert_allclose(result.shares, np.array([3, 2, 1, 2, 1, 3]) / 12)


def test_top_k_factor_one_ranks_only_g_detections_per_class():
    result = false_positive_breakdown(DETECTIONS, GROUND_TRUTH, num_classes=2)
    # class 0: scores 0.9 (TP), 0.8 (double); class 1: 0.95 (TP), 0.9 (TP)
    assert result.counts.tolist() == [[1, 1, 0, 0, 0, 0], [2, 0, 0, 0, 0, 0]]


def test_the_best_overlapping_ground_truth_decides_after_the_true_positive_rule():
    gt = segments([(0, 0, 0.0, 10.0, 1.0), (0, 1, 2.0, 10.0, 1.0)])
    det = segments([
        (0, 0, 0.0, 6.0, 0.9),   # same-class tIoU 0.6 unmatched -> TP, despite 0.5 other-class
        (0, 0, 2.0, 10.0, 0.8),  # matched same-class 0.8, other-class 1.0 -> wrong label
        (0, 0, 5.0, 5.0, 0.7),   # zero length: tIoU 0 with everything -> background
    ])
    category = classify_detections(det, gt, num_classes=2, top_k_factor=3)
    assert category.tolist() == [TRUE_POSITIVE, WRONG_LABEL, BACKGROUND]


def test_a_tiou_threshold_moves_detections_between_categories():
    category = classify_detections(DETECTIONS, GROUND_TRUTH, num_classes=2, tiou=0.95,
                                   top_k_factor=3)
    # the two tIoU-0.9 detections are no longer true positives; 0.9 < 0.95 -> localization
    assert category[2] == LOCALIZATION and category[5] == LOCALIZATION
    assert category[1] == TRUE_POSITIVE and category[4] == TRUE_POSITIVE


def test_format_breakdown_lists_classes_totals_and_shares():
    result = false_positive_breakdown(DETECTIONS, GROUND_TRUTH, num_classes=2, top_k_factor=3)
    lines = format_breakdown(result, ["Diving", "Shotput"]).splitlines()
    assert lines[0].split("  ")[0].strip() == "class"
    assert all(name in lines[0] for name in CATEGORIES)
    assert lines[2].split() == ["Diving", "1", "1", "1", "1", "1", "1"]
    assert lines[3].split() == ["Shotput", "2", "1", "0", "1", "0", "2"]
    assert lines[5].split() == ["total", "3", "2", "1", "2", "1", "3"]
    assert lines[6].split() == ["share", "%", "25.0", "16.7", "8.3", "16.7", "8.3", "25.0"]


AP = np.array([[0.5, 0.3],    # AP@0.1 of classes A, B
               [0.1, 0.9]])   # AP@0.5


def test_per_class_ap_table_in_percent_with_mean_row_and_avg_column():
    lines = per_class_ap_table(AP, [0.1, 0.5], ["A", "BaseballPitch"]).splitlines()
    assert lines[0].split() == ["class", "AP@0.1", "AP@0.5", "avg"]
    assert lines[2].split() == ["A", "50.0", "10.0", "30.0"]
    assert lines[3].split() == ["BaseballPitch", "30.0", "90.0", "60.0"]
    assert set(lines[4]) == {"-"}
    assert lines[5].split() == ["mean", "40.0", "50.0", "45.0"]
    assert len({len(line) for line in lines}) == 1  # fixed width


def test_the_mean_row_leaves_out_a_class_without_ground_truth_like_the_summary(tmp_path):
    # Class C has no ground truth (NaN AP): the mean row is the mean of A and B, the mAP of
    # utils.evaluation.summarize, in the text table and the CSV alike.
    ap = np.hstack([AP, np.full((2, 1), np.nan)])
    lines = per_class_ap_table(ap, [0.1, 0.5], ["A", "BaseballPitch", "C"]).splitlines()
    assert lines[4].split() == ["C", "nan", "nan", "nan"]
    assert lines[6].split() == ["mean", "40.0", "50.0", "45.0"]
    summary = summarize(np.nanmean(ap, axis=1), [0.1, 0.5])
    assert (summary["mAP@0.1"], summary["mAP@0.5"]) == (40.0, 50.0)
    with write_per_class_csv(tmp_path / "ap.csv", ap, [0.1, 0.5], ["A", "B", "C"]).open(newline="") as f:
        assert list(csv.reader(f))[4] == ["mean", "40.0", "50.0", "45.0"]


def test_per_class_csv_keeps_full_precision(tmp_path):
    ap = np.array([[0.123456789, 1.0], [0.0, 0.5]])
    path = write_per_class_csv(tmp_path / "ap.csv", ap, [0.1, 0.95], ["A", "B"])
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["class", "AP@0.1", "AP@0.95", "avg"]
    assert rows[1][0] == "A" and float(rows[1][1]) == 100 * 0.123456789
    assert float(rows[1][3]) == (100 * 0.123456789 + 0.0) / 2
    assert rows[3][0] == "mean" and float(rows[3][2]) == 25.0


def test_ap_table_rejects_a_shape_that_does_not_fit_the_names():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        per_class_ap_table(AP, [0.1, 0.5], ["A", "B", "C"])
