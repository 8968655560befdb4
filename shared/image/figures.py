"""Figures of the image front end (matplotlib, Agg backend, PNG).

* :func:`side_by_side` -- panels in one row (input / output / reference ...), each with
  a title (e.g. its PSNR).
* :func:`fit_curves` -- loss (log scale) and, when tracked, PSNR against the iteration,
  with the selected and the stop iteration marked.
* :func:`loss_curves` -- several loss curves on one log-log plot (the fitting-curve
  experiment).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from torch import Tensor  # noqa: E402

from shared.image.io import to_array  # noqa: E402

__all__ = ["side_by_side", "fit_curves", "loss_curves", "grid"]


def _as_array(img: Tensor | np.ndarray) -> np.ndarray:
    return to_array(img) if isinstance(img, Tensor) else np.clip(np.asarray(img, dtype=np.float32), 0, 1)


def _show(ax, img, title: str) -> None:
    arr = _as_array(img)
    if arr.ndim == 2:
        ax.imshow(arr, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(arr, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def side_by_side(path: str | Path, panels: Sequence[tuple[str, Tensor | np.ndarray]], panel_inches: float = 3.0,
                 suptitle: str | None = None, dpi: int = 100) -> Path:
    """Write ``panels`` (``(title, image)`` pairs) side by side to ``path``."""
    return grid(path, [list(panels)], panel_inches=panel_inches, suptitle=suptitle, dpi=dpi)


def grid(path: str | Path, rows: Sequence[Sequence[tuple[str, Tensor | np.ndarray]]], panel_inches: float = 2.6,
         suptitle: str | None = None, dpi: int = 100) -> Path:
    """Write a grid of titled images (one list of ``(title, image)`` per row)."""
    n_rows = len(rows)
    n_cols = max(len(r) for r in rows)
    size = (panel_inches * n_cols, (panel_inches + 0.45) * n_rows + (0.3 if suptitle else 0))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=size, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            if j < len(row):
                _show(axes[i][j], row[j][1], row[j][0])
            else:
                axes[i][j].axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return _save(fig, path, dpi)


def fit_curves(
    path: str | Path,
    history: Mapping[str, Sequence[float]],
    selected_iteration: int | None = None,
    stop_iteration: int | None = None,
    metric: str = "psnr",
    baseline: float | None = None,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Loss vs iteration (log scale) and ``metric`` vs iteration when it was tracked.

    ``baseline``: a horizontal reference line on the metric plot (e.g. the PSNR of the
    degraded input).  The selected iteration (the output returned) is marked.
    """
    has_metric = bool(history.get(metric)) and bool(history.get("metric_iteration"))
    fig, axes = plt.subplots(1, 2 if has_metric else 1, figsize=(9 if has_metric else 4.8, 3.4), squeeze=False)
    ax = axes[0][0]
    loss = np.asarray(history.get("loss", []), dtype=float)
    it = np.arange(1, len(loss) + 1)
    # A loss that can be negative (SURE, an unbiased estimate of the MSE) is drawn linearly.
    plot = ax.semilogy if loss.size and bool((loss > 0).all()) else ax.plot
    plot(it, loss, lw=1, label="training loss")
    if history.get("heldout"):
        ax.semilogy(it, np.asarray(history["heldout"], dtype=float), lw=1, label="held-out loss")
    _mark_and_label(ax, selected_iteration, f"selected ({selected_iteration + 1})" if selected_iteration is not None
                    else "", "loss", "both")
    if has_metric:
        ax2 = axes[0][1]
        mi = np.asarray(history["metric_iteration"]) + 1
        ax2.plot(mi, history[metric], lw=1.2, label=f"{metric} of output")
        if baseline is not None:
            ax2.axhline(baseline, color="gray", ls=":", lw=1, label=f"input ({baseline:.2f})")
        _mark_and_label(ax2, selected_iteration, "selected", metric.upper() + (" (dB)" if "psnr" in metric else ""),
                        "major")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path, dpi)


def _mark_and_label(ax, selected_iteration: int | None, label: str, ylabel: str, grid: str) -> None:
    """Mark the selected iteration (1-based on the axis), label the axes, grid and legend."""
    if selected_iteration is not None:
        ax.axvline(selected_iteration + 1, color="k", ls="--", lw=0.8, label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(True, which=grid, alpha=0.3)
    ax.legend(fontsize=8)


def loss_curves(
    path: str | Path,
    curves: Mapping[str, Sequence[float]],
    xlabel: str = "iteration",
    ylabel: str = "MSE",
    title: str | None = None,
    logx: bool = True,
    hlines: Mapping[str, float] | None = None,
    dpi: int = 100,
) -> Path:
    """Several curves on one log-scale plot (log-log when ``logx``)."""
    fig, ax = plt.subplots(figsize=(5.4, 3.8))
    for label, values in curves.items():
        v = np.asarray(values, dtype=float)
        x = np.arange(1, len(v) + 1)
        (ax.loglog if logx else ax.semilogy)(x, v, lw=1.3, label=label)
    for label, value in (hlines or {}).items():
        ax.axhline(value, ls=":", lw=1, color="gray")
        ax.text(ax.get_xlim()[0] if not logx else 1.1, value * 1.08, label, fontsize=7, color="gray")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path, dpi)


def _save(fig, path: str | Path, dpi: int) -> Path:
    """Lay out, write (creating the folder) and close a figure."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
