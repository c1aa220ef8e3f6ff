"""Where the time goes at ActivityNet shapes: one training step and one evaluation pass.

    python benchmarks/bench_activitynet.py                        # C = 100 and 200, CPU, ~15 min when loaded
    python benchmarks/bench_activitynet.py --classes 100 --videos 3
    python benchmarks/bench_activitynet.py --device cuda

Shapes from the ActivityNet1.2 record (dataset_record.py): D = 2048, M = 5, N = 60, a batch
of 10, the STCL_ACT model (TCL layer 1, smoothing K = 13), random weights and features.

Training step (``train.train_step``), per class count C (1.2: 100, 1.3: 200, i.e. 500 and
1,000 exemplar videos per step): the whole step, and its part that selects the exemplar
snippets (the no-grad pass of the C*M exemplar videos through the embedding and cls_base,
``STCLNet.embed`` + ``model.exemplar_snippets``), timed inside that step.

Evaluation pass at the real validation lengths (the durations of
../shared/data/activitynet12/ActivityNet1.2-Annotations, T = round(duration * 25 / 16),
videos of 10 snippets or fewer dropped):
- the network (``test.run_network``'s per-video forward with a cached bank) on ``--videos``
  videos at evenly spaced length quantiles, and the time per snippet extrapolated to every
  evaluated video (said so in the output: running all of them takes hours on a CPU);
- proposals and mAP (``protocol.evaluate``, numpy) on every evaluated video, with outputs shaped
  like a trained model's (one class clearly above the rest, smooth actionness), and the
  soft-NMS part alone: the project's (every pair's decay once) next to the row-by-row loop
  it replaced, on the same proposals, and whether they agree bit for bit.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_train_step import machine_lines, synchronize  # noqa: E402
import model as model_module  # noqa: E402
from dataset_record import ACTIVITYNET12  # noqa: E402
from options import parse_args  # noqa: E402
from proposal_methods import ACT_THRESHOLDS, _run_bounds, soft_nms  # noqa: E402
from protocol import Reference, evaluate  # noqa: E402
from model import build_criterion, build_model  # noqa: E402
from train import build_optimizer, train_step  # noqa: E402
from utils.device import choose_device  # noqa: E402
from utils.evaluation import SECONDS_PER_SNIPPET, SegmentTable, seconds_to_snippets  # noqa: E402

ANNOTATIONS = REPO.parent / "shared" / "data" / "activitynet12" / "ActivityNet1.2-Annotations"


def soft_nms_row_by_row(start, end, score, sigma: float = 0.3):
    """The soft-NMS loop the project used before: each pick computes its IoU row anew."""
    start, end = np.asarray(start, np.float64), np.asarray(end, np.float64)
    current = np.array(score, dtype=np.float64)
    area = end - start + 1
    remaining = np.ones(len(current), dtype=bool)
    order, kept = np.empty(len(current), dtype=np.int64), np.empty(len(current))
    for i in range(len(current)):
        pick = int(np.argmax(np.where(remaining, current, -np.inf)))
        order[i], kept[i] = pick, current[pick]
        remaining[pick] = False
        intersection = np.maximum(0, np.minimum(end[pick], end) - np.maximum(start[pick], start) + 1)
        current *= np.exp(-(intersection / (area[pick] + area - intersection)) ** 2 / sigma)
    return order, kept


def validation_lengths(folder: Path) -> np.ndarray:
    """Snippet counts of the evaluated ActivityNet 1.2 validation videos (T >= 11)."""
    subset = np.array([s.decode() if isinstance(s, bytes) else s for s in np.load(folder / "subset.npy")])
    duration = np.load(folder / "duration.npy").reshape(-1)
    lengths = np.maximum(1, seconds_to_snippets(duration))
    keep = (subset == ACTIVITYNET12.test_subset) & (lengths >= ACTIVITYNET12.min_snippets)
    return lengths[keep]


def timed(fn, device) -> float:
    synchronize(device)
    tic = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - tic


def training_step(num_class: int, device: torch.device, steps: int, seed: int) -> dict:
    args = parse_args(["--dataset-name", "ActivityNet1.2", "--num-class", str(num_class), "--device", str(device)])
    torch.manual_seed(seed)
    model = build_model(args).to(device)
    criterion, optimizer = build_criterion(args), build_optimizer(model, args)
    b, n, d, m = args.batch_size, args.max_seqlen, args.feature_size, args.num_exemplars
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(b, n, d, generator=gen).to(device)
    pairs = torch.arange(b) // 2  # videos 2i and 2i+1 share a class: the co-activity pairs
    labels = torch.eye(num_class)[pairs % num_class].to(device)
    exemplars = torch.randn(num_class, m, n, d, generator=gen).to(device)

    # The selection pass runs inside the step: time it there, by wrapping the two methods it
    # calls (embed under no_grad, exemplar_snippets), so that one step gives both numbers.
    spent = {"selection": 0.0}

    def timing(method, only_without_grad):
        def wrapped(*a, **kw):
            if only_without_grad and torch.is_grad_enabled():
                return method(*a, **kw)
            synchronize(device)
            tic = time.perf_counter()
            out = method(*a, **kw)
            synchronize(device)
            spent["selection"] += time.perf_counter() - tic
            return out
        return wrapped

    model.embed = timing(model.embed, True)
    original_snippets = model_module.exemplar_snippets  # a module function, looked up at each call
    model_module.exemplar_snippets = timing(original_snippets, False)
    step_s, select_s = [], []
    for iteration in range(steps):
        spent["selection"] = 0.0
        one_step = partial(train_step, model, criterion, optimizer, features, labels, exemplars, iteration)
        step_s.append(timed(one_step, device))
        select_s.append(spent["selection"])
    model_module.exemplar_snippets = original_snippets
    return {"C": num_class, "exemplar videos": num_class * m, "step": statistics.median(step_s),
            "selection": statistics.median(select_s)}


def network_pass(lengths: np.ndarray, videos: int, device: torch.device, seed: int) -> dict:
    args = parse_args(["--dataset-name", "ActivityNet1.2", "--device", str(device)])
    torch.manual_seed(seed)
    model = build_model(args).to(device).eval()
    d, m, n = args.feature_size, args.num_exemplars, args.max_seqlen
    with torch.no_grad():
        bank = model.exemplar_bank(torch.randn(args.num_class, m, n, d, device=device))
    sample = np.quantile(lengths, np.linspace(0.1, 0.9, videos)).astype(int) if videos > 1 \
        else np.array([int(np.median(lengths))])
    seconds = []
    with torch.no_grad():
        for t in sample:
            x = torch.randn(1, int(t), d, device=device)
            seconds.append(timed(partial(model, x, exemplar_bank=bank), device))
    per_snippet = sum(seconds) / sample.sum()
    return {"sample lengths": sample.tolist(), "seconds": seconds, "per snippet": per_snippet,
            "extrapolated": per_snippet * lengths.sum(), "videos": len(lengths), "snippets": int(lengths.sum())}


def trained_like_outputs(lengths: np.ndarray, num_class: int, seed: int):
    """Per video: cas with one class clearly above the rest, a smooth actionness with bumps."""
    rng = np.random.default_rng(seed)
    outputs, names = {}, []
    for v, t in enumerate(lengths):
        cas = rng.normal(0, 1, (t, num_class + 1)).astype(np.float32)
        cas[:, rng.integers(num_class)] += 3
        attn = np.convolve(rng.random(t), np.ones(9) / 9, "same")[:, None].astype(np.float32)
        outputs[f"video_{v}"] = (cas, attn)
        names.append(f"video_{v}")
    gt_videos = rng.integers(0, len(names), 3000)
    ground_truth = SegmentTable(gt_videos, rng.integers(0, num_class, 3000), np.zeros(3000),
                                np.minimum(50.0, lengths[gt_videos]), np.ones(3000))
    labels = np.eye(num_class, dtype=np.float32)[rng.integers(0, num_class, len(names))]
    record = ACTIVITYNET12
    reference = Reference([f"class_{c}" for c in range(num_class)], names, labels, ground_truth, {},
                          np.asarray(record.tiou_thresholds), SECONDS_PER_SNIPPET, record.averages,
                          record.selection_thresholds, record.selection)
    return outputs, reference


def proposal_inputs(outputs) -> list:
    """The (start, end, score) soft-NMS inputs of every video's first class (as the proposals build them)."""
    inputs = []
    for cas, attn in outputs.values():
        starts, ends = _run_bounds(attn.reshape(1, -1) > ACT_THRESHOLDS[:, None])
        inputs.append((starts.astype(np.float64), ends + 1.0, cas[starts, 0].astype(np.float64)))
    return inputs


def numpy_evaluation(lengths: np.ndarray, seed: int) -> dict:
    outputs, reference = trained_like_outputs(lengths, ACTIVITYNET12.num_class, seed)
    tic = time.perf_counter()
    result = evaluate(outputs, reference)
    evaluate_s = time.perf_counter() - tic
    inputs = proposal_inputs(outputs)
    tic = time.perf_counter()
    project = [soft_nms(*x) for x in inputs]
    project_s = time.perf_counter() - tic
    tic = time.perf_counter()
    loop = [soft_nms_row_by_row(*x) for x in inputs]
    loop_s = time.perf_counter() - tic
    same = all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(project, loop))
    return {"evaluate": evaluate_s, "detections": len(result.detections), "nms project": project_s,
            "nms loop": loop_s, "nms calls": len(inputs), "proposals": sum(len(x[0]) for x in inputs), "same": same}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--classes", default="100,200", help="class counts C of the training-step runs")
    parser.add_argument("--steps", type=int, default=1, help="timed training steps per C (median)")
    parser.add_argument("--videos", type=int, default=5, help="validation videos the network pass is timed on")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--annotations", type=Path, default=ANNOTATIONS, help="the ActivityNet 1.2 annotation folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-training", action="store_true", help="only the evaluation pass")
    opts = parser.parse_args(argv)
    device = choose_device(opts.device)
    torch.set_num_threads(opts.threads)
    print("\n".join(machine_lines(device)))
    if not (opts.annotations / "duration.npy").is_file():
        sys.exit(f"error: no ActivityNet 1.2 annotations at {opts.annotations} (--annotations)")
    lengths = validation_lengths(opts.annotations)
    print(f"ActivityNet1.2 record: D = 2048, M = {ACTIVITYNET12.num_exemplars}, N = {ACTIVITYNET12.max_seqlen}, "
          f"batch 10; {len(lengths)} evaluated validation videos, {lengths.sum()} snippets "
          f"(median {int(np.median(lengths))}, max {lengths.max()})\n")

    if not opts.skip_training:
        print(f"training step (median of {opts.steps}):")
        print(f"{'C':>5}{'exemplar videos':>17}{'step s':>10}{'selection s':>13}{'share':>8}")
        for c in [int(x) for x in opts.classes.split(",")]:
            r = training_step(c, device, opts.steps, opts.seed)
            print(f"{r['C']:>5}{r['exemplar videos']:>17}{r['step']:>10.2f}{r['selection']:>13.2f}"
                  f"{100 * r['selection'] / r['step']:>7.0f}%", flush=True)
        print("selection = the no-grad pass that picks the exemplar snippets (embedding + cls_base of every "
              "exemplar snippet), timed inside the step\n")

    r = network_pass(lengths, opts.videos, device, opts.seed)
    print(f"evaluation, network: {r['per snippet'] * 1e3:.2f} ms per snippet over {len(r['sample lengths'])} videos "
          f"of {r['sample lengths']} snippets ({', '.join(f'{s:.2f}' for s in r['seconds'])} s)")
    print(f"  extrapolated to all {r['videos']} videos ({r['snippets']} snippets): {r['extrapolated'] / 60:.1f} min")
    r = numpy_evaluation(lengths, opts.seed)
    print(f"evaluation, proposals + mAP (numpy, all videos): {r['evaluate']:.1f} s, {r['detections']} detections")
    print(f"  soft-NMS alone, {r['nms calls']} calls, {r['proposals']} proposals: project {r['nms project']:.2f} s, "
          f"row-by-row loop {r['nms loop']:.2f} s ({r['nms loop'] / r['nms project']:.1f}x), "
          f"identical: {r['same']}")


if __name__ == "__main__":
    main()
