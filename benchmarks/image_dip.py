"""Benchmark: deep image prior denoising of F16 on CPU, official setting vs light defaults.

Problem: the 256x256 centre crop of ``F16.png`` (from ``../shared/data/images/dip``) with
Gaussian noise of sigma = 25/255 (seed 0), a :func:`shared.image.denoise_problem` with the
clean crop as reference.  Configurations, each a :class:`shared.image.DeepImagePrior` with
ES-WMV early stopping (window 100; the output it selects is the one reported, no ground
truth used to stop) and the PSNR tracked every 10 steps:

* ``official`` -- the official DIP setting: skip net 5 scales x 128 channels, 4 skip
  channels, lr 0.01, input noise 1/30, output averaging 0.99, 3000 iterations.
* ``default``  -- the suite's default (``untrained image denoise``): the light skip net
  (4 scales, 16-64 channels) with the noisy image as its input, fitted by SURE with the
  known sigma for 350 cosine-decayed steps, output selected by ES-WMV (``loss="sure"``).
* ``classic``  -- the light skip net as the classic DIP (random input, MSE, ES-WMV;
  capped at 2400 steps here, the CLI caps this loss at 1800).
* ``hourglass`` -- the light net without skip connections.
* ``decoder``  -- deep decoder, k = 64, 6 layers.

For each: PSNR of the selected output, best PSNR during the fit and its iteration, the
first iteration within 0.5 dB of that best, iterations run, wall time and seconds per
step.  The official net costs seconds per step on a 2-core CPU, so its 3000 iterations
take hours: ``--official-iterations N`` runs only N of them; the JSON then records the
measured seconds per step, the best PSNR within the N iterations, and ``official_time_s``
= seconds per step x 3000, flagged ``official_time_s_is_extrapolated``.

Target (issue 2): ``default_psnr >= official_best_psnr - 0.5`` and
``default_time_s <= official_time_s / 10``.

Usage::

    python benchmarks/image_dip.py                               # everything, full settings
    python benchmarks/image_dip.py --only official --official-iterations 400
    python benchmarks/image_dip.py --only default hourglass decoder   # merges into the JSON
    python benchmarks/image_dip.py --only --merge a.json b.json       # combine separate runs
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path

from shared.provenance import run_record

import torch

from shared.image import NETS, DeepImagePrior, denoise_problem, read_image
from shared.metrics import psnr
from shared.paths import require_data
from shared.result import write_json
from shared.stopping import StoppingRule

HERE = Path(__file__).resolve().parent

RESULTS = HERE / "results" / "image_dip.json"
SIGMA = 25 / 255
CROP = 256
OFFICIAL_ITERATIONS = 3000
CONFIGS = ("official", "default", "classic", "hourglass", "decoder")
# Iteration caps (None: the front end's default); ES-WMV stops earlier in practice.
MAX_ITERATIONS = {"official": OFFICIAL_ITERATIONS, "default": None, "classic": 2400, "hourglass": 2400,
                  "decoder": 3000}
NET_OF = {"official": "official", "default": "skip", "classic": "skip", "hourglass": "hourglass",
          "decoder": "decoder"}


def f16_problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, noisy): the 256x256 centre crop of F16 and it plus N(0, (25/255)^2) noise."""
    x = read_image(require_data("images", "dip", "F16.png"), name="F16")
    h, w = x.shape[-2:]
    t, l = (h - CROP) // 2, (w - CROP) // 2
    clean = x[..., t : t + CROP, l : l + CROP].contiguous()
    noise = SIGMA * torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
    return clean, clean + noise  # noisy values are not clipped (as in the DIP paper's setup)


class WithTimeLimit(StoppingRule):
    """A stopping rule that also ends the fit once ``seconds`` of wall time are spent (or on SIGTERM).

    Selection is the wrapped rule's; ``timed_out`` says whether the budget ended the fit.
    """

    name = "time-limit"

    def __init__(self, rule: StoppingRule, seconds: float | None) -> None:
        self.rule, self.seconds = rule, seconds
        self.timed_out = False
        self.start = time.perf_counter()
        self.terminate = False
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, *_):
        self.terminate = True

    def reset(self) -> None:
        self.rule.reset()
        self.start = time.perf_counter()

    def split(self, y, generator):
        return self.rule.split(y, generator)

    @property
    def best_output(self):
        return self.rule.best_output

    @property
    def best_iteration(self):
        return self.rule.best_iteration

    def update(self, record) -> bool:
        if self.rule.update(record):
            return True
        if self.terminate or (self.seconds is not None and time.perf_counter() - self.start > self.seconds):
            self.timed_out = True
            return True
        return False


def run_config(name: str, clean: torch.Tensor, noisy: torch.Tensor, iterations: int, patience: int,
               seed: int = 0, progress: bool = True, checkpoint: Path | None = None,
               time_limit: float | None = None) -> dict:
    """Fit one configuration; return its measurements."""
    net_name = NET_OF[name]
    spec = NETS[net_name]
    # The noisy crop is the measurement (A = I), the clean crop the reference (PSNR only).
    problem = denoise_problem(noisy, multiple=spec.multiple, reference=clean)
    # The default: the CLI's (SURE, output selected by ES-WMV).  The others: the classic DIP with the
    # network's own lr, input noise and averaging, ES-WMV on the raw outputs.
    loss = {"loss": "auto", "stop": "auto"} if name == "default" else {"loss": "mse", "stop": "eswmv"}
    dip = DeepImagePrior(net=net_name, iterations=iterations, patience=patience, window=100, **loss,
                         seed=seed, progress=f"{name}" if progress else False, metric_every=10)
    stamps: list[float] = []
    partial: list[dict] = []
    base = dip.stopping_rule("denoise")
    rule = WithTimeLimit(base, time_limit) if base is not None else None
    t0 = time.perf_counter()

    def stamp(rec) -> None:
        stamps.append(time.perf_counter() - t0)
        # A progress file so that a long run cut short still leaves its measurements.
        if checkpoint is not None and rec.iteration % 10 == 0:
            partial.append({"iteration": rec.iteration + 1, "elapsed_s": stamps[-1],
                            "psnr": float(psnr(rec.output.clamp(0, 1), clean))})
            write_json(checkpoint, partial)

    result = dip.reconstruct(problem, callbacks=[stamp], stopping=rule)
    res = result.fit
    n = res.stop_iteration
    best, best_it = res.best_metric("psnr")
    its, vals = res.history["metric_iteration"], res.history["psnr"]
    within = next(i for i, v in zip(its, vals) if v >= best - 0.5)
    # Time per step over the second half of the run (past start-up effects).
    half = max(1, n // 2)
    per_step = (stamps[-1] - stamps[half - 1]) / max(1, n - half) if n > 1 else stamps[-1]
    selected_psnr = result.metrics["psnr"]
    cfg = result.config
    return {
        "net": net_name,
        "description": spec.description,
        "parameters": cfg["parameters"],
        "loss": cfg["loss"],
        "lr": cfg["lr"],
        "schedule": cfg["schedule"],
        "input_noise": cfg["input_noise"],
        "average": cfg["average"],
        "stopping": (f"ES-WMV(window=100, patience={patience}) on the raw outputs" if cfg["stop"] == "eswmv"
                     else cfg["stop"]),
        "max_iterations": cfg["iterations"],
        "iterations_run": n,
        "stopped_by": "time limit" if rule is not None and rule.timed_out else res.stopped_by,
        "selected_iteration": res.selected_iteration + 1,
        "selected_psnr": selected_psnr,
        "best_psnr": best,
        "best_iteration": best_it + 1,
        "iteration_within_0.5dB_of_best": within + 1,
        "time_to_within_0.5dB_s": stamps[within],
        "time_to_selected_s": stamps[res.selected_iteration],
        "wall_time_s": stamps[-1],
        "seconds_per_step": per_step,
        "psnr_curve": {"iteration": [i + 1 for i in its], "psnr": [round(v, 3) for v in vals],
                       "elapsed_s": [round(stamps[i], 2) for i in its]},
    }


def record_from_progress(path: Path, name: str = "official") -> dict:
    """Measurements of a run that was stopped before it finished, from its progress file.

    The progress file holds the PSNR of the (averaged) output and the elapsed time every
    10 iterations; the ES-WMV selection of an unfinished run is unknown (``None``).
    """
    entries = json.loads(Path(path).read_text())
    if len(entries) < 2:
        raise ValueError(f"{path} holds {len(entries)} entries; need at least 2")
    its = [e["iteration"] for e in entries]
    vals = [e["psnr"] for e in entries]
    el = [e["elapsed_s"] for e in entries]
    b = max(range(len(vals)), key=vals.__getitem__)
    w = next(i for i, v in enumerate(vals) if v >= vals[b] - 0.5)
    h = len(its) // 2
    spec = NETS[NET_OF[name]]
    return {
        "net": NET_OF[name], "description": spec.description, "lr": spec.lr, "input_noise": spec.input_noise,
        "average": spec.average, "record_source": f"progress file of a run stopped by hand after iteration {its[-1]}",
        "iterations_run": its[-1], "stopped_by": "stopped by hand (time)", "selected_iteration": None,
        "selected_psnr": None, "best_psnr": vals[b], "best_iteration": its[b],
        "iteration_within_0.5dB_of_best": its[w], "time_to_within_0.5dB_s": el[w], "wall_time_s": el[-1],
        "seconds_per_step": (el[-1] - el[h]) / (its[-1] - its[h]),
        "psnr_curve": {"iteration": its, "psnr": [round(v, 3) for v in vals]},
    }


def summarise(results: dict) -> dict:
    """Top-level keys of the JSON (official_*, default_*, target check)."""
    out: dict = {}
    off = results.get("official")
    if off:
        out["official_best_psnr"] = off["best_psnr"]
        out["official_best_iteration"] = off["best_iteration"]
        out["official_iterations_run"] = off["iterations_run"]
        out["official_seconds_per_step"] = off["seconds_per_step"]
        extrapolated = off["iterations_run"] < OFFICIAL_ITERATIONS
        out["official_time_s"] = off["seconds_per_step"] * OFFICIAL_ITERATIONS if extrapolated else off["wall_time_s"]
        out["official_time_s_is_extrapolated"] = extrapolated
        out["official_selected_psnr"] = off["selected_psnr"]
    dft = results.get("default")
    if dft:
        out["default_psnr"] = dft["selected_psnr"]
        out["default_best_psnr"] = dft["best_psnr"]
        out["default_time_s"] = dft["wall_time_s"]
        out["default_iterations_run"] = dft["iterations_run"]
    if off and dft:
        # Like for like: the default's PSNR after as many iterations as the official run had.
        n = off["iterations_run"]
        curve = dft["psnr_curve"]
        at = [p for i, p in zip(curve["iteration"], curve["psnr"]) if i <= n]
        out["default_psnr_at_official_iterations_run"] = at[-1] if at else None
        if out["official_time_s_is_extrapolated"]:
            out["caveat"] = (f"the official setting ran {n} of its {OFFICIAL_ITERATIONS} iterations on this loaded "
                             "CPU: official_best_psnr is the best within those iterations (reached at iteration "
                             f"{off['best_iteration']}), so "
                             "the PSNR target is weaker than with a full run; official_time_s is extrapolated from "
                             "the measured seconds per step")
        out["target_psnr"] = out["official_best_psnr"] - 0.5
        reached = [t for p, t in zip(curve["psnr"], curve.get("elapsed_s", [])) if p >= out["target_psnr"]]
        out["default_time_to_official_minus_0p5_s"] = reached[0] if reached else None
        out["target_time_s"] = out["official_time_s"] / 10
        out["target_met"] = bool(out["default_psnr"] >= out["target_psnr"]
                                 and out["default_time_s"] <= out["target_time_s"])
    return out


def plot(results: dict, path: Path) -> None:
    """PSNR against iteration and against wall time for each configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, r in results.items():
        its, vals = r["psnr_curve"]["iteration"], r["psnr_curve"]["psnr"]
        label = f"{name} ({r['seconds_per_step']:.2f} s/step)"
        line, = axes[0].plot(its, vals, lw=1.2, label=label)
        axes[1].plot([i * r["seconds_per_step"] for i in its], vals, lw=1.2, color=line.get_color(), label=name)
        if r.get("selected_iteration"):
            axes[0].plot([r["selected_iteration"]], [r["selected_psnr"]], "o", color=line.get_color(), ms=4)
    axes[0].set_xlabel("iteration (dot: ES-WMV selection)")
    axes[1].set_xlabel("wall time at the measured s/step (s)")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("PSNR (dB)")
        ax.set_ylim(15, None)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("F16 256x256, sigma 25/255, CPU (load averages in the JSON)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(args: argparse.Namespace, results: dict) -> None:
    report = {
        "benchmark": "image_dip: F16 256x256 centre crop, Gaussian noise sigma 25/255, CPU",
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version(),
                    "note": "load averages per config" + (f"; {args.note}" if args.note else "")},
        **summarise(results),
        "configs": results,
    }
    report.update(run_record("cpu"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    if results:
        plot(results, args.out.with_suffix(".png"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=CONFIGS, default=list(CONFIGS),
                        help="configurations to run (none: only merge / summarise)")
    parser.add_argument("--merge", nargs="*", type=Path, default=[],
                        help="JSON files of earlier runs (e.g. configs run separately) whose configs to merge in")
    parser.add_argument("--official-iterations", type=int, default=OFFICIAL_ITERATIONS,
                        help="iterations of the official setting actually run (3000 = full)")
    parser.add_argument("--patience", type=int, default=300, help="ES-WMV patience")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="wall-time budget per configuration in seconds (the fit ends there; SIGTERM too)")
    parser.add_argument("--official-from-progress", type=Path, default=None,
                        help="take the official measurements from the progress file of a run stopped early")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--note", default="", help="free text stored in the JSON (e.g. machine load)")
    args = parser.parse_args(argv)

    clean, noisy = f16_problem()
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    results = previous.get("configs", {})
    for path in args.merge:
        results.update(json.loads(Path(path).read_text()).get("configs", {}))
    if args.official_from_progress is not None:
        results["official"] = record_from_progress(args.official_from_progress)
        args.only = [n for n in args.only if n != "official"]
    for name in args.only:
        iterations = args.official_iterations if name == "official" else MAX_ITERATIONS[name]
        # The official setting runs all the iterations it is given (3000: the full run); ES-WMV
        # still records its selection, over the whole run.
        patience = max(args.patience, iterations) if name == "official" else args.patience
        load = os.getloadavg()
        r = run_config(name, clean, noisy, iterations, patience, progress=not args.quiet,
                       checkpoint=args.out.with_name(f"{args.out.stem}_{name}_progress.json"),
                       time_limit=args.time_limit)
        r["load_average_before"] = [round(v, 2) for v in load]
        r["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
        r["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        results[name] = r
        print(f"{name:10s} selected {r['selected_psnr']:6.2f} dB  best {r['best_psnr']:6.2f} dB"
              f" @ {r['best_iteration']:5d}"
              f"  within 0.5 dB @ {r['iteration_within_0.5dB_of_best']:5d}  run {r['iterations_run']:5d}"
              f"  {r['wall_time_s']:8.1f} s  {r['seconds_per_step']:.3f} s/step", flush=True)
        write_report(args, results)
    write_report(args, results)
    summary = summarise(results)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
