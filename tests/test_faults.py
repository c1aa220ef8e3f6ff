"""Faults during training: kill -9 during a save, SIGKILL and --resume, Ctrl-C, a non-finite
loss, and truncated or corrupted checkpoints.

The interrupted runs are real ``python main.py`` processes on a tiny demo dataset (C = 3,
D = 16, N = 32, 40 iterations, an evaluation every 15); the runs that resume them run in this
process. Everything runs torch on one thread, so two runs of the same seed agree bit for bit
and a resumed run can be compared exactly with an uninterrupted one.
"""
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import main as main_py
import test as test_py
from dataset.make_demo import make_demo_dataset
from options import parse_args
from model import build_model
from utils import checkpoint as ckpt
from utils.errors import CheckpointError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
MODEL_FLAGS = ["--num-class", "3", "--feature-size", "16", "--max-seqlen", "32"]
FLAGS = [*MODEL_FLAGS, "--batch-size", "6", "--num-similar", "2", "--num-exemplars", "3", "--max-iter", "40",
         "--interval", "15", "--lr", "1e-3", "--log-every", "1", "--device", "cpu", "--seed", "7"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), num_train=16, num_test=6, num_class=3, feature_size=16)


def main_argv(demo: Path, output_dir: Path, *extra: str) -> list:
    return ["--path-dataset", str(demo), "--output-dir", str(output_dir), "--model-name", "run", *FLAGS, *extra]


class Run:
    """``python main.py <argv>`` in the background; its stdout and stderr go to ``<output_dir>/log.txt``."""

    def __init__(self, argv: list, output_dir: Path):
        self.dir, self.log = output_dir / "run", output_dir / "log.txt"
        output_dir.mkdir(exist_ok=True)
        with self.log.open("w") as log:
            self.process = subprocess.Popen([sys.executable, str(REPO / "main.py"), *argv], cwd=REPO, env=ENV,
                                            stdout=log, stderr=subprocess.STDOUT)

    def wait_until(self, condition, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"the run ended too early:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "timed out waiting for the run"
            time.sleep(0.02)

    def finish(self, timeout: float = 120) -> int:
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture(autouse=True)
def one_thread():
    """torch on one thread in this process too, like the subprocesses (``OMP_NUM_THREADS=1``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def logged_losses(run_dir: Path) -> int:
    """Complete rows of losses.csv (one per iteration with --log-every 1)."""
    path = run_dir / "losses.csv"
    return path.read_text().count("\n") - 1 if path.is_file() else 0


@pytest.fixture(scope="module")
def reference(demo, tmp_path_factory):
    """An uninterrupted run of the same seed, started at once so that it overlaps the runs it is compared with."""
    output_dir = tmp_path_factory.mktemp("reference")
    run = Run(main_argv(demo, output_dir), output_dir)

    def finished() -> Path:
        assert run.finish() == 0, run.output()[-3000:]
        return run.dir

    yield finished
    run.process.kill()
    run.process.wait()


def assert_same_run(run_dir: Path, reference_dir: Path) -> None:
    """Same results.csv and losses.csv, byte for byte, and the same best and last weights (to 1e-6)."""
    for log in ("results.csv", "losses.csv"):
        assert (run_dir / log).read_text() == (reference_dir / log).read_text(), log
    for name in ("last.pt", "best.pt"):
        weights, expected = (ckpt.read_checkpoint(d / name)["model"] for d in (run_dir, reference_dir))
        assert weights.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(weights[key], expected[key], rtol=0, atol=1e-6, msg=f"{name} {key}")


# ---- kill -9 during a save ------------------------------------------------------------

SAVERS = """
import os, sys, torch
from utils.checkpoint import save_atomic


def save_forever(path):
    weights = torch.empty(2_000_000)  # 8 MB
    step = 0
    while True:
        save_atomic({"step": step, "weights": weights.fill_(step)}, path)
        step += 1


for path in sys.argv[1:]:  # one forked saver per path, so that torch is imported once
    pid = os.fork()
    if pid == 0:
        save_forever(path)
    print(pid, flush=True)
for _ in sys.argv[1:]:
    os.wait()
"""


def test_kill_9_during_saves_never_leaves_a_truncated_checkpoint(tmp_path):
    # about 70% of a saver's time is spent inside a save, so some of 8 kills land there
    delays = [0.0, *np.random.default_rng(0).uniform(0.05, 0.6, size=7)]
    paths = [tmp_path / f"saver{i}" / "last.pt" for i in range(len(delays))]
    parent = subprocess.Popen([sys.executable, "-c", SAVERS, *map(str, paths)], cwd=REPO, env=ENV,
                              stdout=subprocess.PIPE, text=True)
    savers = [int(parent.stdout.readline()) for _ in paths]
    start, killed = time.monotonic(), []
    try:
        for delay, saver in sorted(zip(delays, savers)):
            time.sleep(max(0.0, start + delay - time.monotonic()))
            os.kill(saver, signal.SIGKILL)
            killed.append(saver)
    finally:  # never leave a saver running
        for saver in set(savers) - set(killed):
            os.kill(saver, signal.SIGKILL)
    assert parent.wait(timeout=30) == 0

    finished = [p for p in paths if p.exists()]
    assert finished, "no save finished before the kills: the delays are too short to test anything"
    for path in finished:
        state = ckpt.read_checkpoint(path)
        assert torch.all(state["weights"] == state["step"]), f"{path} mixes two saves"
    stray = [t for p in paths for t in p.parent.glob(".last.pt.*.tmp")]
    assert stray, "no kill landed inside a save: nothing was tested"
    for path in paths:  # a stray temporary file does not disturb the next save either
        ckpt.save_atomic({"step": -1}, path)
        assert ckpt.read_checkpoint(path) == {"step": -1}


# ---- SIGKILL, then --resume -----------------------------------------------------------

def test_a_run_killed_by_sigkill_resumes_to_the_same_weights_and_logs(demo, reference, tmp_path, capsys):
    argv = main_argv(demo, tmp_path)
    killed = Run(argv, tmp_path)
    killed.wait_until(lambda: (killed.dir / "last.pt").is_file() and logged_losses(killed.dir) >= 20)
    killed.process.send_signal(signal.SIGKILL)
    assert killed.finish() == -signal.SIGKILL
    state = ckpt.read_checkpoint(killed.dir / "last.pt")
    assert (state["iteration"], state["results_rows"], state["loss_rows"]) == (15, 1, 16)
    assert logged_losses(killed.dir) >= 20  # rows past the checkpoint, which resuming drops
    # as if the kill had also hit between an evaluation row and its last.pt, and in the middle of a loss row
    with (killed.dir / "results.csv").open("a") as f:
        f.write("30,1,2,3,4,5,6,7,8,9,1,2,3,4,5,0\n")
    with (killed.dir / "losses.csv").open("a") as f:
        f.write("21,0.25,0.")

    assert main_py.main([*argv, "--resume", str(killed.dir / "last.pt")]) == 0
    assert f"resuming {killed.dir} after iteration 15" in capsys.readouterr().out
    assert_same_run(killed.dir, reference())


# ---- Ctrl-C ---------------------------------------------------------------------------

def test_ctrl_c_saves_last_pt_and_prints_a_resume_command_that_finishes_the_run(demo, reference, tmp_path, capsys):
    run = Run(main_argv(demo, tmp_path), tmp_path)
    run.wait_until(lambda: logged_losses(run.dir) >= 6)
    run.process.send_signal(signal.SIGINT)
    assert run.finish() == 130
    output = run.output()
    assert "Ctrl-C: stopping after this step" in output
    state = ckpt.read_checkpoint(run.dir / "last.pt")
    stopped_at = state["iteration"]
    # six rows seen (iterations 0..5): the signal can land while iteration 5 still logs, before its stop check
    assert 5 <= stopped_at < 15  # before the first evaluation: this last.pt is the Ctrl-C's own
    assert state["loss_rows"] == logged_losses(run.dir) == stopped_at + 1  # the current step finished
    assert f"stopped after iteration {stopped_at}; last.pt saved. Resume with:" in output

    command = shlex.split(output.split("Resume with:\n")[1].splitlines()[0])
    assert command[:2] == ["python", "main.py"] and command[-2:] == ["--resume", str(run.dir / "last.pt")]
    assert main_py.main(command[2:]) == 0
    assert f"resuming {run.dir} after iteration {stopped_at}" in capsys.readouterr().out
    assert_same_run(run.dir, reference())


def test_the_resume_command_replaces_an_earlier_resume_flag():
    argv = ["--model-name", "my run", "--resume", "old/last.pt", "--lr", "1e-4", "--resume=older.pt"]
    assert main_py.resume_command(argv, Path("runs/my run/last.pt")) == \
        "python main.py --model-name 'my run' --lr 1e-4 --resume 'runs/my run/last.pt'"


# ---- a non-finite loss ----------------------------------------------------------------

class PoisonedCriterion:
    """The real objective, except that the co-activity term is NaN at iteration ``at``.

    At that moment it records the bytes of last.pt (None if there is none), the oracle for
    "the last good checkpoint is kept".
    """

    def __init__(self, criterion, at: int, last: Path):
        self.criterion, self.at, self.last = criterion, at, last
        self.weight_dict = criterion.weight_dict
        self.calls, self.last_bytes = 0, None

    def __call__(self, outputs, labels):
        losses = self.criterion(outputs, labels)  # raw terms; train_step weighs them
        if self.calls == self.at:
            losses["co"] = losses["co"] * float("nan")
            self.last_bytes = self.last.read_bytes() if self.last.is_file() else None
        self.calls += 1
        return losses


@pytest.mark.parametrize("at", [5, 20])
def test_a_non_finite_loss_stops_naming_the_iteration_and_terms_and_keeps_the_last_good_checkpoint(
        demo, tmp_path, monkeypatch, capsys, at):
    last, build_criterion, poisoned = tmp_path / "run" / "last.pt", main_py.build_criterion, []

    def build_poisoned(args):
        poisoned.append(PoisonedCriterion(build_criterion(args), at, last))
        return poisoned[-1]

    monkeypatch.setattr(main_py, "build_criterion", build_poisoned)
    assert main_py.main(main_argv(demo, tmp_path)) == 2
    error = capsys.readouterr().err
    assert f"error: non-finite loss at iteration {at}: co=nan, total=nan (all terms:" in error
    assert "Traceback" not in error
    if at < 15:
        assert poisoned[0].last_bytes is None and not last.exists()
        assert "no checkpoint of this run was saved before it" in error
    else:
        assert last.read_bytes() == poisoned[0].last_bytes
        assert ckpt.read_checkpoint(last)["iteration"] == 15
        assert f"the last good checkpoint, from iteration 15, is kept at {last}" in error


# ---- truncated and corrupted checkpoints ----------------------------------------------

@pytest.fixture(scope="module")
def weights_only(tmp_path_factory) -> Path:
    """A checkpoint that fits the demo model: weights and args, no training state (like best.pt)."""
    args = parse_args(MODEL_FLAGS)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    return ckpt.save_atomic({"model": build_model(args).state_dict(), "args": vars(args), "iteration": 20}, path)


def truncated(source: Path, out: Path) -> Path:
    data = source.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


def flipped_inside_a_weight(source: Path, out: Path) -> Path:
    """One bit flipped in the middle of the largest weight's bytes: torch.load alone reads it without complaint."""
    data = bytearray(source.read_bytes())
    weight = max(ckpt.read_checkpoint(source)["model"].values(), key=torch.Tensor.numel)
    start = data.find(weight.numpy().tobytes())
    assert start > 0
    at = start + weight.numel() * 2
    data[at] ^= 0x10
    out.write_bytes(bytes(data))
    return out


DAMAGES = {"truncated": truncated, "flipped": flipped_inside_a_weight}


@pytest.mark.parametrize("damage", DAMAGES)
def test_read_checkpoint_names_the_damaged_file(weights_only, tmp_path, damage):
    path = DAMAGES[damage](weights_only, tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError, match=f"checkpoint {path} is truncated or corrupted"):
        ckpt.read_checkpoint(path)


def test_only_a_crc_check_catches_the_flipped_bit(weights_only, tmp_path):
    path = flipped_inside_a_weight(weights_only, tmp_path / "damaged.pt")
    loaded = torch.load(path, weights_only=False)["model"]
    original = ckpt.read_checkpoint(weights_only)["model"]
    assert not all(torch.equal(loaded[k], original[k]) for k in original)
    with pytest.raises(CheckpointError, match="fails its CRC check"):
        ckpt.read_checkpoint(path)


def test_random_damage_is_an_error_or_harmless(weights_only, tmp_path):
    """200 random bit flips, byte overwrites and truncations: each either raises CheckpointError or
    loads exactly the original (a damaged byte in padding)."""
    rng = np.random.default_rng(1)
    data, original = weights_only.read_bytes(), ckpt.read_checkpoint(weights_only)["model"]
    path = tmp_path / "damaged.pt"
    for _ in range(200):
        damaged = bytearray(data)
        at = int(rng.integers(len(data)))
        kind = rng.integers(3)
        if kind == 0:
            damaged[at] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            damaged[at] = int(rng.integers(256))
        else:
            del damaged[at:]
        path.write_bytes(bytes(damaged))
        try:
            loaded = ckpt.read_checkpoint(path)["model"]
        except CheckpointError:
            continue
        assert all(torch.equal(loaded[k], original[k]) for k in original), f"damage at byte {at} loaded silently"


def evaluation_argv(demo: Path, output_dir: Path, *extra: str) -> list:
    """test.py's command line: the data and model flags, no training ones (test.py refuses them)."""
    return ["--path-dataset", str(demo), *MODEL_FLAGS, "--num-exemplars", "3", "--device", "cpu",
            "--output", str(output_dir / "eval"), *extra]


ENTRY_POINTS = {"test.py --pretrained-ckpt": (test_py.main, evaluation_argv, "--pretrained-ckpt"),
                "main.py --pretrained-ckpt": (main_py.main, main_argv, "--pretrained-ckpt"),
                "main.py --resume": (main_py.main, main_argv, "--resume")}


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_entry_point_reports_a_damaged_checkpoint_as_an_error(demo, weights_only, tmp_path, capsys, entry,
                                                                   damage):
    entry_main, argv, flag = ENTRY_POINTS[entry]
    path = DAMAGES[damage](weights_only, tmp_path / "damaged.pt")
    assert entry_main(argv(demo, tmp_path, flag, str(path))) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: checkpoint {path} is truncated or corrupted and cannot be read (")
    assert "Traceback" not in error


def test_resume_from_a_checkpoint_without_training_state_is_an_error(demo, weights_only, tmp_path, capsys):
    assert main_py.main(main_argv(demo, tmp_path, "--resume", str(weights_only))) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: checkpoint {weights_only} holds no training state to resume "
                            "(optimizer, rng, best, results_rows, loss_rows missing)")
    assert "--pretrained-ckpt starts from weights alone" in error


def test_the_command_line_prints_the_error_and_exits_2_without_a_traceback(demo, weights_only, tmp_path):
    path = truncated(weights_only, tmp_path / "damaged.pt")
    process = subprocess.run([sys.executable, str(REPO / "main.py"), *main_argv(demo, tmp_path, "--resume", str(path))],
                             cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
    assert process.returncode == 2, process.stderr
    assert process.stderr.startswith(f"error: checkpoint {path} is truncated or corrupted"), process.stderr
    assert "Traceback" not in process.stderr
