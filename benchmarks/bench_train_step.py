"""Seconds per training step: the project's train_step against the released loop-based SCL.

    python benchmarks/bench_train_step.py                               # CPU: N = 32, about 2 minutes
    python benchmarks/bench_train_step.py --seqlens 64,128
    python benchmarks/bench_train_step.py --device cuda                 # N = 64, 128, 500

Both columns run the real STCL-Net (random weights, the same in both) on the same batches
and exemplar draws of a synthetic dataset in the THUMOS layout (dataset/make_demo.py,
written to a temporary folder), with the project's criterion and optimiser:
- project: ``exemplar_source.ExemplarSource.draw`` (exemplar snippets gathered by tensor indexing on
  the device) and ``train.train_step`` (batched SCL einsums);
- loop: the released way (tests/oracles/released_loops.py): exemplar videos gathered one by
  one with numpy on the host and copied to the device, the whole exemplar pass recorded for
  autograd (the project recomputes only the snippets the bank is made of), SCL with Python
  loops over the C+1 bank classes and the B videos.
A step is timed from the exemplar draw to the end of the optimiser update (the batch is
drawn outside the timer). The two variants take turns (project, loop, loop, project, ...)
in one process per N, so that a change in the machine's load hits both alike. Peak memory
is what a step needs above what was allocated before it (CUDA: max_memory_allocated; CPU:
the resident set size, sampled every 2 ms). The last columns time the three parts that
differ, alone: the exemplar bank (forward and backward, training mode), SCL (forward and
backward at the step's shapes) and the exemplar draw.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.oracles.released_loops import LoopSTCLNet, loop_exemplar_videos  # noqa: E402
from dataset.make_demo import make_demo_dataset  # noqa: E402
from options import parse_args  # noqa: E402
from exemplar_source import ExemplarSource  # noqa: E402
from model import build_criterion, build_model  # noqa: E402
from train import build_optimizer, train_step  # noqa: E402
from utils.device import choose_device  # noqa: E402
from wsad_dataset import SampleDataset  # noqa: E402

VARIANTS = ("project", "loop")


# ----------------------------------------------------------------------------- shared with bench_eval_bank

def machine_lines(device: torch.device) -> list[str]:
    """What the numbers were measured on: CPU model, torch version and threads, device."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return [f"machine: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads{gpu}",
            f"torch {torch.__version__}, python {platform.python_version()}, device {device}"]


def load_line(when: str) -> str:
    """The 1, 5 and 15 minute load averages: other processes on the machine slow the timings."""
    return f"load average {when}: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def write_training_set(out_dir: Path, num_class: int, feature_size: int, num_exemplars: int) -> Path:
    """A synthetic dataset whose every class has at least M training videos (about C * M videos)."""
    return make_demo_dataset(out_dir, num_train=num_class * num_exemplars, num_test=1, num_class=num_class,
                             feature_size=feature_size, seed=0)


def project_options(opts: argparse.Namespace, seqlen: int) -> argparse.Namespace:
    """The project's options at the benchmark's shapes D, C, M, N (and B); the rest at their defaults."""
    shapes = {"--feature-size": opts.feature_size, "--num-class": opts.num_class,
              "--num-exemplars": opts.num_exemplars, "--max-seqlen": seqlen,
              "--batch-size": getattr(opts, "batch_size", 10)}
    return parse_args([str(token) for pair in shapes.items() for token in pair])


def benchmark_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with the flags both benchmarks share: device, the shapes D, C, M, threads, seed."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--feature-size", type=int, default=2048, help="D")
    parser.add_argument("--num-class", type=int, default=20, help="C")
    parser.add_argument("--num-exemplars", type=int, default=10, help="M")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- measuring

class PeakMemory:
    """``with PeakMemory(device) as peak:`` -> ``peak.mib``, the most memory the block needed
    above what was allocated when it began (CUDA allocator; CPU resident set, sampled)."""

    def __init__(self, device: torch.device, interval_s: float = 0.002):
        self.device, self.interval_s, self.mib = device, interval_s, 0.0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._start = self._peak = self._resident()
            self._done = threading.Event()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2 ** 20
        else:
            self._done.set()
            self._sampler.join()
            self.mib = (max(self._peak, self._resident()) - self._start) / 2 ** 20

    def _sample(self) -> None:
        while not self._done.wait(self.interval_s):
            self._peak = max(self._peak, self._resident())

    @staticmethod
    def _resident() -> int:
        """Resident set size in bytes (Linux /proc/self/statm)."""
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Variant:
    """One side of the comparison: its model, optimiser, exemplar draw and its own generator
    (seeded alike, so both sides see the same batches and exemplar videos)."""

    def __init__(self, name: str, args: argparse.Namespace, dataset, state: dict, device: torch.device, seed: int):
        self.name, self.dataset, self.device = name, dataset, device
        self.rng = np.random.default_rng(seed)
        if name == "project":
            self.model = build_model(args)
            self.draw = partial(ExemplarSource(dataset, args.num_exemplars, device).draw, self.rng)
        else:
            self.model = LoopSTCLNet(feature_size=args.feature_size, num_class=args.num_class,
                                     dropout=args.dropout_ratio, tcl_depth=args.tcl_depth,
                                     smooth_kernel=args.smooth_kernel)
            self.draw = partial(loop_exemplar_videos, dataset, args.num_exemplars, self.rng, device)
        self.model.load_state_dict(state)
        self.model.to(device)
        self.criterion, self.optimizer = build_criterion(args), build_optimizer(self.model, args)
        self.step_s, self.draw_s, self.peak_mib = [], [], []

    def step(self, iteration: int) -> None:
        """One timed training step (the batch is drawn before the clock starts)."""
        features, labels, _ = self.dataset.load_batch(self.rng)
        features = torch.as_tensor(features, device=self.device)
        labels = torch.as_tensor(labels, device=self.device)
        with PeakMemory(self.device) as peak:
            synchronize(self.device)
            tic = time.perf_counter()
            exemplar_videos = self.draw()
            synchronize(self.device)
            drawn = time.perf_counter()
            train_step(self.model, self.criterion, self.optimizer, features, labels, exemplar_videos, iteration)
            synchronize(self.device)
            self.step_s.append(time.perf_counter() - tic)
        self.draw_s.append(drawn - tic)
        self.peak_mib.append(peak.mib)

    def scl_alone_s(self, opts: argparse.Namespace, seqlen: int, repeats: int) -> float:
        """Median seconds of SCL forward + backward on (B, D, N) features and a (C+1, D, M) bank."""
        d, device = opts.feature_size, self.device
        x = torch.randn(opts.batch_size, d, seqlen, device=device, requires_grad=True)
        bank = torch.randn(opts.num_class + 1, d, opts.num_exemplars, device=device, requires_grad=True)
        times = []
        for _ in range(repeats + 1):
            synchronize(device)
            tic = time.perf_counter()
            self.model.scl(x, bank).square().mean().backward()
            synchronize(device)
            times.append(time.perf_counter() - tic)
        return statistics.median(times[1:])

    def bank_alone_s(self, opts: argparse.Namespace, seqlen: int, repeats: int) -> float:
        """Median seconds of the exemplar bank, forward + backward, from (C, M, N, D) videos."""
        device = self.device
        videos = torch.randn(opts.num_class, opts.num_exemplars, seqlen, opts.feature_size, device=device)
        weights = torch.randn(opts.num_class + 1, opts.feature_size, opts.num_exemplars, device=device)
        times = []
        for _ in range(repeats + 1):
            synchronize(device)
            tic = time.perf_counter()
            (self.model.exemplar_bank(videos) * weights).sum().backward()
            synchronize(device)
            times.append(time.perf_counter() - tic)
        return statistics.median(times[1:])

    def summary(self, warmup: int, bank_s: float, scl_s: float) -> dict:
        return {"step_s": statistics.median(self.step_s[warmup:]), "draw_s": statistics.median(self.draw_s[warmup:]),
                "peak_mib": max(self.peak_mib[warmup:]), "bank_s": bank_s, "scl_s": scl_s}


def run_seqlen(seqlen: int, opts: argparse.Namespace) -> dict:
    """Both variants at N = seqlen, taking turns: ``opts.warmup`` + ``opts.steps`` steps each."""
    torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    device = choose_device(opts.device)
    args = project_options(opts, seqlen)
    dataset = SampleDataset(opts.data, num_class=args.num_class, feature_size=args.feature_size,
                            max_seqlen=seqlen, batch_size=args.batch_size)
    state = build_model(args).state_dict()
    variants = [Variant(name, args, dataset, state, device, opts.seed) for name in VARIANTS]
    for step in range(opts.warmup + opts.steps):
        for variant in (variants if step % 2 == 0 else variants[::-1]):
            variant.step(step)
    repeats = max(1, opts.steps)
    return {v.name: v.summary(opts.warmup, v.bank_alone_s(opts, seqlen, repeats), v.scl_alone_s(opts, seqlen, repeats))
            for v in variants}


def run_in_subprocess(seqlen: int, opts: argparse.Namespace, argv: list[str]) -> dict:
    """run_seqlen in a fresh process, so that each N starts from a clean allocator."""
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--data", str(opts.data),
               "--worker-seqlen", str(seqlen)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the benchmark at N={seqlen} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report

def format_table(rows: list[tuple[int, dict]]) -> str:
    header = (f"{'N':>5} | {'project s/step':>14} | {'loop s/step':>11} | {'loop/project':>12} | "
              f"{'step peak MiB (project / loop)':>30} | {'bank fwd+bwd s (project / loop)':>31} | "
              f"{'SCL fwd+bwd s (project / loop)':>30} | {'exemplar draw s (project / loop)':>32}")
    lines = [header, "-" * len(header)]
    for n, r in rows:
        fast, slow = r["project"], r["loop"]
        lines.append(f"{n:>5} | {fast['step_s']:>14.3f} | {slow['step_s']:>11.3f} | "
                     f"{slow['step_s'] / fast['step_s']:>11.2f}x | "
                     f"{fast['peak_mib']:>13.0f} / {slow['peak_mib']:<14.0f} | "
                     f"{fast['bank_s']:>14.3f} / {slow['bank_s']:<14.3f} | "
                     f"{fast['scl_s']:>13.3f} / {slow['scl_s']:<14.3f} | "
                     f"{fast['draw_s']:>14.4f} / {slow['draw_s']:<15.4f}")
    return "\n".join(lines)


def share_lines(rows: list[tuple[int, dict]]) -> list[str]:
    """What each differing part contributes, so the step ratio can be read against them.

    The ratio "from the parts" is what the step ratio would be if only the exemplar bank,
    SCL and the exemplar draw differed; it is less exposed to the step-to-step noise of a
    busy machine.
    """
    lines = []
    for n, r in rows:
        fast, slow = r["project"], r["loop"]
        difference = sum(slow[part] - fast[part] for part in ("bank_s", "scl_s", "draw_s"))
        lines.append(f"N={n}: exemplar bank {slow['bank_s'] / fast['bank_s']:.1f}x faster "
                     f"({100 * fast['bank_s'] / fast['step_s']:.0f}% of the project step, "
                     f"{100 * slow['bank_s'] / slow['step_s']:.0f}% of the loop step); "
                     f"SCL {slow['scl_s'] / fast['scl_s']:.1f}x faster "
                     f"({100 * fast['scl_s'] / fast['step_s']:.0f}% / {100 * slow['scl_s'] / slow['step_s']:.0f}%); "
                     f"step ratio from the parts: {(fast['step_s'] + difference) / fast['step_s']:.2f}x")
    lines.append("The rest of a step, the same in both, is the batch network (forward and backward), the loss "
                 "and Adam. Issue target: loop/project at least 1.5x at B=10, C=20, M=10.")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--seqlens", default=None,
                        help="comma-separated N (max_seqlen) values; default 32 on CPU, 64,128,500 on CUDA")
    parser.add_argument("--batch-size", type=int, default=10, help="B")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per variant (median); default 3 on CPU, 5 on CUDA")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-seqlen", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def resolve_defaults(opts: argparse.Namespace) -> argparse.Namespace:
    on_gpu = choose_device(opts.device).type == "cuda"
    if opts.seqlens is None:
        opts.seqlens = "64,128,500" if on_gpu else "32"
    if opts.steps is None:
        opts.steps = 5 if on_gpu else 3
    return opts


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    opts = resolve_defaults(build_parser().parse_args(argv))
    if opts.worker_seqlen:
        print(json.dumps(run_seqlen(opts.worker_seqlen, opts)))
        return
    device = choose_device(opts.device)
    seqlens = [int(n) for n in opts.seqlens.split(",")]
    torch.set_num_threads(opts.threads)
    print("\n".join(machine_lines(device)))
    print(load_line("before"))
    parameters = sum(p.numel() for p in build_model(project_options(opts, seqlens[0])).parameters())
    print(f"shapes: B={opts.batch_size}, D={opts.feature_size}, C={opts.num_class}, M={opts.num_exemplars}, "
          f"N={seqlens}; STCL-Net with {parameters:,} parameters, random weights; "
          f"median of {opts.steps} timed step(s) per variant after {opts.warmup} warm-up step(s)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_train_step-") as tmp:
        opts.data = write_training_set(Path(tmp), opts.num_class, opts.feature_size, opts.num_exemplars)
        for n in seqlens:
            rows.append((n, run_in_subprocess(n, opts, argv)))
            print(f"  N={n}: project {rows[-1][1]['project']['step_s']:.3f} s, "
                  f"loop {rows[-1][1]['loop']['step_s']:.3f} s", flush=True)
    print(load_line("after"))
    print()
    print(format_table(rows))
    print()
    print("\n".join(share_lines(rows)))


if __name__ == "__main__":
    main()
