"""From per-snippet scores to detections (docs/METHOD.md#7-proposals); pure functions on numpy arrays.

Everything is in snippet units: a proposal [start, end) covers snippets start..end-1;
multiply by `utils.evaluation.seconds_per_snippet(fps)` (16/25 at 25 fps) for seconds. Select a
method by name with `PROPOSAL_METHODS`.
"""
import numpy as np

from utils.evaluation import FEATURE_FPS, SegmentTable, seconds_to_snippets, video_class_scores

ACT_THRESHOLDS = np.linspace(0.1, 0.9, 10)
#: Classes whose video score v[c] reaches this are localized (else the argmax of v).
CLASS_THRESHOLD = 0.2
#: gamma, the weight of the video score v[c] in a proposal's score (``--gamma-oic``).
GAMMA = 0.2


def video_scores(cas, attn) -> np.ndarray:
    """Video-level class scores v (C,) of one video.

    cas: (T, C+1), attn: (T, 1). With s = cas * attn, the softmax over C+1 of the mean of
    the top max(1, T // 10) values of each column of s, background dropped.
    """
    s = np.asarray(cas, np.float64) * np.asarray(attn, np.float64).reshape(-1, 1)
    return video_class_scores(s, k=max(1, len(s) // 10))


def _run_bounds(masks):
    """Runs of consecutive True in each row of masks (R, T) -> (starts, ends) inclusive,
    ordered by row, then left to right."""
    padded = np.pad(masks.astype(np.int8), ((0, 0), (1, 1)))
    step = np.diff(padded, axis=1)
    starts = np.nonzero(step == 1)[1]
    ends = np.nonzero(step == -1)[1] - 1
    return starts, ends


def _outer_inner_contrast(s, starts, ends) -> np.ndarray:
    """Outer-inner contrast of every run (R,) for every column of s (T, K) -> (R, K).

    As released: with n = i1 - i0 + 1, o0 = max(0, int(i0 - n/4)), o1 = min(T-1,
    int(i1 + n/4)); the outer snippets are [o0, i0) and (i1, o1], their mean is 0 when
    there are none.
    """
    num_snippets = len(s)
    length = ends - starts + 1
    outer_start = np.maximum(0, np.trunc(starts - 0.25 * length).astype(np.int64))
    outer_end = np.minimum(num_snippets - 1, np.trunc(ends + 0.25 * length).astype(np.int64))
    prefix = np.concatenate([np.zeros((1, s.shape[1])), np.cumsum(s, axis=0)])
    inner_sum = prefix[ends + 1] - prefix[starts]
    outer_sum = prefix[outer_end + 1] - prefix[outer_start] - inner_sum
    outer_count = (outer_end - outer_start + 1 - length)[:, None]
    outer_mean = np.divide(outer_sum, outer_count, out=np.zeros_like(outer_sum),
                           where=outer_count > 0)
    return inner_sum / length[:, None] - outer_mean


def soft_nms(start, end, score, sigma: float = 0.3):
    """Gaussian soft-NMS of proposals (n,) -> (order (n,) int64, kept_score (n,)).

    Repeatedly picks the remaining proposal with the highest current score (the first in
    input order on ties), outputs it with that current score, and multiplies every other
    remaining score by exp(-IoU^2 / sigma). IoU uses the released "+1" convention:
    area = end - start + 1, intersection = max(0, min_end - max_start + 1). Nothing is
    discarded; negative scores are multiplied as they are.
    order[i] is the input index of the i-th pick, kept_score[i] its score when picked.
    """
    start, end = np.asarray(start, np.float64), np.asarray(end, np.float64)
    current = np.array(score, dtype=np.float64)
    n = len(current)
    # Every pair's decay exp(-IoU^2 / sigma) once, (n, n), with the same arithmetic per pair
    # as one row at a time, so the scores are bitwise those of the row-by-row loop; the
    # loop then only picks and multiplies (3x faster at the ~40 proposals per class and
    # video of ActivityNet, benchmarks/bench_activitynet.py).
    area = end - start + 1
    overlap = np.minimum(end[:, None], end) - np.maximum(start[:, None], start) + 1
    intersection = np.maximum(0, overlap)
    decay = np.exp(-(intersection / (area[:, None] + area - intersection)) ** 2 / sigma)
    order = np.empty(n, dtype=np.int64)
    kept_score = np.empty(n)
    for i in range(n):
        pick = int(current.argmax())  # picked ones are -inf, which every decay (> 0) keeps
        order[i], kept_score[i] = pick, current[pick]
        current[pick] = -np.inf
        current *= decay[pick]
    return order, kept_score


def ambiguous_to_snippets(intervals_seconds, fps: float = FEATURE_FPS) -> np.ndarray:
    """Ambiguous intervals (K, 2) in seconds (features at `fps`) -> (K, 2) int64 snippets
    [s, e), round(t * fps / 16) as Python's round (half to even)."""
    return seconds_to_snippets(np.asarray(intervals_seconds, np.float64).reshape(-1, 2), fps)


def filter_ambiguous(detections: SegmentTable, ambiguous_snippets: dict) -> SegmentTable:
    """Drop detections that share a snippet with an ambiguous interval of their video.

    ambiguous_snippets: video index -> (K, 2) snippet intervals [s, e) from
    `ambiguous_to_snippets`. A detection [start, end) of video v is dropped when the integer
    ranges [int(start), int(end)) and some [s, e) of v overlap in at least one snippet,
    whatever the class; touching ranges are kept.
    """
    first, last = np.trunc(detections.start), np.trunc(detections.end)
    dropped = np.zeros(len(detections), dtype=bool)
    for video, intervals in ambiguous_snippets.items():
        intervals = np.asarray(intervals).reshape(-1, 2)
        rows = np.flatnonzero(detections.video == video)
        overlap = (np.maximum(first[rows, None], intervals[:, 0])
                   < np.minimum(last[rows, None], intervals[:, 1]))
        dropped[rows] = overlap.any(axis=1)
    return detections.select(~dropped)


def multiple_threshold_hamnet(cas, attn, video: int, *, act_thresholds=ACT_THRESHOLDS,
                              class_threshold: float = CLASS_THRESHOLD, gamma: float = GAMMA,
                              sigma: float = 0.3, ambiguous=None) -> SegmentTable:
    """Detections of one video (snippet units), as the released multiple_threshold_hamnet.

    cas: (T, C+1), attn: (T, 1). Classes with v[c] >= class_threshold (else the argmax of
    v, see `video_scores`) are predicted. For each threshold, the runs of snippets with
    attn > threshold become proposals [i0, i1 + 1) of every predicted class c, scored by the
    outer-inner contrast of s[:, c] (s = cas * attn) plus gamma * v[c]. Per class, the
    proposals of all thresholds are pooled and ordered by Gaussian soft-NMS; then, if
    `ambiguous` (video index -> (K, 2) snippet intervals) is given, detections sharing a
    snippet with an ambiguous interval of this video are dropped (`filter_ambiguous`). Rows come by
    class, then soft-NMS order.
    """
    cas = np.asarray(cas, np.float64)
    attn = np.asarray(attn, np.float64).reshape(-1)
    if cas.ndim != 2 or len(attn) != len(cas):
        raise ValueError(f"cas must be (T, C+1) and attn (T, 1); got cas {cas.shape} "
                         f"and {attn.size} attn values")
    s = cas * attn[:, None]
    v = video_scores(cas, attn[:, None])
    classes = np.flatnonzero(v >= class_threshold)
    if len(classes) == 0:
        classes = np.array([np.argmax(v)])
    starts, ends = _run_bounds(attn[None, :] > np.asarray(act_thresholds)[:, None])
    scores = _outer_inner_contrast(s[:, classes], starts, ends) + gamma * v[classes]
    per_class = [_class_detections(video, c, starts, ends + 1, scores[:, k], sigma)
                 for k, c in enumerate(classes)]
    detections = SegmentTable.concat(per_class)
    return detections if ambiguous is None else filter_ambiguous(detections, ambiguous)


def _class_detections(video, label, start, end, score, sigma) -> SegmentTable:
    """One class's pooled proposals (n,) after soft-NMS, as a table."""
    order, kept_score = soft_nms(start, end, score, sigma)
    n = len(order)
    return SegmentTable(np.full(n, video), np.full(n, label), start[order], end[order], kept_score)


PROPOSAL_METHODS = {"multiple_threshold_hamnet": multiple_threshold_hamnet}
