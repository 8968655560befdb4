"""KTC 2023 training targets: neural conductivity vs the organisers' one-step method and Gauss-Newton.

Gauss-Newton runs twice: with the smoothness prior (``gn``) and with smoothed TV (``gn-tv``).

All four training targets at level 1 (all 32 electrodes) and at a hard level (default 7:
electrodes 1-12 removed), reconstructed by the methods on one ~1.5k-vertex mesh of the tank
and segmented by three-class Otsu thresholds; the KTC score of each against the organisers'
truth.  Needs the data folder ``../shared/data/eit/ktc2023``.

    python examples/eit_ktc.py [--out out/eit_ktc] [--hard 7] [--targets 1 2 3 4]

Writes ``ktc_comparison.png`` (rows: level/target; columns: methods, truth) and
``metrics.json``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import dolfinx_solver  # noqa: F401  (orders MPI before the DOLFINx bindings)

from shared.paths import require_data
from shared.result import write_json

from eit import GaussNewton, NeuralEIT, OneStep, ktc_problem
from eit.evaluate import comparison_figure, record, summarise


def main(out_dir: str | Path = "out/eit_ktc", hard: int = 7, targets=(1, 2, 3, 4)) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folder = require_data("eit", "ktc2023", "training")

    # The methods, by the names of eit.methods (the columns of the figure).  The score is
    #     score = (SSIM(T == 2, R == 2) + SSIM(T == 1, R == 1)) / 2
    # of the segmentation R against the truth T (eit.score).
    methods = {"neural": NeuralEIT(), "onestep": OneStep(), "gn": GaussNewton(prior="tikhonov"),
               "gn-tv": GaussNewton(prior="tv")}

    records, model = [], None
    for level in (1, hard):
        for target in targets:
            # The problem: y = Uel - Uelref + F(sigma_bg) (difference data on the simulated
            # background), the organisers' noise model, the measurements the level keeps.
            # Targets share the forward model (mesh, patterns, factorisation structures).
            problem = ktc_problem(folder, target, level, "1500", model=model)
            model = problem.model
            for name, rec in methods.items():
                result = rec.reconstruct(problem)
                records.append(record(problem, name, result))
                print(f"level {level} target {target} {name:8s} score {result.metrics['score']:.3f}  "
                      f"{result.metrics['time_s']:.1f} s")

    comparison_figure(records, out / "ktc_comparison.png", methods=tuple(methods))
    summary = summarise(records)
    summary["records"] = [{k: v for k, v in r.items() if k not in ("reconstruction", "truth")} for r in records]
    summary["config"] = {name: rec.get_params() for name, rec in methods.items()}
    write_json(out / "metrics.json", summary)
    for m in ("neural", "onestep", "gn", "gn_tv"):
        print(f"{m:8s} mean score {summary[f'{m}_mean_score']:.3f}  per level {summary[f'{m}_mean_score_per_level']}")
    print(f"wrote {out / 'ktc_comparison.png'}")
    return summary


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/eit_ktc")
    ap.add_argument("--hard", type=int, default=7)
    ap.add_argument("--targets", type=int, nargs="+", default=[1, 2, 3, 4])
    a = ap.parse_args()
    main(a.out, a.hard, tuple(a.targets))
