"""Where the tensors live and at what precision: the device chosen once, and ``--amp``.

The four entry points that run a network (``main.py``, ``test.py``, ``localize.py``,
``extract_features.py``) choose the device here and pass it down; no other module picks one.
"""
from __future__ import annotations

import contextlib

import torch

from utils.errors import STCLError


def choose_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise STCLError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on ``device`` (CUDA or CPU) when enabled, else a no-op context.

    Meant for GPUs with bfloat16 tensor cores; on a CPU without native bfloat16 it is
    slower, but it runs, so the mixed-precision path can be checked anywhere.
    """
    if enabled:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
