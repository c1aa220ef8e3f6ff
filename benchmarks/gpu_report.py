"""The GPU report: training step, memory, evaluation pass and full schedule at the THUMOS-14 configuration.

    python benchmarks/gpu_report.py --out gpu_report/          # one GPU (H100/H200): under 8 minutes
    python benchmarks/gpu_report.py --smoke --out /tmp/smoke   # the same code paths at tiny sizes, CPU, < 1 min

What it runs, as ``main.py`` runs it (the project's loader, ExemplarSource, train_step,
test.test), on synthetic features:
- a dataset in the THUMOS-14 layout: the real annotation files of
  ../shared/data/thumos14/Thumos14reduced-Annotations/ (linked, never copied into the
  project) with random features of each video's real length, T = round(duration * 25 / 16),
  written as a memory-mapped feature store (feature_store.py). Without those annotations a
  demo dataset of 200 training and 212 test videos of 80..300 snippets stands in (the
  report says so);
- B=10, D=2048, C=20, M=10, N=500 (``--smoke``: D=32, N=16, lengths / 16);
- the training iteration of main.py (batch sampling and copy, exemplar draw, train_step),
  without and with ``--amp``: median of synchronized timings after warm-up, peak GPU memory
  (max_memory_allocated), FLOPs of train_step counted by torch.utils.flop_counter and the
  TFLOP/s they give;
- one evaluation pass over the 212 test videos with the cached exemplar bank (test.test:
  network, proposals and mAP), timed after a warm-up pass on a few videos;
- one save of last.pt and of best.pt, as main.py writes them;
- the full schedule extrapolated: 10,000 iterations, 50 evaluations (49 periodic + the
  final one main.py adds) and 50 saves of last.pt;
- when a target is missed (always with ``--smoke``): torch.profiler's top kernels of three
  training iterations and of the network on 16 test videos, and cProfile's top functions of
  the proposals and mAP, so the report says what dominates;
- the feature-extraction throughput (TV-L1 flow and both I3D streams), when the
  ``feature_extraction`` package is on this checkout.
It writes ``report.json`` and ``report.md`` (plus the full profile tables) to ``--out`` and
prints the markdown table.
"""
from __future__ import annotations

import argparse
import copy
import cProfile
import datetime
import importlib.util
import io
import json
import pstats
import resource
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_train_step import load_line, machine_lines, synchronize  # noqa: E402
from dataset.make_demo import make_demo_dataset  # noqa: E402
from feature_store import StoreWriter, convert  # noqa: E402
from inference import mean_bank, run_network  # noqa: E402
from options import parse_args  # noqa: E402
from protocol import Reference, evaluate  # noqa: E402
from exemplar_source import ExemplarSource  # noqa: E402
from model import build_criterion, build_model  # noqa: E402
from train import build_optimizer, train_step  # noqa: E402
from utils.atomic import write_text  # noqa: E402
from utils.device import choose_device  # noqa: E402
from utils.evaluation import seconds_to_snippets  # noqa: E402
from utils import checkpoint as ckpt  # noqa: E402
from wsad_dataset import SampleDataset  # noqa: E402

ANNOTATIONS = REPO.parent / "shared" / "data" / "thumos14" / "Thumos14reduced-Annotations"
NAME = "Thumos14reduced"
#: The authors' released code on an H200 (issue 17): seconds per step and per evaluation pass.
AUTHORS = {"step_s": 1.7, "eval_s": 270.0, "schedule_h": 8.4}
#: Targets on an H200 (issue 17).
TARGETS = {"step_s": 0.3, "amp_step_s": 0.1, "eval_s": 10.0, "schedule_h": 1.0}
FULL = {"feature_size": 2048, "max_seqlen": 500, "length_divisor": 1, "warmup": 5, "steps": 30,
        "seconds_per_mode": 60.0, "flow_size": 224, "flow_pairs": 32, "i3d_batch": 8,
        "profile_steps": 3, "profile_videos": 16}
SMOKE = {"feature_size": 32, "max_seqlen": 16, "length_divisor": 16, "warmup": 1, "steps": 3,
         "seconds_per_mode": 10.0, "flow_size": 32, "flow_pairs": 2, "i3d_batch": 1,
         "profile_steps": 1, "profile_videos": 4}
MODES = ("fp32", "amp")


# ----------------------------------------------------------------------------- the dataset

def write_dataset(root: Path, cfg: dict, annotations: Path, seed: int) -> str:
    """A THUMOS-layout dataset under ``root`` with a float32 feature store; returns where the lengths come from."""
    rng = np.random.default_rng(seed)
    d = cfg["feature_size"]
    if annotations.is_dir():
        folder = root / f"{NAME}-Annotations"
        folder.mkdir(parents=True)
        for source in annotations.iterdir():
            (folder / source.name).symlink_to(source.resolve())
        names = [n.decode() for n in np.load(folder / "videoname.npy")]
        duration = np.load(folder / "duration.npy").reshape(-1)
        lengths = [max(4, int(t) // cfg["length_divisor"]) for t in seconds_to_snippets(duration)]
        with StoreWriter(root, NAME, d) as writer:
            for name, length in zip(names, lengths):
                writer.add(name, rng.standard_normal((length, d), dtype=np.float32))
        scale = "" if cfg["length_divisor"] == 1 else f", divided by {cfg['length_divisor']} (--smoke)"
        return f"real THUMOS-14 lengths T = round(duration * 25 / 16) from {annotations}{scale}"
    make_demo_dataset(root, num_train=200, num_test=212, num_class=20, feature_size=d, seed=seed)
    convert(root, NAME, progress=False)
    return (f"SYNTHETIC: {annotations} not found, so a demo dataset stands in "
            "(200 training and 212 test videos of 80..300 snippets; the real test videos are 14..2615)")


def project_args(cfg: dict, amp: bool) -> argparse.Namespace:
    return parse_args(["--feature-size", str(cfg["feature_size"]), "--max-seqlen", str(cfg["max_seqlen"]),
                       "--device", cfg["device"]] + (["--amp"] if amp else []))


# ----------------------------------------------------------------------------- training

class Trainer:
    """The training iteration of main.py: batch, exemplar draw, train_step, with each part timed."""

    def __init__(self, dataset, args, state: dict, device: torch.device, seed: int):
        self.dataset, self.args, self.device = dataset, args, device
        self.model = build_model(args).to(device)
        self.model.load_state_dict(state)
        self.criterion, self.optimizer = build_criterion(args), build_optimizer(self.model, args)
        self.source = ExemplarSource(dataset, args.num_exemplars, device, args.exemplar_pool)
        self.rng = np.random.default_rng(seed)
        self.iteration = 0

    def inputs(self):
        features, labels, _ = self.dataset.load_batch(self.rng)
        return (torch.as_tensor(features, device=self.device), torch.as_tensor(labels, device=self.device))

    def step(self, features, labels, exemplars) -> dict:
        self.iteration += 1
        return train_step(self.model, self.criterion, self.optimizer, features, labels, exemplars,
                          self.iteration, self.args.amp)

    def timed(self) -> tuple[float, float, float]:
        """Seconds of (batch sampling + copy, exemplar draw, train_step), synchronized."""
        synchronize(self.device)
        t0 = time.perf_counter()
        features, labels = self.inputs()
        synchronize(self.device)
        t1 = time.perf_counter()
        exemplars = self.source.draw(self.rng)
        synchronize(self.device)
        t2 = time.perf_counter()
        self.step(features, labels, exemplars)
        synchronize(self.device)
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    def counted_flops(self) -> int:
        """FLOPs of one train_step (forward and backward; the element-wise Adam update is not counted)."""
        from torch.utils.flop_counter import FlopCounterMode

        features, labels = self.inputs()
        exemplars = self.source.draw(self.rng)
        with FlopCounterMode(display=False) as counter:
            self.step(features, labels, exemplars)
        return int(counter.get_total_flops())


def measure_training(trainer: Trainer, cfg: dict, flops: int) -> dict:
    """Median seconds of the iteration and its parts; ``flops``: those of one train_step (the same in every mode)."""
    device = trainer.device
    for _ in range(cfg["warmup"]):
        trainer.timed()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    parts, start = [], time.perf_counter()
    while len(parts) < cfg["steps"] and (len(parts) < 5 or time.perf_counter() - start < cfg["seconds_per_mode"]):
        parts.append(trainer.timed())
    batch, draw, step = (statistics.median(p) for p in zip(*parts))
    iteration = statistics.median(sum(p) for p in parts)
    out = {"iteration_s": iteration, "batch_s": batch, "draw_s": draw, "train_step_s": step,
           "steps_timed": len(parts), "exemplar_pool": trainer.source.placement,
           "train_step_gflop": flops / 1e9, "train_step_tflops": flops / step / 1e12}
    if device.type == "cuda":  # this mode's own tensors plus the most its steps allocated above them
        transient = torch.cuda.max_memory_allocated(device) - before
        out["peak_gib"] = (owned_bytes(trainer) + transient) / 2 ** 30
        out["reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2 ** 30
    return out


def owned_bytes(trainer: Trainer) -> int:
    """Bytes of the trainer's persistent tensors on its device: weights, gradients, Adam state, exemplar pool.

    Both modes' trainers live on the device together, so the allocator's totals alone would
    charge one mode with the other's state.
    """
    tensors = [p for p in trainer.model.parameters()] + [p.grad for p in trainer.model.parameters()]
    tensors += [v for state in trainer.optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    tensors += [getattr(trainer.source, "snippets", None)]
    return sum(t.numel() * t.element_size() for t in tensors
               if torch.is_tensor(t) and t.device.type == trainer.device.type)


# ----------------------------------------------------------------------------- evaluation

class FirstVideos:
    """The test-video interface of a dataset, limited to its first ``count`` test videos."""

    def __init__(self, dataset, count: int):
        self.dataset, self.num_test = dataset, min(count, dataset.num_test)

    def test_videos(self):
        for item, _ in zip(self.dataset.test_videos(), range(self.num_test)):
            yield item


def count_network_flops(trainer: Trainer) -> int:
    """FLOPs of the network over every test video with a cached bank, the bank included.

    A video's FLOPs are a quadratic in its length T (convolutions and SCL grow with T, TCL's
    T x T correlations with T^2), so they are counted on three lengths, solved for the three
    coefficients and summed over every test video: exact, without running all of them.
    """
    from torch.utils.flop_counter import FlopCounterMode

    model, device, store = trainer.model.eval(), trainer.device, trainer.dataset.store
    lengths = store.lengths[trainer.dataset.test_index]
    probes = np.unique(np.quantile(lengths, [0, 0.5, 1], method="nearest"))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        bank = mean_bank(model, trainer.source.draw, np.random.default_rng(0))
    bank_flops = counter.get_total_flops()
    counts = []
    for length in probes:
        x = torch.randn(1, int(length), store.feature_size, device=device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x, exemplar_bank=bank)
        counts.append(counter.get_total_flops())
    coefficients = np.polyfit(probes.astype(np.float64), np.asarray(counts, dtype=np.float64), len(probes) - 1)
    return int(bank_flops + np.polyval(coefficients, lengths.astype(np.float64)).sum().round())


def measure_evaluation(trainer: Trainer, reference: Reference, flops: int) -> tuple[dict, dict]:
    """One pass of test.test over every test video: the network (cached bank), then proposals and mAP.

    Returns the timings and the network's outputs (for the profile of the proposals).
    """
    model, source, device, args = trainer.model, trainer.source, trainer.device, trainer.args
    run = dict(exemplar_mode="cached", exemplar_draws=args.exemplar_draws, exemplar_seed=args.exemplar_seed,
               amp=args.amp, progress=False)
    run_network(model, FirstVideos(trainer.dataset, 4), source, device, **run)  # warm-up
    synchronize(device)
    t0 = time.perf_counter()
    outputs = run_network(model, trainer.dataset, source, device, **run)
    synchronize(device)
    t1 = time.perf_counter()
    result = evaluate(outputs, reference, proposal_method=args.proposal_method, gamma=args.gamma_oic,
                      classification_topk=args.classification_topk)
    t2 = time.perf_counter()
    return {"pass_s": t2 - t0, "network_s": t1 - t0, "proposals_map_s": t2 - t1,
            "videos": trainer.dataset.num_test, "detections": len(result.detections.score),
            "network_gflop": flops / 1e9, "network_tflops": flops / (t1 - t0) / 1e12}, outputs


def measure_checkpoints(trainer: Trainer, folder: Path) -> dict:
    """Seconds to write last.pt (weights, Adam state) and best.pt (weights) with save_atomic, as main.py does."""
    synchronize(trainer.device)
    t0 = time.perf_counter()
    ckpt.save_atomic({"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                      "iteration": 0, "format": "stcl-net/1"}, folder / "last.pt")
    t1 = time.perf_counter()
    ckpt.save_atomic({"model": trainer.model.state_dict(), "iteration": 0, "format": "stcl-net/1"}, folder / "best.pt")
    t2 = time.perf_counter()
    out = {"last_s": t1 - t0, "best_s": t2 - t1, "last_mib": (folder / "last.pt").stat().st_size / 2 ** 20}
    (folder / "last.pt").unlink()
    (folder / "best.pt").unlink()
    return out


def schedule(train: dict, evaluation: dict, saves: dict, args: argparse.Namespace) -> dict:
    """The full run of main.py: max_iter iterations, the periodic evaluations and the final one, last.pt saves."""
    evaluations = len(range(args.interval, args.max_iter, args.interval)) + 1
    seconds = (args.max_iter * train["iteration_s"] + evaluations * evaluation["pass_s"]
               + evaluations * saves["last_s"])
    return {"hours": seconds / 3600, "iterations": args.max_iter, "evaluations": evaluations,
            "training_h": args.max_iter * train["iteration_s"] / 3600,
            "evaluation_h": evaluations * evaluation["pass_s"] / 3600,
            "saves_h": evaluations * saves["last_s"] / 3600, "best_save_s_each": saves["best_s"]}


# ----------------------------------------------------------------------------- profiles

def _device_time(event) -> float:
    if hasattr(event, "self_device_time_total"):
        return float(event.self_device_time_total)
    return float(event.self_cuda_time_total)  # torch before 2.4


def torch_profile(fn, device: torch.device, path: Path, rows: int = 15) -> dict:
    """Run ``fn`` under torch.profiler; write the full table to ``path``; the top ``rows`` ops by self time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    wall_us = (time.perf_counter() - start) * 1e6
    events = prof.key_averages()
    on_gpu = device.type == "cuda"
    key = _device_time if on_gpu else (lambda e: float(e.self_cpu_time_total))
    total = sum(key(e) for e in events) or 1.0
    sort_by = ("self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total")
    path.write_text(events.table(sort_by=sort_by if on_gpu else "self_cpu_time_total", row_limit=60))
    top = sorted(events, key=key, reverse=True)[:rows]
    return {"clock": "GPU kernel time" if on_gpu else "CPU self time", "wall_ms": wall_us / 1e3,
            "busy_share": (total / wall_us) if on_gpu else None, "table": path.name,
            "top": [{"name": e.key[:80], "ms": key(e) / 1e3, "share": key(e) / total, "calls": e.count} for e in top]}


def python_profile(fn, path: Path, rows: int = 10) -> dict:
    """cProfile of ``fn``: the top functions by cumulative time (the numpy proposals and mAP)."""
    profiler = cProfile.Profile()
    profiler.runcall(fn)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).sort_stats("cumulative")
    stats.print_stats(40)
    path.write_text(text.getvalue())
    entries = sorted(stats.stats.items(), key=lambda kv: kv[1][3], reverse=True)
    return {"table": path.name, "top": [{"name": f"{Path(f).name}:{line} {func}", "s": ct}
                                        for (f, line, func), (_, _, _, ct, _) in entries[:rows]]}


def profiles(trainers: dict, reference: Reference, outputs, missed: set, always: bool, out: Path, cfg: dict) -> dict:
    found = {}
    for mode, trainer in trainers.items():
        step_target = "amp_step_s" if mode == "amp" else "step_s"
        if always or step_target in missed or "schedule_h" in missed:
            def three_steps(t=trainer):
                for _ in range(cfg["profile_steps"]):
                    t.step(*t.inputs(), t.source.draw(t.rng))
            found[f"train_{mode}"] = torch_profile(three_steps, trainer.device, out / f"profile_train_{mode}.txt")
    if always or "eval_s" in missed or "schedule_h" in missed:
        trainer = trainers["fp32"]
        few = FirstVideos(trainer.dataset, cfg["profile_videos"])
        found["eval_network"] = torch_profile(
            lambda: run_network(trainer.model, few, trainer.source, trainer.device, progress=False),
            trainer.device, out / "profile_eval_network.txt")
        found["eval_proposals_map"] = python_profile(lambda: evaluate(outputs, reference),
                                                     out / "profile_eval_proposals_map.txt")
    return found


# ----------------------------------------------------------------------------- feature extraction

def extraction_throughput(device: torch.device, cfg: dict) -> dict:
    """TV-L1 flow pairs/s and I3D snippets/s of feature_extraction, when the package is on this checkout."""
    if importlib.util.find_spec("feature_extraction") is None:
        return {"skipped": "the feature_extraction package is not on this checkout"}
    try:
        from feature_extraction.flow import make_flow
        from feature_extraction.i3d import InceptionI3d
    except ImportError as error:  # e.g. OpenCV missing on this machine
        return {"skipped": f"feature_extraction could not be imported: {error}"}
    size, pairs = cfg["flow_size"], cfg["flow_pairs"]
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (pairs, size + 8, size + 8)).astype(np.float32)
    texture = (texture + np.roll(texture, 1, 1) + np.roll(texture, 1, 2)) / 3  # some spatial smoothness
    prev = texture[:, 4:-4, 4:-4].astype(np.uint8)
    nxt = texture[:, 4:-4, 2:-6].astype(np.uint8)  # moved 2 pixels to the right
    flow = make_flow("torch", device, batch_size=pairs)
    flow(prev[:1], nxt[:1])  # warm-up
    synchronize(device)
    t0 = time.perf_counter()
    flow(prev, nxt)
    synchronize(device)
    flow_s = time.perf_counter() - t0
    out = {"frame_size": size, "flow_pairs_per_s": pairs / flow_s}
    batch = cfg["i3d_batch"]
    for stream, channels in (("rgb", 3), ("flow", 2)):
        net = InceptionI3d(in_channels=channels).to(device).eval()
        clip = torch.randn(batch, channels, 16, size, size, device=device)
        with torch.no_grad():
            net.features(clip)  # warm-up
            synchronize(device)
            t0 = time.perf_counter()
            net.features(clip)
            synchronize(device)
        out[f"i3d_{stream}_snippets_per_s"] = batch / (time.perf_counter() - t0)
    per_snippet_s = (16 / out["flow_pairs_per_s"] + 1 / out["i3d_rgb_snippets_per_s"]
                     + 1 / out["i3d_flow_snippets_per_s"])
    out["video_seconds_per_s"] = 0.64 / per_snippet_s  # one snippet is 16 frames at 25 fps
    return out


# ----------------------------------------------------------------------------- the report

def judge(train: dict, evaluation: dict, plan: dict) -> dict:
    """Each target: (measured, target, met)."""
    return {"step_s": (train["fp32"]["iteration_s"], TARGETS["step_s"]),
            "amp_step_s": (train["amp"]["iteration_s"], TARGETS["amp_step_s"]),
            "eval_s": (evaluation["fp32"]["pass_s"], TARGETS["eval_s"]),
            "schedule_h": (min(plan[m]["hours"] for m in MODES), TARGETS["schedule_h"])}


def markdown(report: dict) -> str:
    tr, ev, cp, pl = report["train"], report["evaluation"], report["checkpoints"], report["schedule"]
    cfg = report["config"]
    gpu = report["device"].startswith("cuda")
    verdict = {name: ("met" if v["met"] else "**missed**") if gpu else "not judged (no GPU)"
               for name, v in report["targets"].items()}

    def row(label, key, fmt, table=tr, target="", authors=""):
        cells = [format(table[m][key], fmt) if key in table[m] else "n/a" for m in MODES]
        return f"| {label} | {cells[0]} | {cells[1]} | {target} | {authors} |"

    lines = [
        f"**STCL-Net GPU report** ({'SMOKE RUN, tiny sizes: not a measurement' if report['smoke'] else 'full'}), "
        f"{report['when']}",
        "", *[f"- {line}" for line in report["machine"]],
        f"- B={cfg['B']}, D={cfg['D']}, C={cfg['C']}, M={cfg['M']}, N={cfg['N']}; {cfg['test_videos']} test videos "
        f"({cfg['test_snippets']:,} snippets), {cfg['train_videos']} training videos; {cfg['lengths']}; "
        "random weights, synthetic features in a memory-mapped store",
        f"- {report['load']}",
        "",
        "| measure | fp32 | --amp (bf16) | target on an H200 | authors' code, H200 |",
        "|---|---|---|---|---|",
        row(f"training iteration, s (median of {tr['fp32']['steps_timed']} / {tr['amp']['steps_timed']})",
            "iteration_s", ".3f", target=f"<= {TARGETS['step_s']} / <= {TARGETS['amp_step_s']} (stretch): "
            f"{verdict['step_s']} / {verdict['amp_step_s']}", authors=f"{AUTHORS['step_s']}"),
        row("  batch sampling + copy, s", "batch_s", ".4f"),
        row(f"  exemplar draw, s (pool on the {tr['fp32']['exemplar_pool']})", "draw_s", ".4f"),
        row("  train_step (forward, backward, Adam), s", "train_step_s", ".3f"),
        row("peak GPU memory of training (weights, grads, Adam, pool, activations), GiB", "peak_gib", ".2f"),
        row("train_step GFLOP (counted, fwd + bwd)", "train_step_gflop", ".1f"),
        row("train_step achieved TFLOP/s", "train_step_tflops", ".2f"),
        row(f"evaluation pass, {ev['fp32']['videos']} videos, cached bank, s", "pass_s", ".2f", ev,
            f"<= {TARGETS['eval_s']}: {verdict['eval_s']}", f"{AUTHORS['eval_s']:.0f}"),
        row("  network, s", "network_s", ".2f", ev),
        row("  proposals + mAP (numpy), s", "proposals_map_s", ".2f", ev),
        row("  network achieved TFLOP/s", "network_tflops", ".2f", ev),
        f"| save last.pt ({cp['last_mib']:.0f} MiB) / best.pt, s | {cp['last_s']:.2f} / {cp['best_s']:.2f} | | | |",
        row(f"full schedule: {pl['fp32']['iterations']:,} iterations + {pl['fp32']['evaluations']} evaluations "
            f"+ {pl['fp32']['evaluations']} last.pt saves, h", "hours", ".2f", pl,
            f"<= {TARGETS['schedule_h']}: {verdict['schedule_h']}", f"about {AUTHORS['schedule_h']}"),
        "",
        f"Each best.pt save adds {cp['best_s']:.2f} s (at most {pl['fp32']['evaluations'] - 1}). "
        "Evaluation with random weights on random features: the proposals and mAP time depends on the scores "
        "of a trained model.",
    ]
    if "skipped" in report["profiles"]:
        lines += ["", f"Profiles: {report['profiles']['skipped']}"]
    for name, prof in (report["profiles"].items() if "skipped" not in report["profiles"] else ()):
        lines += ["", f"Profile {name} ({prof['table']}):"]
        if "clock" in prof:
            busy = (f", the GPU busy {100 * prof['busy_share']:.0f}% of {prof['wall_ms']:.0f} ms wall time"
                    if prof["busy_share"] is not None else f", {prof['wall_ms']:.0f} ms wall time")
            lines.append(f"top ops by {prof['clock']}{busy}:")
            lines += [f"- {100 * e['share']:.1f}% {e['ms']:.1f} ms x{e['calls']} `{e['name']}`"
                      for e in prof["top"][:8]]
        else:
            lines += [f"- {e['s']:.3f} s `{e['name']}`" for e in prof["top"][:8]]
    ex = report["extraction"]
    lines += ["", "Feature extraction (feature_extraction, random weights, synthetic frames): "
              + (ex["skipped"] if "skipped" in ex else
                 f"{ex['frame_size']}x{ex['frame_size']} frames: TV-L1 (torch) {ex['flow_pairs_per_s']:.1f} "
                 f"flow pairs/s, I3D RGB {ex['i3d_rgb_snippets_per_s']:.1f} and flow "
                 f"{ex['i3d_flow_snippets_per_s']:.1f} snippets/s: {ex['video_seconds_per_s']:.2f} s of video "
                 "per second")]
    lines += ["", f"Report written in {report['wall_s']:.0f} s ("
              + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in report["phase_s"].items()) + ")."]
    return "\n".join(lines)


def optional(name: str, fn, strict: bool) -> dict:
    """The result of ``fn``; a failure of this optional part is recorded, not fatal, so that a GPU run
    keeps its measurements (with ``strict``, as in --smoke, it raises: the smoke run must show every part works)."""
    try:
        return fn()
    except Exception as error:  # noqa: BLE001 -- any failure of an optional part; reported below
        if strict:
            raise
        traceback.print_exc()
        return {"skipped": f"{name} failed: {type(error).__name__}: {error}"}


def write_atomically(path: Path, text: str) -> None:
    write_text(path, text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default="gpu_report", help="folder for report.json, report.md and the profiles")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes (D=32, N=16, lengths / 16, 3 steps): checks the script in < 1 min on CPU")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--profile", default="missed", choices=["missed", "always", "never"],
                        help="profile when a target is missed (always with --smoke)")
    parser.add_argument("--annotations", default=str(ANNOTATIONS),
                        help="THUMOS-14 annotation folder giving the video lengths (a demo stands in when absent)")
    parser.add_argument("--steps", type=int, default=None, help="timed iterations per mode (default 30; smoke 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own; 1 with --smoke, which a busy machine needs)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None) -> dict:
    opts = build_parser().parse_args(argv)
    began = time.perf_counter()
    cfg = dict(SMOKE if opts.smoke else FULL, device=opts.device)
    if opts.steps:
        cfg["steps"] = opts.steps
    if opts.threads or opts.smoke:
        torch.set_num_threads(opts.threads or 1)
    device = choose_device(opts.device)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(opts.seed)
    report = {"when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "smoke": opts.smoke, "device": str(device), "machine": machine_lines(device),
              "load": load_line("at the start"), "authors_h200": AUTHORS}
    phases = report["phase_s"] = {}

    def phase(name, fn):
        tic = time.perf_counter()
        value = fn()
        phases[name] = time.perf_counter() - tic
        return value

    with tempfile.TemporaryDirectory(prefix="gpu_report-") as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*segments end after their video's duration")
        root = Path(tmp)
        origin = phase("dataset", lambda: write_dataset(root / "data", cfg, Path(opts.annotations), opts.seed))
        args = {mode: project_args(cfg, mode == "amp") for mode in MODES}
        a = args["fp32"]
        dataset = SampleDataset(root / "data", NAME, num_class=a.num_class, feature_size=a.feature_size,
                                max_seqlen=a.max_seqlen, num_similar=a.num_similar, batch_size=a.batch_size)
        reference = Reference.from_dataset(dataset)
        report["config"] = {"B": a.batch_size, "D": a.feature_size, "C": a.num_class, "M": a.num_exemplars,
                            "N": a.max_seqlen, "lengths": origin, "test_videos": dataset.num_test,
                            "train_videos": len(dataset.train_index),
                            "test_snippets": int(dataset.store.lengths[dataset.test_index].sum())}
        state = build_model(a).state_dict()
        trainers = phase("models", lambda: {mode: Trainer(dataset, args[mode], copy.deepcopy(state), device, opts.seed)
                                            for mode in MODES})
        flops = phase("flop counts", lambda: (trainers["fp32"].counted_flops(), count_network_flops(trainers["fp32"])))
        report["train"] = phase("training", lambda: {m: measure_training(trainers[m], cfg, flops[0]) for m in MODES})
        evaluation = phase("evaluation", lambda: {m: measure_evaluation(trainers[m], reference, flops[1])
                                                  for m in MODES})
        report["evaluation"] = {m: timings for m, (timings, _) in evaluation.items()}
        report["checkpoints"] = phase("checkpoints", lambda: measure_checkpoints(trainers["fp32"], root))
        report["schedule"] = {m: schedule(report["train"][m], report["evaluation"][m], report["checkpoints"], a)
                              for m in MODES}
        targets = judge(report["train"], report["evaluation"], report["schedule"])
        report["targets"] = {k: {"measured": v, "target": t, "met": bool(v <= t)} for k, (v, t) in targets.items()}
        missed = {k for k, v in report["targets"].items() if not v["met"]}
        always = opts.smoke or opts.profile == "always"
        report["profiles"] = ({} if opts.profile == "never" and not opts.smoke else
                              phase("profiles", lambda: optional(
                                  "profiles", lambda: profiles(trainers, reference, evaluation["fp32"][1], missed,
                                                               always, out, cfg), strict=opts.smoke)))
    report["extraction"] = phase("extraction", lambda: optional(
        "extraction", lambda: extraction_throughput(device, cfg), strict=opts.smoke))
    report["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["wall_s"] = time.perf_counter() - began
    table = markdown(report)
    write_atomically(out / "report.json", json.dumps(report, indent=1))
    write_atomically(out / "report.md", table + "\n")
    print(table)
    print(f"\nwrote {out / 'report.json'} and {out / 'report.md'}")
    return report


if __name__ == "__main__":
    main()
