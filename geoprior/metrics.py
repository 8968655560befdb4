"""Surface reconstruction metrics, all lengths divided by a bounding-box diagonal ``D``.

For an output set ``A`` and a reference set ``B`` (points, or points sampled on meshes)
with nearest-neighbour distances ``d(a, B)``:

* accuracy ``acc = mean_a d(a, B)``, completeness ``comp = mean_b d(b, A)``;
* Chamfer-L1 ``(acc + comp) / 2 / D``; Chamfer-L2 ``(mean d(a,B)^2 + mean d(b,A)^2) / 2 / D^2``;
* Hausdorff ``max(max_a d(a, B), max_b d(b, A)) / D``;
* F-score at ``tau`` (a fraction of ``D``): ``2 P R / (P + R)`` with precision
  ``P = frac{d(a,B) < tau D}`` and recall ``R = frac{d(b,A) < tau D}``;
* normal consistency: mean ``|n_a . n_b|`` over nearest pairs, both ways.

Nearest neighbours come from a KD-tree (``scipy.spatial.cKDTree``) or from pytorch3d's
``knn_points`` where it imports (the two agree to float32 precision; tested).  Distances
to a mesh *surface* (not its vertices) use open3d's ``RaycastingScene``.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "point_metrics", "nearest_kdtree", "nearest_pytorch3d", "have_pytorch3d", "MeshDistance",
    "sample_mesh", "evaluate_against_mesh", "bbox_diagonal", "mesh_normal_consistency", "closest_face_normals",
]


def bbox_diagonal(points: np.ndarray) -> float:
    return float(np.linalg.norm(points.max(0) - points.min(0)))


def nearest_kdtree(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each point of ``a`` to its nearest point of ``b``, and that point's index."""
    from scipy.spatial import cKDTree

    d, i = cKDTree(b).query(a, k=1)
    return d, i


def have_pytorch3d() -> bool:
    try:
        from pytorch3d.ops import knn_points  # noqa: F401
    except Exception:
        return False
    return True


def nearest_pytorch3d(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Same as :func:`nearest_kdtree` through ``pytorch3d.ops.knn_points`` (float32, exact KNN)."""
    import torch
    from pytorch3d.ops import knn_points

    ta = torch.as_tensor(np.asarray(a, dtype=np.float32))[None]
    tb = torch.as_tensor(np.asarray(b, dtype=np.float32))[None]
    res = knn_points(ta, tb, K=1)
    return res.dists[0, :, 0].clamp_min(0).sqrt().numpy().astype(np.float64), res.idx[0, :, 0].numpy()


def _summary(d_ab: np.ndarray, d_ba: np.ndarray, diag: float, tau: float) -> dict[str, float]:
    precision = float((d_ab < tau * diag).mean())
    recall = float((d_ba < tau * diag).mean())
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "accuracy": float(d_ab.mean() / diag),
        "completeness": float(d_ba.mean() / diag),
        "chamfer_l1": float((d_ab.mean() + d_ba.mean()) / 2 / diag),
        "chamfer_l2": float(((d_ab ** 2).mean() + (d_ba ** 2).mean()) / 2 / diag ** 2),
        "hausdorff": float(max(d_ab.max(), d_ba.max()) / diag),
        "precision": precision,
        "recall": recall,
        "fscore": float(f),
        "tau": tau,
    }


def point_metrics(
    a: np.ndarray, b: np.ndarray, normals_a: np.ndarray | None = None, normals_b: np.ndarray | None = None,
    diag: float | None = None, tau: float = 0.001, backend: str = "auto",
) -> dict[str, float]:
    """Metrics of the point set ``a`` against the reference set ``b`` (see the module docstring).

    ``diag`` defaults to the bounding-box diagonal of ``b``; ``backend`` is ``"kdtree"``,
    ``"pytorch3d"`` or ``"auto"`` (pytorch3d when it imports).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("metrics need non-empty point sets")
    diag = bbox_diagonal(b) if diag is None else diag
    if backend == "auto":
        backend = "pytorch3d" if have_pytorch3d() else "kdtree"
    nearest = {"kdtree": nearest_kdtree, "pytorch3d": nearest_pytorch3d}.get(backend)
    if nearest is None:
        raise ValueError(f"unknown backend {backend!r}; choose kdtree, pytorch3d or auto")
    d_ab, i_ab = nearest(a, b)
    d_ba, i_ba = nearest(b, a)
    out = _summary(d_ab, d_ba, diag, tau)
    if normals_a is not None and normals_b is not None:
        c_ab = np.abs((normals_a * normals_b[i_ab]).sum(1)).mean()
        c_ba = np.abs((normals_b * normals_a[i_ba]).sum(1)).mean()
        out["normal_consistency"] = float((c_ab + c_ba) / 2)
    out["backend"] = backend
    return out


class MeshDistance:
    """Unsigned distance to a triangle mesh surface (open3d ``RaycastingScene``)."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        import open3d as o3d

        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.core.Tensor(np.asarray(vertices, dtype=np.float32)),
                                 o3d.core.Tensor(np.asarray(faces, dtype=np.uint32)))

    def __call__(self, points: np.ndarray, chunk: int = 500_000) -> np.ndarray:
        import open3d as o3d

        pts = np.asarray(points, dtype=np.float32)
        out = [self.scene.compute_distance(o3d.core.Tensor(pts[i:i + chunk])).numpy()
               for i in range(0, len(pts), chunk)]
        return np.concatenate(out).astype(np.float64) if out else np.empty(0)


def sample_mesh(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points uniformly distributed over the mesh surface (area-weighted triangles)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    rng = np.random.default_rng(seed)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    if not area.sum() > 0:
        raise ValueError("the mesh has zero surface area")
    tri = rng.choice(len(f), size=n, p=area / area.sum())
    r1, r2 = rng.uniform(size=(2, n))
    s = np.sqrt(r1)
    w0, w1, w2 = 1 - s, s * (1 - r2), s * r2
    return w0[:, None] * a[tri] + w1[:, None] * b[tri] + w2[:, None] * c[tri]


def evaluate_against_mesh(
    reference: tuple[np.ndarray, np.ndarray],
    mesh: tuple[np.ndarray, np.ndarray] | None = None,
    points: np.ndarray | None = None,
    n_output: int = 200_000, n_reference: int = 1_000_000, tau: float = 0.001, seed: int = 0,
    diag: float | None = None,
) -> dict[str, float]:
    """Score an output mesh or cloud against a reference mesh (the benchmark's one metric).

    Accuracy: mean distance from ``n_output`` points sampled on the output mesh (or all
    the points of an output cloud, subsampled to ``n_output``) to the reference surface.
    Completeness: mean distance from ``n_reference`` points sampled on the reference to
    the output surface (mesh) or points (cloud).  All divided by the reference's
    bounding-box diagonal (or ``diag``).
    """
    if (mesh is None) == (points is None):
        raise ValueError("give exactly one of mesh= or points=")
    ref_v, ref_f = reference
    diag = bbox_diagonal(ref_v) if diag is None else diag
    rng = np.random.default_rng(seed)
    ref_samples = sample_mesh(ref_v, ref_f, n_reference, seed=seed + 1)
    if mesh is not None:
        out_samples = sample_mesh(mesh[0], mesh[1], n_output, seed=seed)
        d_ba = MeshDistance(*mesh)(ref_samples)
    else:
        pts = np.asarray(points, dtype=np.float64)
        out_samples = pts if len(pts) <= n_output else pts[rng.choice(len(pts), n_output, replace=False)]
        d_ba = nearest_kdtree(ref_samples, pts)[0]
    d_ab = MeshDistance(ref_v, ref_f)(out_samples)
    return _summary(d_ab, d_ba, diag, tau)


def _sample_with_normals(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` area-uniform points on a mesh and the unit normals of the faces they lie on."""
    import trimesh

    mesh = trimesh.Trimesh(np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64), process=False)
    pts, face = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return np.asarray(pts), np.asarray(mesh.face_normals)[face]


def closest_face_normals(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Unit normals of the faces of a mesh closest to ``points`` (open3d ``compute_closest_points``)."""
    import open3d as o3d
    import trimesh

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(vertices, dtype=np.float32)),
                        o3d.core.Tensor(np.asarray(faces, dtype=np.uint32)))
    ids = scene.compute_closest_points(o3d.core.Tensor(np.asarray(points, dtype=np.float32)))["primitive_ids"]
    normals = trimesh.Trimesh(vertices, faces, process=False).face_normals
    return np.asarray(normals)[ids.numpy().astype(np.int64)]


def mesh_normal_consistency(reference: tuple[np.ndarray, np.ndarray], mesh: tuple[np.ndarray, np.ndarray],
                            n: int = 100_000, seed: int = 0) -> float:
    """Mean ``|n_out . n_ref|`` of face normals at closest-point pairs, both ways (1: aligned).

    ``n`` points sampled on each surface take the normal of their face, paired with the
    normal of the closest face of the other surface (unsigned: a mesher's orientation
    convention does not count)."""
    a, na = _sample_with_normals(*mesh, n, seed)
    b, nb = _sample_with_normals(*reference, n, seed + 1)
    c_ab = np.abs((na * closest_face_normals(*reference, a)).sum(1)).mean()
    c_ba = np.abs((nb * closest_face_normals(*mesh, b)).sum(1)).mean()
    return float((c_ab + c_ba) / 2)
