"""Classical restoration baselines: what a user without a prior network would run.

Convention (as in the rest of :mod:`shared.image`): every function takes and returns a
torch tensor ``(1, C, H, W)`` (``C`` = 1 grey or 3 RGB), float, values in [0, 1]; the
output is float32, clipped to [0, 1], on the CPU.  Noise levels ``sigma`` are standard
deviations on that [0, 1] scale (``25 / 255`` for "sigma 25").  Each wrapper converts to
the ``(H, W)`` / ``(H, W, 3)`` float64 arrays of the library it calls and back.

=============  ==========================================================================
task           baseline (library, settings)
=============  ==========================================================================
denoise        :func:`cbm3d_denoise` -- BM3D (PyPI ``bm3d``; ``bm3d_rgb`` = CBM3D in the
               opponent colour space for RGB, ``bm3d`` for grey), the known ``sigma``,
               the package's default ("np") profile, both stages.  Optional: install
               with ``pip install -e '.[benchmark]'``.
denoise        :func:`nlm_denoise` -- scikit-image ``denoise_nl_means``, fast mode, the
               known ``sigma`` passed in (noise-variance-corrected patch weights) and
               ``h = 0.8 sigma``, the value its documentation recommends for that case
               (fast mode with ``sigma`` given); 5 x 5 patches searched within 6 pixels
               (13 x 13 window), the settings of scikit-image's NLM gallery example.
superres       :func:`upsample` -- PIL ``Image.resize`` of each channel as a 32-bit float
               image (mode "F", so nothing is quantised to 8 bits): ``"bicubic"`` is
               Keys' cubic convolution with ``a = -0.5`` (support 4 pixels),
               ``"lanczos"`` the Lanczos-3 windowed sinc (support 6 pixels).
inpaint        :func:`biharmonic_inpaint` -- scikit-image ``inpaint_biharmonic`` (each
               missing region filled by the solution of the biharmonic equation with the
               known pixels as boundary values; ``channel_axis`` for RGB).
deblur         :func:`richardson_lucy_deblur` -- scikit-image ``richardson_lucy``,
               ``iterations`` multiplicative updates with the known kernel;
               :func:`wiener_deblur` -- scikit-image ``wiener`` (Laplacian regulariser,
               weight ``balance``); :func:`unsupervised_wiener_deblur` -- scikit-image
               ``unsupervised_wiener`` (the balance sampled by a Gibbs sampler, no
               parameter).  The image is reflection-padded by ``pad`` pixels (default:
               twice the kernel size) before and cropped after: the library functions
               assume zero (RL) or periodic (Wiener) boundaries, and the mismatch with
               a real image's edges rings into the result.
=============  ==========================================================================

The benchmark that tunes the free parameters (RL iterations, Wiener balance) on a grid is
``benchmarks/image_restoration.py``; the super-resolution metric is in
:mod:`shared.image.sr_metrics`.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "cbm3d_denoise",
    "nlm_denoise",
    "upsample",
    "bicubic_upsample",
    "lanczos_upsample",
    "biharmonic_inpaint",
    "richardson_lucy_deblur",
    "wiener_deblur",
    "unsupervised_wiener_deblur",
    "tikhonov_deblur",
    "tikhonov_upsample",
    "NLM_H_FACTOR",
    "NLM_PATCH_SIZE",
    "NLM_PATCH_DISTANCE",
    "UPSAMPLERS",
    "BENCHMARK_EXTRA",
]

#: the optional extra that brings ``bm3d``
BENCHMARK_EXTRA = "pip install -e '.[benchmark]'"
#: ``h = NLM_H_FACTOR * sigma`` (scikit-image's advice for fast mode with sigma given)
NLM_H_FACTOR = 0.8
NLM_PATCH_SIZE = 5
NLM_PATCH_DISTANCE = 6
#: upsampling kernels of :func:`upsample` -> PIL resampling filter names
UPSAMPLERS = {"bicubic": "BICUBIC", "lanczos": "LANCZOS"}


# ------------------------------------------------------------------ conversions
def _check_image(x: Any, name: str) -> Tensor:
    """``x`` as a finite ``(1, C, H, W)`` tensor with ``C`` in (1, 3); a clear error otherwise."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch tensor (1, C, H, W) in [0, 1], got {type(x).__name__}")
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have shape (1, C, H, W) with C = 1 or 3, got {tuple(x.shape)}")
    if x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"{name} is {x.shape[-1]}x{x.shape[-2]} pixels; need at least 2x2")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return x


def _to_numpy(x: Tensor) -> np.ndarray:
    """``(1, C, H, W)`` -> ``(H, W)`` (grey) or ``(H, W, 3)`` float64 (no clipping)."""
    a = x.detach().cpu().to(torch.float64)[0].numpy().transpose(1, 2, 0)
    return np.ascontiguousarray(a[:, :, 0] if a.shape[2] == 1 else a)


def _to_tensor(a: np.ndarray) -> Tensor:
    """``(H, W)`` or ``(H, W, C)`` array -> ``(1, C, H, W)`` float32 tensor clipped to [0, 1]."""
    a = np.clip(np.asarray(a, dtype=np.float32), 0.0, 1.0)
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]


def _per_channel(a: np.ndarray, f: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply a 2-D function to a grey ``(H, W)`` or each channel of an ``(H, W, C)`` array."""
    if a.ndim == 2:
        return f(a)
    return np.stack([f(a[:, :, c]) for c in range(a.shape[2])], axis=-1)


def _check_sigma(sigma: float) -> float:
    s = float(sigma)
    if not np.isfinite(s) or s <= 0:
        raise ValueError(f"sigma is the noise std on the [0, 1] scale and must be positive, got {sigma}")
    if s > 1:
        raise ValueError(f"sigma = {s} is above 1: give it on the [0, 1] scale (e.g. 25 / 255), not 0-255")
    return s


# ------------------------------------------------------------------ denoising
def _import_bm3d():
    """``bm3d`` imported on first use (an optional extra); a message naming the extra if absent."""
    try:
        import bm3d
    except ImportError:
        raise ImportError(f"the CBM3D baseline needs the 'bm3d' package: {BENCHMARK_EXTRA} "
                          "(or pip install bm3d)") from None
    return bm3d


def cbm3d_denoise(noisy: Tensor, sigma: float) -> Tensor:
    """BM3D / CBM3D estimate of the clean image from ``noisy`` with white Gaussian noise of std ``sigma``.

    RGB images go through ``bm3d.bm3d_rgb`` (CBM3D: grouping on the luminance of the
    opponent colour transform, both hard-thresholding and Wiener stages), grey ones through
    ``bm3d.bm3d``; ``sigma`` on the [0, 1] scale; default ("np") profile.  Returns
    ``(1, C, H, W)`` in [0, 1].
    """
    bm3d = _import_bm3d()
    x = _check_image(noisy, "noisy image")
    s = _check_sigma(sigma)
    a = _to_numpy(x)
    out = bm3d.bm3d_rgb(a, s) if a.ndim == 3 else bm3d.bm3d(a, s)
    return _to_tensor(out)


def nlm_denoise(noisy: Tensor, sigma: float, h_factor: float = NLM_H_FACTOR, patch_size: int = NLM_PATCH_SIZE,
                patch_distance: int = NLM_PATCH_DISTANCE) -> Tensor:
    """Non-local means (scikit-image ``denoise_nl_means``, fast mode) with the known noise std ``sigma``.

    Cut-off ``h = h_factor * sigma`` (default 0.8, scikit-image's advice for fast mode
    when ``sigma`` is given), ``patch_size x patch_size`` patches searched within
    ``patch_distance`` pixels; RGB patch distances summed over channels.  Returns
    ``(1, C, H, W)`` in [0, 1].
    """
    from skimage.restoration import denoise_nl_means

    x = _check_image(noisy, "noisy image")
    s = _check_sigma(sigma)
    if h_factor <= 0:
        raise ValueError(f"h_factor must be positive, got {h_factor}")
    a = _to_numpy(x)
    out = denoise_nl_means(a, patch_size=patch_size, patch_distance=patch_distance, h=h_factor * s, sigma=s,
                           fast_mode=True, preserve_range=True, channel_axis=-1 if a.ndim == 3 else None)
    return _to_tensor(out)


# ------------------------------------------------------------------ super-resolution
def upsample(low: Tensor, scale: int, method: str = "bicubic") -> Tensor:
    """``low`` ``(1, C, h, w)`` enlarged to ``(1, C, scale h, scale w)`` by PIL's ``Image.resize``.

    ``method``: ``"bicubic"`` (Keys' cubic convolution, ``a = -0.5``) or ``"lanczos"``
    (Lanczos-3); each channel is resized as a 32-bit float image, pixel centres aligned
    (PIL's convention, as MATLAB's ``imresize``).
    """
    from PIL import Image

    x = _check_image(low, "low-resolution image")
    if method not in UPSAMPLERS:
        raise ValueError(f"unknown upsampling method {method!r}; choose from {', '.join(UPSAMPLERS)}")
    scale = _check_scale(scale)
    resample = getattr(Image.Resampling, UPSAMPLERS[method])
    h, w = x.shape[-2:]

    def one(channel: np.ndarray) -> np.ndarray:
        img = Image.fromarray(channel.astype(np.float32))  # float32 -> mode "F"
        return np.asarray(img.resize((w * scale, h * scale), resample=resample), dtype=np.float64)

    return _to_tensor(_per_channel(_to_numpy(x), one))


def _check_scale(scale: float) -> int:
    """The up-sampling factor as an int; refuses anything but a positive integer."""
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    return int(scale)


def bicubic_upsample(low: Tensor, scale: int) -> Tensor:
    """:func:`upsample` with ``method="bicubic"``."""
    return upsample(low, scale, "bicubic")


def lanczos_upsample(low: Tensor, scale: int) -> Tensor:
    """:func:`upsample` with ``method="lanczos"``."""
    return upsample(low, scale, "lanczos")


# ------------------------------------------------------------------ inpainting
def biharmonic_inpaint(masked: Tensor, mask: Tensor) -> Tensor:
    """Fill the unknown pixels of ``masked`` by biharmonic inpainting (scikit-image ``inpaint_biharmonic``).

    ``mask``: ``(1, 1, H, W)`` (or ``(H, W)``), 1 = known pixel, 0 = missing -- the
    convention of :class:`shared.operators.PixelMask` (scikit-image's is the opposite; the
    wrapper inverts it).  Known pixels are returned unchanged (up to clipping).
    """
    from skimage.restoration import inpaint_biharmonic

    x = _check_image(masked, "masked image")
    m = np.asarray(mask.detach().cpu() if isinstance(mask, Tensor) else mask, dtype=np.float64)
    if m.shape not in ((1, 1, *x.shape[-2:]), tuple(x.shape[-2:])):
        raise ValueError(f"mask must be (1, 1, H, W) or (H, W) with the image's H x W = {tuple(x.shape[-2:])}, got "
                         f"{m.shape}")
    missing = m.reshape(x.shape[-2:]) < 0.5
    if missing.all():
        raise ValueError("the mask marks no pixel as known: nothing to inpaint from")
    a = _to_numpy(x)
    if not missing.any():
        return _to_tensor(a)
    out = inpaint_biharmonic(a, missing, channel_axis=-1 if a.ndim == 3 else None)
    return _to_tensor(out)


# ------------------------------------------------------------------ deblurring
def _check_psf(psf: Any) -> np.ndarray:
    k = np.asarray(psf.detach().cpu() if isinstance(psf, Tensor) else psf, dtype=np.float64)
    if k.ndim != 2 or k.size == 0:
        raise ValueError(f"the blur kernel must be a 2-D array, got shape {k.shape}")
    if not np.isfinite(k).all() or (k < 0).any() or k.sum() <= 0:
        raise ValueError("the blur kernel must be finite, non-negative and sum to a positive value")
    return k / k.sum()


def _padded(blurred: Tensor, psf: Any, pad: int | None, f: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Tensor:
    """Run the 2-D deconvolution ``f(channel, psf)`` on each channel of the reflection-padded image, crop back."""
    x = _check_image(blurred, "blurred image")
    k = _check_psf(psf)
    p = 2 * max(k.shape) if pad is None else int(pad)
    if p < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    a = _to_numpy(x)
    h, w = a.shape[:2]
    # numpy's 'reflect' needs pad < size; 'symmetric' copies would be as good, this keeps edges unrepeated.
    p = min(p, h - 1, w - 1)

    def one(channel: np.ndarray) -> np.ndarray:
        big = np.pad(channel, p, mode="reflect") if p else channel
        return f(big, k)[p : p + h, p : p + w]

    return _to_tensor(_per_channel(a, one))


def richardson_lucy_deblur(blurred: Tensor, psf: Any, iterations: int = 30, pad: int | None = None) -> Tensor:
    """Richardson-Lucy deconvolution (scikit-image ``richardson_lucy``) with the known kernel ``psf``.

    ``iterations`` multiplicative updates ``x <- x * (k~ * (y / (k * x)))`` from a flat
    start; the input is clipped to [0, 1] first (RL needs non-negative data).  ``psf``: a
    2-D array (normalised to sum 1), the kernel of the convolution that blurred the image.
    """
    from skimage.restoration import richardson_lucy

    if int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations}")
    x = _check_image(blurred, "blurred image").clamp(0, 1)
    return _padded(x, psf, pad, lambda c, k: richardson_lucy(c, k, num_iter=int(iterations), clip=False))


def wiener_deblur(blurred: Tensor, psf: Any, balance: float = 0.01, pad: int | None = None) -> Tensor:
    """Wiener-Hunt deconvolution (scikit-image ``wiener``) with the known kernel ``psf``.

    ``x = F^-1( conj(K) Y / (|K|^2 + balance |L|^2) )`` with ``L`` the discrete Laplacian
    (scikit-image's default regulariser) and ``balance`` its weight (larger: smoother).
    """
    from skimage.restoration import wiener

    if not balance > 0:
        raise ValueError(f"balance must be positive, got {balance}")
    return _padded(blurred, psf, pad, lambda c, k: wiener(c, k, float(balance), clip=False))


def unsupervised_wiener_deblur(blurred: Tensor, psf: Any, pad: int | None = None, seed: int = 0) -> Tensor:
    """Unsupervised Wiener-Hunt deconvolution (scikit-image ``unsupervised_wiener``): the noise and image
    precisions (hence the balance) are sampled by a Gibbs sampler; returns the posterior mean.
    ``seed`` seeds the sampler (one generator per channel, seeded ``seed``)."""
    from skimage.restoration import unsupervised_wiener

    return _padded(blurred, psf, pad, lambda c, k: unsupervised_wiener(c, k, clip=False, rng=seed)[0])


def tikhonov_deblur(blurred: Tensor, psf: Any, lam: float | None = None) -> Tensor:
    """Tikhonov deconvolution with the exact reflect-boundary blur, ``(A^*A + lam L^*L)^{-1} A^* y``
    (``L`` the Laplacian; :mod:`shared.operators.tikhonov`), solved by conjugate gradients.

    ``lam=None`` chooses the weight by generalised cross-validation (no truth, no noise level).
    The same estimator as the Wiener-Hunt filter without its periodic boundary, which a long
    kernel (motion blur) spreads over the whole image.
    """
    from shared.operators import Blur
    from shared.operators.tikhonov import tikhonov_gcv, tikhonov_solve

    x = _check_image(blurred, "blurred image")
    op = Blur(torch.as_tensor(_check_psf(psf), dtype=torch.float32), padding="reflect")
    if lam is None:
        return tikhonov_gcv(op, x).x
    return tikhonov_solve(op, x.float(), float(lam), iterations=200, tol=1e-5)


def tikhonov_upsample(low: Tensor, scale: int, kernel: str = "bicubic") -> Tensor:
    """Super-resolution by Tikhonov regularisation with the known down-sampler ``A``
    (:class:`shared.operators.Downsample` with ``kernel``): ``(A^*A + lam L^*L)^{-1} A^* y``,
    ``L`` the Laplacian, ``lam`` by generalised cross-validation (:mod:`shared.operators.tikhonov`).

    The classical estimate that uses what the DIP's data term uses (the down-sampling
    model), where bicubic and Lanczos interpolation do not.
    """
    from shared.operators import Downsample
    from shared.operators.tikhonov import tikhonov_gcv

    x = _check_image(low, "low-resolution image")
    return tikhonov_gcv(Downsample(_check_scale(scale), kernel=kernel), x.float()).x
