"""Tikhonov-regularised inversion of a blur or a down-sampler, its weight chosen by generalised cross-validation.

For a blur or an anti-aliased down-sampler ``A`` (:class:`~shared.operators.Blur`,
:class:`~shared.operators.Downsample`; any boundary mode that keeps the image's grid),
measurements ``y = A x + n`` and an optional centre ``c`` (default 0) the estimate is::

    x_lam = argmin_x ||A x - y||^2 + lam ||L (x - c)||^2  =  c + (A^*A + lam L^*L)^{-1} A^* (y - A c),

with ``L`` the discrete 5-point Laplacian (reflect boundary; the Wiener-Hunt filter's
regulariser), solved by conjugate gradients on the exact operator, so that the boundary
is the operator's own (an FFT solve would wrap the image around; for a motion blur, whose
inverse has long tails, that ruins the whole image).

``lam`` is chosen by generalised cross-validation (Golub, Heath and Wahba 1979), which needs
neither the truth nor the noise level::

    GCV(lam) = N ||A x_lam - y||^2 / (N - tr H_lam)^2,     H_lam = A (A^*A + lam L^*L)^{-1} A^*,

the residual from the exact solve and the trace from the periodic model of ``A`` and ``L``
on the image's grid, which differs from the exact trace only by boundary terms.  For a blur
both are diagonal in the Fourier basis: ``tr H = sum_f |K_f|^2 / (|K_f|^2 + lam |L_f|^2)``.
Decimation by ``s`` folds the ``s^2`` frequencies ``f + (a H/s, b W/s)`` onto one low-resolution
frequency, so ``A^*A`` is a rank-one block ``k k^* / s^2`` on each such alias group ``g`` and
``L^*L`` stays diagonal; Sherman-Morrison then gives, per group,
``tr H_g = r_g / (1 + r_g)`` with ``r_g = sum_{f in g} |K_f|^2 / (s^2 lam |L_f|^2)``
(``= 1`` when the group holds the mean, where ``|L_0| = 0``), which is the blur's formula
for ``s = 1``.

The image front end uses ``x_lam`` as the deep image prior's input for deblurring
(:class:`shared.image.DeepImagePrior`, ``input="tikhonov"``): the network then refines an
estimate that is already sharp instead of building the inverse filter out of noise.  With the
network's output as the centre it is the DIP's data-consistency step for super-resolution
(:func:`tikhonov_consistency`): the smallest (in ``||L .||``) correction that makes the
output agree with the measurements, with the weight GCV chooses for the measurements alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from shared.operators.base import conjugate_gradient
from shared.operators.conv import Blur, Downsample, _Conv

__all__ = ["LAMBDA_GRID", "TikhonovResult", "laplacian", "tikhonov_solve", "gcv_trace", "tikhonov_gcv",
           "tikhonov_consistency"]

#: the weights GCV chooses from (half-decade steps)
LAMBDA_GRID: tuple[float, ...] = tuple(10.0 ** (e / 2) for e in range(-8, 1))
_LAPLACIAN = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])


def laplacian() -> Blur:
    """The 5-point Laplacian ``L`` as an operator with reflect boundary."""
    return Blur(_LAPLACIAN, padding="reflect")


def tikhonov_solve(op: _Conv, y: Tensor, lam: float, iterations: int = 300, tol: float = 1e-5,
                   start: Tensor | None = None) -> Tensor:
    """``(A^*A + lam L^*L)^{-1} A^* y`` by conjugate gradients; ``y``: ``(N, C, H, W)``.

    ``start``: an initial guess (a neighbouring ``lam``'s solution); CG then solves for the
    correction.  ``tol``: relative residual at which CG stops.
    """
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"the Tikhonov weight must be positive, got {lam}")
    lap = laplacian()

    def apply(x: Tensor) -> Tensor:
        return op.A_adjoint(op.A(x)) + lam * lap.A_adjoint(lap.A(x))

    b = op.A_adjoint(y)
    if start is None:
        return conjugate_gradient(apply, b, iterations=iterations, tol=tol)
    return start + conjugate_gradient(apply, b - apply(start), iterations=iterations, tol=tol)


def _transfer(kernel: Tensor, shape: tuple[int, int]) -> Tensor:
    """``|K_f|^2`` of a (centred) 2-D kernel on an ``H x W`` periodic grid."""
    H, W = shape
    kh, kw = kernel.shape
    if kh > H or kw > W:
        raise ValueError(f"kernel {kh}x{kw} is larger than the image {H}x{W}")
    k = torch.zeros(H, W, dtype=torch.float64)
    k[:kh, :kw] = kernel.double()
    k = torch.roll(k, (-(kh // 2), -(kw // 2)), (0, 1))
    return torch.fft.fft2(k).abs() ** 2


def gcv_trace(op: _Conv, shape: tuple[int, int], lam: float) -> float:
    """``tr H_lam`` per channel for an ``H x W`` image (periodic model, module docstring).

    ``op``: a blur (stride 1) or a down-sampler by ``s`` (``H``, ``W`` divisible by ``s``).
    """
    s = op.stride
    H, W = shape
    k2 = _transfer(op.weight[0, 0], shape)
    l2 = _transfer(_LAPLACIAN, shape)
    # r = |K|^2 / (s^2 lam |L|^2) summed over each alias group; the mean (|L_0| = 0) passes whole.
    r = (k2 / (s * s * lam * l2)).reshape(s, H // s, s, W // s).sum(dim=(0, 2))
    return float(torch.where(torch.isinf(r), torch.ones_like(r), r / (1 + r)).sum())


@dataclass
class TikhonovResult:
    """The chosen estimate ``x`` (``y``'s shape), its weight ``lam`` and the GCV curve."""

    x: Tensor
    lam: float
    gcv: dict[float, float] = field(default_factory=dict)
    residual_rms: dict[float, float] = field(default_factory=dict)


@torch.no_grad()
def tikhonov_gcv(op: _Conv, y: Tensor, lambdas: Sequence[float] = LAMBDA_GRID, iterations: int = 80,
                 tol: float = 1e-4, centre: Tensor | None = None) -> TikhonovResult:
    """``x_lam`` with ``lam`` minimising GCV over ``lambdas`` (module docstring).

    ``op``: a :class:`~shared.operators.Blur` or :class:`~shared.operators.Downsample` that
    keeps the image's grid (not ``padding='valid'``); ``y``: ``(N, C, h, w)``; ``centre``:
    the image ``c`` the penalty pulls towards (``(N, C, H, W)``, default 0).  The grid is
    solved from the largest weight down, each solve warm-started from the last (a larger
    weight is better conditioned, and neighbouring solutions are close), to a relative CG
    residual ``tol`` or ``iterations`` steps: on the validation crops of
    ``benchmarks/image_restoration.py`` 80 steps at 1e-4 chose the same weights as 200 at
    1e-5 in a seventh of the time.  The score sums the channels (one ``lam`` per image).
    """
    if not isinstance(op, (Blur, Downsample)):
        raise TypeError(f"tikhonov_gcv needs a Blur or Downsample operator, got {type(op).__name__}")
    if op.padding == "valid":
        raise ValueError("tikhonov_gcv needs a blur whose output has the image's size (not padding='valid')")
    if y.ndim != 4:
        raise ValueError(f"expected measurements (N, C, H, W), got shape {tuple(y.shape)}")
    if not lambdas or any(not (math.isfinite(v) and v > 0) for v in lambdas):
        raise ValueError(f"the Tikhonov weights must be positive, got {list(lambdas)}")
    s = op.stride
    shape = (y.shape[-2] * s, y.shape[-1] * s)  # the image's grid
    if centre is not None and tuple(centre.shape) != (*y.shape[:2], *shape):
        raise ValueError(f"the centre must have the image's shape {(*y.shape[:2], *shape)}, got {tuple(centre.shape)}")
    y32 = y.float()  # float64 convolutions are many times slower on the CPU
    c32 = None if centre is None else centre.float()
    if c32 is not None:
        y32 = y32 - op.A(c32)  # solve for the deviation from the centre
    n = y.shape[0] * y.shape[1]  # images x channels, each an independent problem
    m = y.shape[-2] * y.shape[-1]  # measurements per channel
    gcv, rms, solutions = {}, {}, {}
    x = None
    for lam in sorted(lambdas, reverse=True):
        x = tikhonov_solve(op, y32, lam, iterations=iterations, tol=tol, start=x)
        r2 = float(((op.A(x) - y32).double() ** 2).sum())
        dof = n * (m - gcv_trace(op, shape, lam))
        gcv[lam] = n * m * r2 / max(dof, 1e-12) ** 2
        rms[lam] = math.sqrt(r2 / (n * m))
        solutions[lam] = x
    best = min(gcv, key=gcv.get)
    x = solutions[best] if c32 is None else c32 + solutions[best]
    return TikhonovResult(x.to(y.dtype), best, gcv, rms)


@torch.no_grad()
def tikhonov_consistency(op: _Conv, y: Tensor, centre: Tensor, lambdas: Sequence[float] = LAMBDA_GRID,
                         iterations: int = 200, tol: float = 1e-5) -> TikhonovResult:
    """``centre`` plus the smallest correction that fits ``y``: ``c + argmin_d ||A (c + d) - y||^2
    + lam ||L d||^2``, with ``lam`` the weight GCV chooses for ``y`` alone (uncentred).

    The weight measures how much of ``y`` is noise, which does not depend on the centre.  GCV
    of the centred problem would count the centre's own misfit as noise: on Set5 x4 it chose
    the grid's largest weight for the DIP's outputs (whose misfit is structured, not noise)
    and left most of that misfit in place.  The result's ``gcv`` is the uncentred curve.
    """
    chosen = tikhonov_gcv(op, y, lambdas)
    fixed = tikhonov_gcv(op, y, [chosen.lam], iterations=iterations, tol=tol, centre=centre)
    return TikhonovResult(fixed.x, chosen.lam, chosen.gcv, fixed.residual_rms)
