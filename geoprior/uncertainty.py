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
import math
import time
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from geoprior.charts import ChartPrior
from geoprior.cover import Cover
from geoprior.emd import exact_assignment
from shared.uncertainty import LinearisedUncertainty, linearised_laplace

__all__ = ["PatchChart", "ChartUncertainty", "chart_uncertainty", "SurfaceUncertainty", "surface_uncertainty",
           "match_dense_points", "normal_distances", "reconstruction_uncertainty", "UNCERTAINTY_FILES"]


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


# =========================================================================== every chart, batched
# The linearised Laplace posterior of every chart at once.  The charts share no parameters, so
# the posterior of the whole ChartPrior factorises into one Gaussian per chart; blocks of charts
# are handled as batched tensors (one einsum / bmm / eigh per block), never one chart at a time.

_LOG_ALPHA_GRID = (-15.0, 25.0, 81)  # coarse search of log alpha (step 0.5) before golden refinement


@dataclass
class _ChartTensors:
    """Parameters of a block of ``B`` charts, float64: ``W[l]`` ``(B, d_l, d_{l+1})``, ``c[l]``
    ``(B, 1, d_{l+1})``, ``A`` ``(B, 2, 3)``, ``b`` ``(B, 1, 3)``; ``affine``: whether ``A, b``
    are parameters (``plane_init``) or fixed."""

    W: list[Tensor]
    c: list[Tensor]
    A: Tensor
    b: Tensor
    affine: bool
    act: nn.Module

    @classmethod
    def of(cls, model: ChartPrior, ids: Tensor, dtype: torch.dtype = torch.float64) -> _ChartTensors:
        take = lambda t: t.detach()[ids].to(dtype)  # noqa: E731 - a one-line selector
        return cls([take(w) for w in model.mlp.weights], [take(c) for c in model.mlp.biases], take(model.A),
                   take(model.b), bool(model.A.requires_grad), model.mlp.act)

    @property
    def n_params(self) -> int:
        p = sum(w[0].numel() + c[0].numel() for w, c in zip(self.W, self.c))
        return p + (self.A[0].numel() + self.b[0].numel() if self.affine else 0)

    def flat(self) -> Tensor:
        """``theta*`` per chart ``(B, p)``, in the order of :func:`_assemble`'s columns."""
        parts = [t.flatten(1) for pair in zip(self.W, self.c) for t in pair]
        if self.affine:
            parts += [self.A.flatten(1), self.b.flatten(1)]
        return torch.cat(parts, 1)


def _backprop(ct: _ChartTensors, uv: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor], Tensor]:
    """Chart outputs and their exact derivatives, analytically (ReLU-type MLP + affine part).

    ``phi(u) = z_L + h_0 A + b`` with ``h_0 = u - 1/2``, ``z_l = h_{l-1} W_l + c_l``,
    ``h_l = act(z_l)``.  Back-propagating the three output coordinates ``k`` gives
    ``delta_l[k] = d phi_k / d z_l`` (``delta_L = I_3``, ``delta_{l-1} = (delta_l W_l^T) act'(z_{l-1})``),
    so ``d phi_k / d W_l[a, c] = h_{l-1}[a] delta_l[k, c]`` and ``d phi_k / d c_l = delta_l[k]``.
    Input ``uv`` ``(B, N, 2)``; returns ``phi`` ``(B, N, 3)``, ``hs = [h_0..h_{L-1}]``,
    ``deltas = [delta_1..delta_L]`` (``(B, N, 3, d_l)``) and ``D = d phi / d u`` ``(B, N, 3, 2)``.
    """
    h = uv.to(ct.A.dtype) - 0.5
    hs, slopes = [h], []
    L = len(ct.W)
    for i in range(L):
        z = torch.baddbmm(ct.c[i], h, ct.W[i])
        if i < L - 1:
            with torch.enable_grad():  # act' elementwise, whatever the activation
                zz = z.detach().requires_grad_(True)
                a = ct.act(zz)
                (slope,) = torch.autograd.grad(a.sum(), zz)
            h = a.detach()
            hs.append(h)
            slopes.append(slope)
        else:
            h = z
    out = h + torch.baddbmm(ct.b, hs[0], ct.A)
    B, N = uv.shape[:2]
    delta = torch.eye(3, dtype=out.dtype, device=out.device).expand(B, N, 3, 3)
    deltas = [delta]
    for i in range(L - 1, 0, -1):
        delta = torch.einsum("bnkc,bac->bnka", delta, ct.W[i]) * slopes[i - 1][:, :, None, :]
        deltas.insert(0, delta)
    D = torch.einsum("bnkc,bac->bnka", deltas[0], ct.W[0]) + ct.A.transpose(1, 2)[:, None]
    return out, hs, deltas, D


def _assemble(ct: _ChartTensors, hs: list[Tensor], deltas: list[Tensor], E: Tensor) -> Tensor:
    """Jacobian rows ``E^T d phi / d theta`` ``(B, N, R, p)`` for output weights ``E`` ``(B, N, R, 3)``.

    ``E = I_3`` gives the full Jacobian of the three coordinates; ``E = n^T`` (``R = 1``) the
    gradient of the displacement along a unit normal ``n``, without forming the full one.
    """
    cols = []
    for h, delta in zip(hs, deltas):
        rho = torch.einsum("bnrk,bnkc->bnrc", E, delta)
        cols.append(torch.einsum("bna,bnrc->bnrac", h, rho).flatten(3))
        cols.append(rho)
    if ct.affine:
        cols.append(torch.einsum("bnj,bnrc->bnrjc", hs[0], E).flatten(3))
        cols.append(E)
    return torch.cat(cols, 3)


def _unit_normals(D: Tensor) -> Tensor:
    """Unit normals ``d phi/du x d phi/dv / |.|`` ``(B, N, 3)`` from ``D`` ``(B, N, 3, 2)``."""
    n = torch.linalg.cross(D[..., 0], D[..., 1], dim=-1)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-300)


def _evidence_terms(log_alpha: Tensor, lam: Tensor, dp2: Tensor, support: Tensor, noise_var: Tensor) -> Tensor:
    """The part of the log evidence that depends on ``alpha``: ``-1/2 sum_j [log c_j + dp2_j / c_j]``,
    ``c_j = lambda_j / alpha + 1/beta`` over the support; ``log_alpha`` ``(B,)`` or ``(B, G)``."""
    la = log_alpha if log_alpha.ndim == 2 else log_alpha[:, None]
    c = lam[:, None, :] * torch.exp(-la)[..., None] + noise_var[:, None, None]
    f = -0.5 * (support[:, None, :] * (torch.log(c) + dp2[:, None, :] / c)).sum(-1)
    return f if log_alpha.ndim == 2 else f[:, 0]


def _fit_alpha(lam: Tensor, dp2: Tensor, support: Tensor, noise_var: Tensor, iterations: int = 30) -> Tensor:
    """``alpha`` per chart maximising the evidence at fixed ``beta`` (grid in log alpha, then
    golden-section search in the best grid cell; all charts of the block at once)."""
    lo, hi, n = _LOG_ALPHA_GRID
    grid = torch.linspace(lo, hi, n, dtype=lam.dtype, device=lam.device)
    f = _evidence_terms(grid.expand(lam.shape[0], n), lam, dp2, support, noise_var)
    best = grid[f.argmax(1)]
    step = (hi - lo) / (n - 1)
    a, b = best - step, best + step
    g = (math.sqrt(5) - 1) / 2
    for _ in range(iterations):
        x1, x2 = b - g * (b - a), a + g * (b - a)
        left = _evidence_terms(x1, lam, dp2, support, noise_var) >= _evidence_terms(x2, lam, dp2, support, noise_var)
        a, b = torch.where(left, a, x1), torch.where(left, x2, b)
    return torch.exp(0.5 * (a + b))


@dataclass
class _BlockPosterior:
    """Per-chart Gaussian posteriors of a block: ``Sigma_i = V_i diag(1/(beta_i lambda + alpha_i)) V_i^T
    + alpha_i^-1 (I - V_i V_i^T)`` with ``V`` ``(B, p, r)`` the right singular vectors of ``J``
    (zero columns off the support).  In measurement space ``V = J^T U diag(lambda)^-1/2`` is
    not formed: ``J`` ``(B, m, p)`` and ``U`` ``(B, m, r)`` are kept, and ``g^T V = (g J^T) U
    lambda^-1/2`` costs ``Q m (p + r)`` instead of the ``m p r`` of forming ``V``."""

    lam: Tensor
    alpha: Tensor
    beta: Tensor
    log_evidence: Tensor
    rank: Tensor
    V: Tensor | None = None
    J: Tensor | None = None
    U: Tensor | None = None

    def variance(self, g: Tensor) -> Tensor:
        """``g^T Sigma g`` for gradients ``g`` ``(B, Q, p)``: ``(B, Q)`` (patch units squared)."""
        if self.V is not None:
            proj = torch.bmm(g, self.V)  # (B, Q, r)
        else:
            proj = torch.bmm(torch.bmm(g, self.J.transpose(1, 2)), self.U) / self.lam.clamp_min(1e-300).sqrt()[:, None]
        a, b = self.alpha[:, None, None], self.beta[:, None, None]
        seen = (proj.pow(2) / (b * self.lam[:, None, :] + a)).sum(-1)
        unseen = (g.pow(2).sum(-1) - proj.pow(2).sum(-1)).clamp_min(0) / self.alpha[:, None]
        return seen + unseen


def _block_posterior(ct: _ChartTensors, uv: Tensor, y: Tensor, mask: Tensor, beta: Tensor) -> _BlockPosterior:
    """Linearised Laplace posterior of each chart of a block with the matched targets as data.

    Model: ``y = phi_theta(u) + eps``, ``eps ~ N(0, beta^-1 I_3n)``, ``theta ~ N(0, alpha^-1 I_p)``,
    linearised at ``theta*``: the data of chart ``i`` are its ``m_i = 3 n_i`` matched
    coordinates, ``J_i`` ``(m_i, p)`` its Jacobian and ``d_i = y_i - phi*(u_i) + J_i theta*_i``
    the linearised residual at the prior mean 0.  ``J J^T = U diag(lambda) U^T`` (or
    ``J^T J = V diag(lambda) V^T``, whichever Gram matrix is smaller) gives the evidence in
    closed form (:func:`shared.uncertainty.log_evidence` with the full spectrum), maximised
    over ``alpha`` at the given ``beta``.  ``uv`` ``(B, N, 2)``, ``y`` ``(B, N, 3)``, ``mask``
    ``(B, N)``, ``beta`` ``(B, 3)``: the noise precision of each patch-frame coordinate (patch
    units; the third is along the patch normal).  The rows of ``J`` and ``d`` are whitened by
    ``sqrt(beta)``, so the posterior below has unit noise precision and the evidence gains
    ``1/2 sum_rows log beta_row``.
    """
    out, hs, deltas, _ = _backprop(ct, uv)
    B, N = mask.shape
    white = beta.sqrt()[:, None, :] * mask[..., None]  # (B, N, 3): whitening and padding mask
    J = _assemble(ct, hs, deltas, torch.diag_embed(white))  # rows E = diag(sqrt(beta)): whitened J
    J = J.reshape(B, 3 * N, -1)
    m = 3 * mask.sum(1).to(out.dtype)
    log_det_white = (torch.log(beta) * mask.sum(1, keepdim=True)).sum(1) * 0.5
    d = ((y - out) * white).reshape(B, 3 * N) + torch.einsum("bmp,bp->bm", J, ct.flat())
    p = J.shape[2]
    if 3 * N <= p:  # measurement space: J J^T = U diag(lambda) U^T, V = J^T U / sqrt(lambda)
        lam, U = _eigh(torch.bmm(J, J.transpose(1, 2)))
        lam = lam.clamp_min(0)
        support = lam > lam[:, -1:] * 1e-10
        dp2 = torch.einsum("bmr,bm->br", U, d).pow(2)
        V = None
    else:  # parameter space: J^T J = V diag(lambda) V^T, u_j^T d = v_j^T J^T d / sqrt(lambda_j)
        lam, V = _eigh(torch.bmm(J.transpose(1, 2), J))
        lam = lam.clamp_min(0)
        support = lam > lam[:, -1:] * 1e-10
        dp2 = torch.einsum("bpr,bp->br", V, torch.einsum("bmp,bm->bp", J, d)).pow(2) / lam.clamp_min(1e-300)
    # eigh sorts ascending, so the support is the trailing columns: keep only as many as the
    # largest support in the block (the numerical rank of a fitted chart is often well below
    # min(3n, p)), which shrinks the query products g V accordingly.
    keep = int(support.sum(1).max())
    lam, dp2, support = lam[:, -keep:], dp2[:, -keep:], support[:, -keep:].to(out.dtype)
    if V is None:
        U = U[:, :, -keep:]
    else:
        V = V[:, :, -keep:]
    dp2 = dp2 * support
    if V is None:  # off the support the direction is unobserved: drop it from the projections
        U = U * support[:, None, :]
    else:
        V = V * support[:, None, :]
    ones = torch.ones(B, dtype=out.dtype, device=out.device)  # whitened: unit noise precision
    alpha = _fit_alpha(lam, dp2, support, ones)
    r = support.sum(1)
    rest = (d.pow(2).sum(1) - dp2.sum(1)).clamp_min(0)
    logev = (_evidence_terms(torch.log(alpha), lam, dp2, support, ones)
             - 0.5 * (rest + m * math.log(2 * math.pi)) + log_det_white)
    if V is None:
        return _BlockPosterior(lam, alpha, ones, logev, r, J=J, U=U)
    return _BlockPosterior(lam, alpha, ones, logev, r, V=V)


def _eigh(G: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.linalg.eigh`` of a batch ``(B, n, n)`` of symmetric matrices (ascending eigenvalues).

    On a CPU the matrices are decomposed side by side, one LAPACK thread each, on a thread
    pool (torch releases the interpreter lock): threaded ``syevd`` on one matrix at a time
    was 5-25x slower on a loaded 2-core machine (B = 8, n = 558: 55 ms per matrix this way,
    0.23-1.4 s batched with 2 threads).  On a GPU the batch goes in one call.
    """
    if G.device.type != "cpu" or G.shape[0] == 1:
        return torch.linalg.eigh(G)
    from shared.threads import map_parallel, thread_limits

    with thread_limits(torch_threads=1):
        parts = map_parallel(torch.linalg.eigh, list(G.unbind(0)))
    return torch.stack([w for w, _ in parts]), torch.stack([v for _, v in parts])


def _noise_precisions(x: np.ndarray, y: np.ndarray, cover: Cover, noise: str) -> np.ndarray:
    """``beta_ik`` ``(P, 3)``, patch units, from the matched-point residual ``r = y - phi*(u)`` of the fit.

    ``"chart"``: ``beta_i = 3 n_i / ||r_i||^2`` for all three coordinates (each chart's own
    misfit); ``"normal"``: per chart, ``n_i / sum r_z^2`` along the patch normal and
    ``2 n_i / sum (r_x^2 + r_y^2)`` in the tangent plane (the tangential residual is mostly the
    sampling mismatch of the matching, not noise); ``"pooled"``: one noise level for the whole
    scan in the cloud's frame, ``sigma^2 = sum_i s_i^2 ||r_i||^2 / sum_i 3 n_i`` (``s_i`` the patch
    scale), so ``beta_i = s_i^2 / sigma^2``.  No truth enters: this is the model's own misfit.
    """
    r2 = ((y - x) ** 2 * cover.mask[..., None]).sum(1)  # (P, 3)
    n = cover.sizes.astype(np.float64)
    tiny = 1e-30
    if noise == "chart":
        beta = 3 * n / np.maximum(r2.sum(1), tiny)
        return np.repeat(beta[:, None], 3, axis=1)
    if noise == "normal":
        tangent = 2 * n / np.maximum(r2[:, :2].sum(1), tiny)
        return np.stack([tangent, tangent, n / np.maximum(r2[:, 2], tiny)], axis=1)
    if noise == "pooled":
        sigma2 = float((cover.scale ** 2 * r2.sum(1)).sum() / (3 * n.sum()))
        return np.repeat((cover.scale ** 2 / max(sigma2, 1e-300))[:, None], 3, axis=1)
    raise ValueError(f"noise must be 'chart', 'normal' or 'pooled', got {noise!r}")


def match_dense_points(model: ChartPrior, cover: Cover, points: np.ndarray, density: int, seed: int,
                       tolerance: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Chart and parameter ``(patch (M,), uv (M, 2))`` of each dense output point.

    :func:`geoprior.sampling.sample_charts` evaluates chart ``i`` at the jittered parameters
    of :func:`geoprior.sampling.dense_samples` (``numpy.random.default_rng(seed)``, its first
    draw) and keeps a subset; these candidates are regenerated here and each point (in the
    cover's frame, ``(M, 3)``) is matched to the nearest candidate, which must lie within
    ``tolerance`` (of the unit bounding-box diagonal: float32 rounding is ~1e-7) -- else the
    points are not this model's samples and a ``ValueError`` says so.
    """
    from scipy.spatial import cKDTree

    from geoprior.sampling import dense_samples

    uv, mask = dense_samples(cover, density, np.random.default_rng(seed))
    dev = next(model.parameters()).device
    with torch.no_grad():
        local = model(torch.as_tensor(uv, dtype=torch.float32, device=dev)).double().cpu().numpy()
    world = cover.to_world(local)
    pid = np.broadcast_to(np.arange(cover.n_patches)[:, None], mask.shape)[mask]
    cand_uv = uv[mask]
    dist, idx = cKDTree(world[mask]).query(np.asarray(points, dtype=np.float64), k=1)
    if len(dist) and float(dist.max()) > tolerance:
        raise ValueError(f"{int((dist > tolerance).sum())} of {len(dist)} dense points are not samples of these charts "
                         f"(farthest {float(dist.max()):.2e} from every sample; density={density}, seed={seed} must "
                         "be those of the reconstruction)")
    return pid[idx], cand_uv[idx]


@dataclass
class SurfaceUncertainty:
    """Output of :func:`surface_uncertainty`: ``std`` ``(M,)`` predictive std of each dense point
    along its normal (world units), ``patch`` ``(M,)`` its chart, and per chart ``(P,)``:
    ``alpha``, ``beta`` ``(P, 3)`` (noise precision per patch-frame coordinate, patch units; the
    third along the normal), ``noise_std`` (``beta_normal^-1/2`` in world units), ``rank`` of
    ``J``, ``log_evidence``; ``n_params`` per chart; ``timings`` (s)."""

    std: np.ndarray
    patch: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    noise_std: np.ndarray
    rank: np.ndarray
    log_evidence: np.ndarray
    n_params: int
    noise: str
    timings: dict

    def summary(self) -> dict:
        q = lambda a: {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max())}  # noqa: E731
        return {"n_points": int(len(self.std)), "n_charts": int(len(self.alpha)), "n_params_per_chart": self.n_params,
                "noise": self.noise, **({"mean_std": float(self.std.mean()), "median_std": float(np.median(self.std)),
                                         "max_std": float(self.std.max())} if len(self.std) else {}),
                "noise_std": q(self.noise_std), "alpha": q(self.alpha),
                "rank": q(self.rank), "timings_s": dict(self.timings)}


def surface_uncertainty(model: ChartPrior, cover: Cover, patch: np.ndarray, uv: np.ndarray, *,
                        frame_scale: float = 1.0, noise: str = "normal", memory_mb: float = 1024.0,
                        progress: bool = False) -> SurfaceUncertainty:
    """Predictive std along the normal of chart points ``phi_{patch_k}(uv_k)``, every chart at once.

    Each chart ``i`` gets the linearised Laplace posterior of :func:`_block_posterior`:
    data its ``n_i`` patch points matched to its samples by the exact assignment at the fitted
    charts (``m_i = 3 n_i``), noise precision ``beta_i`` from the matched-point residual
    (:func:`_noise_precisions`, ``noise``; the default ``"normal"`` estimates it along the patch
    normal apart from the tangent plane), prior ``N(0, alpha_i^-1 I)`` with ``alpha_i`` by
    marginal likelihood.  The std of query ``k`` (chart ``i``, normal ``n_k`` of the chart at
    ``uv_k``) is ``sqrt(g_k^T Sigma_i g_k)`` with ``g_k = d (n_k . phi_i(uv_k)) / d theta_i``,
    times ``cover.scale[i] * frame_scale`` (patch units -> world units).

    ``patch`` ``(M,)`` and ``uv`` ``(M, 2)``: the queries (e.g. from :func:`match_dense_points`).
    Charts are processed in blocks, batched, whose float64 work arrays (``J`` ``(3K, p)``, the
    Gram matrix and the query gradients per chart) fit in about ``memory_mb``.  Cost per chart
    ``O(3K p min(3K, p))`` (the Gram matrix) plus ``O(min(3K, p)^3)`` (its eigendecomposition)
    plus ``O(Q p r)`` for ``Q`` queries.
    """
    if not isinstance(model, ChartPrior):
        raise ValueError(f"surface_uncertainty needs a geoprior.charts.ChartPrior, got {type(model).__name__}")
    if model.n_patches != cover.n_patches:
        raise ValueError(f"the model has {model.n_patches} charts but the cover {cover.n_patches} patches")
    patch, uv = np.asarray(patch, dtype=np.int64), np.asarray(uv, dtype=np.float64)
    if uv.shape != (len(patch), 2) or (len(patch) and not 0 <= patch.min() <= patch.max() < cover.n_patches):
        raise ValueError(f"queries must be patch ids in [0, {cover.n_patches}) (M,) and uv (M, 2), got "
                         f"{patch.shape} and {uv.shape}")
    timings: dict = {}
    t0 = time.perf_counter()
    dev = next(model.parameters()).device
    with torch.no_grad():
        x = model(torch.as_tensor(cover.uv, dtype=torch.float32, device=dev)).double().cpu().numpy()
    perm = exact_assignment(x, cover.local, cover.sizes)
    y = np.take_along_axis(cover.local, perm[..., None], axis=1)
    beta = _noise_precisions(x, y, cover, noise)
    timings["matching_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    stats, std = _posterior_blocks(model, cover, y, beta, patch, uv, memory_mb, progress)
    std *= frame_scale
    timings["posterior_s"] = time.perf_counter() - t1
    timings["total_s"] = time.perf_counter() - t0
    return SurfaceUncertainty(std=std, patch=patch, alpha=stats["alpha"], beta=beta,
                              noise_std=beta[:, 2] ** -0.5 * cover.scale * frame_scale, rank=stats["rank"],
                              log_evidence=stats["log_evidence"], n_params=stats["n_params"], noise=noise,
                              timings=timings)


def _posterior_blocks(model: ChartPrior, cover: Cover, y: np.ndarray, beta: np.ndarray, patch: np.ndarray,
                      uv: np.ndarray, memory_mb: float, progress: bool) -> tuple[dict, np.ndarray]:
    """Posterior of every chart and the std of the queries (patch units x ``cover.scale``), block by block."""
    P, sizes = cover.n_patches, cover.sizes
    dev = next(model.parameters()).device
    order = np.argsort(sizes, kind="stable")  # similar sizes share a block: little padding
    by_patch = np.argsort(patch, kind="stable")
    starts = np.searchsorted(patch[by_patch], np.arange(P + 1))
    counts = np.diff(starts)
    p = _ChartTensors.of(model, torch.arange(1, device=dev)).n_params
    K, Q = int(sizes.max()), int(counts.max()) if len(patch) else 0
    per_chart = 8.0 * (3 * K * p * 2 + 2 * min(3 * K, p) ** 2 + p * min(3 * K, p) + 3 * Q * p)
    block = int(max(1, min(P, memory_mb * 2 ** 20 // per_chart)))
    alpha, rank, logev = np.zeros(P), np.zeros(P), np.zeros(P)
    std = np.zeros(len(patch))
    blocks = range(0, P, block)
    if progress:
        from tqdm.auto import tqdm

        blocks = tqdm(blocks, desc=f"uncertainty ({P} charts)", leave=False)
    f64 = dict(dtype=torch.float64, device=dev)
    for s in blocks:
        ids = order[s:s + block]
        kb = int(sizes[ids].max())
        ct = _ChartTensors.of(model, torch.as_tensor(ids, device=dev))
        post = _block_posterior(ct, torch.as_tensor(cover.uv[ids, :kb], **f64), torch.as_tensor(y[ids, :kb], **f64),
                                torch.as_tensor(cover.mask[ids, :kb], **f64), torch.as_tensor(beta[ids], **f64))
        alpha[ids], rank[ids] = post.alpha.cpu().numpy(), post.rank.cpu().numpy()
        logev[ids] = post.log_evidence.cpu().numpy()
        qb = int(counts[ids].max())
        if qb == 0:
            continue
        rows = np.zeros((len(ids), qb), dtype=np.int64)
        valid = np.arange(qb)[None, :] < counts[ids][:, None]
        rows[valid] = np.concatenate([by_patch[starts[i]:starts[i + 1]] for i in ids])
        _, hs, deltas, D = _backprop(ct, torch.as_tensor(uv[rows], **f64))
        g = _assemble(ct, hs, deltas, _unit_normals(D)[:, :, None, :])[:, :, 0]
        var = post.variance(g).cpu().numpy()
        std[rows[valid]] = (np.sqrt(var) * cover.scale[ids][:, None])[valid]
    return {"alpha": alpha, "rank": rank, "log_evidence": logev, "n_params": p}, std


#: the files :func:`reconstruction_uncertainty` writes (the last is its metrics file)
UNCERTAINTY_FILES = ("dense_std.ply", "std.png", "uncertainty.json")


def normal_distances(points: np.ndarray, normals: np.ndarray, vertices: np.ndarray,
                     faces: np.ndarray) -> tuple[np.ndarray, int]:
    """Distance from each point ``(M, 3)`` to a reference mesh along its unit normal ``(M, 3)``.

    Rays are cast both ways, ``p + t n`` and ``p - t n`` (open3d's ``RaycastingScene``), and
    the nearer hit is kept; a point whose line misses the mesh (beyond a boundary or a hole)
    gets its closest-point distance instead.  Returns the distances ``(M,)`` and the number of
    those fallbacks.
    """
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(vertices, dtype=np.float32)),
                        o3d.core.Tensor(np.asarray(faces, dtype=np.uint32)))
    p = np.asarray(points, dtype=np.float32)
    n = np.asarray(normals, dtype=np.float32)
    n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    hits = [scene.cast_rays(o3d.core.Tensor(np.hstack([p, s * n])))["t_hit"].numpy() for s in (1.0, -1.0)]
    dist = np.minimum(*hits).astype(np.float64)
    missed = ~np.isfinite(dist)
    if missed.any():
        dist[missed] = scene.compute_distance(o3d.core.Tensor(p[missed])).numpy()
    return dist, int(missed.sum())


def reconstruction_uncertainty(result, reference: tuple[np.ndarray, np.ndarray] | None = None, *,
                               noise: str = "normal", memory_mb: float = 1024.0, progress: bool = False):
    """Per-point std along the normal of a :class:`geoprior.DeepGeometricPrior` reconstruction.

    ``result``: what ``DeepGeometricPrior.reconstruct`` returned (its charts ``result.fit.model``
    after the consistency refit, the ``cover``, the dense cloud and its frame).  Every dense
    point is matched to its chart and parameter (:func:`match_dense_points`) and gets the
    std of :func:`surface_uncertainty` (world units).  With ``reference`` (vertices, faces of a
    clean surface, world units) the calibration is reported (:func:`shared.uncertainty.coverage`):
    the shares of points whose distance to the reference along their normal
    (:func:`normal_distances`) lies within 1 and 2 std, and the correlation of std with that
    distance.  Returns a :class:`shared.result.Result` whose files are ``dense_std.ply`` (the
    dense cloud with a float ``std`` vertex property), ``std.png`` and, as metrics file,
    ``uncertainty.json``.
    """
    from geoprior.ply import write_ply
    from geoprior.render import render_scalar_cloud
    from shared.result import Result
    from shared.uncertainty import coverage

    frame = result.info["frame"]
    centre, scale = np.asarray(frame["centre"], dtype=np.float64), float(frame["scale"])
    points, normals = result.arrays["points"], result.arrays["normals"]
    cover, model = result.arrays["cover"], result.fit.model
    t0 = time.perf_counter()
    pid, uv = match_dense_points(model, cover, (points - centre) / scale, result.config["density"],
                                 result.config["seed"])
    su = surface_uncertainty(model, cover, pid, uv, frame_scale=scale, noise=noise, memory_mb=memory_mb,
                             progress=progress)
    su.timings["total_s"] = time.perf_counter() - t0
    metrics = su.summary()
    info = {"note": "std of each dense point along its normal (world units): linearised Laplace posterior of its "
                    "chart, zero-mean Gaussian weight prior (alpha by marginal likelihood), noise precision from the "
                    f"chart's own matched-point residual (noise={noise!r}); epistemic, without the noise of a new "
                    "scan"}
    error = None
    if reference is not None:
        error, missed = normal_distances(points, normals, *reference)
        metrics["calibration"] = {**coverage(error, su.std), "rays_missed": missed,
                                  "error": "distance to the reference along the point's normal"}
    files = {"dense_std.ply": lambda path: write_ply(path, points, normals, scalars={"std": su.std}),
             "std.png": lambda path: render_scalar_cloud(path, points, su.std, "predicted std", error=error,
                                                         title="dense cloud: predicted std along the normal")}
    return Result("geoprior-uncertainty", arrays={"std": su.std, "patch": su.patch, "error": error},
                  metrics=metrics, timings=dict(su.timings), config={"noise": noise, "prior_mean": "zero"},
                  info=info, files=files)
