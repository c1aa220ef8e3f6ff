"""Snippet features of every video in one contiguous (S, D) array: the memory-mapped store.

The released features file (``<name>-I3D-JOINTFeatures.npy``) is a pickled object array,
which numpy can only read whole. The store keeps the same numbers in three files beside it::

    <path-dataset>/<name>-I3D-features.npy     (S, D) float32 or float16, a plain .npy
    <path-dataset>/<name>-I3D-offsets.npy      (V + 1,) int64: video v is rows offsets[v]:offsets[v+1]
    <path-dataset>/<name>-I3D-features.json    header: format, D, dtype, S, video names, all-zero videos

S = total snippets of the V videos. The features file is opened with
``np.load(mmap_mode="r")``, so only the rows a batch or an exemplar draw touches are read;
a dataset larger than memory trains from it. Convert the released file with::

    python convert_features.py --path-dataset dataset/THUMOS14 [--dataset-name Thumos14reduced] \\
        [--feature-dtype float16]

:class:`StoreWriter` is the one way a store is written (the converter uses it, and so can a
feature extractor): it checks every video (shape, finite values, float16 range), streams
rows to disk without holding them, writes the header last and renames each file into place
only when it is complete, so a crash or Ctrl-C never leaves a store that looks whole.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from utils.atomic import atomic_write, save_npy, write_json
from utils.errors import DataError, OutputError
from utils.layout import annotations_path, features_path, load_npy, store_paths, text_array

STORE_FORMAT = "stcl-net feature store"
STORE_VERSION = 1
DTYPES = ("float32", "float16")
_HEADER_BYTES = 128  # room reserved for the .npy header of any (S, D) shape; a multiple of 64


class FeatureStore:
    """V videos' snippet features in one (S, D) array, in memory or memory-mapped.

    Attributes:
        snippets: (S, D) float32 or float16 array; a read-only np.memmap when `mapped`.
        offsets: (V + 1,) int64; video v is ``snippets[offsets[v]:offsets[v + 1]]``.
        lengths: (V,) int64 snippets per video.
        has_signal: (V,) bool, False for videos whose features are all zero.
        mapped: True when `snippets` is memory-mapped from a file.
    """

    def __init__(self, snippets: np.ndarray, offsets: np.ndarray, has_signal: np.ndarray, mapped: bool = False):
        self.snippets, self.offsets, self.mapped = snippets, np.asarray(offsets, dtype=np.int64), mapped
        self.lengths = np.diff(self.offsets)
        self.has_signal = np.asarray(has_signal, dtype=bool)

    @classmethod
    def from_arrays(cls, videos: Sequence[np.ndarray]) -> "FeatureStore":
        """An in-memory store of (T_i, D) float32 arrays, concatenated (they are copied once)."""
        lengths = np.array([len(v) for v in videos], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return cls(np.concatenate(videos), offsets, np.array([v.any() for v in videos], dtype=bool))

    @property
    def feature_size(self) -> int:
        return int(self.snippets.shape[1])

    def __len__(self) -> int:
        return len(self.lengths)

    def video(self, v: int) -> np.ndarray:
        """Video v as (T_v, D) float32: a view of an in-memory float32 store, else a copy read from disk."""
        rows = self.snippets[self.offsets[v]:self.offsets[v + 1]]
        if self.mapped or rows.dtype != np.float32:
            return np.array(rows, dtype=np.float32)
        return rows

    def gather(self, rows: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """``snippets[rows]``: rows of any shape (...,) int64 -> (..., D), float32 unless ``out`` is given.

        ``out``: an array of shape (..., D) to fill (float32 or the store's dtype; a pinned
        staging buffer, say). A memory-mapped store reads only those rows, in sorted order,
        so neighbouring rows are read together.
        """
        flat = np.asarray(rows, dtype=np.int64).reshape(-1)
        shape = (*np.shape(rows), self.feature_size)
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape:
            raise ValueError(f"out has shape {out.shape}, expected {shape}")
        target = out.reshape(len(flat), self.feature_size)
        if self.mapped:
            order = np.argsort(flat, kind="stable")
            target[order] = self.snippets[flat[order]]
        elif target.dtype == self.snippets.dtype:
            np.take(self.snippets, flat, axis=0, out=target)
        else:
            target[...] = self.snippets[flat]
        return out

    @classmethod
    def open(cls, path_dataset, dataset_name: str, video_names: Sequence[str], feature_size: int) -> "FeatureStore":
        """The memory-mapped store of `dataset_name`, checked against the annotations' video list."""
        features_file, offsets_file, header_file = store_paths(path_dataset, dataset_name)
        header = _read_header(header_file)
        for path in (features_file, offsets_file):
            if not path.is_file():
                raise DataError(f"{path} not found, but {header_file} says a feature store is there; "
                                "convert again with `python convert_features.py`")
        names = header["videos"]
        if list(names) != list(video_names):
            missing = sorted(set(video_names) - set(names))[:3]
            raise DataError(f"{header_file}: the store's videos are not those of videoname.npy, in its order "
                            f"({len(names)} in the store, {len(video_names)} in the annotations"
                            + (f"; missing e.g. {missing}" if missing else "") + ")")
        if header["feature_size"] != feature_size:
            raise DataError(f"{header_file}: features have {header['feature_size']} channels but feature_size is "
                            f"{feature_size} (set --feature-size)")
        try:
            snippets = np.load(features_file, mmap_mode="r")
            offsets = np.load(offsets_file)
        except (OSError, ValueError, EOFError) as error:
            raise DataError(f"{features_file}: cannot map the feature store ({error}); "
                            "the file is truncated or not a .npy file") from error
        expected = (header["total_snippets"], feature_size)
        if snippets.shape != expected or str(snippets.dtype) != header["dtype"]:
            raise DataError(f"{features_file}: holds {snippets.dtype} {snippets.shape} but {header_file} says "
                            f"{header['dtype']} {expected}; convert again")
        if (offsets.shape != (len(names) + 1,) or offsets.dtype.kind not in "iu" or offsets[0] != 0
                or offsets[-1] != expected[0] or np.any(np.diff(offsets) < 0)):
            raise DataError(f"{offsets_file}: expected {len(names) + 1} increasing offsets from 0 to {expected[0]}")
        empty = np.flatnonzero(np.diff(offsets) == 0)
        if len(empty):
            raise DataError(f"{features_file}: video {names[empty[0]]}: features have zero snippets")
        has_signal = np.ones(len(names), dtype=bool)
        has_signal[np.asarray(header["all_zero_videos"], dtype=np.int64)] = False
        return cls(snippets, offsets, has_signal, mapped=True)


def _read_header(path: Path) -> dict:
    try:
        header = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read the feature-store header ({error})") from error
    keys = ("format", "version", "feature_size", "dtype", "total_snippets", "videos", "all_zero_videos")
    if not isinstance(header, dict) or header.get("format") != STORE_FORMAT or any(k not in header for k in keys):
        raise DataError(f"{path}: not a feature-store header (expected the keys {', '.join(keys)})")
    if header["version"] != STORE_VERSION or header["dtype"] not in DTYPES:
        raise DataError(f"{path}: version {header['version']} / dtype {header['dtype']} is not supported "
                        f"(version {STORE_VERSION}, dtype {' or '.join(DTYPES)})")
    return header


# ----------------------------------------------------------------------------- writing

class StoreWriter:
    """Write a store one video at a time: ``with StoreWriter(root, name, D) as w: w.add(name, x)``.

    Rows go straight to a temporary file beside the features file (nothing is held in
    memory; :func:`utils.atomic.atomic_write`); on a clean exit the .npy header is filled
    in, the old header (if any) is removed, the features and offsets are renamed into place
    and the new header written last, so no reader ever sees a store that is not whole. On
    an exception the temporary file is removed and an existing store is left as it was.
    """

    def __init__(self, path_dataset, dataset_name: str, feature_size: int, dtype: str = "float32"):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.paths = store_paths(path_dataset, dataset_name)
        self.feature_size, self.dtype = feature_size, np.dtype(dtype)
        self.names: list[str] = []
        self.lengths: list[int] = []
        self.all_zero: list[int] = []
        self._stack: contextlib.ExitStack | None = None
        self._file = None

    def __enter__(self) -> "StoreWriter":
        self._stack = contextlib.ExitStack()
        self._file = self._stack.enter_context(atomic_write(self.paths[0], binary=True))
        self._write(b"\0" * _HEADER_BYTES)
        return self

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as error:
            raise OutputError(f"cannot write {self.paths[0]}: {error.strerror or error}; "
                              "nothing was written to it") from error

    def add(self, name: str, features: np.ndarray) -> None:
        """Append one video's (T, D) features (checked; converted to the store's dtype)."""
        where = f"{self.paths[0]}: video {name}"
        array = np.asarray(features)
        if array.dtype.kind not in "fiu":
            raise DataError(f"{where}: features are not real numbers (dtype {array.dtype})")
        if array.ndim != 2 or array.shape[1] != self.feature_size:
            raise DataError(f"{where}: expected (T, {self.feature_size}) features, got shape {array.shape}")
        if array.shape[0] == 0:
            raise DataError(f"{where}: features have zero snippets")
        if not np.isfinite(array).all():
            raise DataError(f"{where}: features hold {int((~np.isfinite(array)).sum())} NaN/Inf values")
        with np.errstate(over="ignore"):  # an overflow to inf is reported just below
            stored = array.astype(self.dtype, copy=False)
        if not np.isfinite(stored).all():
            raise DataError(f"{where}: values up to {np.abs(array).max():.4g} do not fit {self.dtype} "
                            "(use --feature-dtype float32)")
        if not stored.any():
            self.all_zero.append(len(self.names))
        self._write(np.ascontiguousarray(stored).tobytes())
        self.names.append(name)
        self.lengths.append(len(stored))

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            return bool(self._stack.__exit__(exc_type, exc, tb))  # the temporary file is removed
        total = int(sum(self.lengths))
        try:
            self._file.seek(0)
        except OSError as error:
            self._stack.__exit__(type(error), error, error.__traceback__)
            raise OutputError(f"cannot write {self.paths[0]}: {error.strerror or error}") from error
        self._write(_npy_header(self.dtype, (total, self.feature_size)))
        features_file, offsets_file, header_file = self.paths
        header_file.unlink(missing_ok=True)  # until the new header is in place, no store is seen
        self._stack.close()  # fsync, rename the features into place
        save_npy(offsets_file, np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)]).astype(np.int64))
        write_json(header_file, {"format": STORE_FORMAT, "version": STORE_VERSION, "feature_size": self.feature_size,
                                 "dtype": str(self.dtype), "total_snippets": total, "videos": self.names,
                                 "all_zero_videos": self.all_zero}, indent=None)
        return False


def _npy_header(dtype: np.dtype, shape: tuple[int, int]) -> bytes:
    """A version-1.0 .npy header of exactly _HEADER_BYTES bytes (numpy pads headers with spaces)."""
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    preamble = 10  # magic (6) + version (2) + header length (2)
    body = text.ljust(_HEADER_BYTES - preamble - 1) + "\n"
    if len(body) + preamble != _HEADER_BYTES:
        raise ValueError(f"shape {shape} does not fit the reserved .npy header")
    return np.lib.format.magic(1, 0) + len(body).to_bytes(2, "little") + body.encode("latin1")


def write_store(path_dataset, dataset_name: str, names: Sequence[str], videos: Iterable[np.ndarray],
                feature_size: int, dtype: str = "float32", progress: bool = False) -> Path:
    """Write a store of `videos` ((T_i, D) arrays, in the order of `names`); returns the header path."""
    from utils.progress import progress_bar

    with StoreWriter(path_dataset, dataset_name, feature_size, dtype) as writer:
        for name, features in progress_bar(zip(names, videos), total=len(names), desc="writing store",
                                           enabled=progress):
            writer.add(name, features)
    return writer.paths[2]


def convert(path_dataset, dataset_name: str = "Thumos14reduced", dtype: str = "float32",
            feature_size: Optional[int] = None, progress: bool = True) -> Path:
    """Convert the released joint features file of `dataset_name` into a store beside it.

    The videos are named and ordered by ``<name>-Annotations/videoname.npy``. The joint
    file is read whole (a pickled object array cannot be read in parts) once.
    """
    joint = features_path(path_dataset, dataset_name)
    names = text_array(annotations_path(path_dataset, dataset_name) / "videoname.npy")
    raw = load_npy(joint, "features file")
    if not isinstance(raw, np.ndarray) or raw.dtype != object or raw.ndim != 1 or len(raw) != len(names):
        raise DataError(f"{joint}: expected a 1-D object array of {len(names)} per-video (T_i, D) arrays "
                        "(one per video of videoname.npy)")
    if feature_size is None:
        feature_size = int(np.shape(raw[0])[-1])
    return write_store(path_dataset, dataset_name, names, raw, feature_size, dtype, progress)
