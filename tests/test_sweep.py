"""sweep.py: grids, trials on Ray Tune, a killed sweep continued, aggregation (issue 18).

One Ray sweep is run for the whole module (Ray's start-up is slow on a loaded 2-core machine):
it is killed after one trial finished and the other saved a last.pt, then run again.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import main as main_module
import sweep
from dataset.make_demo import make_demo_dataset
from helpers import require_module

REPO = Path(__file__).resolve().parents[1]
DEMO = ["--num-class", "3", "--feature-size", "32", "--max-seqlen", "48", "--num-exemplars", "4", "--device", "cpu",
        "--max-iter", "31", "--interval", "10", "--select-on", "holdout", "--holdout", "0.25"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    make_demo_dataset(root / "demo", num_train=24, num_test=12, num_class=3, feature_size=32, seed=1, difficulty=0.0)
    return root


def _session_pids(sid: int):
    """Processes of session ``sid`` (the sweep and the Ray processes it started)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            pids.append(int(stat.parent.name))
    return pids


MARKER = "STCL_SWEEP_TEST"


def _marked(value: str):
    """Processes whose environment holds ``MARKER=value``: the sweep and every Ray process it started
    (they inherit the driver's environment; Ray's workers are not always in the sweep's session)."""
    needle, pids = f"{MARKER}={value}".encode(), []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            marked = needle in environ.read_bytes().split(b"\0")
        except OSError:
            continue
        if marked:
            pids.append(int(environ.parent.name))
    return pids


def _kill_session(proc: subprocess.Popen, marker: str) -> None:
    for pid in _marked(marker):  # first, so that no trial goes on to finish meanwhile
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    while _session_pids(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    for pid in _session_pids(proc.pid):  # Ray workers outlive the raylet for a moment at most
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def swept(demo):
    """A 2-trial sweep (lr=1e-3, seeds 1 and 2, selecting on held-out videos), SIGKILLed once one
    trial finished and the other had saved a last.pt, then run again to the end.
    Returns (argv, finished run dir, midway run dir, mtimes of the finished one, log of the rerun)."""
    require_module("ray")
    argv = ["sweep.py", "--grid", "lr=1e-3", "--seeds", "1,2", "--num-cpus", "2", "--max-concurrent", "1",
            "--path-dataset", str(demo / "demo"), *DEMO, "--output-dir", str(demo / "runs"), "--model-name", "t"]
    # Ray runs its workers at nice 15: on a busy machine they would wait for every other process.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "RAY_worker_niceness": "0",
           MARKER: str(demo)}
    runs = [demo / "runs" / "t_lr=0.001_seed1", demo / "runs" / "t_lr=0.001_seed2"]
    with (demo / "first.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline, killed = time.time() + 300, None
            while time.time() < deadline and proc.poll() is None:
                done = [r for r in runs if (r / "summary.json").is_file()]
                midway = [r for r in runs if (r / "last.pt").is_file() and not (r / "summary.json").is_file()]
                if done and midway:
                    killed = (done[0], midway[0])
                    break
                time.sleep(0.01)
        finally:
            _kill_session(proc, str(demo))
    assert killed, "the sweep was not caught with one trial finished and one midway:\n" + \
        (demo / "first.log").read_text()[-3000:]
    finished, midway = killed
    assert not (midway / "summary.json").is_file(), "the unfinished trial outran the kill"
    mtimes = {name: (finished / name).stat().st_mtime_ns for name in ("summary.json", "best.pt", "results.csv")}
    second = subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return argv, finished, midway, mtimes, second.stdout + second.stderr


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_killed_sweep_continues_without_rerunning_finished_trials(swept):
    _, finished, midway, mtimes, log = swept
    assert f"{finished.name}: finished earlier (summary.json), not rerun" in log
    for name, mtime in mtimes.items():
        assert (finished / name).stat().st_mtime_ns == mtime, f"{finished.name}/{name} was rewritten"
    # Said by the sweep itself: what the Ray workers print reaches the driver's log asynchronously, and
    # may still be on its way when a short sweep ends.
    assert f"{midway.name}: unfinished, resumes from {midway / 'last.pt'}" in log
    assert (midway / "summary.json").is_file()
    assert [int(r["iteration"]) for r in read_csv(midway / "results.csv")] == [10, 20, 30]


def test_sweep_log_is_plain_text_without_rays_own_output(swept):
    *_, midway, _, log = swept
    assert "\x1b[" not in log and "\r" not in log  # no ANSI colours, no redraws in a file
    assert "Trial status" not in log and "╭" not in log  # no Tune status boxes
    assert "(run_trial pid=" not in log and "INFO" not in log  # no forwarded worker lines, no Ray INFO
    assert f"trial {midway.name}: done (selected mAP@0.5 " in log  # the sweep's own line per trial
    assert "mean mAP@" not in log and "sum mAP@0.1:0.7 (held-out videos)" in log and "+- " in log


def test_each_trial_equals_the_same_run_made_alone(swept, demo):
    argv, finished, midway, _, _ = swept
    for run in (finished, midway):
        seed = run.name.rsplit("seed", 1)[1]
        alone = ["--path-dataset", str(demo / "demo"), *DEMO, "--lr", "1e-3", "--seed", seed,
                 "--output-dir", str(demo / "alone"), "--model-name", run.name]
        assert main_module.main(alone) == 0
        a = json.loads((demo / "alone" / run.name / "summary.json").read_text())
        b = json.loads((run / "summary.json").read_text())
        assert (a["best"], a["last"], a["selection"]) == (b["best"], b["last"], b["selection"]), run.name
        assert read_csv(demo / "alone" / run.name / "results.csv") == read_csv(run / "results.csv")


def test_aggregated_mean_and_std_are_those_of_the_trials(swept, demo):
    _, finished, midway, _, log = swept
    trials = {json.loads((r / "summary.json").read_text())["seed"]: json.loads((r / "summary.json").read_text())
              for r in (finished, midway)}
    result = json.loads((demo / "runs" / "t_sweep.json").read_text())
    assert result["best_configuration"] == "lr=0.001" and result["select_on"] == "holdout"
    assert "held-out training videos" in result["selection"] + result["configuration_rule"]
    (group,) = result["configurations"]
    assert group["seeds"] == [1, 2]
    for which in ("best", "last"):
        for key, stats in group[which].items():
            values = np.array([trials[s][which]["summary"][key] for s in (1, 2)])
            assert stats["values"] == values.tolist()
            assert stats["mean"] == pytest.approx(values.mean(), abs=1e-12)
            assert stats["std"] == pytest.approx(values.std(ddof=1), abs=1e-12)
    scores = np.array([trials[s]["best"]["score"] for s in (1, 2)])  # the held-out selection scores
    assert group["score"]["mean"] == pytest.approx(scores.mean()) and group["score"]["values"] == scores.tolist()
    rows = read_csv(demo / "runs" / "t_sweep.csv")
    assert [(r["configuration"], r["checkpoint"]) for r in rows] == [("lr=0.001", "selected"), ("lr=0.001", "last")]
    assert float(rows[0]["mAP@0.5 mean"]) == pytest.approx(group["best"]["mAP@0.5"]["mean"])
    assert "best configuration: lr=0.001" in log and "--select-on holdout" in log
    assert "sum mAP@0.1:0.7 (held-out videos)" in log


# ----------------------------------------------------------------------------- without Ray

def _summary(seed, score, value, select_on="test"):
    return {"seed": seed, "select_on": select_on, "selection": "rule", "best": {"score": score, "iteration": 10,
            "summary": {"mAP@0.5": value, "cmAP": 2 * value}}, "last": {"iteration": 20,
            "summary": {"mAP@0.5": value - 1, "cmAP": 0.0}}}


def test_aggregate_and_choose_configuration_by_mean_score():
    trials = [{"config": {"lr": lr}, "seed": s, "run_dir": f"r{lr}{s}"} for lr in (1e-3, 5e-4) for s in (0, 1, 2)]
    summaries = [_summary(0, 10, 1.0), _summary(1, 30, 2.0), _summary(2, 20, 6.0),  # lr=1e-3: mean score 20
                 _summary(0, 25, 0.0), _summary(1, 19, 0.0), _summary(2, 19, 0.0)]  # lr=5e-4: mean score 21
    groups = sweep.aggregate(trials, summaries)
    assert [g["label"] for g in groups] == ["lr=0.001", "lr=0.0005"]
    assert groups[0]["best"]["mAP@0.5"]["mean"] == pytest.approx(3.0)
    assert groups[0]["best"]["mAP@0.5"]["std"] == pytest.approx(np.std([1.0, 2.0, 6.0], ddof=1))
    assert groups[0]["last"]["mAP@0.5"]["values"] == [0.0, 1.0, 5.0]
    assert groups[0]["best"]["cmAP"]["mean"] == pytest.approx(6.0)
    chosen = sweep.choose_configuration(groups)
    assert chosen["label"] == "lr=0.0005"  # the higher mean selection score, not the higher mAP@0.5
    table = sweep.sweep_table(groups, chosen, "test", "rule")
    assert "* best configuration: lr=0.0005" in table and "--select-on test" in table


def test_trials_are_run_folders_named_by_configuration_and_seed(demo, tmp_path):
    grid = sweep.parse_grid(["lr=5e-5,1e-4", "amp=false,true"], None)
    trials = sweep.plan_trials(["--path-dataset", "relative/demo", "--output-dir", str(tmp_path), "--model-name", "m"],
                               grid, [3552, 0])
    assert [t["name"] for t in trials][:3] == ["m_lr=5e-05_amp=false_seed3552", "m_lr=5e-05_amp=false_seed0",
                                               "m_lr=5e-05_amp=true_seed3552"]
    assert len(trials) == 8
    args = main_module.parse_args(trials[2]["argv"])
    assert (args.lr, args.amp, args.seed, args.model_name) == (5e-5, True, 3552, "m_lr=5e-05_amp=true_seed3552")
    assert Path(args.path_dataset).is_absolute() and Path(args.output_dir) == tmp_path
    assert main_module.parse_args(trials[0]["argv"]).amp is False


def test_grid_file_json(tmp_path):
    (tmp_path / "g.json").write_text('{"--max-iter": [100, 200]}')
    assert sweep.parse_grid(["k=5,7"], str(tmp_path / "g.json")) == {"max_iter": [100, 200], "k": [5.0, 7.0]}


def test_grid_file_yaml(tmp_path):
    require_module("yaml")
    (tmp_path / "g.yaml").write_text("lr: [5.0e-5, 1.0e-4]\nalpha3: 0.5\n")
    assert sweep.parse_grid([], str(tmp_path / "g.yaml")) == {"lr": [5e-5, 1e-4], "alpha3": [0.5]}


def test_a_yaml_grid_without_pyyaml_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` raises ImportError
    (tmp_path / "g.yaml").write_text("lr: [5.0e-5, 1.0e-4]\n")
    assert sweep.main(["--grid-file", str(tmp_path / "g.yaml"), "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'g.yaml'}: a YAML grid file needs the yaml module (PyYAML)" in err
    assert "pip install -r requirements-sweep.txt" in err and "cannot read the grid" not in err


@pytest.mark.parametrize("ci, outcome", [("", pytest.skip.Exception), ("true", pytest.fail.Exception)])
def test_a_missing_optional_module_skips_with_its_hint_but_fails_on_ci(ci, outcome, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="requirements-sweep.txt"):
        require_module("yaml")


def test_ranking_names_its_score_and_one_seed_has_no_std():
    trials = [{"config": {"lr": lr}, "seed": 0, "run_dir": f"r{lr}"} for lr in (1e-3, 5e-4)]
    groups = sweep.aggregate(trials, [_summary(0, 443.32, 1.0), _summary(0, 400.0, 2.0)])
    assert groups[0]["score"]["std"] is None and groups[0]["best"]["mAP@0.5"]["std"] is None
    args = main_module.parse_args(["--dataset-name", "Thumos14reduced"])
    name = sweep.score_name(args, "test")
    assert name == "sum mAP@0.1:0.7 (test)"
    assert sweep.score_name(main_module.parse_args(["--dataset-name", "ActivityNet1.2"]), "holdout") == \
        "mean mAP@0.5:0.95 (held-out videos)"
    table = sweep.sweep_table(groups, groups[0], "test", "rule", name)
    header = next(line for line in table.splitlines() if line.startswith("configuration "))
    assert "sum mAP@0.1:0.7 (test)" in header and "score (test set)" not in header
    assert "443.32 +- n/a" in table and "1.00 +- n/a" in table and "+- 0.00" not in table
    seeds = main_module.seed_table([{"seed": 1, "selection": "rule", "best": {"summary": {"cmAP": 3.0}},
                                     "last": {"summary": {"cmAP": 2.0}}}])
    assert "3.00 +- n/a" in seeds and "+- 0.00" not in seeds


@pytest.mark.parametrize("argv, message", [
    (["--grid", "lrr=1e-4"], "grid key 'lrr' is not a training flag of main.py (did you mean 'lr'?)"),
    (["--grid", "lr=1e-4,fast"], "grid value 'fast' of --lr does not parse as float"),
    (["--grid", "use-model=STCL_X"], "grid value 'STCL_X' of --use-model is not one of"),
    (["--grid", "seed=1,2"], "grid key 'seed' cannot be swept: give the seeds with --seeds"),
    (["--grid", "lr"], "expected KEY=VALUE[,VALUE...]"),
    (["--grid", "lr=1e-4", "--lr", "1e-3"], "lr is both a grid key and a flag"),
    (["--seeds", "1,x"], "--seeds '1,x': expected comma-separated integers"),
])
def test_bad_grid_is_one_clear_message(argv, message, tmp_path, capsys):
    assert sweep.main([*argv, "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_bad_grid_file_is_one_clear_message(tmp_path, capsys):
    (tmp_path / "g.yaml").write_text("lr: [1e-4\n")
    assert sweep.main(["--grid-file", str(tmp_path / "g.yaml")]) == 2
    assert f"{tmp_path / 'g.yaml'}: cannot read the grid" in capsys.readouterr().err


def test_without_ray_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert sweep.main(["--grid", "lr=1e-4", "--output-dir", str(tmp_path)]) == 2
    assert "pip install -r requirements-sweep.txt" in capsys.readouterr().err


def test_report_prints_each_trial_error_once_and_lists_stopped_trials(tmp_path, capsys):
    from types import SimpleNamespace

    trials = [{"name": n, "run_dir": str(tmp_path / n), "config": {}, "seed": 0} for n in ("a", "b", "c")]
    message = "data/Annotations: --holdout 0.9 ... leaves class 'X' with 1 training video(s)"
    results = [SimpleNamespace(config={"trial": n}, metrics={"error": message}, error=None) for n in ("a", "b")]
    assert sweep.report(results, trials, tmp_path, "m") == 2
    err = capsys.readouterr().err
    assert err.count(message) == 1 and "(trials a, b)" in err
    results = [SimpleNamespace(config={"trial": "c"}, metrics={}, error=None)]  # stopped by Ctrl-C
    assert sweep.report(results, trials[2:], tmp_path, "m") == 130
    assert "1 trials stopped before they finished: c" in capsys.readouterr().err


def test_a_run_folder_of_other_options_is_refused(tmp_path):
    from utils.checkpoint import save_atomic

    (trial,) = sweep.plan_trials(["--output-dir", str(tmp_path), "--model-name", "m"], {"lr": [1e-4]}, [0])
    args = vars(main_module.parse_args(trial["argv"]))
    run = Path(trial["run_dir"])
    run.mkdir()
    save_atomic({"args": {**args, "device": "cuda"}}, run / "last.pt")  # the device does not change the numbers
    assert not sweep.finished(trial)
    save_atomic({"args": {**args, "lr": 5e-5}}, run / "last.pt")
    with pytest.raises(sweep.SweepError, match=r"holds a run made with other options \(lr: 5e-05 there, 0.0001 now\)"):
        sweep.finished(trial)
