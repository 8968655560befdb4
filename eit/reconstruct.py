"""Neural EIT reconstruction: an untrained conductivity network fitted to the voltages.

The objective (minimised over the network weights ``theta`` by :func:`shared.fit.fit`)::

    mean_i ((F(sigma_theta)_i - y_i) / s_i)^2   +   w_tv TV(log(sigma_theta / sigma_bg))

over the measurements ``i`` kept by the problem's mask (the rest are NaN in ``y`` and left
out by the engine), where

* ``sigma_theta`` is a :mod:`eit.conductivity` prior (Fourier-feature MLP on coordinates or a
  deep decoder on a pixel grid), positive by construction;
* ``F`` is the complete electrode model (:func:`eit.forward.eit_forward`: one
  factorisation per step, gradient by the adjoint method);
* ``s_i`` the noise model of the problem (:class:`shared.losses.WeightedSquaredError`);
* ``TV`` the smoothed total variation of the log-contrast on the mesh (:class:`eit.tv.MeshTV`).

Stopping (rules of :mod:`shared.stopping`): ``"plateau"`` (default: stop once the objective
fell by less than ``plateau_tol`` (relative) over ``plateau_window`` steps, or at
``iterations``), ``"discrepancy"`` (Morozov: stop once the mean weighted misfit reaches
``tau``; meaningful when the noise model is the true noise level, as for simulated data --
the organisers' KTC noise model (5% + 1%) is far above the noise of the tank data, so it
would stop after a few steps), or ``"none"`` (run all ``iterations``).
"""
from __future__ import annotations

import numpy as np
import torch

from shared.fit import fit
from shared.losses import WeightedSquaredError
from shared.stopping import Discrepancy, Plateau

from eit.conductivity import make_prior
from eit.result import Reconstruction, finish
from eit.tv import MeshTV

__all__ = ["neural", "NEURAL_DEFAULTS"]

#: settings of :func:`neural` used by the CLI, examples and benchmark
NEURAL_DEFAULTS = dict(prior="mlp", iterations=300, lr=3e-3, tv_weight=1e-2, tv_eps=1e-2, stopping="plateau")


def neural(problem, prior: str = "mlp", iterations: int = 300, lr: float = 3e-3, tv_weight: float = 1e-2,
           tv_eps: float = 1e-2, stopping: str = "plateau", tau: float = 1.0, plateau_window: int = 50,
           plateau_tol: float = 0.02, seed: int = 0, progress: bool | str = False,
           prior_options: dict | None = None, callbacks=(), device: str | None = None) -> Reconstruction:
    """Fit a neural conductivity to ``problem`` (see the module docstring)."""
    from eit.forward import eit_forward

    net, z = make_prior(prior, problem, seed=seed, **(prior_options or {}))
    y = torch.as_tensor(problem.y, dtype=torch.float64)  # NaN where not used
    noise = torch.as_tensor(problem.noise, dtype=torch.float64)
    model = problem.model
    pairs, lengths = problem.adjacency
    tv = MeshTV(pairs, lengths, eps=tv_eps)
    log_bg = float(np.log(problem.sigma_bg))
    regularisers = {"tv": (tv_weight, lambda sigma: tv(torch.log(sigma) - log_bg))} if tv_weight > 0 else {}
    if stopping == "plateau":
        rule = Plateau(window=plateau_window, tol=plateau_tol)
    elif stopping == "discrepancy":
        rule = Discrepancy(y, noise, tau)
    elif stopping in (None, "none"):
        rule = None
    else:
        raise ValueError(f"stopping must be 'plateau', 'discrepancy' or 'none', got {stopping!r}")
    metrics, reference = {}, None
    if problem.sigma_true is not None:
        reference = torch.as_tensor(problem.sigma_true, dtype=torch.float64)
        metrics = {"rel_l2": lambda s, ref: float(torch.linalg.norm(s - ref) / torch.linalg.norm(ref))}
    result = fit(net, z, y, forward=lambda sigma: eit_forward(sigma, model),
                 data_loss=WeightedSquaredError(noise), regularisers=regularisers, iterations=iterations,
                 lr=lr, stopping=rule, reference=reference, metrics=metrics, metric_every=10,
                 seed=seed, progress=progress, callbacks=callbacks, device=device)
    sigma = result.output.detach().cpu().numpy().astype(np.float64)
    return finish(problem, sigma, f"neural-{prior}", result.wall_time_s, history=result.history,
                  iterations=result.stop_iteration, stopped_by=result.stopped_by)
