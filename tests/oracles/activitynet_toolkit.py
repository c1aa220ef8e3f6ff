"""A plain, loop-by-loop ActivityNet-toolkit detection AP, used to check utils.evaluation.

Written to read like the toolkit's `compute_average_precision_detection`, with the two
orders that the project pins down: detections by descending score with ties in input
order, and ground truth by descending tIoU with ties in annotation order (both stable
sorts), and a zero-length segment has tIoU 0. Deliberately slow and obvious; used by
tests/test_evaluation.py and benchmarks/bench_evaluation.py.
"""
import math


def segment_tiou(p_start, p_end, g_start, g_end):
    """tIoU of [p_start, p_end) and [g_start, g_end), no +1; 0 for zero-length segments."""
    if p_end - p_start <= 0 or g_end - g_start <= 0:
        return 0.0
    intersection = max(0.0, min(p_end, g_end) - max(p_start, g_start))
    return intersection / ((p_end - p_start) + (g_end - g_start) - intersection)


def interpolated_prec_rec(precision, recall):
    """The toolkit's interpolated AP of one precision/recall curve (lists)."""
    mprec = [0.0] + list(precision) + [0.0]
    mrec = [0.0] + list(recall) + [1.0]
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mprec[i]
               for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def class_ap(detections, ground_truth, thresholds):
    """AP per threshold of one class.

    detections: list of (video, start, end, score); ground_truth: list of (video, start, end).
    """
    order = sorted(range(len(detections)), key=lambda i: -detections[i][3])
    by_video = {}
    for j, (video, _, _) in enumerate(ground_truth):
        by_video.setdefault(video, []).append(j)
    matched = [[False] * len(ground_truth) for _ in thresholds]
    hits = [[False] * len(order) for _ in thresholds]
    for rank, i in enumerate(order):
        video, start, end, _ = detections[i]
        candidates = by_video.get(video, [])
        overlaps = {j: segment_tiou(start, end, ground_truth[j][1], ground_truth[j][2])
                    for j in candidates}
        best_first = sorted(candidates, key=lambda j: -overlaps[j])
        for t, threshold in enumerate(thresholds):
            for j in best_first:
                if overlaps[j] < threshold:
                    break
                if matched[t][j]:
                    continue
                matched[t][j] = hits[t][rank] = True
                break
    aps = []
    for row in hits:
        tp, precision, recall = 0, [], []
        for rank, hit in enumerate(row):
            tp += hit
            precision.append(tp / (rank + 1))
            recall.append(tp / len(ground_truth))
        aps.append(interpolated_prec_rec(precision, recall))
    return aps


def detection_ap(detections, ground_truth, thresholds, num_classes):
    """AP (n_thr lists of C floats, NaN for classes without ground truth) from rows of
    detections (video, label, start, end, score) and ground truth (video, label, start, end)."""
    table = [[math.nan] * num_classes for _ in thresholds]
    for c in range(num_classes):
        gt = [(v, s, e) for v, label, s, e in ground_truth if label == c]
        if not gt:
            continue
        dets = [(v, s, e, p) for v, label, s, e, p in detections if label == c]
        for t, ap in enumerate(class_ap(dets, gt, thresholds)):
            table[t][c] = ap
    return table
