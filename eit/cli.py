"""``untrained eit reconstruct``: EIT reconstructions of KTC-format data or simulated phantoms.

Examples::

    untrained eit reconstruct --ktc ../shared/data/eit/ktc2023/training --target 1 --level 1 \\
        --method neural --out out/ktc1
    untrained eit reconstruct --phantom two-inclusion --method neural onestep gn gn-tv --out out/phantom

Writes, per method as soon as it finishes: ``sigma_<method>.png`` (conductivity map),
``sigma_<method>.xdmf`` (DG0 field for ParaView) and ``metrics.json`` (all methods so far:
KTC score where a truth is given, relative L2 error where the conductivity is known, wall
time, final misfit, settings); at the end ``comparison.png`` (conductivity, segmentation and
truth side by side).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ["register", "run_reconstruct"]


def register(subparsers) -> None:
    from shared.cli import add_common_options, number

    from eit.methods import METHODS
    from eit.problem import MESH_SIZES, PHANTOMS
    from eit.reconstruct import NETS

    eit = subparsers.add_parser("eit", help="electrical impedance tomography (neural conductivity, CEM forward model)")
    sub = eit.add_subparsers(dest="eit_command", metavar="{reconstruct}")
    sub.required = True
    p = sub.add_parser("reconstruct", help="reconstruct a conductivity from electrode voltages",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ktc", type=Path, metavar="FOLDER",
                     help="KTC 2023 folder with ref.mat, data<N>.mat (true<N>.mat)")
    src.add_argument("--phantom", choices=PHANTOMS, help="simulated phantom (no data files needed)")
    p.add_argument("--target", default="1", help="KTC target number N (data<N>.mat; default: %(default)s)")
    p.add_argument("--level", type=number(int, 1, 7), default=1,
                   help="difficulty level 1..7 (electrodes removed; default: %(default)s)")
    p.add_argument("--method", nargs="+", choices=tuple(METHODS), default=["neural"],
                   help="one or more methods: neural, onestep (organisers' linearised difference method, "
                   "as their code runs it), "
                   "gn (Gauss-Newton with the smoothness prior), gn-tv (Gauss-Newton with smoothed TV), "
                   "dbar (D-bar on the difference data); "
                   "default: neural")
    p.add_argument("--net", choices=NETS, default="mlp", help="neural: prior network (default: %(default)s)")
    p.add_argument("--head", choices=("log", "phase"), default=None,
                   help="neural (mlp): output head, the log-contrast or three soft phases with fitted values "
                   "(default: the tuned one)")
    p.add_argument("--iterations", type=number(int, 1), default=None,
                   help="neural: optimiser steps (default: the tuned setting)")
    p.add_argument("--lr", type=number(float, 0, low_open=True), default=None,
                   help="neural: Adam step (default: the tuned setting of the network, 3e-3 mlp, 1e-2 conv)")
    p.add_argument("--tv", type=number(float, 0), default=None, help="neural: TV weight (default: the tuned setting)")
    p.add_argument("--members", type=number(int, 1), default=None,
                   help="neural: networks fitted together and averaged (default: 3 for mlp, 1 for conv)")
    p.add_argument("--stop", choices=("plateau", "discrepancy", "none"), default="plateau",
                   help="neural: stopping rule (discrepancy: Morozov with the problem's noise model; "
                   "default: %(default)s)")
    p.add_argument("--mesh", default="1500", choices=MESH_SIZES,
                   help="inversion mesh size (vertices; default: %(default)s)")
    p.add_argument("--data", choices=("difference", "absolute"), default="difference",
                   help="KTC: fit Uel - Uelref + F(sigma_bg) (difference) or Uel (absolute); default: %(default)s")
    p.add_argument("--noise", type=number(float, 0), default=0.01,
                   help="phantom: relative noise level (default: %(default)s)")
    p.add_argument("--uncertainty", action="store_true",
                   help="neural: also write the per-cell predictive std (linearised Laplace; an ensemble's is the "
                   "mixture of its members'): std_<method>.png, std_<method>.xdmf, and uncertainty.json (with "
                   "the coverage within 1 and 2 std and the std-error correlation when the conductivity is known)")
    p.add_argument("--uncertainty-rank", type=number(int, 1), default=128,
                   help="rank of the Jacobian SVD for --uncertainty (default: %(default)s)")
    add_common_options(p, default_out="out/eit")
    p.set_defaults(func=run_reconstruct)


def _reconstructors(args) -> list:
    """The reconstructors of ``--method`` with the options (checked; nothing runs)."""
    from eit.methods import make_reconstructor

    # Numbers were checked by their argparse types (finite, in range).
    neural = dict(net=args.net, iterations=args.iterations, lr=args.lr, tv_weight=args.tv, members=args.members,
                  head=args.head, stop=args.stop,
                  seed=args.seed, device=args.device, progress=False if args.quiet else "neural")
    return [make_reconstructor(m, **(neural if m == "neural" else {})) for m in dict.fromkeys(args.method)]


def _problem(args):
    """The :class:`eit.problem.EITProblem` the arguments describe, and its input files."""
    from eit.problem import ktc_problem, simulated_problem

    if args.ktc is None:
        return simulated_problem(args.phantom, args.mesh, args.noise, args.seed, args.level), []
    problem = ktc_problem(args.ktc, args.target, args.level, args.mesh, data=args.data)
    k = problem.name.removeprefix("data")
    return problem, [args.ktc / "ref.mat", args.ktc / f"data{k}.mat", args.ktc / f"true{k}.mat"]


def run_reconstruct(args) -> int:
    """Check the options, read the problem, then run and write each method in turn."""
    from shared.cli import InputError, Runner

    from eit.plot import save_comparison_png
    from eit.result import file_names, run_summary
    from eit.uncertainty import METRICS_FILE, uncertainty_files

    recs = _reconstructors(args)
    if args.uncertainty and not any(rec.method.startswith("neural") for rec in recs):
        raise InputError("--uncertainty needs a fitted network (--method neural); "
                         f"got --method {' '.join(args.method)}")
    t0 = time.perf_counter()
    problem, inputs = _problem(args)
    setup_s = time.perf_counter() - t0
    outputs = ["comparison.png", "metrics.json", *(f for rec in recs for f in file_names(rec.method))]
    if args.uncertainty:
        outputs += [f for rec in recs if rec.method.startswith("neural") for f in uncertainty_files(rec.method)]
    runner = Runner(args, inputs=inputs, outputs=outputs)
    runner.open()
    runner.say(f"problem {problem.name} level {problem.level}: {problem.n_cells} cells, "
               f"{int(problem.mask.sum())} measurements, sigma_bg {problem.sigma_bg:.4g} S/m ({setup_s:.1f} s)")
    results, uncertainty = [], {}
    for i, rec in enumerate(recs):
        if runner.interrupted:
            runner.say(f"interrupted: not running {', '.join(r.method for r in recs[i:])}")
            break
        result = rec.reconstruct(problem)
        results.append(result)
        runner.write(result, metrics_file=None)
        if args.uncertainty and result.fit is not None:
            uncertainty[result.method] = _uncertainty(runner, result, problem, args)
            runner.write_json(METRICS_FILE, {"problem": problem.name, "level": problem.level, "methods": uncertainty})
        summary = run_summary(problem, results, setup_s)
        if uncertainty:
            summary["uncertainty"] = uncertainty
        runner.write_json("metrics.json", summary)
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.metrics.items() if k != "method"}
        runner.say(f"{result.method}: {shown}")
    save_comparison_png(problem, results, runner.out / "comparison.png", title=f"{problem.name}, level {problem.level}")
    extra = ", std_*.png, std_*.xdmf, uncertainty.json" if uncertainty else ""
    runner.say(f"wrote {runner.out}/comparison.png, sigma_*.png, sigma_*.xdmf, metrics.json{extra}")
    return runner.finish()


def _uncertainty(runner, result, problem, args) -> dict:
    """Write the std maps of a neural result, report them; their metrics (for the JSON reports)."""
    from eit.uncertainty import conductivity_uncertainty

    runner.say(f"{result.method}: linearised Laplace uncertainty ({int(problem.mask.sum())} measurements)")
    unc = conductivity_uncertainty(result, problem, rank=args.uncertainty_rank, progress=not args.quiet)
    runner.write(unc, metrics_file=None)
    cal = unc.metrics.get("calibration")
    runner.say(f"{result.method}: mean predicted std {unc.metrics['mean_std']:.3g} S/m (network "
               f"{unc.metrics['mean_std_network']:.3g}, background level +-{unc.metrics['level_std']:.1%}; "
               f"{unc.metrics['time_s']:.1f} s)"
               + (f"; {cal['within_1std']:.1%} / {cal['within_2std']:.1%} of cells within 1 / 2 std (nominal "
                  f"68.3% / 95.4%), std-|error| correlation {cal['std_error_correlation']:.2f}" if cal else ""))
    return unc.metrics
