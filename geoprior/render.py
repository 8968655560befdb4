"""Figures of a reconstruction: input cloud, dense output and shaded mesh side by side.

Headless (matplotlib's Agg backend).  Clouds are scatter plots coloured by height (at
most ``n`` points drawn); the mesh is drawn with Lambert-like shading
``0.25 + 0.75 |n_f . l|`` of its face normals ``n_f`` against a fixed light ``l``, after
quadric decimation to at most 40,000 triangles (matplotlib draws every polygon).  All
panels share one cubic frame around their content, so shapes keep their proportions.
:func:`render_scalar_cloud` colours a cloud by a per-point value instead (e.g. the predicted
std of the dense points, next to their error against a reference on the same colour scale).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["render_comparison", "render_scalar_cloud", "plot_cloud", "plot_mesh"]

MAX_TRIANGLES = 40_000


def plot_cloud(ax, pts: np.ndarray, title: str, n: int = 15000, seed: int = 0) -> None:
    """Scatter ``pts`` ``(N, 3)`` (a random subset of ``n``) on a 3-D axis, coloured by z."""
    if len(pts) > n:
        pts = pts[np.random.default_rng(seed).choice(len(pts), n, replace=False)]
    ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], s=1.5 if len(pts) < 20000 else 0.3, c=pts[:, 2], cmap="viridis",
               linewidths=0)
    _frame(ax, pts, title)


def plot_mesh(ax, vertices: np.ndarray, faces: np.ndarray, title: str) -> None:
    """Shaded triangles of a mesh on a 3-D axis (decimated to :data:`MAX_TRIANGLES`)."""
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    v, f = vertices, faces
    if len(f) > MAX_TRIANGLES:
        v, f = _decimate(v, f, MAX_TRIANGLES)
    tri = v[f]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-20
    light = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
    shade = 0.25 + 0.75 * np.abs(n @ light)
    ax.add_collection3d(Poly3DCollection(tri, facecolors=plt.cm.gray(shade), linewidths=0))
    _frame(ax, v, title)


def _frame(ax, pts: np.ndarray, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    lo, hi = pts.min(0), pts.max(0)
    mid, half = (lo + hi) / 2, (hi - lo).max() / 2
    ax.set_xlim(mid[0] - half, mid[0] + half)
    ax.set_ylim(mid[1] - half, mid[1] + half)
    ax.set_zlim(mid[2] - half, mid[2] + half)


def _decimate(v: np.ndarray, f: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    import open3d as o3d

    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(f.astype(np.int32)))
    m = m.simplify_quadric_decimation(n)
    return np.asarray(m.vertices), np.asarray(m.triangles)


def render_comparison(path: str | Path, input_points: np.ndarray, dense: np.ndarray,
                      mesh: tuple[np.ndarray, np.ndarray] | None = None,
                      view: tuple[float, float] = (20, -60), title: str = "") -> Path:
    """Input cloud, dense output and (shaded) mesh side by side, as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    panels = 3 if mesh is not None else 2
    fig = plt.figure(figsize=(3.2 * panels, 3.4), dpi=110)
    ax = fig.add_subplot(1, panels, 1, projection="3d")
    plot_cloud(ax, input_points, f"input ({len(input_points):,} pts)")
    ax.view_init(*view)
    ax = fig.add_subplot(1, panels, 2, projection="3d")
    plot_cloud(ax, dense, f"dense output ({len(dense):,} pts)")
    ax.view_init(*view)
    if mesh is not None:
        ax = fig.add_subplot(1, panels, 3, projection="3d")
        plot_mesh(ax, mesh[0], mesh[1], f"mesh ({len(mesh[1]):,} triangles)")
        ax.view_init(*view)
    return _save(fig, path, title)


def render_scalar_cloud(path: str | Path, points: np.ndarray, values: np.ndarray, label: str,
                        error: np.ndarray | None = None, view: tuple[float, float] = (20, -60), title: str = "",
                        n: int = 15000, seed: int = 0) -> Path:
    """Points ``(N, 3)`` coloured by ``values`` ``(N,)`` (colour bar ``label``), as a PNG at ``path``.

    With ``error`` ``(N,)`` (e.g. the distance to a reference surface) a second panel shows it on
    the same colour scale, so a calibrated std and the error look alike.  The colour scale
    ends at the 99th percentile (a few extreme points do not wash out the rest); at most
    ``n`` random points are drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    pts, vals = np.asarray(points), np.asarray(values, dtype=np.float64)
    err = None if error is None else np.asarray(error, dtype=np.float64)
    if len(pts) > n:
        pick = np.random.default_rng(seed).choice(len(pts), n, replace=False)
        pts, vals, err = pts[pick], vals[pick], None if err is None else err[pick]
    top = float(np.percentile(vals, 99)) if len(vals) else 1.0
    panels = [(vals, f"{label} (mean {vals.mean():.3g})")]
    if err is not None:
        panels.append((err, f"|error| (mean {err.mean():.3g})"))
    fig = plt.figure(figsize=(3.6 * len(panels), 3.6), dpi=110)
    for i, (v, name) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), i, projection="3d")
        sc = ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], s=1.5 if len(pts) < 20000 else 0.3, c=v, cmap="magma",
                        vmin=0.0, vmax=top or 1.0, linewidths=0)
        _frame(ax, pts, name)
        ax.view_init(*view)
        fig.colorbar(sc, ax=ax, shrink=0.6, pad=0.02)
    return _save(fig, path, title)


def _save(fig, path: Path, title: str) -> Path:
    """Title, tight layout, write ``path`` (its folder made) and close the figure."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
