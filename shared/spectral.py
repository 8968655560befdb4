"""Spectral analysis of untrained generators through their Jacobian.

For a network ``G_theta(z)`` with ``n`` outputs and ``p`` parameters, the Jacobian
``J = dG/dtheta`` (``n x p``) at a parameter point governs gradient descent on
``1/2 ||A G_theta(z) - y||^2``: linearised, the residual along the left singular vector
``u_i`` of ``A J`` decays like ``(1 - eta s_i^2)^t``, so components with large singular
values are fitted first (Heckel & Soltanolkotabi, ICLR 2020 / ICML 2020).  For
convolutional generators the leading left singular vectors of ``J`` are low-frequency
trigonometric vectors, which is why early-stopped fits are smooth.

* :func:`jacobian_spectrum` -- leading singular values (and left vectors) of ``J`` by the
  randomized SVD of :mod:`shared.uncertainty` (Jacobian-vector products only);
* :func:`trig_basis`, :func:`principal_angles` -- the span of the ``k`` lowest-frequency
  cosines/sines and the principal angles between two subspaces;
* :func:`gradient_descent_min_norm` -- gradient descent from zero on the linear generator
  ``x = J c``: the iterates converge to the minimum-norm solution ``c = (A J)^+ y``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from shared.uncertainty import JacobianOperator, randomized_svd

__all__ = ["jacobian_spectrum", "trig_basis", "principal_angles", "gradient_descent_min_norm"]


def jacobian_spectrum(model: nn.Module, z: Any = None, rank: int = 32, *,
                      forward: Callable[[Tensor], Tensor] | None = None,
                      power_iterations: int = 2, oversample: int = 10, seed: int = 0,
                      vectors: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Leading ``rank`` singular values of ``J = d forward(G_theta(z)) / d theta`` at the current
    parameters (the model is evaluated in its current mode); with ``vectors=True`` also the
    left singular vectors ``(n, rank)``."""
    op = JacobianOperator(model, z, forward)
    U, S, _ = randomized_svd(lambda v: op.jvp_y(v)[1], op.vjp_y, (op.m, op.p), rank, oversample=oversample,
                             power_iterations=power_iterations, generator=torch.Generator().manual_seed(seed),
                             dtype=op.theta.dtype)
    return (S, U) if vectors else S


def trig_basis(n: int, k: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Orthonormal ``(n, k)`` basis of the ``k`` lowest-frequency trigonometric vectors on
    ``n`` samples: ``1, cos(2 pi t/n), sin(2 pi t/n), cos(4 pi t/n), ...``."""
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    t = torch.arange(n, dtype=dtype)
    cols = [torch.ones(n, dtype=dtype)]
    f = 1
    while len(cols) < k:
        cols.append(torch.cos(2 * math.pi * f * t / n))
        if len(cols) < k:
            cols.append(torch.sin(2 * math.pi * f * t / n))
        f += 1
    Q, _ = torch.linalg.qr(torch.stack(cols, dim=1))
    return Q


def principal_angles(A: Tensor, B: Tensor) -> Tensor:
    """Principal angles (radians, ascending) between the column spans of ``A`` and ``B``."""
    Qa, _ = torch.linalg.qr(A.to(torch.float64))
    Qb, _ = torch.linalg.qr(B.to(torch.float64))
    cos = torch.linalg.svdvals(Qa.T @ Qb).clamp(-1.0, 1.0)
    return torch.arccos(cos)


def gradient_descent_min_norm(M: Tensor, y: Tensor, steps: int = 2000,
                              lr: float | None = None) -> tuple[Tensor, list[float]]:
    """Gradient descent from ``c = 0`` on ``1/2 ||M c - y||^2`` (``M = A J``, ``m x p``).

    The iterates stay in the row space of ``M``, so they converge to the minimum-norm
    solution ``M^+ y``.  ``lr`` defaults to ``1 / ||M||^2``.  Returns the final ``c`` and
    the distances ``||c_t - M^+ y||`` every step.
    """
    M = M.to(torch.float64)
    y = y.to(torch.float64)
    target = torch.linalg.pinv(M) @ y
    lr = 1.0 / float(torch.linalg.matrix_norm(M, 2)) ** 2 if lr is None else lr
    c = torch.zeros(M.shape[1], dtype=torch.float64)
    dist = []
    for _ in range(steps):
        c = c - lr * (M.T @ (M @ c - y))
        dist.append(float((c - target).norm()))
    return c, dist
