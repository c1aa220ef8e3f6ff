"""Evaluate STCL-Net: scores -> detections -> mAP.

    python test.py --pretrained-ckpt runs/STCL/best.pt
    python test.py --pretrained-ckpt best_re_rank_THU_STCL_best.pkl --path-dataset dataset/THUMOS14
    python test.py --pretrained-ckpt runs/STCL/best.pt --save-cas cas/      # keep raw outputs
    python test.py --from-cas cas/ --gamma-oic 0.3                          # re-run post-processing only

Three stages, each usable alone: :func:`run_network` (the model on every test video,
giving a CAS and an actionness sequence per video), :func:`evaluate` (proposals and mAP,
numpy only), and the reports (tables, JSON, figures). ``main.py`` calls :func:`test`.
"""
from __future__ import annotations

import argparse
import json
import sys
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from dataset_record import DatasetRecord, dataset_record
from exemplar_source import ExemplarSource
from inference import (BANK_KEY, BankRecipe, EvaluationBank, Outputs, activitynet_results,
                       as_detections, detections_of, evaluation_bank, run_network)
from model import build_model
from options import RECORD_OPTIONS, checkpoint_options, explicit_args, parse_args, resolve_dataset
from proposal_methods import PROPOSAL_METHODS, ambiguous_to_snippets
from utils import checkpoint as ckpt
from utils.cas_folder import read_cas_folder, write_cas_folder
from utils.atomic import write_json, write_text
from utils.device import choose_device
from utils.diagnosis import false_positive_breakdown, format_breakdown, per_class_ap_table, write_per_class_csv
from utils.errors import DataError, STCLError
from utils.evaluation import (FEATURE_FPS, SECONDS_PER_SNIPPET, SegmentTable, classification_map, detection_ap,
                              format_table, ground_truth_from_annotations, seconds_per_snippet, summarize,
                              video_class_scores)

# ======================================================================================
# What evaluation needs to know about the test set (saved beside raw outputs)
# ======================================================================================

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
    selection_thresholds: Tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    selection: str = "sum"

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


# Stage 1, the network on every test video, is inference.run_network (beside the evaluation
# exemplar bank it uses, and the one-video functions localize.py uses).

# ======================================================================================
# Stage 2: proposals and mAP (numpy only)
# ======================================================================================

def evaluate(outputs: Outputs, reference: Reference, *, proposal_method: str = "multiple_threshold_hamnet",
             gamma: float = 0.2, classification_topk: int = 1) -> EvaluationResult:
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


def network_settings(args: argparse.Namespace) -> dict:
    """How the network outputs were computed at test time (recorded in metrics.json)."""
    return {"exemplar_mode": args.exemplar_mode, "exemplar_draws": args.exemplar_draws,
            "exemplar_seed": args.exemplar_seed, "num_exemplars": args.num_exemplars,
            "feature_fps": args.feature_fps}


def test(model, dataset, source, args: argparse.Namespace, device: torch.device,
         reference: Optional[Reference] = None, progress: bool = True,
         bank: Optional[EvaluationBank] = None) -> EvaluationResult:
    """Evaluate ``model`` on the test videos of ``dataset`` (called by main.py).

    source: draws exemplar videos (``draw(rng)``); bank: the cached evaluation bank, when
    the caller has drawn it already (main.py stores it in its checkpoints).
    """
    outputs = run_network(model, dataset, source, device, exemplar_mode=args.exemplar_mode,
                          exemplar_draws=args.exemplar_draws, exemplar_seed=args.exemplar_seed,
                          amp=args.amp, progress=progress, bank=bank)
    reference = reference or Reference.from_dataset(dataset, dataset_record(args.dataset_name, args.use_model),
                                                    args.feature_fps)
    return evaluate(outputs, reference, proposal_method=args.proposal_method, gamma=args.gamma_oic,
                    classification_topk=args.classification_topk)


# ======================================================================================
# Stage 3: reports
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


# ======================================================================================
# Command line
# ======================================================================================

@dataclass
class LoadedCheckpoint:
    """A checkpoint made ready to run: options, model with its weights, what to report, and
    the evaluation exemplar bank it carries (None: a released .pkl or an older checkpoint)."""

    args: argparse.Namespace
    model: torch.nn.Module
    info: dict
    bank: Optional[EvaluationBank]


def load_for_test(argv) -> Tuple[argparse.Namespace, torch.nn.Module, dict]:
    """Options and model of a checkpoint (see :func:`load_checkpoint`)."""
    loaded = load_checkpoint(parse_args(argv), explicit_args(argv))
    return loaded.args, loaded.model, loaded.info


def load_checkpoint(args: argparse.Namespace, given: dict) -> LoadedCheckpoint:
    """The checkpoint of ``args.pretrained_ckpt``, ready to run; ``given``: the flags written
    on the command line.

    A checkpoint of main.py restores the options that define the model, the data and the
    post-processing (``options.checkpoint_options``), each overridden by a flag given; run
    flags (``--device``, ``--output``, ``--amp`` ...) always come from the command line, so
    a checkpoint trained with ``--device cuda`` evaluates on a CPU machine. Options neither
    given nor restored come from the dataset record (``options.resolve_dataset``).
    """
    # what the record decides starts unset again (``args`` may come resolved for the default
    # dataset), so that the checkpoint's dataset and model, or the flags given, choose it
    args = argparse.Namespace(**{**vars(args), **{o: None for o in (*RECORD_OPTIONS, "t") if o not in given}})
    if args.pretrained_ckpt is None:
        raise STCLError("give --pretrained-ckpt PATH (a checkpoint of main.py or the released .pkl), "
                        "or --from-cas DIR")
    raw = ckpt.read_checkpoint(args.pretrained_ckpt)
    state = ckpt.model_state_of(raw, args.pretrained_ckpt)
    if isinstance(raw, dict) and isinstance(raw.get("args"), dict):
        args = argparse.Namespace(**{**vars(args), **checkpoint_options(raw["args"]), **given})
    else:  # a released state dict: its shapes say D and C, and C says the dataset and the model
        try:
            d, c = ckpt.released_shape_of(state)
        except STCLError as exc:
            raise ckpt.CheckpointError(f"{args.pretrained_ckpt}: {exc}") from exc
        vars(args).update({"feature_size": given.get("feature_size", d), "num_class": given.get("num_class", c)})
        if args.num_class in (100, 200):  # ActivityNet 1.2 / 1.3
            if "dataset_name" not in given:
                args.dataset_name = "ActivityNet1.2" if args.num_class == 100 else "ActivityNet1.3"
            if "use_model" not in given:
                args.use_model = "STCL_ACT"
                print(f"{args.pretrained_ckpt} has {args.num_class} classes: evaluating it as STCL_ACT "
                      "(the ActivityNet variant); pass --use-model to choose")
    args = resolve_dataset(args)
    if "t" in given and args.t is None:
        raise STCLError(f"--t sets the smoothing of STCL_ACT, but {args.use_model} does not smooth its scores")
    model = build_model(args)
    ckpt.load_weights(model, state, args.pretrained_ckpt)
    info = {"checkpoint": str(args.pretrained_ckpt),
            "iteration": raw.get("iteration") if isinstance(raw, dict) else None}
    bank = None
    if isinstance(raw, dict) and BANK_KEY in raw:
        bank = EvaluationBank.from_checkpoint(raw[BANK_KEY], args.pretrained_ckpt)
        bank.check_fits(model, args.pretrained_ckpt)
    return LoadedCheckpoint(args, model, info, bank)


def stored_bank_or_none(loaded: LoadedCheckpoint) -> Optional[EvaluationBank]:
    """The checkpoint's bank when the options ask for exactly that one (cached mode, same
    seed, draws, M and N), else None (a note says why when the checkpoint has one)."""
    args, bank = loaded.args, loaded.bank
    if bank is None or args.exemplar_mode != "cached":
        return None
    differences = bank.recipe.differences(BankRecipe.from_args(args))
    if differences:
        print(f"the exemplar bank stored in {args.pretrained_ckpt} was drawn otherwise than the options ask "
              f"({'; '.join(differences)}): drawing a new one from --path-dataset")
        return None
    return bank


def save_with_bank(loaded: LoadedCheckpoint, bank: EvaluationBank, path) -> Path:
    """A project checkpoint of the loaded weights and options with ``bank`` (``--save-bank``):
    evaluating or localizing with it needs no training features."""
    payload = {"model": {k: v.detach().cpu() for k, v in loaded.model.state_dict().items()},
               "args": vars(loaded.args),
               "iteration": loaded.info.get("iteration"), BANK_KEY: bank.to_checkpoint(),
               "made_from": str(loaded.args.pretrained_ckpt), "format": "stcl-net/1"}
    return ckpt.save_atomic(payload, path)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _main(argv)
    except STCLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _main(argv) -> int:
    from wsad_dataset import SampleDataset

    args = parse_args(argv)
    if args.from_cas:
        outputs, reference = load_cas(Path(args.from_cas))
        result = evaluate(outputs, reference, proposal_method=args.proposal_method, gamma=args.gamma_oic,
                          classification_topk=args.classification_topk)
        out_dir = Path(args.output or Path(args.from_cas) / "eval")
        print(report(result, out_dir, {"from_cas": args.from_cas, **cas_network(Path(args.from_cas))}))
        print(f"\nwrote {out_dir}/metrics.json, detections.json, proposals.json, per_class_ap.csv")
        return 0

    loaded = load_checkpoint(args, explicit_args(argv))
    args, model, info = loaded.args, loaded.model, loaded.info
    if args.export_official:
        path = ckpt.save_atomic(ckpt.project_to_released(model.state_dict()), args.export_official)
        print(f"wrote the weights in the released STCL-Net format to {path}")
        if not Path(args.path_dataset).exists():
            print(f"(no dataset at {args.path_dataset}: export only, nothing evaluated)")
            return 0
    device = choose_device(args.device)
    model.to(device)
    bank = stored_bank_or_none(loaded)
    # with the checkpoint's bank, the test videos are all that is needed
    dataset = SampleDataset(args.path_dataset, args.dataset_name, num_class=args.num_class,
                            feature_size=args.feature_size, max_seqlen=args.max_seqlen,
                            num_similar=args.num_similar, batch_size=args.batch_size,
                            feature_format=args.feature_format, require_training=bank is None,
                            holdout=args.holdout if args.select_on == "holdout" and bank is None else 0.0,
                            holdout_seed=args.holdout_seed)  # a held-out video is no exemplar
    source = None  # with the checkpoint's bank, no exemplar is drawn: the training videos may be absent
    if bank is None:
        source = ExemplarSource(dataset, args.num_exemplars, device, args.exemplar_pool)
    if bank is not None:
        print(f"exemplar bank: the one stored in {args.pretrained_ckpt} ({bank.recipe.describe()})")
    elif args.exemplar_mode == "cached":
        bank = evaluation_bank(model, source.draw, seed=args.exemplar_seed, draws=args.exemplar_draws,
                               class_names=dataset.class_names)
        print(f"exemplar bank: drawn from the training videos of {args.path_dataset} ({bank.recipe.describe()})")
    if args.save_bank:
        if bank is None:
            raise STCLError("--save-bank saves the cached evaluation bank; it cannot go with --exemplar-mode resample")
        print(f"wrote {save_with_bank(loaded, bank, args.save_bank)}: these weights with their exemplar bank "
              f"(test.py or localize.py --pretrained-ckpt {args.save_bank} needs no training features)")
    reference = Reference.from_dataset(dataset, dataset_record(args.dataset_name, args.use_model), args.feature_fps)
    outputs = run_network(model, dataset, source, device, exemplar_mode=args.exemplar_mode,
                          exemplar_draws=args.exemplar_draws, exemplar_seed=args.exemplar_seed, amp=args.amp,
                          bank=bank)
    result = evaluate(outputs, reference, proposal_method=args.proposal_method, gamma=args.gamma_oic,
                      classification_topk=args.classification_topk)
    ckpt_path = Path(args.pretrained_ckpt)
    out_dir = Path(args.output or ckpt_path.with_name(ckpt_path.stem + "_test"))
    network = {**info, **network_settings(args)}
    print(report(result, out_dir, network))
    if args.save_cas:
        save_cas(outputs, reference, result, Path(args.save_cas), network)
        print(f"raw outputs saved in {args.save_cas} (re-run with: python test.py --from-cas {args.save_cas})")
    names = list(args.video) + reference.video_names[: args.visualize]
    if names:
        paths = draw_videos(outputs, result, list(dict.fromkeys(names)), out_dir / "figures")
        print(f"{len(paths)} figures in {out_dir / 'figures'}")
    print(f"\nwrote {out_dir}/metrics.json, detections.json, proposals.json, per_class_ap.csv, fp_breakdown.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
