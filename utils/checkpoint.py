"""Checkpoints: the project's own, and the state dicts of the released implementation.

A project checkpoint is a dict ``{"model", "optimizer", "args", "iteration", ...}`` written
atomically (temporary file, flush, fsync, rename), so a crash or a kill during a save never
leaves a truncated file behind. A released checkpoint (``best_re_rank_THU_STCL_best.pkl``)
is a plain ``state_dict`` of the authors' ``STCL_THU``/``STCL_ACT``; it is recognised by
its keys and mapped onto the project's parameter names (:data:`RELEASED_NAMES`).
"""
from __future__ import annotations

import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, Mapping, Tuple

import torch

from utils.errors import CheckpointError

#: Released module prefix -> project module prefix (same tensors, readable names).
RELEASED_NAMES = {
    "vAttn.bit_wise_attn.0": "attention_rgb.local_gate.0",
    "vAttn.channel_conv.0": "attention_rgb.global_gate.0",
    "vAttn.attention": "attention_rgb.actionness",
    "fAttn.bit_wise_attn.0": "attention_flow.local_gate.0",
    "fAttn.channel_conv.0": "attention_flow.global_gate.0",
    "fAttn.attention": "attention_flow.actionness",
    "fusion.0": "fusion.0",
    "intra_temp_conv1_k": "tcl.layers.0.key",
    "intra_temp_conv1_v": "tcl.layers.0.value",
    "intra_temp_conv2_k": "tcl.layers.1.key",
    "intra_temp_conv2_v": "tcl.layers.1.value",
    "inter_vid_conv1_k": "scl.query_key",
    "inter_vid_conv1_v": "scl.query_value",
    "inter_exem_conv1_k": "scl.exemplar_key",
    "inter_exem_conv1_v": "scl.exemplar_value",
    "clswise_atn_conv": "scl.class_weight",
    "classifier": "cls_base",
    "intra_temp_classifier": "cls_intra",
    "inter_temp_classifier": "cls_inter",
}


def _rename(key: str, table: Mapping[str, str]) -> str:
    """Replace the longest prefix of ``key`` found in ``table``."""
    for old in sorted(table, key=len, reverse=True):
        if key == old or key.startswith(old + "."):
            return table[old] + key[len(old):]
    return key


def released_to_project(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Released STCL_THU / STCL_ACT key names -> the project's."""
    return {_rename(k, RELEASED_NAMES): v for k, v in state.items()}


def project_to_released(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The project's key names -> the released ones (for ``--export-official``)."""
    inverse = {new: old for old, new in RELEASED_NAMES.items()}
    return {_rename(k, inverse): v for k, v in state.items()}


def is_released_state_dict(obj) -> bool:
    """A plain state dict with the released key names (``vAttn.*``, ``classifier.*``)."""
    return isinstance(obj, Mapping) and any(str(k).startswith("vAttn.") for k in obj)


def released_shape_of(state: Mapping[str, torch.Tensor]) -> Tuple[int, int]:
    """(feature_size D, num_class C) of a released or project state dict."""
    for key in ("classifier.4.weight", "cls_base.4.weight"):
        if key in state:
            out, d, _ = state[key].shape
            return d, out - 1
    raise CheckpointError("state dict has no classifier weight (classifier.4.weight / cls_base.4.weight)")


# -- reading and writing -------------------------------------------------------------

def save_atomic(obj, path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def read_checkpoint(path):
    """Load any checkpoint file onto the CPU; a clear CheckpointError if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError,
            AttributeError, ModuleNotFoundError, io.UnsupportedOperation) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted and cannot be read ({exc})") from exc


def model_state_of(obj, path) -> Dict[str, torch.Tensor]:
    """The model weights of a loaded checkpoint, under the project's names."""
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        return dict(obj["model"])
    if is_released_state_dict(obj):
        return released_to_project(obj)
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    raise CheckpointError(f"{path} is neither a project checkpoint nor a released STCL-Net state dict")


def load_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor], path) -> None:
    """Copy ``state`` into ``model`` after checking every key and shape.

    Raises one CheckpointError that lists every missing, unexpected and mis-shaped tensor.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                 for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or misshaped:
        lines = [f"checkpoint {path} does not fit the model "
                 f"(--feature-size {model.feature_size}, --num-class {model.num_class}):"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
            if items:
                shown = items[:10] + ([f"... and {len(items) - 10} more"] if len(items) > 10 else [])
                lines.append(f"  {title} ({len(items)}): " + "; ".join(shown))
        try:
            d, c = released_shape_of(state)
            lines.append(f"  the checkpoint was trained with --feature-size {d} --num-class {c}")
        except CheckpointError:
            pass
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state)
