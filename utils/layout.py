"""The dataset layout on disk, and the one safe way to read its files (docs/METHOD.md#10-data-layout).

::

    <path-dataset>/<name>-I3D-JOINTFeatures.npy    object array of (T_i, D) float arrays (the release)
    <path-dataset>/<name>-I3D-features.npy         the memory-mapped store (feature_store.py):
    <path-dataset>/<name>-I3D-offsets.npy            (S, D) snippets, (V + 1,) offsets and a header
    <path-dataset>/<name>-I3D-features.json
    <path-dataset>/<name>-Annotations/
        classlist.npy, videoname.npy, subset.npy, duration.npy,
        labels_all.npy, labels.npy, segments.npy, Ambiguous_test.txt (optional)

Dataset files come from strangers (the released features sit on a file host), and the
format must stay what it is: the features file and labels.npy, labels_all.npy and
segments.npy are pickled object arrays. ``np.load(allow_pickle=True)`` would run whatever
code a crafted pickle names, so :func:`load_npy` reads the numpy header itself and unpickles
the payload with :class:`SafeUnpickler`, which builds only what an object array of numbers,
strings, bytes and nested arrays needs (numpy's array reconstruction, ``ndarray``,
``dtype``, numpy scalars). Any other global is refused with a DataError naming the file
and the global; nothing of it is imported or called.

Video names become file names (``features/<video>.npy``, ``<cas dir>/<video>.npz``,
``figures/<video>.png``), so every name that enters the project passes
:func:`check_video_name`, and every file written from a name is made by :func:`file_in`.

Every reader of the layout (the loader, the feature-store converter, the annotation
importer, the feature extractor) uses this module.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from utils.errors import DataError

JOINT_FEATURES_SUFFIX = "-I3D-JOINTFeatures.npy"
ANNOTATIONS_SUFFIX = "-Annotations"
STORE_FEATURES_SUFFIX = "-I3D-features.npy"
STORE_OFFSETS_SUFFIX = "-I3D-offsets.npy"
STORE_HEADER_SUFFIX = "-I3D-features.json"
AMBIGUOUS_FILE = "Ambiguous_test.txt"
REQUIRED_ANNOTATIONS = ("classlist", "videoname", "subset", "duration", "labels_all", "labels", "segments")

# What reading a truncated or corrupted .npy raises; the pickle documentation lists
# AttributeError, EOFError, ImportError and IndexError besides UnpicklingError.
_UNREADABLE = (OSError, EOFError, ValueError, pickle.UnpicklingError, AttributeError, ImportError, IndexError,
               KeyError, TypeError)


# ----------------------------------------------------------------------------- paths

def features_path(path_dataset, dataset_name: str) -> Path:
    """The released joint features file of ``dataset_name`` under ``path_dataset``."""
    return Path(path_dataset) / f"{dataset_name}{JOINT_FEATURES_SUFFIX}"


def annotations_path(path_dataset, dataset_name: str) -> Path:
    """The annotation folder of ``dataset_name`` under ``path_dataset``."""
    return Path(path_dataset) / f"{dataset_name}{ANNOTATIONS_SUFFIX}"


def store_paths(path_dataset, dataset_name: str) -> tuple[Path, Path, Path]:
    """(features .npy, offsets .npy, header .json) of the memory-mapped store of ``dataset_name``."""
    root = Path(path_dataset)
    return (root / f"{dataset_name}{STORE_FEATURES_SUFFIX}", root / f"{dataset_name}{STORE_OFFSETS_SUFFIX}",
            root / f"{dataset_name}{STORE_HEADER_SUFFIX}")


def has_store(path_dataset, dataset_name: str) -> bool:
    """Whether a complete store is there (its header is written last)."""
    return store_paths(path_dataset, dataset_name)[2].is_file()


def missing_file(path: Path, what: str) -> DataError:
    """The DataError for a file of the layout that is not there, with where it is expected."""
    return DataError(
        f"{what} not found: {path}. The features are expected at <path-dataset>/<name>{JOINT_FEATURES_SUFFIX} "
        f"(or converted to a memory-mapped store, <name>{STORE_FEATURES_SUFFIX}/.json, by convert_features.py) "
        f"and the annotations in <path-dataset>/<name>{ANNOTATIONS_SUFFIX}/ (the THUMOS-14 I3D features and "
        "annotations come from the CO2-Net/STCL-Net release, see dataset/README.md); "
        "run `python -m dataset.make_demo` for a small synthetic dataset."
    )


# ----------------------------------------------------------------------------- the safe reader

def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as Python 2 pickles use it for bytes (protocol 2): latin-1 text to bytes only."""
    if not isinstance(text, str) or str(encoding).lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not a latin-1 "
                                     "encoding of text")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    from numpy import _core

    multiarray, numeric = _core.multiarray, _core.numeric
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1_encode}
    for package in ("numpy.core", "numpy._core"):  # pickles of numpy 1.x name numpy.core, of 2.x numpy._core
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    for name in ("bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "float16", "float32", "float64", "complex64", "complex128", "str_", "bytes_"):
        allowed[("numpy", name)] = getattr(np, name)
    for name, kind in (("float", float), ("int", int), ("complex", complex), ("bool", bool), ("str", str),
                       ("bytes", bytes), ("list", list), ("tuple", tuple), ("dict", dict), ("set", set),
                       ("frozenset", frozenset), ("bytearray", bytearray)):
        allowed[("builtins", name)] = kind
        allowed[("__builtin__", name)] = kind  # Python 2 pickles
    return allowed


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside the allow-list."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.global_name = f"{module}.{name}"


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds numbers, strings, bytes, lists, dicts and numpy arrays and
    scalars, and nothing else: every other global raises :class:`RefusedGlobal` before it is
    imported."""

    _ALLOWED: dict | None = None

    def find_class(self, module: str, name: str):
        if SafeUnpickler._ALLOWED is None:
            SafeUnpickler._ALLOWED = _allowed_globals()
        try:
            return SafeUnpickler._ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None


def safe_unpickle(data: bytes, encoding: str = "ASCII"):
    """Unpickle ``data`` with :class:`SafeUnpickler` (``encoding`` as ``np.load``'s, for Python 2 pickles)."""
    return SafeUnpickler(io.BytesIO(data), encoding=encoding).load()


def _read_header(handle) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(handle)
    from numpy.lib import _format_impl  # version 3.0 (utf-8 field names) has no public reader

    return _format_impl._read_array_header(handle, version)


def load_npy(path, what: str = "file"):
    """One ``.npy`` file of the layout, read without running code from it.

    A plain numeric or string array is read as ``np.load`` reads it; an object array is
    unpickled by :class:`SafeUnpickler`. Raises DataError naming the file: missing, not a
    .npy file or truncated, or a pickle that names anything but numbers, text and arrays
    (the message names the refused global).
    """
    path = Path(path)
    if not path.is_file():
        raise missing_file(path, what)
    try:
        with path.open("rb") as handle:
            shape, _, dtype = _read_header(handle)
            if not dtype.hasobject:
                return np.load(path, allow_pickle=False)
            array = SafeUnpickler(handle, encoding="ASCII").load()
    except RefusedGlobal as refused:
        raise DataError(f"{path}: refused to load {what}: its pickle names {refused.global_name}, which is not "
                        "part of an array of numbers and text (loading it could run code); the file is not a "
                        "dataset file of this layout — do not use it") from None
    except _UNREADABLE as error:
        raise DataError(f"{path}: cannot read {what} ({type(error).__name__}: {error}); "
                        "the file is truncated or not a .npy file") from error
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        got = array.shape if isinstance(array, np.ndarray) else type(array).__name__
        raise DataError(f"{path}: cannot read {what}: its header says shape {tuple(shape)} but it holds {got}")
    return array


# ----------------------------------------------------------------------------- text

def as_text(value, path: Path, where: str) -> str:
    """A str from a str or utf-8 bytes value; anything else is a DataError."""
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: {where}: {value!r} is not utf-8 text") from error
    if isinstance(value, str):
        return str(value)
    raise DataError(f"{path}: {where}: expected text, got {type(value).__name__} {value!r}")


def text_array(path, what: str = "annotation file") -> list[str]:
    """A 1-D array of names (bytes or str) as a list of str."""
    path = Path(path)
    array = np.asarray(load_npy(path, what))
    if array.ndim != 1:
        raise DataError(f"{path}: expected a 1-D array of names, got shape {array.shape}")
    return [as_text(value, path, f"entry {i}") for i, value in enumerate(array)]


# ----------------------------------------------------------------------------- video names

def video_name_problem(name) -> str | None:
    """Why ``name`` cannot be a video name (None when it can).

    A video name becomes a file name inside one folder, so it holds no path separator
    (``/`` or ``\\``), no NUL or other control character, is not ``.`` or ``..``, and is not
    empty. Everything else (spaces, unicode, dots inside) is allowed.
    """
    if not isinstance(name, str):
        return f"a video name must be text, got {type(name).__name__}"
    if not name:
        return "the video name is empty"
    if name in (".", ".."):
        return f"{name!r} is not a video name (it names a folder)"
    if "/" in name or "\\" in name:
        return f"video name {name!r} holds a path separator (a video name is a file name, not a path)"
    bad = next((c for c in name if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        return f"video name {name!r} holds the control character {bad!r}"
    return None


def check_video_name(name, where: str) -> str:
    """``name`` if it is a valid video name (:func:`video_name_problem`), else a DataError
    starting with ``where`` (the file and row it came from)."""
    problem = video_name_problem(name)
    if problem is not None:
        raise DataError(f"{where}: {problem}")
    return name


def file_in(folder, name: str, suffix: str = "") -> Path:
    """``folder/<name><suffix>`` for a video name, checked to stay directly inside ``folder``."""
    folder = Path(folder)
    check_video_name(name, f"cannot write a file for video {name!r} in {folder}")
    path = folder / f"{name}{suffix}"
    if path.parent != folder or path.name in (".", ".."):
        raise DataError(f"cannot write a file for video {name!r} in {folder}: {path} is not inside it")
    return path
