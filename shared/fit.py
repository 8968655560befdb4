"""The one fitting engine of the suite.

Every reconstruction here is the same problem::

    theta* = argmin_theta  D( A(G_theta(z)), y )  +  sum_k lambda_k R_k( G_theta(z) ),
    x*     = G_theta*(z)

``G_theta`` is an untrained network (any ``torch.nn.Module``; a batch of independent
networks is a module whose output has a batch axis), ``z`` its fixed input and the rest
the :class:`Objective`: the physics ``A`` (:mod:`shared.physics`; ``None`` is the
identity), the data term ``D`` (:mod:`shared.losses`), the measurements ``y`` and explicit
regularisers ``R_k`` such as total variation.

The engine owns what every front end needs and none should rewrite, in a few groups of
settings: the optimiser (:class:`Optimiser`: Adam or L-BFGS, step size, number of steps,
learning-rate schedule), the smoothing of the fit (:class:`Smoothing`: input
perturbation ``z + sigma_p n`` with fresh ``n`` each step, an exponential moving average
of the outputs), a stopping rule that needs no ground truth (:mod:`shared.stopping`),
metric tracking (:class:`Tracking`), per-step callbacks, seeds, devices and progress
bars.  A batched model (independent members along the leading axis of its parameters and
output) can be stopped member by member (:class:`shared.stopping.MemberStoppingRule`):
frozen members keep their parameters while the others train on.  Data terms and
regularisers with a ``begin_step(step)`` method are told the step before it starts, so
their schedules (re-matching, annealing) follow the optimiser's steps, also under L-BFGS,
which evaluates the objective several times per step.  A data term with a ``probe``
method (:class:`shared.sure.MonteCarloSURE`) is *probed*: the network, whose input is then
the measurement, is evaluated on ``[z, z + eps b]`` in one pass and the term gets both
outputs (Stein's unbiased risk estimate for denoising).

Example::

    result = fit(net, z, Objective(y, physics=A),
                 optimiser=Optimiser(lr=1e-2, iterations=2000),
                 stopping=ESWMV(window=100, patience=500),
                 tracking=Tracking({"psnr": psnr}, reference=x_true))
    x_hat = result.output
"""
from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from shared.losses import mse_loss
from shared.stopping import MemberStoppingRule, StepRecord, StoppingRule

__all__ = ["fit", "FitResult", "Objective", "Optimiser", "Smoothing", "Tracking", "StepRecord"]

DataTerm = Callable[..., Tensor]
Regulariser = Callable[[Tensor], Tensor]


@dataclass
class Objective:
    """``D(A(x), y) + sum_k w_k R_k(x)`` for a network output ``x``.

    ``y``: measurements of the shape of ``A(x)``; non-finite entries are missing (left out
    of the data term through its ``mask``).  ``physics``: the forward model (a
    :class:`shared.physics.Physics` or any callable; ``None`` is the identity).  ``data``:
    ``D(prediction, target, mask=None) -> scalar`` (default: mean squared error).
    ``regularisers``: ``{name: (weight, R)}`` with ``R(x) -> scalar``.  ``y=None``: the data
    term needs no target and is called as ``data(prediction)`` (supervised pretraining,
    whose data term draws its own batch of examples).
    """

    y: Tensor | None
    physics: Callable[[Tensor], Tensor] | None = None
    data: DataTerm = mse_loss
    regularisers: Mapping[str, tuple[float, Regulariser]] = field(default_factory=dict)

    def predict(self, x: Tensor) -> Tensor:
        """``A(x)``."""
        return x if self.physics is None else self.physics(x)

    def terms(self, x: Tensor, mask: Tensor | None,
              probe: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(A(x), D, sum_k w_k R_k)`` with the data term over the entries where ``mask``.

        ``probe``: ``(x_probe, b)`` for a probed data term (:class:`shared.sure.MonteCarloSURE`):
        the output at the input ``z + eps b`` and the probe ``b``, passed on to ``D``.
        """
        pred = self.predict(x)
        kwargs: dict[str, Any] = {} if mask is None else {"mask": mask}
        if probe is not None:
            kwargs["probe"] = probe
        d = self.data(pred) if self.y is None else self.data(pred, self.y, **kwargs)
        r = sum((w * reg(x) for w, reg in self.regularisers.values()), torch.zeros((), device=d.device))
        return pred, d, r

    def begin_step(self, step: int) -> None:
        """Tell the data term and the regularisers that step ``step`` begins."""
        for part in (self.data, *(reg for _, reg in self.regularisers.values())):
            hook = getattr(part, "begin_step", None)
            if hook is not None:
                hook(step)


@dataclass
class Optimiser:
    """``name``: ``"adam"`` or ``"lbfgs"`` (one strong-Wolfe L-BFGS iteration per step).

    ``schedule``: ``"constant"``, or ``"cosine"``: ``lr_t = lr_min + (lr - lr_min)(1 +
    cos(pi t / T)) / 2`` over ``T = iterations`` steps with ``lr_min = lr / 100`` (the decay
    removes the jitter a constant Adam step leaves in the parameters).

    ``groups``: settings for the parameters whose name (``model.named_parameters()``)
    starts with a prefix, ``{prefix: {"lr": ..., "weight_decay": ...}}`` (Adam only; the
    first matching prefix wins, the rest get ``lr`` and no decay).  A generator's latent
    and its weights then take different steps (IAGAN: 0.1 for ``z`` alone, 1e-4 for both
    jointly), and ``weight_decay`` ``w`` adds ``(w / 2) ||p||^2`` to the objective of those
    parameters (a Gaussian prior on a latent ``z``).
    """

    lr: float = 1e-2
    iterations: int = 1000
    name: str = "adam"
    schedule: str = "constant"
    groups: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def param_groups(self, named: list[tuple[str, nn.Parameter]]) -> list[dict[str, Any]]:
        """The torch parameter groups of ``named`` parameters (one group per matched prefix, then the rest)."""
        allowed = {"lr", "weight_decay"}
        for prefix, opts in self.groups.items():
            bad = set(opts) - allowed
            if bad:
                raise ValueError(f"optimiser group {prefix!r}: unknown settings {sorted(bad)}; "
                                 "allowed: lr, weight_decay")
            if "lr" in opts and not (math.isfinite(opts["lr"]) and opts["lr"] > 0):
                raise ValueError(f"optimiser group {prefix!r}: lr must be positive and finite, got {opts['lr']}")
        buckets: dict[str | None, list[nn.Parameter]] = {prefix: [] for prefix in self.groups}
        buckets[None] = []
        for name, p in named:
            prefix = next((k for k in self.groups if name.startswith(k)), None)
            buckets[prefix].append(p)
        unused = [k for k, ps in buckets.items() if k is not None and not ps]
        if unused:
            raise ValueError(f"optimiser groups {unused} match no trainable parameter; names: "
                             f"{', '.join(n for n, _ in named[:8])}{', ...' if len(named) > 8 else ''}")
        groups = [{"params": ps, **self.groups[k]} for k, ps in buckets.items() if k is not None]
        if buckets[None]:
            groups.append({"params": buckets[None]})
        return groups

    def build(self, params: list[nn.Parameter] | list[tuple[str, nn.Parameter]]) -> tuple[torch.optim.Optimizer, Any]:
        """The torch optimiser and scheduler for ``params`` (named pairs when ``groups`` is set)."""
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"the learning rate must be a positive finite number, got {self.lr}")
        named = params and isinstance(params[0], tuple)
        if self.groups and not named:
            raise ValueError("optimiser groups need named parameters")
        if self.groups and self.name != "adam":
            raise ValueError("optimiser groups are supported with Adam only")
        params = self.param_groups(params) if self.groups else [p[1] for p in params] if named else params
        if self.name == "adam":
            opt: torch.optim.Optimizer = _adam(params, self.lr)
        elif self.name == "lbfgs":
            opt = torch.optim.LBFGS(params, lr=self.lr, max_iter=1, history_size=50, line_search_fn="strong_wolfe")
        else:
            raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {self.name!r}")
        if self.schedule == "cosine":
            if self.groups:  # each group decays from its own step to a hundredth of it
                T = self.iterations
                return opt, torch.optim.lr_scheduler.LambdaLR(
                    opt, lambda t: 0.01 + 0.99 * (1 + math.cos(math.pi * min(t, T) / T)) / 2)
            return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.iterations, eta_min=self.lr / 100)
        if self.schedule != "constant":
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        return opt, None


@dataclass
class Smoothing:
    """Input perturbation and output averaging of the deep image prior.

    ``input_noise``: std ``sigma_p`` of the Gaussian added to ``z`` at every step (the
    official DIP uses 1/30).  As in the original DIP, the output used for averaging,
    stopping and metrics is that of the (perturbed) training pass; ``final`` is evaluated
    on the clean ``z``.  ``average``: factor ``beta`` of ``x_avg <- beta x_avg + (1 - beta)
    x_t`` (DIP uses 0.99); ``None``: off.
    """

    input_noise: float = 0.0
    average: float | None = None


@dataclass
class Tracking:
    """Metrics recorded every ``every`` steps (for figures and benchmarks; never used to select).

    ``metrics``: ``{name: f}``; ``f(output, reference)`` when a ``reference`` is given
    (moved to the fit's device), else ``f(output)``.
    """

    metrics: Mapping[str, Callable[..., float]] = field(default_factory=dict)
    reference: Tensor | None = None
    every: int = 10

    def measure(self, output: Tensor) -> dict[str, float]:
        with torch.no_grad():
            if self.reference is None:
                return {k: float(f(output)) for k, f in self.metrics.items()}
            return {k: float(f(output, self.reference)) for k, f in self.metrics.items()}


@dataclass
class FitResult:
    """What a fit returns.

    Attributes
    ----------
    output:
        The selected reconstruction ``x*`` (detached): the output at the iteration the
        stopping rule chose if there is one, else the averaged output if averaging was
        on, else the final output.
    final:
        ``G_theta(z)`` at the last iteration (no input perturbation, eval mode).
    averaged:
        The exponential moving average of the outputs (``None`` without averaging).
    history:
        Lists indexed by iteration: ``"loss"`` (total objective), ``"data"``, ``"reg"``,
        ``"heldout"`` (with a held-out split) and one list per tracked metric (with
        ``"metric_iteration"`` giving the iterations at which they were taken).
    selected_iteration, stop_iteration:
        Iteration (0-based) whose output is ``output``; number of iterations run.
    stopped_by:
        ``"iterations"`` (ran to the end), ``"stopping"`` (the rule fired),
        ``"non-finite"`` (the loss became NaN/Inf; the last finite state is kept) or
        ``"interrupted"`` (SIGINT/SIGTERM: the fit stopped at the end of the step it was in).
    wall_time_s:
        Wall-clock time of the loop in seconds.
    member_stop_iterations:
        With a :class:`~shared.stopping.MemberStoppingRule`: the step ``(P,)`` at which each
        member froze (``-1``: it ran to the end; ``history["frozen"]`` counts the frozen
        members after each step); else None.
    member_rule:
        The :class:`~shared.stopping.MemberStoppingRule` of the fit (with what it records, e.g.
        the residuals at which the members stopped), else None.
    model, z, objective, model_kwargs:
        The fitted network (parameters of the last finite iteration), its clean input, the
        objective (with the measurements as given, missing entries NaN) and the keyword
        arguments of every model call: all that a linearised posterior
        (:func:`shared.uncertainty.linearised_uncertainty`) needs.
    """

    output: Tensor
    final: Tensor
    averaged: Tensor | None
    history: dict[str, list[float]]
    selected_iteration: int
    stop_iteration: int
    stopped_by: str
    wall_time_s: float
    model: nn.Module
    z: Any = None
    objective: Objective | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    member_stop_iterations: Tensor | None = None
    member_rule: MemberStoppingRule | None = None

    @property
    def interrupted(self) -> bool:
        """True when a SIGINT/SIGTERM ended the fit early (its output is still the selected one)."""
        return self.stopped_by == "interrupted"

    def best_metric(self, name: str, mode: str = "max") -> tuple[float, int]:
        """Best value of a tracked metric and the iteration where it occurred."""
        values = self.history.get(name)
        if not values:
            raise KeyError(f"metric {name!r} was not tracked; tracked: {sorted(self.history)}")
        pick = max if mode == "max" else min
        best = pick(range(len(values)), key=values.__getitem__)
        return values[best], int(self.history["metric_iteration"][best])

    def evaluate(self, z: Any = None) -> Tensor:
        """``G_theta(z)`` of the fitted network (default: its clean input)."""
        return _evaluate(self.model, self.z if z is None else z, self.model_kwargs)


def fit(
    model: nn.Module,
    z: Any,
    objective: Objective,
    *,
    optimiser: Optimiser | None = None,
    smoothing: Smoothing | None = None,
    stopping: StoppingRule | None = None,
    tracking: Tracking | None = None,
    callbacks: Iterable[Callable[[StepRecord], Any]] = (),
    seed: int | None = 0,
    device: str | torch.device | None = None,
    progress: bool | str = False,
    model_kwargs: Mapping[str, Any] | None = None,
) -> FitResult:
    r"""Fit an untrained network to measurements: minimise ``objective`` over ``model``'s parameters.

    ``model`` is called as ``model(z, **model_kwargs)`` (``model(**model_kwargs)`` when ``z``
    is None; ``z`` may be a tensor or a tuple of tensors; tensors in ``model_kwargs``, e.g.
    the valid lengths of a padded batch, are moved to ``device``).  ``stopping`` sees the
    (averaged, when on) output of each step; a rule that holds out measurements
    (:class:`shared.stopping.HeldOut`) hides them from the data term and is offered their
    loss.  ``callbacks`` are called with the :class:`StepRecord` of every step.  ``seed``
    seeds the fit's own random draws (input perturbation, held-out split) from private
    generators, so a fit never reseeds torch's global generators (``None``: the
    perturbation draws from the global generator); the network's initialisation is the
    caller's.  ``progress`` shows a tqdm bar (a string is its description).

    Per-member stopping: with a :class:`shared.stopping.MemberStoppingRule` of ``P``
    members, every trainable parameter whose leading dimension is ``P`` is a batched
    parameter (row ``i`` belongs to member ``i``; other parameters train as usual).  When
    the rule freezes member ``i`` after step ``t``, its rows are set back to the values they
    had when step ``t``'s output was computed (before that step's update), so parameters
    and selected output agree; from then on their gradients are zeroed before every
    optimiser step and their values restored after it (an optimiser's momentum or weight
    decay cannot move them).  The fit ends with ``stopped_by = "stopping"`` once the rule
    says so (all members, or its ``stop_fraction``, frozen), else at ``iterations``.

    Interruption: a SIGINT (Ctrl-C) or SIGTERM during the loop ends the fit at the end of
    the current step with ``stopped_by = "interrupted"`` and the output selected as usual
    (by the stopping rule, else the average, else the last); a second signal raises
    ``KeyboardInterrupt`` at once.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    model = model.to(device)
    z = _to(z, device)
    model_kwargs = {k: _to(v, device) for k, v in (model_kwargs or {}).items()}
    given = Objective(_to(objective.y, device), objective.physics, objective.data, objective.regularisers)
    objective, mask, heldout = _prepare(given, stopping, seed, device)
    optimiser = optimiser or Optimiser()
    smoothing = smoothing or Smoothing()
    tracking = tracking or Tracking()
    if tracking.reference is not None:
        tracking = Tracking(tracking.metrics, tracking.reference.to(device), tracking.every)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    opt, scheduler = optimiser.build(params)
    noise = None if seed is None else torch.Generator(device).manual_seed(seed)
    loop = _Loop(model, z, model_kwargs, objective, mask, heldout, opt, optimiser.name == "lbfgs", smoothing, noise)
    loop.given = given  # what the result keeps: the measurements as given (missing entries NaN)
    if isinstance(stopping, MemberStoppingRule):
        loop.hold = _MemberHold(params, stopping.n_members)

    if stopping is not None:
        stopping.reset()
    history = _new_history(heldout is not None, tracking)
    if loop.hold is not None:
        history["frozen"] = []
        loop.hold.tell(model)
    bar = _progress_bar(optimiser.iterations, progress)
    start = time.perf_counter()
    try:
        stopped_by, it = _run(loop, scheduler, stopping, tracking, history, callbacks, bar, optimiser.iterations)
    finally:
        if loop.hold is not None:
            loop.hold.release()
    wall = time.perf_counter() - start
    if bar is not None:
        bar.close()
    return _result(loop, stopping, history, stopped_by, it, wall)


def _new_history(heldout: bool, tracking: Tracking) -> dict[str, list[float]]:
    history: dict[str, list[float]] = {"loss": [], "data": [], "reg": []}
    if heldout:
        history["heldout"] = []
    if tracking.metrics:
        history["metric_iteration"] = []
        history.update({name: [] for name in tracking.metrics})
    return history


def _run(loop: _Loop, scheduler: Any, stopping: StoppingRule | None, tracking: Tracking,
         history: dict[str, list[float]], callbacks: Iterable[Callable[[StepRecord], Any]], bar: Any,
         iterations: int) -> tuple[str, int]:
    """The loop: step, log, call back, ask the rule; returns (stopped_by, last iteration)."""
    stopped_by, it = "iterations", -1
    loop.model.train()
    with _Interruption() as interruption:
        for it in range(iterations):
            record = loop.step(it)
            if scheduler is not None:
                scheduler.step()
            if record is None:
                return "non-finite", it
            _log(history, record, tracking, it, iterations)
            for cb in callbacks:
                cb(record)
            _show(bar, record, history, tracking)
            if stopping is not None:
                done = stopping.update(record)
                if loop.hold is not None:
                    loop.hold.freeze(stopping.frozen, loop.previous, loop.last_good)
                    history["frozen"].append(int(loop.hold.frozen.sum()))
                if done:
                    return "stopping", it
            if interruption.requested:
                return "interrupted", it
    return stopped_by, it


class _Interruption:
    """SIGINT/SIGTERM while a fit runs: the first one asks the loop to stop after its step,
    a second raises ``KeyboardInterrupt``.  Handlers are only installed from the main thread
    (elsewhere Python delivers no signals) and restored afterwards."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._saved: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _Interruption:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)


def _prepare(objective: Objective, stopping: StoppingRule | None, seed: int | None,
             device: torch.device) -> tuple[Objective, Tensor | None, Tensor | None]:
    """The objective on ``device`` with missing entries zeroed; the fit mask and the held-out mask."""
    y = objective.y
    if y is None:
        return objective, None, None
    y = y.to(device)
    finite = torch.isfinite(y)
    mask = heldout = None
    split = stopping.split(y, torch.Generator().manual_seed(0 if seed is None else seed)) if stopping else None
    if split is not None:
        mask, heldout = finite & ~split, finite & split
    elif not bool(finite.all()):
        mask = finite
    if mask is not None and not bool(mask.any()):
        raise ValueError("no finite measurement is left to fit (all entries are NaN/Inf or held out)")
    y = torch.where(finite, y, torch.zeros_like(y))
    return Objective(y, objective.physics, objective.data, dict(objective.regularisers)), mask, heldout


class _Loop:
    """One optimiser step of the objective, with perturbation, averaging and a rollback on NaN."""

    def __init__(self, model, z, model_kwargs, objective, mask, heldout, opt, lbfgs, smoothing, noise) -> None:
        self.model, self.z, self.model_kwargs, self.objective = model, z, model_kwargs, objective
        self.mask, self.heldout, self.opt, self.lbfgs, self.smoothing = mask, heldout, opt, lbfgs, smoothing
        self.noise = noise  # generator of the input perturbation (None: torch's global one)
        self.averaged: Tensor | None = None
        self.last_good = _snapshot(model)
        self.previous = self.last_good  # the state before the latest step (its output's parameters)
        self.hold: _MemberHold | None = None  # frozen members of a per-member stopping rule
        self.probed = _check_probed(objective, z)

    def step(self, it: int) -> StepRecord | None:
        """Run step ``it``; its record, or None (parameters rolled back) when the loss is not finite."""
        state: dict[str, Tensor] = {}
        self.objective.begin_step(it)

        def closure() -> Tensor:
            self.opt.zero_grad(set_to_none=True)
            z = _perturb(self.z, self.smoothing.input_noise, self.noise)
            if self.probed:
                out, probe = _probed_evaluate(self.model, z, self.objective.data, self.noise, self.model_kwargs)
            else:
                out, probe = _evaluate(self.model, z, self.model_kwargs), None
            pred, d, r = self.objective.terms(out, self.mask, probe=probe)
            loss = d + r
            loss.backward()
            if self.hold is not None:
                self.hold.zero_grads()
            state.update(out=out.detach(), pred=pred.detach(), data=d.detach(), reg=r.detach(), loss=loss.detach())
            return loss

        if self.lbfgs:
            self.opt.step(closure)
        else:
            closure()
            self.opt.step()
        if self.hold is not None:
            self.hold.restore()
        loss = float(state["loss"])
        if not math.isfinite(loss):
            self.model.load_state_dict(self.last_good, strict=False)
            return None
        # The older snapshot's tensors take the new one (no third copy of the parameters,
        # no allocation per step): on 10k geoprior charts a snapshot is 90 MB.
        spare = self.previous if self.previous is not self.last_good else None
        self.previous, self.last_good = self.last_good, _snapshot(self.model, into=spare)
        out, beta = state["out"], self.smoothing.average
        if beta is not None:
            self.averaged = out.clone() if self.averaged is None else self.averaged.mul_(beta).add_(out, alpha=1 - beta)
        heldout = None
        if self.heldout is not None:
            with torch.no_grad():
                heldout = float(self.objective.data(state["pred"], self.objective.y, mask=self.heldout))
        return StepRecord(iteration=it, output=self.averaged if self.averaged is not None else out,
                          prediction=state["pred"], loss=loss, data=float(state["data"]), heldout=heldout,
                          raw_output=out, reg=float(state["reg"]))


def _check_probed(objective: Objective, z: Any) -> bool:
    """True for a data term with a ``probe`` method (SURE); refuse what it cannot work with.

    A probed term differentiates the output with respect to the network's input, which must
    therefore be the measurement itself: a tensor of ``y``'s shape, with no physics between.
    """
    if not callable(getattr(objective.data, "probe", None)):
        return False
    if objective.physics is not None:
        raise ValueError("a probed data term (SURE) is for denoising: it needs physics=None (the identity)")
    if not isinstance(z, Tensor) or objective.y is None or z.shape != objective.y.shape:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError("a probed data term (SURE) needs the network input z to be the noisy measurement y: "
                         f"got z {shape} for y {None if objective.y is None else tuple(objective.y.shape)}")
    return True


def _probed_evaluate(model: nn.Module, z: Tensor, data: Any, generator: torch.Generator | None,
                     model_kwargs: Mapping[str, Any]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """``f(z)`` and the probe ``(f(z + eps b), b)`` from one pass over the stacked batch ``[z, z + eps b]``.

    One pass halves the per-layer overhead of two; batch-norm statistics are then taken over
    both halves (they differ by ``eps b``, a hundredth of the noise).  The output's first
    half of rows belongs to ``z``, the second to the probe (an ensemble of ``K`` members
    answers ``K`` rows per input row).
    """
    z_probe, b = data.probe(z, generator)
    both = _evaluate(model, torch.cat([z, z_probe]), model_kwargs)
    out, out_probe = both.chunk(2)
    return out, (out_probe, b)


class _MemberHold:
    """Holds the frozen members' rows of the batched parameters (leading dimension ``n``) fixed.

    Modules of the model with a ``hold_members(frozen)`` method (e.g.
    :class:`shared.networks.BatchedMLP`) are told which members are held, so that they can
    stop evaluating them; ``hold_members(None)`` when the fit ends.
    """

    def __init__(self, params: list[tuple[str, nn.Parameter]], n: int) -> None:
        self.params = [(name, p) for name, p in params if p.ndim >= 1 and p.shape[0] == n]
        if not self.params:
            raise ValueError(f"a per-member stopping rule of {n} members needs trainable parameters whose leading "
                             f"dimension is {n}; shapes: {[tuple(p.shape) for _, p in params[:8]]}")
        device = self.params[0][1].device
        self.frozen = torch.zeros(n, dtype=torch.bool, device=device)
        self.rows = torch.zeros(0, dtype=torch.long, device=device)  # indices of the frozen members
        self.held = {name: p.detach().clone() for name, p in self.params}  # their values (rows in ``rows``)
        self.listeners: list[nn.Module] = []

    def tell(self, model: nn.Module) -> None:
        """Tell ``model``'s modules that hold members of this batch when members freeze."""
        self.listeners = [m for m in model.modules() if callable(getattr(m, "hold_members", None))
                          and getattr(m, "batch", None) == len(self.frozen)]

    def release(self) -> None:
        for m in self.listeners:
            m.hold_members(None)

    def zero_grads(self) -> None:
        """Zero the frozen rows of every batched parameter's gradient."""
        if len(self.rows):
            for _, p in self.params:
                if p.grad is not None:
                    p.grad.index_fill_(0, self.rows, 0.0)

    def restore(self) -> None:
        """Set the frozen rows back to their held values (after an optimiser step)."""
        if len(self.rows):
            with torch.no_grad():
                for name, p in self.params:
                    p.index_copy_(0, self.rows, self.held[name].index_select(0, self.rows))

    def freeze(self, frozen: Tensor, previous: dict[str, Tensor], last_good: dict[str, Tensor]) -> None:
        """Freeze the members newly True in ``frozen`` at their values in ``previous`` (the state
        the step's output was computed with); ``last_good`` (the rollback state) follows."""
        frozen = frozen.to(self.frozen.device)
        newly = (frozen & ~self.frozen).nonzero().squeeze(1)
        if not len(newly):
            return
        self.frozen |= frozen
        self.rows = self.frozen.nonzero().squeeze(1)
        with torch.no_grad():
            for name, p in self.params:
                value = previous[name].index_select(0, newly)
                self.held[name].index_copy_(0, newly, value)
                p.index_copy_(0, newly, value)
                last_good[name].index_copy_(0, newly, value)
        for m in self.listeners:
            m.hold_members(self.frozen)


def _log(history: dict[str, list[float]], record: StepRecord, tracking: Tracking, it: int, iterations: int) -> None:
    history["loss"].append(record.loss)
    history["data"].append(record.data)
    history["reg"].append(record.reg)
    if record.heldout is not None:
        history["heldout"].append(record.heldout)
    if tracking.metrics and (it % tracking.every == 0 or it == iterations - 1):
        history["metric_iteration"].append(it)
        for name, value in tracking.measure(record.output).items():
            history[name].append(value)


def _show(bar, record: StepRecord, history: dict[str, list[float]], tracking: Tracking) -> None:
    if bar is None:
        return
    bar.update(1)
    if record.iteration % 10 == 0:
        postfix = {"loss": f"{record.loss:.3e}"}
        if tracking.metrics:
            name = next(iter(tracking.metrics))
            postfix[name] = f"{history[name][-1]:.3f}"
        bar.set_postfix(postfix)


def _result(loop: _Loop, stopping: StoppingRule | None, history: dict[str, list[float]], stopped_by: str,
            it: int, wall: float) -> FitResult:
    model = loop.model
    model.eval()
    with torch.no_grad():
        final = _evaluate(model, loop.z, loop.model_kwargs).detach()
    n_run = it + 1 if stopped_by != "non-finite" else it
    member = stopping if isinstance(stopping, MemberStoppingRule) else None
    if stopping is not None and stopping.best_output is not None:
        output, selected = stopping.best_output, stopping.best_iteration
    elif loop.averaged is not None:
        output, selected = loop.averaged, max(n_run - 1, 0)
    else:
        output, selected = final, max(n_run - 1, 0)
    return FitResult(output=output.detach(), final=final,
                     averaged=None if loop.averaged is None else loop.averaged.detach(), history=history,
                     selected_iteration=int(selected), stop_iteration=n_run, stopped_by=stopped_by,
                     wall_time_s=wall, model=model, z=loop.z, objective=loop.given,
                     model_kwargs=loop.model_kwargs,
                     member_stop_iterations=None if member is None else member.stop_iterations.clone(),
                     member_rule=member)


def _adam(params: list, lr: float) -> torch.optim.Optimizer:
    """Adam, fused (one kernel over all parameters) where torch offers it for these tensors.

    The unfused step loops over the parameters with a handful of elementwise ops each; on a
    busy 2-core CPU those ops cost far more than the arithmetic (measured on 650 geoprior
    charts: 129 ms a step unfused, 0.45 ms fused, same update up to rounding)."""
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    devices = {p.device for p in tensors}
    if len(devices) == 1 and all(p.is_floating_point() for p in tensors):
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):  # a device or dtype without a fused kernel
            pass
    return torch.optim.Adam(params, lr=lr)


def _evaluate(model: nn.Module, z: Any, kwargs: Mapping[str, Any]) -> Tensor:
    return model(**kwargs) if z is None else model(z, **kwargs)


def _perturb(z: Any, sigma: float, generator: torch.Generator | None) -> Any:
    if z is None or sigma <= 0:
        return z
    if isinstance(z, Tensor):
        return z + sigma * torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    return type(z)(_perturb(v, sigma, generator) for v in z)


def _snapshot(model: nn.Module, into: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """What a rollback restores: trainable parameters and buffers (frozen weights cannot change;
    copying a frozen generator at every step of a latent search cost a third of the step).
    ``into``: an older snapshot whose tensors are overwritten where names and shapes agree."""
    state = model.state_dict(keep_vars=True)
    out = {}
    for k, v in state.items():
        if isinstance(v, nn.Parameter) and not v.requires_grad:
            continue
        old = None if into is None else into.get(k)
        if old is not None and old.shape == v.shape and old.dtype == v.dtype and old.device == v.device:
            out[k] = old.copy_(v.detach())
        else:
            out[k] = v.detach().clone()
    return out


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _to(z: Any, device: torch.device) -> Any:
    if isinstance(z, Tensor):
        return z.to(device)
    if isinstance(z, (tuple, list)):
        return type(z)(_to(v, device) for v in z)
    return z


def _progress_bar(total: int, progress: bool | str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    desc = progress if isinstance(progress, str) else "fit"
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
