"""Learning curves of a training run, drawn from the CSV logs in its run folder.

A run folder holds ``results.csv`` (one row per evaluation: ``iteration``, ``mAP@t`` per
tIoU threshold t, the averages and ``cmAP``, in percent) and ``losses.csv`` (one row per
logged iteration: ``iteration`` then the named loss terms, ``total`` among them).

Usage: ``python -m utils.plots RUN_DIR`` writes ``RUN_DIR/learning_curves.png``.
Figures are drawn on a ``matplotlib.figure.Figure`` with the Agg canvas, so pyplot, its
global state and any display are never touched.
"""
import argparse
import csv
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from utils.atomic import atomic_write
from utils.errors import DataError, STCLError

FIGSIZE = (12, 6)  # inches
DPI = 100
MAP_COLUMN = re.compile(r"mAP@(\d*\.?\d+)")  # e.g. "mAP@0.5"; group 1: the tIoU threshold


@dataclass(frozen=True)
class LearningCurves:
    """The series of the two panels.

    eval_iteration: (E,) iterations of the evaluations.
    map_curves: label -> (E,) mAP in percent; the chosen thresholds, then their average
        (the last entry), which is the checkpoint-selection score of docs/METHOD.md#5-objective.
    best_iteration: the evaluation main.py selected (its ``best`` column), else the one with
        the highest average (the first on ties), or None.
    loss_iteration: (L,) logged iterations.
    loss_raw, loss_smooth: term name -> (L,) values, raw and as a trailing running mean.
    """

    eval_iteration: np.ndarray
    map_curves: dict
    best_iteration: int | None
    loss_iteration: np.ndarray
    loss_raw: dict
    loss_smooth: dict


def read_results(path) -> dict:
    """Read ``results.csv``: column name -> (E,) float64. Needs ``iteration`` and ``mAP@t``."""
    columns = _read_numeric_csv(path)
    if not any(MAP_COLUMN.fullmatch(name) for name in columns):
        raise DataError(f"{path}: no 'mAP@<tIoU>' column in the header")
    return columns


def read_losses(path) -> dict:
    """Read ``losses.csv``: column name -> (L,) float64; ``iteration`` then the loss terms."""
    return _read_numeric_csv(path)


def learning_curve_data(results: dict, losses: dict, window: int | None = None) -> LearningCurves:
    """The series to draw.

    mAP panel: THUMOS-style results (a threshold below 0.5) show mAP@0.1..0.7 and their
    average; ActivityNet-style results (0.5..0.95) show every threshold and the average.
    Loss panel: every column of ``losses`` but ``iteration`` and the raw terms, smoothed by a trailing
    running mean over ``window`` rows (default: max(1, L // 20)).
    """
    columns = _plotted_columns(results)
    curves = {name: results[name] for _, name in columns}
    average = np.mean(list(curves.values()), axis=0)
    curves[f"avg {columns[0][0]:g}:{columns[-1][0]:g}"] = average
    iteration = results["iteration"]
    if "best" in results and np.any(results["best"] > 0):
        best = int(iteration[np.flatnonzero(results["best"] > 0)[-1]])  # the checkpoint main.py selected
    else:
        best = int(iteration[np.argmax(average)]) if len(iteration) else None

    # the weighted terms and the total (what is minimised); the raw_* columns are left out
    raw = {name: values for name, values in losses.items() if name != "iteration" and not name.startswith("raw_")}
    rows = len(losses["iteration"])
    window = window if window is not None else max(1, rows // 20)
    smooth = {name: running_mean(values, window) for name, values in raw.items()}
    return LearningCurves(iteration, curves, best, losses["iteration"], raw, smooth)


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean: out[i] = mean(values[max(0, i - window + 1) .. i]). (L,) -> (L,)"""
    cumulative = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    stop = np.arange(1, len(values) + 1)
    start = np.maximum(0, stop - window)
    return (cumulative[stop] - cumulative[start]) / (stop - start)


def plot_learning_curves(run_dir, out_png=None) -> Path:
    """Draw mAP and loss curves of ``run_dir`` into ``out_png``
    (default ``run_dir/learning_curves.png``, 1200 x 600 pixels)."""
    run_dir = Path(run_dir)
    data = learning_curve_data(read_results(run_dir / "results.csv"),
                               read_losses(run_dir / "losses.csv"))
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    map_axes, loss_axes = fig.subplots(1, 2)
    _draw_map_panel(map_axes, data)
    _draw_loss_panel(loss_axes, data)
    fig.suptitle(f"Learning curves: {run_dir.resolve().name}")
    out_png = Path(out_png) if out_png is not None else run_dir / "learning_curves.png"
    with atomic_write(out_png, binary=True) as handle:
        fig.savefig(handle, format="png", dpi=DPI)
    return out_png


def main(argv: list[str]) -> int:
    """Command line: ``RUN_DIR`` -> writes the PNG and prints its path."""
    parser = argparse.ArgumentParser(prog="python -m utils.plots",
                                     description="Draw RUN_DIR/learning_curves.png from a training run's logs.")
    parser.add_argument("run_dir", help="a run folder of main.py (holds results.csv and losses.csv)")
    options = parser.parse_args(argv)
    try:
        print(plot_learning_curves(options.run_dir))
    except STCLError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _read_numeric_csv(path) -> dict:
    """A CSV of numbers with a header row -> column name -> (rows,) float64."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or "iteration" not in rows[0]:
        raise DataError(f"{path}: expected a header row with an 'iteration' column")
    header, body = rows[0], [row for row in rows[1:] if row]
    values = np.array([_numbers(path, line, row, len(header))
                       for line, row in enumerate(body, start=2)], dtype=np.float64)
    values = values.reshape(len(body), len(header))
    return {name: values[:, j] for j, name in enumerate(header)}


def _numbers(path: Path, line: int, row: list, width: int) -> list:
    """One CSV row as floats, or a DataError naming the file and line."""
    if len(row) != width:
        raise DataError(f"{path}: line {line} has {len(row)} fields, the header has {width}")
    try:
        return [float(cell) for cell in row]
    except ValueError as err:
        raise DataError(f"{path}: line {line}: {err}") from None


def _plotted_columns(results: dict) -> list:
    """(tIoU threshold, column name) of the mAP panel (see ``learning_curve_data``),
    ascending."""
    matches = filter(None, map(MAP_COLUMN.fullmatch, results))
    columns = sorted((float(match.group(1)), match.group(0)) for match in matches)
    if columns[0][0] < 0.5:
        return [(t, name) for t, name in columns if t <= 0.7 + 1e-9]
    return columns


def _draw_map_panel(axes, data: LearningCurves) -> None:
    names = list(data.map_curves)
    colours = colormaps["viridis"](np.linspace(0.0, 0.9, len(names) - 1))
    for name, colour in zip(names[:-1], colours):
        axes.plot(data.eval_iteration, data.map_curves[name], color=colour, lw=1.2, label=name)
    axes.plot(data.eval_iteration, data.map_curves[names[-1]], color="black", lw=2.5,
              label=names[-1])
    if data.best_iteration is not None:
        axes.axvline(data.best_iteration, color="red", ls=":", lw=1.5,
                     label=f"best ({data.best_iteration})")
    axes.set(title="Detection mAP", xlabel="iteration", ylabel="mAP (%)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", ncol=2)


def _draw_loss_panel(axes, data: LearningCurves) -> None:
    colours = colormaps["tab10"](np.arange(len(data.loss_raw)) % 10)
    for (name, raw), colour in zip(data.loss_raw.items(), colours):
        colour, width = ("black", 2.5) if name == "total" else (colour, 1.2)
        axes.plot(data.loss_iteration, raw, color=colour, lw=0.8, alpha=0.2)
        axes.plot(data.loss_iteration, data.loss_smooth[name], color=colour, lw=width,
                  label=name)
    axes.set(title="Loss terms (running mean; raw faint)", xlabel="iteration", ylabel="loss")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", ncol=2)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
