"""``untrained eit reconstruct``: EIT reconstructions of KTC-format data or simulated phantoms.

Examples::

    untrained eit reconstruct --ktc ../shared/data/eit/ktc2023/training --target 1 --level 1 \\
        --method neural --out out/ktc1
    untrained eit reconstruct --phantom two-inclusion --method neural onestep gn gn-tv --out out/phantom

Writes, per method: ``sigma_<method>.png`` (conductivity map), ``sigma_<method>.xdmf``
(DG0 field for ParaView), and for all methods together ``comparison.png`` (conductivity,
segmentation and truth side by side) and ``metrics.json`` (KTC score where a truth is
given, relative L2 error where the conductivity is known, wall time, final misfit).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ["register", "run_reconstruct", "build_problem", "run_methods", "METHODS"]

METHODS = ("neural", "onestep", "gn", "gn-tv")
#: Adam step of the deep-decoder prior (measured on KTC level 1: 0.74 at 1e-2, 0.66 at 3e-3)
CONV_LR = 1e-2
PHANTOMS = ("two-inclusion", "random")


def register(subparsers) -> None:
    from shared.cli import add_common_options

    eit = subparsers.add_parser("eit", help="electrical impedance tomography (neural conductivity, CEM forward model)")
    sub = eit.add_subparsers(dest="eit_command", metavar="{reconstruct}")
    sub.required = True
    p = sub.add_parser("reconstruct", help="reconstruct a conductivity from electrode voltages",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ktc", type=Path, metavar="FOLDER", help="KTC 2023 folder with ref.mat, data<N>.mat (true<N>.mat)")
    src.add_argument("--phantom", choices=PHANTOMS, help="simulated phantom (no data files needed)")
    p.add_argument("--target", default="1", help="KTC target number N (data<N>.mat; default: %(default)s)")
    p.add_argument("--level", type=int, default=1, help="difficulty level 1..7 (electrodes removed; default: %(default)s)")
    p.add_argument("--method", nargs="+", choices=METHODS, default=["neural"],
                   help="one or more methods: neural, onestep (organisers' linearised difference method), "
                   "gn (Gauss-Newton with the smoothness prior), gn-tv (Gauss-Newton with smoothed TV); "
                   "default: neural")
    p.add_argument("--prior", choices=("mlp", "conv"), default="mlp", help="neural prior (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=None, help="neural: optimiser steps (default: the tuned setting)")
    p.add_argument("--tv", type=float, default=None, help="neural: TV weight (default: the tuned setting)")
    p.add_argument("--stopping", choices=("plateau", "discrepancy", "none"), default="plateau",
                   help="neural: stopping rule (discrepancy: Morozov with the problem's noise model; default: %(default)s)")
    p.add_argument("--mesh", default="1500", choices=("1500", "10000"), help="inversion mesh size (vertices)")
    p.add_argument("--data", choices=("difference", "absolute"), default="difference",
                   help="KTC: fit Uel - Uelref + F(sigma_bg) (difference) or Uel (absolute)")
    p.add_argument("--noise", type=float, default=0.01, help="phantom: relative noise level (default: %(default)s)")
    add_common_options(p, default_out="out/eit")
    p.set_defaults(func=run_reconstruct)


def build_problem(args):
    """The :class:`eit.problem.EITProblem` the arguments describe."""
    from eit.problem import ktc_problem

    if args.ktc is not None:
        return ktc_problem(args.ktc, args.target, args.level, args.mesh, data=args.data)
    return simulated_problem(args.phantom, args.mesh, args.noise, args.seed, args.level)


def simulated_problem(phantom: str = "two-inclusion", mesh_size: str = "1500", noise: float = 0.01,
                      seed: int = 0, level: int = 1):
    """A phantom in the KTC tank, simulated on a finer mesh than the inversion mesh."""
    import numpy as np

    from eit.forward import CEM
    from eit.ktc import synthetic_patterns
    from eit.mesh import KTC_RADIUS, ktc_mesh
    from eit.phantoms import random_phantom, two_inclusion
    from eit.problem import phantom_problem

    inj, mpat = synthetic_patterns(32)
    coarse = ktc_mesh(mesh_size)
    # The simulation mesh is finer (smaller elements everywhere): no inverse crime.
    fine = ktc_mesh((0.045 * KTC_RADIUS, 0.012 * KTC_RADIUS)) if mesh_size == "1500" else ktc_mesh((0.02 * KTC_RADIUS, 0.006 * KTC_RADIUS))
    ph = two_inclusion(KTC_RADIUS) if phantom == "two-inclusion" else random_phantom(np.random.default_rng(seed), KTC_RADIUS)
    model = CEM(coarse, currents=inj, patterns=mpat, z=1e-6)
    fine_model = CEM(fine, currents=inj, patterns=mpat, z=1e-6)
    return phantom_problem(ph, model, fine_model, relative=noise, of_max=noise / 10, seed=seed, level=level)


def run_methods(problem, methods, prior: str = "mlp", iterations: int | None = None, tv: float | None = None,
                seed: int = 0, progress: bool = True, stopping: str = "plateau", device: str | None = None):
    """Run the named methods on a problem: ``neural``, ``onestep``, ``gn`` (Gauss-Newton with
    the smoothness prior, Tikhonov) and ``gn-tv`` (Gauss-Newton with smoothed TV)."""
    from eit.baselines import gauss_newton, onestep
    from eit.reconstruct import NEURAL_DEFAULTS, neural

    recs = []
    for m in methods:
        if m == "neural":
            kw = dict(NEURAL_DEFAULTS)
            kw["prior"] = prior
            if prior == "conv":
                kw["lr"] = CONV_LR
            kw["stopping"] = stopping
            kw["device"] = device
            if iterations is not None:
                kw["iterations"] = iterations
            if tv is not None:
                kw["tv_weight"] = tv
            recs.append(neural(problem, seed=seed, progress="neural" if progress else False, **kw))
        elif m == "onestep":
            recs.append(onestep(problem))
        elif m == "gn":
            recs.append(gauss_newton(problem, "tikhonov"))
        elif m == "gn-tv":
            recs.append(gauss_newton(problem, "tv"))
        else:
            raise ValueError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    return recs


def run_reconstruct(args) -> int:
    from shared.cli import prepare_out_dir

    from eit.plot import save_comparison_png, save_conductivity_png, save_metrics, save_xdmf

    if not 1 <= args.level <= 7:
        raise ValueError(f"--level must be 1..7, got {args.level}")
    if args.iterations is not None and args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    if args.noise < 0:
        raise ValueError(f"--noise must be >= 0, got {args.noise}")
    out = prepare_out_dir(args.out)
    t0 = time.perf_counter()
    problem = build_problem(args)
    setup_s = time.perf_counter() - t0
    if not args.quiet:
        print(f"problem {problem.name} level {problem.level}: {problem.n_cells} cells, "
              f"{int(problem.mask.sum())} measurements, sigma_bg {problem.sigma_bg:.4g} S/m ({setup_s:.1f} s)")
    recs = run_methods(problem, args.method, args.prior, args.iterations, args.tv, args.seed, not args.quiet,
                       args.stopping, args.device)
    metrics = {"problem": problem.name, "level": problem.level, "sigma_bg": problem.sigma_bg,
               "n_cells": problem.n_cells, "n_measurements": int(problem.mask.sum()), "setup_s": setup_s,
               "data": problem.info.get("data"), "methods": {}}
    if "fine_cells" in problem.info:
        metrics["simulation_cells"] = problem.info["fine_cells"]
    for rec in recs:
        save_conductivity_png(problem, rec.sigma, out / f"sigma_{rec.method}.png", title=rec.method)
        save_xdmf(problem, rec.sigma, out / f"sigma_{rec.method}.xdmf")
        metrics["methods"][rec.method] = rec.metrics
        if not args.quiet:
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.metrics.items() if k != "method"}
            print(f"{rec.method}: {shown}")
    title = f"{problem.name}, level {problem.level}"
    save_comparison_png(problem, recs, out / "comparison.png", title=title)
    save_metrics(metrics, out / "metrics.json")
    if not args.quiet:
        print(f"wrote {out}/comparison.png, sigma_*.png, sigma_*.xdmf, metrics.json")
    return 0
