"""The authors' released checkpoint: it loads, exports back unchanged, and computes the same
function; every malformed checkpoint gives one clear CheckpointError (issue 8).

Released state dicts are built from the released key table (tests/helpers.py) with random
values: at D = 16 / C = 3 by scaling the widths (stream D/2,
keys and attention hidden D/4, heads D, SCL head input 2D, C+1 output rows), and once at
the full size (D = 2048, C = 20, 103,441,474 parameters).
"""
import argparse
import math
import zipfile

import numpy as np
import pytest
import torch

import test as test_py
from dataset.make_demo import make_demo_dataset
from model import STCLNet
from tests.helpers import RELEASED_SHAPES, load_for_test, released_shapes, released_state
from utils.checkpoint import (load_weights, model_state_of, project_to_released, read_checkpoint, released_shape_of,
                              save_atomic)
from utils.errors import CheckpointError

D, C = 16, 3
OUTPUT_NAMES = ("feat", "cas", "cas_base", "cas_intra", "cas_inter", "attn", "attn_rgb", "attn_flow")


def fixed_inputs(d: int, c: int, m: int = 3, n: int = 20, t: int = 12):
    """Snippet features (2, T, D) and exemplar videos (C, M, N, D) from a fixed seed."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, t, d, generator=g), torch.randn(c, m, n, d, generator=g)


def outputs_of(model: STCLNet, d: int, c: int) -> dict:
    features, exemplars = fixed_inputs(d, c)
    model.eval()
    with torch.no_grad():
        return model(features, exemplar_videos=exemplars)


def load_released(state, d: int = D, c: int = C) -> STCLNet:
    model = STCLNet(feature_size=d, num_class=c)
    load_weights(model, model_state_of(state, "released.pkl"), "released.pkl")
    return model


def assert_same_released_dict(actual, expected):
    """Same keys in the same order, same shapes, bit-identical values."""
    assert list(actual) == list(expected)
    for key in expected:
        assert actual[key].shape == expected[key].shape, key
        assert torch.equal(actual[key], expected[key]), key


def assert_same_outputs(a: dict, b: dict):
    for name in OUTPUT_NAMES:
        assert torch.equal(a[name], b[name]), name


def error_of(argv) -> str:
    with pytest.raises(CheckpointError) as info:
        load_for_test(argv)
    return str(info.value)


# -- the released key table ----------------------------------------------------------------

def test_scaled_table_is_the_released_table_at_full_size():
    assert released_shapes(2048, 20) == RELEASED_SHAPES
    activitynet = released_shapes(2048, 100)
    assert activitynet["classifier.4.weight"] == (101, 2048, 1)
    assert sum(math.prod(s) for s in activitynet.values()) == 103_933_234  # docs/METHOD.md, 'Widths'


def test_small_table_has_the_model_shapes():
    expected = {k: tuple(v.shape) for k, v in project_to_released(STCLNet(D, C).state_dict()).items()}
    assert expected == released_shapes(D, C)


# -- load, export, reload (small) -----------------------------------------------------------

def test_every_released_tensor_lands_in_the_model_and_exports_back_in_the_released_order():
    state = released_state()
    model = load_released(state)
    assert torch.equal(model.attention_rgb.local_gate[0].weight, state["vAttn.bit_wise_attn.0.weight"])
    assert torch.equal(model.attention_flow.global_gate[0].bias, state["fAttn.channel_conv.0.bias"])
    assert torch.equal(model.tcl.layers[1].key.weight, state["intra_temp_conv2_k.weight"])
    assert torch.equal(model.scl.exemplar_value.weight, state["inter_exem_conv1_v.weight"])
    assert torch.equal(model.cls_base[4].bias, state["classifier.4.bias"])
    assert_same_released_dict(project_to_released(model.state_dict()), state)


def test_export_written_and_reloaded_computes_the_same_outputs(tmp_path):
    state = released_state()
    before = load_released(state)
    path = save_atomic(project_to_released(before.state_dict()), tmp_path / "exported.pkl")
    reread = read_checkpoint(path)
    assert_same_released_dict(reread, state)
    after = load_released(reread)
    assert_same_outputs(outputs_of(before, D, C), outputs_of(after, D, C))


def test_load_for_test_infers_feature_size_and_classes_from_the_weights(tmp_path):
    path = tmp_path / "released.pkl"
    torch.save(released_state(), path)
    args, model, info = load_for_test(["--pretrained-ckpt", str(path)])
    assert (args.feature_size, args.num_class, args.use_model) == (D, C, "STCL_THU")
    assert (model.feature_size, model.num_class) == (D, C)
    assert info["iteration"] is None
    assert_same_outputs(outputs_of(model, D, C), outputs_of(load_released(released_state()), D, C))


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), num_train=6, num_test=3, num_class=C, feature_size=D)


@pytest.mark.filterwarnings("ignore:class .* has . training videos, fewer than the 10 exemplars")
def test_test_py_evaluates_the_released_file_and_exports_it_unchanged(tmp_path, demo_dataset, capsys):
    state = released_state()
    released, exported = tmp_path / "released.pkl", tmp_path / "exported.pkl"
    torch.save(state, released)
    rc = test_py.main(["--pretrained-ckpt", str(released), "--path-dataset", str(demo_dataset),
                       "--export-official", str(exported), "--output", str(tmp_path / "eval")])
    assert rc == 0
    assert "mAP" in capsys.readouterr().out
    assert (tmp_path / "eval" / "metrics.json").is_file()
    reread = read_checkpoint(exported)
    assert_same_released_dict(reread, state)
    assert {k: tuple(v.shape) for k, v in reread.items()} == released_shapes(D, C)
    _, model, _ = load_for_test(["--pretrained-ckpt", str(exported)])
    assert_same_outputs(outputs_of(load_released(state), D, C), outputs_of(model, D, C))


# -- the full-size released checkpoint -------------------------------------------------------

def test_full_size_released_checkpoint_loads_exports_and_reproduces(tmp_path):
    state = released_state(2048, 20)
    before = load_released(state, 2048, 20)
    exported = save_atomic(project_to_released(before.state_dict()), tmp_path / "best_re_rank_THU_STCL_best.pkl")
    reread = read_checkpoint(exported)
    assert_same_released_dict(reread, state)
    assert {k: tuple(v.shape) for k, v in reread.items()} == RELEASED_SHAPES
    del state, reread
    args, after, _ = load_for_test(["--pretrained-ckpt", str(exported)])
    assert (args.feature_size, args.num_class) == (2048, 20)
    features, exemplars = torch.randn(1, 6, 2048), torch.randn(20, 1, 10, 2048)
    with torch.no_grad():
        a = before.eval()(features, exemplar_videos=exemplars)
        b = after.eval()(features, exemplar_videos=exemplars)
    assert_same_outputs(a, b)


# -- ActivityNet-style released checkpoint (101 output rows) ---------------------------------

def test_activitynet_checkpoint_is_recognised_as_100_classes(tmp_path):
    path = tmp_path / "activitynet.pkl"
    torch.save(released_state(D, 100), path)
    args, model, _ = load_for_test(["--pretrained-ckpt", str(path), "--use-model", "STCL_ACT"])
    assert (args.feature_size, args.num_class, args.use_model) == (D, 100, "STCL_ACT")
    assert model.cls_inter[4].weight.shape == (101, D, 1)


def test_activitynet_checkpoint_with_num_class_20_fails_with_one_message(tmp_path, capsys):
    path = tmp_path / "activitynet.pkl"
    torch.save(released_state(D, 100), path)
    message = error_of(["--pretrained-ckpt", str(path), "--num-class", "20"])
    assert message.startswith(f"checkpoint {path} does not fit the model (--feature-size {D}, --num-class 20)")
    assert "wrong shape (6)" in message
    assert (f"cls_base.4.weight [released: classifier.4.weight]: checkpoint (101, {D}, 1) vs model (21, {D}, 1)"
            in message)
    assert "cls_intra.4.bias [released: intra_temp_classifier.4.bias]: checkpoint (101,) vs model (21,)" in message
    assert message.endswith(f"the checkpoint was trained with --feature-size {D} --num-class 100")
    assert "missing" not in message and "unexpected" not in message
    rc = test_py.main(["--pretrained-ckpt", str(path), "--num-class", "20"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: checkpoint") and "Traceback" not in err


# -- malformed checkpoints -------------------------------------------------------------------

def test_missing_keys_are_listed_under_both_names(tmp_path):
    state = released_state()
    del state["clswise_atn_conv.bias"], state["vAttn.attention.5.weight"]
    torch.save(state, tmp_path / "x.pkl")
    message = error_of(["--pretrained-ckpt", str(tmp_path / "x.pkl")])
    assert ("missing (2): attention_rgb.actionness.5.weight [released: vAttn.attention.5.weight]; "
            "scl.class_weight.bias [released: clswise_atn_conv.bias]") in message
    assert "unexpected" not in message and "wrong shape" not in message


def test_unexpected_keys_are_listed(tmp_path):
    state = released_state()
    state["vAttn.extra.0.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "x.pkl")
    message = error_of(["--pretrained-ckpt", str(tmp_path / "x.pkl")])
    assert "unexpected (1): vAttn.extra.0.weight" in message
    assert "missing" not in message


def test_misshaped_tensor_is_listed_with_both_shapes(tmp_path):
    state = released_state()
    state["fusion.0.weight"] = torch.zeros(D, D, 3)
    torch.save(state, tmp_path / "x.pkl")
    message = error_of(["--pretrained-ckpt", str(tmp_path / "x.pkl")])
    assert f"wrong shape (1): fusion.0.weight: checkpoint ({D}, {D}, 3) vs model ({D}, {D}, 1)" in message


def test_many_problems_are_summarised(tmp_path):
    torch.save(released_state(), tmp_path / "x.pkl")
    message = error_of(["--pretrained-ckpt", str(tmp_path / "x.pkl"), "--feature-size", "32"])
    assert "... and" in message and "more" in message
    assert message.endswith(f"the checkpoint was trained with --feature-size {D} --num-class {C}")


def _valid_bytes(tmp_path) -> bytes:
    torch.save(released_state(), tmp_path / "valid.pkl")
    return (tmp_path / "valid.pkl").read_bytes()


@pytest.mark.parametrize("content, expected", [
    (lambda tmp: np.random.default_rng(0).bytes(4096), "is truncated or corrupted and cannot be read"),
    (lambda tmp: _valid_bytes(tmp)[:3000], "is truncated or corrupted and cannot be read"),
    (lambda tmp: b"", "is truncated or corrupted and cannot be read"),
], ids=["random-bytes", "truncated", "empty"])
def test_unreadable_file(tmp_path, content, expected):
    path = tmp_path / "bad.pkl"
    path.write_bytes(content(tmp_path))
    message = error_of(["--pretrained-ckpt", str(path)])
    assert message.startswith(f"checkpoint {path} {expected}")


@pytest.mark.parametrize("obj, expected", [
    ([1, 2, 3], "is neither a project checkpoint nor a released STCL-Net state dict"),
    ({}, "is neither a project checkpoint nor a released STCL-Net state dict"),
    ({"epoch": 3, "note": "x"}, "is neither a project checkpoint nor a released STCL-Net state dict"),
    ({"vAttn.bit_wise_attn.0.weight": [0.0, 1.0]}, "these weights are not tensors: attention_rgb.local_gate.0.weight"),
], ids=["list", "empty-dict", "other-dict", "released-names-without-tensors"])
def test_pickle_of_something_else(tmp_path, obj, expected):
    path = tmp_path / "other.pkl"
    torch.save(obj, path)
    assert expected in error_of(["--pretrained-ckpt", str(path)])


def test_pickled_objects_are_refused_without_running_them(tmp_path):
    path = tmp_path / "objects.pkl"
    torch.save({"model": released_state(), "args": argparse.Namespace(lr=0.1)}, path)
    message = error_of(["--pretrained-ckpt", str(path)])
    assert message.startswith(f"checkpoint {path} holds a Python object (argparse.Namespace) other than tensors")
    assert "weights_only=False" in message


def test_released_dict_without_classifier_cannot_say_its_shape(tmp_path):
    state = released_state()
    del state["classifier.4.weight"]
    torch.save(state, tmp_path / "x.pkl")
    assert "no classifier weight (classifier.4.weight" in error_of(["--pretrained-ckpt", str(tmp_path / "x.pkl")])
    state["classifier.4.weight"] = torch.zeros(C + 1, D)
    with pytest.raises(CheckpointError, match=r"classifier weight has shape \(4, 16\)"):
        released_shape_of(model_state_of(state, "x.pkl"))


def test_nonexistent_path(tmp_path):
    path = tmp_path / "nope.pkl"
    assert error_of(["--pretrained-ckpt", str(path)]) == f"checkpoint {path} does not exist"


# -- files saved on a GPU --------------------------------------------------------------------

def save_as_if_on_gpu(state, path, zip_format: bool):
    """``torch.save`` a CPU state dict, then mark every storage as saved on ``cuda:0``, as
    the authors' file is (the location is a pickled string beside each storage)."""
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"  # BINUNICODE opcode, length, text
    plain = path.with_suffix(".cpu")
    torch.save(state, plain, _use_new_zipfile_serialization=zip_format)
    if not zip_format:
        path.write_bytes(plain.read_bytes().replace(cpu, cuda))
        return
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w") as dst:
        for entry in src.infolist():
            data = src.read(entry)
            dst.writestr(entry.filename, data.replace(cpu, cuda) if entry.filename.endswith("data.pkl") else data)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_gpu_saved_checkpoint_loads_on_cpu(tmp_path, zip_format):
    state = released_state()
    path = tmp_path / "gpu.pkl"
    save_as_if_on_gpu(state, path, zip_format)
    locations = set()
    torch.load(path, map_location=lambda storage, location: locations.add(location) or storage, weights_only=False)
    assert locations == {"cuda:0"}
    reread = read_checkpoint(path)
    assert all(v.device.type == "cpu" for v in reread.values())
    assert_same_released_dict(reread, state)
    _, model, _ = load_for_test(["--pretrained-ckpt", str(path)])
    assert_same_outputs(outputs_of(model, D, C), outputs_of(load_released(state), D, C))
