"""EIT demo (part of ``make demo``): a simulated two-inclusion tank, no external data.

A conductive disk and a resistive square in the KTC tank (radius 0.115 m, 32 electrodes,
KTC-like injections), simulated on a fine mesh with 1% noise and reconstructed on a
coarser mesh by the neural conductivity (Fourier-feature MLP + TV, fitted through the
complete electrode model), by the organisers' one-step linearised method and by
Gauss-Newton with the smoothness prior and with smoothed TV.

Writes ``comparison.png`` (conductivity, segmentation, truth), ``sigma_*.png``,
``sigma_*.xdmf`` (ParaView) and ``metrics.json`` to ``out_dir``::

    python examples/demo_eit.py out/demo/eit
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import dolfinx_solver  # noqa: F401  (orders MPI before the DOLFINx bindings)

from shared.result import write_json

from eit import GaussNewton, NeuralEIT, OneStep, run_summary, simulated_problem
from eit.plot import save_comparison_png


def main(out_dir: str | Path = "out/demo/eit") -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # The problem.  The complete electrode model F maps the cell conductivities sigma (S/m)
    # to the 29 x 31 adjacent-difference voltages of the injections.  The data
    #     y = F_fine(sigma_true) + e,   e_i ~ N(0, s_i^2),  s_i = sqrt((0.01 |u_i|)^2 + (0.001 max|u|)^2)
    # are simulated on a finer mesh than the inversion mesh (no inverse crime); the background
    # sigma_bg is fitted to a simulated water-only measurement.
    t0 = time.perf_counter()
    problem = simulated_problem("two-inclusion", "1500", noise=0.01, seed=0)
    setup_s = time.perf_counter() - t0
    print(f"problem {problem.name}: {problem.n_cells} cells, {int(problem.mask.sum())} measurements, "
          f"sigma_bg {problem.sigma_bg:.4g} S/m ({setup_s:.1f} s)")

    # The reconstructors.
    # * NeuralEIT: sigma_theta(x) = sigma_bg exp(s_theta(x)), s_theta a Fourier-feature MLP of
    #   the cell centroids, fitted by Adam to
    #       mean_i ((F(sigma_theta)_i - y_i) / s_i)^2 + w_tv TV(log(sigma_theta / sigma_bg)),
    #   gradients by the adjoint method through the physics object eit.EITPhysics, stopped
    #   once the objective plateaus (its tuned settings are the defaults).
    # * OneStep: the organisers' linearised difference method,
    #       dsigma = Gamma J^T (J Gamma J^T + W^{-1})^{-1} (y - y_ref)   at sigma_bg.
    # * GaussNewton: regularised Gauss-Newton on t = log sigma with the smoothness prior
    #   (Tikhonov, 1/2 ||L (t - t_bg)||^2) or with smoothed total variation.
    reconstructors = [NeuralEIT(progress="neural"), OneStep(), GaussNewton(prior="tikhonov"),
                      GaussNewton(prior="tv")]

    # The results: each reconstructor returns a shared.result.Result (arrays sigma, image,
    # segmentation; metrics score, rel_l2, chi2, time_s; the files sigma_<method>.png/.xdmf).
    results = []
    for rec in reconstructors:
        result = rec.reconstruct(problem)
        result.write(out, metrics_file=None)
        results.append(result)
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.metrics.items() if k != "method"}
        print(f"{result.method}: {shown}")

    # The figure (conductivities, segmentations, truth) and the metrics of all methods.
    save_comparison_png(problem, results, out / "comparison.png", title=f"{problem.name}, level {problem.level}")
    summary = run_summary(problem, results, setup_s)
    write_json(out / "metrics.json", summary)
    print(f"wrote {out}/comparison.png, sigma_*.png, sigma_*.xdmf, metrics.json")
    return summary


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out/demo/eit")
