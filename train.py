"""One optimisation step of STCL-Net, and its optimizer.

``train_step`` takes a batch and returns the loss terms as floats; ``main.py`` owns the
loop. The SCL exemplar videos of a step come from :class:`exemplar_source.ExemplarSource`;
the network and the criterion are built by ``model.build_model`` and ``model.build_criterion``.
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
