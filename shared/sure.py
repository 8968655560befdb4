"""Stein's unbiased risk estimate (SURE): a denoising loss that needs no clean image.

For measurements ``y = x + n`` with white Gaussian noise ``n ~ N(0, sigma^2 I)`` of known
``sigma`` and an estimator ``x_hat = f(y)`` that is weakly differentiable in ``y``, Stein's
lemma gives an unbiased estimate of its mean squared error (``N`` entries)::

    SURE(f, y) = ||y - f(y)||^2 / N  -  sigma^2  +  (2 sigma^2 / N) div_y f(y),
    E_n[ SURE(f, y) ] = E_n[ ||f(y) - x||^2 / N ].

The divergence ``div_y f = sum_i d f_i / d y_i`` is estimated by Monte Carlo (Ramani, Blu
and Unser 2008) with one Gaussian probe ``b ~ N(0, I)`` and a small step
``eps``::

    div_y f(y)  ~  b . (f(y + eps b) - f(y)) / eps.

Minimising SURE over the parameters of a network whose *input is the noisy image* (Metzler
et al. 2018; Jo, Chun and Choi 2021) penalises the identity map (its divergence is ``N``),
so the fit does not reproduce the noise through the input.  It can still memorise it through
the weights (SURE is unbiased for a fixed network, not for one fitted to this ``y``): at high
noise the divergence estimate falls to about 0 while the fit drifts, which the image front end
catches by selecting its output with ES-WMV (:mod:`shared.image.dip`).  The engine
(:func:`shared.fit.fit`) recognises a data term with a :meth:`MonteCarloSURE.probe`
method: it evaluates the network once on the stacked input ``[z, z + eps b]`` (``z`` is the
measurement ``y``) and hands the probe's output to the term.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["MonteCarloSURE", "estimate_noise_std"]


class MonteCarloSURE:
    """SURE of a denoiser ``f`` of ``y = x + N(0, sigma^2 I)`` (module docstring), a data term.

    ``sigma``: noise std in the units of ``y``.  ``eps``: the probe's finite-difference step
    (default ``sigma / 100``: small against the noise, so the difference quotient is the
    local derivative, and large against float32 rounding).  Called as
    ``sure(pred, y, probe=(pred_probe, b))`` it returns the scalar SURE estimate of the
    per-entry MSE, with the divergence estimate clamped at 0 (see ``__call__``); without a
    probe (an evaluation that has none) the divergence term is 0 and the value is
    ``mean (pred - y)^2 - sigma^2``.  For an ensemble's outputs ``(K, C, H, W)`` of one
    noisy image ``(1, C, H, W)`` the value is the mean of the members' SUREs.
    """

    def __init__(self, sigma: float, eps: float | None = None) -> None:
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"SURE needs a positive noise std sigma, got {sigma}")
        if eps is not None and not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"SURE's probe step eps must be positive, got {eps}")
        self.sigma = float(sigma)
        self.eps = float(eps) if eps is not None else self.sigma / 100

    def probe(self, z: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(z + eps b, b)`` with a fresh ``b ~ N(0, I)`` of ``z``'s shape."""
        b = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        return z + self.eps * b, b

    def divergence(self, pred: Tensor, pred_probe: Tensor, b: Tensor) -> Tensor:
        """Monte-Carlo ``div_y f ~ b . (f(y + eps b) - f(y)) / eps``: a scalar, or one per
        member for an ensemble's ``(K, C, H, W)`` outputs of one ``(1, C, H, W)`` probe."""
        prod = b * (pred_probe - pred)
        if prod.shape[0] != b.shape[0]:
            return prod.flatten(1).sum(1) / self.eps
        return prod.sum() / self.eps

    def __call__(self, pred: Tensor, target: Tensor, mask: Tensor | None = None,
                 probe: tuple[Tensor, Tensor] | None = None) -> Tensor:
        if mask is not None:
            raise ValueError("SURE uses every entry of the noisy image: it does not combine with missing "
                             "measurements or a held-out split (use stop='none')")
        if pred.shape != target.shape and not (target.shape[0] == 1 and pred.shape[1:] == target.shape[1:]):
            raise ValueError(f"SURE: prediction shape {tuple(pred.shape)} does not match the noisy image "
                             f"{tuple(target.shape)}")
        n = target.numel()
        risk = ((pred - target) ** 2).mean() - self.sigma ** 2  # an ensemble's: the members' mean
        if probe is None:
            return risk
        # A denoiser's divergence is >= 0 (a smoother's Jacobian has eigenvalues in [0, 1]), and
        # the Monte-Carlo estimate of a real one is far from 0 (its std is at most sqrt(2 div)).
        # Clamped at 0 it gives no reward for a negative divergence: without the clamp a fit at
        # sigma = 50/255 learnt an anti-correlated map (div/N -> -1.3, F16 from 25 dB to 17 dB).
        # An ensemble's members are clamped one by one, as in separate fits.
        return risk + 2 * self.sigma ** 2 * self.divergence(pred, *probe).clamp_min(0).mean() / n


def estimate_noise_std(image: Tensor) -> float:
    """Noise std of an image with white Gaussian noise, from its finest diagonal Haar band.

    ``image``: ``(..., H, W)``.  The diagonal detail ``d = (a - b - c + e) / 2`` of each 2x2
    block has the noise's std and little image content, so ``sigma ~ median|d| / 0.6745``
    (Donoho's MAD estimator; the median ignores the edges that leak into the band).
    Slightly high on strongly textured images.
    """
    h, w = image.shape[-2] // 2 * 2, image.shape[-1] // 2 * 2
    if h < 2 or w < 2:
        raise ValueError(f"the noise estimate needs an image of at least 2x2 pixels, got {tuple(image.shape[-2:])}")
    x = image[..., :h, :w].double()
    d = (x[..., 0::2, 0::2] - x[..., 0::2, 1::2] - x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) / 2
    return float(d.abs().median() / 0.6745)
