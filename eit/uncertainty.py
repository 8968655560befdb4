"""Uncertainty of a neural EIT conductivity: the linearised Laplace posterior of its fit.

The network ``sigma_theta`` is linearised at its fitted weights, ``sigma ~ sigma* + J_x (theta -
theta*)``, with a zero-centred Gaussian prior ``theta ~ N(0, alpha^-1 I)`` (the rule fixed for
fits from scratch; one precision for all weights by default, see
:func:`conductivity_uncertainty`) and the problem's noise model: the misfit is whitened by the
per-datum standard deviations ``s_i``, so the noise precision is 1 and only ``alpha`` is fitted,
by marginal likelihood.  The linearised Laplace posterior only sees the
forward model through its value and Jacobian at ``sigma*``, so ``F`` is replaced by its tangent
model::

    F(sigma) ~ F(sigma*) + J_F (sigma - sigma*),     J_F = dF/dsigma (sigma*)   (n_data x n_cells)

with ``J_F`` formed once by the adjoint method (``model.jacobian``: one factorisation and one
adjoint solve per measurement pattern).  The posterior is then exactly that of the FEM
model, but the ``m`` vector-Jacobian products of the exact mode (``J_y^T = J_x^T J_F^T``, at
most 2356 measurements for KTC) are matrix products instead of FEM adjoint solves
(:func:`shared.uncertainty.linearised_uncertainty`, ``method="exact"``).  Forward models
without a ``jacobian`` are differentiated through their VJP instead.

An ensemble fit (:class:`eit.NeuralEIT` with ``members = K``, the default ``K = 3``) is the
equal mixture of its members' linearised posteriors (:func:`shared.uncertainty.ensemble_statistics`):
each member is linearised on its own, and the reported std is the mixture's root mean square
deviation about the reconstruction ``sigma`` (the members' geometric mean)::

    std^2 = mean_k std_k^2 + var_k(sigma_k) + (mean_k sigma_k - sigma)^2

(the members' own uncertainty, their disagreement, and the offset of the geometric from the
arithmetic mean; the last is small).

The background level is a plug-in estimate, not a parameter of the fit: ``sigma = sigma_bg
exp(s_theta)`` with ``sigma_bg`` the homogeneous conductivity fitted to the water-only
reference (:func:`eit.problem.fit_background`), and difference data ``Uel - Uelref +
F(sigma_bg)`` tie the reconstruction's level to it.  Its error is forward-model error (mesh,
electrode geometry, contact impedances), which no noise model of the data holds: on simulated
tanks the 1.5k-vertex model put the water level 3-4 % low while the network's std in the
water was about 1 %, so 70-90 % of the cells fell outside 2 std.  The posterior therefore
treats ``log sigma_bg`` as uncertain, independent of ``theta``, with relative std ``delta``::

    Var(sigma_i) = Var_theta(sigma_i) + (delta sigma_i)^2        (first order in delta)

(one component shared by every cell).  ``delta`` defaults to the relative misfit of that
homogeneous fit, ``||F(sigma_bg 1) - Uelref|| / ||Uelref||`` (:func:`eit.problem.background_misfit`):
no truth is needed, and the model cannot claim the level more precisely than it reproduces
the water tank.  On 28 simulated cases that no benchmark reports, the level's actual error
was 0.83-0.97 of it.

The result is the predictive standard deviation of the conductivity in every inversion cell
(S/m; epistemic: the spread of the reconstruction, not of new data).  When the true
conductivity is known (simulated data) its calibration is reported
(:func:`shared.uncertainty.coverage`): the share of cells -- and of the tank's area -- whose
error ``|sigma - sigma_true|`` lies within 1 and 2 std (0.683 and 0.954 for a calibrated
Gaussian), and the correlation of std with ``|error|``; plus the Gaussian test
log-likelihood against the best constant std (:func:`shared.uncertainty.calibration`).
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from shared.fit import FitResult, Objective
from shared.result import Result
from shared.uncertainty import (batch_statistics, calibration, coverage, ensemble_statistics,
                               linearised_uncertainty, member_fits)

__all__ = ["conductivity_uncertainty", "background_level_std", "with_level", "uncertainty_files", "TangentModel",
           "METRICS_FILE"]

#: the JSON file of the uncertainty reports (one entry per method)
METRICS_FILE = "uncertainty.json"


def uncertainty_files(method: str) -> list[str]:
    """The files :func:`conductivity_uncertainty` writes for a method's result (and the report)."""
    return [f"std_{method}.png", f"std_{method}.xdmf", f"std_{method}.h5", METRICS_FILE]


class TangentModel:
    """``x -> F(x*) + J_F (x - x*)``: the first-order model of ``F`` at ``x*`` (torch, float64).

    ``f0`` ``(m,)``, ``jac`` ``(m, n)``, ``x0`` ``(n,)``.  Same value and Jacobian as ``F`` at
    ``x*``, hence the same linearised Laplace posterior; differentiable by autograd in both
    modes (a matrix product), on input ``(n,)`` or a batch ``(B, n)``.
    """

    def __init__(self, f0: np.ndarray, jac: np.ndarray, x0: np.ndarray) -> None:
        self.f0 = torch.as_tensor(np.asarray(f0, dtype=np.float64))
        self.jac = torch.as_tensor(np.asarray(jac, dtype=np.float64))
        self.x0 = torch.as_tensor(np.asarray(x0, dtype=np.float64))
        if self.jac.shape != (self.f0.numel(), self.x0.numel()):
            raise ValueError(f"Jacobian shape {tuple(self.jac.shape)} does not match ({self.f0.numel()}, "
                             f"{self.x0.numel()})")

    def __call__(self, x: Tensor) -> Tensor:
        dx = x.to(torch.float64) - self.x0.to(x.device)
        return self.f0.to(x.device) + dx @ self.jac.T.to(x.device)


def _tangent_fit(fit: FitResult, problem) -> FitResult:
    """The fit with its forward model replaced by the tangent model at the member's ``sigma*``."""
    if getattr(problem.model, "jacobian", None) is None:
        return fit  # differentiate through the FEM adjoint instead (one solve per measurement)
    model, was_training = fit.model, fit.model.training
    model.eval()
    try:  # the network as linearised_uncertainty evaluates it (batch statistics, no dropout)
        with torch.no_grad(), batch_statistics(model):
            sigma = model(fit.z).detach().double().cpu().numpy().reshape(-1)
    finally:
        model.train(was_training)
    if sigma.size != problem.model.n_sigma:  # not a conductivity per cell: keep the FEM adjoint
        return fit
    sol = problem.model.solve(sigma)
    tangent = TangentModel(sol.data, problem.model.jacobian(sol), sigma)
    return replace(fit, objective=Objective(fit.objective.y, physics=tangent, data=fit.objective.data))


def _cell_jacobian(fit: FitResult) -> Tensor | None:
    """``J_x`` by per-sample gradients when the network is a coordinate MLP (one conductivity
    per centroid, each from its own coordinates), else None (the products go through the net)."""
    from eit.conductivity import MLPConductivity
    from shared.uncertainty import pointwise_jacobian

    model = fit.model
    if not isinstance(model, MLPConductivity) or model.members != 1 or not isinstance(fit.z, Tensor):
        return None
    was_training = model.training
    model.eval()
    try:
        return pointwise_jacobian(model, fit.z).to(torch.float64)
    finally:
        model.train(was_training)


def _calibration(sigma: np.ndarray, std: np.ndarray, truth: np.ndarray, areas: np.ndarray | None) -> dict[str, Any]:
    """Coverage per cell and per area, correlation and test log-likelihood of ``N(sigma, std^2)``."""
    err = np.abs(sigma - truth)
    cal = coverage(err, std)
    if areas is not None:
        by_area = coverage(err, std, weights=areas)
        cal.update({f"{k}_area": v for k, v in by_area.items() if k.startswith("within_")})
    gauss = calibration(torch.as_tensor(sigma), torch.as_tensor(std), torch.as_tensor(truth))
    cal.update(fraction_within=gauss["fraction_within"], k=gauss["k"], nominal=gauss["nominal"],
               test_log_likelihood=gauss["test_log_likelihood"],
               baseline_log_likelihood=gauss["baseline_log_likelihood"])
    return cal


def background_level_std(problem) -> float:
    """``delta``, the relative std of the background level (module docstring): the problem's
    homogeneous-fit misfit, 0 when the problem does not record one (a known background)."""
    value = problem.info.get("bg_misfit") if isinstance(getattr(problem, "info", None), dict) else None
    return 0.0 if value is None else float(value)


def with_level(std: np.ndarray, sigma: np.ndarray, delta: float) -> np.ndarray:
    """``sqrt(std^2 + (delta sigma)^2)``: a conductivity std with the background level's share
    (relative std ``delta``, the same component in every cell; module docstring)."""
    return np.sqrt(np.asarray(std) ** 2 + (delta * np.asarray(sigma)) ** 2)


def conductivity_uncertainty(result: Result, problem, rank: int = 128, progress: bool = False,
                             level_std: float | None = None, **posterior: Any) -> Result:
    """Per-cell std (S/m) of a neural reconstruction ``result`` of ``problem`` (module docstring).

    ``level_std``: ``delta``, the relative std of the background level (None: the problem's
    :func:`background_level_std`; 0: the network's posterior alone).

    ``posterior``: further options of :func:`shared.uncertainty.linearised_laplace`.  The
    default prior has one precision for all weights (``prior_groups="none"``), chosen by the mean
    test log-likelihood, with the level term, on seven validation phantoms of the default fit
    (three-phase head, 3 members; ``benchmarks/uncertainty.py``: 0.978 of the cell errors within
    2 std on average, lowest 0.955, against 0.965 and 0.938 with per-layer precisions shaped by
    each layer's weight scale, the earlier default for the log head).

    Returns a :class:`shared.result.Result` with ``arrays["std"]`` ``(n_cells,)`` (network and
    level) and ``arrays["std_network"]`` (the network's posterior alone), the metrics (alpha per
    member, rank, ``level_std``, mean/max std, time, and ``calibration`` of ``std`` when
    ``problem.sigma_true`` is known) and the writers of ``std_<method>.png`` and
    ``std_<method>.xdmf`` (DG0 field ``std`` for ParaView).
    """
    if result.fit is None:
        raise ValueError(f"{result.method} is not a fitted network: uncertainty needs the neural method")
    from eit.plot import save_conductivity_png, save_xdmf

    delta = background_level_std(problem) if level_std is None else float(level_std)
    if not (np.isfinite(delta) and delta >= 0):
        raise ValueError(f"level_std must be a finite number >= 0, got {level_std}")
    t0 = time.perf_counter()
    posterior = {"prior_groups": "none", **posterior}
    noise = torch.as_tensor(problem.noise, dtype=torch.float64)
    fits = member_fits(result.fit)
    parts = []
    for f in _progress(fits, progress):
        # 32 cotangents per vectorised backward pass: ~25% faster than one VJP at a time.
        parts.append(linearised_uncertainty(_tangent_fit(f, problem), rank=rank, noise_std=noise, method="exact",
                                            prior_mean="zero", vjp_batch=32,
                                            output_jacobian=_cell_jacobian(f), **posterior))
    sigma = np.asarray(result.arrays["sigma"], dtype=np.float64).reshape(-1)
    means = np.stack([p.mean.detach().double().cpu().numpy().reshape(-1) for p in parts])
    stds = np.stack([p.std.detach().double().cpu().numpy().reshape(-1) for p in parts])
    _, std_network = ensemble_statistics(means, stds, centre=sigma)
    std = with_level(std_network, sigma, delta)
    elapsed = time.perf_counter() - t0
    metrics = {"alpha": [p.alpha for p in parts] if len(parts) > 1 else parts[0].alpha, "rank": parts[0].rank,
               "members": len(parts), "n_measurements": parts[0].n_measurements, "level_std": delta,
               "mean_std": float(std.mean()), "mean_std_network": float(std_network.mean()),
               "max_std": float(std.max()), "time_s": elapsed}
    if problem.sigma_true is not None:
        areas = getattr(problem.model, "cell_areas", None)
        metrics["calibration"] = _calibration(sigma, std, np.asarray(problem.sigma_true, dtype=np.float64).reshape(-1),
                                              None if areas is None or len(areas) != len(std) else np.asarray(areas))
    m = result.method
    title = f"{m}: predicted std (mean {std.mean():.3g} S/m)"
    files = {f"std_{m}.png": lambda path: save_conductivity_png(problem, std, path, title=title,
                                                                label="std (S/m)", cmap="magma"),
             f"std_{m}.xdmf": lambda path: save_xdmf(problem, std, path, name="std")}
    return Result(f"{m}-uncertainty", arrays={"std": std, "std_network": std_network}, metrics=metrics,
                  timings={"total_s": elapsed},
                  config={"rank": rank, "prior_mean": "zero", **posterior, "level_std": delta,
                          "noise": "problem's noise model (whitened)",
                          "forward": "tangent model (FEM Jacobian)" if hasattr(problem.model, "jacobian")
                          else "FEM adjoint"},
                  files=files)


def _progress(items: list, progress: bool):
    """``items``, with a progress bar over the members when ``progress``."""
    if not progress or len(items) < 2:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="uncertainty (members)", leave=False)
