"""Data terms ``D(prediction, target, mask=None) -> scalar`` for :func:`shared.fit.fit`.

``mask`` (boolean, shape of the target) selects the entries that enter the term; the
engine uses it for missing (non-finite) measurements and held-out fractions.  A batch of
predictions ``(B, *target.shape)`` (an ensemble fitted together) is compared member by member
with the one target (:class:`WeightedSquaredError`, :func:`poisson_nll`): the term is the
mean over members and masked entries.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mse_loss", "WeightedSquaredError", "poisson_nll"]


def mse_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error ``mean_i (pred_i - y_i)^2`` over the masked entries."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} does not match measurement shape {tuple(target.shape)}")
    diff2 = (pred - target) ** 2
    if mask is None:
        return diff2.mean()
    return diff2[mask].mean()


class WeightedSquaredError:
    """Noise-weighted misfit ``mean_i ((pred_i - y_i) / s_i)^2`` (a chi-square per datum).

    ``noise_std`` is a float or a tensor broadcastable to the measurements; with the
    true noise level the value is about 1 at the noise floor, which is what the
    discrepancy principle tests.
    """

    def __init__(self, noise_std: float | Tensor) -> None:
        if isinstance(noise_std, Tensor):
            if not bool((noise_std > 0).all()):
                raise ValueError("noise_std must be positive everywhere")
        elif not noise_std > 0:
            raise ValueError(f"noise_std must be positive, got {noise_std}")
        self.noise_std = noise_std

    def __call__(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        s = self.noise_std.to(pred.device) if isinstance(self.noise_std, Tensor) else self.noise_std
        r2 = ((pred - target) / s) ** 2
        return r2.mean() if mask is None else r2[..., mask].mean()


def poisson_nll(pred: Tensor, target: Tensor, mask: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """Poisson negative log-likelihood ``mean(pred - y log pred)`` for photon counts."""
    nll = pred - target * torch.log(pred.clamp_min(eps))
    return nll.mean() if mask is None else nll[..., mask].mean()
