"""Scores to detections (proposal_methods.py, docs/METHOD.md#7-proposals) on hand-built score sequences."""
import math

import numpy as np
import pytest

from proposal_methods import (
    _outer_inner_contrast, _run_bounds, ambiguous_to_snippets, filter_ambiguous,
    multiple_threshold_hamnet, soft_nms, video_scores,
)
from utils.evaluation import SegmentTable

def grouped_runs(mask) -> list:
    """Runs of consecutive True in mask (T,) as inclusive (i0, i1) pairs (proposal_methods._run_bounds)."""
    starts, ends = _run_bounds(np.asarray(mask, dtype=bool)[None, :])
    return list(zip(starts.tolist(), ends.tolist()))


def outer_inner_contrast(scores, i0: int, i1: int) -> float:
    """proposal_methods._outer_inner_contrast of one run [i0, i1] of scores (T,)."""
    return float(_outer_inner_contrast(np.asarray(scores, np.float64)[:, None], np.array([i0]), np.array([i1]))[0, 0])


W_SAME = math.exp(-1 / 0.3)  # soft-NMS weight of a proposal identical to the pick (IoU 1)


def example_video():
    """T = 20, C = 2. attn is 0.95 on snippets 2..5, 0.5 on 10..11, 0.3 on 12, 0.05 on 6
    and 9 (below every threshold), 0 elsewhere. cas puts class 0 on 2..5 and 10..12 (1)
    and 6 (4), 9 (2); the background on 2..5; class 1 nowhere.
    So s = cas * attn, class 0: 0.95 on 2..5, 0.2 on 6, 0.1 on 9, 0.5 on 10..11, 0.3 on 12.
    """
    attn = np.zeros(20)
    attn[2:6], attn[10:12], attn[12], attn[[6, 9]] = 0.95, 0.5, 0.3, 0.05
    cas = np.zeros((20, 3))
    cas[[2, 3, 4, 5, 10, 11, 12], 0] = 1
    cas[6, 0], cas[9, 0] = 4, 2
    cas[2:6, 2] = 1
    return cas, attn[:, None]


# v: top max(1, 20 // 10) = 2 values of each column of s: (0.95, 0, 0.95) -> softmax
V0 = math.exp(0.95) / (2 * math.exp(0.95) + 1)  # 0.419
V1 = 1 / (2 * math.exp(0.95) + 1)                # 0.162 < 0.2: class 1 is not predicted
BONUS = 0.2 * V0
# Outer-inner contrast of the three runs (class 0):
# [2,5]:   n=4, o0 = max(0, int(2 - 1)) = 1, o1 = min(19, int(5 + 1)) = 6; outer {1, 6}:
#          0.95 - (0 + 0.2) / 2 = 0.85
# [10,11]: n=2, o0 = int(9.5) = 9, o1 = int(11.5) = 11; outer {9}: 0.5 - 0.1 = 0.4
# [10,12]: n=3, o0 = int(9.25) = 9, o1 = int(12.75) = 12; outer {9}: 1.3 / 3 - 0.1
OIC = {(2, 5): 0.85, (10, 11): 0.4, (10, 12): 1.3 / 3 - 0.1}


def test_video_scores_by_hand():
    np.testing.assert_allclose(video_scores(*example_video()), [V0, V1])


def test_video_scores_average_the_top_tenth():
    cas = np.zeros((25, 3))
    cas[:2, 0] = math.log(4)
    # T = 25: the top 25 // 10 = 2 values of class 0 average ln 4 -> softmax (4, 1, 1) / 6
    np.testing.assert_allclose(video_scores(cas, np.ones((25, 1))), [4 / 6, 1 / 6])


def test_grouped_runs():
    assert grouped_runs(np.array([1, 1, 0, 1, 0, 0, 1], bool)) == [(0, 1), (3, 3), (6, 6)]
    assert grouped_runs(np.zeros(4, bool)) == [] and grouped_runs(np.ones(3, bool)) == [(0, 2)]


def test_runs_per_threshold_of_the_example():
    attn = example_video()[1][:, 0]
    thresholds = np.linspace(0.1, 0.9, 10)
    runs = [grouped_runs(attn > t) for t in thresholds]
    assert runs[:3] == [[(2, 5), (10, 12)]] * 3      # 0.1, 0.19, 0.28 < 0.3
    assert runs[3:5] == [[(2, 5), (10, 11)]] * 2     # 0.37, 0.46 < 0.5
    assert runs[5:] == [[(2, 5)]] * 5                # 0.54 .. 0.9 < 0.95


@pytest.mark.parametrize("run", list(OIC))
def test_outer_inner_contrast_by_hand(run):
    cas, attn = example_video()
    s = cas[:, 0] * attn[:, 0]
    assert outer_inner_contrast(s, *run) == pytest.approx(OIC[run], abs=1e-12)


def test_outer_inner_contrast_edges():
    s = np.array([3.0, 1.0, 5.0])
    assert outer_inner_contrast(s, 0, 2) == 3.0   # whole video: no outer snippets, outer mean 0
    assert outer_inner_contrast(s, 0, 0) == 3.0   # n=1: int(0.25) = 0, int(-0.25) = 0, no outer
    assert outer_inner_contrast(s, 1, 2) == 0.0   # n=2: outer [int(0.5), 1) = {0}: 3 - 3


def test_soft_nms_order_and_decayed_scores():
    start, end = np.array([0, 0, 10, 1, 40]), np.array([10, 10, 20, 10, 45])
    score = np.array([0.9, 0.9, 0.8, 0.5, -0.1])
    # "+1" IoU: [0,10) vs [10,20): inter 10 - 10 + 1 = 1, areas 11 + 11 -> 1/21;
    # [0,10) vs [1,10): inter 10, areas 11 + 10 -> 10/11; [10,20) vs [1,10): 1/20.
    w = {iou: math.exp(-iou**2 / 0.3) for iou in (1, 1 / 21, 10 / 11, 1 / 20)}
    # pick 0 (first of the tie); then 2 at 0.8 w(1/21); then 1 at 0.9 w(1) w(1/21)
    # (= 0.03186) before 3 at 0.5 w(10/11) w(1/20) (= 0.03155); the far negative one last.
    expected = [0.9, 0.8 * w[1 / 21], 0.9 * w[1] * w[1 / 21],
                0.5 * w[10 / 11] * w[1 / 20] * w[10 / 11], -0.1]
    order, kept = soft_nms(start, end, score)
    np.testing.assert_array_equal(order, [0, 2, 1, 3, 4])
    np.testing.assert_allclose(kept, expected, rtol=1e-12)


def soft_nms_row_by_row(start, end, score, sigma=0.3):
    """The plain loop: each pick computes its IoU with every proposal, and decays the rest."""
    current, area = np.array(score, np.float64), end - start + 1.0
    remaining, order, kept = np.ones(len(current), bool), [], []
    for _ in range(len(current)):
        pick = int(np.argmax(np.where(remaining, current, -np.inf)))
        order.append(pick), kept.append(current[pick])
        remaining[pick] = False
        inter = np.maximum(0, np.minimum(end[pick], end) - np.maximum(start[pick], start) + 1)
        current *= np.exp(-(inter / (area[pick] + area - inter)) ** 2 / sigma)
    return np.array(order, np.int64), np.array(kept)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 40, 150])
def test_soft_nms_equals_the_row_by_row_loop_bit_for_bit(n):
    rng = np.random.default_rng(n)
    start = rng.integers(0, 100, n).astype(np.float64)
    end = start + rng.integers(0, 30, n)
    score = np.round(rng.normal(0, 1, n), 1)  # rounded: many ties, broken by input order
    order, kept = soft_nms(start, end, score)
    expected_order, expected_kept = soft_nms_row_by_row(start, end, score)
    np.testing.assert_array_equal(order, expected_order)
    np.testing.assert_array_equal(kept, expected_kept)


def test_soft_nms_multiplies_negative_scores():
    order, kept = soft_nms(np.array([0, 0]), np.array([5, 5]), np.array([1.0, -0.5]))
    np.testing.assert_allclose(kept, [1.0, -0.5 * W_SAME])


def test_multiple_threshold_hamnet_on_the_example():
    cas, attn = example_video()
    dets = multiple_threshold_hamnet(cas, attn, video=7)
    # 15 pooled proposals of class 0: [2,6) x 10 thresholds, [10,13) x 3, [10,12) x 2
    assert len(dets) == 15 and set(dets.label) == {0} and set(dets.video) == {7}
    w_run = math.exp(-((3 / 4) ** 2) / 0.3)  # "+1" IoU of [10,12) and [10,13): 3 / (3 + 4 - 3)
    first_four = [  # (start, end, score) in soft-NMS order
        (2, 6, OIC[(2, 5)] + BONUS),
        (10, 12, OIC[(10, 11)] + BONUS),
        (10, 13, (OIC[(10, 12)] + BONUS) * w_run),
        (2, 6, (OIC[(2, 5)] + BONUS) * W_SAME),
    ]
    got = list(zip(dets.start[:4], dets.end[:4], dets.score[:4]))
    np.testing.assert_allclose(got, first_four, rtol=1e-12)
    assert np.all(np.diff(dets.score) <= 0)


def test_a_run_at_snippet_zero_alone_is_kept():
    # the released code skips a threshold whose only snippet above it is snippet 0
    cas = np.zeros((10, 3))
    cas[0, [0, 2]] = 1  # class 0 and background: v = (0.42, 0.16), class 0 alone
    attn = np.zeros((10, 1))
    attn[0] = 0.95
    dets = multiple_threshold_hamnet(cas, attn, video=0)
    assert len(dets) == 10 and set(zip(dets.start, dets.end)) == {(0, 1)}


def test_class_selection_threshold_and_argmax():
    cas, attn = example_video()
    both = multiple_threshold_hamnet(cas, attn, video=0, class_threshold=0.15)
    assert set(both.label) == {0, 1}          # V1 = 0.162 >= 0.15
    # no class reaches 0.2 (all near 1/6): the argmax alone, class 1
    flat = np.zeros((10, 6))
    flat[:, 1] = 0.1
    dets = multiple_threshold_hamnet(flat, np.ones((10, 1)), video=0)
    assert set(dets.label) == {1} and len(dets) == 10


def test_ambiguous_to_snippets_rounds_halves_to_even():
    snippets = ambiguous_to_snippets([[0.32, 0.96], [1.6, 2.88]])  # 0.5, 1.5; 2.5, 4.5
    np.testing.assert_array_equal(snippets, [[0, 2], [2, 4]])


def test_filter_ambiguous_drops_overlaps_and_keeps_touching():
    dets = SegmentTable(
        video=[0, 0, 0, 0, 0, 1],
        label=[0, 1, 2, 0, 0, 0],
        start=[0, 5, 7.6, 12, 11.9, 5],
        end=[5, 8, 9.9, 15, 12.5, 15],
        score=np.arange(6.0),
    )
    # ambiguous [8, 12) of video 0: [5,8) and [12,15) touch it, int ranges [7,9) and [11,12)
    # share snippets 8 and 11; video 1 is not affected.
    kept = filter_ambiguous(dets, {0: np.array([[8, 12]]), 3: np.array([[0, 100]])})
    np.testing.assert_array_equal(kept.score, [0, 1, 3, 5])


def test_ambiguous_argument_filters_detections_of_this_video_only():
    cas, attn = example_video()
    dets = multiple_threshold_hamnet(cas, attn, video=7, ambiguous={7: np.array([[3, 4]]),
                                                                  8: np.array([[10, 12]])})
    assert len(dets) == 5 and set(dets.start) == {10}

