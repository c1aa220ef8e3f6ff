"""Sweeps: many runs of main.py's training (configurations x seeds) on Ray Tune.

    python sweep.py --grid 'lr=5e-5,1e-4' --seeds 3552,0,1 <main.py flags>
    python sweep.py --grid-file grid.yaml --seeds 3552,0,1 --gpus-per-trial 0.25 <main.py flags>
    python sweep.py ... --address auto          # on a cluster started with `ray start --head`

Every trial (one configuration, one seed) is an ordinary run folder
``<output-dir>/<model-name>_<key>=<value>..._seed<N>/`` made in-process by
:func:`main.train`, exactly as ``python main.py`` would make it. Ray Tune runs the trials
in parallel, as many at a time as the resources each asks for (``--cpus-per-trial``,
``--gpus-per-trial``) allow. Run the same command again after a kill: trials whose folder
holds a ``summary.json`` are not rerun, unfinished ones resume from their ``last.pt``.

The results are aggregated per configuration (mean +- sample std over seeds of every metric,
for the selected and the last checkpoint) into ``<model-name>_sweep.csv`` and
``<model-name>_sweep.json`` beside the run folders, and the best configuration is the one
with the highest mean selection score: on the test set with ``--select-on test`` (the
released protocol) or ``last``, on held-out training videos with ``--select-on holdout``.

Ray is optional (``pip install -r requirements-sweep.txt``); ``main.py --seeds`` needs no Ray.
"""
from __future__ import annotations

import argparse
import csv
import difflib
import itertools
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple


from options import build_parser, explicit_args, parse_args, seed_list
from utils.atomic import atomic_write, write_json
from utils.errors import STCLError
from utils.seeds import format_mean_std, mean_std, over_seeds

REPO = Path(__file__).resolve().parent
INSTALL_HINT = "pip install -r requirements-sweep.txt   (or: pip install 'ray[tune]')"
#: Flags a grid may not vary: the sweep sets them per trial, or they choose among configurations.
SWEEP_OWNED = {"seed": "give the seeds with --seeds", "seeds": "give the seeds with --seeds",
               "model_name": "--model-name is the prefix of every trial's run folder",
               "output_dir": "--output-dir is where every trial's run folder goes",
               "resume": "a rerun of the same sweep resumes unfinished trials by itself",
               "select_on": "the selection rule also chooses the configuration, so it is one for the whole sweep",
               "holdout": "configurations are compared on one held-out set, so --holdout is one for the whole sweep",
               "holdout_seed": "configurations are compared on one held-out set, so --holdout-seed is one "
                               "for the whole sweep"}
#: Options of a run that do not change its numbers: a finished run folder may differ in these.
NOT_COMPARED = {"resume", "seeds", "device", "output_dir", "quiet"}


class SweepError(STCLError):
    """A bad grid, a bad sweep option, or Ray missing."""


# ======================================================================================
# The grid
# ======================================================================================

def _training_actions() -> Dict[str, argparse.Action]:
    """main.py's options by dest (its parser, ``options.build_parser``)."""
    return {a.dest: a for a in build_parser()._actions if a.option_strings and a.dest != "help"}


def grid_action(key: str, actions: Dict[str, argparse.Action]) -> argparse.Action:
    """The option of main.py that grid key ``key`` names (``lr``, ``--max-iter``, ``max_iter``)."""
    dest = key.strip().lstrip("-").replace("-", "_")
    if dest in SWEEP_OWNED:
        raise SweepError(f"grid key {key!r} cannot be swept: {SWEEP_OWNED[dest]}")
    if dest not in actions:
        flags = [f.lstrip("-") for a in actions.values() for f in a.option_strings]
        close = difflib.get_close_matches(key.strip().lstrip("-"), flags, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SweepError(f"grid key {key!r} is not a training flag of main.py{hint}; see python main.py --help")
    return actions[dest]


def _is_switch(action: argparse.Action) -> bool:
    return action.nargs == 0 and isinstance(action.const, bool)


def parse_value(action: argparse.Action, raw) -> object:
    """One grid value as main.py would parse it on the command line; SweepError if it does not."""
    flag = action.option_strings[-1]
    text = str(raw).strip()
    if _is_switch(action):
        if isinstance(raw, bool):
            return raw
        if text.lower() in ("true", "yes", "on", "1"):
            return True
        if text.lower() in ("false", "no", "off", "0"):
            return False
        raise SweepError(f"grid value {text!r} of {flag} is not true or false")
    kind = action.type or str
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise SweepError(f"grid value {text!r} of {flag} does not parse as {getattr(kind, '__name__', kind)}") from None
    if action.choices is not None and value not in action.choices:
        raise SweepError(f"grid value {text!r} of {flag} is not one of {sorted(action.choices)}")
    return value


def parse_grid(specs: Sequence[str], grid_file: Optional[str]) -> Dict[str, List[object]]:
    """``--grid 'lr=5e-5,1e-4'`` (repeatable) and ``--grid-file`` (YAML or JSON mapping) as
    ``{dest: [values]}`` in the order given. An empty grid is one configuration: the flags alone."""
    actions = _training_actions()
    entries: List[Tuple[str, List[object], str]] = []
    if grid_file:
        entries += _read_grid_file(Path(grid_file))
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise SweepError(f"--grid {spec!r}: expected KEY=VALUE[,VALUE...], e.g. --grid 'lr=5e-5,1e-4'")
        entries.append((key, [v for v in values.split(",") if v.strip()], f"--grid {spec!r}"))
    grid: Dict[str, List[object]] = {}
    for key, values, where in entries:
        action = grid_action(key, actions)
        if action.dest in grid:
            raise SweepError(f"{where}: grid key {key!r} is given twice")
        parsed = [parse_value(action, v) for v in values]
        if not parsed:
            raise SweepError(f"{where}: grid key {key!r} has no values")
        if len(set(map(repr, parsed))) != len(parsed):
            raise SweepError(f"{where}: grid key {key!r} lists a value twice: {values}")
        grid[action.dest] = parsed
    return grid


def _read_grid_file(path: Path) -> List[Tuple[str, List[object], str]]:
    if not path.is_file():
        raise SweepError(f"grid file not found: {path}")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        load = json.loads
    else:
        try:
            import yaml
        except ImportError:
            raise SweepError(f"{path}: a YAML grid file needs the yaml module (PyYAML), which is not installed: "
                             f"{INSTALL_HINT}; or write the grid as JSON (a .json file)") from None
        load = yaml.safe_load
    try:
        data = load(text)
    except Exception as exc:  # json.JSONDecodeError or yaml.YAMLError: a malformed file
        raise SweepError(f"{path}: cannot read the grid ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or not data:
        raise SweepError(f"{path}: expected a mapping of main.py flags to lists of values, e.g. "
                         "{\"lr\": [5e-5, 1e-4], \"alpha3\": [0.5, 1.0]}")
    return [(str(k), list(v) if isinstance(v, (list, tuple)) else [v], str(path)) for k, v in data.items()]


def configurations(grid: Dict[str, List[object]]) -> List[Dict[str, object]]:
    """Every combination of the grid's values (the first key varies slowest)."""
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def config_label(config: Dict[str, object]) -> str:
    """``lr=5e-05,alpha3=0.5`` (``flags alone`` for the empty grid)."""
    return ",".join(f"{k}={format_value(v)}" for k, v in config.items()) or "flags alone"


def trial_name(model_name: str, config: Dict[str, object], seed: int) -> str:
    """The run folder name of one trial: the configuration and the seed, e.g. ``STCL_lr=5e-05_seed3552``."""
    parts = [model_name, *(f"{k}={format_value(v)}" for k, v in config.items()), f"seed{seed}"]
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", "_".join(parts))


# ======================================================================================
# Trials
# ======================================================================================

def _absolute_paths(argv: List[str]) -> List[str]:
    """The flags with file paths made absolute: Ray runs each trial in a directory of its own."""
    given = explicit_args(argv)
    out = list(argv)
    for dest in ("path_dataset", "pretrained_ckpt"):
        if dest in given:
            out += [f"--{dest.replace('_', '-')}", str(Path(given[dest]).resolve())]
    return out


def plan_trials(base_argv: List[str], grid: Dict[str, List[object]], seeds: List[int]) -> List[dict]:
    """One plain dict per trial (configuration x seed): what a Ray worker needs to run it."""
    given = explicit_args(base_argv)
    for dest in grid:
        if dest in given:
            raise SweepError(f"{dest} is both a grid key and a flag ({given[dest]!r}); give it in one place")
    for dest in SWEEP_OWNED:
        if dest in given and dest in ("seed", "seeds", "resume"):
            raise SweepError(f"--{dest.replace('_', '-')} is not a sweep flag: {SWEEP_OWNED[dest]}")
    base = parse_args(base_argv)
    output_dir = str(Path(base.output_dir).resolve())
    actions = _training_actions()
    trials = []
    for config in configurations(grid):
        argv = _absolute_paths(base_argv)
        for dest, value in config.items():
            action = actions[dest]
            if _is_switch(action):
                argv += [action.option_strings[-1]] if value == action.const else []
            else:
                argv += [action.option_strings[-1], str(value)]
        for seed in seeds:
            name = trial_name(base.model_name, config, seed)
            trial_argv = argv + ["--seed", str(seed), "--model-name", name, "--output-dir", output_dir]
            trials.append({"name": name, "argv": trial_argv, "config": config, "seed": seed,
                           "run_dir": str(Path(output_dir) / name), "repo": str(REPO)})
    names = [t["name"] for t in trials]
    if len(set(names)) != len(names):
        raise SweepError("two trials would share a run folder; use values that differ when printed with %g")
    for trial in trials:
        args = parse_args(trial["argv"])  # main.py's own checks, before any trial starts
        if args.max_iter <= args.interval and args.select_on != "last":
            raise SweepError(f"{trial['name']}: a sweep compares the selected (best) checkpoints, so each trial needs "
                             f"a periodic evaluation: make --max-iter ({args.max_iter}) larger than --interval "
                             f"({args.interval}), or pass --select-on last")
    return trials


def _check_same_options(run_dir: Path, args: argparse.Namespace) -> None:
    """A run folder left by an earlier sweep must have been made with the options of this trial."""
    from utils import checkpoint as ckpt

    last = run_dir / "last.pt"
    if not last.is_file():
        return
    stored = ckpt.read_checkpoint(last).get("args", {})
    changed = [(k, stored[k], v) for k, v in vars(args).items()
               if k not in NOT_COMPARED and k in stored and stored[k] != v]
    if changed:
        listing = ", ".join(f"{k}: {old!r} there, {new!r} now" for k, old, new in changed[:4])
        raise SweepError(f"{run_dir} holds a run made with other options ({listing}); remove the folder or "
                         "give another --model-name")


def finished(trial: dict) -> bool:
    """Whether the trial's run folder holds a finished run (summary.json) made with its options."""
    run_dir = Path(trial["run_dir"])
    _check_same_options(run_dir, parse_args(trial["argv"]))
    return (run_dir / "summary.json").is_file()


def execute_trial(trial: dict, threads: int = 1) -> dict:
    """Run (or reuse, or resume) one trial in this process; returns its summary.json.

    A run folder with a summary.json is finished: it is returned as it is. One with a
    last.pt continues from it. Otherwise main.train starts the run from scratch.
    """
    import torch

    import main

    torch.set_num_threads(max(1, threads))
    run_dir = Path(trial["run_dir"])
    args = parse_args(trial["argv"])
    if finished(trial):
        return json.loads((run_dir / "summary.json").read_text())
    if (run_dir / "last.pt").is_file():
        args.resume = str(run_dir / "last.pt")
    return main.train(args, progress=False)


def run_trial(config: dict, trials: Dict[str, dict], threads: int) -> None:
    """The Ray Tune trainable: the trial ``config["trial"]`` (a name of ``trials``), reported to
    Tune as flat metrics.

    A bad-input error (STCLError) is reported as the metric ``error`` rather than raised, so
    that the sweep prints it as one clear message.
    """
    trial = trials[config["trial"]]
    if trial["repo"] not in sys.path:
        sys.path.insert(0, trial["repo"])
    from ray import tune

    import sweep

    try:
        summary = sweep.execute_trial(trial, threads=threads)
    except STCLError as exc:
        tune.report({"error": str(exc)})
        return
    tune.report(sweep.flat_metrics(summary))


def flat_metrics(summary: dict) -> Dict[str, float]:
    """``selected/mAP@0.5``, ``last/cmAP``, ... and ``score`` (the selection score) of one summary."""
    metrics = {"score": float(summary["best"].get("score", float("nan")))}
    for which, key in (("selected", "best"), ("last", "last")):
        for name, value in summary[key].get("summary", {}).items():
            metrics[f"{which}/{name}"] = float(value)
    return metrics


# ======================================================================================
# Aggregation
# ======================================================================================

def aggregate(trials: List[dict], summaries: List[dict]) -> List[dict]:
    """Per configuration (in grid order): the seeds, each metric's per-seed values and mean +- std
    (sample std, n-1; None for one seed: there is no spread to measure) for the selected and the last
    checkpoint, and the mean score."""
    groups: Dict[str, dict] = {}
    for trial, summary in zip(trials, summaries):
        label = config_label(trial["config"])
        group = groups.setdefault(label, {"label": label, "config": trial["config"], "seeds": [], "runs": [],
                                          "summaries": []})
        group["seeds"].append(trial["seed"])
        group["runs"].append(trial["run_dir"])
        group["summaries"].append(summary)
    out = []
    for group in groups.values():
        summaries_ = group.pop("summaries")
        group.update(over_seeds(summaries_))
        group["score"] = mean_std([s["best"]["score"] for s in summaries_])
        out.append(group)
    return out


def choose_configuration(groups: List[dict]) -> dict:
    """The configuration with the highest mean selection score (the first one on a tie)."""
    return max(groups, key=lambda g: g["score"]["mean"])


def selection_rule(summaries: List[dict]) -> Tuple[str, str]:
    """(select_on, how checkpoints were selected) shared by every trial; SweepError if they differ."""
    rules = {(s.get("select_on", "test"), s["selection"]) for s in summaries}
    if len(rules) != 1:
        raise SweepError(f"the trials were selected by different rules: {sorted(rules)}")
    return rules.pop()


def configuration_rule(select_on: str) -> str:
    if select_on == "holdout":
        return "highest mean over seeds of the selected checkpoints' score on the held-out training videos"
    return "highest mean over seeds of the selected checkpoints' score on the test set"


def score_name(args: argparse.Namespace, select_on: str) -> str:
    """What the configurations are ranked by, as the ranking's column header: the dataset record's
    selection score and where it was measured, e.g. ``sum mAP@0.1:0.7 (test)``."""
    from dataset_record import dataset_record

    record = dataset_record(args.dataset_name, args.use_model)
    first, last = record.selection_thresholds[0], record.selection_thresholds[-1]
    on = {"holdout": "held-out videos", "last": "test, last"}.get(select_on, "test")
    return f"{record.selection} mAP@{first:g}:{last:g} ({on})"


def sweep_table(groups: List[dict], chosen: dict, select_on: str, selection: str,
                score: str = "selection score") -> str:
    """The whole sweep as text: one mean +- std block per configuration, then the ranking.

    score: the header of the ranking's score column (:func:`score_name`)."""
    lines = [f"checkpoints: {selection} (--select-on {select_on})",
             f"configuration: {configuration_rule(select_on)}", ""]
    for group in groups:
        lines.append(f"{group['label']}  ({len(group['seeds'])} seeds: {', '.join(map(str, group['seeds']))})"
                     + ("   <- best configuration" if group is chosen else ""))
        lines.append(f"  {'metric':<14}{'selected':>22}{'last':>22}")
        for key in group["best"]:
            cells = [format_mean_std(group[w][key]) for w in ("best", "last")]
            lines.append(f"  {key:<14}{cells[0]:>22}{cells[1]:>22}")
        lines.append("")
    width = max(len(g["label"]) for g in groups) + 2
    avg = next((k for k in ("avg 0.1:0.7", "avg 0.5:0.95") if k in groups[0]["best"]), None)
    score_width = max(24, len(score) + 2)
    headers = [f"selected {avg or 'avg'}", f"last {avg or 'avg'}"]
    lines.append(f"{'configuration':<{width}}{'seeds':>6}{score:>{score_width}}{headers[0]:>22}{headers[1]:>22}")
    for group in groups:
        mark = " *" if group is chosen else ""
        cells = [format_mean_std(group[w][avg]) if avg else "-" for w in ("best", "last")]
        lines.append(f"{group['label'] + mark:<{width}}{len(group['seeds']):>6}"
                     f"{format_mean_std(group['score']):>{score_width}}{cells[0]:>22}{cells[1]:>22}")
    lines.append(f"* best configuration: {chosen['label']}" + (f"  (avg = {avg}, test set)" if avg else ""))
    return "\n".join(lines)


def write_results(output_dir: Path, model_name: str, groups: List[dict], chosen: dict, select_on: str,
                  selection: str) -> Tuple[Path, Path]:
    """``<model-name>_sweep.csv`` (one row per configuration and checkpoint) and ``_sweep.json``."""
    csv_path = output_dir / f"{model_name}_sweep.csv"
    json_path = output_dir / f"{model_name}_sweep.json"
    keys = list(groups[0]["best"])
    config_keys = list(groups[0]["config"])
    rows = [["configuration", *config_keys, "seeds", "checkpoint", "score mean", "score std",
             *[f"{k} {s}" for k in keys for s in ("mean", "std")]]]
    for group in groups:
        for which, label in (("best", "selected"), ("last", "last")):
            rows.append([group["label"], *[format_value(group["config"][k]) for k in config_keys],
                         " ".join(map(str, group["seeds"])), label, group["score"]["mean"],
                         _csv_std(group["score"]["std"]),
                         *[group[which][k]["mean"] if s == "mean" else _csv_std(group[which][k]["std"])
                           for k in keys for s in ("mean", "std")]])
    with atomic_write(csv_path, newline="") as f:
        csv.writer(f).writerows(rows)
    payload = {"select_on": select_on, "selection": selection, "configuration_rule": configuration_rule(select_on),
               "best_configuration": chosen["label"], "configurations": groups}
    write_json(json_path, payload)
    return csv_path, json_path


def _csv_std(std: Optional[float]):
    return "n/a" if std is None else std


# ======================================================================================
# Command line
# ======================================================================================

def build_sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Run main.py's training for every configuration of a grid and every seed, on Ray Tune; "
                    "every other flag goes to main.py (see python main.py --help)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a main.py flag and its values, e.g. 'lr=5e-5,1e-4'; repeatable: the grid is every combination")
    p.add_argument("--grid-file", default=None,
                   help="YAML or JSON mapping of main.py flags to lists of values, e.g. {lr: [5e-5, 1e-4]}")
    p.add_argument("--seeds", default="3552", help="comma-separated seeds: every configuration runs once per seed")
    p.add_argument("--cpus-per-trial", type=float, default=1,
                   help="CPUs Ray reserves for each trial (torch uses that many threads)")
    p.add_argument("--gpus-per-trial", type=float, default=0,
                   help="GPUs Ray reserves for each trial; 0.25 puts four trials on one GPU; 0 trains on CPU")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="at most this many trials at once; none: as many as the resources allow")
    p.add_argument("--address", default=None,
                   help="Ray cluster to run on ('auto' = the one this machine joined with `ray start`); "
                        "none: start a Ray instance on this machine for this sweep")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs of the Ray instance this sweep starts; none: all of them; ignored with --address")
    return p


def parse_seeds(text: str) -> List[int]:
    """``--seeds``, read as main.py reads its own (``options.seed_list``)."""
    try:
        return seed_list(text)
    except argparse.ArgumentTypeError as exc:
        raise SweepError(f"--seeds {exc}") from None


def import_ray():
    try:
        import ray
        from ray import tune
    except ImportError:
        raise SweepError(f"sweep.py runs its trials on Ray Tune, which is not installed: {INSTALL_HINT}") from None
    return ray, tune


def run_sweep(sweep_args: argparse.Namespace, main_argv: List[str]) -> int:
    grid = parse_grid(sweep_args.grid, sweep_args.grid_file)
    trials = plan_trials(main_argv, grid, parse_seeds(sweep_args.seeds))
    if sweep_args.cpus_per_trial <= 0 or sweep_args.gpus_per_trial < 0:
        raise SweepError("--cpus-per-trial must be positive and --gpus-per-trial at least 0")
    base = parse_args(main_argv)
    output_dir = Path(base.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    num_configs = len(configurations(grid))
    print(f"sweep: {num_configs} configurations x {len(trials) // num_configs} seeds = {len(trials)} trials, "
          f"run folders in {output_dir}")
    pending = [t for t in trials if not finished(t)]
    for trial in trials:
        if trial not in pending:
            print(f"{trial['name']}: finished earlier (summary.json), not rerun")
        elif (Path(trial["run_dir"]) / "last.pt").is_file():
            print(f"{trial['name']}: unfinished, resumes from {Path(trial['run_dir']) / 'last.pt'}")
    results = _run_on_ray(sweep_args, pending, output_dir, base.model_name) if pending else []
    return report(results, trials, output_dir, base.model_name)


#: Ray's and Tune's own logging, quietened: their warnings and INFO lines, the boxed status tables,
#: and the workers' forwarded output (each trial's lines are in its run folder's files; the sweep
#: prints one line per trial, :class:`TrialLines`).
RAY_QUIET = {"log_to_driver": False, "logging_level": logging.ERROR, "include_dashboard": False}


def _trial_lines(tune):
    """A Tune callback printing one plain line when a trial starts, finishes or fails."""

    class TrialLines(tune.Callback):
        def __init__(self, total: int):
            self.total, self.done = total, 0

        def on_trial_start(self, iteration, trials, trial, **info):
            print(f"trial {trial.config['trial']}: started", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done += 1
            result = trial.last_result or {}
            numbers = (f"error: {result['error']}" if "error" in result else
                       f"selected mAP@0.5 {result.get('selected/mAP@0.5', float('nan')):.2f}, "
                       f"last mAP@0.5 {result.get('last/mAP@0.5', float('nan')):.2f}")
            print(f"trial {trial.config['trial']}: done ({numbers}) [{self.done} of {self.total}]", flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.done += 1
            print(f"trial {trial.config['trial']}: failed (see below) [{self.done} of {self.total}]", flush=True)

    return TrialLines


def _run_on_ray(sweep_args: argparse.Namespace, trials: List[dict], output_dir: Path, model_name: str):
    """Run ``trials`` on Ray Tune (a local instance, or the cluster at ``--address``); the ResultGrid."""
    ray, tune = import_ray()
    logging.getLogger("ray").setLevel(logging.ERROR)  # before init: its first warnings come from there
    # Tune's newer console output prints its experiment box at any verbosity; the older one is silent at 0
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if sweep_args.address:
        ray.init(address=sweep_args.address, **RAY_QUIET)
    else:
        ray.init(num_cpus=sweep_args.num_cpus, **RAY_QUIET)
    try:
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, trials={t["name"]: t for t in trials},
                                 threads=max(1, int(sweep_args.cpus_per_trial))),
            {"cpu": sweep_args.cpus_per_trial, "gpu": sweep_args.gpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([t["name"] for t in trials])},
            tune_config=tune.TuneConfig(max_concurrent_trials=sweep_args.max_concurrent,
                                        trial_name_creator=lambda t: t.config["trial"],
                                        trial_dirname_creator=lambda t: t.config["trial"]),
            run_config=tune.RunConfig(name=f"{model_name}_sweep", storage_path=str(output_dir / "ray"),
                                      verbose=0, callbacks=[_trial_lines(tune)(len(trials))]))
        return tuner.fit()
    finally:
        ray.shutdown()


def report(results, trials: List[dict], output_dir: Path, model_name: str) -> int:
    """Print the failures, aggregate the finished trials, write the tables; the exit code."""
    by_name = {r.config["trial"]: r for r in results}
    bad_input, crashed, stopped, done = [], [], [], []
    for trial in trials:
        result = by_name.get(trial["name"])
        summary_path = Path(trial["run_dir"]) / "summary.json"
        if result is not None and result.metrics and "error" in result.metrics:
            bad_input.append((trial["name"], result.metrics["error"]))
        elif summary_path.is_file():
            done.append((trial, json.loads(summary_path.read_text())))
        elif result is not None and result.error is not None:
            crashed.append(f"{trial['name']}: {result.error}")
        else:
            stopped.append(trial["name"])
    for message, names in _by_message(bad_input).items():
        print(f"error: {message} (trial{'s' if len(names) > 1 else ''} {', '.join(names)})", file=sys.stderr)
    for line in crashed:
        print(f"trial failed: {line}", file=sys.stderr)
    if done:
        summaries = [s for _, s in done]
        select_on, selection = selection_rule(summaries)
        groups = aggregate([t for t, _ in done], summaries)
        chosen = choose_configuration(groups)
        score = score_name(parse_args(done[0][0]["argv"]), select_on)
        print("\n" + sweep_table(groups, chosen, select_on, selection, score))
        csv_path, json_path = write_results(output_dir, model_name, groups, chosen, select_on, selection)
        print(f"\n{len(done)} of {len(trials)} trials aggregated: {csv_path}, {json_path}")
    if stopped:
        print(f"{len(stopped)} trials stopped before they finished: {', '.join(stopped)}", file=sys.stderr)
    if crashed or stopped:
        print("to continue, run the same sweep.py command again: finished trials are kept, unfinished ones resume "
              "from their last.pt", file=sys.stderr)
    if bad_input:
        return 2
    return 1 if crashed else 130 if stopped else 0


def _by_message(errors: List[Tuple[str, str]]) -> Dict[str, List[str]]:
    """The trials' error messages, each once, with the trials that gave it."""
    grouped: Dict[str, List[str]] = {}
    for name, message in errors:
        grouped.setdefault(message, []).append(name)
    return grouped


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    sweep_args, main_argv = build_sweep_parser().parse_known_args(argv)
    try:
        return run_sweep(sweep_args, main_argv)
    except STCLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
