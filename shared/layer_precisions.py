"""Per-layer prior precisions for the linearised Laplace posterior, by type-II maximum likelihood.

One prior precision for all weights, ``theta ~ N(theta_0, alpha^-1 I)``, treats a batch-norm
scale, a 3x3 convolution and a bias alike, although the network's output depends on them at
very different scales.  With one precision per group ``g`` of parameters (a layer: the
tensors of one module), ``A = diag(alpha_g)``, the measurements are marginally Gaussian::

    y - F(x*) - J_y (theta_0 - theta*) = d ~ N(0, C),     C = J_y A^-1 J_y^T + beta^-1 I .

In the basis of a rank-``k`` SVD ``J_y ~ U S V^T`` (computed once with one precision), the
group Gram matrices restricted to ``span U`` are ``U^T J_g J_g^T U = S V_g^T V_g S`` (``V_g``:
the rows of ``V`` of group ``g``; ``sum_g V_g^T V_g = I``), so in that subspace::

    C_U = S (sum_g alpha_g^-1 V_g^T V_g) S + beta^-1 I_k          (k x k)

    log p(d | alpha, beta) = -1/2 [log det C_U + d_U^T C_U^-1 d_U] + (m - k)/2 log beta
                             - beta/2 ||d - U U^T d||^2 - m/2 log 2 pi,     d_U = U^T d,

the directions beyond the rank counting as noise, as in the one-precision evidence of
:func:`shared.uncertainty.log_evidence` (which it equals when all ``alpha_g`` are equal).
It is maximised over ``log alpha_g`` (and ``log beta`` unless the noise is known) by
L-BFGS-B with exact gradients; each ``alpha_g`` stays within a factor ``bound`` of the
one-precision value, since a group the leading ``k`` directions barely see has a flat
evidence.  :func:`shared.uncertainty.linearised_laplace` (``prior_groups="layer"``) then
recomputes the SVD of the whitened Jacobian ``J_y A^-1/2`` so that the posterior is the
rank-``k`` posterior of the per-layer prior, not of the one it started from.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["parameter_groups", "group_log_evidence", "fit_group_precisions", "group_rms_precisions"]


def parameter_groups(names: list[str], numels: list[int], how: str) -> tuple[list[str], Tensor]:
    """Group labels of the flat parameter vector: ``(group names, index (p,) of each entry)``.

    ``how``: ``"layer"`` (the tensors of one module share a group: ``conv.weight`` and
    ``conv.bias``), ``"tensor"`` (one group per parameter tensor) or ``"none"`` (one group).
    """
    if how not in ("none", "layer", "tensor"):
        raise ValueError(f"prior_groups must be 'none', 'layer' or 'tensor', got {how!r}")
    keys = [("all" if how == "none" else (name.rsplit(".", 1)[0] if "." in name else "") if how == "layer"
             else name) for name in names]
    order = list(dict.fromkeys(keys))
    index = torch.cat([torch.full((n,), order.index(k), dtype=torch.long) for k, n in zip(keys, numels)])
    return order, index


def _group_grams(S: Tensor, V: Tensor, index: Tensor, n_groups: int) -> Tensor:
    """``S V_g^T V_g S`` for every group ``g``: ``(G, k, k)`` float64."""
    Vs = V.double() * S.double()
    idx = index.to(V.device)
    return torch.stack([Vs[idx == g].T @ Vs[idx == g] for g in range(n_groups)])


def group_log_evidence(log_alpha: Tensor, log_beta: Tensor, grams: Tensor, d_proj: Tensor, d_perp2: float,
                       m: int) -> Tensor:
    """Log marginal likelihood of the per-group prior (module docstring), differentiable.

    ``log_alpha`` ``(G,)``, ``log_beta`` scalar, ``grams`` ``(G, k, k)`` from the SVD basis,
    ``d_proj = U^T d`` ``(k,)``, ``d_perp2 = ||d - U U^T d||^2``, ``m`` measurements.
    """
    k = d_proj.numel()
    C = torch.einsum("g,gij->ij", torch.exp(-log_alpha), grams)
    C = C + torch.exp(-log_beta) * torch.eye(k, dtype=C.dtype, device=C.device)
    L = torch.linalg.cholesky(C)
    sol = torch.cholesky_solve(d_proj[:, None], L)[:, 0]
    logdet = 2.0 * torch.log(torch.diagonal(L)).sum()
    return (-0.5 * (logdet + d_proj @ sol) + 0.5 * (m - k) * log_beta - 0.5 * torch.exp(log_beta) * d_perp2
            - 0.5 * m * math.log(2 * math.pi))


def fit_group_precisions(S: Tensor, V: Tensor, index: Tensor, n_groups: int, d_proj: Tensor, d_perp2: float,
                         m: int, alpha: float, beta: float, fit_beta: bool,
                         bound: float = 1e4) -> tuple[np.ndarray, float, float]:
    """Per-group precisions maximising :func:`group_log_evidence`, started at one precision.

    ``alpha``, ``beta``: the one-precision optimum (the start; ``beta`` is kept when
    ``fit_beta`` is False).  ``log alpha_g`` is bounded to ``log alpha +- log bound``.
    Returns ``(alpha_g (G,), beta, log evidence)``.
    """
    from scipy.optimize import minimize

    grams = _group_grams(S, V, index, n_groups)
    dp = d_proj.double().reshape(-1).to(grams.device)
    la0, lb0 = math.log(alpha), math.log(beta)

    def unpack(v: np.ndarray) -> tuple[Tensor, Tensor]:
        t = torch.as_tensor(v, dtype=torch.float64, device=grams.device)
        return t[:n_groups], (t[n_groups] if fit_beta else torch.tensor(lb0, dtype=torch.float64))

    def neg(v: np.ndarray) -> tuple[float, np.ndarray]:
        t = torch.as_tensor(v, dtype=torch.float64).requires_grad_(True)
        la, lb = t[:n_groups], (t[n_groups] if fit_beta else torch.tensor(lb0, dtype=torch.float64))
        value = -group_log_evidence(la, lb, grams, dp, d_perp2, m)
        (g,) = torch.autograd.grad(value, t)
        return float(value.detach()), g.numpy()

    x0 = np.full(n_groups + int(fit_beta), la0)
    bounds = [(la0 - math.log(bound), la0 + math.log(bound))] * n_groups
    if fit_beta:
        x0[-1] = lb0
        bounds.append((lb0 - 20.0, lb0 + 20.0))
    best = minimize(neg, x0, jac=True, method="L-BFGS-B", bounds=bounds)
    la, lb = unpack(best.x)
    return np.exp(la.numpy()), float(torch.exp(lb)), -float(best.fun)


def group_rms_precisions(theta: Tensor, index: Tensor, n_groups: int, alpha: float) -> np.ndarray:
    """``alpha_g = alpha / (mean_g(theta_g^2) / mean(theta^2))``: per-group precisions shaped by
    each group's own weight scale (its mean square at the fitted weights), with the overall
    level ``alpha``; a group of zeros keeps ``alpha``."""
    t2 = theta.detach().double().pow(2).cpu()
    idx = index.cpu()
    ms = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, idx, t2)
    ms = ms / torch.bincount(idx, minlength=n_groups).double()
    ref = float(t2.mean())
    rel = torch.where(ms > 0, ms / ref, torch.ones_like(ms))
    return (alpha / rel).numpy()
