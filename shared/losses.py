"""Data terms ``D(prediction, target, mask=None) -> scalar`` for :func:`shared.fit.fit`.

``mask`` (boolean, shape of the target) selects the entries that enter the term; the
engine uses it for missing (non-finite) measurements and held-out fractions.  A batch of
predictions ``(B, *target.shape)`` (an ensemble fitted together; for a target of leading size
1, such as an image ``(1, C, H, W)``, also ``(B, C, H, W)``: :func:`members_of`) is compared
member by member with the one target: the term is the mean over members and masked entries.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["members_of", "mse_loss", "SumOverMembers", "WeightedSquaredError", "poisson_nll"]


def members_of(pred: Tensor, target: Tensor) -> int:
    """How many members' predictions ``pred`` holds for the one ``target``; refuse other shapes.

    ``pred`` is ``target``'s shape (1 member), ``(B, *target.shape)``, or, for a target of
    leading size 1 (an image ``(1, C, H, W)``), ``(B, *target.shape[1:])``: one row per member.
    """
    if pred.shape == target.shape:
        return 1
    if pred.shape[1:] == target.shape:
        return pred.shape[0]
    if target.ndim >= 1 and target.shape[0] == 1 and pred.shape[1:] == target.shape[1:]:
        return pred.shape[0]
    raise ValueError(f"prediction shape {tuple(pred.shape)} does not match measurement shape {tuple(target.shape)}")


def mse_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error ``mean_i (pred_i - y_i)^2`` over the masked entries.

    For an ensemble's predictions (:func:`members_of`) it is the mean of the members' errors.
    """
    if members_of(pred, target) > 1 and pred.ndim == target.ndim:
        target = target.expand_as(pred)
        mask = None if mask is None else mask.expand_as(pred)
    diff2 = (pred - target) ** 2
    if mask is None:
        return diff2.mean()
    return diff2[..., mask].mean() if diff2.ndim > mask.ndim else diff2[mask].mean()


class SumOverMembers:
    """``K D(pred, y)`` for a data term ``D`` that averages an ensemble's ``K`` members.

    The sum of the members' terms: each member's gradient is then exactly the one of its
    own separate fit (the mean would scale it by ``1/K``, which Adam's ``eps`` does not
    ignore for the tiny gradients of batch-normalised layers).  Every other attribute of
    ``D`` (a ``probe``, ``begin_step``) is ``D``'s own.
    """

    def __init__(self, data: Callable[..., Tensor], members: int) -> None:
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        self.data, self.members = data, members

    def __call__(self, pred: Tensor, target: Tensor, mask: Tensor | None = None, **kwargs: Any) -> Tensor:
        if mask is not None:
            kwargs["mask"] = mask
        return self.members * self.data(pred, target, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in ("data", "members"):  # not yet set (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.data, name)


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
