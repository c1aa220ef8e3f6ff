"""Speed and memory of utils.evaluation.detection_ap against two simpler implementations.

Run from anywhere: python benchmarks/bench_evaluation.py
Two cases, THUMOS tIoU thresholds 0.1..0.9:
- spread: 212 test videos x 200 random detections;
- concentrated: as many detections (42,400), all in the (video, class) group with the most
  ground truth (218 instances of class 1 in test video 88 on THUMOS-14), the case that a
  one-step-per-rank matching handles worst.
Side by side: a straightforward sort-based numpy implementation (per class, detections by
score, each one's ground truth sorted by tIoU, all thresholds at once) and, for the spread
case, the plain loop-by-loop toolkit reference (too slow for the concentrated case).
Uses the real THUMOS-14 test ground truth from ../shared/data/thumos14 (beside the
checkout) when it is there, synthetic ground truth otherwise.
"""
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.oracles import activitynet_toolkit as reference  # noqa: E402
from utils.evaluation import (  # noqa: E402
    THUMOS_TIOU, SegmentTable, detection_ap, ground_truth_from_annotations, tiou,
)
from utils.evaluation import _interpolated_ap  # noqa: E402

ANNOTATIONS = REPO.parent / "shared" / "data" / "thumos14" / "Thumos14reduced-Annotations"
NUM_CLASSES, NUM_VIDEOS, DETECTIONS_PER_VIDEO, REPEATS = 20, 212, 200, 5


def thumos_ground_truth() -> SegmentTable:
    """The 3,358 ground-truth segments of the 212 THUMOS-14 test videos, in snippets."""
    classes = [c.decode() for c in np.load(ANNOTATIONS / "classlist.npy")]
    test = np.flatnonzero(np.load(ANNOTATIONS / "subset.npy") == b"test")
    segments = np.load(ANNOTATIONS / "segments.npy", allow_pickle=True)[test]
    labels = np.load(ANNOTATIONS / "labels.npy", allow_pickle=True)[test]
    class_indices = [[classes.index(name) for name in video] for video in labels]
    return ground_truth_from_annotations(list(segments), class_indices, np.arange(len(test)))


def synthetic_ground_truth(rng: np.random.Generator) -> SegmentTable:
    """About 16 segments of 1-2 classes per video over 300 snippets."""
    count = rng.poisson(16, NUM_VIDEOS) + 1
    video = np.repeat(np.arange(NUM_VIDEOS), count)
    video_classes = rng.integers(0, NUM_CLASSES, (NUM_VIDEOS, 2))
    label = video_classes[video, rng.integers(0, 2, len(video))]
    start = rng.uniform(0, 280, len(video)).round()
    end = start + rng.integers(1, 20, len(video))
    return SegmentTable(video, label, start, end, np.ones(len(video)))


def random_detections(ground_truth: SegmentTable, rng: np.random.Generator,
                      videos=range(NUM_VIDEOS), per_video=DETECTIONS_PER_VIDEO) -> SegmentTable:
    """Per video, half jittered copies of its ground truth (80% right class), half random."""
    tables = []
    for video in videos:
        gt = ground_truth.select(ground_truth.video == video)
        n_near = per_video // 2 if len(gt) else 0
        n_far = per_video - n_near
        pick = rng.integers(0, max(len(gt), 1), n_near)
        length = gt.end[pick] - gt.start[pick] + 1
        near_start = gt.start[pick] + rng.normal(0, 0.2, n_near) * length
        near_end = np.maximum(gt.end[pick] + rng.normal(0, 0.2, n_near) * length, near_start + 0.1)
        near_label = np.where(rng.random(n_near) < 0.8, gt.label[pick],
                              rng.integers(0, NUM_CLASSES, n_near))
        far_start = rng.uniform(0, gt.end.max(initial=300), n_far)
        tables.append(SegmentTable(
            np.full(per_video, video),
            np.concatenate([near_label, rng.integers(0, NUM_CLASSES, n_far)]),
            np.concatenate([near_start, far_start]),
            np.concatenate([near_end, far_start + rng.exponential(20, n_far)]),
            rng.random(per_video),
        ))
    return SegmentTable.concat(tables)


def concentrated_detections(ground_truth: SegmentTable, rng: np.random.Generator):
    """All NUM_VIDEOS * DETECTIONS_PER_VIDEO detections in the (video, class) group with the
    most ground truth, and that group's ground truth (the rest cannot match them)."""
    groups, counts = np.unique(ground_truth.label * NUM_VIDEOS + ground_truth.video, return_counts=True)
    video, label = groups[counts.argmax()] % NUM_VIDEOS, groups[counts.argmax()] // NUM_VIDEOS
    group = ground_truth.select((ground_truth.video == video) & (ground_truth.label == label))
    dets = random_detections(group, rng, [video], NUM_VIDEOS * DETECTIONS_PER_VIDEO)
    return SegmentTable(dets.video, np.full(len(dets), label), dets.start, dets.end, dets.score), group


def sort_based_ap(detections: SegmentTable, ground_truth: SegmentTable, thresholds, num_classes):
    """The alternative: per class, detections by descending score (stable); for each one, the
    ground truth of its video sorted by descending tIoU (stable), every threshold at once."""
    ap = np.full((len(thresholds), num_classes), np.nan)
    for c in np.unique(ground_truth.label):
        gt = ground_truth.select(ground_truth.label == c)
        dets = detections.select(detections.label == c)
        dets = dets.select(np.argsort(-dets.score, kind="stable"))
        by_video = {v: np.flatnonzero(gt.video == v) for v in np.unique(gt.video)}
        matched = np.zeros((len(thresholds), len(gt)), dtype=bool)
        hits = np.zeros((len(thresholds), len(dets)), dtype=bool)
        for rank in range(len(dets)):
            candidates = by_video.get(dets.video[rank])
            if candidates is None:
                continue
            overlap = tiou((dets.start[rank], dets.end[rank]), np.stack([gt.start[candidates], gt.end[candidates]], 1))
            best_first = np.argsort(-overlap, kind="stable")
            overlap, candidates = overlap[best_first], candidates[best_first]
            free = (overlap >= thresholds[:, None]) & ~matched[:, candidates]  # (n_thr, candidates)
            hit = free.any(axis=1)
            matched[hit, candidates[free.argmax(axis=1)[hit]]] = True
            hits[hit, rank] = True
        ap[:, c] = _interpolated_ap(hits, len(gt))
    return ap


def timed(function, *args, repeats: int = 1):
    """(result, median seconds over repeats)."""
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - tic)
    return result, statistics.median(times)


def peak_memory(function, *args) -> int:
    """The most memory (bytes) traced by tracemalloc during one run (numpy arrays included)."""
    tracemalloc.start()
    function(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def compare(title: str, detections: SegmentTable, ground_truth: SegmentTable, with_reference: bool):
    print(f"\n{title}: {len(detections):,} detections, {len(ground_truth):,} ground truths, "
          f"{len(np.unique(detections.label * NUM_VIDEOS + detections.video)):,} (video, class) groups")
    # Memory is traced in a separate run: tracemalloc slows the code it watches.
    args = (detections, ground_truth, THUMOS_TIOU, NUM_CLASSES)
    ap, fast = timed(detection_ap, *args, repeats=REPEATS)
    rows = [("detection_ap", f"median of {REPEATS}", fast, peak_memory(detection_ap, *args), ap)]
    expected, seconds = timed(sort_based_ap, *args)
    rows.append(("sort-based numpy", "1 run", seconds, peak_memory(sort_based_ap, *args), expected))
    if with_reference:
        expected, seconds = timed(reference_ap, detections, ground_truth)
        rows.append(("loop reference", "1 run", seconds, float("nan"), expected))
    print(f"  {'implementation':<18}{'runs':<14}{'time (ms)':>10}{'peak MB':>10}{'max |AP diff|':>15}")
    for name, runs, seconds, peak, result in rows:
        diff = np.nanmax(np.abs(result - ap))
        print(f"  {name:<18}{runs:<14}{seconds * 1e3:>10.1f}{peak / 2**20:>10.1f}{diff:>15.2e}")
    print(f"  mAP@0.5 = {100 * np.nanmean(ap[4]):.2f}%")


def reference_ap(detections: SegmentTable, ground_truth: SegmentTable) -> np.ndarray:
    rows = list(zip(detections.video.tolist(), detections.label.tolist(),
                    detections.start.tolist(), detections.end.tolist(), detections.score.tolist()))
    gt_rows = list(zip(ground_truth.video.tolist(), ground_truth.label.tolist(),
                       ground_truth.start.tolist(), ground_truth.end.tolist()))
    return np.array(reference.detection_ap(rows, gt_rows, THUMOS_TIOU, NUM_CLASSES))


def main():
    rng = np.random.default_rng(0)
    if ANNOTATIONS.is_dir():
        ground_truth = thumos_ground_truth()
        print(f"ground truth: real THUMOS-14 test set ({ANNOTATIONS})")
    else:
        ground_truth = synthetic_ground_truth(rng)
        print(f"note: {ANNOTATIONS} not found; using synthetic ground truth")
    print(f"{NUM_CLASSES} classes, {len(THUMOS_TIOU)} tIoU thresholds; peak MB = the largest "
          "memory traced (tracemalloc) during one run")
    compare("spread", random_detections(ground_truth, rng), ground_truth, with_reference=True)
    compare("concentrated", *concentrated_detections(ground_truth, rng), with_reference=False)

if __name__ == "__main__":
    main()
