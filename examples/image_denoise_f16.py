"""F16 denoising: deep image prior vs deep decoder vs TV (Chambolle) vs non-local means.

The centre crop of ``F16.png`` (``../shared/data/images/dip``; ``--size`` pixels, 256 by
default) gets Gaussian noise of sigma = 25/255.  Four denoisers:

* DIP, the suite's light skip net, stopped by ES-WMV (no ground truth),
* the deep decoder (k = 64, 6 layers; under-parameterised), also with ES-WMV,
* scikit-image's total-variation denoiser (Chambolle), its weight chosen by the best
  PSNR on a grid (an *oracle* choice that favours this baseline),
* scikit-image's non-local means, ``h = 0.8 sigma_hat`` with the noise level estimated
  from the image (Donoho's median estimate), patch 5, distance 6, as its documentation suggests.

Writes ``f16_denoise.png`` (noisy, the four results, clean; PSNR/SSIM in the titles),
``f16_curves.png`` (PSNR of DIP and deep decoder against the iteration) and
``f16_denoise.json`` into ``--out``.

Run: ``python examples/image_denoise_f16.py --out out/f16`` (reduced:
``--size 128 --iterations 800``).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from shared.image import DeepImagePrior, centre_crop, denoise_problem, read_image, to_array, to_tensor
from shared.image.figures import grid
from shared.metrics import psnr, ssim
from shared.paths import require_data
from shared.result import write_json

SIGMA = 25 / 255


def tv_chambolle(noisy: np.ndarray, clean: np.ndarray) -> tuple[np.ndarray, float]:
    """TV denoising with the weight (on a grid) that maximises PSNR against ``clean`` (oracle)."""
    from skimage.restoration import denoise_tv_chambolle

    best = None
    for w in (0.04, 0.06, 0.08, 0.1, 0.12, 0.15):
        out = denoise_tv_chambolle(noisy, weight=w, channel_axis=-1 if noisy.ndim == 3 else None)
        p = psnr(np.clip(out, 0, 1), clean)
        if best is None or p > best[0]:
            best = (p, w, out)
    return np.clip(best[2], 0, 1), best[1]


def estimate_noise_std(img: np.ndarray) -> float:
    """Donoho's robust noise estimate ``median(|d|) / 0.6745`` on the finest diagonal Haar
    detail ``d = (a - b - c + e) / 2`` of each 2x2 block (std sigma for white noise),
    averaged over channels.  (scikit-image's ``estimate_sigma`` needs PyWavelets.)"""
    x = img if img.ndim == 3 else img[:, :, None]
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    x = x[:h, :w]
    d = (x[0::2, 0::2] - x[0::2, 1::2] - x[1::2, 0::2] + x[1::2, 1::2]) / 2
    return float(np.mean([np.median(np.abs(d[..., c])) / 0.6745 for c in range(d.shape[-1])]))


def nl_means(noisy: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-local means with ``h = 0.8 sigma_hat`` (noise level estimated, no ground truth)."""
    from skimage.restoration import denoise_nl_means

    axis = -1 if noisy.ndim == 3 else None
    sigma_hat = estimate_noise_std(noisy)
    out = denoise_nl_means(noisy, h=0.8 * sigma_hat, sigma=sigma_hat, patch_size=5, patch_distance=6,
                           fast_mode=True, channel_axis=axis)
    return np.clip(out, 0, 1), sigma_hat


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/examples/f16"))
    parser.add_argument("--size", type=int, default=256, help="centre crop side (multiple of 32)")
    parser.add_argument("--iterations", type=int, default=2400,
                        help="max iterations of each network (ES-WMV stops earlier)")
    parser.add_argument("--patience", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    # ## The problem: y = x + n, n ~ N(0, (25/255)^2), clipped to [0, 1]; A = I
    # The clean crop is the reference (PSNR/SSIM only; never used to fit or to stop).
    clean = centre_crop(read_image(require_data("images", "dip", "F16.png"), name="F16"), args.size)
    problem = denoise_problem(clean, multiple=32, sigma=SIGMA, simulate=True, seed=args.seed)
    noisy = problem.y
    report: dict = {"image": f"F16 centre crop {args.size}x{args.size}", "sigma_255": 25,
                    "noisy": {"psnr": float(psnr(noisy, clean)), "ssim": float(ssim(noisy, clean))}}
    panels = [(f"noisy\n{report['noisy']['psnr']:.2f} dB", noisy)]
    curves = {}
    # ## Two priors, one reconstructor: the light skip U-Net and the deep decoder
    # Each minimises mean((f_theta(z) - y)^2) by Adam with the network's own step size, input
    # perturbation and averaging; ES-WMV (windowed variance of the outputs) selects the output.
    for net in ("skip", "decoder"):
        dip = DeepImagePrior(net=net, loss="mse", iterations=args.iterations, stop="eswmv", patience=args.patience,
                             seed=args.seed, progress=False if args.quiet else net)
        rec = dip.reconstruct(problem)
        m = rec.metrics
        label = "DIP (light skip)" if net == "skip" else "deep decoder k=64"
        report[net] = {"psnr": m["psnr"], "ssim": m["ssim"], "best_psnr_during_fit": m["best_psnr_during_fit"],
                       "selected_iteration": m["selected_iteration"], "iterations_run": m["iterations_run"],
                       "time_s": m["wall_time_s"], "parameters": rec.config["parameters"]}
        panels.append((f"{label}\n{m['psnr']:.2f} dB / {m['ssim']:.3f}", rec.arrays["result"]))
        curves[label] = (rec.fit.history["metric_iteration"], rec.fit.history["psnr"], rec.fit.selected_iteration)

    # ## Classical baselines: TV (Chambolle, oracle weight) and non-local means
    noisy_np, clean_np = to_array(noisy.clamp(0, 1)), to_array(clean)
    t0 = time.perf_counter()
    tv, weight = tv_chambolle(noisy_np, clean_np)
    t_tv = time.perf_counter() - t0
    t0 = time.perf_counter()
    nlm, sigma_hat = nl_means(noisy_np)
    t_nlm = time.perf_counter() - t0
    baselines = (("tv", "TV (Chambolle)", tv, {"weight_oracle": weight, "time_s": t_tv}),
                 ("nlm", "non-local means", nlm, {"sigma_hat_255": sigma_hat * 255, "time_s": t_nlm}))
    for key, label, arr, extra in baselines:
        x = to_tensor(arr)
        report[key] = {"psnr": float(psnr(x, clean)), "ssim": float(ssim(x, clean)), **extra}
        panels.append((f"{label}\n{report[key]['psnr']:.2f} dB / {report[key]['ssim']:.3f}", arr))
    # ## Figures: the results side by side, and PSNR against the iteration
    panels.append(("clean", clean))
    grid(args.out / "f16_denoise.png", [panels],
         panel_inches=2.4, suptitle=f"F16 {args.size}x{args.size}, sigma 25/255 (PSNR dB / SSIM)")

    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for label, (its, vals, sel) in curves.items():
        line, = ax.plot(np.asarray(its) + 1, vals, lw=1.2, label=label)
        ax.axvline(sel + 1, color=line.get_color(), ls="--", lw=0.8)
    for key, label in (("tv", "TV (oracle weight)"), ("nlm", "NLM")):
        ax.axhline(report[key]["psnr"], ls=":", lw=1, color="gray")
        ax.text(1, report[key]["psnr"] + 0.1, label, fontsize=7, color="gray")
    ax.axhline(report["noisy"]["psnr"], ls=":", lw=1, color="k")
    ax.set_xscale("log")
    ax.set_xlabel("iteration (dashed: ES-WMV selection)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_ylim(report["noisy"]["psnr"] - 1, None)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "f16_curves.png", dpi=100)
    plt.close(fig)

    write_json(args.out / "f16_denoise.json", report)
    for k in ("noisy", "skip", "decoder", "tv", "nlm"):
        print(f"{k:8s} PSNR {report[k]['psnr']:6.2f} dB  SSIM {report[k]['ssim']:.3f}")
    return report


if __name__ == "__main__":
    main()
