"""Benchmark: does an ensemble of SURE denoisers buy quality per second?  (validation study)

On the denoising crops of ``image_restoration.py`` (validation images, noise seed 0), per
image and in one process:

* ``single``: the CLI's SURE default (:class:`shared.image.DeepImagePrior`), once per fit
  seed ``0 .. K-1`` (the seed spread of one network);
* ``mean_of_singles``: the mean image of those ``K`` separate fits, costing the sum of their
  times (the members one after the other);
* ``ensemble``: ``DeepImagePrior(members=K)``, the same ``K`` networks fitted in one pass
  of grouped convolutions (equal to the separate fits in exact arithmetic:
  ``tests/test_image_ensemble.py``), with the default's steps;
* ``ensemble_short``: the same with ``1/K`` of the steps each (the single's step budget);
* ``cbm3d`` on the same noisy input.

Reported: PSNR per image and method, mean PSNR, mean wall time, and the gain of each over
the single fit of seed 0.  The crops default to 128 px so the study fits in minutes; the
restoration benchmark's 256 px crops are ``--crop 256``.

Usage::

    python benchmarks/image_ensemble.py                    # sigma 25, 128 px, K = 3, all 6 images
    python benchmarks/image_ensemble.py --crop 256 --images 2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.image import DeepImagePrior
from shared.image.tasks import SURE_DEFAULTS
from shared.provenance import run_record
from shared.result import write_json

import image_restoration as R  # the sibling script: its cases, baselines and DIP runner





def _fit(case: Any, **settings: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """The DIP's result image (input size) and its PSNR, SSIM, time and members' PSNRs."""
    rec = DeepImagePrior(net=R.NET, **settings).reconstruct(case.problem)
    p, s = case.score(rec.arrays["result"])
    out = {"psnr": p, "ssim": s, "wall_time_s": rec.metrics["wall_time_s"], "iterations": rec.config["iterations"]}
    if "member_psnr" in rec.metrics:
        out["member_psnr"] = rec.metrics["member_psnr"]
    return rec.arrays["result"], out


def run_image(case: Any, members: int) -> dict[str, Any]:
    """Every method of the module docstring on one case."""
    t0 = time.perf_counter()
    base = case.baselines["cbm3d"]["-"]()
    row: dict[str, Any] = {"image": case.image, "cbm3d": {"psnr": case.score(base)[0],
                                                           "wall_time_s": time.perf_counter() - t0}}
    singles = [_fit(case, seed=s) for s in range(members)]
    row["single"] = {str(s): r for s, (_, r) in enumerate(singles)}
    mean_image = torch.stack([img for img, _ in singles]).mean(0)
    row["mean_of_singles"] = {"psnr": case.score(mean_image)[0],
                              "wall_time_s": sum(r["wall_time_s"] for _, r in singles)}
    row["ensemble"] = _fit(case, seed=0, members=members)[1]
    short = max(1, round(SURE_DEFAULTS["iterations"] / members))
    row["ensemble_short"] = _fit(case, seed=0, members=members, iterations=short)[1]
    return row


def summarise(rows: list[dict[str, Any]], members: int) -> dict[str, Any]:
    """Mean PSNR and time per method, gains over the seed-0 single fit, the single's seed spread."""
    methods = {"single_seed0": lambda r: r["single"]["0"], "mean_of_singles": lambda r: r["mean_of_singles"],
               "ensemble": lambda r: r["ensemble"], "ensemble_short": lambda r: r["ensemble_short"],
               "cbm3d": lambda r: r["cbm3d"]}
    mean = {m: float(np.mean([get(r)["psnr"] for r in rows])) for m, get in methods.items()}
    secs = {m: float(np.mean([get(r)["wall_time_s"] for r in rows])) for m, get in methods.items()}
    per_seed = {str(s): float(np.mean([r["single"][str(s)]["psnr"] for r in rows])) for s in range(members)}
    return {"mean_psnr": mean, "mean_time_s": secs,
            "gain_over_single_db": {m: v - mean["single_seed0"] for m, v in mean.items()},
            "single_mean_psnr_per_seed": per_seed,
            "gain_of_ensemble_over_worst_and_best_seed_db": [mean["ensemble"] - min(per_seed.values()),
                                                            mean["ensemble"] - max(per_seed.values())],
            "grouped_over_sequential_time": secs["ensemble"] / secs["mean_of_singles"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sigma", type=int, choices=R.SIGMAS, default=25, help="noise std (/255) (default: 25)")
    p.add_argument("--crop", type=int, default=128, help="centre crop in pixels (default: 128)")
    p.add_argument("--members", type=int, default=3, help="ensemble size K (default: 3)")
    p.add_argument("--images", type=int, default=None, help="first N crops (default: all 6)")
    p.add_argument("--out", type=Path, default=R.RESULTS / "image_ensemble.json")
    args = p.parse_args(argv)
    if args.members < 2 or args.crop < 64 or (args.images is not None and args.images < 1):
        p.error("--members must be >= 2, --crop >= 64 and --images >= 1")
    R.B._import_bm3d()
    t0 = time.perf_counter()
    rows = []
    for name, source in list(R.COLOUR_IMAGES.items())[:args.images]:
        rows.append(run_image(R.denoise_case(name, source, args.sigma, args.crop), args.members))
        r = rows[-1]
        print(f"{name}: cbm3d {r['cbm3d']['psnr']:.2f}, single " + " ".join(f"{v['psnr']:.2f}" for v in
              r["single"].values()) + f", mean of singles {r['mean_of_singles']['psnr']:.2f}, ensemble "
              f"{r['ensemble']['psnr']:.2f} ({r['ensemble']['wall_time_s']:.0f} s), short "
              f"{r['ensemble_short']['psnr']:.2f} ({r['ensemble_short']['wall_time_s']:.0f} s)", flush=True)
    report = {"benchmark": "image_ensemble: K SURE denoisers averaged, grouped in one pass or one after another",
              "validation_only": True, "sigma_255": args.sigma, "crop": args.crop, "members": args.members,
              **summarise(rows, args.members), "per_image": rows, "total_time_s": time.perf_counter() - t0}
    report.update(run_record("cpu"))
    write_json(args.out, report)
    for m, v in report["mean_psnr"].items():
        print(f"{m:16s} {v:6.2f} dB  {report['mean_time_s'][m]:6.1f} s  {report['gain_over_single_db'][m]:+.2f} dB")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
