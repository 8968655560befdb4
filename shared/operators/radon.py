"""Parallel-beam Radon transform (sparse-view CT) and filtered back-projection, in torch.

Geometry (units: pixels).  An ``n x n`` image has pixel centres at
``x_j = j - (n-1)/2`` (column ``j``, left to right) and ``y_i = (n-1)/2 - i`` (row ``i``,
bottom to top).  Projection angle ``theta`` (radians) integrates along lines
``x cos(theta) + y sin(theta) = s``; detector bins ``s_b = b - (n_det-1)/2``, spacing 1,
``n_det = ceil(sqrt(2)(n-1)) + 3`` so that every pixel of the square projects inside.

Discretisation (pixel-driven, linear interpolation): pixel ``p`` with centre ``(x_p, y_p)``
lands at ``s_p = x_p cos(theta) + y_p sin(theta)`` and splits its value between the two
nearest bins with the linear (hat) weights, so

    (R x)[theta, b] = sum_p  x_p  max(0, 1 - |s_b - s_p|),

a line integral of the image (pixel area 1) sampled with a unit-width hat.  The adjoint
(back-projection) ``R^* y`` reads each projection at ``s_p`` by linear interpolation.  Both
use the same precomputed bin indices and weights (the system matrix, stored as 2 entries
per pixel and angle and applied as a scatter / gather), so ``R^*`` is exactly ``R^T``.

Filtered back-projection (Kak & Slaney, ch. 3):

    x_fbp = (pi / K) R^*( h * y ),     h[0] = 1/4, h[odd k] = -1/(pi k)^2, h[even k] = 0,

the band-limited ramp filter applied along the detector axis by zero-padded FFT
(optionally times the Hann window ``(1 + cos(2 pi nu)) / 2``, ``nu`` in cycles/pixel),
``K`` angles assumed uniformly spread over ``[0, pi)``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from shared.operators.base import LinearOperator

__all__ = ["Radon", "ramp_filter"]


def ramp_filter(n_pad: int, window: str | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
    """Frequency response (length ``n_pad // 2 + 1``, for ``rfft``) of the spatial Ram-Lak filter
    ``h`` (module docstring), optionally times a Hann window."""
    k = np.arange(n_pad)
    k = np.where(k <= n_pad // 2, k, k - n_pad)  # circular index -n_pad/2 .. n_pad/2 - 1
    h = np.zeros(n_pad)
    h[k == 0] = 0.25
    odd = (k % 2) == 1
    h[odd] = -1.0 / (math.pi * k[odd]) ** 2
    H = np.real(np.fft.rfft(h))
    if window in (None, "ramp", "ram-lak"):
        pass
    elif window == "hann":
        nu = np.fft.rfftfreq(n_pad)
        H = H * 0.5 * (1 + np.cos(2 * math.pi * nu))
    else:
        raise ValueError(f"filter window must be None, 'ramp' or 'hann', got {window!r}")
    return torch.as_tensor(H, dtype=dtype)


class Radon(LinearOperator):
    """Parallel-beam projector ``R`` (module docstring).

    Parameters
    ----------
    angles:
        Number of angles (spread uniformly over ``[0, pi)``) or a sequence of angles in radians.
    image_size:
        ``n`` of the ``n x n`` image.
    n_detectors:
        Detector bins (default ``ceil(sqrt(2)(n-1)) + 3``, every pixel inside).

    ``A``: ``(N, C, n, n)`` -> sinogram ``(N, C, n_angles, n_det)``; ``A_adjoint`` back.
    Memory: ``8 n_angles n^2`` bytes of system matrix (e.g. 47 MB for 90 angles at 256^2).
    """

    def __init__(self, angles: int | Sequence[float] | Tensor, image_size: int,
                 n_detectors: int | None = None, chunk_elements: int = 2**22) -> None:
        super().__init__()
        n = int(image_size)
        if n < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if isinstance(angles, (int, np.integer)):
            if angles < 1:
                raise ValueError(f"need at least one angle, got {angles}")
            theta = np.arange(int(angles)) * math.pi / int(angles)
        else:
            theta = np.asarray(torch.as_tensor(angles, dtype=torch.float64).cpu(), dtype=np.float64).ravel()
            if theta.size == 0 or not np.isfinite(theta).all():
                raise ValueError("angles must be a non-empty sequence of finite numbers (radians)")
        n_det = int(math.ceil(math.sqrt(2) * (n - 1))) + 3 if n_detectors is None else int(n_detectors)
        if n_det < 2:
            raise ValueError(f"need at least 2 detector bins, got {n_det}")
        self.n, self.n_det, self.n_angles = n, n_det, len(theta)
        self.in_shape, self.out_shape = (n, n), (len(theta), n_det)
        self.register_buffer("angles", torch.as_tensor(theta), persistent=False)
        c = (n - 1) / 2
        xs = np.arange(n) - c                        # column coordinate
        ys = c - np.arange(n)                        # row coordinate (upwards)
        X = np.broadcast_to(xs[None, :], (n, n)).ravel()
        Y = np.broadcast_to(ys[:, None], (n, n)).ravel()
        s = np.cos(theta)[:, None] * X[None] + np.sin(theta)[:, None] * Y[None]  # (K, n^2)
        b = s + (n_det - 1) / 2
        i0 = np.floor(b)
        w = b - i0
        # Bins outside the detector get weight 0 (only possible with a user-given n_det).
        lo_ok = (i0 >= 0) & (i0 <= n_det - 1)
        hi_ok = (i0 + 1 >= 0) & (i0 + 1 <= n_det - 1)
        w0 = np.where(lo_ok, 1 - w, 0.0)
        w1 = np.where(hi_ok, w, 0.0)
        i0 = np.clip(i0, 0, n_det - 2).astype(np.int64)
        flat = i0 + (np.arange(len(theta)) * n_det)[:, None]   # index into (K * n_det)
        self.register_buffer("index", torch.as_tensor(flat.astype(np.int32)), persistent=False)
        self.register_buffer("w0", torch.as_tensor(w0, dtype=torch.float32), persistent=False)
        self.register_buffer("w1", torch.as_tensor(w1, dtype=torch.float32), persistent=False)
        self.chunk = max(1, int(chunk_elements) // (n * n))

    def _check(self, x: Tensor, shape: tuple[int, int], what: str) -> None:
        if x.ndim != 4 or tuple(x.shape[-2:]) != shape:
            raise ValueError(f"Radon {what} expects (N, C, {shape[0]}, {shape[1]}), got shape {tuple(x.shape)}")

    def A(self, x: Tensor) -> Tensor:
        self._check(x, (self.n, self.n), "forward")
        N, C = x.shape[:2]
        xf = x.reshape(N * C, 1, self.n * self.n)
        out = x.new_zeros(N * C, self.n_angles * self.n_det)
        for a in range(0, self.n_angles, self.chunk):
            sl = slice(a, a + self.chunk)
            idx = self.index[sl].reshape(-1).to(device=x.device, dtype=torch.long)
            v0 = (xf * self.w0[sl].to(x)).reshape(N * C, -1)
            v1 = (xf * self.w1[sl].to(x)).reshape(N * C, -1)
            out = out.index_add(1, idx, v0).index_add(1, idx + 1, v1)
        return out.reshape(N, C, self.n_angles, self.n_det)

    def A_adjoint(self, y: Tensor) -> Tensor:
        self._check(y, (self.n_angles, self.n_det), "adjoint")
        N, C = y.shape[:2]
        yf = y.reshape(N * C, self.n_angles * self.n_det)
        out = y.new_zeros(N * C, self.n * self.n)
        for a in range(0, self.n_angles, self.chunk):
            sl = slice(a, a + self.chunk)
            idx = self.index[sl].reshape(-1).to(device=y.device, dtype=torch.long)
            k = self.index[sl].shape[0]
            g0 = torch.index_select(yf, 1, idx).reshape(N * C, k, -1)
            g1 = torch.index_select(yf, 1, idx + 1).reshape(N * C, k, -1)
            out = out + (g0 * self.w0[sl].to(y)).sum(1) + (g1 * self.w1[sl].to(y)).sum(1)
        return out.reshape(N, C, self.n, self.n)

    def filter(self, sinogram: Tensor, window: str | None = None) -> Tensor:
        """Ramp-filter each projection along the detector axis (zero padding to avoid wrap-around)."""
        n_pad = 1 << int(math.ceil(math.log2(2 * self.n_det)))
        H = ramp_filter(n_pad, window).to(sinogram.device, sinogram.dtype)
        F = torch.fft.rfft(sinogram, n=n_pad, dim=-1) * H
        return torch.fft.irfft(F, n=n_pad, dim=-1)[..., : self.n_det]

    def fbp(self, sinogram: Tensor, window: str | None = None) -> Tensor:
        """Filtered back-projection ``(pi / K) R^*(h * y)`` (module docstring); ``window='hann'``
        damps high frequencies (less noise, less resolution)."""
        self._check(sinogram, (self.n_angles, self.n_det), "fbp")
        return self.A_adjoint(self.filter(sinogram, window)) * (math.pi / self.n_angles)
