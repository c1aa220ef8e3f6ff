"""The one way this project writes a file: whole or not at all.

Every output (JSON, CSV, text, ``.npy``/``.npz``, checkpoints, ``summary.json``) goes through
:func:`atomic_write`: the content is written to a temporary file with a unique name beside
the target (``.<name>.<random>.tmp``, so two processes writing the same file never share a
temporary), flushed and fsynced, given the mode a new file gets under the user's umask
(``mkstemp`` alone would leave it 0600), renamed over the target, and the folder is fsynced.
A crash, a Ctrl-C or a full disk leaves either the old file or the new one, never half of
one; the temporary file is removed on any error. An ``OSError`` while writing (disk full,
read-only folder, quota) becomes :class:`utils.errors.OutputError` naming the file, which
every command prints as ``error: ...`` with exit code 2.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from utils.errors import OutputError

TMP_SUFFIX = ".tmp"


def _umask_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (0o644 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a folder that cannot be opened for reading (some network filesystems)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _why(error: OSError) -> str:
    return error.strerror or str(error)


@contextlib.contextmanager
def atomic_write(path, binary: bool = False, newline: str | None = None) -> Iterator[IO]:
    """``with atomic_write(path) as f: f.write(...)``: ``path`` appears complete when the block
    ends without an exception, and is left as it was otherwise.

    binary: open the temporary file in ``"wb"`` (else text, utf-8; ``newline`` as for ``open``).
    Raises OutputError (an STCLError) naming ``path`` when the folder cannot be made or the
    file cannot be written; other exceptions from the block pass through unchanged.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {_why(error)}") from error
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8",
                                                                          "newline": newline})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {_why(error)}; nothing was written to it") from error
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_text(path, text: str) -> Path:
    """``path`` holds ``text`` (utf-8), written atomically."""
    with atomic_write(path) as handle:
        handle.write(text)
    return Path(path)


def write_bytes(path, data: bytes) -> Path:
    with atomic_write(path, binary=True) as handle:
        handle.write(data)
    return Path(path)


def json_text(obj, indent: int | None = 1) -> str:
    """Strict JSON: NaN and infinities are refused (``ValueError`` naming the first one's key),
    never written as the ``NaN`` tokens that other JSON readers reject. numpy scalars and
    arrays are written as numbers and lists."""
    try:
        return json.dumps(obj, indent=indent, allow_nan=False, default=_plain)
    except ValueError as error:
        where = _first_non_finite(obj)
        raise ValueError(f"a value is not a finite number{f' (at {where})' if where else ''}; "
                         "strict JSON has no NaN or Infinity") from error


def write_json(path, obj, indent: int | None = 1) -> Path:
    """``path`` holds ``obj`` as strict JSON (:func:`json_text`), written atomically.

    A non-finite number is an OutputError naming the file and the key (nothing is written).
    """
    try:
        text = json_text(obj, indent)
    except ValueError as error:
        raise OutputError(f"cannot write {path}: {error}") from None
    return write_text(path, text + "\n")


def save_npy(path, array) -> Path:
    """``np.save`` of one array (object arrays pickled, as the released layout is), atomically."""
    import numpy as np

    array = np.asarray(array)
    with atomic_write(path, binary=True) as handle:
        np.save(handle, array, allow_pickle=array.dtype == object)
    return Path(path)


def save_npz(path, **arrays) -> Path:
    """``np.savez`` of named numeric arrays, atomically."""
    import numpy as np

    with atomic_write(path, binary=True) as handle:
        np.savez(handle, **arrays)
    return Path(path)


def save_torch(obj, path) -> Path:
    """``torch.save`` of a checkpoint, atomically."""
    import torch

    with atomic_write(path, binary=True) as handle:
        torch.save(obj, handle)
    return Path(path)


def remove_stale_temporaries(folder, name: str | None = None) -> list[Path]:
    """Remove the temporary files a killed writer left in ``folder`` (``.<name>.*.tmp``; every
    one when ``name`` is None). Returns what was removed. Call it only while no other process
    writes there (under the folder's lock)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = f".{name}.*{TMP_SUFFIX}" if name is not None else f".*{TMP_SUFFIX}"
    removed = []
    for stale in folder.glob(pattern):
        if stale.is_file():
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def _plain(value):
    """json.dumps's fallback: numpy scalars and arrays as Python numbers and lists."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _first_non_finite(obj, where: str = "") -> str | None:
    import math

    if isinstance(obj, float):
        return where or "the top level" if not math.isfinite(obj) else None
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        try:
            import numpy as np
        except ImportError:  # pragma: no cover
            return None
        if isinstance(obj, (np.floating, np.ndarray)):
            return _first_non_finite(np.asarray(obj, dtype=float).tolist(), where)
        return None
    for key, value in items:
        found = _first_non_finite(value, f"{where}[{key!r}]")
        if found:
            return found
    return None
