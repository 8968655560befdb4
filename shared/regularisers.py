"""Explicit image regularisers: total variation.

For ``x`` of shape ``(N, C, H, W)`` with forward differences and Neumann boundary (the
difference across the last row / column is 0)::

    dx[n,c,i,j] = x[n,c,i,j+1] - x[n,c,i,j]   (0 for j = W-1)
    dy[n,c,i,j] = x[n,c,i+1,j] - x[n,c,i,j]   (0 for i = H-1)

    TV_aniso(x) = mean_{n,c,i,j} ( |dx| + |dy| )
    TV_iso(x)   = mean_{n,c,i,j} ( sqrt(dx^2 + dy^2 + eps^2) - eps )

Means are over all ``N C H W`` entries, so the value does not grow with the image size
(the classical sum is ``N C H W`` times larger).  Channels are treated independently.
The ``eps`` smoothing keeps the isotropic gradient finite where ``dx = dy = 0`` (the
plain square root has an infinite derivative there); subtracting ``eps`` makes a
constant image score exactly 0.  ``|.|`` in the anisotropic form has the subgradient 0
at 0 in torch, so it needs no smoothing.

Use in the fitting engine: ``fit(..., regularisers={"tv": (1e-3, tv_isotropic)})``.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["tv_isotropic", "tv_anisotropic", "image_gradients", "image_divergence", "TotalVariation"]


def image_gradients(x: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences ``(dx, dy)``, each of the shape of ``x`` (zero on the last column / row)."""
    if x.ndim != 4:
        raise ValueError(f"total variation expects (N, C, H, W), got shape {tuple(x.shape)}")
    dx = torch.zeros_like(x)
    dy = torch.zeros_like(x)
    dx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    dy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    return dx, dy


def image_divergence(dx: Tensor, dy: Tensor) -> Tensor:
    """``div(dx, dy) = -D^T (dx, dy)``, minus the adjoint of :func:`image_gradients`:
    ``<D x, q> = -<x, div q>`` (backward differences, with the boundary rows and columns
    that make it the exact transpose of the Neumann forward differences)."""
    def backward_difference(q: Tensor, axis: int) -> Tensor:
        q = q.movedim(axis, -1)
        d = torch.zeros_like(q)
        d[..., 0] = q[..., 0]
        d[..., 1:-1] = q[..., 1:-1] - q[..., :-2]
        d[..., -1] = -q[..., -2]
        return d.movedim(-1, axis)

    return backward_difference(dy, -2) + backward_difference(dx, -1)


def tv_anisotropic(x: Tensor) -> Tensor:
    """``mean(|dx| + |dy|)`` (module docstring)."""
    dx, dy = image_gradients(x)
    return (dx.abs() + dy.abs()).mean()


def tv_isotropic(x: Tensor, eps: float = 1e-8) -> Tensor:
    """``mean(sqrt(dx^2 + dy^2 + eps^2) - eps)`` (module docstring)."""
    if eps <= 0:
        raise ValueError(f"eps must be positive (it keeps the gradient finite), got {eps}")
    dx, dy = image_gradients(x)
    return (torch.sqrt(dx**2 + dy**2 + eps**2) - eps).mean()


class TotalVariation:
    """Callable ``R(x)`` for the fitting engine: ``kind='isotropic'`` or ``'anisotropic'``."""

    def __init__(self, kind: str = "isotropic", eps: float = 1e-8) -> None:
        if kind not in ("isotropic", "anisotropic"):
            raise ValueError(f"kind must be 'isotropic' or 'anisotropic', got {kind!r}")
        self.kind, self.eps = kind, eps

    def __call__(self, x: Tensor) -> Tensor:
        return tv_isotropic(x, self.eps) if self.kind == "isotropic" else tv_anisotropic(x)

    def __repr__(self) -> str:
        return f"TotalVariation({self.kind!r})"
