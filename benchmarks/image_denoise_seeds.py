"""Benchmark: the SURE denoising default over several fit seeds, against CBM3D on the same input.

The restoration benchmark (``image_restoration.py``) runs the DIP with seed 0 only.  Here
each validation crop of its denoising task gets one measurement (noise seed 0, exactly the
benchmark's), CBM3D restores it once, and :class:`shared.image.DeepImagePrior` with the
CLI's defaults restores it once per fit seed (the seed draws the network's initialisation
and the SURE probes).  Reported per seed: mean PSNR and the gap to CBM3D; over seeds: the
spread per image and the worse seed's mean (the headline a seed cannot flatter).

Usage::

    python benchmarks/image_denoise_seeds.py                      # sigma 25, 6 crops, seeds 0 1 2
    python benchmarks/image_denoise_seeds.py --sigma 15 --seeds 1 2 --images 3
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from shared.image import DeepImagePrior
from shared.provenance import run_record
from shared.result import write_json

import image_restoration as R  # the sibling script: its cases, baselines and DIP runner





def run(sigma: int, seeds: list[int], n_images: int | None, quiet: bool) -> dict[str, Any]:
    """Per image: CBM3D once, the SURE default once per seed; the per-seed and per-image summaries."""
    cases = R.build_cases(f"denoise{sigma}", n_images, quick=False)
    rows = []
    for case in cases:
        base = R.run_case(case, None, progress=False)["grid"]["cbm3d"]["-"]
        dips = {}
        for s in seeds:
            dip = DeepImagePrior(net=R.NET, seed=s, progress=False if quiet else f"{case.image} seed {s}")
            dips[s] = R.run_dip(case, dip, progress=False)
        rows.append({"image": case.image, "cbm3d": base,
                     "dip": {str(s): {k: d[k] for k in ("psnr", "ssim", "wall_time_s", "iterations_run")}
                             for s, d in dips.items()}})
        print(f"sigma {sigma} {case.image}: cbm3d {base['psnr']:.2f}, dip "
              + ", ".join(f"seed {s} {d['psnr']:.2f}" for s, d in dips.items()), flush=True)
    per_seed = {str(s): float(np.mean([r["dip"][str(s)]["psnr"] for r in rows])) for s in seeds}
    cbm3d = float(np.mean([r["cbm3d"]["psnr"] for r in rows]))
    spread = {r["image"]: float(np.ptp([v["psnr"] for v in r["dip"].values()])) for r in rows}
    worst = min(per_seed, key=per_seed.get)
    return {"sigma_255": sigma, "seeds": seeds, "images": [r["image"] for r in rows], "cbm3d_mean_psnr": cbm3d,
            "dip_mean_psnr_per_seed": per_seed, "gap_db_per_seed": {s: v - cbm3d for s, v in per_seed.items()},
            "worst_seed": int(worst), "worst_seed_gap_db": per_seed[worst] - cbm3d,
            "spread_db_per_image": spread, "max_spread_db": max(spread.values()),
            "dip_mean_time_s": float(np.mean([v["wall_time_s"] for r in rows for v in r["dip"].values()])),
            "per_image": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sigma", type=int, choices=R.SIGMAS, default=25, help="noise std (/255) (default: 25)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fit seeds (default: 0 1 2)")
    p.add_argument("--images", type=int, default=None, help="first N crops (default: all 6)")
    p.add_argument("--out", type=Path, default=R.RESULTS / "image_denoise_seeds.json")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if len(set(args.seeds)) < len(args.seeds) or (args.images is not None and args.images < 1):
        p.error("--seeds must be distinct and --images >= 1")
    R.B._import_bm3d()
    t0 = time.perf_counter()
    report = {"benchmark": "image_denoise_seeds: SURE denoising default over fit seeds vs CBM3D",
              **run(args.sigma, args.seeds, args.images, args.quiet), "total_time_s": time.perf_counter() - t0}
    report.update(run_record("cpu"))
    write_json(args.out, report)
    print(f"CBM3D {report['cbm3d_mean_psnr']:.2f} dB; DIP per seed "
          + ", ".join(f"{s}: {v:.2f} ({report['gap_db_per_seed'][s]:+.2f})"
                      for s, v in report["dip_mean_psnr_per_seed"].items())
          + f"; worst seed {report['worst_seed']}, largest per-image spread {report['max_spread_db']:.2f} dB")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
