"""Command-line options of STCL-Net: one parser per command, built from shared groups.

Each command has its own parser, so a flag it does not use is an argparse error (exit 2)
and ``--help`` lists only its own flags:

=========================  ==================================================================
``python main.py``         :func:`build_parser` (train): data, model, objective, optimisation,
                           selection, proposals and evaluation, run, released command lines
``python test.py``         :func:`build_test_parser`: data (no batch composition), model,
                           proposals and evaluation, device, test.py's outputs
``python localize.py``     :func:`build_localize_parser`: as test.py, with the inputs, the
                           printed table and the feature extraction group
``extract_features.py``    its own parser, with :func:`add_extraction_options` and
                           :func:`add_device_options` (the same groups as localize.py's)
=========================  ==================================================================

The flags of the released implementation keep their names and spellings
(``--weight_decay``, ``--gamma-oic`` ...) so that published command lines run unchanged.
Options whose value differs between THUMOS-14 and ActivityNet default to None and are
filled from the dataset record of ``--dataset-name`` (``dataset_record.py``); an option
given on the command line wins over the record. Checks across options are made here, at
parse time (``error: ...``, exit 2).

Nothing is parsed at import time: call a ``parse_*`` function from an entry point.
"""
import argparse

from dataset_record import MODEL_RECORDS, RECORDS, dataset_record
from feature_extraction import FLOW_METHODS, QUANTIZE_MODES, SAMPLE_MODES
from proposal_methods import GAMMA, PROPOSAL_METHODS

#: Options whose default comes from the dataset record (``dataset_record.py``) when the
#: command line does not give them: option name -> record field.
RECORD_OPTIONS = {"num_class": "num_class", "use_model": "use_model", "num_exemplars": "num_exemplars",
                  "kl_weight": "kl_weight", "alpha4": "mutual_weight", "k": "k", "lr": "lr",
                  "max_seqlen": "max_seqlen", "max_iter": "max_iter"}

#: The option groups a checkpoint's stored options are restored from by test.py and
#: localize.py (``checkpoints.load_checkpoint``): what defines the model, the data and the
#: post-processing. The others (device, outputs, amp, figures, the training schedule ...) are
#: run flags and always come from the command line.
CHECKPOINT_GROUPS = ("data", "model", "proposals and evaluation")
#: The model-selection options of main.py that test.py and localize.py restore from a
#: checkpoint without taking them as flags: with --select-on holdout the held-out videos
#: are no exemplars, at training and at evaluation. Their values when a checkpoint has none
#: (a released .pkl) are main.py's defaults.
SELECTION_DEFAULTS = {"select_on": "test", "holdout": 0.1, "holdout_seed": 0}

DEVICES = ("auto", "cpu", "cuda")

# ======================================================================================
# Shared groups
# ======================================================================================

def add_data_options(p: argparse.ArgumentParser, training: bool = True) -> None:
    """Where the features and annotations are and their shape; ``training``: the batch composition."""
    data = p.add_argument_group("data")
    data.add_argument("--path-dataset", default="dataset/THUMOS14",
                      help="folder holding <dataset-name>-I3D-JOINTFeatures.npy and <dataset-name>-Annotations/")
    data.add_argument("--dataset-name", default="Thumos14reduced",
                      help="file prefix of the features and annotations; "
                           f"{', '.join(RECORDS)} select their dataset record (dataset_record.py), "
                           "any other name takes the record of --use-model")
    data.add_argument("--num-class", type=int, default=None,
                      help="number of action classes C, background excluded (default: the dataset record's, "
                           "20 / 100 / 200)")
    data.add_argument("--feature-size", type=int, default=2048,
                      help="snippet feature width D, even: RGB stream first D/2 channels, flow the last D/2")
    data.add_argument("--max-seqlen", type=int, default=None,
                      help="N: training videos and SCL exemplar videos are resampled to this many snippets "
                           "(default: 500 on THUMOS-14, 60 on ActivityNet)")
    if training:
        data.add_argument("--batch-size", type=int, default=10, help="videos per training batch")
        data.add_argument("--num-similar", type=int, default=3,
                          help="pairs of same-class videos at the head of each batch (the co-activity pairs); "
                               "at most --batch-size / 2")
    data.add_argument("--feature-format", default="auto", choices=["auto", "joint", "store"],
                      help="'joint': the released <dataset-name>-I3D-JOINTFeatures.npy, read whole; 'store': the "
                           "memory-mapped store written by convert_features.py; 'auto': the store when there is one")
    data.add_argument("--exemplar-pool", default="auto", choices=["auto", "device", "host"],
                      help="where the SCL exemplar videos are drawn from: 'device' copies them there once, 'host' "
                           "gathers each draw on the host (pinned on CUDA); 'auto': device unless they do not fit "
                           "in half its free memory, host for a memory-mapped store on the CPU")


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The network and its exemplar bank."""
    model = p.add_argument_group("model")
    model.add_argument("--use-model", default=None, choices=sorted(MODEL_RECORDS),
                       help="STCL_THU (THUMOS-14 model) or STCL_ACT (ActivityNet model: cls_intra reads TCL layer 1, "
                            "smoothed scores, M = 5, KL weight 0.1); default: the dataset's")
    model.add_argument("--dropout_ratio", type=float, default=0.7,
                       help="dropout of the fusion layer and classifier heads")
    model.add_argument("--t", type=int, default=None,
                       help="STCL_ACT: scores are smoothed with an average pool of width (max_seqlen//t)//2*2+1 "
                            "(default 5); refused for STCL_THU, which does not smooth")
    model.add_argument("--num-exemplars", type=int, default=None,
                       help="M, exemplar videos per class for SCL (default: 10 for STCL_THU, 5 for STCL_ACT)")
    model.add_argument("--exemplar-mode", default="cached", choices=["cached", "resample"],
                       help="evaluation: 'cached' builds the exemplar bank once per evaluation from a seeded draw "
                            "(deterministic, fast); 'resample' redraws it for every test video, as released")
    model.add_argument("--exemplar-draws", type=int, default=1,
                       help="cached mode: average the exemplar bank over this many seeded draws")
    model.add_argument("--exemplar-seed", type=int, default=0, help="cached mode: seed of the exemplar draw")


def add_objective_options(p: argparse.ArgumentParser) -> None:
    loss = p.add_argument_group("training objective")
    loss.add_argument("--k", type=float, default=None,
                      help="top-k MIL: the top T//k snippets of each class are averaged (default: 7 on THUMOS-14, "
                           "5 on ActivityNet)")
    loss.add_argument("--alpha1", type=float, default=0.8, help="weight of the actionness norm term")
    loss.add_argument("--alpha2", type=float, default=0.8, help="weight of the actionness guide term")
    loss.add_argument("--alpha3", type=float, default=1.0, help="weight of the co-activity contrast term")
    loss.add_argument("--alpha4", type=float, default=None,
                      help="weight of the RGB/flow mutual-learning term (default 1; the released STCL_ACT ignores "
                           "--alpha4 and uses 1, here the flag wins)")
    loss.add_argument("--kl-weight", type=float, default=None,
                      help="weight of the branch KL term (default: 1 for STCL_THU, 0.1 for STCL_ACT)")
    loss.add_argument("--kl-form", default="prob", choices=["prob", "log"],
                      help="'prob': KLDivLoss on probabilities, as released (reproducible numbers); "
                           "'log': the proper log-probability input")


def seed_list(text: str) -> list:
    """``--seeds 3552,0,1`` as a list of distinct ints (the one parser of a seed list)."""
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 3552,0,1") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more distinct seeds")
    return seeds


def add_optimisation_options(p: argparse.ArgumentParser) -> None:
    optim = p.add_argument_group("optimisation")
    optim.add_argument("--lr", type=float, default=None,
                       help="Adam learning rate, constant (default: 5e-5 on THUMOS-14, 3e-5 on ActivityNet)")
    optim.add_argument("--weight_decay", type=float, default=1e-3, help="Adam L2 weight decay (added to the gradient)")
    optim.add_argument("--max-iter", type=int, default=None,
                       help="training iterations (default: 10000 on THUMOS-14, 40000 on ActivityNet)")
    optim.add_argument("--interval", type=int, default=200, help="evaluate every this many iterations")
    optim.add_argument("--seed", type=int, default=3552, help="seed of python, numpy and torch")
    optim.add_argument("--seeds", type=seed_list, default=None,
                       help="comma-separated seeds, e.g. 3552,0,1: train once per seed and print mean +- std")
    optim.add_argument("--resume", default=None,
                       help="continue a killed run from this checkpoint (usually <run dir>/last.pt); with --seeds, "
                            "every seed continues from its own run folder's last.pt (give one of them)")


def add_selection_options(p: argparse.ArgumentParser) -> None:
    select = p.add_argument_group("model selection")
    select.add_argument("--select-on", default=SELECTION_DEFAULTS["select_on"], choices=["test", "last", "holdout"],
                        help="which checkpoint best.pt keeps: 'test' the best periodic evaluation on the test set "
                             "(the released protocol); 'last' the final weights, no selection; 'holdout' the best "
                             "periodic evaluation on --holdout of the training videos, kept out of training, and "
                             "the test set evaluated once at the end")
    select.add_argument("--holdout", type=float, default=SELECTION_DEFAULTS["holdout"],
                        help="--select-on holdout: the fraction of the training videos kept out of training "
                             "to select on, between 0 and 1")
    select.add_argument("--holdout-seed", type=int, default=SELECTION_DEFAULTS["holdout_seed"],
                        help="--select-on holdout: seed of the draw of the held-out videos (the same for every --seed)")


def add_evaluation_options(p: argparse.ArgumentParser) -> None:
    """Scores to detections, and the classification mAP (the post-processing)."""
    post = p.add_argument_group("proposals and evaluation")
    post.add_argument("--proposal_method", default="multiple_threshold_hamnet", choices=sorted(PROPOSAL_METHODS),
                      help="how scores become detections (docs/METHOD.md#7-proposals)")
    post.add_argument("--gamma-oic", type=float, default=GAMMA, help="weight of the video score in a proposal's score")
    post.add_argument("--feature_fps", type=float, default=25,
                      help="frames per second of the features; a snippet is 16 frames (seconds = snippets * 16 / fps)")
    post.add_argument("--classification-topk", type=int, default=1,
                      help="classification mAP: mean of the top-k CAS values per class (1 = the released behaviour)")


def add_device_options(p: argparse.ArgumentParser, amp_help: str) -> argparse._ArgumentGroup:
    """``--device`` and ``--amp``: where the tensors live and at what precision (``utils/device.py``)."""
    run = p.add_argument_group("run")
    run.add_argument("--device", default="auto", choices=DEVICES, help="auto = cuda when available, else cpu")
    run.add_argument("--amp", action="store_true", help=amp_help)
    run.add_argument("--quiet", action="store_true",
                     help="no progress bars (they are drawn only when stderr is a terminal anyway)")
    return run


AMP_HELP = ("mixed precision (bfloat16 autocast), for GPUs with bfloat16 tensor cores; runs on CPU too, slower "
            "there; off by default")


def add_extraction_options(p: argparse.ArgumentParser, weights_required: bool = False) -> None:
    """Video files to I3D features (``feature_extraction.pipeline.FeatureExtractor``): the one
    group of extract_features.py and localize.py."""
    video = p.add_argument_group("feature extraction (video files)")
    video.add_argument("--rgb-weights", default="models/rgb_imagenet.pt",
                       help="I3D RGB weights of the feature extractor (the PyTorch port's file)")
    video.add_argument("--flow-weights", default="models/flow_imagenet.pt",
                       help="I3D flow weights of the feature extractor (the PyTorch port's file)")
    video.add_argument("--flow", default="auto", choices=("auto", *FLOW_METHODS),
                       help="TV-L1 implementation: batched PyTorch (any device) or OpenCV (CPU, one pair at a time); "
                            "auto: torch on a GPU, opencv on a CPU (where it is about 20x faster, see the README)")
    video.add_argument("--sample-mode", default="resize", choices=SAMPLE_MODES,
                       help="resize: whole frame to SIZE x SIZE; center_crop: shorter side 256, centre crop; "
                            "oversample: ten crops (corners, centre, flipped), features averaged")
    video.add_argument("--flow-quantize", default="none", choices=QUANTIZE_MODES,
                       help="pass flow through the classic pipeline's 8-bit (uint8) or JPEG flow images (bound 20)")
    video.add_argument("--extract-size", type=int, default=224,
                       help="I3D input size (224 as released and as the features of THUMOS-14; smaller only for "
                            "demos and tests)")
    video.add_argument("--short-side", type=int, default=256,
                       help="shorter side before cropping (center_crop, oversample)")
    video.add_argument("--extract-batch-size", type=int, default=8,
                       help="16-frame chunks per I3D pass (and 16x this many flow pairs)")


def flow_method(flow: str, device_type: str) -> str:
    """``--flow``, with ``auto`` resolved: torch on a GPU, opencv on a CPU."""
    if flow != "auto":
        return flow
    return "torch" if device_type == "cuda" else "opencv"


def add_released_options(p: argparse.ArgumentParser) -> None:
    released = p.add_argument_group(
        "released command lines",
        "accepted so that the released code's command lines run unchanged, and IGNORED: they change nothing")
    released.add_argument("--dataset", default="SampleDataset", choices=["SampleDataset", "AntSampleDataset"],
                          help="loader name of the released code; both loaders read the same layout and the split "
                               "comes from subset.npy")
    released.add_argument("--AWM", default="BWA_fusion_dropout_feat_v2", choices=["BWA_fusion_dropout_feat_v2"],
                          help="cross-modal attention module of the released code; it has only this one for STCL-Net")
    released.add_argument("--scale", type=float, default=1,
                          help="a time scale of the released evaluation that cancels out there; detections are "
                               "scored in snippets")


def add_saved_outputs(group) -> None:
    """``--save-cas`` and ``--save-bank`` of test.py and localize.py."""
    group.add_argument("--save-cas", default=None,
                       help="store each video's CAS and actionness in this folder (re-evaluate with "
                            "test.py --from-cas, draw with python -m utils.visualize)")
    group.add_argument("--save-bank", default=None,
                       help="write the weights, options and evaluation exemplar bank to this checkpoint, which then "
                            "needs no training features (e.g. for a released .pkl)")


# ======================================================================================
# The commands' parsers
# ======================================================================================

def build_parser() -> argparse.ArgumentParser:
    """main.py's parser (training); see the README for a table of every flag."""
    p = argparse.ArgumentParser(prog="python main.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                allow_abbrev=False,
                                description="Train STCL-Net (weakly-supervised temporal action localization)")
    add_data_options(p, training=True)
    add_model_options(p)
    add_objective_options(p)
    add_optimisation_options(p)
    add_selection_options(p)
    add_evaluation_options(p)
    run = add_device_options(p, AMP_HELP)
    run.add_argument("--model-name", default="STCL", help="name of the run: results go to <output-dir>/<model-name>/")
    run.add_argument("--output-dir", default="runs", help="parent folder of run folders")
    run.add_argument("--pretrained-ckpt", default=None,
                     help="start from the weights of this checkpoint: the project's own or the released .pkl")
    run.add_argument("--log-every", type=int, default=10,
                     help="log the loss terms (losses.csv, TensorBoard) every this many iterations")
    add_released_options(p)
    return p


def _evaluation_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """What test.py and localize.py share: a checkpoint, its data, model and post-processing."""
    p = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_options(p, training=False)
    add_model_options(p)
    add_evaluation_options(p)
    run = add_device_options(p, AMP_HELP)
    run.add_argument("--pretrained-ckpt", default=None,
                     help="the checkpoint to run: one of main.py (best.pt, last.pt), one written by --save-bank, "
                          "or the released .pkl; data, model and post-processing options are restored from it, "
                          "the flags given win")
    p.set_defaults(**SELECTION_DEFAULTS)  # restored from the checkpoint, never flags here
    return p


def build_test_parser() -> argparse.ArgumentParser:
    """test.py's parser (evaluate a checkpoint, or re-evaluate a --save-cas folder)."""
    p = _evaluation_parser("python test.py", "Evaluate an STCL-Net checkpoint on the test videos: mAP, reports")
    out = p.add_argument_group("test.py outputs")
    out.add_argument("--output", default=None,
                     help="folder for the detections JSON and the metrics (default: next to the checkpoint)")
    out.add_argument("--from-cas", default=None,
                     help="re-run proposals and evaluation from a --save-cas folder, with no network")
    out.add_argument("--visualize", type=int, default=0, metavar="N", help="draw the first N test videos as PNGs")
    out.add_argument("--video", action="append", default=[], help="draw this test video (repeatable)")
    out.add_argument("--export-official", default=None,
                     help="write the model's weights in the released state-dict format to this path")
    add_saved_outputs(out)
    return p


def build_localize_parser() -> argparse.ArgumentParser:
    """localize.py's parser: test.py's checkpoint options, the inputs, the table, the extraction."""
    p = _evaluation_parser("python localize.py", "Find actions in new videos with a trained STCL-Net checkpoint.")
    own = p.add_argument_group("localize.py")
    own.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="a (T, D) .npy features file, a video file, or a folder of them")
    own.add_argument("--output", default=None,
                     help="folder for detections.json, classification.json and figures/; "
                          "unset: runs/localize/<first input's name>/ (under the current folder)")
    own.add_argument("--top", type=int, default=10, help="print at most this many detections per video")
    own.add_argument("--all", action="store_true",
                     help="print (and draw) every detection: no --top limit, and exact duplicates (the same "
                          "class, start and end, which soft-NMS keeps with decayed scores) not merged")
    own.add_argument("--min-score", type=float, default=None,
                     help="print (and draw) only detections scoring at least this; detections.json keeps them all")
    own.add_argument("--figures", action="store_true",
                     help="draw <output>/figures/<video>.png: the printed detections (--top, --min-score) per "
                          "class on a time axis, the actionness and the CAS of the top classes")
    add_saved_outputs(own)
    add_extraction_options(p)
    return p


# ======================================================================================
# Parsing and the dataset record
# ======================================================================================

def resolve_dataset(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every option left at None from the dataset record; the options given win.

    Adds the record's model settings as plain values (checkpoints store ``vars(args)``):
    ``tcl_depth`` and ``smooth_kernel`` (``STCLNet`` arguments). ``t`` is None for a model
    that does not smooth (the parsers refuse a ``--t`` given for one). Derived values are
    recomputed, so options restored from a checkpoint resolve the same way.
    """
    record = dataset_record(args.dataset_name, args.use_model)
    for option, field in RECORD_OPTIONS.items():
        if getattr(args, option, None) is None:
            setattr(args, option, getattr(record, field))
    if record.smooth_t is None:
        args.t = None
    elif getattr(args, "t", None) is None:
        args.t = record.smooth_t
    args.tcl_depth = record.tcl_depth
    args.smooth_kernel = record.smooth_kernel(args.max_seqlen, args.t)
    return args


def restorable_options(parser: argparse.ArgumentParser) -> frozenset:
    """The options ``parser``'s command restores from a checkpoint's stored ``args``: its data,
    model and post-processing options (``CHECKPOINT_GROUPS``) and the selection options of
    ``SELECTION_DEFAULTS``; run flags are left out."""
    return frozenset({action.dest for group in parser._action_groups if group.title in CHECKPOINT_GROUPS
                      for action in group._group_actions} | set(SELECTION_DEFAULTS))


def explicit_args(argv, parser: argparse.ArgumentParser = None) -> dict:
    """Only the options written on the command line ``argv`` of ``parser`` (default main.py's), no defaults."""
    parser = parser or build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    parser._defaults.clear()  # set_defaults of a non-flag (SELECTION_DEFAULTS)
    return vars(parser.parse_args(argv))


def even_feature_size_error(feature_size: int):
    """The message when D is not even (two streams of D/2), else None: the one such check."""
    if feature_size is not None and feature_size % 2:
        return f"--feature-size must be even (two streams of D/2); got {feature_size}"
    return None


def t_refused_error(use_model: str):
    return (f"--t sets the smoothing of STCL_ACT, but {use_model} does not smooth its scores; "
            "drop --t or pass --use-model STCL_ACT")


def parse_args(argv=None) -> argparse.Namespace:
    """Parse main.py's ``argv`` (default ``sys.argv[1:]``), check it, fill the dataset record's defaults."""
    parser = build_parser()
    args = parser.parse_args(argv)
    message = even_feature_size_error(args.feature_size)
    if message:
        parser.error(message)
    if not 0 < args.holdout < 1:
        parser.error(f"--holdout is a fraction of the training videos, between 0 and 1; got {args.holdout}")
    if args.num_similar < 0 or args.batch_size < 2 * args.num_similar:
        parser.error(f"--batch-size {args.batch_size} cannot hold --num-similar {args.num_similar} pairs of videos: "
                     f"give --batch-size at least {2 * max(args.num_similar, 0)}, or fewer --num-similar")
    given_t = args.t is not None
    args = resolve_dataset(args)
    if args.max_seqlen < 1:
        parser.error(f"--max-seqlen must be at least 1; got {args.max_seqlen}")
    if given_t and args.t is None:
        parser.error(t_refused_error(args.use_model))
    return args


def parse_checkpoint_command(build, argv) -> tuple:
    """test.py's or localize.py's ``argv``, parsed by the parser of ``build``
    (:func:`build_test_parser`, :func:`build_localize_parser`) and checked: (the options, the
    flags written on the command line). The dataset record is applied once the checkpoint's
    options are restored (``checkpoints.load_checkpoint``)."""
    parser = build()
    args = parser.parse_args(argv)
    message = even_feature_size_error(args.feature_size)
    if message:
        parser.error(message)
    if args.use_model == "STCL_THU" and args.t is not None:
        parser.error(t_refused_error(args.use_model))
    return args, explicit_args(argv, build())
