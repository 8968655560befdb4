"""The batched chart prior: one ReLU MLP ``phi_i: [0, 1]^2 -> R^3`` per patch.

All ``P`` charts are a single :class:`shared.networks.BatchedMLP` with independent weights
per patch (a batched matrix product per layer).  Input: the parameter samples ``u``,
``(P, K, 2)``; output: chart points in each patch's PCA frame, ``(P, K, 3)``.  Because
the members' parameters never mix, a loss summed over patches fits every chart exactly
as if it were fitted alone, in one optimiser step.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from shared.networks import BatchedMLP

__all__ = ["ChartPrior", "chart_jacobian_normals"]


class ChartPrior(nn.Module):
    """``P`` independent charts ``[0, 1]^2 -> R^3`` (ReLU MLPs of widths ``hidden``).

    The input is centred (``u - 1/2``) so that the ReLU kinks of a fresh network are
    spread over the parameter square.
    """

    def __init__(self, n_patches: int, hidden: Sequence[int] = (64, 64, 64), act: str = "relu") -> None:
        super().__init__()
        self.mlp = BatchedMLP(n_patches, 2, 3, hidden, act)

    @property
    def n_patches(self) -> int:
        return self.mlp.batch

    def forward(self, uv: Tensor) -> Tensor:
        return self.mlp(uv - 0.5)


def chart_jacobian_normals(model: nn.Module, uv: Tensor) -> tuple[Tensor, Tensor]:
    """Points ``phi(u)`` and unit normals ``d phi/du x d phi/dv`` (both ``(P, M, 3)``, patch frame).

    Each output point depends only on its own ``u``, so the gradient of the sum of one
    output coordinate over all points gives that coordinate's partial derivatives at
    every point: three backward passes give the full Jacobian.
    """
    uv = uv.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(uv)
        rows = [torch.autograd.grad(out[..., k].sum(), uv, retain_graph=k < 2)[0] for k in range(3)]
    jac = torch.stack(rows, dim=-2)  # (P, M, 3, 2): d phi_k / d u_j
    n = torch.linalg.cross(jac[..., 0], jac[..., 1], dim=-1)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return out.detach(), n.detach()
