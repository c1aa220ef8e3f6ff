"""Loop-by-loop versions of SCL and of the exemplar draw, written the way the released code runs them.

The benchmarks time the project against these; tests/test_exemplar_bank.py and
tests/test_model.py check that they compute the same numbers, so that the comparison is like for like.

- :class:`LoopSemanticCorrelation`: SCL with a Python loop over the C+1 classes of the
  exemplar bank and, inside it, over the B videos of the batch; it materialises every
  per-class context r_a (C+1 of them, each (B, D, T)), as the released code does.
- :class:`LoopSTCLNet`: STCL-Net with that SCL and with the exemplar bank built the released
  way: the whole exemplar pass (C*M*N snippets) recorded for autograd, where the project
  recomputes only the 2 * N//10 picked snippets of each video. It draws the same dropout
  masks in the same order, so under the same torch seed both give the same bank and the
  same gradients.
- :func:`loop_exemplar_videos`: the released per-video exemplar resampling: per class and
  per drawn video, random-perturb indices into that video's own (T_i, D) array on the
  host, stacked with numpy, then copied to the device. It consumes the generator exactly
  as ``SampleDataset.exemplar_draw`` does, so both draw the same videos and snippets.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from model import (STCLNet, SemanticCorrelation, bank_from_snippets, cosine_matrix, draw_embed_masks,
                   exemplar_snippets, gather_snippets)
from wsad_dataset import random_perturb


class LoopSemanticCorrelation(SemanticCorrelation):
    """SCL, one exemplar class and one video at a time (same weights as :class:`SemanticCorrelation`)."""

    def forward(self, x: Tensor, bank: Tensor) -> Tensor:
        """x: (B, D, T), bank: (C+1, D, M) -> ``ReLU(cat(u, r))`` (B, 2D, T)."""
        q, u = self.query_key(x), self.query_value(x)  # (B, D/4, T), (B, D, T)
        contexts, class_weights = [], []
        for a in range(bank.shape[0]):
            exemplars = bank[a:a + 1]  # (1, D, M)
            ek, ev = self.exemplar_key(exemplars)[0], self.exemplar_value(exemplars)[0]  # (D/4, M), (D, M)
            per_video = []
            for b in range(x.shape[0]):
                p = torch.softmax(cosine_matrix(q[b], ek), dim=-1)  # (T, M)
                per_video.append(ev @ p.transpose(0, 1))  # (D, T)
            r_a = torch.stack(per_video)  # (B, D, T)
            contexts.append(r_a)
            class_weights.append(self.class_weight(r_a))  # (B, 1, T)
        alpha = torch.softmax(torch.stack(class_weights), dim=0)  # (C+1, B, 1, T)
        r = (alpha * torch.stack(contexts)).sum(dim=0)  # (B, D, T)
        return torch.relu(torch.cat([u, r], dim=1))


class LoopSTCLNet(STCLNet):
    """STCL-Net the released way (loop-based SCL, exemplar pass fully recorded for autograd);
    takes the same state dict as :class:`STCLNet`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        width = self.feature_size
        self.scl = LoopSemanticCorrelation(width, width // 4)

    def exemplar_bank(self, exemplar_videos: Tensor) -> Tensor:
        """(C, M, N, D) -> (C+1, D, M), autograd through every exemplar snippet."""
        c, m, n, d = exemplar_videos.shape
        videos = exemplar_videos.reshape(c * m, n, d)
        masks = draw_embed_masks(self, c * m, n, videos.device) if self.training else None
        xe, ae, _, _ = self.embed(videos, masks=masks)  # (C*M, D, N), with autograd
        with torch.no_grad():
            idx = exemplar_snippets(self, xe, ae, m)
        return bank_from_snippets(gather_snippets(xe, idx), c, m)


def loop_exemplar_videos(dataset, m: int, rng: np.random.Generator, device: torch.device) -> Tensor:
    """The released exemplar draw: (C, M, N, D) gathered on the host, then copied to ``device``.

    dataset: a ``wsad_dataset.SampleDataset`` (its class pools, per-video features, N).
    """
    videos = []
    for pool in dataset.class_train_index:
        for video in rng.choice(pool, size=m, replace=len(pool) < m):
            features = dataset.features[video]  # (T_i, D)
            videos.append(features[random_perturb(len(features), dataset.max_seqlen, rng)])
    stacked = np.stack(videos).reshape(dataset.num_class, m, dataset.max_seqlen, -1)
    return torch.from_numpy(stacked).to(device)
