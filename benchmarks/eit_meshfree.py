"""EIT benchmark: the mesh-free formulation (Bar & Sochen) vs the FEM-based neural route, same data.

Continuum-model data (:func:`eit.meshfree.continuum_problem`): the unit disk, the demo
phantom (:func:`eit.phantoms.two_inclusion`, contrast 2, mollified over 0.15 R), Dirichlet
data ``cos(k t), sin(k t)`` for ``k = 1..4`` (8 Cauchy pairs), the current density simulated
on a fine mesh (h = R/48) and measured at the 128 boundary vertices of the inversion mesh
(h = R/16, 2032 cells), Gaussian noise of ``noise * max|g_k|`` per pattern at three levels.
On each noise level and seed (the noise draw and the networks' initialisation):

* ``pinn``: :class:`eit.meshfree.MeshFreeEIT` (its defaults: 1000 Adam steps, 1024 collocation
  points redrawn every step, float32);
* ``fem_neural``: :class:`eit.reconstruct.NeuralEIT` (its tuned defaults, at most 500 steps
  with plateau stopping) through the inversion mesh's :class:`eit.forward.DirichletModel`;
* ``homogeneous``: the background fitted to the data (the error of not reconstructing).

Metric: the relative L2 error of sigma on the inversion mesh's cells (area weighted), mean
and standard deviation over the seeds.  Both fits run with one torch thread (on a shared
2-core machine two threads were up to 40x slower).  Writes
``benchmarks/results/eit_meshfree.json`` (keys ``pinn_rel_l2``, ``fem_neural_rel_l2`` (noise
level -> mean over seeds), ``*_std``, ``*_seeds``, times, settings, provenance) and
``benchmarks/results/eit_meshfree.png`` (true sigma, PINN, FEM-neural per noise level, seed 0).

    python benchmarks/eit_meshfree.py [--noise 0.001 0.01 0.05] [--seeds 0 1 2] [--iterations 1000]

:func:`study` is importable (``from eit_meshfree import study``) for the EIT benchmark.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from shared.provenance import run_record

import dolfinx_solver  # noqa: F401  (orders MPI before the DOLFINx bindings)

from shared.result import write_json
from shared.threads import thread_limits

from eit.meshfree import MeshFreeEIT, continuum_models, continuum_problem
from eit.reconstruct import NeuralEIT

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
#: the FEM-based neural route's settings here (NeuralEIT's tuned defaults, up to 500 steps)
FEM_SETTINGS = {"iterations": 500}


def _homogeneous_rel_l2(problem) -> float:
    a, t = problem.model.cell_areas, problem.sigma_true
    return float(np.sqrt(np.sum(a * (problem.sigma_bg - t) ** 2) / np.sum(a * t**2)))


def _run(problem, seed: int, pinn: dict, fem: dict) -> dict:
    with thread_limits(torch_threads=1):
        p = MeshFreeEIT(**{**pinn, "seed": seed}).reconstruct(problem)
        f = NeuralEIT(**{**fem, "seed": seed}).reconstruct(problem)
    return {"pinn": p.metrics["rel_l2"], "pinn_time_s": p.metrics["time_s"], "pinn_terms": p.metrics["final_terms"],
            "fem_neural": f.metrics["rel_l2"], "fem_neural_time_s": f.metrics["time_s"],
            "fem_neural_iterations": f.metrics["iterations"], "homogeneous": _homogeneous_rel_l2(problem),
            "sigma": {"pinn": p.arrays["sigma"], "fem_neural": f.arrays["sigma"]}}


def _summary(runs: dict, key: str) -> dict:
    return {f"{key}_rel_l2": {n: float(np.mean([r[key] for r in rs])) for n, rs in runs.items()},
            f"{key}_rel_l2_std": {n: float(np.std([r[key] for r in rs])) for n, rs in runs.items()},
            f"{key}_rel_l2_seeds": {n: [float(r[key]) for r in rs] for n, rs in runs.items()}}


def study(noise_levels: Sequence[float] = (0.001, 0.01, 0.05), seeds: Sequence[int] = (0, 1, 2),
          pinn: dict | None = None, fem: dict | None = None, figure: Path | None = None) -> dict:
    """Both methods on the continuum data of every noise level and seed (module docstring).

    ``pinn`` / ``fem``: settings of :class:`eit.meshfree.MeshFreeEIT` / :class:`eit.reconstruct.NeuralEIT`
    over the defaults; ``figure``: where to write the comparison figure (None: no figure).
    Returns the JSON's content without the provenance; noise levels are keyed as ``"0.001"``.
    """
    pinn, fem = dict(pinn or {}), {**FEM_SETTINGS, **(fem or {})}
    t0 = time.perf_counter()
    models = continuum_models()
    runs: dict[str, list[dict]] = {}
    problems = {}
    for noise in noise_levels:
        key = f"{noise:g}"
        for seed in seeds:
            problem = continuum_problem(noise=noise, seed=seed, models=models)
            problems.setdefault(key, problem)
            runs.setdefault(key, []).append(_run(problem, seed, pinn, fem))
            r = runs[key][-1]
            print(f"noise {key:6s} seed {seed}: pinn {r['pinn']:.3f} ({r['pinn_time_s']:.0f} s)  "
                  f"fem-neural {r['fem_neural']:.3f} ({r['fem_neural_time_s']:.0f} s)  "
                  f"homogeneous {r['homogeneous']:.3f}", flush=True)
    if figure is not None:
        comparison_figure(problems, {k: rs[0]["sigma"] for k, rs in runs.items()}, figure)
    mean = lambda name: {n: float(np.mean([r[name] for r in rs])) for n, rs in runs.items()}
    return {**_summary(runs, "pinn"), **_summary(runs, "fem_neural"),
            "homogeneous_rel_l2": mean("homogeneous"), "pinn_time_s": mean("pinn_time_s"),
            "fem_neural_time_s": mean("fem_neural_time_s"), "fem_neural_iterations": mean("fem_neural_iterations"),
            "pinn_final_terms": {n: rs[0]["pinn_terms"] for n, rs in runs.items()},
            "noise_levels": [float(n) for n in noise_levels], "seeds": [int(s) for s in seeds],
            "pinn_settings": MeshFreeEIT(**pinn).get_params(), "fem_neural_settings": NeuralEIT(**fem).get_params(),
            "data": {"radius": 1.0, "phantom": "two_inclusion(contrast=2) mollified over 0.15 R", "pairs": 8,
                     "dirichlet": "cos(k t), sin(k t), k = 1..4", "noise": "Gaussian, std = level * max|g_k|",
                     "simulation_cells": models[1].n_sigma, "inversion_cells": models[0].n_sigma,
                     "boundary_points": models[0].nb},
            "total_s": time.perf_counter() - t0}


def comparison_figure(problems: dict, sigmas: dict, path: Path) -> Path:
    """Rows: noise levels; columns: true sigma, the PINN's, the FEM-neural route's (one seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.tri import Triangulation

    fig, axes = plt.subplots(len(problems), 3, figsize=(9, 3 * len(problems)), squeeze=False)
    for row, (key, pr) in enumerate(problems.items()):
        tri = Triangulation(*pr.points.T, pr.cells)
        for col, (name, s) in enumerate([("true", pr.sigma_true), ("PINN (mesh-free)", sigmas[key]["pinn"]),
                                         ("FEM-neural", sigmas[key]["fem_neural"])]):
            ax = axes[row, col]
            im = ax.tripcolor(tri, facecolors=s, vmin=0.5, vmax=2.0, cmap="viridis")
            ax.set_title(f"{name}, noise {key}", fontsize=9)
            ax.set_aspect("equal")
            ax.axis("off")
    fig.colorbar(im, ax=axes, shrink=0.6, label="sigma (S/m)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.001, 0.01, 0.05])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iterations", type=int, default=MeshFreeEIT().iterations, help="PINN Adam steps")
    ap.add_argument("--out", type=Path, default=RESULTS / "eit_meshfree.json")
    args = ap.parse_args(argv)
    result = study(args.noise, args.seeds, pinn={"iterations": args.iterations},
                   figure=args.out.with_suffix(".png"))
    print(f"\n{'noise':8s} {'PINN rel L2':>16s} {'FEM-neural rel L2':>18s} {'homogeneous':>12s} "
          f"{'PINN s':>7s} {'FEM s':>6s}")
    for n in result["pinn_rel_l2"]:
        print(f"{n:8s} {result['pinn_rel_l2'][n]:9.3f} +- {result['pinn_rel_l2_std'][n]:.3f} "
              f"{result['fem_neural_rel_l2'][n]:10.3f} +- {result['fem_neural_rel_l2_std'][n]:.3f} "
              f"{result['homogeneous_rel_l2'][n]:12.3f} {result['pinn_time_s'][n]:7.1f} "
              f"{result['fem_neural_time_s'][n]:6.1f}")
    write_json(args.out, {**run_record("cpu"), **result})
    print(f"wrote {args.out} and {args.out.with_suffix('.png')} ({result['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
