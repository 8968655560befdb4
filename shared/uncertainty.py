"""Uncertainty for any fit of the engine: the linearised (Laplace) deep image prior.

A fit returns parameters ``theta*`` of a network ``G`` with fixed input ``z``; the
reconstruction is ``x* = G_theta*(z)`` and the measurements are ``y = F(x) + eps``.
Linearising the network around ``theta*``::

    x(theta) ~ x* + J_x (theta - theta*),      J_x = d G_theta(z) / d theta   (n x p)
    y(theta) ~ F(x*) + J_y (theta - theta*),   J_y = F'(x*) J_x             (m x p)

turns the fit into a Bayesian linear model with the Gaussian prior
``theta ~ N(theta_0, alpha^-1 I)`` and Gaussian noise of precision ``beta``.  The prior
mean ``theta_0`` is the network's initialisation when it is known (gradient descent from
``theta_0`` is implicitly biased towards the solution nearest to ``theta_0``: see the
linear-generator example), else zero (the classical Laplace prior).  Its posterior is
Gaussian with precision ``H = beta J_y^T J_y + alpha I``.

The Jacobians are never formed: they are used through Jacobian-vector products
(forward-mode ``torch.func.jvp``, with a double-backward fallback) and vector-Jacobian
products (reverse mode).  A randomized SVD (Halko, Martinsson & Tropp 2011: Gaussian range
finder with ``power_iterations`` subspace iterations) gives ``J_y ~ U S V^T`` of rank
``k``; in that basis everything is closed form:

* log marginal likelihood of ``y`` (with ``d = y - F(x*) - J_y (theta_0 - theta*)``,
  ``d_i = u_i^T d``, and the singular values beyond ``k`` taken as zero)::

      log p(y | alpha, beta) = -1/2 sum_{i<=k} [ log(s_i^2/alpha + 1/beta) + d_i^2 / (s_i^2/alpha + 1/beta) ]
                               + (m - k)/2 log beta - beta/2 ||d - U U^T d||^2 - m/2 log(2 pi)

  maximised over ``(log alpha, log beta)`` (a smooth 2-D problem; L-BFGS-B);
* posterior covariance of the parameters
  ``Sigma = V diag(1/(beta s^2 + alpha)) V^T + alpha^-1 (I - V V^T)``;
* pixelwise predictive variance of the reconstruction
  ``var_i = [J_x Sigma J_x^T]_ii
          = sum_j (J_x v_j)_i^2 / (beta s_j^2 + alpha) + alpha^-1 [J_x (I - V V^T) J_x^T]_ii``.
  The first term is exact; the second (the prior variance left in the directions the
  measurements do not see, e.g. the null space of a sparse-view CT operator) is a
  Hutchinson estimate ``mean_w ((J_x (I - V V^T) w)_i)^2`` over Gaussian probes ``w``
  (the range finder's own probes, so it costs no extra products).

Optionally (``tail_model="isotropic"``, with a known noise level) the ``m - k`` measurement
directions beyond the rank are not treated as pure noise but get the isotropic prior variance ``t / alpha``
(``t = sum_{i>k} s_i^2 / (m - k)``, estimated by projected Hutchinson probes): the
evidence then uses ``var_perp = t / alpha + 1 / beta`` for ``||d - U U^T d||^2``, and for
denoising (identity forward model) the second variance term is shrunk by the posterior
factor ``(1/beta) / (t/alpha + 1/beta)`` of those directions.  When the measurements are
few (EIT), ``method="exact"`` forms ``J_y^T`` with one VJP per measurement instead of
the randomized SVD; it needs no forward-mode derivative of the forward model.

``std`` is the standard deviation of the reconstruction ``x`` (epistemic: no noise term).
``std_noisy`` adds the noise variance ``1/beta`` and is the predictive standard deviation of
a new noisy observation; it is only meaningful when the forward model is the identity
(denoising), and is ``None`` otherwise.

Calibration (:func:`calibration`): the fraction of errors ``|x* - x_true|`` within two
predicted standard deviations (0.954 for a perfectly calibrated Gaussian) and the mean
Gaussian log-likelihood of the errors, against the best constant-std baseline
``sigma_c = rms(x* - x_true)`` (an oracle: the constant chosen with the truth).

Example::

    theta0 = snapshot(net)                              # before fitting
    res = fit(net, z, Objective(y, physics=A), optimiser=Optimiser(iterations=3000))
    u = linearised_uncertainty(res, rank=100, prior_mean=theta0)
    u.std        # shape of res.output
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from shared.layer_precisions import fit_group_precisions, group_rms_precisions, parameter_groups

__all__ = [
    "LinearisedUncertainty",
    "JacobianOperator",
    "linearised_uncertainty",
    "linearised_laplace",
    "randomized_svd",
    "log_evidence",
    "fit_precisions",
    "calibration",
    "snapshot",
    "batch_statistics",
    "coverage",
    "ensemble_statistics",
    "mixture_factor",
    "member_fits",
    "condition_factor",
    "conditioning_root",
    "pointwise_jacobian",
]


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """Copy of the trainable parameters (e.g. the initialisation, before a fit)."""
    return {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}


# --------------------------------------------------------------------------- Jacobian
class JacobianOperator:
    """The Jacobians ``J_x`` (output) and ``J_y`` (measurements) of a network at its parameters.

    Parameters
    ----------
    model:
        The network; evaluated in its current mode (``fit`` leaves it in eval mode,
        as for ``FitResult.final``).  Its trainable parameters are ``theta``.
    z:
        Its input (tensor, tuple of tensors or None).
    forward:
        Differentiable forward model on the network output, or None (identity).
    mask:
        Boolean tensor of the measurement shape; only these entries enter ``J_y``
        (missing or held-out data).

    Vectors in parameter space are flat (length ``p``), outputs flat (``n``),
    measurements flat (``m``).
    """

    def __init__(self, model: nn.Module, z: Any = None, forward: Callable[[Tensor], Tensor] | None = None,
                 mask: Tensor | None = None, jx: Tensor | None = None) -> None:
        self.model = model
        self.z = z
        self.forward = forward
        self.names = [k for k, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shapes = [params[k].shape for k in self.names]
        self.numels = [params[k].numel() for k in self.names]
        self.theta = torch.cat([params[k].detach().reshape(-1) for k in self.names])
        self.p = self.theta.numel()
        if self.p == 0:
            raise ValueError("the model has no trainable parameters to linearise")
        with torch.no_grad():
            x = self._call_model(self._unflatten(self.theta))
        self.x_shape = x.shape
        self.x_dtype = x.dtype
        self.x = x.detach().to(self.theta.dtype)
        self.n = x.numel()
        if forward is not None:
            with torch.no_grad():
                yy = forward(x)
            self.y_shape = yy.shape
            self.y_pred = yy.detach().to(self.theta.dtype)
        else:
            self.y_shape = x.shape
            self.y_pred = self.x
        if mask is not None and tuple(mask.shape) != tuple(self.y_shape):
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match measurement shape {tuple(self.y_shape)}")
        self.mask = None if mask is None or bool(mask.all()) else mask.reshape(-1).to(self.x.device)
        self.m = int(self.mask.sum()) if self.mask is not None else self.y_pred.numel()
        self._fwd_mode_x = True
        self._fwd_mode_f = True
        self._vjp_fn = None
        #: per-parameter scale ``s`` (None: 1): products are then those of ``J diag(s)``, the
        #: Jacobian in whitened coordinates ``theta = theta* + s * w`` (per-layer priors)
        self.scale: Tensor | None = None
        #: the explicit output Jacobian ``J_x`` ``(n, p)`` when the caller formed it (e.g. by
        #: per-sample gradients of a pointwise network); products then use it directly
        self.jx = None if jx is None else jx.to(self.theta.dtype)
        self._jy_t: Tensor | None = None  # J_y^T of the unscaled network (exact mode), once formed
        if self.jx is not None and tuple(self.jx.shape) != (self.n, self.p):
            raise ValueError(f"output Jacobian has shape {tuple(jx.shape)}, expected ({self.n}, {self.p})")

    # -- helpers
    def _unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        out, i = {}, 0
        for k, shape, n in zip(self.names, self.shapes, self.numels):
            out[k] = flat[i:i + n].view(shape)
            i += n
        return out

    def flatten(self, tensors: Mapping[str, Tensor]) -> Tensor:
        """Flat parameter vector from a name -> tensor mapping (e.g. :func:`snapshot`)."""
        missing = [k for k in self.names if k not in tensors]
        if missing:
            raise ValueError(f"parameter snapshot lacks {missing[:3]}{'...' if len(missing) > 3 else ''}")
        return torch.cat([tensors[k].detach().reshape(-1).to(self.theta) for k in self.names])

    def _call_model(self, params: dict[str, Tensor]) -> Tensor:
        # Same calling convention as the engine: model(z), or model() without input.
        args = () if self.z is None else (self.z,)
        return torch.func.functional_call(self.model, params, args)

    def _model_flat(self, flat: Tensor) -> Tensor:
        return self._call_model(self._unflatten(flat)).reshape(-1).to(self.theta.dtype)

    def _select(self, yflat: Tensor) -> Tensor:
        return yflat if self.mask is None else yflat[self.mask]

    def _forward_flat(self, xflat: Tensor) -> Tensor:
        if self.forward is None:
            return self._select(xflat)
        # Products live in the parameters' dtype (a float64 FEM forward on a float32 net).
        out = self.forward(xflat.view(self.x_shape).to(self.x_dtype)).reshape(-1)
        return self._select(out.to(self.theta.dtype))

    # -- products
    def jvp_x(self, v: Tensor) -> Tensor:
        """``J_x v`` (flat output) for a flat parameter direction ``v``."""
        if self.scale is not None:
            v = v * self.scale
        if self.jx is not None:
            return self.jx @ v.to(self.jx.dtype)
        return _jvp(self._model_flat, self.theta, v, self, "_fwd_mode_x")

    def apply_forward(self, dx: Tensor) -> Tensor:
        """``F'(x*) dx`` restricted to the measurement mask (flat)."""
        if self.forward is None:
            return self._select(dx)
        return _jvp(self._forward_flat, self.x.reshape(-1), dx, self, "_fwd_mode_f")

    def jvp_y(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """``(J_x v, J_y v)``."""
        jx = self.jvp_x(v)
        return jx, self.apply_forward(jx)

    def vjp_y(self, u: Tensor) -> Tensor:
        """``J_y^T u`` for a flat measurement-space vector ``u`` (length ``m``)."""
        if self.jx is not None:
            return self._explicit_vjp(u[:, None])[:, 0]
        # Plain reverse mode on a retained graph: works with any autograd.Function
        # (torch.func transforms need Functions written with setup_context).
        if self._vjp_fn is None:
            with torch.enable_grad():
                th = self.theta.detach().requires_grad_(True)
                out = self._forward_flat(self._model_flat(th))
            self._vjp_fn = (th, out)
        th, out = self._vjp_fn
        (g,) = torch.autograd.grad(out, th, grad_outputs=u.to(out.dtype), retain_graph=True)
        return g if self.scale is None else g * self.scale

    def vjp_y_many(self, us: Tensor, batch: int = 1) -> Tensor:
        """``J_y^T [u_1 ... u_b]`` (``(p, b)``) for the columns of ``us`` (``(m, b)``).

        ``batch > 1`` runs ``batch`` cotangents through one vectorised backward pass
        (``is_grads_batched``: one pass of matrix products instead of ``batch`` passes of
        vector products); a graph that cannot be vectorised (an ``autograd.Function``
        without vmap support, e.g. a FEM adjoint) falls back to one VJP per column.
        """
        cols = us.shape[1]
        if self.jx is not None:
            return torch.cat([self._explicit_vjp(us[:, s:s + 256]) for s in range(0, cols, 256)], dim=1)
        if batch <= 1 or getattr(self, "_no_batched_vjp", False):
            return torch.stack([self.vjp_y(us[:, j]) for j in range(cols)], dim=1)
        self.vjp_y(us[:, 0])  # builds the retained graph
        th, out = self._vjp_fn
        parts = []
        try:
            for s in range(0, cols, batch):
                block = us[:, s:s + batch].T.to(out.dtype).contiguous()
                (g,) = torch.autograd.grad(out, th, grad_outputs=block, retain_graph=True, is_grads_batched=True)
                parts.append(g.T if self.scale is None else g.T * self.scale[:, None])
        except (RuntimeError, NotImplementedError):
            self._no_batched_vjp = True
            return torch.stack([self.vjp_y(us[:, j]) for j in range(cols)], dim=1)
        return torch.cat(parts, dim=1)


    def _explicit_vjp(self, us: Tensor) -> Tensor:
        """``J_x^T F'(x*)^T U`` for columns ``U`` ``(m, b)`` with the explicit ``J_x``."""
        if self.forward is None:
            gx = us if self.mask is None else torch.zeros(self.n, us.shape[1], dtype=us.dtype,
                                                          device=us.device).index_copy_(
                0, torch.nonzero(self.mask).reshape(-1), us)
        else:
            with torch.enable_grad():
                x = self.x.reshape(-1).detach().requires_grad_(True)
                out = self._forward_flat(x)
            try:  # one vectorised backward pass through the forward model
                (gx,) = torch.autograd.grad(out, x, grad_outputs=us.T.to(out.dtype).contiguous(), retain_graph=True,
                                            is_grads_batched=True)
                gx = gx.T
            except (RuntimeError, NotImplementedError):
                gx = torch.stack([torch.autograd.grad(out, x, grad_outputs=us[:, j].to(out.dtype),
                                                      retain_graph=True)[0] for j in range(us.shape[1])], dim=1)
        g = self.jx.T @ gx.to(self.jx.dtype)
        return g if self.scale is None else g * self.scale[:, None]


def _jvp(fn: Callable[[Tensor], Tensor], primal: Tensor, tangent: Tensor, owner: Any, flag: str) -> Tensor:
    """Forward-mode JVP; falls back to the double-backward trick for ops without forward AD."""
    if getattr(owner, flag):
        try:
            return torch.func.jvp(fn, (primal,), (tangent,))[1]
        except (NotImplementedError, RuntimeError):
            setattr(owner, flag, False)
    # J v = d/du <J^T u, v> with u a dummy cotangent (exact; costs two reverse passes).
    with torch.enable_grad():
        x = primal.detach().requires_grad_(True)
        out = fn(x)
        u = torch.zeros_like(out, requires_grad=True)
        (g,) = torch.autograd.grad(out, x, grad_outputs=u, create_graph=True)
        (jv,) = torch.autograd.grad(g, u, grad_outputs=tangent)
    return jv.detach()


def pointwise_jacobian(model: nn.Module, z: Tensor, chunk: int = 256) -> Tensor:
    """``J_x`` ``(n, p)`` of a network that maps each row of ``z`` ``(n, d)`` to one output on its own.

    The rows are per-sample gradients (``torch.func.vmap`` of ``grad`` over the rows, ``chunk``
    rows at a time), in the order of the trainable parameters (as :class:`JacobianOperator`
    flattens them).  Far cheaper than ``m`` vector-Jacobian products when ``m`` is large: one
    batched backward pass instead of one per measurement.  The caller guarantees that row
    ``i`` of the output depends on row ``i`` of ``z`` only (checked on two rows).
    """
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}

    def one(p: dict, zi: Tensor) -> Tensor:
        return torch.func.functional_call(model, p, (zi[None],)).reshape(())

    with torch.no_grad():
        full = model(z).reshape(-1)
        if full.numel() != z.shape[0]:
            raise ValueError(f"pointwise_jacobian needs one output per input row, got {full.numel()} for {z.shape[0]}")
        single = torch.func.functional_call(model, params, (z[:2],)).reshape(-1)
        if not torch.allclose(single, full[:2], rtol=1e-5, atol=1e-7):
            raise ValueError("the network's outputs depend on other rows: it is not pointwise")
    grads = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0), chunk_size=chunk)(params, z)
    return torch.cat([grads[k].reshape(z.shape[0], -1) for k in params], dim=1)


# --------------------------------------------------------------------------- randomized SVD
def randomized_svd(
    matvec: Callable[[Tensor], Tensor],
    rmatvec: Callable[[Tensor], Tensor],
    shape: tuple[int, int],
    rank: int,
    *,
    oversample: int = 10,
    power_iterations: int = 1,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    on_first_products: Callable[[Tensor, Tensor], None] | None = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Rank-``k`` SVD ``A ~ U diag(S) V^T`` of an ``m x p`` operator known by products.

    Halko-Martinsson-Tropp: ``Y = A Omega`` with Gaussian ``Omega`` (``p x (k + oversample)``),
    ``power_iterations`` rounds of ``Q <- orth(A orth(A^T Q))``, then the SVD of the small
    ``B = Q^T A``.  Costs ``(k + oversample)(1 + power_iterations)`` products with each of
    ``A`` and ``A^T``.  ``matvec(v)`` returns ``A v`` (length ``m``), ``rmatvec(u)`` returns
    ``A^T u`` (length ``p``).  ``on_first_products(omega_j, j)`` is called with each probe of
    the first pass (used for Hutchinson estimates without extra products).
    Returns ``U (m x k)``, ``S (k,)`` descending, ``V (p x k)``.
    """
    m, p = shape
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    ell = min(rank + oversample, m, p)
    rank = min(rank, ell)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=ell * (2 + 2 * power_iterations), desc="randomized SVD", leave=False)

    def tick():
        if bar is not None:
            bar.update(1)

    Y = torch.empty(m, ell, dtype=dtype, device=device)
    for j in range(ell):
        w = torch.randn(p, generator=generator, dtype=dtype).to(device)
        Y[:, j] = matvec(w) if on_first_products is None else on_first_products(w, j)
        tick()
    Q, _ = torch.linalg.qr(Y)
    for _ in range(power_iterations):
        Z = torch.empty(p, ell, dtype=dtype, device=device)
        for j in range(ell):
            Z[:, j] = rmatvec(Q[:, j])
            tick()
        Qz, _ = torch.linalg.qr(Z)
        del Z
        for j in range(ell):
            Y[:, j] = matvec(Qz[:, j])
            tick()
        del Qz
        Q, _ = torch.linalg.qr(Y)
    Bt = torch.empty(p, ell, dtype=dtype, device=device)  # B^T = A^T Q
    for j in range(ell):
        Bt[:, j] = rmatvec(Q[:, j])
        tick()
    if bar is not None:
        bar.close()
    # B = Q^T A = Ub S V^T  <=>  B^T = V S Ub^T
    V, S, Ubt = torch.linalg.svd(Bt, full_matrices=False)
    U = Q @ Ubt.T
    return U[:, :rank].contiguous(), S[:rank].contiguous(), V[:, :rank].contiguous()


# --------------------------------------------------------------------------- evidence
def log_evidence(log_alpha: float, log_beta: float, s2: np.ndarray, d_proj2: np.ndarray, d_perp2: float, m: int,
                 tail: float = 0.0) -> float:
    """Log marginal likelihood of the rank-k linear-Gaussian model (see the module docstring).

    ``s2``: squared singular values ``s_i^2``; ``d_proj2``: ``(u_i^T d)^2``; ``d_perp2``:
    ``||d - U U^T d||^2``; ``m``: number of measurements; ``tail``: mean squared singular
    value ``t`` of the ``m - k`` directions beyond the rank (their prior variance is
    ``t / alpha``, isotropic: 0 treats them as pure noise).
    """
    a, b = math.exp(log_alpha), math.exp(log_beta)
    k = len(s2)
    var = s2 / a + 1.0 / b
    var_perp = tail / a + 1.0 / b
    return float(-0.5 * np.sum(np.log(var) + d_proj2 / var) - 0.5 * (m - k) * math.log(var_perp)
                 - 0.5 * d_perp2 / var_perp - 0.5 * m * math.log(2 * math.pi))


def fit_precisions(s: Tensor | np.ndarray, d_proj: Tensor | np.ndarray, d_perp2: float, m: int,
                   alpha: float | None = None, beta: float | None = None, tail: float = 0.0) -> tuple[float,
                                                                                                      float, float]:
    """Maximise :func:`log_evidence` over ``alpha`` and/or ``beta`` (a fixed one is kept).

    Returns ``(alpha, beta, log_evidence)``.  The optimisation is over ``log alpha`` and
    ``log beta`` (L-BFGS-B from a moment-matching start), so both stay positive.
    """
    from scipy.optimize import minimize

    s2 = np.asarray(torch.as_tensor(s).double().cpu()) ** 2
    dp2 = np.asarray(torch.as_tensor(d_proj).double().cpu()) ** 2
    k = len(s2)
    if m <= k and beta is None:
        raise ValueError(f"cannot fit the noise precision with m={m} measurements <= rank {k}")
    # Moment-matching start: noise from the unexplained part, prior from the explained part.
    noise_var0 = d_perp2 / max(m - k, 1) if d_perp2 > 0 else float(np.mean(dp2)) * 1e-3 + 1e-30
    b0 = 1.0 / noise_var0 if beta is None else beta
    excess = np.clip(dp2 - 1.0 / b0, 1e-30, None)
    a0 = float(np.sum(s2) / np.sum(excess)) if alpha is None else alpha
    x0 = []
    if alpha is None:
        x0.append(math.log(max(a0, 1e-30)))
    if beta is None:
        x0.append(math.log(max(b0, 1e-30)))
    if not x0:
        return alpha, beta, log_evidence(math.log(alpha), math.log(beta), s2, dp2, d_perp2, m, tail)

    def unpack(v):
        i = 0
        la = math.log(alpha) if alpha is not None else v[i]
        i += alpha is None
        lb = math.log(beta) if beta is not None else v[i]
        return la, lb

    def neg(v):
        la, lb = unpack(v)
        return -log_evidence(la, lb, s2, dp2, d_perp2, m, tail)

    best = minimize(neg, np.array(x0), method="L-BFGS-B", bounds=[(-80.0, 80.0)] * len(x0))
    la, lb = unpack(best.x)
    a = alpha if alpha is not None else math.exp(la)
    b = beta if beta is not None else math.exp(lb)
    return a, b, -float(best.fun)


# --------------------------------------------------------------------------- result
@dataclass
class LinearisedUncertainty:
    """What :func:`linearised_laplace` returns.

    ``std``: predictive standard deviation of the reconstruction (shape of the output,
    epistemic only); ``std_noisy``: with the noise variance ``1/beta`` added (identity
    forward model only, else None); ``std_observed`` / ``std_unobserved``: the two terms of
    the variance (posterior in the rank-k measured subspace; prior left elsewhere) as
    standard deviations; ``alpha``, ``beta``: prior and noise precisions (``noise_std =
    beta^-1/2`` in measurement units); ``singular_values`` of ``J_y`` (descending);
    ``rank``; ``log_evidence``; ``timings`` in seconds; ``mean``: the linearisation point
    ``G_theta*(z)``.
    """

    mean: Tensor
    std: Tensor
    std_noisy: Tensor | None
    std_observed: Tensor
    std_unobserved: Tensor
    alpha: float
    beta: float
    singular_values: Tensor
    rank: int
    log_evidence: float
    tail: float
    n_parameters: int
    n_measurements: int
    timings: dict[str, float] = field(default_factory=dict)
    left_singular_vectors: Tensor | None = None
    group_alphas: dict[str, float] | None = None
    covariance_factor: Tensor | None = None

    def functional_variance(self, apply: Callable[[Tensor], Tensor], factor: Tensor | None = None) -> Tensor:
        """``diag(L Cov(x) L^T)`` for a linear map ``L`` of the reconstruction (needs ``keep_factor``).

        ``apply`` maps a batch of ``r`` outputs ``(r, *shape[1:])`` (``shape``: that of
        ``mean``, batch of one) to ``(r, ...)``; the result has the shape of one mapped output.
        ``factor``: a factor other than this posterior's (e.g. :func:`condition_factor`'s).
        """
        F = self.covariance_factor if factor is None else factor
        if F is None:
            raise ValueError("functional_variance needs the covariance factor: pass keep_factor=True")
        G = apply(F.T.reshape(F.shape[1], *self.mean.shape[1:]).to(self.mean.dtype))
        return G.double().pow(2).sum(dim=0)

    @property
    def noise_std(self) -> float:
        return self.beta ** -0.5

    def summary(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "beta": self.beta,
            "noise_std": self.noise_std,
            "rank": self.rank,
            "log_evidence": self.log_evidence,
            "n_parameters": self.n_parameters,
            "n_measurements": self.n_measurements,
            "mean_std": float(self.std.mean()),
            "singular_value_max": float(self.singular_values[0]),
            "singular_value_min": float(self.singular_values[-1]),
            "timings_s": dict(self.timings),
            **({"group_alphas": dict(self.group_alphas)} if self.group_alphas else {}),
        }


def linearised_laplace(
    model: nn.Module,
    z: Any,
    y: Tensor,
    *,
    forward: Callable[[Tensor], Tensor] | None = None,
    rank: int = 64,
    oversample: int = 10,
    power_iterations: int = 1,
    prior_mean: Mapping[str, Tensor] | str | None = None,
    alpha: float | None = None,
    beta: float | None = None,
    extra_probes: int = 0,
    tail_model: str = "none",
    method: str = "auto",
    seed: int = 0,
    keep_vectors: bool = False,
    keep_factor: bool = False,
    progress: bool = False,
    vjp_batch: int = 1,
    prior_groups: str = "none",
    group_precisions: str = "evidence",
    group_bound: float = 1e4,
    output_jacobian: Tensor | None = None,
) -> LinearisedUncertainty:
    """Linearised Laplace posterior of a fitted network and its pixelwise predictive std.

    Parameters
    ----------
    model, z, forward:
        The fitted network at ``theta*``, its input and the forward model (None: identity).
    y:
        The measurements that were fitted (non-finite entries are left out).
    rank, oversample, power_iterations:
        Randomized SVD settings for ``J_y``; cost ``~2 (rank + oversample)(1 + power_iterations)``
        Jacobian products, plus ``rank`` more JVPs when ``forward`` is not the identity.
    prior_mean:
        ``theta_0``: a parameter snapshot (:func:`snapshot` taken before fitting, the
        natural choice for gradient-descent fits), ``"zero"`` (default when None), or
        ``"fitted"`` (``theta*``; then the evidence sees only the residual).
    alpha, beta:
        Fix a precision instead of fitting it by marginal likelihood.
    tail_model:
        ``"none"`` (default): the ``m - k`` measurement directions beyond the rank are pure
        noise in the evidence (the exact evidence of the rank-k subspace model).
        ``"isotropic"``: they get the prior variance ``t / alpha`` with ``t`` their mean
        squared singular value (a projected Hutchinson estimate of
        ``tr(J_y^T J_y) - sum_i s_i^2``); needs a fixed ``beta`` (else tail and noise cannot be
        told apart).  Measured on DIP denoising and CT it gave too small a std (it raises
        alpha), so it is not the default.
    method:
        ``"randomized"`` (Halko SVD through JVPs and VJPs), ``"exact"`` (``J_y^T`` formed by
        ``m`` VJPs; needs no forward-mode product through ``forward``), or ``"auto"``
        (exact when ``m <= rank + oversample``: few measurements, e.g. EIT electrodes).
    extra_probes:
        Additional Hutchinson probes for the unobserved-variance term (the first
        ``rank + oversample`` probes of the range finder are always reused).
    seed:
        Seed of the Gaussian probes.
    keep_vectors:
        Keep the left singular vectors ``U`` (measurement space) in the result.
    keep_factor:
        Keep ``covariance_factor`` ``F`` ``(n, k + ell)`` with ``Cov(x) ~ F F^T``: the columns
        ``J_x v_j / (beta s_j^2 + alpha)^1/2`` of the observed subspace and the projected probe
        products ``J_x (I - V V^T) w_j / (alpha ell)^1/2`` of the rest (the same estimate as
        ``std``, whose square is its row norms), for the variance of any linear functional
        (:meth:`LinearisedUncertainty.functional_variance`) and for conditioning on new
        measurements (:func:`condition_factor`).
    prior_groups, group_precisions, group_bound:
        ``prior_groups="none"`` (default): one prior precision ``alpha``.  ``"layer"`` /
        ``"tensor"``: one precision per module / per parameter tensor (:mod:`shared.layer_precisions`),
        ``group_precisions="evidence"``: by type-II maximum likelihood in the basis of a first
        SVD (each within a factor ``group_bound`` of the one-precision value); ``"rms"``:
        ``alpha_g`` proportional to ``1 / mean(theta*_g^2)`` with the level by marginal
        likelihood.  The SVD of the whitened Jacobian ``J_y diag(alpha_g)^-1/2`` is then
        recomputed (twice the SVD cost) and the posterior is that of the per-group prior
        (``group_alphas`` in the result).
    vjp_batch:
        ``method="exact"``: cotangents per vectorised backward pass when ``J_y^T`` is formed
        (:meth:`JacobianOperator.vjp_y_many`; 1, the default, is one VJP per measurement).
    output_jacobian:
        ``J_x`` ``(n, p)`` formed by the caller (e.g. per-sample gradients of a network applied
        point by point, :func:`pointwise_jacobian`); the network is then never differentiated
        again, and ``J_y^T`` is one matrix product with ``F'(x*)^T``.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    y = y.detach()
    finite = torch.isfinite(y)
    op = JacobianOperator(model, z, forward, mask=finite, jx=output_jacobian)
    if tuple(y.shape) != tuple(op.y_shape):
        raise ValueError(f"measurements have shape {tuple(y.shape)} but the model predicts {tuple(op.y_shape)}")
    if tail_model not in ("none", "isotropic"):
        raise ValueError(f"tail_model must be 'isotropic' or 'none', got {tail_model!r}")
    names, index = parameter_groups(op.names, op.numels, prior_groups)  # validates prior_groups
    _check_group_options(prior_groups, group_precisions, alpha)
    sp = _spectrum(op, rank, oversample, power_iterations, method, seed, progress, vjp_batch)
    timings["svd_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    d = _linearised_residual(op, y, finite, prior_mean, sp.jy_apply)
    ev = _evidence(op, sp, d, seed, tail_model, alpha, beta)
    timings["evidence_s"] = time.perf_counter() - t1
    groups = None
    if prior_groups != "none" and len(names) > 1:
        t1 = time.perf_counter()
        sp, ev, groups = _group_posterior(op, sp, ev, d, names, index, group_precisions, group_bound, beta,
                                          (rank, oversample, power_iterations, method, seed, progress, vjp_batch),
                                          tail_model)
        timings["groups_s"] = time.perf_counter() - t1
    a, b, logev, VtW, tail = ev.alpha, ev.beta, ev.log_evidence, ev.VtW, ev.tail

    t2 = time.perf_counter()
    var_obs, var_un, factor = _predictive_variance(op, sp, VtW, a, b, tail, forward is None, extra_probes, seed,
                                                   keep_factor)
    timings["variance_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0

    var = var_obs + var_un
    shape = op.x_shape
    return LinearisedUncertainty(
        mean=op.x.clone(),
        std=var.clamp_min(0).sqrt().view(shape),
        std_noisy=(var + 1.0 / b).sqrt().view(shape) if forward is None else None,
        std_observed=var_obs.clamp_min(0).sqrt().view(shape),
        std_unobserved=var_un.clamp_min(0).sqrt().view(shape),
        alpha=a,
        beta=b,
        singular_values=sp.S.detach().cpu(),
        rank=sp.S.numel(),
        log_evidence=logev,
        tail=tail,
        n_parameters=op.p,
        n_measurements=op.m,
        timings=timings,
        left_singular_vectors=sp.U.detach().cpu() if keep_vectors else None,
        group_alphas=groups,
        covariance_factor=factor,
    )


@dataclass
class _Evidence:
    alpha: float
    beta: float
    log_evidence: float
    d_proj: Tensor
    d_perp2: float
    VtW: Tensor
    tail: float


def _evidence(op: JacobianOperator, sp: _Spectrum, d: Tensor, seed: int, tail_model: str, alpha: float | None,
              beta: float | None) -> _Evidence:
    """Project the residual on the SVD basis and fit the precisions by marginal likelihood."""
    d_proj = sp.U.T @ d
    d_perp2 = float(torch.clamp(d.double().pow(2).sum() - d_proj.double().pow(2).sum(), min=0.0))
    # Regenerate the first-pass probes w_j: V^T w_j gives the projected products
    # J (I - V V^T) w_j = J w_j - (J V)(V^T w_j) for the Hutchinson estimates.
    sp.gen.manual_seed(seed + _PROBE_OFFSET)
    VtW = torch.empty(sp.S.numel(), sp.ell, dtype=op.theta.dtype, device=op.theta.device)
    for j in range(sp.ell):
        VtW[:, j] = sp.V.T @ torch.randn(op.p, generator=sp.gen, dtype=op.theta.dtype).to(op.theta.device)
    tail = _tail(sp, op, VtW, tail_model)
    a, b, logev = fit_precisions(sp.S, d_proj, d_perp2, op.m, alpha=alpha, beta=beta, tail=tail)
    return _Evidence(a, b, logev, d_proj, d_perp2, VtW, tail)


def _check_group_options(prior_groups: str, group_precisions: str, alpha: float | None) -> None:
    if group_precisions not in ("evidence", "rms"):
        raise ValueError(f"group_precisions must be 'evidence' or 'rms', got {group_precisions!r}")
    if alpha is not None and prior_groups != "none":
        raise ValueError("a fixed alpha and per-group prior precisions exclude each other")


def _group_posterior(op: JacobianOperator, sp: _Spectrum, ev: _Evidence, d: Tensor, names: list[str],
                     index: Tensor, how: str, bound: float, beta: float | None, svd_args: tuple,
                     tail_model: str) -> tuple[_Spectrum, _Evidence, dict[str, float]]:
    """Per-group precisions (``how``: ``"evidence"`` or ``"rms"``), then the SVD and evidence
    of the whitened Jacobian ``J diag(s)``, ``s_g = (alpha / alpha_g)^1/2``."""
    if how == "evidence":
        alpha_g, _, _ = fit_group_precisions(sp.S, sp.V, index, len(names), ev.d_proj, ev.d_perp2, op.m,
                                             ev.alpha, ev.beta, fit_beta=beta is None, bound=bound)
    else:  # "rms": alpha_g proportional to 1 / mean(theta*_g^2), the layer's own weight scale
        alpha_g = group_rms_precisions(op.theta, index, len(names), ev.alpha)
    # The rank-k subspace is recomputed for the whitened Jacobian: that of the per-group prior.
    op.scale = torch.as_tensor(np.sqrt(ev.alpha / alpha_g), dtype=op.theta.dtype)[index].to(op.theta.device)
    alpha_ref = ev.alpha
    rank, oversample, power_iterations, method, seed, progress, vjp_batch = svd_args
    sp = _spectrum(op, rank, oversample, power_iterations, method, seed, progress, vjp_batch)
    ev = _evidence(op, sp, d, seed, tail_model, None, beta)
    return sp, ev, {n: float(ev.alpha * ag / alpha_ref) for n, ag in zip(names, alpha_g)}


_PROBE_OFFSET = 7919  # seed offset of the first-pass Gaussian probes


@dataclass
class _Spectrum:
    """Truncated SVD ``J_y ~ U diag(S) V^T`` and the first-pass probe products."""

    U: Tensor
    S: Tensor
    V: Tensor
    first_jx: Tensor      # J_x w_j of the first-pass probes (n, ell)
    first_jy: Tensor      # J_y w_j (m, ell) (randomized method only)
    ell: int
    method: str
    tail_exact: float
    jy_apply: Callable[[Tensor], Tensor]
    gen: torch.Generator


def _spectrum(op: JacobianOperator, rank: int, oversample: int, power_iterations: int, method: str, seed: int,
              progress: bool, vjp_batch: int = 1) -> _Spectrum:
    """The leading singular triplets of ``J_y``, exactly (``m`` VJPs) or by a randomized SVD."""
    dtype, device = op.theta.dtype, op.theta.device
    gen = torch.Generator().manual_seed(seed)
    # First-pass probes: keep J_x w for the Hutchinson estimate (no extra products).
    ell = min(rank + oversample, op.m, op.p)
    first_jx = torch.empty(op.n, ell, dtype=dtype, device=device)
    first_jy = torch.empty(op.m, ell, dtype=dtype, device=device)

    def first_products(w: Tensor, j: int) -> Tensor:
        jx, jy = op.jvp_y(w)
        first_jx[:, j] = jx
        first_jy[:, j] = jy
        return jy

    if method == "auto":
        method = "exact" if op.m <= rank + oversample else "randomized"
    if method == "exact":
        # m is small: form J_y^T column by column with m vector-Jacobian products (no
        # forward-mode product through the forward model is needed, e.g. a FEM solve
        # whose autograd Function only has a backward).
        # J_y^T of the unscaled network, kept on the operator: a whitened second pass
        # (per-layer precisions) only rescales its rows.
        if op._jy_t is None:
            saved, op.scale = op.scale, None
            op._jy_t = op.vjp_y_many(torch.eye(op.m, dtype=dtype, device=device), batch=vjp_batch)
            op.scale = saved
        Jy_T = op._jy_t if op.scale is None else op._jy_t * op.scale[:, None]
        U, S, V = _thin_svd(Jy_T)
        tail_exact = float(S[rank:].double().pow(2).sum()) / max(op.m - min(rank, S.numel()), 1)
        U, S, V = U[:, :rank].contiguous(), S[:rank].contiguous(), V[:, :rank].contiguous()
        gen.manual_seed(seed + _PROBE_OFFSET)
        for j in range(ell):
            first_jx[:, j] = op.jvp_x(torch.randn(op.p, generator=gen, dtype=dtype).to(device))
        return _Spectrum(U, S, V, first_jx, first_jy, ell, method, tail_exact, lambda v: Jy_T.T @ v, gen)
    if method != "randomized":
        raise ValueError(f"method must be 'auto', 'randomized' or 'exact', got {method!r}")
    # Probes of the first pass are regenerated later from the same generator state.
    gen.manual_seed(seed + _PROBE_OFFSET)
    U, S, V = randomized_svd(
        lambda v: op.jvp_y(v)[1], op.vjp_y, (op.m, op.p), rank, oversample=oversample,
        power_iterations=power_iterations, generator=gen, dtype=dtype, device=device,
        on_first_products=first_products, progress=progress,
    )
    return _Spectrum(U, S, V, first_jx, first_jy, ell, method, 0.0, lambda v: op.jvp_y(v)[1], gen)


def _thin_svd(Jy_T: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``J_y = U diag(S) V^T`` from ``J_y^T`` ``(p, m)``, singular values descending.

    With more parameters than measurements, the eigendecomposition of the ``m x m`` Gram
    matrix ``J_y J_y^T = U S^2 U^T`` (float64) is cheaper than a thin SVD of the ``p x m``
    matrix (which took 29 s for a neural EIT conductivity, m = 2356, p = 50k, on a loaded core);
    its squared condition number only costs accuracy in directions far below the leading ones.
    """
    p, m = Jy_T.shape
    if p < m:
        V, S, Ut = torch.linalg.svd(Jy_T, full_matrices=False)
        return Ut.T, S, V
    J64 = Jy_T.double()
    evals, U = torch.linalg.eigh(J64.T @ J64)
    evals, U = evals.flip(0).clamp_min(0.0), U.flip(1)
    S = evals.sqrt()
    keep = S > S[0] * 1e-7 if S.numel() and S[0] > 0 else torch.zeros_like(S, dtype=torch.bool)
    V = torch.zeros_like(J64[:, :m])
    V[:, keep] = (J64 @ U[:, keep]) / S[keep]
    return U.to(Jy_T.dtype), S.to(Jy_T.dtype), V.to(Jy_T.dtype)


def _linearised_residual(op: JacobianOperator, y: Tensor, finite: Tensor, prior_mean: Any,
                         jy_apply: Callable[[Tensor], Tensor]) -> Tensor:
    """``d = y - F(x*) - J_y (theta_0 - theta*)``, the residual of the linearised model at the prior mean."""
    y_sel = y.reshape(-1)[finite.reshape(-1)] if not bool(finite.all()) else y.reshape(-1)
    d = y_sel.to(op.theta.dtype) - op._select(op.y_pred.reshape(-1))
    # jy_apply is the product of the (possibly whitened) operator: J_y v = J_y,s (v / s).
    unscale = (lambda v: v) if op.scale is None else (lambda v: v / op.scale)  # noqa: E731
    if prior_mean is None or (isinstance(prior_mean, str) and prior_mean == "zero"):
        return d + jy_apply(unscale(op.theta))  # d = y - F(x*) - J_y (0 - theta*)
    if isinstance(prior_mean, str):
        if prior_mean != "fitted":
            raise ValueError(f"prior_mean must be a parameter snapshot, 'zero' or 'fitted', got {prior_mean!r}")
        return d
    return d - jy_apply(unscale(op.flatten(prior_mean) - op.theta))


def _tail(sp: _Spectrum, op: JacobianOperator, VtW: Tensor, tail_model: str) -> float:
    """Mean squared singular value of ``J_y`` beyond the rank (``tail_model="isotropic"``), else 0."""
    if tail_model != "isotropic":
        return 0.0
    if sp.method == "exact":
        return sp.tail_exact
    k = sp.S.numel()
    if op.m <= k:
        return 0.0
    # E ||J_y (I - V V^T) w||^2 = sum_{i>k} s_i^2 (low variance: the leading directions are removed).
    resid_y = sp.first_jy - (sp.U * sp.S) @ VtW
    return float(resid_y.double().pow(2).sum(dim=0).mean()) / (op.m - k)


def _predictive_variance(op: JacobianOperator, sp: _Spectrum, VtW: Tensor, a: float, b: float, tail: float,
                         identity: bool, extra_probes: int, seed: int,
                         keep_factor: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    """Variance of ``x`` in the observed subspace (exact, rank k) and beyond it (Hutchinson),
    and the covariance factor of the first-pass probes when asked for."""
    dtype, device, S, V = op.theta.dtype, op.theta.device, sp.S, sp.V
    if identity and op.mask is None:
        JxV = sp.U * S  # J_x V = J_y V = U S
    else:
        JxV = torch.stack([op.jvp_x(V[:, j]) for j in range(S.numel())], dim=1)
    var_obs = (JxV.pow(2) / (b * S.pow(2) + a)).sum(dim=1)
    # Hutchinson: J_x (I - V V^T) w = J_x w - (J_x V)(V^T w), with the first-pass probes.
    projected = sp.first_jx - JxV @ VtW
    acc = projected.double().pow(2).sum(dim=1)
    g2 = torch.Generator().manual_seed(seed + 104729)
    for _ in range(extra_probes):
        w = torch.randn(op.p, generator=g2, dtype=dtype).to(device)
        w = w - V @ (V.T @ w)
        acc += op.jvp_x(w).double().pow(2)
    var_un = (acc / (sp.ell + extra_probes)).to(dtype) / a
    shrink = 1.0
    if identity and op.mask is None:
        # Denoising: the tail directions are measured too; their posterior variance is the
        # prior's times the isotropic-tail shrinkage (1/beta) / (t/alpha + 1/beta).
        shrink = (1.0 / b) / (tail / a + 1.0 / b)
        var_un = var_un * shrink
    factor = None
    if keep_factor:
        factor = torch.cat([JxV / (b * S.pow(2) + a).sqrt(), projected * math.sqrt(shrink / (a * sp.ell))], dim=1)
    return var_obs, var_un, factor


def condition_factor(factor: Tensor, G: Tensor, noise_var: float) -> Tensor:
    """The covariance factor after observing ``y_L = L x + e``, ``e ~ N(0, noise_var I)``.

    ``factor`` ``F`` ``(n, r)`` with ``Cov(x) = F F^T``; ``G = L F`` ``(q, r)`` (flattened rows).
    The Gaussian update ``Cov' = Cov - Cov L^T (L Cov L^T + s I)^-1 L Cov`` is, in factored
    form, ``F' = F (I + G^T G / s)^-1/2`` (an ``r x r`` eigendecomposition).
    """
    return (factor.double() @ conditioning_root(G, noise_var)).to(factor.dtype)


def conditioning_root(G: Tensor, noise_var: float) -> Tensor:
    """``(I + G^T G / s)^-1/2`` ``(r, r)`` (float64): the right factor of :func:`condition_factor`,
    for updating ``F`` or any products ``L' F`` with it."""
    M = torch.eye(G.shape[1], dtype=torch.float64) + G.double().T @ G.double() / noise_var
    evals, Q = torch.linalg.eigh(M)
    return (Q / evals.sqrt()) @ Q.T


@contextmanager
def batch_statistics(model: nn.Module):
    """Evaluate batch-norm layers with the statistics of the current batch, as in training,
    without updating their running averages (the function the fit optimised)."""
    from torch.nn.modules.batchnorm import _BatchNorm

    saved = []
    for mod in model.modules():
        if isinstance(mod, _BatchNorm) and mod.running_mean is not None:
            saved.append((mod, mod.running_mean, mod.running_var))
            mod.running_mean, mod.running_var = None, None
    try:
        yield model
    finally:
        for mod, mean, var in saved:
            mod.running_mean, mod.running_var = mean, var


def linearised_uncertainty(result: Any, rank: int = 64, batchnorm: str = "batch",
                           noise_std: Tensor | float | None = None, **kwargs) -> LinearisedUncertainty:
    """:func:`linearised_laplace` of a :class:`shared.fit.FitResult`, from the result alone.

    The fitted network (``result.model``), its input (``result.z``), the physics and the
    measurements (``result.objective``) are those of the fit; the network is linearised
    at its final parameters, so when a stopping rule selected an earlier output the std
    still refers to the final network.  ``noise_std`` (per measurement, or a float)
    whitens the measurements, ``A(x) / s`` against ``y / s`` with unit noise precision
    (``beta = 1``), the noise model of a weighted misfit; without it ``beta`` is fitted by
    marginal likelihood unless given.  ``batchnorm``: ``"batch"`` (default) evaluates
    batch-norm layers with batch statistics, the function the fit optimised (DIP trains
    on a batch of one); ``"running"`` uses their running averages (eval mode, as
    ``FitResult.final``).  ``result.mean`` is the network output at the linearisation
    point; compare errors against it.
    """
    objective = getattr(result, "objective", None)
    if objective is None or objective.y is None:
        raise ValueError("linearised_uncertainty needs a fit of measurements (a FitResult whose objective has y)")
    if batchnorm not in ("batch", "running"):
        raise ValueError(f"batchnorm must be 'batch' or 'running', got {batchnorm!r}")
    y, forward = objective.y, (objective.predict if objective.physics is not None else None)
    if noise_std is not None:
        s = noise_std.to(y.device) if isinstance(noise_std, Tensor) else noise_std
        y, forward = y / s, (lambda x: objective.predict(x) / s)
        kwargs.setdefault("beta", 1.0)
    model = result.model
    was_training = model.training
    model.eval()  # no dropout; batch norm as chosen below
    try:
        if batchnorm == "batch":
            with batch_statistics(model):
                return linearised_laplace(model, result.z, y, forward=forward, rank=rank, **kwargs)
        return linearised_laplace(model, result.z, y, forward=forward, rank=rank, **kwargs)
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------- calibration
def calibration(estimate: Tensor, std: Tensor, truth: Tensor, k: float = 2.0) -> dict[str, float]:
    """Calibration of a pixelwise Gaussian ``N(estimate, std^2)`` against the truth.

    Returns ``fraction_within`` (share of ``|e| <= k std``, ``e = estimate - truth``; 0.954
    is nominal for ``k = 2``), ``nominal``, ``test_log_likelihood`` (mean over pixels of
    ``log N(truth; estimate, std^2)``), ``baseline_log_likelihood`` (the same with the best
    constant std ``rms(e)``, chosen with the truth), ``rmse``, ``mean_std``,
    ``std_error_correlation`` (Pearson, between ``std`` and ``|e|``).
    """
    e = (estimate - truth).detach().double().reshape(-1)
    s = std.detach().double().reshape(-1).clamp_min(1e-12)
    if e.shape != s.shape:
        raise ValueError(f"std has {s.numel()} entries but the estimate has {e.numel()}")
    frac = float((e.abs() <= k * s).double().mean())
    ll = float((-0.5 * torch.log(2 * math.pi * s ** 2) - 0.5 * (e / s) ** 2).mean())
    rms = float(e.pow(2).mean().sqrt().clamp_min(1e-12))
    ll0 = -0.5 * math.log(2 * math.pi * rms ** 2) - 0.5
    ae = e.abs()
    corr = float(((ae - ae.mean()) * (s - s.mean())).mean() / (ae.std(unbiased=False) * s.std(unbiased=False) + 1e-30))
    return {
        "fraction_within": frac,
        "k": k,
        "nominal": math.erf(k / math.sqrt(2)),
        "test_log_likelihood": ll,
        "baseline_log_likelihood": ll0,
        "rmse": rms,
        "mean_std": float(s.mean()),
        "std_error_correlation": corr,
    }


def coverage(abs_error: Tensor | np.ndarray, std: Tensor | np.ndarray, ks: tuple[float, ...] = (1.0, 2.0),
             weights: Tensor | np.ndarray | None = None) -> dict[str, Any]:
    """Coverage of absolute errors by predicted standard deviations, and their correlation.

    For each ``k`` in ``ks``: ``within_<k>std = sum_i w_i [|e_i| <= k std_i] / sum_i w_i`` with
    its Gaussian nominal value ``erf(k / sqrt 2)`` (0.683 for ``k = 1``, 0.954 for ``k = 2``);
    ``weights`` ``w_i`` (e.g. cell areas, so that the share is one of the domain, not of
    the cells) default to 1.  ``std_error_correlation``: weighted Pearson correlation of
    ``std`` with ``|e|`` (does the std point at the larger errors?).  ``mean_std``,
    ``mean_abs_error``, ``rmse`` (weighted means) and ``n``.  ``abs_error`` and ``std``
    have the same number of entries (any shapes, flattened), in the same units.
    """
    e = np.abs(np.asarray(torch.as_tensor(abs_error).detach().double().cpu()).reshape(-1))
    s = np.asarray(torch.as_tensor(std).detach().double().cpu()).reshape(-1)
    if e.shape != s.shape:
        raise ValueError(f"std has {s.size} entries but the errors {e.size}")
    w = np.ones_like(e) if weights is None else np.asarray(torch.as_tensor(weights).double().cpu()).reshape(-1)
    if w.shape != e.shape or not np.all(w >= 0) or not w.sum() > 0:
        raise ValueError(f"weights must be {e.size} non-negative numbers with a positive sum")
    if not (np.isfinite(e).all() and np.isfinite(s).all()):
        raise ValueError("errors and std must be finite")
    w = w / w.sum()
    out: dict[str, Any] = {"n": int(e.size)}
    for k in ks:
        name = f"{k:g}std"
        out[f"within_{name}"] = float(np.sum(w * (e <= k * s)))
        out[f"nominal_{name}"] = math.erf(k / math.sqrt(2))
    me, ms = float(np.sum(w * e)), float(np.sum(w * s))
    cov = float(np.sum(w * (e - me) * (s - ms)))
    sd = math.sqrt(float(np.sum(w * (e - me) ** 2)) * float(np.sum(w * (s - ms) ** 2)))
    out["std_error_correlation"] = cov / sd if sd > 0 else 0.0
    out.update(mean_std=ms, mean_abs_error=me, rmse=math.sqrt(float(np.sum(w * e ** 2))))
    return out


def member_fits(result: Any, keep_dim: bool = False) -> list[Any]:
    """One :class:`shared.fit.FitResult` per member of an ensemble fit, to linearise each at its
    own weights (the fit itself when ``result.model`` has no ``members > 1``).

    Member ``k`` gets ``model.member(k)``, its share of the input (``model.member_input(z, k)``
    where the network defines it, else the shared ``z``) and row ``k`` of ``output`` and
    ``final`` (``[k:k+1]`` with ``keep_dim``, for networks whose single output keeps a batch
    axis, e.g. images); the objective (measurements and physics) is the ensemble's.
    """
    model = result.model
    K = getattr(model, "members", 1)
    if K == 1:
        return [result]
    split = getattr(model, "member_input", None)

    def row(t: Any, k: int) -> Any:
        return t if t is None else (t[k:k + 1] if keep_dim else t[k])

    return [replace(result, model=model.member(k), z=result.z if split is None else split(result.z, k),
                    output=row(result.output, k), final=row(result.final, k)) for k in range(K)]


def ensemble_statistics(means: Tensor | np.ndarray, stds: Tensor | np.ndarray | None = None,
                        centre: Tensor | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the equal mixture of ``K`` members' predictions.

    ``means`` ``(K, ...)``: the members' predictions ``mu_k``; ``stds`` (same shape, or None
    for point predictions): their own predictive std ``s_k`` (e.g. each member's linearised
    Laplace std).  The mixture ``(1/K) sum_k N(mu_k, s_k^2)`` has, elementwise::

        mean = (1/K) sum_k mu_k,    var = (1/K) sum_k s_k^2 + (1/K) sum_k (mu_k - mean)^2

    (the members' own uncertainty plus their disagreement; the second term is the deep-ensemble
    spread, with the population ``1/K``, not ``1/(K-1)``).  With ``centre`` ``c`` (same shape
    as one member: a point estimate other than the mean, e.g. a geometric mean) the returned
    std is the root mean square deviation of the mixture about it,
    ``sqrt(var + (mean - c)^2)``.  Returns numpy ``(mean, std)`` of one member's shape.
    """
    mu = np.asarray(torch.as_tensor(means).detach().double().cpu())
    if mu.ndim < 1 or mu.shape[0] < 1:
        raise ValueError(f"means must have a leading member axis (K, ...), got shape {mu.shape}")
    mean = mu.mean(axis=0)
    var = ((mu - mean) ** 2).mean(axis=0)
    if stds is not None:
        s = np.asarray(torch.as_tensor(stds).detach().double().cpu())
        if s.shape != mu.shape:
            raise ValueError(f"stds have shape {s.shape} but the means {mu.shape}")
        var = var + (s ** 2).mean(axis=0)
    if centre is not None:
        c = np.asarray(torch.as_tensor(centre).detach().double().cpu()).reshape(mean.shape)
        var = var + (mean - c) ** 2
    return mean, np.sqrt(var)


def mixture_factor(means: Tensor, factors: Sequence[Tensor]) -> Tensor:
    """A covariance factor of the equal mixture of ``K`` Gaussians ``N(mu_k, F_k F_k^T)``.

    ``means`` ``(K, n)``, ``factors``: ``K`` factors ``(n, r_k)``.  Returns
    ``F = [F_1, ..., F_K, mu_1 - m, ..., mu_K - m] / sqrt(K)`` ``(n, sum_k r_k + K)``, with ``m``
    the members' mean, so that::

        F F^T = (1/K) sum_k F_k F_k^T + (1/K) sum_k (mu_k - m)(mu_k - m)^T

    is the mixture's covariance (the moment-matched Gaussian; its diagonal is
    :func:`ensemble_statistics`' variance).  A linear map of the mixture (a projection at
    angles not yet measured) is then ``L F``, as for one posterior's factor.
    """
    mu = torch.as_tensor(means).double()
    if mu.ndim != 2 or mu.shape[0] != len(factors):
        raise ValueError(f"means must be (K, n) with one row per factor, got {tuple(mu.shape)} "
                         f"for {len(factors)} factors")
    if any(f.ndim != 2 or f.shape[0] != mu.shape[1] for f in factors):
        raise ValueError(f"every factor must be (n, r) with n = {mu.shape[1]}, got "
                         f"{[tuple(f.shape) for f in factors]}")
    spread = (mu - mu.mean(0)).T  # (n, K)
    return torch.cat([f.double() for f in factors] + [spread], dim=1) / math.sqrt(mu.shape[0])
