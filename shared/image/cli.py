"""``untrained image {denoise,inpaint,superres,deblur,cs,ct} INPUT [options]``.

Each subcommand reads INPUT (PNG/JPEG/TIFF/BMP/.npy, grey or RGB, any size), builds the
task's measurement (:mod:`shared.image.tasks`), fits a deep image prior through
:func:`shared.fit.fit` and writes into ``--out``:

* ``result.png``      the restored image, at the size of the input (x scale for superres),
* ``comparison.png``  input | output | reference (when known), with PSNR/SSIM,
* ``curves.png``      loss (and PSNR when a reference is known) against the iteration,
* ``metrics.json``    settings, stop/selected iteration, wall time, PSNR/SSIM,
* with ``--uncertainty``: ``std.png``, ``std.pt``, ``uncertainty.json``.

The run goes through :class:`shared.cli.Runner`: every input is read and every option
checked before anything is created, no output may replace an input, and the report goes
to stdout.

Examples::

    untrained image denoise noisy.png --out out/                    # SURE, noise level estimated
    untrained image denoise noisy.png --sigma 25 --out out/         # SURE, known noise level
    untrained image denoise clean.png --simulate --sigma 25 --out out/
    untrained image inpaint kate.png --mask kate_mask.png --out out/
    untrained image superres small.png --scale 4 --out out/
    untrained image ct phantom.png --angles 30 --out out/
    untrained image cs phantom.png --ratio 0.05 --prior iagan --generator checkpoints/generator_ellipses64.pt

``cs`` and ``ct`` also reconstruct with a learned generator (``--prior csgm|iagan|latent``,
:mod:`shared.image.generative`), writing result.png, comparison.png, curves.png and
metrics.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from shared.cli import InputError, Runner, add_common_options, number
from shared.image.io import MAX_PIXELS

TASKS = {
    "denoise": "remove noise (A = identity)",
    "inpaint": "fill in missing pixels given a mask image or a random known-pixel fraction",
    "superres": "super-resolve by 4 or 8 (anti-aliased down-sampling operator)",
    "deblur": "remove a Gaussian blur",
    "cs": "compressed sensing with a dense Gaussian matrix (grey, small image)",
    "ct": "sparse-view parallel-beam CT (grey image; FBP as baseline)",
}


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
        p = tasks.add_parser(name, help=help_text, description=help_text + ".")
        _add_task_options(p, name)
        add_common_options(p, default_out=f"out/image-{name}")
        p.set_defaults(func=run)


def _add_task_options(p: argparse.ArgumentParser, task: str) -> None:
    from shared.image.dip import STOPPING
    from shared.image.tasks import NETS, SURE_DEFAULTS, TASK_DEFAULTS, TIKHONOV_DEFAULTS

    D = " (default: %(default)s)"
    simulated_only = task in ("cs", "ct")
    p.add_argument("input", type=Path, metavar="INPUT",
                   help="the clean image to measure" if simulated_only else
                   "the degraded image (or, with --simulate, the clean image to degrade)")
    if task == "inpaint":
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("--mask", type=Path, help="mask image of INPUT's size: white = known pixel, black = missing")
        g.add_argument("--fraction", type=number(float, 0, 1, low_open=True, high_open=True),
                       help="keep a random fraction of the pixels, in (0, 1)")
    _add_measurement_options(p, task)
    if task == "superres":
        p.add_argument("--scale", type=int, choices=(4, 8), default=4, help="up-sampling factor" + D)
    if task == "deblur":
        p.add_argument("--blur-std", type=number(float, 0, low_open=True), default=2.0,
                       help="std (pixels) of the Gaussian blur kernel" + D)
    if task == "cs":
        p.add_argument("--ratio", type=number(float, 0, 1, low_open=True), default=0.25,
                       help="m/n, measurements per pixel" + D)
        p.add_argument("--size", type=number(int, 1), default=None,
                       help="the image is converted to grey and resized to SIZE x SIZE (default: 64, or the "
                       "generator's size with --generator)")
        p.add_argument("--noise", type=number(float, 0), default=0.0, help="noise std relative to the RMS of A x" + D)
    if task == "ct":
        p.add_argument("--angles", type=number(int, 1), default=30, help="number of projection angles in [0, 180)" + D)
        p.add_argument("--size", type=number(int, 1), default=None,
                       help="the image is converted to grey and resized to SIZE x SIZE (default: 128, or the "
                       "generator's size with --generator)")
        p.add_argument("--noise", type=number(float, 0), default=0.01,
                       help="noise std relative to the RMS of the sinogram" + D)
    if simulated_only:
        from shared.image.generative import PRIORS

        p.add_argument("--prior", choices=("dip", *PRIORS), default="dip",
                       help="dip = untrained network (default); with a learned generator (--generator): csgm = "
                       "latent search, iagan = latent search then image-adaptive weights, latent = spatial latent "
                       "through the generator's last levels")
        p.add_argument("--generator", type=Path, metavar="CHECKPOINT",
                       help="generator checkpoint for --prior csgm/iagan/latent (make them with: make generators)")
    if not simulated_only:
        p.add_argument("--simulate", action="store_true",
                       help="treat INPUT as the clean image: synthesise the measurement and use INPUT as reference")
        p.add_argument("--reference", type=Path, help="clean reference image for PSNR/SSIM (never used for fitting)")
        p.add_argument("--size-mode", choices=("pad", "crop"), default="pad",
                       help="how to reach the network's size multiple: reflection padding (removed from the "
                       "result) or central crop" + D)
    p.add_argument("--net", choices=tuple(NETS), default="skip",
                   help="prior network: " + "; ".join(f"{k} = {v.description}" for k, v in NETS.items()) + D)
    sure_note = {"denoise": f"; {SURE_DEFAULTS['iterations']} with the SURE loss",
                 "deblur": f"; {TIKHONOV_DEFAULTS['iterations']} from the Tikhonov input"}.get(task, "")
    p.add_argument("--iterations", type=number(int, 1), default=None,
                   help="maximum number of iterations; early stopping usually ends sooner (default: "
                   f"{TASK_DEFAULTS[task]['iterations']}{sure_note})")
    p.add_argument("--lr", type=number(float, 0, low_open=True), default=None,
                   help="Adam learning rate (default: the network's, 0.01)")
    p.add_argument("--stop", choices=STOPPING, default="auto",
                   help="automatic early stopping: ES-WMV (output variance), held-out 10%% of the "
                   "measurements, or none (run all iterations, return the averaged output); auto = none "
                   "with the Tikhonov or fill input and for inpainting, else eswmv (with the SURE loss: "
                   "window 25, stop once the variance triples)" + D)
    p.add_argument("--patience", type=number(int, 1), default=300,
                   help="iterations without improvement before stopping" + D)
    p.add_argument("--members", type=number(int, 1), default=1,
                   help="fit an ensemble of this many networks (seeds SEED, SEED+1, ...) in one pass of grouped "
                   "convolutions and return their mean image; each member costs a whole fit" + D)
    p.add_argument("--uncertainty", action="store_true",
                   help="also write a pixelwise predictive std (linearised Laplace): std.png, std.pt, uncertainty.json")
    p.add_argument("--uncertainty-rank", type=number(int, 1), default=32,
                   help="rank of the Jacobian SVD for --uncertainty" + D)
    p.add_argument("--max-pixels", type=number(float, 0, low_open=True), default=MAX_PIXELS / 1e6,
                   help="refuse input images larger than this many megapixels (read from the file's header "
                   "before decoding)" + D)


def _add_measurement_options(p: argparse.ArgumentParser, task: str) -> None:
    """The task's own options: ``--sigma`` (the noise level), denoising's ``--loss``, deblurring's and
    inpainting's ``--input``, and ``--consistency`` for the tasks with a blur, a down-sampler or a mask."""
    from shared.image.dip import LOSSES, DeepImagePrior

    defaults = DeepImagePrior()  # what ``auto`` resolves to, for the help texts

    D = " (default: %(default)s)"
    if task == "denoise":
        p.add_argument("--sigma", type=number(float, 0), default=None,
                       help="noise std of INPUT in 0-255 units: with --simulate the noise added (default 25), "
                       "else the known noise level the SURE loss and --uncertainty use (default: estimated "
                       "from the image)")
        p.add_argument("--loss", choices=LOSSES, default="auto",
                       help="sure = the network maps the noisy image to its estimate and minimises Stein's "
                       "unbiased risk estimate (ES-WMV stops a fit that collapses onto the noisy image); "
                       "mse = the classic DIP from random "
                       "noise with early stopping; auto = sure" + D)
    if task == "deblur":
        p.add_argument("--sigma", type=number(float, 0), default=2.0,
                       help="noise std in 0-255 units added with --simulate (and the noise level of "
                       "--uncertainty)" + D)
    if task in ("deblur", "inpaint"):
        start = {"deblur": ("tikhonov", "the blurred image deconvolved by Tikhonov regularisation, its weight "
                            "chosen by generalised cross-validation"),
                 "inpaint": ("fill", "the biharmonic fill of the unknown pixels")}[task]
        p.add_argument("--input", dest="net_input", choices=("auto", "noise", start[0]), default="auto",
                       help=f"the network's input: {start[0]} = {start[1]} (the network refines it; cosine step "
                       "decay, no early stopping); noise = the classic DIP from random noise; auto = "
                       + defaults.resolved_input(task) + D)
    if task in ("superres", "deblur", "inpaint"):
        step = {"inpaint": "fill = restore the known pixels and carry the correction smoothly (harmonically) "
                "into the holes"}.get(task, "tikhonov = correct the output by the smallest change (Laplacian-"
                                      "weighted, weight by generalised cross-validation) that fits the measurements")
        p.add_argument("--consistency", choices=("auto", "none", "fill" if task == "inpaint" else "tikhonov"),
                       default="auto", help=f"after the fit: {step}; none = the network's output; auto = "
                       + defaults.resolved_consistency(task) + D)


def _positive(name: str, value: float | int | None, strict: bool = True) -> None:
    if value is None:
        return
    if (strict and not value > 0) or (not strict and value < 0):
        raise InputError(f"--{name} must be {'positive' if strict else 'non-negative'}, got {value}")


def build_problem(args: argparse.Namespace, multiple: int):
    """Read the inputs named in ``args`` and build the task's :class:`~shared.image.tasks.Problem`."""
    from shared.image import tasks as T
    from shared.image.io import read_image, read_mask

    task = args.task
    cap = int(args.max_pixels * 1e6)
    image = read_image(args.input, name="input image", max_pixels=cap)
    reference = None
    if getattr(args, "reference", None) is not None:
        reference = read_image(args.reference, name="reference image", max_pixels=cap)
    simulate = getattr(args, "simulate", False)
    mode = getattr(args, "size_mode", "pad")
    if task == "denoise":
        _positive("sigma", args.sigma, strict=False)
        sigma = 25.0 if args.sigma is None else args.sigma
        return T.denoise_problem(image, multiple=multiple, sigma=sigma / 255, simulate=simulate,
                                 reference=reference, size_mode=mode, seed=args.seed)
    if task == "inpaint":
        mask = read_mask(args.mask, tuple(image.shape[-2:]), max_pixels=cap) if args.mask is not None else None
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
        return T.cs_problem(image, multiple=multiple, ratio=args.ratio, size=args.size or 64, noise=args.noise,
                            seed=args.seed)
    if task == "ct":
        _positive("size", args.size)
        _positive("noise", args.noise, strict=False)
        return T.ct_problem(image, multiple=multiple, angles=args.angles, size=args.size or 128, noise=args.noise,
                            seed=args.seed)
    raise InputError(f"unknown image task {task!r}")


def output_files(args: argparse.Namespace) -> list[str]:
    """Every file the run may write (so that none can replace an input)."""
    from shared.image.dip import OUTPUT_FILES
    from shared.image.uncertainty_maps import UNCERTAINTY_FILES

    return [*OUTPUT_FILES, *(UNCERTAINTY_FILES if args.uncertainty else ())]


def run(args: argparse.Namespace) -> int:
    """Entry point of every ``untrained image <task>`` subcommand."""
    from shared.image.dip import DeepImagePrior
    from shared.image.tasks import NETS
    from shared.image.uncertainty_maps import METRICS_FILE, image_uncertainty, known_noise_std

    for name in ("iterations", "lr", "patience", "uncertainty-rank"):
        _positive(name, getattr(args, name.replace("-", "_")))
    if getattr(args, "prior", "dip") != "dip":
        return run_generative(args)
    if getattr(args, "generator", None) is not None:
        raise InputError("--generator is used by --prior csgm, iagan or latent; the default --prior dip needs none")
    given_sigma = None
    if args.task == "denoise" and args.sigma is not None and not args.simulate:
        if args.sigma == 0 and args.loss != "mse":
            raise InputError("--sigma 0: the SURE loss needs the positive noise std of INPUT (0-255 units); "
                             "omit --sigma to estimate it from the image")
        given_sigma = args.sigma / 255 or None
    dip = DeepImagePrior(net=args.net, loss=getattr(args, "loss", "mse"), net_input=getattr(args, "net_input", "auto"),
                         consistency=getattr(args, "consistency", "auto"),
                         sigma=given_sigma,
                         iterations=args.iterations, lr=args.lr, stop=args.stop,
                         patience=args.patience, seed=args.seed, members=args.members, device=args.device,
                         progress=False if args.quiet else f"{args.task} ({args.net})").check()
    inputs = [args.input, getattr(args, "mask", None), getattr(args, "reference", None)]
    problem = build_problem(args, NETS[args.net].multiple)
    runner = Runner(args, inputs=inputs, outputs=output_files(args))
    out = runner.open()
    for msg in problem.messages:
        runner.say(f"note: {msg}")
    try:
        dip.resolved_input(problem.task)
    except ValueError as err:
        raise InputError(str(err)) from None
    if dip.settings(problem.task)["loss"] == "sure":
        sigma, source = dip.noise_level(problem)
        if source == "estimated":
            runner.say(f"note: noise std estimated from the image: {sigma * 255:.3g}/255 (give --sigma to set it)")
    result = dip.reconstruct(problem)
    result.info["inputs"] = [str(p) for p in runner.inputs]
    runner.write(result)
    if args.uncertainty:
        sigma = result.config.get("sigma_255", getattr(args, "sigma", None))
        noise_std = known_noise_std(problem, sigma=None if sigma is None else sigma / 255,
                                    noise=getattr(args, "noise", None))
        unc = image_uncertainty(result, problem, noise_std=noise_std, rank=args.uncertainty_rank,
                                progress=not args.quiet)
        runner.write(unc, metrics_file=METRICS_FILE)
        if "calibration" in unc.info:
            within = unc.info["calibration"]["fraction_within"]
            runner.say(f"uncertainty: {within:.1%} of pixels within 2 predicted std")
    m = result.metrics
    summary = (f"{args.task}: {m['iterations_run']} iterations ({m['stopped_by']}), output of iteration "
               f"{m['selected_iteration']}, {m['wall_time_s']:.1f} s")
    if "psnr" in m:
        summary += f"; PSNR {m['psnr']:.2f} dB (best during fit {m['best_psnr_during_fit']:.2f} dB)"
    runner.say(summary)
    runner.say(f"wrote {', '.join(output_files(args))} to {out}")
    return runner.finish()


def run_generative(args: argparse.Namespace) -> int:
    """``untrained image cs|ct --prior csgm|iagan|latent --generator CHECKPOINT``."""
    from shared.image.generative import GENERATIVE_FILES, GenerativePrior
    from shared.image.generator import load_generator

    if args.generator is None:
        raise InputError(f"--prior {args.prior} needs a trained generator: --generator CHECKPOINT "
                         "(make the checkpoints with: make generators)")
    if args.uncertainty:
        raise InputError(f"--uncertainty is available with --prior dip only, not with --prior {args.prior}")
    gen, meta = load_generator(args.generator)
    if args.size is not None and args.size != gen.size:
        raise InputError(f"--size {args.size}: the generator {args.generator} makes {gen.size}x{gen.size} images; "
                         f"omit --size or pass --size {gen.size}")
    args.size = gen.size
    rec = GenerativePrior(gen, prior=args.prior, seed=args.seed, device=args.device,
                          progress=not args.quiet).check()
    problem = build_problem(args, multiple=1)
    runner = Runner(args, inputs=[args.input, args.generator], outputs=[*GENERATIVE_FILES, "metrics.json"])
    out = runner.open()
    for msg in problem.messages:
        runner.say(f"note: {msg}")
    result = rec.reconstruct(problem)
    result.info.update({"inputs": [str(p) for p in runner.inputs], "generator_checkpoint": str(args.generator),
                        "generator_family": meta.get("family")})
    runner.write(result)
    m = result.metrics
    summary = f"{args.task} ({args.prior}, generator of {meta.get('family', '?')}): {m['wall_time_s']:.1f} s"
    if "psnr" in m:
        summary += f"; PSNR {m['psnr']:.2f} dB, relative error {m['rel_err']:.3f}"
    runner.say(summary)
    runner.say(f"wrote {', '.join([*GENERATIVE_FILES, 'metrics.json'])} to {out}")
    return runner.finish()
