"""A generator trained here (never downloaded): the decoder of a variational auto-encoder.

CSGM and IAGAN (:mod:`shared.image.generative`) need a generator ``G_theta : z -> x``
that has learned an image family.  It is trained as the decoder of a VAE on random images
of one family (:func:`shared.image.phantoms.family_images`: ellipse or block phantoms,
64 x 64), minimising the negative evidence lower bound per image::

    L(theta, phi) = E_x [ ||x - G_theta(mu + s eps)||^2 / (2 tau^2)
                          + KL( N(mu, diag s^2) || N(0, I) ) ] / n,
    (mu, log s^2) = E_phi(x),   eps ~ N(0, I),   n = pixels per image,

with a fresh batch of images and of ``eps`` at every step.  Why a VAE and not a GAN: an
adversarial game needs two optimisers taking turns on opposite objectives, which the one
engine (:func:`shared.fit.fit`, a single minimisation) does not run, and a small DCGAN on
two CPU cores for ~5 minutes tends to collapse to a few modes; the ELBO is a single
objective that trains stably and gives a decoder whose latent prior is ``N(0, I)``, which
is what a latent search needs.  Its samples are smoother than a GAN's: the representation
error that IAGAN removes is larger, not hidden.

Like EDIP pretraining, the training is an engine fit of a module that draws its own batch
(:class:`FamilyBatches`) under a data term closed over the batch (``Objective(y=None)``).

Command line::

    python -m shared.image.generator train --family ellipses --out checkpoints/generator_ellipses64.pt
    python -m shared.image.generator info checkpoints/generator_ellipses64.pt
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from shared.fit import FitResult, Objective, Optimiser, fit
from shared.image.checkpoints import read_tagged, save_tagged
from shared.image.phantoms import FAMILIES, family_images
from shared.networks.latent_generator import GENERATOR_CHANNELS, ConvEncoder, LatentGenerator
from shared.result import to_json

__all__ = ["FamilyBatches", "train_generator", "save_generator", "load_generator", "validate_generator",
           "CHECKPOINT_FORMAT", "DEFAULT_CHECKPOINTS"]

CHECKPOINT_FORMAT = "untrained-generator-1"
#: where ``make generators`` puts the generator of each family
DEFAULT_CHECKPOINTS = {family: Path(f"checkpoints/generator_{family}64.pt") for family in FAMILIES}


class FamilyBatches(nn.Module):
    """VAE training as an engine fit: each call draws ``batch`` images of ``family``.

    ``forward()`` draws the images, encodes them, samples ``z = mu + s eps`` and returns
    ``G(z)``; :meth:`loss` is the negative ELBO per pixel (module docstring) with the
    batch stored by the forward pass.

    ``channels_last`` (default) puts both networks' weights and every batch in the
    channels-last memory layout: the same arithmetic, and on CPU a training step costs
    about 0.14 s instead of 0.21 s (batch 32, one thread), since oneDNN's convolutions
    take that layout natively and the up-sampling no longer copies between layouts
    (profiled: 16 % of the step was ``aten::copy_``).
    """

    def __init__(self, generator: LatentGenerator, encoder: ConvEncoder, family: str, batch: int = 32,
                 pixel_std: float = 0.05, seed: int = 0, channels_last: bool = True) -> None:
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"unknown image family {family!r}; choose from {', '.join(FAMILIES)}")
        self.generator, self.encoder = generator, encoder
        self.family, self.batch, self.pixel_std = family, int(batch), float(pixel_std)
        self.draws = torch.Generator().manual_seed(seed)
        self.target: Tensor | None = None
        self.kl: Tensor | None = None
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.layout)

    def forward(self, *unused: Any) -> Tensor:
        x = family_images(self.family, self.batch, self.generator.size, generator=self.draws)
        x = x.contiguous(memory_format=self.layout)
        mu, log_var = self.encoder(x)
        eps = torch.randn(mu.shape, generator=self.draws)
        self.target = x
        self.kl = 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var).sum(dim=1)   # (B,)
        return self.generator(mu + (0.5 * log_var).exp() * eps)

    def loss(self, pred: Tensor) -> Tensor:
        n = pred[0].numel()
        rec = (pred - self.target).pow(2).flatten(1).sum(dim=1) / (2 * self.pixel_std**2)
        return (rec + self.kl).mean() / n


def train_generator(family: str = "ellipses", *, steps: int = 5000, batch: int = 32, lr: float = 1e-3,
                    latent_dim: int = 64, size: int = 64, channels: tuple[int, ...] = GENERATOR_CHANNELS,
                    pixel_std: float = 0.05, seed: int = 0,
                    progress: bool | str = True) -> tuple[LatentGenerator, ConvEncoder, FitResult]:
    """Train a VAE on ``family`` and return ``(generator, encoder, fit result)``.

    Adam with a cosine decay of the step over ``steps`` steps of ``batch`` fresh images.
    """
    torch.manual_seed(seed)
    gen = LatentGenerator(latent_dim, size, channels)
    enc = ConvEncoder(latent_dim, size, channels)
    batches = FamilyBatches(gen, enc, family, batch=batch, pixel_std=pixel_std, seed=seed + 1)
    res = fit(batches, None, Objective(y=None, data=batches.loss),
              optimiser=Optimiser(lr=lr, iterations=steps, schedule="cosine"), seed=seed,
              progress=f"VAE on {family}" if progress is True else progress)
    for net in (gen, enc):  # back to the default layout for the latent searches that use them
        net.to(memory_format=torch.contiguous_format)
    return gen, enc, res


@torch.no_grad()
def validate_generator(gen: LatentGenerator, enc: ConvEncoder, family: str, n: int = 64,
                       seed: int = 10_000) -> dict[str, float]:
    """Quality on ``n`` fresh images of ``family`` (a seed range never used in training):
    PSNR of the auto-encoded image ``G(mu(x))`` (how well the family is represented) and
    the mean squared latent norm ``|mu|^2 / d`` (about 1 when the latents fill the prior)."""
    from shared.metrics import psnr

    x = family_images(family, n, gen.size, generator=torch.Generator().manual_seed(seed))
    mu, _ = enc(x)
    out = gen(mu)
    return {"psnr_autoencoded": sum(psnr(out[i], x[i]) for i in range(n)) / n,
            "latent_norm2_per_dim": float(mu.pow(2).mean())}


def save_generator(gen: LatentGenerator, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Save the generator's configuration, weights and ``meta`` (family, training, validation)."""
    return save_tagged(path, CHECKPOINT_FORMAT, gen.config, gen.state_dict(), meta)


def load_generator(path: str | Path) -> tuple[LatentGenerator, dict[str, Any]]:
    """Rebuild the generator saved by :func:`save_generator`; ``(generator, meta)``.

    Refuses, with a message naming the file and what is wrong: a missing file, a file
    torch cannot read, a checkpoint of another kind, and weights that do not fit the
    stored configuration.
    """
    ckpt = read_tagged(path, CHECKPOINT_FORMAT, "generator",
                       f"make generators, or python -m shared.image.generator train --out {path}")
    try:
        gen = LatentGenerator(**ckpt["config"])
        gen.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise ValueError(f"{path}: the weights do not match the stored generator configuration: {exc}") from None
    gen.eval()
    for p in gen.parameters():
        p.requires_grad_(False)
    return gen, dict(ckpt.get("meta", {}))


# ----------------------------------------------------------------------------- CLI
def _cmd_train(args: argparse.Namespace) -> int:
    if args.out is None:
        args.out = DEFAULT_CHECKPOINTS[args.family]
    if args.out.exists() and not args.force:
        raise ValueError(f"{args.out} exists; pass --force to overwrite it")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t = time.perf_counter()
    gen, enc, res = train_generator(args.family, steps=args.steps, batch=args.batch, lr=args.lr,
                                    latent_dim=args.latent_dim, seed=args.seed, progress=not args.quiet)
    wall = time.perf_counter() - t
    meta = {"family": args.family, "model": "VAE decoder", "size": gen.size, "latent_dim": gen.latent_dim,
            "steps": args.steps, "batch": args.batch, "lr": args.lr, "seed": args.seed,
            "wall_time_s": wall, "threads": torch.get_num_threads(), "final_loss": res.history["loss"][-1],
            **validate_generator(gen, enc, args.family)}
    save_generator(gen, args.out, meta)
    print(json.dumps(to_json(meta), indent=1))
    print(f"wrote {args.out}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    gen, meta = load_generator(args.checkpoint)
    print(json.dumps(to_json({"config": gen.config, **meta}), indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    from shared.cli import number, run_parsed

    p = argparse.ArgumentParser(prog="python -m shared.image.generator", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("train", help="train the VAE generator of one image family "
                       "(10-11 minutes with one thread while the other family trains beside it: make -j2 generators)")
    a.add_argument("--family", choices=FAMILIES, default="ellipses")
    a.add_argument("--out", type=Path, help="checkpoint file (default: checkpoints/generator_<family>64.pt)")
    a.add_argument("--steps", type=number(int, 1), default=5000)
    a.add_argument("--batch", type=number(int, 1), default=32)
    a.add_argument("--lr", type=number(float, 0, low_open=True), default=1e-3)
    a.add_argument("--latent-dim", type=number(int, 1), default=64)
    a.add_argument("--seed", type=number(int, 0), default=0)
    a.add_argument("--threads", type=number(int, 1), default=None,
                   help="torch threads (default: torch's; 1 is faster on a machine busy with other work)")
    a.add_argument("--force", action="store_true", help="overwrite an existing checkpoint")
    a.add_argument("--quiet", action="store_true")
    a.set_defaults(func=_cmd_train)
    b = sub.add_parser("info", help="print a checkpoint's configuration, training and validation record")
    b.add_argument("checkpoint", type=Path)
    b.set_defaults(func=_cmd_info)
    return run_parsed(p, argv)


if __name__ == "__main__":
    sys.exit(main())
