"""Identity (denoising), pixel mask (inpainting), Gaussian matrix (compressed sensing)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from shared.operators.base import LinearOperator

__all__ = ["Identity", "PixelMask", "GaussianMatrix"]


class Identity(LinearOperator):
    """``A x = x`` (denoising: ``y = x + noise``).  Self-adjoint; ``A^+ = I``."""

    def A(self, x: Tensor) -> Tensor:
        return x

    def A_adjoint(self, y: Tensor) -> Tensor:
        return y

    def A_dagger(self, y: Tensor, *args, **kwargs) -> Tensor:
        return y


class PixelMask(LinearOperator):
    """Inpainting: ``A x = m .* x`` with a binary mask ``m`` (1 = observed pixel).

    The output has the shape of the input (missing pixels are 0), so ``A`` is a diagonal
    projection: self-adjoint, ``A^+ = A``.  ``mask`` may be ``(H, W)`` (shared by all
    channels), ``(C, H, W)`` or ``(N|1, C|1, H, W)``; a float/uint8 image is binarised at
    half its range (``> 0.5`` for floats in [0, 1], ``> 127`` for uint8).  Input
    ``(N, C, H, W)``.
    """

    def __init__(self, mask: Tensor | np.ndarray) -> None:
        super().__init__()
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)
        if m.ndim not in (2, 3, 4) or m.numel() == 0:
            raise ValueError(f"mask must be (H, W), (C, H, W) or (N, C, H, W), got shape {tuple(m.shape)}")
        if m.dtype == torch.bool:
            mb = m
        else:
            if not torch.isfinite(m.double()).all():
                raise ValueError("mask contains NaN or Inf values")
            thresh = 127 if m.dtype == torch.uint8 else 0.5
            mb = m > thresh
        while mb.ndim < 4:
            mb = mb[None]
        self.register_buffer("mask", mb.to(torch.float32))
        self.in_shape = self.out_shape = tuple(self.mask.shape[1:])

    @classmethod
    def random(cls, shape: Sequence[int], keep: float, generator: torch.Generator | None = None) -> PixelMask:
        """Mask of ``shape`` (``(H, W)`` or ``(C, H, W)``) keeping each pixel with probability ``keep``."""
        if not 0.0 <= keep <= 1.0:
            raise ValueError(f"keep fraction must be in [0, 1], got {keep}")
        return cls(torch.rand(tuple(shape), generator=generator) < keep)

    @property
    def fraction_observed(self) -> float:
        return float(self.mask.mean())

    def _check(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[-2:] != self.mask.shape[-2:]:
            raise ValueError(f"mask of size {self.mask.shape[-2]}x{self.mask.shape[-1]} does not match input of "
                             f"shape {tuple(x.shape)} (expected (N, C, {self.mask.shape[-2]}, {self.mask.shape[-1]}))")
        if self.mask.shape[1] not in (1, x.shape[1]):
            raise ValueError(f"mask has {self.mask.shape[1]} channels, input has {x.shape[1]}")

    def A(self, x: Tensor) -> Tensor:
        self._check(x)
        return x * self.mask.to(x)

    def A_adjoint(self, y: Tensor) -> Tensor:
        self._check(y)
        return y * self.mask.to(y)

    def A_dagger(self, y: Tensor, *args, **kwargs) -> Tensor:
        return self.A(y)


class GaussianMatrix(LinearOperator):
    """Compressed sensing: ``y = A vec(x)``, ``A in R^{m x n}`` with i.i.d. ``N(0, 1/m)`` entries.

    With variance ``1/m``, ``E ||A x||^2 = ||x||^2``.  Input ``(N, *in_shape)`` with
    ``prod(in_shape) = n`` (default ``in_shape = (n,)``; e.g. ``(1, 64, 64)`` for a grey
    image, flattened row-major), output ``(N, m)``.  Dense: it stores ``m n`` floats, and
    refuses more than ``max_entries`` (default 2^28, 1 GiB in float32).
    ``A^+ y = A^T (A A^T)^{-1} y`` for ``m <= n`` (minimum-norm solution), computed with a
    Cholesky factor of the ``m x m`` Gram matrix in float64.
    """

    def __init__(self, m: int, n: int, generator: torch.Generator | None = None,
                 in_shape: Sequence[int] | None = None, dtype: torch.dtype = torch.float32,
                 max_entries: int = 2**28) -> None:
        super().__init__()
        if m < 1 or n < 1:
            raise ValueError(f"GaussianMatrix needs m, n >= 1, got m={m}, n={n}")
        if m * n > max_entries:
            raise ValueError(f"a dense {m}x{n} Gaussian matrix has {m * n:,} entries (> {max_entries:,}); "
                             "use a smaller image or fewer measurements")
        in_shape = (n,) if in_shape is None else tuple(int(s) for s in in_shape)
        if math.prod(in_shape) != n:
            raise ValueError(f"in_shape {in_shape} has {math.prod(in_shape)} entries, expected n={n}")
        self.m, self.n = m, n
        self.in_shape, self.out_shape = in_shape, (m,)
        self.register_buffer("matrix", torch.randn(m, n, generator=generator, dtype=dtype) / math.sqrt(m))
        self._chol: Tensor | None = None

    def A(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"GaussianMatrix expects input (N, {', '.join(map(str, self.in_shape))}), "
                             f"got {tuple(x.shape)}")
        return x.reshape(x.shape[0], self.n) @ self.matrix.to(x).T

    def A_adjoint(self, y: Tensor) -> Tensor:
        if y.ndim != 2 or y.shape[1] != self.m:
            raise ValueError(f"GaussianMatrix adjoint expects (N, {self.m}), got {tuple(y.shape)}")
        return (y @ self.matrix.to(y)).reshape(y.shape[0], *self.in_shape)

    def A_dagger(self, y: Tensor, *args, **kwargs) -> Tensor:
        if self.m > self.n:
            return super().A_dagger(y, *args, **kwargs)
        if self._chol is None or self._chol.device != self.matrix.device:
            M = self.matrix.double()
            self._chol = torch.linalg.cholesky(M @ M.T)
        w = torch.cholesky_solve(y.double().to(self._chol.device).T, self._chol).T
        return self.A_adjoint(w.to(y))
