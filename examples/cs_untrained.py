"""Compressed sensing with untrained generators (Heckel & Soltanolkotabi).

Three experiments, each a figure in ``--out`` and numbers in ``cs_untrained.json``:

1. **Recovery vs m/n.**  ``y = A x`` with a Gaussian ``A`` (``m x n``, entries ``N(0, 1/m)``),
   ``m/n`` in {0.1, 0.25, 0.5}; the two-layer generator ``ReLU(U C) v`` (1-D signal of
   ``n = 256`` and a 64x64 image) and the deep decoder (64x64 image) are fitted by Adam on
   ``||A G(C) - y||^2`` through ``shared.fit.fit``; the error ``||x_hat - x|| / ||x||`` is
   compared with the minimum-norm solution ``A^+ y``.
2. **Linear-generator warm-up.**  For the linear generator ``x = J c`` (``J`` the generator's
   Jacobian at initialisation) gradient descent from ``c = 0`` converges to the minimum-norm
   solution ``c = (A J)^+ y``; the figure shows ``||c_t - (AJ)^+ y||`` and, against ``m``,
   the recovery error next to the energy of ``x`` outside the span of ``J``'s ``m`` leading
   left singular vectors (the quantity the error bound is stated with).
3. **Trigonometric singular vectors.**  The leading left singular vectors of ``J`` at a random
   initialisation, and the principal angles between the top-``k`` singular subspace and the
   span of the ``k`` lowest-frequency cosines/sines.

Run: ``python examples/cs_untrained.py --out out/cs`` (about a few minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from shared.fit import Objective, Optimiser, fit
from shared.image import shepp_logan
from shared.networks import ConvGenerator, DeepDecoder, get_noise_input
from shared.operators import GaussianMatrix
from shared.result import write_json
from shared.spectral import gradient_descent_min_norm, principal_angles, trig_basis
from shared.uncertainty import batch_statistics

RATIOS = (0.1, 0.25, 0.5)


def test_signal_1d(n: int = 256) -> torch.Tensor:
    """A smooth 1-D test signal with one jump: sum of three sinusoids and a step, in [0, 1]."""
    t = torch.arange(n, dtype=torch.float32) / n
    x = 0.5 + 0.25 * torch.sin(2 * math.pi * 2 * t) + 0.15 * torch.cos(2 * math.pi * 5 * t + 0.3) \
        + 0.1 * torch.sin(2 * math.pi * 9 * t) + 0.15 * (t > 0.6).float()
    return ((x - x.min()) / (x.max() - x.min()))[None]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def recover(kind: str, x: torch.Tensor, ratio: float, iterations: int, seed: int = 0) -> dict:
    """Fit ``kind`` to ``y = A x``: ``min_theta ||A G_theta(C) - y||^2 / m`` by Adam (one row of experiment 1)."""
    # ## The physics: a Gaussian matrix A (m x n, entries N(0, 1/m)), y = A x
    n = x.numel()
    m = max(1, int(round(ratio * n)))
    shape = tuple(x.shape[1:])
    A = GaussianMatrix(m, n, generator=torch.Generator().manual_seed(seed), in_shape=shape)
    y = A(x)
    # ## The prior: the two-layer generator ReLU(U C) v (no input) or the deep decoder on noise
    g = torch.Generator().manual_seed(seed + 1)
    if kind == "two-layer":
        net = ConvGenerator(shape if len(shape) == 1 else shape[-2:], k=64, upsample=1 if len(shape) == 1 else 2,
                            width=3.0 if len(shape) == 1 else 1.5, init_std=0.1, generator=g)
        z, lr = None, 1e-2
    else:
        net = DeepDecoder(k=32, layers=4, out_ch=1)
        z, lr = get_noise_input(32, 64 // 8, 64 // 8, generator=g), 1e-2
    t = time.perf_counter()
    fit(net, z, Objective(y, physics=A), optimiser=Optimiser(lr=lr, iterations=iterations), seed=seed)
    net.eval()
    with torch.no_grad(), batch_statistics(net):  # the deep decoder's channel norm uses the image's statistics
        out = net(z).reshape(x.shape) if z is not None else net().reshape(x.shape)
    return {"generator": kind, "n": n, "m": m, "ratio": ratio, "error": rel_err(out, x),
            "error_min_norm": rel_err(A.A_dagger(y).reshape(x.shape), x), "wall_time_s": time.perf_counter() - t,
            "parameters": sum(p.numel() for p in net.parameters()), "output": out}


def experiment_recovery(out: Path, iterations: int) -> list[dict]:
    x1 = test_signal_1d()
    x2 = shepp_logan(64)  # (1, 1, 64, 64)
    rows = []
    for name, x, kinds in (("signal-1d", x1, ("two-layer",)), ("image-64", x2, ("two-layer", "deep-decoder"))):
        for kind in kinds:
            for r in RATIOS:
                row = recover(kind, x, r, iterations)
                row["signal"] = name
                rows.append(row)
                print(f"  {name:9s} {kind:12s} m/n={r:<5} error {row['error']:.3f}"
                      f"  (A^+ y: {row['error_min_norm']:.3f})"
                      f"  {row['wall_time_s']:.0f} s")
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    for (name, kind), ls in zip((("signal-1d", "two-layer"), ("image-64", "two-layer"), ("image-64", "deep-decoder")),
                                ("o-", "s-", "^-")):
        sel = [r for r in rows if r["signal"] == name and r["generator"] == kind]
        ax[0].plot([r["ratio"] for r in sel], [r["error"] for r in sel], ls, label=f"{kind}, {name}")
    for name, ls in (("signal-1d", "o:"), ("image-64", "s:")):
        sel = [r for r in rows if r["signal"] == name and r["generator"] == "two-layer"]
        ax[0].plot([r["ratio"] for r in sel], [r["error_min_norm"] for r in sel], ls, color="gray",
                   label=f"A^+ y, {name}")
    ax[0].set_xlabel("m / n")
    ax[0].set_ylabel("relative error")
    ax[0].set_title("recovery from Gaussian measurements")
    ax[0].legend(fontsize=7)
    sel = [r for r in rows if r["signal"] == "signal-1d" and r["ratio"] == 0.25][0]
    ax[1].plot(x1[0], "k", label="signal")
    ax[1].plot(sel["output"].reshape(-1), "r", label=f"two-layer, m/n=0.25 ({sel['error']:.3f})")
    ax[1].legend(fontsize=7)
    ax[1].set_title("1-D signal")
    sel = [r for r in rows if r["signal"] == "image-64" and r["ratio"] == 0.25 and r["generator"] == "deep-decoder"][0]
    ax[2].imshow(torch.cat([x2[0, 0], sel["output"].reshape(64, 64).clamp(0, 1)], dim=1), cmap="gray", vmin=0, vmax=1)
    ax[2].set_title(f"image | deep decoder, m/n=0.25 ({sel['error']:.3f})")
    ax[2].axis("off")
    fig.tight_layout()
    fig.savefig(out / "cs_recovery.png", dpi=80)
    plt.close(fig)
    for r in rows:
        r.pop("output")
    return rows


def experiment_linear(out: Path, n: int = 128, k: int = 256) -> dict:
    G = ConvGenerator(n, k=k, width=3.0, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    J = G.jacobian()  # (n, k n)
    U, S, _ = torch.linalg.svd(J, full_matrices=False)
    x = test_signal_1d(n)[0].double()
    x = x - x.mean() + 0.5
    ms = [8, 16, 32, 48, 64, 96]
    errs, tails, dists = [], [], None
    for m in ms:
        A = torch.randn(m, n, generator=torch.Generator().manual_seed(m), dtype=torch.float64) / math.sqrt(m)
        M = A @ J
        if m == 32:  # the gradient-descent path, shown converging to the minimum-norm solution
            _, dists = gradient_descent_min_norm(M, A @ x, steps=3000)
        c = torch.linalg.pinv(M) @ (A @ x)  # the limit of gradient descent from 0
        errs.append(rel_err(J @ c, x))
        tails.append(float((x - U[:, :m] @ (U[:, :m].T @ x)).norm() / x.norm()))
        print(f"  linear generator m={m:3d}: min-norm error {errs[-1]:.3f}, "
              f"tail of x beyond {m} singular vectors {tails[-1]:.3f}")
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].semilogy(dists)
    ax[0].set_xlabel("gradient step")
    ax[0].set_ylabel("||c_t - (AJ)^+ y||")
    ax[0].set_title("GD from 0 -> minimum-norm solution (m=32)")
    ax[1].plot(ms, errs, "o-", label="GD limit (AJ)^+ y on linear generator")
    ax[1].plot(ms, tails, "s--", label="||(I - U_m U_m^T) x|| / ||x||")
    ax[1].set_xlabel("m")
    ax[1].set_ylabel("relative error")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "cs_linear_generator.png", dpi=80)
    plt.close(fig)
    return {"n": n, "k": k, "m": ms, "error": errs, "tail_beyond_m": tails, "final_distance_to_min_norm_m32": dists[-1]}


def experiment_trig(out: Path, n: int = 128, k: int = 256) -> dict:
    G = ConvGenerator(n, k=k, width=3.0, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    U, S, _ = torch.linalg.svd(G.jacobian(), full_matrices=False)
    ks = [3, 5, 9, 17, 33]
    cos_min = [float(torch.cos(principal_angles(U[:, :kk], trig_basis(n, kk))).min()) for kk in ks]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.4))
    for i in range(6):
        ax[0].plot(U[:, i] - 0.3 * i, lw=1)
    ax[0].set_title("leading left singular vectors of J (offset)")
    ax[0].set_yticks([])
    ax[1].semilogy(S[:64] / S[0], ".")
    ax[1].set_title("singular values of J (normalised)")
    ax[2].plot(ks, cos_min, "o-")
    ax[2].set_ylim(0, 1.02)
    ax[2].set_xlabel("k")
    ax[2].set_title("cos of largest principal angle\n(top-k singular vs k lowest trig.)")
    fig.tight_layout()
    fig.savefig(out / "cs_trig_vectors.png", dpi=80)
    plt.close(fig)
    for kk, c in zip(ks, cos_min):
        print(f"  top-{kk} singular subspace vs {kk} lowest-frequency trig vectors: cos(max angle) = {c:.3f}")
    return {"n": n, "k_channels": k, "subspace_dim": ks, "cos_largest_principal_angle": cos_min}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("out/cs"))
    p.add_argument("--iterations", type=int, default=1500)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print("== trigonometric singular vectors")
    trig = experiment_trig(args.out)
    print("== linear-generator warm-up")
    lin = experiment_linear(args.out)
    print("== recovery vs m/n")
    rows = experiment_recovery(args.out, args.iterations)
    write_json(args.out / "cs_untrained.json", {"recovery": rows, "linear": lin, "trig": trig})
    print(f"wrote {args.out}/cs_untrained.json and figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
