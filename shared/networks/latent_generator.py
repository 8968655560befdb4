"""A small convolutional generator ``G_theta : z -> x`` and the encoder that trains it.

The generator maps a latent vector ``z in R^d`` to a ``size x size`` image in [0, 1]::

    h_0 = reshape(W z + b) in R^{c_0 x 4 x 4},
    h_l = LeakyReLU(conv3x3(up2(h_{l-1})))      l = 1..L   (L = log2(size / 4) levels)
    x   = sigmoid(conv3x3(h_L))

with nearest-neighbour up-sampling ``up2`` (no transposed convolutions: no checkerboard
artefacts) and no normalisation layer, so a batch of latents (restarts of a latent
search) gives the images of each latent on its own.  The module splits into
:meth:`LatentGenerator.head` (``z -> h_k``, the first ``k`` levels) and
:meth:`LatentGenerator.tail` (``h_k -> x``): a latent-convolutional reconstruction
optimises the spatial tensor ``h_k`` itself through the tail.

:class:`ConvEncoder` is the mirror image (stride-2 convolutions) that outputs the mean and
log-variance of ``q(z | x)`` for training ``G`` as the decoder of a variational
auto-encoder (:mod:`shared.image.generator`).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["LatentGenerator", "ConvEncoder", "GENERATOR_CHANNELS"]

#: channels of the generator's levels 0..L for a 64 x 64 output (4 -> 8 -> 16 -> 32 -> 64)
GENERATOR_CHANNELS = (128, 64, 32, 32, 16)


def _levels(size: int) -> int:
    levels = math.log2(size / 4)
    if size < 8 or levels != int(levels):
        raise ValueError(f"generator size must be 4 * 2^L with L >= 1 (8, 16, 32, 64, ...), got {size}")
    return int(levels)


class LatentGenerator(nn.Module):
    """``G_theta(z)``: ``(B, latent_dim) -> (B, 1, size, size)`` (module docstring).

    ``channels``: the ``L + 1`` channel counts of levels ``0..L`` (``L = log2(size / 4)``).
    ``config`` holds every constructor argument (checkpoints rebuild the module from it).
    """

    def __init__(self, latent_dim: int = 64, size: int = 64, channels: tuple[int, ...] = GENERATOR_CHANNELS,
                 out_ch: int = 1) -> None:
        super().__init__()
        L = _levels(size)
        channels = tuple(int(c) for c in channels)
        if len(channels) != L + 1:
            raise ValueError(f"a {size}x{size} generator has {L + 1} levels; got {len(channels)} channel counts")
        if latent_dim < 1 or min(channels) < 1 or out_ch < 1:
            raise ValueError(f"latent_dim, channels and out_ch must be positive, "
                             f"got {latent_dim}, {channels}, {out_ch}")
        self.config: dict[str, Any] = {"latent_dim": int(latent_dim), "size": int(size), "channels": channels,
                                       "out_ch": int(out_ch)}
        self.latent_dim, self.size, self.channels = int(latent_dim), int(size), channels
        self.project = nn.Linear(latent_dim, channels[0] * 16)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1),
                          nn.LeakyReLU(0.2))
            for c_in, c_out in zip(channels[:-1], channels[1:]))
        self.out = nn.Conv2d(channels[-1], out_ch, 3, padding=1)

    @property
    def levels(self) -> int:
        """Number of up-sampling levels ``L``."""
        return len(self.blocks)

    def latent_shape(self, level: int) -> tuple[int, int, int]:
        """Shape ``(c_k, s_k, s_k)`` of the spatial latent ``h_k`` at ``level`` ``k`` (``0..L``)."""
        if not 0 <= level <= self.levels:
            raise ValueError(f"level must be in 0..{self.levels}, got {level}")
        return self.channels[level], 4 * 2**level, 4 * 2**level

    def head(self, z: Tensor, level: int) -> Tensor:
        """``h_k``: the first ``level`` levels applied to ``z`` ``(B, d)`` -> ``(B, c_k, s_k, s_k)``."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"the generator expects latents of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        h = torch.nn.functional.leaky_relu(self.project(z), 0.2).reshape(z.shape[0], self.channels[0], 4, 4)
        for block in self.blocks[:level]:
            h = block(h)
        return h

    def tail(self, h: Tensor, level: int) -> Tensor:
        """``x``: the levels after ``level`` applied to ``h_k`` -> ``(B, out_ch, size, size)`` in (0, 1)."""
        if tuple(h.shape[1:]) != self.latent_shape(level):
            raise ValueError(f"a level-{level} latent has shape (B, {', '.join(map(str, self.latent_shape(level)))}), "
                             f"got {tuple(h.shape)}")
        for block in self.blocks[level:]:
            h = block(h)
        return torch.sigmoid(self.out(h))

    def forward(self, z: Tensor) -> Tensor:
        return self.tail(self.head(z, self.levels), self.levels)


class ConvEncoder(nn.Module):
    """``q(z | x) = N(mu(x), diag(exp(log_var(x))))``: ``(B, 1, size, size) -> (mu, log_var)``, each ``(B, d)``.

    Stride-2 convolutions with the generator's channels in reverse order, down to 4 x 4,
    then one linear layer to ``2 d`` numbers.
    """

    def __init__(self, latent_dim: int = 64, size: int = 64, channels: tuple[int, ...] = GENERATOR_CHANNELS,
                 in_ch: int = 1) -> None:
        super().__init__()
        L = _levels(size)
        rev = tuple(reversed(tuple(channels)))
        if len(rev) != L + 1:
            raise ValueError(f"a {size}x{size} encoder has {L + 1} levels; got {len(rev)} channel counts")
        self.latent_dim = int(latent_dim)
        layers: list[nn.Module] = [nn.Conv2d(in_ch, rev[0], 3, padding=1), nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(rev[:-1], rev[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(rev[-1] * 16, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        stats = self.head(self.features(x).flatten(1))
        return stats[:, : self.latent_dim], stats[:, self.latent_dim:]
