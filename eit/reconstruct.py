"""Neural EIT reconstruction: an untrained conductivity network fitted to the voltages.

:class:`NeuralEIT` minimises over the network weights ``theta`` (by :func:`shared.fit.fit`)::

    mean_i ((F(sigma_theta)_i - y_i) / s_i)^2   +   w_tv TV(log(sigma_theta / sigma_bg))

over the measurements ``i`` kept by the problem's mask (the rest are NaN in ``y`` and left
out by the engine), where

* ``sigma_theta`` is a :mod:`eit.conductivity` prior (``net="mlp"``: Fourier-feature MLP on
  coordinates, or ``net="conv"``: a deep decoder on a pixel grid), positive by construction;
* ``F`` is the complete electrode model as a physics object (:class:`eit.physics.EITPhysics`:
  one factorisation per step, gradient by the adjoint method);
* ``s_i`` the noise model of the problem (:class:`shared.losses.WeightedSquaredError`);
* ``TV`` the smoothed total variation of the log-contrast on the mesh
  (:class:`eit.tv.LogContrastTV`, smoothing ``tv_eps``).

Stopping (rules of :mod:`shared.stopping`, built by :func:`shared.stopping.make_rule`):
``"plateau"`` (default: stop once the objective fell by less than ``plateau_tol``
(relative) over ``plateau_window`` steps, or at ``iterations``), ``"discrepancy"`` (Morozov:
stop once the mean weighted misfit reaches ``tau``; meaningful when the noise model is the
true noise level, as for simulated data -- the organisers' KTC noise model (5% + 1%) is far
above the noise of the tank data, so it would stop after a few steps), ``"heldout"``,
``"eswmv"`` (their default settings) or ``"none"`` (run all ``iterations``).

Example::

    result = NeuralEIT(net="mlp", iterations=300).reconstruct(problem)
    result.arrays["sigma"], result.metrics["score"], result.fit.history["loss"]
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from shared.fit import Objective, Optimiser, Tracking, fit
from shared.losses import WeightedSquaredError
from shared.reconstructor import Reconstructor
from shared.result import Result
from shared.stopping import RULES, make_rule
from shared.threads import thread_limits

from eit.conductivity import HEADS, make_prior
from eit.physics import EITPhysics
from eit.result import conductivity_result
from eit.tv import LogContrastTV, MeshTV

__all__ = ["NeuralEIT", "NEURAL_DEFAULTS", "TUNED_LR", "DEFAULT_MEMBERS", "DEFAULT_HEAD", "NETS"]

#: the neural priors
NETS = ("mlp", "conv")
#: Adam step per prior (measured on KTC level 1 with the deep decoder: 0.74 at 1e-2, 0.66 at 3e-3)
TUNED_LR = {"mlp": 3e-3, "conv": 1e-2}
#: ensemble size per prior when ``members`` is not given (see :class:`NeuralEIT`)
DEFAULT_MEMBERS = {"mlp": 3, "conv": 1}
#: output head per prior when ``head`` is not given (see :class:`NeuralEIT`): three phases for
#: the MLP (on the simulated tuning split, 35 cases at levels 1-7, the mean KTC score rose from
#: 0.611 to 0.668 and rose at every level; ``benchmarks/results/eit_settings_phase.json``)
DEFAULT_HEAD = {"mlp": "phase", "conv": "log"}


def _rel_l2(sigma: Tensor, reference: Tensor) -> float:
    if sigma.ndim == 2:  # an ensemble, as reconstructed: the geometric mean of the members
        sigma = torch.exp(torch.log(sigma).mean(0))
    return float(torch.linalg.norm(sigma - reference) / torch.linalg.norm(reference))


class NeuralEIT(Reconstructor):
    """An untrained neural conductivity fitted through the forward model (module docstring).

    Parameters
    ----------
    net: ``"mlp"`` or ``"conv"`` (:func:`eit.conductivity.make_prior`); ``net_options`` its settings.
    members: ``K`` networks with different seeds fitted together in one batched fit (``mlp``
        only); the reconstruction is their geometric mean ``exp(mean_k log sigma_k)``.
        ``None``: :data:`DEFAULT_MEMBERS` of the network (3 for ``mlp``: on the simulated
        tuning split, 35 cases at levels 1-7, the mean KTC score rose from 0.585 to 0.612 and
        rose at every level, for 2.6x the time; ``benchmarks/results/eit_settings_ensemble.json``).
    head: the MLP's output head (:class:`eit.conductivity.MLPConductivity`): ``"log"`` (the
        output is the log-contrast) or ``"phase"`` (three soft phases, water, resistive and
        conductive, with fitted values; ``phase_contrast`` in ``net_options`` is their start);
        ``None``: :data:`DEFAULT_HEAD` of the network.  ``phase_lr``: the Adam step of the
        phase values (``None``: ``lr``).
    iterations, lr: Adam steps and step size.
    tv_weight, tv_eps: weight and smoothing of the TV of the log-contrast (0: no TV).
    stop: stopping rule; ``tau`` (discrepancy), ``plateau_window``, ``plateau_tol`` (plateau).
    seed, device, progress: of the fit (``progress``: a tqdm bar, a string is its label).
    blas_threads: BLAS threads during the fit (``None``: the library's setting).  One by
        default: the forward model's dense products are small (vertices x electrodes), and
        threaded OpenBLAS beside torch made a KTC level-7 fit 4.7x slower on 2 cores (19.5 s
        with 2 BLAS threads, 4.2 s with 1; :func:`shared.threads.thread_limits`).
    """

    def __init__(self, net: str = "mlp", iterations: int = 300, lr: float = 3e-3, tv_weight: float = 1e-2,
                 tv_eps: float = 1e-2, stop: str = "plateau", tau: float = 1.0, plateau_window: int = 50,
                 plateau_tol: float = 0.02, seed: int = 0, device: str | None = None,
                 progress: bool | str = False, net_options: dict | None = None, blas_threads: int | None = 1,
                 members: int | None = None, head: str | None = None, phase_lr: float | None = None) -> None:
        self.net = net
        self.iterations = iterations
        self.lr = lr
        self.tv_weight = tv_weight
        self.tv_eps = tv_eps
        self.stop = stop
        self.tau = tau
        self.plateau_window = plateau_window
        self.plateau_tol = plateau_tol
        self.seed = seed
        self.device = device
        self.progress = progress
        self.net_options = net_options
        self.blas_threads = blas_threads
        self.members = members
        self.head = head
        self.phase_lr = phase_lr

    @property
    def method(self) -> str:
        return f"neural-{self.net}"

    def validate(self) -> NeuralEIT:
        """Raise ``ValueError`` for settings no fit can use (called before anything runs)."""
        if self.net not in NETS:
            raise ValueError(f"unknown prior network {self.net!r}; choose from {', '.join(NETS)}")
        if int(self.iterations) != self.iterations or self.iterations < 1:
            raise ValueError(f"iterations must be an integer >= 1, got {self.iterations}")
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"the learning rate must be a positive finite number, got {self.lr}")
        if not (np.isfinite(self.tv_weight) and self.tv_weight >= 0):
            raise ValueError(f"the TV weight must be >= 0, got {self.tv_weight}")
        if self.blas_threads is not None and (int(self.blas_threads) != self.blas_threads or self.blas_threads < 1):
            raise ValueError(f"blas_threads must be an integer >= 1 or None, got {self.blas_threads}")
        k = self._members()
        if int(k) != k or k < 1:
            raise ValueError(f"members must be an integer >= 1, got {self.members}")
        if k > 1 and self.net != "mlp":
            raise ValueError(f"an ensemble (members > 1) needs net='mlp', got net={self.net!r}")
        head = self._head()
        if head not in HEADS:
            raise ValueError(f"unknown output head {head!r}; choose from {', '.join(HEADS)}")
        if head != "log" and self.net != "mlp":
            raise ValueError(f"the {head!r} head needs net='mlp', got net={self.net!r}")
        if self.phase_lr is not None and not (np.isfinite(self.phase_lr) and self.phase_lr > 0):
            raise ValueError(f"phase_lr must be a positive finite number or None, got {self.phase_lr}")
        if self.stop not in (None, "none", *RULES):
            raise ValueError(f"unknown stopping rule {self.stop!r}; choose from none, {', '.join(RULES)}")
        return self

    def _members(self) -> int:
        return DEFAULT_MEMBERS.get(self.net, 1) if self.members is None else self.members

    def _head(self) -> str:
        return DEFAULT_HEAD.get(self.net, "log") if self.head is None else self.head

    def _rule(self, y: Tensor, noise: Tensor):
        settings = {"plateau": dict(window=self.plateau_window, tol=self.plateau_tol),
                    "discrepancy": dict(y=y, noise_std=noise, tau=self.tau)}
        return make_rule(self.stop, **settings.get(self.stop, {}))

    def _optimiser(self, net) -> Optimiser:
        groups = {}
        if self.phase_lr is not None and getattr(net, "head", "log") == "phase":
            groups = {"phase_log_values": {"lr": float(self.phase_lr)}}
        return Optimiser(lr=self.lr, iterations=self.iterations, groups=groups)

    def reconstruct(self, problem) -> Result:
        """Fit the network to ``problem`` (an :class:`eit.problem.EITProblem`)."""
        self.validate()
        k = self._members()
        options = dict(self.net_options or {}, **({"members": k} if k > 1 else {}))
        if self.net == "mlp":  # an explicit head wins over net_options, which win over the default
            options["head"] = self.head if self.head is not None else options.get("head", self._head())
        net, z = make_prior(self.net, problem, seed=self.seed, **options)
        y = torch.as_tensor(problem.y, dtype=torch.float64)  # NaN where not used
        noise = torch.as_tensor(problem.noise, dtype=torch.float64)
        tv = LogContrastTV(MeshTV(*problem.adjacency, eps=self.tv_eps), problem.sigma_bg)
        objective = Objective(y, physics=EITPhysics(problem.model, noise_std=noise),
                              data=WeightedSquaredError(noise),
                              regularisers={"tv": (self.tv_weight, tv)} if self.tv_weight > 0 else {})
        tracking = None
        if problem.sigma_true is not None:
            tracking = Tracking({"rel_l2": _rel_l2}, torch.as_tensor(problem.sigma_true, dtype=torch.float64), every=10)
        with thread_limits(blas=self.blas_threads):
            result = fit(net, z, objective, optimiser=self._optimiser(net),
                         stopping=self._rule(y, noise), tracking=tracking, seed=self.seed, device=self.device,
                         progress=self.progress)
        sigma = result.output.detach().cpu().numpy().astype(np.float64)
        if sigma.ndim == 2:  # an ensemble: the geometric mean of the members
            sigma = np.exp(np.log(sigma).mean(axis=0))
        return conductivity_result(problem, sigma, self.method, result.wall_time_s, config=self.get_params(),
                                   fit=result, iterations=result.stop_iteration, stopped_by=result.stopped_by)


#: the tuned settings of :class:`NeuralEIT` (its defaults: an ensemble of 3 mlp priors, 300 Adam
#: steps of 3e-3, TV weight 1e-2 with eps 1e-2, plateau stopping over 50 steps at 2%), as the
#: benchmark records them
NEURAL_DEFAULTS = NeuralEIT().get_params()
