"""``untrained image {denoise,inpaint,superres,deblur,cs,ct} INPUT [options]``.

Each subcommand reads INPUT (PNG/JPEG/TIFF/BMP/.npy, grey or RGB, any size), builds the
task's measurement (:mod:`shared.image.tasks`), fits a deep image prior through
:func:`shared.fit.fit` and writes into ``--out``:

* ``result.png``      the restored image, at the size of the input (x scale for superres),
* ``comparison.png``  input | output | reference (when known), with PSNR/SSIM,
* ``curves.png``      loss (and PSNR when a reference is known) against the iteration,
* ``metrics.json``    settings, stop/selected iteration, wall time, PSNR/SSIM.

Examples::

    untrained image denoise noisy.png --out out/
    untrained image denoise clean.png --simulate --sigma 25 --out out/
    untrained image inpaint kate.png --mask kate_mask.png --out out/
    untrained image superres small.png --scale 4 --out out/
    untrained image ct phantom.png --angles 30 --out out/
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from shared.cli import add_common_options, prepare_out_dir

TASKS = {
    "denoise": "remove noise (A = identity)",
    "inpaint": "fill in missing pixels given a mask image or a random known-pixel fraction",
    "superres": "super-resolve by 4 or 8 (anti-aliased down-sampling operator)",
    "deblur": "remove a Gaussian blur",
    "cs": "compressed sensing with a dense Gaussian matrix (grey, small image)",
    "ct": "sparse-view parallel-beam CT (grey image; FBP as baseline)",
}

OUTPUT_FILES = ("result.png", "comparison.png", "curves.png", "metrics.json")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``image`` and its task subcommands to the ``untrained`` parser."""
    image = subparsers.add_parser(
        "image",
        help="deep image prior: denoise, inpaint, superres, deblur, cs, ct",
        description="Deep image prior restoration of one image. Writes result.png, comparison.png, "
        "curves.png and metrics.json into --out.",
    )
    tasks = image.add_subparsers(dest="task", metavar="{" + ",".join(TASKS) + "}")
    tasks.required = True
    for name, help_text in TASKS.items():
        p = tasks.add_parser(name, help=help_text, description=help_text + ".",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        _add_task_options(p, name)
        add_common_options(p, default_out=f"out/image-{name}")
        p.set_defaults(func=run)


def _add_task_options(p: argparse.ArgumentParser, task: str) -> None:
    from shared.image.tasks import NETS, TASK_DEFAULTS

    simulated_only = task in ("cs", "ct")
    p.add_argument("input", type=Path, metavar="INPUT",
                   help="the clean image to measure" if simulated_only else
                   "the degraded image (or, with --simulate, the clean image to degrade)")
    if task == "inpaint":
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("--mask", type=Path, help="mask image of INPUT's size: white = known pixel, black = missing")
        g.add_argument("--fraction", type=float, help="keep a random fraction of the pixels, in (0, 1)")
    if task in ("denoise", "deblur"):
        p.add_argument("--sigma", type=float, default=25.0 if task == "denoise" else 2.0,
                       help="noise std in 0-255 units added with --simulate")
    if task == "superres":
        p.add_argument("--scale", type=int, choices=(4, 8), default=4, help="up-sampling factor")
    if task == "deblur":
        p.add_argument("--blur-std", type=float, default=2.0, help="std (pixels) of the Gaussian blur kernel")
    if task == "cs":
        p.add_argument("--ratio", type=float, default=0.25, help="m/n, measurements per pixel")
        p.add_argument("--size", type=int, default=64, help="the image is converted to grey and resized to SIZE x SIZE")
        p.add_argument("--noise", type=float, default=0.0, help="noise std relative to the RMS of A x")
    if task == "ct":
        p.add_argument("--angles", type=int, default=30, help="number of projection angles in [0, 180)")
        p.add_argument("--size", type=int, default=128, help="the image is converted to grey and resized to SIZE x SIZE")
        p.add_argument("--noise", type=float, default=0.01, help="noise std relative to the RMS of the sinogram")
    if not simulated_only:
        p.add_argument("--simulate", action="store_true",
                       help="treat INPUT as the clean image: synthesise the measurement and use INPUT as reference")
        p.add_argument("--reference", type=Path, help="clean reference image for PSNR/SSIM (never used for fitting)")
        p.add_argument("--size-mode", choices=("pad", "crop"), default="pad",
                       help="how to reach the network's size multiple: reflection padding (removed from the "
                       "result) or central crop")
    p.add_argument("--net", choices=tuple(NETS), default="skip",
                   help="prior network: " + "; ".join(f"{k} = {v.description}" for k, v in NETS.items()))
    p.add_argument("--iterations", type=int, default=TASK_DEFAULTS[task]["iterations"],
                   help="maximum number of iterations (early stopping usually ends sooner)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the network's, 0.01)")
    p.add_argument("--stop", choices=("eswmv", "heldout", "none"), default="eswmv",
                   help="automatic early stopping: ES-WMV (output variance), held-out 10%% of the "
                   "measurements, or none (run all iterations, return the averaged output)")
    p.add_argument("--patience", type=int, default=300, help="iterations without improvement before stopping")
    p.add_argument("--uncertainty", action="store_true",
                   help="also write a pixelwise predictive std (linearised Laplace): std.png, std.pt, uncertainty.json")
    p.add_argument("--uncertainty-rank", type=int, default=32, help="rank of the Jacobian SVD for --uncertainty")


def _positive(name: str, value: float | int | None, strict: bool = True) -> None:
    if value is None:
        return
    if (strict and not value > 0) or (not strict and value < 0):
        raise ValueError(f"--{name} must be {'positive' if strict else 'non-negative'}, got {value}")


def build_problem(args: argparse.Namespace, multiple: int):
    """Read the inputs named in ``args`` and build the task's :class:`~shared.image.tasks.Problem`."""
    from shared.image import tasks as T
    from shared.image.io import read_image, read_mask

    task = args.task
    image = read_image(args.input, name="input image")
    reference = None
    if getattr(args, "reference", None) is not None:
        reference = read_image(args.reference, name="reference image")
    simulate = getattr(args, "simulate", False)
    mode = getattr(args, "size_mode", "pad")
    if task == "denoise":
        _positive("sigma", args.sigma, strict=False)
        return T.denoise_problem(image, multiple=multiple, sigma=args.sigma / 255, simulate=simulate,
                                 reference=reference, size_mode=mode, seed=args.seed)
    if task == "inpaint":
        mask = read_mask(args.mask, tuple(image.shape[-2:])) if args.mask is not None else None
        return T.inpaint_problem(image, multiple=multiple, mask=mask, fraction=args.fraction, reference=reference,
                                 simulate=simulate, size_mode=mode, seed=args.seed)
    if task == "superres":
        return T.superres_problem(image, multiple=multiple, scale=args.scale, simulate=simulate,
                                  reference=reference, size_mode=mode, seed=args.seed)
    if task == "deblur":
        _positive("blur-std", args.blur_std)
        _positive("sigma", args.sigma, strict=False)
        return T.deblur_problem(image, multiple=multiple, blur_std=args.blur_std, sigma=args.sigma / 255,
                                simulate=simulate, reference=reference, size_mode=mode, seed=args.seed)
    if task == "cs":
        _positive("size", args.size)
        _positive("noise", args.noise, strict=False)
        return T.cs_problem(image, multiple=multiple, ratio=args.ratio, size=args.size, noise=args.noise,
                            seed=args.seed)
    if task == "ct":
        _positive("size", args.size)
        _positive("noise", args.noise, strict=False)
        return T.ct_problem(image, multiple=multiple, angles=args.angles, size=args.size, noise=args.noise,
                            seed=args.seed)
    raise ValueError(f"unknown image task {task!r}")


def check_outputs_spare_inputs(out: Path, inputs: list[Path]) -> None:
    """Refuse (before any work) an --out folder where an output would replace an input file."""
    targets = {(out / name).resolve() for name in OUTPUT_FILES}
    for i in inputs:
        if Path(i).resolve() in targets:
            raise ValueError(f"refusing to overwrite the input file {i}; choose another --out folder")


def write_outputs(out: Path, rec, inputs: list[Path], extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write result.png, comparison.png, curves.png and metrics.json for a reconstruction."""
    from shared.image.figures import fit_curves, side_by_side
    from shared.image.io import write_image

    problem, m = rec.problem, rec.metrics
    paths = {name: out / name for name in OUTPUT_FILES}
    write_image(paths["result.png"], rec.result, protect=inputs)
    base_key = "psnr_" + "".join(c if c.isalnum() else "_" for c in problem.baseline_name.lower()).strip("_")
    panels = [(problem.baseline_name + (f"\n{m[base_key]:.2f} dB" if base_key in m else ""), problem.observation),
              (f"DIP ({rec.config['net']}), it. {m['selected_iteration']}" +
               (f"\n{m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}" if "psnr" in m else ""), rec.output)]
    if problem.reference is not None:
        panels.append(("reference", problem.reference))
    check_outputs_spare_inputs(out, inputs)
    side_by_side(paths["comparison.png"], panels)
    fit_curves(paths["curves.png"], rec.fit.history, selected_iteration=rec.fit.selected_iteration,
               baseline=m.get(base_key), title=f"{problem.task}: {rec.config['net']}, stop = {rec.config['stop']}")
    report = {
        "task": problem.task,
        "inputs": [str(p) for p in inputs],
        "input_size": list(problem.geometry.original),
        "network_size": list(problem.shape[-2:]),
        "result_size": list(rec.result.shape[-2:]),
        "size_adjustment": problem.geometry.mode,
        "messages": problem.messages,
        "task_parameters": problem.info,
        "config": rec.config,
        "metrics": m,
    }
    report.update(extra or {})
    paths["metrics.json"].write_text(json.dumps(report, indent=2, default=_json_default))
    return paths


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def run(args: argparse.Namespace) -> int:
    """Entry point of every ``untrained image <task>`` subcommand."""
    from shared.image.tasks import NETS, reconstruct

    _positive("iterations", args.iterations)
    _positive("lr", args.lr)
    _positive("patience", args.patience)
    _positive("uncertainty-rank", args.uncertainty_rank)
    spec = NETS[args.net]
    inputs = [p for p in (args.input, getattr(args, "mask", None), getattr(args, "reference", None)) if p is not None]
    check_outputs_spare_inputs(args.out, inputs)
    problem = build_problem(args, spec.multiple)
    out = prepare_out_dir(args.out)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    for msg in problem.messages:
        say(f"note: {msg}")
    rec = reconstruct(problem, net=args.net, iterations=args.iterations, lr=args.lr, stop=args.stop,
                      patience=args.patience, seed=args.seed, device=args.device,
                      progress=False if args.quiet else f"{args.task} ({args.net})")
    write_outputs(out, rec, inputs)
    if args.uncertainty:
        from shared.image.uncertainty_maps import image_uncertainty

        _, rep = image_uncertainty(rec, args, out, rank=args.uncertainty_rank)
        if "calibration" in rep:
            say(f"uncertainty: {rep['calibration']['fraction_within']:.1%} of pixels within 2 predicted std")
        say(f"wrote std.png, std.pt, uncertainty.json to {out}")
    m = rec.metrics
    summary = (f"{args.task}: {m['iterations_run']} iterations ({m['stopped_by']}), output of iteration "
               f"{m['selected_iteration']}, {m['wall_time_s']:.1f} s")
    if "psnr" in m:
        summary += f"; PSNR {m['psnr']:.2f} dB (best during fit {m['best_psnr_during_fit']:.2f} dB)"
    say(summary)
    say(f"wrote {', '.join(OUTPUT_FILES)} to {out}")
    return 0
