"""`make demo`, image part: deep image prior denoising of an image bundled with scikit-image.

The astronaut photograph that ships with scikit-image (``skimage.data.astronaut()``) is
resized to 128x128, Gaussian noise of sigma = 25/255 is added, and the suite's light
skip network, whose input is the noisy image, is fitted by Stein's unbiased risk estimate
(SURE) with the known sigma: no clean image.  Needs no network
access and no ``../shared`` data; about 15 s on 2 CPU cores.  Writes ``result.png``, ``comparison.png``, ``curves.png``,
``metrics.json`` (and the clean / noisy inputs) into the output folder.

Run alone: ``python examples/demo_image.py --out out/demo/image``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from shared.image import NETS, DeepImagePrior, denoise_problem, resize, to_tensor, validate_array, write_image

SIZE = 128
SIGMA = 25 / 255


def bundled_image(size: int = SIZE):
    """scikit-image's astronaut, ``(1, 3, size, size)`` in [0, 1]."""
    from skimage import data

    x = to_tensor(validate_array(data.astronaut(), name="skimage astronaut"))
    return resize(x, (size, size))


def main(out_dir: str | Path = "out/demo/image", iterations: int | None = None, quiet: bool = False) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # ## The problem
    # Denoising: the physics is the identity, ``y = x + n`` with ``n ~ N(0, sigma^2)``
    # (clipped to [0, 1]).  The clean image is kept as the reference, for PSNR/SSIM only.
    clean = bundled_image()
    problem = denoise_problem(clean, multiple=NETS["skip"].multiple, sigma=SIGMA, simulate=True, seed=0)
    write_image(out / "clean.png", clean)
    write_image(out / "noisy.png", problem.y)

    # ## The prior and the reconstructor
    # The light skip U-Net ``f_theta`` maps the noisy image to its estimate and is fitted by
    # Adam (cosine-decayed step) to SURE, an unbiased estimate of the MSE to the clean image:
    # ``mean((f(y) - y)^2) - sigma^2 + 2 sigma^2 div f(y) / N``, the divergence estimated
    # with one random probe per step.  The divergence term penalises copying the noise, so
    # the fit runs its 350 steps without early stopping (``loss="mse"``: the classic DIP).
    dip = DeepImagePrior(net="skip", loss="sure", iterations=iterations, seed=0,
                         progress=False if quiet else "demo: denoise")

    # ## The result
    # ``result.arrays["result"]`` is the restored image; ``result.fit`` the engine's record.
    result = dip.reconstruct(problem)
    result.info["image"] = f"skimage.data.astronaut() resized to {SIZE}x{SIZE}"

    # ## Figures and metrics
    # result.png, comparison.png (noisy | DIP | clean), curves.png (loss and PSNR) and metrics.json.
    result.write(out)
    m = result.metrics
    how = (f"ES-WMV stopped at {m['iterations_run']} and chose iteration {m['selected_iteration']}"
           if m["stopped_by"] == "stopping" else
           f"all {m['iterations_run']} iterations run, output of iteration {m['selected_iteration']}")
    print(f"denoising {SIZE}x{SIZE} astronaut, sigma 25/255: noisy {m['psnr_noisy_input']:.2f} dB -> DIP "
          f"{m['psnr']:.2f} dB ({how}; {m['wall_time_s']:.0f} s)")
    return m


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/demo/image"))
    parser.add_argument("--iterations", type=int, default=None, help="Adam steps (default: the SURE default, 350)")
    args = parser.parse_args()
    main(args.out, iterations=args.iterations)
