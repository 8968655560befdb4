"""Benchmark: DIP vs educated DIP (EDIP) on sparse-view CT, and uncertainty calibration.

Setting: 128x128 random-ellipse test phantoms (not seen in pretraining), 30 parallel-beam
angles, Gaussian noise of 1% of the sinogram RMS.  Four fits through the engine, all with
the network of :func:`shared.image.edip.edip_network`:

* DIP (noise):  random weights, input one channel of U(0, 0.1) noise, Adam lr 5e-3;
* DIP (FBP):    random weights, input the FBP image, Adam lr 5e-3;
* EDIP (noise): pretrained weights (``checkpoints/edip_ct128.pt``), noise input, lr 1e-3;
* EDIP (FBP):   pretrained weights, FBP input, lr 1e-3.

For each: initial PSNR, rise time to -0.1 dB of the steady PSNR (mean PSNR over the last
10% of the run), steady PSNR.  ``dip_time_to_steady_s`` is the wall time DIP (noise) takes
to reach its own steady PSNR - 0.1 dB; ``edip_time_to_steady_s`` the time EDIP (FBP) takes
to reach that same PSNR level.  Then the linearised-Laplace uncertainty of the EDIP (FBP)
fit (rank 64, noise level known; weight prior centred at the pretrained weights, and, for
comparison, at zero) and its calibration against the phantom
(``calibration_2std``: fraction of pixels with ``|x* - x| <= 2 std``), and the leading
singular values of the Jacobian of DIP and EDIP at initialisation and after fitting.

Writes ``benchmarks/results/edip.json`` and figures in ``benchmarks/results/``.  The
pretrained checkpoint is made first if missing (``python -m shared.image.edip pretrain``).
"""
from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

from shared.provenance import run_record

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from shared.image import random_ellipses
from shared.image.edip import (CTSetup, curve_stats, edip_network, finetune, load_checkpoint, network_output,
                               simulate_ct, time_to_psnr)
from shared.metrics import psnr, ssim
from shared.result import write_json
from shared.spectral import jacobian_spectrum
from shared.uncertainty import batch_statistics, calibration, linearised_uncertainty, snapshot

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "edip_ct128.pt")
    p.add_argument("--dip-iterations", type=int, default=1500)
    p.add_argument("--edip-iterations", type=int, default=800)
    p.add_argument("--rank", type=int, default=64, help="rank of the Jacobian SVD for the uncertainty")
    p.add_argument("--spectrum-rank", type=int, default=24)
    p.add_argument("--phantom-seed", type=int, default=4242)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.checkpoint.is_file():
        from shared.image.edip import main as edip_main

        print(f"no checkpoint at {args.checkpoint}: pretraining first")
        edip_main(["pretrain", "--out", str(args.checkpoint)])
    torch.set_num_threads(max(1, torch.get_num_threads()))

    setup = CTSetup(128, 30, 0.01)
    op = setup.operator()
    x = random_ellipses(1, 128, generator=torch.Generator().manual_seed(args.phantom_seed))
    y, fbp, sig = simulate_ct(x, op, setup.noise, torch.Generator().manual_seed(0))
    sigma = float(sig[0])
    print(f"FBP: PSNR {psnr(fbp, x):.2f} dB")

    pretrained, meta = load_checkpoint(args.checkpoint)
    runs = {}
    inits = {}
    for name, inp, edu in (("DIP (noise)", "noise", False), ("DIP (FBP)", "fbp", False),
                           ("EDIP (noise)", "noise", True), ("EDIP (FBP)", "fbp", True)):
        torch.manual_seed(0)
        net = copy.deepcopy(pretrained) if edu else edip_network()
        inits[name] = copy.deepcopy(net)
        its = args.edip_iterations if edu else args.dip_iterations
        lr = 1e-3 if edu else 5e-3
        t = time.perf_counter()
        ft = finetune(y, op, fbp, net=net, input=inp, iterations=its, lr=lr, reference=x, metric_every=10,
                      progress=name)
        stats = curve_stats(ft.iterations, ft.psnr, ft.times)
        out = network_output(ft.result.model, ft.z).clamp(0, 1)
        stats.update(final_psnr=psnr(out, x), final_ssim=ssim(out, x), iterations=its, lr=lr,
                     wall_time_s=time.perf_counter() - t,
                     seconds_per_iteration=ft.times[-1] / max(ft.iterations[-1], 1))
        ft.stats = stats
        runs[name] = ft
        print(f"{name:13s} initial {stats['initial_psnr']:.2f} dB, steady {stats['steady_psnr']:.2f} dB, "
              f"rise to -0.1 dB at it {stats['rise_iteration']} ({stats['rise_time_s']:.1f} s), "
              f"final {stats['final_psnr']:.2f} dB", flush=True)

    dip = runs["DIP (noise)"]
    target = dip.stats["steady_psnr"] - 0.1
    times = {name: time_to_psnr(r.iterations, r.psnr, r.times, target) for name, r in runs.items()}
    dip_time = times["DIP (noise)"][0]
    edip_time = times["EDIP (FBP)"][0]
    print(f"time to DIP's steady PSNR - 0.1 dB ({target:.2f} dB): " +
          ", ".join(f"{k} {v[0]:.1f} s (it {v[1]})" for k, v in times.items()))

    # Uncertainty of the EDIP (FBP) reconstruction.  Headline: the Gaussian weight prior centred
    # at the network's initialisation (the pretrained weights: fine-tuning is gradient descent
    # from them); also reported: the classical zero-mean prior.
    edip = runs["EDIP (FBP)"]
    cals, uncs = {}, {}
    for label, prior_mean in (("init", snapshot(inits["EDIP (FBP)"])), ("zero", "zero")):
        t = time.perf_counter()
        # The fit result carries the network, its input, the physics R and the sinogram y.
        unc = linearised_uncertainty(edip.result, rank=args.rank, prior_mean=prior_mean, beta=1.0 / sigma ** 2,
                                     progress=True)
        est = unc.mean.clamp(0, 1)  # the linearisation point (batch-norm batch statistics)
        cals[label], uncs[label] = calibration(est, unc.std, x), unc
        c = cals[label]
        print(f"uncertainty, prior mean {label} ({time.perf_counter() - t:.0f} s): "
              f"within 2 std {c['fraction_within']:.3f}, "
              f"test LL {c['test_log_likelihood']:.3f} vs constant-std {c['baseline_log_likelihood']:.3f}, "
              f"corr(std, |err|) {c['std_error_correlation']:.2f}", flush=True)
    cal, unc = cals["init"], uncs["init"]

    # Jacobian spectra (FBP input) at initialisation and after fitting.
    spectra = {}
    for name in ("DIP (FBP)", "EDIP (FBP)"):
        for when, model in (("init", inits[name]), ("fitted", runs[name].result.model)):
            model.eval()
            with batch_statistics(model):
                S = jacobian_spectrum(model, runs[name].z, rank=args.spectrum_rank, forward=op.A, power_iterations=1)
            spectra[f"{name} {when}"] = [float(s) for s in S]
    print("leading Jacobian singular value: " + ", ".join(f"{k} {v[0]:.3g}" for k, v in spectra.items()))

    # Figures.
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, r in runs.items():
        ax[0].plot(r.times, r.psnr, label=name)
        ax[1].plot(r.iterations, r.psnr, label=name)
    for a in ax:
        a.axhline(target, color="k", lw=0.6, ls=":")
        a.set_ylabel("PSNR (dB)")
        a.legend(fontsize=8)
        a.set_ylim(bottom=max(0.0, min(min(r.psnr) for r in runs.values()) - 1))
    ax[0].set_xlabel("wall time (s)")
    ax[1].set_xlabel("iteration")
    ax[1].set_xscale("symlog", linthresh=10)
    fig.suptitle("sparse-view CT 128x128, 30 angles, 1% noise")
    fig.tight_layout()
    fig.savefig(args.out / "edip_psnr.png", dpi=70)
    plt.close(fig)

    err = (est - x)[0, 0]
    fig, ax = plt.subplots(1, 5, figsize=(15, 3.2))
    panels = ((x[0, 0], "phantom", "gray", (0, 1)), (fbp[0, 0], f"FBP {psnr(fbp, x):.1f} dB", "gray", (0, 1)),
              (est[0, 0], f"EDIP {edip.stats['final_psnr']:.1f} dB", "gray", (0, 1)),
              (err.abs(), "|error|", "magma", (0, float(2 * unc.std.max()))),
              (unc.std[0, 0], f"predicted std ({cal['fraction_within']:.0%} within 2 std)", "magma",
               (0, float(2 * unc.std.max()))))
    for a, (im, title, cmap, lim) in zip(ax, panels):
        h = a.imshow(im, cmap=cmap, vmin=lim[0], vmax=lim[1])
        a.set_title(title, fontsize=9)
        a.axis("off")
    fig.colorbar(h, ax=ax[3:], shrink=0.8)
    fig.savefig(args.out / "edip_uncertainty.png", dpi=70, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for k, v in spectra.items():
        ax.semilogy(range(1, len(v) + 1), v, "o-" if "EDIP" in k else "s--", ms=3, label=k)
    ax.set_xlabel("index")
    ax.set_ylabel("singular value of R J")
    ax.legend(fontsize=8)
    ax.set_title("Jacobian spectra (FBP input)")
    fig.tight_layout()
    fig.savefig(args.out / "edip_spectra.png", dpi=70)
    plt.close(fig)

    result = {
        "setting": {"size": 128, "angles": 30, "noise_rel": 0.01,
                    "phantom": f"random ellipses, seed {args.phantom_seed}",
                    "dip_iterations": args.dip_iterations, "edip_iterations": args.edip_iterations},
        "dip_time_to_steady_s": dip_time,
        "edip_time_to_steady_s": edip_time,
        "edip_over_dip_time": edip_time / dip_time if dip_time > 0 else None,
        # Same network, same cost per step: the iteration ratio is the load-free comparison.
        "iteration_ratio_edip_over_dip": (times["EDIP (FBP)"][1] / times["DIP (noise)"][1]
                                          if times["DIP (noise)"][1] > 0 and times["EDIP (FBP)"][1] >= 0 else None),
        "target_psnr": target,
        # None: never reached
        "time_to_target_s": {k: (v[0] if v[0] != float("inf") else None) for k, v in times.items()},
        "iterations_to_target": {k: v[1] for k, v in times.items()},
        "runs": {k: r.stats for k, r in runs.items()},
        "psnr_fbp": psnr(fbp, x),
        "calibration_2std": cal["fraction_within"],
        "calibration": cal,
        "uncertainty": unc.summary(),
        "calibration_prior_zero": cals["zero"],
        "uncertainty_prior_zero": uncs["zero"].summary(),
        "jacobian_spectra": spectra,
        "pretraining": meta,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "note": "2 CPU cores shared with ~6 concurrent jobs: wall times are inflated and noisy"},
    }
    result.update(run_record("cpu"))
    write_json(args.out / "edip.json", result)
    print(f"dip_time_to_steady_s {dip_time:.1f}  edip_time_to_steady_s {edip_time:.1f}  "
          f"calibration_2std {cal['fraction_within']:.3f}")
    print(f"wrote {args.out / 'edip.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
