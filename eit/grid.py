"""The KTC pixel grid and interpolation of mesh fields onto it.

The challenge scores reconstructions on 256x256 pixels of width ``w = 0.23 / 256`` m
covering ``[-0.115, 0.115]^2``.  Pixel centres are ``meshgrid(x, y)`` with
``x = y = linspace(-0.115 + w/2, 0.115 - w/2, 256)``, then flipped up-down, so that row 0
is the top (largest ``y``) and column 0 the left (smallest ``x``).  Pixels whose centre
lies outside the tank (``x^2 + y^2 > 0.115^2``) belong to no reconstruction: they are
water (class 0) in a segmentation.

Mesh fields are given as vertex coordinates ``points (V, 2)``, triangles ``cells (C, 3)``
and values either per cell (DG0, length ``C``: the value of the triangle containing the
pixel centre) or per vertex (P1, length ``V``: linear interpolation in that triangle).
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "GRID_SIZE",
    "TANK_RADIUS",
    "PIXEL_WIDTH",
    "pixel_centres",
    "tank_mask",
    "MeshToGrid",
    "to_grid",
]

GRID_SIZE = 256
TANK_RADIUS = 0.115
PIXEL_WIDTH = 2 * TANK_RADIUS / GRID_SIZE


def pixel_centres(n: int = GRID_SIZE, radius: float = TANK_RADIUS) -> tuple[np.ndarray, np.ndarray]:
    """``(X, Y)``, each ``(n, n)``: pixel centre coordinates (m), row 0 at the top."""
    w = 2 * radius / n
    x = np.linspace(-radius + w / 2, radius - w / 2, n)
    X, Y = np.meshgrid(x, x)
    return np.flipud(X), np.flipud(Y)


def tank_mask(n: int = GRID_SIZE, radius: float = TANK_RADIUS) -> np.ndarray:
    """``(n, n)`` booleans: True where the pixel centre lies inside the tank."""
    X, Y = pixel_centres(n, radius)
    return X**2 + Y**2 <= radius**2


class MeshToGrid:
    """Interpolation from one triangle mesh to the pixel grid (point location done once).

    Parameters
    ----------
    points: ``(V, 2)`` vertex coordinates (m); extra columns (z) are ignored.
    cells: ``(C, 3)`` vertex indices of the triangles.
    n, radius: the grid (default: the KTC grid).

    Calling the object with per-cell (``C``) or per-vertex (``V``) values returns an
    ``(n, n)`` image; pixels outside the tank or outside the mesh get ``fill``.
    """

    def __init__(self, points: np.ndarray, cells: np.ndarray, n: int = GRID_SIZE, radius: float = TANK_RADIUS) -> None:
        from matplotlib.tri import Triangulation

        points = np.asarray(points, dtype=np.float64)
        cells = np.asarray(cells)
        if points.ndim != 2 or points.shape[1] < 2:
            raise ValueError(f"points must be (V, 2), got shape {points.shape}")
        if cells.ndim != 2 or cells.shape[1] != 3:
            raise ValueError(f"cells must be (C, 3) triangles, got shape {cells.shape}")
        if cells.size and (cells.min() < 0 or cells.max() >= len(points)):
            raise ValueError("cells refer to vertices that do not exist")
        self.points = points[:, :2]
        self.cells = cells.astype(np.int64)
        self.n_vertices = len(points)
        self.n_cells = len(cells)
        self.shape = (n, n)
        X, Y = pixel_centres(n, radius)
        self.inside = tank_mask(n, radius)
        tri = Triangulation(self.points[:, 0], self.points[:, 1], self.cells)
        finder = tri.get_trifinder()
        xs, ys = X[self.inside], Y[self.inside]
        owner = np.asarray(finder(xs, ys), dtype=np.int64)
        # Pixel centres exactly on the boundary of a polygonal mesh of the disk may fall
        # just outside it: give them the nearest cell (by centroid) instead of a hole.
        lost = owner < 0
        if lost.any():
            centroids = self.points[self.cells].mean(axis=1)
            from scipy.spatial import cKDTree

            _, owner[lost] = cKDTree(centroids).query(np.c_[xs[lost], ys[lost]])
        self.owner = owner
        # Barycentric coordinates of each pixel centre in its triangle (for P1 fields);
        # clipped so that the nearest-cell fallback extrapolates no further than the cell.
        p = self.points[self.cells[owner]]  # (P, 3, 2)
        v0, v1 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
        d = np.c_[xs, ys] - p[:, 0]
        det = v0[:, 0] * v1[:, 1] - v0[:, 1] * v1[:, 0]
        l1 = (d[:, 0] * v1[:, 1] - d[:, 1] * v1[:, 0]) / det
        l2 = (v0[:, 0] * d[:, 1] - v0[:, 1] * d[:, 0]) / det
        bary = np.clip(np.c_[1 - l1 - l2, l1, l2], 0.0, 1.0)
        self.bary = bary / bary.sum(axis=1, keepdims=True)

    def __call__(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size == self.n_cells:
            inner = values[self.owner]
        elif values.size == self.n_vertices:
            inner = np.einsum("pk,pk->p", values[self.cells[self.owner]], self.bary)
        else:
            raise ValueError(
                f"values must be one per cell ({self.n_cells}) or one per vertex ({self.n_vertices}), got {values.size}"
            )
        image = np.full(self.shape, fill, dtype=np.float64)
        image[self.inside] = inner
        return image


def to_grid(points: np.ndarray, cells: np.ndarray, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
    """One-off :class:`MeshToGrid` interpolation of a DG0 or P1 field to the KTC grid."""
    return MeshToGrid(points, cells)(values, fill=fill)
