"""Pixelwise uncertainty for ``untrained image <task> --uncertainty``.

After the fit, the network is linearised at its final parameters and the linearised
Laplace posterior of :mod:`shared.uncertainty` gives a predictive standard deviation per
pixel (epistemic: the spread of the reconstruction, without the measurement noise).
The noise precision ``beta = 1/sigma^2`` is fixed where the task states the noise level
(``denoise``/``deblur``: ``--sigma``; ``ct``/``cs``: ``--noise`` times the sinogram RMS);
otherwise it is fitted by marginal likelihood with the prior precision ``alpha``.

Writes ``std.png`` (the std map, next to the result and, with a reference, the absolute
error) and ``uncertainty.json`` (alpha, beta, rank, timings, and the calibration against
the reference when there is one).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from shared.uncertainty import LinearisedUncertainty, calibration, linearised_uncertainty

__all__ = ["known_noise_std", "image_uncertainty"]


def known_noise_std(rec, args) -> float | None:
    """Measurement noise std stated on the command line (None where the task has none)."""
    task = rec.problem.task
    if task in ("denoise", "deblur") and getattr(args, "sigma", 0):
        return float(args.sigma) / 255
    if task in ("ct", "cs") and getattr(args, "noise", 0):
        # ||y||_rms^2 = ||R x||_rms^2 + sigma^2 with sigma = noise * ||R x||_rms.
        rms_y = float(rec.problem.y.pow(2).mean().sqrt())
        return float(args.noise) * rms_y / math.sqrt(1 + float(args.noise) ** 2)
    return None


def image_uncertainty(rec, args, out: Path, rank: int = 32) -> tuple[LinearisedUncertainty, dict[str, Any]]:
    """Linearised-Laplace std of a :class:`shared.image.tasks.Reconstruction`; writes the outputs."""
    from shared.image.figures import side_by_side
    from shared.image.tasks import make_network

    problem = rec.problem
    _, C, H, W = problem.shape
    # The fixed network input is a deterministic function of (net, size, seed).
    _, z = make_network(rec.config["net"], C, (H, W), seed=rec.config["seed"])
    forward = problem.forward.A if problem.forward is not None else None
    sigma = known_noise_std(rec, args)
    unc = linearised_uncertainty(rec.fit, z.to(problem.y.device), forward=forward, y=problem.y, rank=rank,
                                 beta=None if sigma is None else 1.0 / sigma ** 2, progress=not args.quiet)
    report: dict[str, Any] = {"uncertainty": unc.summary(), "noise_std_given": sigma,
                              "note": "std of the network at its final parameters (linearised Laplace); "
                                      "epistemic, without the measurement noise"}
    std = unc.std.detach().cpu()
    panels = [("result", rec.output.clamp(0, 1)), (f"predicted std (max {float(std.max()):.3g})", std / std.max().clamp_min(1e-12))]
    if problem.reference is not None:
        ref = problem.reference.cpu()
        cal = calibration(unc.mean.cpu().clamp(0, 1), std, ref)
        report["calibration"] = cal
        err = (unc.mean.cpu().clamp(0, 1) - ref).abs()
        panels.append((f"|error| (same scale); {cal['fraction_within']:.0%} within 2 std", err / std.max().clamp_min(1e-12)))
    side_by_side(out / "std.png", [(t, im.clamp(0, 1)) for t, im in panels])
    torch.save(std, out / "std.pt")
    (out / "uncertainty.json").write_text(json.dumps(report, indent=2))
    return unc, report
