"""Total variation of cell-wise (DG0) fields on a triangle mesh.

On a mesh, the total variation of a piecewise-constant field ``s`` is the jump across each
interior edge times the edge's length::

    TV(s) = sum_{e = (i, j)} |e| |s_i - s_j|,     smoothed: |e| sqrt((s_i - s_j)^2 + eps^2)

(cells ``i`` and ``j`` share edge ``e``).  :func:`cell_adjacency` finds the edges once;
:class:`MeshTV` is THE mesh TV of the suite: it evaluates the smoothed TV on torch tensors
(``(C,)`` or ``(B, C)``, for the neural fits) and on numpy arrays with its gradient and
lagged-diffusivity Hessian (for Gauss-Newton)::

    grad TV(s) = D^T (k * D s),   H(s) = D^T diag(k) D,   k_e = |e| / sqrt((D s)_e^2 + eps^2)

with :func:`difference_matrix` the sparse ``D``, ``(D s)_e = s_i - s_j``.
:class:`LogContrastTV` is the regulariser of the neural fits, ``TV(log(sigma / sigma_bg))``.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

__all__ = ["cell_adjacency", "difference_matrix", "MeshTV", "LogContrastTV"]


def cell_adjacency(points: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of cells sharing an edge ``(E, 2)`` and the lengths of those edges ``(E,)``."""
    cells = np.asarray(cells, dtype=np.int64)
    points = np.asarray(points, dtype=np.float64)[:, :2]
    C = len(cells)
    edges = np.concatenate([cells[:, [0, 1]], cells[:, [1, 2]], cells[:, [2, 0]]])  # (3C, 2)
    owner = np.tile(np.arange(C), 3)
    edges.sort(axis=1)
    key = edges[:, 0] * (points.shape[0] + 1) + edges[:, 1]
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    same = np.nonzero(key_sorted[1:] == key_sorted[:-1])[0]  # interior edges appear twice
    a, b = order[same], order[same + 1]
    pairs = np.c_[owner[a], owner[b]]
    e = edges[a]
    lengths = np.linalg.norm(points[e[:, 0]] - points[e[:, 1]], axis=1)
    return pairs, lengths


def difference_matrix(pairs: np.ndarray, n_cells: int) -> sp.csr_matrix:
    """Sparse ``(E, C)`` matrix with ``(D s)_e = s_i - s_j`` for the pair ``e = (i, j)``."""
    E = len(pairs)
    rows = np.repeat(np.arange(E), 2)
    cols = pairs.reshape(-1)
    vals = np.tile([1.0, -1.0], E)
    return sp.csr_matrix((vals, (rows, cols)), shape=(E, n_cells))


class MeshTV:
    """Smoothed total variation of DG0 fields (see the module docstring).

    Parameters
    ----------
    pairs, lengths: from :func:`cell_adjacency`.
    eps: smoothing of the absolute value (units of the field).
    normalise: divide by the total interior edge length, so that weights transfer
        between meshes (then TV of a unit jump across a chord of length ``l`` is ``l / sum|e|``).
    n_cells: number of cells (the width of ``D`` for the numpy methods; default: the
        largest cell index in ``pairs`` plus one).
    """

    def __init__(self, pairs: np.ndarray, lengths: np.ndarray, eps: float = 1e-3, normalise: bool = True,
                 n_cells: int | None = None) -> None:
        pairs = np.asarray(pairs, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.float64)
        self.i = torch.as_tensor(pairs[:, 0], dtype=torch.long)
        self.j = torch.as_tensor(pairs[:, 1], dtype=torch.long)
        w = torch.as_tensor(lengths, dtype=torch.float64)
        self.w = w / w.sum() if normalise else w
        self.weights = lengths / lengths.sum() if normalise else lengths  # the same weights in numpy
        self.eps = eps
        self.pairs = pairs
        self.n_cells = int(pairs.max()) + 1 if n_cells is None else int(n_cells)
        self._D: sp.csr_matrix | None = None

    def __call__(self, s: Tensor) -> Tensor:
        d = s[..., self.i] - s[..., self.j]
        w = self.w.to(device=s.device, dtype=s.dtype)
        # (B, C) fields (an ensemble): the mean of the members' TV, so weights do not scale with B
        return (w * torch.sqrt(d * d + self.eps**2)).sum(-1).mean()

    @property
    def D(self) -> sp.csr_matrix:
        """The difference matrix of the pairs (:func:`difference_matrix`)."""
        if self._D is None:
            self._D = difference_matrix(self.pairs, self.n_cells)
        return self._D

    def value(self, s: np.ndarray) -> float:
        """``TV(s)`` of a numpy field ``(C,)``."""
        d = self.D @ s
        return float(np.sum(self.weights * np.sqrt(d * d + self.eps**2)))

    def gradient_hessian(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``grad TV(s)`` and the lagged-diffusivity Hessian ``D^T diag(k) D`` (dense)."""
        D = self.D
        d = D @ s
        k = self.weights / np.sqrt(d * d + self.eps**2)
        return D.T @ (k * d), (D.T @ sp.diags(k) @ D).toarray()


class LogContrastTV:
    """``R(sigma) = TV(log(sigma / sigma_bg))``: the TV of the log-contrast (torch)."""

    def __init__(self, tv: MeshTV, sigma_bg: float) -> None:
        self.tv = tv
        self.log_bg = float(np.log(sigma_bg))

    def __call__(self, sigma: Tensor) -> Tensor:
        return self.tv(torch.log(sigma) - self.log_bg)
