"""Base class of the linear forward operators and the dot-product adjointness test.

A forward operator ``A`` maps an image ``x`` to measurements ``y = A x``.  Every operator
here is linear and provides its exact adjoint ``A^*`` (the transpose for real tensors),
defined by ``<A x, y> = <x, A^* y>`` for all ``x, y``, where ``<.,.>`` is the sum of
elementwise products over all axes.  Operators act on batches: the first axis is the
batch and is never mixed.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from shared.physics import Physics

__all__ = ["LinearOperator", "adjointness_error", "conjugate_gradient"]


class LinearOperator(Physics):
    """A linear map with its adjoint: a :class:`shared.physics.Physics` whose VJP is ``A^*``.

    Subclasses implement :meth:`A` and :meth:`A_adjoint`; calling the operator applies
    ``A`` (``op(x) == op.A(x)``), so it can be handed to :func:`shared.fit.fit` as
    ``forward``.  ``in_shape`` / ``out_shape`` are the per-item shapes (without the batch
    axis) where they are fixed, else ``None``.  :meth:`A_dagger` is the minimum-norm
    least-squares solution ``A^+ y``; the generic version runs conjugate gradients on the
    normal equations, subclasses override it where a closed form exists.
    """

    in_shape: tuple[int, ...] | None = None
    out_shape: tuple[int, ...] | None = None

    def A(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def A_adjoint(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def A_vjp(self, x: Tensor, v: Tensor) -> Tensor:
        """``J_A(x)^T v = A^* v`` (independent of ``x``)."""
        return self.A_adjoint(v)

    @property
    def measurement_shape(self) -> tuple[int, ...] | None:
        return self.out_shape

    def normal(self, x: Tensor) -> Tensor:
        """``A^* A x``."""
        return self.A_adjoint(self.A(x))

    def A_dagger(self, y: Tensor, iterations: int = 100, tol: float = 1e-6) -> Tensor:
        """Minimum-norm least-squares ``argmin ||A x - y||`` by CG on ``A^*A x = A^* y`` from 0."""
        b = self.A_adjoint(y)
        return conjugate_gradient(self.normal, b, iterations=iterations, tol=tol)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-batch-item inner products ``(N,)``."""
    return (a * b).flatten(1).sum(1)


def conjugate_gradient(apply: callable, b: Tensor, iterations: int = 100, tol: float = 1e-6) -> Tensor:
    """Solve ``M x = b`` for a symmetric positive semi-definite ``M`` (given as ``apply``),
    independently for each batch item, starting from ``x = 0``; stops when every item's
    residual norm is below ``tol`` times its ``||b||``."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = _dot(r, r)
    b_norm = rs.sqrt().clamp_min(1e-30)
    shape = (-1,) + (1,) * (b.ndim - 1)
    for _ in range(iterations):
        if bool((rs.sqrt() <= tol * b_norm).all()):
            break
        Mp = apply(p)
        alpha = rs / _dot(p, Mp).clamp_min(1e-30)
        x = x + alpha.view(shape) * p
        r = r - alpha.view(shape) * Mp
        rs_new = _dot(r, r)
        p = r + (rs_new / rs.clamp_min(1e-30)).view(shape) * p
        rs = rs_new
    return x


@torch.no_grad()
def adjointness_error(op: LinearOperator, x_shape: Sequence[int], dtype: torch.dtype = torch.float64,
                      generator: torch.Generator | None = None, device: str | torch.device = "cpu") -> float:
    """Relative dot-product test ``|<A x, y> - <x, A^* y>| / (||A x|| ||y||)``.

    ``x`` (shape ``x_shape``, batch axis included) and ``y`` (shape of ``A x``) are standard
    normal.  Normalising by the norms rather than by ``|<A x, y>|`` (which is small, of
    order ``||A x|| ||y|| / sqrt(m)``, for random vectors) makes the number comparable to
    the machine epsilon: ~1e-7 for a correct float32 operator, ~1e-16 in float64.
    """
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    op = op.to(device)
    x = torch.randn(tuple(x_shape), generator=g, dtype=dtype).to(device)
    Ax = op.A(x)
    y = torch.randn(Ax.shape, generator=g, dtype=dtype).to(device)
    Aty = op.A_adjoint(y)
    if Aty.shape != x.shape:
        raise AssertionError(f"A_adjoint returned shape {tuple(Aty.shape)}, expected {tuple(x.shape)}")
    lhs = float((Ax.double() * y.double()).sum())
    rhs = float((x.double() * Aty.double()).sum())
    scale = float(Ax.double().norm() * y.double().norm())
    if scale == 0 or not math.isfinite(scale):
        return abs(lhs - rhs)
    return abs(lhs - rhs) / scale
