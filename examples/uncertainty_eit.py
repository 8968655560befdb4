"""Linearised-Laplace uncertainty of a neural EIT conductivity.

The simulated two-inclusion tank (32 electrodes, 1% noise) is reconstructed by the neural
conductivity (:class:`eit.NeuralEIT` with its defaults: an ensemble of three Fourier-feature
MLPs with the three-phase head, noise-weighted misfit + TV of the log-contrast).  Each member
network ``sigma_theta`` is then linearised at its weights ``theta*``::

    sigma_theta ~ sigma_theta* + J_theta (theta - theta*),
    p(theta | y) ~ N(theta*, (J_y^T J_y + alpha I)^{-1}),   J_y = d(F(sigma_theta) / s) / d theta,

with the measurements whitened by their noise model (``F(sigma)_i / s_i`` against
``y_i / s_i``), so the noise precision is known (``beta = 1``) and only the prior precision
``alpha`` is fitted by marginal likelihood.  The members' posteriors are mixed, and the water
level ``sigma_bg`` (a homogeneous fit to the reference, not a weight) adds its own relative
std ``delta`` (the misfit of that fit)::

    std_i^2 = mean_k [J_theta Sigma J_theta^T]_ii + var_k(sigma_k,i) + (delta sigma_i)^2

(:func:`eit.uncertainty.conductivity_uncertainty`, the posterior behind ``untrained eit
reconstruct --uncertainty``).  The TV term is not part of the Gaussian posterior.

Writes ``uncertainty_eit.png`` (truth, fitted conductivity, |error|, predicted std on the
mesh cells) and ``uncertainty_eit.json``.
Run: ``python examples/uncertainty_eit.py --out out/uncertainty`` (~1-2 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dolfinx_solver  # noqa: F401  (orders MPI before the DOLFINx bindings)
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from shared.result import write_json  # noqa: E402
from shared.uncertainty import calibration  # noqa: E402

from eit import NeuralEIT, simulated_problem  # noqa: E402
from eit.uncertainty import conductivity_uncertainty  # noqa: E402


def figure(problem, sigma, truth, std, cal, rel, path: Path) -> None:
    """Truth, fit, |error| and predicted std on the cell centroids."""
    xy = np.asarray(problem.centroids)[:, :2]
    err = (sigma - truth).abs().numpy()
    top = float(max(err.max(), std.max()))
    lo, hi = float(truth.min()), float(truth.max())
    panels = ((truth.numpy(), "true conductivity", "viridis", (lo, hi)),
              (sigma.numpy(), f"neural fit (rel. error {rel:.2f})", "viridis", (lo, hi)),
              (err, "|error|", "magma", (0, top)),
              (std.numpy(), f"predicted std ({cal['fraction_within']:.0%} within 2 std)", "magma", (0, top)))
    fig, ax = plt.subplots(1, 4, figsize=(15, 3.4))
    for a, (v, title, cmap, lim) in zip(ax, panels):
        h = a.tripcolor(xy[:, 0], xy[:, 1], v, shading="gouraud", cmap=cmap, vmin=lim[0], vmax=lim[1])
        a.set_aspect("equal")
        a.set_title(title, fontsize=9)
        a.axis("off")
        fig.colorbar(h, ax=a, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=65)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("out/uncertainty"))
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--rank", type=int, default=128)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    # The problem: y = F_fine(sigma_true) + e with e_i ~ N(0, s_i^2) (1% noise), inverted on a
    # coarser mesh.
    problem = simulated_problem("two-inclusion")

    # The reconstruction: the tuned neural conductivity (NeuralEIT's defaults); the result
    # keeps the engine's FitResult (networks, input z, objective with physics and y).
    result = NeuralEIT(iterations=args.iterations, progress="EIT fit").reconstruct(problem)

    # The linearised posterior of every member from the fit alone, mixed, plus the water level.
    unc = conductivity_uncertainty(result, problem, rank=args.rank, progress=True)
    std = torch.as_tensor(unc.arrays["std"])

    # Calibration of N(sigma, std^2) against the true conductivity.
    sigma = torch.as_tensor(result.arrays["sigma"], dtype=torch.float64).reshape(-1)
    truth = torch.as_tensor(problem.sigma_true, dtype=torch.float64)
    cal = calibration(sigma, std, truth)
    rel = float((sigma - truth).norm() / truth.norm())
    m = unc.metrics
    print(f"EIT: relative error {rel:.3f}; within 2 std {cal['fraction_within']:.3f}; test LL "
          f"{cal['test_log_likelihood']:.3f} vs constant std {cal['baseline_log_likelihood']:.3f}; "
          f"corr(std, |err|) {cal['std_error_correlation']:.2f}; water level +-{m['level_std']:.1%}; "
          f"{m['time_s']:.0f} s for the uncertainty of {m['members']} members")

    figure(problem, sigma, truth, std, cal, rel, args.out / "uncertainty_eit.png")
    write_json(args.out / "uncertainty_eit.json",
               {"relative_error": rel, "calibration": cal, "uncertainty": m,
                "iterations": result.fit.stop_iteration, "stopped_by": result.fit.stopped_by,
                "config": result.config})
    return 0


if __name__ == "__main__":
    sys.exit(main())
