"""Optical flow, TV-L1, as the released features were made; and flow -> I3D input.

Two implementations of one interface: ``estimator(prev, next)`` takes (N, H, W) uint8 grayscale
frame pairs and returns (N, H, W, 2) float32 flow in pixels, channel 0 = x (to the right),
channel 1 = y (down), such that prev[y, x] ~ next[y + v, x + u]: a pattern moving 2 px to the
right between the two frames has flow x = +2.

- :class:`OpenCVTVL1`: ``cv2.optflow.DualTVL1OpticalFlow_create()`` with its defaults, one
  pair at a time on the CPU (opencv-contrib).
- :class:`TorchTVL1`: the same algorithm (Zach, Pock, Bischof 2007, in the form of Sanchez et
  al. that OpenCV implements) written with batched tensor operations, many pairs at once on
  any device. Every step follows OpenCV's ``tvl1flow.cpp`` (pyramid by bilinear resizing with
  step 0.8 down to 16 px, bicubic warping with zero border, 5x5 median filter of the flow at
  every outer iteration, the per-pair stopping rule on the mean squared update); the
  remaining differences are floating-point order and OpenCV's 1/32-pixel warp table, and
  tests/test_flow.py measures how far apart the two are.

:func:`flow_to_input` clips to [-bound, bound] and scales to [-1, 1] (bound 20), optionally
through the 8-bit (or JPEG) images the classic pipeline stored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from feature_extraction import FLOW_METHODS, QUANTIZE_MODES  # the choices, defined once

#: Flow is clipped to [-BOUND, BOUND] pixels before scaling to [-1, 1] (the classic pipeline's bound).
BOUND = 20.0
CPU = torch.device("cpu")


class FlowEstimator(Protocol):
    def __call__(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """(N, H, W) uint8 grayscale pairs -> (N, H, W, 2) float32 flow in pixels (x, y)."""


@dataclass(frozen=True)
class TVL1Params:
    """OpenCV's DualTVL1OpticalFlow defaults (gamma = 0, no initial flow)."""

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    median_filtering: int = 5


def _check_pairs(prev: np.ndarray, nxt: np.ndarray) -> None:
    if prev.shape != nxt.shape or prev.ndim != 3 or prev.dtype != np.uint8 or nxt.dtype != np.uint8:
        raise ValueError(f"expected two (N, H, W) uint8 arrays of one shape, got {prev.shape} {prev.dtype} "
                         f"and {nxt.shape} {nxt.dtype}")


class OpenCVTVL1:
    """OpenCV's Dual TV-L1 (``cv2.optflow.DualTVL1OpticalFlow_create`` with its defaults)."""

    def __init__(self, params: TVL1Params = TVL1Params()):
        p = params
        self._tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(
            tau=p.tau, lambda_=p.lambda_, theta=p.theta, nscales=p.nscales, warps=p.warps, epsilon=p.epsilon,
            innnerIterations=p.inner_iterations, outerIterations=p.outer_iterations, scaleStep=p.scale_step,
            gamma=0.0, medianFiltering=p.median_filtering, useInitialFlow=False)

    def __call__(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        _check_pairs(prev, nxt)
        return np.stack([self._tvl1.calc(a, b, None) for a, b in zip(prev, nxt)]).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- torch TV-L1

def _linear_axis(n_in: int, n_out: int, src_per_dst: float, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OpenCV INTER_LINEAR sampling along one axis: (i0, i1, weight of i1), each (n_out,)."""
    pos = (torch.arange(n_out, dtype=torch.float64, device=device) + 0.5) * src_per_dst - 0.5
    i0 = torch.floor(pos)
    weight = pos - i0
    low, high = i0 < 0, i0 >= n_in - 1
    weight = torch.where(low | high, torch.zeros_like(weight), weight)
    i0 = i0.clamp(0, n_in - 1).long()
    return i0, (i0 + 1).clamp(max=n_in - 1), weight.float()


def _resize(x: torch.Tensor, out_h: int, out_w: int, src_per_dst_y: float, src_per_dst_x: float) -> torch.Tensor:
    """(N, H, W) -> (N, out_h, out_w), bilinear with OpenCV's pixel mapping and border rule."""
    y0, y1, wy = _linear_axis(x.shape[1], out_h, src_per_dst_y, x.device)
    x0, x1, wx = _linear_axis(x.shape[2], out_w, src_per_dst_x, x.device)
    horizontal = x[:, :, x0] * (1 - wx) + x[:, :, x1] * wx
    return horizontal[:, y0, :] * (1 - wy)[:, None] + horizontal[:, y1, :] * wy[:, None]


def _centered_gradient(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV's centeredGradient: half the central difference, one-sided (halved) at borders."""
    padded = F.pad(img[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    return 0.5 * (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]), 0.5 * (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1])


def _forward_gradient(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences, 0 on the last column (x) and last row (y)."""
    dx = F.pad(u[:, :, 1:] - u[:, :, :-1], (0, 1))
    dy = F.pad(u[:, 1:, :] - u[:, :-1, :], (0, 0, 0, 1))
    return dx, dy


def _divergence(v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    """Backward differences with zero outside the image (the adjoint of _forward_gradient)."""
    return v1 - F.pad(v1[:, :, :-1], (1, 0)) + v2 - F.pad(v2[:, :-1, :], (0, 0, 1, 0))


def _median(u: torch.Tensor, k: int) -> torch.Tensor:
    """k x k median filter with replicated borders (cv2.medianBlur)."""
    r = k // 2
    patches = F.pad(u[:, None], (r, r, r, r), mode="replicate")[:, 0].unfold(1, k, 1).unfold(2, k, 1)
    return patches.reshape(*u.shape, k * k).median(dim=-1).values


def _warp(images: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """(N, K, H, W) sampled at (x + u1, y + u2), bicubic, zero outside (cv2.remap INTER_CUBIC)."""
    _, _, height, width = images.shape
    ys, xs = torch.meshgrid(torch.arange(height, device=u1.device, dtype=u1.dtype),
                            torch.arange(width, device=u1.device, dtype=u1.dtype), indexing="ij")
    grid = torch.stack([(xs + u1) * (2 / max(width - 1, 1)) - 1, (ys + u2) * (2 / max(height - 1, 1)) - 1], dim=-1)
    return F.grid_sample(images, grid, mode="bicubic", padding_mode="zeros", align_corners=True)


class TorchTVL1:
    """Batched Dual TV-L1 on any device, following OpenCV's implementation step by step.

    ``batch_size`` pairs are solved at once (each with its own stopping rule); more pairs are
    split into batches of that size.
    """

    def __init__(self, params: TVL1Params = TVL1Params(), device: torch.device = CPU,
                 batch_size: int = 32):
        self.params, self.device, self.batch_size = params, torch.device(device), batch_size

    def __call__(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        _check_pairs(prev, nxt)
        out = [self.flow(torch.from_numpy(prev[i:i + self.batch_size]).to(self.device, torch.float32),
                         torch.from_numpy(nxt[i:i + self.batch_size]).to(self.device, torch.float32))
               for i in range(0, len(prev), self.batch_size)]
        return torch.cat(out).cpu().numpy() if out else np.zeros((*prev.shape, 2), np.float32)

    @torch.no_grad()
    def flow(self, i0: torch.Tensor, i1: torch.Tensor) -> torch.Tensor:
        """(N, H, W) float32 intensities in 0..255 -> (N, H, W, 2) flow in pixels."""
        p = self.params
        pyramid = [(i0, i1)]
        for _ in range(1, p.nscales):
            prev0, prev1 = pyramid[-1]
            h, w = round(prev0.shape[1] * p.scale_step), round(prev0.shape[2] * p.scale_step)
            if h < 16 or w < 16:
                break
            inverse = 1 / p.scale_step
            pyramid.append((_resize(prev0, h, w, inverse, inverse), _resize(prev1, h, w, inverse, inverse)))
        coarse = pyramid[-1][0]
        u1 = torch.zeros_like(coarse)
        u2 = torch.zeros_like(coarse)
        for s in range(len(pyramid) - 1, -1, -1):
            u1, u2 = self._one_scale(*pyramid[s], u1, u2)
            if s == 0:
                break
            h, w = pyramid[s - 1][0].shape[1:]
            sy, sx = u1.shape[1] / h, u1.shape[2] / w
            u1 = _resize(u1, h, w, sy, sx) * (1 / p.scale_step)
            u2 = _resize(u2, h, w, sy, sx) * (1 / p.scale_step)
        return torch.stack([u1, u2], dim=-1)

    def _one_scale(self, i0, i1, u1, u2):
        p = self.params
        n, height, width = i0.shape
        scaled_epsilon = p.epsilon * p.epsilon * height * width
        l_t, taut = p.lambda_ * p.theta, p.tau / p.theta
        i1x, i1y = _centered_gradient(i1)
        source = torch.stack([i1, i1x, i1y], dim=1)
        p11, p12, p21, p22 = (torch.zeros_like(i0) for _ in range(4))
        float_eps = torch.finfo(torch.float32).eps
        for _ in range(p.warps):
            warped = _warp(source, u1, u2)
            i1w, i1wx, i1wy = warped[:, 0], warped[:, 1], warped[:, 2]
            grad = i1wx * i1wx + i1wy * i1wy
            rho_c = i1w - i1wx * u1 - i1wy * u2 - i0
            active = torch.ones(n, dtype=torch.bool, device=i0.device)
            for _ in range(p.outer_iterations):
                if not bool(active.any()):
                    break
                if p.median_filtering > 1:
                    keep = active[:, None, None]
                    u1 = torch.where(keep, _median(u1, p.median_filtering), u1)
                    u2 = torch.where(keep, _median(u2, p.median_filtering), u2)
                for _ in range(p.inner_iterations):
                    if not bool(active.any()):
                        break
                    keep = active[:, None, None]
                    # thresholding step: v = u + d (the pointwise data term)
                    rho = rho_c + i1wx * u1 + i1wy * u2
                    threshold = l_t * grad
                    fi = torch.where(rho < -threshold, torch.full_like(rho, l_t),
                                     torch.where(rho > threshold, torch.full_like(rho, -l_t),
                                                 torch.where(grad > float_eps, -rho / grad.clamp_min(float_eps),
                                                             torch.zeros_like(rho))))
                    v1, v2 = u1 + fi * i1wx, u2 + fi * i1wy
                    # u step (primal) and its change
                    new1 = v1 + p.theta * _divergence(p11, p12)
                    new2 = v2 + p.theta * _divergence(p21, p22)
                    error = ((new1 - u1) ** 2 + (new2 - u2) ** 2).sum(dim=(1, 2))
                    u1, u2 = torch.where(keep, new1, u1), torch.where(keep, new2, u2)
                    # dual step
                    u1x, u1y = _forward_gradient(u1)
                    u2x, u2y = _forward_gradient(u2)
                    ng1 = 1 + taut * torch.sqrt(u1x * u1x + u1y * u1y)
                    ng2 = 1 + taut * torch.sqrt(u2x * u2x + u2y * u2y)
                    p11 = torch.where(keep, (p11 + taut * u1x) / ng1, p11)
                    p12 = torch.where(keep, (p12 + taut * u1y) / ng1, p12)
                    p21 = torch.where(keep, (p21 + taut * u2x) / ng2, p21)
                    p22 = torch.where(keep, (p22 + taut * u2y) / ng2, p22)
                    active = active & (error > scaled_epsilon)
        return u1, u2


def make_flow(method: str, device: torch.device = CPU, batch_size: int = 32) -> FlowEstimator:
    """``opencv`` or ``torch`` TV-L1 with OpenCV's default parameters."""
    if method == "opencv":
        return OpenCVTVL1()
    if method == "torch":
        return TorchTVL1(device=device, batch_size=batch_size)
    raise ValueError(f"flow method must be one of {FLOW_METHODS}, got {method!r}")


def flow_to_input(flow: np.ndarray, quantize: str = "none", bound: float = BOUND,
                  jpeg_quality: int = 95) -> np.ndarray:
    """(..., 2) flow in pixels -> I3D flow input in [-1, 1], float32.

    ``none``: clip to [-bound, bound] and divide by bound. ``uint8``: as the classic pipeline
    stored flow images, each component becomes round(255 (f + bound) / (2 bound)) in 0..255
    and is read back as v / 255 * 2 - 1. ``jpeg``: the same 8-bit images, each also passed
    through JPEG (cv2, quality ``jpeg_quality``; OpenCV's imwrite default is 95).
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"flow quantization must be one of {QUANTIZE_MODES}, got {quantize!r}")
    clipped = np.clip(flow, -bound, bound)
    if quantize == "none":
        return (clipped / bound).astype(np.float32)
    images = np.rint((clipped + bound) * (255.0 / (2 * bound))).astype(np.uint8)
    if quantize == "jpeg":
        planes = images.reshape(-1, *images.shape[-3:-1], 2)
        for index in np.ndindex(planes.shape[0], 2):
            plane = np.ascontiguousarray(planes[index[0], :, :, index[1]])
            ok, encoded = cv2.imencode(".jpg", plane, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            planes[index[0], :, :, index[1]] = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)
        images = planes.reshape(images.shape)
    return (images.astype(np.float32) / 255.0 * 2 - 1).astype(np.float32)


def rgb_to_input(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB -> I3D RGB input in [-1, 1], float32."""
    return (rgb.astype(np.float32) / 255.0 * 2 - 1).astype(np.float32)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 grayscale (cv2.cvtColor weights)."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
