"""Benchmark: the geoprior pipeline with its charts on a GPU, scored as ``geoprior.py`` scores.

The bunny at 0.25% noise (the merged scans plus Gaussian noise of 0.25% of the diagonal,
seed 0, exactly as ``benchmarks/geoprior_bunny.py``) is reconstructed with the default
configuration and ``device="cuda"``.  The GPU machine this was measured on has no open3d,
so the run is split in three steps that together are the pipeline of
:meth:`geoprior.DeepGeometricPrior.reconstruct`:

1. ``prepare`` (here, with open3d): the pipeline's own points (isolated points removed,
   subsampled to the folds) and normals (KNN-30 PCA, spanning-tree orientation) -> ``--data`` (an ``.npz``).
2. ``fit`` (on the GPU machine; numpy, scipy and torch only): ``DeepGeometricPrior(
   device="cuda", mesh=False).reconstruct(points, normals)``: cover, chart fit, consistency refit, dense
   sampling, with the stage timings -> dense cloud files in ``--dense``.
3. ``score`` (here): the same screened Poisson meshing and the same metric as
   ``geoprior.py`` -> ``benchmarks/results/geoprior_gpu.json`` beside the CPU numbers.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from shared.provenance import run_record


import numpy as np

ROOT = Path(__file__).resolve().parent.parent

NOISE = 0.25  # percent of the reference diagonal
PARTS = 4     # the dense cloud travels back in this many files (a size limit per file)


def prepare(data: Path) -> None:
    from geoprior import DeepGeometricPrior, fit_points, load_conf, load_mesh
    from shared.paths import require_data

    bunny = require_data("scans", "bunny")
    points = load_conf(bunny / "bun.conf").points
    ref = load_mesh(bunny / "bun_zipper.ply")[0]
    sigma = NOISE / 100 * float(np.linalg.norm(ref.max(0) - ref.min(0)))
    noisy = points + np.random.default_rng(0).normal(scale=sigma, size=points.shape)
    # The first steps of reconstruct(), with its generator, so that the GPU run fits the
    # same folds with the same normals as the CPU benchmark.
    cfg = DeepGeometricPrior()
    t0 = time.perf_counter()
    noisy, normals, _ = fit_points(noisy, None, cfg, np.random.default_rng(cfg.seed))
    data.parent.mkdir(parents=True, exist_ok=True)
    np.savez(data, points=noisy, normals=normals, normals_s=time.perf_counter() - t0)
    print(f"wrote {data}: {len(noisy)} points with oriented normals")


def fit_on_device(data: Path, dense: Path, device: str) -> None:
    import torch

    from geoprior import DeepGeometricPrior

    d = np.load(data)
    rec = DeepGeometricPrior(device=device, mesh=False, progress=False)
    if device.startswith("cuda"):  # context creation is not part of the pipeline's time
        torch.zeros(1, device=device)
    t0 = time.perf_counter()
    res = rec.reconstruct(d["points"], d["normals"])
    wall = time.perf_counter() - t0
    points, normals = res.arrays["points"], res.arrays["normals"]
    dense.mkdir(parents=True, exist_ok=True)
    for i, idx in enumerate(np.array_split(np.arange(len(points)), PARTS)):
        np.savez(dense / f"dense_{i}.npz", points=points[idx].astype(np.float32),
                 normals=normals[idx].astype(np.float32))
    info = res.info
    name = torch.cuda.get_device_name() if device.startswith("cuda") else device
    (dense / "run.json").write_text(json.dumps({"device": device, "device_name": name, "torch": torch.__version__,
                                                "wall_s": wall, "stages_s": res.timings, "info": info,
                                                "normals_s_cpu": float(d["normals_s"])}, indent=2))
    print(f"{name}: {wall:.1f} s without normals and mesh; stages {res.timings}")


def score(dense: Path, out: Path) -> None:
    from geoprior import DeepGeometricPrior, evaluate_against_mesh, load_mesh
    from geoprior.mesh import poisson_mesh
    from shared.paths import require_data

    run = json.loads((dense / "run.json").read_text())
    parts = [np.load(dense / f"dense_{i}.npz") for i in range(PARTS)]
    points = np.concatenate([p["points"] for p in parts]).astype(np.float64)
    normals = np.concatenate([p["normals"] for p in parts]).astype(np.float64)
    cfg = DeepGeometricPrior()
    t0 = time.perf_counter()
    verts, faces = poisson_mesh(points, normals, depth=cfg.depth, trim_quantile=cfg.trim_quantile)
    mesh_s = time.perf_counter() - t0
    reference = load_mesh(require_data("scans", "bunny") / "bun_zipper.ply")
    keys = ("chamfer_l1", "chamfer_l2", "accuracy", "completeness", "fscore", "hausdorff")
    mesh_scores = evaluate_against_mesh(reference, mesh=(verts, faces), n_output=200_000, n_reference=1_000_000)
    dense_scores = evaluate_against_mesh(reference, points=points, n_output=200_000, n_reference=1_000_000)
    cpu = json.loads((ROOT / "benchmarks" / "results" / "geoprior.json").read_text())
    cpu_row = cpu["rows"][str(NOISE)]["ours_mesh"]
    results = {
        "noise_percent": NOISE, "gpu_run": run, "mesh_s_here": mesh_s,
        "ours_mesh": {k: mesh_scores[k] for k in keys}, "ours_dense": {k: dense_scores[k] for k in keys},
        "cpu_reference": {"chamfer_l1": cpu_row["chamfer_l1"], "fscore": cpu_row["fscore"],
                          "stages_s": cpu_row["stages_s"], "machine": cpu["meta"]["machine"]},
    }
    results.update(run_record("cpu"))  # the merge step runs here; the GPU step's run.json says where it ran
    out.write_text(json.dumps(results, indent=2))
    gpu_st, cpu_st = run["stages_s"], cpu_row["stages_s"]
    print(f"{'stage':14s} {'CPU s':>8s} {run['device_name']:>14s}")
    for k in ("cover_s", "fit_s", "consistency_s", "sampling_s"):
        print(f"{k:14s} {cpu_st.get(k, float('nan')):8.1f} {gpu_st.get(k, float('nan')):14.1f}")
    print(f"mesh Chamfer-L1 {mesh_scores['chamfer_l1']:.3e} (CPU run {cpu_row['chamfer_l1']:.3e}), "
          f"F-score {mesh_scores['fscore']:.3f} (CPU {cpu_row['fscore']:.3f})")
    print(f"wrote {out}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["prepare", "fit", "score"])
    parser.add_argument("--data", type=Path, default=ROOT / ".devdata" / "bunny_noisy_normals.npz")
    parser.add_argument("--dense", type=Path, default=ROOT / "out" / "geoprior_gpu")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "geoprior_gpu.json")
    args = parser.parse_args(argv)
    if args.step == "prepare":
        prepare(args.data)
    elif args.step == "fit":
        fit_on_device(args.data, args.dense, args.device)
    else:
        score(args.dense, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
