"""Evaluation on the KTC 2023 training targets: every method, every target, chosen levels.

:func:`evaluate_ktc` reconstructs each target at each level with each method on one
shared forward model (one mesh, one factorisation per conductivity) and returns one
record per (level, target, method) with the KTC score and the wall time;
:func:`summarise` averages them; :func:`comparison_figure` draws the segmentations side by
side (rows: level/target, columns: methods and the truth).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = ["evaluate_ktc", "record", "summarise", "comparison_figure", "METHOD_KEYS"]

#: method name in records -> key prefix in the summary / benchmark JSON
METHOD_KEYS = {"neural": "neural", "onestep": "onestep", "gn": "gn", "gn-tv": "gn_tv"}


def evaluate_ktc(folder: str | Path, targets: Iterable[int] = (1, 2, 3, 4), levels: Iterable[int] = (1,),
                 methods: Sequence[str] = ("neural", "onestep", "gn", "gn-tv"), mesh_size: str = "1500", seed: int = 0,
                 progress: bool = True, keep: bool = False, log=print) -> list[dict]:
    """Records ``{level, target, method, score, time_s, ...}`` (``keep``: also the
    :class:`shared.result.Result` as ``reconstruction``).  ``methods``: names of
    :mod:`eit.methods`, with their default (tuned) settings."""
    from eit.methods import make_reconstructor
    from eit.problem import ktc_problem

    records: list[dict] = []
    model = None
    for level in levels:
        for target in targets:
            problem = ktc_problem(folder, target, level, mesh_size, model=model)
            model = problem.model
            for method in methods:
                settings = {"seed": seed, "progress": "neural" if progress else False} if method == "neural" else {}
                result = make_reconstructor(method, **settings).reconstruct(problem)
                r = record(problem, method, result, keep)
                records.append(r)
                if log:
                    log(f"level {level} target {target} {method:8s} score {r['score']:.3f}  {r['time_s']:.1f} s")
    return records


def record(problem, method: str, result, keep: bool = True) -> dict:
    """The record of ``result`` (a :class:`shared.result.Result` of method ``method`` on a KTC
    ``problem``): ``{level, target, method, score, time_s, chi2, iterations, stopped_by,
    alpha}`` as present, and with ``keep`` the result (``reconstruction``) and the truth."""
    r = {"level": int(problem.level), "target": int(problem.name.removeprefix("data")), "method": method,
         "score": result.metrics["score"], "time_s": result.metrics["time_s"], "chi2": result.metrics.get("chi2")}
    for k in ("iterations", "stopped_by", "alpha"):
        if k in result.metrics:
            r[k] = result.metrics[k]
    if keep:
        r["reconstruction"] = result
        r["truth"] = problem.truth
    return r


def summarise(records: list[dict]) -> dict:
    """Mean score per method (overall and per level), max/mean time per method."""
    out: dict = {}
    methods = sorted({r["method"] for r in records})
    levels = sorted({r["level"] for r in records})
    for m in methods:
        rs = [r for r in records if r["method"] == m]
        k = METHOD_KEYS.get(m, m.replace("-", "_"))
        out[f"{k}_mean_score"] = float(np.mean([r["score"] for r in rs]))
        out[f"{k}_mean_score_per_level"] = {
            str(lv): float(np.mean([r["score"] for r in rs if r["level"] == lv])) for lv in levels}
        out[f"{k}_time_s_max"] = float(np.max([r["time_s"] for r in rs]))
        out[f"{k}_time_s_mean"] = float(np.mean([r["time_s"] for r in rs]))
    return out


def comparison_figure(records: list[dict], path: str | Path,
                      methods: Sequence[str] = ("neural", "onestep", "gn", "gn-tv")) -> Path:
    """Segmentations of each (level, target) row: one column per method, then the truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eit.plot import SEG_CMAP

    rows = sorted({(r["level"], r["target"]) for r in records})
    cmap = SEG_CMAP()
    fig, axes = plt.subplots(len(rows), len(methods) + 1, figsize=(1.7 * (len(methods) + 1), 1.75 * len(rows)),
                             dpi=80, squeeze=False)
    for i, (level, target) in enumerate(rows):
        truth = None
        for j, m in enumerate(methods):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            rec = next((r for r in records if (r["level"], r["target"], r["method"]) == (level, target, m)), None)
            if rec is None:
                continue
            ax.imshow(rec["reconstruction"].arrays["segmentation"], cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
            ax.set_title(f"{m} {rec['score']:.2f}", fontsize=7)
            truth = rec["truth"]
            if j == 0:
                ax.set_ylabel(f"L{level} #{target}", fontsize=7)
        ax = axes[i, -1]
        ax.set_xticks([])
        ax.set_yticks([])
        if truth is not None:
            ax.imshow(truth, cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
        ax.set_title("truth", fontsize=7)
    fig.tight_layout(pad=0.3)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
