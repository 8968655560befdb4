"""How a conductivity becomes a :class:`shared.result.Result`: image, segmentation, scores, files.

Every EIT reconstructor returns a :class:`shared.result.Result` whose ``arrays`` hold the
cell conductivities ``sigma (C,)`` (S/m) on the inversion mesh, their ``image`` on the
256x256 KTC pixel grid and the three-class Otsu ``segmentation`` of the contrast image,
and whose ``metrics`` are:

* ``score``: the KTC score of the segmentation against the truth (when one is known);
* ``rel_l2``: ``||sigma - sigma_true||_{L2} / ||sigma_true||_{L2}`` over the mesh (area
  weighted; when the true conductivity is known);
* ``chi2``: the mean squared noise-weighted misfit (for a positive ``sigma``);
* ``time_s``: wall time of the method (s); and method-specific entries (iterations, ...).

The segmentation is computed on the pixels inside the tank from the log-contrast
``log(sigma / sigma_bg)`` (conductive and resistive changes of the same factor weigh the
same), or from the linear change ``sigma - sigma_bg`` (``contrast="linear"``, what the
organisers' linearised method segments).  The Otsu histogram counts the tank's pixels
(``segment_region="tank"``), or the whole square grid with the pixels outside the tank set to 0
(``segment_region="square"``: the organisers' pixel interpolation, which the faithful one-step
method keeps).  ``files`` writes ``sigma_<method>.png`` (map on
the mesh) and ``sigma_<method>.xdmf`` (DG0 field for ParaView, with its ``.h5``).

:func:`run_summary` is the ``metrics.json`` of a run of several methods on one problem.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from shared.result import Result

from eit.score import ktc_score, segment

__all__ = ["conductivity_metrics", "conductivity_result", "run_summary", "file_names", "segmentation_scores"]


def conductivity_metrics(problem, sigma: np.ndarray, contrast: str = "log",
                         segment_region: str = "tank") -> tuple[np.ndarray, np.ndarray, dict]:
    """``(image, segmentation, metrics)`` of cell conductivities ``sigma`` (module docstring);
    ``segment_region``: ``"tank"`` or ``"square"``, the pixels the Otsu histogram counts."""
    if contrast == "log":
        c = np.log(np.clip(sigma, 1e-12, None) / problem.sigma_bg)
    elif contrast == "linear":
        c = sigma - problem.sigma_bg
    else:
        raise ValueError(f"contrast must be 'log' or 'linear', got {contrast!r}")
    grid = problem.grid
    image = grid(sigma)
    if segment_region == "tank":
        seg = segment(grid(c), mask=grid.inside)
    elif segment_region == "square":
        seg = segment(grid(c, fill=0.0))
    else:
        raise ValueError(f"the segmentation region must be 'tank' or 'square', got {segment_region!r}")
    metrics: dict = {}
    if problem.truth is not None:
        metrics["score"] = float(ktc_score(problem.truth, seg))
    if problem.sigma_true is not None:
        a = problem.model.cell_areas
        err2 = np.sum(a * (sigma - problem.sigma_true) ** 2)
        metrics["rel_l2"] = float(np.sqrt(err2 / np.sum(a * problem.sigma_true**2)))
    if np.all(sigma > 0):
        metrics["chi2"] = problem.chi2(sigma)
    return image, seg, metrics


def segmentation_scores(problem, sigma: np.ndarray, min_contrasts=(0.0, 0.1, 0.2, 0.3),
                        phase_values: np.ndarray | None = None) -> dict[str, float]:
    """KTC score of the log-contrast segmented with each ``min_contrast`` of
    :func:`eit.score.segment` (0: plain Otsu); a study of the segmentation rule.

    ``phase_values`` (``(2,)`` or ``(K, 2)``: the fitted log-contrasts of the resistive and
    conductive phases of a phase head) adds ``"phase"``: resistive below half the resistive
    value, conductive above half the conductive one (the members' values averaged).
    """
    grid = problem.grid
    c = grid(np.log(np.clip(np.asarray(sigma, dtype=np.float64), 1e-12, None) / problem.sigma_bg))
    out = {f"{t:g}": float(ktc_score(problem.truth, segment(c, mask=grid.inside, min_contrast=t)))
           for t in min_contrasts}
    if phase_values is not None:
        v_res, v_con = np.asarray(phase_values, dtype=np.float64).reshape(-1, 2).mean(axis=0)
        seg = np.where(c < 0.5 * v_res, 1, np.where(c > 0.5 * v_con, 2, 0)).astype(np.uint8)
        out["phase"] = float(ktc_score(problem.truth, np.where(grid.inside, seg, 0)))
    return out


def file_names(method: str) -> list[str]:
    """The files a method's result writes (the XDMF's HDF5 companion included)."""
    return [f"sigma_{method}.png", f"sigma_{method}.xdmf", f"sigma_{method}.h5"]


def conductivity_result(problem, sigma: np.ndarray, method: str, time_s: float, contrast: str = "log", *,
                        segment_region: str = "tank", config: dict | None = None, fit: Any = None,
                        info: dict | None = None, **extra) -> Result:
    """The :class:`shared.result.Result` of cell conductivities ``sigma`` (module docstring);
    ``extra`` entries are added to the metrics."""
    from eit.plot import save_conductivity_png, save_xdmf

    sigma = np.asarray(sigma, dtype=np.float64).reshape(-1)
    image, seg, scores = conductivity_metrics(problem, sigma, contrast, segment_region)
    metrics = {"method": method, "time_s": float(time_s), **scores, **extra}
    files = {
        f"sigma_{method}.png": lambda path: save_conductivity_png(problem, sigma, path, title=method),
        f"sigma_{method}.xdmf": lambda path: save_xdmf(problem, sigma, path),
    }
    return Result(method=method, arrays={"sigma": sigma, "image": image, "segmentation": seg}, metrics=metrics,
                  timings={"reconstruct_s": float(time_s)}, config=dict(config or {}), fit=fit,
                  info=dict(info or {}), files=files)


def run_summary(problem, results: Sequence[Result], setup_s: float | None = None) -> dict:
    """``metrics.json`` of methods run on one problem: the problem's size and background, then
    per method its metrics (``methods``) and settings (``config``)."""
    summary = {"problem": problem.name, "level": problem.level, "sigma_bg": problem.sigma_bg,
               "n_cells": problem.n_cells, "n_measurements": int(problem.mask.sum()), "setup_s": setup_s,
               "data": problem.info.get("data"),
               "methods": {r.method: r.metrics for r in results},
               "config": {r.method: r.config for r in results}}
    if "fine_cells" in problem.info:
        summary["simulation_cells"] = problem.info["fine_cells"]
    return summary
