"""The model computes the released STCL_THU's function (docs/METHOD.md#11-golden-outputs), on
both golden files: the first (every class's M exemplars are copies of one video) and the
second (M different videos per class, so the exemplar-attention weights matter)."""
import math
import zlib

import numpy as np
import pytest
import torch

from model import STCLCriterion, STCLNet, weigh
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
def golden_state():
    return golden_state_dict()


@pytest.fixture(scope="module")
def golden_model(golden_state):
    """The project's model with the golden weights, in eval mode (shared: building it is slow)."""
    model = STCLNet(feature_size=2048, num_class=20)
    load_weights(model, model_state_of(golden_state, "golden"), "golden")
    return model.eval()


@pytest.fixture(scope="module")
def golden_run(golden_path, golden_model):
    golden = dict(np.load(golden_path))
    m = int(golden["M"])
    exemplars = torch.from_numpy(golden["exemplar_videos"])[:, None].expand(-1, m, -1, -1)
    with torch.no_grad():
        out = golden_model(torch.from_numpy(golden["input"]), exemplar_videos=exemplars)
    return golden, out


@pytest.mark.parametrize("name", ["feat", "attn", "attn_rgb", "attn_flow", "cas_base", "cas_intra",
                                  "cas_inter", "cas"])
def test_outputs_match_released_code(golden_run, name):
    golden, out = golden_run
    np.testing.assert_allclose(out[name].numpy(), golden[name], atol=1e-4, rtol=0)


def test_criterion_matches_released_code(golden_run):
    golden, out = golden_run
    criterion = STCLCriterion(weight_dict={"snippet": 0.0})  # the released criterion leaves L_snippet out
    total = weigh(criterion(out, torch.from_numpy(golden["labels"])), criterion.weight_dict)["total"].item()
    assert total == pytest.approx(float(golden["criterion_total"]), rel=1e-4)


@pytest.fixture(scope="module")
def golden_exemplars(golden_exemplars_path):
    return dict(np.load(golden_exemplars_path))


def run_with_exemplar_videos(model, golden):
    """The released forward with the file's (C, M, N, D) exemplar videos, passed as they are."""
    assert golden["exemplar_videos"].shape == (20, int(golden["M"]), int(golden["max_seqlen"]), 2048)
    with torch.no_grad():
        return model(torch.from_numpy(golden["input"]), exemplar_videos=torch.from_numpy(golden["exemplar_videos"]))


@pytest.fixture(scope="module")
def golden_exemplars_run(golden_exemplars, golden_model):
    return run_with_exemplar_videos(golden_model, golden_exemplars)


@pytest.mark.parametrize("name", ["feat", "attn", "attn_rgb", "attn_flow", "cas_base", "cas_intra",
                                  "cas_inter", "cas"])
def test_outputs_match_released_code_with_different_exemplar_videos(golden_exemplars, golden_exemplars_run, name):
    np.testing.assert_allclose(golden_exemplars_run[name].numpy(), golden_exemplars[name], atol=1e-4, rtol=0)


def test_criterion_matches_released_code_with_different_exemplar_videos(golden_exemplars, golden_exemplars_run):
    criterion = STCLCriterion(weight_dict={"snippet": 0.0})  # the released criterion leaves L_snippet out
    total = weigh(criterion(golden_exemplars_run, torch.from_numpy(golden_exemplars["labels"])), criterion.weight_dict)
    assert total["total"].item() == pytest.approx(float(golden_exemplars["criterion_total"]), rel=1e-4)


def test_the_second_golden_file_sees_the_exemplar_attention_key_weights(golden_exemplars, golden_exemplars_run,
                                                                        golden_state, golden_model):
    # Swapped key convs of the batch side and the exemplar side: the first golden file cannot
    # tell (uniform attention over identical exemplars); this one moves cas_inter by ~3e-3.
    swapped = dict(golden_state)
    for name in ("weight", "bias"):
        swapped[f"inter_vid_conv1_k.{name}"], swapped[f"inter_exem_conv1_k.{name}"] = (
            golden_state[f"inter_exem_conv1_k.{name}"], golden_state[f"inter_vid_conv1_k.{name}"])
    try:
        load_weights(golden_model, model_state_of(swapped, "swapped"), "swapped")
        out = run_with_exemplar_videos(golden_model, golden_exemplars)
    finally:
        load_weights(golden_model, model_state_of(golden_state, "golden"), "golden")
    assert np.abs(out["cas_inter"].numpy() - golden_exemplars["cas_inter"]).max() > 1e-3
