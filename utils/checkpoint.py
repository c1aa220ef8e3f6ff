"""Checkpoints: the project's own, and the state dicts of the released implementation.

A project checkpoint is a dict ``{"model", "optimizer", "args", "iteration", ...}`` written
atomically (temporary file, flush, fsync, rename), so a crash or a kill during a save never
leaves a truncated file behind. A released checkpoint (``best_re_rank_THU_STCL_best.pkl``)
is a plain ``state_dict`` of the authors' ``STCL_THU``/``STCL_ACT``; it is recognised by
its keys and mapped onto the project's parameter names (:data:`RELEASED_NAMES`).
"""
from __future__ import annotations

import io
import pickle
import re
import zipfile
from pathlib import Path
from typing import Dict, Mapping, Tuple

import torch

from utils.atomic import save_torch
from utils.errors import CheckpointError

#: Released module prefix -> project module prefix (same tensors, readable names), in the
#: order of the released ``state_dict`` (its module registration order).
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
    "intra_temp_classifier": "cls_intra",
    "inter_temp_classifier": "cls_inter",
    "classifier": "cls_base",
}


def _released_prefix(key: str, table: Mapping[str, str]):
    """The longest prefix of ``key`` found in ``table`` (a whole dotted component), or None."""
    matches = [p for p in table if key == p or key.startswith(p + ".")]
    return max(matches, key=len, default=None)


def _rename(key: str, table: Mapping[str, str]) -> str:
    """Replace the longest prefix of ``key`` found in ``table``."""
    prefix = _released_prefix(key, table)
    return key if prefix is None else table[prefix] + key[len(prefix):]


def _released_rank(key: str) -> int:
    """Position of a released key's module in the released state dict (unknown modules last)."""
    prefix = _released_prefix(key, RELEASED_NAMES)
    return len(RELEASED_NAMES) if prefix is None else list(RELEASED_NAMES).index(prefix)


def released_to_project(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Released STCL_THU / STCL_ACT key names -> the project's."""
    return {_rename(k, RELEASED_NAMES): v for k, v in state.items()}


def project_to_released(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The project's key names -> the released ones, in the released order (``--export-official``).

    The result loads into the released code with ``model.load_state_dict``.
    """
    inverse = {new: old for old, new in RELEASED_NAMES.items()}
    renamed = {_rename(k, inverse): v for k, v in state.items()}
    return dict(sorted(renamed.items(), key=lambda item: _released_rank(item[0])))


def is_released_state_dict(obj) -> bool:
    """A plain state dict with the released key names (``vAttn.*``, ``classifier.*``)."""
    return isinstance(obj, Mapping) and any(str(k).startswith("vAttn.") for k in obj)


def _classifier_weight(state: Mapping[str, torch.Tensor]):
    """The base head's last conv weight (C+1, D, 1) under either naming, or None."""
    return next((state[k] for k in ("classifier.4.weight", "cls_base.4.weight") if k in state), None)


def released_shape_of(state: Mapping[str, torch.Tensor]) -> Tuple[int, int]:
    """(feature_size D, num_class C) of a released or project state dict, read off the
    base head's last conv weight (C+1, D, 1)."""
    weight = _classifier_weight(state)
    if weight is None:
        raise CheckpointError("the state dict has no classifier weight (classifier.4.weight / cls_base.4.weight), "
                              "so its feature size and class count are unknown")
    if weight.dim() != 3:
        raise CheckpointError(f"the classifier weight has shape {tuple(weight.shape)}; "
                              "a released or project checkpoint has (C+1, D, 1)")
    out, d, _ = weight.shape
    return d, out - 1


# -- reading and writing -------------------------------------------------------------

def save_atomic(obj, path) -> Path:
    """``torch.save`` of ``obj`` to ``path``, atomically (:func:`utils.atomic.save_torch`)."""
    return save_torch(obj, path)


def _check_zip_crc(path: Path) -> None:
    """torch.load does not check the CRCs of its zip archive, so a damaged byte inside a
    tensor would load silently as a wrong weight; raise BadZipFile instead."""
    if not zipfile.is_zipfile(path):
        return  # a truncated archive or the legacy pickle format: torch.load decides
    with zipfile.ZipFile(path) as archive:
        if any(member.compress_type != zipfile.ZIP_STORED for member in archive.infolist()):
            raise zipfile.BadZipFile("a member is compressed, which torch.save never does")
        damaged = archive.testzip()
    if damaged is not None:
        raise zipfile.BadZipFile(f"{damaged} fails its CRC check")


def read_checkpoint(path):
    """Load any checkpoint file onto the CPU; a clear CheckpointError if it cannot be read.

    Only tensors and plain Python containers are unpickled (``weights_only=True``): project
    checkpoints and the released state dicts are made of nothing else, and a downloaded
    file then cannot run code while it is read.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        _check_zip_crc(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if unsafe:
            raise CheckpointError(
                f"checkpoint {path} holds a Python object ({unsafe.group(1)}) other than tensors and plain "
                f"containers, so it is not read (unpickling it could run code). If you trust the file, load it "
                f"yourself with torch.load(path, weights_only=False) and torch.save its state_dict") from exc
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted and cannot be read ({exc})") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError,
            AttributeError, ModuleNotFoundError, io.UnsupportedOperation) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted and cannot be read ({exc})") from exc


def model_state_of(obj, path) -> Dict[str, torch.Tensor]:
    """The model weights of a loaded checkpoint, under the project's names."""
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        state = dict(obj["model"])
    elif is_released_state_dict(obj):
        state = released_to_project(obj)
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = dict(obj)
    else:
        raise CheckpointError(f"{path} is neither a project checkpoint nor a released STCL-Net state dict")
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        names = ", ".join(map(str, not_tensors[:10]))
        raise CheckpointError(f"checkpoint {path}: these weights are not tensors: {names}")
    return state


def _with_released_name(key: str) -> str:
    """``key``, followed by its released name where that differs (for error messages)."""
    released = _rename(key, {new: old for old, new in RELEASED_NAMES.items()})
    return key if released == key else f"{key} [released: {released}]"


def _trained_with(state: Mapping[str, torch.Tensor]) -> list:
    """The line of an error message that says what the checkpoint was trained with, if known."""
    weight = _classifier_weight(state)
    if weight is None or weight.dim() != 3:
        return []
    d, c = released_shape_of(state)
    return [f"  the checkpoint was trained with --feature-size {d} --num-class {c}"]


def load_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor], path) -> None:
    """Copy ``state`` (project names) into ``model`` after checking every key and shape.

    Raises one CheckpointError that lists every missing, unexpected and mis-shaped tensor
    (with its released name beside the project's) and the D and C the checkpoint was trained with.
    """
    expected = model.state_dict()
    missing = [_with_released_name(k) for k in expected if k not in state]
    unexpected = sorted(str(k) for k in set(state) - set(expected))
    misshaped = [f"{_with_released_name(k)}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                 for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or misshaped:
        lines = [f"checkpoint {path} does not fit the model "
                 f"(--feature-size {model.feature_size}, --num-class {model.num_class}):"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
            if items:
                shown = items[:10] + ([f"... and {len(items) - 10} more"] if len(items) > 10 else [])
                lines.append(f"  {title} ({len(items)}): " + "; ".join(shown))
        raise CheckpointError("\n".join(lines + _trained_with(state)))
    model.load_state_dict(state)
