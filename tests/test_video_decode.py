"""Decoding at 25 fps by presentation timestamps, the sample modes, and unreadable videos."""
from fractions import Fraction

import av
import numpy as np
import pytest

from feature_extraction.decode import FrameSampler, iter_frames, probe
from feature_extraction.synthetic import write_video
from utils.errors import VideoError


def numbered_frames(n):
    """Frame i shows i in binary, six 16 x 16 blocks (white = 1), robust to lossy coding."""
    bits = (np.arange(n)[:, None] >> np.arange(6)) & 1  # (n, 6)
    frames = np.repeat(np.repeat(bits * 255, 16, axis=1)[:, None, :], 16, axis=1).astype(np.uint8)  # (n, 16, 96)
    return np.repeat(frames[..., None], 3, axis=-1)


def source_index(rgb):
    bits = rgb[:, :, 0].reshape(16, 6, 16).transpose(1, 0, 2).reshape(6, -1).mean(axis=1) > 128
    return int((bits * (1 << np.arange(6))).sum())


def test_30_fps_video_is_resampled_to_25_fps_by_timestamps(tmp_path):
    path = write_video(tmp_path / "v30.mp4", numbered_frames(39), fps=30)  # 1.3 s
    ticks = list(iter_frames(path))
    assert len(ticks) == 33  # ticks 0, 0.04, ..., 1.28 s (< 1.3 s)
    assert [t for t, _ in ticks] == [Fraction(k, 25) for k in range(33)]
    # the frame on screen at k/25 s is source frame floor(k * 30 / 25): 0 1 2 3 4 6 7 8 9 10 12 ...
    assert [source_index(rgb) for _, rgb in ticks] == [k * 30 // 25 for k in range(33)]


def test_variable_frame_rate_video_gives_the_frame_on_screen_at_each_tick(tmp_path):
    # alternating 50 ms and 20 ms frames; the last frame lasts 20 ms (the encoder's guess may differ)
    gaps = [0.05 if i % 2 == 0 else 0.02 for i in range(29)]
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    path = write_video(tmp_path / "vfr.mp4", numbered_frames(30), times=times)
    ticks = list(iter_frames(path))
    assert [t for t, _ in ticks] == [Fraction(k, 25) for k in range(len(ticks))]
    expected = [int(np.searchsorted(np.round(times, 3), k / 25 + 1e-9, side="right")) - 1 for k in range(len(ticks))]
    assert [source_index(rgb) for _, rgb in ticks] == expected
    # the video lasts times[-1] + the last frame's duration: 1.03 s + 20..50 ms -> 27 ticks (0 .. 1.04 s)
    assert len(ticks) == 27
    assert expected[:8] == [0, 0, 2, 3, 4, 5, 6, 8]  # frames at 0 .05 .07 .12 .14 .19 .21 .26 .28 s


def test_probe_reports_the_container(tmp_path):
    path = write_video(tmp_path / "v.mp4", numbered_frames(30), fps=30)
    info = probe(path)
    assert (info.width, info.height, info.frames) == (96, 16, 30) and info.fps == 30


@pytest.mark.parametrize("mode, views", [("resize", 1), ("center_crop", 1), ("oversample", 10)])
def test_sample_modes_give_their_views(mode, views):
    sampler = FrameSampler(mode, size=16, short_side=20)
    frame = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    prepared = sampler.prepare(frame)
    assert prepared.shape == ((16, 16, 3) if mode == "resize" else (20, 27, 3))
    assert sampler.views(prepared[None]).shape == (views, 1, 16, 16, 3)


def test_oversample_flips_negate_flow_x():
    sampler = FrameSampler("oversample", size=4, short_side=4)
    flow = np.zeros((1, 4, 6, 2), np.float32)
    flow[..., 0], flow[..., 1] = 2.0, 1.0
    views = sampler.views(flow, is_flow=True)
    assert (views[:5, ..., 0] == 2).all() and (views[5:, ..., 0] == -2).all() and (views[..., 1] == 1).all()


def test_center_crop_takes_the_middle():
    sampler = FrameSampler("center_crop", size=2, short_side=4)
    frames = np.arange(4 * 6).reshape(1, 4, 6, 1)
    assert sampler.views(frames)[0, 0, :, :, 0].tolist() == [[8, 9], [14, 15]]


def test_not_a_video_is_named(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video")
    with pytest.raises(VideoError, match="notes.mp4.*not a video"):
        list(iter_frames(path))
    with pytest.raises(VideoError, match="no such video file"):
        list(iter_frames(tmp_path / "absent.mp4"))


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(VideoError, match="sound.wav: has no video stream"):
        list(iter_frames(path))


def test_truncated_file_fails_midway_with_a_message(tmp_path):
    path = write_video(tmp_path / "cut.mp4", numbered_frames(200), fps=30, faststart=True)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(VideoError, match=r"cut.mp4: decoding stopped after \d+ of the 200 frames"):
        list(iter_frames(path))
