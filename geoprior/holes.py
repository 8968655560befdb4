"""Which unsupported parts of a closed Poisson surface to keep: fills of holes in the data.

Screened Poisson closes every surface.  Where the data have a gap (a region no scanner
viewpoint saw) it spans the gap with a smooth sheet; where the object itself is open (a
height field) or the gap is a whole unseen face of a part with sharp edges, the sheet is
invented surface.  The distance trim of :func:`geoprior.mesh.poisson_mesh` removes every
vertex farther than ``trim_distance`` from the data, good fill and bad alike.  This module
keeps the good ones.

An unsupported vertex is one farther than the trim distance from every data point; the
connected sets of unsupported vertices (along mesh edges) are the *fills*.  A fill's *rim*
is the supported vertices that share a face with it.  A fill is kept when it continues the
surface around it:

* its rim radius ``rho`` (RMS distance of the rim from its centroid, in the rim's best-fit
  plane) is at most ``max_radius`` times the data's bounding-box diagonal: a hole in a
  surface, not the lid that closes an open one or a whole face of the object; and
* the data points within ``rho / 2`` of the rim, written as heights ``w`` over the rim's
  plane ``(u, v)``, are fitted by a quadric ``w = q(u, v)`` (least squares, 6 terms), and
  the fill's vertices deviate from ``q`` by at most ``max_deviation * rho`` on average.

Why a quadric: on a smooth surface the second-order Taylor expansion of the surrounding
surface predicts the hidden part, and screened Poisson's fill follows it (the fills of a
blob's unseen underside deviate by 2-8 % of their radius); across a sharp edge or a
concave corner the surroundings are two faces that no quadric fits and Poisson's bulge
departs from any extrapolation (20-60 % of the radius on the suite's CAD scans).
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

__all__ = ["fill_components", "keep_hole_fills", "FILL_MAX_DEVIATION", "FILL_MAX_RADIUS"]

#: largest mean deviation of a kept fill from the quadric of its surroundings, a fraction of its rim radius
#: (chosen on the suite's 42 scan cases of 20k points: at 0.1 the blob's unseen underside at
#: 0.25 % noise, a good fill, measured 0.101 and was dropped, 0.75 -> 1.85 of the best baseline;
#: docs/geoprior.md)
FILL_MAX_DEVIATION = 0.12
#: largest rim radius of a kept fill, a fraction of the data's bounding-box diagonal
FILL_MAX_RADIUS = 0.25


def fill_components(faces: np.ndarray, unsupported: np.ndarray) -> np.ndarray:
    """Label ``(V,)`` of the connected unsupported vertices (``-1``: supported).

    Two unsupported vertices are connected when a face edge joins them.
    """
    unsupported = np.asarray(unsupported, dtype=bool)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    edges = edges[unsupported[edges[:, 0]] & unsupported[edges[:, 1]]]
    n = len(unsupported)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # Renumber so that the unsupported components are 0..K-1.
    out = np.full(n, -1, dtype=np.int64)
    if unsupported.any():
        _, out[unsupported] = np.unique(labels[unsupported], return_inverse=True)
    return out


def _quadric_terms(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.stack([u * u, u * v, v * v, u, v, np.ones_like(u)], axis=1)


def fill_deviation(vertices: np.ndarray, fill: np.ndarray, rim: np.ndarray, points: np.ndarray,
                   tree: cKDTree) -> tuple[float, float]:
    """``(rho, mean |w - q(u, v)| / rho)`` of one fill (module docstring); deviation ``inf``
    when fewer than 12 data points surround the rim (nothing to extrapolate from)."""
    rim_pts = vertices[rim]
    centre = rim_pts.mean(axis=0)
    _, s, frame = np.linalg.svd(rim_pts - centre, full_matrices=False)
    rho = float(np.sqrt((s[:2] ** 2).sum() / len(rim_pts)))
    if rho <= 0:
        return rho, float("inf")
    near = tree.query_ball_point(rim_pts, 0.5 * rho)
    ring = np.unique(np.concatenate([np.asarray(i, dtype=np.int64) for i in near]))
    if len(ring) < 12:
        return rho, float("inf")
    local = (points[ring] - centre) @ frame.T                          # (u, v, w) per ring point
    coef = np.linalg.lstsq(_quadric_terms(local[:, 0], local[:, 1]), local[:, 2], rcond=None)[0]
    inner = (vertices[fill] - centre) @ frame.T
    dev = inner[:, 2] - _quadric_terms(inner[:, 0], inner[:, 1]) @ coef
    return rho, float(np.abs(dev).mean() / rho)


def keep_hole_fills(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray, unsupported: np.ndarray,
                    max_deviation: float = FILL_MAX_DEVIATION,
                    max_radius: float = FILL_MAX_RADIUS) -> np.ndarray:
    """Mask ``(V,)`` of the unsupported vertices that lie in a kept fill (module docstring).

    ``vertices`` ``(V, 3)`` and ``faces`` ``(F, 3)``: the untrimmed mesh; ``points``
    ``(N, 3)``: the data it was meshed from (same units); ``unsupported`` ``(V,)``: the
    vertices the distance trim would remove.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    labels = fill_components(faces, unsupported)
    keep = np.zeros(len(vertices), dtype=bool)
    if labels.max(initial=-1) < 0:
        return keep
    diag = float(np.linalg.norm(points.max(axis=0) - points.min(axis=0)))
    tree = cKDTree(points)
    face_label = labels[faces]                                         # (F, 3)
    for k in range(labels.max() + 1):
        fill = np.flatnonzero(labels == k)
        touching = faces[(face_label == k).any(axis=1)]
        rim = np.unique(touching[labels[touching] != k])
        if len(rim) < 6:
            continue
        rho, dev = fill_deviation(vertices, fill, rim, points, tree)
        if rho <= max_radius * diag and dev <= max_deviation:
            keep[fill] = True
    return keep
