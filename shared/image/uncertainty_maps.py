"""Pixelwise uncertainty of a deep image prior result (``untrained image <task> --uncertainty``).

After the fit, the network is linearised at its final parameters and the linearised
Laplace posterior of :mod:`shared.uncertainty` gives a predictive standard deviation per
pixel (epistemic: the spread of the reconstruction, without the measurement noise)::

    var_i = [J_x Sigma J_x^T]_ii,    Sigma = (beta J_y^T J_y + alpha I)^-1   (rank-r SVD of J_y).

Everything the posterior needs (network, input ``z``, physics, measurements) is in the
:class:`shared.fit.FitResult` of the :class:`shared.result.Result`.  The noise precision
``beta = 1/sigma^2`` is fixed where the task states the noise level
(:func:`known_noise_std`); otherwise it is fitted by marginal likelihood with the prior
precision ``alpha``.

:func:`image_uncertainty` returns a :class:`shared.result.Result` that writes ``std.png``
(the std map next to the result and, with a reference, the absolute error), ``std.pt``
(the std tensor) and, as its metrics file, ``uncertainty.json`` (alpha, beta, rank,
timings, and the calibration against the reference when there is one).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from shared.image.tasks import Problem
from shared.result import Result
from shared.uncertainty import calibration, linearised_uncertainty

__all__ = ["known_noise_std", "image_uncertainty", "UNCERTAINTY_FILES", "METRICS_FILE"]

#: the metrics file of an uncertainty result
METRICS_FILE = "uncertainty.json"
#: every file an uncertainty result writes
UNCERTAINTY_FILES = ("std.png", "std.pt", METRICS_FILE)


def known_noise_std(problem: Problem, sigma: float | None = None, noise: float | None = None) -> float | None:
    """Measurement noise std stated by the user (None where the task has none).

    ``denoise``/``deblur``: ``sigma`` (in [0, 1] units); ``ct``/``cs``: ``noise`` times the
    RMS of the clean measurements, from ``||y||_rms^2 = ||A x||_rms^2 + s^2`` with
    ``s = noise ||A x||_rms``: ``s = noise ||y||_rms / sqrt(1 + noise^2)``.
    """
    if problem.task in ("denoise", "deblur") and sigma:
        return float(sigma)
    if problem.task in ("ct", "cs") and noise:
        rms_y = float(problem.y.pow(2).mean().sqrt())
        return float(noise) * rms_y / math.sqrt(1 + float(noise) ** 2)
    return None


def image_uncertainty(result: Result, problem: Problem, *, noise_std: float | None = None, rank: int = 32,
                      progress: bool = False) -> Result:
    """Linearised-Laplace std of a :class:`~shared.image.dip.DeepImagePrior` result (module docstring).

    ``noise_std`` fixes ``beta = 1 / noise_std^2``; ``None`` fits it.  The returned result
    holds ``arrays["std"]`` and ``arrays["mean"]`` (the network at the linearisation point),
    the calibration in ``info`` and the writers of std.png and std.pt.
    """
    unc = linearised_uncertainty(result.fit, rank=rank, beta=None if noise_std is None else 1.0 / noise_std ** 2,
                                 progress=progress)
    std = unc.std.detach().cpu()
    mean = unc.mean.detach().cpu().clamp(0, 1)
    info: dict[str, Any] = {"uncertainty": unc.summary(), "noise_std_given": noise_std,
                            "note": "std of the network at its final parameters (linearised Laplace); "
                                    "epistemic, without the measurement noise"}
    scale = std.max().clamp_min(1e-12)
    panels = [("result", result.arrays["output"]), (f"predicted std (max {float(std.max()):.3g})", std / scale)]
    if problem.reference is not None:
        ref = problem.reference.cpu()
        cal = calibration(mean, std, ref)
        info["calibration"] = cal
        panels.append((f"|error| (same scale); {cal['fraction_within']:.0%} within 2 std", (mean - ref).abs() / scale))

    def write_png(path):
        from shared.image.figures import side_by_side

        return side_by_side(path, [(t, im.clamp(0, 1)) for t, im in panels])

    return Result("linearised-laplace", arrays={"std": std, "mean": mean},
                  metrics={"mean_std": float(std.mean()), "max_std": float(std.max())},
                  timings=dict(unc.timings), config={"rank": rank, "noise_std": noise_std}, info=info,
                  files={"std.png": write_png, "std.pt": lambda path: torch.save(std, path)})
