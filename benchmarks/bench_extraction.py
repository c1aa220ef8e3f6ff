"""Feature-extraction speed: TV-L1 frame pairs/s of both implementations side by side, and
I3D snippets/s (one 16-frame chunk through both streams).

    python benchmarks/bench_extraction.py                      # CPU, 224 x 224, a few pairs
    python benchmarks/bench_extraction.py --device cuda --pairs 64 --torch-batch 64

Frames are a textured image sliding 2 px per frame (the work TV-L1 does hardly depends on the
content: it runs its iterations until the per-pair stopping rule). Weights are random (speed
does not depend on them). Keep runs short on a shared machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from feature_extraction.flow import OpenCVTVL1, TorchTVL1  # noqa: E402
from feature_extraction.i3d import InceptionI3d  # noqa: E402
from feature_extraction.synthetic import moving_texture  # noqa: E402
from utils.device import autocast, choose_device  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats: int = 1) -> float:
    """Seconds of the fastest of `repeats` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (torch TV-L1 and I3D)")
    p.add_argument("--size", type=int, default=224, help="frame size (the network input)")
    p.add_argument("--pairs", type=int, default=4, help="frame pairs timed per flow implementation")
    p.add_argument("--opencv-pairs", type=int, default=None, help="pairs for OpenCV (default: --pairs)")
    p.add_argument("--torch-batch", type=int, default=None, help="pairs per torch TV-L1 batch (default: --pairs)")
    p.add_argument("--snippets", type=int, default=2, help="16-frame chunks per I3D batch")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--amp", action="store_true", help="also time I3D under bfloat16 autocast")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    frames = np.ascontiguousarray(moving_texture(args.pairs + 1, args.size, args.size, velocity=(2, 0))[..., 0])
    prev, nxt = frames[:-1], frames[1:]
    n_cv = args.opencv_pairs or args.pairs

    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.size} x {args.size} frames")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    cv_s = timed(lambda: OpenCVTVL1()(prev[:n_cv], nxt[:n_cv]))
    tv = TorchTVL1(device=device, batch_size=args.torch_batch or args.pairs)
    torch_s = timed(lambda: (tv(prev, nxt), synchronize(device)))
    print(f"{'TV-L1':<26}{'pairs':>8}{'seconds':>10}{'pairs/s':>10}")
    print(f"{'opencv (cv2, CPU)':<26}{n_cv:>8}{cv_s:>10.2f}{n_cv / cv_s:>10.2f}")
    print(f"{'torch (batched, ' + device.type + ')':<26}{args.pairs:>8}{torch_s:>10.2f}{args.pairs / torch_s:>10.2f}")

    rgb_net, flow_net = InceptionI3d(3).eval().to(device), InceptionI3d(2).eval().to(device)
    rgb = torch.rand(args.snippets, 3, 16, args.size, args.size, device=device) * 2 - 1
    flow = torch.rand(args.snippets, 2, 16, args.size, args.size, device=device) * 2 - 1
    print(f"{'I3D (both streams)':<26}{'snippets':>8}{'seconds':>10}{'snippets/s':>12}")
    for amp in ([False, True] if args.amp else [False]):
        def step(amp=amp):
            with torch.no_grad(), autocast(device, amp):
                rgb_net.features(rgb), flow_net.features(flow)
            synchronize(device)
        seconds = timed(step)
        label = "bfloat16 autocast" if amp else "float32"
        print(f"{label:<26}{args.snippets:>8}{seconds:>10.2f}{args.snippets / seconds:>12.2f}")


if __name__ == "__main__":
    main()
