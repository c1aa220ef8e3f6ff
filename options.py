"""Command-line options of STCL-Net.

One parser serves ``main.py`` (training) and ``test.py`` (evaluation). The flags of the
released implementation keep their names and spellings (``--weight_decay``,
``--gamma-oic`` ...) so that published command lines run unchanged. Options whose value
differs between THUMOS-14 and ActivityNet default to None and are filled from the dataset
record of ``--dataset-name`` (``dataset_record.py``); an option given on the command line
wins over the record.

Nothing is parsed at import time: call :func:`parse_args` from an entry point.
"""
import argparse

from dataset_record import MODEL_RECORDS, RECORDS, dataset_record

#: Options whose default comes from the dataset record (``dataset_record.py``) when the
#: command line does not give them: option name -> record field.
RECORD_OPTIONS = {"num_class": "num_class", "use_model": "use_model", "num_exemplars": "num_exemplars",
                  "kl_weight": "kl_weight", "alpha4": "mutual_weight", "k": "k", "lr": "lr",
                  "max_seqlen": "max_seqlen", "max_iter": "max_iter"}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; see the README for a table of every flag."""
    p = argparse.ArgumentParser(
        description="STCL-Net: weakly-supervised temporal action localization",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
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
                      help="snippet feature width D: RGB stream first D/2 channels, flow the last D/2")
    data.add_argument("--max-seqlen", type=int, default=None,
                      help="N: training videos and SCL exemplar videos are resampled to this many snippets "
                           "(default: 500 on THUMOS-14, 60 on ActivityNet)")
    data.add_argument("--batch-size", type=int, default=10, help="videos per training batch")
    data.add_argument("--num-similar", type=int, default=3,
                      help="pairs of same-class videos at the head of each batch (the co-activity pairs)")
    data.add_argument("--feature-format", default="auto", choices=["auto", "joint", "store"],
                      help="'joint': the released <dataset-name>-I3D-JOINTFeatures.npy, read whole; 'store': the "
                           "memory-mapped store written by feature_store.py; 'auto': the store when there is one")
    data.add_argument("--exemplar-pool", default="auto", choices=["auto", "device", "host"],
                      help="where the SCL exemplar videos are drawn from: 'device' copies them there once, 'host' "
                           "gathers each draw on the host (pinned on CUDA); 'auto': device unless they do not fit "
                           "in half its free memory, host for a memory-mapped store on the CPU")

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

    optim = p.add_argument_group("optimisation")
    optim.add_argument("--lr", type=float, default=None,
                       help="Adam learning rate, constant (default: 5e-5 on THUMOS-14, 3e-5 on ActivityNet)")
    optim.add_argument("--weight_decay", type=float, default=1e-3, help="Adam L2 weight decay (added to the gradient)")
    optim.add_argument("--max-iter", type=int, default=None,
                       help="training iterations (default: 10000 on THUMOS-14, 40000 on ActivityNet)")
    optim.add_argument("--interval", type=int, default=200, help="evaluate every this many iterations")
    optim.add_argument("--seed", type=int, default=3552, help="seed of python, numpy and torch")
    optim.add_argument("--seeds", default=None,
                       help="comma-separated seeds, e.g. 3552,0,1: train once per seed and print mean +- std")
    optim.add_argument("--amp", action="store_true",
                       help="mixed precision (bfloat16 autocast), for GPUs with bfloat16 tensor cores; "
                            "runs on CPU too, slower there; off by default")
    optim.add_argument("--resume", default=None,
                       help="continue a killed run from this checkpoint (usually <run dir>/last.pt); with --seeds, "
                            "every seed continues from its own run folder's last.pt (give one of them)")

    select = p.add_argument_group("model selection")
    select.add_argument("--select-on", default="test", choices=["test", "last", "holdout"],
                        help="which checkpoint best.pt keeps: 'test' the best periodic evaluation on the test set "
                             "(the released protocol); 'last' the final weights, no selection; 'holdout' the best "
                             "periodic evaluation on --holdout of the training videos, kept out of training, and "
                             "the test set evaluated once at the end")
    select.add_argument("--holdout", type=float, default=0.1,
                        help="--select-on holdout: the fraction of the training videos kept out of training "
                             "to select on")
    select.add_argument("--holdout-seed", type=int, default=0,
                        help="--select-on holdout: seed of the draw of the held-out videos (the same for every --seed)")

    post = p.add_argument_group("proposals and evaluation")
    post.add_argument("--proposal_method", default="multiple_threshold_hamnet", choices=["multiple_threshold_hamnet"],
                      help="how scores become detections (docs/METHOD.md#7-proposals)")
    post.add_argument("--gamma-oic", type=float, default=0.2, help="weight of the video score in a proposal's score")
    post.add_argument("--feature_fps", type=float, default=25,
                      help="frames per second of the features; a snippet is 16 frames (seconds = snippets * 16 / fps)")
    post.add_argument("--classification-topk", type=int, default=1,
                      help="classification mAP: mean of the top-k CAS values per class (1 = the released behaviour)")

    run = p.add_argument_group("run")
    run.add_argument("--model-name", default="STCL", help="name of the run: results go to <output-dir>/<model-name>/")
    run.add_argument("--output-dir", default="runs", help="parent folder of run folders")
    run.add_argument("--pretrained-ckpt", default=None,
                     help="checkpoint to start from (main.py) or to evaluate (test.py): the project's own "
                          "or the released .pkl")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                     help="auto = cuda when available, else cpu")
    run.add_argument("--log-every", type=int, default=10,
                     help="log the loss terms (losses.csv, TensorBoard) every this many iterations")

    test = p.add_argument_group("test.py")
    test.add_argument("--output", default=None,
                      help="test.py: folder for the detections JSON and the metrics (default: next to the checkpoint)")
    test.add_argument("--save-cas", default=None,
                      help="test.py: store each test video's CAS and actionness in this folder")
    test.add_argument("--from-cas", default=None,
                      help="test.py: re-run proposals and evaluation from a --save-cas folder, with no network")
    test.add_argument("--visualize", type=int, default=0, help="test.py: draw this many test videos as PNGs")
    test.add_argument("--video", action="append", default=[], help="test.py: draw this test video (repeatable)")
    test.add_argument("--export-official", default=None,
                      help="test.py: write the model's weights in the released state-dict format to this path")
    test.add_argument("--save-bank", default=None,
                      help="test.py, localize.py: write the weights, options and evaluation exemplar bank to this "
                           "checkpoint, which then needs no training features (e.g. for a released .pkl)")
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
    return p


def resolve_dataset(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every option left at None from the dataset record; the options given win.

    Adds the record's model settings as plain values (checkpoints store ``vars(args)``):
    ``variant`` ("thumos" / "activitynet", the model's name in words), ``tcl_depth`` and
    ``smooth_kernel`` (``STCLNet`` arguments). ``t`` is None for a model that does not
    smooth (:func:`parse_args` refuses a ``--t`` given for one). Derived values are
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
    args.variant = "activitynet" if args.use_model == "STCL_ACT" else "thumos"
    args.tcl_depth = record.tcl_depth
    args.smooth_kernel = record.smooth_kernel(args.max_seqlen, args.t)
    return args


#: The earlier name of :func:`resolve_dataset`.
resolve_variant = resolve_dataset


#: The option groups a checkpoint's stored options are restored from by test.py: what defines
#: the model, the data and the post-processing ("model selection" too: with --select-on holdout
#: the held-out videos are no exemplars, at training and at evaluation). The others (device,
#: output, amp, resume, figures, training schedule ...) are run flags and always come from the
#: command line.
CHECKPOINT_GROUPS = ("data", "model", "proposals and evaluation", "model selection")


def checkpoint_options(stored: dict) -> dict:
    """The options of a checkpoint's stored ``args`` that define the model, the data and the
    post-processing (the groups of ``CHECKPOINT_GROUPS``); run flags are left out."""
    restored = {action.dest for group in build_parser()._action_groups if group.title in CHECKPOINT_GROUPS
                for action in group._group_actions}
    return {k: v for k, v in stored.items() if k in restored}


def explicit_args(argv) -> dict:
    """Only the options written on the command line ``argv`` (no defaults)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def parse_args(argv=None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``) and fill the dataset record's defaults."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.feature_size % 2:
        parser.error(f"--feature-size must be even (two streams of D/2); got {args.feature_size}")
    if not 0 < args.holdout < 1:
        parser.error(f"--holdout is a fraction of the training videos, between 0 and 1; got {args.holdout}")
    given_t = args.t is not None
    args = resolve_dataset(args)
    if given_t and args.t is None:
        parser.error(f"--t sets the smoothing of STCL_ACT, but {args.use_model} does not smooth its scores; "
                     "drop --t or pass --use-model STCL_ACT")
    return args
