"""Earth Mover's distance between each chart's samples and its patch's points.

A patch of ``n`` points gets ``n`` chart samples ``phi(u_j)``, so the optimal transport
between the two uniform measures is a permutation ``sigma`` (Birkhoff) and the squared
2-Wasserstein distance is::

    EMD_i = 1/n  min_sigma  sum_j || phi_i(u_j) - p_{sigma(j)} ||^2 .

Two ways to use it as the data term of :func:`shared.fit.fit` (called with ``y=None``):

* :class:`ExactEMDLoss` -- the exact permutation from
  ``scipy.optimize.linear_sum_assignment`` (Jonker-Volgenant, ``O(n^3)``), recomputed every
  ``rematch_every`` steps as a non-differentiable matching step; between matchings the loss
  is the squared distance to the matched points (its gradient is the exact EMD gradient
  at the matching).  Exact, no bias from entropic blur, but a CPU step outside autograd.
* :class:`SinkhornEMDLoss` -- geomloss' debiased Sinkhorn divergence (log-domain,
  batched over patches, epsilon-scaling inside each call from the patch diameter down to
  ``blur`` with ratio ``scaling``, and ``blur`` itself annealed across iterations).  Fully
  differentiable and batched, but biased by the blur (``S_eps -> W_2^2 / 2`` as eps -> 0).

Both return the sum over patches of the per-patch value (so each chart gets the gradient
it would get alone); padded samples are masked out.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["exact_assignment", "ExactEMDLoss", "SinkhornEMDLoss", "emd_exact"]


def exact_assignment(pred: np.ndarray, target: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Optimal permutation per patch: ``perm[i, j]`` is the target index matched to sample ``j``.

    ``pred`` and ``target`` are ``(P, K, 3)``; only the first ``sizes[i]`` entries of patch
    ``i`` take part (padding maps to itself).  Patches are solved in parallel threads.
    """
    from geoprior.cover import map_parallel

    P, K, _ = pred.shape
    perm = np.tile(np.arange(K), (P, 1))

    def solve(i: int) -> np.ndarray:
        n = int(sizes[i])
        a, b = pred[i, :n], target[i, :n]
        cost = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        rows, cols = linear_sum_assignment(cost)
        return cols[np.argsort(rows)]

    for i, cols in enumerate(map_parallel(solve, range(P))):
        perm[i, :len(cols)] = cols
    return perm


def emd_exact(pred: np.ndarray, target: np.ndarray) -> float:
    """Squared 2-Wasserstein distance ``1/n min_sigma sum ||a_j - b_sigma(j)||^2`` of two equal-size sets."""
    a, b = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


class ExactEMDLoss:
    """Data term ``sum_i 1/n_i sum_j ||phi_i(u_j) - p_{sigma_i(j)}||^2`` with exact matchings.

    Parameters
    ----------
    target: ``(P, K, 3)`` patch points (patch frames).
    mask: ``(P, K)`` bool, real points.
    rematch_every: steps between exact re-matchings (0: keep the initial matching).
    rematch_start: first step at which to re-match; before it the initial (fold-free)
        matching of the cover is kept, which lets a fresh chart unfold first.
    """

    def __init__(self, target: Tensor, mask: Tensor, rematch_every: int = 20, rematch_start: int = 50) -> None:
        self.target = target
        self.mask = mask.to(target.dtype)
        self.sizes = mask.sum(1).cpu().numpy()
        self.n = self.mask.sum(1).clamp_min(1)
        P, K = mask.shape
        self.perm = torch.arange(K, device=target.device).repeat(P, 1)
        self.rematch_every = rematch_every
        self.rematch_start = rematch_start
        self.calls = 0
        self.matchings = 0
        self.match_time_s = 0.0

    def rematch(self, pred: Tensor) -> None:
        import time

        t0 = time.perf_counter()
        perm = exact_assignment(pred.detach().cpu().double().numpy(), self.target.cpu().double().numpy(), self.sizes)
        self.perm = torch.as_tensor(perm, device=self.target.device)
        self.matchings += 1
        self.match_time_s += time.perf_counter() - t0

    def matched_target(self) -> Tensor:
        return torch.gather(self.target, 1, self.perm[..., None].expand(-1, -1, 3))

    def per_patch(self, pred: Tensor) -> Tensor:
        d2 = ((pred - self.matched_target()) ** 2).sum(-1)
        return (d2 * self.mask).sum(1) / self.n

    def __call__(self, pred: Tensor, target: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        step = self.calls
        self.calls += 1
        if self.rematch_every and step >= self.rematch_start and (step - self.rematch_start) % self.rematch_every == 0:
            self.rematch(pred)
        return self.per_patch(pred).sum()


class SinkhornEMDLoss:
    """Data term ``sum_i 2 S_eps(phi_i(u), P_i)`` with geomloss' batched log-domain Sinkhorn.

    ``S_eps`` is the debiased Sinkhorn divergence for the cost ``|x - y|^2 / 2`` (so ``2 S``
    tends to the squared EMD as ``blur -> 0``).  ``blur`` is annealed from ``blur_start`` by
    the factor ``anneal`` per step down to ``blur``; inside each call geomloss runs
    epsilon-scaling with ratio ``scaling``.
    """

    def __init__(self, target: Tensor, mask: Tensor, blur: float = 0.01, scaling: float = 0.7,
                 blur_start: float | None = 0.1, anneal: float = 0.99) -> None:
        from geomloss import SamplesLoss

        self._SamplesLoss = SamplesLoss
        self.target = target
        m = mask.to(target.dtype)
        # Padding gets weight 0 (log-domain Sinkhorn handles log 0 = -inf).
        self.weights = m / m.sum(1, keepdim=True).clamp_min(1)
        self.blur = blur
        self.scaling = scaling
        self.blur_start = blur if blur_start is None else max(blur_start, blur)
        self.anneal = anneal
        self.calls = 0

    def current_blur(self) -> float:
        return max(self.blur, self.blur_start * self.anneal ** self.calls)

    def per_patch(self, pred: Tensor, blur: float | None = None) -> Tensor:
        loss = self._SamplesLoss("sinkhorn", p=2, blur=blur or self.current_blur(), scaling=self.scaling,
                                 backend="tensorized", debias=True)
        return 2.0 * loss(self.weights, pred, self.weights, self.target)

    def __call__(self, pred: Tensor, target: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        value = self.per_patch(pred).sum()
        self.calls += 1
        return value
