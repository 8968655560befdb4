"""Linearised-DIP uncertainty on denoising and sparse-view CT, with calibration.

For each task a DIP is fitted through the engine, then :func:`shared.uncertainty.linearised_uncertainty`
linearises it at the fitted parameters, takes a rank-``r`` randomized SVD of the Jacobian of
the measurements, and returns the pixelwise predictive std of the reconstruction (prior
precision by marginal likelihood, noise precision fixed to the known noise level).
Calibration against the ground truth: the fraction of pixels with ``|error| <= k std`` for
``k`` in 0.5..3 against the Gaussian nominal ``erf(k / sqrt 2)``, and the mean Gaussian
log-likelihood against the best constant std.

* denoise: scikit-image's ``camera`` at 64x64, Gaussian noise sigma = 0.1;
* ct: a random-ellipse phantom at 64x64, 30 angles, noise 1% of the sinogram RMS.

Run: ``python examples/uncertainty_images.py --out out/uncertainty`` (a few minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.fit import fit  # noqa: E402
from shared.image.edip import CTSetup, edip_network, simulate_ct  # noqa: E402
from shared.image.phantoms import random_ellipses  # noqa: E402
from shared.metrics import psnr  # noqa: E402
from shared.networks import Hourglass, get_noise_input  # noqa: E402
from shared.uncertainty import calibration, linearised_uncertainty  # noqa: E402

KS = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]


def denoise_problem(size: int = 64, sigma: float = 0.1):
    from skimage.data import camera
    from skimage.transform import resize

    x = torch.from_numpy(resize(camera() / 255.0, (size, size), anti_aliasing=True)).float()[None, None]
    y = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    net = Hourglass(8, 1, channels_down=(16, 32, 64), channels_up=(16, 32, 64), channels_skip=(4, 4, 4))
    z = get_noise_input(8, size, size, generator=torch.Generator().manual_seed(1))
    return dict(x=x, y=y, net=net, z=z, forward=None, sigma=sigma, lr=1e-2, observation=y.clamp(0, 1), obs_name="noisy")


def ct_problem(size: int = 64, angles: int = 30, noise: float = 0.01):
    x = random_ellipses(1, size, generator=torch.Generator().manual_seed(5))
    op = CTSetup(size, angles, noise).operator()
    y, fbp, sig = simulate_ct(x, op, noise, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    return dict(x=x, y=y, net=edip_network(), z=fbp.clone(), forward=op.A, sigma=float(sig[0]), lr=5e-3,
                observation=fbp, obs_name="FBP")


def run(task: str, iterations: int, rank: int, out: Path) -> dict:
    P = denoise_problem() if task == "denoise" else ct_problem()
    x = P["x"]
    res = fit(P["net"], P["z"], P["y"], forward=P["forward"], iterations=iterations, lr=P["lr"], seed=0,
              progress=f"{task} fit")
    unc = linearised_uncertainty(res, P["z"], forward=P["forward"], y=P["y"], rank=rank, beta=1 / P["sigma"] ** 2,
                                 progress=True)
    est = unc.mean.clamp(0, 1)  # the network at the linearisation point (batch-norm batch statistics)
    cal = calibration(est, unc.std, x)
    curve = [calibration(est, unc.std, x, k=k)["fraction_within"] for k in KS]
    row = {"task": task, "psnr": psnr(est, x), f"psnr_{P['obs_name']}": psnr(P["observation"], x),
           "iterations": iterations, "calibration": cal, "fraction_within_k": dict(zip(map(str, KS), curve)),
           "uncertainty": unc.summary()}
    print(f"{task}: PSNR {row['psnr']:.2f} dB; within 2 std {cal['fraction_within']:.3f} (nominal 0.954); "
          f"test LL {cal['test_log_likelihood']:.3f} vs constant std {cal['baseline_log_likelihood']:.3f}; "
          f"corr(std, |err|) {cal['std_error_correlation']:.2f}; uncertainty {unc.timings['total_s']:.0f} s", flush=True)
    err = (est - x).abs()[0, 0]
    vmax = float(max(err.max(), unc.std.max()))
    fig, ax = plt.subplots(1, 6, figsize=(17, 3.0), gridspec_kw={"width_ratios": [1, 1, 1, 1, 1, 1.1]})
    ax[0].imshow(x[0, 0], cmap="gray", vmin=0, vmax=1)
    ax[0].set_title("truth")
    ax[1].imshow(P["observation"][0, 0], cmap="gray", vmin=0, vmax=1)
    ax[1].set_title(P["obs_name"])
    ax[2].imshow(est[0, 0], cmap="gray", vmin=0, vmax=1)
    ax[2].set_title(f"DIP {row['psnr']:.1f} dB")
    ax[3].imshow(err, cmap="magma", vmin=0, vmax=vmax)
    ax[3].set_title("|error|")
    ax[4].imshow(unc.std[0, 0], cmap="magma", vmin=0, vmax=vmax)
    ax[4].set_title("predicted std")
    for a in ax[:5]:
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
    (args.out / "uncertainty_images.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
