"""EIT setting study on a tuning split of the simulated KTC-like set (never on the KTC targets).

Each variant of the neural reconstruction (and the baselines, for scale) runs on the same
simulated cases: a tuning split drawn with seed ``SET_SEED + 1`` (disjoint from the reported
set of ``benchmarks/eit_ktc.py``, seed ``SET_SEED``), ``--per-level`` cases at each level,
with the KTC patterns when the challenge files are there (else the synthetic ones).  The
defaults of :class:`eit.NeuralEIT` are chosen from this table.

Writes ``benchmarks/results/eit_settings.json``: ``mean_score_per_level[variant][level]``,
``mean_score[variant]``, ``time_s_mean[variant]``, the variants' settings and the records.

    python benchmarks/eit_settings.py [--per-level 5] [--levels 1 2 3 4 5 6 7] [--workers 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from shared.provenance import run_record
from shared.result import write_json

ROOT = Path(__file__).resolve().parent.parent

#: label -> (method, settings): the levers studied
VARIANTS = {
    "neural": ("neural", {}),
    "neural-tv0.003": ("neural", {"tv_weight": 3e-3}),
    "neural-tv0.03": ("neural", {"tv_weight": 3e-2}),
    "neural-long": ("neural", {"iterations": 600, "plateau_tol": 0.01}),
    "neural-absolute": ("neural", {"data": "absolute"}),
    "neural-conv": ("neural", {"net": "conv", "lr": 1e-2}),
    "neural-ens3": ("neural", {"members": 3}),
    "neural-phase2": ("neural", {"net_options": {"head": "phase", "phase_contrast": 2.0}}),
    "neural-phase5": ("neural", {"net_options": {"head": "phase", "phase_contrast": 5.0}}),
    "neural-phase8": ("neural", {"net_options": {"head": "phase", "phase_contrast": 8.0}}),
    "neural-phase6-smax6": ("neural", {"net_options": {"head": "phase", "phase_contrast": 6.0, "s_max": 6.0}}),
    "neural-phase5-lr0.03": ("neural", {"net_options": {"head": "phase", "phase_contrast": 5.0}, "phase_lr": 3e-2}),
    "neural-phase2-lr0.03": ("neural", {"net_options": {"head": "phase", "phase_contrast": 2.0}, "phase_lr": 3e-2}),
    "neural-phase5-ens5": ("neural", {"net_options": {"head": "phase", "phase_contrast": 5.0}, "members": 5}),
    "neural-seed1": ("neural", {"head": "log", "seed": 1}),
    "neural-seed2": ("neural", {"head": "log", "seed": 2}),
    "neural-phase5-seed1": ("neural", {"net_options": {"head": "phase", "phase_contrast": 5.0}, "seed": 1}),
    "neural-phase5-seed2": ("neural", {"net_options": {"head": "phase", "phase_contrast": 5.0}, "seed": 2}),
    "neural-true-contact": ("neural", {"contact": "true"}),
    "onestep": ("onestep", {}),
}


def table(records: list[dict], labels: list[str]) -> dict:
    from eit.evaluate import per_level

    out = {"mean_score_per_level": per_level(records, labels),
           "score_std_per_level": per_level(records, labels, np.std),
           "mean_score": {lab: float(np.mean([r["score"] for r in records if r["method"] == lab])) for lab in labels},
           "time_s_mean": {lab: float(np.mean([r["time_s"] for r in records if r["method"] == lab]))
                           for lab in labels}}
    for lab in labels:
        rs = [r for r in records if r["method"] == lab]
        if rs and "seg_scores" in rs[0]:  # the segmentation rule on the same fits
            out.setdefault("seg_mean_score_per_level", {})[lab] = {
                t: per_level(rs, [lab], value=lambda r, t=t: r["seg_scores"][t])[lab] for t in rs[0]["seg_scores"]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-level", type=int, default=5)
    ap.add_argument("--levels", type=int, nargs="+", default=list(range(1, 8)))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seed", type=int, default=1, help="the split: seed SET_SEED + this (0 is the reported set)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "eit_settings.json")
    args = ap.parse_args(argv)

    import dolfinx_solver  # noqa: F401  (orders MPI before the DOLFINx bindings)

    from eit.evaluate import evaluate_simulated
    from eit.simulated_set import SET_SEED, simulated_set, simulation_patterns

    inj, mpat, source = simulation_patterns()
    cases = simulated_set(args.levels, args.per_level, seed=SET_SEED + args.seed)
    methods = [(lab, *VARIANTS[lab]) for lab in args.variants]
    t0 = time.perf_counter()
    records = evaluate_simulated(cases, methods, inj, mpat, workers=args.workers)
    result = {**table(records, args.variants), "variants": {k: VARIANTS[k] for k in args.variants},
              "split": {"seed": SET_SEED + args.seed, "per_level": args.per_level, "levels": args.levels,
                        "patterns": source, "note": "tuning split, disjoint from the reported simulated set"},
              "records": records, "total_s": time.perf_counter() - t0, "workers": args.workers,
              **run_record("cpu")}
    write_json(args.out, result)
    print(f"{'variant':18s} " + " ".join(f"L{lv:<5d}" for lv in args.levels) + "  mean   time (s)")
    for lab in args.variants:
        per = result["mean_score_per_level"][lab]
        print(f"{lab:18s} " + " ".join(f"{per[str(lv)]:.3f} " for lv in args.levels)
              + f" {result['mean_score'][lab]:.3f}  {result['time_s_mean'][lab]:.1f}")
    for lab, rules in result.get("seg_mean_score_per_level", {}).items():
        for t, per in rules.items():
            print(f"{lab + ' min_contrast ' + t:30s} " + " ".join(f"{per[str(lv)]:.3f} " for lv in args.levels)
                  + f" {np.mean(list(per.values())):.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
