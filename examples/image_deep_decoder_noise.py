"""The deep decoder is under-parameterised: it fits an image but not pure noise.

A deep decoder with ``k`` channels and 6 layers has ``N = 6 (k^2 + 2k) + 3k`` parameters,
far fewer than the ``n = 3 H W`` values of an RGB image (k = 64 at 256x256: N = 25,536,
n = 196,608).  Fitted for many iterations (Adam, lr 0.01, no early stopping) to

* a natural image (the centre crop of F16), and
* U(0, 1) white noise of the same size,

it reproduces the image closely but leaves most of the noise unexplained.  The measure is
the residual fraction ``||G(C) - y||^2 / ||y - mean(y)||^2`` (:func:`shared.image.
experiments.residual_fraction`); a linear model with N degrees of freedom could explain
about ``N / n`` of white noise's energy, so the noise residual should stay near
``1 - N/n``.  The claim checked: **the residual on noise stays above half of the noise
energy** (``CLAIM_FRACTION = 0.5``) at every iteration, while the image residual falls
below ``IMAGE_FRACTION = 0.2`` (the same network does fit the image).

Writes ``deep_decoder_noise.png`` (residual fraction vs iteration for both targets, and
the two fits) and ``deep_decoder_noise.json`` into ``--out``.

Run: ``python examples/image_deep_decoder_noise.py --out out/dd`` (reduced:
``--size 128 --k 32 --iterations 800``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from shared.fit import Objective, Optimiser, fit
from shared.image import centre_crop, read_image, resize, to_array
from shared.image.experiments import residual_fraction
from shared.networks import DeepDecoder, get_noise_input
from shared.paths import require_data
from shared.result import write_json

CLAIM_FRACTION = 0.5
IMAGE_FRACTION = 0.2


def fit_decoder(target: torch.Tensor, k: int, layers: int, iterations: int, seed: int):
    """Fit a deep decoder to ``target``; return (result, residual fraction per recorded step, N).

    The prior: ``G(C)`` with ``C`` fixed U(0, 0.1) noise at the coarsest scale; the
    objective ``mean((G(C) - target)^2)`` (``A = I``), plain Adam at lr 0.01.
    """
    torch.manual_seed(seed)
    net = DeepDecoder(k=k, layers=layers, out_ch=target.shape[1])
    _, kk, h, w = net.input_shape(*target.shape[-2:])
    z = get_noise_input(kk, h, w, kind="uniform", scale=0.1, generator=torch.Generator().manual_seed(seed))
    trace: list[tuple[int, float]] = []
    every = max(1, iterations // 200)

    def record(step):
        if step.iteration % every == 0 or step.iteration == iterations - 1:
            trace.append((step.iteration + 1, residual_fraction(step.output, target)))

    res = fit(net, z, Objective(target), optimiser=Optimiser(lr=0.01, iterations=iterations), callbacks=[record],
              seed=seed)
    return res, trace, sum(p.numel() for p in net.parameters())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/examples/deep_decoder_noise"))
    parser.add_argument("--size", type=int, default=256, help="image side (multiple of 32)")
    parser.add_argument("--k", type=int, default=64, help="deep decoder channels")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    # ## Two targets: the F16 crop and U(0, 1) white noise of the same size
    image = centre_crop(read_image(require_data("images", "dip", "F16.png"), name="F16"), 256)
    if args.size != 256:
        image = resize(image, (args.size, args.size))
    noise = torch.rand(image.shape, generator=torch.Generator().manual_seed(args.seed + 1))
    report: dict = {"k": args.k, "layers": args.layers, "size": args.size, "iterations": args.iterations,
                    "claim": f"residual on U(0,1) noise stays above {CLAIM_FRACTION} of its energy at every "
                             f"iteration while the image residual falls below {IMAGE_FRACTION}"}
    traces, outputs = {}, {}
    for name, target in (("image", image), ("U(0,1) noise", noise)):
        res, trace, n_params = fit_decoder(target, args.k, args.layers, args.iterations, args.seed)
        traces[name] = trace
        outputs[name] = (target, res.final)
        report["parameters"] = n_params
        report[name] = {"final_residual_fraction": residual_fraction(res.final, target),
                        "min_residual_fraction": min(v for _, v in trace), "time_s": res.wall_time_s}
    n_values = image.numel()
    report["values"] = n_values
    report["parameters_over_values"] = report["parameters"] / n_values
    report["linear_bound_1_minus_N_over_n"] = 1 - report["parameters"] / n_values
    report["claim_holds"] = bool(report["U(0,1) noise"]["min_residual_fraction"] > CLAIM_FRACTION
                                 and report["image"]["final_residual_fraction"] < IMAGE_FRACTION)

    # ## Figure: residual fraction against the iteration, and the two fits
    fig = plt.figure(figsize=(13, 3.2))
    ax = fig.add_subplot(1, 6, (1, 2))
    for name, trace in traces.items():
        it, v = zip(*trace)
        ax.loglog(it, v, lw=1.3, label=name)
    ax.axhline(CLAIM_FRACTION, color="gray", ls=":", lw=1)
    ax.text(1.2, CLAIM_FRACTION * 1.1, f"claim: noise residual > {CLAIM_FRACTION}", fontsize=7, color="gray")
    ax.set_xlabel("iteration")
    ax.set_ylabel("||G(C) - y||^2 / ||y - mean y||^2")
    ax.set_title(f"deep decoder k={args.k}: N/n = {report['parameters_over_values']:.3f}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    for j, (name, (target, out)) in enumerate(outputs.items()):
        fitted = f"fit ({report[name]['final_residual_fraction']:.3f})"
        for i, (title, img) in enumerate(((f"{name}", target), (fitted, out))):
            a = fig.add_subplot(1, 6, 3 + 2 * j + i)
            a.imshow(np.clip(to_array(img), 0, 1))
            a.set_title(title, fontsize=8)
            a.axis("off")
    fig.tight_layout()
    fig.savefig(args.out / "deep_decoder_noise.png", dpi=100)
    plt.close(fig)
    write_json(args.out / "deep_decoder_noise.json", report)
    print(json.dumps({k: v for k, v in report.items()}, indent=2))
    return report


if __name__ == "__main__":
    main()
