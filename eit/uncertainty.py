"""Uncertainty of a neural EIT conductivity: the linearised Laplace posterior of its fit.

The network ``sigma_theta`` is linearised at its fitted weights, ``sigma ~ sigma* + J (theta -
theta*)``, with a zero-centred Gaussian prior ``theta ~ N(0, alpha^-1 I)`` (the rule fixed for
fits from scratch) and the problem's noise model: the misfit is whitened by the per-datum
standard deviations ``s_i``, so the noise precision is 1 and only ``alpha`` is fitted, by
marginal likelihood.  The few electrode measurements (at most 2356 for KTC) make the exact
mode cheap: ``J_y^T`` is formed by one vector-Jacobian product per measurement through the
stored factorisation (:func:`shared.uncertainty.linearised_uncertainty`, ``method="exact"``).

An ensemble fit (:class:`eit.NeuralEIT` with ``members = K``) is treated as the equal mixture
of its members' linearised posteriors: each member is linearised on its own, and the
reported variance is the mixture's, ``mean_k std_k^2 + var_k(sigma_k)`` (the members' own
uncertainty plus their disagreement), about the members' mean.

The result is the predictive standard deviation of the conductivity in every inversion cell
(S/m; epistemic: the spread of the reconstruction, not of new data).  When the true
conductivity is known (simulated data) its calibration is reported: the share of cells whose
error lies within 2 std (0.954 for a calibrated Gaussian), the test log-likelihood against
the best constant std, and the correlation of std with |error|.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from shared.result import Result
from shared.uncertainty import calibration, linearised_uncertainty

__all__ = ["conductivity_uncertainty", "uncertainty_files"]


def uncertainty_files(method: str) -> list[str]:
    """The files :func:`conductivity_uncertainty` writes for a method's result."""
    return [f"std_{method}.png", f"std_{method}.xdmf", f"std_{method}.h5"]


def _member_fits(fit) -> list:
    """The fit itself, or one fit per member of an ensemble (its network split off)."""
    members = getattr(fit.model, "members", 1)
    if members == 1:
        return [fit]
    return [replace(fit, model=fit.model.member(k), output=fit.output[k], final=fit.final[k])
            for k in range(members)]


def conductivity_uncertainty(result: Result, problem, rank: int = 128) -> Result:
    """Per-cell std of a neural reconstruction ``result`` of ``problem`` (module docstring)."""
    if result.fit is None:
        raise ValueError(f"{result.method} is not a fitted network: uncertainty needs the neural method")
    from eit.plot import save_conductivity_png, save_xdmf

    noise = torch.as_tensor(problem.noise, dtype=torch.float64)
    fits = _member_fits(result.fit)
    parts = [linearised_uncertainty(f, rank=rank, noise_std=noise, method="exact", prior_mean="zero") for f in fits]
    unc = parts[0]
    var = np.mean([p.std.detach().double().cpu().numpy().reshape(-1) ** 2 for p in parts], axis=0)
    if len(fits) > 1:  # the mixture of the members: add their disagreement
        var = var + np.var(result.fit.output.detach().double().cpu().numpy(), axis=0)
    std = np.sqrt(var)
    sigma = np.asarray(result.arrays["sigma"], dtype=np.float64).reshape(-1)
    metrics = {"alpha": [p.alpha for p in parts] if len(parts) > 1 else unc.alpha, "rank": unc.rank,
               "members": len(parts), "n_measurements": unc.n_measurements, "mean_std": float(std.mean()),
               "max_std": float(std.max()), "time_s": float(sum(p.timings["total_s"] for p in parts))}
    if problem.sigma_true is not None:
        metrics["calibration"] = calibration(torch.as_tensor(sigma), torch.as_tensor(std),
                                             torch.as_tensor(np.asarray(problem.sigma_true, dtype=np.float64)))
    m = result.method
    title = f"{m}: predicted std (mean {std.mean():.3g} S/m)"
    files = {f"std_{m}.png": lambda path: save_conductivity_png(problem, std, path, title=title,
                                                                label="std (S/m)", cmap="magma"),
             f"std_{m}.xdmf": lambda path: save_xdmf(problem, std, path, name="std")}
    return Result(f"{m}-uncertainty", arrays={"std": std}, metrics=metrics, timings={"total_s": metrics["time_s"]},
                  config={"rank": rank, "prior_mean": "zero", "noise": "problem's noise model (whitened)"},
                  files=files)
