"""Benchmark: the DIP's denoising, deblurring, inpainting or super-resolution default over
several fit seeds, against the classical baselines on the same input.

The restoration benchmark (``image_restoration.py``) runs the DIP with seed 0 only.  Here
each validation image of one of its denoising, deblurring, inpainting or super-resolution tasks gets one
measurement (noise or mask seed 0, exactly the benchmark's), the baselines restore it once
(CBM3D for denoising; for deblurring Richardson-Lucy, Wiener and Tikhonov on their grids, each
at the setting with the best mean over these images, and Tikhonov with GCV; biharmonic
inpainting; bicubic up-sampling, the issue's reference for super-resolution; the best of
them is the comparator), and
:class:`shared.image.DeepImagePrior` with the CLI's defaults restores it once per fit seed
(the seed draws the network's initialisation and, for SURE, the probes).  Reported per seed:
mean PSNR and the gap to the baseline; over seeds: the spread per image and the worse seed's
mean (the headline a seed cannot flatter).

Usage::

    python benchmarks/image_denoise_seeds.py                      # sigma 25, 6 crops, seeds 0 1 2
    python benchmarks/image_denoise_seeds.py --sigma 15 --seeds 1 2 --images 3
    python benchmarks/image_denoise_seeds.py --task deblur_motion --images 3   # -> image_deblur_motion_seeds.json
    python benchmarks/image_denoise_seeds.py --task inpaint --seeds 1 2       # -> image_inpaint_seeds.json
    python benchmarks/image_denoise_seeds.py --task inpaint --seeds 1 --names vase barbara
    python benchmarks/image_denoise_seeds.py --task sr4 --seeds 1 2        # -> image_sr4_seeds.json
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





#: the baselines of each kind of task (the best mean of them is the comparator)
BASELINES = {"denoise": ("cbm3d",), "deblur": ("richardson_lucy", "wiener", "tikhonov", "tikhonov_gcv"),
             "inpaint": ("biharmonic",), "sr": ("bicubic",)}


def baseline_rows(task: str, cases: list) -> tuple[str, list[dict[str, Any]]]:
    """Each case's baselines once, at the setting with the best mean over the cases; the best
    baseline's name and its record per case."""
    records = [R.run_case(case, None, progress=False) for case in cases]
    names = BASELINES[task.split("_")[0].rstrip("0123456789")]
    chosen = R.choose_settings(records)
    means = {m: float(np.mean([r["grid"][m][chosen[m]["chosen"]]["psnr"] for r in records])) for m in names}
    best = max(means, key=means.get)
    return best, [{**r["grid"][best][chosen[best]["chosen"]], "setting": chosen[best]["chosen"]} for r in records]


def run(task: str, seeds: list[int], n_images: int | None, quiet: bool,
        names: list[str] | None = None) -> dict[str, Any]:
    """Per image: the baselines once, the DIP default once per seed; the per-seed and per-image summaries.
    ``names``: only these of the task's images (after ``n_images``)."""
    cases = R.build_cases(task, n_images, quick=False)
    if names:
        unknown = sorted(set(names) - {c.image for c in cases})
        if unknown:
            raise SystemExit(f"--names: {', '.join(unknown)} not among {task}'s images "
                             f"({', '.join(c.image for c in cases)})")
        cases = [c for c in cases if c.image in names]
    baseline, bases = baseline_rows(task, cases)
    rows = []
    for case, base in zip(cases, bases):
        dips = {}
        for s in seeds:
            dip = DeepImagePrior(net=R.NET, seed=s, progress=False if quiet else f"{case.image} seed {s}")
            dips[s] = R.run_dip(case, dip, progress=False)
        rows.append({"image": case.image, "baseline": base,
                     "dip": {str(s): {k: d[k] for k in ("psnr", "ssim", "wall_time_s", "iterations_run")}
                             for s, d in dips.items()}})
        print(f"{task} {case.image}: {baseline} {base['psnr']:.2f}, dip "
              + ", ".join(f"seed {s} {d['psnr']:.2f}" for s, d in dips.items()), flush=True)
    per_seed = {str(s): float(np.mean([r["dip"][str(s)]["psnr"] for r in rows])) for s in seeds}
    base_mean = float(np.mean([r["baseline"]["psnr"] for r in rows]))
    spread = {r["image"]: float(np.ptp([v["psnr"] for v in r["dip"].values()])) for r in rows}
    worst = min(per_seed, key=per_seed.get)
    cbm3d = {"sigma_255": int(task[len("denoise"):]), "cbm3d_mean_psnr": base_mean} if baseline == "cbm3d" else {}
    return {"task": task, **cbm3d, "seeds": seeds, "images": [r["image"] for r in rows], "baseline": baseline,
            "baseline_mean_psnr": base_mean,
            "dip_mean_psnr_per_seed": per_seed, "gap_db_per_seed": {s: v - base_mean for s, v in per_seed.items()},
            "worst_seed": int(worst), "worst_seed_gap_db": per_seed[worst] - base_mean,
            "spread_db_per_image": spread, "max_spread_db": max(spread.values()),
            "dip_mean_time_s": float(np.mean([v["wall_time_s"] for r in rows for v in r["dip"].values()])),
            "per_image": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sigma", type=int, choices=R.SIGMAS, default=25,
                   help="denoising: noise std (/255) (default: 25)")
    p.add_argument("--task", choices=("denoise", *R.TASK_GROUPS["deblur"], "inpaint", *R.TASK_GROUPS["superres"]),
                   default="denoise",
                   help="denoise (at --sigma), a deblurring task, inpaint or a super-resolution scale "
                        "(default: denoise)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fit seeds (default: 0 1 2)")
    p.add_argument("--images", type=int, default=None, help="first N images (default: all of the task's)")
    p.add_argument("--names", nargs="+", default=None, help="only these images, by name (e.g. vase barbara)")
    p.add_argument("--out", type=Path, default=None,
                   help="default: results/image_denoise_seeds.json, or image_<task>_seeds.json")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if len(set(args.seeds)) < len(args.seeds) or (args.images is not None and args.images < 1):
        p.error("--seeds must be distinct and --images >= 1")
    task = f"denoise{args.sigma}" if args.task == "denoise" else args.task
    out = args.out or R.RESULTS / ("image_denoise_seeds.json" if args.task == "denoise" else f"image_{task}_seeds.json")
    if args.task == "denoise":
        R.B._import_bm3d()
    t0 = time.perf_counter()
    report = {"benchmark": f"image seeds: the DIP default for {task} over fit seeds vs the best classical baseline",
              **run(task, args.seeds, args.images, args.quiet, args.names), "total_time_s": time.perf_counter() - t0}
    report.update(run_record("cpu"))
    write_json(out, report)
    print(f"{report['baseline']} {report['baseline_mean_psnr']:.2f} dB; DIP per seed "
          + ", ".join(f"{s}: {v:.2f} ({report['gap_db_per_seed'][s]:+.2f})"
                      for s, v in report["dip_mean_psnr_per_seed"].items())
          + f"; worst seed {report['worst_seed']}, largest per-image spread {report['max_spread_db']:.2f} dB")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
