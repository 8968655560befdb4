"""Figures and files of EIT reconstructions: PNG maps, segmentation vs truth, XDMF.

* :func:`save_conductivity_png`: the cell conductivities on the mesh (``tripcolor``).
* :func:`save_comparison_png`: one row per reconstruction (conductivity map and its
  segmentation) beside the truth; columns share colour scales.
* :func:`save_xdmf`: the conductivity as a DG0 field ``sigma`` for ParaView
  (``dolfinx.io.XDMFFile``).

JSON files are written by :func:`shared.result.write_json`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["save_conductivity_png", "save_comparison_png", "save_xdmf", "SEG_CMAP"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _seg_cmap():
    from matplotlib.colors import ListedColormap

    # 0 water (light), 1 resistive (blue), 2 conductive (red)
    return ListedColormap(["#f2f2f2", "#2166ac", "#b2182b"])


SEG_CMAP = _seg_cmap


def _tripcolor(ax, problem, sigma, vmin=None, vmax=None, cmap="viridis"):
    from matplotlib.tri import Triangulation

    p = problem.points
    tri = Triangulation(p[:, 0], p[:, 1], problem.cells)
    im = ax.tripcolor(tri, facecolors=sigma, vmin=vmin, vmax=vmax, cmap=cmap, shading="flat")
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def save_conductivity_png(problem, sigma: np.ndarray, path: str | Path, title: str = "",
                          label: str = "sigma (S/m)", cmap: str = "viridis") -> Path:
    """A cell field on the mesh (the conductivity, or its std with ``label``/``cmap``) as PNG."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=100)
    im = _tripcolor(ax, problem, sigma, cmap=cmap)
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def save_comparison_png(problem, recs: Sequence, path: str | Path, title: str = "") -> Path:
    """Rows: reconstructions (:class:`shared.result.Result`: conductivity, segmentation);
    last column: the truth."""
    plt = _plt()
    n = len(recs)
    has_truth = problem.truth is not None
    ncols = 3 if has_truth else 2
    fig, axes = plt.subplots(n, ncols, figsize=(2.6 * ncols, 2.4 * n), dpi=90, squeeze=False)
    cmap = _seg_cmap()
    for r, rec in enumerate(recs):
        sigma = rec.arrays["sigma"]
        lo, hi = np.percentile(sigma, [1, 99])
        im = _tripcolor(axes[r, 0], problem, sigma, vmin=lo, vmax=hi)
        fig.colorbar(im, ax=axes[r, 0], fraction=0.046, pad=0.02)
        axes[r, 0].set_title(f"{rec.method}: sigma (S/m)", fontsize=8)
        axes[r, 1].imshow(rec.arrays["segmentation"], cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
        score = rec.metrics.get("score")
        label = f"segmented, score {score:.3f}" if score is not None else "segmented"
        axes[r, 1].set_title(f"{label}\n{rec.metrics['time_s']:.1f} s", fontsize=8)
        axes[r, 1].set_xticks([])
        axes[r, 1].set_yticks([])
        if has_truth:
            axes[r, 2].imshow(problem.truth, cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
            axes[r, 2].set_title("truth", fontsize=8)
            axes[r, 2].set_xticks([])
            axes[r, 2].set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def save_xdmf(problem, sigma: np.ndarray, path: str | Path, name: str = "sigma") -> Path:
    """Write the DG0 conductivity (with its mesh) as XDMF + HDF5 for ParaView."""
    import dolfinx_solver  # noqa: F401
    import dolfinx
    from dolfinx.io import XDMFFile

    model = problem.model
    mesh = model.fe.mesh
    f = dolfinx.fem.Function(model.Q, name=name)
    # DG0 dof of cell c is the first (only) entry of its dofmap row.
    dofs = np.asarray(model.Q.dofmap.list)[:, 0]
    f.x.array[dofs] = np.asarray(sigma, dtype=f.x.array.dtype)
    path = Path(path)
    with XDMFFile(mesh.comm, str(path), "w") as xf:
        xf.write_mesh(mesh)
        xf.write_function(f)
    return path
