"""The deep decoder (Heckel & Hand, ICLR 2019): an under-parameterised image generator.

A fixed random tensor ``B_0`` with ``k`` channels at low resolution ``(H/2^(d-1), W/2^(d-1))``
is mapped through ``d`` layers::

    B_{i+1} = cn( ReLU( U_i ( B_i C_i ) ) ),   i = 0 .. d-1
    x       = sigmoid( B_d C_d )

``C_i`` are 1x1 convolutions (``k x k`` channel mixing, no bias), ``U_i`` bilinear
upsampling by 2 (none after the last layer, so ``d-1`` upsamplings), ``cn`` channel
normalisation: each channel is normalised to zero mean and unit variance over its pixels
and then scaled and shifted by two learned numbers (batch normalisation with a batch of
one, as in the authors' code), and ``C_d`` a 1x1 convolution to ``out_ch`` channels.

There are no spatial convolutions: only 1x1 mixing and fixed upsampling, so the number of
parameters is

    N = d (k^2 + 2k) + out_ch k

(``d k^2`` mixing weights, ``2 k d`` normalisation scales/shifts, ``out_ch k`` output
weights).  For ``k = 64, d = 6`` that is 25,536, against ``3 * 256^2 = 196,608`` pixel
values of a 256x256 colour image: the decoder is *under*-parameterised (N << number of
pixels) and therefore cannot fit arbitrary images, in particular not noise; this is the
regularisation, and why it needs no early stopping in denoising.
"""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["DeepDecoder", "deep_decoder_parameter_count"]


def deep_decoder_parameter_count(k: int, layers: int, out_ch: int = 3) -> int:
    """``N = d (k^2 + 2k) + out_ch k`` (see the module docstring)."""
    return layers * (k * k + 2 * k) + out_ch * k


class DeepDecoder(nn.Module):
    """Deep decoder with ``k`` channels and ``layers = d`` layers (module docstring).

    Input: the fixed tensor ``(N, k, H / 2^(d-1), W / 2^(d-1))`` (see :meth:`input_shape`;
    the authors use ``U(0, 1) / 10`` noise, :func:`shared.networks.get_noise_input`).
    Output: ``(N, out_ch, H, W)``, in ``(0, 1)`` with the sigmoid.
    """

    def __init__(self, k: int = 64, layers: int = 6, out_ch: int = 3, upsample: str = "bilinear",
                 sigmoid: bool = True) -> None:
        super().__init__()
        if k < 1 or layers < 1 or out_ch < 1:
            raise ValueError(f"DeepDecoder needs k, layers, out_ch >= 1, got {k}, {layers}, {out_ch}")
        if upsample not in ("bilinear", "nearest"):
            raise ValueError(f"upsample must be 'bilinear' or 'nearest', got {upsample!r}")
        self.k, self.layers, self.out_ch = k, layers, out_ch
        mods: list[nn.Module] = []
        for i in range(layers):
            mods.append(nn.Conv2d(k, k, 1, bias=False))
            if i < layers - 1:
                mods.append(nn.Upsample(scale_factor=2, mode=upsample,
                                        align_corners=False if upsample == "bilinear" else None))
            mods.append(nn.ReLU())
            mods.append(nn.BatchNorm2d(k))
        mods.append(nn.Conv2d(k, out_ch, 1, bias=False))
        if sigmoid:
            mods.append(nn.Sigmoid())
        self.net = nn.Sequential(*mods)

    @property
    def upsampling(self) -> int:
        """Total upsampling factor ``2^(d-1)`` from input to output."""
        return 2 ** (self.layers - 1)

    multiple = upsampling  # output sizes are multiples of this (used by required_multiple)

    def input_shape(self, H: int, W: int) -> tuple[int, int, int, int]:
        """Shape ``(1, k, H/2^(d-1), W/2^(d-1))`` of the input that gives an ``H x W`` output."""
        f = self.upsampling
        if H % f or W % f:
            raise ValueError(f"a deep decoder with {self.layers} layers makes sizes that are multiples "
                             f"of {f}; {H}x{W} is not (pad or crop the image)")
        return (1, self.k, H // f, W // f)

    def forward(self, z: Tensor) -> Tensor:
        if z.ndim != 4 or z.shape[1] != self.k:
            raise ValueError(f"DeepDecoder expects input (N, {self.k}, h, w), got {tuple(z.shape)}")
        return self.net(z)

    def parameter_count(self) -> int:
        return deep_decoder_parameter_count(self.k, self.layers, self.out_ch)
