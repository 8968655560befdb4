"""Linearised-Laplace uncertainty of a deep-geometric-prior chart on a noisy sphere cap.

A cap of the unit sphere (half-angle 25 degrees, 200 points, Gaussian noise of std 0.01
per coordinate) is covered by a single patch, its chart is fitted through the engine by the
exact EMD (:func:`geoprior.fit_charts`), and :func:`geoprior.uncertainty.chart_uncertainty`
linearises it around the fitted weights with the matched (exact-assignment) points as
targets; the prior and noise precisions are fitted by marginal likelihood.

Writes ``uncertainty_geoprior.png`` (chart points coloured by the predicted std along the
patch normal; normal error against that std) and ``uncertainty_geoprior.json`` (fitted
noise level, and calibration of (a) the distance to the true sphere against the std along
the normal, (b) the per-coordinate error to the clean point matched to each sample,
(c) a fresh noisy copy of those points against the predictive std with noise).
Run: ``python examples/uncertainty_geoprior.py --out out/uncertainty_geoprior`` (~10 s).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from geoprior import DeepGeometricPrior, build_cover, fit_charts
from geoprior.shapes import sphere_cap
from geoprior.uncertainty import chart_uncertainty
from shared.result import write_json
from shared.uncertainty import calibration


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("out/uncertainty_geoprior"))
    p.add_argument("--points", type=int, default=200)
    p.add_argument("--sigma", type=float, default=0.01)
    p.add_argument("--iterations", type=int, default=800)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.points < 16:
        raise ValueError(f"--points must be >= 16, got {args.points}")
    args.out.mkdir(parents=True, exist_ok=True)

    # ## The measurement
    # n points p_k uniform on the cap z >= cos 25deg of the unit sphere, y_k = p_k + eps_k,
    # eps_k ~ N(0, sigma^2 I).  A cover of radius 0.9 d holds them in a single patch.
    rng = np.random.default_rng(args.seed)
    clean = sphere_cap(args.points, rng)
    noisy = clean + args.sigma * rng.standard_normal(clean.shape)
    cover = build_cover(noisy, radius=0.9, overlap=1.3, seed=args.seed)  # one patch

    # ## The prior and the fit
    # One ReLU chart phi_theta (widths 32, 32, 32) fitted through the engine to the exact
    # EMD  1/n min_sigma sum_j ||phi_theta(u_j) - y_sigma(j)||^2 (identity physics).
    settings = DeepGeometricPrior(iterations=args.iterations, hidden=(32, 32, 32), lr=1e-2, seed=args.seed)
    model, res, _ = fit_charts(cover, settings)

    # ## The posterior
    # At the fitted theta* and its optimal matching sigma*, the EMD is the squared error to
    # the matched targets y* = y_sigma*, i.e. the likelihood y* = x(theta) + N(0, 1/beta I).
    # Linearising x(theta) ~ x(theta*) + J (theta - theta*) with a Gaussian prior of
    # precision alpha gives the posterior precision H = beta J^T J + alpha I and the
    # predictive std  std_jk = sqrt([J H^-1 J^T]_{jk, jk})  (alpha, beta by evidence).
    u = chart_uncertainty(model, cover, 0, seed=args.seed)
    n = int(cover.sizes[0])
    s = u.world_scale

    world = cover.to_world(u.mean.double().numpy()[None])[0]
    normal_err = np.linalg.norm(world, axis=1) - 1.0          # signed distance to the sphere
    std_n = u.std[:, 2].double().numpy() * s                   # std along the patch normal e3
    idx = cover.index[0, :n][u.perm]
    cal_normal = calibration(torch.as_tensor(normal_err), torch.as_tensor(std_n), torch.zeros(n, dtype=torch.float64))
    truth = torch.as_tensor(cover.to_local(clean[idx][None])[0])
    cal_clean = calibration(u.mean.double(), u.std.double(), truth)
    fresh = clean[idx] + args.sigma * np.random.default_rng(args.seed + 1).standard_normal((n, 3))
    cal_fresh = calibration(u.mean.double(), u.std_noisy.double(), torch.as_tensor(cover.to_local(fresh[None])[0]))
    # calibration() works in the units it is given: the two patch-frame ones are rescaled to world.
    for cal in (cal_clean, cal_fresh):
        cal["rmse_world"] = cal["rmse"] * s
        cal["mean_std_world"] = cal["mean_std"] * s
    report = {
        "points": n, "sigma_true": args.sigma, "iterations": args.iterations,
        "fit_wall_time_s": res.wall_time_s,
        "noise_std_fitted_world": u.noise_std_world,
        "noise_ratio_fitted_over_true": u.noise_std_world / args.sigma,
        "normal_error_vs_normal_std": cal_normal,
        "per_coordinate_vs_matched_clean": cal_clean,
        "fresh_noisy_vs_predictive_std": cal_fresh,
        "laplace": u.summary(),
    }
    write_json(args.out / "uncertainty_geoprior.json", report)
    plot(args.out / "uncertainty_geoprior.png", world, noisy, std_n, normal_err, cal_normal, u.noise_std_world,
         args.sigma)
    print(json.dumps({k: v for k, v in report.items() if k != "laplace"}, indent=1))
    return 0


def plot(path: Path, world: np.ndarray, noisy: np.ndarray, std_n: np.ndarray, normal_err: np.ndarray,
         cal_normal: dict, noise_fitted: float, sigma: float) -> None:
    """Chart points coloured by the std along the normal; |normal error| against that std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(10, 4.2))
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    sc = ax.scatter(world[:, 0], world[:, 1], world[:, 2], c=std_n, cmap="viridis", s=14)
    ax.scatter(noisy[:, 0], noisy[:, 1], noisy[:, 2], c="0.6", s=2, alpha=0.5)
    ax.set_title("chart points, colour: std along normal")
    ax.view_init(elev=35, azim=30)
    ax.set_box_aspect((1, 1, 0.4))
    fig.colorbar(sc, ax=ax, shrink=0.6, label="std (world units)")
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.scatter(std_n, np.abs(normal_err), s=8)
    lim = max(std_n.max() * 2, np.abs(normal_err).max()) * 1.05
    ax2.plot([0, lim / 2], [0, lim], "r--", lw=1, label="|error| = 2 std")
    ax2.set_xlabel("predicted std along normal")
    ax2.set_ylabel("|distance to true sphere|")
    ax2.set_title(f"{100 * cal_normal['fraction_within']:.1f}% within 2 std; "
                  f"fitted noise {noise_fitted:.4f} (true {sigma})", fontsize=9)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
