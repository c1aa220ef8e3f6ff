"""Localize actions in new videos with a trained checkpoint alone (no ground truth needed).

    python localize.py --pretrained-ckpt runs/STCL/best.pt features/video1.npy features/
    python localize.py --pretrained-ckpt runs/STCL/best.pt video.mp4 --rgb-weights rgb.pt --flow-weights flow.pt
    python localize.py --pretrained-ckpt best_re_rank_THU_STCL_best.pkl --path-dataset dataset/THUMOS14 \\
        --save-bank stcl_thu_with_bank.pt features/                   # a released .pkl: build the bank once

INPUT is a ``(T, D)`` ``.npy`` file of two-stream snippet features, a video file (its
features are extracted with ``feature_extraction.pipeline``, which needs
``--rgb-weights`` and ``--flow-weights``), or a folder of them. Each video goes through
:func:`inference.localize`, the computation ``test.py`` evaluates (docs/METHOD.md#7-proposals,
same flags: ``--gamma-oic``, ``--proposal_method``, ``--feature_fps``), and gets a table on
stdout; ``--output DIR`` receives ``detections.json`` (ActivityNet result format, seconds)
and ``classification.json`` (video-level class scores, ActivityNet classification format)
for all videos, ``figures/<video>.png`` with ``--figures``.

A bad input (unreadable, wrong width, NaN/Inf or empty features, an undecodable or too
short video) is reported in one line naming the file; the other inputs are still
localized, and the exit code is 2 when any input failed.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from checkpoints import LoadedCheckpoint, load_checkpoint, save_with_bank, stored_bank_or_none
from exemplar_source import ExemplarSource
from feature_extraction.videos import VIDEO_SUFFIXES, is_video
from inference import EvaluationBank, evaluation_bank, video_outputs
from options import build_localize_parser, flow_method, parse_checkpoint_command, restorable_options
from proposal_methods import CLASS_THRESHOLD
from protocol import Detection, Reference, activitynet_results, as_detections, class_scores, detections_of
from utils.atomic import write_json
from utils.cas_folder import write_cas_folder
from utils.device import choose_device
from utils.errors import DataError, STCLError
from utils.evaluation import SegmentTable, seconds_per_snippet
from utils.layout import features_path
from wsad_dataset import build_dataset, check_snippet_features


# ======================================================================================
# Inputs
# ======================================================================================

@dataclass(frozen=True)
class VideoInput:
    name: str  # the video's name in the outputs (the file name without its suffix)
    path: Path

    @property
    def is_features(self) -> bool:
        return self.path.suffix.lower() == ".npy"


def expand_inputs(paths: List[str]) -> Tuple[List[VideoInput], List[str]]:
    """The videos named by INPUT arguments (folders: their .npy and video files, sorted) and
    one error message per argument that names nothing usable."""
    found: List[Path] = []
    errors: List[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(f for f in path.iterdir()
                            if f.is_file() and (f.suffix.lower() == ".npy" or is_video(f)))
            if not inside:
                errors.append(f"{path}: the folder holds no .npy features file and no video "
                              f"({', '.join(sorted(VIDEO_SUFFIXES))})")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            errors.append(f"{path}: no such file or folder")
    videos, taken = [], set()
    for path in found:
        name, n = path.stem, 2
        while name in taken:  # two inputs with the same stem (a.npy and a.mp4, or two folders)
            name, n = f"{path.stem}_{n}", n + 1
        taken.add(name)
        videos.append(VideoInput(name, path))
    return videos, errors


def check_features(features, path, feature_size: int) -> np.ndarray:
    """A (T, D) float32 array of finite snippet features, not all zero, or a DataError naming ``path``."""
    array = check_snippet_features(features, str(path), feature_size,
                                   f" per snippet, but the model takes D = {feature_size} "
                                   f"(RGB then flow, {feature_size // 2} each)")
    if not array.any():
        raise DataError(f"{path}: every snippet is all zeros (features of a video that could not be decoded?)")
    return array


def read_features(path: Path, feature_size: int) -> np.ndarray:
    """A ``.npy`` features file as (T, D) float32, checked (:func:`check_features`)."""
    try:
        features = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read it as a .npy array of features ({exc})") from None
    if not isinstance(features, np.ndarray):
        raise DataError(f"{path}: expected one (T, {feature_size}) array, got an archive of several")
    return check_features(features, path, feature_size)


class VideoFeatures:
    """Features of video files, by the feature-extraction pipeline, built on the first video."""

    def __init__(self, own: argparse.Namespace, device: torch.device, amp: bool):
        self.own, self.device, self.amp, self.extractor = own, device, amp, None

    def __call__(self, path: Path, feature_size: int) -> np.ndarray:
        if self.extractor is None:
            self.extractor = self._build(path)
        return check_features(self.extractor.extract(path), path, feature_size)

    def _build(self, path: Path):
        missing = [w for w in (self.own.rgb_weights, self.own.flow_weights) if not Path(w).is_file()]
        if missing:
            raise DataError(f"{path}: a video's features are extracted with I3D, and there are no weights at "
                            f"{', '.join(missing)}: pass --rgb-weights RGB_WEIGHTS and --flow-weights FLOW_WEIGHTS "
                            "(or give its (T, D) features as a .npy file)")
        try:
            from feature_extraction.pipeline import FeatureExtractor
        except ImportError as exc:
            raise STCLError(f"{path}: video input needs the feature_extraction package of this repository, "
                            f"which cannot be imported ({exc}); give the video's features as a .npy file") from None
        return FeatureExtractor(self.own.rgb_weights, self.own.flow_weights,
                                flow=flow_method(self.own.flow, self.device.type), sample_mode=self.own.sample_mode,
                                batch_size=self.own.extract_batch_size, device=self.device, amp=self.amp,
                                flow_quantize=self.own.flow_quantize, size=self.own.extract_size,
                                short_side=self.own.short_side)


# ======================================================================================
# The exemplar bank
# ======================================================================================

def bank_for(loaded: LoadedCheckpoint, device: torch.device, save_bank: Optional[str]) -> EvaluationBank:
    """The checkpoint's bank when it matches the options, else one drawn from --path-dataset
    (a clear error naming what to pass when there is none); ``save_bank``: keep it."""
    args = loaded.args
    if args.exemplar_mode != "cached":
        raise STCLError("localize.py uses one exemplar bank for every video (--exemplar-mode cached); "
                        "--exemplar-mode resample needs the training set at every video and is for test.py")
    bank = stored_bank_or_none(loaded)
    if bank is None:
        bank = draw_bank(loaded, device)
    if save_bank:
        print(f"wrote {save_with_bank(loaded, bank, save_bank)}: these weights with their exemplar bank "
              f"(--pretrained-ckpt {save_bank} needs no training features)")
    return bank


def draw_bank(loaded: LoadedCheckpoint, device: torch.device) -> EvaluationBank:
    """The evaluation bank drawn from the training videos of --path-dataset, as test.py draws it
    (the held-out videos of a --select-on holdout checkpoint are no exemplars)."""
    args, name = loaded.args, loaded.args.dataset_name
    if not features_path(args.path_dataset, name).is_file():
        why = ("holds no exemplar bank" if loaded.bank is None else
               "holds an exemplar bank drawn otherwise than the options ask")
        raise STCLError(
            f"{args.pretrained_ckpt} {why}, and SCL needs one, drawn from the training videos. Pass "
            f"--path-dataset DIR, the folder with {name}-I3D-JOINTFeatures.npy and {name}-Annotations/ of the "
            f"dataset it was trained on (nothing at {features_path(args.path_dataset, name)}; --dataset-name "
            f"names another), to build it once; add --save-bank NEW.pt to keep it: "
            f"--pretrained-ckpt NEW.pt then needs no dataset")
    dataset = build_dataset(args, training=False)
    source = ExemplarSource.from_options(dataset, args, device)
    bank = evaluation_bank(loaded.model, source.draw, seed=args.exemplar_seed, draws=args.exemplar_draws,
                           class_names=dataset.class_names)
    print(f"exemplar bank: drawn from the training videos of {args.path_dataset} ({bank.recipe.describe()})")
    return bank


# ======================================================================================
# Reports
# ======================================================================================

def clock(seconds: float) -> str:
    """``hh:mm:ss.ss``."""
    hours, rest = divmod(float(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours):02d}:{int(minutes):02d}:{secs:05.2f}"


def distinct(detections: List[Detection]) -> List[Detection]:
    """The detections by descending score with exact duplicates (the same class, start and end)
    merged into one, keeping the best score (soft-NMS keeps a duplicate with a decayed score)."""
    seen, kept = set(), []
    for d in sorted(detections, key=lambda d: -d.score):
        key = (d.label, d.start, d.end)
        if key not in seen:
            seen.add(key)
            kept.append(d)
    return kept


def shown(detections: List[Detection], top: int, min_score: Optional[float], every: bool = False) -> List[Detection]:
    """The detections of the table: distinct segments (:func:`distinct`) by descending score, at
    least ``min_score``, at most ``top``; ``every`` (``--all``): every detection, duplicates too."""
    ranked = sorted(detections, key=lambda d: -d.score) if every else distinct(detections)
    if min_score is not None:
        ranked = [d for d in ranked if d.score >= min_score]
    return ranked if every else ranked[:max(0, top)]


def format_video(name: str, num_snippets: int, seconds_per_snippet: float, detections: List[Detection],
                 scores: np.ndarray, class_names: List[str], top: int = 10, min_score: Optional[float] = None,
                 class_threshold: float = CLASS_THRESHOLD, every: bool = False) -> str:
    """The printed report of one video: its video-level class scores and its top detections."""
    ranked = np.argsort(-scores, kind="stable")
    classes = "  ".join(f"{class_names[c]} {scores[c]:.3f}{'*' if scores[c] >= class_threshold else ''}"
                        for c in ranked[:5])
    table = shown(detections, top, min_score, every)
    width = max([len("class")] + [len(d.class_name) for d in table])
    lines = [f"{name}: {num_snippets} snippets, {num_snippets * seconds_per_snippet:.1f} s",
             f"  video-level class scores (* = at least {class_threshold:g}, localized): {classes}",
             f"  {'#':>3}  {'class':<{width}}  {'start (s)':>9}  {'end (s)':>9}  {'start':>11}  {'end':>11}  score"]
    for i, d in enumerate(table, 1):
        lines.append(f"  {i:>3}  {d.class_name:<{width}}  {d.start:>9.2f}  {d.end:>9.2f}  {clock(d.start):>11}  "
                     f"{clock(d.end):>11}  {d.score:.3f}")
    limit = ("--all" if every else f"top {top}") + ("" if min_score is None else f" scoring at least {min_score:g}")
    merged = len(detections) - len(distinct(detections))
    if merged and not every:
        limit += f"; {merged} exact duplicates merged, --all shows every row"
    lines.append(f"  ({len(table)} of {len(detections)} detections shown: {limit})")
    return "\n".join(lines)


def classification_json(scores_by_video: Dict[str, np.ndarray], class_names: List[str]) -> dict:
    """Video-level class scores in the ActivityNet classification result format."""
    return {"version": "STCL-Net", "external_data": {},
            "results": {name: [{"label": class_names[c], "score": float(v[c])} for c in np.argsort(-v, kind="stable")]
                        for name, v in scores_by_video.items()}}


def no_ground_truth_reference(names: List[str], class_names: List[str], seconds_per_snippet: float) -> Reference:
    """The meta.json of a ``--save-cas`` folder (utils/cas_folder.py) for videos without annotations."""
    return Reference(list(class_names), list(names), np.zeros((len(names), len(class_names)), np.float32),
                     SegmentTable.empty(), {}, np.zeros(0), seconds_per_snippet)


def default_output(first_input: str) -> Path:
    """``runs/localize/<name>``: the first input's file name without its suffix (a folder: its name),
    under the current folder, never inside the input's folder."""
    path = Path(first_input)
    name = path.stem if path.suffix.lower() in (*VIDEO_SUFFIXES, ".npy") else (path.resolve().name or "input")
    return Path("runs") / "localize" / name


# ======================================================================================
# Command line
# ======================================================================================

def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _main(argv)
    except STCLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _main(argv) -> int:
    own, given = parse_checkpoint_command(build_localize_parser, argv)
    if own.pretrained_ckpt is None:
        raise STCLError("give --pretrained-ckpt PATH: a checkpoint of main.py (best.pt, last.pt), one written by "
                        "--save-bank, or the released .pkl (then with --path-dataset)")
    loaded = load_checkpoint(own, given, restorable_options(build_localize_parser()))
    args, model = loaded.args, loaded.model
    device = choose_device(args.device)
    model.to(device)
    bank = bank_for(loaded, device, own.save_bank)
    class_names = class_names_of(bank, model.num_class)
    scale = seconds_per_snippet(args.feature_fps)
    out_dir = Path(own.output) if own.output else default_output(own.inputs[0])

    videos, failures = expand_inputs(own.inputs)
    for message in failures:
        print(f"error: {message}", file=sys.stderr)
    extract = VideoFeatures(own, device, args.amp)
    outputs, detections, tables, scores = {}, {}, {}, {}
    for video in videos:
        try:
            features = (read_features(video.path, model.feature_size) if video.is_features
                        else extract(video.path, model.feature_size))
            cas, attn = video_outputs(model, bank, features, device=device, amp=args.amp)
        except STCLError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failures.append(str(exc))
            continue
        table = detections_of(cas, attn, video=len(outputs), proposal_method=args.proposal_method,
                              gamma=args.gamma_oic)
        outputs[video.name], tables[video.name] = (cas, attn), table
        detections[video.name] = as_detections(table, class_names, scale)
        scores[video.name] = class_scores(cas, attn)
        print(format_video(video.name, len(cas), scale, detections[video.name], scores[video.name], class_names,
                           own.top, own.min_score, every=own.all) + "\n")
        write_json(out_dir / "detections.json", activitynet_results(detections))  # after every video: none lost
        write_json(out_dir / "classification.json", classification_json(scores, class_names))

    if outputs:
        written = [out_dir / "detections.json", out_dir / "classification.json"]
        if own.save_cas:
            reference = no_ground_truth_reference(list(outputs), class_names, scale)
            proposals = {name: [[float(s), float(e), int(c), float(p)]
                                for s, e, c, p in zip(t.start, t.end, t.label, t.score)] for name, t in tables.items()}
            write_cas_folder(Path(own.save_cas), outputs, reference.to_json(), proposals)
            written.append(Path(own.save_cas))
        if own.figures:
            written += draw(outputs, detections, class_names, out_dir / "figures", scale, own.top, own.min_score,
                            own.all)
        print("wrote " + ", ".join(map(str, written)))
    done = f"{len(outputs)} of {len(outputs) + len(failures)} inputs localized"
    if failures:
        print(f"{done}; {len(failures)} failed (see the errors above)", file=sys.stderr)
        return 2
    print(done)
    return 0


def class_names_of(bank: EvaluationBank, num_class: int) -> List[str]:
    """The class names kept with the exemplar bank, else ``class <c>``."""
    return list(bank.class_names) if bank.class_names else [f"class {c}" for c in range(num_class)]


def draw(outputs, detections: Dict[str, List[Detection]], class_names: List[str], out_dir: Path, scale: float,
         top: int, min_score: Optional[float], every: bool = False) -> List[Path]:
    """One PNG per video, without ground truth (utils/visualize.py): the detections of the
    printed table (``top``, ``min_score``), the actionness and the CAS of the top classes."""
    from utils.visualize import visualize_videos

    det_by = {}
    for name, dets in detections.items():
        table = shown(dets, top, min_score, every)
        det_by[name] = (np.array([d.start for d in table]) / scale, np.array([d.end for d in table]) / scale,
                        np.array([d.label for d in table], np.int64), np.array([d.score for d in table]))
    return visualize_videos({n: o[0] for n, o in outputs.items()}, {n: o[1] for n, o in outputs.items()}, None,
                            det_by, class_names, list(outputs), out_dir, score_cut=-np.inf, scale=scale)


if __name__ == "__main__":
    sys.exit(main())
