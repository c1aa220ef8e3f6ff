"""Evaluate an STCL-Net checkpoint on the test videos: scores -> detections -> mAP.

    python test.py --pretrained-ckpt runs/STCL/best.pt
    python test.py --pretrained-ckpt best_re_rank_THU_STCL_best.pkl --path-dataset dataset/THUMOS14
    python test.py --pretrained-ckpt runs/STCL/best.pt --save-cas cas/      # keep raw outputs
    python test.py --from-cas cas/ --gamma-oic 0.3                          # re-run post-processing only

A thin command: the checkpoint is loaded by ``checkpoints.load_checkpoint``, the network runs
on every test video in ``inference.run_network``, and the evaluation protocol and the
reports are ``protocol.py`` (numpy only). main.py evaluates with ``inference.test``.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from checkpoints import load_checkpoint, save_with_bank, stored_bank_or_none
from dataset_record import dataset_record
from exemplar_source import ExemplarSource
from inference import evaluation_bank, post_processing, run_network
from options import build_test_parser, parse_checkpoint_command, restorable_options
from protocol import Reference, cas_network, draw_videos, evaluate, load_cas, report, save_cas
from utils import checkpoint as ckpt
from utils.atomic import write_text
from utils.device import choose_device
from utils.errors import STCLError
from wsad_dataset import build_dataset


def network_settings(args: argparse.Namespace) -> dict:
    """How the network outputs were computed at test time (recorded in metrics.json)."""
    return {"exemplar_mode": args.exemplar_mode, "exemplar_draws": args.exemplar_draws,
            "exemplar_seed": args.exemplar_seed, "num_exemplars": args.num_exemplars,
            "feature_fps": args.feature_fps}


def export_command(args: argparse.Namespace, exported: Path) -> str:
    """The test.py command line that evaluates the exported released state dict ``exported`` to the
    numbers of ``args`` (the options of the checkpoint it was made from): ``--path-dataset`` and every
    option test.py restores from a checkpoint (data, model, post-processing) that
    ``test.py --pretrained-ckpt exported`` alone would resolve otherwise (N, the dataset name, ...)."""
    restorable = restorable_options(build_test_parser())
    bare = load_checkpoint(*parse_checkpoint_command(build_test_parser, ["--pretrained-ckpt", str(exported)]),
                           restorable).args
    actions = {a.dest: a for a in build_test_parser()._actions if a.option_strings}
    flags = ["--pretrained-ckpt", str(exported), "--path-dataset", str(args.path_dataset)]
    for dest in sorted(restorable & set(actions), key=list(actions).index):
        value = getattr(args, dest, None)
        if dest == "path_dataset" or value is None or getattr(bare, dest, None) == value:
            continue
        action = actions[dest]
        if action.nargs == 0:  # a switch: given when on
            flags += [action.option_strings[-1]] if value == action.const else []
        else:
            flags += [action.option_strings[-1], str(value)]  # str of a float: its exact repr
    return shlex.join(["python", "test.py", *flags])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _main(argv)
    except STCLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _main(argv) -> int:
    args, given = parse_checkpoint_command(build_test_parser, argv)
    if args.from_cas:
        outputs, reference = load_cas(Path(args.from_cas))
        result = evaluate(outputs, reference, **post_processing(args))
        out_dir = Path(args.output or Path(args.from_cas) / "eval")
        print(report(result, out_dir, {"from_cas": args.from_cas, **cas_network(Path(args.from_cas))}))
        print(f"\nwrote {out_dir}/metrics.json, detections.json, proposals.json, per_class_ap.csv")
        return 0

    loaded = load_checkpoint(args, given, restorable_options(build_test_parser()))
    args, model, info = loaded.args, loaded.model, loaded.info
    if args.export_official:
        path = ckpt.save_atomic(ckpt.project_to_released(model.state_dict()), args.export_official)
        print(f"wrote the weights in the released STCL-Net format to {path}")
        command = export_command(args, path)
        note = path.with_name(path.name + ".txt")
        write_text(note, "# a released state dict carries no options: evaluate it with these\n" + command + "\n")
        print(f"it carries no options; evaluate it to these numbers with (also in {note}):\n  {command}")
        if not Path(args.path_dataset).exists():
            print(f"(no dataset at {args.path_dataset}: export only, nothing evaluated)")
            return 0
    device = choose_device(args.device)
    model.to(device)
    bank = stored_bank_or_none(loaded)
    # with the checkpoint's bank, the test videos are all that is needed
    dataset = build_dataset(args, training=False, require_training=bank is None)
    source = None  # with the checkpoint's bank, no exemplar is drawn: the training videos may be absent
    if bank is None:
        source = ExemplarSource.from_options(dataset, args, device)
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
                          bank=bank, progress=not args.quiet)
    result = evaluate(outputs, reference, **post_processing(args))
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
