"""Inputs with a known clean surface: uniform samples and simulated range scans of a mesh.

Two ways of turning a clean mesh (bounding-box diagonal ``D``) into the cloud a user has:

* :func:`uniform_samples`: ``n`` points uniform by area plus isotropic Gaussian noise
  ``N(0, (noise D)^2 I)`` -- the textbook input;
* :func:`range_scan`: what a triangulation or time-of-flight scanner delivers.  Pinhole
  cameras at ``views`` viewpoints around the object cast one ray per pixel through open3d's
  ``RaycastingScene``; a ray that hits the surface at depth ``t`` gives the point
  ``o + (t + e) d`` with range noise ``e ~ N(0, (noise D)^2)`` *along the ray*.  Hence
  the properties of real scans the uniform input lacks: density falls with distance and
  with the angle of incidence (a pixel's footprint grows as ``t^2 / cos``), nothing is
  seen where no viewpoint looks (occlusion holes, concave pockets, the underside when the
  viewpoints stay above it), grazing hits (``|cos| < min_cos``) drop out, and a fraction
  ``outliers`` of the returns are range errors ("mixed pixels") displaced along their ray
  by ``U(-outlier_range, outlier_range) D``.  The views' returns are merged and
  subsampled uniformly at random to exactly ``n`` points, which keeps their uneven density.

Both are deterministic functions of their ``seed``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["uniform_samples", "range_scan", "view_directions", "Scan"]


def _diagonal(vertices: np.ndarray) -> float:
    return float(np.linalg.norm(vertices.max(0) - vertices.min(0)))


def uniform_samples(mesh, n: int, noise: float, seed: int = 0) -> np.ndarray:
    """``n`` points uniform by area on ``mesh`` plus ``N(0, (noise D)^2 I)``: ``(n, 3)``."""
    import trimesh

    points, _ = trimesh.sample.sample_surface(mesh, n, seed=seed)
    rng = np.random.default_rng(seed + 7_919)
    return np.asarray(points) + rng.normal(scale=noise * _diagonal(mesh.vertices), size=(n, 3))


def view_directions(views: int, rng: np.random.Generator, min_elevation: float = -20.0,
                    max_elevation: float = 60.0) -> np.ndarray:
    """``views`` unit directions from the object to the cameras ``(views, 3)``: azimuths spread
    evenly around the object with a random offset and jitter, elevations uniform in
    ``[min_elevation, max_elevation]`` degrees (a scanner on a tripod rarely looks from below)."""
    az = 2 * np.pi * (np.arange(views) + rng.uniform(0, 1) + rng.uniform(-0.2, 0.2, views)) / views
    el = np.deg2rad(rng.uniform(min_elevation, max_elevation, views))
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], 1)


@dataclass
class Scan:
    """A simulated scan: ``points`` ``(n, 3)``, the ``view`` index of each point, the camera
    ``eyes`` ``(views, 3)``, which points are injected ``outlier`` s, and the returns each
    view gave before subsampling (``returns_per_view``)."""

    points: np.ndarray
    view: np.ndarray
    eyes: np.ndarray
    outlier: np.ndarray
    returns_per_view: list[int]


def _cast(scene, eye: np.ndarray, resolution: int, fov_deg: float):
    """Unit ray directions ``(R*R, 3)``, hit depths and the surface normals at the hits."""
    import open3d as o3d

    up = np.array([0.0, 0.0, 1.0]) if abs(eye[2]) < 0.95 * np.linalg.norm(eye) else np.array([0.0, 1.0, 0.0])
    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
        fov_deg=fov_deg, center=o3d.core.Tensor(np.zeros(3, dtype=np.float32)),
        eye=o3d.core.Tensor(eye.astype(np.float32)), up=o3d.core.Tensor(up.astype(np.float32)),
        width_px=resolution, height_px=resolution).numpy().reshape(-1, 6)
    rays[:, 3:] /= np.linalg.norm(rays[:, 3:], axis=1, keepdims=True)
    hit = scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))
    return rays[:, 3:].astype(np.float64), hit["t_hit"].numpy().astype(np.float64), \
        hit["primitive_normals"].numpy().astype(np.float64)


def range_scan(mesh, n: int, noise: float, views: int = 4, seed: int = 0, distance: tuple[float, float] = (1.5, 2.5),
               min_cos: float = 0.1, outliers: float = 0.002, outlier_range: float = 0.1,
               directions: np.ndarray | None = None) -> Scan:
    """Simulated range scan of ``mesh`` from ``views`` viewpoints, ``n`` points in all.

    Cameras look at the bounding-box centre from ``distance`` (a range, in diagonals, drawn
    per view) along :func:`view_directions` (or the given unit ``directions`` ``(V, 3)``);
    the field of view just covers the object.  Noise, drop-outs and outliers as in the
    module docstring; lengths are fractions of the mesh's bounding-box diagonal ``D``.
    """
    import open3d as o3d

    if n < 1 or views < 1:
        raise ValueError(f"a range scan needs n >= 1 points and views >= 1, got n={n}, views={views}")
    rng = np.random.default_rng(seed)
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    centre, diag = 0.5 * (verts.min(0) + verts.max(0)), _diagonal(verts)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor((verts - centre).astype(np.float32)),
                        o3d.core.Tensor(np.asarray(mesh.faces, dtype=np.uint32)))
    dirs = view_directions(views, rng) if directions is None else np.asarray(directions, dtype=np.float64)
    eyes = dirs * rng.uniform(*distance, len(dirs))[:, None] * diag
    resolution = _resolution(scene, eyes, n, diag, min_cos)
    pts, view, bad, counts = [], [], [], []
    for k, eye in enumerate(eyes):
        fov = 2 * np.degrees(np.arctan(0.55 * diag / np.linalg.norm(eye)))
        d, t, nrm = _cast(scene, eye, resolution, fov)
        keep = np.isfinite(t) & (np.abs((d * nrm).sum(1)) >= min_cos)
        d, t = d[keep], t[keep]
        t = t + rng.normal(scale=noise * diag, size=len(t))
        wild = rng.random(len(t)) < outliers
        t[wild] += rng.uniform(-outlier_range, outlier_range, int(wild.sum())) * diag
        pts.append(eye + t[:, None] * d)
        view.append(np.full(len(t), k))
        bad.append(wild)
        counts.append(int(keep.sum()))
    points, view_id, outlier = np.concatenate(pts), np.concatenate(view), np.concatenate(bad)
    if len(points) < n:
        raise RuntimeError(f"the scan returned {len(points)} points, fewer than the {n} asked for")
    pick = np.sort(rng.choice(len(points), n, replace=False))
    return Scan(points[pick] + centre, view_id[pick], eyes + centre, outlier[pick], counts)


def _resolution(scene, eyes: np.ndarray, n: int, diag: float, min_cos: float, probe: int = 96) -> int:
    """Pixels per side so that all views together return about 1.3 ``n`` hits (a probe cast first)."""
    hits = 0
    for eye in eyes:
        fov = 2 * np.degrees(np.arctan(0.55 * diag / np.linalg.norm(eye)))
        d, t, nrm = _cast(scene, eye, probe, fov)
        hits += int((np.isfinite(t) & (np.abs((d * nrm).sum(1)) >= min_cos)).sum())
    fraction = max(hits, 1) / (probe * probe * len(eyes))
    return int(np.ceil(np.sqrt(1.3 * n / (fraction * len(eyes))))) + 1
