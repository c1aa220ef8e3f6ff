"""Decoding: any file FFmpeg reads -> RGB frames on a 25-fps clock -> the network's input size.

Resampling follows presentation timestamps: for each tick t_k = k / fps (k = 0, 1, ...,
counted from the first frame's timestamp) the frame on screen at t_k is taken, i.e. the last
frame whose timestamp is <= t_k. A 30-fps video gives frames 0, 1, 2, 3, 4, 6, 7, ... (floor
of 1.2 k); a variable-frame-rate video gives what a player shows. The ticks stop at the end
of the last frame (its timestamp plus its duration), so a video of S seconds gives about
25 S frames whatever its frame rate. Times are exact fractions, never rounded floats.

Frames are RGB uint8 (H, W, 3). :class:`FrameSampler` brings them to the network size
(``resize``, ``center_crop``, ``oversample``); see its docstring.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator, NamedTuple

import av
import cv2
import numpy as np

from feature_extraction import SAMPLE_MODES  # the choices, defined once
from utils.errors import VideoError
from utils.evaluation import FEATURE_FPS

#: Frames per second of the released THUMOS-14 / ActivityNet features (snippet = 16 frames).
FPS = FEATURE_FPS  # the project's one definition (utils.evaluation)


class VideoInfo(NamedTuple):
    """What the container says about a video before decoding."""

    width: int
    height: int
    fps: float  # average frame rate of the file (0 when unknown)
    duration_s: float  # container duration (0 when unknown)
    frames: int  # frame count of the stream index (0 when unknown)


def _open(path: Path):
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise VideoError(f"{path}: not a video file FFmpeg can read ({error})") from error
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream (streams: "
                         f"{', '.join(s.type for s in container.streams) or 'none'})")
    return container


def probe(path: str | Path) -> VideoInfo:
    """Width, height, frame rate, duration and frame count of the first video stream."""
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else 0.0
        duration = float(container.duration / av.time_base) if container.duration else 0.0
        context = stream.codec_context
        return VideoInfo(context.width, context.height, fps, duration, int(stream.frames or 0))


def _frame_time(frame, index: int, stream) -> Fraction:
    """Presentation time of a decoded frame in seconds, exact."""
    if frame.pts is not None and frame.time_base is not None:
        return frame.pts * Fraction(frame.time_base)
    rate = stream.average_rate or FPS  # no timestamps at all: assume a constant rate
    return Fraction(index) / Fraction(rate)


def _frame_duration(frame, stream) -> Fraction:
    duration = getattr(frame, "duration", None)
    if duration and frame.time_base is not None:
        return duration * Fraction(frame.time_base)
    rate = stream.average_rate or FPS
    return 1 / Fraction(rate)


def iter_frames(path: str | Path, fps: int = FPS) -> Iterator[tuple[Fraction, np.ndarray]]:
    """Yield (tick time in seconds, RGB uint8 (H, W, 3)) for every tick k / fps of the video.

    Raises VideoError naming the file when it cannot be opened, has no video stream, or fails
    to decode (an FFmpeg error midway, or a stream that ends well before the frame count its
    index announces, as a truncated file does).
    """
    path = Path(path)
    tick = Fraction(1, fps)
    with _open(path) as container:
        stream = container.streams.video[0]
        announced = int(stream.frames or 0)
        start = current = current_time = last = None
        k = decoded = 0
        try:
            for decoded, frame in enumerate(container.decode(stream), start=1):
                time = _frame_time(frame, decoded - 1, stream)
                if start is None:
                    start = time
                time -= start
                if current is not None:
                    while k * tick < time:  # ticks before this frame show the current one
                        yield k * tick, current
                        k += 1
                if current is None or time >= current_time:
                    current, current_time, last = frame.to_ndarray(format="rgb24"), time, frame
        except av.FFmpegError as error:
            raise VideoError(f"{path}: decoding failed after {decoded} frames "
                             f"({float(current_time or 0):.2f} s): {error}") from error
        if current is None:
            raise VideoError(f"{path}: the video stream holds no decodable frame")
        if announced and decoded + max(2, announced // 100) < announced:
            raise VideoError(f"{path}: decoding stopped after {decoded} of the {announced} frames its index "
                             "announces; the file is truncated or damaged")
        end = current_time + _frame_duration(last, stream)
        while k * tick < end:
            yield k * tick, current
            k += 1


class FrameSampler:
    """RGB frames -> the frames flow is computed on -> the network's views.

    Modes (``size`` = network input, 224; ``short_side`` = 256):
      - ``resize``: the whole frame is resized to size x size (aspect ratio not kept); one view.
      - ``center_crop``: shorter side resized to short_side, the centre size x size crop; one view.
      - ``oversample``: shorter side to short_side, ten views: the four corner crops and the
        centre crop, then the same five flipped left-right (features are averaged over views).

    Flow is computed on the frames of :meth:`prepare` (the resized frame, before cropping, as
    the classic pipeline stored flow images of the resized frame and cropped when loading them);
    :meth:`views` crops RGB and flow alike, and negates x of the flipped flow views.
    """

    def __init__(self, mode: str = "resize", size: int = 224, short_side: int = 256):
        if mode not in SAMPLE_MODES:
            raise ValueError(f"sample mode must be one of {SAMPLE_MODES}, got {mode!r}")
        if mode != "resize" and short_side < size:
            raise ValueError(f"short_side ({short_side}) must be at least size ({size})")
        self.mode, self.size, self.short_side = mode, size, short_side

    @property
    def num_views(self) -> int:
        return 10 if self.mode == "oversample" else 1

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h, w, 3) uint8: size x size (resize) or shorter side = short_side."""
        height, width = rgb.shape[:2]
        if self.mode == "resize":
            target = (self.size, self.size)
        elif height <= width:
            target = (max(self.size, round(width * self.short_side / height)), self.short_side)
        else:
            target = (self.short_side, max(self.size, round(height * self.short_side / width)))
        if (width, height) == target:
            return rgb
        return cv2.resize(rgb, target, interpolation=cv2.INTER_LINEAR)

    def _offsets(self, height: int, width: int) -> list[tuple[int, int]]:
        top, left = (height - self.size) // 2, (width - self.size) // 2
        if self.mode != "oversample":
            return [(top, left)]
        bottom, right = height - self.size, width - self.size
        return [(0, 0), (0, right), (bottom, 0), (bottom, right), (top, left)]

    def views(self, frames: np.ndarray, is_flow: bool = False) -> np.ndarray:
        """(N, h, w, K) frames of :meth:`prepare` -> (V, N, size, size, K) network views.

        ``is_flow``: the frames are flow fields (x, y); a flipped view negates x.
        """
        if self.mode == "resize":
            return frames[None]
        height, width = frames.shape[1:3]
        crops = [frames[:, top:top + self.size, left:left + self.size] for top, left in self._offsets(height, width)]
        if self.mode == "oversample":
            for crop in crops[:5]:
                flipped = crop[:, :, ::-1].copy()
                if is_flow:
                    flipped[..., 0] *= -1
                crops.append(flipped)
        return np.stack(crops)
