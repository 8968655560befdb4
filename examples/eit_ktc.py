"""KTC 2023 training targets: neural conductivity vs the organisers' one-step method and Gauss-Newton.

Gauss-Newton runs twice: with the smoothness prior (``gn``) and with smoothed TV (``gn-tv``).

All four training targets at level 1 (all 32 electrodes) and at a hard level (default 7:
electrodes 1-12 removed), reconstructed by the three methods on one ~1.5k-vertex mesh of
the tank and segmented by three-class Otsu thresholds; the KTC score of each against the
organisers' truth.  Needs the data folder ``../shared/data/eit/ktc2023``.

    python examples/eit_ktc.py [--out out/eit_ktc] [--hard 7] [--targets 1 2 3 4]

Writes ``ktc_comparison.png`` (rows: level/target; columns: methods, truth) and
``metrics.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(out_dir: str | Path = "out/eit_ktc", hard: int = 7, targets=(1, 2, 3, 4)) -> dict:
    from shared.paths import require_data

    from eit.evaluate import comparison_figure, evaluate_ktc, summarise

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folder = require_data("eit", "ktc2023", "training")
    records = evaluate_ktc(folder, targets, (1, hard), keep=True, progress=False)
    comparison_figure(records, out / "ktc_comparison.png")
    summary = summarise(records)
    summary["records"] = [{k: v for k, v in r.items() if k not in ("reconstruction", "truth")} for r in records]
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    for m in ("neural", "onestep", "gn", "gn_tv"):
        print(f"{m:8s} mean score {summary[f'{m}_mean_score']:.3f}  per level {summary[f'{m}_mean_score_per_level']}")
    print(f"wrote {out / 'ktc_comparison.png'}")
    return summary


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/eit_ktc")
    ap.add_argument("--hard", type=int, default=7)
    ap.add_argument("--targets", type=int, nargs="+", default=[1, 2, 3, 4])
    a = ap.parse_args()
    main(a.out, a.hard, tuple(a.targets))
