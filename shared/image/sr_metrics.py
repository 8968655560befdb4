"""The super-resolution evaluation convention of Set5/Set14 papers.

1. The ground truth is cropped to a multiple of the scale (:func:`modcrop`: the bottom
   rows and right columns that do not fill a ``scale x scale`` block are dropped), so that
   the low-resolution image is exactly ``H/scale x W/scale``.
2. The result and the ground truth are compared on the luma channel
   ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` (ITU-R BT.601, RGB in [0, 1], Y in
   [16, 235]; :func:`shared.metrics.rgb_to_y`); a single-channel image is taken as luma
   already (its [0, 1] values scaled to [0, 255]).
3. ``scale`` pixels are cropped from each border (interpolation has no data there).
4. PSNR with peak 255 (:func:`sr_psnr`), SSIM on the same cropped luma (:func:`sr_ssim`).

Images are ``(1, C, H, W)`` (or ``(C, H, W)``) torch tensors or arrays, ``C`` = 1 or 3,
values in [0, 1].
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from shared.metrics import psnr_y, rgb_to_y, ssim

__all__ = ["modcrop", "sr_psnr", "sr_ssim"]


def modcrop(x: Tensor, scale: int) -> Tensor:
    """``x[..., :H - H % scale, :W - W % scale]``: the top-left part whose sides are multiples of ``scale``."""
    s = int(scale)
    if s < 1 or s != scale:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    h, w = x.shape[-2:]
    if h < s or w < s:
        raise ValueError(f"a {h}x{w} image is smaller than the scale {s}")
    return x[..., : h - h % s, : w - w % s]


def _luma_255(x: Any) -> Tensor:
    t = torch.as_tensor(x.detach() if isinstance(x, Tensor) else x, dtype=torch.float64)
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[1] not in (1, 3):
        raise ValueError(f"expected (1, C, H, W) or (C, H, W) with C = 1 or 3, got shape {tuple(t.shape)}")
    return rgb_to_y(t) if t.shape[1] == 3 else t * 255.0


def sr_psnr(sr: Any, hr: Any, scale: int) -> float:
    """PSNR (dB, peak 255) on the BT.601 luma with ``scale`` border pixels cropped (module docstring).

    ``hr`` must already be :func:`modcrop`-ped and ``sr`` have its shape.
    """
    return psnr_y(sr, hr, scale)


def sr_ssim(sr: Any, hr: Any, scale: int) -> float:
    """SSIM (:func:`shared.metrics.ssim`, range 255) of the luma with ``scale`` border pixels cropped."""
    a, b = _luma_255(sr), _luma_255(hr)
    if a.shape != b.shape:
        raise ValueError(f"result shape {tuple(a.shape)} differs from ground-truth shape {tuple(b.shape)}")
    s = int(scale)
    if s > 0:
        a, b = a[..., s:-s, s:-s], b[..., s:-s, s:-s]
    return ssim(a, b, data_range=255.0)
