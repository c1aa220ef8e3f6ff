"""Loading a checkpoint to run it (test.py, localize.py), and saving one with its exemplar bank.

Beside the checkpoint format itself (``utils/checkpoint.py``: reading with ``weights_only``,
atomic saves, the released state-dict names): here a checkpoint becomes options, a model
with its weights and the evaluation exemplar bank it carries (:func:`load_checkpoint`).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import torch

from inference import BANK_KEY, BankRecipe, EvaluationBank
from model import build_model
from options import RECORD_OPTIONS, resolve_dataset
from utils import checkpoint as ckpt
from utils.errors import STCLError


@dataclass
class LoadedCheckpoint:
    """A checkpoint made ready to run: options, model with its weights, what to report, and
    the evaluation exemplar bank it carries (None: a released .pkl or an older checkpoint)."""

    args: argparse.Namespace
    model: torch.nn.Module
    info: dict
    bank: Optional[EvaluationBank]


def load_checkpoint(args: argparse.Namespace, given: dict, restorable: Iterable[str]) -> LoadedCheckpoint:
    """The checkpoint of ``args.pretrained_ckpt``, ready to run; ``given``: the flags written
    on the command line; ``restorable``: the options the command restores from a checkpoint
    (``options.restorable_options`` of its parser).

    A checkpoint of main.py restores the options that define the model, the data and the
    post-processing, each overridden by a flag given; run
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
        stored = {k: v for k, v in raw["args"].items() if k in restorable}
        args = argparse.Namespace(**{**vars(args), **stored, **given})
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
