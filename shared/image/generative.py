"""Learned generators made image-adaptive: CSGM, IAGAN and a latent-convolutional search.

A generator ``G_theta0`` trained on an image family (:mod:`shared.image.generator`)
reconstructs one measurement ``y = A x + n`` in up to three stages, each a fit of the one
engine (:func:`shared.fit.fit`) with the data term ``mean(((A x - y) / sigma)^2)``:

1. **CSGM** (Bora, Jalal, Price & Dimakis, ICML 2017): search the latent only,
   ``z* = argmin_z ||(A G_theta0(z) - y) / sigma||^2 / m + ||z||^2 / m`` (the MAP of a
   ``N(0, I)`` latent prior under Gaussian noise of std ``sigma``), from ``R`` random
   restarts fitted together as one batch; the restart with the lowest misfit is kept.
   The result lies in the generator's range: its error cannot fall below the family's
   representation error however many measurements there are.
2. **IAGAN** (Abu Hussein, Tirer & Giryes, AAAI 2020): from ``(z*, theta0)``, fit ``z``
   and ``theta`` jointly with small steps (image-adaptive: the weights leave the family
   to fit this image), stopped by the misfit on held-out measurements, then, for
   noiseless data, back-project onto the measurements'
   affine space: ``x = x_IA + A^+ (y - A x_IA)``, so that ``A x = y`` exactly.
3. **Latent-convolutional** (after Athar, Burnaev & Lempitsky, ICLR 2019): instead of the
   ``d``-vector, optimise the spatial tensor ``h_k`` that the generator's first ``k``
   levels make of ``z*`` (``c_k x s_k x s_k`` numbers), through the remaining pretrained
   levels: ``h* = argmin_h ||(A tail(h) - y) / sigma||^2 / m``, ``x = tail(h*)``.

``sigma`` is the known noise std (``noise_rel`` of the problem times the RMS of ``y``),
floored at ``noise_floor`` times that RMS so that noiseless data keep a finite latent
prior.  Images are ``(1, 1, s, s)`` in [0, 1] with ``s`` the generator's size.

Example::

    gen, meta = load_generator("checkpoints/generator_ellipses64.pt")
    problem = cs_problem(image, multiple=1, ratio=0.1, size=64)
    result = GenerativePrior(gen, prior="iagan").reconstruct(problem)
    result.arrays["output"], result.metrics["psnr"]
"""
from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import Tensor, nn

from shared.fit import FitResult, Objective, Optimiser, fit
from shared.image.tasks import Problem, baseline_key
from shared.losses import WeightedSquaredError
from shared.metrics import psnr, ssim
from shared.networks.latent_generator import LatentGenerator
from shared.reconstructor import Reconstructor
from shared.result import Result
from shared.stopping import HeldOut

__all__ = ["GenerativePrior", "PRIORS", "LatentSearch", "AdaptedGenerator", "SpatialLatent", "GENERATIVE_FILES"]

#: the reconstructions with a learned generator (``dip`` is :class:`shared.image.dip.DeepImagePrior`)
PRIORS = ("csgm", "iagan", "latent")
#: every file a generative result writes (besides metrics.json)
GENERATIVE_FILES = ("result.png", "comparison.png", "curves.png")


# ------------------------------------------------------------------ the three modules
class LatentSearch(nn.Module):
    """``z -> G_theta0(z)`` for a batch of ``R`` latents (restarts); only ``z`` is trained."""

    def __init__(self, generator: LatentGenerator, z0: Tensor) -> None:
        super().__init__()
        self.generator = generator
        for p in self.generator.parameters():
            p.requires_grad_(False)
        self.z = nn.Parameter(z0.clone())

    def forward(self, *unused: Any) -> Tensor:
        return self.generator(self.z)


class AdaptedGenerator(nn.Module):
    """``(z, theta) -> G_theta(z)``: a trainable copy of the generator and its latent (IAGAN)."""

    def __init__(self, generator: LatentGenerator, z0: Tensor) -> None:
        super().__init__()
        self.generator = copy.deepcopy(generator)
        for p in self.generator.parameters():
            p.requires_grad_(True)
        self.z = nn.Parameter(z0.clone())

    def forward(self, *unused: Any) -> Tensor:
        return self.generator(self.z)


class SpatialLatent(nn.Module):
    """``h_k -> tail_k(h_k)``: a spatial latent fed to the pretrained levels after ``level``."""

    def __init__(self, generator: LatentGenerator, h0: Tensor, level: int) -> None:
        super().__init__()
        self.generator, self.level = generator, int(level)
        for p in self.generator.parameters():
            p.requires_grad_(False)
        self.h = nn.Parameter(h0.clone())

    def forward(self, *unused: Any) -> Tensor:
        return self.generator.tail(self.h, self.level)


# ------------------------------------------------------------------ the reconstructor
class GenerativePrior(Reconstructor):
    """Reconstruct a :class:`~shared.image.tasks.Problem` with a learned generator (module docstring).

    Parameters
    ----------
    generator:
        A trained :class:`~shared.networks.latent_generator.LatentGenerator` (never modified:
        IAGAN adapts a copy).
    prior:
        ``"csgm"`` (stage 1), ``"iagan"`` (stages 1 + 2) or ``"latent"`` (stages 1 + 3).
    restarts, csgm_iterations, csgm_lr:
        CSGM: number of random latents searched together, Adam steps and step size.
    adapt_iterations, adapt_lr, adapt_latent_lr:
        IAGAN: joint Adam steps (at most), step of the weights and of ``z``.  The cap is
        high on purpose: the held-out rule ends the stage (after 200-300 steps at m/n <= 0.05,
        where adapting does not help; 700-3000 at m/n >= 0.25, where it does).  Chosen on the
        validation split (``docs/generators.md``): 1e-3 / 3000 steps against the earlier
        1e-4 / 600 steps lowered IAGAN's in-distribution error at m/n = 0.5 from 0.073 to 0.043.
    stop, heldout_fraction, patience:
        How stages 2 and 3 stop: ``"heldout"`` (default) hides a random ``heldout_fraction``
        of the measurements from the fit and keeps the iterate with the lowest misfit on
        them, stopping ``patience`` steps after it (with few measurements, adapting the
        weights fits the measurements but leaves the image; the held-out misfit sees it
        and keeps the stage near its CSGM start); ``"none"``: all steps, the last iterate.
    back_projection:
        ``"auto"`` (when the problem is noiseless), ``True`` or ``False``.
    latent_level, latent_iterations, latent_lr:
        Latent-convolutional stage: level ``k`` of the spatial latent, Adam steps and step.
    noise_floor:
        Floor of the data term's ``sigma`` relative to the RMS of ``y``.
    seed, device, progress:
        Seeds the restarts' latents; torch device; progress bars.
    """

    def __init__(self, generator: LatentGenerator, prior: str = "iagan", restarts: int = 8,
                 csgm_iterations: int = 500, csgm_lr: float = 0.05, adapt_iterations: int = 3000,
                 adapt_lr: float = 1e-3, adapt_latent_lr: float = 1e-3, back_projection: bool | str = "auto",
                 latent_level: int = 1, latent_iterations: int = 600, latent_lr: float = 1e-2,
                 stop: str = "heldout", heldout_fraction: float = 0.1, patience: int = 200,
                 noise_floor: float = 0.01, seed: int = 0, device: str = "cpu", progress: bool = False) -> None:
        self.generator = generator
        self.prior = prior
        self.restarts = restarts
        self.csgm_iterations = csgm_iterations
        self.csgm_lr = csgm_lr
        self.adapt_iterations = adapt_iterations
        self.adapt_lr = adapt_lr
        self.adapt_latent_lr = adapt_latent_lr
        self.back_projection = back_projection
        self.latent_level = latent_level
        self.latent_iterations = latent_iterations
        self.latent_lr = latent_lr
        self.stop = stop
        self.heldout_fraction = heldout_fraction
        self.patience = patience
        self.noise_floor = noise_floor
        self.seed = seed
        self.device = device
        self.progress = progress

    @property
    def method(self) -> str:  # type: ignore[override]
        return self.prior

    def check(self) -> GenerativePrior:
        """Refuse unknown or out-of-range settings before anything runs; returns ``self``."""
        if self.prior not in PRIORS:
            raise ValueError(f"unknown generative prior {self.prior!r}; choose from {', '.join(PRIORS)}")
        if self.stop not in ("heldout", "none"):
            raise ValueError(f"stop must be 'heldout' or 'none', got {self.stop!r}")
        if self.back_projection not in ("auto", True, False):
            raise ValueError(f"back_projection must be 'auto', True or False, got {self.back_projection!r}")
        for name in ("restarts", "csgm_iterations", "adapt_iterations", "latent_iterations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.generator.latent_shape(self.latent_level)  # raises for a level the generator lacks
        return self

    def config(self) -> dict[str, Any]:
        """The settings as JSON data (the generator by its configuration)."""
        p = self.get_params()
        p["generator"] = dict(self.generator.config)
        return p

    # -------------------------------------------------------------- stages
    def noise_std(self, problem: Problem) -> float:
        """``sigma``: the known noise std of ``y``, floored at ``noise_floor`` times its RMS."""
        rms = float(problem.y.pow(2).mean().sqrt())
        return max(float(problem.info.get("noise_rel") or 0.0), self.noise_floor) * rms

    def _fit(self, model: nn.Module, problem: Problem, optimiser: Optimiser, label: str,
             stopped: bool = False) -> FitResult:
        data = WeightedSquaredError(self.noise_std(problem))  # broadcasts y over a batch of restarts
        rule = HeldOut(self.heldout_fraction, self.patience) if stopped and self.stop == "heldout" else None
        return fit(model, None, Objective(problem.y, physics=problem.forward, data=data), optimiser=optimiser,
                   stopping=rule, seed=self.seed, device=self.device,
                   progress=f"{label}" if self.progress else False)

    def csgm(self, problem: Problem) -> tuple[Tensor, FitResult, Tensor]:
        """Stage 1: ``(z* (1, d), fit, misfit per restart (R,))``."""
        d = self.generator.latent_dim
        z0 = torch.randn(self.restarts, d, generator=torch.Generator().manual_seed(self.seed))
        model = LatentSearch(self.generator, z0)
        m = problem.y.numel()
        # weight decay w adds (w/2)|z|^2 per restart to a data term averaged over R restarts:
        # w = 2 / (R m) makes it the MAP objective of the module docstring.
        opt = Optimiser(lr=self.csgm_lr, iterations=self.csgm_iterations,
                        groups={"z": {"lr": self.csgm_lr, "weight_decay": 2.0 / (self.restarts * m)}})
        res = self._fit(model, problem, opt, "CSGM")
        with torch.no_grad():
            pred = problem.forward(res.final.to(problem.y.device))
            misfit = (pred - problem.y).flatten(1).pow(2).mean(dim=1)
        best = int(torch.argmin(misfit))
        return model.z.detach()[best: best + 1].cpu(), res, misfit.cpu()

    def adapt(self, problem: Problem, z: Tensor) -> tuple[Tensor, FitResult, AdaptedGenerator]:
        """Stage 2 (IAGAN): ``(x (1, 1, s, s), fit, adapted module)``, back-projected when noiseless."""
        model = AdaptedGenerator(self.generator, z)
        opt = Optimiser(lr=self.adapt_lr, iterations=self.adapt_iterations,
                        groups={"z": {"lr": self.adapt_latent_lr}, "generator.": {"lr": self.adapt_lr}})
        res = self._fit(model, problem, opt, "IAGAN", stopped=True)
        x = _no_worse_than_start(problem, res.output.cpu(), self._image(z))
        if self.back_projects(problem):
            op = problem.forward
            x = (x + op.A_dagger(problem.y - op.A(x))).clamp(0, 1)
        return x, res, model

    def latent(self, problem: Problem, z: Tensor) -> tuple[Tensor, FitResult]:
        """Stage 3 (latent-convolutional): ``(x, fit)`` from ``h_k = head_k(z*)``."""
        with torch.no_grad():
            h0 = self.generator.head(z.to(next(self.generator.parameters()).device), self.latent_level).cpu()
        model = SpatialLatent(self.generator, h0, self.latent_level)
        res = self._fit(model, problem, Optimiser(lr=self.latent_lr, iterations=self.latent_iterations),
                        "latent", stopped=True)
        return _no_worse_than_start(problem, res.output.cpu(), self._image(z)), res

    def _image(self, z: Tensor) -> Tensor:
        """``G_theta0(z)`` on the CPU (the generator may sit on the fit's device)."""
        with torch.no_grad():
            return self.generator(z.to(next(self.generator.parameters()).device)).cpu()

    def back_projects(self, problem: Problem) -> bool:
        """Whether IAGAN back-projects onto ``{x : A x = y}`` for ``problem`` (``back_projection``)."""
        if self.back_projection == "auto":
            return not float(problem.info.get("noise_rel") or 0.0) > 0
        return bool(self.back_projection)

    # -------------------------------------------------------------- one call
    def reconstruct(self, problem: Problem) -> Result:
        """Run the stages of ``prior``; a :class:`shared.result.Result` like the DIP's
        (``arrays``: ``output`` and ``result``, ``metrics`` with PSNR/SSIM when the problem
        has a reference, ``fit``: the last stage's :class:`~shared.fit.FitResult`)."""
        self.check()
        size = self.generator.size
        if tuple(problem.shape) != (1, 1, size, size):
            raise ValueError(f"the generator makes {size}x{size} grey images; the problem's unknown has shape "
                             f"{tuple(problem.shape)} (use --size {size})")
        t0 = time.perf_counter()
        z, res1, misfits = self.csgm(problem)
        stages = {"csgm": _stage(res1)}
        x, last = res1.final[misfits.argmin()][None].cpu(), res1
        if self.prior == "iagan":
            x, last, _ = self.adapt(problem, z)
            stages["iagan"] = {**_stage(last), "back_projection": self.back_projects(problem)}
        elif self.prior == "latent":
            x, last = self.latent(problem, z)
            stages["latent"] = _stage(last)
        wall = time.perf_counter() - t0
        x = x.clamp(0, 1)
        metrics = _metrics(problem, x, wall, misfits)
        info = {"task": problem.task, "stages": stages, "messages": list(problem.messages),
                "task_parameters": problem.info, "noise_std": self.noise_std(problem)}
        out = Result(self.prior, arrays={"output": x, "result": x}, metrics=metrics, timings={"fit_s": wall},
                     config=self.config(), fit=last, info=info)
        out.files = _writers(problem, out, stages)
        return out


def _misfit(problem: Problem, x: Tensor) -> float:
    with torch.no_grad():
        return float((problem.forward(x) - problem.y.cpu()).pow(2).mean())


def _no_worse_than_start(problem: Problem, x: Tensor, start: Tensor) -> Tensor:
    """``x``, or the stage's start ``G(z*)`` if ``x`` fits all the measurements worse (the
    held-out iterate is chosen on a tenth of them): a stage never ends above CSGM's misfit."""
    start = start.detach().cpu()
    return start if _misfit(problem, x) > _misfit(problem, start) else x


def _stage(res: FitResult) -> dict[str, Any]:
    return {"iterations_run": res.stop_iteration, "selected_iteration": res.selected_iteration,
            "stopped_by": res.stopped_by, "wall_time_s": res.wall_time_s,
            "final_data_term": res.history["data"][-1] if res.history["data"] else None,
            "data_curve": res.history["data"]}


def _metrics(problem: Problem, x: Tensor, wall: float, misfits: Tensor) -> dict[str, Any]:
    out: dict[str, Any] = {"wall_time_s": wall, "misfit": _misfit(problem, x), "csgm_best_misfit": float(misfits.min()),
                           "csgm_restart_misfits": misfits.tolist()}
    if problem.reference is not None:
        ref = problem.reference.cpu()
        key = baseline_key(problem.baseline_name)
        out.update({"psnr": psnr(x, ref), "ssim": ssim(x, ref),
                    "rel_err": float((x - ref).norm() / ref.norm()),
                    f"psnr_{key}": psnr(problem.observation.cpu().clamp(0, 1), ref)})
    return out


def _writers(problem: Problem, rec: Result, stages: dict[str, Any]) -> dict[str, Any]:
    """result.png, comparison.png (baseline | method | reference) and curves.png (data term per stage)."""
    from shared.image.figures import side_by_side
    from shared.image.io import write_image

    m = rec.metrics
    key = "psnr_" + baseline_key(problem.baseline_name)
    panels = [(problem.baseline_name + (f"\n{m[key]:.2f} dB" if key in m else ""), problem.observation),
              (rec.method.upper() + (f"\n{m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}" if "psnr" in m else ""),
               rec.arrays["output"])]
    if problem.reference is not None:
        panels.append(("reference", problem.reference))
    return {"result.png": lambda path: write_image(path, rec.arrays["result"]),
            "comparison.png": lambda path: side_by_side(path, panels),
            "curves.png": lambda path: _stage_curves(path, stages, rec.method)}


def _stage_curves(path: Any, stages: dict[str, Any], method: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    start = 0
    for name, st in stages.items():
        curve = st["data_curve"]
        ax.semilogy(range(start, start + len(curve)), curve, label=name)
        start += len(curve)
    ax.set_xlabel("iteration (stages one after another)")
    ax.set_ylabel("data term mean(((Ax - y)/sigma)^2)")
    ax.set_title(f"{method}: data term per stage")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
