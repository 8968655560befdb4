"""Linearised-Laplace uncertainty of a neural EIT conductivity (needs the ``eit`` front end).

The simulated two-inclusion tank of ``untrained eit reconstruct`` (32 electrodes, 1% noise)
is fitted by the Fourier-feature MLP conductivity through the engine (as
``eit.reconstruct.neural`` does: noise-weighted misfit + TV of the log-contrast), and the
network is then linearised at its fitted weights.  The measurements are whitened by their
noise model (``F(sigma)_i / s_i``, ``y_i / s_i``), so the noise precision is known
(``beta = 1``) and only the prior precision is fitted by marginal likelihood.  The complete
electrode model is an autograd Function with a backward (adjoint) only, so the Jacobian of
the measurements is formed exactly by vector-Jacobian products (``method="exact"``, one per
measurement).  The TV term is not part of the Gaussian posterior (the Laplace
approximation here is of the likelihood and a Gaussian weight prior only).

Writes ``uncertainty_eit.png`` (truth, fitted conductivity, |error|, predicted std on the
mesh cells) and ``uncertainty_eit.json``.
Run: ``python examples/uncertainty_eit.py --out out/uncertainty`` (~3 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("out/uncertainty"))
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--rank", type=int, default=128)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import dolfinx_solver  # noqa: F401  (before dolfinx / petsc4py)
    from eit.cli import simulated_problem
    from eit.conductivity import make_prior
    from eit.forward import eit_forward
    from eit.tv import MeshTV

    from shared.fit import fit
    from shared.losses import WeightedSquaredError
    from shared.stopping import Plateau
    from shared.uncertainty import calibration, linearised_uncertainty

    problem = simulated_problem("two-inclusion")
    net, z = make_prior("mlp", problem, seed=0)
    y = torch.as_tensor(problem.y, dtype=torch.float64)
    noise = torch.as_tensor(problem.noise, dtype=torch.float64)
    model = problem.model
    pairs, lengths = problem.adjacency
    tv = MeshTV(pairs, lengths, eps=1e-2)
    log_bg = float(np.log(problem.sigma_bg))
    res = fit(net, z, y, forward=lambda s: eit_forward(s, model), data_loss=WeightedSquaredError(noise),
              regularisers={"tv": (1e-2, lambda s: tv(torch.log(s) - log_bg))}, iterations=args.iterations,
              lr=3e-3, stopping=Plateau(window=50, tol=0.02), seed=0, progress="EIT fit")
    # Whitened measurements: unit noise, beta = 1.
    fwd_w = lambda s: eit_forward(s, model) / noise
    unc = linearised_uncertainty(res, z, forward=fwd_w, y=y / noise, rank=args.rank, beta=1.0, method="exact",
                                 prior_mean="zero")
    sigma = res.final.detach().double()
    truth = torch.as_tensor(problem.sigma_true, dtype=torch.float64)
    cal = calibration(sigma, unc.std, truth)
    rel = float((sigma - truth).norm() / truth.norm())
    print(f"EIT: relative error {rel:.3f}; within 2 std {cal['fraction_within']:.3f}; test LL "
          f"{cal['test_log_likelihood']:.3f} vs constant std {cal['baseline_log_likelihood']:.3f}; "
          f"corr(std, |err|) {cal['std_error_correlation']:.2f}; alpha {unc.alpha:.3g}; "
          f"{unc.timings['total_s']:.0f} s for the uncertainty ({unc.n_measurements} VJPs)")
    xy = np.asarray(model.cell_centroids)[:, :2]
    err = (sigma - truth).abs().numpy()
    fig, ax = plt.subplots(1, 4, figsize=(15, 3.4))
    vmin, vmax = float(truth.min()), float(truth.max())
    for a, v, title, cmap, lim in ((ax[0], truth.numpy(), "true conductivity", "viridis", (vmin, vmax)),
                                   (ax[1], sigma.numpy(), f"neural fit (rel. error {rel:.2f})", "viridis", (vmin, vmax)),
                                   (ax[2], err, "|error|", "magma", (0, float(max(err.max(), unc.std.max())))),
                                   (ax[3], unc.std.numpy(), f"predicted std ({cal['fraction_within']:.0%} within 2 std)",
                                    "magma", (0, float(max(err.max(), unc.std.max()))))):
        h = a.tripcolor(xy[:, 0], xy[:, 1], v, shading="gouraud", cmap=cmap, vmin=lim[0], vmax=lim[1])
        a.set_aspect("equal")
        a.set_title(title, fontsize=9)
        a.axis("off")
        fig.colorbar(h, ax=a, shrink=0.8)
    fig.tight_layout()
    fig.savefig(args.out / "uncertainty_eit.png", dpi=65)
    (args.out / "uncertainty_eit.json").write_text(json.dumps(
        {"relative_error": rel, "calibration": cal, "uncertainty": unc.summary(),
         "iterations": res.stop_iteration, "stopped_by": res.stopped_by}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
