"""Smooth filling of unknown pixels: the image that agrees with the known pixels and bends least.

For a pixel mask ``m`` (:class:`~shared.operators.PixelMask`, 1 = known), measurements
``y = m x`` and a centre ``c`` (default 0) the fill is::

    x = c + d,    d = argmin_d E(d)   subject to   m (c + d) = y,

with one of two energies:

* ``order=2``, thin plate: ``E(d) = ||L d||^2``, ``L`` the 5-point Laplacian with reflect
  boundary (the matrix of :func:`shared.operators.tikhonov.laplacian`).  On the unknown pixels
  ``d`` is the discrete biharmonic extension of its values on the known ones.  With ``c = 0``
  this is biharmonic inpainting, the classical tool (scikit-image's ``inpaint_biharmonic``
  solves the same equations).
* ``order=1``, membrane: ``E(d) = ||grad d||^2`` (forward differences, free boundary), so
  ``d`` is harmonic in the holes.  A harmonic function takes its extremes on the holes' rims
  (the maximum principle); the biharmonic one overshoots them.

With ``c`` a network's output and ``order=1`` this is the inpainting DIP's data-consistency step,
the twin of :func:`shared.operators.tikhonov.tikhonov_consistency`: the output keeps what it drew
in the holes, its misfit on the known pixels is replaced by the measurements, and that correction
is carried into the holes without leaving a seam at their rims.  The membrane, not the thin
plate, because the network's misfit is not smooth: on the library image's 35 px holes the
biharmonic extension of a rough misfit swung far beyond it and lost 3.5 dB in the holes, while
the harmonic one, bounded by the rim, gained (docs/image.md, "Inpainting").  The constraint is
exact because inpainting's known pixels are taken as noise-free.

The unknown part ``u`` solves the normal equations ``Q_uu u = -Q_uk d_k`` with ``Q = L^T L``
(thin plate) or ``Q = D^T D`` (membrane, ``D`` the differences: the graph Laplacian of the pixel
grid) restricted to the unknown (``u``) and known (``k``) pixels: a sparse system, factorised
once per distinct mask and solved for every channel and image.  A direct solve, because the
thin plate's condition grows with the fourth power of a hole's width: conjugate gradients
needed thousands of steps (about a minute) on the library image, the factorisation a fraction
of a second.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import splu
from torch import Tensor

from shared.operators.basic import PixelMask

__all__ = ["smooth_fill", "laplacian_matrix", "gradient_energy_matrix"]


def laplacian_matrix(h: int, w: int) -> sp.csr_matrix:
    """The 5-point Laplacian ``4 x_ij - (4 neighbours)`` on an ``h x w`` grid, row-major, with
    reflect boundary (the neighbour beyond an edge is the pixel one inside it, as in torch's
    ``'reflect'`` padding); ``(h w) x (h w)``.  ``h, w >= 2``."""
    if h < 2 or w < 2:
        raise ValueError(f"the Laplacian needs a grid of at least 2 x 2 pixels, got {h} x {w}")
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    centre = (i * w + j).ravel()
    rows, cols, vals = [centre], [centre], [np.full(h * w, 4.0)]
    for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ni, nj = np.abs(i + di), np.abs(j + dj)  # reflect at the first row/column
        ni = np.where(ni > h - 1, 2 * (h - 1) - ni, ni)  # ... and at the last
        nj = np.where(nj > w - 1, 2 * (w - 1) - nj, nj)
        rows.append(centre)
        cols.append((ni * w + nj).ravel())
        vals.append(np.full(h * w, -1.0))
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(h * w, h * w))


def gradient_energy_matrix(h: int, w: int) -> sp.csr_matrix:
    """``D^T D`` for the forward differences ``D`` of an ``h x w`` grid (row-major): the graph
    Laplacian of the 4-neighbour pixel grid, ``d^T (D^T D) d = ||grad d||^2``; ``(h w) x (h w)``."""
    idx = np.arange(h * w).reshape(h, w)
    a = np.concatenate([idx[:, :-1].ravel(), idx[:-1].ravel()])
    b = np.concatenate([idx[:, 1:].ravel(), idx[1:].ravel()])
    adjacency = sp.coo_matrix((np.ones(a.size), (a, b)), shape=(h * w, h * w))
    adjacency = (adjacency + adjacency.T).tocsr()
    return (sp.diags(np.asarray(adjacency.sum(axis=1)).ravel()) - adjacency).tocsr()


@torch.no_grad()
def smooth_fill(op: PixelMask, y: Tensor, centre: Tensor | None = None, order: int = 2) -> Tensor:
    """``c + argmin_d E(d)`` subject to ``m (c + d) = y`` (module docstring); ``(N, C, H, W)``.

    ``op``: the pixel mask; ``y``: the masked image (values on unknown pixels are ignored);
    ``centre``: the image ``c`` to correct (default 0); ``order``: 2 = thin plate
    (``||L d||^2``; with ``c = 0``, biharmonic inpainting), 1 = membrane (``||grad d||^2``).
    Known pixels of the result equal ``y``.  Solved in float64 on the CPU; returned on ``y``'s
    device in its dtype.
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 (membrane) or 2 (thin plate), got {order!r}")
    if not isinstance(op, PixelMask):
        raise TypeError(f"smooth_fill needs a PixelMask operator, got {type(op).__name__}")
    if y.ndim != 4:
        raise ValueError(f"expected a masked image (N, C, H, W), got shape {tuple(y.shape)}")
    c = torch.zeros_like(y) if centre is None else centre.to(y.device)
    if c.shape != y.shape:
        raise ValueError(f"the centre must have the masked image's shape {tuple(y.shape)}, got {tuple(c.shape)}")
    known = op.mask.detach().cpu().expand(y.shape).numpy() > 0.5
    if not known.reshape(-1, *known.shape[-2:]).any(axis=(1, 2)).all():
        raise ValueError("the mask marks no pixel as known in some channel: nothing to fill from")
    d = (y.detach().cpu().double() - c.detach().cpu().double()).numpy() * known
    h, w = y.shape[-2:]
    if order == 2:
        lap = laplacian_matrix(h, w)
        q = (lap.T @ lap).tocsc()
    else:
        q = gradient_energy_matrix(h, w).tocsc()
    solvers: dict[bytes, tuple] = {}  # one factorisation per distinct mask
    flat_d, flat_known = d.reshape(-1, h * w), known.reshape(-1, h * w)
    for row, k in zip(flat_d, flat_known):
        if k.all():
            continue
        key = np.packbits(k).tobytes()
        if key not in solvers:
            u_idx, k_idx = np.flatnonzero(~k), np.flatnonzero(k)
            solvers[key] = (u_idx, k_idx, splu(q[u_idx][:, u_idx].tocsc()), q[u_idx][:, k_idx])
        u_idx, k_idx, lu, q_uk = solvers[key]
        row[u_idx] = lu.solve(-(q_uk @ row[k_idx]))
    out = c.detach().cpu().double() + torch.from_numpy(flat_d.reshape(d.shape))
    return out.to(device=y.device, dtype=y.dtype)
