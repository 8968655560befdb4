"""Benchmark: learned generators made image-adaptive (CSGM, IAGAN, latent) beside DIP and EDIP.

Setting (:mod:`shared.image.generative_study`): a VAE generator trained here on 64 x 64
ellipse phantoms (``make generators``); compressed sensing with a Gaussian matrix at
m/n in {0.02, 0.05, 0.1, 0.25, 0.5} (noiseless) and sparse-view CT at 10, 30, 60 angles
(1 % noise); images in distribution (new ellipse phantoms) and out of distribution
(Shepp-Logan, block phantoms, grey photographs), three instances each, from the test
split (settings were chosen on the disjoint validation split: ``--split validation``).
Every method sees the same measurement in the same worker; each worker process uses one
thread, and each time is that of one reconstruction on one core.

Writes ``benchmarks/results/iagan.json`` (``rel_err[method][distribution][m_over_n]``,
``psnr[...]``, the CT tables keyed by angles, per-case records, times, the targets of the
issue checked) and ``iagan_cs.png``, ``iagan_ct.png``, ``<name>_examples.png``.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

from shared.provenance import run_record

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("baseline", "csgm", "iagan", "latent", "dip", "edip")


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core: threads inside would only compete


def _run(job):
    from shared.image.generative_study import run_case

    case, kwargs = job
    return run_case(case, **kwargs)


def _edip_checkpoint(path: Path, quiet: bool) -> Path:
    """The 64 x 64 EDIP checkpoint (30 angles), pretrained here if missing."""
    if path.is_file():
        return path
    from shared.image.edip import CTSetup, pretrain, save_checkpoint

    net, res = pretrain(CTSetup(size=64, angles=30, noise=0.01), steps=800, progress=not quiet)
    return save_checkpoint(net, path, {"size": 64, "angles": 30, "noise": 0.01, "steps": 800,
                                       "wall_time_s": res.wall_time_s})


def _table(records: list[dict], task: str, key: str) -> dict:
    """``{method: {distribution: {level: mean}}}`` plus the worst instance and the spread."""
    out: dict = {"mean": {}, "worst": {}, "std": {}}
    for rec in records:
        if rec["task"] != task:
            continue
        for method, scores in rec["methods"].items():
            out["mean"].setdefault(method, {}).setdefault(rec["distribution"], {}).setdefault(
                str(rec["level"]), []).append(scores[key])
    for method, by_dist in out["mean"].items():
        for dist, by_level in by_dist.items():
            for level, values in by_level.items():
                worst = max(values) if key == "rel_err" else min(values)
                out["worst"].setdefault(method, {}).setdefault(dist, {})[level] = worst
                out["std"].setdefault(method, {}).setdefault(dist, {})[level] = \
                    statistics.pstdev(values) if len(values) > 1 else 0.0
                by_level[level] = sum(values) / len(values)
    return out


def _targets(cs: dict, records: list[dict]) -> dict:
    """The issue's targets, checked on the means (and the time on every case)."""
    e = cs["mean"]
    iid = "in-distribution"
    levels = sorted(e["iagan"][iid], key=float)
    out = {"iid_iagan_le_best_of_csgm_dip": {
        lv: e["iagan"][iid][lv] <= min(e["csgm"][iid][lv], e.get("dip", e["csgm"])[iid][lv]) for lv in levels}}
    if "dip" in e and "0.05" in e["iagan"][iid]:
        out["iid_iagan_over_dip_at_0.05"] = e["iagan"][iid]["0.05"] / e["dip"][iid]["0.05"]
    for dist in e["iagan"]:
        if dist == iid or "0.25" not in e["iagan"][dist]:
            continue
        out.setdefault("ood_iagan_over_csgm_at_0.25", {})[dist] = e["iagan"][dist]["0.25"] / e["csgm"][dist]["0.25"]
        if "dip" in e:
            out.setdefault("ood_iagan_over_dip_at_0.25", {})[dist] = e["iagan"][dist]["0.25"] / e["dip"][dist]["0.25"]
    times = [s["time_s"] for r in records for m, s in r["methods"].items() if m != "baseline"]
    out["max_time_s"] = max(times) if times else None
    out["all_under_60_s"] = bool(times) and max(times) < 60
    return out


def _times(records: list[dict]) -> dict:
    t: dict = {}
    for rec in records:
        for method, scores in rec["methods"].items():
            if method != "baseline":
                t.setdefault(method, {}).setdefault(rec["task"], []).append(scores["time_s"])
    return {m: {task: {"mean": sum(v) / len(v), "max": max(v)} for task, v in by.items()} for m, by in t.items()}


def _figures(records: list[dict], cs: dict, ct: dict, out: Path, stem: str = "iagan", instances: int = 3) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, table, xlabel, logx in (("iagan_cs.png", cs, "m/n", True), ("iagan_ct.png", ct, "angles", False)):
        if not table["mean"]:
            continue
        dists = list(next(iter(table["mean"].values())))
        fig, axes = plt.subplots(1, len(dists), figsize=(4 * len(dists), 3.4), squeeze=False)
        for ax, dist in zip(axes[0], dists):
            for method in METHODS:
                if method in table["mean"] and dist in table["mean"][method]:
                    by = table["mean"][method][dist]
                    xs = sorted(by, key=float)
                    ax.plot([float(x) for x in xs], [by[x] for x in xs], "o-", label=method)
            ax.set_xscale("log" if logx else "linear")
            ax.set_yscale("log")
            levels = sorted({float(x) for by in table["mean"].values() for x in by.get(dist, {})})
            ax.set_xticks(levels, [f"{x:g}" for x in levels])  # the measured levels, not log decades
            ax.minorticks_off()
            ax.set_title(dist)
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3, which="both")
        axes[0][0].set_ylabel(f"relative error (mean of {instances})")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
    shown = [r for r in records if "truth" in r]
    if shown:
        cols = ["truth", *[m for m in METHODS if m in shown[0]["methods"]]]
        fig, axes = plt.subplots(len(shown), len(cols), figsize=(1.6 * len(cols), 1.75 * len(shown)), squeeze=False)
        for row, rec in zip(axes, shown):
            for ax, col in zip(row, cols):
                img = rec["truth"] if col == "truth" else rec["methods"][col]["image"]
                ax.imshow(img[0, 0], cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                title = col if col == "truth" else f"{col} {rec['methods'][col]['psnr']:.1f}"
                ax.set_title(title, fontsize=7)
            row[0].set_ylabel(f"{rec['distribution']}\n{rec['task']} {rec['level']}", fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{stem}_examples.png", dpi=90)
        plt.close(fig)


def _replot(path: Path) -> int:
    """The error-curve figures of a finished run, from its JSON (the example images are not stored)."""
    import json

    try:
        report = json.loads(path.read_text())
        records, instances = report["records"], report["instances"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{path}: not the JSON of a benchmarks/iagan.py run ({exc})") from None
    _figures(records, _table(records, "cs", "rel_err"), _table(records, "ct", "rel_err"), path.parent,
             stem=path.stem, instances=instances)
    print(f"redrew the curves of {path} in {path.parent}")
    return 0


def _print(cs: dict, ct: dict) -> None:
    for title, table in (("CS relative error (mean of instances)", cs), ("CT relative error", ct)):
        if not table["mean"]:
            continue
        print(f"\n{title}")
        for dist in next(iter(table["mean"].values())):
            levels = sorted(table["mean"]["csgm"][dist], key=float)
            print(f"  {dist:16s} " + " ".join(f"{lv:>7s}" for lv in levels))
            for method in METHODS:
                if method in table["mean"] and dist in table["mean"][method]:
                    row = table["mean"][method][dist]
                    print(f"    {method:14s} " + " ".join(f"{row[lv]:7.3f}" for lv in levels))


def main(argv: list[str] | None = None) -> int:
    from shared.image.generative_study import DISTRIBUTIONS, cases
    from shared.result import write_json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generator", type=Path, default=ROOT / "checkpoints" / "generator_ellipses64.pt")
    p.add_argument("--family", default="ellipses", help="the generator's training family")
    p.add_argument("--edip-checkpoint", type=Path, default=ROOT / "checkpoints" / "edip_ct64.pt")
    p.add_argument("--split", choices=("test", "validation"), default="test")
    p.add_argument("--instances", type=int, default=3)
    p.add_argument("--tasks", default="cs,ct")
    p.add_argument("--distributions", default=",".join(DISTRIBUTIONS))
    p.add_argument("--no-dip", action="store_true", help="leave out DIP and EDIP (faster)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--name", default=None, help="JSON name (default: iagan.json, iagan_validation.json)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a GenerativePrior setting for this run (e.g. adapt_lr=3e-4), recorded in the JSON")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--replot", type=Path, metavar="JSON",
                   help="redraw the error curves of a finished run from its JSON (no reconstruction)")
    args = p.parse_args(argv)
    if args.replot is not None:
        return _replot(args.replot)
    settings = {}
    for item in args.set:
        name, _, value = item.partition("=")
        settings[name] = int(value) if value.lstrip("-").isdigit() else float(value)
    from shared.image.generator import load_generator

    _, meta = load_generator(args.generator)  # fails early, with how to make it
    tasks = tuple(args.tasks.split(","))
    edip = None if args.no_dip or "ct" not in tasks else _edip_checkpoint(args.edip_checkpoint, args.quiet)
    todo = cases(args.family, args.split, args.instances, tasks, tuple(args.distributions.split(",")))
    jobs, seen = [], set()
    for c in todo:  # the figure shows the first instance of each distribution at m/n 0.1 and 30 angles
        keep = (c.distribution, c.task) not in seen and c.level in (0.1, 30)
        if keep:
            seen.add((c.distribution, c.task))
        jobs.append((c, {"generator_path": str(args.generator), "edip_checkpoint": edip, "dip": not args.no_dip,
                         "keep_images": keep, "settings": settings}))
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.workers, initializer=_init_worker) as pool:
        records = []
        for i, rec in enumerate(pool.imap(_run, jobs)):
            records.append(rec)
            if not args.quiet:
                e = {m: round(s["rel_err"], 3) for m, s in rec["methods"].items()}
                print(f"[{i + 1}/{len(jobs)}] {rec['distribution']} {rec['instance']} {rec['task']} "
                      f"{rec['level']}: {e}", flush=True)
    wall = time.perf_counter() - t0
    cs_e, ct_e = _table(records, "cs", "rel_err"), _table(records, "ct", "rel_err")
    cs_p, ct_p = _table(records, "cs", "psnr"), _table(records, "ct", "psnr")
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or ("iagan.json" if args.split == "test" else "iagan_validation.json")
    _figures(records, cs_e, ct_e, args.out, stem=Path(name).stem, instances=args.instances)
    _print(cs_e, ct_e)
    for rec in records:
        rec.pop("truth", None)
        for s in rec["methods"].values():
            s.pop("image", None)
    report = {**run_record(), "split": args.split, "instances": args.instances, "workers": args.workers,
              "threads_per_worker": 1, "wall_time_s": wall, "generator": str(args.generator),
              "generator_meta": meta, "settings": settings, "edip_checkpoint": str(edip) if edip else None,
              "rel_err": cs_e["mean"], "rel_err_worst": cs_e["worst"], "rel_err_std": cs_e["std"],
              "psnr": cs_p["mean"], "ct_rel_err": ct_e["mean"], "ct_rel_err_worst": ct_e["worst"],
              "ct_rel_err_std": ct_e["std"], "ct_psnr": ct_p["mean"], "time_s": _times(records),
              "targets": _targets(cs_e, records) if cs_e["mean"] else None, "records": records}
    write_json(args.out / name, report)
    print(f"\nwrote {args.out / name} ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
