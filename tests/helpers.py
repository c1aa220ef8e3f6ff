"""Helpers shared by test modules (test modules import this, never each other).

The released STCL_THU state-dict table, and released-format state dicts with random
weights at any width.
"""
import collections
import math

import torch

D, C = 16, 3  #: the small widths the released-format tests use

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


def released_shapes(d: int, c: int) -> dict:
    """The released key table with its widths scaled from D = 2048, C = 20 to ``d``, ``c``."""
    width = {4096: 2 * d, 2048: d, 1024: d // 2, 512: d // 4, 21: c + 1}
    return {key: tuple(width.get(n, n) for n in shape) for key, shape in RELEASED_SHAPES.items()}


def released_state(d: int = D, c: int = C, seed: int = 0) -> "collections.OrderedDict[str, torch.Tensor]":
    """A released-format state dict with random weights (kaiming-uniform scale) and non-zero biases."""
    g = torch.Generator().manual_seed(seed)
    state = collections.OrderedDict()
    for key, shape in released_shapes(d, c).items():
        bound = math.sqrt(6 / (shape[1] * shape[2])) if len(shape) == 3 else 0.1
        state[key] = torch.empty(shape).uniform_(-bound, bound, generator=g)
    return state




def load_for_test(argv):
    """test.py's command line ``argv`` -> (options, model, info) of its checkpoint, as test.py loads it."""
    from checkpoints import load_checkpoint
    from options import build_test_parser, parse_checkpoint_command, restorable_options

    args, given = parse_checkpoint_command(build_test_parser, argv)
    loaded = load_checkpoint(args, given, restorable_options(build_test_parser()))
    return loaded.args, loaded.model, loaded.info


def exemplar_rows(dataset, m: int, rng):
    """Rows of ``dataset.store.snippets`` of the SCL exemplar draw (``SampleDataset.exemplar_draw``):
    (C, M, N) int64."""
    videos, samples = dataset.exemplar_draw(m, rng)
    return dataset.store.offsets[videos][..., None] + samples


def exemplar_videos(dataset, m: int, rng):
    """The exemplar videos of a draw, (C, M, N, D) float32 numpy, by the one source (``ExemplarSource``) on the CPU."""
    from exemplar_source import ExemplarSource

    return ExemplarSource(dataset, m, torch.device("cpu")).draw(rng).numpy()


#: Optional dependencies some tests need, with their install hint (requirements-sweep.txt).
OPTIONAL_MODULES = {"yaml": "pip install -r requirements-sweep.txt   (PyYAML)",
                    "ray": "pip install -r requirements-sweep.txt   (Ray Tune)"}


def require_module(name: str):
    """Import the optional module ``name`` for a test: skip the test with the install hint when it is
    missing, except on CI (environment CI=true), where a missing module fails the test instead, so
    that CI never passes by skipping."""
    import importlib
    import os

    import pytest

    try:
        return importlib.import_module(name)
    except ImportError:
        hint = OPTIONAL_MODULES.get(name, f"pip install {name}")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the optional module {name!r} is missing, and CI=true requires every test to run: {hint}",
                        pytrace=False)
        pytest.skip(f"needs the optional module {name!r}, which is not installed: {hint}")
