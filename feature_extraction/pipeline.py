"""Video file -> (T, 2048) two-stream I3D snippet features, [RGB | flow], RGB first.

Frames are decoded on a 25-fps clock (:mod:`.decode`), brought to the network size, and cut
into non-overlapping chunks of 16 frames: snippet t covers frames 16 t .. 16 t + 15, i.e.
seconds [0.64 t, 0.64 (t + 1)), which is the loader's convention (snippet = seconds * 25 / 16).
The flow of frame i is the TV-L1 flow from frame i to frame i + 1, so a chunk's 16 flow fields
use its 16 frames and the first frame of the next chunk; for the last chunk of a video whose
frame count is a multiple of 16 there is no next frame, and the last frame is repeated (its
flow field is zero). T = floor(frames / 16): the frames after the last complete chunk (fewer
than 16, under 0.64 s) are dropped, because a padded chunk would describe less than 0.64 s
and break the snippet-to-seconds rule every proposal is placed by.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from utils.device import autocast
from utils.errors import VideoError
from utils.evaluation import SNIPPET_FRAMES

from .decode import FPS, FrameSampler, iter_frames
from .flow import CPU, FlowEstimator, flow_to_input, make_flow, rgb_to_input, to_gray
from .i3d import FEATURE_SIZE, load_i3d

class FeatureExtractor:
    """Two-stream I3D features of video files.

    Args:
        rgb_weights, flow_weights: paths of the port's ``rgb_imagenet.pt`` / ``flow_imagenet.pt``
            (or any state dict with the same keys and shapes).
        flow: ``torch`` (batched TV-L1 on `device`) or ``opencv`` (cv2 TV-L1, CPU).
        sample_mode: ``resize`` | ``center_crop`` | ``oversample`` (see decode.FrameSampler).
        batch_size: 16-frame chunks per I3D forward pass (and per flow batch: 16 x this many pairs).
        device: where I3D and the torch TV-L1 run.
        amp: run I3D under bfloat16 autocast (utils.device.autocast); TV-L1 stays float32.
        flow_quantize: ``none`` | ``uint8`` | ``jpeg``: pass flow through the classic pipeline's
            8-bit (JPEG) flow images before I3D.
        size, short_side: network input size (224) and the shorter side of the crop modes (256).
    Raises:
        WeightsError (an STCLError) naming the file when a weights file is missing or wrong.
    """

    def __init__(self, rgb_weights, flow_weights, *, flow: str = "torch", sample_mode: str = "resize",
                 batch_size: int = 8, device: torch.device = CPU, amp: bool = False,
                 flow_quantize: str = "none", size: int = 224, short_side: int = 256):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size, self.amp, self.flow_quantize = batch_size, amp, flow_quantize
        self.sampler = FrameSampler(sample_mode, size, short_side)
        self.flow: FlowEstimator = make_flow(flow, self.device, batch_size=SNIPPET_FRAMES * batch_size)
        flow_to_input(np.zeros((1, 1, 2), np.float32), flow_quantize)  # validates the mode now
        self.rgb_net = load_i3d(rgb_weights, 3, "RGB I3D weights").to(self.device)
        self.flow_net = load_i3d(flow_weights, 2, "flow I3D weights").to(self.device)

    def extract(self, video_path, progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
        """(T, 2048) float32 features of one video, T = floor(frames at 25 fps / 16).

        ``progress(n)`` is called with the number of frames decoded since the last call.
        Raises VideoError naming the file for an unreadable video, a file without a video
        stream, one that fails to decode, or one shorter than 16 frames at 25 fps.
        """
        path = Path(video_path)
        chunk_frames = SNIPPET_FRAMES * self.batch_size
        features: list[np.ndarray] = []
        buffer: list[np.ndarray] = []  # frames from the start of the next unprocessed chunk
        frames = 0
        for _, rgb in iter_frames(path, FPS):
            buffer.append(self.sampler.prepare(rgb))
            frames += 1
            if progress is not None:
                progress(1)
            if len(buffer) == chunk_frames + 1:
                features.append(self._chunks(np.stack(buffer)))
                buffer = buffer[-1:]
        complete = len(buffer) // SNIPPET_FRAMES
        if complete:
            tail = buffer[:complete * SNIPPET_FRAMES + 1]
            if len(tail) == complete * SNIPPET_FRAMES:
                tail.append(tail[-1])  # no next frame: repeat the last one (zero flow)
            features.append(self._chunks(np.stack(tail)))
        if not features:
            raise VideoError(f"{path}: {frames} frames at {FPS} fps ({frames / FPS:.2f} s) is shorter than one "
                             f"snippet of {SNIPPET_FRAMES} frames, so it has no features")
        return np.concatenate(features).astype(np.float32)

    def _chunks(self, frames: np.ndarray) -> np.ndarray:
        """(16 B + 1, h, w, 3) uint8 frames -> (B, 2048) features of the B chunks."""
        num = (len(frames) - 1) // SNIPPET_FRAMES
        gray = np.stack([to_gray(frame) for frame in frames])
        flow = flow_to_input(self.flow(gray[:-1], gray[1:]), self.flow_quantize)  # (16 B, h, w, 2)
        rgb = rgb_to_input(frames[:-1])  # (16 B, h, w, 3)
        rgb_views, flow_views = self.sampler.views(rgb), self.sampler.views(flow, is_flow=True)  # (V, 16 B, s, s, K)
        out = np.zeros((num, 2 * FEATURE_SIZE), np.float32)
        for rgb_view, flow_view in zip(rgb_views, flow_views):
            out[:, :FEATURE_SIZE] += self._i3d(self.rgb_net, rgb_view, num)
            out[:, FEATURE_SIZE:] += self._i3d(self.flow_net, flow_view, num)
        return out / len(rgb_views)

    @torch.no_grad()
    def _i3d(self, net, frames: np.ndarray, num: int) -> np.ndarray:
        """(16 B, s, s, K) float -> (B, 1024): one I3D pass over the B chunks."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        x = x.reshape(num, SNIPPET_FRAMES, *x.shape[1:]).permute(0, 4, 1, 2, 3)  # (B, K, 16, s, s)
        with autocast(self.device, self.amp):
            return net.features(x).float().cpu().numpy()
