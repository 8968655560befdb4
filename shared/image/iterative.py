"""Classical iterative baseline: total-variation reconstruction by primal-dual splitting.

Solves, for a linear forward operator ``A`` (any linear torch callable; its adjoint is
taken by reverse-mode autodiff, so no separate adjoint code is needed)::

    x_hat = argmin_{x in [lo, hi]^n}  1/2 ||A x - y||^2 + lam * TV(x),
    TV(x) = sum_ij || (D_h x, D_v x)_ij ||_2          (isotropic, forward differences,
                                                        Neumann boundary)

with ``D`` the grid differences of the core's total variation
(:func:`shared.regularisers.image_gradients`; ``TV`` here is the sum, ``N C H W`` times the
mean of :func:`shared.regularisers.tv_isotropic` as ``eps -> 0``),

with the primal-dual hybrid gradient method of Chambolle & Pock (2011) on
``K = [A; D]``: dual steps ``p <- (p + s (A xb - y)) / (1 + s)`` and
``q <- proj_{|q_ij| <= lam}(q + s D xb)``, primal step
``x <- clip(x - t (A^T p + D^T q))``, ``xb = 2 x - x_old``, with ``s t ||K||^2 < 1``
(``||A||`` by power iteration, ``||D||^2 <= 8``).
Images are ``(..., H, W)`` tensors.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from shared.regularisers import image_divergence, image_gradients

__all__ = ["gradient", "divergence", "operator_norm", "tv_pdhg", "adjoint_of"]


def gradient(x: Tensor) -> Tensor:
    """``D x = (D_v x, D_h x)`` stacked on a new axis -3: ``(..., 2, H, W)``.

    The forward differences (Neumann boundary) are the core's grid TV differences
    :func:`shared.regularisers.image_gradients` (``dy``, ``dx``), applied to every
    ``(H, W)`` image of ``x``.
    """
    lead, (H, W) = x.shape[:-2], x.shape[-2:]
    dx, dy = image_gradients(x.reshape(-1, 1, H, W))
    return torch.stack([dy.reshape(*lead, H, W), dx.reshape(*lead, H, W)], dim=-3)


def divergence(q: Tensor) -> Tensor:
    """``div q = -D^T q`` for :func:`gradient` (so ``<D x, q> = -<x, div q>``): the core's
    :func:`shared.regularisers.image_divergence` of ``(D_h, D_v)``."""
    return image_divergence(q[..., 1, :, :], q[..., 0, :, :])


def adjoint_of(forward: Callable[[Tensor], Tensor], x_like: Tensor) -> Callable[[Tensor], Tensor]:
    """The adjoint ``A^T`` of a linear callable, by reverse-mode autodiff (one graph, reused)."""
    _, vjp = torch.func.vjp(forward, torch.zeros_like(x_like))
    return lambda v: vjp(v)[0]


def operator_norm(forward: Callable[[Tensor], Tensor], adjoint: Callable[[Tensor], Tensor], x_like: Tensor,
                  iterations: int = 30, seed: int = 0) -> float:
    """Largest singular value of a linear operator by power iteration on ``A^T A``."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(x_like.shape, generator=g, dtype=x_like.dtype).to(x_like.device)
    v = v / v.norm()
    s = 0.0
    for _ in range(iterations):
        w = adjoint(forward(v))
        s = float(w.norm())
        if s == 0.0:
            return 0.0
        v = w / s
    return math.sqrt(s)


def tv_pdhg(forward: Callable[[Tensor], Tensor], y: Tensor, x_like: Tensor, lam: float, *,
            iterations: int = 300, adjoint: Callable[[Tensor], Tensor] | None = None,
            bounds: tuple[float, float] | None = (0.0, 1.0), x0: Tensor | None = None,
            callback: Callable[[int, Tensor], None] | None = None) -> Tensor:
    """TV-regularised least squares by Chambolle-Pock (see the module docstring).

    ``x_like``: a tensor of the image shape (its values are unused). ``lam``: the TV weight
    (in the units of ``1/2 ||A x - y||^2``). Returns ``x_hat`` with the shape of ``x_like``.
    """
    if lam < 0:
        raise ValueError(f"the TV weight must be >= 0, got {lam}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    with torch.no_grad():
        adj = adjoint if adjoint is not None else adjoint_of(forward, x_like)
        L = math.sqrt(operator_norm(forward, adj, x_like) ** 2 + 8.0)
        tau = sigma = 0.99 / L
        x = torch.zeros_like(x_like) if x0 is None else x0.clone()
        xb = x.clone()
        p = torch.zeros_like(y)
        q = torch.zeros_like(gradient(x))
        for it in range(iterations):
            p = (p + sigma * (forward(xb) - y)) / (1 + sigma)
            q = q + sigma * gradient(xb)
            norm = q.pow(2).sum(dim=-3, keepdim=True).sqrt()
            q = q / torch.clamp(norm / max(lam, 1e-30), min=1.0) if lam > 0 else torch.zeros_like(q)
            x_old = x
            x = x - tau * (adj(p) - divergence(q))
            if bounds is not None:
                x = x.clamp(*bounds)
            xb = 2 * x - x_old
            if callback is not None:
                callback(it, x)
    return x
