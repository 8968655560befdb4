"""Meshing: open3d screened Poisson on an oriented cloud, and the raw-input baseline.

Screened Poisson (Kazhdan & Hoppe 2013) solves for an indicator function whose gradient
matches the oriented normals on an octree of ``depth`` levels (cell size about
``1.1 * extent / 2^depth``), then extracts its level set.  The solver closes every surface,
so it invents sheets where there are no samples (a scan's unseen side, across a thin part);
two trims remove them: vertices whose sample density is in the lowest ``trim_quantile``
(open3d's usual recipe), and vertices farther than ``trim_distance`` from the nearest of
the points ``near`` (the data: a surface within a few point spacings of a sample is
supported by it, one farther off is not).

The baseline is the same meshing of the raw input, with normals estimated from its 30
nearest neighbours (PCA) and oriented by open3d's consistent tangent plane propagation.
:func:`ball_pivoting` is the other classical mesher of a cloud (Bernardini et al. 1999):
it interpolates the points themselves (no smoothing), rolling balls of the given radii.
"""
from __future__ import annotations

import numpy as np

__all__ = ["poisson_mesh", "estimate_normals", "baseline_poisson", "ball_pivoting", "mean_spacing"]


def _cloud(points: np.ndarray, normals: np.ndarray | None = None):
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64)))
    if normals is not None:
        pcd.normals = o3d.utility.Vector3dVector(np.asarray(normals, dtype=np.float64))
    return pcd


def estimate_normals(points: np.ndarray, k: int = 30, orient_k: int | None = None, orient: bool = True) -> np.ndarray:
    """PCA normals of the ``k`` nearest neighbours, oriented by the consistent tangent plane
    (``orient=False``: unoriented)."""
    import open3d as o3d

    pcd = _cloud(points)
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(knn=k))
    if orient:
        pcd.orient_normals_consistent_tangent_plane(orient_k or k)
    return np.asarray(pcd.normals).copy()


def poisson_mesh(points: np.ndarray, normals: np.ndarray, depth: int = 8, trim_quantile: float = 0.01,
                 scale: float = 1.1, threads: int | None = None, trim_distance: float = 0.0,
                 near: np.ndarray | None = None, fill_holes: bool = False,
                 fill_max_deviation: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Screened Poisson surface of an oriented cloud: ``(vertices (V, 3), faces (F, 3))``.

    ``trim_distance`` > 0 removes the vertices (and their faces) farther than it from the
    nearest point of ``near`` (``(M, 3)``, default ``points``), in the points' units;
    with ``fill_holes`` it keeps those that fill a hole of the data as a continuation of
    the surface around it (:func:`geoprior.holes.keep_hole_fills`, with
    ``fill_max_deviation`` if given).

    ``threads`` (None: torch's thread count, capped at the cores this process may use):
    open3d's solver threads (60k-point block with a bore, 230k dense points, depth 8:
    12.7 s on one thread, 7.3 s on two).
    """
    import open3d as o3d

    threads = _threads(threads)

    if normals is None or len(normals) != len(points):
        raise ValueError("Poisson meshing needs one normal per point")
    pcd = _cloud(points, normals)
    mesh, density = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(
        pcd, depth=depth, scale=scale, linear_fit=False, n_threads=threads)
    density = np.asarray(density)
    drop = np.zeros(len(density), dtype=bool)
    if trim_quantile > 0 and len(density):
        drop |= density < np.quantile(density, trim_quantile)
    if trim_distance > 0 and len(density):
        data = np.asarray(points if near is None else near)
        far = _distance_to(data, np.asarray(mesh.vertices)) > trim_distance
        if fill_holes and far.any():
            from geoprior.holes import FILL_MAX_DEVIATION, keep_hole_fills

            dev = FILL_MAX_DEVIATION if fill_max_deviation is None else fill_max_deviation
            far &= ~keep_hole_fills(np.asarray(mesh.vertices), np.asarray(mesh.triangles), data, far,
                                    max_deviation=dev)
        drop |= far
    if drop.any():
        mesh.remove_vertices_by_mask(drop)
    mesh.remove_unreferenced_vertices()
    return np.asarray(mesh.vertices).copy(), np.asarray(mesh.triangles).astype(np.int64).copy()


def baseline_poisson(points: np.ndarray, depth: int = 8, k: int = 30, trim_quantile: float = 0.01,
                     threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The baseline: KNN-``k`` normals, consistent tangent plane orientation, screened Poisson."""
    normals = estimate_normals(points, k)
    v, f = poisson_mesh(points, normals, depth=depth, trim_quantile=trim_quantile, threads=threads)
    return v, f, normals


def _distance_to(points: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Distance of each query ``(V, 3)`` to its nearest point of ``points`` ``(M, 3)`` (KD-tree)."""
    from scipy.spatial import cKDTree

    return cKDTree(points).query(queries, workers=-1)[0]


def _threads(threads: int | None) -> int:
    if threads is not None:
        return int(threads)
    import torch

    from shared.threads import available_cores

    return max(1, min(torch.get_num_threads(), available_cores()))


def mean_spacing(points: np.ndarray, sample: int = 20_000, seed: int = 0) -> float:
    """Mean distance of (up to ``sample``) points to their nearest neighbour."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    probe = points if len(points) <= sample else points[rng.choice(len(points), sample, replace=False)]
    return float(cKDTree(points).query(probe, k=2)[0][:, 1].mean())


def ball_pivoting(points: np.ndarray, normals: np.ndarray, radii: tuple[float, ...] | None = None,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """open3d ball pivoting of an oriented cloud: ``(vertices, faces)``.

    ``radii`` are absolute ball radii; default ``(1, 2, 4) x`` the mean nearest-neighbour
    spacing (each pass fills the gaps the smaller balls left)."""
    import open3d as o3d

    if radii is None:
        s = mean_spacing(points)
        radii = (s, 2 * s, 4 * s)
    mesh = o3d.geometry.TriangleMesh.create_from_point_cloud_ball_pivoting(
        _cloud(points, normals), o3d.utility.DoubleVector([float(r) for r in radii]))
    return np.asarray(mesh.vertices).copy(), np.asarray(mesh.triangles).astype(np.int64).copy()
