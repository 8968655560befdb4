"""Linearised-DIP uncertainty on denoising and sparse-view CT, with calibration.

A deep image prior ``x* = f_theta*(z)`` is fitted to measurements ``y = A x + n``.  Linearising
the network at its fitted parameters, ``x(theta) ~ x* + J_x (theta - theta*)``, with a Gaussian
weight prior ``N(0, alpha^-1 I)`` and noise precision ``beta = 1/sigma^2`` (the known noise
level), gives a Gaussian posterior of precision ``beta J_y^T J_y + alpha I`` (``J_y = A J_x``)
and the pixelwise predictive variance ``var_i = [J_x Sigma J_x^T]_ii``
(:mod:`shared.uncertainty`; a rank-``r`` randomized SVD of ``J_y``, ``alpha`` by marginal
likelihood).  Calibration against the ground truth: the fraction of pixels with
``|error| <= k std`` for ``k`` in 0.5..3 against the Gaussian nominal ``erf(k / sqrt 2)``, and
the mean Gaussian log-likelihood against the best constant std.

* denoise: scikit-image's ``camera`` at 64x64, Gaussian noise sigma = 0.1, the light skip
  net fitted for a fixed number of steps (no perturbation, no averaging, no stopping);
* ct: a random-ellipse phantom at 64x64, 30 angles, noise 1% of the sinogram RMS, the CT
  network of :mod:`shared.image.edip` with the FBP image as input.

Run: ``python examples/uncertainty_images.py --out out/uncertainty`` (a few minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from shared.image import DeepImagePrior, ct_problem, denoise_problem, known_noise_std, random_ellipses, resize
from shared.image.edip import finetune
from shared.image.tasks import baseline_key
from shared.metrics import psnr
from shared.result import write_json
from shared.uncertainty import calibration, linearised_uncertainty

KS = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]


def fitted_problem(task: str, iterations: int):
    """``(problem, FitResult)``: the measured problem of ``task`` and the DIP fitted to it."""
    if task == "denoise":
        # ## Denoising: A = I, y = x + n (clipped to [0, 1]), n ~ N(0, 0.1^2)
        from skimage.data import camera

        x = resize(torch.as_tensor(camera(), dtype=torch.float32)[None, None] / 255, (64, 64))
        problem = denoise_problem(x, multiple=16, sigma=0.1, simulate=True, seed=0)
        # The light skip U-Net on fixed noise, plain Adam: mean((f_theta(z) - y)^2).
        dip = DeepImagePrior(net="skip", loss="mse", iterations=iterations, stop="none", input_noise=0.0, average=None,
                             progress=f"{task} fit")
        return problem, dip.reconstruct(problem).fit
    # ## Sparse-view CT: A = R (parallel-beam Radon transform, 30 angles), y = R x + n
    x = random_ellipses(1, 64, generator=torch.Generator().manual_seed(5))
    problem = ct_problem(x, multiple=16, angles=30, size=64, noise=0.01, seed=0)
    # The CT network with the FBP image as input z: mean((R G_theta(FBP) - y)^2) by Adam.
    ft = finetune(problem.y, problem.forward, problem.observation, input="fbp", iterations=iterations, lr=5e-3,
                  reference=problem.reference, progress=f"{task} fit")
    return problem, ft.result


def run(task: str, iterations: int, rank: int, out: Path) -> dict:
    problem, fitted = fitted_problem(task, iterations)
    x = problem.reference

    # ## The linearised posterior, from the fit result alone (network, z, physics, y)
    sigma = known_noise_std(problem, sigma=0.1, noise=0.01)
    unc = linearised_uncertainty(fitted, rank=rank, beta=1 / sigma ** 2, progress=True)
    est = unc.mean.clamp(0, 1)  # the network at the linearisation point (batch-norm batch statistics)

    # ## Calibration against the truth
    cal = calibration(est, unc.std, x)
    curve = [calibration(est, unc.std, x, k=k)["fraction_within"] for k in KS]
    obs_name = problem.baseline_name
    row = {"task": task, "psnr": psnr(est, x),
           f"psnr_{baseline_key(obs_name)}": psnr(problem.observation.clamp(0, 1), x),
           "iterations": iterations, "calibration": cal, "fraction_within_k": dict(zip(map(str, KS), curve)),
           "uncertainty": unc.summary()}
    print(f"{task}: PSNR {row['psnr']:.2f} dB; within 2 std {cal['fraction_within']:.3f} (nominal 0.954); "
          f"test LL {cal['test_log_likelihood']:.3f} vs constant std {cal['baseline_log_likelihood']:.3f}; "
          f"corr(std, |err|) {cal['std_error_correlation']:.2f}; uncertainty {unc.timings['total_s']:.0f} s",
          flush=True)

    # ## Figure: truth, observation, DIP, |error|, predicted std, calibration curve
    err = (est - x).abs()[0, 0]
    vmax = float(max(err.max(), unc.std.max()))
    fig, ax = plt.subplots(1, 6, figsize=(17, 3.0), gridspec_kw={"width_ratios": [1, 1, 1, 1, 1, 1.1]})
    for a, (img, title, cmap, top) in zip(ax, ((x, "truth", "gray", 1), (problem.observation, obs_name, "gray", 1),
                                               (est, f"DIP {row['psnr']:.1f} dB", "gray", 1),
                                               (err[None, None], "|error|", "magma", vmax),
                                               (unc.std, "predicted std", "magma", vmax))):
        a.imshow(img[0, 0].detach().cpu(), cmap=cmap, vmin=0, vmax=top)
        a.set_title(title)
        a.axis("off")
    ax[5].plot(KS, [math.erf(k / math.sqrt(2)) for k in KS], "k--", label="nominal")
    ax[5].plot(KS, curve, "o-", label="linearised DIP")
    ax[5].set_xlabel("k")
    ax[5].set_ylabel("fraction |err| <= k std")
    ax[5].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"uncertainty_{task}.png", dpi=65)
    plt.close(fig)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("out/uncertainty"))
    p.add_argument("--tasks", nargs="+", choices=("denoise", "ct"), default=["denoise", "ct"])
    p.add_argument("--iterations", type=int, nargs=2, default=[300, 600], metavar=("DENOISE", "CT"),
                   help="fit iterations (DIP overfits the noise in denoising: stop early)")
    p.add_argument("--rank", type=int, default=64)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    its = {"denoise": args.iterations[0], "ct": args.iterations[1]}
    rows = [run(t, its[t], args.rank, args.out) for t in args.tasks]
    write_json(args.out / "uncertainty_images.json", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
