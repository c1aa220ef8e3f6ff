"""The network: shapes, TCL by hand, SCL against a plain loop, gradients."""
import math

import pytest
import torch
import torch.nn.functional as F

from dataset_record import ACTIVITYNET12
from model import (CorrelationLayer, STCLCriterion, STCLNet, gather_snippets, snippet_windows,
                   suppress_with_actionness, weigh)

D = 16  # a small even feature size: streams of 8, keys of 4


#: The STCLNet arguments of the two released models (dataset_record.py), at N = 60.
VARIANTS = {"thumos": {}, "activitynet": {"tcl_depth": 1, "smooth_kernel": ACTIVITYNET12.smooth_kernel(60, 5)}}


def make(num_class=4, variant="thumos", seed=0, **kw):
    torch.manual_seed(seed)
    return STCLNet(feature_size=D, num_class=num_class, **{**VARIANTS[variant], **kw})


@pytest.mark.parametrize("variant", ["thumos", "activitynet"])
@pytest.mark.parametrize("num_class", [20, 100])
@pytest.mark.parametrize("b,t", [(1, 3), (1, 57), (4, 9), (3, 120)])
def test_output_shapes(variant, num_class, b, t):
    model = make(num_class, variant).eval()
    exemplars = torch.randn(num_class, 2, 11, D)
    with torch.no_grad():
        out = model(torch.randn(b, t, D), exemplar_videos=exemplars)
    assert out["feat"].shape == (b, t, D)
    for name in ("cas", "cas_base", "cas_intra", "cas_inter"):
        assert out[name].shape == (b, t, num_class + 1), name
    for name in ("attn", "attn_rgb", "attn_flow"):
        assert out[name].shape == (b, t, 1), name
        assert ((out[name] > 0) & (out[name] < 1)).all()
    assert model.exemplar_bank(exemplars).shape == (num_class + 1, D, 2)


def test_fused_cas_weights_the_three_branches():
    model = make().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 10, D), exemplar_videos=torch.randn(4, 3, 10, D))
    expected = 0.55 * out["cas_base"] + 0.36 * out["cas_intra"] + 0.09 * out["cas_inter"]
    torch.testing.assert_close(out["cas"], expected)


def test_init_is_kaiming_uniform_with_zero_bias():
    model = make()
    w = model.cls_inter[1].weight  # (D, 2D, 3): fan_in = 2D * 3
    bound = math.sqrt(6 / (2 * D * 3))
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert all((m.bias == 0).all() for m in model.modules() if isinstance(m, torch.nn.Conv1d))


def test_tcl_layer_by_hand():
    # Two snippets z0 = (1, 0), z1 = (0, 1). Key = identity, value = 2 z + (0, -3).
    # cos(K) = I, so softmax over i of each column j gives a = e/(e+1) on the diagonal and
    # b = 1/(e+1) off it. V0 = (2, -3), V1 = (0, -1).
    # out0 = relu(a V0 + b V1 + V0) = relu(2a + 2, -3a - b - 3) = (2a + 2, 0)
    # out1 = relu(b V0 + a V1 + V1) = relu(2b, -3b - a - 1)   = (2b, 0)
    layer = CorrelationLayer(width=2, key_width=2, kernel=1)
    with torch.no_grad():
        layer.key.weight.copy_(torch.eye(2)[:, :, None])
        layer.key.bias.zero_()
        layer.value.weight.copy_(2 * torch.eye(2)[:, :, None])
        layer.value.bias.copy_(torch.tensor([0.0, -3.0]))
    z = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (B=1, D=2, T=2): columns are snippets
    a, b = math.e / (math.e + 1), 1 / (math.e + 1)
    expected = torch.tensor([[[2 * a + 2, 2 * b], [0.0, 0.0]]])
    torch.testing.assert_close(layer(z), expected)


def loop_exemplar_bank(model, videos):
    """docs/METHOD.md#3-scl steps 2-5, one exemplar video at a time."""
    c, m, n, d = videos.shape
    fg = torch.zeros(c, d, m)
    bg = torch.zeros(c, d, m)
    for cls in range(c):
        for j in range(m):
            xe, ae, _, _ = model.embed(videos[cls, j][None])
            ce = model.cls_base(xe)[0].T  # (N, C+1)
            supp = ae[0].T * (ce - ce.min(dim=1, keepdim=True).values) + ce.min(dim=1, keepdim=True).values
            top_fg = supp[:, cls].topk(max(1, n // 10)).indices
            top_bg = ce[:, -1].topk(max(1, n // 10)).indices
            fg[cls, :, j] = xe[0][:, top_fg].mean(dim=1)
            bg[cls, :, j] = xe[0][:, top_bg].mean(dim=1)
    return torch.cat([fg, bg.mean(dim=0, keepdim=True)], dim=0)


def loop_scl(scl, x, bank):
    """docs/METHOD.md#3-scl 'Correlation', a loop over classes and videos."""
    outs = []
    for b in range(x.shape[0]):
        xb = x[b:b + 1]
        q, u = scl.query_key(xb)[0], scl.query_value(xb)[0]  # (K, T), (D, T)
        contexts, weights = [], []
        for a in range(bank.shape[0]):
            ek, ev = scl.exemplar_key(bank[a][None])[0], scl.exemplar_value(bank[a][None])[0]  # (K, M), (D, M)
            cos = F.cosine_similarity(q.T[:, None, :], ek.T[None, :, :], dim=-1)  # (T, M)
            p = torch.softmax(cos, dim=1)
            r_a = ev @ p.T  # (D, T)
            contexts.append(r_a)
            weights.append(scl.class_weight(r_a[None])[0, 0])  # (T,)
        alpha = torch.softmax(torch.stack(weights), dim=0)  # (C+1, T)
        r = sum(alpha[a] * contexts[a] for a in range(len(contexts)))
        outs.append(torch.relu(torch.cat([u, r], dim=0)))
    return torch.stack(outs)


def test_exemplar_bank_matches_loop():
    model = make(num_class=3).eval()
    videos = torch.randn(3, 4, 25, D)
    with torch.no_grad():
        torch.testing.assert_close(model.exemplar_bank(videos), loop_exemplar_bank(model, videos),
                                   atol=1e-5, rtol=1e-5)


def test_scl_batched_matches_loop():
    model = make(num_class=5).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.scl.class_weight.bias)  # exercise the bias path too
        x, bank = torch.randn(3, D, 13), torch.randn(6, D, 4)
        torch.testing.assert_close(model.scl(x, bank), loop_scl(model.scl, x, bank), atol=1e-5, rtol=1e-5)


def test_bank_or_videos_exactly_one():
    model = make()
    with pytest.raises(ValueError, match="exactly one"):
        model(torch.randn(1, 5, D))


def test_activitynet_smoothing_and_layer_one():
    model = make(variant="activitynet").eval()
    assert model.smooth_kernel == 13 and model.tcl_depth == 1
    s = torch.zeros(1, 1, 30)
    s[0, 0, 15] = 13.0
    smoothed = model.smooth(s)[0, 0]
    assert torch.allclose(smoothed[9:22], torch.ones(13)) and smoothed[:9].abs().sum() == 0


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = make(num_class=4).train()
    criterion = STCLCriterion(num_pairs=2)
    labels = torch.tensor([[1.0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]])
    out = model(torch.randn(5, 40, D), exemplar_videos=torch.randn(4, 3, 40, D))
    raw = criterion(out, labels)
    assert set(raw) == set(STCLCriterion.TERMS)
    losses = weigh(raw, criterion.weight_dict)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["total"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} is unused"
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


def test_suppression_keeps_the_minimum():
    cas = torch.tensor([[[1.0, -2.0, 3.0]]])
    attn = torch.tensor([[[0.5]]])
    # min = -2: 0.5 * (cas + 2) - 2
    torch.testing.assert_close(suppress_with_actionness(cas, attn), torch.tensor([[[-0.5, -2.0, 0.5]]]))


def test_exemplar_bank_gradients_match_the_plain_computation():
    # The bank picks its snippets without autograd and recomputes only those with it;
    # the gradient must be the one of the plain per-video computation.
    model = make(num_class=3).eval()
    videos = torch.randn(3, 2, 20, D)
    weights = torch.randn(4, D, 2)
    grads = []
    for bank_of in (model.exemplar_bank, lambda v: loop_exemplar_bank(model, v)):
        model.zero_grad()
        (bank_of(videos) * weights).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert set(grads[0]) == set(grads[1])
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4, msg=name)


def test_snippet_windows_feed_a_conv_its_own_output_at_those_snippets():
    conv = torch.nn.Conv1d(4, 5, 3, padding=1)
    x, idx = torch.randn(2, 4, 9), torch.tensor([[0, 8, 3], [5, 5, 1]])  # the edges and a repeat
    v, s = idx.shape
    with torch.no_grad():
        at_windows = F.conv1d(snippet_windows(x, idx, 3), conv.weight, conv.bias).reshape(v, s, 5).transpose(1, 2)
        torch.testing.assert_close(at_windows, gather_snippets(conv(x), idx))


@pytest.mark.parametrize("training", [True, False])
def test_exemplar_bank_recomputes_what_the_full_pass_computes(training):
    # The project's bank recomputes only the picked snippets with autograd; the released
    # pass (tests/oracles/released_loops.py) records all of them. Same seed -> same dropout
    # masks in training mode -> the same bank and the same gradient.
    from tests.oracles.released_loops import LoopSTCLNet

    model = make(num_class=3).train(training)
    released = LoopSTCLNet(feature_size=D, num_class=3).train(training)
    released.load_state_dict(model.state_dict())
    videos, weights = torch.randn(3, 4, 30, D), torch.randn(4, D, 4)
    banks, grads = [], []
    for net in (model, released):
        torch.manual_seed(5)
        bank = net.exemplar_bank(videos)
        (bank * weights).sum().backward()
        banks.append(bank.detach())
        grads.append({n: p.grad for n, p in net.named_parameters() if p.grad is not None})
    torch.testing.assert_close(banks[0], banks[1], atol=1e-5, rtol=1e-5)
    assert set(grads[0]) == set(grads[1]) and "fusion.0.weight" in grads[0]
    assert "attention_rgb.local_gate.0.weight" in grads[0] and "attention_flow.global_gate.0.weight" in grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4, msg=name)


def test_exemplar_dropout_is_drawn_in_training_only():
    model, videos = make(num_class=2), torch.randn(2, 3, 20, D)
    with torch.no_grad():
        banks = [model.train().exemplar_bank(videos) for _ in range(2)]
        assert not torch.allclose(banks[0], banks[1])
        torch.testing.assert_close(model.eval().exemplar_bank(videos), model.eval().exemplar_bank(videos))
