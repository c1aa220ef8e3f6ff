"""Train STCL-Net (docs/METHOD.md#5-objective), evaluating every ``--interval`` iterations.

    python main.py --path-dataset dataset/THUMOS14            # the paper's THUMOS-14 run (see train.sh)
    python main.py ... --resume runs/STCL/last.pt             # continue a killed run exactly
    python main.py ... --seeds 3552,0,1                       # one run per seed, mean +- std table

A run folder ``<output-dir>/<model-name>/`` receives ``best.pt`` (the checkpoint with the
best sum of mAP@0.1..0.7 on the test set, the released protocol; ``--select-on holdout``
selects on held-out training videos instead, ``--select-on last`` keeps the final weights), ``last.pt`` (the
latest weights and the whole training state), ``results.csv`` (one row per evaluation),
``losses.csv``, ``summary.json`` and TensorBoard logs under ``tb/``.

The loop, :func:`train`, is a few named stages of :class:`TrainingRun`: start or resume,
step, evaluate and select, log, save last.pt, finish. The logs are a
:class:`utils.run_log.RunLog`.
"""
from __future__ import annotations

import argparse
import csv
import random
import shlex
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from dataset_record import dataset_record
from exemplar_source import ExemplarSource
from inference import BANK_KEY, EvaluationBank, evaluation_bank, test
from model import STCLCriterion, build_criterion, build_model
from options import build_parser, parse_args
from protocol import EvaluationResult, Reference
from train import NonFiniteLossError, build_optimizer, train_step
from utils import checkpoint as ckpt
from utils.atomic import atomic_write, write_json
from utils.device import choose_device
from utils.errors import CheckpointError, STCLError
from utils.evaluation import format_table, summarize
from utils.progress import bars_wanted, progress_bar
from utils.progress import write as progress_write
from utils.run_log import RunLog
from utils.seeds import format_mean_std, over_seeds
from wsad_dataset import SampleDataset, build_dataset

#: losses.csv: each weighted term (what the total adds up), the total, then each raw term.
LOSS_COLUMNS = ["iteration", *STCLCriterion.TERMS, "total", *(f"raw_{t}" for t in STCLCriterion.TERMS)]
#: What ``--resume`` needs beyond the weights; a ``best.pt`` or a released ``.pkl`` lacks it.
TRAINING_STATE = ("model", "optimizer", "rng", "iteration", "best", "results_rows", "loss_rows")


class TrainingStopped(Exception):
    """Ctrl-C stopped the run after a step; last.pt holds everything needed to resume it."""


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch; return the numpy generator that drives sampling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def rng_state(rng: np.random.Generator) -> dict:
    """Every random state a resumed run needs to continue exactly."""
    state = {"python": random.getstate(), "numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(rng: np.random.Generator, state: dict) -> None:
    random.setstate(state["python"])
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_training_state(path) -> dict:
    """The checkpoint for ``--resume``: a clear CheckpointError if it cannot continue a run."""
    state = ckpt.read_checkpoint(path)
    missing = [k for k in TRAINING_STATE if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} holds no training state to resume ({', '.join(missing)} missing); "
                              f"--resume needs the last.pt of a run, --pretrained-ckpt starts from weights alone")
    return state


def resume_command(argv: Optional[List[str]], last: Path) -> str:
    """``python main.py <argv> --resume <last>``, without an earlier ``--resume`` and with each
    flag once (:func:`without_repeats`: ``bash train.sh --demo --model-name x`` gives main.py
    train.sh's ``--model-name demo`` and then ``--model-name x``; the last one is the run's).

    argv None (``train`` called from code, with no command line to repeat): a placeholder
    for the flags.
    """
    if argv is None:
        return f"python main.py <the same flags> --resume {shlex.quote(str(last))}"
    kept = [flag for flag in without_repeats(argv) if flag[0] != "resume"]
    return shlex.join(["python", "main.py", *(token for _, tokens in kept for token in tokens), "--resume", str(last)])


def without_repeats(argv: List[str], parser: Optional[argparse.ArgumentParser] = None) -> List[Tuple[str, List[str]]]:
    """``argv`` as (dest, tokens) pairs, one per flag as written, where a flag given more than once
    keeps only its last occurrence (argparse's rule: the last one wins; an option of
    ``action="append"`` would keep all). ``--flag=value`` is read as argparse reads it;
    a token that names no flag is kept as it is (dest None)."""
    parser = parser or build_parser()
    options = parser._option_string_actions
    groups: List[Tuple[Optional[str], List[str]]] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name = token.split("=", 1)[0]
        action = options.get(name)
        if action is None:
            groups.append((None, [token]))
            i += 1
            continue
        take = 0 if "=" in token or action.nargs == 0 else 1 if action.nargs in (None, "?", 1) else None
        if take is None:  # nargs "+" / "*": the values up to the next flag
            take = 0
            while i + 1 + take < len(argv) and not argv[i + 1 + take].startswith("-"):
                take += 1
        groups.append((action.dest, argv[i: i + 1 + take]))
        i += 1 + take
    last = {dest: at for at, (dest, _) in enumerate(groups)}
    repeatable = {a.dest for a in parser._actions if isinstance(a, (argparse._AppendAction, argparse._CountAction))}
    return [(dest, tokens) for at, (dest, tokens) in enumerate(groups)
            if dest is None or dest in repeatable or last[dest] == at]


class StopRequest:
    """Ctrl-C (SIGINT) asks the loop to stop after the current step; a second one aborts.

    Only the main thread can handle signals; in another thread (a Ray Tune trial of
    sweep.py) nothing is installed and the caller's own Ctrl-C handling applies.
    """

    def __init__(self):
        self.requested = False
        self._installed = threading.current_thread() is threading.main_thread()
        self._previous = signal.getsignal(signal.SIGINT) if self._installed else None

    def __enter__(self):
        if self._installed:
            signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        progress_write("Ctrl-C: stopping after this step and saving last.pt (press again to abort at once)")


@dataclass
class TrainingRun:
    """What the stages of one training run share: the pieces built from the options, and
    the run's progress (the best evaluation so far, the last one, the iteration of last.pt).

    Build it with :meth:`start_or_resume`; ``train`` then calls :meth:`step`,
    :meth:`evaluate_and_select` and :meth:`save_last`, and ends with :meth:`finish`.
    """

    args: argparse.Namespace
    device: torch.device
    run_dir: Path
    dataset: "SampleDataset"
    reference: Reference
    model: torch.nn.Module
    criterion: STCLCriterion
    optimizer: torch.optim.Optimizer
    source: ExemplarSource
    rng: np.random.Generator
    log: RunLog
    progress: bool = True
    start: int = 0  #: the first iteration this process trains
    best: dict = field(default_factory=lambda: {"score": -np.inf})
    last_eval: Optional[dict] = None
    saved_at: Optional[int] = None  #: the iteration of the last.pt on disk
    #: What periodic evaluations select on: the test set, or (--select-on holdout) the held-out videos.
    select_data: Optional["SampleDataset"] = None
    select_reference: Optional[Reference] = None
    bank_at: tuple = (None, None)  #: (iteration, the evaluation exemplar bank of the weights after it)

    @classmethod
    def start_or_resume(cls, args: argparse.Namespace, progress: bool = True) -> "TrainingRun":
        """Build the run from the options; continue ``--resume`` or start from ``--pretrained-ckpt``."""
        rng = seed_everything(args.seed)
        device = choose_device(args.device)
        run_dir = Path(args.output_dir) / args.model_name
        run_dir.mkdir(parents=True, exist_ok=True)
        dataset = build_dataset(args, report_dir=run_dir)
        record = dataset_record(args.dataset_name, args.use_model)
        reference = Reference.from_dataset(dataset, record, args.feature_fps)
        model = build_model(args).to(device)
        criterion, optimizer = build_criterion(args), build_optimizer(model, args)
        source = ExemplarSource.from_options(dataset, args, device)
        state, progress_state = None, {}
        if args.resume:
            state = read_training_state(args.resume)
            ckpt.load_weights(model, ckpt.model_state_of(state, args.resume), args.resume)
            optimizer.load_state_dict(state["optimizer"])
            restore_rng_state(rng, state["rng"])
            progress_state = {"start": state["iteration"] + 1, "best": state["best"],
                              "last_eval": state.get("last_eval"), "saved_at": state["iteration"]}
            print(f"resuming {run_dir} after iteration {state['iteration']}")
        elif args.pretrained_ckpt:
            raw = ckpt.read_checkpoint(args.pretrained_ckpt)
            ckpt.load_weights(model, ckpt.model_state_of(raw, args.pretrained_ckpt), args.pretrained_ckpt)
        log = RunLog(run_dir, result_columns(reference), LOSS_COLUMNS, resume=state,
                     start=progress_state.get("start", 0))
        select_data = dataset.holdout_view() if args.select_on == "holdout" else dataset
        select_reference = (Reference.from_dataset(select_data, record, args.feature_fps)
                            if args.select_on == "holdout" else reference)
        return cls(args, device, run_dir, dataset, reference, model, criterion, optimizer, source, rng, log, progress,
                   select_data=select_data, select_reference=select_reference, **progress_state)

    def step(self, iteration: int) -> Dict[str, float]:
        """Sample a batch and M exemplar videos per class, update the weights; the loss terms."""
        features, labels, _ = self.dataset.load_batch(self.rng)
        exemplars = self.source.draw(self.rng)
        try:
            return train_step(self.model, self.criterion, self.optimizer, torch.as_tensor(features, device=self.device),
                              torch.as_tensor(labels, device=self.device), exemplars, iteration, self.args.amp)
        except NonFiniteLossError as exc:
            raise STCLError(f"{exc}\n{_last_good(self.run_dir / 'last.pt', self.saved_at)}") from exc

    def log_losses(self, iteration: int, terms: Dict[str, float]) -> None:
        self.log.log_losses(iteration, terms, self.optimizer.param_groups[0]["lr"])

    def evaluation_bank(self, iteration: int) -> EvaluationBank:
        """The cached evaluation exemplar bank of the weights after ``iteration`` (test.py's
        bank; best.pt and last.pt carry it, so that they need no training features)."""
        if self.bank_at[0] != iteration:
            self.bank_at = (iteration, evaluation_bank(self.model, self.source.draw, seed=self.args.exemplar_seed,
                                                       draws=self.args.exemplar_draws,
                                                       class_names=self.dataset.class_names))
        return self.bank_at[1]

    def evaluate_and_select(self, iteration: int, periodic: bool) -> EvaluationResult:
        """Evaluate on the selection set (the test set, or the held-out videos with --select-on holdout);
        a periodic evaluation that beats the best so far writes best.pt (never with --select-on last)."""
        bank = self.evaluation_bank(iteration)
        result = test(self.model, self.select_data, self.source, self.args, self.device, self.select_reference,
                      progress=self.progress, bank=bank if self.args.exemplar_mode == "cached" else None)
        improved = periodic and self.args.select_on != "last" and result.selection_score > self.best["score"]
        if improved:
            self.best = {"score": result.selection_score, "iteration": iteration, "summary": result.summary}
            self.save_best(iteration)
        self.last_eval = {"iteration": iteration, "summary": result.summary, "score": result.selection_score}
        self.log.log_evaluation(iteration, result.summary, improved)
        held_out = " (held-out videos)" if self.args.select_on == "holdout" else ""
        progress_write(f"iteration {iteration}{held_out}: mAP@0.5 {result.summary.get('mAP@0.5', float('nan')):.2f}  "
                   f"{_headline(result.summary)}  cmAP {result.summary['cmAP']:.2f}"
                   + ("  (new best)" if improved else ""))
        return result

    def save_best(self, iteration: int) -> None:
        """best.pt: the current weights, as the selected checkpoint, with the numbers that chose them."""
        numbers = "holdout_summary" if self.args.select_on == "holdout" else "summary"
        ckpt.save_atomic({"model": self.model.state_dict(), "args": vars(self.args), "iteration": iteration,
                          numbers: self.best["summary"], BANK_KEY: self.evaluation_bank(iteration).to_checkpoint(),
                          "format": "stcl-net/1"}, self.run_dir / "best.pt")

    def evaluate_on_test_once(self) -> Tuple[dict, dict]:
        """--select-on holdout, after training: the test set, evaluated once for the final weights and
        once for best.pt (loaded into the model); the (best, last) entries of summary.json."""
        def on_test(entry: dict) -> dict:
            result = test(self.model, self.dataset, self.source, self.args, self.device, self.reference,
                          progress=self.progress)
            return {**entry, "summary": result.summary, "holdout_summary": entry["summary"]}

        last = on_test(self.last_eval)
        if "summary" not in self.best:
            return self.best, last
        if self.best["iteration"] == self.last_eval["iteration"]:  # the same weights: evaluated once
            return {**self.best, "summary": last["summary"], "holdout_summary": self.best["summary"]}, last
        selected = ckpt.read_checkpoint(self.run_dir / "best.pt")
        ckpt.load_weights(self.model, selected["model"], self.run_dir / "best.pt")
        return on_test(self.best), last

    def save_last(self, iteration: int) -> None:
        """last.pt: the weights and everything --resume needs to continue after ``iteration``."""
        self.log.flush()
        ckpt.save_atomic({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                          "args": vars(self.args), "iteration": iteration, "best": self.best,
                          "last_eval": self.last_eval, "rng": rng_state(self.rng), **self.log.rows(),
                          BANK_KEY: self.evaluation_bank(iteration).to_checkpoint(), "format": "stcl-net/1"},
                         self.run_dir / "last.pt")
        self.saved_at = iteration

    def finish(self, iteration: int, stopped: bool, argv: Optional[List[str]] = None) -> dict:
        """Evaluate the final weights (reported, never selected), save last.pt, write summary.json.

        After a Ctrl-C only last.pt is saved, the command that resumes it is printed (``argv``:
        the command line of the run, see :func:`resume_command`), and TrainingStopped is raised.
        """
        if not stopped and (self.last_eval is None or self.last_eval["iteration"] != iteration):
            self.evaluate_and_select(iteration, periodic=False)
        if self.saved_at != iteration:
            self.save_last(iteration)
        if stopped:
            print(f"stopped after iteration {iteration}; last.pt saved. Resume with:\n"
                  f"  {resume_command(argv, self.run_dir / 'last.pt')}")
            raise TrainingStopped(iteration)
        if self.args.select_on == "last":
            self.best = dict(self.last_eval)
            self.save_best(iteration)
        best, last = self.evaluate_on_test_once() if self.args.select_on == "holdout" else (self.best, self.last_eval)
        if not np.isfinite(best.get("score", 0.0)):  # no periodic evaluation ran: nothing was selected
            best = {k: v for k, v in best.items() if k != "score"}
        summary = {"run_dir": str(self.run_dir), "seed": self.args.seed, "select_on": self.args.select_on,
                   "selection": selection_rule(self.args, self.reference, self.select_reference),
                   "best": best, "last": last}
        write_json(self.run_dir / "summary.json", summary)
        print_summary(summary)
        return summary


def selection_rule(args: argparse.Namespace, reference: Reference, select_reference: Reference) -> str:
    """How best.pt was chosen, in words (summary.json, the printed summary, the seed and sweep tables)."""
    score = reference.selection_text  # the dataset record's, e.g. "sum of mAP@0.1..0.7"
    if args.select_on == "last":
        return "the final weights, no selection (--select-on last)"
    if args.select_on == "holdout":
        return (f"best {score} on {len(select_reference.video_names)} held-out training videos (--holdout "
                f"{args.holdout:g}, --holdout-seed {args.holdout_seed}) over the periodic evaluations; the test set "
                "evaluated once, for the selected and the last checkpoint")
    return f"best {score} on the test set over the periodic evaluations (the released protocol)"


def train(args: argparse.Namespace, progress: bool = True, argv: Optional[List[str]] = None) -> dict:
    """One training run (docs/METHOD.md#5-objective); returns the summary written to ``summary.json``.

    argv: the command line that asked for it (``main`` passes its own), repeated with
    ``--resume`` in the message after a Ctrl-C; nothing here reads ``sys.argv``.
    progress: progress bars (drawn only on a terminal and without ``--quiet`` all the same).
    Raises TrainingStopped after a Ctrl-C (last.pt saved) and STCLError on a non-finite loss.
    """
    progress = progress and bars_wanted(getattr(args, "quiet", False))  # a terminal, and no --quiet
    run = TrainingRun.start_or_resume(args, progress)
    iteration, stopped, running = run.start - 1, False, None
    bar = progress_bar(range(run.start, args.max_iter), initial=run.start, total=args.max_iter, desc="training",
                       enabled=progress)
    with run.log:  # TensorBoard's files are closed however the run ends
        with StopRequest() as stop:
            for iteration in bar:
                terms = run.step(iteration)
                running = terms["total"] if running is None else 0.95 * running + 0.05 * terms["total"]
                bar.set_postfix(loss=f"{running:.3f}")
                if iteration % args.log_every == 0:
                    run.log_losses(iteration, terms)
                if iteration % args.interval == 0 and iteration > 0:
                    run.evaluate_and_select(iteration, periodic=True)
                    run.save_last(iteration)
                if stop.requested:
                    stopped = True
                    break
        bar.close()
        return run.finish(iteration, stopped, argv)


def _last_good(last: Path, saved_at: Optional[int]) -> str:
    if saved_at is None:
        return "no checkpoint of this run was saved before it; lower --lr and start again"
    return (f"the last good checkpoint, from iteration {saved_at}, is kept at {last}; lower --lr and start again, "
            f"or start from its weights with --pretrained-ckpt {last}")


def result_columns(reference: Reference) -> List[str]:
    """The header of results.csv: mAP at each tIoU, their averages, cmAP, and the ``best`` mark."""
    thresholds = reference.tiou_thresholds
    averages = [k for k in summarize(np.zeros(len(thresholds)), thresholds, reference.averages) if k.startswith("avg")]
    return ["iteration", *[f"mAP@{t:g}" for t in thresholds], *averages, "cmAP", "best"]


def _headline(summary: Dict[str, float]) -> str:
    for key in ("avg 0.1:0.7", "avg 0.5:0.95"):
        if key in summary:
            return f"{key} {summary[key]:.2f}"
    return ""


def print_summary(summary: dict) -> None:
    best, last = summary["best"], summary["last"]
    if "summary" in best:
        print(f"\nselected checkpoint: best.pt from iteration {best['iteration']} -- {summary['selection']}")
        if "holdout_summary" in best:
            print(f"held-out training videos: {_headline(best['holdout_summary'])}; on the test set:")
        print(format_table(best["summary"]) + f"\ncmAP {best['summary']['cmAP']:.2f}")
    else:
        print("\nno periodic evaluation ran (--max-iter <= --interval), so no best.pt was selected")
    print(f"\nlast evaluation (iteration {last['iteration']}, no selection):")
    print(format_table(last["summary"]) + f"\ncmAP {last['summary']['cmAP']:.2f}")
    print(f"\nrun folder: {summary['run_dir']}")


def seed_sweep(args: argparse.Namespace, argv: Optional[List[str]] = None) -> List[dict]:
    """Train once per seed of ``--seeds`` and print mean +- std of best and last mAPs.

    Seed s runs in ``<output-dir>/<model-name>_seed<s>/``. With ``--resume`` (which must name
    the last.pt of one of those folders, as the message after a Ctrl-C does), every seed
    continues from its own folder's last.pt, and a seed without one starts afresh: a killed
    sweep continues where it stopped, and finished seeds only report their numbers again.
    argv: the sweep's command line, for the resume message (see :func:`train`).
    """
    seeds = list(args.seeds)  # options.seed_list
    if args.max_iter <= args.interval and args.select_on != "last":
        raise STCLError("--seeds compares the selected (best) checkpoints, so each run needs a periodic "
                        f"evaluation: make --max-iter ({args.max_iter}) larger than --interval ({args.interval})")
    run_names = {seed: f"{args.model_name}_seed{seed}" for seed in seeds}
    lasts = {seed: Path(args.output_dir) / name / "last.pt" for seed, name in run_names.items()}
    if args.resume and Path(args.resume).resolve() not in {p.resolve() for p in lasts.values()}:
        raise STCLError(f"--seeds with --resume continues every seed from its own run folder's last.pt "
                        f"({', '.join(map(str, lasts.values()))}); --resume {args.resume} is none of them. "
                        f"Give one of them to continue this sweep, or drop --seeds to resume one run")
    summaries = []
    for seed in seeds:
        resume = None
        if args.resume:
            resume = str(lasts[seed]) if lasts[seed].is_file() else None
            print(f"seed {seed}: " + (f"continuing from {resume}" if resume else "no last.pt yet, starting it"))
        run_args = argparse.Namespace(**{**vars(args), "seed": seed, "seeds": None, "model_name": run_names[seed],
                                         "resume": resume})
        summaries.append(train(run_args, argv=argv))
    print("\n" + seed_table(summaries))
    table_path = Path(args.output_dir) / f"{args.model_name}_seeds.csv"
    with atomic_write(table_path, newline="") as f:
        out = csv.writer(f)
        keys = list(summaries[0]["best"]["summary"])
        out.writerow(["seed", "checkpoint", *keys])
        for s in summaries:
            for which in ("best", "last"):
                out.writerow([s["seed"], which, *[s[which]["summary"][k] for k in keys]])
    print(f"per-seed numbers: {table_path}")
    return summaries


def seed_table(summaries: List[dict]) -> str:
    """mean +- std (sample std, n-1; "n/a" for one seed) over seeds of every metric, best and last checkpoints."""
    keys = list(summaries[0]["best"]["summary"])
    select_on = summaries[0].get("select_on", "test")
    lines = [f"{len(summaries)} seeds: {', '.join(str(s['seed']) for s in summaries)}; "
             f"best.pt: {summaries[0]['selection']}",
             f"{'metric':<14}{f'selected ({select_on})':>26}{'last':>22}"]
    stats = over_seeds(summaries)
    for key in keys:
        cells = [format_mean_std(stats[which][key]) for which in ("best", "last")]
        lines.append(f"{key:<14}{cells[0]:>26}{cells[1]:>22}")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        if args.seeds:
            seed_sweep(args, argv)
        else:
            train(args, argv=argv)
    except STCLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingStopped:
        return 130
    except KeyboardInterrupt:
        print("\naborted by a second Ctrl-C; --resume <run dir>/last.pt continues from the last saved state",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
