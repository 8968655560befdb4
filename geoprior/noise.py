"""Local noise levels of a patch cover, and a chart's residual along the surface normal.

Both feed the per-chart discrepancy stopping rule (:class:`shared.stopping.MemberDiscrepancy`,
``DeepGeometricPrior(stopping="discrepancy")``): chart ``i`` stops once its residual along
the normal reaches its patch's noise level, ``r_i <= tau sigma_i``.  No clean surface enters.

**Noise level** (:func:`patch_noise`).  In its PCA frame (:mod:`geoprior.cover`; axis 2 is
the patch normal) a patch is a graph ``z = h(x, y)`` over its tangent plane.  A
least-squares polynomial height field ``q`` of degree ``d`` (6 coefficients for the
quadratic ``d = 2``) has residuals ``e_j = z_j - q(x_j, y_j)``.  A displacement ``s`` along
the surface normal shows up in the height as ``s sqrt(1 + |grad h|^2)``, so the residual is
taken along the fitted normal, ``e_j / sqrt(1 + |grad q(x_j, y_j)|^2)``, and its dof-corrected
mean square ``sum_j e_j^2 / (1 + |grad q|^2) / (n - m)`` (``m`` coefficients) is unbiased for
Gaussian normal noise on a surface that ``q`` represents.  Why this estimate:

* a quadratic is the surface's second-order Taylor expansion, so on a patch small against
  its curvature radii the misfit is the noise alone; the networks' own residual, by
  contrast, depends on how far the fit has gone (that is what is being stopped);
* it is linear least squares: one batched ``m x m`` solve per patch, no iteration;
* where the patch is not a graph of low degree (a sharp edge, a crease, high curvature
  against the patch size) the residual carries the model error too and overestimates the
  noise.  The noise of a scan varies slowly over the surface while such features are
  thin, so each patch takes the **median** of the world-unit levels of itself and its
  nearest patches (``neighbours`` per fold, since a folded cover holds a copy of the
  surface per fold, within ``reach`` covering radii): a minority of edge patches does not
  move it.

Measured (estimate / true std, median [5th, 95th percentile] over the patches, 16
neighbours, overlap 1.3): plane with noise 0.01, radius 0.05, 144 patches: 0.99 [0.96,
1.02]; unit sphere with normal noise 0.005 and 0.02, radius 0.05: 1.00 [0.96, 1.04]; noisy
torus (isotropic noise 0.005 and 0.01 of the diagonal, radius 0.06, ~110 points a patch):
1.00 [0.96, 1.06] (each patch alone: [0.91, 1.12]).  Sharp edges are only partly
absorbed: on a unit cube with noise 0.005 (radius 0.05, patches 0.11 wide) the median is
1.06 but the 90th/95th percentiles are 1.9/2.1 (2.5/2.6 for the patches alone): charts
along an edge stop early.

**Residual** (:class:`NormalResidual`).  The chart's samples ``x_ij`` are matched to patch
points ``y_{i sigma_i(j)}`` by the exact EMD matching (:class:`geoprior.emd.ExactEMD`'s
``perm``).  The plain residual along the patch normal, ``(x_ij - y_{i sigma_i(j)})_z``, also
carries the tangential mismatch ``t`` of samples and points (a sampling effect, not noise)
through the curvature, ``~ t^T H t / 2``: on ``z = 0.3 (x^2 - y^2)`` with 400 points a
*perfect* chart sampled at a grid leaves 2.2 sigma at sigma = 0.005 (1.08 sigma at 0.02), so
the discrepancy level would never be reached at low noise.  The residual used here is
therefore measured relative to the patch's height field ``q``: with ``e(p) = (p_z - q(p_x,
p_y))`` the height above ``q``,

    rho_ij = (e(x_ij) - e(y_{i sigma_i(j)})) / sqrt(1 + |grad q(y_{i sigma_i(j)})|^2),

whose RMS over the chart's real points is ``r_i``.  The curvature of ``q`` cancels in the
difference, so a tangential offset only enters through the surface's departure from
``q`` (second order); for a chart on the clean surface ``rho`` is the noise along the
normal (the same perfect chart: 0.93 sigma at both levels, the RMS of that noise draw),
and for a chart that fits the noise it goes to 0.

A fitted chart's residual falls fast, then levels off near the noise level: on the saddle
above (disk of radius 1, 400 points, (32, 32, 32) charts, lr 3e-3) at about 0.97 sigma after
900 steps for sigma = 0.02, but at 1.15 sigma for 0.01 and 1.6 sigma for 0.005: the charts'
own approximation error (about 0.006 patch units there) then exceeds the noise, and such a
chart runs to the iteration cap, as it should (it is not fitting noise yet).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["cloud_noise", "PatchNoise", "monomials", "height_field", "patch_noise", "NormalResidual",
           "normal_residual"]


@dataclass
class PatchNoise:
    """Noise levels of a cover's patches and their height fields.

    ``sigma``: ``(P,)`` the robust (neighbourhood-median) noise std along the normal, patch
    units (what the charts' residuals are measured in); ``sigma_world``: the same in world
    units (``sigma * cover.scale``); ``raw_world``: ``(P,)`` each patch's own height-field
    estimate, world units (NaN when the patch has too few points); ``coef``: ``(P, m)`` the
    coefficients of each patch's height field ``q`` of degree ``degree`` (monomials of
    :func:`monomials`).
    """

    sigma: np.ndarray
    sigma_world: np.ndarray
    raw_world: np.ndarray
    coef: np.ndarray
    degree: int


def monomials(x, y, degree: int):
    """Monomials ``x^a y^b`` (``a + b <= degree``, by total degree) and their x- and
    y-derivatives, each ``(..., m)``; numpy arrays or torch tensors."""
    stack = torch.stack if isinstance(x, Tensor) else np.stack
    powers = [(a, t - a) for t in range(degree + 1) for a in range(t, -1, -1)]
    f = stack([x ** a * y ** b for a, b in powers], -1)
    fx = stack([a * x ** max(a - 1, 0) * y ** b for a, b in powers], -1)
    fy = stack([b * x ** a * y ** max(b - 1, 0) for a, b in powers], -1)
    return f, fx, fy


def height_field(local: np.ndarray, mask: np.ndarray, degree: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares height fields ``z = q_i(x, y)`` of degree ``degree`` per patch.

    ``local`` ``(P, K, 3)`` patch points in their frames, ``mask`` ``(P, K)`` real points.
    Returns the dof-corrected RMS residual along the fitted normal ``(P,)`` (patch units;
    NaN for a patch with fewer than ``m + 2`` points, ``m`` the number of coefficients) and
    the coefficients ``(P, m)``.
    """
    local = np.asarray(local, dtype=np.float64)
    w = np.asarray(mask, dtype=np.float64)
    f, fx, fy = monomials(local[..., 0], local[..., 1], degree)
    m = f.shape[-1]
    fw = f * w[..., None]
    gram = np.einsum("pkm,pkl->pml", fw, f) + 1e-10 * np.eye(m)
    coef = np.linalg.solve(gram, np.einsum("pkm,pk->pm", fw, local[..., 2])[..., None])[..., 0]
    slope2 = 1.0 + np.einsum("pkm,pm->pk", fx, coef) ** 2 + np.einsum("pkm,pm->pk", fy, coef) ** 2
    e2 = (local[..., 2] - np.einsum("pkm,pm->pk", f, coef)) ** 2 / slope2
    n = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = np.where(n >= m + 2, np.sqrt((e2 * w).sum(1) / (n - m)), np.nan)
    return rms, coef


def patch_noise(cover, neighbours: int = 16, degree: int = 2, reach: float = 3.0) -> PatchNoise:
    """Noise std along the normal of every patch of ``cover`` (:class:`geoprior.cover.Cover`).

    Each patch's height-field estimate (:func:`height_field`) in world units, then the
    median over the patch and its ``neighbours x folds`` nearest patch centres within
    ``reach`` covering radii (a folded cover holds ``folds`` copies of every region; the
    reach keeps separate parts of a scene apart; ``neighbours=0``: each patch alone);
    patches without an estimate are left out of the medians (if none has one, every level
    is NaN and no chart stops).  See the module docstring.
    """
    from scipy.spatial import cKDTree

    rms, coef = height_field(cover.local, cover.mask, degree)
    raw = rms * cover.scale
    P = len(raw)
    k = min(P, neighbours * max(cover.n_groups, 1) + 1)
    if k > 1:
        _, near = cKDTree(cover.centres).query(cover.centres, k=k, distance_upper_bound=reach * cover.radius)
        pooled = np.append(raw, np.nan)[near]  # index P: no neighbour within reach
    else:
        pooled = raw[:, None]
    robust = np.full(P, np.nan)
    if np.isfinite(raw).any():
        with warnings.catch_warnings():  # a neighbourhood without any estimate: the global median
            warnings.simplefilter("ignore", RuntimeWarning)
            robust = np.nanmedian(pooled, axis=1)
        robust[~np.isfinite(robust)] = np.nanmedian(raw)
    return PatchNoise(sigma=robust / cover.scale, sigma_world=robust, raw_world=raw, coef=coef, degree=degree)


class NormalResidual:
    """The charts' RMS residuals along the normal under a matching, ``r`` ``(P,)`` (module docstring).

    ``target`` ``(P, K, 3)`` patch points, ``mask`` ``(P, K)`` real points, ``coef``
    ``(P, m)`` the patches' height fields ``q`` of degree ``degree`` (:class:`PatchNoise`):
    the residual is ``rho`` relative to them; None: the plain residual along the patch
    normal, ``(x_ij - y_{i perm_ij})_z``.  The points' heights above ``q`` and their slopes
    are computed once; a call costs one evaluation of ``q`` at the samples.
    """

    def __init__(self, target: Tensor, mask: Tensor, coef: Tensor | None = None, degree: int = 2) -> None:
        self.mask, self.degree = mask.to(target.dtype), degree
        self.coef = None if coef is None else coef.to(target.dtype)[:, None, :]
        if self.coef is None:
            self.height, self.slope = target[..., 2], torch.ones_like(target[..., 2])
        else:
            f, fx, fy = monomials(target[..., 0], target[..., 1], degree)
            self.height = target[..., 2] - (f * self.coef).sum(-1)
            self.slope = (1.0 + (fx * self.coef).sum(-1) ** 2 + (fy * self.coef).sum(-1) ** 2).sqrt()

    def __call__(self, pred: Tensor, perm: Tensor) -> Tensor:
        """``r`` of chart samples ``pred`` ``(P, K, 3)`` matched by ``perm`` ``(P, K)``
        (``perm[i, j]``: the point of sample ``j``)."""
        height = pred[..., 2]
        if self.coef is not None:
            height = height - _evaluate(pred[..., 0], pred[..., 1], self.coef[:, 0], self.degree)
        r = (height - torch.gather(self.height, 1, perm)) / torch.gather(self.slope, 1, perm)
        w = self.mask
        return ((r * r * w).sum(1) / w.sum(1).clamp_min(1)).sqrt()


def _evaluate(x: Tensor, y: Tensor, coef: Tensor, degree: int) -> Tensor:
    """``q(x, y) = sum_m coef_m x^a y^b`` ``(P, K)`` for coefficients ``(P, m)`` in the order of
    :func:`monomials`, by powers built up once (a step of the fit calls it: no derivatives)."""
    xs, ys = [torch.ones_like(x), x], [torch.ones_like(y), y]
    for _ in range(2, degree + 1):
        xs.append(xs[-1] * x)
        ys.append(ys[-1] * y)
    out, m = torch.zeros_like(x), 0
    for t in range(degree + 1):
        for a in range(t, -1, -1):
            out = out + coef[:, m:m + 1] * (xs[a] * ys[t - a])
            m += 1
    return out


def normal_residual(pred: Tensor, target: Tensor, perm: Tensor, mask: Tensor, coef: Tensor | None = None,
                    degree: int = 2) -> Tensor:
    """``NormalResidual(target, mask, coef, degree)(pred, perm)``: the charts' residuals ``(P,)`` in one call."""
    return NormalResidual(target, mask, coef, degree)(pred, perm)


def cloud_noise(points: np.ndarray, probes: int = 300, k: int = 48, seed: int = 0) -> float:
    """Noise std along the normal of a whole cloud, before any cover exists (world units).

    The ``k`` nearest neighbours of ``probes`` random points, each neighbourhood rotated
    into its PCA frame (smallest axis as the normal) and given a quadratic height field
    (:func:`height_field`); the median of their dof-corrected residuals.  The median keeps
    neighbourhoods on edges and thin parts, which overestimate, from moving it.  It sets
    the patch size (:func:`geoprior.reconstruct.patch_radius`).
    """
    from scipy.spatial import cKDTree

    pts = np.asarray(points, dtype=np.float64)
    k = min(k, len(pts))
    rng = np.random.default_rng(seed)
    centre = pts[rng.choice(len(pts), min(probes, len(pts)), replace=False)]
    _, idx = cKDTree(pts).query(centre, k=k)
    nb = pts[idx] - pts[idx].mean(1, keepdims=True)
    _, vecs = np.linalg.eigh(np.einsum("pki,pkj->pij", nb, nb))
    frame = vecs[..., ::-1]  # columns: largest, middle, smallest (the normal) axis
    local = np.einsum("pki,pij->pkj", nb, frame)
    rms, _ = height_field(local, np.ones(local.shape[:2], dtype=bool))
    return float(np.nanmedian(rms)) if np.isfinite(rms).any() else 0.0
