"""Detection and classification mAP (docs/METHOD.md#8-detection-map, ``#7-proposals``); numpy only, no torch,
no options.

Every mAP here is a fraction in [0, 1]; only `summarize` reports percent.
Segments are in snippet units unless a name says seconds: one snippet is SNIPPET_FRAMES = 16
frames, so at `fps` frames per second (FEATURE_FPS = 25 on THUMOS-14) seconds = snippets *
16 / fps. These two constants are the project's one definition of both.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from utils.errors import DataError

#: Frames per feature snippet (two-stream I3D) and the frame rate of the released features.
SNIPPET_FRAMES, FEATURE_FPS = 16, 25
SECONDS_PER_SNIPPET = SNIPPET_FRAMES / FEATURE_FPS
#: Detection matching works through the ranks in blocks of at most this many ranks and
#: (detection, ground truth) pairs; see `_match`.
_BLOCK_STEPS, _BLOCK_PAIRS = 256, 1 << 20
THUMOS_TIOU = np.round(np.arange(0.1, 1.0, 0.1), 2)
ACTIVITYNET_TIOU = np.round(np.linspace(0.5, 0.95, 10), 2)

# Named averages reported by `summarize`: name -> the thresholds it averages.
_AVERAGES = {
    "avg 0.1:0.5": np.round(np.arange(0.1, 0.55, 0.1), 2),
    "avg 0.3:0.7": np.round(np.arange(0.3, 0.75, 0.1), 2),
    "avg 0.1:0.7": np.round(np.arange(0.1, 0.75, 0.1), 2),
    "avg 0.1:0.9": np.round(np.arange(0.1, 0.95, 0.1), 2),
    "avg 0.5:0.95": ACTIVITYNET_TIOU,
}


@dataclass(frozen=True)
class SegmentTable:
    """Temporal segments, one row each, in snippet units.

    Used for detections and ground truth alike (ground truth has score 1).
    video: (n,) int64, index into a list of video names kept by the caller.
    label: (n,) int64, class index 0..C-1.
    start, end: (n,) float64 snippets, the segment is [start, end).
    score: (n,) float64 confidence.
    """

    video: np.ndarray
    label: np.ndarray
    start: np.ndarray
    end: np.ndarray
    score: np.ndarray

    def __post_init__(self):
        columns = {}
        for field in fields(self):
            column = np.asarray(getattr(self, field.name))
            if column.ndim != 1:
                raise ValueError(f"SegmentTable.{field.name} must be 1-D, got shape {column.shape}")
            try:
                columns[field.name] = column.astype(np.float64)
            except (TypeError, ValueError):
                raise DataError(f"SegmentTable.{field.name} must hold numbers, got {column.dtype} "
                                f"values such as {column[:3].tolist()}") from None
        lengths = {name: len(column) for name, column in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"SegmentTable columns differ in length: {lengths}")
        self._refuse_bad_rows(columns)
        for name, column in columns.items():
            object.__setattr__(self, name, column.astype(np.int64) if name in ("video", "label") else column)

    @staticmethod
    def _refuse_bad_rows(columns: dict) -> None:
        """DataError naming the first bad row: a non-integer (or non-finite) video or label
        id, a non-finite start, end or score, or end < start."""
        problems = [(~np.isfinite(columns[n]) | (columns[n] != np.round(columns[n])), f"{n} id is not an integer")
                    for n in ("video", "label")]
        problems += [(~np.isfinite(columns[n]), f"{n} is not finite") for n in ("start", "end", "score")]
        problems.append((columns["end"] < columns["start"], "it ends before it starts"))
        bad = np.zeros(len(columns["video"]), dtype=bool)
        for mask, _ in problems:
            bad |= mask
        if bad.any():
            row = int(np.argmax(bad))
            why = [reason for mask, reason in problems if mask[row]]
            values = ", ".join(f"{n} {columns[n][row]:g}" for n in columns)
            raise DataError(f"segment row {row} ({values}): {'; '.join(why)}"
                            + (f" ({int(bad.sum())} bad rows in all)" if bad.sum() > 1 else ""))

    def __len__(self) -> int:
        return len(self.video)

    @classmethod
    def empty(cls) -> SegmentTable:
        """A table with no rows."""
        return cls(*(np.empty(0) for _ in fields(cls)))

    @classmethod
    def concat(cls, tables) -> SegmentTable:
        """Rows of `tables` one after the other (an empty table for no tables)."""
        tables = list(tables)
        if not tables:
            return cls.empty()
        return cls(*(np.concatenate([getattr(t, f.name) for t in tables]) for f in fields(cls)))

    def select(self, rows) -> SegmentTable:
        """The rows picked by a boolean mask (n,) or an integer index array."""
        return SegmentTable(*(getattr(self, f.name)[rows] for f in fields(self)))



def seconds_per_snippet(fps: float = FEATURE_FPS) -> float:
    """Length of one snippet in seconds at `fps` frames per second: SNIPPET_FRAMES / fps."""
    if not fps > 0:
        raise ValueError(f"the frame rate must be positive, got {fps}")
    return SNIPPET_FRAMES / fps


def seconds_to_snippets(t, fps: float = FEATURE_FPS) -> np.ndarray:
    """Snippet index of times `t` (seconds, any shape) as int64: round(t * fps / SNIPPET_FRAMES).

    Rounds exact halves to even, element by element exactly as Python's `round` does on the
    same float (np.rint is IEEE round-half-even on the exact value, which is what Python's
    round computes too); 100 of the THUMOS-14 test boundaries depend on this.
    """
    # t * fps / 16 in this order, as round(t * 25 / 16) in docs/METHOD.md#8-detection-map:
    # t / (16 / fps) can differ in the last bit, which moves exact halves.
    return np.rint(np.asarray(t, dtype=np.float64) * fps / SNIPPET_FRAMES).astype(np.int64)


def ground_truth_from_annotations(segments, segment_labels, videos, fps: float = FEATURE_FPS) -> SegmentTable:
    """Ground truth in snippet units from per-video annotations in seconds (at `fps`).

    segments[i]: list of [start_s, end_s] of video `videos[i]`; segment_labels[i]: the class
    index of each of those segments. Rows keep annotation order; score is 1.
    """
    if not len(segments) == len(segment_labels) == len(videos):
        raise DataError(f"annotations differ in length: {len(segments)} segment lists, "
                        f"{len(segment_labels)} label lists, {len(videos)} videos")
    starts, ends, labels, owners = [], [], [], []
    for video, video_segments, video_labels in zip(videos, segments, segment_labels):
        bounds = np.asarray(video_segments, dtype=np.float64).reshape(-1, 2)
        if len(bounds) != len(video_labels):
            raise DataError(f"video {video}: {len(bounds)} segments but {len(video_labels)} labels")
        if np.any(bounds[:, 1] < bounds[:, 0]):
            raise DataError(f"video {video}: a segment ends before it starts: {bounds.tolist()}")
        starts.append(bounds[:, 0])
        ends.append(bounds[:, 1])
        labels.append(np.asarray(video_labels, dtype=np.int64).reshape(-1))
        owners.append(np.full(len(bounds), video, dtype=np.int64))
    if not owners:
        return SegmentTable.empty()
    start, end = (seconds_to_snippets(np.concatenate(x), fps) for x in (starts, ends))
    return SegmentTable(np.concatenate(owners), np.concatenate(labels), start, end,
                        np.ones(len(start)))


def _tiou(p_start, p_end, g_start, g_end) -> np.ndarray:
    """Element-wise (broadcast) tIoU of [p_start, p_end) and [g_start, g_end), no +1.

    A segment of zero (or negative) length has tIoU 0 with everything: its intersection is
    0, and so is the union when both are empty (0 / 0, NaN in the toolkit).
    """
    intersection = np.clip(np.minimum(p_end, g_end) - np.maximum(p_start, g_start), 0, None)
    union = (p_end - p_start) + (g_end - g_start) - intersection
    return np.divide(intersection, union, out=np.zeros(np.shape(union)), where=union > 0)


def tiou(segment, segments) -> np.ndarray:
    """tIoU of one segment (2,) [start, end) with each of segments (n, 2) -> (n,)."""
    segment, segments = np.asarray(segment, np.float64), np.asarray(segments, np.float64)
    return _tiou(segment[0], segment[1], segments[:, 0], segments[:, 1])


def detection_ap(detections: SegmentTable, ground_truth: SegmentTable, tiou_thresholds,
                 num_classes: int) -> np.ndarray:
    """Average precision per tIoU threshold and class, ActivityNet-toolkit style -> (n_thr, C).

    Per class with ground truth and per threshold, detections are taken by descending score
    (stable: equal scores keep input order). A detection is a true positive if some ground
    truth of its video and class with tIoU >= threshold is still unmatched at that threshold;
    it then matches the one with the highest tIoU among those (equal tIoU: the first in
    ground-truth row order), exactly like the toolkit's walk over ground truth sorted by
    descending tIoU, which skips matched ones and stops at the first below the threshold.
    So a detection whose best ground truth is taken can still match the next best.
    AP is the toolkit's `interpolated_prec_rec` (precision made monotone from the right,
    summed over recall steps). The toolkit's unstable reversed argsorts are replaced by the
    stable orders above.
    Classes without ground truth get NaN and their detections are ignored; ground truth
    that no detection matches (in videos without detections, too) counts as a miss;
    detections in videos without ground truth of their class are false positives.
    tiou_thresholds: (n_thr,) in (0, 1]. Returns float64 fractions.
    """
    thresholds = _check_thresholds(tiou_thresholds)
    for name, table in (("detections", detections), ("ground truth", ground_truth)):
        _check_indices(table, num_classes, name)
    num_positives = np.bincount(ground_truth.label, minlength=num_classes)
    detections = detections.select(num_positives[detections.label] > 0)
    ranked = detections.select(np.lexsort((-detections.score, detections.label)))
    true_positive = _match(ranked, ground_truth, thresholds)
    class_bounds = np.searchsorted(ranked.label, np.arange(num_classes + 1))
    ap = np.full((len(thresholds), num_classes), np.nan)
    for c in np.flatnonzero(num_positives):
        rows = slice(class_bounds[c], class_bounds[c + 1])
        ap[:, c] = _interpolated_ap(true_positive[:, rows], num_positives[c])
    return ap


def _check_thresholds(tiou_thresholds) -> np.ndarray:
    thresholds = np.atleast_1d(np.asarray(tiou_thresholds, dtype=np.float64))
    if thresholds.ndim != 1 or len(thresholds) == 0 or np.any((thresholds <= 0) | (thresholds > 1)):
        raise ValueError(f"tIoU thresholds must be a non-empty list in (0, 1], got {thresholds}")
    return thresholds


def _check_indices(table: SegmentTable, num_classes: int, name: str):
    bad = (table.label < 0) | (table.label >= num_classes) | (table.video < 0)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"{name} row {row} (video {table.video[row]}, label {table.label[row]}): class labels "
                        f"must lie in 0..{num_classes - 1} and video indices must be >= 0")


def _match(ranked: SegmentTable, ground_truth: SegmentTable, thresholds) -> np.ndarray:
    """Greedy matching of score-ranked detections (sorted by class, then rank) -> TP (n_thr, n).

    Matching in different (class, video) groups is independent, so the k-th detection of
    every group is matched in one vectorised step. Detections are taken in blocks of at
    most `_BLOCK_STEPS` ranks and `_BLOCK_PAIRS` (detection, ground truth) pairs, so memory
    stays bounded however concentrated a group is. At the start of a block, a detection with
    no still-unmatched ground truth at tIoU >= some threshold is a false positive everywhere
    and is dropped before the step loop (matches only ever get taken, never given back), so
    in a crowded group the loop runs over the few detections that can still match.
    Only ground truth that a detection overlaps is paired with it (`_overlapping_ground_truth`).
    """
    num_videos = 1 + max(ranked.video.max(initial=-1), ground_truth.video.max(initial=-1))
    det_group = ranked.label * num_videos + ranked.video
    gt_group = ground_truth.label * num_videos + ground_truth.video
    gt_first, gt_count, gt_order = _overlapping_ground_truth(ranked, det_group, ground_truth, gt_group)
    rank = _rank_in_group(det_group)
    by_rank = np.argsort(rank, kind="stable")  # ranked rows, step by step; by row within a step
    pairs_before = np.concatenate(([0], np.cumsum(gt_count[by_rank])))
    rank_starts = np.searchsorted(rank[by_rank], np.arange(rank.max(initial=-1) + 2))

    true_positive = np.zeros((len(thresholds), len(ranked)), dtype=bool)
    matched = np.zeros((len(thresholds), len(ground_truth)), dtype=bool)
    pairs_at_rank = pairs_before[rank_starts]  # pairs of the detections ranked before r
    r0, num_ranks = 0, len(rank_starts) - 1
    while r0 < num_ranks:
        # ranks r0..r1-1 form a block: at least one rank, more while they fit
        fits = np.searchsorted(pairs_at_rank, pairs_at_rank[r0] + _BLOCK_PAIRS, "right") - 1
        r1 = max(r0 + 1, min(r0 + _BLOCK_STEPS, fits, num_ranks))
        rows = by_rank[rank_starts[r0]:rank_starts[r1]]
        r0 = r1
        # Every (detection, ground truth) pair of the block, by detection in row order.
        count = gt_count[rows]
        det = np.repeat(rows, count)
        offset = np.arange(len(det)) - np.repeat(np.cumsum(count) - count, count)
        gt = gt_order[np.repeat(gt_first[rows], count) + offset]
        overlap = _tiou(ranked.start[det], ranked.end[det], ground_truth.start[gt], ground_truth.end[gt])
        near = overlap >= thresholds.min()
        det, gt, overlap = det[near], gt[near], overlap[near]
        above = overlap >= thresholds[:, None]  # (n_thr, pairs)
        live = (above & ~matched[:, gt]).any(axis=0)
        if live.any():
            _match_block(det[live], gt[live], overlap[live], above[:, live], det_group,
                         true_positive, matched)
    return true_positive


def _overlapping_ground_truth(ranked, det_group, ground_truth, gt_group):
    """Per detection, a run of ground-truth rows holding every ground truth of its group that
    it overlaps (maybe a few more) -> (first (n,), count (n,), order (n_gt,)): detection i may
    overlap ground truth order[first[i] : first[i] + count[i]].

    Ground truth is sorted by group, then start; within a group, a detection [s, e) can only
    overlap the rows from the first whose running maximum of ends exceeds s to the last whose
    start is below e. Both searches run on one sorted key, group * width + time, for all
    groups at once; the 0.5 of slack on each side only adds rows (each pair's tIoU is computed
    exactly afterwards) and never crosses into another group (groups are width apart).
    """
    gt_order = np.lexsort((ground_truth.start, gt_group))
    group, start, end = gt_group[gt_order], ground_truth.start[gt_order], ground_truth.end[gt_order]
    times = np.concatenate([ranked.start, ranked.end, start, end])
    low = times.min(initial=0.0)
    width = times.max(initial=0.0) - low + 2
    start_key = group * width + (start - low)
    # Keys of a group lie below those of the next, so one running maximum over all rows is
    # the running maximum within each group.
    end_key = np.maximum.accumulate(group * width + (end - low))
    first = np.searchsorted(end_key, det_group * width + (ranked.start - low) - 0.5, "left")
    last = np.searchsorted(start_key, det_group * width + (ranked.end - low) + 0.5, "right")
    return first, np.maximum(last - first, 0), gt_order


def _match_block(det, gt, overlap, above, det_group, true_positive, matched) -> None:
    """The step loop over one block's live pairs (sorted by detection row); updates
    true_positive (n_thr, n) and matched (n_thr, n_gt) in place."""
    starts = _run_starts(det)
    step = np.repeat(_rank_in_group(det_group[det[starts]]), np.diff(np.append(starts, len(det))))
    order = np.lexsort((gt, -overlap, det, step))  # per step: detection, best tIoU first
    det, gt, above, step = det[order], gt[order], above[:, order], step[order]
    pair_index = np.arange(len(det))
    pair_bounds = np.append(_run_starts(det), len(det))  # detection i: pairs [b[i], b[i+1])
    det_starts = pair_bounds[:-1]
    step_bounds = np.append(_run_starts(step[det_starts]), len(det_starts))
    for s0, s1 in zip(step_bounds[:-1], step_bounds[1:]):
        # detections s0..s1-1 (one per group); per threshold, each takes its first free pair
        p0, p1 = pair_bounds[s0], pair_bounds[s1]
        free = above[:, p0:p1] & ~matched[:, gt[p0:p1]]
        first = np.minimum.reduceat(np.where(free, pair_index[p0:p1], len(det)),
                                    det_starts[s0:s1] - p0, axis=1)  # (n_thr, detections)
        thr, hit = np.nonzero(first < len(det))
        matched[thr, gt[first[thr, hit]]] = True
        true_positive[thr, det[det_starts[s0 + hit]]] = True


def _rank_in_group(groups) -> np.ndarray:
    """Rank of each element among the elements of its group, in array order (0 first) -> (n,)."""
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    rank = np.empty(len(groups), dtype=np.int64)
    rank[order] = np.arange(len(groups)) - np.searchsorted(sorted_groups, sorted_groups, "left")
    return rank


def _run_starts(values) -> np.ndarray:
    """Indices where a run of equal consecutive values starts (none for an empty array)."""
    return np.flatnonzero(np.concatenate(([len(values) > 0], values[1:] != values[:-1])))


def _interpolated_ap(true_positive, num_positives: int) -> np.ndarray:
    """The toolkit's interpolated_prec_rec for each row of true_positive (n_thr, n) -> (n_thr,)."""
    tp = np.cumsum(true_positive, axis=1, dtype=np.float64)
    precision = tp / np.arange(1, true_positive.shape[1] + 1)
    recall = tp / num_positives
    edge = np.zeros((len(tp), 1))
    precision = np.hstack([edge, precision, edge])
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    recall = np.hstack([edge, recall, edge + 1])
    return np.sum(np.diff(recall, axis=1) * precision[:, 1:], axis=1)


def video_class_scores(cas, k: int = 1) -> np.ndarray:
    """Video-level class scores: softmax over C+1 of the mean of the top-k values of each
    column of cas (T, C+1), background dropped -> (C,)."""
    cas = np.asarray(cas, dtype=np.float64)
    if not 1 <= k <= len(cas):
        raise ValueError(f"k must lie in 1..T = {len(cas)}, got {k}")
    if k == 1:  # the classification default: the max, without a partition (the same values)
        logits = cas.max(axis=0)
    else:
        logits = np.partition(cas, len(cas) - k, axis=0)[len(cas) - k:].mean(axis=0)
    exp = np.exp(logits - logits.max())
    return (exp / exp.sum())[:-1]


def classification_map(scores, labels) -> float:
    """Classification mAP, a fraction: scores (V, C), labels (V, C) multi-hot (> 0 = present).

    Per class a ranking AP: videos by descending score (stable), the mean of the precision
    at each positive; mean over the classes with at least one positive.
    """
    scores, positive = np.asarray(scores, np.float64), np.asarray(labels) > 0
    if scores.shape != positive.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and labels {positive.shape} must both be (V, C)")
    order = np.argsort(-scores, axis=0, kind="stable")
    hits = np.take_along_axis(positive, order, axis=0)
    precision = np.cumsum(hits, axis=0) / np.arange(1, len(hits) + 1)[:, None]
    num_positives = hits.sum(axis=0)
    present = num_positives > 0
    if not present.any():
        raise ValueError("classification mAP needs at least one positive label")
    ap = (precision * hits).sum(axis=0)[present] / num_positives[present]
    return float(ap.mean())


def summarize(map_per_threshold, tiou_thresholds, averages=None) -> dict:
    """Named results in PERCENT (the one function here that reports percent).

    'mAP@0.1' ... per threshold, then each of 'avg 0.1:0.5', 'avg 0.3:0.7', 'avg 0.1:0.7',
    'avg 0.1:0.9', 'avg 0.5:0.95' whose thresholds are all present; ``averages`` (names
    among those, e.g. a dataset record's) keeps only the ones named.
    """
    unknown = sorted(set(averages or ()) - set(_AVERAGES))
    if unknown:
        raise ValueError(f"unknown averages {unknown}; known: {list(_AVERAGES)}")
    maps = 100 * np.asarray(map_per_threshold, dtype=np.float64)
    thresholds = np.round(np.asarray(tiou_thresholds, dtype=np.float64), 2)
    summary = {f"mAP@{t:g}": float(m) for t, m in zip(thresholds, maps)}
    for name, wanted in _AVERAGES.items():
        if averages is not None and name not in averages:
            continue
        present = np.isclose(thresholds[:, None], wanted[None, :]).any(axis=1)
        if present.sum() == len(wanted):
            summary[name] = float(maps[present].mean())
    return summary


def format_table(summary: dict) -> str:
    """A fixed-width text table of a `summarize` result: per-threshold row, then averages row."""
    per_threshold = {k.removeprefix("mAP@"): v for k, v in summary.items() if k.startswith("mAP@")}
    averages = {k.removeprefix("avg "): v for k, v in summary.items() if k.startswith("avg ")}
    lines = []
    for title, row in (("tIoU", per_threshold), ("avg", averages)):
        if row:
            width = max(7, *(len(k) + 2 for k in row))
            lines.append(f"{title:<8}" + "".join(f"{k:>{width}}" for k in row))
            lines.append(f"{'mAP (%)':<8}" + "".join(f"{v:>{width}.2f}" for v in row.values()))
    return "\n".join(lines)
