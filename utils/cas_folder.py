"""The ``--save-cas`` folder: raw network outputs, and what evaluation needs to replay them.

``test.py --save-cas DIR`` writes it, ``test.py --from-cas DIR`` re-runs the proposals and
the evaluation from it, ``python -m utils.visualize --from-cas DIR`` draws from it. One
layout, one writer and one reader (this module)::

    DIR/<video>.npz      cas (T, C+1) and attn (T, 1), float32: the network's outputs
    DIR/meta.json        the evaluation reference (``test.Reference.to_json``): "class_names",
                         "video_names" (the evaluated videos; positions below refer to them),
                         "labels", "tiou_thresholds", "scale" (seconds per snippet),
                         "ground_truth_rows" [[video position, class, start, end], ...] in
                         snippets, "ambiguous" {position: [[start, end], ...]} in snippets,
                         and, when known, "network": how the outputs were computed
    DIR/proposals.json   the detections of the run that saved the folder, in snippets:
                         {video: [[start, end, class, score], ...]}, like the
                         proposals.json of an evaluation folder

Every unit in the folder is the snippet (seconds = snippets x scale), so no file name
means seconds here and snippets elsewhere. Every problem is a DataError naming the file.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from utils.atomic import save_npz, write_json
from utils.errors import DataError
from utils.layout import file_in

META, PROPOSALS = "meta.json", "proposals.json"


@dataclass(frozen=True)
class SavedCas:
    """A ``--save-cas`` folder read back.

    meta: meta.json as written (see the module docstring).
    cas: video -> (T, C+1); attn: video -> (T, 1); proposals: video -> (n, 4) rows
    [start, end, class, score] in snippets. Only the videos asked for are read.
    """

    directory: Path
    meta: dict
    cas: Dict[str, np.ndarray]
    attn: Dict[str, np.ndarray]
    proposals: Dict[str, np.ndarray]

    @property
    def class_names(self) -> List[str]:
        return [str(c) for c in self.meta["class_names"]]

    @property
    def scale(self) -> float:
        """Seconds per snippet."""
        return float(self.meta["scale"])

    def ground_truth(self) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
        """video -> (segments (n, 2) [start, end) in snippets, labels (n,)), evaluated videos only."""
        rows = np.asarray(self.meta["ground_truth_rows"], dtype=np.float64).reshape(-1, 4)
        names = self.meta["video_names"]
        out = {}
        for position, name in enumerate(names):
            mine = rows[rows[:, 0] == position]
            out[name] = (mine[:, 2:4], mine[:, 1].astype(np.int64))
        return out

    def detections(self) -> Dict[str, tuple]:
        """video -> (start, end, label, score) arrays in snippets, from proposals.json."""
        return {name: (r[:, 0], r[:, 1], r[:, 2].astype(np.int64), r[:, 3]) for name, r in self.proposals.items()}


def write_cas_folder(directory, outputs: Dict[str, Tuple[np.ndarray, np.ndarray]], meta: dict,
                     proposals: Dict[str, list]) -> Path:
    """Write the folder: outputs video -> (cas (T, C+1), attn (T, 1)); meta and proposals as above.

    Every file is written atomically (utils/atomic.py), so an interrupted save leaves no
    half-written file; a video name that is not a file name (utils/layout.py) is refused.
    """
    directory = Path(directory)
    for name, (cas, attn) in outputs.items():
        save_npz(file_in(directory, name, ".npz"), cas=cas, attn=attn)
    write_json(directory / META, meta)
    write_json(directory / PROPOSALS, proposals)
    return directory


def read_cas_folder(directory, videos: Optional[List[str]] = None) -> SavedCas:
    """Read the folder back, checked; the ``.npz`` of ``videos`` only when given, else of every
    video of meta.json."""
    directory = Path(directory)
    meta = _read_json(directory / META, f"{directory} is not a --save-cas folder")
    _check_meta(meta, directory / META)
    num_classes = len(meta["class_names"])
    names = list(meta["video_names"]) if videos is None else list(videos)
    scores = {name: _read_scores(file_in(directory, name, ".npz"), num_classes) for name in names}
    proposals = _read_proposals(directory / PROPOSALS, num_classes)
    return SavedCas(directory, meta, {n: s[0] for n, s in scores.items()}, {n: s[1] for n, s in scores.items()},
                    proposals)


def _read_json(path: Path, missing: str):
    if not path.is_file():
        raise DataError(f"{missing}: {path} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None


def _check_meta(meta, path: Path) -> None:
    needed = ("class_names", "video_names", "labels", "tiou_thresholds", "scale", "ground_truth_rows", "ambiguous")
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object with {', '.join(needed)}")
    missing = [k for k in needed if k not in meta]
    if missing:
        raise DataError(f"{path}: {', '.join(missing)} missing (a folder of an older version? save it again "
                        "with test.py --save-cas)")
    if not isinstance(meta["scale"], (int, float)) or not isinstance(meta["class_names"], list):
        raise DataError(f'{path}: expected "class_names": [...] and "scale": <seconds per snippet>')


def _read_proposals(path: Path, num_classes: int) -> Dict[str, np.ndarray]:
    """{video: [[start, end, class, score], ...]} -> video -> (n, 4) float64, classes checked."""
    content = _read_json(path, "the --save-cas folder is incomplete")
    if not isinstance(content, dict):
        raise DataError(f"{path}: expected an object {{video_name: [[start, end, class, score], ...]}}")
    out = {}
    for name, rows in content.items():
        shaped = isinstance(rows, list) and all(
            isinstance(row, list) and len(row) == 4 and all(isinstance(v, (int, float)) for v in row) for row in rows)
        if not shaped:
            raise DataError(f"{path}: video {name!r}: expected a list of [start, end, class, score] rows")
        array = np.array(rows, dtype=np.float64).reshape(-1, 4)
        labels = array[:, 2]
        if np.any((labels != np.round(labels)) | (labels < 0) | (labels >= num_classes)):
            raise DataError(f"{path}: video {name!r}: classes must be integers 0..{num_classes - 1}")
        out[name] = array
    return out


def _read_scores(path: Path, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """DIR/<video>.npz -> cas (T, C+1), attn (T, 1), checked."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (no saved CAS for video {path.stem!r}); "
                        "the --save-cas folder is incomplete")
    try:
        with np.load(path) as saved:
            arrays = {key: saved[key] for key in ("cas", "attn") if key in saved.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable .npz file ({err})") from None
    missing = {"cas", "attn"} - set(arrays)
    if missing:
        raise DataError(f"{path}: missing array(s) {sorted(missing)}")
    cas, attn = arrays["cas"], arrays["attn"]
    if cas.ndim != 2 or cas.shape[1] != num_classes + 1 or len(cas) == 0:
        raise DataError(f"{path}: cas has shape {cas.shape}, expected (T >= 1, {num_classes + 1})"
                        f" for the classes of {META}")
    if attn.size != len(cas):
        raise DataError(f"{path}: attn has shape {attn.shape}, expected ({len(cas)}, 1)")
    return cas, attn.reshape(-1, 1)
