"""Blur (deblurring) and anti-aliased downsampling (super-resolution).

Both are one operation: pad the image, correlate each channel with a fixed 2-D kernel,
keep every ``s``-th sample::

    (A x)[i, j] = sum_{a, b} w[a, b] * P(x)[s i + a, s j + b]

``P`` is the padding (``'circular'``, ``'reflect'`` -- mirror without repeating the edge
sample --, ``'replicate'``, ``'zero'``, or ``'valid'`` = none, which shrinks the output).
Its exact adjoint is ``A^* y = P^*( conv_transpose(y, w, stride s) )``: zero-insertion
upsampling of ``y`` followed by (full) correlation with the flipped kernel, then the adjoint of
the padding, which adds each padded sample back onto the pixel it was copied from (for
zero padding: crops).  ``P^*`` is evaluated as the vector-Jacobian product of the padding,
which is exact and itself differentiable.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from shared.operators.base import LinearOperator

__all__ = ["Blur", "Downsample", "gaussian_kernel", "box_kernel", "downsampling_kernel"]

_PADS = ("circular", "reflect", "replicate", "zero", "valid")


def gaussian_kernel(sigma: float, size: int | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Isotropic 2-D Gaussian ``exp(-(a^2+b^2)/(2 sigma^2))`` on a ``size x size`` grid centred at
    the middle (default ``size = 2 ceil(3 sigma) + 1``), normalised to sum 1."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    size = 2 * math.ceil(3 * sigma) + 1 if size is None else int(size)
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-t**2 / (2 * sigma**2))
    k = g[:, None] * g[None, :]
    return (k / k.sum()).to(dtype)


def box_kernel(size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniform ``size x size`` kernel summing to 1."""
    if size < 1:
        raise ValueError(f"box size must be >= 1, got {size}")
    return torch.full((size, size), 1.0 / size**2, dtype=dtype)


def _lanczos(x: np.ndarray, a: int) -> np.ndarray:
    return np.where(np.abs(x) < a, np.sinc(x) * np.sinc(x / a), 0.0)


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel (a = -0.5, as MATLAB's imresize 'bicubic')."""
    x = np.abs(x)
    return np.where(x <= 1, (a + 2) * x**3 - (a + 3) * x**2 + 1,
                    np.where(x < 2, a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a, 0.0))


def downsampling_kernel(factor: int, kind: str = "bicubic", sigma: float | None = None,
                        lanczos_a: int = 2, dtype: torch.dtype = torch.float32) -> Tensor:
    """Separable 2-D anti-aliasing kernel for decimation by ``factor``, normalised to sum 1.

    The taps sit at offsets ``d = t - (K-1)/2`` (``t = 0..K-1``) from the centre of the
    ``factor x factor`` block an output pixel represents; ``K - factor`` is even so that the
    operator pads ``(K - factor)/2`` on each side and an ``H x W`` image gives exactly
    ``H/factor x W/factor``.  ``'bicubic'``: Keys cubic ``c(d / factor)`` (support 2 low-res
    pixels, MATLAB's antialiased imresize); ``'lanczos'``: ``sinc(d/f) sinc(d/(a f))``,
    ``|d/f| < a`` (``a = 2`` as the DIP super-resolution code); ``'gaussian'``:
    ``exp(-d^2 / (2 sigma^2))`` with ``sigma`` in high-res pixels (default ``factor / 2``),
    truncated at ``3 sigma``; ``'box'``: the block average (``K = factor``).
    """
    f = int(factor)
    if f < 1:
        raise ValueError(f"downsampling factor must be a positive integer, got {factor}")
    if kind == "box":
        K = f
    elif kind in ("bicubic", "lanczos"):
        support = 2 if kind == "bicubic" else int(lanczos_a)
        K = 2 * support * f + (f % 2)  # f odd: one more tap keeps K - f even
    elif kind == "gaussian":
        sigma = f / 2 if sigma is None else float(sigma)
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        K = f + 2 * math.ceil(3 * sigma)
    else:
        raise ValueError(f"kernel must be 'bicubic', 'lanczos', 'gaussian' or 'box', got {kind!r}")
    d = np.arange(K) - (K - 1) / 2
    if kind == "box":
        k1 = np.ones(K)
    elif kind == "bicubic":
        k1 = _cubic(d / f)
    elif kind == "lanczos":
        k1 = _lanczos(d / f, int(lanczos_a))
    else:
        k1 = np.exp(-d**2 / (2 * sigma**2))
    k1 = k1 / k1.sum()
    return torch.as_tensor(np.outer(k1, k1), dtype=dtype)


def _pad_adjoint(z: Tensor, pads: tuple[int, int, int, int], mode: str, H: int, W: int) -> Tensor:
    """Adjoint of ``F.pad(., pads, mode)`` for images of size ``H x W``: the exact VJP."""
    if mode in ("zero", "valid"):
        l, r, t, b = pads
        return z[..., t:t + H, l:l + W]
    with torch.enable_grad():
        x0 = torch.zeros(z.shape[:-2] + (H, W), dtype=z.dtype, device=z.device, requires_grad=True)
        out = F.pad(x0, pads, mode=mode)
        (g,) = torch.autograd.grad(out, x0, grad_outputs=z, create_graph=z.requires_grad)
    return g


class _Conv(LinearOperator):
    """Pad, correlate with ``weight`` (2-D), decimate by ``stride`` (module docstring)."""

    def __init__(self, weight: Tensor, stride: int, pads: tuple[int, int, int, int], padding: str) -> None:
        super().__init__()
        if padding not in _PADS:
            raise ValueError(f"padding must be one of {_PADS}, got {padding!r}")
        w = torch.as_tensor(weight)
        if w.ndim != 2 or w.numel() == 0:
            raise ValueError(f"kernel must be a non-empty 2-D array, got shape {tuple(w.shape)}")
        if not torch.isfinite(w).all():
            raise ValueError("kernel contains NaN or Inf values")
        self.register_buffer("weight", w.to(torch.float32)[None, None].contiguous())
        self.stride = int(stride)
        self.padding = padding
        self.pads = (0, 0, 0, 0) if padding == "valid" else tuple(int(p) for p in pads)

    def _padded_size(self, H: int, W: int) -> tuple[int, int]:
        l, r, t, b = self.pads
        return H + t + b, W + l + r

    def output_size(self, H: int, W: int) -> tuple[int, int]:
        Hp, Wp = self._padded_size(H, W)
        kh, kw = self.weight.shape[-2:]
        return (Hp - kh) // self.stride + 1, (Wp - kw) // self.stride + 1

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects (N, C, H, W), got shape {tuple(x.shape)}")
        H, W = x.shape[-2:]
        Hp, Wp = self._padded_size(H, W)
        kh, kw = self.weight.shape[-2:]
        if Hp < kh or Wp < kw:
            raise ValueError(f"image {H}x{W} is smaller than the {kh}x{kw} kernel")
        l, r, t, b = self.pads
        if self.padding == "reflect" and (max(t, b) >= H or max(l, r) >= W):
            raise ValueError(f"reflect padding by {max(self.pads)} needs an image larger than that, got {H}x{W}")
        if self.padding == "circular" and (max(t, b) > H or max(l, r) > W):
            raise ValueError(f"circular padding by {max(self.pads)} needs an image at least that large, got {H}x{W}")

    def A(self, x: Tensor) -> Tensor:
        self._check_input(x)
        N, C, H, W = x.shape
        z = x.reshape(N * C, 1, H, W)
        if self.padding not in ("valid",) and any(self.pads):
            z = F.pad(z, self.pads, mode="constant" if self.padding == "zero" else self.padding)
        y = F.conv2d(z, self.weight.to(x), stride=self.stride)
        return y.reshape(N, C, *y.shape[-2:])

    def A_adjoint(self, y: Tensor, image_size: tuple[int, int] | None = None) -> Tensor:
        """``A^* y``; ``image_size`` (``H, W``) is needed only when it is ambiguous (stride > 1
        with sizes not divisible by the stride, or set ``self.image_size``)."""
        if y.ndim != 4:
            raise ValueError(f"{type(self).__name__} adjoint expects (N, C, h, w), got shape {tuple(y.shape)}")
        N, C, h, w = y.shape
        H, W = image_size if image_size is not None else self._input_size(h, w)
        Hp, Wp = self._padded_size(H, W)
        kh, kw = self.weight.shape[-2:]
        oh, ow = Hp - ((h - 1) * self.stride + kh), Wp - ((w - 1) * self.stride + kw)
        z = y.reshape(N * C, 1, h, w)
        wt = self.weight.to(y)
        if self.stride > 1:
            z = F.conv_transpose2d(z, wt, stride=self.stride, output_padding=(oh, ow))
        else:
            # Stride 1: conv_transpose2d is the 'full' correlation with the flipped kernel,
            # which conv2d computes several times faster on CPU.
            z = F.conv2d(F.pad(z, (kw - 1, kw - 1 + ow, kh - 1, kh - 1 + oh)), torch.flip(wt, (-2, -1)))
        mode = "zero" if self.padding in ("zero", "valid") else self.padding
        x = _pad_adjoint(z, self.pads, mode, H, W)
        return x.reshape(N, C, H, W)

    def _input_size(self, h: int, w: int) -> tuple[int, int]:  # overridden by subclasses
        raise NotImplementedError


class Blur(_Conv):
    """Deblurring: ``y = k * x``, the 2-D *convolution* (kernel flipped) of each channel with ``k``.

    ``padding='circular'`` (default; periodic image, output ``H x W``), ``'reflect'``,
    ``'replicate'`` or ``'zero'`` (output ``H x W``, the kernel centred at index
    ``((kh-1)//2, (kw-1)//2)``), or ``'valid'`` (no padding, output
    ``(H-kh+1) x (W-kw+1)``: only samples that the kernel sees entirely, the most honest
    model of a camera blur).  The adjoint is exact in every mode.
    """

    def __init__(self, kernel: Tensor | np.ndarray, padding: str = "circular") -> None:
        k = torch.as_tensor(np.asarray(kernel) if not isinstance(kernel, Tensor) else kernel).to(torch.float32)
        if k.ndim != 2:
            raise ValueError(f"blur kernel must be 2-D, got shape {tuple(k.shape)}")
        kh, kw = k.shape
        t, l = (kh - 1) // 2, (kw - 1) // 2
        # Convolution = correlation with the flipped kernel; pads put the kernel centre on the pixel.
        super().__init__(torch.flip(k, (0, 1)), 1, (kw - 1 - l, l, kh - 1 - t, t), padding)

    def _input_size(self, h: int, w: int) -> tuple[int, int]:
        if self.padding == "valid":
            kh, kw = self.weight.shape[-2:]
            return h + kh - 1, w + kw - 1
        return h, w


class Downsample(_Conv):
    """Super-resolution: anti-aliasing filter then decimation by ``factor`` (module docstring).

    ``(A x)[i, j] = sum_{a,b} w[a, b] x_pad[f i + a, f j + b]`` with the kernel ``w`` of
    :func:`downsampling_kernel` (``kernel='bicubic'`` default, ``'lanczos'``, ``'gaussian'``,
    ``'box'``) or any 2-D tensor (``K x K``, ``K - factor`` even).  ``(N, C, H, W)`` ->
    ``(N, C, H/f, W/f)``; ``H`` and ``W`` must be divisible by ``factor``.  Default padding
    ``'reflect'``.  Adjoint: zero-insertion upsampling by ``f``, correlation with the flipped
    kernel, adjoint of the padding.
    """

    def __init__(self, factor: int, kernel: str | Tensor = "bicubic", padding: str = "reflect",
                 sigma: float | None = None, lanczos_a: int = 2) -> None:
        f = int(factor)
        if f < 1 or f != factor:
            raise ValueError(f"downsampling factor must be a positive integer, got {factor}")
        if isinstance(kernel, str):
            w = downsampling_kernel(f, kernel, sigma=sigma, lanczos_a=lanczos_a)
        else:
            w = torch.as_tensor(kernel, dtype=torch.float32)
            if w.ndim != 2 or w.shape[0] != w.shape[1] or (w.shape[0] - f) % 2 or w.shape[0] < f:
                raise ValueError(f"a custom downsampling kernel must be K x K with K >= factor and K - factor even, "
                                 f"got {tuple(w.shape)} for factor {f}")
        p = (w.shape[0] - f) // 2
        if padding == "valid":
            raise ValueError("Downsample needs a padding mode that keeps H/factor x W/factor; "
                             "use 'reflect', 'replicate', 'circular' or 'zero'")
        super().__init__(w, f, (p, p, p, p), padding)
        self.factor = f
        self.kernel_name = kernel if isinstance(kernel, str) else "custom"

    def _check_input(self, x: Tensor) -> None:
        if x.ndim == 4 and (x.shape[-2] % self.factor or x.shape[-1] % self.factor):
            raise ValueError(f"image size {x.shape[-2]}x{x.shape[-1]} is not divisible by the factor {self.factor}; "
                             "crop or pad it first")
        super()._check_input(x)

    def _input_size(self, h: int, w: int) -> tuple[int, int]:
        return h * self.factor, w * self.factor
