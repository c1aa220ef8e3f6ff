"""Speed of utils.evaluation.detection_ap against the plain loop-by-loop toolkit reference.

Run from anywhere: python benchmarks/bench_evaluation.py
212 test videos x 200 random detections, THUMOS tIoU thresholds 0.1..0.9. Uses the real
THUMOS-14 test ground truth from ../shared/data/thumos14 (beside the checkout) when it is
there, synthetic ground truth otherwise.
"""
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.oracles import activitynet_toolkit as reference  # noqa: E402
from utils.evaluation import (  # noqa: E402
    THUMOS_TIOU, SegmentTable, detection_ap, ground_truth_from_annotations,
)

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


def random_detections(ground_truth: SegmentTable, rng: np.random.Generator) -> SegmentTable:
    """Per video, half jittered copies of its ground truth (80% right class), half random."""
    tables = []
    for video in range(NUM_VIDEOS):
        gt = ground_truth.select(ground_truth.video == video)
        n_near = DETECTIONS_PER_VIDEO // 2 if len(gt) else 0
        n_far = DETECTIONS_PER_VIDEO - n_near
        pick = rng.integers(0, max(len(gt), 1), n_near)
        length = gt.end[pick] - gt.start[pick] + 1
        near_start = gt.start[pick] + rng.normal(0, 0.2, n_near) * length
        near_end = np.maximum(gt.end[pick] + rng.normal(0, 0.2, n_near) * length, near_start + 0.1)
        near_label = np.where(rng.random(n_near) < 0.8, gt.label[pick],
                              rng.integers(0, NUM_CLASSES, n_near))
        far_start = rng.uniform(0, gt.end.max(initial=300), n_far)
        tables.append(SegmentTable(
            np.full(DETECTIONS_PER_VIDEO, video),
            np.concatenate([near_label, rng.integers(0, NUM_CLASSES, n_far)]),
            np.concatenate([near_start, far_start]),
            np.concatenate([near_end, far_start + rng.exponential(20, n_far)]),
            rng.random(DETECTIONS_PER_VIDEO),
        ))
    return SegmentTable.concat(tables)


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
    detections = random_detections(ground_truth, rng)
    print(f"{len(detections):,} detections in {NUM_VIDEOS} videos, {len(ground_truth):,} "
          f"ground truths, {NUM_CLASSES} classes, {len(THUMOS_TIOU)} tIoU thresholds")

    times = []
    for _ in range(REPEATS):
        tic = time.perf_counter()
        ap = detection_ap(detections, ground_truth, THUMOS_TIOU, NUM_CLASSES)
        times.append(time.perf_counter() - tic)
    fast = statistics.median(times)

    tic = time.perf_counter()
    expected = reference_ap(detections, ground_truth)
    slow = time.perf_counter() - tic

    print(f"detection_ap (median of {REPEATS}): {fast * 1e3:8.1f} ms")
    print(f"loop reference (1 run):       {slow * 1e3:8.1f} ms")
    print(f"speed-up: {slow / fast:.1f}x")
    print(f"max |AP - reference AP|: {np.nanmax(np.abs(ap - expected)):.2e}; "
          f"mAP@0.5 = {100 * np.nanmean(ap[4]):.2f}%")


if __name__ == "__main__":
    main()
