"""Educated deep image prior (EDIP) for sparse-view CT: pretrain on phantoms, then fit.

The deep image prior fits an untrained network ``G_theta`` to one measurement::

    theta* = argmin_theta  mean( (R G_theta(z) - y)^2 ),      x* = G_theta*(z)

with ``R`` the parallel-beam Radon transform and ``z`` a fixed input.  EDIP (Barbano,
Leuschner, Antoran, Jin & Schoenlieb, "An educated warm start for deep image prior-based
micro CT reconstruction", IEEE TCI 2022) starts that fit from weights learned beforehand
on synthetic data: supervised pretraining on random ellipse phantoms ``x_i`` with their
filtered back-projections as input::

    theta_0 = argmin_theta  E_i mean( (G_theta(FBP(R x_i + n_i)) - x_i)^2 ),

after which the unsupervised fit above runs from ``theta_0`` with ``z = FBP(y)`` (or with
noise as input).  The pretraining is a fit of the shared engine too: a module that draws
a fresh batch of phantoms at every call (:class:`PhantomBatches`) with a loss closed over
its targets, so ``shared.fit.fit`` is still the one training loop.

Command line (``python -m shared.image.edip ...``)::

    python -m shared.image.edip pretrain --out checkpoints/edip_ct128.pt     # a few minutes on CPU
    python -m shared.image.edip finetune --checkpoint checkpoints/edip_ct128.pt --phantom shepp --out out/edip
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from shared.fit import FitResult, Objective, Optimiser, Tracking, fit
from shared.image.checkpoints import read_tagged, save_tagged
from shared.image.phantoms import random_ellipses, shepp_logan
from shared.networks import Hourglass, get_noise_input
from shared.physics import Physics
from shared.result import to_json

__all__ = [
    "CTSetup",
    "simulate_ct",
    "edip_network",
    "PhantomBatches",
    "pretrain",
    "save_checkpoint",
    "load_checkpoint",
    "finetune",
    "curve_stats",
    "time_to_psnr",
    "network_output",
]

#: The network of the CT experiments: 4 scales, few channels (~146k parameters), one input
#: channel (an FBP image or one channel of noise), sigmoid output in [0, 1].
EDIP_CHANNELS = (8, 16, 32, 64)


def edip_network(channels: tuple[int, ...] = EDIP_CHANNELS, skip: int = 4) -> Hourglass:
    """The skip U-Net used for DIP and EDIP on CT (input and output one channel)."""
    ch = tuple(channels)
    return Hourglass(1, 1, channels_down=ch, channels_up=ch, channels_skip=(skip,) * len(ch), sigmoid=True)


# ----------------------------------------------------------------------------- simulation
@dataclass
class CTSetup:
    """Sparse-view parallel-beam geometry and noise model.

    ``noise``: standard deviation of the additive Gaussian noise relative to the RMS of
    the clean sinogram (0.01 = 1%), as in ``untrained image ct``.
    """

    size: int = 128
    angles: int = 30
    noise: float = 0.01

    def operator(self):
        from shared.operators import Radon

        return Radon(self.angles, self.size)


def simulate_ct(x: Tensor, op: Physics, noise: float,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(y, fbp, sigma)``: noisy sinogram ``y = R x + n`` (per-image noise std ``sigma``,
    ``noise`` times the RMS of ``R x``), its FBP clipped to [0, 1] (shape of ``x``)."""
    with torch.no_grad():
        clean = op.A(x)
        rms = clean.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
        sigma = noise * rms
        y = clean + sigma * torch.randn(clean.shape, generator=generator, dtype=clean.dtype)
        fbp = op.fbp(y).clamp(0, 1)
    return y, fbp, sigma.reshape(-1)


class PhantomBatches(nn.Module):
    """Supervised pretraining as an engine fit: each call draws ``batch`` new phantoms.

    ``forward()`` simulates ``batch`` random ellipse phantoms, their noisy sparse-view
    sinograms and FBPs, stores the phantoms in ``self.target`` and returns
    ``net(FBP)``; :meth:`loss` is the data term ``mean((pred - target)^2)`` of the
    objective ``Objective(y=None, data=batches.loss)`` (no measurements: the data term
    draws its own targets).
    """

    def __init__(self, net: nn.Module, setup: CTSetup, batch: int = 4, seed: int = 0) -> None:
        super().__init__()
        self.net = net
        self.setup = setup
        self.batch = batch
        self.op = setup.operator()
        self.gen = torch.Generator().manual_seed(seed)
        self.target: Tensor | None = None

    def forward(self, *unused) -> Tensor:
        x = random_ellipses(self.batch, self.setup.size, generator=self.gen)
        _, fbp, _ = simulate_ct(x, self.op, self.setup.noise, self.gen)
        self.target = x
        return self.net(fbp)

    def loss(self, pred: Tensor) -> Tensor:
        return (pred - self.target).pow(2).mean()


def pretrain(setup: CTSetup | None = None, *, steps: int = 800, batch: int = 4, lr: float = 3e-3, seed: int = 0,
             channels: tuple[int, ...] = EDIP_CHANNELS, progress: bool = True) -> tuple[Hourglass, FitResult]:
    """Supervised pretraining of :func:`edip_network` on random ellipse phantoms (FBP -> phantom):
    ``min_theta E_i mean((G_theta(FBP(R x_i + n_i)) - x_i)^2)`` by Adam, a fresh batch of
    ``batch`` phantoms per step (``setup``: default :class:`CTSetup`)."""
    setup = CTSetup() if setup is None else setup
    torch.manual_seed(seed)
    net = edip_network(channels)
    batches = PhantomBatches(net, setup, batch=batch, seed=seed + 1)
    res = fit(batches, None, Objective(y=None, data=batches.loss), optimiser=Optimiser(lr=lr, iterations=steps),
              seed=seed, progress="EDIP pretraining" if progress else False)
    return net, res


def save_checkpoint(net: Hourglass, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Save the network's configuration, weights (BN statistics included) and ``meta``."""
    return save_tagged(path, "untrained-edip-1", net.config, net.state_dict(), meta)


def load_checkpoint(path: str | Path) -> tuple[Hourglass, dict[str, Any]]:
    """Rebuild the network saved by :func:`save_checkpoint`; returns ``(net, meta)``."""
    ckpt = read_tagged(path, "untrained-edip-1", "EDIP", f"python -m shared.image.edip pretrain --out {path}")
    cfg = dict(ckpt["config"])
    in_ch, out_ch = cfg.pop("in_ch"), cfg.pop("out_ch")
    net = Hourglass(in_ch, out_ch, **cfg)
    net.load_state_dict(ckpt["state_dict"])
    return net, dict(ckpt.get("meta", {}))


def network_output(model: nn.Module, z: Tensor) -> Tensor:
    """``G_theta(z)`` as the fit optimised it: batch norm with the statistics of the batch
    (DIP trains on a batch of one; eval-mode running averages give a different image)."""
    from shared.uncertainty import batch_statistics

    was = model.training
    model.eval()
    try:
        with torch.no_grad(), batch_statistics(model):
            return model(z).detach()
    finally:
        model.train(was)


# ----------------------------------------------------------------------------- fine-tuning
@dataclass
class Finetuned:
    """One DIP/EDIP fit on CT: the engine's result plus PSNR and wall time per metric step."""

    name: str
    result: FitResult
    iterations: list[int]
    psnr: list[float]
    times: list[float]
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def z(self) -> Tensor:
        """The network input of the fit (the FBP image or noise)."""
        return self.result.z


def finetune(y: Tensor, op: Physics, fbp: Tensor, *, net: nn.Module | None = None, input: str = "fbp",
             iterations: int = 1000, lr: float = 1e-3, reference: Tensor | None = None, metric_every: int = 10,
             seed: int = 0, name: str | None = None, progress: bool | str = False,
             noise_scale: float = 0.1, members: int = 1) -> Finetuned:
    """Unsupervised DIP fit of ``net`` (default: a fresh :func:`edip_network`) to a sinogram:
    ``min_theta mean((R G_theta(z) - y)^2)`` by Adam from the network's current weights
    (the pretrained ``theta_0`` for EDIP), with ``R = op``.

    ``input='fbp'`` uses the FBP image as ``z``; ``'noise'`` uses ``noise_scale * U(0, 1)``
    noise of one channel.  PSNR against ``reference`` is tracked every ``metric_every``
    steps together with the wall-clock time since the start of the fit.

    ``members`` = K > 1 (fresh networks only): the K networks of seeds ``seed .. seed+K-1``
    fitted side by side as one network of grouped convolutions, the data term the sum of
    theirs, so each member follows its own separate fit (:class:`shared.losses.SumOverMembers`);
    the output has K rows, the tracked PSNR is that of their mean image, and
    :func:`shared.uncertainty.member_fits` splits the result into the members' fits.
    """
    from shared.losses import SumOverMembers, mse_loss
    from shared.metrics import psnr

    if input not in ("fbp", "noise"):
        raise ValueError(f"input must be 'fbp' or 'noise', got {input!r}")
    if not (isinstance(members, int) and members >= 1):
        raise ValueError(f"members (the ensemble size) must be an integer >= 1, got {members!r}")
    if net is not None and members > 1:
        raise ValueError("members > 1 builds its own fresh networks; pass net=None")
    if net is None:
        nets = []
        for k in range(members):
            torch.manual_seed(seed + k)
            nets.append(edip_network())
        net = nets[0] if members == 1 else Hourglass.stack(nets)
    H, W = fbp.shape[-2:]
    z = fbp.clone() if input == "fbp" else get_noise_input(1, H, W, scale=noise_scale,
                                                            generator=torch.Generator().manual_seed(seed))
    times: list[float] = []
    its: list[int] = []
    t0 = [None]

    def clock(rec):
        if t0[0] is None:
            t0[0] = time.perf_counter()
        if rec.iteration % metric_every == 0 or rec.iteration == iterations - 1:
            times.append(time.perf_counter() - t0[0])
            its.append(rec.iteration)

    metrics = ({"psnr": lambda x, r: psnr(x.clamp(0, 1).mean(0, keepdim=True), r)}
               if reference is not None else {})
    data = mse_loss if members == 1 else SumOverMembers(mse_loss, members)
    start = time.perf_counter()
    t0[0] = start
    res = fit(net, z, Objective(y, physics=op, data=data), optimiser=Optimiser(lr=lr, iterations=iterations),
              tracking=Tracking(metrics, reference=reference, every=metric_every), callbacks=[clock], seed=seed,
              progress=progress)
    ps = res.history.get("psnr", [])
    return Finetuned(name or f"{input}", res, its[: len(ps)], ps, times[: len(ps)])


def curve_stats(iterations: list[int], psnr: list[float], times: list[float] | None = None,
                tail: float = 0.1, tol: float = 0.1) -> dict[str, float]:
    """Initial PSNR, steady PSNR and rise time of a PSNR curve (the seed's plot).

    ``steady``: mean PSNR over the last ``tail`` fraction of the recorded points;
    ``rise``: first iteration (and time) at which the PSNR is within ``tol`` dB of it.
    """
    if not psnr:
        raise ValueError("empty PSNR curve")
    n_tail = max(1, int(round(tail * len(psnr))))
    steady = sum(psnr[-n_tail:]) / n_tail
    idx = next(i for i, p in enumerate(psnr) if p >= steady - tol) if max(psnr) >= steady - tol else len(psnr) - 1
    out = {"initial_psnr": psnr[0], "steady_psnr": steady, "max_psnr": max(psnr),
           "rise_iteration": int(iterations[idx])}
    if times is not None:
        out["rise_time_s"] = float(times[idx])
    return out


def time_to_psnr(iterations: list[int], psnr: list[float], times: list[float], target: float) -> tuple[float, int]:
    """Wall time and iteration at which a PSNR curve first reaches ``target`` (inf, -1 if never)."""
    for it, p, t in zip(iterations, psnr, times):
        if p >= target:
            return float(t), int(it)
    return float("inf"), -1


# ----------------------------------------------------------------------------- CLI
def _cmd_pretrain(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.force:
        raise ValueError(f"{args.out} exists; pass --force to overwrite it")
    setup = CTSetup(args.size, args.angles, args.noise)
    t = time.perf_counter()
    net, res = pretrain(setup, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                        progress=not args.quiet)
    wall = time.perf_counter() - t
    # Validation on fresh phantoms: PSNR of FBP and of the pretrained network.
    from shared.metrics import psnr

    g = torch.Generator().manual_seed(10_000 + args.seed)
    x = random_ellipses(8, setup.size, generator=g)
    _, fbp, _ = simulate_ct(x, setup.operator(), setup.noise, g)
    net.eval()
    with torch.no_grad():
        out = net(fbp)
    val = {"psnr_fbp": sum(psnr(fbp[i], x[i]) for i in range(8)) / 8,
           "psnr_pretrained": sum(psnr(out[i], x[i]) for i in range(8)) / 8}
    meta = {"size": setup.size, "angles": setup.angles, "noise": setup.noise, "steps": args.steps,
            "batch": args.batch, "lr": args.lr, "seed": args.seed, "wall_time_s": wall,
            "final_loss": res.history["loss"][-1], **val}
    save_checkpoint(net, args.out, meta)
    print(json.dumps(to_json(meta), indent=1))
    print(f"wrote {args.out}")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from shared.cli import Runner
    from shared.metrics import psnr, ssim

    net, meta = load_checkpoint(args.checkpoint) if args.checkpoint else (None, {})
    runner = Runner(args, inputs=[args.checkpoint], outputs=["edip_finetune.json", "edip_finetune.png"])
    size = int(meta.get("size", args.size))
    setup = CTSetup(size, args.angles if args.angles else int(meta.get("angles", 30)), args.noise)
    x = shepp_logan(size) if args.phantom == "shepp" else \
        random_ellipses(1, size, generator=torch.Generator().manual_seed(args.seed + 777))
    op = setup.operator()
    y, fbp, _ = simulate_ct(x, op, setup.noise, torch.Generator().manual_seed(args.seed))
    ft = finetune(y, op, fbp, net=net, input=args.input, iterations=args.iterations, lr=args.lr, reference=x,
                  seed=args.seed, progress=not args.quiet)
    runner.open()
    out = network_output(ft.result.model, ft.z).clamp(0, 1)
    stats = curve_stats(ft.iterations, ft.psnr, ft.times)
    report = {"psnr_fbp": psnr(fbp, x), "psnr": psnr(out, x), "ssim": ssim(out, x), **stats,
              "checkpoint": str(args.checkpoint) if args.checkpoint else None, "input": args.input}
    runner.write_json("edip_finetune.json", report)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(9, 3))
    titles = ("phantom", f"FBP {report['psnr_fbp']:.1f} dB", f"fit {report['psnr']:.1f} dB")
    for a, im, t in zip(ax, (x, fbp, out), titles):
        a.imshow(im[0, 0], cmap="gray", vmin=0, vmax=1)
        a.set_title(t)
        a.axis("off")
    fig.tight_layout()
    fig.savefig(args.out / "edip_finetune.png", dpi=80)
    plt.close(fig)
    print(json.dumps(to_json(report), indent=1))
    return 0


def _ct_options(p: argparse.ArgumentParser, *, angles: int, lr: float, angles_help: str) -> None:
    """The options both EDIP commands share: image size, angles, noise, step size, seed."""
    from shared.cli import number

    p.add_argument("--size", type=number(int, 1), default=128, help="image size (pixels)")
    p.add_argument("--angles", type=number(int, 0), default=angles, help=angles_help)
    p.add_argument("--noise", type=number(float, 0), default=0.01, help="noise std relative to the sinogram RMS")
    p.add_argument("--lr", type=number(float, 0, low_open=True), default=lr, help="Adam step")
    p.add_argument("--seed", type=number(int, 0), default=0)


def main(argv: list[str] | None = None) -> int:
    from shared.cli import number

    p = argparse.ArgumentParser(prog="python -m shared.image.edip", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pretrain", help="supervised pretraining on random ellipse phantoms")
    a.add_argument("--out", type=Path, default=Path("checkpoints/edip_ct128.pt"))
    _ct_options(a, angles=30, lr=3e-3, angles_help="projection angles")
    a.add_argument("--steps", type=number(int, 1), default=800)
    a.add_argument("--batch", type=number(int, 1), default=4)
    a.add_argument("--force", action="store_true", help="overwrite an existing checkpoint")
    a.add_argument("--quiet", action="store_true")
    a.set_defaults(func=_cmd_pretrain)
    b = sub.add_parser("finetune", help="unsupervised fit to a simulated sinogram (DIP, or EDIP with --checkpoint)")
    b.add_argument("--checkpoint", type=Path, help="pretrained weights (omit: plain DIP from random weights)")
    b.add_argument("--phantom", choices=("shepp", "ellipses"), default="shepp")
    b.add_argument("--input", choices=("fbp", "noise"), default="fbp")
    _ct_options(b, angles=0, lr=1e-3, angles_help="projection angles (0: the checkpoint's)")
    b.add_argument("--iterations", type=number(int, 1), default=1000)
    b.add_argument("--out", type=Path, default=Path("out/edip"))
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=_cmd_finetune)
    from shared.cli import run_parsed

    return run_parsed(p, argv)


if __name__ == "__main__":
    sys.exit(main())
