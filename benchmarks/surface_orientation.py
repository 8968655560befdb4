"""How well the pipeline orients point normals on the surface suite, without fitting a chart.

The cover keeps a patch on one side of a thin wall only if the point normals are
oriented consistently (it drops members whose normal is more than 60 degrees off the
centre's).  Where the orientation tree crosses a wall, both sheets get the same sign and
every chart fits their mid-surface (the cup at 1 % noise: Chamfer 2.6x Poisson's).  This
check isolates that step, in minutes rather than the suite's hour:

* the points are those the charts would be fitted to (:func:`geoprior.reconstruct.fit_points`:
  isolated points dropped, folds subsampled), for every suite case of the chosen sizes;
* their unoriented normals are KNN-30 PCA (as in the pipeline), oriented by
  :func:`geoprior.sampling.orient_points_mst` with each ``k`` of ``--k``, and by the
  pipeline's :func:`geoprior.orientation.orient_normals_robust` (column ``robust``: the
  most consistent of the trees over 30 and 10 neighbours and a visibility-anchored tree);
* the score is the fraction of points whose normal agrees in sign with the normal of the
  nearest reference triangle, up to one global sign (``max(f, 1 - f)``; 0.5 is chance).

Validation only (the suite's shapes).  Prints a table and writes
``benchmarks/results/surface_orientation.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def orientation_scores(case, ks: list[int]) -> dict[str, float]:
    """Fraction of consistently and correctly oriented normals (up to a global sign) per ``k``
    and for the robust orientation (key ``robust``), with its time in seconds (``robust_s``)."""
    from geoprior import DeepGeometricPrior, suite
    from geoprior.mesh import estimate_normals
    from geoprior.metrics import closest_face_normals
    from geoprior.orientation import orient_normals_robust
    from geoprior.reconstruct import fit_points
    from geoprior.sampling import orient_points_mst

    mesh = suite.build(case.shape)
    cloud = suite.make_input(case, mesh)
    points, _, _ = fit_points(cloud, None, DeepGeometricPrior(patch_normals=False), np.random.default_rng(0))
    truth = closest_face_normals(np.asarray(mesh.vertices), np.asarray(mesh.faces), points)
    unoriented = estimate_normals(points, k=30, orient=False)
    oriented = {str(k): orient_points_mst(points, unoriented, k=k) for k in ks}
    t0 = time.perf_counter()
    oriented["robust"] = orient_normals_robust(points, unoriented)
    out = {"robust_s": time.perf_counter() - t0}
    for name, normals in oriented.items():
        agree = float(((normals * truth).sum(1) > 0).mean())
        out[name] = max(agree, 1.0 - agree)
    return out


def main(argv: list[str] | None = None) -> dict:
    """Score every case, print the table, write the JSON."""
    from geoprior import suite
    from shared.provenance import code_state, run_record

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[30, 10], help="orientation tree neighbours to compare")
    ap.add_argument("--sizes", type=int, nargs="+", default=[20000], help="input sizes of the suite's cases")
    ap.add_argument("--out", type=Path, default=RESULTS / "surface_orientation.json")
    args = ap.parse_args(argv)
    code = code_state()
    t0 = time.perf_counter()
    rows = []
    columns = [*map(str, args.k), "robust"]
    print(f"{'case':38s} " + " ".join(f"{c:7s}" for c in columns))
    for case in suite.cases(sizes=tuple(args.sizes)):
        scores = orientation_scores(case, args.k)
        rows.append({"case": case.key, "shape": case.shape, "sampling": case.sampling, "noise": case.noise,
                     "n": case.n, "correct": scores})
        print(f"{case.key:38s} " + " ".join(f"{scores[c]:.3f}  " for c in columns), flush=True)
    summary = {}
    for k in columns:
        values = np.array([r["correct"][k] for r in rows])
        summary[k] = {"mean": float(values.mean()), "min": float(values.min()),
                      "below_0.95": int((values < 0.95).sum()),
                      "worst_cases": [r["case"] for r in sorted(rows, key=lambda r: r["correct"][k])[:5]]}
        print(f"{k}: mean {values.mean():.4f}, min {values.min():.3f}, {summary[k]['below_0.95']} of "
              f"{len(values)} cases below 0.95")
    times = np.array([r["correct"]["robust_s"] for r in rows])
    summary["robust_s"] = {"mean": float(times.mean()), "max": float(times.max())}
    print(f"robust orientation: {times.mean():.2f} s mean, {times.max():.2f} s max per case")
    result = {**run_record(code=code), "benchmark": "surface_orientation", "split": "validation (the suite)",
              "normal_estimate": "KNN-30 PCA",
              "score": "fraction with the reference normal's sign, up to a global sign",
              "summary": summary, "cases": rows, "wall_s": time.perf_counter() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
