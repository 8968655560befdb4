"""Dense output: sample every chart, take normals from its Jacobian, orient them, trim overlaps.

* **Dense samples.** Chart ``i`` is evaluated at ``density`` jittered copies of each of
  its parameter samples (Gaussian jitter of ``0.5 / sqrt(n_i)``, about half the sample
  spacing), so the dense set stays on the part of ``[0, 1]^2`` the patch data covers;
  charts extrapolate badly beyond it.
* **Normals** ``n = d phi/du x d phi/dv / |.|`` by autograd (three backward passes), rotated
  to world coordinates.
* **Orientation.** A patch is small against the surface's curvature, so each sample's
  normal is first flipped to agree with its patch's PCA normal ``e3_i``.  The ``e3_i`` are then made consistent
  over the surface by propagation along a minimum spanning tree of the patch graph
  (edges between overlapping patches, weight ``1 - |e3_i . e3_j|``; Hoppe et al. 1992 at
  patch level), and finally flipped together so that most normals point away from the
  centroid (outward test).
* **Trimming.** Each chart keeps only the samples whose nearest centre (among those whose
  normal agrees) is its own: the charts' Voronoi cells tile the surface, which removes
  overlap duplicates and the charts' unreliable borders (every cell lies within ``r`` of
  its centre, while the chart was fitted out to ``c r``).  With folds
  (:func:`geoprior.cover.build_folded_cover`) each fold is trimmed against its own centres,
  so the output holds one layer per fold.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree
from scipy.spatial import cKDTree

from geoprior.charts import chart_jacobian_normals
from geoprior.cover import Cover

__all__ = ["dense_samples", "orient_patches", "sample_charts", "outward_sign", "orient_points_mst"]


def dense_samples(cover: Cover, density: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(P, density * K, 2)`` jittered parameter samples and their ``(P, density * K)`` mask."""
    P, K, _ = cover.uv.shape
    n = cover.mask.sum(1).clip(min=1)
    base = np.repeat(cover.uv, density, axis=1)
    mask = np.repeat(cover.mask, density, axis=1)
    sigma = 0.5 / np.sqrt(n)[:, None, None]
    jitter = rng.normal(size=base.shape) * sigma
    jitter[:, ::density] = 0.0  # keep the original samples themselves
    return np.clip(base + jitter, 0.0, 1.0), mask


def orient_patches(cover: Cover) -> np.ndarray:
    """Signs ``(P,)`` making the patch normals ``e3_i`` consistent (MST propagation + outward test)."""
    e3 = cover.rotation[:, :, 2]
    P = len(e3)
    signs = np.ones(P)
    if P == 1 or cover.oriented:
        return signs  # single patch, or frames already oriented by point normals
    tree = cKDTree(cover.centres)
    pairs = tree.query_pairs(2.0 * cover.radius * 1.5, output_type="ndarray")
    if len(pairs) == 0:
        k = min(P, 4)
        _, nn = tree.query(cover.centres, k=k)
        pairs = np.array([(i, j) for i in range(P) for j in nn[i, 1:] if i < j])
    w = 1.0 - np.abs((e3[pairs[:, 0]] * e3[pairs[:, 1]]).sum(1)) + 1e-6
    graph = coo_matrix((w, (pairs[:, 0], pairs[:, 1])), shape=(P, P))
    mst = minimum_spanning_tree(graph)
    mst = mst + mst.T
    visited = np.zeros(P, dtype=bool)
    for root in range(P):
        if visited[root]:
            continue
        order, pred = breadth_first_order(mst, root, directed=False, return_predecessors=True)
        for node in order:
            visited[node] = True
            parent = pred[node]
            if parent >= 0 and (e3[node] @ e3[parent]) * signs[parent] < 0:
                signs[node] = -1.0
    return signs


def outward_sign(points: np.ndarray, normals: np.ndarray) -> float:
    """``+1`` if most normals point away from the centroid, else ``-1``."""
    return 1.0 if np.sum(np.sign(((points - points.mean(0)) * normals).sum(1))) >= 0 else -1.0


def orient_points_mst(points: np.ndarray, normals: np.ndarray, k: int = 10) -> np.ndarray:
    """Consistently orient unoriented point normals (open3d's consistent tangent plane), then outward.

    open3d builds its graph with Qhull, which fails on flat or nearly collinear clouds; those
    get the same propagation over a k-nearest-neighbour spanning tree (:func:`orient_knn_mst`).
    """
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    pcd.normals = o3d.utility.Vector3dVector(normals)
    try:
        pcd.orient_normals_consistent_tangent_plane(k)
        n = np.asarray(pcd.normals).copy()
    except RuntimeError:  # Qhull: coplanar or collinear input
        n = orient_knn_mst(points, normals, k)
    return n * outward_sign(points, n)


def orient_knn_mst(points: np.ndarray, normals: np.ndarray, k: int = 10) -> np.ndarray:
    """Flip normals to agree along a minimum spanning tree of the k-NN graph, weighted by
    ``1 - |n_i . n_j|`` (Hoppe et al. 1992): neighbours with parallel normals are trusted first."""
    from scipy.spatial import cKDTree

    k = min(k + 1, len(points))
    _, nn = cKDTree(points).query(points, k=k)
    rows = np.repeat(np.arange(len(points)), k - 1)
    cols = nn[:, 1:].ravel()
    w = 1.0 - np.abs((normals[rows] * normals[cols]).sum(1)) + 1e-6
    graph = coo_matrix((w, (rows, cols)), shape=(len(points), len(points)))
    mst = minimum_spanning_tree(graph)
    mst = mst + mst.T
    n = normals.copy()
    visited = np.zeros(len(points), dtype=bool)
    for root in range(len(points)):
        if visited[root]:
            continue
        order, pred = breadth_first_order(mst, root, directed=False, return_predecessors=True)
        for node in order:
            visited[node] = True
            if pred[node] >= 0 and n[node] @ n[pred[node]] < 0:
                n[node] = -n[node]
    return n


@torch.no_grad()
def sample_charts(model: torch.nn.Module, cover: Cover, density: int = 4, seed: int = 0, trim: bool = True,
                  chunk: int = 256, anchors: np.ndarray | None = None, outlier_factor: float = 3.0,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense oriented samples of all charts: world points ``(M, 3)``, unit normals ``(M, 3)``, patch ids ``(M,)``.

    With ``anchors`` (e.g. the charts' consensus positions of the input points), samples
    farther than ``outlier_factor`` times the anchors' median nearest-neighbour spacing
    from every anchor are removed as outliers (chart extrapolation off the data).
    """
    rng = np.random.default_rng(seed)
    uv, mask = dense_samples(cover, density, rng)
    device = next(model.parameters()).device
    pts, nrm = [], []
    for s in range(0, uv.shape[1], chunk):
        p, n = chart_jacobian_normals(model, torch.as_tensor(uv[:, s:s + chunk], dtype=torch.float32, device=device))
        pts.append(p.cpu().numpy())
        nrm.append(n.cpu().numpy())
    local = np.concatenate(pts, 1).astype(np.float64)
    nloc = np.concatenate(nrm, 1).astype(np.float64)
    # Patches are small against the surface's curvature, so every sample's normal lies
    # within 90 degrees of its patch normal e3: orient each sample by it (this also fixes
    # the orientation inside a chart that folded over itself).
    sample_sign = np.where(nloc[..., 2] < 0, -1.0, 1.0)
    nloc = nloc * sample_sign[..., None]
    signs = orient_patches(cover)
    world = cover.to_world(local)
    wnorm = cover.normals_to_world(nloc) * signs[:, None, None]
    pid = np.broadcast_to(np.arange(cover.n_patches)[:, None], mask.shape)
    world, wnorm, pid = world[mask], wnorm[mask], pid[mask]
    ok = np.isfinite(world).all(1) & np.isfinite(wnorm).all(1)
    world, wnorm, pid = world[ok], wnorm[ok], pid[ok]
    flip = outward_sign(world, wnorm)
    wnorm *= flip
    if trim and cover.n_patches > 1:
        e3 = cover.rotation[:, :, 2] * (orient_patches(cover) * flip)[:, None]
        keep = np.zeros(len(world), dtype=bool)
        # Each fold's charts tile the surface on their own (the folds are independent
        # estimates of it, kept side by side for the mesher to average).
        for g in range(cover.n_groups):
            ids = np.flatnonzero(cover.group == g)
            rows = np.flatnonzero(cover.group[pid] == g)
            if len(ids) == 0 or len(rows) == 0:
                continue
            k = min(4, len(ids))
            _, near = cKDTree(cover.centres[ids]).query(world[rows], k=k)
            near = ids[near.reshape(len(rows), k)]
            agree = (e3[near] * wnorm[rows, None, :]).sum(-1) > 0
            # Nearest centre whose patch faces the same way (thin sheets keep both sides).
            first = np.where(agree.any(1), near[np.arange(len(rows)), agree.argmax(1)], near[:, 0])
            keep[rows] = first == pid[rows]
        world, wnorm, pid = world[keep], wnorm[keep], pid[keep]
    if anchors is not None and len(anchors) > 2 and outlier_factor > 0:
        tree = cKDTree(anchors)
        spacing = float(np.median(tree.query(anchors, k=2)[0][:, 1]))
        keep = tree.query(world, k=1)[0] <= outlier_factor * spacing
        world, wnorm, pid = world[keep], wnorm[keep], pid[keep]
    return world, wnorm, pid
