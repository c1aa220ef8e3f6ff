"""The model computes the released STCL_THU's function (docs/METHOD.md#11-golden-outputs)."""
import math
import zlib

import numpy as np
import pytest
import torch

from model import STCLCriterion, STCLNet
from tests.helpers import RELEASED_SHAPES
from utils.checkpoint import load_weights, model_state_of

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
