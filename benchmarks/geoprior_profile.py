"""Benchmark: where the time of a geoprior reconstruction goes, and the memory of a large one.

Input: ``--points`` (60,000) points sampled uniformly by area on the ``trimesh`` torus of
:func:`geoprior.shapes.noisy_torus` (radii 1 and 0.4) with Gaussian noise of ``--noise``
(0.5%) of its bounding-box diagonal per coordinate, seed ``--seed``; the default settings
of :class:`geoprior.DeepGeometricPrior` unless ``--set NAME=VALUE`` overrides them.
Measured, in one process with ``--threads`` torch threads (2):

* **Wall time per stage** of the pipeline, run stage by stage through the library's own
  functions (the same calls, in the same order, as ``DeepGeometricPrior.reconstruct``):
  isolated-point removal, normals + orientation, cover, chart fit (with its exact
  matchings), consistency refit (with its matching), dense sampling (Jacobian normals,
  orientation, trimming, outlier test) and screened Poisson; the CPU time of each stage
  (``time.process_time``, all threads) beside it, which a shared machine's load does not
  inflate the way it inflates wall time.
* **Inside the chart fit**, per step: the chart network's forward pass, the loss and
  backward pass (less the matchings), the optimiser step and the rest of the engine's
  step (global module/optimiser hooks around ``shared.fit.fit``; nothing is changed), and
  the exact matchings (``ExactEMD.match_time_s``).
* **GFLOP/s of the chart fit**: the charts' matrix-product FLOPs per step, ``3 x`` the
  forward's ``2 sum_l d_l d_{l+1}`` per real (non-padding) row (forward + backward), over
  the forward + backward time; against the GFLOP/s of one large float32 matrix product
  of the same total FLOPs (square, ``n^3 = 3 F / 2``), measured in the same run with the
  same thread count.
* **Chamfer-L1** of the mesh and of the dense cloud to the *clean* torus (divided by its
  diagonal; :func:`geoprior.evaluate_against_mesh`, 200k / 500k samples).
* **Peak resident memory** of a full run on ``--memory-points`` (1,000,000) input points
  (4 folds of 90k points are fitted), in a child process of its own
  (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``), so nothing else of this process
  counts; it includes the interpreter, torch and the input.  ``--skip-memory`` leaves it out.
* ``--sweep``: wall time and Chamfer-L1 of whole runs for a few non-default settings
  (fewer iterations, narrower charts, a larger radius, a lower dense density), to weigh
  quality against time; the defaults are not changed.

Prints a table per measurement and writes ``benchmarks/results/geoprior_profile.json``
(``stages_s``, ``stages_cpu_s``, ``fit``, ``gflops``, ``chamfer``, ``peak_rss_mb``,
``sweep``, the settings, and the provenance of :func:`shared.provenance.run_record`).

Importable: :func:`stage_profile` (one profiled run of given settings on given points)
and :func:`peak_memory_mb` (the peak RSS of a full run in a child process).
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from shared.provenance import run_record

ROOT = Path(__file__).resolve().parent.parent

STAGES = ("isolated", "normals", "cover", "fit", "consistency", "sampling", "mesh")
SWEEP: list[dict[str, Any]] = [
    {},
    {"stopping": "none"},
    {"iterations": 200},
    {"iterations": 150},
    {"hidden": (32, 32)},
    {"hidden": (24, 24, 24)},
    {"patch_points": 200},
    {"radius": 0.04},
    {"density": 3},
    {"rematch_every": 100},
    {"depth": 7},
    {"iterations": 150, "hidden": (32, 32), "density": 3},
]


def torus_cloud(n: int, noise: float = 0.005, seed: int = 0):
    """The clean torus ``(vertices, faces)``, ``n`` noisy points on it and its diagonal."""
    from geoprior.shapes import noisy_torus

    mesh, points, diag = noisy_torus(n=n, noise=noise, seed=seed)
    return (np.asarray(mesh.vertices), np.asarray(mesh.faces)), points, diag


class _Timer:
    """Wall and CPU seconds of named blocks (``with timer("name"): ...``)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        w, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c


class _FitClock:
    """Splits every step of ``shared.fit.fit`` by global hooks: the chart network's forward
    pass, then (until the optimiser step) the loss and backward pass, the optimiser step,
    and the rest of the step (until the next forward pass)."""

    def __init__(self) -> None:
        self.t = {"forward": 0.0, "loss_backward": 0.0, "optimiser": 0.0, "rest": 0.0}
        self.steps = 0
        self._mark: float | None = None
        self._phase: str | None = None
        self._handles: list = []

    def _switch(self, phase: str | None) -> None:
        now = time.perf_counter()
        if self._phase is not None and self._mark is not None:
            self.t[self._phase] += now - self._mark
        self._phase, self._mark = phase, now

    def __enter__(self) -> _FitClock:
        import torch
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        from geoprior.charts import ChartPrior

        def pre(module, args):
            if isinstance(module, ChartPrior) and torch.is_grad_enabled():
                self._switch("forward")

        def post(module, args, out):
            if isinstance(module, ChartPrior) and torch.is_grad_enabled():
                self._switch("loss_backward")

        def opt_pre(opt, args, kwargs):
            self._switch("optimiser")

        def opt_post(opt, args, kwargs):
            self.steps += 1
            self._switch("rest")

        self._handles = [register_module_forward_pre_hook(pre), register_module_forward_hook(post),
                         register_optimizer_step_pre_hook(opt_pre), register_optimizer_step_post_hook(opt_post)]
        return self

    def __exit__(self, *exc) -> None:
        self._switch(None)
        for h in self._handles:
            h.remove()


def chart_flops(cover, hidden: tuple[int, ...]) -> float:
    """Matrix-product FLOPs of one training step of the charts over their real rows:
    ``3 x 2 sum_l d_l d_{l+1}`` per row (forward, and a backward pass of twice its cost)."""
    dims = [2, *hidden, 3]
    return 3.0 * 2.0 * float(cover.sizes.sum()) * sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def matmul_gflops(flops: float, repeats: int = 3) -> dict[str, float]:
    """GFLOP/s of one square float32 product of ``flops`` FLOPs (best of ``repeats``)."""
    import torch

    n = max(64, int(round((flops / 2.0) ** (1 / 3))))
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return {"n": n, "seconds": best, "gflops": 2.0 * n ** 3 / best / 1e9}


def stage_profile(points: np.ndarray, settings: dict | None = None, reference: tuple | None = None,
                  n_reference: int = 500_000) -> dict[str, Any]:
    """One profiled reconstruction of ``points`` ``(N, 3)`` with ``DeepGeometricPrior(**settings)``.

    Returns ``stages_s`` / ``stages_cpu_s`` (wall / CPU seconds per stage, see the module
    docstring), ``total_s``, ``fit`` (steps, per-phase seconds, matchings), ``gflops``
    (the chart fit's rate and the large-product rate), ``sizes`` (patches, rows, dense
    points, mesh size) and, with ``reference`` (a clean mesh ``(vertices, faces)`` in the
    input's frame), ``chamfer`` of the mesh and of the dense cloud.
    """
    import torch

    from geoprior import DeepGeometricPrior, evaluate_against_mesh
    from geoprior.clean import isolated_points
    from geoprior.mesh import poisson_mesh
    from geoprior.reconstruct import (MIN_POINTS, Frame, dense_output, fit_charts, fit_points, make_cover, matching,
                                      n_folds, refit_consistency)

    rec = DeepGeometricPrior(**(settings or {})).check()
    timer = _Timer()
    frame = Frame.of(points)
    local = frame.inward(points)
    with timer("isolated"):  # as fit_points does it
        n_isolated = 0
        if rec.isolated_factor > 0:
            isolated = isolated_points(local, k=8, factor=rec.isolated_factor)
            if 0 < isolated.sum() <= len(local) - MIN_POINTS:
                n_isolated, local = int(isolated.sum()), local[~isolated]
    with timer("normals"):  # subsampling to the folds, KNN normals, orientation
        pts, nrm, _ = fit_points(local, None, DeepGeometricPrior(**{**rec.get_params(), "isolated_factor": 0.0}),
                                 np.random.default_rng(rec.seed))
    folds = n_folds(len(pts), rec)
    with timer("cover"):
        cover = make_cover(pts, nrm, folds, rec)
    with timer("fit"), _FitClock() as clock:
        model, result, data = fit_charts(cover, rec)
    consistency = rec.consistency_iterations > 0 and cover.n_patches > 1
    with timer("consistency"):
        if consistency:
            refit_consistency(model, cover, result.output, matching(result.output, data, cover), len(pts), rec)
    with timer("sampling"):
        dense, dense_n = dense_output(model, cover, data, len(pts), rec)
    verts = faces = None
    with timer("mesh"):
        if rec.mesh:
            verts, faces = poisson_mesh(dense, dense_n, depth=rec.depth, trim_quantile=rec.trim_quantile)

    match_s = float(getattr(data, "match_time_s", 0.0))
    phases = dict(clock.t)
    phases["loss_backward"] -= match_s  # the matchings run inside the first loss evaluation of their steps
    phases["matchings"] = match_s
    steps = clock.steps
    flops = chart_flops(cover, rec.hidden)
    fb = phases["forward"] + phases["loss_backward"]
    out: dict[str, Any] = {
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in rec.get_params().items()},
        "threads": torch.get_num_threads(),
        "stages_s": {k: timer.wall.get(k, 0.0) for k in STAGES},
        "stages_cpu_s": {k: timer.cpu.get(k, 0.0) for k in STAGES},
        "fit": {"steps": steps, "seconds": phases,
                "per_step_ms": {k: 1e3 * v / max(steps, 1) for k, v in phases.items() if k != "matchings"},
                "matchings": int(getattr(data, "matchings", 0)),
                "consistency_steps": rec.consistency_iterations if consistency else 0},
        "sizes": {"n_input": len(points), "n_isolated": n_isolated, "n_fit": len(pts), "folds": folds,
                  "patches": cover.n_patches, "max_patch": int(cover.mask.shape[1]),
                  "rows": int(cover.sizes.sum()), "dense": len(dense),
                  "mesh_vertices": 0 if verts is None else len(verts)},
    }
    out["total_s"] = sum(out["stages_s"].values())
    out["total_cpu_s"] = sum(out["stages_cpu_s"].values())
    fit_rate = flops * steps / fb / 1e9 if fb > 0 else float("nan")
    big = matmul_gflops(flops)
    out["gflops"] = {"flops_per_step": flops, "fit_forward_backward": fit_rate, "large_matmul": big["gflops"],
                     "large_matmul_n": big["n"], "fraction": fit_rate / big["gflops"]}
    if reference is not None:
        ref = (frame.inward(reference[0]), reference[1])
        scores = {"dense": evaluate_against_mesh(ref, points=dense, n_output=200_000, n_reference=n_reference)}
        if verts is not None:
            scores["mesh"] = evaluate_against_mesh(ref, mesh=(verts, faces), n_output=200_000,
                                                   n_reference=n_reference)
        out["chamfer"] = {k: v["chamfer_l1"] for k, v in scores.items()}
    return out


def _child_run(n_points: int, settings_json: str, threads: int) -> None:
    """The child of :func:`peak_memory_mb`: a full reconstruction of an ``n_points`` torus."""
    import torch

    from geoprior import DeepGeometricPrior

    torch.set_num_threads(threads)
    _, points, _ = torus_cloud(n_points)
    settings = json.loads(settings_json)
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    t0 = time.perf_counter()
    res = DeepGeometricPrior(**settings).reconstruct(points)
    print(json.dumps({"wall_s": time.perf_counter() - t0, "timings": res.timings, "n_dense": len(res.arrays["points"]),
                      "patches": res.info["n_patches"], "folds": res.info["folds"]}))


def peak_memory_mb(n_points: int, settings: dict | None = None, threads: int = 2) -> float:
    """Peak resident memory (MiB) of a full run on an ``n_points`` noisy torus, alone in a child process.

    The child's own report (wall time, stage timings) is kept in ``peak_memory_mb.last``.
    """
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in (settings or {}).items()}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(n_points), json.dumps(settings),
               "--threads", str(threads)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the {n_points}-point run failed:\n{proc.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux: the largest child so far
    if peak <= before:
        raise RuntimeError("an earlier child process used more memory; run the measurement in a fresh process")
    peak_memory_mb.last = json.loads(proc.stdout.strip().splitlines()[-1])
    return peak / 1024


peak_memory_mb.last = {}


def _print_stages(prof: dict) -> None:
    print(f"\n{'stage':12s} {'wall s':>8s} {'CPU s':>8s}")
    for k in STAGES:
        print(f"{k:12s} {prof['stages_s'][k]:8.2f} {prof['stages_cpu_s'][k]:8.2f}")
    print(f"{'total':12s} {prof['total_s']:8.2f} {prof['total_cpu_s']:8.2f}")
    f = prof["fit"]
    print(f"\nchart fit: {f['steps']} steps, {f['matchings']} exact matchings "
          f"({f['seconds']['matchings']:.2f} s), per step (ms):")
    for k, v in f["per_step_ms"].items():
        print(f"  {k:14s} {v:8.1f}")
    g = prof["gflops"]
    print(f"\nchart fit forward+backward {g['fit_forward_backward']:.1f} GFLOP/s "
          f"({g['flops_per_step'] / 1e9:.2f} GFLOP per step), one {g['large_matmul_n']}^2 float32 matmul "
          f"{g['large_matmul']:.1f} GFLOP/s: {100 * g['fraction']:.0f}%")
    if "chamfer" in prof:
        print("Chamfer-L1 to the clean torus:", ", ".join(f"{k} {v:.3e}" for k, v in prof["chamfer"].items()))


def _parse_value(text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return tuple(value) if isinstance(value, list) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=60_000, help="points of the profiled cloud")
    parser.add_argument("--noise", type=float, default=0.005, help="noise std as a fraction of the diagonal")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cloud (sampling and noise)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a DeepGeometricPrior setting (JSON value, e.g. hidden=[32,32])")
    parser.add_argument("--memory-points", type=int, default=1_000_000, help="points of the peak-memory run")
    parser.add_argument("--skip-memory", action="store_true", help="leave out the peak-memory run")
    parser.add_argument("--sweep", action="store_true", help="also time whole runs of the non-default settings")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "geoprior_profile.json")
    parser.add_argument("--child", nargs=2, metavar=("N", "SETTINGS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        _child_run(int(args.child[0]), args.child[1], args.threads)
        return 0
    settings = dict(item.split("=", 1) for item in args.set)
    settings = {k: _parse_value(v) for k, v in settings.items()}
    reference, points, diag = torus_cloud(args.points, args.noise, args.seed)
    results: dict[str, Any] = {"input": {"shape": "torus R=1 r=0.4 (geoprior.shapes.noisy_torus)",
                                         "points": args.points, "noise_fraction_of_diagonal": args.noise,
                                         "seed": args.seed, "diagonal": diag}}
    prof = stage_profile(points, settings, reference=reference)
    _print_stages(prof)
    results.update(prof)
    if args.sweep:
        rows = []
        print(f"\n{'settings':40s} {'wall s':>7s} {'CPU s':>7s} {'fit s':>6s} {'mesh CD-L1':>11s} {'dense CD-L1':>11s}")
        for extra in SWEEP:
            p = prof if not extra else stage_profile(points, {**settings, **extra}, reference=reference)
            label = ", ".join(f"{k}={v}" for k, v in extra.items()) or "defaults"
            rows.append({"settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in extra.items()},
                         "total_s": p["total_s"], "total_cpu_s": p["total_cpu_s"], "stages_s": p["stages_s"],
                         "chamfer": p["chamfer"]})
            print(f"{label:40s} {p['total_s']:7.1f} {p['total_cpu_s']:7.1f} {p['stages_s']['fit']:6.1f} "
                  f"{p['chamfer'].get('mesh', float('nan')):11.3e} {p['chamfer']['dense']:11.3e}", flush=True)
        results["sweep"] = rows
    if not args.skip_memory:
        mb = peak_memory_mb(args.memory_points, settings, threads=args.threads)
        results["peak_rss_mb"] = {"points": args.memory_points, "peak_rss_mb": mb, "run": peak_memory_mb.last}
        print(f"\npeak resident memory of a full run on {args.memory_points:,} points: {mb:.0f} MiB "
              f"(wall {peak_memory_mb.last['wall_s']:.0f} s, {peak_memory_mb.last['folds']} folds, "
              f"{peak_memory_mb.last['patches']} charts)")
    results.update(run_record("cpu"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
