"""Segmentation and the KTC 2023 score.

Segmentation (:func:`segment`): three-class Otsu thresholds on a 256-bin histogram of the
pixel values (the two thresholds maximise the between-class variance
``sum_k w_k (mu_k - mu)^2``); the most populous class is the background (0), values below
it are resistive (1), values above it conductive (2).  When the background is the lowest
class both others are conductive; when it is the highest both others are resistive.

Score (:func:`ktc_score`) of a segmentation ``R`` against the truth ``T``::

    score = ( SSIM(T == 2, R == 2) + SSIM(T == 1, R == 1) ) / 2

where, for binary images ``t`` and ``r`` and ``G`` the 2-D Gaussian kernel of standard
deviation 80 pixels on a 321x321 window, with ``conv`` the 'same'-size convolution
normalised by the convolution of a ones image (edge correction)::

    mu_t = conv(t),  s_t2 = conv(t^2) - mu_t^2,  s_tr = conv(t r) - mu_t mu_r  (same for r)
    SSIM = mean over pixels of (2 mu_t mu_r + c1)(2 s_tr + c2) / ((mu_t^2 + mu_r^2 + c1)(s_t2 + s_r2 + c2))

with ``c1 = 1e-4``, ``c2 = 9e-4``.  This is not scikit-image's SSIM (other window, other
constants, no edge correction there).  The convolutions are done by FFT.
"""
from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve

__all__ = ["otsu3", "segment", "ssim_ktc", "ktc_score", "KERNEL_SIGMA"]

KERNEL_SIGMA = 80
C1 = 1e-4
C2 = 9e-4


def otsu3(values: np.ndarray, bins: int = 256) -> tuple[float, float]:
    """Two Otsu thresholds ``(t1, t2)`` of a 1-D sample for three classes.

    Classes are ``v < t1``, ``t1 <= v < t2``, ``v >= t2``; thresholds are bin edges of a
    ``bins``-bin histogram over ``[min, max]`` (so each class is a run of whole bins).
    Exhaustive search of all pairs of bins (vectorised with cumulative sums).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("cannot segment an image without finite values")
    lo, hi = v.min(), v.max()
    if hi <= lo:
        return float(lo), float(hi)
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    p = counts / counts.sum()
    w = np.cumsum(p)  # w[i] = P(bin <= i)
    m = np.cumsum(p * centres)
    mt = m[-1]
    # Class 0: bins 0..i ; class 1: bins i+1..j ; class 2: bins j+1..end (i < j < bins-1).
    i = np.arange(bins)[:, None]
    j = np.arange(bins)[None, :]
    w0, m0 = w[:, None], m[:, None]
    w1 = w[None, :] - w0
    m1 = m[None, :] - m0
    w2 = 1.0 - w[None, :]
    m2 = mt - m[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = m0**2 / w0 + m1**2 / w1 + m2**2 / w2  # sum_k w_k mu_k^2 (= between + const)
    valid = (j > i) & (w0 > 0) & (w1 > 0) & (w2 > 0)
    between = np.where(valid, between, -np.inf)
    if not np.isfinite(between).any():
        # Fewer than three populated bins: put the thresholds between those there are.
        nz = np.nonzero(counts)[0]
        return float(edges[nz[0] + 1]), float(edges[nz[-1]])
    a, b = np.unravel_index(np.argmax(between), between.shape)
    return float(edges[a + 1]), float(edges[b + 1])


def segment(image: np.ndarray, mask: np.ndarray | None = None, bins: int = 256,
            min_contrast: float = 0.0) -> np.ndarray:
    """Three-class Otsu segmentation: 0 background (largest class), 1 resistive, 2 conductive.

    ``mask`` (booleans, shape of ``image``) restricts the histogram and the labels to the
    pixels inside the tank; pixels outside it and non-finite pixels are 0.  ``min_contrast``
    (units of ``image``, a contrast with water at 0): an Otsu class other than the largest
    whose median lies within it of 0 becomes background -- Otsu always splits three ways, so
    an image with one kind of object otherwise gets a second class made of water.
    """
    image = np.asarray(image, dtype=np.float64)
    use = np.isfinite(image) if mask is None else (np.asarray(mask, bool) & np.isfinite(image))
    out = np.zeros(image.shape, dtype=np.uint8)
    if not use.any():
        return out
    vals = image[use]
    t1, t2 = otsu3(vals, bins)
    cls = np.where(vals < t1, 0, np.where(vals < t2, 1, 2))
    sizes = np.bincount(cls, minlength=3)
    bg = int(np.argmax(sizes))
    labels = np.where(cls < bg, 1, np.where(cls > bg, 2, 0)).astype(np.uint8)
    for k in range(3):  # an Otsu class of near-water values joins the background
        if min_contrast > 0 and k != bg and sizes[k] and abs(np.median(vals[cls == k])) < min_contrast:
            labels[cls == k] = 0
    out[use] = labels
    return out


def _kernel(sigma: float = KERNEL_SIGMA) -> np.ndarray:
    half = int(np.ceil(2 * sigma))
    r = np.arange(-half, half + 1)
    X, Y = np.meshgrid(r, r)
    k = np.exp(-0.5 * (X**2 + Y**2) / sigma**2)
    return k / k.sum()


def ssim_ktc(truth: np.ndarray, reco: np.ndarray, sigma: float = KERNEL_SIGMA) -> float:
    """The challenge's SSIM of two images (see the module docstring)."""
    t = np.asarray(truth, dtype=np.float64)
    r = np.asarray(reco, dtype=np.float64)
    if t.shape != r.shape or t.ndim != 2:
        raise ValueError(f"SSIM needs two 2-D images of one shape, got {t.shape} and {r.shape}")
    k = _kernel(sigma)
    norm = fftconvolve(np.ones_like(t), k, mode="same")

    def conv(a: np.ndarray) -> np.ndarray:
        return fftconvolve(a, k, mode="same") / norm

    mu_t, mu_r = conv(t), conv(r)
    s_t2 = conv(t * t) - mu_t**2
    s_r2 = conv(r * r) - mu_r**2
    s_tr = conv(t * r) - mu_t * mu_r
    num = (2 * mu_t * mu_r + C1) * (2 * s_tr + C2)
    den = (mu_t**2 + mu_r**2 + C1) * (s_t2 + s_r2 + C2)
    return float(np.mean(num / den))


def ktc_score(truth: np.ndarray, reco: np.ndarray) -> float:
    """KTC score of a segmentation ``reco`` (values 0/1/2) against ``truth`` (0/1/2), in [-1, 1]."""
    truth = np.asarray(truth)
    reco = np.asarray(reco)
    if truth.shape != reco.shape:
        raise ValueError(f"truth {truth.shape} and reconstruction {reco.shape} must have one shape")
    for name, a in (("truth", truth), ("reconstruction", reco)):
        if not np.all(np.isin(a, (0, 1, 2))):
            raise ValueError(f"the {name} must be a segmentation with values 0, 1, 2")
    conductive = ssim_ktc(truth == 2, reco == 2)
    resistive = ssim_ktc(truth == 1, reco == 1)
    return 0.5 * (conductive + resistive)
