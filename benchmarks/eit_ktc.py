"""EIT benchmark: the simulated KTC-like set (validation) and the KTC 2023 training targets (test).

Two sets, reported separately, every method in the same run on the same ~1.5k-vertex mesh:

* **simulated set** (:mod:`eit.simulated_set`, seed ``SET_SEED``): ``--sim-per-level`` cases
  at each of the levels 1-7, simulated on finer meshes with perturbed electrodes and contact
  impedances and the organisers' noise; the settings of every method were chosen on a
  disjoint tuning split of the same generator (``benchmarks/eit_settings.py``), so this is a
  validation set, not a test set;
* **KTC training targets** 1-4 at levels 1, 4, 7: the real tank data, never tuned on.

Methods: the neural reconstruction (:class:`eit.NeuralEIT`, its defaults), the organisers'
one-step method (:class:`eit.OneStep`), Gauss-Newton with the smoothness prior (``gn``) and
with smoothed TV (``gn-tv``), and D-bar (``dbar``) where present.  The mesh-free (Bar-Sochen)
row comes from ``benchmarks/results/eit_meshfree.json`` (written by
``benchmarks/eit_meshfree.py``; copied with its commit, not re-run here).

Writes ``benchmarks/results/eit.json``: ``sim_mean_score_per_level[method][level]``,
``sim_score_std_per_level``, ``sim_mean_score[method]``,
``training_mean_score_per_level[method][level]``, ``training_mean_score[method]``,
``onestep_training_scores``, ``neural_time_s_max``, ``dbar_mean_score``, ``pinn_rel_l2``,
the forward timings, the records; and ``benchmarks/results/eit_ktc.png``.

    python benchmarks/eit_ktc.py [--sim-per-level 40] [--workers 2] [--levels 1 4 7]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from shared.provenance import run_record

import dolfinx_solver  # noqa: F401  (orders MPI before the DOLFINx bindings)

from shared.paths import shared_data_dir
from shared.result import write_json

from eit.evaluate import comparison_figure, evaluate_ktc, evaluate_simulated, per_level
from eit.methods import METHODS
from eit.reconstruct import NEURAL_DEFAULTS
from eit.timing import fwd_grad_seconds

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
#: the organisers' published one-step means on the training targets (levels 1, 4, 7)
ONESTEP_PUBLISHED = {"1": 0.696, "4": 0.621, "7": 0.396}


def overall(records: list[dict], methods) -> dict:
    return {m: float(np.mean([r["score"] for r in records if r["method"] == m])) for m in methods}


def meshfree_rows() -> dict:
    """The mesh-free rows of ``eit_meshfree.json`` (its own script's output), if it exists."""
    path = RESULTS / "eit_meshfree.json"
    if not path.is_file():
        return {}
    m = json.loads(path.read_text())
    return {"pinn_rel_l2": m.get("pinn_rel_l2"), "fem_neural_rel_l2": m.get("fem_neural_rel_l2"),
            "pinn_source": {"file": "benchmarks/results/eit_meshfree.json", "commit": m.get("commit")}}


def simulated_section(args, inj, mpat) -> tuple[dict, list[dict]]:
    from eit.simulated_set import SET_SEED, simulated_set

    cases = simulated_set(args.sim_levels, args.sim_per_level, seed=SET_SEED)
    t0 = time.perf_counter()
    records = evaluate_simulated(cases, args.methods, inj, mpat, workers=args.workers)
    out = {"sim_mean_score_per_level": per_level(records, args.methods),
           "sim_score_std_per_level": per_level(records, args.methods, np.std),
           "sim_mean_score": overall(records, args.methods),
           "sim_time_s_max": {m: float(max(r["time_s"] for r in records if r["method"] == m)) for m in args.methods},
           "sim_set": {"seed": SET_SEED, "per_level": args.sim_per_level, "levels": args.sim_levels,
                       "workers": args.workers, "total_s": time.perf_counter() - t0}}
    return out, records


def training_section(args, folder) -> tuple[dict, list[dict]]:
    t0 = time.perf_counter()
    records = evaluate_ktc(folder, args.targets, args.levels, args.methods, progress=False, keep=True)
    onestep = {str(lv): {str(r["target"]): r["score"] for r in records if r["method"] == "onestep" and r["level"] == lv}
               for lv in args.levels}
    out = {"training_mean_score_per_level": per_level(records, args.methods),
           "training_mean_score": overall(records, args.methods),
           "training_time_s_max": {m: float(max(r["time_s"] for r in records if r["method"] == m))
                                   for m in args.methods},
           "onestep_training_scores": onestep, "onestep_published": ONESTEP_PUBLISHED,
           "training_total_s": time.perf_counter() - t0}
    return out, records


def print_table(title: str, table: dict, methods) -> None:
    levels = list(next(iter(table.values())))
    print(f"\n{title}\n{'method':10s} " + " ".join(f"L{lv:<6s}" for lv in levels) + " mean")
    for m in methods:
        per = table[m]
        print(f"{m:10s} " + " ".join(f"{per[lv]:.3f}  " for lv in levels) + f" {np.mean(list(per.values())):.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 7], help="training-target levels")
    ap.add_argument("--targets", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--sim-levels", type=int, nargs="+", default=list(range(1, 8)))
    ap.add_argument("--sim-per-level", type=int, default=40, help="simulated cases per level (0: none)")
    ap.add_argument("--workers", type=int, default=2, help="processes for the simulated set")
    ap.add_argument("--methods", nargs="+", default=[m for m in ("neural", "onestep", "gn", "gn-tv", "dbar")
                                                     if m in METHODS])
    ap.add_argument("--out", type=Path, default=RESULTS / "eit.json")
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)  # the figure is written before the JSON

    from eit.simulated_set import simulation_patterns

    root = shared_data_dir()
    folder = None if root is None else root / "eit" / "ktc2023" / "training"
    inj, mpat, source = simulation_patterns()
    have_ktc = source == "ktc"
    result: dict = {}
    records: dict = {}
    if args.sim_per_level > 0:
        sim, records["simulated"] = simulated_section(args, inj, mpat)
        result.update(sim)
    if have_ktc:
        train, kept = training_section(args, folder)
        result.update(train)
        comparison_figure(kept, args.out.with_name("eit_ktc.png"), args.methods)
        records["training"] = [{k: v for k, v in r.items() if k not in ("reconstruction", "truth")} for r in kept]
    else:
        print("the KTC 2023 data (../shared/data/eit/ktc2023/training or $UNTRAINED_DATA) are absent: "
              "simulated set only")
    times = [r["time_s"] for rs in records.values() for r in rs if r["method"] == "neural"]
    result.update({
        "neural_time_s_max": float(max(times)) if times else None,
        "dbar_mean_score": {"simulated": result.get("sim_mean_score", {}).get("dbar"),
                            "training": result.get("training_mean_score", {}).get("dbar")},
        **meshfree_rows(),
        "fwd_grad_s_1500": fwd_grad_seconds("1500", repeats=5),
        "fwd_grad_s_10000": fwd_grad_seconds("10000", repeats=5),
        "targets": {"neural_time_s_max": 60.0, "onestep_training": "within 0.02 of the published means",
                    "sim_mean_score_per_level": "neural above every baseline at every level"},
        "neural_settings": NEURAL_DEFAULTS, "patterns": source,
        "records": records, **run_record("cpu"),
        "machine": "2-core machine shared with other jobs; wall times are inflated by the load",
    })
    write_json(args.out, result)
    if "sim_mean_score_per_level" in result:
        print_table("simulated KTC-like set (validation), mean KTC score", result["sim_mean_score_per_level"],
                    args.methods)
    if "training_mean_score_per_level" in result:
        print_table("KTC training targets (test), mean KTC score", result["training_mean_score_per_level"],
                    args.methods)
    if result["neural_time_s_max"] is not None:
        print(f"neural time max {result['neural_time_s_max']:.1f} s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
