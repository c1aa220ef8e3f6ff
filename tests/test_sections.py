"""Section by section of docs/METHOD.md, the model loaded from a released state
dict computes what the formulas of docs/METHOD.md compute on the same raw weights.

The reference below is written from docs/METHOD.md alone: torch.nn.functional on the tensors of
the released state dict, addressed by their released names (bit_wise_attn = h,
channel_conv = g, intra_temp_conv* = TCL, inter_* = SCL, clswise_atn_conv = w), with the
SCL classes looped over as docs/METHOD.md states them. Nothing here calls the model's
submodules; eval mode, so every dropout is the identity. D = 16, C = 3.
"""
import pytest
import torch
import torch.nn.functional as F

from model import STCLNet
from tests.helpers import released_state
from utils.checkpoint import load_weights, model_state_of

D, C, M, N, B, T = 16, 3, 3, 20, 2, 12
ATOL = 1e-5


# -- the formulas of docs/METHOD.md on the raw released weights ----------------------------

def lrelu(z):
    return F.leaky_relu(z, 0.2)


def conv(w, name, z):
    """Released conv ``name`` over time on (B, in, T); kernel k, padding k // 2."""
    weight, bias = w[f"{name}.weight"], w[f"{name}.bias"]
    return F.conv1d(z, weight, bias, padding=weight.shape[-1] // 2)


def attend(w, stream, main, other):
    """docs/METHOD.md#1-cross-modal-attention: main, other (B, D/2, T) -> a (B, 1, T), filtered (B, D/2, T)."""
    g = lrelu(conv(w, f"{stream}.channel_conv.0", main.mean(dim=2, keepdim=True)))
    h = lrelu(conv(w, f"{stream}.bit_wise_attn.0", other))
    filtered = torch.sigmoid(h * g) * main
    hidden = lrelu(conv(w, f"{stream}.attention.3", lrelu(conv(w, f"{stream}.attention.0", filtered))))
    return torch.sigmoid(conv(w, f"{stream}.attention.5", hidden)), filtered


def embed(w, features):
    """docs/METHOD.md#1-cross-modal-attention: features (B, T, D) -> x (B, D, T), attn, a_rgb, a_flow (B, 1, T)."""
    rgb, flow = features[..., : D // 2].transpose(1, 2), features[..., D // 2:].transpose(1, 2)
    a_rgb, filtered_rgb = attend(w, "vAttn", rgb, flow)
    a_flow, filtered_flow = attend(w, "fAttn", flow, rgb)
    x = lrelu(conv(w, "fusion.0", torch.cat([filtered_rgb, filtered_flow], dim=1)))
    return x, (a_rgb + a_flow) / 2, a_rgb, a_flow


def head(w, name, z):
    """A classifier head: conv_k3, LReLU, conv_k1 -> (B, C+1, T)."""
    return conv(w, f"{name}.4", lrelu(conv(w, f"{name}.1", z)))


def tcl_layer(w, layer, z):
    """docs/METHOD.md#2-tcl, layer 1 or 2: (B, D, T) -> (B, D, T)."""
    k = conv(w, f"intra_temp_conv{layer}_k", z)
    v = conv(w, f"intra_temp_conv{layer}_v", z)
    s = F.cosine_similarity(k[:, :, :, None], k[:, :, None, :], dim=1)  # S[b, i, j]
    weights = torch.softmax(s, dim=1)  # each column j sums to 1 over i
    return torch.relu(torch.einsum("bdi,bij->bdj", v, weights) + v)


def exemplar_bank(w, videos):
    """docs/METHOD.md#3-scl, steps 2-5: videos (C, M, N, D) -> E (C+1, D, M)."""
    xe, ae, _, _ = embed(w, videos.reshape(C * M, N, D))
    ce = head(w, "classifier", xe).transpose(1, 2)  # (C*M, N, C+1)
    low = ce.min(dim=2, keepdim=True).values
    supp = ae.transpose(1, 2) * (ce - low) + low
    k = N // 10
    bank = torch.zeros(C + 1, D, M)
    for c in range(C):
        for m in range(M):
            video = c * M + m
            top_foreground = supp[video, :, c].argsort(descending=True)[:k]
            top_background = ce[video, :, C].argsort(descending=True)[:k]
            bank[c, :, m] = xe[video][:, top_foreground].mean(dim=1)
            bank[C, :, m] += xe[video][:, top_background].mean(dim=1) / C
    return bank


def scl(w, x, bank):
    """docs/METHOD.md#3-scl, correlation: x (B, D, T), E (C+1, D, M) -> ReLU(cat(u, r)) (B, 2D, T)."""
    q, u = conv(w, "inter_vid_conv1_k", x), conv(w, "inter_vid_conv1_v", x)
    contexts, class_weights = [], []
    for a in range(C + 1):
        ek = conv(w, "inter_exem_conv1_k", bank[a][None])[0]  # (D/4, M)
        ev = conv(w, "inter_exem_conv1_v", bank[a][None])[0]  # (D, M)
        p = torch.softmax(F.cosine_similarity(q[:, :, :, None], ek[None, :, None, :], dim=1), dim=2)  # (B, T, M)
        r_a = torch.einsum("btm,dm->bdt", p, ev)
        contexts.append(r_a)
        class_weights.append(conv(w, "clswise_atn_conv", r_a))  # (B, 1, T)
    alpha = torch.softmax(torch.cat(class_weights, dim=1), dim=1)  # (B, C+1, T)
    r = sum(alpha[:, a: a + 1] * contexts[a] for a in range(C + 1))
    return torch.relu(torch.cat([u, r], dim=1))


def smooth(s, kernel):
    """docs/METHOD.md#6-activitynet: AvgPool1d(K, stride 1, padding K // 2, count_include_pad=True)."""
    return F.avg_pool1d(s, kernel, stride=1, padding=kernel // 2, count_include_pad=True)


# -- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def weights():
    return released_state(D, C, seed=5)


def loaded_model(weights, **kwargs) -> STCLNet:
    model = STCLNet(feature_size=D, num_class=C, **kwargs)
    load_weights(model, model_state_of(weights, "released.pkl"), "released.pkl")
    return model.eval()


@pytest.fixture(scope="module")
def model(weights):
    return loaded_model(weights)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(2)
    return torch.randn(B, T, D, generator=g), torch.randn(C, M, N, D, generator=g)


def assert_close(actual, expected):
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)


# -- docs/METHOD.md#1-cross-modal-attention: cross-modal attention and fusion -------------------------

@torch.no_grad()
def test_section1_cross_modal_attention_of_each_stream(model, weights, inputs):
    features, _ = inputs
    rgb, flow = features[..., : D // 2].transpose(1, 2), features[..., D // 2:].transpose(1, 2)
    for module, stream, main, other in ((model.attention_rgb, "vAttn", rgb, flow),
                                        (model.attention_flow, "fAttn", flow, rgb)):
        a, filtered = module(main, other)
        a_ref, filtered_ref = attend(weights, stream, main, other)
        assert_close(a, a_ref)
        assert_close(filtered, filtered_ref)
        assert 0.05 < a_ref.min() and a_ref.max() < 0.95  # not saturated: the test can see a change


@torch.no_grad()
def test_section1_fused_feature_and_attention(model, weights, inputs):
    x, attn, attn_rgb, attn_flow = model.embed(inputs[0])
    for actual, expected in zip((x, attn, attn_rgb, attn_flow), embed(weights, inputs[0])):
        assert_close(actual, expected)


# -- docs/METHOD.md#2-tcl: TCL -------------------------------------------------------------------

@torch.no_grad()
def test_section2_tcl_layers(model, weights, inputs):
    x, _, _, _ = embed(weights, inputs[0])
    layer1 = tcl_layer(weights, 1, x)
    layer2 = tcl_layer(weights, 2, layer1)
    assert_close(model.tcl(x, depth=1), layer1)
    assert_close(model.tcl(x, depth=2), layer2)
    assert (layer2 > 0).float().mean() > 0.2  # the ReLU passes a good share


# -- docs/METHOD.md#3-scl: SCL -----------------------------------------------------------------

@torch.no_grad()
def test_section3_exemplar_bank(model, weights, inputs):
    _, videos = inputs
    expected = exemplar_bank(weights, videos)
    assert_close(model.exemplar_bank(videos), expected)
    assert not torch.allclose(expected[0], expected[1], atol=1e-3)  # classes pick different snippets


@torch.no_grad()
def test_section3_scl_output(model, weights, inputs):
    features, videos = inputs
    x, _, _, _ = embed(weights, features)
    bank = exemplar_bank(weights, videos)
    assert_close(model.scl(x, bank), scl(weights, x, bank))


# -- docs/METHOD.md#4-outputs: outputs ---------------------------------------------------------

@torch.no_grad()
def test_section4_every_cas_and_attention(model, weights, inputs):
    features, videos = inputs
    x, attn, attn_rgb, attn_flow = embed(weights, features)
    bank = exemplar_bank(weights, videos)
    expected = {"feat": x, "attn": attn, "attn_rgb": attn_rgb, "attn_flow": attn_flow,
                "cas_base": head(weights, "classifier", x),
                "cas_intra": head(weights, "intra_temp_classifier", tcl_layer(weights, 2, tcl_layer(weights, 1, x))),
                "cas_inter": head(weights, "inter_temp_classifier", scl(weights, x, bank))}
    expected["cas"] = 0.55 * expected["cas_base"] + 0.36 * expected["cas_intra"] + 0.09 * expected["cas_inter"]
    out = model(features, exemplar_videos=videos)
    for name, value in expected.items():
        assert_close(out[name], value.transpose(1, 2))
    assert out["cas"].shape == (B, T, C + 1)


# -- docs/METHOD.md#6-activitynet: the ActivityNet variant -----------------------------------

@torch.no_grad()
def test_section6_activitynet_reads_tcl_layer1_and_smooths_after_the_heads(weights, inputs):
    features, videos = inputs
    kernel = (10 // 5) // 2 * 2 + 1  # max_seqlen 10, t 5 -> K = 3
    model = loaded_model(weights, tcl_depth=1, smooth_kernel=kernel)
    x, attn, attn_rgb, attn_flow = embed(weights, features)
    bank = exemplar_bank(weights, videos)  # from the UNsmoothed scores
    expected = {"attn": attn, "attn_rgb": attn_rgb, "attn_flow": attn_flow,
                "cas_base": head(weights, "classifier", x),
                "cas_intra": head(weights, "intra_temp_classifier", tcl_layer(weights, 1, x)),
                "cas_inter": head(weights, "inter_temp_classifier", scl(weights, x, bank))}
    expected = {name: smooth(value, kernel) for name, value in expected.items()}
    expected["cas"] = 0.55 * expected["cas_base"] + 0.36 * expected["cas_intra"] + 0.09 * expected["cas_inter"]
    expected["feat"] = x
    out = model(features, exemplar_videos=videos)
    for name, value in expected.items():
        assert_close(out[name], value.transpose(1, 2))


# -- the reference can tell the released tensors apart ----------------------------------------

@pytest.mark.parametrize("first, second", [
    ("vAttn.bit_wise_attn.0", "vAttn.channel_conv.0"),  # h and g
    ("vAttn.attention.0", "fAttn.attention.0"),  # RGB and flow
    ("intra_temp_conv1_v", "inter_vid_conv1_v"),  # TCL value and SCL u
    ("inter_vid_conv1_k", "inter_exem_conv1_k"),  # SCL query key and exemplar key
    ("classifier.1", "intra_temp_classifier.1"),  # cls_base and cls_intra
])
@torch.no_grad()
def test_swapping_two_released_tensors_changes_the_outputs(weights, inputs, first, second):
    swapped = dict(weights)
    for suffix in (".weight", ".bias"):
        swapped[first + suffix], swapped[second + suffix] = weights[second + suffix], weights[first + suffix]
    features, videos = inputs
    a = loaded_model(weights)(features, exemplar_videos=videos)["cas"]
    b = loaded_model(swapped)(features, exemplar_videos=videos)["cas"]
    assert (a - b).abs().max() > 100 * ATOL
