"""Seconds per evaluation pass: one cached exemplar bank against the released per-video resampling.

    python benchmarks/bench_eval_bank.py                        # CPU: 6 + 1 sampled videos, about 2 minutes
    python benchmarks/bench_eval_bank.py --seqlen 128 --videos 12
    python benchmarks/bench_eval_bank.py --device cuda          # all 212 videos in both modes

Both modes run the project's ``test.run_network`` on the real STCL-Net (random weights):
``cached`` draws and builds one exemplar bank (C+1, D, M) and reuses it for every test
video; ``resample`` draws M training videos per class, resamples them to N snippets and
runs them through the network again for every test video, as the released code does.
The test videos have the lengths of the 212 THUMOS-14 test videos (T = round(duration *
25 / 16) from ../shared/data/thumos14 when it is there, synthetic lengths otherwise) and
random features; the exemplar pools come from a synthetic training set (dataset/make_demo.py).

Every video is timed inside run_network (between the moments it asks for consecutive
videos). When only a sample of the 212 videos is run (the CPU default), the pass is
extrapolated: per-video seconds are fitted as a + b * T on the sampled videos and summed
over the 212 real lengths; resampling adds, per video, the bank time measured on the
resampled videos. The output says which numbers are measured and which extrapolated.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_train_step import (  # noqa: E402
    benchmark_parser, load_line, machine_lines, project_options, write_training_set)
from inference import run_network  # noqa: E402
from exemplar_source import ExemplarSource  # noqa: E402
from model import build_model  # noqa: E402
from utils.device import choose_device  # noqa: E402
from utils.evaluation import seconds_to_snippets  # noqa: E402
from wsad_dataset import SampleDataset  # noqa: E402

ANNOTATIONS = REPO.parent / "shared" / "data" / "thumos14" / "Thumos14reduced-Annotations"
NUM_TEST_VIDEOS = 212


def thumos_test_lengths() -> tuple[np.ndarray, str]:
    """Snippets of each THUMOS-14 test video, and where they come from."""
    if ANNOTATIONS.is_dir():
        subset = np.load(ANNOTATIONS / "subset.npy")
        duration = np.load(ANNOTATIONS / "duration.npy").reshape(-1)[subset == b"test"]
        lengths = seconds_to_snippets(duration)
        return lengths, f"real THUMOS-14 test lengths ({ANNOTATIONS})"
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(250), 0.7, NUM_TEST_VIDEOS), 24, 2600).round().astype(np.int64)
    return lengths, f"synthetic lengths ({ANNOTATIONS} not found)"


def spread_sample(lengths: np.ndarray, count: int) -> np.ndarray:
    """Indices of ``count`` videos spread over the lengths, shortest and longest included (all if count >= V)."""
    order = np.argsort(lengths, kind="stable")
    if count >= len(lengths):
        return order
    return order[np.round(np.linspace(0, len(lengths) - 1, count)).astype(int)]


class TimedTestVideos:
    """The test-video interface of SampleDataset over given features, recording when each
    video is asked for: the gap between two requests is the time run_network spent on a video."""

    def __init__(self, features: list[np.ndarray]):
        self.features, self.requests = features, []

    @property
    def num_test(self) -> int:
        return len(self.features)

    def test_videos(self):
        for index, features in enumerate(self.features):
            self.stamp()
            yield features, None, f"video_{index}", index
        self.stamp()

    def stamp(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # charge queued GPU work to the video that queued it
        self.requests.append(time.perf_counter())


def timed_pass(model, features, source, device, mode: str, seed: int) -> tuple[float, np.ndarray]:
    """run_network over ``features``: seconds before the first video (the cached bank), per-video seconds."""
    videos = TimedTestVideos(features)
    start = time.perf_counter()
    run_network(model, videos, source, device, exemplar_mode=mode, exemplar_seed=seed, progress=False)
    return videos.requests[0] - start, np.diff(videos.requests)


@torch.no_grad()
def warm_up(model, opts, device: torch.device) -> None:
    """One small forward pass, so that library start-up is not charged to the first timing."""
    model.eval()
    bank = torch.randn(opts.num_class + 1, opts.feature_size, opts.num_exemplars, device=device)
    model(torch.randn(1, 32, opts.feature_size, device=device), exemplar_bank=bank)


def build_parser() -> argparse.ArgumentParser:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--seqlen", type=int, default=500, help="N, snippets of each exemplar video (THUMOS: 500)")
    parser.add_argument("--videos", type=int, default=None,
                        help="test videos run with the cached bank (spread over the lengths); "
                             "default 6 on CPU, 212 on CUDA")
    parser.add_argument("--resample-videos", type=int, default=None,
                        help="of those, how many are also run with per-video resampling; default 1 on CPU, all on CUDA")
    return parser


def resolve_defaults(opts: argparse.Namespace) -> argparse.Namespace:
    on_gpu = choose_device(opts.device).type == "cuda"
    opts.videos = min(opts.videos or (NUM_TEST_VIDEOS if on_gpu else 6), NUM_TEST_VIDEOS)
    opts.resample_videos = min(opts.resample_videos or (opts.videos if on_gpu else 1), opts.videos)
    return opts


def main(argv=None) -> None:
    opts = resolve_defaults(build_parser().parse_args(argv))
    torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    device = choose_device(opts.device)
    lengths, origin = thumos_test_lengths()
    sample = spread_sample(lengths, opts.videos)
    rng = np.random.default_rng(opts.seed)
    features = [rng.normal(0, 1, (lengths[v], opts.feature_size)).astype(np.float32) for v in sample]
    args = project_options(opts, opts.seqlen)
    model = build_model(args).to(device)
    print("\n".join(machine_lines(device)))
    print(load_line("before"))
    print(f"shapes: D={opts.feature_size}, C={opts.num_class}, M={opts.num_exemplars}, N={opts.seqlen} "
          f"(a bank is the network on {opts.num_class * opts.num_exemplars} x {opts.seqlen} exemplar snippets); "
          f"{len(lengths)} test videos, {origin}: T from {lengths.min()} to {lengths.max()}, "
          f"{lengths.sum():,} snippets in all")

    with tempfile.TemporaryDirectory(prefix="bench_eval_bank-") as tmp:
        dataset = SampleDataset(write_training_set(Path(tmp), opts.num_class, opts.feature_size, opts.num_exemplars),
                                num_class=opts.num_class, feature_size=opts.feature_size, max_seqlen=opts.seqlen)
        source = ExemplarSource(dataset, opts.num_exemplars, device)
        warm_up(model, opts, device)
        bank_s, cached_s = timed_pass(model, features, source, device, "cached", opts.seed)
        _, resample_s = timed_pass(model, features[:opts.resample_videos], source, device, "resample", opts.seed)
    print(load_line("after"))
    print()
    print(report(lengths, lengths[sample], bank_s, cached_s, resample_s))


def report(lengths, sampled_lengths, bank_s: float, cached_s: np.ndarray, resample_s: np.ndarray) -> str:
    """The measured sample and the pass over every video (measured or extrapolated)."""
    n_cached, n_resample = len(cached_s), len(resample_s)
    overhead = float(np.mean(resample_s - cached_s[:n_resample]))  # per-video bank draw and build
    measured = n_cached == len(lengths) and n_resample == len(lengths)
    if measured:
        cached_pass, resample_pass = bank_s + cached_s.sum(), resample_s.sum()
    else:
        slope, intercept = (np.polyfit(sampled_lengths, cached_s, 1) if n_cached > 1
                            else (cached_s[0] / sampled_lengths[0], 0.0))
        network = np.maximum(intercept + slope * lengths, 0)  # predicted per-video seconds with a cached bank
        cached_pass, resample_pass = bank_s + network.sum(), (network + overhead).sum()
    how = ("measured" if measured else
           "extrapolated from the sample: per-video seconds fitted as a + b*T, resampling adds the bank time per video")
    lines = [
        f"measured: building the cached bank once: {bank_s:.3f} s",
        f"measured: {n_cached} video(s) with the cached bank, T = {', '.join(map(str, sampled_lengths))}: "
        f"{', '.join(f'{s:.3f}' for s in cached_s)} s",
        f"measured: {n_resample} of them with per-video resampling: {', '.join(f'{s:.3f}' for s in resample_s)} s "
        f"(draw + bank + network; {overhead:.3f} s per video more than cached)",
        "",
        f"evaluation pass over {len(lengths)} videos ({how}):",
        f"{'mode':>10} | {'pass s':>10} | {'s / video':>10}",
        f"{'cached':>10} | {cached_pass:>10.1f} | {cached_pass / len(lengths):>10.3f}",
        f"{'resample':>10} | {resample_pass:>10.1f} | {resample_pass / len(lengths):>10.3f}",
        f"cached is {resample_pass / cached_pass:.1f}x faster per pass (issue target: at least 20x at N = 500)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
