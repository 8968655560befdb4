"""Image restoration tasks as (forward operator, measurements, prior network) for the engine.

Every task solves the deep-image-prior problem::

    theta* = argmin_theta  mean( (A f_theta(z) - y)^2 ),     x* = f_theta*(z)

with ``x`` an image ``(1, C, H, W)`` in [0, 1], ``A`` a linear operator of
:mod:`shared.operators` and ``y`` the measurements; the fit runs through
:func:`shared.fit.fit`, stopped without ground truth by ES-WMV (default) or a held-out
fraction of the measurements.

=========  ==============================  =========================================
task       operator ``A``                  measurement ``y``
=========  ==============================  =========================================
denoise    identity                        ``x + n``, ``n ~ N(0, sigma^2)``
inpaint    pixel mask ``M``                ``M x`` (mask image or random fraction)
superres   anti-aliased ``s``-fold         low-resolution image, ``s`` = 4 or 8
           down-sampling
deblur     convolution with a Gaussian     blurred (noisy) image
           kernel
cs         dense Gaussian matrix           ``m = ratio * n`` random projections of a
           ``m x n``, ``m << n``           grey image (small: the matrix is dense)
ct         parallel-beam Radon transform   sinogram at few angles (sparse view)
=========  ==============================  =========================================

A task is built in two steps so that each stays small and other front ends can reuse
them: a ``*_problem`` function turns an image into a :class:`Problem` (what is measured,
how -- a :class:`shared.physics.Physics` -- and what to compare against), and
:class:`shared.image.dip.DeepImagePrior` fits a prior network to it.
``simulate=True`` treats the input as the clean image and synthesises the measurement
(the input is then the reference); otherwise the input *is* the measurement (denoise,
inpaint, superres, deblur); cs and ct are always simulated from an image.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from shared.image.io import Geometry, ImageInputError, fit_to_multiple, resize, to_grey
from shared.physics import Physics

__all__ = [
    "Problem",
    "NetSpec",
    "NETS",
    "make_network",
    "denoise_problem",
    "inpaint_problem",
    "superres_problem",
    "deblur_problem",
    "cs_problem",
    "ct_problem",
    "SURE_DEFAULTS",
    "TIKHONOV_DEFAULTS",
    "FILL_DEFAULTS",
    "TASK_DEFAULTS",
    "baseline_key",
]


# ---------------------------------------------------------------------------- networks
@dataclass(frozen=True)
class NetSpec:
    """A named prior network configuration (see :func:`make_network`)."""

    name: str
    description: str
    multiple: int  # H and W of the output must be multiples of this
    lr: float
    input_noise: float
    average: float | None


LIGHT_CHANNELS = (16, 32, 64, 64)

NETS: dict[str, NetSpec] = {
    # The light default: few channels, 4 scales -- a few minutes at 256x256 on 2 cores.
    "skip": NetSpec("skip", "light skip U-Net (default)", 16, 0.01, 1 / 30, 0.99),
    "hourglass": NetSpec("hourglass", "light hourglass (encoder-decoder without skips)", 16, 0.01, 1 / 30, 0.99),
    "decoder": NetSpec("decoder", "deep decoder, k=64 channels, 6 layers", 32, 0.01, 0.0, 0.99),
    "official": NetSpec("official", "official DIP skip net: 5 scales x 128 channels, 4 skip channels", 32, 0.01,
                        1 / 30, 0.99),
}


def make_network(name: str, out_channels: int, size: tuple[int, int], seed: int = 0,
                 in_channels: int | None = None, members: int = 1) -> tuple[torch.nn.Module, Tensor | None]:
    """Build the prior ``f_theta`` and its fixed input ``z`` for an output of ``size`` = (H, W).

    Parameters are initialised under ``seed``.  ``in_channels``: a network that takes an
    image of that many channels instead of the DIP's noise (the SURE denoiser, whose input
    is the noisy image); ``z`` is then None (the caller's image).  ``members`` = K > 1: an
    ensemble of the networks (and inputs) of seeds ``seed .. seed + K - 1``, stacked into one
    module of grouped convolutions (:meth:`shared.networks.Hourglass.stack`) whose output
    has one row per member.
    """
    from shared import networks as N

    if members > 1:
        if name == "decoder":
            raise ValueError("an ensemble (members > 1) needs a skip, hourglass or official network, "
                             "not the deep decoder")
        parts = [make_network(name, out_channels, size, seed + k, in_channels) for k in range(members)]
        zs = [z for _, z in parts]
        return N.Hourglass.stack([net for net, _ in parts]), None if zs[0] is None else torch.cat(zs, dim=1)
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    if name not in NETS:
        raise ValueError(f"unknown network {name!r}; choose from {', '.join(NETS)}")
    spec = NETS[name]
    H, W = size
    if H % spec.multiple or W % spec.multiple:
        raise ValueError(f"{name} needs H, W multiples of {spec.multiple}, got {H}x{W}")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # parameter initialisation
    if in_channels is not None and name == "decoder":
        raise ValueError("the deep decoder takes no image input; choose skip, hourglass or official")
    c_in = 32 if in_channels is None else in_channels
    if name in ("skip", "hourglass"):
        # The official layout (stride-2 down, bilinear up, reflection padding, BN, LeakyReLU,
        # sigmoid) with 4 scales and few channels: most of the cost is at full resolution.
        net = N.Hourglass(c_in, out_channels, channels_down=LIGHT_CHANNELS, channels_up=LIGHT_CHANNELS,
                          channels_skip=(4 if name == "skip" else 0,) * len(LIGHT_CHANNELS))
    elif name == "official":
        net = N.skip_official(in_ch=c_in, out_ch=out_channels)
    if in_channels is not None:
        z = None
    elif name != "decoder":
        # The official DIP input: 32 channels of U(0, 1/10) noise.
        z = N.get_noise_input(32, H, W, kind="uniform", scale=0.1, generator=gen)
    else:
        net = N.DeepDecoder(k=64, layers=6, out_ch=out_channels)
        _, k, h, w = net.input_shape(H, W)
        z = N.get_noise_input(k, h, w, kind="uniform", scale=0.1, generator=gen)
    return net, z


# ---------------------------------------------------------------------------- problems
@dataclass
class Problem:
    """One restoration problem.

    Attributes
    ----------
    task:         task name.
    forward:      the forward model ``A``: a :class:`shared.physics.Physics` (the linear
                  operators of :mod:`shared.operators`; ``Identity`` for denoising).
    y:            measurements, shape of ``A(x)``.
    shape:        ``(1, C, H, W)`` of the unknown image (the network output).
    observation:  an image that shows the input (noisy / masked / upsampled / blurred /
                  back-projected), shape ``shape``, for figures and the baseline metric.
    reference:    the clean image at ``shape`` when known, else None.
    geometry:     how the unknown relates to the input file (padding / cropping).
    scale:        output/input size ratio (super-resolution), 1 otherwise.
    messages:     what was done to the input that the user should know.
    info:         task parameters for the JSON report.
    """

    task: str
    forward: Physics
    y: Tensor
    shape: tuple[int, int, int, int]
    observation: Tensor
    reference: Tensor | None
    geometry: Geometry
    scale: int = 1
    messages: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    baseline_name: str = "input"


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _noise(like: Tensor, std: float, seed: int) -> Tensor:
    return std * torch.randn(like.shape, generator=_generator(seed), dtype=like.dtype)


def _adjust(x: Tensor, multiple: int, mode: str, name: str, messages: list[str]) -> tuple[Tensor, Geometry]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Twice the multiple: the coarsest scale must hold more than one pixel (batch norm).
        x2, geo = fit_to_multiple(x, multiple, mode=mode, name=name, warn=False, min_size=2 * multiple)
    if geo.changed:
        messages.append(geo.message)
    return x2, geo


def _check_reference(reference: Tensor | None, like: Tensor, name: str = "reference") -> None:
    if reference is not None and tuple(reference.shape[-2:]) != tuple(like.shape[-2:]):
        h, w = like.shape[-2:]
        rh, rw = reference.shape[-2:]
        raise ImageInputError(f"the {name} image is {rw}x{rh} but the result will be {w}x{h}; they must match")


def _reference_channels(reference: Tensor | None, channels: int) -> Tensor | None:
    if reference is None:
        return None
    if reference.shape[1] == channels:
        return reference
    return to_grey(reference) if channels == 1 else reference.repeat(1, 3, 1, 1)


def denoise_problem(image: Tensor, *, multiple: int, sigma: float = 25 / 255, simulate: bool = False,
                    reference: Tensor | None = None, size_mode: str = "pad", seed: int = 0) -> Problem:
    """Denoising: ``A = I``.  ``simulate``: add N(0, sigma^2) noise to the clean ``image``."""
    from shared.operators import Identity

    messages: list[str] = []
    if simulate:
        reference = image
        image = (image + _noise(image, sigma, seed)).clamp(0, 1) if sigma > 0 else image
        messages.append(f"simulated measurement: added Gaussian noise of sigma {sigma * 255:.4g}/255")
    _check_reference(reference, image)
    reference = _reference_channels(reference, image.shape[1])
    y, geo = _adjust(image, multiple, size_mode, "input", messages)
    ref = geo.apply(reference) if reference is not None else None
    return Problem("denoise", Identity(), y, tuple(y.shape), y, ref, geo, messages=messages,
                   info={"sigma_255": sigma * 255 if simulate else None, "simulated": simulate},
                   baseline_name="noisy input")


def inpaint_problem(image: Tensor, *, multiple: int, mask: Tensor | None = None, fraction: float | None = None,
                    reference: Tensor | None = None, simulate: bool = False, size_mode: str = "pad",
                    seed: int = 0) -> Problem:
    """Inpainting: ``A x = M * x`` with ``M`` a 0/1 mask (1 = known pixel).

    ``mask`` (``(1, 1, H, W)``) or ``fraction`` (keep a random fraction of the pixels,
    the same pixels in every channel) must be given.  The pixels of ``image`` where the
    mask is 0 are never used; with ``simulate`` the input is also the reference.
    """
    if (mask is None) == (fraction is None):
        raise ValueError("inpainting needs exactly one of a mask image (--mask) or a random pixel fraction "
                         "(--fraction)")
    messages: list[str] = []
    h, w = image.shape[-2:]
    if fraction is not None:
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"--fraction is the fraction of known pixels, in (0, 1); got {fraction}")
        mask = (torch.rand((1, 1, h, w), generator=_generator(seed)) < fraction).float()
        messages.append(f"random mask: {fraction:.0%} of the pixels are known")
    elif tuple(mask.shape[-2:]) != (h, w):
        raise ImageInputError(f"mask is {mask.shape[-1]}x{mask.shape[-2]} but the image is {w}x{h}")
    if simulate:
        reference = image
    _check_reference(reference, image)
    reference = _reference_channels(reference, image.shape[1])
    from shared.operators import PixelMask

    x, geo = _adjust(image, multiple, size_mode, "input", messages)
    m = geo.apply(mask)
    if geo.mode == "pad":
        # Padded pixels are unknown: the reflection copies must not count as data.
        inner = torch.zeros_like(m)
        l, r, t, b = geo.pad
        inner[..., t : m.shape[-2] - b, l : m.shape[-1] - r] = 1
        m = m * inner
    op = PixelMask(m)
    y = op.A(x)
    ref = geo.apply(reference) if reference is not None else None
    known = float(mask.mean())
    return Problem("inpaint", op, y, tuple(x.shape), y, ref, geo, messages=messages,
                   info={"known_fraction": known, "mask": "random" if fraction is not None else "file"},
                   baseline_name="masked input")


def superres_problem(image: Tensor, *, multiple: int, scale: int = 4, simulate: bool = False,
                     reference: Tensor | None = None, size_mode: str = "pad", seed: int = 0) -> Problem:
    """Super-resolution: ``A`` = anti-aliased ``scale``-fold down-sampling.

    Without ``simulate`` the input is the low-resolution image and the result is ``scale``
    times larger; with ``simulate`` the input is the high-resolution reference.
    """
    from shared.operators import Downsample

    if scale not in (2, 4, 8):
        raise ValueError(f"--scale must be 2, 4 or 8, got {scale}")
    messages: list[str] = []
    C = image.shape[1]
    if simulate:
        # The HR image must be a multiple of both the network's multiple and the scale.
        m = math.lcm(multiple, scale)
        hr, geo = _adjust(image, m, size_mode, "input", messages)
        op = Downsample(scale)
        y = op.A(hr)
        ref = hr
        messages.append(f"simulated measurement: down-sampled by {scale} to {y.shape[-1]}x{y.shape[-2]}")
        if reference is not None:
            messages.append("--reference ignored: with --simulate the input is the reference")
        geo_out = geo
        out_scale = 1
    else:
        lr_multiple = max(1, multiple // math.gcd(multiple, scale))
        y, geo = _adjust(image, lr_multiple, size_mode, "input", messages)
        op = Downsample(scale)
        ref = None
        if reference is not None:
            H, W = image.shape[-2] * scale, image.shape[-1] * scale
            if tuple(reference.shape[-2:]) != (H, W):
                raise ImageInputError(
                    f"the reference image is {reference.shape[-1]}x{reference.shape[-2]} but the result will be "
                    f"{W}x{H} ({scale} x the input)")
            reference = _reference_channels(reference, C)
            l, r, t, b = geo.pad
            ref = torch.nn.functional.pad(reference, (l * scale, r * scale, t * scale, b * scale), mode="replicate") \
                if geo.mode == "pad" else reference
            if geo.mode == "crop":
                tt, ll = geo.crop
                ref = reference[..., tt * scale : (tt + y.shape[-2]) * scale, ll * scale : (ll + y.shape[-1]) * scale]
        geo_out = geo
        out_scale = scale
    shape = (1, C, y.shape[-2] * scale, y.shape[-1] * scale)
    upsampled = torch.nn.functional.interpolate(y, size=shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
    return Problem("superres", op, y, shape, upsampled, ref, geo_out, scale=out_scale, messages=messages,
                   info={"scale": scale, "simulated": simulate}, baseline_name="bicubic")


def deblur_problem(image: Tensor, *, multiple: int, blur_std: float = 2.0, sigma: float = 2 / 255,
                   simulate: bool = False, reference: Tensor | None = None, size_mode: str = "pad",
                   seed: int = 0) -> Problem:
    """Deblurring: ``A x = k * x`` with a Gaussian kernel ``k`` of std ``blur_std`` pixels."""
    from shared.operators import Blur, gaussian_kernel

    messages: list[str] = []
    if simulate:
        reference = image
    _check_reference(reference, image)
    reference = _reference_channels(reference, image.shape[1])
    x, geo = _adjust(image, multiple, size_mode, "input", messages)
    op = Blur(gaussian_kernel(blur_std), padding="reflect")
    ref = geo.apply(reference) if reference is not None else None
    if simulate:
        y = op.A(x)
        if sigma > 0:
            y = y + _noise(y, sigma, seed)
        messages.append(f"simulated measurement: Gaussian blur (std {blur_std} px) + noise sigma {sigma * 255:.3g}/255")
    else:
        y = x
    return Problem("deblur", op, y, tuple(x.shape), y.clamp(0, 1), ref, geo, messages=messages,
                   info={"blur_std_px": blur_std, "sigma_255": sigma * 255 if simulate else None,
                         "simulated": simulate},
                   baseline_name="blurred input")


def _simulated_unknown(image: Tensor, size: int, multiple: int, messages: list[str], what: str) -> Tensor:
    """The grey ``size x size`` image a simulated task measures (``size`` a multiple of the network's)."""
    if size % multiple or size < 2 * multiple:
        raise ValueError(f"--size must be a multiple of {multiple} and at least {2 * multiple} for this network, "
                         f"got {size}")
    return _grey_square(image, size, messages, what)


def _measure(op: Any, x: Tensor, noise: float, seed: int) -> Tensor:
    """``y = A x + n``, ``n`` Gaussian with std ``noise`` times the RMS of ``A x``."""
    y = op.A(x)
    if noise > 0:
        y = y + _noise(y, noise * float(y.pow(2).mean().sqrt()), seed + 1)
    return y


def _grey_square(image: Tensor, size: int, messages: list[str], what: str) -> Tensor:
    x = image
    if x.shape[1] == 3:
        x = to_grey(x)
        messages.append(f"{what} works on grey images: converted RGB to grey (BT.601 luma)")
    h, w = x.shape[-2:]
    if h != w:
        s = min(h, w)
        t, l = (h - s) // 2, (w - s) // 2
        x = x[..., t : t + s, l : l + s]
        messages.append(f"{what} needs a square image: cropped the central {s}x{s}")
    if x.shape[-1] != size:
        messages.append(f"{what}: resized {x.shape[-1]}x{x.shape[-1]} to {size}x{size} (--size)")
        x = resize(x, (size, size))
    return x


def cs_problem(image: Tensor, *, multiple: int, ratio: float = 0.25, size: int = 64, noise: float = 0.0,
               seed: int = 0) -> Problem:
    """Compressed sensing: ``y = A x + n`` with ``A`` an ``m x n`` Gaussian matrix, ``m = ratio n``.

    ``x`` is the grey image resized to ``size x size`` (the matrix is dense: ``m n`` floats);
    ``noise`` is the noise std relative to the RMS of ``A x``.  Always simulated.
    """
    from shared.operators import GaussianMatrix

    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"--ratio is m/n in (0, 1], got {ratio}")
    messages: list[str] = []
    x = _simulated_unknown(image, size, multiple, messages, "compressed sensing")
    n = size * size
    m = max(1, round(ratio * n))
    op = GaussianMatrix(m, n, generator=_generator(seed), in_shape=(1, size, size))
    y = _measure(op, x, noise, seed)
    observation = op.A_dagger(y).clamp(0, 1)  # minimum-norm solution A^T (A A^T)^-1 y
    geo = Geometry((size, size), (size, size))
    messages.append(f"compressed sensing: m = {m} Gaussian measurements of n = {n} pixels (ratio {m / n:.3f})")
    return Problem("cs", op, y, (1, 1, size, size), observation, x, geo, messages=messages,
                   info={"m": m, "n": n, "ratio": m / n, "noise_rel": noise}, baseline_name="min-norm A^+ y")


def ct_problem(image: Tensor, *, multiple: int, angles: int = 30, size: int = 128, noise: float = 0.01,
               seed: int = 0) -> Problem:
    """Sparse-view CT: ``y = R x + n`` with ``R`` the parallel-beam Radon transform at
    ``angles`` equispaced angles in [0, 180) degrees; ``noise`` relative to the RMS of ``R x``.
    The baseline is filtered back-projection.  Always simulated.
    """
    from shared.operators import Radon

    if angles < 1:
        raise ValueError(f"--angles must be >= 1, got {angles}")
    messages: list[str] = []
    x = _simulated_unknown(image, size, multiple, messages, "CT")
    op = Radon(angles, size)  # equispaced in [0, pi)
    y = _measure(op, x, noise, seed)
    fbp = op.fbp(y).clamp(0, 1)
    geo = Geometry((size, size), (size, size))
    messages.append(f"sparse-view CT: {angles} parallel-beam angles, noise {noise:.1%} of the sinogram RMS")
    return Problem("ct", op, y, (1, 1, size, size), fbp, x, geo, messages=messages,
                   info={"angles": angles, "noise_rel": noise}, baseline_name="FBP")


# ------------------------------------------------------------------------ reconstruction
#: the SURE denoiser (``loss="sure"``): steps, Adam step, schedule, output averaging (short:
#: the cosine decay has settled the outputs by the end).  Chosen on the
#: validation crops of ``benchmarks/image_restoration.py`` (docs/image.md, "SURE denoising").
#: ES-WMV selects with a short window and stops when the variance rises threefold: a drifting
#: SURE fit can collapse onto the noisy image from step 80-100 on (docs/image.md, "Why SURE
#: still needs a selector"); the patience (300) then never ends a 350-step fit.
SURE_DEFAULTS: dict[str, Any] = {"iterations": 350, "lr": 0.01, "schedule": "cosine", "average": 0.9,
                                 "window": 25, "patience": 300, "rise": 3.0}
#: deblurring from the Tikhonov estimate (``net_input="tikhonov"``): the same recipe, longer
#: (the network sharpens as well as denoises).  Chosen on the validation crops of
#: ``benchmarks/image_restoration.py`` (docs/image.md, "Deblurring from the Tikhonov estimate").
TIKHONOV_DEFAULTS: dict[str, Any] = {"iterations": 1000, "lr": 0.01, "schedule": "cosine", "average": 0.9}
#: inpainting from the biharmonic fill (``net_input="fill"``): the deblurring recipe
FILL_DEFAULTS: dict[str, Any] = dict(TIKHONOV_DEFAULTS)

TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    # iterations are upper bounds: ES-WMV usually stops earlier.
    "denoise": {"iterations": 1800},
    "inpaint": {"iterations": 3000},
    "superres": {"iterations": 2000},
    "deblur": {"iterations": 2000},
    "cs": {"iterations": 2000},
    "ct": {"iterations": 2000},
}


def baseline_key(name: str) -> str:
    """``name`` as a metric key: ``"noisy input" -> "noisy_input"`` (as in ``psnr_noisy_input``)."""
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
