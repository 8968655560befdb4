"""An RGB image as one chart ``phi: [0, 1]^2 -> R^3`` (the deep geometric prior's seed experiment).

The pixel grid is the parameter domain and the colours are the chart's values, so an
image is a 2-D surface in colour space.  One ReLU chart (the same
:class:`geoprior.charts.ChartPrior` as the patches use, with one member) is fitted by
``shared.fit.fit`` to the pixels with a squared error; the fitting curve (PSNR against
the image, per iteration) shows the prior's spectral bias: the coarse layout is fitted
within a few hundred steps, edges and texture much later.

Uses ``dip/F16.png`` from the real-data folder when present (resized to 64x64), else
scikit-image's bundled astronaut.  Writes ``image_chart.png`` and ``image_chart.json``::

    python examples/geoprior_image_chart.py out/geoprior_image_chart
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from geoprior import ChartPrior
from shared.fit import Objective, Optimiser, Tracking, fit
from shared.paths import shared_data_dir
from shared.result import write_json


def load_image(size: int = 128) -> tuple[np.ndarray, str]:
    """The image ``(size, size, 3)`` in [0, 1] and its name."""
    from skimage.transform import resize

    root = shared_data_dir()
    path = root / "images" / "dip" / "F16.png" if root is not None else None
    if path is not None and path.exists():
        from skimage.io import imread

        img, name = imread(path)[..., :3], "F16.png"
    else:
        from skimage.data import astronaut

        img, name = astronaut(), "astronaut (scikit-image)"
    img = resize(img, (size, size), anti_aliasing=True).astype(np.float32)
    return img, name


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """``-10 log10 mean((clip(x, 0, 1) - ref)^2)`` in dB."""
    return float(-10 * torch.log10(((x.clamp(0, 1) - ref) ** 2).mean()))


def main(out_dir: str | Path = "out/geoprior_image_chart", iterations: int = 1000, size: int = 64) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # ## The measurement
    # The pixel centres u = ((j + 1/2) / w, (i + 1/2) / h) in [0, 1]^2 are the parameter
    # domain and the colours y(u) in R^3 the values: the image is one 2-D surface in colour
    # space, y of shape (1, h w, 3) (one chart of h w samples).
    img, name = load_image(size)
    h, w, _ = img.shape
    v, u = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    uv = torch.tensor(np.stack([u, v], -1).reshape(1, -1, 2), dtype=torch.float32)
    y = torch.tensor(img.reshape(1, -1, 3))

    # ## The prior
    # One ReLU chart phi(u) = MLP(u - 1/2) of widths (128, 128, 128): the same ChartPrior
    # the patches use, with one member.
    torch.manual_seed(0)
    chart = ChartPrior(1, hidden=(128, 128, 128))

    # ## The fit
    # theta* = argmin ||phi_theta(u) - y||^2 / (3 h w)  (identity physics, mean squared
    # error), 1000 Adam steps at lr 1e-3; the PSNR against the image is tracked every 10
    # steps and three outputs are kept for the figure.
    snapshots: dict[int, np.ndarray] = {}
    keep = {30, 200, iterations - 1}

    def snap(record) -> None:
        if record.iteration in keep:
            snapshots[record.iteration] = record.output.reshape(h, w, 3).clamp(0, 1).cpu().numpy()

    res = fit(chart, uv, Objective(y), optimiser=Optimiser(lr=1e-3, iterations=iterations),
              tracking=Tracking({"psnr": psnr}, reference=y, every=10), callbacks=[snap], seed=0,
              progress="image chart")
    final_psnr = psnr(res.final, y)

    # ## The figure: the image, three outputs and the fitting curve
    fig = plt.figure(figsize=(10, 2.6), dpi=100)
    axes = [fig.add_subplot(1, 5, i + 1) for i in range(5)]
    axes[0].imshow(img)
    axes[0].set_title(name, fontsize=8)
    for ax, k in zip(axes[1:4], sorted(snapshots)):
        ax.imshow(snapshots[k])
        ax.set_title(f"chart, iteration {k + 1}", fontsize=8)
    for ax in axes[:4]:
        ax.set_axis_off()
    axes[4].plot(np.array(res.history["metric_iteration"]) + 1, res.history["psnr"])
    axes[4].set_xscale("log")
    axes[4].set_xlabel("iteration", fontsize=8)
    axes[4].set_ylabel("PSNR (dB)", fontsize=8)
    axes[4].set_title("fitting curve", fontsize=8)
    axes[4].tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(out / "image_chart.png")
    plt.close(fig)
    report = {"image": name, "size": [h, w], "iterations": iterations, "final_psnr_db": final_psnr,
              "psnr_at": {str(i + 1): p for i, p in zip(res.history["metric_iteration"], res.history["psnr"])
                          if (i + 1) in (1, 11, 101, 501, iterations)}, "wall_s": res.wall_time_s}
    write_json(out / "image_chart.json", report)
    print(f"image chart: PSNR {final_psnr:.2f} dB after {iterations} iterations ({res.wall_time_s:.0f} s)")
    return report


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out/geoprior_image_chart")
