"""Where the detector goes wrong: a DETAD false-positive breakdown and per-class AP tables.

The breakdown follows DETAD (Alwassel, Caba Heilbron, Escorcia and Ghanem, "Diagnosing
Error in Temporal Action Detectors", ECCV 2018). Segments are in snippet units and the
tIoU is the one of the detection mAP (no "+1"; a zero-length segment overlaps nothing).

Detections and ground truth are any objects with the five (n,) arrays ``video`` (int
video index), ``label`` (int class 0..C-1), ``start``, ``end`` and ``score`` (ground
truth may omit ``score``), for example ``utils.evaluation.SegmentTable``.
"""
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.atomic import atomic_write

from utils.evaluation import tiou as segment_tiou

CATEGORIES = (
    "true positive",
    "double detection",
    "wrong label",
    "localization",
    "confusion",
    "background",
)
TRUE_POSITIVE, DOUBLE_DETECTION, WRONG_LABEL, LOCALIZATION, CONFUSION, BACKGROUND = range(6)
NOT_RANKED = -1
MIN_TIOU = 0.1  # below this overlap with every ground truth, a detection is background


@dataclass(frozen=True)
class FalsePositiveBreakdown:
    """Counts of the DETAD categories among each class's top-ranked detections.

    counts: (C, 6) int64, columns in the order of ``CATEGORIES``.
    """

    counts: np.ndarray

    @property
    def totals(self) -> np.ndarray:
        """(6,) counts summed over the classes."""
        return self.counts.sum(axis=0)

    @property
    def shares(self) -> np.ndarray:
        """(6,) fraction of all ranked detections in each category (zeros if none)."""
        totals = self.totals
        return totals / max(int(totals.sum()), 1)


def classify_detections(detections, ground_truth, num_classes: int, tiou: float = 0.5,
                        top_k_factor: int = 1) -> np.ndarray:
    """DETAD category of each detection, or NOT_RANKED (-1) if outside its class's top.

    Per class c, only the G_c * top_k_factor highest-scoring detections are ranked (G_c =
    ground-truth instances of c; stable sort, so equal scores keep input order). They are
    visited in rank order and the first matching rule wins:

    1. true positive: the best still-unmatched ground truth of class c in the same video
       has tIoU >= ``tiou``; that ground truth becomes matched (the AP matching).
    2. Otherwise the ground truth of the same video (any class) with the highest tIoU
       decides (first in input order on ties):
       tIoU >= ``tiou``: double detection if its class is c, else wrong label;
       MIN_TIOU <= tIoU < ``tiou``: localization if its class is c, else confusion;
       tIoU < MIN_TIOU, or no ground truth in the video: background.

    Returns (n_detections,) int64 indices into ``CATEGORIES``.
    """
    det, gt = _arrays(detections), _arrays(ground_truth)
    category = np.full(len(det["label"]), NOT_RANKED, dtype=np.int64)
    for c in range(num_classes):
        ranked = _top_ranked(det, c, int((gt["label"] == c).sum()) * top_k_factor)
        matched = np.zeros(len(gt["label"]), dtype=bool)
        for i in ranked:
            category[i] = _classify_one(det, i, gt, matched, tiou)
    return category


def false_positive_breakdown(detections, ground_truth, num_classes: int, tiou: float = 0.5,
                             top_k_factor: int = 1) -> FalsePositiveBreakdown:
    """Count the DETAD categories per class; see ``classify_detections`` for the rules."""
    category = classify_detections(detections, ground_truth, num_classes, tiou, top_k_factor)
    label = _arrays(detections)["label"]
    ranked = category != NOT_RANKED
    counts = np.zeros((num_classes, len(CATEGORIES)), dtype=np.int64)
    np.add.at(counts, (label[ranked], category[ranked]), 1)
    return FalsePositiveBreakdown(counts)


def format_breakdown(breakdown: FalsePositiveBreakdown, class_names=None) -> str:
    """Fixed-width table: one row per class, then the totals and their shares in percent."""
    names = list(class_names) if class_names is not None else [
        str(c) for c in range(len(breakdown.counts))]
    rows = [[name, *map(str, row)] for name, row in zip(names, breakdown.counts)]
    footer = [["total", *map(str, breakdown.totals)],
              ["share %", *(f"{100 * s:.1f}" for s in breakdown.shares)]]
    return _table(["class", *CATEGORIES], rows, footer)


def per_class_ap_table(ap: np.ndarray, tiou_thresholds, class_names) -> str:
    """Fixed-width table of AP in percent (1 decimal).

    ap: (n_thr, C) AP in [0, 1]. Rows: the classes, then ``mean`` (the mAP); columns: the
    thresholds, then ``avg`` (the mean over thresholds).
    """
    header, rows = _ap_rows(ap, tiou_thresholds, class_names)
    cells = [[name, *(f"{v:.1f}" for v in values)] for name, values in rows]
    return _table(header, cells[:-1], cells[-1:])


def write_per_class_csv(path, ap: np.ndarray, tiou_thresholds, class_names) -> Path:
    """Write the table of ``per_class_ap_table`` as CSV, in percent at full precision."""
    header, rows = _ap_rows(ap, tiou_thresholds, class_names)
    path = Path(path)
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([name, *(repr(float(v)) for v in values)] for name, values in rows)
    return path


def _arrays(table) -> dict:
    """The segment arrays of a detections / ground-truth object."""
    n = len(np.asarray(table.label))
    return {
        "video": np.asarray(table.video, dtype=np.int64),
        "label": np.asarray(table.label, dtype=np.int64),
        "start": np.asarray(table.start, dtype=np.float64),
        "end": np.asarray(table.end, dtype=np.float64),
        "score": np.asarray(getattr(table, "score", np.ones(n)), dtype=np.float64),
    }


def _top_ranked(det: dict, c: int, k: int) -> np.ndarray:
    """Indices of the k highest-scoring detections of class c, best first (stable)."""
    of_class = np.flatnonzero(det["label"] == c)
    order = np.argsort(-det["score"][of_class], kind="stable")
    return of_class[order[:k]]


def _classify_one(det: dict, i: int, gt: dict, matched: np.ndarray, tiou: float) -> int:
    """DETAD category of detection i; marks its ground truth matched if a true positive."""
    in_video = np.flatnonzero(gt["video"] == det["video"][i])
    if len(in_video) == 0:
        return BACKGROUND
    gt_segments = np.stack([gt["start"][in_video], gt["end"][in_video]], axis=1)
    overlap = segment_tiou((det["start"][i], det["end"][i]), gt_segments)
    label = det["label"][i]
    candidate = (gt["label"][in_video] == label) & ~matched[in_video]
    if candidate.any():
        best = np.argmax(np.where(candidate, overlap, -1.0))
        if overlap[best] >= tiou:
            matched[in_video[best]] = True
            return TRUE_POSITIVE
    top = int(np.argmax(overlap))
    same_class = gt["label"][in_video[top]] == label
    if overlap[top] >= tiou:
        return DOUBLE_DETECTION if same_class else WRONG_LABEL
    if overlap[top] >= MIN_TIOU:
        return LOCALIZATION if same_class else CONFUSION
    return BACKGROUND


def _ap_rows(ap: np.ndarray, tiou_thresholds, class_names):
    """Header and (name, values in percent) rows shared by the text and CSV tables."""
    ap = np.asarray(ap, dtype=np.float64)
    thresholds, names = list(tiou_thresholds), list(class_names)
    if ap.shape != (len(thresholds), len(names)):
        raise ValueError(f"ap has shape {ap.shape}, expected (n_thresholds, C) = "
                         f"({len(thresholds)}, {len(names)})")
    per_class = 100 * ap.T  # (C, n_thr), NaN for a class without ground truth
    # The mean row is the mAP: the mean over the classes with ground truth, as in the summary.
    with_ground_truth = ~np.isnan(per_class).all(axis=1)
    mean = (per_class[with_ground_truth].mean(axis=0, keepdims=True) if with_ground_truth.any()
            else np.full((1, len(thresholds)), np.nan))
    values = np.vstack([per_class, mean])
    values = np.hstack([values, values.mean(axis=1, keepdims=True)])
    header = ["class", *(f"AP@{t:g}" for t in thresholds), "avg"]
    return header, list(zip([*names, "mean"], values))


def _table(header: list, rows: list, footer: list) -> str:
    """Rows of strings under a header, footer rows below a rule; first column left-aligned."""
    every = [header, *rows, *footer]
    widths = [max(len(row[j]) for row in every) for j in range(len(header))]

    def line(row):
        cells = [row[0].ljust(widths[0]), *(v.rjust(w) for v, w in zip(row[1:], widths[1:]))]
        return "  ".join(cells)

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *map(line, rows), rule, *map(line, footer)])
