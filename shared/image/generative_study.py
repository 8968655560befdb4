"""The experiment behind the generator claims: every method on the same measurement.

A *case* is one image, one operator and one measurement: compressed sensing with a
Gaussian matrix at ``m/n`` in :data:`CS_RATIOS` (noiseless, so IAGAN back-projects) or
sparse-view CT at :data:`CT_ANGLES` angles (1 % noise).  Images are 64 x 64 grey in [0, 1]
from four distributions relative to the generator's training family:

* ``in-distribution``: new phantoms of the family (seeds never used in training),
* ``shepp-logan``: the Shepp-Logan head phantom (each instance a different measurement),
* ``other-family``: phantoms of the other family (blocks for an ellipse generator),
* ``natural``: grey crops of scikit-image's photographs.

Instances come in two disjoint splits: ``"validation"`` (for choosing settings) and
``"test"`` (what the benchmark reports).  :func:`run_case` reconstructs one case with CSGM,
IAGAN and the latent-convolutional search (sharing one CSGM stage, each timed as a user
would pay for it), the DIP, EDIP for CT, and records the classical baseline (minimum-norm
``A^+ y`` or FBP).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from shared.image.phantoms import FAMILIES, family_images, shepp_logan

__all__ = ["DISTRIBUTIONS", "CS_RATIOS", "CT_ANGLES", "SPLIT_SEEDS", "Case", "instances", "cases", "run_case",
           "natural_image"]

DISTRIBUTIONS = ("in-distribution", "shepp-logan", "other-family", "natural")
CS_RATIOS = (0.02, 0.05, 0.1, 0.25, 0.5)
CT_ANGLES = (10, 30, 60)
CT_NOISE = 0.01
#: first phantom seed of each split (training draws from torch generators seeded 1 and 10_000)
SPLIT_SEEDS = {"validation": 30_000, "test": 20_000}
NATURAL = {"validation": ("astronaut", "chelsea", "coffee"), "test": ("camera", "coins", "moon")}


@dataclass
class Case:
    """One measurement to reconstruct: ``task`` (``cs``/``ct``) at ``level`` (m/n or angles)."""

    distribution: str
    instance: str
    image: Tensor
    task: str
    level: float
    seed: int
    options: dict[str, Any] = field(default_factory=dict)


def natural_image(name: str, size: int = 64) -> Tensor:
    """scikit-image's photograph ``name`` as a grey ``(1, 1, size, size)`` image in [0, 1] (central square crop)."""
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.transform import resize

    img = getattr(skimage.data, name)()
    img = rgb2gray(img) if img.ndim == 3 else img / 255.0
    h, w = img.shape
    s = min(h, w)
    img = img[(h - s) // 2: (h - s) // 2 + s, (w - s) // 2: (w - s) // 2 + s]
    img = resize(img, (size, size), anti_aliasing=True)
    return torch.from_numpy(img).float().clamp(0, 1)[None, None]


def instances(distribution: str, family: str, split: str = "test", n: int = 3,
              size: int = 64) -> list[tuple[str, Tensor]]:
    """``n`` named images of ``distribution`` for a generator of ``family`` from ``split``."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {', '.join(SPLIT_SEEDS)}, got {split!r}")
    seed = SPLIT_SEEDS[split]
    other = next(f for f in FAMILIES if f != family)
    if distribution in ("in-distribution", "other-family"):
        fam = family if distribution == "in-distribution" else other
        imgs = family_images(fam, n, size, generator=torch.Generator().manual_seed(seed))
        return [(f"{fam}-{seed}-{i}", imgs[i: i + 1]) for i in range(n)]
    if distribution == "shepp-logan":
        return [(f"shepp-logan-{i}", shepp_logan(size)) for i in range(n)]
    if distribution == "natural":
        return [(name, natural_image(name, size)) for name in NATURAL[split][:n]]
    raise ValueError(f"unknown distribution {distribution!r}; choose from {', '.join(DISTRIBUTIONS)}")


def cases(family: str, split: str = "test", n: int = 3, tasks: tuple[str, ...] = ("cs", "ct"),
          distributions: tuple[str, ...] = DISTRIBUTIONS) -> list[Case]:
    """Every case of the study: distributions x instances x (CS ratios, CT angles)."""
    out = []
    for dist in distributions:
        for i, (name, img) in enumerate(instances(dist, family, split, n)):
            for task in tasks:
                for level in (CS_RATIOS if task == "cs" else CT_ANGLES):
                    out.append(Case(dist, name, img, task, level, seed=1000 * i + int(level * 100)))
    return out


def problem_of(case: Case):
    """The :class:`~shared.image.tasks.Problem` of a case (measurement seeded by the case)."""
    from shared.image.tasks import cs_problem, ct_problem

    size = case.image.shape[-1]
    if case.task == "cs":
        return cs_problem(case.image, multiple=16, ratio=case.level, size=size, seed=case.seed)
    return ct_problem(case.image, multiple=16, angles=int(case.level), size=size, noise=CT_NOISE, seed=case.seed)


def _scores(x: Tensor, ref: Tensor, seconds: float, **extra: Any) -> dict[str, Any]:
    from shared.metrics import psnr

    x = x.detach().cpu().clamp(0, 1)
    return {"rel_err": float((x - ref).norm() / ref.norm()), "psnr": psnr(x, ref), "time_s": seconds,
            "image": x, **extra}


def _generative(case: Case, problem, generator, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """CSGM, IAGAN and latent on one problem, sharing one CSGM stage; each timed end to end."""
    from shared.image.generative import GenerativePrior

    rec = GenerativePrior(generator, seed=case.seed, **settings).check()
    ref = problem.reference
    t = time.perf_counter()
    z, res, misfits = rec.csgm(problem)
    t_csgm = time.perf_counter() - t
    out = {"csgm": _scores(res.final[misfits.argmin()][None], ref, t_csgm, misfit=float(misfits.min()))}
    t = time.perf_counter()
    x, res2, _ = rec.adapt(problem, z)
    out["iagan"] = _scores(x, ref, t_csgm + time.perf_counter() - t, misfit=res2.history["data"][-1],
                           back_projection=rec.back_projects(problem), iterations=res2.stop_iteration,
                           selected_iteration=res2.selected_iteration)
    t = time.perf_counter()
    x, res3 = rec.latent(problem, z)
    out["latent"] = _scores(x, ref, t_csgm + time.perf_counter() - t, misfit=res3.history["data"][-1],
                            iterations=res3.stop_iteration, selected_iteration=res3.selected_iteration)
    return out


def _edip(case: Case, problem, checkpoint: Path, iterations: int) -> dict[str, Any]:
    from shared.image.edip import finetune, load_checkpoint, network_output

    net, _ = load_checkpoint(checkpoint)
    t = time.perf_counter()
    ft = finetune(problem.y, problem.forward, problem.observation, net=copy.deepcopy(net), input="fbp",
                  iterations=iterations, lr=1e-3, seed=case.seed)
    x = network_output(ft.result.model, ft.z)
    return _scores(x, problem.reference, time.perf_counter() - t, iterations=iterations)


def run_case(case: Case, generator_path: str | Path, settings: dict[str, Any] | None = None,
             edip_checkpoint: str | Path | None = None, dip: bool = True, edip_iterations: int = 600,
             keep_images: bool = False) -> dict[str, Any]:
    """All methods on one case: ``{"distribution", "instance", "task", "level", "methods": {name: scores}}``.

    ``scores``: relative error ``||x - x_true|| / ||x_true||``, PSNR, wall time (s) and
    method details (misfit, iterations, what stopped the DIP); with ``keep_images`` also
    each reconstruction (``"image"``, a ``(1, 1, s, s)`` tensor) and the truth (``"truth"``).
    """
    from shared.image.dip import DeepImagePrior
    from shared.image.generator import load_generator

    generator, _ = load_generator(generator_path)
    problem = problem_of(case)
    ref = problem.reference
    methods = {"baseline": _scores(problem.observation, ref, 0.0, name=problem.baseline_name)}
    methods.update(_generative(case, problem, generator, settings or {}))
    if dip:
        t = time.perf_counter()
        res = DeepImagePrior(net="skip", seed=case.seed).reconstruct(problem)
        methods["dip"] = _scores(res.arrays["output"], ref, time.perf_counter() - t,
                                 iterations=res.metrics["iterations_run"], stopped_by=res.metrics["stopped_by"])
    if case.task == "ct" and edip_checkpoint is not None:
        methods["edip"] = _edip(case, problem, Path(edip_checkpoint), edip_iterations)
    for scores in methods.values():
        image = scores.pop("image")
        if keep_images:
            scores["image"] = image
    record = {"distribution": case.distribution, "instance": case.instance, "task": case.task,
              "level": case.level, "seed": case.seed, "methods": methods}
    if keep_images:
        record["truth"] = ref
    return record
