"""Input cleaning: isolated points (lone scanner outliers).

A lone point far from the surface still gets a patch (every point lies in at least one),
grown to its nearest neighbours on the surface: that chart spans the gap, and its dense
samples survive the outlier test of :func:`geoprior.sampling.sample_charts`, whose anchors
include the lone point itself.  Such points are removed before the cover is built.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["isolated_points"]


def isolated_points(points: np.ndarray, k: int = 8, factor: float = 10.0) -> np.ndarray:
    """Mask ``(N,)`` of isolated points: ``d_k(p) > factor * median_{q in N_k(p)} d_k(q)``.

    ``d_k`` is the distance to the ``k``-th nearest neighbour and ``N_k(p)`` the ``k``
    nearest neighbours of ``p``.  Comparing a point with its own neighbours (not with a
    global median) keeps uniformly sparse regions of a cloud of mixed density; a group of
    fewer than about ``k / 2`` points far from the rest is flagged as a whole.
    """
    if k < 1 or factor <= 0:
        raise ValueError(f"k must be >= 1 and factor > 0, got k={k}, factor={factor}")
    n = len(points)
    if n <= 2 * k:
        return np.zeros(n, dtype=bool)
    dist, idx = cKDTree(points).query(points, k=k + 1, workers=-1)
    d_k = dist[:, -1]
    local = np.median(d_k[idx[:, 1:]], axis=1)
    return np.where(local > 0, d_k > factor * local, False)
