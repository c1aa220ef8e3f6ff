"""One figure per test video: ground truth, detections, actionness and CAS over time.

Scores come from the saved network outputs (``test.py --save-cas DIR``, the layout of
:mod:`utils.cas_folder`, read by its ``read_cas_folder``): the CAS and actionness of each
video, the ground truth (meta.json) and the detections (proposals.json), in snippets.

Usage:
    python -m utils.visualize --from-cas DIR --video NAME [--video NAME2 ...]
                              [--out OUT_DIR] [--score-cut X]
writes OUT_DIR/<video_name>.png (default OUT_DIR: DIR/figures).

Times are in seconds: snippet t covers [t * scale, (t + 1) * scale), scale = 16 / fps
(16 / 25 on THUMOS-14, `utils.evaluation.seconds_per_snippet`); curves are drawn at snippet
centres. Figures are drawn on a ``matplotlib.figure.Figure`` (Agg canvas), never through pyplot.
"""
import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from utils.atomic import atomic_write
from utils.cas_folder import read_cas_folder
from utils.errors import DataError, STCLError
from utils.layout import file_in
from utils.evaluation import SECONDS_PER_SNIPPET, video_class_scores

SNIPPET_SECONDS = SECONDS_PER_SNIPPET  # the default scale; test.py passes the one of --feature_fps
SCORE_CUT = 0.5  # detections scoring above this (outer-inner-contrast scale) are drawn
FIGSIZE = (12, 6)  # inches
DPI = 100
_NO_GROUND_TRUTH = (np.zeros((0, 2)), np.zeros(0, dtype=np.int64))
_NO_DETECTIONS = (np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0))


@dataclass(frozen=True)
class VideoFigureData:
    """Everything ``plot_video`` draws for one video; times in seconds.

    time: (T,) snippet centres, (t + 0.5) * scale.    duration: T * scale.
    classes: (K,) class indices drawn, by descending video score.
    class_names: (K,) their names.    video_score: (K,) their video scores.
    gt, detections: class -> (n, 2) [start, end) segments in seconds, for every drawn
        class (possibly empty); detections only those scoring above ``score_cut``.
    detection_scores: class -> (n,) scores of those detections.
    actionness: (T,) attention.    cas: class -> (T,) softmax over C+1 per snippet.
    has_ground_truth: False for a video without annotations (``localize.py``): no
        ground-truth lanes are drawn.
    """

    time: np.ndarray
    duration: float
    classes: np.ndarray
    class_names: list
    video_score: np.ndarray
    gt: dict
    detections: dict
    detection_scores: dict
    actionness: np.ndarray
    cas: dict
    score_cut: float
    has_ground_truth: bool = True


def video_score(cas: np.ndarray, attn: np.ndarray) -> np.ndarray:
    """docs/METHOD.md#7-proposals step 1: softmax over C+1 of the mean of the top max(1, T // 10) values of
    each column of cas * attn, background dropped. cas (T, C+1), attn (T, 1) -> (C,)."""
    s = cas * attn.reshape(-1, 1)
    return video_class_scores(s, k=max(1, len(s) // 10))


def video_figure_data(cas, attn, gt_segments, gt_labels, detections, class_names,
                      score_cut: float = SCORE_CUT, top_classes: int = 3,
                      scale: float = SNIPPET_SECONDS) -> VideoFigureData:
    """Select and convert what to draw for one video.

    cas: (T, C+1) raw CAS.  attn: (T, 1) or (T,) actionness.
    gt_segments: (n, 2) [start, end) in snippets.  gt_labels: (n,) class indices; both
        None for a video without ground truth (no ground-truth lanes).
    detections: (start, end, label, score) arrays in snippets, or an object with those
        attributes.  class_names: (C,).
    The drawn classes are the ``top_classes`` best by video score, every ground-truth
    class, and every class with a detection above ``score_cut`` (strictly).
    """
    cas = np.asarray(cas, dtype=np.float64)
    attn = np.asarray(attn, dtype=np.float64).reshape(-1)
    _check_shapes(cas, attn, len(class_names))
    has_ground_truth = gt_segments is not None
    if not has_ground_truth:
        gt_segments, gt_labels = _NO_GROUND_TRUTH
    gt_segments = np.asarray(gt_segments, dtype=np.float64).reshape(-1, 2)
    gt_labels = np.asarray(gt_labels, dtype=np.int64)
    start, end, label, score = _detection_arrays(detections)
    kept = score > score_cut

    v = video_score(cas, attn)
    top = np.argsort(-v, kind="stable")[:top_classes]
    drawn = np.union1d(np.union1d(top, gt_labels), label[kept]).astype(np.int64)
    classes = drawn[np.argsort(-v[drawn], kind="stable")]
    keys = classes.tolist()  # plain ints
    probability = _softmax(cas)  # (T, C+1)
    det_seconds = np.stack([start, end], axis=1) * scale
    return VideoFigureData(
        time=(np.arange(len(cas)) + 0.5) * scale,
        duration=len(cas) * scale,
        classes=classes,
        class_names=[class_names[c] for c in classes],
        video_score=v[classes],
        gt={c: gt_segments[gt_labels == c] * scale for c in keys},
        detections={c: det_seconds[kept & (label == c)] for c in keys},
        detection_scores={c: score[kept & (label == c)] for c in keys},
        actionness=attn,
        cas={c: probability[:, c] for c in keys},
        score_cut=score_cut,
        has_ground_truth=has_ground_truth,
    )


def plot_video(data: VideoFigureData, out_png, title: str = "") -> Path:
    """Draw one video into ``out_png`` (1200 x 600 pixels): ground-truth and detection
    lanes per class, the actionness curve, and the CAS of the drawn classes."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    lanes, actionness, cas = fig.subplots(3, 1, sharex=True,
                                          height_ratios=[max(2, min(8, lane_rows(data) / 2)), 1, 1.5])
    _draw_segment_lanes(lanes, data)
    _draw_actionness(actionness, data)
    _draw_cas(cas, data)
    cas.set_xlim(0, data.duration)
    cas.set_xlabel("time (s)")
    fig.suptitle(title)
    out_png = Path(out_png)
    with atomic_write(out_png, binary=True) as handle:
        fig.savefig(handle, format="png", dpi=DPI)
    return out_png


def visualize_videos(cas_by_video, attn_by_video, gt_by_video, det_by_video, class_names,
                     names, out_dir, score_cut: float = SCORE_CUT,
                     scale: float = SNIPPET_SECONDS) -> list[Path]:
    """Write ``out_dir/<name>.png`` for each of ``names``.

    cas_by_video: name -> (T, C+1).  attn_by_video: name -> (T, 1).
    gt_by_video: name -> (segments (n, 2), labels (n,)) in snippets.
    det_by_video: name -> (start, end, label, score) in snippets.
    A name missing from gt_by_video / det_by_video has no ground truth / detections;
    ``gt_by_video=None``: the videos have no annotations at all (no ground-truth lanes).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        if name not in cas_by_video:
            raise DataError(f"video {name!r}: no CAS for it (known: {len(cas_by_video)} videos)")
        segments, labels = (None, None) if gt_by_video is None else gt_by_video.get(name, _NO_GROUND_TRUTH)
        data = video_figure_data(cas_by_video[name], attn_by_video[name], segments, labels,
                                 det_by_video.get(name, _NO_DETECTIONS), class_names,
                                 score_cut=score_cut, scale=scale)
        written.append(plot_video(data, file_in(out_dir, name, ".png"), title=name))
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m utils.visualize",
                                description="Draw test videos from a `test.py --save-cas DIR` folder.")
    p.add_argument("--from-cas", required=True, help="folder written by test.py --save-cas")
    p.add_argument("--video", action="append", required=True, help="video name (repeatable)")
    p.add_argument("--out", default=None, help="output folder (default: <from-cas>/figures)")
    p.add_argument("--score-cut", type=float, default=SCORE_CUT, help="draw detections scoring above this")
    return p


def main(argv: list[str]) -> int:
    """Command line (see the module docstring); prints the paths written."""
    options = build_parser().parse_args(argv)
    out = options.out or str(Path(options.from_cas) / "figures")
    try:
        saved = read_cas_folder(options.from_cas, options.video)
        written = visualize_videos(saved.cas, saved.attn, saved.ground_truth(),
                                   saved.detections(), saved.class_names, options.video,
                                   out, options.score_cut, saved.scale)
    except STCLError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n".join(map(str, written)))
    return 0


def _softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _check_shapes(cas: np.ndarray, attn: np.ndarray, num_classes: int) -> None:
    if cas.ndim != 2 or cas.shape[1] != num_classes + 1 or len(cas) == 0:
        raise ValueError(f"cas has shape {cas.shape}, expected (T >= 1, C+1 = {num_classes + 1})")
    if attn.shape != (len(cas),):
        raise ValueError(f"attn has {attn.size} values, expected T = {len(cas)}")


def _detection_arrays(detections) -> tuple:
    """(start, end, label, score) arrays from a 4-tuple or an object with those attributes."""
    if hasattr(detections, "score"):
        detections = (detections.start, detections.end, detections.label, detections.score)
    start, end, label, score = detections
    return (np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64),
            np.asarray(label, dtype=np.int64), np.asarray(score, dtype=np.float64))


def _class_colour(c: int):
    """Colour of class c: tab20's 10 dark hues for classes 0..9, then its 10 light ones."""
    return colormaps["tab20"]((2 * c) % 20 + (c // 10) % 2)


#: A detection covering at least this share of the video is drawn as a whole-video detection
#: (hatched and labelled), so that it does not read as one long, sure instance.
WHOLE_VIDEO_SHARE = 0.9


@dataclass(frozen=True)
class LaneBar:
    """One bar of the segment lanes: a ground-truth instance or a detection, in seconds.

    row: the lane's position (0 at the top, one lane below another); lane: the detection's
    sub-lane within its class (detections of one lane never overlap); colour: the class's.
    """

    kind: str  # "gt" or "det"
    c: int
    row: int
    lane: int
    start: float
    end: float
    score: float
    whole_video: bool
    colour: tuple


def assign_lanes(segments: np.ndarray) -> np.ndarray:
    """A lane per [start, end) segment such that segments of one lane do not overlap (touching is
    fine): the fewest lanes, by start time, each segment in the first lane free at its start. (n,) ints."""
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    lanes = np.zeros(len(segments), dtype=np.int64)
    ends: list = []  # the end of the last segment of each lane
    for i in np.lexsort((segments[:, 1], segments[:, 0])):
        start, end = segments[i]
        free = next((k for k, e in enumerate(ends) if e <= start), None)
        if free is None:
            free = len(ends)
            ends.append(end)
        ends[free] = end
        lanes[i] = free
    return lanes


def lane_bars(data: VideoFigureData) -> list:
    """Every bar of the segment lanes, top to bottom: per class its ground-truth lane (when the
    video has ground truth), then as many detection lanes as its overlapping detections need."""
    bars, row = [], 0
    for c in data.classes.tolist():
        colour = tuple(_class_colour(c))
        if data.has_ground_truth:
            for start, end in data.gt[c]:
                bars.append(LaneBar("gt", c, row, 0, float(start), float(end), float("nan"), False, colour))
            row += 1
        segments, scores = data.detections[c], data.detection_scores[c]
        lanes = assign_lanes(segments)
        for (start, end), score, lane in zip(segments, scores, lanes):
            whole = (end - start) >= WHOLE_VIDEO_SHARE * data.duration
            bars.append(LaneBar("det", c, row + int(lane), int(lane), float(start), float(end), float(score),
                                bool(whole), colour))
        row += max(1, int(lanes.max()) + 1 if len(lanes) else 1)
    return bars


def lane_rows(data: VideoFigureData) -> int:
    """How many lanes :func:`lane_bars` uses."""
    rows = 0
    for c in data.classes.tolist():
        lanes = assign_lanes(data.detections[c])
        rows += (1 if data.has_ground_truth else 0) + max(1, int(lanes.max()) + 1 if len(lanes) else 1)
    return rows


def legend_entries(data: VideoFigureData) -> list:
    """(label, facecolour, hatch) of the segment lanes' legend: one swatch per drawn class, in its
    colour, then the styles: ground truth (filled), detection (outlined), whole video (hatched)."""
    entries = [(name, tuple(_class_colour(c)), "") for c, name in zip(data.classes.tolist(), data.class_names)]
    if data.has_ground_truth:
        entries.append(("ground truth: filled", (0.5, 0.5, 0.5, 1.0), ""))
    entries.append(("detection: outlined, with its score", (1.0, 1.0, 1.0, 1.0), ""))
    entries.append((f"whole video (>= {WHOLE_VIDEO_SHARE:.0%} of it)", (1.0, 1.0, 1.0, 1.0), "//"))
    return entries


def _draw_segment_lanes(axes, data: VideoFigureData) -> None:
    """Per class a ground-truth lane (filled bars) and detection lanes (outlined bars with their
    score; overlapping detections on separate lanes, :func:`assign_lanes`, so they can be
    counted; a whole-video detection hatched and labelled)."""
    bars = lane_bars(data)
    rows = lane_rows(data)
    for bar in bars:
        y = -bar.row
        if bar.kind == "gt":
            axes.broken_barh([(bar.start, bar.end - bar.start)], (y - 0.4, 0.8), facecolor=bar.colour,
                             edgecolor=bar.colour)
            continue
        axes.broken_barh([(bar.start, bar.end - bar.start)], (y - 0.35, 0.7), facecolor=(*bar.colour[:3], 0.2),
                         edgecolor=bar.colour, linewidth=1.5, hatch="//" if bar.whole_video else None)
        text = f"{bar.score:.2f}" + ("  whole video" if bar.whole_video else "")
        axes.text(bar.start + 0.005 * data.duration, y, text, va="center", ha="left", fontsize="x-small",
                  clip_on=True)
    ticks, labels, row = [], [], 0
    for c, name in zip(data.classes.tolist(), data.class_names):
        if data.has_ground_truth:
            ticks.append(-row)
            labels.append(f"GT {name}")
            row += 1
        lanes = assign_lanes(data.detections[c])
        count = max(1, int(lanes.max()) + 1 if len(lanes) else 1)
        ticks += [-(row + k) for k in range(count)]
        labels += [f"det {name}"] + [""] * (count - 1)
        row += count
    axes.set_yticks(ticks, labels, fontsize="small")
    axes.set_ylim(-rows + 0.4, 0.6)
    what = "ground truth and detections" if data.has_ground_truth else "detections"
    cut = f" scoring above {data.score_cut:g}" if np.isfinite(data.score_cut) else ""
    axes.set_title(what + cut, fontsize="medium")
    handles = [Patch(facecolor=face, edgecolor="black", hatch=hatch or None, label=label)
               for label, face, hatch in legend_entries(data)]
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="x-small")


def _as_spans(segments: np.ndarray) -> list:
    """(n, 2) [start, end) -> [(start, width), ...] for broken_barh."""
    return [(start, end - start) for start, end in segments]


def _draw_actionness(axes, data: VideoFigureData) -> None:
    axes.plot(data.time, data.actionness, color="black", lw=1.2)
    axes.fill_between(data.time, data.actionness, color="black", alpha=0.1)
    axes.set(ylim=(0, 1.05), ylabel="actionness")
    axes.grid(alpha=0.3)


def _draw_cas(axes, data: VideoFigureData) -> None:
    """CAS curves of the drawn classes over their ground truth, shaded."""
    for c, name, v in zip(data.classes, data.class_names, data.video_score):
        for start, end in data.gt[c]:
            axes.axvspan(start, end, color=_class_colour(c), alpha=0.12, lw=0)
        axes.plot(data.time, data.cas[c], color=_class_colour(c), lw=1.2,
                  label=f"{name} (video score {v:.2f})")
    axes.set(ylim=(0, 1.05), ylabel="CAS (softmax)")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right", fontsize="small")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
