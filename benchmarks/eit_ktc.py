"""EIT benchmark: KTC 2023 training targets 1-4 at levels 1, 4, 7 -- neural vs the baselines.

For each target and level: the neural reconstruction (Fourier-feature MLP + TV through the
complete electrode model, :class:`eit.NeuralEIT` with its tuned defaults), the organisers'
one-step linearised difference reconstruction (:class:`eit.OneStep`), Gauss-Newton with the
smoothness prior (``gn``, Tikhonov) and with smoothed TV (``gn-tv``) (:class:`eit.GaussNewton`),
all on the same ~1.5k-vertex mesh; KTC score (three-class Otsu segmentation vs the
organisers' truth) and wall time.  Forward + adjoint gradient time for all 76 injections on
the 1.5k and 10k meshes is :func:`eit.timing.fwd_grad_seconds` (as in ``benchmarks/eit_forward.py``).

Writes ``benchmarks/results/eit.json`` (keys ``neural_mean_score``, ``onestep_mean_score``,
``gn_mean_score`` (Tikhonov, the better Gauss-Newton), ``gn_tv_mean_score``, each with
``*_per_level``, ``neural_time_s_max``, ``fwd_grad_s_1500``,
``fwd_grad_s_10000``, the records) and ``benchmarks/results/eit_ktc.png``.

    python benchmarks/eit_ktc.py [--levels 1 4 7] [--targets 1 2 3 4]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from shared.provenance import run_record

import dolfinx_solver  # noqa: F401  (orders MPI before the DOLFINx bindings)

from shared.paths import shared_data_dir
from shared.result import write_json

from eit.evaluate import METHOD_KEYS, comparison_figure, evaluate_ktc, summarise
from eit.reconstruct import NEURAL_DEFAULTS
from eit.timing import fwd_grad_seconds

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 7])
    ap.add_argument("--targets", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--methods", nargs="+", default=["neural", "onestep", "gn", "gn-tv"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "eit.json")
    args = ap.parse_args(argv)

    root = shared_data_dir()
    folder = None if root is None else root / "eit" / "ktc2023" / "training"
    if folder is None or not (folder / "ref.mat").is_file():
        # The KTC data are not part of the project; without them there is nothing to measure.
        print("skipped: the KTC 2023 data (../shared/data/eit/ktc2023/training or $UNTRAINED_DATA) are absent")
        return 0
    t0 = time.perf_counter()
    records = evaluate_ktc(folder, args.targets, args.levels, args.methods, progress=False, keep=True)
    total = time.perf_counter() - t0
    summary = summarise(records)
    fwd = {"fwd_grad_s_1500": fwd_grad_seconds("1500", repeats=5),
           "fwd_grad_s_10000": fwd_grad_seconds("10000", repeats=5)}
    result = {
        **{k: summary[k] for k in summary if k.endswith("mean_score")},
        **{k: summary[k] for k in summary if k.endswith("per_level")},
        "neural_time_s_max": summary.get("neural_time_s_max"),
        **fwd,
        "targets": {"neural_time_s_max": 60.0, "fwd_grad_s_1500": 0.2,
                    "neural_mean_score": "above onestep and gn at every level"},
        "times": {k: summary[k] for k in summary if "time" in k},
        "neural_settings": NEURAL_DEFAULTS,
        "records": [{k: v for k, v in r.items() if k not in ("reconstruction", "truth")} for r in records],
        "total_s": total,
        **run_record("cpu"),
        "machine": "2-core machine shared with other jobs; wall times are inflated by the load",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    comparison_figure(records, args.out.with_name("eit_ktc.png"), args.methods)

    levels = sorted({r["level"] for r in records})
    print(f"{'method':10s} " + " ".join(f"L{lv:<6d}" for lv in levels) + "  mean    max time (s)")
    for m in args.methods:
        k = METHOD_KEYS.get(m, m.replace("-", "_"))
        per = summary[f"{k}_mean_score_per_level"]
        print(f"{m:10s} " + " ".join(f"{per[str(lv)]:.3f}  " for lv in levels)
              + f"{summary[f'{k}_mean_score']:.3f}  {summary[f'{k}_time_s_max']:.1f}")
    print(f"fwd+grad 76 injections: {fwd['fwd_grad_s_1500']:.3f} s (1.5k), {fwd['fwd_grad_s_10000']:.3f} s (10k)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
