"""The mesh-free formulation of EIT (Bar & Sochen 2021): networks for sigma and the potentials.

Bar & Sochen ("Strong solutions for PDE-based tomography by unsupervised learning", SIAM
J. Imaging Sci. 14, 2021; arXiv:1904.05417) solve the continuum inverse problem with Cauchy
data on the whole boundary without a mesh: a conductivity network ``sigma_theta(x) > 0`` and a
potential network ``u_phi(x) in R^K`` (one output per Cauchy pair ``(f_k, g_k)``: Dirichlet data
``f_k`` applied, current density ``g_k = sigma du_k/dn`` measured) are fitted together so that
every ``u_k`` solves ``div(sigma grad u_k) = 0`` in the disk ``Omega`` of radius ``R`` and
matches both boundary data.  :class:`MeshFreeEIT` minimises over ``(theta, phi)``, by
:func:`shared.fit.fit` (Adam, cosine step decay)::

    L = mean_k [ mean_i r_k(x_i)^2  +  w_inf max_i |r_k(x_i)| ]              PDE residual
      + w_D mean_{k,j} (u_k(b_j) - f_k(b_j))^2                               Dirichlet data
      + w_N mean_{k,j} (sigma(b_j) du_k/dn(b_j) - g_k(b_j))^2                Neumann data
      + w_s mean_j (sigma(b_j) / sigma_bg - 1)^2                             sigma known on the circle
      + w_TV mean_i sqrt(|R grad sigma(x_i) / sigma_bg|^2 + eps^2)           TV of sigma

    r_k = div(sigma grad u_k) = sigma lap u_k + grad sigma . grad u_k

with ``x_i`` (``n_collocation`` points, uniform in the disk: ``|x| = R sqrt(U)``, angle
``2 pi U'``) drawn afresh every ``resample_every`` steps and ``b_j`` the fixed measurement
points on the circle (outward normal ``n = b / |b|``).  The ``L2 + L-infinity`` residual is
Bar & Sochen's mixed fidelity (the max term pulls down the worst point, which the mean
alone leaves to the end); TV (their regulariser on ``sigma``) is that of ``sigma / sigma_bg``
on the collocation points, by autograd; the boundary term uses the background fitted to the
data (the phantoms have no inclusion touching the circle).  Units: the residual is in
A/m^3, the Neumann misfit in (A/m)^2, with ``g`` O(1) for unit data on the unit disk.  The
default weights (``w_inf = 0.01``, ``w_D = 10``, ``w_N = 100``, ``w_s = 10``, ``w_TV = 1e-3``)
are ours, from a sweep at one noise level (1 %) and seed (the reference corpus held only the
paper's abstract, not its weights).  Optional penalty continuation (``pde_ramp``): the two PDE
terms' weight grows geometrically from 1 to ``pde_ramp`` over the first half of the steps.
Measured (docs/eit.md): at 1000 steps the fit barely leaves the background, because the
potential network can explain the Neumann data with a small residual (the instability of the
Cauchy problem) while the conductivity gets little gradient.

Parametrisation (ours, each documented where it is built):

* ``sigma_theta = sigma_bg exp(s_max tanh(s(x) / s_max))``, ``s`` a tanh MLP on random
  Fourier features of ``x / R`` (:class:`eit.conductivity.MLPConductivity` with a smooth
  activation: the residual needs ``grad sigma``); ``s = 0`` at initialisation.
* ``u_k = h_k + w_k`` with ``h_k`` the harmonic extension of ``f_k`` (least-squares Fourier
  fit of the boundary samples, ``h = a_0 + sum_m (r/R)^m (a_m cos m t + b_m sin m t)``,
  :class:`HarmonicLift`) and ``w`` a tanh MLP with ``K`` outputs whose last layer starts at
  zero: at initialisation ``u_k`` is the homogeneous solution, so the residual and the
  Dirichlet misfit vanish and only the Neumann data pull (``lift=False``: ``u = w``).
* Derivatives: ``grad sigma`` by torch autograd (``create_graph``, so the loss can be
  differentiated again); ``grad u``, ``lap u`` by propagating the 2-jet through the tanh
  MLP (:meth:`PotentialNet.jet`, one pass for all ``K`` outputs, about 30x faster on a CPU
  than ``3K`` nested autograd passes), checked against the autograd divergence of the flux
  :func:`flux_divergence` in the tests.
* Precision: float32 by default (the data noise, >= 0.1 % of max|g|, is far above float32
  rounding of the residual), ``dtype="float64"`` on request.

Data (:func:`continuum_problem`): Dirichlet data ``f = cos(k t), sin(k t)``, ``k = 1..modes``;
the Neumann data of the phantom on a fine mesh (:class:`eit.forward.DirichletModel`), as
the exact homogeneous flux plus the finite element change ``F_fine(sigma) - F_fine(sigma_bg)``
(the change cancels most of the discretisation error, which is ~1 % of ``g`` for ``k = 4``
even at h = R/48), at the inversion mesh's boundary vertices, plus Gaussian noise of
standard deviation ``noise * max_j |g_k(b_j)|`` per pattern.  The same problem feeds the
FEM-based neural route (:class:`eit.reconstruct.NeuralEIT` through the coarse
``DirichletModel``, which fits the difference target ``y - G_exact(sigma_bg) +
F_coarse(sigma_bg)``, as on the KTC tank) and this one (the measured ``g`` itself).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from shared.fit import Objective, Optimiser, Tracking, fit
from shared.networks import MLP
from shared.reconstructor import Reconstructor
from shared.result import Result
from shared.threads import thread_limits

from eit.conductivity import MLPConductivity

__all__ = ["MeshFreeEIT", "MeshFreeFields", "PotentialNet", "HarmonicLift", "SmoothConductivity",
           "CollocationSampler", "BarSochenLoss", "CollocationTV", "flux_divergence", "autograd_jet",
           "continuum_problem", "continuum_models", "dirichlet_modes", "homogeneous_flux", "cauchy_data",
           "weighted_rel_l2", "Mollified", "MESHFREE_DEFAULTS"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


# --------------------------------------------------------------------------- derivatives


def autograd_jet(u_fn, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``u (N, K)``, ``grad u (N, 2, K)`` and ``lap u (N, K)`` of ``u_fn: (N, 2) -> (N, K)`` by
    nested autograd (``3K`` passes with ``create_graph``): the reference of :meth:`PotentialNet.jet`."""
    x = x.detach().requires_grad_(True)
    u = u_fn(x)
    grads, laps = [], []
    for k in range(u.shape[1]):
        g = torch.autograd.grad(u[:, k].sum(), x, create_graph=True)[0]
        gxx = torch.autograd.grad(g[:, 0].sum(), x, create_graph=True)[0][:, 0]
        gyy = torch.autograd.grad(g[:, 1].sum(), x, create_graph=True)[0][:, 1]
        grads.append(g)
        laps.append(gxx + gyy)
    return u, torch.stack(grads, -1), torch.stack(laps, -1)


def flux_divergence(sigma_fn, u_fn, x: Tensor) -> Tensor:
    """``div(sigma grad u_k)`` at ``x (N, 2)``, shape ``(N, K)``, straight from the definition:
    the flux ``q_k = sigma grad u_k`` by autograd, then its divergence ``dq_x/dx + dq_y/dy`` by
    autograd again (``create_graph``).  ``sigma_fn: (N, 2) -> (N,)``, ``u_fn: (N, 2) -> (N, K)``."""
    x = x.detach().requires_grad_(True)
    sigma, u = sigma_fn(x), u_fn(x)
    out = []
    for k in range(u.shape[1]):
        q = sigma[:, None] * torch.autograd.grad(u[:, k].sum(), x, create_graph=True)[0]
        qx = torch.autograd.grad(q[:, 0].sum(), x, create_graph=True)[0][:, 0]
        qy = torch.autograd.grad(q[:, 1].sum(), x, create_graph=True)[0][:, 1]
        out.append(qx + qy)
    return torch.stack(out, -1)


# --------------------------------------------------------------------------- networks


class HarmonicLift(nn.Module):
    """Harmonic extension of boundary data on a disk: ``h_k(x) = a_0k + sum_{m=1}^M
    Re((a_mk - i b_mk) (z / R)^m)``, ``z = x_1 + i x_2``, i.e. ``(r/R)^m (a_m cos m t + b_m sin m t)``.

    The coefficients are the least-squares Fourier fit of ``values (nb, K)`` at ``points (nb, 2)``
    on the circle (``2M + 1 <= nb``).  ``h`` is a polynomial in ``x`` (no ``atan2``, smooth at
    the centre); ``lap h = 0`` exactly.
    """

    def __init__(self, points: np.ndarray, values: np.ndarray, radius: float, n_modes: int = 16) -> None:
        super().__init__()
        points, values = np.asarray(points, dtype=np.float64), np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or len(values) != len(points):
            raise ValueError(f"boundary values must be (nb, K) with nb = {len(points)} points, got {values.shape}")
        if not (int(n_modes) == n_modes and 1 <= n_modes and 2 * n_modes + 1 <= len(points)):
            raise ValueError(f"n_modes must be an integer in [1, (nb - 1) / 2] = [1, {(len(points) - 1) // 2}], "
                             f"got {n_modes}")
        t = np.arctan2(points[:, 1], points[:, 0])
        m = np.arange(1, n_modes + 1)
        A = np.concatenate([np.ones((len(t), 1)), np.cos(np.outer(t, m)), np.sin(np.outer(t, m))], axis=1)
        coef = np.linalg.lstsq(A, values, rcond=None)[0]  # (2M + 1, K)
        self.radius, self.n_modes = float(radius), int(n_modes)
        self.register_buffer("a", torch.as_tensor(coef[: n_modes + 1]))  # a_0..a_M
        self.register_buffer("b", torch.as_tensor(coef[n_modes + 1:]))   # b_1..b_M
        self.fit_error = float(np.sqrt(np.mean((A @ coef - values) ** 2)))

    def jet(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``h (N, K)``, ``grad h (N, 2, K)``, ``lap h = 0 (N, K)``.

        With ``P_m = (z/R)^m``: ``d P_m / dx = m P_{m-1} / R``, ``d P_m / dy = i m P_{m-1} / R``.
        """
        a, b = self.a.to(x.dtype), self.b.to(x.dtype)
        zr, zi = x[:, 0] / self.radius, x[:, 1] / self.radius
        re, im = [torch.ones_like(zr)], [torch.zeros_like(zr)]
        for _ in range(self.n_modes):  # P_m = P_{m-1} z
            pr, pi = re[-1], im[-1]
            re.append(pr * zr - pi * zi)
            im.append(pr * zi + pi * zr)
        Re, Im = torch.stack(re, 1), torch.stack(im, 1)  # (N, M + 1)
        m = torch.arange(1, self.n_modes + 1, dtype=x.dtype, device=x.device) / self.radius
        h = Re @ a + Im[:, 1:] @ b
        hx = (m * Re[:, :-1]) @ a[1:] + (m * Im[:, :-1]) @ b
        hy = -(m * Im[:, :-1]) @ a[1:] + (m * Re[:, :-1]) @ b
        return h, torch.stack([hx, hy], 1), torch.zeros_like(h)


class PotentialNet(nn.Module):
    """``w(x) = MLP_tanh(x / R) in R^K`` with its gradient and Laplacian in one forward pass.

    :meth:`jet` propagates ``(v, grad v, lap v)`` through the layers: a linear layer maps all
    three by ``W`` (the bias only enters ``v``); ``tanh`` maps them to ``(t, t' grad v,
    t'' |grad v|^2 + t' lap v)`` with ``t' = 1 - t^2``, ``t'' = -2 t t'``.  The last layer starts
    at zero (``w = 0``).
    """

    def __init__(self, n_outputs: int, radius: float, hidden: Sequence[int] = (64, 64, 64)) -> None:
        super().__init__()
        self.radius = float(radius)
        self.mlp = MLP(2, n_outputs, hidden, act="tanh")
        nn.init.zeros_(self.mlp.net[-1].weight)
        nn.init.zeros_(self.mlp.net[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x / self.radius)

    def jet(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``w (N, K)``, ``grad w (N, 2, K)``, ``lap w (N, K)`` (see the class docstring)."""
        v = x / self.radius
        g = torch.eye(2, dtype=x.dtype, device=x.device).expand(len(x), 2, 2) / self.radius
        lap = torch.zeros_like(v)
        for layer in self.mlp.net:
            if isinstance(layer, nn.Linear):
                v, g, lap = layer(v), g @ layer.weight.T, lap @ layer.weight.T
            else:  # tanh (the MLP is built with act="tanh")
                t = torch.tanh(v)
                d1 = 1 - t * t
                lap = -2 * t * d1 * (g * g).sum(1) + d1 * lap
                g, v = d1.unsqueeze(1) * g, t
        return v, g, lap


class SmoothConductivity(MLPConductivity):
    """:class:`eit.conductivity.MLPConductivity` (``sigma_bg exp(s_max tanh(s / s_max))``, ``s`` an
    MLP on Fourier features) with a smooth activation and the input's precision kept: the
    mesh-free residual differentiates ``sigma`` in space, which a ReLU network does only piecewise."""

    def to_sigma(self, s: Tensor) -> Tensor:
        return self.sigma_bg * torch.exp(self.s_max * torch.tanh(s / self.s_max))


class MeshFreeFields(nn.Module):
    """The two fields of the mesh-free formulation: ``sigma_theta (N,)`` and ``u_phi (N, K)``.

    ``forward(x)`` is ``sigma`` at ``x (N, 2)`` (the reconstruction the engine records, at the
    evaluation points); :meth:`residual` and :meth:`boundary` give what :class:`BarSochenLoss`
    needs.  ``lift``: the harmonic extension of the Dirichlet data added to ``u`` (or None).
    """

    def __init__(self, sigma: nn.Module, potential: PotentialNet, lift: HarmonicLift | None = None) -> None:
        super().__init__()
        self.sigma_net, self.potential, self.lift = sigma, potential, lift

    def forward(self, x: Tensor) -> Tensor:
        return self.sigma_net(x)

    def sigma_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``sigma (N,)`` and ``grad sigma (N, 2)`` by autograd (graph kept for the loss)."""
        x = x.detach().requires_grad_(True)
        s = self.sigma_net(x)
        return s, torch.autograd.grad(s.sum(), x, create_graph=True)[0]

    def potentials(self, x: Tensor) -> Tensor:
        """``u (N, K)``."""
        return self.jet(x)[0]

    def jet(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``u (N, K)``, ``grad u (N, 2, K)``, ``lap u (N, K)``."""
        u, g, lap = self.potential.jet(x)
        if self.lift is not None:
            h, gh, _ = self.lift.jet(x)
            u, g = u + h, g + gh
        return u, g, lap

    def residual(self, x: Tensor) -> Tensor:
        """``r_k = div(sigma grad u_k) = sigma lap u_k + grad sigma . grad u_k`` at ``x``, ``(N, K)``."""
        s, gs = self.sigma_grad(x)
        _, gu, lap = self.jet(x)
        return s[:, None] * lap + (gs[:, :, None] * gu).sum(1)

    def boundary(self, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``u_k(b) (nb, K)``, the current density ``sigma du_k/dn (nb, K)`` (``n = b / |b|``) and
        ``sigma(b) (nb,)``."""
        u, gu, _ = self.jet(b)
        n = b / torch.linalg.norm(b, dim=1, keepdim=True)
        s = self.sigma_net(b)
        return u, s[:, None] * (gu * n[:, :, None]).sum(1), s


# --------------------------------------------------------------------------- loss


class CollocationSampler:
    """``n`` points uniform in the disk of radius ``R``, drawn afresh every ``every`` steps.

    Uniform in area: ``|x| = R sqrt(U_1)``, angle ``2 pi U_2`` (``U`` uniform on [0, 1)), from a
    private generator seeded with ``seed`` (a fit's draws never touch torch's global RNG).
    """

    def __init__(self, n: int, radius: float, every: int = 1, seed: int = 0, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu") -> None:
        self.n, self.radius, self.every, self.dtype = int(n), float(radius), int(every), dtype
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.points = self.draw()

    def draw(self) -> Tensor:
        u = torch.rand(self.n, 2, generator=self.generator, dtype=torch.float64)
        r, t = self.radius * torch.sqrt(u[:, 0]), 2 * math.pi * u[:, 1]
        return torch.stack([r * torch.cos(t), r * torch.sin(t)], 1).to(self.device, self.dtype)

    def begin_step(self, step: int) -> None:
        if step > 0 and step % self.every == 0:
            self.points = self.draw()


class BarSochenLoss:
    """The data term of the mesh-free fit (module docstring: PDE residual in L2 and L-infinity,
    Dirichlet and Neumann misfits on the circle); called by the engine as ``loss(prediction)``
    (``Objective(y=None)``) and evaluating the fields on its own points.

    ``boundary (nb, 2)``: measurement points; ``dirichlet``, ``neumann`` ``(nb, K)``: ``f_k`` and
    the measured ``g_k`` there (non-finite ``g`` entries are left out); ``sigma_bg``: the
    boundary conductivity of the ``w_s`` term; ``pde_ramp``, ``ramp_steps``: the continuation
    of the PDE weight (factor ``pde_ramp ** min(step / ramp_steps, 1)``, told by ``begin_step``).
    """

    def __init__(self, fields: MeshFreeFields, sampler: CollocationSampler, boundary: Tensor, dirichlet: Tensor,
                 neumann: Tensor, linf_weight: float = 0.01, dirichlet_weight: float = 10.0,
                 neumann_weight: float = 100.0, boundary_sigma_weight: float = 10.0, sigma_bg: float = 1.0,
                 pde_ramp: float = 1.0, ramp_steps: int = 1) -> None:
        self.fields, self.sampler = fields, sampler
        self.b, self.f = boundary, dirichlet
        self.known = torch.isfinite(neumann)
        self.g = torch.where(self.known, neumann, torch.zeros_like(neumann))
        self.sigma_bg = float(sigma_bg)
        self.weights = {"pde_l2": 1.0, "pde_linf": float(linf_weight), "dirichlet": float(dirichlet_weight),
                        "neumann": float(neumann_weight), "boundary_sigma": float(boundary_sigma_weight)}
        self.pde_ramp, self.ramp_steps = float(pde_ramp), max(int(ramp_steps), 1)
        self.pde_scale = 1.0

    def begin_step(self, step: int) -> None:
        self.sampler.begin_step(step)
        # penalty continuation: the PDE terms' weight grows geometrically from 1 to pde_ramp
        self.pde_scale = self.pde_ramp ** min(step / self.ramp_steps, 1.0)

    def terms(self) -> dict[str, Tensor]:
        """The unweighted terms ``pde_l2``, ``pde_linf``, ``dirichlet``, ``neumann``, ``boundary_sigma``."""
        r = self.fields.residual(self.sampler.points)
        u, flux, sigma_b = self.fields.boundary(self.b)
        return {"pde_l2": (r * r).mean(0).mean(), "pde_linf": r.abs().amax(0).mean(),
                "dirichlet": ((u - self.f) ** 2).mean(), "neumann": ((flux - self.g) ** 2)[self.known].mean(),
                "boundary_sigma": ((sigma_b / self.sigma_bg - 1) ** 2).mean()}

    def __call__(self, prediction: Tensor | None = None) -> Tensor:
        scale = {"pde_l2": self.pde_scale, "pde_linf": self.pde_scale}
        return sum(self.weights[k] * scale.get(k, 1.0) * v for k, v in self.terms().items() if self.weights[k] != 0)


class CollocationTV:
    """``TV(sigma) = mean_i sqrt(|R grad sigma(x_i) / sigma_bg|^2 + eps^2)`` on the sampler's
    current points (dimensionless; ``~ int |grad sigma| / (pi R sigma_bg)`` for small ``eps``).
    A regulariser of the engine: its argument (``sigma`` at the evaluation points) is unused."""

    def __init__(self, fields: MeshFreeFields, sampler: CollocationSampler, sigma_bg: float, eps: float = 1e-2) -> None:
        self.fields, self.sampler, self.sigma_bg, self.eps = fields, sampler, float(sigma_bg), float(eps)

    def __call__(self, sigma: Tensor | None = None) -> Tensor:
        _, gs = self.fields.sigma_grad(self.sampler.points)
        scaled = gs * (self.sampler.radius / self.sigma_bg)
        return torch.sqrt((scaled * scaled).sum(1) + self.eps**2).mean()


# --------------------------------------------------------------------------- the reconstructor


def weighted_rel_l2(sigma: Tensor, reference: Tensor, weights: Tensor) -> float:
    """``sqrt(sum_c a_c (sigma_c - ref_c)^2 / sum_c a_c ref_c^2)`` (area-weighted relative L2)."""
    w = weights.to(sigma.device, sigma.dtype)
    ref = reference.to(sigma.device, sigma.dtype)
    return float(torch.sqrt((w * (sigma - ref) ** 2).sum() / (w * ref**2).sum()))


def cauchy_data(problem) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Measurement points ``b (nb, 2)``, Dirichlet data ``f (nb, K)`` and measured Neumann data
    ``g (nb, K)`` of a continuum problem (``problem.model`` a :class:`eit.forward.DirichletModel`;
    ``g`` is ``problem.info["measured"]`` when present, else ``problem.y``)."""
    from eit.forward import DirichletModel

    model = problem.model
    if not isinstance(model, DirichletModel):
        raise ValueError("the mesh-free formulation needs Cauchy data on the whole boundary: a problem whose "
                         "model is an eit.forward.DirichletModel (Dirichlet data in, Neumann data measured), e.g. "
                         f"eit.meshfree.continuum_problem(); got a {type(model).__name__}")
    g = np.asarray(problem.info.get("measured", problem.y), dtype=np.float64)
    return model.boundary_coordinates, model.boundary_data, g.reshape(model.P, model.nb).T


class MeshFreeEIT(Reconstructor):
    """The mesh-free formulation of Bar & Sochen (module docstring), fitted by :func:`shared.fit.fit`.

    Parameters
    ----------
    iterations, lr, schedule: Adam steps, step size and its schedule (``"cosine"``: decays to lr/100).
    n_collocation, resample_every: collocation points in the disk and how often they are redrawn.
    linf_weight, dirichlet_weight, neumann_weight, boundary_sigma_weight, tv_weight: ``w_inf``,
        ``w_D``, ``w_N``, ``w_s``, ``w_TV``.
    pde_ramp: final factor of the PDE terms' weight (penalty continuation over the first half
        of the steps; 1: off).
    tv_eps: smoothing of the TV (dimensionless, on ``R |grad sigma| / sigma_bg``).
    hidden: widths of the potential network (tanh); sigma_hidden, sigma_features, sigma_scale,
        s_max: the conductivity network (tanh MLP on Fourier features, ``sigma_scale`` cycles
        per radius; ``sigma`` within ``sigma_bg e^{+-s_max}``).
    lift, n_modes: add the harmonic extension of the Dirichlet data (Fourier modes up to ``n_modes``).
    dtype: ``"float32"`` or ``"float64"``.  seed: network initialisation and collocation draws.
    device, progress, track_every: of the fit (``track_every``: steps between rel. L2 records,
        when the truth is known; recorded only, never used to select).
    threads: torch threads during the fit (``None``: torch's setting).  One by default: the
        layers are small (1024 x 64), and on a loaded 2-core machine two threads made the step
        of the residual ~40x slower (thread contention), one thread ~25 ms.
    """

    method = "meshfree-pinn"

    def __init__(self, iterations: int = 1000, lr: float = 2e-3, n_collocation: int = 1024, resample_every: int = 1,
                 linf_weight: float = 0.01, dirichlet_weight: float = 10.0, neumann_weight: float = 100.0,
                 boundary_sigma_weight: float = 10.0, pde_ramp: float = 1.0, tv_weight: float = 1e-3,
                 tv_eps: float = 1e-2, hidden: Sequence[int] = (64, 64, 64),
                 sigma_hidden: Sequence[int] = (64, 64, 64), sigma_features: int = 32, sigma_scale: float = 1.0,
                 s_max: float = 3.0, lift: bool = True, n_modes: int = 16, dtype: str = "float32",
                 schedule: str = "cosine", seed: int = 0, device: str | None = None, progress: bool | str = False,
                 track_every: int = 50, threads: int | None = 1) -> None:
        self.iterations, self.lr, self.schedule = iterations, lr, schedule
        self.n_collocation, self.resample_every = n_collocation, resample_every
        self.linf_weight, self.dirichlet_weight = linf_weight, dirichlet_weight
        self.neumann_weight, self.tv_weight, self.tv_eps = neumann_weight, tv_weight, tv_eps
        self.boundary_sigma_weight, self.pde_ramp = boundary_sigma_weight, pde_ramp
        self.hidden, self.sigma_hidden = tuple(hidden), tuple(sigma_hidden)
        self.sigma_features, self.sigma_scale, self.s_max = sigma_features, sigma_scale, s_max
        self.lift, self.n_modes, self.dtype = lift, n_modes, dtype
        self.seed, self.device, self.progress, self.track_every = seed, device, progress, track_every
        self.threads = threads

    def validate(self) -> MeshFreeEIT:
        """Raise ``ValueError`` for settings no fit can use (called before anything runs)."""
        for name in ("iterations", "n_collocation", "resample_every", "n_modes", "sigma_features", "track_every",
                     "threads"):
            v = getattr(self, name)
            if (name != "threads" or v is not None) and (isinstance(v, bool) or int(v) != v or v < 1):
                raise ValueError(f"{name} must be an integer >= 1{' or None' * (name == 'threads')}, got {v!r}")
        if self.n_collocation < 16:
            raise ValueError(f"n_collocation must be >= 16 (the residual is a mean over them), "
                             f"got {self.n_collocation}")
        for name in ("lr", "tv_eps", "sigma_scale", "s_max", "neumann_weight", "pde_ramp"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number, got {v!r}"
                                 + (" (without the Neumann data nothing is measured)" if name == "neumann_weight"
                                    else ""))
        for name in ("linf_weight", "dirichlet_weight", "tv_weight", "boundary_sigma_weight"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not self.lift and self.dirichlet_weight == 0:
            raise ValueError("with lift=False the Dirichlet data enter only through dirichlet_weight, which is 0")
        if not self.hidden or not self.sigma_hidden or min(self.hidden + self.sigma_hidden) < 1:
            raise ValueError(f"hidden widths must be non-empty positive integers, "
                             f"got {self.hidden}, {self.sigma_hidden}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        return self

    def fields(self, boundary: np.ndarray, dirichlet: np.ndarray, sigma_bg: float, radius: float) -> MeshFreeFields:
        """The untrained fields (initialised from ``seed`` in a forked RNG, the caller's stream untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            sigma = SmoothConductivity(sigma_bg, radius, n_features=self.sigma_features, scale=self.sigma_scale,
                                       hidden=self.sigma_hidden, act="tanh", s_max=self.s_max, seed=self.seed)
            potential = PotentialNet(dirichlet.shape[1], radius, self.hidden)
        lift = HarmonicLift(boundary, dirichlet, radius, self.n_modes) if self.lift else None
        return MeshFreeFields(sigma, potential, lift).to(DTYPES[self.dtype])

    def objective(self, fields: MeshFreeFields, problem) -> tuple[Objective, BarSochenLoss]:
        """The :class:`shared.fit.Objective` (``y=None``: the loss draws its own points) and its data term."""
        b, f, g = cauchy_data(problem)
        dtype = DTYPES[self.dtype]
        device = torch.device(self.device or "cpu")
        sampler = CollocationSampler(self.n_collocation, problem.radius, self.resample_every, self.seed, dtype, device)
        as_t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)
        loss = BarSochenLoss(fields, sampler, as_t(b), as_t(f), as_t(g), self.linf_weight, self.dirichlet_weight,
                             self.neumann_weight, self.boundary_sigma_weight, problem.sigma_bg, self.pde_ramp,
                             self.iterations // 2)
        regs = {"tv": (self.tv_weight, CollocationTV(fields, sampler, problem.sigma_bg, self.tv_eps))} \
            if self.tv_weight > 0 else {}
        return Objective(None, data=loss, regularisers=regs), loss

    def reconstruct(self, problem) -> Result:
        """Fit the fields to a continuum problem (:func:`continuum_problem`); ``sigma`` at the
        inversion mesh's centroids is the reconstruction (the mesh is used for nothing else)."""
        from eit.result import conductivity_result

        self.validate()
        b, f, _ = cauchy_data(problem)
        fields = self.fields(b, f, problem.sigma_bg, problem.radius)
        objective, loss = self.objective(fields, problem)
        dtype = DTYPES[self.dtype]
        tracking = None
        if problem.sigma_true is not None:
            areas = torch.as_tensor(problem.model.cell_areas)
            tracking = Tracking({"rel_l2": lambda s, ref: weighted_rel_l2(s, ref, areas)},
                                torch.as_tensor(problem.sigma_true, dtype=dtype), every=self.track_every)
        with thread_limits(torch_threads=self.threads):
            result = fit(fields, torch.as_tensor(problem.centroids, dtype=dtype), objective,
                         optimiser=Optimiser(lr=self.lr, iterations=self.iterations, schedule=self.schedule),
                         tracking=tracking, seed=self.seed, device=self.device, progress=self.progress)
            terms = {k: float(v.detach()) for k, v in loss.terms().items()}
        sigma = result.output.detach().cpu().numpy().astype(np.float64)
        return conductivity_result(problem, sigma, self.method, result.wall_time_s, config=self.get_params(),
                                   fit=result, iterations=result.stop_iteration, stopped_by=result.stopped_by,
                                   final_terms=terms)


#: the settings of :class:`MeshFreeEIT` as the benchmark records them
MESHFREE_DEFAULTS = MeshFreeEIT().get_params()


# --------------------------------------------------------------------------- data


def dirichlet_modes(modes: int):
    """``f(x, y) -> (2 modes, n)``: ``cos(k t), sin(k t)`` for ``k = 1..modes`` (``t`` the angle),
    in that order (``cos 1, sin 1, cos 2, ...``); the callable form of :class:`eit.forward.DirichletModel`."""
    if int(modes) != modes or modes < 1:
        raise ValueError(f"modes must be an integer >= 1, got {modes}")

    def f(x, y):
        t = np.arctan2(y, x)
        return np.array([trig(k * t) for k in range(1, modes + 1) for trig in (np.cos, np.sin)])

    return f


def homogeneous_flux(angles: np.ndarray, modes: int, radius: float, sigma: float = 1.0) -> np.ndarray:
    """Exact current density of :func:`dirichlet_modes` on a homogeneous disk, ``(2 modes, nb)``:
    ``u = (r/R)^k cos(k t)`` has ``sigma du/dn = sigma k cos(k t) / R`` (likewise for sin)."""
    return np.array([sigma * k / radius * trig(k * angles) for k in range(1, modes + 1) for trig in (np.cos, np.sin)])


def continuum_models(radius: float = 1.0, modes: int = 4, h: float = 1 / 16, h_fine: float = 1 / 48):
    """``(model, fine_model)``: :class:`eit.forward.DirichletModel` with :func:`dirichlet_modes` on an
    inversion disk mesh (element size ``h R``) and on a finer simulation mesh (``h_fine R``), both
    uniform (no boundary refinement: the electrodes of :func:`eit.mesh.disk_mesh` play no role here)."""
    from eit.forward import DirichletModel
    from eit.mesh import disk_mesh

    if not 0 < h_fine < h:
        raise ValueError(f"the simulation mesh must be finer than the inversion mesh: need 0 < h_fine < h, "
                         f"got h={h}, h_fine={h_fine}")
    f = dirichlet_modes(modes)
    mesh = lambda s: disk_mesh(radius, 16, h=s * radius, h_electrode=s * radius)
    return DirichletModel(mesh(h), f), DirichletModel(mesh(h_fine), f)


def _periodic_interp(angles: np.ndarray, at: np.ndarray, values: np.ndarray) -> np.ndarray:
    order = np.argsort(angles)
    return np.array([np.interp(at, angles[order], v[order], period=2 * np.pi) for v in values])


class Mollified:
    """A phantom averaged over a disk of radius ``width`` (m): ``sigma_w(x) = mean_j sigma(x + width xi_j)``
    with ``n`` fixed points ``xi_j`` spread uniformly over the unit disk (a sunflower lattice), so
    any :class:`eit.phantoms.Phantom` gets edges ramped over about ``2 width``.  The strong form
    ``div(sigma grad u) = 0`` holds pointwise only where ``sigma`` is differentiable; a smooth
    truth is the setting of the mesh-free formulation (Bar & Sochen's phantoms are smooth too).
    """

    def __init__(self, phantom, width: float, n: int = 64) -> None:
        if not width >= 0:
            raise ValueError(f"the mollification width must be >= 0 (m), got {width}")
        self.phantom, self.width, self.background = phantom, float(width), float(phantom.background)
        j = np.arange(n) + 0.5
        r, t = np.sqrt(j / n), j * np.pi * (3 - np.sqrt(5))  # golden-angle lattice: area-uniform
        self.offsets = self.width * np.c_[r * np.cos(t), r * np.sin(t)]

    def __call__(self, points: np.ndarray) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64)[:, :2]
        if self.width == 0:
            return self.phantom(p)
        return np.mean([self.phantom(p + o) for o in self.offsets], axis=0)


def continuum_problem(phantom=None, noise: float = 0.01, seed: int = 0, *, modes: int = 4, radius: float = 1.0,
                      models=None):
    """Simulated continuum-model data of ``phantom`` as an :class:`eit.problem.EITProblem` (module docstring).

    ``phantom``: an :class:`eit.phantoms.Phantom` or any ``sigma(points)`` with a ``background``
    (default: :func:`eit.phantoms.two_inclusion` on the disk of ``radius`` with contrast 2,
    :class:`Mollified` over ``0.15 R``); ``noise``: standard deviation relative to
    ``max_j |g_k|``, per pattern ``k`` (> 0: it is also the FEM route's misfit weight);
    ``models``: ``(model, fine_model)`` of :func:`continuum_models` to reuse.  ``y`` is the FEM
    route's difference target, ``info["measured"]`` the measured ``g`` (``data[k nb + j]``),
    ``info["clean"]`` the noise-free one.
    """
    from eit.phantoms import two_inclusion
    from eit.problem import EITProblem

    if not (np.isfinite(noise) and noise > 0):
        raise ValueError(f"noise must be a positive fraction of max|g|, got {noise}")
    if phantom is None:
        phantom = Mollified(two_inclusion(radius=radius, background=1.0, contrast=2.0), 0.15 * radius)
    model, fine = models if models is not None else continuum_models(radius, modes)
    if model.P != 2 * modes or fine.P != 2 * modes:
        raise ValueError(f"the models carry {model.P} Dirichlet patterns, modes={modes} needs {2 * modes}")
    bg = float(phantom.background)
    change = (fine.forward(phantom(fine.cell_centroids)) - fine.forward(np.full(fine.n_sigma, bg)))
    change = _periodic_interp(fine.boundary_angles, model.boundary_angles, change.reshape(fine.P, fine.nb))
    unit = homogeneous_flux(model.boundary_angles, modes, radius)  # (P, nb) for sigma = 1
    clean = bg * unit + change
    std = np.broadcast_to(noise * np.abs(clean).max(axis=1, keepdims=True), clean.shape)
    measured = clean + std * np.random.default_rng(seed).standard_normal(clean.shape)
    sigma_bg = float(np.sum(measured * unit) / np.sum(unit * unit))  # F(c) = c F(1) for constant c
    dy = measured - sigma_bg * unit
    y = dy.reshape(-1) + model.forward(np.full(model.n_sigma, sigma_bg))
    return EITProblem(model=model, y=y, mask=np.ones(model.n_data, bool), noise=std.reshape(-1).copy(),
                      sigma_bg=sigma_bg, dy=dy.reshape(-1), sigma_true=phantom(model.cell_centroids),
                      name="continuum", info={"data": "difference", "measured": measured.reshape(-1),
                                              "clean": clean.reshape(-1), "noise_level": float(noise),
                                              "fine_cells": fine.n_sigma, "modes": int(modes)})
