"""Benchmark: fitting all patch charts as one batched network vs one fit per patch.

Both sides run the suite's engine ``shared.fit.fit`` with the exact-assignment EMD (the
matching held fixed, so only the network is timed): the batched side fits every chart of
a cover in one :class:`geoprior.charts.ChartPrior`; the loop fits ``--loop-patches``
charts one after the other, each its own one-member ``ChartPrior`` on its unpadded patch.
Throughput is patch-iterations per second (one Adam step of one chart = one
patch-iteration); the speedup is the ratio.

The points are one fold of the merged bunny scans (90k points drawn with seed 2, as the
pipeline fits them) or any ``.npy`` cloud given with ``--points``.  Patch sizes are varied
by the cap on points per patch (a patch keeps at least the points it owns).  The batched
network blocks 16 charts at a time on a CPU and runs unblocked on a GPU (the recorded CUDA
results also hold a blocked row, timed before blocking was restricted to the CPU: 16x
slower there).

Writes ``benchmarks/results/geoprior_throughput_<device>.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from shared.provenance import run_record


import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FOLD_POINTS = 90_000


def throughput(points: np.ndarray, iterations: int = 20, loop_patches: int = 12, max_points: int | None = None,
               device: str = "cpu", block: int | None = 16) -> dict:
    """Patch-iterations per second: one batched network for all patches vs one fit per patch.

    ``max_points`` caps the patch size (default: the pipeline's cap, 1.25 x the median);
    ``block`` is the batched network's block of charts (``None``: all at once).
    """
    import torch

    from geoprior import ChartPrior, DeepGeometricPrior, ExactEMD, build_cover
    from geoprior.reconstruct import median_patch_cap
    from shared.fit import Objective, Optimiser, fit
    from shared.physics import IdentityPhysics

    cfg = DeepGeometricPrior()
    cover = build_cover(points, radius=cfg.radius, overlap=cfg.overlap,
                        max_points=max_points or median_patch_cap(points, cfg))
    dev = torch.device(device)
    uv = torch.as_tensor(cover.uv, dtype=torch.float32, device=dev)
    target = torch.as_tensor(cover.local, dtype=torch.float32, device=dev)
    mask = torch.as_tensor(cover.mask, device=dev)

    def run_batched(n_iter: int) -> float:
        torch.manual_seed(0)
        model = ChartPrior(cover.n_patches, cfg.hidden, block=block)
        objective = Objective(target, physics=IdentityPhysics(), data=ExactEMD(mask, rematch_every=0))
        # As the pipeline runs it: the network skips each patch's padding rows.
        return fit(model, uv, objective, optimiser=Optimiser(lr=cfg.lr, iterations=n_iter), device=dev,
                   model_kwargs={"lengths": torch.as_tensor(cover.sizes)}).wall_time_s

    def run_loop(n_patches: int, n_iter: int) -> float:
        t0 = time.perf_counter()
        for i in range(n_patches):
            n = int(cover.sizes[i])
            single = ChartPrior(1, cfg.hidden)
            objective = Objective(target[i:i + 1, :n], physics=IdentityPhysics(),
                                  data=ExactEMD(mask[i:i + 1, :n], rematch_every=0))
            fit(single, uv[i:i + 1, :n], objective, optimiser=Optimiser(lr=cfg.lr, iterations=n_iter), device=dev)
        return time.perf_counter() - t0

    if dev.type == "cuda":  # kernel selection and allocator warm-up are not part of the rate
        run_batched(3)
        run_loop(2, 3)
    batched = cover.n_patches * iterations / run_batched(iterations)
    loop = loop_patches * iterations / run_loop(loop_patches, iterations)
    return {"device": device, "block": block if dev.type == "cpu" else None, "n_patches": cover.n_patches,
            "padded_size": int(cover.mask.shape[1]),
            "mean_size": float(cover.sizes.mean()), "iterations": iterations,
            "batched_patch_it_per_s": batched, "loop_patch_it_per_s": loop,
            "loop_patches_timed": loop_patches, "batched_speedup": batched / loop}


def bunny_fold() -> np.ndarray | None:
    """One fold's worth (90k points, seed 2) of the merged bunny scans, or None without the data."""
    from geoprior import load_conf
    from shared.paths import require_data

    try:
        bunny = require_data("scans", "bunny")
    except FileNotFoundError as exc:
        print(f"geoprior throughput benchmark skipped: {exc}")
        return None
    return one_fold(load_conf(bunny / "bun.conf").points)


def one_fold(points: np.ndarray) -> np.ndarray:
    """A fold's worth of ``points`` (90k drawn with seed 2): the patch sizes the pipeline fits."""
    return points[np.random.default_rng(2).choice(len(points), min(FOLD_POINTS, len(points)), replace=False)]


def throughput_rows(points: np.ndarray, device: str = "cpu", iterations: int = 20, loop_patches: int = 12,
                    caps=(None, 256, 64)) -> list[dict]:
    """:func:`throughput` for each patch-size cap (None: the pipeline's), printed as a table."""
    rows = []
    print(f"{'device':6s} {'block':>5s} {'cap':>5s} {'charts':>6s} {'mean n':>6s} {'padded':>6s} "
          f"{'batched/s':>10s} {'loop/s':>8s} {'speedup':>8s}")
    for cap in caps:
        row = throughput(points, iterations, loop_patches, cap, device)
        row["cap"] = cap
        rows.append(row)
        print(f"{device:6s} {str(row['block']):>5s} {str(cap):>5s} {row['n_patches']:6d} {row['mean_size']:6.0f} "
              f"{row['padded_size']:6d} {row['batched_patch_it_per_s']:10.0f} {row['loop_patch_it_per_s']:8.1f} "
              f"{row['batched_speedup']:7.1f}x", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--points", type=Path, help=".npy cloud (N, 3) instead of the bunny fold")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--loop-patches", type=int, default=12)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch

    if args.points is not None:
        points = np.load(args.points)
        if points.ndim != 2 or points.shape[1] != 3:
            parser.error(f"{args.points}: expected an array of shape (N, 3), got {points.shape}")
    else:
        points = bunny_fold()
        if points is None:
            return 0
    rows = throughput_rows(points, args.device, args.iterations, args.loop_patches)
    cpu_name = platform.processor() or platform.machine()
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name
    results = {"meta": {"device": args.device, "device_name": device_name, "torch": torch.__version__,
                        "torch_threads": torch.get_num_threads(), "n_points": len(points),
                        "points": str(args.points) if args.points else "bunny fold (90k of the merged scans, seed 2)"},
               "rows": rows,
               "batched_speedup": max(r["batched_speedup"] for r in rows if r["cap"] is None)}
    out = args.out or ROOT / "benchmarks" / "results" / f"geoprior_throughput_{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results.update(run_record(args.device))
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
