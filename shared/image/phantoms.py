"""Synthetic CT phantoms: random ellipses and the Shepp-Logan head phantom.

An ellipse phantom is a sum of ``E`` filled ellipses on ``[-1, 1]^2`` (``y`` down, ``x``
right), each with centre ``c``, semi-axes ``(a, b)``, rotation ``phi`` and intensity
``rho``::

    x(p) = clip( sum_e rho_e 1[ ((R_phi (p - c))_1 / a)^2 + ((R_phi (p - c))_2 / b)^2 <= 1 ], 0, 1 )

confined to the disc of radius 0.9 (the field of view of a parallel-beam scan whose
detector spans the image diagonal).  Intensities may be negative (holes), so phantoms
have both edges and plateaus, as in the random-ellipse training sets of learned CT.
Images are ``(B, 1, H, W)`` float tensors in ``[0, 1]``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["random_ellipses", "shepp_logan", "ellipse_image"]


def ellipse_image(params: Tensor, size: int) -> Tensor:
    """Render ellipses: ``params`` ``(B, E, 6)`` = (cx, cy, a, b, phi, rho) -> ``(B, 1, size, size)``.

    Unclipped sum of ellipse indicators (centres and semi-axes in ``[-1, 1]`` units,
    ``phi`` in radians).
    """
    if params.dim() != 3 or params.shape[-1] != 6:
        raise ValueError(f"ellipse params must have shape (B, E, 6), got {tuple(params.shape)}")
    coords = (torch.arange(size, dtype=params.dtype) + 0.5) / size * 2 - 1
    py, px = torch.meshgrid(coords, coords, indexing="ij")  # (H, W)
    cx, cy, a, b, phi, rho = (params[..., i, None, None] for i in range(6))  # (B, E, 1, 1)
    dx, dy = px - cx, py - cy
    c, s = torch.cos(phi), torch.sin(phi)
    u = (c * dx + s * dy) / a
    v = (-s * dx + c * dy) / b
    inside = ((u * u + v * v) <= 1.0).to(params.dtype)
    return (rho * inside).sum(dim=1, keepdim=True)


def random_ellipses(batch: int, size: int, n_ellipses: int = 10, *, generator: torch.Generator | None = None,
                    fov: float = 0.9) -> Tensor:
    """``batch`` random ellipse phantoms ``(batch, 1, size, size)`` in ``[0, 1]``.

    One large background ellipse of intensity 0.3-0.6, then ``n_ellipses - 1`` smaller
    ones (semi-axes 0.03-0.4, intensities in [-0.3, 0.5]) with centres inside the field of
    view; the sum is clipped to ``[0, 1]`` and set to zero outside the disc of radius ``fov``.
    """
    if batch < 1 or size < 4 or n_ellipses < 1:
        raise ValueError(f"need batch >= 1, size >= 4, n_ellipses >= 1; got {batch}, {size}, {n_ellipses}")
    g = generator

    def U(lo, hi, shape):
        return lo + (hi - lo) * torch.rand(shape, generator=g)

    B, E = batch, n_ellipses
    params = torch.empty(B, E, 6)
    # Background body.
    params[:, 0, 0] = U(-0.05, 0.05, (B,))
    params[:, 0, 1] = U(-0.05, 0.05, (B,))
    params[:, 0, 2] = U(0.6, 0.85, (B,))
    params[:, 0, 3] = U(0.5, 0.8, (B,))
    params[:, 0, 4] = U(0, math.pi, (B,))
    params[:, 0, 5] = U(0.3, 0.6, (B,))
    if E > 1:
        r = U(0, 0.6, (B, E - 1)).sqrt()
        t = U(0, 2 * math.pi, (B, E - 1))
        params[:, 1:, 0] = r * torch.cos(t)
        params[:, 1:, 1] = r * torch.sin(t)
        params[:, 1:, 2] = U(0.03, 0.4, (B, E - 1))
        params[:, 1:, 3] = U(0.03, 0.4, (B, E - 1))
        params[:, 1:, 4] = U(0, math.pi, (B, E - 1))
        params[:, 1:, 5] = U(-0.3, 0.5, (B, E - 1))
    img = ellipse_image(params, size).clamp(0, 1)
    coords = (torch.arange(size, dtype=img.dtype) + 0.5) / size * 2 - 1
    py, px = torch.meshgrid(coords, coords, indexing="ij")
    return img * ((px * px + py * py) <= fov * fov).to(img.dtype)


def shepp_logan(size: int) -> Tensor:
    """scikit-image's (modified) Shepp-Logan phantom resized to ``(1, 1, size, size)``, in [0, 1]."""
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    if size < 4:
        raise ValueError(f"size must be >= 4, got {size}")
    ph = shepp_logan_phantom().astype(np.float64)  # 400 x 400, values in [0, 1]
    ph = resize(ph, (size, size), order=1, anti_aliasing=True, mode="constant")
    ph = np.clip(ph / max(ph.max(), 1e-12), 0, 1)
    return torch.from_numpy(ph).float()[None, None]
