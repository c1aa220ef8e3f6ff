"""The evaluation protocol: scores -> detections -> mAP, and the reports. Pure numpy.

Nothing here imports torch, the model or the training code (tests/test_layout.py checks
it): the network's outputs come in as arrays, per video a CAS (T, C+1) and an actionness
sequence (T, 1), in snippet units (:data:`Outputs`).

- :class:`Reference`: what evaluation needs to know about the test set (the videos, their
  labels and ground truth, the dataset record's tIoU thresholds and selection score); it is
  saved beside raw outputs (``--save-cas``), so that evaluation can be re-run without the dataset;
- scores to detections (:func:`detections_of`, docs/METHOD.md#7-proposals) and to
  :class:`Detection` records in seconds (:func:`as_detections`);
- :func:`evaluate`: every video's detections and the detection and classification mAP
  (``#8-detection-map``), an :class:`EvaluationResult`;
- the reports: tables, metrics.json, detections.json, proposals.json, per-class AP,
  the false-positive breakdown (:func:`report`), the ``--save-cas`` folder
  (:func:`save_cas`, :func:`load_cas`) and the figures (:func:`draw_videos`).

Run the network with ``inference.run_network`` (or ``inference.test``, both stages at once).
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from dataset_record import THUMOS14, DatasetRecord, dataset_record
from proposal_methods import GAMMA, PROPOSAL_METHODS, ambiguous_to_snippets, video_scores
from utils.atomic import write_json, write_text
from utils.cas_folder import read_cas_folder, write_cas_folder
from utils.diagnosis import false_positive_breakdown, format_breakdown, per_class_ap_table, write_per_class_csv
from utils.errors import DataError
from utils.evaluation import (FEATURE_FPS, SECONDS_PER_SNIPPET, SegmentTable, classification_map, detection_ap,
                              format_table, ground_truth_from_annotations, seconds_per_snippet, summarize,
                              video_class_scores)

#: Per video: cas (T, C+1) and actionness (T, 1), float32.
Outputs = Dict[str, Tuple[np.ndarray, np.ndarray]]


@dataclass
class Reference:
    """Everything evaluation needs from the dataset, in snippet units.

    video_names: the evaluated videos; detections and ground truth refer to them by position.
    labels: (V, C) multi-hot; ground_truth: a SegmentTable; ambiguous: {position: (K, 2)}.
    tiou_thresholds, averages, selection_thresholds, selection: the evaluation protocol of
    the dataset record (``dataset_record.DatasetRecord``).
    """

    class_names: List[str]
    video_names: List[str]
    labels: np.ndarray
    ground_truth: SegmentTable
    ambiguous: Dict[int, np.ndarray]
    tiou_thresholds: np.ndarray
    seconds_per_snippet: float = SECONDS_PER_SNIPPET
    averages: Optional[Tuple[str, ...]] = None  # None: every average whose thresholds are present
    selection_thresholds: Tuple[float, ...] = THUMOS14.selection_thresholds
    selection: str = THUMOS14.selection

    @classmethod
    def from_dataset(cls, dataset, record: Optional[DatasetRecord] = None,
                     feature_fps: float = FEATURE_FPS) -> "Reference":
        """Test videos of ``dataset``; ground truth of every test-subset video.

        See docs/METHOD.md#6-activitynet and ``#8-detection-map``. ``record`` gives the
        evaluation protocol (tIoU thresholds, averages, selection score); default: the
        record whose split the dataset follows. ``feature_fps`` (``--feature_fps``) converts
        the annotations' seconds to snippets (ground truth, ambiguous intervals) and back
        (exported detections, figures).
        """
        record = record or dataset.record
        names = [dataset.video_names[i] for i in dataset.test_index]
        position = {v: p for p, v in enumerate(dataset.test_index)}
        # Ground truth covers the whole test subset, so instances of videos dropped from
        # the test list (ActivityNet, <= 10 snippets) count as misses; they get positions
        # after the evaluated videos.
        gt_videos = list(dataset.evaluation_index)
        for v in gt_videos:
            position.setdefault(v, len(position))
        ground_truth = ground_truth_from_annotations(
            [dataset.segments[v] for v in gt_videos], [dataset.segment_labels[v] for v in gt_videos],
            [position[v] for v in gt_videos], feature_fps)
        ambiguous = {position[v]: ambiguous_to_snippets(iv, feature_fps)
                     for v, iv in dataset.ambiguous.items() if v in position}
        return cls(list(dataset.class_names), names, dataset.labels[dataset.test_index], ground_truth, ambiguous,
                   np.asarray(record.tiou_thresholds), seconds_per_snippet(feature_fps), record.averages,
                   record.selection_thresholds, record.selection)

    @property
    def selection_text(self) -> str:
        """The selection score in words, e.g. "sum of mAP@0.1..0.7"."""
        first, last = self.selection_thresholds[0], self.selection_thresholds[-1]
        return f"{self.selection} of mAP@{first:g}..{last:g}"

    def selection_score(self, summary: Dict[str, float]) -> float:
        """The checkpoint-selection score: the sum or mean of mAP at ``selection_thresholds``."""
        values = [summary[f"mAP@{t:g}"] for t in self.selection_thresholds]
        return float(sum(values) if self.selection == "sum" else np.mean(values))

    def to_json(self) -> dict:
        gt = self.ground_truth
        return {"class_names": self.class_names, "video_names": self.video_names,
                "labels": self.labels.astype(int).tolist(), "tiou_thresholds": self.tiou_thresholds.tolist(),
                "scale": self.seconds_per_snippet, "averages": None if self.averages is None else list(self.averages),
                "selection_thresholds": list(self.selection_thresholds), "selection": self.selection,
                "ground_truth_rows": np.stack([gt.video, gt.label, gt.start, gt.end], 1).tolist(),
                "ambiguous": {str(p): np.asarray(iv).tolist() for p, iv in self.ambiguous.items()}}

    @classmethod
    def from_json(cls, meta: dict) -> "Reference":
        rows = np.asarray(meta["ground_truth_rows"], dtype=np.float64).reshape(-1, 4)
        gt = SegmentTable(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], np.ones(len(rows)))
        thresholds = np.asarray(meta["tiou_thresholds"])
        # folders saved before the record carried no protocol: THUMOS-style or ActivityNet-style by thresholds
        older = dataset_record("Thumos14reduced" if thresholds.min() < 0.5 else "ActivityNet1.2")
        averages = meta.get("averages", older.averages)
        return cls(meta["class_names"], meta["video_names"], np.asarray(meta["labels"], np.float32), gt,
                   {int(p): np.asarray(iv, np.int64).reshape(-1, 2) for p, iv in meta["ambiguous"].items()},
                   thresholds, meta["scale"], None if averages is None else tuple(averages),
                   tuple(meta.get("selection_thresholds", older.selection_thresholds)),
                   meta.get("selection", older.selection))


@dataclass
class EvaluationResult:
    """Detections and scores of one evaluation; mAPs in percent in ``summary``."""

    summary: Dict[str, float]
    ap: np.ndarray  # (n_thresholds, C) fractions, NaN for classes without ground truth
    tiou_thresholds: np.ndarray
    detections: SegmentTable
    reference: Reference
    settings: Dict[str, object] = field(default_factory=dict)  # what produced them (see `evaluate`)

    @property
    def selection_score(self) -> float:
        """The dataset's checkpoint-selection score (THUMOS: sum of mAP@0.1..0.7; ActivityNet:
        mean over its thresholds; docs/METHOD.md#5-objective)."""
        return self.reference.selection_score(self.summary)


# ======================================================================================
# Scores to detections
# ======================================================================================

@dataclass(frozen=True)
class Detection:
    """One detected action instance: class, [start, end) in seconds, score.

    score: the outer-inner contrast of the instance plus gamma times the video score of its
    class, after soft-NMS (docs/METHOD.md#7-proposals); higher is more confident, not a probability.
    """

    label: int  # class index 0..C-1
    class_name: str
    start: float  # seconds
    end: float  # seconds
    score: float

    def to_json(self) -> dict:
        """One entry of the ActivityNet result format."""
        return {"label": self.class_name, "score": self.score, "segment": [self.start, self.end]}


def detections_of(cas, attn, *, video: int = 0, proposal_method: str = "multiple_threshold_hamnet",
                  gamma: float = GAMMA, ambiguous: Optional[dict] = None) -> SegmentTable:
    """Section 7 on one video's scores: cas (T, C+1), attn (T, 1) -> detections in snippets.

    ``video`` is written into the table's video column; ``ambiguous`` (video -> (K, 2)
    snippet intervals, THUMOS' Ambiguous_test.txt) drops the detections that touch them.
    Rows come by class, then soft-NMS order.
    """
    return PROPOSAL_METHODS[proposal_method](cas, attn, video, gamma=gamma, ambiguous=ambiguous)


def as_detections(table: SegmentTable, class_names: Iterable[str], seconds_per_snippet: float) -> List[Detection]:
    """Rows of a one-video table as :class:`Detection` records (seconds = snippets * seconds_per_snippet),
    in table order."""
    names = list(class_names)
    return [Detection(int(c), names[c], float(s * seconds_per_snippet), float(e * seconds_per_snippet), float(p))
            for c, s, e, p in zip(table.label, table.start, table.end, table.score)]


def class_scores(cas, attn) -> np.ndarray:
    """Video-level class scores v (C,) of docs/METHOD.md#7-proposals, step 1: what the model
    thinks the video contains. cas (T, C+1), attn (T, 1)."""
    return video_scores(cas, attn)


def activitynet_results(detections_by_video: Dict[str, List[Detection]]) -> dict:
    """Detections of several videos in the ActivityNet detection result format (seconds)."""
    return {"version": "STCL-Net",
            "results": {name: [d.to_json() for d in dets] for name, dets in detections_by_video.items()},
            "external_data": {}}


# ======================================================================================
# Proposals and mAP
# ======================================================================================

def evaluate(outputs: Outputs, reference: Reference, *, proposal_method: str = "multiple_threshold_hamnet",
             gamma: float = GAMMA, classification_topk: int = 1) -> EvaluationResult:
    """Detections of every video (docs/METHOD.md#7-proposals) and detection and classification mAP
    (``#8-detection-map``).

    The result's ``settings`` name everything that produced it: the proposal method and each
    of its parameters (gamma, actionness thresholds, class threshold, soft-NMS sigma), the
    classification top-k, the tIoU thresholds and the snippet length in seconds.
    """
    missing = [n for n in reference.video_names if n not in outputs]
    if missing:
        raise DataError(f"no scores for {len(missing)} test videos, e.g. {missing[:3]}")
    propose = PROPOSAL_METHODS[proposal_method]
    detections = SegmentTable.concat(
        detections_of(*outputs[name], video=p, proposal_method=proposal_method, gamma=gamma,
                      ambiguous=reference.ambiguous)
        for p, name in enumerate(reference.video_names))
    num_class = len(reference.class_names)
    ap = detection_ap(detections, reference.ground_truth, reference.tiou_thresholds, num_class)
    summary = summarize(np.nanmean(ap, axis=1), reference.tiou_thresholds, reference.averages)
    scores = np.stack([video_class_scores(outputs[n][0], min(classification_topk, len(outputs[n][0])))
                       for n in reference.video_names])
    summary["cmAP"] = 100 * classification_map(scores, reference.labels)
    settings = {"proposal_method": proposal_method, **proposal_settings(propose, gamma=gamma),
                "classification_topk": classification_topk,
                "tiou_thresholds": np.asarray(reference.tiou_thresholds).tolist(),
                "seconds_per_snippet": reference.seconds_per_snippet}
    return EvaluationResult(summary, ap, reference.tiou_thresholds, detections, reference, settings)


def proposal_settings(propose, **given) -> dict:
    """Every keyword parameter of a proposal method (its default unless ``given``), JSON-ready."""
    values = {p.name: p.default for p in inspect.signature(propose).parameters.values()
              if p.kind is p.KEYWORD_ONLY and p.name != "ambiguous"}
    values.update(given)
    return {k: np.asarray(v).tolist() for k, v in values.items()}


# ======================================================================================
# Reports
# ======================================================================================

def detections_json(result: EvaluationResult) -> dict:
    """Detections in the ActivityNet result format (segments in seconds)."""
    ref, d = result.reference, result.detections
    return activitynet_results({name: as_detections(d.select(d.video == p), ref.class_names, ref.seconds_per_snippet)
                                for p, name in enumerate(ref.video_names)})


def proposals_json(result: EvaluationResult) -> dict:
    """Detections per video in snippet units: ``[start, end, label, score]`` rows."""
    d = result.detections
    out: Dict[str, list] = {name: [] for name in result.reference.video_names}
    for v, c, s, e, p in zip(d.video, d.label, d.start, d.end, d.score):
        out[result.reference.video_names[v]].append([float(s), float(e), int(c), float(p)])
    return out


def report(result: EvaluationResult, out_dir: Path, extra: Optional[dict] = None) -> str:
    """Print-ready text, and the files: metrics.json, detections.json, proposals.json,
    per_class_ap.csv and fp_breakdown.txt in ``out_dir``."""
    ref = result.reference
    text = [format_table(result.summary), f"classification mAP: {result.summary['cmAP']:.2f}", "",
            "per-class AP (%)", per_class_ap_table(result.ap, result.tiou_thresholds, ref.class_names)]
    breakdown = format_breakdown(
        false_positive_breakdown(result.detections, ref.ground_truth, len(ref.class_names)), ref.class_names)
    text += ["", "false-positive breakdown of the top-ranked detections (tIoU 0.5)", breakdown]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", {**(extra or {}), "settings": result.settings, "summary": result.summary,
                                          "tiou_thresholds": result.tiou_thresholds.tolist(),
                                          "per_class_ap": {c: result.ap[:, k].tolist()
                                                           for k, c in enumerate(ref.class_names)}})
    write_json(out_dir / "detections.json", detections_json(result))
    write_json(out_dir / "proposals.json", proposals_json(result))
    write_per_class_csv(out_dir / "per_class_ap.csv", result.ap, result.tiou_thresholds, ref.class_names)
    write_text(out_dir / "fp_breakdown.txt", breakdown + "\n")
    return "\n".join(text)


def save_cas(outputs: Outputs, reference: Reference, result: EvaluationResult, cas_dir: Path,
             network: Optional[dict] = None) -> None:
    """Raw outputs for ``--from-cas`` and ``python -m utils.visualize``, in the one layout of
    :mod:`utils.cas_folder`: one npz per video, meta.json (the Reference, and under "network"
    how the outputs were computed: checkpoint, exemplar mode and seed ...), proposals.json."""
    write_cas_folder(cas_dir, outputs, {**reference.to_json(), "network": network or {}}, proposals_json(result))


def cas_network(cas_dir: Path) -> dict:
    """How a ``--save-cas`` folder's outputs were computed (its meta.json "network"; {} if older)."""
    return json.loads((cas_dir / "meta.json").read_text()).get("network", {})


def load_cas(cas_dir: Path) -> Tuple[Outputs, Reference]:
    """Read a ``--save-cas`` folder back (:func:`utils.cas_folder.read_cas_folder`)."""
    saved = read_cas_folder(cas_dir)
    return {name: (saved.cas[name], saved.attn[name]) for name in saved.cas}, Reference.from_json(saved.meta)


def draw_videos(outputs: Outputs, result: EvaluationResult, names: List[str], out_dir: Path) -> List[Path]:
    """One PNG per named video (see utils/visualize.py)."""
    from utils.visualize import visualize_videos

    ref = result.reference
    unknown = [n for n in names if n not in outputs]
    if unknown:
        raise DataError(f"--video {unknown[0]} is not a test video (e.g. {ref.video_names[:3]})")
    gt, det = ref.ground_truth, result.detections
    pos = {n: p for p, n in enumerate(ref.video_names)}
    gt_by = {n: (np.stack([gt.start, gt.end], 1)[gt.video == pos[n]], gt.label[gt.video == pos[n]]) for n in names}
    det_by = {n: (det.start[det.video == pos[n]], det.end[det.video == pos[n]], det.label[det.video == pos[n]],
                  det.score[det.video == pos[n]]) for n in names}
    return visualize_videos({n: outputs[n][0] for n in names}, {n: outputs[n][1] for n in names}, gt_by, det_by,
                            ref.class_names, names, out_dir, scale=ref.seconds_per_snippet)
