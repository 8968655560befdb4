"""Physics: the forward models ``A`` that every front end hands the engine.

A physics object maps the unknown ``x`` (the network output) to predicted measurements
``A(x)`` and gives the vector-Jacobian product ``A_vjp(x, v) = J_A(x)^T v``, which is the
adjoint ``A^* v`` for a linear operator.  It also states the shape of one measurement
(``measurement_shape``, without the batch axis; ``None`` where it depends on the input)
and, optionally, the noise model: per-entry standard deviations ``noise_std`` (a float or
a tensor broadcastable to the measurements) that a data term or a stopping rule may use.

Two ways to implement one:

* differentiable in torch (the linear operators of :mod:`shared.operators`): implement
  :meth:`Physics.A`; ``A_vjp`` defaults to reverse-mode autograd through it;
* computed outside torch (a finite element solve): subclass :class:`ExternalPhysics`
  and implement :meth:`ExternalPhysics.solve` and :meth:`ExternalPhysics.vjp`; the
  class wraps them in a ``torch.autograd.Function`` so that ``A`` is differentiable.

Calling a physics object applies ``A`` (``physics(x) == physics.A(x)``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["Physics", "ExternalPhysics", "IdentityPhysics"]


class Physics(nn.Module):
    """A forward model ``x -> A(x)`` with its vector-Jacobian product and noise model."""

    #: shape of one measurement (no batch axis), or None where it depends on the input
    measurement_shape: tuple[int, ...] | None = None

    def __init__(self, noise_std: float | Tensor | None = None) -> None:
        super().__init__()
        self.noise_std = noise_std

    def A(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def A_vjp(self, x: Tensor, v: Tensor) -> Tensor:
        """``J_A(x)^T v`` by reverse-mode autograd through :meth:`A`."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.A(xg), xg, v)
        return g

    def forward(self, x: Tensor) -> Tensor:
        return self.A(x)


class IdentityPhysics(Physics):
    """``A = I``: the measurements are the unknown itself (denoising, point sets)."""

    def A(self, x: Tensor) -> Tensor:
        return x

    def A_vjp(self, x: Tensor, v: Tensor) -> Tensor:
        return v


class ExternalPhysics(Physics):
    """A forward model evaluated outside torch, made differentiable by its own VJP.

    Subclasses implement, on float64 numpy arrays of one unknown ``x (n,)``:

    * :meth:`solve` ``x -> (y (m,), state)``: the measurements and whatever the
      vector-Jacobian product needs (e.g. a factorisation and the forward fields);
    * :meth:`vjp` ``(state, v (m,)) -> J^T v (n,)``.

    :meth:`A` takes ``(n,)`` or a batch ``(B, n)`` and returns ``(m,)`` or ``(B, m)`` in
    the input's dtype and device; its backward pass calls :meth:`vjp` on the states of
    the forward pass, so no Jacobian is formed and nothing is solved twice.
    """

    def solve(self, x: np.ndarray) -> tuple[np.ndarray, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def vjp(self, state: Any, v: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def A(self, x: Tensor) -> Tensor:
        return _External.apply(x, self)

    def A_vjp(self, x: Tensor, v: Tensor) -> Tensor:
        xs, vs = _as_batch(x), _as_batch(v)
        out = np.stack([self.vjp(self.solve(xi)[1], vi) for xi, vi in zip(xs, vs)])
        out = torch.from_numpy(out).to(device=x.device, dtype=x.dtype)
        return out if x.ndim == 2 else out[0]


def _as_batch(t: Tensor) -> np.ndarray:
    a = t.detach().to("cpu", torch.float64).numpy()
    if a.ndim not in (1, 2):
        raise ValueError(f"an external physics takes (n,) or (B, n) tensors, got shape {tuple(a.shape)}")
    return a if a.ndim == 2 else a[None]


class _External(torch.autograd.Function):
    """``x -> A(x)`` of an :class:`ExternalPhysics`; backward through its ``vjp``."""

    @staticmethod
    def forward(ctx, x: Tensor, physics: ExternalPhysics) -> Tensor:
        solved = [physics.solve(xi) for xi in _as_batch(x)]
        ctx.physics, ctx.states, ctx.batched = physics, [s for _, s in solved], x.ndim == 2
        y = torch.from_numpy(np.stack([d for d, _ in solved])).to(device=x.device, dtype=x.dtype)
        return y if ctx.batched else y[0]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        g = np.stack([ctx.physics.vjp(s, gi) for s, gi in zip(ctx.states, _as_batch(grad))])
        g = torch.from_numpy(g).to(device=grad.device, dtype=grad.dtype)
        return (g if ctx.batched else g[0]), None

