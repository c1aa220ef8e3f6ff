"""One optimisation step of STCL-Net, and the pieces the entry points build it from.

``train_step`` takes a batch and returns the loss terms as floats; ``main.py`` owns the
loop. The SCL exemplar videos of a step come from :class:`exemplar_source.ExemplarSource`.
"""
from __future__ import annotations

import argparse
from typing import Dict

import numpy as np
import torch

from model import STCLCriterion, STCLNet, weigh
from utils.device import autocast


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; ``terms`` holds every term's value."""

    def __init__(self, iteration: int, terms: Dict[str, float]):
        bad = ", ".join(f"{k}={v}" for k, v in terms.items() if not np.isfinite(v) and not k.startswith("raw_"))
        super().__init__(f"non-finite loss at iteration {iteration}: {bad} (all terms: {terms})")
        self.iteration, self.terms = iteration, terms


def build_model(args: argparse.Namespace) -> STCLNet:
    """The network described by the options, resolved against the dataset record
    (``options.resolve_dataset``: ``tcl_depth``, ``smooth_kernel``)."""
    return STCLNet(feature_size=args.feature_size, num_class=args.num_class, dropout=args.dropout_ratio,
                   tcl_depth=args.tcl_depth, smooth_kernel=args.smooth_kernel)


def loss_weights(args: argparse.Namespace) -> Dict[str, float]:
    """The weight of every loss term (docs/METHOD.md#5-objective), from the resolved options: alpha1..alpha4
    and the KL weight (their defaults come from the dataset record)."""
    return {"mil": 1.0, "branch": 1.0, "kl": args.kl_weight, "co": args.alpha3, "mutual": args.alpha4,
            "norm": args.alpha1, "guide": args.alpha2, "snippet": 1.0}


def build_criterion(args: argparse.Namespace) -> STCLCriterion:
    """The objective described by the resolved options, with its weight dict."""
    return STCLCriterion(k=args.k, kl_log_form=args.kl_form == "log", num_pairs=args.num_similar,
                         weight_dict=loss_weights(args))


def build_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Adam:
    """Classic Adam with L2 weight decay added to the gradient (not AdamW), constant lr.

    The fused implementation computes the same update in one kernel per device.
    """
    return torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, fused=True)


def train_step(model: STCLNet, criterion: STCLCriterion, optimizer: torch.optim.Optimizer,
               features: torch.Tensor, labels: torch.Tensor, exemplar_videos: torch.Tensor,
               iteration: int = 0, amp: bool = False) -> Dict[str, float]:
    """One update on one batch.

    features: (B, N, D); labels: (B, C) multi-hot; exemplar_videos: (C, M, N, D), all on
    the model's device. Returns floats: every weighted loss term under its name, ``total``
    (their sum, the loss minimised), and every raw term as ``raw_<name>``. Raises
    :class:`NonFiniteLossError` (before touching the weights) if the loss is not finite.
    """
    model.train()
    with autocast(features.device, amp):
        outputs = model(features, exemplar_videos=exemplar_videos)
    raw = criterion({k: v.float() for k, v in outputs.items()}, labels)
    losses = weigh(raw, criterion.weight_dict)
    logged = {**losses, **{f"raw_{name}": value for name, value in raw.items()}}
    values = dict(zip(logged, torch.stack([v.detach() for v in logged.values()]).tolist()))
    if not np.isfinite(values["total"]):
        raise NonFiniteLossError(iteration, values)
    optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    optimizer.step()
    return values
