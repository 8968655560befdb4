"""Benchmark: is the predicted uncertainty calibrated on data it was not chosen on, for every front end?

For each task, fresh instances with a known truth are split in advance into a **validation**
part (every posterior variant runs; the default is chosen there, by the mean Gaussian test
log-likelihood, a proper scoring rule) and a **test** part (reported: the chosen variant,
the rank-64 one-precision reference and the ensembles):

* ``denoise``: grey 64x64 versions of the validation images (scikit-image's and
  ``../shared/data/images/dip``), Gaussian noise 0.1, the light skip net, 300 Adam steps;
* ``ct``: 64x64 random-ellipse phantoms (fresh seeds) and Shepp-Logan, 30 angles, 1 % noise,
  the CT network with the FBP input, 600 Adam steps at lr 5e-3;
* ``eit``: KTC-like simulated phantoms (:mod:`eit.simulated_set` with a seed that is not the
  settings set's), levels 1-7 (validation: one case per level), the CLI's default neural
  reconstruction (three-phase head, a batched ensemble of 3 whose members' posteriors are
  mixed), its exact-Jacobian posterior at rank 128, with and without the background level's
  uncertainty (:mod:`eit.uncertainty`);
* ``geoprior``: suite shapes (:mod:`geoprior.suite`), 10k uniform samples, noise 0.5 % of
  the diagonal, the default reconstruction; error = distance to the true surface along each
  dense point's normal.

Posterior variants (:func:`shared.uncertainty.linearised_laplace`): denoising, rank 64, 128,
256 with one prior precision, and rank 128 with per-layer precisions, either by type-II maximum
likelihood (``layer``) or shaped by each layer's weight scale with one fitted level (``rms``).
CT: rank 64 (the earlier choice) or the mixture of the five seeds' own posteriors at rank 64,
96, 112 or 128 (``mix5-r*``; the reconstruction is then the seeds' mean).  EIT: rank 128 with
one precision or ``rms`` precisions, each with the background level's std (``-level``) or
without.  The weight prior is zero-centred (every fit here starts from scratch); the noise
level is known (images: ``beta = 1/sigma^2``; EIT: the problem's whitening).  The anchor is a
deep ensemble of K = 5 independently seeded fits whose spread (population std) is the
uncertainty, and the ensemble of as many members as fit in the linearised posterior's wall
time (fit + posterior, at least 2).  Geoprior has its own per-chart posterior
(:func:`geoprior.uncertainty.reconstruction_uncertainty`) and an ensemble of 5 seeds whose
spread is that of each dense point's offset, along its normal, to the other members' clouds.

Per instance and method: the shares of errors within k = 0.5 ... 3 predicted std (nominal
``erf(k / sqrt 2)``), the Gaussian test log-likelihood and that of the best constant std (an
oracle chosen with the truth), and the correlation of std with |error|.  Writes
``benchmarks/results/uncertainty.json`` and a reliability diagram ``uncertainty_reliability.png``.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from shared.provenance import run_record
from shared.result import write_json

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "benchmarks" / "results"
KS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
MEMBERS = 5
#: linearised posterior variants run on the validation instances
VARIANTS = {
    # one precision stated explicitly: EIT's posterior defaults to per-layer precisions
    "r64": dict(rank=64, prior_groups="none"),
    "r128": dict(rank=128, prior_groups="none"),
    "r256": dict(rank=256, prior_groups="none"),
    "r128-layer": dict(rank=128, prior_groups="layer", group_precisions="evidence"),
    "r128-rms": dict(rank=128, prior_groups="layer", group_precisions="rms"),
}
REFERENCE = "r64"
#: CT only: the equal mixture of the K = MEMBERS seeds' own linearised posteriors (a mixture of
#: Laplace approximations, Eschenhagen et al. 2021), at a rank each; the seeds are the ones the
#: deep-ensemble anchor fits anyway, so it is compared with it at equal K
MIXTURES = {f"mix5-r{r}": dict(rank=r, prior_groups="none") for r in (64, 96, 112, 128)}
#: the variants each task's validation instances run (CT: the single-network variants other than
#: the reference were measured in the run of 8b40726 and lost to it; not run again)
CANDIDATES = {"denoise": VARIANTS, "ct": {REFERENCE: VARIANTS[REFERENCE], **MIXTURES}}
#: EIT forms its Jacobian exactly (every rank costs the same, about a minute per member and
#: posterior on one core), so only prior variants run there: name -> (posterior, which std of
#: :func:`eit.uncertainty.conductivity_uncertainty`: with the background level or the network's
#: alone).  Per-layer type-II precisions ("r128-layer") were degenerate in the run of 8b40726
#: (0.19 within 2 std on validation) and are not run again.
EIT_POSTERIORS = {"r128": dict(rank=128, prior_groups="none"), "r128-rms": dict(rank=128, prior_groups="layer",
                                                                                group_precisions="rms")}
EIT_VARIANTS = {"r128": ("r128", "std_network"), "r128-rms": ("r128-rms", "std_network"),
                "r128-level": ("r128", "std"), "r128-rms-level": ("r128-rms", "std")}
DENOISE_VALIDATION = ("camera", "astronaut", "coffee")
DENOISE_TEST = ("chelsea", "rocket", "coins", "F16", "barbara", "zebra", "snail")
CT_VALIDATION = tuple(range(1000, 1005))
CT_TEST = tuple(range(2000, 2020)) + ("shepp",)
EIT_SEED = 777
EIT_VALIDATION = tuple((lv, 0) for lv in range(1, 8))
EIT_TEST = tuple((lv, i) for lv in range(1, 8) for i in (1, 2, 3))[:20]
GEO_VALIDATION = ("blob", "block_with_bore")
GEO_TEST = ("rounded_cube", "star_quadric", "torus_knot", "height_field", "plate_with_holes", "l_bracket",
            "block_with_boss", "stepped_block", "hex_nut", "cross")


# --------------------------------------------------------------------------- scoring
def score(error: np.ndarray, std: np.ndarray, seconds: float, **extra) -> dict:
    """Coverage at every k, Gaussian test log-likelihood (and the oracle constant std's), correlation."""
    from shared.uncertainty import coverage

    e = np.abs(np.asarray(error, dtype=np.float64).reshape(-1))
    s = np.clip(np.asarray(std, dtype=np.float64).reshape(-1), 1e-12, None)
    cov = coverage(e, s, ks=KS)
    ll = float(np.mean(-0.5 * np.log(2 * math.pi * s ** 2) - 0.5 * (e / s) ** 2))
    rms = max(float(np.sqrt(np.mean(e ** 2))), 1e-12)
    return {"within": {f"{k:g}": cov[f"within_{k:g}std"] for k in KS}, "test_log_likelihood": ll,
            "constant_log_likelihood": -0.5 * math.log(2 * math.pi * rms ** 2) - 0.5,
            "std_error_correlation": cov["std_error_correlation"], "mean_std": cov["mean_std"], "rmse": rms,
            "time_s": seconds, **extra}


def equal_time_members(linearised_s: float, member_s: float, cap: int) -> int:
    """Members that fit in the linearised posterior's wall time, at least 2 and at most ``cap``."""
    return int(min(cap, max(2, math.floor(linearised_s / member_s))))


def ensemble_rows(means: list[np.ndarray], truth: np.ndarray, fit_times: list[float], linearised_s: float) -> dict:
    """The K = 5 ensemble and the ensemble of as many members as fit in ``linearised_s`` (>= 2)."""
    from shared.uncertainty import ensemble_statistics

    k_eq = equal_time_members(linearised_s, float(np.mean(fit_times)), len(means))
    rows = {}
    for name, k in ((f"ensemble{len(means)}", len(means)), ("ensemble_equal_time", k_eq)):
        mean, std = ensemble_statistics(np.stack(means[:k]))
        rows[name] = score(mean - truth, std, float(sum(fit_times[:k])), members=k)
    return rows


# --------------------------------------------------------------------------- images
def _grey64(name: str):
    import torch
    from skimage import data

    from shared.image import resize

    if hasattr(data, name):
        img = getattr(data, name)()
    else:
        from PIL import Image

        folder = ROOT.parent / "shared" / "data" / "images" / "dip"
        img = np.asarray(Image.open(next(folder.glob(f"{name}.*"))).convert("RGB"))
    t = torch.as_tensor(np.asarray(img), dtype=torch.float32) / 255.0
    if t.ndim == 3:
        t = t[..., :3].mean(-1)
    h, w = t.shape
    c = min(h, w)  # centre square, then 64x64
    t = t[(h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c]
    return resize(t[None, None], (64, 64))


def image_instance(task: str, key, variants: list[str]) -> dict:
    """Fit ``MEMBERS`` seeds, linearise seed 0 with every variant, score all against the truth."""
    import torch

    from shared.image import DeepImagePrior, ct_problem, denoise_problem, known_noise_std, random_ellipses
    from shared.image.edip import finetune, network_output
    from shared.uncertainty import ensemble_statistics, linearised_uncertainty

    if task == "denoise":
        problem = denoise_problem(_grey64(key), multiple=16, sigma=0.1, simulate=True, seed=11)
        sigma = 0.1
    else:
        from shared.image.phantoms import shepp_logan

        x = shepp_logan(64) if key == "shepp" else random_ellipses(
            1, 64, generator=torch.Generator().manual_seed(int(key)))
        problem = ct_problem(x, multiple=16, angles=30, size=64, noise=0.01, seed=11)
        sigma = known_noise_std(problem, noise=0.01)
    fits, times, means = [], [], []
    for s in range(MEMBERS):
        t0 = time.perf_counter()
        if task == "denoise":
            fit = DeepImagePrior(net="skip", loss="mse", iterations=300, stop="none", input_noise=0.0,
                                 average=None, seed=s).reconstruct(problem).fit
        else:
            fit = finetune(problem.y, problem.forward, problem.observation, input="fbp", iterations=600, lr=5e-3,
                           seed=s).result
        times.append(time.perf_counter() - t0)
        fits.append(fit)
        means.append(network_output(fit.model, fit.z).clamp(0, 1).double().numpy())
    truth = problem.reference.double().numpy()
    rows = {}
    for name in variants:
        t0 = time.perf_counter()
        if name in MIXTURES:  # every seed's posterior, mixed: the reconstruction is the seeds' mean
            parts = [linearised_uncertainty(f, beta=1.0 / sigma ** 2, prior_mean="zero", **MIXTURES[name])
                     for f in fits]
            mean, std = ensemble_statistics(torch.stack([u.mean.clamp(0, 1) for u in parts]),
                                            torch.stack([u.std for u in parts]))
            rows[name] = score(mean - truth, std, sum(times) + time.perf_counter() - t0,
                               alpha=[u.alpha for u in parts])
            continue
        u = linearised_uncertainty(fits[0], beta=1.0 / sigma ** 2, prior_mean="zero", **VARIANTS[name])
        rows[name] = score(u.mean.clamp(0, 1).double().numpy() - truth, u.std.double().numpy(),
                           times[0] + time.perf_counter() - t0, alpha=u.alpha)
    # the linearised posterior's time: of the chosen variant (the reference only when it is the only one)
    lin_s = max(rows[v]["time_s"] for v in variants if v != REFERENCE or len(variants) == 1)
    rows.update(ensemble_rows(means, truth, times, lin_s))
    return {"task": task, "instance": str(key), "fit_s": times, "rows": rows,
            "psnr": float(-10 * np.log10(np.mean((means[0] - truth) ** 2)))}


# --------------------------------------------------------------------------- EIT
def eit_instance(key: tuple[int, int], variants: list[str]) -> dict:
    """A simulated KTC-like case: the CLI's default neural fit, each posterior variant, the ensembles."""
    from eit.evaluate import _WORKER, _init_worker
    from eit.methods import make_reconstructor
    from eit.simulated_set import simulated_set, simulation_patterns
    from eit.uncertainty import background_level_std, conductivity_uncertainty, with_level
    from shared.uncertainty import ensemble_statistics

    if "model" not in _WORKER:
        inj, mpat, _ = simulation_patterns()
        _init_worker(inj, mpat, "1500", True)
    level, index = key
    case = simulated_set([level], index + 1, seed=EIT_SEED)[index]
    problem = _WORKER["sim"].problem(case, _WORKER["model"])
    truth = np.asarray(problem.sigma_true, dtype=np.float64).reshape(-1)
    areas = np.asarray(problem.model.cell_areas, dtype=np.float64)
    t0 = time.perf_counter()
    result = make_reconstructor("neural").reconstruct(problem)
    fit_s = time.perf_counter() - t0
    sigma = np.asarray(result.arrays["sigma"], dtype=np.float64).reshape(-1)
    rows, posteriors = {}, {}
    for name in variants:
        post, which = EIT_VARIANTS[name]
        if post not in posteriors:  # one posterior serves both of its std variants
            t0 = time.perf_counter()
            posteriors[post] = (conductivity_uncertainty(result, problem, **EIT_POSTERIORS[post]),
                                time.perf_counter() - t0)
        u, secs = posteriors[post]
        rows[name] = score(sigma - truth, u.arrays[which], fit_s + secs, weights_note="cells")
    lin_s = max(r["time_s"] for r in rows.values())
    delta = background_level_std(problem)
    t0 = time.perf_counter()
    ens = make_reconstructor("neural", members=MEMBERS).reconstruct(problem)
    t5 = time.perf_counter() - t0
    k_eq = equal_time_members(lin_s, t5 / MEMBERS, 16)
    t0 = time.perf_counter()
    eq = make_reconstructor("neural", members=k_eq).reconstruct(problem)
    t_eq = time.perf_counter() - t0
    for name, res, secs, k in ((f"ensemble{MEMBERS}", ens, t5, MEMBERS), ("ensemble_equal_time", eq, t_eq, k_eq)):
        members = res.fit.output.detach().double().cpu().numpy().reshape(k, -1)
        centre = np.asarray(res.arrays["sigma"], dtype=np.float64).reshape(-1)
        _, std = ensemble_statistics(members, centre=centre)
        rows[name] = score(centre - truth, std, secs, members=k)
        if name == f"ensemble{MEMBERS}":  # the anchor given the same level term as the posterior
            rows[name + "-level"] = score(centre - truth, with_level(std, centre, delta), secs, members=k)
    return {"task": "eit", "instance": case.name, "level": level, "fit_s": [fit_s], "rows": rows,
            "level_std": delta, "score": result.metrics.get("score"),
            "rel_l2": float(np.sqrt(np.sum(areas * (sigma - truth) ** 2) / np.sum(areas * truth ** 2)))}


# --------------------------------------------------------------------------- geoprior
def geoprior_instance(shape: str) -> dict:
    """Default reconstructions of ``MEMBERS`` seeds; seed 0's per-chart posterior; the seeds' spread."""
    from scipy.spatial import cKDTree

    from geoprior import DeepGeometricPrior
    from geoprior.suite import Case, build, make_input
    from geoprior.uncertainty import normal_distances, reconstruction_uncertainty

    mesh = build(shape)
    ref = (np.asarray(mesh.vertices), np.asarray(mesh.faces))
    cloud = make_input(Case(shape, "uniform", 0.005, 10000), mesh)
    results, times = [], []
    for s in range(MEMBERS):
        t0 = time.perf_counter()
        results.append(DeepGeometricPrior(mesh=False, seed=s).reconstruct(cloud))
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    u = reconstruction_uncertainty(results[0], reference=ref)
    lin_s = times[0] + time.perf_counter() - t0
    rows = {"chart-posterior": score(u.arrays["error"], u.arrays["std"], lin_s)}
    p, n = results[0].arrays["points"], results[0].arrays["normals"]
    n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    offsets = [np.zeros(len(p))]
    for r in results[1:]:
        _, j = cKDTree(r.arrays["points"]).query(p)
        offsets.append(np.einsum("ij,ij->i", r.arrays["points"][j] - p, n))
    offsets = np.stack(offsets)
    k_eq = equal_time_members(lin_s, float(np.mean(times)), MEMBERS)
    for name, k in ((f"ensemble{MEMBERS}", MEMBERS), ("ensemble_equal_time", k_eq)):
        mean, std = offsets[:k].mean(0), offsets[:k].std(0)
        err, _ = normal_distances(p + mean[:, None] * n, n, *ref)
        rows[name] = score(err, std, float(sum(times[:k])), members=k)
    return {"task": "geoprior", "instance": shape, "fit_s": times, "rows": rows, "n_points": int(len(p))}


# --------------------------------------------------------------------------- driver
def jobs(tasks: list[str], quick: bool) -> list[tuple]:
    """``(task, key, split)`` for every instance (``quick``: one validation and two test instances)."""
    sets = {"denoise": (DENOISE_VALIDATION, DENOISE_TEST), "ct": (CT_VALIDATION, CT_TEST),
            "eit": (EIT_VALIDATION, EIT_TEST), "geoprior": (GEO_VALIDATION, GEO_TEST)}
    out = []
    for task in tasks:
        val, test = sets[task]
        if quick:
            val, test = val[:1], test[:2]
        out += [(task, k, "validation") for k in val] + [(task, k, "test") for k in test]
    return out


def run_job(job: tuple, chosen: dict) -> dict:
    """One instance: every variant on validation, the chosen one and the reference on test."""
    task, key, split = job
    if task == "eit":  # the chosen variant and its counterpart without (or with) the level term
        variants = list(EIT_VARIANTS) if split == "validation" else _eit_pair(chosen[task])
    else:
        variants = list(CANDIDATES[task]) if split == "validation" else sorted({chosen[task], REFERENCE})
    t0 = time.perf_counter()
    try:
        if task in ("denoise", "ct"):
            rec = image_instance(task, key, variants)
        elif task == "eit":
            rec = eit_instance(tuple(key), variants)
        else:
            rec = geoprior_instance(key)
    except Exception as exc:  # reported in the JSON and left out of the summaries, never hidden
        import traceback

        rec = {"task": task, "instance": str(key), "rows": {}, "error": f"{type(exc).__name__}: {exc}",
               "traceback": traceback.format_exc(limit=4)}
    rec.update(split=split, total_s=time.perf_counter() - t0)
    return rec


def _eit_pair(name: str) -> list[str]:
    """``name`` and the variant with the same posterior and the other std (free: one posterior)."""
    post, which = EIT_VARIANTS[name]
    return [name] + [v for v, (p, w) in EIT_VARIANTS.items() if p == post and w != which]


def _init_process() -> None:
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)  # one process per core: threads inside would only compete
    threadpool_limits(limits=1)


def run_all(job_list: list[tuple], chosen: dict, workers: int, log=print) -> list[dict]:
    """The jobs on ``workers`` spawned processes (one thread each), in order."""
    if workers <= 1:
        _init_process()
        results = (run_job(j, chosen) for j in job_list)
        pool = None
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_process)
        results = pool.map(run_job, job_list, [chosen] * len(job_list))
    records = []
    for i, rec in enumerate(results):
        records.append(rec)
        best = {k: round(r["within"]["2"], 3) for k, r in rec["rows"].items()} or rec.get("error")
        log(f"[{i + 1}/{len(job_list)}] {rec['task']} {rec['instance']} ({rec['split']}, {rec['total_s']:.0f} s) "
            f"within 2 std: {best}", flush=True)
    if pool is not None:
        pool.shutdown()
    return records


def choose(records: list[dict], task: str) -> str:
    """The variant with the highest mean test log-likelihood on the task's validation instances."""
    val = [r for r in records if r["task"] == task and r["split"] == "validation" and "error" not in r]
    names = [v for v in (EIT_VARIANTS if task == "eit" else CANDIDATES[task]) if all(v in r["rows"] for r in val)]
    if not val or not names:
        return REFERENCE
    return max(names, key=lambda v: np.mean([r["rows"][v]["test_log_likelihood"] for r in val]))


def summarise(records: list[dict], task: str, split: str) -> dict:
    """Per method: coverage (mean, std, min over instances), log-likelihoods, correlation, time."""
    rs = [r for r in records if r["task"] == task and r["split"] == split and "error" not in r]
    methods = sorted({m for r in rs for m in r["rows"]})
    out = {}
    for m in methods:
        rows = [r["rows"][m] for r in rs if m in r["rows"]]
        w2 = np.array([x["within"]["2"] for x in rows])
        ll = np.array([x["test_log_likelihood"] for x in rows])
        out[m] = {"instances": len(rows), "within_2std_mean": float(w2.mean()), "within_2std_std": float(w2.std()),
                  "within_2std_min": float(w2.min()),
                  "within_1std_mean": float(np.mean([x["within"]["1"] for x in rows])),
                  "within_k_mean": {f"{k:g}": float(np.mean([x["within"][f"{k:g}"] for x in rows])) for k in KS},
                  "test_log_likelihood_mean": float(ll.mean()),
                  # the median: one pixel whose std collapses to ~0 drags an instance's mean to -1e19
                  "test_log_likelihood_median": float(np.median(ll)),
                  "constant_log_likelihood_median": float(np.median([x["constant_log_likelihood"] for x in rows])),
                  "constant_log_likelihood_mean": float(np.mean([x["constant_log_likelihood"] for x in rows])),
                  "share_above_constant": float(np.mean([x["test_log_likelihood"] > x["constant_log_likelihood"]
                                                         for x in rows])),
                  "std_error_correlation_mean": float(np.mean([x["std_error_correlation"] for x in rows])),
                  "time_s_mean": float(np.mean([x["time_s"] for x in rows]))}
    return out


def targets(summary: dict, method: str) -> dict:
    """The issue's targets on the test instances for ``method`` (the chosen posterior)."""
    s, ens = summary[method], summary.get("ensemble_equal_time")
    return {"method": method,
            "coverage_2std_in_0.93_0.97": 0.93 <= s["within_2std_mean"] <= 0.97,
            "no_instance_below_0.85": s["within_2std_min"] >= 0.85,
            "log_likelihood_above_constant_every_instance": s["share_above_constant"] == 1.0,
            "log_likelihood_at_least_equal_time_ensemble": None if ens is None else
            s["test_log_likelihood_mean"] >= ens["test_log_likelihood_mean"],
            "median_log_likelihood_at_least_equal_time_ensemble": None if ens is None else
            s["test_log_likelihood_median"] >= ens["test_log_likelihood_median"]}


def reliability_figure(result: dict, path: Path) -> None:
    """Observed share within k std against the nominal share, per task (test instances, mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in result["tasks"] if result["tasks"][t].get("test")]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.6), squeeze=False)
    nominal = [math.erf(k / math.sqrt(2)) for k in KS]
    for ax, t in zip(axes[0], tasks):
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
        for m, s in result["tasks"][t]["test"].items():
            style = "o-" if m == result["tasks"][t]["chosen"] else ".-"
            ax.plot(nominal, [s["within_k_mean"][f"{k:g}"] for k in KS], style, label=m, lw=1.2)
        ax.set_title(f"{t} (test, chosen {result['tasks'][t]['chosen']})", fontsize=9)
        ax.set_xlabel("nominal share within k std")
        ax.set_ylabel("observed share")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def summaries(records: list[dict], chosen: dict, tasks: list[str]) -> dict:
    """Per task: validation and test summaries, the chosen variant and the targets."""
    out = {}
    for t in tasks:
        summary = {"validation": summarise(records, t, "validation"), "test": summarise(records, t, "test"),
                   "chosen": chosen[t]}
        summary["targets"] = targets(summary["test"], chosen[t]) if summary["test"] else None
        out[t] = summary
    return out


def print_table(result: dict) -> None:
    print(f"\n{'task':9s} {'method':20s} {'2std mean':>9s} {'min':>6s} {'1std':>6s} {'LL':>8s} {'LL med':>7s} "
          f"{'const LL':>8s} {'corr':>5s} {'time s':>7s}   (test instances)")
    for t, s in result["tasks"].items():
        for m, row in s["test"].items():
            print(f"{t:9s} {m + (' *' if m == s['chosen'] else ''):20s} {row['within_2std_mean']:9.3f} "
                  f"{row['within_2std_min']:6.3f} {row['within_1std_mean']:6.3f} "
                  f"{row['test_log_likelihood_mean']:8.3g} {row['test_log_likelihood_median']:7.3f} "
                  f"{row['constant_log_likelihood_mean']:8.3f} {row['std_error_correlation_mean']:5.2f} "
                  f"{row['time_s_mean']:7.1f}")


def resummarise(path: Path) -> dict:
    """The summaries of an earlier run recomputed from its per-instance records (its provenance kept)."""
    import json

    result = json.loads(path.read_text())
    chosen = {t: s["chosen"] for t, s in result["tasks"].items()}
    result["tasks"] = summaries(result["records"], chosen, list(chosen))
    result["resummarised"] = {k: v for k, v in run_record("cpu").items() if k in ("commit", "commit_dirty",
                                                                                   "finished")}
    return result


PROVENANCE = ("commit", "commit_dirty", "finished", "load_average", "threads", "device", "total_s", "workers",
              "machine")


def merge_runs(path: Path, new: dict, tasks: list[str]) -> dict:
    """``new`` (a run of ``tasks``) with the other tasks of the earlier run at ``path`` kept as they
    were: their records, summaries and provenance (``task_runs[task]``: the run that made it)."""
    import json

    old = json.loads(path.read_text())
    if "tasks" not in old or "records" not in old:
        raise ValueError(f"{path} is not an uncertainty benchmark result (no 'tasks' / 'records')")
    runs = old.get("task_runs") or {t: {k: old.get(k) for k in PROVENANCE} for t in old["tasks"]}
    kept = [t for t in old["tasks"] if t not in tasks]
    merged = dict(new)
    merged["tasks"] = {**{t: old["tasks"][t] for t in kept}, **new["tasks"]}
    merged["records"] = [r for r in old["records"] if r.get("task") in kept] + new["records"]
    merged["errors"] = [e for e in old.get("errors", []) if e.split(" ")[0] in kept] + new["errors"]
    merged["task_runs"] = {**{t: runs[t] for t in kept}, **{t: {k: new.get(k) for k in PROVENANCE} for t in tasks}}
    return merged


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["geoprior", "eit", "ct", "denoise"],
                    choices=["denoise", "ct", "eit", "geoprior"])
    ap.add_argument("--workers", type=int, default=2, help="processes (one thread each)")
    ap.add_argument("--quick", action="store_true", help="one validation and two test instances per task")
    ap.add_argument("--resummarise", action="store_true",
                    help="recompute the summaries of --out from its stored per-instance records (no fits)")
    ap.add_argument("--update", action="store_true",
                    help="replace only --tasks in an existing --out, keeping the other tasks' records and "
                         "provenance (task_runs says which run made each task)")
    ap.add_argument("--out", type=Path, default=RESULTS / "uncertainty.json")
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if (args.resummarise or args.update) and not args.out.is_file():
        print(f"error: {args.out} does not exist; run the benchmark first", file=sys.stderr)
        return 2
    if args.resummarise:
        result = resummarise(args.out)
    else:
        t0 = time.perf_counter()
        all_jobs = jobs(args.tasks, args.quick)
        # Validation first: the chosen variant per task is fixed before any test instance runs.
        val = run_all([j for j in all_jobs if j[2] == "validation"], {}, args.workers)
        chosen = {t: ("chart-posterior" if t == "geoprior" else choose(val, t)) for t in args.tasks}
        print(f"chosen on validation: {chosen}", flush=True)
        records = val + run_all([j for j in all_jobs if j[2] == "test"], chosen, args.workers)
        result = {"tasks": summaries(records, chosen, args.tasks), "variants": VARIANTS,
                  "mixtures": MIXTURES, "eit_variants": EIT_VARIANTS, "eit_posteriors": EIT_POSTERIORS,
                  "eit_fit": "the CLI's default NeuralEIT (three-phase head, 3 members)",
                  "reference_variant": REFERENCE, "members": MEMBERS, "ks": KS,
                  "selection": "highest mean Gaussian test log-likelihood on the validation instances",
                  "records": records, "errors": [f"{r['task']} {r['instance']}: {r['error']}" for r in records
                                                 if "error" in r],
                  "total_s": time.perf_counter() - t0, "workers": args.workers, "quick": args.quick,
                  **run_record("cpu"), "machine": "2-core machine shared with other jobs"}
        if args.update:
            result = merge_runs(args.out, result, args.tasks)
    if not result.get("quick"):
        reliability_figure(result, args.out.with_name("uncertainty_reliability.png"))
    write_json(args.out, result)
    print_table(result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
