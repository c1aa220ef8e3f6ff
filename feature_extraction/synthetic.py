"""Generated videos and stand-in I3D weights: for the tests and the README's sample run.

The stand-in weights are random tensors saved under the real key names and shapes (the
features they give mean nothing); real weights come from the PyTorch I3D port (see i3d.py).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence

import av
import numpy as np
import torch

from .i3d import InceptionI3d


def write_video(path, frames: np.ndarray, fps: int = 30, times: Optional[Sequence[float]] = None,
                codec: str = "mpeg4", faststart: bool = False) -> Path:
    """Encode (N, H, W, 3) uint8 RGB frames (H, W even) to `path` with PyAV.

    ``times``: presentation time of every frame in seconds (a variable frame rate, on a
    1 ms clock); default: constant `fps`. ``faststart`` puts the mp4 index first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"} if codec == "mpeg4" else {}
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = int(round(times[index] * 1000)), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def moving_texture(num_frames: int, height: int = 64, width: int = 64, velocity=(2, 0), seed: int = 0,
                   background: bool = False) -> np.ndarray:
    """(N, H, W, 3) uint8: a smooth random texture moving `velocity` = (x, y) px per frame.

    ``background``: a textured square moves over a static textured background instead.
    """
    import cv2

    rng = np.random.default_rng(seed)
    margin = int(np.abs(velocity).max() * num_frames) + 8

    def texture(h, w):
        noise = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 2.0)
        return cv2.normalize(noise, None, 20, 235, cv2.NORM_MINMAX).astype(np.uint8)

    big = texture(height + 2 * margin, width + 2 * margin)
    frames = np.empty((num_frames, height, width), np.uint8)
    if background:
        static, patch = texture(height, width), texture(height // 2, width // 2)
    for i in range(num_frames):
        dx, dy = int(round(velocity[0] * i)), int(round(velocity[1] * i))
        if background:
            frame = static.copy()
            top, left = height // 4 + dy, width // 4 + dx
            ph, pw = patch.shape
            y0, x0 = max(top, 0), max(left, 0)
            y1, x1 = min(top + ph, height), min(left + pw, width)
            if y1 > y0 and x1 > x0:
                frame[y0:y1, x0:x1] = patch[y0 - top:y1 - top, x0 - left:x1 - left]
        else:  # the content moves by +velocity: frame i shows the texture shifted right/down
            frame = big[margin - dy:margin - dy + height, margin - dx:margin - dx + width]
        frames[i] = frame
    return np.repeat(frames[..., None], 3, axis=-1)


def random_i3d_weights(path, in_channels: int, seed: int = 0) -> Path:
    """Save a random I3D state dict under the port's key names (BatchNorm statistics randomised too)."""
    torch.manual_seed(seed)
    model = InceptionI3d(in_channels)
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith("running_var"):
            value.uniform_(0.5, 1.5)
        elif key.endswith("running_mean") or key.endswith(".bias"):
            value.uniform_(-0.1, 0.1)
        elif key.endswith("bn.weight"):
            value.uniform_(0.8, 1.2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


#: The generated sample: two 'actions', a texture sliding right or sliding down.
SAMPLE_CLASSES = {"SlideRight": (2, 0), "SlideDown": (0, 2)}


def _sliding_video(velocity, start: int, end: int, num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """(N, H, W, 3) uint8: a still texture that slides by `velocity` px per frame during frames [start, end)."""
    import cv2

    rng = np.random.default_rng(seed)
    margin = 2 * (end - start) + 8
    noise = cv2.GaussianBlur(rng.uniform(0, 255, (height + 2 * margin, width + 2 * margin)).astype(np.float32),
                             (0, 0), 2.0)
    big = cv2.normalize(noise, None, 20, 235, cv2.NORM_MINMAX).astype(np.uint8)
    frames = np.empty((num_frames, height, width), np.uint8)
    for i in range(num_frames):
        steps = min(max(i - start, 0), end - start)
        dx, dy = velocity[0] * steps, velocity[1] * steps
        frames[i] = big[margin - dy:margin - dy + height, margin - dx:margin - dx + width]
    return np.repeat(frames[..., None], 3, axis=-1)


def write_sample(folder, videos_per_class: int = 4, seconds: float = 3.0, fps: int = 30, seed: int = 0) -> list[Path]:
    """A tiny THUMOS-style dataset to try the pipeline on: videos/, annotations.csv and
    stand-in random I3D weights (weights/rgb_random.pt, weights/flow_random.pt).

    Per class, `videos_per_class` videos of `seconds` s at `fps` (96 x 64 px); the last one of
    each class is in the test subset, the others in validation (which trains, as in THUMOS).
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    rows, written = ["video,subset,start,end,label,duration"], []
    num_frames = int(round(seconds * fps))
    for c, (label, velocity) in enumerate(SAMPLE_CLASSES.items()):
        for i in range(videos_per_class):
            start_s = seconds * float(rng.uniform(0.15, 0.4))
            end_s = start_s + seconds * float(rng.uniform(0.3, 0.5))
            name = f"sample_{label.lower()}_{i}"
            frames = _sliding_video(velocity, int(start_s * fps), int(end_s * fps), num_frames, 64, 96,
                                    seed=seed * 100 + c * 10 + i)
            written.append(write_video(folder / "videos" / f"{name}.mp4", frames, fps=fps))
            subset = "test" if i == videos_per_class - 1 else "validation"
            rows.append(f"{name},{subset},{start_s:.2f},{end_s:.2f},{label},{seconds}")
    (folder / "annotations.csv").write_text("\n".join(rows) + "\n")
    written.append(folder / "annotations.csv")
    written.append(random_i3d_weights(folder / "weights" / "rgb_random.pt", 3, seed=seed + 1))
    written.append(random_i3d_weights(folder / "weights" / "flow_random.pt", 2, seed=seed + 2))
    return written
