"""TV-L1 flow: sign and axis conventions, the two implementations agree, flow -> I3D input.

Agreement between OpenCV's TV-L1 and the batched torch one, measured here on 64 x 64 frames
(mean end-point error per frame pair, in pixels): translation 0.015, rotation 0.006-0.011,
a textured patch over a static background 0.010-0.015. The tolerance is 0.05 px, a third
of the 1/6.4 px step of the classic 8-bit flow images (40 px over 255 levels).
"""
import cv2
import numpy as np
import pytest
import torch

from feature_extraction.flow import (OpenCVTVL1, TorchTVL1, _divergence, _forward_gradient, _resize, flow_to_input,
                                     make_flow)
from feature_extraction.i3d import InceptionI3d
from feature_extraction.synthetic import moving_texture

SIZE = 64
EPE_TOLERANCE = 0.05  # px


def gray(frames):
    return np.ascontiguousarray(frames[..., 0])


def sequences():
    """name -> (3, 64, 64) uint8 frames."""
    base = gray(moving_texture(1, SIZE, SIZE, seed=5))[0]
    centre = (SIZE / 2, SIZE / 2)
    rotation = np.stack([cv2.warpAffine(base, cv2.getRotationMatrix2D(centre, angle, 1.0), (SIZE, SIZE),
                                        borderMode=cv2.BORDER_REFLECT) for angle in (0, 3, 6)])
    return {"translation": gray(moving_texture(3, SIZE, SIZE, velocity=(1.5, -1))),
            "rotation": rotation,
            "patch over static background": gray(moving_texture(3, SIZE, SIZE, velocity=(2, 1), background=True,
                                                                 seed=7))}


@pytest.fixture(scope="module")
def both_flows():
    seqs = sequences()
    prev = np.concatenate([s[:-1] for s in seqs.values()])
    nxt = np.concatenate([s[1:] for s in seqs.values()])
    return list(seqs), OpenCVTVL1()(prev, nxt), TorchTVL1(batch_size=8)(prev, nxt)


@pytest.mark.parametrize("method", ["opencv", "torch"])
def test_pattern_moving_right_2_px_per_frame_has_flow_x_plus_2(method):
    frames = gray(moving_texture(2, SIZE, SIZE, velocity=(2, 0)))
    flow = make_flow(method)(frames[:1], frames[1:])[0]
    inner = flow[8:-8, 8:-8]
    assert inner[..., 0].mean() == pytest.approx(2.0, abs=0.05)  # channel 0 = x, to the right
    assert abs(inner[..., 1].mean()) < 0.05
    down = gray(moving_texture(2, SIZE, SIZE, velocity=(0, 2)))
    inner = make_flow(method)(down[:1], down[1:])[0, 8:-8, 8:-8]
    assert inner[..., 1].mean() == pytest.approx(2.0, abs=0.05)  # channel 1 = y, downwards


def test_both_implementations_agree_on_translation_rotation_and_a_moving_patch(both_flows):
    names, cv_flow, torch_flow = both_flows
    epe = np.linalg.norm(cv_flow - torch_flow, axis=-1).mean(axis=(1, 2))  # (6,) px, two pairs per sequence
    assert (epe < EPE_TOLERANCE).all(), dict(zip(np.repeat(names, 2), epe.round(4)))
    # and both found the motion: the translation is (1.5, -1) px per frame
    inner = torch_flow[:2, 8:-8, 8:-8].mean(axis=(0, 1, 2))
    np.testing.assert_allclose(inner, [1.5, -1.0], atol=0.1)


def test_i3d_flow_features_of_the_two_implementations_differ_by_under_2_percent():
    frames = gray(moving_texture(17, 32, 32, velocity=(1, 0.5), seed=9))
    flows = [flow_to_input(estimator(frames[:-1], frames[1:])) for estimator in (OpenCVTVL1(), TorchTVL1())]
    torch.manual_seed(0)
    net = InceptionI3d(2).eval()
    with torch.no_grad():
        feats = [net.features(torch.from_numpy(f).permute(3, 0, 1, 2)[None]).numpy()[0] for f in flows]
    relative = np.linalg.norm(feats[0] - feats[1]) / np.linalg.norm(feats[0])
    assert relative < 0.02, relative


def test_batched_pairs_are_solved_independently():
    seqs = sequences()
    prev, nxt = seqs["rotation"][:2], seqs["rotation"][1:]
    together = TorchTVL1(batch_size=2)(prev, nxt)
    alone = TorchTVL1(batch_size=1)(prev, nxt)
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_divergence_is_minus_the_adjoint_of_the_forward_gradient():
    """<grad u, p> = -<u, div p> for dual fields that are zero where the gradient is (the last
    column of p1, the last row of p2), which the dual step keeps so from zero."""
    rng = np.random.default_rng(0)
    u = torch.from_numpy(rng.normal(size=(1, 7, 9)).astype(np.float64))
    p1, p2 = (torch.from_numpy(rng.normal(size=(1, 7, 9))) for _ in range(2))
    p1[:, :, -1] = 0
    p2[:, -1, :] = 0
    ux, uy = _forward_gradient(u)
    assert float((ux * p1 + uy * p2).sum()) == pytest.approx(-float((u * _divergence(p1, p2)).sum()))


def test_resize_matches_opencv_bilinear():
    image = np.random.default_rng(1).uniform(0, 255, (37, 45)).astype(np.float32)
    ours = _resize(torch.from_numpy(image)[None], 30, 36, 1 / 0.8, 1 / 0.8)[0].numpy()
    np.testing.assert_allclose(ours, cv2.resize(image, None, fx=0.8, fy=0.8), atol=1e-3)
    up = _resize(torch.from_numpy(image)[None], 50, 61, 37 / 50, 45 / 61)[0].numpy()
    np.testing.assert_allclose(up, cv2.resize(image, (61, 50)), atol=1e-3)


def test_flow_to_input_clips_scales_and_quantizes():
    flow = np.array([[-30.0, -20.0], [0.0, 10.0], [19.9, 45.0]], np.float32)
    np.testing.assert_allclose(flow_to_input(flow), [[-1, -1], [0, 0.5], [0.995, 1]])
    # 8 bits: v = round(255 (f + 20) / 40), read back as v / 255 * 2 - 1
    quantized = flow_to_input(flow, "uint8")
    expected = np.rint((np.clip(flow, -20, 20) + 20) * 255 / 40) / 255 * 2 - 1
    np.testing.assert_allclose(quantized, expected, atol=1e-7)
    assert quantized[1, 0] == pytest.approx(128 / 255 * 2 - 1, abs=1e-6)  # zero flow is level 128 (127.5 rounded)
    field = np.random.default_rng(0).normal(0, 5, (2, 16, 16, 2)).astype(np.float32)
    jpeg = flow_to_input(field, "jpeg")
    assert not np.array_equal(jpeg, flow_to_input(field, "uint8"))
    assert np.abs(jpeg - flow_to_input(field, "uint8")).max() < 0.2
