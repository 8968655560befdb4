"""Benchmark: the deep image prior against classical baselines on four restoration tasks.

Every case builds its measurement once with the front end's ``*_problem`` builder
(:mod:`shared.image.tasks`); the DIP (:class:`shared.image.DeepImagePrior` with the CLI
defaults of the task: light ``skip`` net, seed 0; for denoising the SURE loss on the noisy
image with the known sigma, 350 cosine-decayed steps, ES-WMV with window 25 that stops when its
variance triples; for the other
tasks the classic DIP with its lr / input noise / averaging, ES-WMV (window 100, patience 300) and
the task's iteration cap; ``--dip-loss mse`` runs the classic DIP for denoising too) and the baselines of
:mod:`shared.image.baselines` then restore that same measurement in the same process.
Only validation images are used (``../shared/data/images`` and scikit-image's bundled
photographs); no test set is involved, and the baselines' free parameters are chosen
on the images reported, which favours them.

==================  ===========================================================  ==============================
task                measurement                                                  baselines
==================  ===========================================================  ==============================
denoise15/25/50     256 x 256 centre crops of 6 colour images + N(0, sigma^2)    CBM3D, NLM (known sigma)
                    (sigma 15, 25, 50 / 255; clipped to [0, 1]; noise seed 0)
sr4, sr8            Set5 (grey copies here) cropped to a multiple of the scale,  bicubic, Lanczos-3 (PIL),
                    down-sampled by the suite's anti-aliased bicubic operator    Tikhonov with GCV (the known
                                                                                 down-sampler)
inpaint             kate, library, vase with their masks; barbara with 50 %      biharmonic
                    random known pixels (seed 0); full-size images
deblur_gaussian     the denoising crops blurred by a Gaussian (std 2 px) or a     Richardson-Lucy, Wiener,
deblur_motion       15 px linear motion kernel at 30 degrees, reflect boundary,  Tikhonov (exact boundary; all
                    + N(0, 0.01^2) noise (1 % of the range; seed 0)              tuned on a grid), Tikhonov with
                                                                                 GCV, unsupervised Wiener
==================  ===========================================================  ==============================

Metrics: PSNR (dB, peak 1) and SSIM of the result, clipped to [0, 1], at the input's size against the clean
image (:mod:`shared.metrics`); for super-resolution the Set5 convention of
:mod:`shared.image.sr_metrics` (luma, ``scale``-pixel border cropped, peak 255).  Per
image: PSNR, SSIM, wall time; for the DIP also iterations run, selected iteration and
what stopped it.  Per task: means over its images; for RL and Wiener the grid of
:data:`RL_GRID` / :data:`WIENER_GRID` is evaluated on every image and the setting with
the best mean PSNR over the task's images is the one reported (the whole grid is in the
JSON).  Summary keys (DIP mean - baseline mean over the images where the DIP ran):
``denoise_gap_db`` (per sigma, vs CBM3D), ``sr4_gain_db`` / ``sr8_gain_db`` (vs bicubic),
``inpaint_gain_db`` (vs biharmonic), ``deblur_gain_db`` (vs the better of RL and Wiener,
averaged over the two kernels; per kernel in ``deblur_gain_db_per_kernel``;
``deblur_gain_over_best_classical_db`` per kernel adds the Tikhonov rows, the DIP's start;
``sr_gain_over_best_classical_db`` per scale: vs the best of bicubic, Lanczos and Tikhonov),
``denoise_time_s_256`` (mean seconds per 256 x 256 image per method).

The full run (every task, every image, DIP at 256-512 pixels) takes hours of CPU.
Usage::

    python benchmarks/image_restoration.py                       # everything -> results/image_restoration.json
    python benchmarks/image_restoration.py --quick               # smoke run -> results/image_restoration_quick.json
    python benchmarks/image_restoration.py --dip-tasks denoise25 --dip-images 2
                                           # all baselines, DIP on 2 images -> results/image_restoration_partial.json
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from shared.image import (NETS, DeepImagePrior, Problem, centre_crop, deblur_problem,
                          denoise_problem, inpaint_problem, read_image, read_mask, resize, superres_problem,
                          to_tensor, validate_array)
from shared.image import baselines as B
from shared.image.sr_metrics import modcrop, sr_psnr, sr_ssim
from shared.metrics import psnr, ssim
from shared.operators.tikhonov import LAMBDA_GRID
from shared.paths import require_data
from shared.provenance import run_record
from shared.result import write_json

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
NET = "skip"  # the CLI's default network
SEED = 0
SIGMAS = (15, 25, 50)
SCALES = (4, 8)
CROP, QUICK_CROP = 256, 64
QUICK_ITERATIONS = 20
DEBLUR_NOISE = 0.01
GAUSSIAN_BLUR_STD = 2.0
MOTION_LENGTH, MOTION_ANGLE = 15, 30.0
RL_GRID = (10, 20, 30, 50, 100, 200, 400)
WIENER_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
#: denoising / deblurring images: "dip/<file>" in ../shared/data/images or "skimage:<name>"
COLOUR_IMAGES = {"F16": "dip/F16.png", "zebra": "dip/zebra.png", "astronaut": "skimage:astronaut",
                 "chelsea": "skimage:chelsea", "coffee": "skimage:coffee", "rocket": "skimage:rocket"}
SET5 = ("baby", "bird", "butterfly", "head", "woman")
#: inpainting: image -> mask file or fraction of known pixels
INPAINT = {"kate": "kate_mask.png", "library": "library_mask.png", "vase": "vase_mask.png", "barbara": 0.5}
TASK_GROUPS = {"denoise": tuple(f"denoise{s}" for s in SIGMAS), "superres": tuple(f"sr{s}" for s in SCALES),
               "inpaint": ("inpaint",), "deblur": ("deblur_gaussian", "deblur_motion")}
TASKS = tuple(t for group in TASK_GROUPS.values() for t in group)
#: the front end's task name (TASK_DEFAULTS) of each benchmark task
FRONT_END_TASK = {t: g for g, ts in TASK_GROUPS.items() for t in ts}


# ---------------------------------------------------------------------------- images
def load(source: str) -> Tensor:
    """``(1, C, H, W)`` in [0, 1]: ``"dip/F16.png"`` from ../shared/data/images, ``"skimage:astronaut"``."""
    if source.startswith("skimage:"):
        from skimage import data

        return to_tensor(validate_array(getattr(data, source.split(":", 1)[1])(), name=source))
    return read_image(require_data("images", *source.split("/")), name=source)


def motion_kernel(length: int = MOTION_LENGTH, angle_deg: float = MOTION_ANGLE) -> Tensor:
    """A linear motion-blur kernel: an anti-aliased line of ``length`` pixels through the centre of an
    odd ``length x length`` grid at ``angle_deg`` from the horizontal, normalised to sum 1."""
    from skimage.draw import line_aa

    size = length | 1
    c, r = size // 2, (length - 1) / 2
    dx, dy = r * math.cos(math.radians(angle_deg)), r * math.sin(math.radians(angle_deg))
    k = np.zeros((size, size))
    rr, cc, val = line_aa(round(c + dy), round(c - dx), round(c - dy), round(c + dx))
    k[rr, cc] = np.maximum(k[rr, cc], val)
    return torch.as_tensor(k / k.sum(), dtype=torch.float32)


# ---------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One image of one task: the problem the DIP fits, what the baselines get, how to score.

    ``baselines`` maps a method to ``{setting: f() -> image}`` (one setting ``"-"`` when it
    has no free parameter); ``score(image) -> (psnr, ssim)`` at the reference's size.
    """

    task: str
    image: str
    source: str
    problem: Problem
    reference: Tensor
    observation: Tensor | None
    baselines: dict[str, dict[str, Callable[[], Tensor]]]
    score: Callable[[Tensor], tuple[float, float]]
    info: dict[str, Any] = field(default_factory=dict)


def _full_image_score(reference: Tensor) -> Callable[[Tensor], tuple[float, float]]:
    # Scored as saved: clipped to the image range (which can only help a baseline whose output,
    # like an unclipped Wiener or Tikhonov estimate, leaves it).
    return lambda x: (psnr(x.clamp(0, 1), reference), ssim(x.clamp(0, 1), reference))


def _undo(problem: Problem, x: Tensor) -> Tensor:
    return problem.geometry.undo(x, scale=problem.scale)


def denoise_case(name: str, source: str, sigma255: int, crop: int) -> Case:
    clean = centre_crop(load(source), crop)
    sigma = sigma255 / 255
    problem = denoise_problem(clean, multiple=NETS[NET].multiple, sigma=sigma, simulate=True, seed=SEED)
    noisy = _undo(problem, problem.y)
    base = {"cbm3d": {"-": lambda: B.cbm3d_denoise(noisy, sigma)}, "nlm": {"-": lambda: B.nlm_denoise(noisy, sigma)}}
    return Case(f"denoise{sigma255}", name, source, problem, clean, noisy, base, _full_image_score(clean),
                {"crop": crop, "sigma_255": sigma255})


def superres_case(name: str, scale: int, quick: bool) -> Case:
    from shared.operators import Downsample

    hr = load(f"set5/{name}.png")
    if quick:
        hr = centre_crop(hr, QUICK_CROP)
    hr = modcrop(hr, scale)
    # The low-resolution input: the suite's anti-aliased bicubic down-sampling (MATLAB imresize's kernel),
    # clipped to [0, 1] (its negative lobes overshoot at edges) but not quantised.
    lr = Downsample(scale).A(hr).clamp(0, 1)
    problem = superres_problem(lr, multiple=NETS[NET].multiple, scale=scale, reference=hr, seed=SEED)
    base = {m: {"-": (lambda m=m: B.upsample(lr, scale, m))} for m in ("bicubic", "lanczos")}
    # Tikhonov with the known down-sampler (GCV weight): the classical estimate that uses the DIP's model.
    base["tikhonov_gcv"] = {"-": lambda: B.tikhonov_upsample(lr, scale)}
    return Case(f"sr{scale}", name, f"set5/{name}.png", problem, hr, None, base,
                lambda x: (sr_psnr(x, hr, scale), sr_ssim(x, hr, scale)),
                {"hr_size": list(hr.shape[-2:]), "lr_size": list(lr.shape[-2:])})


def inpaint_case(name: str, how: str | float, quick: bool) -> Case:
    image = load(f"dip/{name}.png")
    mask = read_mask(require_data("images", "dip", how), tuple(image.shape[-2:])) if isinstance(how, str) else None
    if quick:  # a smaller copy (resized, not cropped, so that the holes stay in the picture)
        h, w = image.shape[-2:]
        size = (max(16, round(h * QUICK_CROP / max(h, w))), max(16, round(w * QUICK_CROP / max(h, w))))
        image = resize(image, size).clamp(0, 1)
        mask = None if mask is None else (resize(mask, size) > 0.5).float()
    kw = {"mask": mask} if mask is not None else {"fraction": float(how)}
    problem = inpaint_problem(image, multiple=NETS[NET].multiple, simulate=True, seed=SEED, **kw)
    masked, known = _undo(problem, problem.y), _undo(problem, problem.forward.mask)
    base = {"biharmonic": {"-": lambda: B.biharmonic_inpaint(masked, known)}}
    return Case("inpaint", name, f"dip/{name}.png", problem, image, masked, base, _full_image_score(image),
                {"mask": how if isinstance(how, str) else f"random {how:.0%} known (seed {SEED})",
                 "known_fraction": float(known.mean()), "size": list(image.shape[-2:])})


def deblur_case(name: str, source: str, kind: str, crop: int) -> Case:
    from shared.operators import Blur, gaussian_kernel

    clean = centre_crop(load(source), crop)
    problem = deblur_problem(clean, multiple=NETS[NET].multiple, blur_std=GAUSSIAN_BLUR_STD, sigma=DEBLUR_NOISE,
                             simulate=True, seed=SEED)
    if kind == "motion":
        # The builder knows only Gaussian kernels: keep its noise draw, swap the operator.
        x = problem.reference
        noise = problem.y - problem.forward.A(x)
        op = Blur(motion_kernel(), padding="reflect")
        y = op.A(x) + noise
        problem = replace(problem, forward=op, y=y, observation=y.clamp(0, 1),
                          info={**problem.info, "blur_std_px": None,
                                "kernel": f"motion {MOTION_LENGTH} px at {MOTION_ANGLE} deg"},
                          messages=[f"motion blur {MOTION_LENGTH} px at {MOTION_ANGLE} deg + noise sigma "
                                    f"{DEBLUR_NOISE * 255:.3g}/255"])
        psf = motion_kernel()
    else:
        psf = gaussian_kernel(GAUSSIAN_BLUR_STD)
    blurred = _undo(problem, problem.y)
    base = {"richardson_lucy": {str(n): (lambda n=n: B.richardson_lucy_deblur(blurred, psf, n)) for n in RL_GRID},
            "wiener": {f"{b:g}": (lambda b=b: B.wiener_deblur(blurred, psf, b)) for b in WIENER_GRID},
            "unsupervised_wiener": {"-": lambda: B.unsupervised_wiener_deblur(blurred, psf, seed=SEED)},
            "tikhonov": {f"{lam:.2g}": (lambda lam=lam: B.tikhonov_deblur(blurred, psf, lam)) for lam in LAMBDA_GRID},
            "tikhonov_gcv": {"-": lambda: B.tikhonov_deblur(blurred, psf)}}
    kernel = (f"Gaussian std {GAUSSIAN_BLUR_STD} px" if kind == "gaussian"
              else f"motion {MOTION_LENGTH} px at {MOTION_ANGLE} deg")
    return Case(f"deblur_{kind}", name, source, problem, clean, blurred.clamp(0, 1), base, _full_image_score(clean),
                {"crop": crop, "kernel": kernel, "kernel_size": list(psf.shape), "noise_std": DEBLUR_NOISE})


def build_cases(task: str, n_images: int | None, quick: bool) -> list[Case]:
    """The first ``n_images`` cases of ``task`` (all when None)."""
    crop = QUICK_CROP if quick else CROP
    names = {"inpaint": list(INPAINT), "sr4": list(SET5), "sr8": list(SET5)}.get(task, list(COLOUR_IMAGES))
    names = names[:n_images] if n_images is not None else names
    if task.startswith("denoise"):
        return [denoise_case(n, COLOUR_IMAGES[n], int(task[len("denoise"):]), crop) for n in names]
    if task.startswith("sr"):
        return [superres_case(n, int(task[2:]), quick) for n in names]
    if task == "inpaint":
        return [inpaint_case(n, INPAINT[n], quick) for n in names]
    return [deblur_case(n, COLOUR_IMAGES[n], task.split("_", 1)[1], crop) for n in names]


# ---------------------------------------------------------------------------- running
def timed(f: Callable[[], Tensor]) -> tuple[Tensor, float]:
    t0 = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0


def run_dip(case: Case, dip: DeepImagePrior, progress: bool) -> dict[str, Any]:
    """Fit the DIP to the case's problem; its scores (same metric as the baselines), time and stop record."""
    dip.progress = f"{case.task} {case.image}" if progress else False
    out, seconds = timed(lambda: dip.reconstruct(case.problem))
    result = out.arrays["result"]
    if tuple(result.shape) != tuple(case.reference.shape):
        raise RuntimeError(f"DIP result {tuple(result.shape)} does not match the reference "
                           f"{tuple(case.reference.shape)}")
    p, s = case.score(result)
    m = out.metrics
    return {"psnr": p, "ssim": s, "wall_time_s": seconds, "fit_time_s": m["wall_time_s"],
            "iterations_run": m["iterations_run"], "selected_iteration": m["selected_iteration"],
            "stopped_by": m["stopped_by"], "max_iterations": out.config["iterations"],
            "best_psnr_during_fit": m.get("best_psnr_during_fit"), "config": out.config}


def run_case(case: Case, dip: DeepImagePrior | None, progress: bool) -> dict[str, Any]:
    """Every baseline setting (and the DIP when given) on one case: the per-image record."""
    rec: dict[str, Any] = {"image": case.image, "source": case.source, **case.info,
                           "problem_messages": list(case.problem.messages), "grid": {}, "methods": {}}
    if case.observation is not None:
        p, s = case.score(case.observation)
        rec["input"] = {"what": case.problem.baseline_name, "psnr": p, "ssim": s}
    for method, settings in case.baselines.items():
        rec["grid"][method] = {}
        for setting, f in settings.items():
            img, seconds = timed(f)
            p, s = case.score(img)
            rec["grid"][method][setting] = {"psnr": p, "ssim": s, "wall_time_s": seconds}
    if dip is not None:
        rec["methods"]["dip"] = run_dip(case, dip, progress)
    return rec


def choose_settings(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per baseline: the setting with the best mean PSNR over ``records`` and the grid's means."""
    out = {}
    for method, grid in records[0]["grid"].items():
        means = {s: float(np.mean([r["grid"][method][s]["psnr"] for r in records])) for s in grid}
        best = max(means, key=means.get)
        out[method] = {"chosen": best, "mean_psnr_per_setting": means}
    return out


def summarise_task(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Fill each record's ``methods`` with the chosen baseline settings; per-method means."""
    chosen = choose_settings(records)
    for r in records:
        for method, c in chosen.items():
            r["methods"][method] = {**r["grid"][method][c["chosen"]], "setting": c["chosen"]}
    methods = list(dict.fromkeys(m for r in records for m in r["methods"]))
    means = {}
    for m in methods:
        rows = [r["methods"][m] for r in records if m in r["methods"]]
        means[m] = {"n_images": len(rows), "images": [r["image"] for r in records if m in r["methods"]],
                    **{k: float(np.mean([row[k] for row in rows])) for k in ("psnr", "ssim", "wall_time_s")}}
    if all("input" in r for r in records):
        means["input"] = {"n_images": len(records), "psnr": float(np.mean([r["input"]["psnr"] for r in records])),
                          "ssim": float(np.mean([r["input"]["ssim"] for r in records]))}
    return {"images": [r["image"] for r in records], "mean": means, "grids": chosen, "per_image": records}


def paired_gain(task: dict[str, Any] | None, baseline: str | tuple[str, ...]) -> dict[str, Any] | None:
    """DIP mean PSNR - baseline mean PSNR over the images where the DIP ran (the better baseline of a tuple)."""
    if not task:
        return None
    rows = [r for r in task["per_image"] if "dip" in r["methods"]]
    if not rows:
        return None
    dip = float(np.mean([r["methods"]["dip"]["psnr"] for r in rows]))
    names = (baseline,) if isinstance(baseline, str) else baseline
    base = {b: float(np.mean([r["methods"][b]["psnr"] for r in rows])) for b in names}
    best = max(base, key=base.get)
    return {"gain_db": dip - base[best], "dip_psnr": dip, "baseline": best, "baseline_psnr": base[best],
            "images": [r["image"] for r in rows]}


def summary(tasks: dict[str, dict[str, Any]], crop: int) -> dict[str, Any]:
    """The headline keys (module docstring) with the images each was measured on."""
    g = lambda t, b: paired_gain(tasks.get(t), b)
    gains = {f"denoise{s}": g(f"denoise{s}", "cbm3d") for s in SIGMAS}
    gains.update({f"sr{s}": g(f"sr{s}", "bicubic") for s in SCALES})
    gains["inpaint"] = g("inpaint", "biharmonic")
    gains.update({t: g(t, ("richardson_lucy", "wiener")) for t in TASK_GROUPS["deblur"]})
    # The DIP starts from the GCV Tikhonov estimate, so that estimate (and Tikhonov at its best
    # weight over the images) is a baseline too: what the network adds beyond it.
    classical = ("richardson_lucy", "wiener", "tikhonov", "tikhonov_gcv")
    over_all = {t.split("_", 1)[1]: g(t, classical) for t in TASK_GROUPS["deblur"]}
    sr_over_all = {f"sr{s}": g(f"sr{s}", ("bicubic", "lanczos", "tikhonov_gcv")) for s in SCALES}
    val = lambda k: gains[k]["gain_db"] if gains.get(k) else None
    per_kernel = {t.split("_", 1)[1]: val(t) for t in TASK_GROUPS["deblur"]}
    known = [v for v in per_kernel.values() if v is not None]
    times: dict[str, list[float]] = {}
    for t in TASK_GROUPS["denoise"]:
        for r in tasks.get(t, {}).get("per_image", []):
            for m, rec in r["methods"].items():
                times.setdefault(m, []).append(rec["wall_time_s"])
    return {
        "denoise_gap_db": {str(s): val(f"denoise{s}") for s in SIGMAS},
        f"denoise_time_s_{crop}": {m: float(np.mean(v)) for m, v in times.items()} or None,
        "sr4_gain_db": val("sr4"), "sr8_gain_db": val("sr8"), "inpaint_gain_db": val("inpaint"),
        "deblur_gain_db": float(np.mean(known)) if known else None,  # over the kernels measured
        "deblur_gain_db_per_kernel": per_kernel,
        "deblur_gain_over_best_classical_db": {k: v["gain_db"] if v else None for k, v in over_all.items()},
        "deblur_best_classical": {k: v["baseline"] if v else None for k, v in over_all.items()},
        "sr_gain_over_best_classical_db": {k: v["gain_db"] if v else None for k, v in sr_over_all.items()},
        "sr_best_classical": {k: v["baseline"] if v else None for k, v in sr_over_all.items()},
        "gains_detail": gains,
    }


# ---------------------------------------------------------------------------- report
def plot(tasks: dict[str, dict[str, Any]], path: Path) -> Path:
    """Mean PSNR per method, one panel per task; where the DIP ran on some images only, every
    method's mean is taken over those images (like for like; all-image means are in the JSON)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(tasks)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols + 0.4, 3.3 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, t in zip(axes.flat, names):
        recs = tasks[t]["per_image"]
        subset = [r for r in recs if "dip" in r["methods"]] or recs
        methods = list(subset[0]["methods"]) + (["input"] if "input" in subset[0] else [])
        vals = [float(np.mean([(r["input"] if m == "input" else r["methods"][m])["psnr"] for r in subset]))
                for m in methods]
        colours = ["tab:red" if m == "dip" else "tab:grey" if m == "input" else "tab:blue" for m in methods]
        ax.bar(range(len(methods)), vals, color=colours)
        ax.set_xticks(range(len(methods)), methods, rotation=50, ha="right", fontsize=7)
        ax.set_ylim(max(0.0, min(vals) - 3), max(vals) + 1)
        ax.set_title(f"{t} ({len(subset)} of {len(recs)} images)", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylabel("mean PSNR (dB)", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def table(tasks: dict[str, dict[str, Any]]) -> str:
    """One line per task and method: mean PSNR / SSIM / seconds per image and the images."""
    lines = [f"{'task':16s} {'method':20s} {'n':>2s} {'PSNR dB':>8s} {'SSIM':>6s} {'s/image':>8s}  setting"]
    for t, rec in tasks.items():
        for m, v in rec["mean"].items():
            setting = rec["grids"].get(m, {}).get("chosen", "")
            secs = f"{v['wall_time_s']:8.2f}" if "wall_time_s" in v else " " * 8
            lines.append(f"{t:16s} {m:20s} {v['n_images']:2d} {v['psnr']:8.2f} {v['ssim']:6.3f} {secs}  "
                         f"{'' if setting == '-' else setting}")
    return "\n".join(lines)


def settings_record(args: argparse.Namespace, dip_cap: int | None) -> dict[str, Any]:
    """Everything that defines the run (stored in the JSON next to the results)."""
    return {
        "tasks": args.tasks, "dip_tasks": args.dip_tasks, "images_per_task": args.images,
        "dip_images_per_task": args.dip_images, "quick": args.quick, "seed": SEED,
        "crop": QUICK_CROP if args.quick else CROP,
        "dip": {"net": NET, "net_description": NETS[NET].description, "loss": args.dip_loss,
                "stop": "auto (the CLI's; resolved per task below)",
                "iterations_cap": dip_cap,
                "per_task": {t: _dip_settings(t, args, dip_cap) for t in TASKS}, "device": args.device},
        "images": {"denoise/deblur": COLOUR_IMAGES, "superres": list(SET5), "inpaint": INPAINT},
        "denoise": {"sigmas_255": list(SIGMAS), "noisy_clipped_to_0_1": True,
                    "cbm3d": "bm3d.bm3d_rgb (grey: bm3d.bm3d), known sigma, profile 'np'",
                    "nlm": {"fast_mode": True, "h": f"{B.NLM_H_FACTOR} sigma", "sigma": "known",
                            "patch_size": B.NLM_PATCH_SIZE, "patch_distance": B.NLM_PATCH_DISTANCE}},
        "superres": {"scales": list(SCALES), "downsampling": "shared.operators.Downsample (anti-aliased bicubic, "
                     "reflect), clipped to [0, 1]", "metric": "PSNR/SSIM on BT.601 luma (grey: the image), "
                     "border of `scale` px cropped, ground truth cropped to a multiple of the scale",
                     "upsampling": "PIL Image.resize, mode F: BICUBIC (Keys a=-0.5), LANCZOS (Lanczos-3)"},
        "inpaint": {"baseline": "skimage.restoration.inpaint_biharmonic", "images": INPAINT},
        "deblur": {"kernels": {"gaussian": f"std {GAUSSIAN_BLUR_STD} px", "motion":
                               f"{MOTION_LENGTH} px line at {MOTION_ANGLE} deg (skimage.draw.line_aa)"},
                   "boundary": "reflect", "noise_std": DEBLUR_NOISE, "rl_grid_iterations": list(RL_GRID),
                   "wiener_grid_balance": list(WIENER_GRID), "baseline_padding": "reflect, 2 x kernel size",
                   "selection": "best mean PSNR over the task's images (all images run, not only the DIP's)"},
    }


def default_out(args: argparse.Namespace, dip_cap: int | None) -> Path:
    """``image_restoration.json`` only for the complete configuration; ``_quick`` / ``_partial`` otherwise."""
    if args.quick:
        return RESULTS / "image_restoration_quick.json"
    complete = (set(args.tasks) == set(TASKS) and set(args.dip_tasks) == set(TASKS) and args.images is None
                and args.dip_images is None and dip_cap is None)
    return RESULTS / ("image_restoration.json" if complete else "image_restoration_partial.json")


def expand(names: list[str], what: str) -> list[str]:
    """Task names with groups (``denoise`` -> denoise15/25/50, ...) expanded, in :data:`TASKS` order."""
    out: set[str] = set()
    for n in names:
        if n == "none" and what == "--dip-tasks":
            continue
        if n not in TASK_GROUPS and n not in TASKS:
            raise SystemExit(f"{what}: unknown task {n!r}; choose from {', '.join([*TASK_GROUPS, *TASKS])}")
        out.update(TASK_GROUPS.get(n, (n,)))
    return [t for t in TASKS if t in out]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    choices = ", ".join([*TASK_GROUPS, *TASKS])
    p.add_argument("--tasks", nargs="+", default=list(TASK_GROUPS), metavar="TASK",
                   help=f"tasks to run (groups or single tasks: {choices}; default: all)")
    p.add_argument("--dip-tasks", nargs="+", default=None, metavar="TASK",
                   help="of those, the tasks the DIP runs on ('none': baselines only; default: all of --tasks)")
    p.add_argument("--images", type=int, default=None, metavar="N", help="first N images of each task (default: all)")
    p.add_argument("--dip-images", type=int, default=None, metavar="N",
                   help="the DIP runs on the first N of those (default: all)")
    p.add_argument("--dip-iterations", type=int, default=None, metavar="N",
                   help="cap on the DIP's iterations (default: the CLI's per task; recorded in the JSON)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK_CROP}-pixel images, 1 image per task, {QUICK_ITERATIONS} DIP iterations, "
                   "written to image_restoration_quick.json")
    p.add_argument("--device", default="cpu", help="torch device of the DIP (default: cpu)")
    p.add_argument("--dip-loss", choices=("auto", "mse"), default="auto",
                   help="the DIP's denoising loss: auto = the CLI's default (SURE), mse = the classic DIP with "
                   "ES-WMV (default: auto)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default: results/image_restoration.json for the complete run, "
                   "_partial.json for a subset, _quick.json for --quick); the figure is written beside it")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--replot", type=Path, default=None, metavar="JSON",
                   help="only redraw the figure (and print the table) of an earlier run's JSON")
    args = p.parse_args(argv)
    for name in ("images", "dip_images", "dip_iterations"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    args.tasks = expand(args.tasks, "--tasks")
    args.dip_tasks = args.tasks if args.dip_tasks is None else expand(args.dip_tasks, "--dip-tasks")
    if set(args.dip_tasks) - set(args.tasks):
        p.error(f"--dip-tasks {sorted(set(args.dip_tasks) - set(args.tasks))} are not among --tasks")
    if args.quick:
        args.images = 1 if args.images is None else args.images
    return args


def make_dip(task: str, args: argparse.Namespace, dip_cap: int | None) -> DeepImagePrior:
    """The CLI's defaults for ``task`` (net, loss, lr, schedule, averaging, stopping, seed 0),
    with ``--dip-loss`` and the iterations capped at ``dip_cap``."""
    dip = DeepImagePrior(net=NET, loss=args.dip_loss if FRONT_END_TASK[task] == "denoise" else "auto",
                         seed=SEED, device=args.device)
    dip.iterations = min(dip.settings(FRONT_END_TASK[task])["iterations"], dip_cap or 10**9)
    return dip


def _dip_settings(task: str, args: argparse.Namespace, dip_cap: int | None) -> dict[str, Any]:
    s = make_dip(task, args, dip_cap).settings(FRONT_END_TASK[task])
    return {k: s[k] for k in ("loss", "net_input", "iterations", "lr", "schedule", "input_noise", "average", "stop",
                              "window", "patience", "rise")}


def run_task(task: str, args: argparse.Namespace, dip_cap: int | None) -> dict[str, Any]:
    """Every case of ``task``: baselines on all of them, the DIP on those ``--dip-*`` select; the summary."""
    cases = build_cases(task, args.images, args.quick)
    records = []
    for i, case in enumerate(cases):
        with_dip = task in args.dip_tasks and (args.dip_images is None or i < args.dip_images)
        dip = make_dip(task, args, dip_cap) if with_dip else None
        rec = run_case(case, dip, progress=not args.quiet)
        records.append(rec)
        d = rec["methods"].get("dip")
        # Grid methods: the best setting for this image (the reported one is chosen over all images).
        best = {m + (" (best of grid)" if len(v) > 1 else ""): max(q["psnr"] for q in v.values())
                for m, v in rec["grid"].items()}
        print(f"{task} {case.image}: " + ", ".join(f"{m} {v:.2f}" for m, v in best.items())
              + (f", dip {d['psnr']:.2f} dB ({d['iterations_run']} it., {d['stopped_by']}, {d['wall_time_s']:.0f} s)"
                 if d else ""), flush=True)
    return summarise_task(records)


def write_report(path: Path, args: argparse.Namespace, dip_cap: int | None, tasks: dict[str, dict[str, Any]],
                 seconds: float) -> Path:
    """The JSON (summary keys, settings, per-task records, provenance at top level) and its figure."""
    report = {"benchmark": "image_restoration: DIP vs classical baselines (denoise, superres, inpaint, deblur)",
              "partial": path.name != "image_restoration.json", "tasks_done": list(tasks),
              "tasks_pending": [t for t in args.tasks if t not in tasks], "total_time_s": seconds,
              **summary(tasks, QUICK_CROP if args.quick else CROP), "settings": settings_record(args, dip_cap),
              "tasks": tasks}
    report.update(run_record(args.device))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, report)
    plot(tasks, path.with_suffix(".png"))
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.replot is not None:
        import json

        tasks = json.loads(args.replot.read_text())["tasks"]
        print(table(tasks))
        print(f"wrote {plot(tasks, args.replot.with_suffix('.png'))}")
        return 0
    dip_cap = QUICK_ITERATIONS if args.quick and args.dip_iterations is None else args.dip_iterations
    out_path = args.out or default_out(args, dip_cap)
    if "denoise" in {FRONT_END_TASK[t] for t in args.tasks}:
        B._import_bm3d()  # fail before hours of work, with the install hint
    tasks: dict[str, dict[str, Any]] = {}
    t_start = time.perf_counter()
    for task in args.tasks:
        tasks[task] = run_task(task, args, dip_cap)
        # Written after every task: a long run that is cut short keeps what it measured (tasks_pending).
        write_report(out_path, args, dip_cap, tasks, time.perf_counter() - t_start)
    print(table(tasks))
    print(f"wrote {out_path} and {out_path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
