"""The deep image prior as a reconstructor: settings at construction, one call per problem.

For a :class:`shared.image.tasks.Problem` with physics ``A`` and measurements ``y``,
:class:`DeepImagePrior` fits a prior network ``f_theta`` (one of
:data:`shared.image.tasks.NETS`) with fixed input ``z`` through :func:`shared.fit.fit`::

    theta* = argmin_theta  mean( (A f_theta(z + sigma_p n_t) - y)^2 ),    x* = f_theta*(z),

with the DIP's input perturbation ``sigma_p n_t`` (fresh Gaussian ``n_t`` every step), the
exponential average ``x_avg <- beta x_avg + (1 - beta) x_t`` of the outputs, and a stopping
rule that needs no ground truth (:func:`shared.stopping.make_rule`): ES-WMV on the raw
outputs (default), the loss on a held-out 10% of the measurements, or none (the averaged
output of the last step).  For deblurring the input is by default not noise but the
Tikhonov estimate ``z = x_lam`` of the blurred image, its weight chosen by generalised
cross-validation (:func:`shared.operators.tikhonov.tikhonov_gcv`), and the network refines
it under a cosine step decay with no early stopping (:data:`TIKHONOV_DEFAULTS`): from noise
the network must build the inverse filter itself, which takes thousands of steps and lost
to Richardson-Lucy.  For super-resolution the selected output ``x_net`` is then made to agree
with the measurements (``consistency``): ``x* = x_net + dx`` with the smallest correction
``dx = argmin ||A (x_net + dx) - y||^2 + lam ||L dx||^2`` (``L`` the Laplacian, ``lam`` chosen
by GCV for ``y``; :func:`shared.operators.tikhonov.tikhonov_consistency`): within its step budget
the network leaves a misfit of about 1 % of the range on smooth images, which the
correction removes without touching what the measurements cannot see (the network's edges).
For inpainting the same step is exact (``consistency="fill"``,
:func:`shared.operators.fill.smooth_fill` with ``order=1``): the known pixels are restored from
``y`` and the correction is carried harmonically into the holes, so the network contributes
only what it drew where nothing was measured; nor does inpainting stop early, as its known
pixels carry no noise to over-fit.  The reconstruction is the selected (and corrected) output,
clipped to [0, 1], at the network's size (``output``) and with the padding undone (``result``: the input's
size, ``scale`` times larger for super-resolution).

Example::

    problem = denoise_problem(image, multiple=NETS["skip"].multiple, simulate=True)
    result = DeepImagePrior(net="skip", iterations=1800).reconstruct(problem)
    result.arrays["result"], result.metrics["psnr"]
    result.write("out/")            # result.png, comparison.png, curves.png, metrics.json
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable

from torch import Tensor

from shared.fit import FitResult, Objective, Optimiser, Smoothing, Tracking, fit
from shared.image.tasks import (FILL_DEFAULTS, NETS, SURE_DEFAULTS, TASK_DEFAULTS, TIKHONOV_DEFAULTS, Problem,
                                baseline_key, make_network)
from shared.losses import SumOverMembers, mse_loss
from shared.metrics import psnr, ssim
from shared.operators.fill import smooth_fill
from shared.operators.tikhonov import TikhonovResult, tikhonov_consistency, tikhonov_gcv
from shared.physics import IdentityPhysics, Physics
from shared.reconstructor import Reconstructor
from shared.result import Result
from shared.stopping import StepRecord, StoppingRule, make_rule
from shared.sure import MonteCarloSURE, estimate_noise_std

__all__ = ["DeepImagePrior", "LOSSES", "INPUTS", "CONSISTENCY", "STOPPING", "HELDOUT_FRACTION", "OUTPUT_FILES"]

#: stopping rules of the image front end (names of :func:`shared.stopping.make_rule`;
#: ``auto``: none for the Tikhonov and fill inputs, which need no early stopping, and for
#: inpainting, whose known pixels carry no noise to over-fit; else ES-WMV on the raw outputs,
#: which for SURE stops a fit that collapses and lets one that settles return its last output)
STOPPING = ("auto", "eswmv", "heldout", "none")
#: data terms: ``mse`` (the DIP: fixed random input, early stopping) and ``sure`` (denoising
#: only: the network's input is the noisy image, Stein's unbiased risk estimate as the loss);
#: ``auto``: ``sure`` for denoising, ``mse`` for every other task
LOSSES = ("auto", "mse", "sure")
#: the network's input with the MSE loss: ``noise`` (the DIP's fixed random tensor),
#: ``tikhonov`` (deblurring only: the GCV-weighted Tikhonov estimate of the image) or ``fill``
#: (inpainting only: the biharmonic fill of the holes); ``auto``: ``tikhonov`` for deblurring,
#: else ``noise``
INPUTS = ("auto", "noise", "tikhonov", "fill")
#: the data-consistency step after the fit: ``tikhonov`` (the GCV-weighted smallest correction
#: that fits the measurements; a blur or a down-sampler), ``fill`` (inpainting: the known pixels
#: restored and the correction carried smoothly into the holes), ``none``; ``auto``: ``tikhonov``
#: for super-resolution, ``fill`` for inpainting, else ``none``
CONSISTENCY = ("auto", "none", "tikhonov", "fill")
#: the task each image input and each consistency step belongs to
_INPUT_TASK = {"tikhonov": "deblur", "fill": "inpaint"}
_CONSISTENCY_TASKS = {"tikhonov": ("superres", "deblur"), "fill": ("inpaint",)}
#: fraction of the measurements the ``heldout`` rule hides from the fit
HELDOUT_FRACTION = 0.1
#: every file :meth:`Result.write` creates for a DIP result
OUTPUT_FILES = ("result.png", "comparison.png", "curves.png", "metrics.json")


class DeepImagePrior(Reconstructor):
    """Deep image prior restoration of one :class:`~shared.image.tasks.Problem` (module docstring).

    Parameters
    ----------
    net:
        Prior network, a key of :data:`~shared.image.tasks.NETS`.
    loss:
        ``mse`` (the DIP objective), ``sure`` (denoising with a known or estimated noise
        level: the network maps the noisy image to its estimate and minimises Stein's
        unbiased risk estimate, :class:`shared.sure.MonteCarloSURE`) or ``auto`` (``sure``
        for denoising, else ``mse``).
    net_input:
        With the MSE loss, the network's input: ``noise`` (the DIP), ``tikhonov`` (deblurring:
        the Tikhonov estimate of the image, weight by GCV; cosine steps, no early stopping),
        ``fill`` (inpainting: the biharmonic fill; the same recipe) or ``auto`` (``tikhonov``
        for deblurring, else ``noise``).
    consistency:
        After the fit: ``tikhonov`` (correct the output by the smallest GCV-weighted change
        that fits the measurements; module docstring), ``fill`` (inpainting: restore the known
        pixels, carry the correction harmonically into the holes), ``none``, or ``auto``
        (``tikhonov`` for super-resolution, ``fill`` for inpainting, else ``none``).
    sigma:
        Noise std of the noisy image (in [0, 1] units) for the SURE loss; ``None``: the
        simulated noise level, else estimated from the image
        (:func:`shared.sure.estimate_noise_std`).
    iterations:
        Maximum number of Adam steps; ``None``: the task's default (:data:`TASK_DEFAULTS`;
        :data:`SURE_DEFAULTS` for the SURE loss).
    lr, input_noise, average:
        Adam step size, input perturbation ``sigma_p`` and averaging factor ``beta``;
        ``None`` (``"default"`` for ``average``, where ``None`` switches averaging off):
        the network's (:class:`~shared.image.tasks.NetSpec`; for SURE: no perturbation).
    stop, patience, window:
        Stopping rule (``auto``, ``eswmv``, ``heldout`` or ``none``), steps without
        improvement before it stops, ES-WMV window; ``None``: the recipe's (SURE: window
        25, patience 300 and a stop when the variance rises threefold, :data:`SURE_DEFAULTS`;
        else window 100, patience 300, no rise stop).
    seed:
        Seeds the network's initialisation, its input ``z``, the held-out split and the fit.
    members:
        ``K``: fit an ensemble of ``K`` networks (seeds ``seed .. seed + K - 1``) together,
        as one network of grouped convolutions whose data term is the sum of the members'
        (:class:`shared.losses.SumOverMembers`: each member follows its own separate fit),
        and report their mean image; the members' spread is the array ``member_std``.
    device, progress, metric_every:
        Torch device; progress bar (a string is its label); PSNR tracking interval (when
        the problem has a reference; never used to select).

    After a deblurring fit from the Tikhonov input, ``tikhonov_`` holds that estimate
    (:class:`~shared.operators.tikhonov.TikhonovResult`: ``x``, the weight ``lam``, the GCV curve);
    after an inpainting fit from the fill, ``fill_`` holds the filled image;
    after a data-consistency step, ``consistency_`` holds that correction's result (``x``: the
    corrected output).
    """

    method = "dip"

    def __init__(self, net: str = "skip", loss: str = "auto", net_input: str = "auto", consistency: str = "auto",
                 sigma: float | None = None,
                 iterations: int | None = None, lr: float | None = None,
                 stop: str = "auto", patience: int | None = None, window: int | None = None,
                 input_noise: float | None = None,
                 average: float | None | str = "default", seed: int = 0, members: int = 1, device: str = "cpu",
                 progress: bool | str = False, metric_every: int = 10) -> None:
        self.net = net
        self.loss = loss
        self.net_input = net_input
        self.consistency = consistency
        self.sigma = sigma
        self.iterations = iterations
        self.lr = lr
        self.stop = stop
        self.patience = patience
        self.window = window
        self.input_noise = input_noise
        self.average = average
        self.seed = seed
        self.members = members
        self.device = device
        self.progress = progress
        self.metric_every = metric_every
        self.tikhonov_: TikhonovResult | None = None
        self.consistency_: TikhonovResult | None = None
        self.fill_: Tensor | None = None

    # ------------------------------------------------------------------ settings
    def check(self) -> DeepImagePrior:
        """Refuse an unknown network, loss or stopping rule (before anything is built); returns ``self``."""
        if self.net not in NETS:
            raise ValueError(f"unknown network {self.net!r}; choose from {', '.join(NETS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose from {', '.join(LOSSES)}")
        if self.net_input not in INPUTS:
            raise ValueError(f"unknown network input {self.net_input!r}; choose from {', '.join(INPUTS)}")
        if self.consistency not in CONSISTENCY:
            raise ValueError(f"unknown consistency step {self.consistency!r}; choose from {', '.join(CONSISTENCY)}")
        if self.stop not in STOPPING:
            raise ValueError(f"unknown stopping rule {self.stop!r}; choose from {', '.join(STOPPING)}")
        if self.sigma is not None and not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma (the noise std for the SURE loss) must be positive, got {self.sigma}")
        if not (isinstance(self.members, int) and self.members >= 1):
            raise ValueError(f"members (the ensemble size) must be an integer >= 1, got {self.members!r}")
        if self.members > 1 and self.net == "decoder":
            raise ValueError("an ensemble (members > 1) needs a skip, hourglass or official network, "
                             "not the deep decoder")
        return self

    def resolved_loss(self, task: str) -> str:
        """``mse`` or ``sure`` for ``task`` (``auto``: ``sure`` for denoising); SURE only denoises."""
        loss = self.check().loss
        if loss == "auto":
            loss = "sure" if task == "denoise" else "mse"
        if loss == "sure":
            _refuse(task, "denoise", self.net, "the SURE loss", "loss='mse'")
        return loss

    def resolved_input(self, task: str) -> str:
        """``measurement`` (SURE), ``noise`` or ``tikhonov`` for ``task`` (``auto``: ``tikhonov``
        for deblurring); the Tikhonov input needs a blur."""
        if self.resolved_loss(task) == "sure":
            return "measurement"
        choice = self.net_input
        if choice == "auto":
            choice = "tikhonov" if task == "deblur" and self.net != "decoder" else "noise"
        if choice in _INPUT_TASK:
            _refuse(task, _INPUT_TASK[choice], self.net, f"the {choice} input", "net_input='noise'")
        return choice

    def resolved_consistency(self, task: str) -> str:
        """``tikhonov`` or ``none`` for ``task`` (``auto``: ``tikhonov`` for super-resolution);
        the step needs a blur or a down-sampler."""
        choice = self.check().consistency
        if choice == "auto":
            return {"superres": "tikhonov", "inpaint": "fill"}.get(task, "none")
        tasks = _CONSISTENCY_TASKS.get(choice)
        if tasks is not None and task not in tasks:
            raise ValueError(f"the {choice} consistency step is for {' and '.join(tasks)}; "
                             f"the {task} task needs consistency='none'")
        return choice

    def settings(self, task: str) -> dict[str, Any]:
        """:meth:`get_params` with the task's, the loss's, the input's and the network's defaults filled in."""
        spec = NETS[self.check().net]
        p = self.get_params()
        p["loss"] = self.resolved_loss(task)
        p["net_input"] = self.resolved_input(task)
        p["consistency"] = self.resolved_consistency(task)
        # An image input (the noisy image for SURE, the Tikhonov estimate) is refined under a
        # cosine decay without input noise or early stopping; the noise input is the classic DIP.
        recipes = {"measurement": SURE_DEFAULTS, "tikhonov": TIKHONOV_DEFAULTS, "fill": FILL_DEFAULTS}
        recipe = recipes.get(p["net_input"])
        p["iterations"] = p["iterations"] or (recipe or TASK_DEFAULTS[task])["iterations"]
        p["lr"] = (recipe["lr"] if recipe else spec.lr) if p["lr"] is None else p["lr"]
        p["input_noise"] = (0.0 if recipe else spec.input_noise) if p["input_noise"] is None else p["input_noise"]
        if p["average"] == "default":
            p["average"] = recipe["average"] if recipe else spec.average
        # Inpainting's known pixels are noise-free: nothing to over-fit, and ES-WMV's plateau came
        # long before the best output on random-pixel masks (docs/image.md, "Inpainting").  SURE
        # keeps ES-WMV: at high noise its divergence estimate can fall to 0 while the weights
        # memorise y (rocket at sigma 50: 29.0 dB at step 180, 19.7 dB at 350), and the raw
        # outputs' window variance then jumps several-fold (SURE_DEFAULTS' rise stop); a fit that
        # settles has its smallest variance at the end of the cosine decay and returns its last output.
        no_stop = (recipe is not None and p["net_input"] != "measurement") or task == "inpaint"
        p["stop"] = ("none" if no_stop else "eswmv") if p["stop"] == "auto" else p["stop"]
        p["schedule"] = recipe["schedule"] if recipe else "constant"
        for name, default in (("window", 100), ("patience", 300)):
            p[name] = (recipe or {}).get(name, default) if p[name] is None else p[name]
        p["rise"] = (recipe or {}).get("rise")
        return p

    def stopping_rule(self, task: str = "inpaint") -> StoppingRule | None:
        """The rule named by ``stop`` (resolved for ``task``), built by :func:`shared.stopping.make_rule`.

        ``task`` only matters for ``stop="auto"`` (:data:`STOPPING`: none with the Tikhonov
        or fill input and for inpainting, else ES-WMV).  ES-WMV tracks the raw
        (un-averaged) outputs: the averaged output's variance keeps shrinking long after the
        raw outputs start fitting noise (see ``ESWMV``).
        """
        p = self.settings(task)
        stop = p["stop"]
        kwargs = {"eswmv": {"window": p["window"], "patience": p["patience"], "source": "raw", "rise": p["rise"]},
                  "heldout": {"fraction": HELDOUT_FRACTION, "patience": p["patience"]}}.get(stop, {})
        return make_rule(stop, **kwargs)

    def config(self, task: str, rule: StoppingRule | None, parameters: int) -> dict[str, Any]:
        """What ``metrics.json`` records as the settings of a run (resolved defaults)."""
        p = self.settings(task)
        return {"net": p["net"], "net_description": NETS[p["net"]].description, "parameters": parameters,
                "loss": p["loss"], "net_input": p["net_input"], "consistency": p["consistency"],
                "iterations": p["iterations"], "lr": p["lr"],
                "schedule": p["schedule"],
                "input_noise": p["input_noise"], "average": p["average"], "stop": p["stop"],
                "patience": p["patience"] if rule is not None else None,
                "window": p["window"] if p["stop"] == "eswmv" else None,
                "rise": p["rise"] if p["stop"] == "eswmv" else None, "holdout": getattr(rule, "fraction", None),
                "seed": p["seed"], "members": p["members"], "device": str(p["device"])}

    def noise_level(self, problem: Problem) -> tuple[float, str]:
        """``(sigma, source)`` of the SURE loss: given, simulated, or estimated from the noisy image."""
        if self.sigma is not None:
            return float(self.sigma), "given"
        simulated = (problem.info or {}).get("sigma_255")
        if simulated:
            return simulated / 255, "simulated"
        return max(estimate_noise_std(problem.y), 1e-4), "estimated"

    # ------------------------------------------------------------------ fitting
    def fit_problem(self, problem: Problem, callbacks: Iterable[Callable[[StepRecord], Any]] = (),
            stopping: StoppingRule | None = None) -> tuple[FitResult, StoppingRule | None, int]:
        """Build the network and fit it to ``problem``: ``(FitResult, rule, number of parameters)``.

        ``stopping`` replaces the rule named by ``stop`` (e.g. one wrapped with a time limit).
        """
        p = self.settings(problem.task)
        _, C, H, W = problem.shape
        sure = p["loss"] == "sure"
        image_input = p["net_input"] != "noise"
        model, z = make_network(p["net"], C, (H, W), seed=p["seed"], in_channels=C if image_input else None,
                                members=p["members"])
        data: Any = mse_loss
        if sure:
            z = problem.y  # the network maps the noisy image to its estimate
            data = MonteCarloSURE(self.noise_level(problem)[0])
        elif p["net_input"] == "tikhonov":
            # tikhonov_gcv refuses an operator that is not a same-size blur
            self.tikhonov_ = tikhonov_gcv(problem.forward, problem.y.to(self.device))
            z = self.tikhonov_.x  # the network refines the Tikhonov estimate
        elif p["net_input"] == "fill":
            self.fill_ = smooth_fill(problem.forward, problem.y).to(self.device)
            z = self.fill_  # the network refines the biharmonic fill
        if p["members"] > 1:
            data = SumOverMembers(data, p["members"])  # the members' separate fits, side by side
        rule = self.stopping_rule(problem.task) if stopping is None else stopping
        # An ensemble is tracked by its members' mean image, the one it reports.
        metrics = ({"psnr": lambda x, r: psnr(x.mean(0, keepdim=True).clamp(0, 1), r)}
                   if problem.reference is not None else {})
        res = fit(model, z, Objective(problem.y, physics=_physics(problem.forward), data=data),
                  optimiser=Optimiser(lr=p["lr"], iterations=p["iterations"], schedule=p["schedule"]),
                  smoothing=Smoothing(input_noise=p["input_noise"], average=p["average"]), stopping=rule,
                  tracking=Tracking(metrics, reference=problem.reference, every=p["metric_every"]),
                  callbacks=callbacks, seed=p["seed"], device=p["device"], progress=p["progress"])
        return res, rule, sum(q.numel() for q in model.parameters())

    def reconstruct(self, problem: Problem, callbacks: Iterable[Callable[[StepRecord], Any]] = (),
                    stopping: StoppingRule | None = None) -> Result:
        """Fit the prior to ``problem``; a :class:`shared.result.Result` with ``arrays``
        ``output`` (network size) and ``result`` (input size), the metrics, the config and
        the :class:`~shared.fit.FitResult` (``fit``), writing result.png, comparison.png,
        curves.png (and metrics.json)."""
        res, rule, n_params = self.fit_problem(problem, callbacks, stopping)
        members = res.output.detach().cpu().clamp(0, 1)
        network = members.mean(0, keepdim=True)
        config = self.config(problem.task, rule, n_params)
        output = network
        if config["consistency"] == "tikhonov":
            # on the CPU, where the output already is (the operator casts its kernel to the input)
            self.consistency_ = tikhonov_consistency(problem.forward, problem.y.detach().cpu(), network)
            output = self.consistency_.x.clamp(0, 1)
            config["consistency_lambda"] = self.consistency_.lam
        elif config["consistency"] == "fill":
            filled = smooth_fill(problem.forward, problem.y.detach().cpu(), network, order=1)
            self.consistency_ = TikhonovResult(filled, 0.0)  # the exact-constraint limit lam -> 0
            output = filled.clamp(0, 1)
        result = problem.geometry.undo(output, scale=problem.scale)
        metrics = _metrics(problem, res, result)
        arrays = {"output": output, "result": result}
        if config["loss"] == "sure":
            sigma, source = self.noise_level(problem)
            config.update(sigma_255=sigma * 255, sigma_source=source)
        if config["net_input"] == "tikhonov":
            config["tikhonov_lambda"] = self.tikhonov_.lam
        if problem.reference is not None:  # what the steps before the result scored
            if config["net_input"] == "tikhonov":
                metrics["psnr_tikhonov"] = _psnr_at_input_size(problem, self.tikhonov_.x.detach().cpu().clamp(0, 1))
            if config["net_input"] == "fill":
                metrics["psnr_fill"] = _psnr_at_input_size(problem, self.fill_.detach().cpu().clamp(0, 1))
            if output is not network:
                metrics["psnr_network"] = _psnr_at_input_size(problem, network)
            if self.members > 1:
                metrics["member_psnr"] = [_psnr_at_input_size(problem, m[None]) for m in members]
        if self.members > 1:
            arrays["member_std"] = problem.geometry.undo(members.std(0, keepdim=True), scale=problem.scale)
        info = {"task": problem.task, "input_size": list(problem.geometry.original),
                "network_size": list(problem.shape[-2:]), "result_size": list(result.shape[-2:]),
                "size_adjustment": problem.geometry.mode, "messages": list(problem.messages),
                "task_parameters": problem.info}
        out = Result(self.method, arrays=arrays, metrics=metrics,
                     timings={"fit_s": res.wall_time_s}, config=config, fit=res, info=info)
        out.files = _writers(problem, out)
        return out


def _refuse(task: str, its_task: str, net: str, what: str, instead: str) -> None:
    """Refuse ``what`` (an image input to the network) outside ``its_task`` or with the deep decoder."""
    if task != its_task:
        doing = {"denoise": "denoising", "deblur": "deblurring", "inpaint": "inpainting"}[its_task]
        raise ValueError(f"{what} is for {doing}; the {task} task needs {instead}")
    if net == "decoder":
        raise ValueError(f"{what} needs a network that takes an image (skip, hourglass or official), "
                         "not the deep decoder")


def _psnr_at_input_size(problem: Problem, x: Tensor) -> float:
    """PSNR of ``x`` (network size) against the problem's reference, both with the padding undone."""
    undo = lambda z: problem.geometry.undo(z, scale=problem.scale)  # noqa: E731
    return float(psnr(undo(x), undo(problem.reference.cpu())))


def _physics(forward: Physics | None) -> Physics | None:
    """The objective's physics: ``None`` (the engine's identity) for an identity operator."""
    from shared.operators import Identity

    return None if forward is None or isinstance(forward, (Identity, IdentityPhysics)) else forward


def _metrics(problem: Problem, res: FitResult, result: Tensor) -> dict[str, Any]:
    """Stop/selection record and, with a reference, PSNR/SSIM of the result and the baseline.

    Final metrics are on the result at the input's size (padding removed).
    """
    out: dict[str, Any] = {
        "iterations_run": res.stop_iteration,
        "selected_iteration": res.selected_iteration + 1,
        "stopped_by": res.stopped_by,
        "wall_time_s": res.wall_time_s,
        "final_loss": res.history["loss"][-1] if res.history["loss"] else None,
    }
    if problem.reference is not None:
        ref = problem.geometry.undo(problem.reference.cpu(), scale=problem.scale)
        obs = problem.geometry.undo(problem.observation.cpu().clamp(0, 1), scale=problem.scale)
        key = baseline_key(problem.baseline_name)
        out["psnr"] = float(psnr(result, ref))
        out["ssim"] = float(ssim(result, ref))
        out[f"psnr_{key}"] = float(psnr(obs, ref))
        out[f"ssim_{key}"] = float(ssim(obs, ref))
        best, best_it = res.best_metric("psnr")
        out["best_psnr_during_fit"] = best
        out["best_psnr_iteration"] = best_it + 1
    return out


def _writers(problem: Problem, rec: Result) -> dict[str, Callable[[Path], Any]]:
    """result.png (input size), comparison.png (input | DIP | reference), curves.png."""
    from shared.image.figures import fit_curves, side_by_side
    from shared.image.io import write_image

    m, cfg, res = rec.metrics, rec.config, rec.fit
    base_key = "psnr_" + baseline_key(problem.baseline_name)
    panels = [(problem.baseline_name + (f"\n{m[base_key]:.2f} dB" if base_key in m else ""), problem.observation),
              (f"DIP ({cfg['net']}), it. {m['selected_iteration']}" +
               (f"\n{m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}" if "psnr" in m else ""), rec.arrays["output"])]
    if problem.reference is not None:
        panels.append(("reference", problem.reference))
    title = f"{problem.task}: {cfg['net']}, stop = {cfg['stop']}"
    return {
        "result.png": lambda path: write_image(path, rec.arrays["result"]),
        "comparison.png": lambda path: side_by_side(path, panels),
        "curves.png": lambda path: fit_curves(path, res.history, selected_iteration=res.selected_iteration,
                                              baseline=m.get(base_key), title=title),
    }
