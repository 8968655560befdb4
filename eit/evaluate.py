"""Evaluation: every method on the KTC 2023 training targets and on the simulated set.

:func:`evaluate_ktc` reconstructs each target at each level with each method on one
shared forward model (one mesh, one factorisation per conductivity) and returns one
record per (level, target, method) with the KTC score and the wall time;
:func:`evaluate_simulated` does the same for the cases of :mod:`eit.simulated_set`
(simulated once per case, on ``workers`` processes);
:func:`per_level` and :func:`summarise` average them; :func:`comparison_figure` draws the segmentations side by
side (rows: level/target, columns: methods and the truth).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = ["evaluate_ktc", "evaluate_simulated", "record", "per_level", "summarise", "comparison_figure", "METHOD_KEYS"]

#: method name in records -> key prefix in the summary / benchmark JSON
METHOD_KEYS = {"neural": "neural", "onestep": "onestep", "gn": "gn", "gn-tv": "gn_tv", "dbar": "dbar"}


def _variants(methods) -> list[tuple[str, str, dict]]:
    """``(label, method name, settings)`` from names or such triples (a setting study)."""
    return [(m, m, {}) if isinstance(m, str) else (m[0], m[1], dict(m[2])) for m in methods]


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
    target = problem.name.removeprefix("data")
    r = {"level": int(problem.level), "target": int(target) if target.isdigit() else target, "method": method,
         "score": result.metrics["score"], "time_s": result.metrics["time_s"], "chi2": result.metrics.get("chi2")}
    for k in ("iterations", "stopped_by", "alpha"):
        if k in result.metrics:
            r[k] = result.metrics[k]
    if keep:
        r["reconstruction"] = result
        r["truth"] = problem.truth
    return r


_WORKER: dict = {}


def _init_worker(inj, mpat, mesh_size: str, single_thread: bool = False) -> None:
    import dolfinx_solver  # noqa: F401  (orders MPI before the DOLFINx bindings)

    if single_thread:  # one process per core: threads inside would only compete
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(1)
        threadpool_limits(limits=1)

    from eit.forward import CEM
    from eit.mesh import ktc_mesh
    from eit.simulated_set import SetSimulator

    _WORKER["model"] = CEM(ktc_mesh(mesh_size), currents=inj, patterns=mpat, z=1e-6)
    _WORKER["sim"] = SetSimulator(inj, mpat)


def _case_problem(case, data: str, contact: str):
    """The case on the worker's inversion model; ``contact="true"`` puts the case's own contact
    impedances into that model (an oracle: the most a joint estimation of them could give)."""
    model = _WORKER["model"]
    if contact == "assumed":
        return _WORKER["sim"].problem(case, model, data=data)
    if contact != "true":
        raise ValueError(f"contact must be 'assumed' or 'true', got {contact!r}")
    from eit.forward import CEM

    # A model of its own: the shared one keeps the assumed impedances for the other variants.
    oracle = CEM(model.eit_mesh, currents=model.currents, patterns=model.patterns, z=np.asarray(case.z))
    return _WORKER["sim"].problem(case, oracle, data=data)


def _run_case(job) -> list[dict]:
    case, variants = job
    from eit.methods import make_reconstructor
    from eit.result import segmentation_scores

    problems: dict = {}  # one simulation per case; a variant may ask for absolute data
    out = []
    for label, name, settings in variants:
        settings = dict(settings)
        data = settings.pop("data", "difference")
        contact = settings.pop("contact", "assumed")
        if (data, contact) not in problems:
            problems[data, contact] = _case_problem(case, data, contact)
        problem = problems[data, contact]
        result = make_reconstructor(name, **settings).reconstruct(problem)
        r = record(problem, label, result, keep=False)
        if name == "neural":  # the segmentation rule, studied on the same fit
            net = getattr(result.fit, "model", None)
            phases = net.phase_values().numpy() if getattr(net, "head", None) == "phase" else None
            r["seg_scores"] = segmentation_scores(problem, result.arrays["sigma"], phase_values=phases)
        out.append({**r, "n_objects": len(case.phantom.inclusions)})
    return out


def evaluate_simulated(cases, methods: Sequence = ("neural", "onestep", "gn", "gn-tv"), inj=None, mpat=None,
                       mesh_size: str = "1500", workers: int = 1, log=print) -> list[dict]:
    """Records (as :func:`evaluate_ktc`, ``target`` = the case name) of every method on every
    case of :func:`eit.simulated_set.simulated_set`; ``methods``: names or ``(label, name,
    settings)`` triples (``settings["data"]``: ``"absolute"`` fits the absolute data;
    ``settings["contact"]``: ``"true"`` inverts with the case's true contact impedances);
    ``inj``/``mpat``: the patterns (default :func:`eit.patterns.synthetic_patterns`).
    With ``workers > 1`` the cases run on that many processes, each with one BLAS thread."""
    from eit.patterns import synthetic_patterns

    if inj is None or mpat is None:
        inj, mpat = synthetic_patterns(32)
    variants, records = _variants(methods), []
    jobs = [(c, variants) for c in cases]
    if workers <= 1:
        _init_worker(inj, mpat, mesh_size)
        results = map(_run_case, jobs)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # Spawned workers (a forked MPI/DOLFINx state is unsafe), one BLAS thread each.
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                   initargs=(inj, mpat, mesh_size, True))
        results = pool.map(_run_case, jobs)
    for n, rs in enumerate(results):
        records.extend(rs)
        if log:
            log(f"[{n + 1}/{len(jobs)}] {rs[0]['target']} " + " ".join(f"{r['method']} {r['score']:.3f}" for r in rs))
    if workers > 1:
        pool.shutdown()
    return records


def per_level(records: list[dict], methods, stat=np.mean, value=lambda r: r["score"]) -> dict:
    """``{method: {level: stat(values)}}`` over the records (levels as strings, for JSON)."""
    levels = sorted({r["level"] for r in records})
    return {m: {str(lv): float(stat([value(r) for r in records if r["method"] == m and r["level"] == lv]))
                for lv in levels} for m in methods}


def summarise(records: list[dict]) -> dict:
    """Mean score per method (overall and per level), max/mean time per method."""
    out: dict = {}
    methods = sorted({r["method"] for r in records})
    levels = per_level(records, methods)
    for m in methods:
        rs = [r for r in records if r["method"] == m]
        k = METHOD_KEYS.get(m, m.replace("-", "_"))
        out[f"{k}_mean_score"] = float(np.mean([r["score"] for r in rs]))
        out[f"{k}_mean_score_per_level"] = levels[m]
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
