"""``untrained geoprior reconstruct INPUT... --out DIR``.

The options of the reconstruction's settings are generated from the parameters of
:class:`geoprior.DeepGeometricPrior` (names, types, defaults, choices and the help text of
its docstring), so the command line and the library cannot drift apart.
"""
from __future__ import annotations

import argparse
import sys
import inspect
import re
import time
import typing
from pathlib import Path

from geoprior.reconstruct import DeepGeometricPrior

__all__ = ["register", "run_reconstruct", "add_settings_options", "settings_from_args"]

DESCRIPTION = """\
Reads one or more clouds (PLY, OBJ, XYZ, PTS, NPY; several files are concatenated) or a
Stanford .conf scan set, reconstructs the surface and writes to DIR:

  dense.ply            the dense cloud sampled from the fitted charts, with oriented normals
  mesh.ply             the screened Poisson mesh of the dense cloud
  input_vs_output.png  input and output rendered side by side
  metrics.json         settings, timings, fit summary and, with --reference MESH, the
                       Chamfer-L1/L2, Hausdorff and F-score of the mesh, the dense cloud and
                       the input against the reference surface (lengths divided by its
                       bounding-box diagonal)

With --uncertainty (linearised Laplace posterior of every chart, noise level from the
charts' own matched-point residual):

  dense_std.ply        the dense cloud with a float vertex property "std": the predicted
                       std of each point along its normal (input units)
  std.png              the dense cloud coloured by std (and, with --reference, by the
                       distance to the reference along the normal, same scale)
  uncertainty.json     per-chart noise level and prior precision, timings and, with
                       --reference, the shares of points within 1 and 2 std of the
                       reference and the correlation of std with that distance
"""

#: flags that differ from ``--<parameter-name>``
FLAGS = {"stopping": "--stop", "trim_quantile": "--trim", "isolated_factor": "--isolated"}
#: settings given by the common options (--seed, --device, --quiet)
COMMON = ("seed", "device", "progress")
OUTPUTS = ("dense.ply", "mesh.ply", "input_vs_output.png", "metrics.json")


def register(subparsers: argparse._SubParsersAction) -> None:
    from shared.cli import add_common_options

    gp = subparsers.add_parser("geoprior", help="deep geometric prior: surfaces from noisy point clouds")
    sub = gp.add_subparsers(dest="command", metavar="{reconstruct}")
    sub.required = True
    p = sub.add_parser("reconstruct", help="reconstruct a surface (dense cloud + mesh) from scans",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="point cloud file(s) or a .conf scan set")
    p.add_argument("--reference", type=Path, help="reference mesh to score against (PLY/OBJ/OFF/STL)")
    p.add_argument("--uncertainty", action="store_true",
                   help="also write the predicted std of every dense point along its normal (linearised Laplace "
                   "posterior of every chart): dense_std.ply, std.png, uncertainty.json (with its calibration "
                   "against --reference)")
    add_settings_options(p, DeepGeometricPrior, skip=COMMON)
    add_common_options(p, default_out="out/geoprior")
    p.set_defaults(func=run_reconstruct)


def parameter_help(cls: type) -> dict[str, str]:
    """The description of each parameter in the numpydoc ``Parameters`` section of ``cls``'s docstring."""
    doc = inspect.getdoc(cls) or ""
    section = doc.split("Parameters\n----------\n", 1)[-1]
    helps: dict[str, str] = {}
    for name, text in re.findall(r"^(\w+) :[^\n]*\n((?:    [^\n]*\n?)+)", section, flags=re.M):
        helps[name] = " ".join(line.strip() for line in text.splitlines())
    return helps


def add_settings_options(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One option per ``__init__`` parameter of ``cls`` (except ``skip``): type and default from
    the signature, ``choices`` from ``cls.choices``, help from the docstring; a boolean that
    defaults to True becomes ``--no-<name>``, a tuple a list of values."""
    hints = typing.get_type_hints(cls.__init__)
    helps = parameter_help(cls)
    choices = getattr(cls, "choices", {})
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or name in skip:
            continue
        default, kind = param.default, hints.get(name)
        flag = FLAGS.get(name, "--" + name.replace("_", "-"))
        text = helps.get(name, name.replace("_", " ")).replace("%", "%%")
        if isinstance(default, bool):
            flag = flag if not default else "--no-" + flag[2:]
            parser.add_argument(flag, dest=name, action="store_false" if default else "store_true", help=text)
            continue
        kwargs: dict = {"dest": name, "default": default, "help": f"{text} (default: %(default)s)"}
        if name in choices:
            kwargs["choices"] = list(choices[name])
        if isinstance(default, tuple):
            kwargs.update(nargs="+", type=_option_type(type(default[0])), default=list(default))
        else:
            kwargs["type"] = _option_type(type(default) if default is not None else _optional_type(kind))
        parser.add_argument(flag, **kwargs)


def _optional_type(hint) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else str


def _option_type(kind: type):
    """Numbers are parsed by :func:`shared.cli.number` (finite values only), the rest by their type."""
    from shared.cli import number

    return number(kind) if kind in (int, float) else kind


def settings_from_args(args: argparse.Namespace, cls: type = DeepGeometricPrior) -> DeepGeometricPrior:
    """The reconstructor of the parsed options (``progress`` from ``--quiet``); its settings checked."""
    names = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "progress")]
    params = {n: getattr(args, n) for n in names}
    params["hidden"] = tuple(params["hidden"])
    return cls(**params, progress=not args.quiet).check()


def run_reconstruct(args: argparse.Namespace) -> int:
    from geoprior.io import load_clouds, load_mesh
    from geoprior.metrics import evaluate_against_mesh
    from geoprior.reconstruct import MIN_POINTS
    from geoprior.uncertainty import UNCERTAINTY_FILES
    from shared.cli import InputError, Runner

    try:
        rec = settings_from_args(args)
    except ValueError as exc:  # the message starts with the setting's name: name its flag instead
        name, _, rest = str(exc).partition(" ")
        raise InputError(f"{FLAGS.get(name, '--' + name.replace('_', '-'))} {rest}") from None
    reference = load_mesh(args.reference) if args.reference is not None else None
    t0 = time.perf_counter()
    cloud = load_clouds(args.inputs)
    load_s = time.perf_counter() - t0
    if len(cloud) < MIN_POINTS:
        raise InputError(f"{cloud.source}: geoprior needs at least {MIN_POINTS} points to fit charts, got {len(cloud)}")
    outputs = [*OUTPUTS, *(UNCERTAINTY_FILES if args.uncertainty else ())]
    runner = Runner(args, inputs=[*args.inputs, args.reference], outputs=outputs)
    runner.open()
    t0 = time.perf_counter()
    result = rec.reconstruct(cloud)
    wall = time.perf_counter() - t0
    result.timings.update(load_s=load_s, reconstruct_s=wall)
    result.info = {"inputs": [str(p) for p in args.inputs], **result.info}
    if reference is not None:
        a = result.arrays
        scores = {}
        if a["faces"] is not None:
            scores["mesh"] = evaluate_against_mesh(reference, mesh=(a["vertices"], a["faces"]))
        scores["dense"] = evaluate_against_mesh(reference, points=a["points"])
        scores["input"] = evaluate_against_mesh(reference, points=cloud.points)
        result.info["reference"] = str(args.reference)
        result.metrics["scores"] = scores
    written = runner.write(result)
    if args.uncertainty and not runner.interrupted:
        written += _uncertainty(runner, result, reference, args)
    _report(runner, result, wall, written)
    if "mesh_error" in result.info:
        print(f"error: screened Poisson meshing failed ({result.info['mesh_error']}); the dense oriented cloud "
              f"was written to {runner.out / 'dense.ply'}", file=sys.stderr)
        return 1
    return runner.finish()


def _uncertainty(runner, result, reference, args: argparse.Namespace) -> list[Path]:
    """Write the std of the dense points (``--uncertainty``) and report it; the files written."""
    from geoprior.uncertainty import UNCERTAINTY_FILES, reconstruction_uncertainty

    runner.say(f"uncertainty: linearised Laplace posterior of {result.info['n_patches']} charts")
    unc = reconstruction_uncertainty(result, reference, progress=not args.quiet)
    written = runner.write(unc, metrics_file=UNCERTAINTY_FILES[-1])
    m = unc.metrics
    runner.say(f"uncertainty: mean std {m['mean_std']:.3e} along the normal, noise std (median over charts) "
               f"{m['noise_std']['median']:.3e}, {unc.timings['total_s']:.1f} s")
    cal = m.get("calibration")
    if cal:
        runner.say(f"uncertainty: {cal['within_1std']:.1%} / {cal['within_2std']:.1%} of the dense points within "
                   f"1 / 2 std of the reference (nominal 68.3% / 95.4%), std-error correlation "
                   f"{cal['std_error_correlation']:.2f}")
    return written


def _report(runner, result, wall: float, written: list[Path]) -> None:
    a, info = result.arrays, result.info
    mesh = f", {len(a['faces']):,} triangles" if a["faces"] is not None else ""
    runner.say(f"reconstructed {info['n_input']:,} points in {wall:.1f} s: {info['n_patches']} charts, "
               f"{len(a['points']):,} dense points{mesh}")
    for k, s in result.metrics.get("scores", {}).items():
        runner.say(f"  {k:6s} Chamfer-L1 {s['chamfer_l1']:.3e}  F-score {s['fscore']:.3f}  "
                   f"Hausdorff {s['hausdorff']:.3e}")
    for p in written:
        runner.say(f"wrote {p}")
