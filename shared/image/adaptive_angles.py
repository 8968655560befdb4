"""Adaptive angle selection for sparse-view CT with the linearised deep image prior.

After a DIP fit to the angles measured so far, the linearised Laplace posterior
(:func:`shared.uncertainty.linearised_uncertainty`, ``keep_factor=True``) gives a factor ``F``
with ``Cov(x) ~ F F^T`` (``n x r``).  The projection at a candidate angle ``a`` is
``y_a = R_a x + e``, ``e ~ N(0, s^2 I)``, so its predictive covariance is
``G_a G_a^T + s^2 I`` with ``G_a = R_a F`` and the expected information gain of measuring it is::

    IG(a) = 1/2 log det(I + G_a^T G_a / s^2)            (mutual information of y_a and x)

The next angle is the candidate of largest gain (Barbano et al. 2022, the design criterion
of Bayesian experimental design).  Several angles are picked per refit greedily: after a
pick the factor is conditioned on that (not yet measured) projection,
``F <- F (I + G_a^T G_a / s^2)^-1/2`` (:func:`shared.uncertainty.condition_factor`; a
projection's posterior does not depend on its value), so the second pick accounts for the
first.  Candidates are a fixed grid of angles; all of them are projected once per refit
(one Radon transform of the ``r`` columns of ``F``).

With ``members`` = K > 1 each round fits K seeds side by side (one grouped network) and the
posterior is the equal mixture of the K members' linearised posteriors, the CT default of
``benchmarks/uncertainty.py`` (one network's std scale varies several-fold between seeds):
its factor is :func:`shared.uncertainty.mixture_factor` (the members' factors and their
disagreement), and the reconstruction is the members' mean image.

:func:`adaptive_ct` runs the loop on a simulated phantom: a noisy sinogram at every candidate
angle is drawn once, and a measured set reads its rows, so equidistant, random and adaptive
sets of the same size see the same noise on the angles they share.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from shared.uncertainty import conditioning_root

__all__ = ["information_gain", "select_angles", "simulate_sinogram", "fit_angles", "reconstruction",
           "angle_posterior", "adaptive_ct", "equidistant_indices", "AdaptiveRun"]


def information_gain(G: Tensor, noise_var: float) -> Tensor:
    """``1/2 log det(I + G_c G_c^T / s^2)`` per candidate: ``G`` ``(r, C, d)`` -> ``(C,)``."""
    Gc = G.double().permute(1, 2, 0)  # (C, d, r)
    d, r = Gc.shape[1], Gc.shape[2]
    if d <= r:
        M = torch.eye(d, dtype=torch.float64) + Gc @ Gc.transpose(1, 2) / noise_var
    else:
        M = torch.eye(r, dtype=torch.float64) + Gc.transpose(1, 2) @ Gc / noise_var
    return 0.5 * torch.linalg.slogdet(M)[1]


def select_angles(G: Tensor, noise_var: float, count: int, exclude: list[int] | tuple[int, ...] = ()) -> list[int]:
    """Greedy choice of ``count`` candidates of largest information gain, conditioning between picks.

    ``G`` ``(r, C, d)``: the Radon projections at the ``C`` candidates of the ``r`` factor
    columns (``R_c F``); ``exclude``: candidates already measured.
    """
    G = G.double().clone()
    chosen: list[int] = []
    banned = set(int(i) for i in exclude)
    for _ in range(int(count)):
        gain = information_gain(G, noise_var)
        if banned:
            gain[list(banned)] = -math.inf
        c = int(torch.argmax(gain))
        chosen.append(c)
        banned.add(c)
        root = conditioning_root(G[:, c, :].T, noise_var)  # (I + G_c^T G_c / s^2)^-1/2
        G = torch.einsum("rs,rcd->scd", root, G)
    return chosen


def equidistant_indices(n_candidates: int, count: int) -> list[int]:
    """``count`` equally spaced indices of a uniform candidate grid over ``[0, pi)``."""
    return sorted({int(round(i * n_candidates / count)) % n_candidates for i in range(int(count))})


def simulate_sinogram(x: Tensor, candidates: np.ndarray, noise: float, seed: int) -> tuple[Tensor, float]:
    """Noisy sinogram ``(1, 1, C, d)`` of ``x`` at every candidate angle and the noise std
    (``noise`` times the RMS of the clean sinogram)."""
    from shared.operators import Radon

    op = Radon(torch.as_tensor(candidates), x.shape[-1])
    clean = op(x)
    std = float(noise * clean.pow(2).mean().sqrt())
    g = torch.Generator().manual_seed(seed)
    return clean + std * torch.randn(clean.shape, generator=g, dtype=clean.dtype), std


def fit_angles(sinogram: Tensor, candidates: np.ndarray, indices: list[int], size: int, iterations: int,
               seed: int, members: int = 1):
    """DIP (the CT network, FBP input, Adam lr 5e-3) on the rows ``indices`` of the sinogram
    (``members`` seeds ``seed, seed+1, ...`` side by side)."""
    from shared.image.edip import finetune
    from shared.operators import Radon

    idx = sorted(indices)
    op = Radon(torch.as_tensor(candidates[idx]), size)
    y = sinogram[:, :, idx]
    return finetune(y, op, op.fbp(y).clamp(0, 1), input="fbp", iterations=iterations, lr=5e-3, seed=seed,
                    members=members)


def reconstruction(fit) -> Tensor:
    """The image of a :func:`fit_angles` result ``(1, 1, H, W)``: the members' mean of their
    outputs clipped to [0, 1] (one member: its output)."""
    from shared.image.edip import network_output

    return network_output(fit.model, fit.z).clamp(0, 1).mean(0, keepdim=True)


def angle_posterior(fit, noise_std: float, rank: int) -> tuple[Tensor, Tensor]:
    """``(mean, F)`` of the linearised posterior of a :func:`fit_angles` result: each member
    linearised at its own weights (rank ``rank``, zero-centred prior, known noise), mixed
    equally (:func:`shared.uncertainty.mixture_factor`); ``mean`` ``(1, 1, H, W)``, ``F`` ``(H W, r)``."""
    from shared.uncertainty import linearised_uncertainty, member_fits, mixture_factor

    parts = [linearised_uncertainty(f, rank=rank, beta=1.0 / noise_std ** 2, prior_mean="zero", keep_factor=True)
             for f in member_fits(fit, keep_dim=True)]
    means = torch.stack([u.mean.clamp(0, 1).reshape(-1) for u in parts])
    # one member: its own factor and a zero column, which changes no information gain
    F = mixture_factor(means, [u.covariance_factor for u in parts])
    return means.mean(0).reshape(parts[0].mean.shape), F


@dataclass
class AdaptiveRun:
    """Angles chosen per round and the PSNR of each round's reconstruction (dB)."""

    indices: list[int]
    psnr: dict[int, float] = field(default_factory=dict)
    rounds: list[list[int]] = field(default_factory=list)


def adaptive_ct(x: Tensor, candidates: np.ndarray, sinogram: Tensor, noise_std: float, start: int, step: int,
                budget: int, iterations: int = 600, rank: int = 64, seed: int = 0,
                members: int = 1) -> AdaptiveRun:
    """Start from ``start`` equidistant angles, add ``step`` per round by information gain, up to ``budget``.

    Each round fits the DIP to the angles so far (``members`` seeds side by side), linearises
    it (:func:`angle_posterior`), projects the covariance factor at every candidate and picks
    the next ``step`` angles (:func:`select_angles`).  ``psnr[n]``: the reconstruction
    (:func:`reconstruction`) from ``n`` angles.
    """
    from shared.metrics import psnr
    from shared.operators import Radon

    run = AdaptiveRun(indices=equidistant_indices(len(candidates), start))
    all_angles = Radon(torch.as_tensor(candidates), x.shape[-1])
    while True:
        fit = fit_angles(sinogram, candidates, run.indices, x.shape[-1], iterations, seed, members).result
        run.psnr[len(run.indices)] = psnr(reconstruction(fit), x)
        if len(run.indices) >= budget:
            return run
        _, F = angle_posterior(fit, noise_std, rank)
        with torch.no_grad():
            G = all_angles(F.T.reshape(F.shape[1], *x.shape[1:]).to(x.dtype))[:, 0]  # (r, C, d)
        new = select_angles(G, noise_std ** 2, min(step, budget - len(run.indices)), exclude=run.indices)
        run.rounds.append(new)
        run.indices = sorted(run.indices + new)
