"""Memory and step time: the released joint features file against the memory-mapped store, under a memory limit.

    python benchmarks/bench_feature_store.py                                 # 2 GiB of features, 1.5 GiB limit
    python benchmarks/bench_feature_store.py --dataset-gib 4 --limit-gib 1.5

A synthetic dataset in the THUMOS layout (demo annotations, random features of D channels,
``--dataset-gib`` of float32 features in all) is written twice: as the released joint
``.npy`` (a pickled object array, read whole) and as a feature store (feature_store.py).
Each loader then runs in a fresh process: it opens the dataset, trains ``--steps`` steps
of the real STCL-Net exactly as main.py does (batch, exemplar draw, train_step; the model
is STCL-Net scaled to D, see docs/METHOD.md) and reads every test video once (the data
path of an evaluation; the network is not run on them). Each format runs without a limit
and under the limit. The limit
is ``resource.setrlimit(RLIMIT_DATA)``: Linux counts private memory (heap, anonymous maps)
against it, not the read-only shared mapping of a file, which the kernel pages in and
out as needed, so a process under it really has only that much memory of its own.

Reported per run: the outcome, peak RSS (VmHWM), its peaks of private (RssAnon) and
file-backed (RssFile: pages of the mapped store, reclaimable page cache) memory sampled
every 5 ms, the seconds to open the dataset and the median seconds per training step.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

NAME = "Thumos14reduced"
GIB = 2 ** 30


# ----------------------------------------------------------------------------- the dataset

def write_datasets(root: Path, gib: float, feature_size: int, seed: int) -> dict:
    """Demo annotations, then random features of the demo's lengths, as a joint file and as a store."""
    from dataset.make_demo import make_demo_dataset
    from feature_store import write_store

    snippets_wanted = int(gib * GIB / (4 * feature_size))
    videos = max(60, round(snippets_wanted / 190))  # demo videos have 80..300 snippets, 190 on average
    num_test = videos // 2
    make_demo_dataset(root, num_train=videos - num_test, num_test=num_test, num_class=20, feature_size=2, seed=seed)
    joint_file = root / f"{NAME}-I3D-JOINTFeatures.npy"
    lengths = [len(v) for v in np.load(joint_file, allow_pickle=True)]
    names = [n.decode() for n in np.load(root / f"{NAME}-Annotations" / "videoname.npy")]
    rng = np.random.default_rng(seed)
    features = np.empty(len(lengths), dtype=object)
    for v, length in enumerate(lengths):
        features[v] = rng.standard_normal((length, feature_size), dtype=np.float32)
    np.save(joint_file, features, allow_pickle=True)
    write_store(root, NAME, names, features, feature_size)
    return {"videos": len(lengths), "snippets": int(sum(lengths)),
            "gib": sum(lengths) * feature_size * 4 / GIB, "test_videos": num_test}


# ----------------------------------------------------------------------------- one run (child process)

class MemorySampler:
    """Peaks of RssAnon, RssFile and VmData (/proc/self/status), sampled every ``interval_s`` seconds,
    and VmHWM, the kernel's own peak RSS of this process image (ru_maxrss would carry the parent's
    peak across fork and exec)."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s, self.peaks = interval_s, {"RssAnon": 0, "RssFile": 0, "VmData": 0, "VmHWM": 0}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self._sample()

    def _sample(self):
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in self.peaks:
                self.peaks[key] = max(self.peaks[key], int(line.split()[1]) * 1024)

    def _run(self):
        while not self._done.wait(self.interval_s):
            self._sample()


def run_one(opts: argparse.Namespace) -> dict:
    """Open the dataset in ``opts.format``, train ``opts.steps`` steps, read every test video; report memory."""
    import torch

    from options import parse_args
    from exemplar_source import ExemplarSource
    from model import build_criterion, build_model
    from train import build_optimizer, train_step
    from wsad_dataset import SampleDataset

    torch.set_num_threads(opts.threads)
    if opts.limit_gib:
        limit = int(opts.limit_gib * GIB)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    result = {"format": opts.format, "limit_gib": opts.limit_gib}
    with MemorySampler() as memory:
        try:
            tic = time.perf_counter()
            dataset = SampleDataset(opts.data, NAME, feature_size=opts.feature_size, max_seqlen=opts.seqlen,
                                    feature_format=opts.format)
            result["open_s"] = time.perf_counter() - tic
            args = parse_args(["--feature-size", str(opts.feature_size), "--max-seqlen", str(opts.seqlen)])
            torch.manual_seed(0)
            model, criterion = build_model(args), build_criterion(args)
            optimizer = build_optimizer(model, args)
            source = ExemplarSource(dataset, args.num_exemplars, torch.device("cpu"))
            rng, times, losses = np.random.default_rng(0), [], []
            for iteration in range(opts.steps + 1):  # the first step is a warm-up
                tic = time.perf_counter()
                features, labels, _ = dataset.load_batch(rng)
                terms = train_step(model, criterion, optimizer, torch.from_numpy(features),
                                   torch.from_numpy(labels), source.draw(rng), iteration)
                times.append(time.perf_counter() - tic)
                losses.append(terms["total"])
            tic = time.perf_counter()
            read = sum(int(features.size) for features, *_ in dataset.test_videos())
            result.update(outcome="ok", step_s=statistics.median(times[1:]), exemplar_pool=source.placement,
                          test_read_s=time.perf_counter() - tic, test_values_read=read, losses=losses)
        except MemoryError:
            result.update(outcome="MemoryError", where="opening the dataset" if "open_s" not in result else "training")
    result.update(peak_rss_gib=memory.peaks["VmHWM"] / GIB, peak_anon_gib=memory.peaks["RssAnon"] / GIB,
                  peak_file_gib=memory.peaks["RssFile"] / GIB, peak_data_gib=memory.peaks["VmData"] / GIB)
    return result


# ----------------------------------------------------------------------------- the comparison

def in_child(opts: argparse.Namespace, fmt: str, limit_gib: float, data: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--format", fmt, "--data", str(data),
               "--limit-gib", str(limit_gib), "--feature-size", str(opts.feature_size), "--seqlen", str(opts.seqlen),
               "--steps", str(opts.steps), "--threads", str(opts.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        return {"format": fmt, "limit_gib": limit_gib, "outcome": f"exit code {done.returncode}: "
                f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    header = (f"{'features':>8} | {'memory limit':>12} | {'outcome':>34} | {'peak RSS GiB':>12} | "
              f"{'private GiB':>11} | {'file-backed GiB':>15} | {'VmData GiB':>10} | {'open s':>7} | "
              f"{'s / step':>8} | {'read test s':>11}")
    lines = [header, "-" * len(header)]
    for r in rows:
        limit = f"{r['limit_gib']:g} GiB" if r["limit_gib"] else "none"
        outcome = (r["outcome"] + (f" ({r['where']})" if "where" in r else ""))[:34]

        def cell(key, width, fmt, r=r):
            return format(r[key], fmt).rjust(width) if key in r else "-".rjust(width)
        lines.append(f"{r['format']:>8} | {limit:>12} | {outcome:>34} | {cell('peak_rss_gib', 12, '.2f')} | "
                     f"{cell('peak_anon_gib', 11, '.2f')} | {cell('peak_file_gib', 15, '.2f')} | "
                     f"{cell('peak_data_gib', 10, '.2f')} | "
                     f"{cell('open_s', 7, '.1f')} | {cell('step_s', 8, '.3f')} | {cell('test_read_s', 11, '.1f')}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset-gib", type=float, default=2.0, help="size of the float32 features")
    parser.add_argument("--limit-gib", type=float, default=1.5, help="RLIMIT_DATA of the limited runs")
    parser.add_argument("--feature-size", type=int, default=256, help="D (the model is STCL-Net scaled to D)")
    parser.add_argument("--seqlen", type=int, default=32, help="N")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--format", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> None:
    opts = build_parser().parse_args(argv)
    if opts.worker:
        print(json.dumps(run_one(opts)))
        return
    from benchmarks.bench_train_step import load_line, machine_lines

    import torch

    print("\n".join(machine_lines(torch.device("cpu"))))
    print(load_line("before"))
    with tempfile.TemporaryDirectory(prefix="bench_feature_store-", dir=os.environ.get("TMPDIR")) as tmp:
        tic = time.perf_counter()
        info = write_datasets(Path(tmp), opts.dataset_gib, opts.feature_size, opts.seed)
        print(f"dataset: {info['videos']} videos, {info['snippets']:,} snippets x D={opts.feature_size}: "
              f"{info['gib']:.2f} GiB of float32 features, written twice in {time.perf_counter() - tic:.0f} s; "
              f"B=10, C=20, M=10, N={opts.seqlen}, {opts.steps} timed steps, {opts.threads} torch thread(s)")
        runs = [("joint", 0.0), ("store", 0.0), ("joint", opts.limit_gib), ("store", opts.limit_gib)]
        rows = []
        for fmt, limit in runs:
            rows.append(in_child(opts, fmt, limit, Path(tmp)))
            print(f"  {fmt}, limit {limit:g} GiB: {rows[-1]['outcome']}", flush=True)
    print(load_line("after"))
    print()
    print(table(rows))
    ok = [r for r in rows if r["outcome"] == "ok"]
    if len({tuple(r["losses"]) for r in ok}) == 1 and len(ok) > 1:
        print(f"\nthe {len(ok)} runs that finished computed the same losses, step by step")
    print("private = RssAnon (heap, tensors); file-backed = RssFile (pages of the mapped store, page cache the "
          "kernel reclaims under pressure); peak RSS = VmHWM, both together; VmData = the private address "
          "space, what RLIMIT_DATA limits (peaks sampled every 5 ms)")
    for r in rows:
        if r["outcome"] not in ("ok", "MemoryError"):
            print(f"{r['format']}, limit {r['limit_gib']:g} GiB: {r['outcome']}")


if __name__ == "__main__":
    main()
