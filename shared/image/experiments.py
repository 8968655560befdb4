"""Fitting experiments behind the deep image prior's claims (used by examples and tests).

* :func:`fitting_targets` -- the four targets of the DIP paper's fitting-curve experiment
  (Ulyanov et al., 2018, Fig. 2): a natural image, the image plus Gaussian noise, the
  image with its pixels randomly permuted, and U(0, 1) white noise.
* :func:`fitting_curve` -- ``MSE_t = mean((f_theta_t(z) - target)^2)`` along a plain fit
  (no input noise, no averaging, no stopping): how fast a network reproduces a target.
  Structure is fitted first; noise (and scrambled pixels) much later: the network
  "resists" noise, which is the whole deep-image-prior effect.
* :func:`residual_fraction` -- ``||f(z) - y||^2 / ||y - mean(y)||^2``: the share of a
  target's energy (about its mean) that a fit leaves unexplained.  For the
  under-parameterised deep decoder (``N`` parameters, ``n`` pixel values, ``N << n``) a
  linear model with ``N`` degrees of freedom can explain at most about ``N / n`` of the
  energy of white noise, so the residual on noise stays near ``1 - N/n`` while natural
  images are fitted well.
"""
from __future__ import annotations

import torch
from torch import Tensor

from shared.fit import FitResult, Objective, Optimiser, fit
from shared.image.tasks import NETS, make_network

__all__ = ["fitting_targets", "fitting_curve", "residual_fraction", "pixel_shuffle"]


def pixel_shuffle(x: Tensor, seed: int = 0) -> Tensor:
    """The pixels of ``x`` (``(1, C, H, W)``) at random positions (all channels moved together)."""
    _, C, H, W = x.shape
    perm = torch.randperm(H * W, generator=torch.Generator().manual_seed(seed))
    return x.reshape(1, C, H * W)[..., perm].reshape(1, C, H, W)


def fitting_targets(image: Tensor, sigma: float = 25 / 255, seed: int = 0) -> dict[str, Tensor]:
    """``{"image", "image + noise", "shuffled pixels", "U(0,1) noise"}`` of the shape of ``image``."""
    g = torch.Generator().manual_seed(seed)
    return {
        "image": image,
        "image + noise": (image + sigma * torch.randn(image.shape, generator=g)).clamp(0, 1),
        "shuffled pixels": pixel_shuffle(image, seed),
        "U(0,1) noise": torch.rand(image.shape, generator=g),
    }


def fitting_curve(target: Tensor, net: str = "skip", iterations: int = 1000, lr: float | None = None,
                  seed: int = 0) -> FitResult:
    """Fit ``net`` to ``target`` plainly (``A = I``, Adam at the network's step size unless
    ``lr``; no input noise, no averaging, no stopping); ``result.history["data"]`` is
    ``MSE_t = mean((f_theta_t(z) - target)^2)`` per iteration."""
    model, z = make_network(net, target.shape[1], tuple(target.shape[-2:]), seed=seed)
    optimiser = Optimiser(lr=NETS[net].lr if lr is None else lr, iterations=iterations)
    return fit(model, z, Objective(target), optimiser=optimiser, seed=seed)


def residual_fraction(output: Tensor, target: Tensor) -> float:
    """``||output - target||^2 / ||target - mean(target)||^2`` (0 = perfect fit, 1 = only the mean)."""
    t = target.double()
    return float(((output.double() - t) ** 2).sum() / ((t - t.mean()) ** 2).sum())
