"""One optimisation step of STCL-Net, and the pieces the entry points build it from.

``train_step`` takes a batch and returns the loss terms as floats; ``main.py`` owns the
loop. :class:`ExemplarSource` keeps the training snippets in one device-resident tensor
and draws the SCL exemplar videos by tensor indexing, so that the only host-to-device
copy of a step is the sampled batch and the (small) exemplar index array.
"""
from __future__ import annotations

import argparse
from typing import Dict

import numpy as np
import torch

from model import STCLCriterion, STCLNet
from utils.device import autocast


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; ``terms`` holds every term's value."""

    def __init__(self, iteration: int, terms: Dict[str, float]):
        bad = ", ".join(f"{k}={v}" for k, v in terms.items() if not np.isfinite(v))
        super().__init__(f"non-finite loss at iteration {iteration}: {bad} (all terms: {terms})")
        self.iteration, self.terms = iteration, terms


def build_model(args: argparse.Namespace) -> STCLNet:
    """The network described by the options (``--use-model``, ``--feature-size`` ...)."""
    return STCLNet(feature_size=args.feature_size, num_class=args.num_class, dropout=args.dropout_ratio,
                   variant=args.variant, max_seqlen=args.max_seqlen, t=args.t)


def build_criterion(args: argparse.Namespace) -> STCLCriterion:
    """The objective of the chosen variant (ActivityNet: mutual-learning weight fixed at 1)."""
    alpha4 = 1.0 if args.variant == "activitynet" else args.alpha4
    return STCLCriterion(k=args.k, alpha1=args.alpha1, alpha2=args.alpha2, alpha3=args.alpha3, alpha4=alpha4,
                         kl_weight=args.kl_weight, kl_log_form=args.kl_form == "log", num_pairs=args.num_similar)


def build_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Adam:
    """Classic Adam with L2 weight decay added to the gradient (not AdamW), constant lr.

    The fused implementation computes the same update in one kernel per device.
    """
    return torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, fused=True)


class ExemplarSource:
    """Where SCL exemplar videos come from (docs/METHOD.md#3-scl, step 1).

    Args:
        dataset: a :class:`wsad_dataset.SampleDataset`; its ``train_snippets`` (sum T, D)
            are copied to ``device`` once.
        num_exemplars: M videos per class.
    """

    def __init__(self, dataset, num_exemplars: int, device: torch.device):
        self.dataset, self.num_exemplars, self.device = dataset, num_exemplars, device
        self.snippets = torch.as_tensor(dataset.train_snippets, device=device)

    def draw(self, rng: np.random.Generator) -> torch.Tensor:
        """M random training videos per class, random-perturbed to N: (C, M, N, D)."""
        idx = self.dataset.exemplar_indices(self.num_exemplars, rng)  # (C, M, N) rows of train_snippets
        return self.snippets[torch.as_tensor(idx, device=self.device)]

    @torch.no_grad()
    def bank(self, model: STCLNet, rng: np.random.Generator, draws: int = 1) -> torch.Tensor:
        """An exemplar bank (C+1, D, M) for evaluation: the mean over ``draws`` draws."""
        banks = [model.exemplar_bank(self.draw(rng)) for _ in range(draws)]
        return torch.stack(banks).mean(dim=0)


def train_step(model: STCLNet, criterion: STCLCriterion, optimizer: torch.optim.Optimizer,
               features: torch.Tensor, labels: torch.Tensor, exemplar_videos: torch.Tensor,
               iteration: int = 0, amp: bool = False) -> Dict[str, float]:
    """One update on one batch.

    features: (B, N, D); labels: (B, C) multi-hot; exemplar_videos: (C, M, N, D), all on
    the model's device. Returns every weighted loss term and ``total`` as floats. Raises
    :class:`NonFiniteLossError` (before touching the weights) if the loss is not finite.
    """
    model.train()
    with autocast(features.device, amp):
        outputs = model(features, exemplar_videos=exemplar_videos)
    losses = criterion({k: v.float() for k, v in outputs.items()}, labels)
    values = dict(zip(losses, torch.stack([v.detach() for v in losses.values()]).tolist()))
    if not np.isfinite(values["total"]):
        raise NonFiniteLossError(iteration, values)
    optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    optimizer.step()
    return values
