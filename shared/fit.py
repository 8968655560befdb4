"""The one fitting engine of the suite.

Every reconstruction here is the same problem::

    theta* = argmin_theta  D( F(G_theta(z)), y )  +  sum_k lambda_k R_k( G_theta(z) ),
    x*     = G_theta*(z)

``G_theta`` is an untrained network (any ``torch.nn.Module``; a batch of independent
networks is just a module whose output has a batch axis), ``z`` its fixed input, ``F`` the
forward model (a linear operator of :mod:`shared.operators`, a finite element solve
wrapped as a ``torch.autograd.Function``, or ``None`` for the identity), ``D`` the data
term and ``R_k`` explicit regularisers such as total variation.

The engine owns what every front end needs and none should rewrite: the optimiser
(Adam, or L-BFGS), input perturbation ``z + sigma_p * n`` with fresh ``n`` each step,
an exponential moving average of the outputs, stopping rules that need no ground
truth (:mod:`shared.stopping`), metric tracking against a reference, per-step
callbacks, progress bars, seeds and timing.  It returns a :class:`FitResult`.

Example::

    result = fit(net, z, y, forward=A, iterations=2000, lr=1e-2,
                 stopping=ESWMV(window=100, patience=500), reference=x_true)
    x_hat = result.output
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from shared.losses import mse_loss
from shared.seeding import seed_everything
from shared.stopping import StepRecord, StoppingRule

__all__ = ["fit", "FitResult", "StepRecord"]

DataLoss = Callable[..., Tensor]
Regulariser = Callable[[Tensor], Tensor]


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
        ``G_theta(z)`` at the last iteration (no input perturbation).
    averaged:
        The exponential moving average of the outputs (``None`` without averaging).
    history:
        Lists indexed by iteration: ``"loss"`` (total objective), ``"data"``, ``"reg"``,
        ``"heldout"`` (when a held-out fraction is used) and one list per metric
        (recorded every ``metric_every`` steps, with ``"metric_iteration"`` giving the
        iterations at which they were taken).
    selected_iteration:
        Iteration whose output is ``output`` (0-based).
    stop_iteration:
        Number of iterations run.
    stopped_by:
        ``"iterations"`` (ran to the end), ``"stopping"`` (the rule fired), or
        ``"non-finite"`` (the loss became NaN/Inf; the last finite state is kept).
    wall_time_s:
        Wall-clock time of the loop in seconds.
    model:
        The fitted network (parameters of the last iteration).
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
    extras: dict[str, Any] = field(default_factory=dict)

    def best_metric(self, name: str, mode: str = "max") -> tuple[float, int]:
        """Best value of a tracked metric and the iteration where it occurred."""
        values = self.history.get(name)
        if not values:
            raise KeyError(f"metric {name!r} was not tracked; tracked: {sorted(self.history)}")
        pick = max if mode == "max" else min
        best = pick(range(len(values)), key=values.__getitem__)
        return values[best], int(self.history["metric_iteration"][best])


def _evaluate(model: nn.Module, z: Any, kwargs: Mapping[str, Any]) -> Tensor:
    return model(**kwargs) if z is None else model(z, **kwargs)


def _perturb(z: Any, sigma: float) -> Any:
    if z is None or sigma <= 0:
        return z
    if isinstance(z, Tensor):
        return z + sigma * torch.randn_like(z)
    return type(z)(_perturb(v, sigma) for v in z)


def _holdout_mask(y: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    """Boolean mask of the measurement entries kept for fitting (True = used)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout must be a fraction in (0, 1), got {fraction}")
    finite = torch.isfinite(y)
    keep = torch.rand(y.shape, generator=generator).to(y.device) >= fraction
    return keep & finite


def fit(
    model: nn.Module,
    z: Any,
    y: Tensor | None = None,
    *,
    forward: Callable[[Tensor], Tensor] | None = None,
    data_loss: DataLoss = mse_loss,
    regularisers: Mapping[str, tuple[float, Regulariser]] | None = None,
    iterations: int = 1000,
    lr: float = 1e-2,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    grad_clip: float | None = None,
    lr_schedule: str = "constant",
    input_noise: float = 0.0,
    average: float | None = None,
    stopping: StoppingRule | None = None,
    holdout: float | None = None,
    reference: Tensor | None = None,
    metrics: Mapping[str, Callable[[Tensor, Tensor], float]] | None = None,
    metric_every: int = 10,
    callbacks: Iterable[Callable[[StepRecord], Any]] = (),
    seed: int | None = 0,
    device: str | torch.device | None = None,
    progress: bool | str = False,
    parameters: Iterable[nn.Parameter] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> FitResult:
    r"""Fit an untrained network to measurements.

    Minimises ``data_loss(F(G(z)), y) + sum_k w_k R_k(G(z))`` over the parameters of
    ``model`` (or over ``parameters`` when given, e.g. to also learn the input).

    Parameters
    ----------
    model:
        The prior ``G_theta``. Called as ``model(z)`` (or ``model()`` when ``z`` is None).
    z:
        Fixed network input: a tensor, a tuple of tensors, or None.
    y:
        Measurements, shape of ``F(G(z))``. Non-finite entries are treated as missing
        (left out of the data term).  ``None`` when ``data_loss`` needs no target
        (it is then called as ``data_loss(prediction)``).
    forward:
        The forward model ``F`` (a callable on the network output). ``None``: identity.
    data_loss:
        ``D(prediction, target, mask=None) -> scalar``. The default is the mean squared
        error over the entries where ``mask`` is True.  Custom losses that cannot take
        a mask must not be combined with ``holdout``.
    regularisers:
        ``{name: (weight, R)}`` with ``R(output) -> scalar``, e.g. total variation.
    iterations, lr, optimizer, weight_decay, grad_clip:
        Optimiser settings; ``optimizer`` is ``"adam"`` or ``"lbfgs"``.
    lr_schedule:
        ``"constant"``, or ``"cosine"``: ``lr_t = lr_min + (lr - lr_min)(1 + cos(pi t / T)) / 2``
        over ``T = iterations`` steps with ``lr_min = lr / 100``.  The decay removes the
        jitter that a constant Adam step leaves in the parameters at the end of a fit.
    input_noise:
        Standard deviation ``sigma_p`` of the Gaussian added to ``z`` at every step
        (the official DIP uses 1/30). As in the original DIP, the output used for
        averaging, stopping and metrics is that of the (perturbed) training pass, which
        saves a second forward pass per step; ``final`` is evaluated on the clean ``z``.
    average:
        Exponential moving average factor ``beta`` of the outputs
        (``x_avg <- beta x_avg + (1 - beta) x_t``; DIP uses 0.99). ``None``: off.
    stopping:
        A :class:`shared.stopping.StoppingRule` (ES-WMV, discrepancy principle,
        held-out loss ...). It sees the (averaged, when on) output of each step.
    holdout:
        Fraction of measurement entries hidden from the data term; their loss is
        recorded as ``history["heldout"]`` and offered to the stopping rule.
    reference, metrics, metric_every:
        Ground truth and ``{name: f(output, reference)}`` tracked every
        ``metric_every`` steps (for figures and benchmarks only; never used to select).
    callbacks:
        Functions called with the :class:`StepRecord` of every step.
    seed:
        Seeds torch (and numpy/random) before the loop; input perturbation and the
        held-out split are then reproducible. ``None`` leaves the generators alone.
    device:
        Where to run; the model, ``z``, ``y`` and ``reference`` are moved there.
    progress:
        Show a tqdm progress bar (a string is used as its description).
    model_kwargs:
        Keyword arguments of every model call, ``model(z, **model_kwargs)`` (tensors are
        moved to ``device``); e.g. the valid lengths of a padded batch, which the model
        may then skip (:class:`shared.networks.BatchedMLP`).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if seed is not None:
        seed_everything(seed)
    device = torch.device(device) if device is not None else _model_device(model)
    model = model.to(device)
    z = _to(z, device)
    model_kwargs = {k: _to(v, device) for k, v in (model_kwargs or {}).items()}
    y = y.to(device) if y is not None else None
    reference = reference.to(device) if reference is not None else None
    regularisers = dict(regularisers or {})
    metrics = dict(metrics or {})
    forward = forward if forward is not None else (lambda x: x)

    mask = None
    heldout_mask = None
    if y is not None:
        finite = torch.isfinite(y)
        if holdout:
            gen = torch.Generator().manual_seed(0 if seed is None else seed)
            mask = _holdout_mask(y, holdout, gen)
            heldout_mask = finite & ~mask
        elif not bool(finite.all()):
            mask = finite
        if mask is not None and not bool(mask.any()):
            raise ValueError("no finite measurement is left to fit (all entries are NaN/Inf or held out)")
        y = torch.where(finite, y, torch.zeros_like(y))

    params = list(parameters) if parameters is not None else [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "lbfgs":
        opt = torch.optim.LBFGS(params, lr=lr, max_iter=1, history_size=50, line_search_fn="strong_wolfe")
    else:
        raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {optimizer!r}")

    if lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations, eta_min=lr / 100)
    elif lr_schedule == "constant":
        scheduler = None
    else:
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")

    def data_term(pred: Tensor, m: Tensor | None) -> Tensor:
        if y is None:
            return data_loss(pred)
        if m is None:
            return data_loss(pred, y)
        return data_loss(pred, y, mask=m)

    history: dict[str, list[float]] = {"loss": [], "data": [], "reg": []}
    if heldout_mask is not None:
        history["heldout"] = []
    if reference is not None and metrics:
        history["metric_iteration"] = []
        for name in metrics:
            history[name] = []
    if stopping is not None:
        stopping.reset()

    averaged: Tensor | None = None
    last_good = {k: v.detach().clone() for k, v in model.state_dict().items()}
    stopped_by = "iterations"
    bar = _progress_bar(iterations, progress)
    start = time.perf_counter()
    it = -1
    model.train()
    for it in range(iterations):
        state: dict[str, Tensor] = {}

        def closure() -> Tensor:
            opt.zero_grad(set_to_none=True)
            out = _evaluate(model, _perturb(z, input_noise), model_kwargs)
            pred = forward(out)
            d = data_term(pred, mask)
            r = sum((w * reg(out) for w, reg in regularisers.values()), torch.zeros((), device=d.device))
            loss = d + r
            loss.backward()
            state.update(out=out.detach(), pred=pred.detach(), data=d.detach(), reg=r.detach(), loss=loss.detach())
            return loss

        if optimizer == "lbfgs":
            opt.step(closure)
        else:
            closure()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
        if scheduler is not None:
            scheduler.step()

        loss_value = float(state["loss"])
        if not math.isfinite(loss_value):
            model.load_state_dict(last_good)
            stopped_by = "non-finite"
            break
        last_good = {k: v.detach().clone() for k, v in model.state_dict().items()}

        out = state["out"]
        if average is not None:
            averaged = out.clone() if averaged is None else averaged.mul_(average).add_(out, alpha=1 - average)
        tracked = averaged if averaged is not None else out

        history["loss"].append(loss_value)
        history["data"].append(float(state["data"]))
        history["reg"].append(float(state["reg"]))
        heldout_value = None
        if heldout_mask is not None:
            with torch.no_grad():
                heldout_value = float(data_loss(state["pred"], y, mask=heldout_mask))
            history["heldout"].append(heldout_value)
        if reference is not None and metrics and (it % metric_every == 0 or it == iterations - 1):
            history["metric_iteration"].append(it)
            with torch.no_grad():
                for name, metric in metrics.items():
                    history[name].append(float(metric(tracked, reference)))

        record = StepRecord(
            iteration=it,
            output=tracked,
            prediction=state["pred"],
            loss=loss_value,
            data=float(state["data"]),
            heldout=heldout_value,
            raw_output=out,
        )
        for cb in callbacks:
            cb(record)
        if bar is not None:
            bar.update(1)
            if it % 10 == 0:
                postfix = {"loss": f"{loss_value:.3e}"}
                if reference is not None and metrics:
                    name = next(iter(metrics))
                    postfix[name] = f"{history[name][-1]:.3f}"
                bar.set_postfix(postfix)
        if stopping is not None and stopping.update(record):
            stopped_by = "stopping"
            break
    wall = time.perf_counter() - start
    if bar is not None:
        bar.close()

    model.eval()
    with torch.no_grad():
        final = _evaluate(model, z, model_kwargs).detach()
    n_run = it + 1 if stopped_by != "non-finite" else it
    if stopping is not None and stopping.best_output is not None:
        output, selected = stopping.best_output, stopping.best_iteration
    elif averaged is not None:
        output, selected = averaged, max(n_run - 1, 0)
    else:
        output, selected = final, max(n_run - 1, 0)
    return FitResult(
        output=output.detach(),
        final=final,
        averaged=None if averaged is None else averaged.detach(),
        history=history,
        selected_iteration=int(selected),
        stop_iteration=n_run,
        stopped_by=stopped_by,
        wall_time_s=wall,
        model=model,
    )


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _to(z: Any, device: torch.device) -> Any:
    if z is None:
        return None
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
