"""The main job: build a demo, train, evaluate, select, reload (issue 3)."""
import contextlib
import csv
import io
import json
import os
import shlex
import signal
import sys

import numpy as np
import pytest
import torch

import inference
import main as main_module
import test as test_module
from dataset.make_demo import make_demo_dataset
from options import parse_args
from exemplar_source import ExemplarSource
from model import build_model
from utils.visualize import main as visualize_main

DEMO = ["--num-class", "3", "--feature-size", "32", "--max-seqlen", "48", "--lr", "1e-3", "--num-exemplars", "4",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    make_demo_dataset(root / "demo", num_train=24, num_test=12, num_class=3, feature_size=32, seed=1,
                      difficulty=0.0)  # the easy end, so that 200 iterations localize well
    return root


@pytest.fixture(scope="module")
def trained(demo):
    argv = ["--path-dataset", str(demo / "demo"), *DEMO, "--max-iter", "201", "--interval", "50",
            "--output-dir", str(demo / "runs"), "--model-name", "e2e"]
    assert main_module.main(argv) == 0
    return demo / "runs" / "e2e", argv


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_writes_checkpoints_and_logs(trained):
    run, _ = trained
    for name in ("best.pt", "last.pt", "results.csv", "losses.csv", "summary.json"):
        assert (run / name).is_file(), name
    assert list((run / "tb").iterdir()), "no TensorBoard event file"
    rows = read_csv(run / "results.csv")
    # periodic evaluations after iterations 50 .. 200; the last update (200) is one of them
    assert [int(r["iteration"]) for r in rows] == [50, 100, 150, 200]
    assert {"mAP@0.1", "mAP@0.5", "mAP@0.9", "avg 0.1:0.7", "cmAP"} <= set(rows[0])
    summary = json.loads((run / "summary.json").read_text())
    best_row = max(rows, key=lambda r: sum(float(r[f"mAP@{t}"]) for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)))
    assert summary["best"]["iteration"] == int(best_row["iteration"])
    assert summary["last"]["iteration"] == 200
    assert "test set" in summary["selection"]
    best = torch.load(run / "best.pt", map_location="cpu", weights_only=False)
    assert best["args"]["num_class"] == 3 and best["iteration"] == summary["best"]["iteration"]


def test_reloaded_best_checkpoint_reproduces_its_map(trained):
    run, _ = trained
    out = run / "reloaded"
    assert test_module.main(["--pretrained-ckpt", str(run / "best.pt"), "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    expected = json.loads((run / "summary.json").read_text())["best"]["summary"]
    for key, value in expected.items():
        assert metrics["summary"][key] == pytest.approx(value, abs=1e-9), key
    detections = json.loads((out / "detections.json").read_text())
    assert set(detections) == {"version", "results", "external_data"}
    first = next(d for dets in detections["results"].values() for d in dets)
    assert set(first) == {"label", "score", "segment"} and first["segment"][0] < first["segment"][1]


def test_training_beats_an_untrained_model(trained, demo):
    run, argv = trained
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    untrained = build_model(args)
    dataset = main_module.build_dataset(args)
    before = inference.test(untrained, dataset, ExemplarSource(dataset, args.num_exemplars, torch.device("cpu")),
                              args, torch.device("cpu"), progress=False).summary["mAP@0.5"]
    after = json.loads((run / "summary.json").read_text())["best"]["summary"]["mAP@0.5"]
    assert after > 30 and after > before + 20, f"mAP@0.5: untrained {before:.2f}, trained {after:.2f}"


def test_same_seed_same_loss_curve(demo):
    curves = []
    for name in ("a", "b"):
        argv = ["--path-dataset", str(demo / "demo"), *DEMO, "--max-iter", "15", "--interval", "1000",
                "--log-every", "1", "--output-dir", str(demo / "seeded"), "--model-name", name]
        assert main_module.main(argv) == 0
        curves.append([[float(v) for v in row.values()] for row in read_csv(demo / "seeded" / name / "losses.csv")])
    assert len(curves[0]) == 15
    np.testing.assert_array_equal(np.array(curves[0]), np.array(curves[1]))


def test_from_cas_replays_the_evaluation(trained, tmp_path):
    run, _ = trained
    cas = tmp_path / "cas"
    assert test_module.main(["--pretrained-ckpt", str(run / "best.pt"), "--output", str(tmp_path / "a"),
                             "--save-cas", str(cas), "--visualize", "1"]) == 0
    assert test_module.main(["--from-cas", str(cas), "--output", str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())["summary"]
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())["summary"]
    assert a == b
    assert len(list((tmp_path / "a" / "figures").glob("*.png"))) == 1
    proposals = json.loads((tmp_path / "a" / "proposals.json").read_text())
    assert all(len(row) == 4 for rows in proposals.values() for row in rows)
    # one layout: the folder's proposals.json is the evaluation's, in snippets; the figures read it too
    saved = sorted(p.name for p in cas.iterdir() if p.suffix == ".json")
    assert saved == ["meta.json", "proposals.json"]
    assert json.loads((cas / "proposals.json").read_text()) == proposals
    video = next(iter(proposals))
    assert visualize_main(["--from-cas", str(cas), "--video", video, "--out", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / f"{video}.png").is_file()


def sweep_argv(demo, output_dir):
    return ["--path-dataset", str(demo / "demo"), *DEMO, "--max-iter", "6", "--interval", "5",
            "--output-dir", str(output_dir), "--model-name", "s", "--seeds", "1,2"]


@pytest.fixture(scope="module")
def sweep(demo):
    """An uninterrupted two-seed sweep: (what it printed, the rows of its per-seed CSV)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main_module.main(sweep_argv(demo, demo / "sweep")) == 0
    return printed.getvalue(), read_csv(demo / "sweep" / "s_seeds.csv")


def test_seed_sweep_table_is_the_mean_and_std_of_the_per_seed_csv(sweep):
    out, rows = sweep
    assert "2 seeds: 1, 2" in out
    assert [(r["seed"], r["checkpoint"]) for r in rows] == [("1", "best"), ("1", "last"), ("2", "best"), ("2", "last")]
    table = {line[:14].strip(): line[14:] for line in out.splitlines() if " +- " in line}
    keys = [k for k in rows[0] if k not in ("seed", "checkpoint")]
    assert set(table) == set(keys) and "cmAP" in keys
    for key in keys:
        cells = []
        for which in ("best", "last"):
            values = np.array([float(r[key]) for r in rows if r["checkpoint"] == which])
            cells.append(f"{values.mean():.2f} +- {values.std(ddof=1):.2f}")
        assert table[key].split() == " ".join(cells).split(), key
    assert any(float(a[k]) != float(b[k]) for a, b in zip(rows[0:2], rows[2:4]) for k in keys)  # seeds differ


def test_a_sweep_stopped_by_ctrl_c_resumes_every_seed_from_its_own_folder(demo, sweep, tmp_path, monkeypatch, capsys):
    # Ctrl-C during seed 2 (after its iteration 2); the printed command continues the sweep:
    # seed 1 from its finished last.pt, seed 2 from its own, with the numbers of the
    # uninterrupted sweep.
    step = main_module.TrainingRun.step

    def step_then_ctrl_c(run, iteration):
        terms = step(run, iteration)
        if run.args.seed == 2 and iteration == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return terms

    monkeypatch.setattr(main_module.TrainingRun, "step", step_then_ctrl_c)
    assert main_module.main(sweep_argv(demo, tmp_path)) == 130
    monkeypatch.undo()
    printed = capsys.readouterr().out
    command = shlex.split(printed.split("Resume with:")[1].strip().splitlines()[0])
    assert command[:2] == ["python", "main.py"] and "--seeds" in command
    assert command[-2:] == ["--resume", str(tmp_path / "s_seed2" / "last.pt")]
    assert main_module.main(command[2:]) == 0
    assert read_csv(tmp_path / "s_seeds.csv") == sweep[1]
    out = capsys.readouterr().out
    assert f"seed 1: continuing from {tmp_path / 's_seed1' / 'last.pt'}" in out
    assert [line for line in out.splitlines() if " +- " in line] == \
        [line for line in sweep[0].splitlines() if " +- " in line]


def test_a_sweep_refuses_to_resume_from_a_checkpoint_outside_its_run_folders(demo, sweep, tmp_path, capsys):
    elsewhere = demo / "sweep" / "s_seed1" / "last.pt"
    assert main_module.main([*sweep_argv(demo, tmp_path), "--resume", str(elsewhere)]) == 2
    err = capsys.readouterr().err
    assert "--seeds with --resume continues every seed from its own run folder's last.pt" in err
    assert str(tmp_path / "s_seed1" / "last.pt") in err and str(elsewhere) in err


def test_main_called_from_code_prints_a_resume_command_of_its_own_argv(demo, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["pytest", "--something", "else"])
    step = main_module.TrainingRun.step

    def step_then_ctrl_c(run, iteration):
        terms = step(run, iteration)
        os.kill(os.getpid(), signal.SIGINT)
        return terms

    monkeypatch.setattr(main_module.TrainingRun, "step", step_then_ctrl_c)
    argv = ["--path-dataset", str(demo / "demo"), *DEMO, "--max-iter", "4", "--output-dir", str(tmp_path)]
    assert main_module.main(argv) == 130
    command = shlex.split(capsys.readouterr().out.split("Resume with:")[1].strip().splitlines()[0])
    assert command == ["python", "main.py", *argv, "--resume", str(tmp_path / "STCL" / "last.pt")]


def test_missing_dataset_says_where_and_how(tmp_path, capsys):
    assert main_module.main(["--path-dataset", str(tmp_path / "nowhere"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere") in err and "make_demo" in err
