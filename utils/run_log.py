"""The log of one training run: ``results.csv``, ``losses.csv`` and TensorBoard under ``tb/``.

:class:`RunLog` is what ``main.py`` writes to; it knows nothing of the model. On
``--resume`` it is opened with the row counts that ``last.pt`` recorded, so rows written
after that checkpoint (by a run killed later) are dropped and the resumed run's logs come
out byte for byte like an uninterrupted run's (``tests/test_faults.py``).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional

from utils.atomic import atomic_write
from utils.errors import OutputError


class CsvLog:
    """An append-only CSV with a fixed header; on resume, rows past ``keep_rows`` are dropped.

    Each row is written (and the file closed) at once, so a kill loses at most the row being written.
    """

    def __init__(self, path: Path, columns: List[str], keep_rows: Optional[int] = None):
        self.path, self.columns = path, columns
        rows = []
        if keep_rows is not None and path.is_file():
            with path.open(newline="") as f:
                rows = list(csv.reader(f))[1: 1 + keep_rows]
        with atomic_write(path, newline="") as f:
            csv.writer(f).writerows([columns, *rows])
        self.rows = len(rows)

    def append(self, row: Dict[str, float]) -> None:
        try:
            with self.path.open("a", newline="") as f:
                csv.writer(f).writerow([row.get(c, "") for c in self.columns])
        except OSError as error:
            raise OutputError(f"cannot append to {self.path}: {error.strerror or error}") from error
        self.rows += 1


class RunLog:
    """``results.csv`` (one row per evaluation), ``losses.csv`` (one row per logged step) and
    TensorBoard scalars (``loss/<term>``, ``lr``, ``eval/<metric>``) in ``run_dir``.

    Args:
        run_dir: the run folder.
        result_columns, loss_columns: the CSV headers (``iteration`` first).
        resume: the ``rows()`` that a checkpoint recorded, and the first iteration after it;
            None for a fresh run.

    Use it as a context manager: TensorBoard's files are closed however the run ends.
    """

    def __init__(self, run_dir: Path, result_columns: List[str], loss_columns: List[str],
                 resume: Optional[Dict[str, int]] = None, start: int = 0):
        from torch.utils.tensorboard import SummaryWriter  # slow to import; only training needs it

        resume = resume or {}
        self.results = CsvLog(run_dir / "results.csv", result_columns, resume.get("results_rows"))
        self.losses = CsvLog(run_dir / "losses.csv", loss_columns, resume.get("loss_rows"))
        self.tensorboard = SummaryWriter(str(run_dir / "tb"), purge_step=start if resume else None)

    def log_losses(self, iteration: int, terms: Dict[str, float], lr: float) -> None:
        """One row of loss terms, and the learning rate. TensorBoard: ``loss/<term>`` weighted
        (and the total), ``loss_raw/<term>`` for the ``raw_<term>`` values."""
        self.losses.append({"iteration": iteration, **terms})
        for name, value in terms.items():
            tag = f"loss_raw/{name[4:]}" if name.startswith("raw_") else f"loss/{name}"
            self.tensorboard.add_scalar(tag, value, iteration)
        self.tensorboard.add_scalar("lr", lr, iteration)

    def log_evaluation(self, iteration: int, summary: Dict[str, float], best: bool) -> None:
        """One row of metrics (percent); ``best`` marks the evaluation whose checkpoint was kept."""
        self.results.append({"iteration": iteration, **summary, "best": int(best)})
        for name, value in summary.items():
            self.tensorboard.add_scalar(f"eval/{name}", value, iteration)

    def rows(self) -> Dict[str, int]:
        """Rows written so far, for a checkpoint to record (``results_rows``, ``loss_rows``)."""
        return {"results_rows": self.results.rows, "loss_rows": self.losses.rows}

    def flush(self) -> None:
        self.tensorboard.flush()

    def close(self) -> None:
        self.tensorboard.close()

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
