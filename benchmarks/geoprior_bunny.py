"""Benchmark: geoprior vs screened Poisson on the merged Stanford bunny scans.

Inputs: the ten range scans merged through ``bun.conf`` (362,272 points), as they are and
with Gaussian noise of 0.25% and 0.5% of the reference's bounding-box diagonal (0.2502 m)
added (seed 0).  Each output is scored against ``bun_zipper.ply`` with one metric:

    Chamfer-L1 = (accuracy + completeness) / 2 / diagonal,

accuracy = mean distance from 200k points sampled on the output (mesh; or the points of
a cloud) to the reference surface (open3d RaycastingScene), completeness = mean distance
from 1M points sampled on the reference to the output surface (mesh) or points (cloud);
plus F-score at 0.1% of the diagonal and Hausdorff.  Rows: our mesh, our dense cloud,
open3d screened Poisson on the input (depth 8; KNN-30 normals oriented by the consistent
tangent plane), the input itself; wall time and peak resident memory of each.

Also measured: patch-fitting throughput of the batched charts vs a loop fitting one chart
per patch (both through ``shared.fit.fit``; ``geoprior_throughput.py``, which also runs alone
and on a GPU), and the EMD choice (exact assignment vs
geomloss Sinkhorn) on a noisy torus with a known clean surface.

Writes ``benchmarks/results/geoprior.json`` (keys ``ours_chamfer``, ``poisson_chamfer``
mapping noise levels "0", "0.25", "0.5" to values, ``ours_time_s``, ``batched_speedup``,
and the full tables).  ``--quick`` runs a small subsampled version for development.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from shared.provenance import run_record


import numpy as np

from geoprior_throughput import one_fold, throughput_rows
from geoprior import DeepGeometricPrior, evaluate_against_mesh, load_conf, load_mesh
from geoprior.mesh import baseline_poisson, poisson_mesh
from shared.paths import require_data
from shared.profiling import peak_memory_mb

ROOT = Path(__file__).resolve().parent.parent
NOISE_LEVELS = ["0", "0.25", "0.5"]

# The settings used for every noise level: the defaults of DeepGeometricPrior when this
# table was measured (chosen on the bunny itself; see docs/geoprior.md).  The defaults have
# since been chosen on the validation suite (benchmarks/surfaces.py, where the bunny is one
# row); these two settings keep this script reproducing its JSON.
CONFIG: dict = {"radius": 0.03, "stopping": "none"}


def score(reference, mesh=None, points=None, n_out=200_000, n_ref=1_000_000):
    s = evaluate_against_mesh(reference, mesh=mesh, points=points, n_output=n_out, n_reference=n_ref)
    return {k: s[k] for k in ("chamfer_l1", "chamfer_l2", "accuracy", "completeness", "fscore", "hausdorff")}


def loss_choice(iterations: int = 150) -> dict:
    """Exact assignment vs Sinkhorn EMD on a noisy torus: time and Chamfer to the clean surface."""
    from geoprior.metrics import point_metrics, sample_mesh
    from geoprior.shapes import noisy_torus

    torus, noisy, diag = noisy_torus()  # the demo's torus
    clean = sample_mesh(torus.vertices, torus.faces, 50_000, seed=3)
    rows = {}
    for name in ("exact", "sinkhorn"):
        rec = DeepGeometricPrior(radius=0.06, iterations=iterations, loss=name, consistency_iterations=0, mesh=False,
                                 stopping="none",
                                 hidden=(64, 64, 64), blur=0.02)
        t0 = time.perf_counter()
        res = rec.reconstruct(noisy)
        rows[name] = {"wall_s": time.perf_counter() - t0, "fit_s": res.timings["fit_s"],
                      "dense_chamfer_l1": point_metrics(res.arrays["points"], clean, diag=diag,
                                                        backend="kdtree")["chamfer_l1"]}
    rows["input_chamfer_l1"] = point_metrics(noisy, clean, diag=diag, backend="kdtree")["chamfer_l1"]
    rows["iterations"] = iterations
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="subsample the bunny to 60k points, 100k/200k metric samples")
    parser.add_argument("--noise", nargs="+", default=NOISE_LEVELS, choices=NOISE_LEVELS)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "geoprior.json")
    args = parser.parse_args(argv)

    try:
        bunny = require_data("scans", "bunny")
    except FileNotFoundError as exc:
        # The benchmark needs the real scans; without them it is skipped, not failed.
        print(f"geoprior benchmark skipped: {exc}")
        return 0
    t0 = time.perf_counter()
    cloud = load_conf(bunny / "bun.conf")
    load_s = time.perf_counter() - t0
    reference = load_mesh(bunny / "bun_zipper.ply")
    diag = float(np.linalg.norm(reference[0].max(0) - reference[0].min(0)))
    points = cloud.points
    n_out, n_ref = 200_000, 1_000_000
    if args.quick:
        points = points[np.random.default_rng(1).choice(len(points), 60_000, replace=False)]
        n_out, n_ref = 100_000, 200_000
    rec = DeepGeometricPrior(**CONFIG)
    results: dict = {"rows": {}, "ours_chamfer": {}, "poisson_chamfer": {}, "ours_fscore": {}, "poisson_fscore": {}}
    times = []
    for level in args.noise:
        sigma = float(level) / 100 * diag
        noisy = points + np.random.default_rng(0).normal(scale=sigma, size=points.shape) if sigma > 0 else points
        rows = {}
        t0 = time.perf_counter()
        res, mem = peak_memory_mb(lambda: rec.reconstruct(noisy))
        wall = time.perf_counter() - t0
        times.append(wall)
        a = res.arrays
        rows["ours_mesh"] = {**score(reference, mesh=(a["vertices"], a["faces"]), n_out=n_out, n_ref=n_ref),
                             "time_s": wall, "peak_rss_mb": mem, "stages_s": res.timings}
        rows["ours_dense"] = {**score(reference, points=a["points"], n_out=n_out, n_ref=n_ref), "time_s": wall,
                              "peak_rss_mb": mem, "n_points": len(a["points"])}
        if not args.skip_baseline:
            t0 = time.perf_counter()
            (v, f, base_normals), mem = peak_memory_mb(
                lambda: baseline_poisson(noisy, depth=8, k=30, trim_quantile=0.0))
            rows["poisson_input"] = {**score(reference, mesh=(v, f), n_out=n_out, n_ref=n_ref),
                                     "time_s": time.perf_counter() - t0, "peak_rss_mb": mem}
            # Not the issue's baseline, shown for transparency: the same Poisson with the
            # low-density trimming our mesh gets (it removes the surface invented over holes).
            v, f = poisson_mesh(noisy, base_normals, depth=8, trim_quantile=rec.trim_quantile)
            rows["poisson_input_trimmed"] = {**score(reference, mesh=(v, f), n_out=n_out, n_ref=n_ref),
                                             "time_s": rows["poisson_input"]["time_s"]}
        rows["input"] = {**score(reference, points=noisy, n_out=n_out, n_ref=n_ref), "time_s": 0.0,
                         "n_points": len(noisy)}
        results["rows"][level] = rows
        results["ours_chamfer"][level] = rows["ours_mesh"]["chamfer_l1"]
        results["ours_fscore"][level] = rows["ours_mesh"]["fscore"]
        if "poisson_input" in rows:
            results["poisson_chamfer"][level] = rows["poisson_input"]["chamfer_l1"]
            results["poisson_fscore"][level] = rows["poisson_input"]["fscore"]
        print(f"\nnoise {level}% of the diagonal ({sigma * 1000:.3f} mm)")
        print(f"  {'row':14s} {'Chamfer-L1':>11s} {'F@0.1%':>7s} {'Hausdorff':>10s} {'time s':>7s} {'peak MB':>8s}")
        for name, r in rows.items():
            print(f"  {name:14s} {r['chamfer_l1']:11.3e} {r['fscore']:7.3f} {r['hausdorff']:10.3e} "
                  f"{r['time_s']:7.1f} {r.get('peak_rss_mb', float('nan')):8.0f}", flush=True)
    results["ours_time_s"] = max(times)
    # One fold's worth of points: the patch sizes the pipeline fits; the capped rows show
    # how the gain depends on the patch size (small patches: the loop's fixed per-step
    # cost dominates).
    tp, *by_size = throughput_rows(one_fold(points))
    results["throughput"] = tp
    results["batched_speedup"] = tp["batched_speedup"]
    results["throughput_by_patch_size"] = by_size
    results["loss_choice"] = loss_choice()
    print("EMD choice on the noisy torus:", json.dumps(results["loss_choice"]))
    targets = {}
    for level in ("0.25", "0.5"):
        if level in results["ours_chamfer"] and level in results["poisson_chamfer"]:
            below = results["ours_chamfer"][level] <= 0.8 * results["poisson_chamfer"][level]
            targets[f"noise_{level}_20pct_below_poisson"] = below
    if "0" in results["ours_chamfer"] and "0" in results["poisson_chamfer"]:
        targets["raw_within_5pct_of_poisson"] = results["ours_chamfer"]["0"] <= 1.05 * results["poisson_chamfer"]["0"]
    targets["time_under_600s"] = results["ours_time_s"] < 600
    targets["batched_speedup_at_least_20"] = results["batched_speedup"] >= 20
    results["targets_met"] = targets
    results["meta"] = {
        "input": "bun.conf merged scans", "n_input": len(points), "reference_diagonal_m": diag, "load_s": load_s,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in rec.get_params().items()},
        "metric_samples": {"output": n_out, "reference": n_ref}, "noise_seed": 0, "quick": args.quick,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, shared with other jobs (load average "
                   f"{os.getloadavg()[0]:.1f} at the end)", "torch_threads": __import__("torch").get_num_threads(),
    }
    print("targets:", json.dumps(targets))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results.update(run_record("cpu"))
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
