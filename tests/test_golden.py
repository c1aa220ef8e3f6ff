"""The model computes the released STCL_THU's function (docs/METHOD.md#11-golden-outputs)."""
import math
import zlib

import numpy as np
import pytest
import torch

from model import STCLCriterion, STCLNet
from utils.checkpoint import load_weights, model_state_of

#: The released STCL_THU state dict, key -> shape, in the order of the released table.
RELEASED_SHAPES = {}
for stream in ("vAttn", "fAttn"):
    RELEASED_SHAPES.update({
        f"{stream}.bit_wise_attn.0.weight": (1024, 1024, 3), f"{stream}.bit_wise_attn.0.bias": (1024,),
        f"{stream}.channel_conv.0.weight": (1024, 1024, 3), f"{stream}.channel_conv.0.bias": (1024,),
        f"{stream}.attention.0.weight": (512, 1024, 3), f"{stream}.attention.0.bias": (512,),
        f"{stream}.attention.3.weight": (512, 512, 3), f"{stream}.attention.3.bias": (512,),
        f"{stream}.attention.5.weight": (1, 512, 1), f"{stream}.attention.5.bias": (1,),
    })
RELEASED_SHAPES.update({
    "fusion.0.weight": (2048, 2048, 1), "fusion.0.bias": (2048,),
    "intra_temp_conv1_k.weight": (512, 2048, 1), "intra_temp_conv1_k.bias": (512,),
    "intra_temp_conv1_v.weight": (2048, 2048, 1), "intra_temp_conv1_v.bias": (2048,),
    "intra_temp_conv2_k.weight": (512, 2048, 3), "intra_temp_conv2_k.bias": (512,),
    "intra_temp_conv2_v.weight": (2048, 2048, 3), "intra_temp_conv2_v.bias": (2048,),
    "inter_vid_conv1_k.weight": (512, 2048, 1), "inter_vid_conv1_k.bias": (512,),
    "inter_vid_conv1_v.weight": (2048, 2048, 1), "inter_vid_conv1_v.bias": (2048,),
    "inter_exem_conv1_k.weight": (512, 2048, 1), "inter_exem_conv1_k.bias": (512,),
    "inter_exem_conv1_v.weight": (2048, 2048, 1), "inter_exem_conv1_v.bias": (2048,),
    "clswise_atn_conv.weight": (1, 2048, 1), "clswise_atn_conv.bias": (1,),
    "intra_temp_classifier.1.weight": (2048, 2048, 3), "intra_temp_classifier.1.bias": (2048,),
    "intra_temp_classifier.4.weight": (21, 2048, 1), "intra_temp_classifier.4.bias": (21,),
    "inter_temp_classifier.1.weight": (2048, 4096, 3), "inter_temp_classifier.1.bias": (2048,),
    "inter_temp_classifier.4.weight": (21, 2048, 1), "inter_temp_classifier.4.bias": (21,),
    "classifier.1.weight": (2048, 2048, 3), "classifier.1.bias": (2048,),
    "classifier.4.weight": (21, 2048, 1), "classifier.4.bias": (21,),
})


def golden_state_dict():
    """Weights re-created with the recipe of docs/METHOD.md#11-golden-outputs."""
    state = {}
    for key, shape in RELEASED_SHAPES.items():
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        u = torch.rand(shape, generator=g) * 2 - 1
        state[key] = u * math.sqrt(6 / (shape[1] * shape[2])) if len(shape) == 3 else u * 0.05
    return state


def test_released_parameter_count():
    assert sum(math.prod(s) for s in RELEASED_SHAPES.values()) == 103_441_474
    assert sum(p.numel() for p in STCLNet().parameters()) == 103_441_474


@pytest.fixture(scope="module")
def golden_run(golden_path):
    golden = dict(np.load(golden_path))
    model = STCLNet(feature_size=2048, num_class=20)
    load_weights(model, model_state_of(golden_state_dict(), "golden"), "golden")
    model.eval()
    m = int(golden["M"])
    exemplars = torch.from_numpy(golden["exemplar_videos"])[:, None].expand(-1, m, -1, -1)
    with torch.no_grad():
        out = model(torch.from_numpy(golden["input"]), exemplar_videos=exemplars)
    return golden, out


@pytest.mark.parametrize("name", ["feat", "attn", "attn_rgb", "attn_flow", "cas_base", "cas_intra",
                                  "cas_inter", "cas"])
def test_outputs_match_released_code(golden_run, name):
    golden, out = golden_run
    np.testing.assert_allclose(out[name].numpy(), golden[name], atol=1e-4, rtol=0)


def test_criterion_matches_released_code(golden_run):
    golden, out = golden_run
    criterion = STCLCriterion(use_snippet=False)
    total = criterion(out, torch.from_numpy(golden["labels"]))["total"].item()
    assert total == pytest.approx(float(golden["criterion_total"]), rel=1e-4)
