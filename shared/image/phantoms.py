"""Synthetic phantoms: random ellipses, random blocks and the Shepp-Logan head phantom.

An ellipse phantom is a sum of ``E`` filled ellipses on ``[-1, 1]^2`` (``y`` down, ``x``
right), each with centre ``c``, semi-axes ``(a, b)``, rotation ``phi`` and intensity
``rho``::

    x(p) = clip( sum_e rho_e 1[ ((R_phi (p - c))_1 / a)^2 + ((R_phi (p - c))_2 / b)^2 <= 1 ], 0, 1 )

confined to the disc of radius 0.9 (the field of view of a parallel-beam scan whose
detector spans the image diagonal).  Intensities may be negative (holes), so phantoms
have both edges and plateaus, as in the random-ellipse training sets of learned CT.
A block phantom (:func:`random_blocks`) has a different structure: straight edges and
corners instead of curves, opaque layers instead of sums (a later rectangle hides what
lies beneath it), a linear intensity ramp as background and no circular field of view.
It is the second image family of the learned generators (:mod:`shared.image.generator`).
Images are ``(B, 1, H, W)`` float tensors in ``[0, 1]``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["random_ellipses", "random_blocks", "shepp_logan", "ellipse_image", "FAMILIES", "family_images"]


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


def random_blocks(batch: int, size: int, n_blocks: tuple[int, int] = (3, 7), *,
                  generator: torch.Generator | None = None) -> Tensor:
    """``batch`` random block phantoms ``(batch, 1, size, size)`` in ``[0, 1]``.

    Background: a linear ramp ``b_0 + g . p`` (``b_0`` in [0.1, 0.4], ``|g| <= 0.15`` per
    axis) over ``[-1, 1]^2``.  Then ``n`` (uniform in ``n_blocks``, inclusive) rotated
    rectangles, painted in order, each opaque with its own intensity in [0.2, 1]: centre
    in ``[-0.7, 0.7]^2``, half-sides 0.04-0.5 (a third of them thin bars, one half-side
    0.02-0.06), rotation uniform in [0, pi).
    """
    lo, hi = n_blocks
    if batch < 1 or size < 4 or not 1 <= lo <= hi:
        raise ValueError(f"need batch >= 1, size >= 4, 1 <= n_blocks[0] <= n_blocks[1]; "
                         f"got {batch}, {size}, {n_blocks}")
    g = generator

    def U(a, b, shape=()):
        return a + (b - a) * torch.rand(shape, generator=g)

    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    py, px = torch.meshgrid(coords, coords, indexing="ij")
    out = torch.empty(batch, 1, size, size)
    for i in range(batch):
        img = U(0.1, 0.4) + U(-0.15, 0.15) * px + U(-0.15, 0.15) * py
        for _ in range(int(torch.randint(lo, hi + 1, (), generator=g))):
            cx, cy, phi = U(-0.7, 0.7), U(-0.7, 0.7), U(0, math.pi)
            a, b = U(0.04, 0.5), U(0.04, 0.5)
            if float(U(0, 1)) < 1 / 3:
                b = U(0.02, 0.06)
            c, s = torch.cos(phi), torch.sin(phi)
            u = c * (px - cx) + s * (py - cy)
            v = -s * (px - cx) + c * (py - cy)
            img = torch.where((u.abs() <= a) & (v.abs() <= b), U(0.2, 1.0), img)
        out[i, 0] = img.clamp(0, 1)
    return out


#: the image families a generator is trained on, by name
FAMILIES = ("ellipses", "blocks")


def family_images(family: str, batch: int, size: int, generator: torch.Generator | None = None) -> Tensor:
    """``batch`` random images ``(batch, 1, size, size)`` of ``family`` (one of :data:`FAMILIES`)."""
    if family == "ellipses":
        return random_ellipses(batch, size, generator=generator)
    if family == "blocks":
        return random_blocks(batch, size, generator=generator)
    raise ValueError(f"unknown image family {family!r}; choose from {', '.join(FAMILIES)}")


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
