"""`make demo`, image part: deep image prior denoising of an image bundled with scikit-image.

The astronaut photograph that ships with scikit-image (``skimage.data.astronaut()``) is
resized to 128x128, Gaussian noise of sigma = 25/255 is added, and the suite's light
skip network is fitted to the noisy image with ES-WMV early stopping (no ground truth
used to stop).  Needs no network access and no ``../shared`` data; about a minute on
2 CPU cores.  Writes ``result.png``, ``comparison.png``, ``curves.png``,
``metrics.json`` (and the clean / noisy inputs) into the output folder.

Run alone: ``python examples/demo_image.py --out out/demo/image``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from shared.image.cli import write_outputs  # noqa: E402
from shared.image.io import resize, to_tensor, validate_array, write_image  # noqa: E402
from shared.image.tasks import NETS, denoise_problem, reconstruct  # noqa: E402

SIZE = 128
SIGMA = 25 / 255


def bundled_image(size: int = SIZE):
    """scikit-image's astronaut, ``(1, 3, size, size)`` in [0, 1]."""
    from skimage import data

    x = to_tensor(validate_array(data.astronaut(), name="skimage astronaut"))
    return resize(x, (size, size))


def main(out_dir: str | Path = "out/demo/image", iterations: int = 1500, quiet: bool = False) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = bundled_image()
    problem = denoise_problem(clean, multiple=NETS["skip"].multiple, sigma=SIGMA, simulate=True, seed=0)
    write_image(out / "clean.png", clean)
    write_image(out / "noisy.png", problem.y)
    rec = reconstruct(problem, net="skip", iterations=iterations, stop="eswmv", seed=0,
                      progress=False if quiet else "demo: denoise")
    write_outputs(out, rec, inputs=[], extra={"image": f"skimage.data.astronaut() resized to {SIZE}x{SIZE}"})
    m = rec.metrics
    print(f"denoising {SIZE}x{SIZE} astronaut, sigma 25/255: noisy {m['psnr_noisy_input']:.2f} dB -> DIP "
          f"{m['psnr']:.2f} dB (iteration {m['selected_iteration']} chosen by ES-WMV, "
          f"{m['iterations_run']} run, {m['wall_time_s']:.0f} s)")
    return m


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/demo/image"))
    parser.add_argument("--iterations", type=int, default=1500)
    args = parser.parse_args()
    main(args.out, iterations=args.iterations)
