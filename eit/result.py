"""What every reconstruction method returns, and how it is scored.

A :class:`Reconstruction` holds the cell conductivities ``sigma (C,)`` (S/m) on the
inversion mesh, their image on the 256x256 KTC pixel grid, the three-class Otsu
segmentation of the contrast image and the metrics:

* ``score``: the KTC score of the segmentation against the truth (when one is known);
* ``rel_l2``: ``||sigma - sigma_true||_{L2} / ||sigma_true||_{L2}`` over the mesh (area
  weighted; when the true conductivity is known);
* ``time_s``: wall time of the method (s).

The segmentation is computed on the pixels inside the tank from the log-contrast
``log(sigma / sigma_bg)`` (conductive and resistive changes of the same factor weigh the
same), or from the linear change ``sigma - sigma_bg`` (``contrast="linear"``, what the
organisers' linearised method segments).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from eit.score import ktc_score, segment

__all__ = ["Reconstruction", "finish"]


@dataclass
class Reconstruction:
    method: str
    sigma: np.ndarray
    image: np.ndarray
    segmentation: np.ndarray
    metrics: dict
    history: dict = field(default_factory=dict)


def finish(problem, sigma: np.ndarray, method: str, time_s: float, contrast: str = "log",
           history: dict | None = None, **extra) -> Reconstruction:
    """Grid image, segmentation and metrics of cell conductivities ``sigma``."""
    sigma = np.asarray(sigma, dtype=np.float64).reshape(-1)
    if contrast == "log":
        c = np.log(np.clip(sigma, 1e-12, None) / problem.sigma_bg)
    elif contrast == "linear":
        c = sigma - problem.sigma_bg
    else:
        raise ValueError(f"contrast must be 'log' or 'linear', got {contrast!r}")
    grid = problem.grid
    image = grid(sigma)
    seg = segment(grid(c), mask=grid.inside)
    metrics: dict = {"method": method, "time_s": float(time_s)}
    if problem.truth is not None:
        metrics["score"] = float(ktc_score(problem.truth, seg))
    if problem.sigma_true is not None:
        a = problem.model.cell_areas
        metrics["rel_l2"] = float(np.sqrt(np.sum(a * (sigma - problem.sigma_true) ** 2) / np.sum(a * problem.sigma_true**2)))
    if np.all(sigma > 0):
        metrics["chi2"] = problem.chi2(sigma)
    metrics.update(extra)
    return Reconstruction(method, sigma, image, seg, metrics, history or {})
