"""Linearised-Laplace uncertainty of one fitted chart (:mod:`shared.uncertainty` on a patch).

A chart ``phi_theta: [0, 1]^2 -> R^3`` of patch ``i`` (``n`` points ``p_k``, patch frame)
is fitted by the exact EMD (:mod:`geoprior.emd`)::

    EMD(theta) = 1/n  min_sigma  sum_j || phi_theta(u_j) - p_sigma(j) ||^2 .

At a fitted ``theta*`` with the optimal permutation ``sigma*`` (:func:`geoprior.emd.exact_assignment`),
the objective is -- for parameter changes small enough that the matching does not change --
the squared error ``1/n ||x(theta) - y||^2`` to the *matched* targets
``y = (p_sigma*(1), ..., p_sigma*(n))`` (``(n, 3)``), i.e. the negative log-likelihood of
``y = x(theta) + eps``, ``eps ~ N(0, beta^-1 I_{3n})`` up to the factor ``n beta / 2``.  So
the generic linearised model of :func:`shared.uncertainty.linearised_laplace` applies with
the identity forward model, the measurements ``y`` (``m = 3n``), and the chart's
parameters ``theta`` (the member MLP of the :class:`~shared.networks.BatchedMLP` plus the
chart's affine part ``A_i, b_i``; ``p ~ 2.3k`` for widths ``(32, 32, 32)``).  The posterior
precision is ``H = beta J^T J + alpha I`` (``J = d x / d theta``, ``3n x p``), ``alpha`` and
``beta`` maximise the marginal likelihood, and the result is the per-sample, per-coordinate
predictive std ``std_jk = sqrt([J H^-1 J^T]_{jk,jk})`` (``(n, 3)``, patch-frame units; times
``cover.scale[i]`` for world units).

Only one chart is linearised (the charts share no parameters, so each posterior is
independent and a small ``J`` is formed exactly: ``m = 3n`` VJPs, ``method="exact"``).
What the model leaves out: the matching's own uncertainty (a change of ``theta`` large
enough to change ``sigma*`` is not linear).  ``beta`` is the precision of the residual
*after* matching, which carries, besides the noise, the tangential mismatch between the
parameter samples and the points (measured on a sphere cap: fitted noise std 1.8x the
true one; the std along the normal is then conservative, 99.5% of the distances to the true
surface within 2 std, while per-coordinate errors to the matched clean points, dominated by
that tangential slack, are 79% within 2 std; see ``docs/edip.md``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from geoprior.charts import ChartPrior
from geoprior.cover import Cover
from geoprior.emd import exact_assignment
from shared.uncertainty import LinearisedUncertainty, linearised_laplace

__all__ = ["PatchChart", "ChartUncertainty", "chart_uncertainty"]


class PatchChart(nn.Module):
    """Chart ``i`` of a :class:`ChartPrior` as a stand-alone module.

    ``phi(u) = MLP_i(u - 1/2) + (u - 1/2) A_i + b_i``; input ``(n, 2)``, output ``(n, 3)``.
    The weights are copies (the fitted ``ChartPrior`` is not touched).  ``A_i, b_i`` are
    trainable exactly when they were in the batch (``plane_init``).
    """

    def __init__(self, model: ChartPrior, patch: int) -> None:
        super().__init__()
        if not 0 <= patch < model.n_patches:
            raise ValueError(f"patch must be in [0, {model.n_patches}), got {patch}")
        self.mlp = model.mlp.member(patch)
        self.A = nn.Parameter(model.A[patch].detach().clone(), requires_grad=model.A.requires_grad)
        self.b = nn.Parameter(model.b[patch, 0].detach().clone(), requires_grad=model.b.requires_grad)

    def forward(self, uv: Tensor) -> Tensor:
        c = uv - 0.5
        return self.mlp(c) + c @ self.A + self.b


@dataclass
class ChartUncertainty:
    """Output of :func:`chart_uncertainty` (patch ``patch``, its ``n`` real samples).

    ``mean``, ``std``, ``std_noisy``, ``target``: ``(n, 3)`` tensors in the patch frame
    (``std_noisy`` adds the noise variance ``1/beta``: the std of a new noisy point).
    ``perm``: ``(n,)`` index of the patch point matched to each sample.  ``world_scale``:
    the patch's scale (patch units -> world units).  ``laplace``: the full
    :class:`~shared.uncertainty.LinearisedUncertainty` (alpha, beta, evidence, spectrum).
    """

    patch: int
    mean: Tensor
    std: Tensor
    std_noisy: Tensor
    target: Tensor
    perm: np.ndarray
    world_scale: float
    laplace: LinearisedUncertainty

    @property
    def beta(self) -> float:
        return self.laplace.beta

    @property
    def alpha(self) -> float:
        return self.laplace.alpha

    @property
    def noise_std(self) -> float:
        """Fitted noise std ``beta^-1/2`` per coordinate, patch units."""
        return self.laplace.noise_std

    @property
    def noise_std_world(self) -> float:
        return self.laplace.noise_std * self.world_scale

    def summary(self) -> dict:
        s = self.laplace.summary()
        s.update(patch=self.patch, n_points=int(self.mean.shape[0]), world_scale=self.world_scale,
                 noise_std_world=self.noise_std_world, mean_std_world=float(self.std.mean()) * self.world_scale)
        return s


def chart_uncertainty(model: ChartPrior, cover: Cover, patch: int = 0, *, rank: int | None = None,
                      prior_mean: Mapping[str, Tensor] | str | None = None, beta: float | None = None,
                      method: str = "exact", seed: int = 0) -> ChartUncertainty:
    """Linearised-Laplace std of chart ``patch`` of a fitted :class:`ChartPrior`.

    Parameters
    ----------
    model:
        The fitted charts (e.g. the first output of :func:`geoprior.reconstruct.fit_charts`).
    cover:
        The cover they were fitted to (its ``uv``, ``local``, ``mask``, ``scale``).
    patch:
        Which chart to linearise.
    rank:
        Rank of ``J`` kept (None: ``min(3n/2, p)``; fewer than ``3n`` so that the noise
        precision is identifiable from the residual directions).
    prior_mean:
        ``theta_0``: a :func:`shared.uncertainty.snapshot` of the whole ``ChartPrior`` taken
        before fitting (restricted here to the patch), ``"zero"`` (default) or ``"fitted"``.
    beta:
        Known noise precision in patch units (``(scale_i / sigma_world)^2``); None fits it.
    method:
        ``"exact"`` (``3n`` VJPs, default) or ``"randomized"`` (see :func:`linearised_laplace`).

    The matched targets are recomputed here with the exact assignment at the fitted
    charts (so this is valid whatever loss was used for the fit, e.g. Sinkhorn).
    """
    if not isinstance(model, ChartPrior):
        raise ValueError(f"chart_uncertainty needs a geoprior.charts.ChartPrior, got {type(model).__name__}")
    if model.n_patches != cover.n_patches:
        raise ValueError(f"the model has {model.n_patches} charts but the cover {cover.n_patches} patches")
    chart = PatchChart(model, patch)
    n = int(cover.mask[patch].sum())
    dev = next(model.parameters()).device
    uv = torch.as_tensor(cover.uv[patch, :n], dtype=torch.float32, device=dev)
    chart.to(dev).eval()
    with torch.no_grad():
        x = chart(uv)
    pts = cover.local[patch, :n]
    perm = exact_assignment(x.double().cpu().numpy()[None], pts[None], np.array([n]))[0]
    y = torch.as_tensor(pts[perm], dtype=torch.float32, device=dev)

    pm = prior_mean
    if isinstance(prior_mean, Mapping):
        init = copy.deepcopy(model)
        init.load_state_dict({**model.state_dict(), **{k: v for k, v in prior_mean.items()}})
        pm = {k: v.detach().clone() for k, v in PatchChart(init, patch).named_parameters() if v.requires_grad}
    # The evidence needs m - k > 0 directions that only noise explains (else beta is not
    # identifiable): keep at most half the measurements.
    p = sum(t.numel() for t in chart.parameters() if t.requires_grad)
    k = min(3 * n // 2, p) if rank is None else rank
    lap = linearised_laplace(chart, uv, y, rank=k, prior_mean=pm, beta=beta, method=method, seed=seed)
    return ChartUncertainty(patch=patch, mean=lap.mean, std=lap.std, std_noisy=lap.std_noisy, target=y,
                            perm=perm, world_scale=float(cover.scale[patch]), laplace=lap)
