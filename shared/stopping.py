"""Stopping rules that need no ground truth.

An untrained prior fits the structure of a signal before its noise, so the fit must be
stopped (or its output selected) before it reproduces the noise.  A rule sees one
:class:`StepRecord` per iteration and answers whether to stop; it also keeps the output
it selects (``best_output`` at ``best_iteration``), which :func:`shared.fit.fit` returns.

Rules
-----
* :class:`ESWMV` -- windowed moving variance of the outputs (Wang, Li, Zhuang, Chen,
  Liang & Sun, "Early stopping for deep image prior", TMLR 2023).  With the window
  ``x_{t-W+1..t}`` and its mean ``m_t``, ``VAR_t = 1/W sum_w ||x_{t-w} - m_t||^2 / n``.
  The variance dips when the output is closest to the clean signal and rises when the
  network starts fitting noise; stop after ``patience`` steps without a new minimum, or
  (``rise``) once the variance reaches a multiple of its minimum, and return the output at
  the minimum.
* :class:`Discrepancy` -- Morozov's discrepancy principle for a known noise level:
  stop at the first iteration with ``mean((F x - y)^2 / s^2) <= tau`` where ``s`` is the
  noise standard deviation (scalar or per measurement).
* :class:`HeldOut` -- the loss on a held-out fraction of the measurements (see
  ``fit(..., holdout=f)``); stop after ``patience`` steps without improvement and
  return the output at the smallest held-out loss.
* :class:`Plateau` -- the relative decrease of the training loss over a window falls
  below ``tol`` (for fits with no noise to overfit, e.g. charts of clean data).

Per-member rules
----------------
A batched model (``P`` independent networks whose parameters and output have a leading
member axis, e.g. the charts of the geometric prior or an ensemble) can be stopped member
by member: a :class:`MemberStoppingRule` keeps a boolean ``frozen`` ``(P,)``; the engine
holds every frozen member's parameters at the values they had at its freeze step and ends
the fit once a ``stop_fraction`` of the members is frozen.  The selected output is each
member's output at its own freeze step (the latest output for members still running).

* :class:`MemberDiscrepancy` -- Morozov's discrepancy principle per member with a
  per-member noise level ``sigma_i`` and a caller-supplied residual ``r_i``: member ``i``
  freezes at the first step ``t >= min_steps`` with ``r_i(t) <= tau sigma_i``.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

__all__ = ["StepRecord", "StoppingRule", "ESWMV", "Discrepancy", "HeldOut", "Plateau", "MemberStoppingRule",
           "MemberDiscrepancy", "make_rule"]


@dataclass
class StepRecord:
    """What the engine knows after one step.

    ``output`` is the network output (averaged when averaging is on), ``prediction``
    the forward model applied to the training-pass output, ``loss`` the objective,
    ``data`` its data term, ``reg`` its regularisation term, ``heldout`` the held-out data
    term (or None), ``raw_output`` the training-pass output before averaging (None when a caller does not provide it;
    then rules fall back to ``output``).
    """

    iteration: int
    output: Tensor
    prediction: Tensor
    loss: float
    data: float
    heldout: float | None = None
    raw_output: Tensor | None = None
    reg: float = 0.0


class StoppingRule:
    """Base class: subclasses implement :meth:`update`, calling :meth:`_select`."""

    name = "rule"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.best_output: Tensor | None = None
        self.best_iteration: int = -1
        self.best_score: float = float("inf")
        self.trace: list[float] = []

    def update(self, record: StepRecord) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def split(self, y: Tensor, generator: torch.Generator) -> Tensor | None:
        """Boolean mask of the measurements this rule holds out of the data term (None: none)."""
        return None

    def _select(self, record: StepRecord, score: float) -> bool:
        """Keep the record's output if ``score`` is a new minimum; return True if it was."""
        if score < self.best_score:
            self.best_score = score
            self.best_iteration = record.iteration
            self.best_output = record.output.detach().clone()
            return True
        return False


class ESWMV(StoppingRule):
    """Early stopping by windowed moving variance (ES-WMV).

    Parameters
    ----------
    window:
        Number ``W`` of consecutive outputs whose variance is tracked.
    patience:
        Steps without a new variance minimum after which the fit stops.
    rise:
        Also stop as soon as the window variance reaches ``rise`` times its smallest value so
        far (None: only the patience stops).  A fit that collapses onto its noisy data moves
        fast, so its variance jumps several-fold within a few steps (SURE denoising at sigma
        50: 5-7x), while a fit that settles stays within about 1.6x of its minimum; the
        patience alone either waits long enough to return a collapsed output or stops a
        settling fit at a passing minimum.
    source:
        Whose variance is tracked: ``"output"`` (the record's output: the averaged output
        when the engine averages) or ``"raw"`` (the un-averaged training-pass output,
        ``record.raw_output``).  The selected output is always ``record.output``.  An
        exponential average changes slowly and smoothly, so its window variance keeps
        shrinking while the raw outputs already drift towards the noise; with averaging
        on, ``"raw"`` is the variance the ES-WMV paper tracks.
    """

    name = "eswmv"

    def __init__(self, window: int = 100, patience: int = 500, source: str = "output",
                 rise: float | None = None) -> None:
        if window < 2 or patience < 1:
            raise ValueError(f"ES-WMV needs window >= 2 and patience >= 1, got {window}, {patience}")
        if rise is not None and not rise > 1:
            raise ValueError(f"ES-WMV's rise factor must be > 1 (or None), got {rise}")
        if source not in ("output", "raw"):
            raise ValueError(f"ES-WMV source must be 'output' or 'raw', got {source!r}")
        self.window = window
        self.patience = patience
        self.source = source
        self.rise = rise
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self._buffer: deque[Tensor] = deque(maxlen=self.window)
        self._sum: Tensor | None = None
        self._sumsq: Tensor | None = None

    def update(self, record: StepRecord) -> bool:
        tracked = record.raw_output if self.source == "raw" and record.raw_output is not None else record.output
        x = tracked.detach().to(torch.float64)
        if len(self._buffer) == self.window:
            old = self._buffer[0]
            self._sum -= old
            self._sumsq -= old * old
        self._buffer.append(x)
        self._sum = x.clone() if self._sum is None else self._sum + x
        self._sumsq = x * x if self._sumsq is None else self._sumsq + x * x
        if len(self._buffer) < self.window:
            self.trace.append(float("nan"))
            return False
        # Running sums make each step O(n) instead of O(W n); clamp guards round-off.
        mean = self._sum / self.window
        var = float((self._sumsq / self.window - mean * mean).clamp_min(0).mean())
        self.trace.append(var)
        self._select(record, var)
        if self.rise is not None and var >= self.rise * self.best_score:
            return True
        return record.iteration - self.best_iteration >= self.patience


class Discrepancy(StoppingRule):
    """Morozov's discrepancy principle: stop once the residual reaches the noise level.

    Parameters
    ----------
    y:
        The measurements the fit uses (same shape as the prediction).
    noise_std:
        Noise standard deviation: a float or a tensor broadcastable to ``y``.
    tau:
        Safety factor; stop when ``mean(((F x - y) / noise_std)^2) <= tau``.
    """

    name = "discrepancy"

    def __init__(self, y: Tensor, noise_std: float | Tensor, tau: float = 1.0) -> None:
        self.y = y
        self.noise_std = noise_std
        self.tau = tau
        super().__init__()

    def update(self, record: StepRecord) -> bool:
        y = self.y.to(record.prediction.device)
        finite = torch.isfinite(y)
        r = (record.prediction - torch.where(finite, y, record.prediction)) / self.noise_std
        chi2 = float((r[..., finite] ** 2).mean())  # an ensemble (K, m): the members' mean
        self.trace.append(chi2)
        # Always keep the latest output so that a fit that never reaches the level
        # still returns its last state, not its first.
        self.best_output = record.output.detach().clone()
        self.best_iteration = record.iteration
        self.best_score = chi2
        return chi2 <= self.tau


class HeldOut(StoppingRule):
    """Stop when the loss on a held-out ``fraction`` of the measurements stops improving.

    The rule owns its split: the engine asks :meth:`split` for the held-out entries (each
    finite entry independently with probability ``fraction``, from the fit's seed), hides
    them from the data term and reports their loss in every :class:`StepRecord`.
    """

    name = "heldout"

    def __init__(self, fraction: float = 0.1, patience: int = 200, min_delta: float = 0.0) -> None:
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"holdout must be a fraction in (0, 1), got {fraction}")
        self.fraction = fraction
        self.patience = patience
        self.min_delta = min_delta
        super().__init__()

    def split(self, y: Tensor, generator: torch.Generator) -> Tensor:
        return (torch.rand(y.shape, generator=generator) < self.fraction).to(y.device)

    def update(self, record: StepRecord) -> bool:
        if record.heldout is None:
            raise ValueError("HeldOut stopping needs measurements to hold out (fit with an objective whose y is set)")
        self.trace.append(record.heldout)
        self._select(record, record.heldout + (self.min_delta if self.best_output is not None else 0.0))
        return record.iteration - self.best_iteration >= self.patience


class Plateau(StoppingRule):
    """Stop when the loss improved by less than ``tol`` (relative) over ``window`` steps."""

    name = "plateau"

    def __init__(self, window: int = 100, tol: float = 1e-3) -> None:
        self.window = window
        self.tol = tol
        super().__init__()

    def update(self, record: StepRecord) -> bool:
        self.trace.append(record.loss)
        self.best_output = record.output.detach().clone()
        self.best_iteration = record.iteration
        if len(self.trace) <= self.window:
            return False
        before = self.trace[-self.window - 1]
        return (before - record.loss) <= self.tol * abs(before)


class MemberStoppingRule(StoppingRule):
    """Base class of rules that stop the members of a batched model independently.

    The member axis is the leading axis of the output and of the batched parameters
    (``n_members`` = ``P``).  Subclasses implement :meth:`criterion`, a boolean ``(P,)`` of
    the members that may stop at this record; :meth:`update` freezes those not frozen yet
    (a member never thaws), records the step in ``stop_iterations`` (``-1``: still
    running) and answers True once ``frozen.float().mean() >= stop_fraction``.

    ``best_output`` is assembled per member: row ``i`` is the output of the step at which
    member ``i`` froze, or the latest output while it runs.  ``best_iteration`` is the
    latest step while a member runs, else the last freeze step.  ``trace`` holds the
    fraction of frozen members after each step.  The engine (:func:`shared.fit.fit`) reads
    ``frozen`` after every update and holds the frozen members' parameters fixed.
    """

    name = "member"

    def __init__(self, n_members: int, stop_fraction: float = 1.0) -> None:
        if n_members < 1:
            raise ValueError(f"a member rule needs n_members >= 1, got {n_members}")
        if not 0.0 < stop_fraction <= 1.0:
            raise ValueError(f"stop_fraction must be in (0, 1], got {stop_fraction}")
        self.n_members = int(n_members)
        self.stop_fraction = float(stop_fraction)
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self.frozen = torch.zeros(self.n_members, dtype=torch.bool)
        self.stop_iterations = torch.full((self.n_members,), -1, dtype=torch.long)

    def criterion(self, record: StepRecord) -> Tensor:  # pragma: no cover - abstract
        """Boolean ``(P,)``: the members whose stopping condition holds at ``record``."""
        raise NotImplementedError

    def update(self, record: StepRecord) -> bool:
        out = record.output.detach()
        if out.shape[0] != self.n_members:
            raise ValueError(f"{type(self).__name__} has {self.n_members} members but the output's leading "
                             f"axis is {out.shape[0]}")
        running = ~self.frozen
        newly = self.criterion(record).detach().to(torch.bool).cpu() & running
        self.frozen = self.frozen | newly
        self.stop_iterations[newly] = record.iteration
        if self.best_output is None:
            self.best_output = out.clone()
        elif bool(running.any()):
            rows = running.nonzero().squeeze(1).to(out.device)
            self.best_output[rows] = out[rows]
        all_frozen = bool(self.frozen.all())
        self.best_iteration = int(self.stop_iterations.max()) if all_frozen else record.iteration
        fraction = float(self.frozen.float().mean())
        self.trace.append(fraction)
        return all_frozen or fraction >= self.stop_fraction


class MemberDiscrepancy(MemberStoppingRule):
    """Morozov's discrepancy principle per member of a batched fit.

    With a per-member noise level ``sigma_i`` (the std of the noise in the units of the
    residual) and a residual ``r_i(t)`` of member ``i`` at step ``t`` (e.g. the RMS misfit of
    its prediction to its measurements; ``residual(record) -> (P,)``), member ``i`` freezes
    at::

        t_i = min { t >= min_steps :  r_i(t) <= tau sigma_i } .

    An unbiased fit of the clean signal leaves a residual of about the noise level, so a
    fit that goes on below it starts reproducing the noise (``tau`` > 1 stops earlier, with
    more smoothing; < 1 later).  ``min_steps`` keeps the members running while the residual
    is not yet meaningful (e.g. before a first re-matching).  A member with a non-finite
    ``sigma_i`` never freezes.  ``every``: the residual is evaluated (and members may
    freeze) only at steps ``min_steps + k every``, when a residual costs a sizeable part of
    a step.  ``stop_fraction``: see :class:`MemberStoppingRule`.
    Attributes: ``residuals`` (the latest ``r`` ``(P,)``), ``stop_residuals`` (``r_i(t_i)``;
    NaN while running).
    """

    name = "member_discrepancy"

    def __init__(self, sigma: Tensor, residual: Callable[[StepRecord], Tensor], tau: float = 1.0,
                 min_steps: int = 0, stop_fraction: float = 1.0, every: int = 1) -> None:
        sigma = torch.as_tensor(sigma, dtype=torch.float64).detach().cpu()
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = int(every)
        if sigma.ndim != 1:
            raise ValueError(f"sigma must be one noise level per member (P,), got shape {tuple(sigma.shape)}")
        if not (tau > 0 and min_steps >= 0):
            raise ValueError(f"tau must be > 0 and min_steps >= 0, got {tau}, {min_steps}")
        self.sigma, self.residual, self.tau, self.min_steps = sigma, residual, float(tau), int(min_steps)
        super().__init__(len(sigma), stop_fraction)

    def reset(self) -> None:
        super().reset()
        self.residuals = torch.full((self.n_members,), float("nan"), dtype=torch.float64)
        self.stop_residuals = self.residuals.clone()

    def criterion(self, record: StepRecord) -> Tensor:
        if record.iteration < self.min_steps or (record.iteration - self.min_steps) % self.every:
            return torch.zeros(self.n_members, dtype=torch.bool)
        r = torch.as_tensor(self.residual(record)).detach().to(device="cpu", dtype=torch.float64)
        if r.shape != (self.n_members,):
            raise ValueError(f"the residual must be ({self.n_members},), got {tuple(r.shape)}")
        self.residuals = r
        below = (r <= self.tau * self.sigma) & torch.isfinite(self.sigma)
        if record.iteration < self.min_steps:
            below = torch.zeros_like(below)
        newly = below & ~self.frozen
        self.stop_residuals[newly] = r[newly]
        return below


RULES = {"eswmv": ESWMV, "heldout": HeldOut, "plateau": Plateau, "discrepancy": Discrepancy}


def make_rule(name: str | None, **kwargs) -> StoppingRule | None:
    """The one place a rule is built from its CLI name: ``none``, ``eswmv``, ``heldout``,
    ``plateau`` or ``discrepancy`` (which needs ``y=`` and ``noise_std=``), with the
    rule's own keyword arguments."""
    if name in (None, "none"):
        return None
    if name not in RULES:
        raise ValueError(f"unknown stopping rule {name!r}; choose from none, {', '.join(RULES)}")
    return RULES[name](**kwargs)
