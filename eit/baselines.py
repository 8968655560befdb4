"""Classical reconstructions on the same forward model: the KTC reference and Gauss-Newton.

One-step linearised difference reconstruction (the KTC organisers' reference)::

    (J^T W J + L^T L) dsigma = J^T W (Uel - Uelref),     sigma = sigma_bg + dsigma

with ``J`` the Jacobian at the organisers' linearisation point, a homogeneous **1 S/m**
(their ``sigma0 = ones``; not the water level fitted to ``Uelref``, about 0.77 S/m in the
KTC tank), ``W = diag(1/s_i^2)`` the noise model of their reference code and ``L^T L =
Gamma^{-1}`` the smoothness prior.  That code calls its noise setter with ``0.05`` and
``0.01``, which it reads as *percent* (it divides by 100): its effective noise model is
``s_i = sqrt((5e-4 |Uelref_i|)^2 + (1e-4 max |Uelref|)^2)``, 1/100 of the stated 5% + 1%
(:func:`eit.ktc.noise_std`), so the data weigh 10^4 times more against the prior than the
stated model suggests.  Their segmentation is three-class Otsu on the change ``dsigma``
interpolated to the 256 x 256 pixel grid, with the pixels outside the tank set to 0 and
counted in the histogram (``segment_region="square"`` of :func:`eit.result.conductivity_metrics`).
With all three (the defaults of :class:`OneStep`) the four training targets score 0.696 /
0.618 / 0.395 at levels 1 / 4 / 7 against the organisers' published 0.696 / 0.621 / 0.396.
Linearised at the fitted water level instead (``linearisation=None``) they score 0.703 /
0.618 / 0.333, and there with the stated noise model (``noise_scale = 1``) 0.463 / 0.376 / 0.188.
The prior lives on
the cell centroids::

    Gamma_ij = a exp(-|x_i - x_j|^2 / (2 b^2)) + c delta_ij,
    a = std^2 - c,  c = 1e-9,  b = l / sqrt(2 ln 100)

(the correlation falls to 1% at the correlation length ``l = 0.115`` m; ``std = 0.05``).

Regularised Gauss-Newton on ``t = log sigma`` (positive by construction)::

    min_t  1/2 ||W^{1/2} (F(e^t) - y)||^2 + alpha' R(t)     (alpha' = alpha n for TV, see GaussNewton)

with ``R`` Tikhonov ``1/2 ||L (t - t_bg)||^2`` (the same smoothness prior, in log units) or
smoothed total variation ``sum_e |e| sqrt((t_i - t_j)^2 + eps^2)`` (:class:`eit.tv.MeshTV`,
lagged diffusivity: the TV Hessian is ``D^T diag(|e| / sqrt(.)) D`` at the current iterate).  Each step solves
``(J_t^T W J_t + alpha' H_R) dt = -(J_t^T W r + alpha' grad R)`` with ``J_t = J diag(sigma)``,
then backtracks on the objective.  ``y`` is the absolute data or the difference-corrected
data ``Uel - Uelref + F(sigma_bg)`` (whatever the problem holds; see :mod:`eit.problem`).

Both are :class:`shared.reconstructor.Reconstructor` objects returning a
:class:`shared.result.Result` (:mod:`eit.result`): :class:`OneStep` and
:class:`GaussNewton` (``prior="tikhonov"`` or ``"tv"``).
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import scipy.linalg as sla

from shared.reconstructor import Reconstructor
from shared.result import Result

from eit.result import conductivity_result
from eit.tv import MeshTV

__all__ = ["smoothness_prior", "prior_covariance", "OneStep", "GaussNewton", "PRIORS"]

#: the priors of :class:`GaussNewton`
PRIORS = ("tikhonov", "tv")


def smoothness_prior(points: np.ndarray, corr_length: float = 0.115, std: float = 0.05, c: float = 1e-9) -> np.ndarray:
    """Upper-triangular ``L`` with ``L^T L = Gamma^{-1}`` for the Gaussian-kernel prior (see module doc)."""
    gamma = prior_covariance(points, corr_length, std, c)
    # Gamma^{-1} = Gamma_chol^{-T} Gamma_chol^{-1}; L = chol(Gamma^{-1}) upper.
    inv = sla.cho_solve(sla.cho_factor(gamma, lower=True), np.eye(len(gamma)))
    inv = 0.5 * (inv + inv.T)
    return sla.cholesky(inv, lower=False)


def _prior_precision(problem, corr_length: float, std: float) -> np.ndarray:
    # Cached on the forward model: targets that share a mesh share the prior.
    key = ("prior", corr_length, std)
    cache = problem.model.__dict__.setdefault("_eit_inverse_cache", {})
    if key not in cache:
        L = smoothness_prior(problem.centroids, corr_length, std)
        cache[key] = L.T @ L
    return cache[key]


def prior_covariance(points: np.ndarray, corr_length: float = 0.115, std: float = 0.05, c: float = 1e-9) -> np.ndarray:
    """``Gamma`` of the smoothness prior on the given points (see the module docstring)."""
    p = np.asarray(points, dtype=np.float64)[:, :2]
    b = corr_length / np.sqrt(2 * np.log(100.0))
    d2 = np.sum((p[:, None, :] - p[None, :, :]) ** 2, axis=-1)
    return (std**2 - c) * np.exp(-d2 / (2 * b**2)) + c * np.eye(len(p))


class OneStep(Reconstructor):
    """The organisers' one-step linearised difference reconstruction (module docstring).

    Solved in the data space, ``dsigma = Gamma J^T (J Gamma J^T + W^{-1})^{-1} dU``, which
    equals ``(J^T W J + Gamma^{-1})^{-1} J^T W dU`` (push-through identity) without
    inverting ``Gamma``.  ``corr_length``, ``std``: the smoothness prior; ``noise_scale``:
    the factor on the problem's noise standard deviations, 0.01 for the organisers'
    effective noise model; ``linearisation``: the homogeneous conductivity (S/m) where
    ``J`` is taken, 1.0 as in their code, ``None`` for the problem's fitted background;
    ``segment``: the Otsu histogram's region, ``"square"`` (the whole pixel grid, zeros
    outside the tank, as they do) or ``"tank"`` (module docstring).
    """

    method = "onestep"

    def __init__(self, corr_length: float = 0.115, std: float = 0.05, noise_scale: float = 0.01,
                 linearisation: float | None = 1.0, segment: str = "square") -> None:
        self.corr_length = corr_length
        self.std = std
        self.noise_scale = noise_scale
        self.linearisation = linearisation
        self.segment = segment

    def reconstruct(self, problem) -> Result:
        if problem.dy is None:
            raise ValueError("the one-step difference method needs reference data (Uel - Uelref)")
        t0 = time.perf_counter()
        if self.linearisation is not None and not self.linearisation > 0:
            raise ValueError(f"the linearisation point must be a conductivity > 0 S/m, got {self.linearisation}")
        m = problem.mask & np.isfinite(problem.dy)
        level = problem.sigma_bg if self.linearisation is None else float(self.linearisation)
        J = problem.model.jacobian(np.full(problem.n_cells, level))[m]
        cache = problem.model.__dict__.setdefault("_eit_inverse_cache", {})
        key = ("cov", self.corr_length, self.std)
        if key not in cache:
            cache[key] = prior_covariance(problem.centroids, self.corr_length, self.std)
        gamma = cache[key]
        GJt = gamma @ J.T  # (C, m)
        S = J @ GJt
        S[np.diag_indices_from(S)] += (self.noise_scale * problem.noise[m]) ** 2
        dsigma = GJt @ sla.solve(S, problem.dy[m], assume_a="pos")
        # The change is added to the water level (the conductivity shown), wherever J was taken.
        sigma = problem.sigma_bg + dsigma
        elapsed = time.perf_counter() - t0
        # dsigma may push sigma below 0 (a linearisation): score its linear change as the organisers do.
        return conductivity_result(problem, sigma, self.method, elapsed, contrast="linear", segment_region=self.segment,
                                   config=self.get_params())


def _objective(problem, t, W, reg, alpha):
    sigma = np.exp(t)
    sol = problem.model.solve(sigma)
    r = np.where(problem.mask, sol.data - np.nan_to_num(problem.y), 0.0)
    return 0.5 * float(np.sum(W * r * r)) + alpha * reg(t), sol, r


class GaussNewton(Reconstructor):
    """Regularised Gauss-Newton on ``log sigma`` with Tikhonov or smoothed TV (module docstring).

    ``prior``: ``"tikhonov"`` (the smoothness prior) or ``"tv"``.  TV enters as
    ``alpha * n * TV`` with ``n`` the number of measurements used, so that ``alpha`` weighs
    it against the *mean* weighted misfit; ``alpha`` defaults to 4 (the best of 1e-4, 4 and
    40 on KTC targets 1-2 at level 1).  Tikhonov enters as ``alpha * R`` with default 1: the
    maximum a posteriori estimate under the Gaussian prior.  ``eps`` is the TV smoothing in
    log units; ``std`` the prior standard deviation of ``log sigma`` (Tikhonov);
    ``iterations`` the most Gauss-Newton steps, ``tol`` the relative decrease of the
    objective below which it stops.
    """

    def __init__(self, prior: str = "tv", alpha: float | None = None, iterations: int = 6, eps: float = 1e-2,
                 corr_length: float = 0.115, std: float = 0.5, tol: float = 1e-4) -> None:
        self.prior = prior
        self.alpha = alpha
        self.iterations = iterations
        self.eps = eps
        self.corr_length = corr_length
        self.std = std
        self.tol = tol

    @property
    def method(self) -> str:
        return f"gn-{self.prior}"

    def _regulariser(self, problem, t_bg: float) -> tuple[Callable, Callable]:
        """``R(t)`` and ``t -> (grad R, Hessian of R)`` of the chosen prior."""
        if self.prior == "tikhonov":
            P = _prior_precision(problem, self.corr_length, self.std)

            def reg(tt):
                d = tt - t_bg
                return 0.5 * float(d @ P @ d)

            return reg, lambda tt: (P @ (tt - t_bg), P)
        tv = MeshTV(*problem.adjacency, eps=self.eps, n_cells=problem.n_cells)
        return tv.value, tv.gradient_hessian

    def reconstruct(self, problem) -> Result:
        if self.prior not in PRIORS:
            raise ValueError(f"the Gauss-Newton prior must be 'tikhonov' or 'tv', got {self.prior!r}")
        t_start = time.perf_counter()
        W = np.where(problem.mask, 1.0 / problem.noise**2, 0.0)
        t_bg = np.log(problem.sigma_bg)
        reg, reg_grad_hess = self._regulariser(problem, t_bg)
        alpha = self.alpha if self.alpha is not None else (4.0 if self.prior == "tv" else 1.0)
        alpha_n = alpha * int(problem.mask.sum()) if self.prior == "tv" else alpha
        t, history = self._iterate(problem, np.full(problem.n_cells, t_bg), t_bg, W, reg, reg_grad_hess, alpha_n)
        elapsed = time.perf_counter() - t_start
        return conductivity_result(problem, np.exp(t), self.method, elapsed, config=self.get_params(),
                                   info={"history": history}, alpha=float(alpha),
                                   iterations=len(history["objective"]))

    def _iterate(self, problem, t, t_bg, W, reg, reg_grad_hess, alpha_n) -> tuple[np.ndarray, dict]:
        """Gauss-Newton steps with backtracking from ``t``; the last iterate and the history."""
        history: dict = {"objective": [], "chi2": []}
        f, sol, r = _objective(problem, t, W, reg, alpha_n)
        for _ in range(self.iterations):
            J = problem.model.jacobian(sol) * np.exp(t)[None, :]  # d data / d log sigma
            JtW = J.T * W[None, :]
            H = JtW @ J
            g_reg, H_reg = reg_grad_hess(t)
            history["objective"].append(f)
            history["chi2"].append(float(np.sum(W * r * r) / problem.mask.sum()))
            grad = JtW @ r + alpha_n * g_reg
            step = -sla.solve(H + alpha_n * np.asarray(H_reg), grad, assume_a="sym")
            # Backtracking on the objective (GN steps can overshoot in strongly nonlinear EIT).
            lam, accepted = 1.0, False
            for _ in range(8):
                t_new = np.clip(t + lam * step, t_bg - 8, t_bg + 8)
                f_new, sol_new, r_new = _objective(problem, t_new, W, reg, alpha_n)
                if f_new < f:
                    accepted = True
                    break
                lam *= 0.5
            if not accepted:
                break
            rel = (f - f_new) / max(abs(f), 1e-30)
            t, f, sol, r = t_new, f_new, sol_new, r_new
            if rel < self.tol:
                break
        return t, history
