"""Logs a person can read (issue 25): progress bars only on a terminal and never with --quiet,
no bar redraws in a redirected log, a Ctrl-C hint with each flag once."""
import io
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import main as main_module
from dataset.make_demo import make_demo_dataset
from options import parse_args
from utils import progress

REPO = Path(__file__).resolve().parents[1]
TINY = ["--num-class", "3", "--feature-size", "32", "--max-seqlen", "48", "--lr", "1e-3", "--num-exemplars", "4",
        "--device", "cpu", "--max-iter", "6", "--interval", "5"]


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    make_demo_dataset(root / "demo", num_train=24, num_test=12, num_class=3, feature_size=32, seed=1)
    return root / "demo"


def test_bars_only_on_a_terminal_and_never_with_quiet(monkeypatch):
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    assert progress.bars_wanted() and not progress.bars_wanted(quiet=True)
    assert not progress.progress_bar(range(3)).disable
    assert progress.progress_bar(range(3), quiet=True).disable
    assert progress.progress_bar(range(3), enabled=False).disable
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a file: no bar
    assert not progress.bars_wanted() and progress.progress_bar(range(3)).disable
    assert list(progress.progress_bar(range(3))) == [0, 1, 2]  # a disabled bar still iterates


@pytest.mark.parametrize("quiet", [False, True])
def test_training_draws_its_bar_on_a_terminal_unless_quiet(demo, tmp_path, monkeypatch, quiet):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    argv = ["--path-dataset", str(demo), *TINY, "--output-dir", str(tmp_path)] + (["--quiet"] if quiet else [])
    assert main_module.main(argv) == 0
    drawn = terminal.getvalue()
    assert ("\r" in drawn and "training" in drawn) != quiet


def test_a_redirected_training_log_has_no_progress_bar_redraws(demo, tmp_path):
    log = tmp_path / "train.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "main.py", "--path-dataset", str(demo), *TINY,
                               "--output-dir", str(tmp_path / "runs")], cwd=REPO, stdout=out,
                              stderr=subprocess.STDOUT, env=env, timeout=300)
    text = log.read_text()
    assert done.returncode == 0, text
    assert "iteration 5: mAP@0.5" in text and "selected checkpoint" in text  # the log's own lines are there
    assert "\r" not in text and "it/s" not in text


def test_ctrl_c_hint_gives_each_flag_once_the_last_one_winning():
    # bash train.sh --demo --model-name demo_t1: train.sh's --model-name demo, then the user's
    argv = ["--path-dataset", "dataset/demo", "--model-name", "demo", "--lr", "0.001", "--max-iter=1000",
            "--model-name", "demo_t1", "--resume", "old/last.pt", "--max-iter", "20"]
    command = shlex.split(main_module.resume_command(argv, Path("runs/demo_t1/last.pt")))
    assert command == ["python", "main.py", "--path-dataset", "dataset/demo", "--lr", "0.001",
                       "--model-name", "demo_t1", "--max-iter", "20", "--resume", "runs/demo_t1/last.pt"]
    assert vars(parse_args(command[2:])) == vars(parse_args([*argv, "--resume", "runs/demo_t1/last.pt"]))
