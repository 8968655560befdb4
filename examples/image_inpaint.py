"""Inpainting of kate, library and vase with their masks (deep image prior).

Each image of ``../shared/data/images/dip`` comes with a mask (white = known pixel).
The pixels under the black part of the mask are hidden from the fit (``A = PixelMask``);
the network fills them in.  The images are clean, so the PSNR against the full image
measures how well the holes were filled.  ``--max-side`` shrinks the images (area
averaging; the mask with nearest neighbours) for quick runs.

Writes ``inpaint.png`` (one row per image: masked input, DIP result, original) and
``inpaint.json`` into ``--out``.

Run: ``python examples/image_inpaint.py --out out/inpaint`` (reduced:
``--max-side 128 --iterations 600``).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch.nn.functional as F

from shared.image import NETS, DeepImagePrior, inpaint_problem, read_image, read_mask, resize
from shared.image.figures import grid
from shared.metrics import psnr
from shared.paths import require_data
from shared.result import write_json

IMAGES = ("kate", "library", "vase")


def load(name: str, max_side: int | None):
    """(image, mask) of ``name``, shrunk so that the longer side is at most ``max_side``."""
    img_path = require_data("images", "dip", f"{name}.png")
    image = read_image(img_path, name=name)
    mask = read_mask(require_data("images", "dip", f"{name}_mask.png"), tuple(image.shape[-2:]), name=f"{name} mask")
    h, w = image.shape[-2:]
    if max_side and max(h, w) > max_side:
        f = max_side / max(h, w)
        size = (max(1, round(h * f)), max(1, round(w * f)))
        image = resize(image, size)
        mask = (F.interpolate(mask, size=size, mode="nearest") > 0.5).float()
    return image, mask


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/examples/inpaint"))
    parser.add_argument("--images", nargs="+", choices=IMAGES, default=list(IMAGES))
    parser.add_argument("--max-side", type=int, default=None, help="shrink images to this longer side")
    parser.add_argument("--net", choices=tuple(NETS), default="skip")
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    # ## The reconstructor
    # Noise-free data: there is no noise to over-fit, so the fit runs all iterations and
    # returns the averaged output (ES-WMV would only cut it short).
    dip = DeepImagePrior(net=args.net, iterations=args.iterations, stop="none", seed=args.seed)
    rows, report = [], {}
    for name in args.images:
        # ## The problem: A x = M .* x with the 0/1 mask M (1 = known pixel); y = M .* image
        image, mask = load(name, args.max_side)
        problem = inpaint_problem(image, multiple=NETS[args.net].multiple, mask=mask, reference=image, seed=args.seed)
        rec = dip.set_params(progress=False if args.quiet else name).reconstruct(problem)
        result, m = rec.arrays["result"], rec.metrics
        hole = 1 - mask
        # PSNR over the hidden pixels only: the MSE summed over holes / number of hole pixels.
        hole_psnr = float(psnr(result * hole, image * hole)) + 10 * math.log10(float(hole.mean()))
        report[name] = {"size": list(image.shape[-2:]), "known_fraction": float(mask.mean()), "psnr": m["psnr"],
                        "psnr_in_holes": hole_psnr, "psnr_masked_input": m["psnr_masked_input"],
                        "ssim": m["ssim"], "iterations": m["iterations_run"], "time_s": m["wall_time_s"]}
        rows.append([(f"{name}: masked ({float(mask.mean()):.0%} known)", image * mask),
                     (f"DIP {m['psnr']:.2f} dB (holes {hole_psnr:.2f})", result),
                     ("original", image)])
        print(f"{name:8s} {image.shape[-1]}x{image.shape[-2]}: PSNR {m['psnr']:.2f} dB (masked input "
              f"{m['psnr_masked_input']:.2f} dB), in holes {hole_psnr:.2f} dB, {m['wall_time_s']:.0f} s")
    # ## Figure: masked input | DIP | original, one row per image
    grid(args.out / "inpaint.png", rows, panel_inches=2.6,
         suptitle=f"DIP inpainting ({args.net}, {args.iterations} it.)")
    write_json(args.out / "inpaint.json", report)
    return report


if __name__ == "__main__":
    main()
