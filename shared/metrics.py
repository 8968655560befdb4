"""Image quality metrics: PSNR, SSIM, relative error, Y-channel PSNR for super-resolution.

All functions accept torch tensors or NumPy arrays, **channel-first**: ``(H, W)``,
``(C, H, W)`` or ``(N, C, H, W)`` (use ``np.moveaxis(img, -1, 0)`` for ``H x W x C``
arrays), and return Python floats averaged over everything given.

- ``psnr(x, ref, R) = 10 log10( R^2 / mean((x - ref)^2) )`` in dB (``inf`` if equal).
- ``ssim``: the structural similarity of Wang et al. (2004) with an 11-tap Gaussian
  window of ``sigma = 1.5``, ``K1 = 0.01``, ``K2 = 0.03``, ``C_i = (K_i R)^2``, population
  (not sample) covariances; per pixel

      S = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),

  averaged over the pixels whose window lies inside the image (5-pixel border dropped),
  then over channels and images.  This is scikit-image's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=R, channel_axis=...)``.
- ``relative_error(x, ref) = ||x - ref||_2 / ||ref||_2`` (over all entries).
- ``psnr_y(sr, hr, scale)``: the super-resolution convention -- luma
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` (ITU-R BT.601, RGB in [0, 1], Y in
  [16, 235]), ``scale`` pixels cropped at each border, PSNR with ``R = 255``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "relative_error", "rgb_to_y", "psnr_y", "mse"]


def _as_tensor(x: Any, name: str) -> Tensor:
    t = x.detach() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    t = t.to(torch.float64)
    if t.numel() == 0:
        raise ValueError(f"{name} is empty")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return t


def _pair(x: Any, ref: Any) -> tuple[Tensor, Tensor]:
    a, b = _as_tensor(x, "image"), _as_tensor(ref, "reference")
    if a.shape != b.shape:
        raise ValueError(f"image shape {tuple(a.shape)} differs from reference shape {tuple(b.shape)}")
    return a, b.to(a.device)


def mse(x: Any, ref: Any) -> float:
    a, b = _pair(x, ref)
    return float(((a - b) ** 2).mean())


def psnr(x: Any, ref: Any, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (module docstring); ``data_range`` = ``R``."""
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    m = mse(x, ref)
    return math.inf if m == 0 else 10.0 * math.log10(data_range**2 / m)


def relative_error(x: Any, ref: Any) -> float:
    """``||x - ref|| / ||ref||``."""
    a, b = _pair(x, ref)
    nb = float(b.norm())
    if nb == 0:
        raise ValueError("relative error is undefined for a zero reference")
    return float((a - b).norm()) / nb


def _gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> Tensor:
    r = int(truncate * sigma + 0.5)  # 5 for sigma 1.5: an 11-tap window
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-t**2 / (2 * sigma**2))
    return g / g.sum()


def ssim(x: Any, ref: Any, data_range: float = 1.0, sigma: float = 1.5, K1: float = 0.01, K2: float = 0.03) -> float:
    """Mean SSIM (module docstring), channel-first input, averaged over channels and images."""
    a, b = _pair(x, ref)
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    if a.ndim < 2 or a.ndim > 4:
        raise ValueError(f"ssim expects (H, W), (C, H, W) or (N, C, H, W), got shape {tuple(a.shape)}")
    g = _gaussian_window(sigma)
    win = g.numel()
    H, W = a.shape[-2:]
    if H < win or W < win:
        raise ValueError(f"ssim needs images of at least {win}x{win} pixels, got {H}x{W}")
    a = a.reshape(-1, 1, H, W)
    b = b.reshape(-1, 1, H, W)
    gy, gx = g.view(1, 1, -1, 1).to(a.device), g.view(1, 1, 1, -1).to(a.device)

    def filt(z: Tensor) -> Tensor:  # separable Gaussian, 'valid' part only (the border is cropped anyway)
        return F.conv2d(F.conv2d(z, gy), gx)

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    C1, C2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    S = ((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / ((mu_a**2 + mu_b**2 + C1) * (var_a + var_b + C2))
    return float(S.mean())


def rgb_to_y(x: Any) -> Tensor:
    """BT.601 luma ``16 + 65.481 R + 128.553 G + 24.966 B`` (0..255 scale) of RGB in [0, 1],
    channel-first ``(3, H, W)`` or ``(N, 3, H, W)``; returns ``(1, H, W)`` / ``(N, 1, H, W)``."""
    t = _as_tensor(x, "image")
    if t.ndim not in (3, 4) or t.shape[-3] != 3:
        raise ValueError(f"rgb_to_y expects (3, H, W) or (N, 3, H, W), got shape {tuple(t.shape)}")
    w = torch.tensor([65.481, 128.553, 24.966], dtype=t.dtype, device=t.device).view(3, 1, 1)
    return 16.0 + (t * w).sum(dim=-3, keepdim=True)


def psnr_y(sr: Any, hr: Any, scale: int) -> float:
    """Super-resolution PSNR on the Y channel with a ``scale``-pixel border crop (module docstring).

    RGB inputs (3 channels, values in [0, 1]) are converted with :func:`rgb_to_y`; a single
    channel image is taken as luminance already and multiplied by 255.
    """
    a, b = _pair(sr, hr)
    if a.ndim == 2:
        a, b = a[None], b[None]
    if a.shape[-3] == 3:
        a, b = rgb_to_y(a), rgb_to_y(b)
    elif a.shape[-3] == 1:
        a, b = a * 255.0, b * 255.0
    else:
        raise ValueError(f"psnr_y expects 1 or 3 channels (channel-first), got shape {tuple(a.shape)}")
    s = int(scale)
    if s < 0 or 2 * s >= min(a.shape[-2:]):
        raise ValueError(f"border crop {s} is too large for a {a.shape[-2]}x{a.shape[-1]} image")
    if s > 0:
        a, b = a[..., s:-s, s:-s], b[..., s:-s, s:-s]
    return psnr(a, b, data_range=255.0)
