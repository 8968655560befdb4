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

An ensemble fit (``members = K > 1``: K seeds fitted side by side) is the equal mixture of its
members' linearised posteriors (a mixture of Laplace approximations, Eschenhagen et al. 2021),
each member linearised at its own weights (:func:`shared.uncertainty.ensemble_statistics`)::

    mean = (1/K) sum_k x_k,     var = (1/K) sum_k var_k + (1/K) sum_k (x_k - mean)^2.

On 64x64 sparse-view CT one network's std varied four-fold between seeds while the error did
not (``benchmarks/uncertainty.py``); the mixture averages that out.

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
from shared.uncertainty import calibration, ensemble_statistics, linearised_uncertainty, member_fits

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
    beta = None if noise_std is None else 1.0 / noise_std ** 2
    parts = [linearised_uncertainty(f, rank=rank, beta=beta, progress=progress)
             for f in member_fits(result.fit, keep_dim=True)]
    # The members' mixture (module docstring); one network is the mixture of one.
    mean, std = (torch.as_tensor(a, dtype=torch.float32) for a in ensemble_statistics(
        torch.stack([u.mean.detach().cpu().clamp(0, 1) for u in parts]),
        torch.stack([u.std.detach().cpu() for u in parts])))
    summary = parts[0].summary() if len(parts) == 1 else {"members": [u.summary() for u in parts]}
    info: dict[str, Any] = {"uncertainty": summary, "noise_std_given": noise_std,
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

    timings = {k: sum(u.timings.get(k, 0.0) for u in parts) for k in parts[0].timings}
    return Result("linearised-laplace", arrays={"std": std, "mean": mean},
                  metrics={"mean_std": float(std.mean()), "max_std": float(std.max()), "members": len(parts)},
                  timings=timings, config={"rank": rank, "noise_std": noise_std}, info=info,
                  files={"std.png": write_png, "std.pt": lambda path: torch.save(std, path)})

