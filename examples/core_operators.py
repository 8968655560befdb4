"""Figure of the core forward operators and of the conv generator's Jacobian.

Top row: a 256x256 test image (scikit-image's ``camera``) and what each operator of
:mod:`shared.operators` measures: 50 % pixel mask, x4 bicubic downsampling, Gaussian blur,
a 60-angle sinogram and its filtered back-projection.  Bottom: the leading left singular
vectors of the Jacobian of the two-layer generator ``ReLU(U C) v`` (n = 128, k = 512, Gaussian
kernel of std 6 samples) --
close to sinusoids of increasing frequency.

    python examples/core_operators.py [out_dir]     (default docs/img)
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from skimage.data import camera

from shared.metrics import psnr
from shared.networks import ConvGenerator
from shared.operators import Blur, Downsample, PixelMask, Radon, gaussian_kernel


def main(out_dir: str | Path = "docs/img") -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    # ## The image and each physics A of shared.operators applied to it
    x = F.avg_pool2d(torch.as_tensor(camera(), dtype=torch.float32)[None, None] / 255, 2)  # (1,1,256,256)
    mask = PixelMask.random((256, 256), 0.5, g)
    down = Downsample(4, "bicubic")
    blur = Blur(gaussian_kernel(2.0), "reflect")
    radon = Radon(60, 256)
    sino = radon(x)
    fbp = radon.fbp(sino).clamp(0, 1)
    panels = [("image 256x256", x), ("PixelMask 50 %", mask(x)), ("Downsample x4 (64x64)", down(x)),
              ("Blur, Gaussian sigma 2", blur(x)), ("Radon, 60 angles", sino),
              (f"FBP, 60 angles ({psnr(fbp, x):.1f} dB)", fbp)]
    fig = plt.figure(figsize=(13, 5.2))
    for i, (title, img) in enumerate(panels):
        ax = fig.add_subplot(2, 6, i + 1)
        ax.imshow(img[0, 0].numpy(), cmap="gray", aspect="auto" if "Radon" in title else "equal")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    # ## The Jacobian J of the generator G(C) = ReLU(U C) v at its initialisation: J = U S V^T
    G = ConvGenerator(128, k=512, width=6.0, generator=g, dtype=torch.float64)
    U, S, _ = torch.linalg.svd(G.jacobian(), full_matrices=False)
    ax = fig.add_subplot(2, 1, 2)
    for i in range(0, 5):
        ax.plot(U[:, i].numpy() + 0.35 * i, lw=1.2, label=f"u{i + 1} (sigma={S[i]:.2f})")
    ax.set_title("ConvGenerator ReLU(UC)v, n=128, k=512, Gaussian kernel std 6: "
                 "leading left singular vectors of the Jacobian (offset)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper right", ncol=5)
    ax.set_xlabel("sample")
    fig.tight_layout()
    path = out / "core_operators.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else "docs/img"))
