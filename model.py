"""STCL-Net: the network and its training objective.

Sections cited as ``METHOD.md#...`` are those of docs/METHOD.md. Shape letters: B videos, T snippets,
D feature channels (RGB stream = first D/2, flow = last D/2), C action classes (C+1 with
background, always the last column), M exemplar videos per class, N snippets of a
resampled exemplar video.

Three pieces, as in DETR:
- :class:`STCLNet`, the network (cross-modal attention, fusion, base head, TCL, SCL);
- :class:`STCLCriterion`, the training objective, returning a dict of named loss terms;
- the post-processing lives in ``proposal_methods.py``.

The file has three sections: the network's modules; "Exemplar bank" (SCL's exemplars and
the fast path that builds them, with a note on why it is exact); "Training objective"
(one function per loss term, and the criterion).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Weights of the three CAS branches in the fused CAS (docs/METHOD.md#4-outputs).
BRANCH_WEIGHTS = (0.55, 0.36, 0.09)


def init_conv_(module: nn.Module) -> None:
    """Released initialisation: kaiming_uniform_ at its defaults for weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def conv(c_in: int, c_out: int, kernel: int) -> nn.Conv1d:
    """A 1-D convolution over time that keeps the length T (padding kernel // 2)."""
    return nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)


def cosine_matrix(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of every column of ``a`` with every column of ``b``.

    a: (..., K, I), b: (..., K, J) -> (..., I, J)
    """
    return F.normalize(a, dim=-2).transpose(-1, -2) @ F.normalize(b, dim=-2)


def suppress_with_actionness(cas: Tensor, attn: Tensor) -> Tensor:
    """Attention-suppressed scores ``attn * (cas - min_c cas) + min_c cas``.

    cas: (..., T, C+1), attn: (..., T, 1) -> (..., T, C+1)
    """
    low = cas.min(dim=-1, keepdim=True).values
    return attn * (cas - low) + low


def gather_snippets(x: Tensor, idx: Tensor) -> Tensor:
    """The columns ``idx`` of every video: x (V, K, N), idx (V, S) -> (V, K, S)."""
    return x.gather(2, idx.unsqueeze(1).expand(-1, x.shape[1], -1))


def dropped(x: Tensor, dropout: nn.Dropout, keep: Optional[Tensor]) -> Tensor:
    """``dropout(x)``, or with a mask drawn ahead (``keep``: 0/1, broadcastable to x)."""
    return dropout(x) if keep is None else x * keep / (1 - dropout.p)


class ClassifierHead(nn.Sequential):
    """``Dropout, conv_k3(in->D), LReLU, Dropout, conv_k1(D->C+1)``: (B, in, T) -> (B, C+1, T)."""

    def __init__(self, c_in: int, width: int, num_outputs: int, dropout: float):
        super().__init__(nn.Dropout(dropout), conv(c_in, width, 3), nn.LeakyReLU(0.2),
                         nn.Dropout(dropout), conv(width, num_outputs, 1))


class CrossModalAttention(nn.Module):
    """Actionness of one stream, gated by the other stream (from CO2-Net, docs/METHOD.md#1-cross-modal-attention).

    ``global_gate`` is METHOD.md's g (released ``channel_conv``), ``local_gate`` its h
    (released ``bit_wise_attn``), ``actionness`` the head that gives a.

    The gates are ``nn.Sequential(conv, LReLU, Dropout)`` only so that their state-dict names
    (``local_gate.0.weight`` ...) map one to one onto the released ones (``bit_wise_attn.0.weight``,
    see ``utils/checkpoint.py``); the code unpacks them (``gate_conv, activation, dropout =
    self.local_gate``) to apply a dropout mask drawn ahead, or to compute a conv in another
    form. ``STCLNet.fusion`` is kept as a Sequential for the same reason.
    """

    def __init__(self, stream_width: int, hidden: int):
        super().__init__()
        self.global_gate = nn.Sequential(conv(stream_width, stream_width, 3), nn.LeakyReLU(0.2), nn.Dropout(0.5))
        self.local_gate = nn.Sequential(conv(stream_width, stream_width, 3), nn.LeakyReLU(0.2), nn.Dropout(0.5))
        self.actionness = nn.Sequential(
            conv(stream_width, hidden, 3), nn.LeakyReLU(0.2), nn.Dropout(0.5),
            conv(hidden, hidden, 3), nn.LeakyReLU(0.2),
            conv(hidden, 1, 1), nn.Dropout(0.5), nn.Sigmoid(),
        )

    def forward(self, main: Tensor, other: Tensor, keep: Optional[Tuple[Tensor, Tensor]] = None):
        """main, other: (B, D/2, T) -> actionness (B, 1, T), filtered main stream (B, D/2, T).

        ``keep``: the dropout masks of the two gates, drawn ahead (:class:`EmbedMasks`);
        None draws them here.
        """
        filtered = self.filtered(main, other, keep)
        return self.actionness(filtered), filtered

    def filtered(self, main: Tensor, other: Tensor, keep: Optional[Tuple[Tensor, Tensor]] = None,
                 idx: Optional[Tensor] = None) -> Tensor:
        """The main stream gated by both streams, ``sigmoid(h * g) * main``.

        main, other: (V, D/2, N) -> (V, D/2, N); with ``idx`` (V, S), at those snippets only
        -> (V, D/2, S), for the exemplar bank (section "Exemplar bank" below): there the local
        gate, a k3 conv, is computed on each snippet's window as one matmul (exact; conv
        kernels are slow on thousands of length-1 outputs, in the backward pass above all).
        ``keep``: the gates' dropout masks drawn ahead (at ``idx`` when given); None draws them.
        """
        g = self.global_gate_of(main.mean(dim=-1), None if keep is None else keep[0])  # (V, D/2, 1)
        gate_conv, activation, dropout = self.local_gate
        if idx is None:
            h = activation(gate_conv(other))  # (V, D/2, N)
        else:
            v, s = idx.shape
            windows = snippet_windows(other, idx, gate_conv.kernel_size[0])  # (V*S, D/2, 3)
            h = activation(F.linear(windows.flatten(1), gate_conv.weight.flatten(1), gate_conv.bias))  # (V*S, D/2)
            h, main = h.reshape(v, s, -1).transpose(1, 2), gather_snippets(main, idx)
        h = dropped(h, dropout, None if keep is None else keep[1])
        return torch.sigmoid(h * g) * main

    def global_gate_of(self, mean: Tensor, keep: Optional[Tensor] = None) -> Tensor:
        """The global gate g from the temporal mean of the main stream: (B, D/2) -> (B, D/2, 1).

        g is a k3 conv (padding 1) over a length-1 sequence, which only sees its centre tap:
        a linear map of the temporal mean, computed as one (exact, ~10x cheaper).
        """
        gate_conv, activation, dropout = self.global_gate
        g = activation(F.linear(mean, gate_conv.weight[:, :, 1], gate_conv.bias)).unsqueeze(-1)
        return dropped(g, dropout, keep)


class CorrelationLayer(nn.Module):
    """One TCL layer: dynamic correlation embedding over the snippets of a video (docs/METHOD.md#2-tcl)."""

    def __init__(self, width: int, key_width: int, kernel: int):
        super().__init__()
        self.key = conv(width, key_width, kernel)
        self.value = conv(width, width, kernel)

    def forward(self, z: Tensor) -> Tensor:
        """z: (B, D, T) -> (B, D, T): ``ReLU(V @ softmax_i(cos(K_i, K_j)) + V)``."""
        k, v = self.key(z), self.value(z)  # (B, D/4, T), (B, D, T)
        w = torch.softmax(cosine_matrix(k, k), dim=1)  # (B, T_i, T_j), columns sum to 1
        return torch.relu(v @ w + v)


class TemporalCorrelation(nn.Module):
    """TCL: two stacked correlation layers (k1 convs, then k3 convs)."""

    def __init__(self, width: int, key_width: int):
        super().__init__()
        self.layers = nn.ModuleList([CorrelationLayer(width, key_width, 1), CorrelationLayer(width, key_width, 3)])

    def forward(self, x: Tensor, depth: int = 2) -> Tensor:
        """x: (B, D, T) -> output of layer ``depth`` (B, D, T)."""
        for layer in self.layers[:depth]:
            x = layer(x)
        return x


class SemanticCorrelation(nn.Module):
    """SCL: correlation of every snippet with the class exemplar bank (docs/METHOD.md#3-scl).

    The released code loops over the C+1 classes and the batch; here the whole thing is
    two einsums. The per-class context ``r_a`` (C+1, B, D, T) is never materialised: the
    class weight ``w_a = conv_k1(r_a)`` is linear, so it is computed on the exemplar values
    first (``w . ev``, (C+1, M)), and ``r = sum_a alpha_a r_a`` becomes one contraction
    over (a, m).
    """

    def __init__(self, width: int, key_width: int):
        super().__init__()
        self.query_key = conv(width, key_width, 1)
        self.query_value = conv(width, width, 1)
        self.exemplar_key = conv(width, key_width, 1)
        self.exemplar_value = conv(width, width, 1)
        self.class_weight = conv(width, 1, 1)

    def forward(self, x: Tensor, bank: Tensor) -> Tensor:
        """x: (B, D, T), bank: (C+1, D, M) -> ``ReLU(cat(u, r))`` (B, 2D, T)."""
        q, u = self.query_key(x), self.query_value(x)  # (B, D/4, T), (B, D, T)
        ek, ev = self.exemplar_key(bank), self.exemplar_value(bank)  # (C+1, D/4, M), (C+1, D, M)
        sim = torch.einsum("bkt,akm->abtm", F.normalize(q, dim=1), F.normalize(ek, dim=1))
        p = torch.softmax(sim, dim=-1)  # (C+1, B, T, M)
        w_ev = torch.einsum("d,adm->am", self.class_weight.weight[0, :, 0], ev)  # (C+1, M)
        w = torch.einsum("abtm,am->abt", p, w_ev) + self.class_weight.bias  # (C+1, B, T)
        alpha = torch.softmax(w, dim=0)
        r = torch.einsum("abt,abtm,adm->bdt", alpha, p, ev)  # (B, D, T)
        return torch.relu(torch.cat([u, r], dim=1))


class STCLNet(nn.Module):
    """STCL-Net (docs/METHOD.md#1-cross-modal-attention to ``#4-outputs``, and ``#6-activitynet``).

    The THUMOS-14 and ActivityNet models of the released code (STCL_THU, STCL_ACT) differ
    only in ``tcl_depth`` and ``smooth_kernel``; ``dataset_record.py`` holds each dataset's.

    Args:
        feature_size: D, even; widths scale with it (stream D/2, keys and attention hidden D/4).
        num_class: C, without background.
        dropout: dropout of the fusion layer and the classifier heads (0.7).
        tcl_depth: which TCL layer's output feeds ``cls_intra``: 2 (THUMOS) or 1
            (ActivityNet, METHOD.md#6-activitynet; layer 2 is still built, so released weights load).
        smooth_kernel: width K of the average pool (stride 1, padding K // 2) applied to
            every score and attention sequence after the heads (ActivityNet,
            ``(max_seqlen // t) // 2 * 2 + 1``, see ``dataset_record.DatasetRecord.smooth_kernel``); 1 = none.
    """

    def __init__(self, feature_size: int = 2048, num_class: int = 20, dropout: float = 0.7,
                 tcl_depth: int = 2, smooth_kernel: int = 1):
        super().__init__()
        if feature_size % 2:
            raise ValueError(f"feature_size must be even (two streams of D/2 channels), got {feature_size}")
        if tcl_depth not in (1, 2):
            raise ValueError(f"tcl_depth must be 1 or 2 (TCL has two layers), got {tcl_depth}")
        if smooth_kernel < 1 or smooth_kernel % 2 == 0:
            raise ValueError(f"smooth_kernel must be a positive odd width, got {smooth_kernel}")
        d = feature_size
        self.feature_size, self.num_class = d, num_class
        self.tcl_depth, self.smooth_kernel = tcl_depth, smooth_kernel
        self.attention_rgb = CrossModalAttention(d // 2, d // 4)
        self.attention_flow = CrossModalAttention(d // 2, d // 4)
        self.fusion = nn.Sequential(conv(d, d, 1), nn.LeakyReLU(0.2), nn.Dropout(dropout))
        self.cls_base = ClassifierHead(d, d, num_class + 1, dropout)
        self.tcl = TemporalCorrelation(d, d // 4)
        self.cls_intra = ClassifierHead(d, d, num_class + 1, dropout)
        self.scl = SemanticCorrelation(d, d // 4)
        self.cls_inter = ClassifierHead(2 * d, d, num_class + 1, dropout)
        init_conv_(self)

    # -- building blocks ---------------------------------------------------------------
    def embed(self, features: Tensor, masks: Optional[EmbedMasks] = None):
        """Cross-modal attention and fusion.

        features: (B, T, D) -> x (B, D, T), attn, attn_rgb, attn_flow (B, 1, T).
        masks: dropout masks drawn ahead (:meth:`embed_masks`); None draws them here.
        """
        rgb, flow = self.streams(features)
        attn_rgb, filtered_rgb = self.attention_rgb(rgb, flow, masks and masks.rgb)
        attn_flow, filtered_flow = self.attention_flow(flow, rgb, masks and masks.flow)
        x = self.fuse(torch.cat([filtered_rgb, filtered_flow], dim=1), masks and masks.fusion)
        return x, (attn_rgb + attn_flow) / 2, attn_rgb, attn_flow

    def streams(self, features: Tensor) -> Tuple[Tensor, Tensor]:
        """features (V, T, D) -> the RGB and flow streams, each (V, D/2, T)."""
        f = features.transpose(1, 2)
        return f[:, : self.feature_size // 2], f[:, self.feature_size // 2:]

    def fuse(self, z: Tensor, keep: Optional[Tensor] = None) -> Tensor:
        """The fusion layer, ``Dropout(LReLU(conv_k1(z)))``: (B, D, T) -> (B, D, T)."""
        fusion_conv, activation, dropout = self.fusion
        return dropped(activation(fusion_conv(z)), dropout, keep)

    def exemplar_bank(self, exemplar_videos: Tensor) -> Tensor:
        """The SCL exemplar bank (docs/METHOD.md#3-scl, steps 2-5): (C, M, N, D) -> (C+1, D, M).

        See :func:`exemplar_bank` in the section "Exemplar bank" below.
        """
        return exemplar_bank(self, exemplar_videos)

    def smooth(self, s: Tensor) -> Tensor:
        """ActivityNet smoothing over time (identity for THUMOS): (B, K, T) -> (B, K, T)."""
        if self.smooth_kernel == 1:
            return s
        return F.avg_pool1d(s, self.smooth_kernel, stride=1, padding=self.smooth_kernel // 2, count_include_pad=True)

    # -- forward ---------------------------------------------------------------------
    def forward(self, features: Tensor, exemplar_bank: Optional[Tensor] = None,
                exemplar_videos: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Scores of every snippet.

        Args:
            features: (B, T, D) snippet features.
            exemplar_bank: (C+1, D, M), a bank built earlier by :meth:`exemplar_bank`, or
            exemplar_videos: (C, M, N, D), to build the bank in this pass (with gradient
                when training), as the released code does on every forward.

        Returns a dict of
            feat (B, T, D), cas, cas_base, cas_intra, cas_inter (B, T, C+1),
            attn, attn_rgb, attn_flow (B, T, 1).
        """
        if (exemplar_bank is None) == (exemplar_videos is None):
            raise ValueError("give exactly one of exemplar_bank (C+1, D, M) or exemplar_videos (C, M, N, D)")
        if exemplar_bank is None:
            exemplar_bank = self.exemplar_bank(exemplar_videos)
        x, attn, attn_rgb, attn_flow = self.embed(features)
        cas_base = self.cls_base(x)
        cas_intra = self.cls_intra(self.tcl(x, depth=self.tcl_depth))
        cas_inter = self.cls_inter(self.scl(x, exemplar_bank))
        cas_base, cas_intra, cas_inter, attn, attn_rgb, attn_flow = (
            self.smooth(s) for s in (cas_base, cas_intra, cas_inter, attn, attn_rgb, attn_flow))
        w_base, w_intra, w_inter = BRANCH_WEIGHTS
        cas = w_base * cas_base + w_intra * cas_intra + w_inter * cas_inter
        out = {"feat": x, "cas": cas, "cas_base": cas_base, "cas_intra": cas_intra, "cas_inter": cas_inter,
               "attn": attn, "attn_rgb": attn_rgb, "attn_flow": attn_flow}
        return {name: t.transpose(1, 2) for name, t in out.items()}


# ======================================================================================
# Exemplar bank: SCL's exemplars and their fast path (docs/METHOD.md#3-scl, steps 2-5)
# ======================================================================================
# What it computes: the exemplar bank E (C+1, D, M). Each exemplar is the mean of the
# fused features x of 2 * max(1, N//10) snippets of one exemplar video: its top snippets by
# the suppressed score of its class, and by the background score.
# Why it is fast: the released code records the whole exemplar pass (C*M videos of N
# snippets) for autograd, but E depends on x at the picked snippets only, and picking (a
# top-k) has no gradient. So the pass runs without autograd to pick the snippets, and x is
# recomputed with autograd at those snippets only (:func:`embed_at`).
# Why it is exact: x at a snippet reads the global gate (a function of the video's mean
# over all N snippets, recomputed from all of them), the local gate (a k3 conv, whose
# output at a snippet is a linear map of the 3-snippet window around it,
# :func:`snippet_windows`) and the fusion (a k1 conv, per snippet a matmul); the embedding
# is the same code (:meth:`CrossModalAttention.filtered`) on either path, and the dropout
# masks are drawn once ahead (:class:`EmbedMasks`) and used by both passes. So the bank and
# every gradient are those of the full pass.
# The proof: tests/test_model.py::test_exemplar_bank_recomputes_what_the_full_pass_computes
# (bank and gradients against the released full pass, tests/oracles/released_loops.py, in
# training and evaluation mode), test_exemplar_bank_matches_loop (one exemplar video at a
# time) and test_snippet_windows_feed_a_conv_its_own_output_at_those_snippets.

@dataclass
class EmbedMasks:
    """Dropout masks of the embedding (attention gates and fusion), drawn ahead of a pass.

    The exemplar bank draws them so that it can recompute part of its pass with the very
    same dropout (:meth:`STCLNet.exemplar_bank`). uint8, 1 = kept (scaled by 1/(1-p)), 0 = dropped.

    rgb, flow: each stream's (global gate (V, D/2, 1), local gate (V, D/2, N));
    fusion: (V, D, N).
    """

    rgb: Tuple[Tensor, Tensor]
    flow: Tuple[Tensor, Tensor]
    fusion: Tensor

    def at(self, idx: Tensor) -> "EmbedMasks":
        """The masks of the snippets ``idx`` (V, S) only (the global gates are per video)."""
        return EmbedMasks(rgb=(self.rgb[0], gather_snippets(self.rgb[1], idx)),
                          flow=(self.flow[0], gather_snippets(self.flow[1], idx)),
                          fusion=gather_snippets(self.fusion, idx))


def snippet_windows(x: Tensor, idx: Tensor, kernel: int) -> Tensor:
    """What a k-tap conv (padding k // 2) reads to compute its output at snippets ``idx``.

    x: (V, K, N), idx: (V, S) -> (V*S, K, kernel), the zero-padded window centred on each
    snippet, so that a conv without padding over a window gives that snippet's output.
    """
    v, k, _ = x.shape
    s = idx.shape[1]
    padded = F.pad(x, (kernel // 2, kernel // 2))
    taps = idx.unsqueeze(-1) + torch.arange(kernel, device=idx.device)  # (V, S, kernel), columns of padded
    return gather_snippets(padded, taps.reshape(v, s * kernel)).reshape(v, k, s, kernel).transpose(1, 2) \
        .reshape(v * s, k, kernel)


def draw_embed_masks(model: "STCLNet", v: int, n: int, device: torch.device) -> EmbedMasks:
    """Fresh dropout masks for :meth:`STCLNet.embed` of V videos of N snippets (training mode)."""
    half = model.feature_size // 2

    def keep(shape, dropout: nn.Dropout) -> Tensor:
        return torch.empty(shape, dtype=torch.uint8, device=device).bernoulli_(1 - dropout.p)

    def gates(attention: CrossModalAttention):
        return keep((v, half, 1), attention.global_gate[2]), keep((v, half, n), attention.local_gate[2])

    return EmbedMasks(rgb=gates(model.attention_rgb), flow=gates(model.attention_flow),
                      fusion=keep((v, model.feature_size, n), model.fusion[2]))


def exemplar_bank(model: "STCLNet", exemplar_videos: Tensor) -> Tensor:
    """SCL exemplar extraction (docs/METHOD.md#3-scl, steps 2-5), with the model's weights.

    exemplar_videos: (C, M, N, D) snippet features of M training videos per class.
    Returns the exemplar bank E: (C+1, D, M), background set last. Autograd records only
    the picked snippets (see the head of this section).
    """
    c, m, n, d = exemplar_videos.shape
    if c != model.num_class:
        raise ValueError(f"exemplar videos hold {c} classes, the model has {model.num_class}")
    videos = exemplar_videos.reshape(c * m, n, d)
    masks = draw_embed_masks(model, c * m, n, videos.device) if model.training else None
    with torch.no_grad():
        xe, ae, _, _ = model.embed(videos, masks=masks)  # (C*M, D, N), (C*M, 1, N)
        idx = exemplar_snippets(model, xe, ae, m)  # (C*M, 2k)
    if torch.is_grad_enabled():
        picked = embed_at(model, videos, idx, masks)
    else:
        picked = gather_snippets(xe, idx)
    return bank_from_snippets(picked, c, m)


def exemplar_snippets(model: "STCLNet", xe: Tensor, ae: Tensor, m: int) -> Tensor:
    """Which snippets make each exemplar (docs/METHOD.md#3-scl, steps 3-4).

    xe: (C*M, D, N) fused features and ae: (C*M, 1, N) actionness of M videos per class.
    Returns (C*M, 2k), k = max(1, N//10): the top-k snippets of each video by the
    suppressed score of its own class, then its top-k by the raw background score.
    """
    ce = model.cls_base(xe).transpose(1, 2)  # (C*M, N, C+1)
    supp = suppress_with_actionness(ce, ae.transpose(1, 2))
    videos = torch.arange(ce.shape[0], device=ce.device)
    foreground = supp[videos, :, videos // m]  # (C*M, N): video i belongs to class i // M
    background = ce[..., -1]  # (C*M, N)
    k = max(1, ce.shape[1] // 10)
    return torch.cat([foreground.topk(k, dim=1).indices, background.topk(k, dim=1).indices], dim=1)


def embed_at(model: "STCLNet", videos: Tensor, idx: Tensor, masks: Optional[EmbedMasks] = None) -> Tensor:
    """The fused features x of the snippets ``idx`` only: (V, N, D), (V, S) -> (V, D, S).

    Equal to ``model.embed(videos, masks=masks)[0]`` at ``idx``, without the actionness.
    The fusion is a k1 conv; at S scattered snippets it is computed as one matmul over
    (V*S) rows (the same function as :meth:`STCLNet.fuse`, in the form that is fast here).
    """
    rgb, flow = model.streams(videos)
    picked = masks.at(idx) if masks is not None else None
    filtered_rgb = model.attention_rgb.filtered(rgb, flow, picked and picked.rgb, idx)
    filtered_flow = model.attention_flow.filtered(flow, rgb, picked and picked.flow, idx)
    z = torch.cat([filtered_rgb, filtered_flow], dim=1).transpose(1, 2)  # (V, S, D)
    fusion_conv, activation, dropout = model.fusion
    x = activation(F.linear(z, fusion_conv.weight[:, :, 0], fusion_conv.bias)).transpose(1, 2)
    return dropped(x, dropout, picked and picked.fusion)


def bank_from_snippets(picked: Tensor, c: int, m: int) -> Tensor:
    """docs/METHOD.md#3-scl, steps 4-5: (C*M, D, 2k) picked features -> the bank (C+1, D, M).

    The first k columns of each video are its foreground snippets, the last k its
    background snippets; the background set is the mean over classes.
    """
    k, d = picked.shape[2] // 2, picked.shape[1]
    fg = picked[..., :k].mean(dim=2).reshape(c, m, d)
    bg = picked[..., k:].mean(dim=2).reshape(c, m, d).mean(dim=0, keepdim=True)
    return torch.cat([fg, bg], dim=0).transpose(1, 2)  # (C+1, D, M)



# ======================================================================================
# Training objective (docs/METHOD.md#5-objective)
# ======================================================================================

def topk_mil(scores: Tensor, labels: Tensor, with_background: bool, r: float) -> Tensor:
    """Top-k multiple-instance loss.

    scores: (B, T, C+1); labels: (B, C) multi-hot. The top max(1, T // r) snippets of each
    column are averaged into video logits; the target is the labels with a background
    entry (1 or 0) appended, normalised to sum 1. Returns the mean over the batch.
    """
    k = max(1, int(scores.shape[1] // r))
    logits = scores.topk(k, dim=1).values.mean(dim=1)  # (B, C+1)
    bg = torch.full_like(labels[:, :1], 1.0 if with_background else 0.0)
    target = torch.cat([labels, bg], dim=1)
    target = target / (target.sum(dim=1, keepdim=True) + 1e-4)
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def branch_kl(cas_base: Tensor, cas_intra: Tensor, cas_inter: Tensor, log_form: bool = False) -> Tensor:
    """Mutual KL between the three branches: sum over the 6 ordered pairs (P, Q).

    Each pair is ``KLDivLoss(reduction='mean')(P, Q)`` = mean over all B*T*(C+1) entries of
    ``Q * (log Q - P)``. The released code passes the probability P where torch expects a
    log-probability (``log_form=False``, the default, keeps its numbers); ``log_form=True``
    passes log P, the proper KL divergence. Inputs (B, T, C+1); gradients flow through both.
    """
    log_probs = [F.log_softmax(s, dim=-1) for s in (cas_base, cas_intra, cas_inter)]
    probs = [lp.exp() for lp in log_probs]
    inputs = log_probs if log_form else probs
    total = cas_base.new_zeros(())
    for i in range(3):
        for j in range(3):
            if i != j:  # KLDivLoss(reduction="mean")(inputs[i], probs[j]) with log Q from log_softmax,
                # which keeps the gradient finite where a probability underflows to 0
                total = total + (probs[j] * (log_probs[j] - inputs[i])).mean()
    return total


def co_activity(feat: Tensor, scores: Tensor, labels: Tensor, num_pairs: int) -> Tensor:
    """Co-activity similarity over the first ``num_pairs`` pairs (videos 2i, 2i+1).

    feat: (B, T, D); scores: (B, T, C+1) (the suppressed CAS); labels: (B, C).
    Returns the hinge loss averaged over the (pair, class) entries both videos share.
    """
    t = scores.shape[1]
    a = F.softmax(scores[: 2 * num_pairs, :, :-1], dim=1)  # (2P, T, C); background masked out
    x = feat[: 2 * num_pairs].transpose(1, 2)  # (2P, D, T)
    high = x @ a  # (2P, D, C)
    low = x @ (1 - a) / max(t - 1, 1)

    def distance(u: Tensor, v: Tensor) -> Tensor:  # (P, D, C) -> (P, C)
        return 1 - (u * v).sum(dim=1) / (u.norm(dim=1) * v.norm(dim=1))

    h1, h2, l1, l2 = high[0::2], high[1::2], low[0::2], low[1::2]
    d1, d2, d3 = distance(h1, h2), distance(h1, l2), distance(h2, l1)
    shared = labels[0: 2 * num_pairs: 2] * labels[1: 2 * num_pairs: 2]  # (P, C)
    hinge = 0.5 * torch.relu(d1 - d2 + 0.5) + 0.5 * torch.relu(d1 - d3 + 0.5)
    return (hinge * shared).sum() / shared.sum()


def mutual_attention(attn_rgb: Tensor, attn_flow: Tensor) -> Tensor:
    """Each stream's actionness learns from the other, detached: (B, T, 1) -> ()."""
    return 0.5 * F.mse_loss(attn_rgb, attn_flow.detach()) + 0.5 * F.mse_loss(attn_flow, attn_rgb.detach())


def actionness_norm(attn: Tensor, attn_rgb: Tensor, attn_flow: Tensor) -> Tensor:
    """Mean actionness of the fused and the two stream attentions, averaged: (B, T, 1) -> ()."""
    return (attn.mean() + attn_rgb.mean() + attn_flow.mean()) / 3


def actionness_guide(attn: Tensor, attn_rgb: Tensor, attn_flow: Tensor, cas: Tensor) -> Tensor:
    """Actionness should be 1 - p(background): mean ``|1 - a - p_bg|`` of the three attentions.

    attn*: (B, T, 1); cas: (B, T, C+1) -> ()
    """
    p_bg = F.softmax(cas, dim=-1)[..., -1:]
    return sum((1 - a - p_bg).abs().mean() for a in (attn, attn_rgb, attn_flow)) / 3


def _take(feat: Tensor, scores: Tensor, k: int) -> Tensor:
    """Features of the top-k snippets by score (stable: ties go to the lowest index).

    feat: (B, T, D), scores: (B, T) -> (B, k, D)
    """
    idx = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.gather(feat, 1, idx.unsqueeze(-1).expand(-1, -1, feat.shape[-1]))


def _erode(b: Tensor, before: int, after: int) -> Tensor:
    """Binary erosion along time, outside counts as 0: out[t] = AND b[t-before .. t+after]. (B, T)."""
    padded = F.pad(b.unsqueeze(1), (before, after), value=0.0)
    return -F.max_pool1d(-padded, before + after + 1, stride=1).squeeze(1)


def _dilate(b: Tensor, before: int, after: int) -> Tensor:
    """Binary dilation along time: out[t] = OR b[t-before .. t+after]. (B, T)."""
    padded = F.pad(b.unsqueeze(1), (before, after), value=0.0)
    return F.max_pool1d(padded, before + after + 1, stride=1).squeeze(1)


def nce(q: Tensor, k: Tensor, negatives: Tensor, temperature: float = 0.07) -> Tensor:
    """InfoNCE with one positive: q, k (B, D), negatives (B, K, D) -> () (mean over B)."""
    q, k, negatives = F.normalize(q, dim=-1), F.normalize(k, dim=-1), F.normalize(negatives, dim=-1)
    logits = torch.cat([(q * k).sum(-1, keepdim=True), torch.einsum("bd,bkd->bk", q, negatives)], dim=1)
    target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits / temperature, target)


def snippet_contrast(feat: Tensor, attn: Tensor, keep_mask: Optional[Tensor] = None) -> Tensor:
    """Hard/easy snippet contrast of CoLA (docs/METHOD.md#5-objective, ``snippet``).

    feat: (B, T, D); attn: (B, T, 1); keep_mask: (B, T) of 0/1, the easy-snippet dropout
    mask (keep probability 0.4); drawn from torch's generator when not given.
    k_easy = T // 5 and k_hard = T // 20 (at least 1, so that short videos give a finite loss).
    """
    a = torch.sigmoid(attn.squeeze(-1))  # (B, T); sigmoid of a sigmoid, as released
    t = a.shape[1]
    k_easy, k_hard = max(1, t // 5), max(1, t // 20)
    if keep_mask is None:
        keep_mask = (torch.rand_like(a) < 0.4).to(a.dtype)
    easy_action = _take(feat, a * keep_mask, k_easy)
    easy_background = _take(feat, (a.max(dim=1, keepdim=True).values - a) * keep_mask, k_easy)

    with torch.no_grad():
        b = (a > torch.quantile(a, 0.5, dim=1, keepdim=True)).to(a.dtype)
        inner = _erode(b, 1, 1) - _erode(b, 3, 2)
        outer = _dilate(b, 2, 3) - _dilate(b, 1, 1)
    hard_action = _take(feat, a * inner, k_hard)
    hard_background = _take(feat, a * outer, k_hard)
    return (nce(hard_action.mean(1), easy_action.mean(1), easy_background)
            + nce(hard_background.mean(1), easy_background.mean(1), easy_action))


#: The loss weights of docs/METHOD.md#5-objective on THUMOS-14 (alpha1..alpha4, the KL weight 1, and
#: the fixed weight 1 of ``snippet``); the options and the dataset record give the ones of a run
#: (``loss_weights``, section "Builders").
DEFAULT_WEIGHTS = {"mil": 1.0, "branch": 1.0, "kl": 1.0, "co": 1.0, "mutual": 1.0, "norm": 0.8, "guide": 0.8,
                   "snippet": 1.0}


class STCLCriterion(nn.Module):
    """The training objective of docs/METHOD.md#5-objective; returns a dict of RAW (unweighted) named terms.

    Terms: mil, branch, kl, co, mutual, norm, guide, snippet. As in DETR, the weights are
    applied in one place, :func:`weigh`, with the criterion's ``weight_dict`` (alpha1..4,
    the KL weight; from the options and the dataset record). ``snippet`` has the fixed weight
    1, as released (no flag sets it); a ``weight_dict`` giving it 0 skips computing it.
    """

    TERMS = ("mil", "branch", "kl", "co", "mutual", "norm", "guide", "snippet")

    def __init__(self, k: float = 7, kl_log_form: bool = False, num_pairs: int = 3,
                 weight_dict: Optional[Dict[str, float]] = None):
        super().__init__()
        self.k, self.kl_log_form, self.num_pairs = k, kl_log_form, num_pairs
        self.weight_dict = {**DEFAULT_WEIGHTS, **(weight_dict or {})}
        unknown = set(self.weight_dict) - set(self.TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms in weight_dict: {sorted(unknown)}; expected {self.TERMS}")

    def forward(self, outputs: Dict[str, Tensor], labels: Tensor,
                keep_mask: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """outputs: the dict of :meth:`STCLNet.forward`; labels: (B, C) multi-hot -> {term: () tensor}."""
        cas, attn = outputs["cas"], outputs["attn"]
        supp = suppress_with_actionness(cas, attn)
        r = self.k
        terms = {
            "mil": topk_mil(cas, labels, True, r) + topk_mil(supp, labels, False, r),
            "branch": sum(topk_mil(outputs[name], labels, True, r) for name in ("cas_base", "cas_intra", "cas_inter")),
            "kl": branch_kl(outputs["cas_base"], outputs["cas_intra"], outputs["cas_inter"], self.kl_log_form),
            "co": co_activity(outputs["feat"], supp, labels, self.num_pairs),
            "mutual": mutual_attention(outputs["attn_rgb"], outputs["attn_flow"]),
            "norm": actionness_norm(attn, outputs["attn_rgb"], outputs["attn_flow"]),
            "guide": actionness_guide(attn, outputs["attn_rgb"], outputs["attn_flow"], cas),
        }
        if self.weight_dict["snippet"]:
            terms["snippet"] = snippet_contrast(outputs["feat"], attn, keep_mask)
        return terms


def weigh(terms: Dict[str, Tensor], weight_dict: Dict[str, float]) -> Dict[str, Tensor]:
    """The one place the loss weights are applied: each raw term times its weight, and
    ``total``, their sum (the loss that is back-propagated)."""
    weighted = {name: weight_dict[name] * value for name, value in terms.items()}
    weighted["total"] = sum(weighted.values())
    return weighted


# ======================================================================================
# Builders: the network and the criterion from the parsed options
# ======================================================================================
# ``args`` is the namespace of ``options.parse_args`` (any object with those attributes);
# nothing here parses. The optimizer is built beside the step, in train.py.

def build_model(args) -> STCLNet:
    """The network described by the options, resolved against the dataset record
    (``options.resolve_dataset``: ``tcl_depth``, ``smooth_kernel``)."""
    return STCLNet(feature_size=args.feature_size, num_class=args.num_class, dropout=args.dropout_ratio,
                   tcl_depth=args.tcl_depth, smooth_kernel=args.smooth_kernel)


def loss_weights(args) -> Dict[str, float]:
    """The weight of every loss term (docs/METHOD.md#5-objective), from the resolved options: alpha1..alpha4
    and the KL weight (their defaults come from the dataset record)."""
    return {"mil": 1.0, "branch": 1.0, "kl": args.kl_weight, "co": args.alpha3, "mutual": args.alpha4,
            "norm": args.alpha1, "guide": args.alpha2, "snippet": 1.0}


def build_criterion(args) -> STCLCriterion:
    """The objective described by the resolved options, with its weight dict."""
    return STCLCriterion(k=args.k, kl_log_form=args.kl_form == "log", num_pairs=args.num_similar,
                         weight_dict=loss_weights(args))
