"""Set5 x4 super-resolution with the deep image prior, scored the standard way.

For each Set5 image (``../shared/data/images/set5``): the ground truth is cropped to a
multiple of the scale, the low-resolution input is its anti-aliased (bicubic-kernel)
down-sampling by 4 (:class:`shared.operators.Downsample`), and the network is fitted so
that its down-sampled output matches the input.  PSNR follows the super-resolution
convention: on the Y channel (ITU-R BT.601; Set5 here is grey already) after cropping
``scale`` pixels from each border (:func:`shared.metrics.psnr_y`).  Bicubic up-sampling
is the baseline.

Writes ``set5_x4.png`` (one row per image: bicubic, DIP, ground truth) and
``set5_x4.json`` (per image and mean PSNR) into ``--out``.

Run: ``python examples/image_superres_set5.py --out out/set5`` (reduced:
``--images butterfly bird --iterations 500``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from shared.image import NETS, DeepImagePrior, read_image, superres_problem
from shared.image.figures import grid
from shared.metrics import psnr_y
from shared.operators import Downsample
from shared.paths import require_data
from shared.result import write_json

IMAGES = ("baby", "bird", "butterfly", "head", "woman")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/examples/set5"))
    parser.add_argument("--images", nargs="+", choices=IMAGES, default=list(IMAGES))
    parser.add_argument("--scale", type=int, choices=(4, 8), default=4)
    parser.add_argument("--net", choices=tuple(NETS), default="skip")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--stop", choices=("eswmv", "none"), default="eswmv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    s = args.scale

    # ## The reconstructor: the prior network fitted so that its down-sampled output matches y
    dip = DeepImagePrior(net=args.net, iterations=args.iterations, stop=args.stop, seed=args.seed)
    rows, report = [], {"scale": s, "psnr": "Y channel, border of scale pixels cropped", "images": {}}
    for name in args.images:
        # ## The problem: y = D_s x (anti-aliased s-fold down-sampling), x the ground truth
        hr = read_image(require_data("images", "set5", f"{name}.png"), name=name)
        h, w = hr.shape[-2:]
        hr = hr[..., : h - h % s, : w - w % s]  # ground truth cropped to a multiple of the scale
        lr = Downsample(s).A(hr).clamp(0, 1)
        problem = superres_problem(lr, multiple=NETS[args.net].multiple, scale=s, reference=hr, seed=args.seed)
        rec = dip.set_params(progress=False if args.quiet else name).reconstruct(problem)
        result = rec.arrays["result"]
        # ## Scores: Y-channel PSNR with a border of s pixels cropped; bicubic as the baseline
        bicubic = problem.geometry.undo(problem.observation, scale=s)
        p_dip = float(psnr_y(result, hr, s))
        p_bic = float(psnr_y(bicubic, hr, s))
        report["images"][name] = {"hr_size": [hr.shape[-2], hr.shape[-1]], "psnr_y_dip": p_dip,
                                  "psnr_y_bicubic": p_bic, "iterations_run": rec.metrics["iterations_run"],
                                  "selected_iteration": rec.metrics["selected_iteration"],
                                  "time_s": rec.metrics["wall_time_s"]}
        rows.append([(f"{name}: bicubic {p_bic:.2f} dB", bicubic), (f"DIP {p_dip:.2f} dB", result),
                     ("ground truth", hr)])
        print(f"{name:10s} bicubic {p_bic:6.2f} dB   DIP {p_dip:6.2f} dB   ({rec.metrics['wall_time_s']:.0f} s)")
    n = len(report["images"])
    report["mean_psnr_y_dip"] = sum(v["psnr_y_dip"] for v in report["images"].values()) / n
    report["mean_psnr_y_bicubic"] = sum(v["psnr_y_bicubic"] for v in report["images"].values()) / n
    print(f"mean       bicubic {report['mean_psnr_y_bicubic']:6.2f} dB   DIP {report['mean_psnr_y_dip']:6.2f} dB")
    grid(args.out / f"set5_x{s}.png", rows, panel_inches=2.6, suptitle=f"Set5 x{s} (Y-PSNR, border {s} cropped)")
    write_json(args.out / f"set5_x{s}.json", report)
    return report


if __name__ == "__main__":
    main()
