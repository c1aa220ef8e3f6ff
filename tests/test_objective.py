"""Each term of the training objective (docs/METHOD.md#5-objective) on a hand-worked example."""
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from model import (_dilate, _erode, actionness_guide, actionness_norm, branch_kl, co_activity,
                   mutual_attention, nce, snippet_contrast, topk_mil)


def test_topk_mil_with_and_without_background():
    # T=4, C=1 (+bg), r=2 -> the top 2 of each column are averaged:
    # class 0 [1,3,2,0] -> 2.5, class 1 [0,0,1,1] -> 1, background [2,0,0,2] -> 2.
    scores = torch.tensor([[[1.0, 0, 2], [3, 0, 0], [2, 1, 0], [0, 1, 2]]])
    labels = torch.tensor([[1.0, 0.0]])
    lse = math.log(math.exp(2.5) + math.exp(1) + math.exp(2))
    with_bg = ((lse - 2.5) + (lse - 2)) / (2 + 1e-4)  # target (1, 0, 1) / 2.0001
    without_bg = (lse - 2.5) / (1 + 1e-4)  # target (1, 0, 0) / 1.0001
    assert topk_mil(scores, labels, True, 2).item() == pytest.approx(with_bg, rel=1e-6)
    assert topk_mil(scores, labels, False, 2).item() == pytest.approx(without_bg, rel=1e-6)
    assert topk_mil(scores, labels, True, 100).item() == pytest.approx(
        topk_mil(scores[:, :1], labels, True, 1).item())  # k = max(1, T // r)


def test_kl_probability_form_and_log_form():
    # One snippet, C+1 = 2: p_base = (1/2, 1/2), p_intra = (3/4, 1/4), p_inter = (1/4, 3/4).
    logits = [torch.tensor([[[0.0, 0.0]]]), torch.tensor([[[math.log(3), 0.0]]]),
              torch.tensor([[[0.0, math.log(3)]]])]
    p = [(0.5, 0.5), (0.75, 0.25), (0.25, 0.75)]
    prob_form = log_form = 0.0
    for i in range(3):
        for j in range(3):
            if i != j:  # KLDivLoss(mean)(P_i, P_j): mean over the 2 entries of Q (log Q - input)
                prob_form += sum(q * (math.log(q) - pi) for pi, q in zip(p[i], p[j])) / 2
                log_form += sum(q * (math.log(q) - math.log(pi)) for pi, q in zip(p[i], p[j])) / 2
    assert branch_kl(*logits).item() == pytest.approx(prob_form, rel=1e-6)
    assert branch_kl(*logits, log_form=True).item() == pytest.approx(log_form, rel=1e-6)
    assert prob_form < 0 < log_form  # the released form is usually negative


def test_co_activity_hinge():
    # Two videos of one class, T=2, D=2, snippet features e0 then e1 in both.
    # Video 1 attends snippet 0: H1 = e0, L1 = e1; video 2 attends snippet 1: H2 = e1, L2 = e0.
    # d1 = 1 - cos(e0, e1) = 1, d2 = 1 - cos(H1, L2) = 0, d3 = 1 - cos(H2, L1) = 0
    # loss = 0.5 relu(1 - 0 + 0.5) + 0.5 relu(1 - 0 + 0.5) = 1.5 over 1 shared entry.
    feat = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]] * 2)
    scores = torch.tensor([[[30.0, 5.0], [-30.0, 5.0]], [[-30.0, 0.0], [30.0, 0.0]]])  # last column: background
    labels = torch.tensor([[1.0], [1.0]])
    assert co_activity(feat, scores, labels, num_pairs=1).item() == pytest.approx(1.5, abs=1e-6)
    # Same attention in both videos: d1 = 0, d2 = d3 = 1 -> hinge 0.
    assert co_activity(feat, scores[[0, 0]], labels, num_pairs=1).item() == pytest.approx(0.0, abs=1e-6)


def test_co_activity_counts_only_shared_classes():
    feat = torch.randn(4, 6, 3)
    scores = torch.randn(4, 6, 3)
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    pair1 = co_activity(feat[:2], scores[:2], labels[:2], 1)  # shares class 0 only
    pair2 = co_activity(feat[2:], scores[2:], labels[2:], 1)  # shares class 1 only
    assert co_activity(feat, scores, labels, 2).item() == pytest.approx((pair1 + pair2).item() / 2, rel=1e-5)


def test_mutual_norm_and_guide():
    rgb = torch.tensor([[[0.2], [0.4]]], requires_grad=True)
    flow = torch.tensor([[[0.6], [0.4]]], requires_grad=True)
    loss = mutual_attention(rgb, flow)
    assert loss.item() == pytest.approx(0.08)  # mse = (0.4^2 + 0) / 2, twice with weight 0.5
    loss.backward()
    # each stream is pulled towards the other, which is detached: d/d rgb = (rgb - flow) / 2
    torch.testing.assert_close(rgb.grad, torch.tensor([[[-0.2], [0.0]]]))
    torch.testing.assert_close(flow.grad, torch.tensor([[[0.2], [0.0]]]))

    attn = torch.full((1, 2, 1), 0.5)
    assert actionness_norm(attn, rgb, flow).item() == pytest.approx((0.5 + 0.3 + 0.5) / 3)
    cas = torch.tensor([[[math.log(3), 0.0]] * 2])  # p_bg = 1/4
    # |1 - 0.5 - 0.25| = 0.25 for the fused attention; rgb: |0.8-0.25|,|0.6-0.25|; flow: |0.4-0.25|,|0.6-0.25|
    expected = (0.25 + (0.55 + 0.35) / 2 + (0.15 + 0.35) / 2) / 3
    assert actionness_guide(attn, rgb, flow, cas).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_morphology_matches_scipy(seed):
    b = np.random.default_rng(seed).random((3, 40)) > 0.4
    t = torch.from_numpy(b.astype(np.float32))
    for ours, reference in (
            (_erode(t, 1, 1), ndimage.binary_erosion(b, np.ones((1, 3)))),
            (_erode(t, 3, 2), ndimage.binary_erosion(b, np.ones((1, 6)))),
            (_dilate(t, 1, 1), ndimage.binary_dilation(b, np.ones((1, 3)))),
            (_dilate(t, 2, 3), ndimage.binary_dilation(b, np.ones((1, 6))))):
        np.testing.assert_array_equal(ours.numpy().astype(bool), reference)


def _nce_by_hand(q, k, negatives, temperature=0.07):
    def unit(v):
        return np.asarray(v, float) / np.linalg.norm(v)

    logits = np.array([unit(q) @ unit(k)] + [unit(q) @ unit(n) for n in negatives]) / temperature
    return -(logits[0] - np.log(np.exp(logits).sum()))


def test_snippet_contrast_by_hand():
    # T = 20 -> k_easy = 4, k_hard = 1. Attention high (0.9) on snippets 5..14, low elsewhere.
    # Median split: b = 5..14. ero3 = 6..13, ero6 = 8..12 -> inner band {6, 7, 13}: the
    # hard action is snippet 6 (all equal, lowest index). dil3 = 4..15, dil6 = 2..16 ->
    # outer band {2, 3, 16}: the hard background is snippet 2. With every snippet kept,
    # easy action = 5, 6, 7, 8 (equal scores, lowest indices); easy background = 0, 1, 2, 3.
    attn = torch.full((1, 20, 1), 0.1)
    attn[0, 5:15] = 0.9
    feat = torch.zeros(1, 20, 3)
    feat[0, :, 1] = 1.0  # background direction
    feat[0, 5:15] = torch.tensor([1.0, 0.0, 0.0])  # action direction
    feat[0, 6] = torch.tensor([1.0, 0.0, 1.0])  # hard action
    feat[0, 2] = torch.tensor([0.0, 1.0, 1.0])  # hard background (also an easy background)
    f = feat[0].numpy()
    ea, eb = f[[5, 6, 7, 8]], f[[0, 1, 2, 3]]
    expected = _nce_by_hand(f[6], ea.mean(0), eb) + _nce_by_hand(f[2], eb.mean(0), ea)
    got = snippet_contrast(feat, attn, keep_mask=torch.ones(1, 20))
    assert got.item() == pytest.approx(expected, rel=1e-4)  # float32 log-sum-exp at 1/0.07


def test_nce_prefers_the_positive():
    q = torch.tensor([[1.0, 0.0]])
    assert nce(q, q, torch.tensor([[[0.0, 1.0]]])).item() < nce(q, torch.tensor([[0.0, 1.0]]), q[:, None]).item()
