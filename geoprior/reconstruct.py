"""The deep geometric prior pipeline: cloud -> patches -> charts -> dense oriented cloud -> mesh.

:class:`DeepGeometricPrior` is the front end's reconstructor (settings at construction,
:meth:`DeepGeometricPrior.reconstruct` returns a :class:`shared.result.Result`); the
stages are library functions of this module that it calls in order:

0. **Points** (:func:`fit_points`): isolated input points removed
   (:func:`geoprior.clean.isolated_points`), the rest subsampled to at most ``max_folds``
   folds of ``fold_points``, missing normals estimated (KNN-30 PCA) and oriented.
1. **Folds.** A cloud of more than ``fold_points`` points is split into
   ``F = ceil(N / fold_points)`` interleaved random folds (:func:`n_folds`), so that every
   chart sees a few hundred points and the exact matching stays cheap while all the data
   is used.
2. **Cover** (:mod:`geoprior.cover`): per fold, patches of radius ``c r`` in PCA frames,
   parameter samples ``u`` one per point; all folds' patches in one batch.
3. **Charts** (:func:`fit_charts`): one :class:`~geoprior.charts.ChartPrior` for all ``P``
   patches, ``G_theta(u) = (phi_1(u_1), ..., phi_P(u_P))``, fitted by :func:`shared.fit.fit`
   to the objective ``D(A(G_theta(u)), y)`` with ``A`` the identity, ``y`` the patch
   points ``(P, K, 3)`` and ``D`` an EMD data term (:mod:`geoprior.emd`: exact assignment
   re-matched on a schedule of the optimiser's steps, or annealed Sinkhorn).  An optional
   stopping rule of :mod:`shared.stopping` (e.g. ES-WMV on the chart outputs) stops it
   without any clean surface; ``stopping="discrepancy"`` stops every chart on its own,
   once its residual along the normal reaches its patch's noise level
   (:mod:`geoprior.noise`, :class:`shared.stopping.MemberDiscrepancy`).
4. **Consistency** (:func:`refit_consistency`, :mod:`geoprior.consistency`): average the
   charts' predictions of each point and refit all charts to that consensus ``ybar``
   (a second ``fit``, fixed matching).
5. **Dense output** (:func:`dense_output`, :mod:`geoprior.sampling`): jittered dense samples
   per chart, Jacobian normals, consistent orientation, Voronoi trimming of overlaps (one
   layer of samples per fold), samples far from the consensus of the input removed.
6. **Mesh** (:func:`geoprior.mesh.poisson_mesh`): screened Poisson of the dense oriented
   cloud, which also averages the folds' independent estimates of the surface.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from geoprior.charts import ChartPrior, affine_init
from geoprior.clean import isolated_points
from geoprior.consistency import consensus_points, consensus_targets
from geoprior.cover import Cover, build_folded_cover
from geoprior.emd import ExactEMD, SinkhornEMD, exact_assignment
from geoprior.io import Cloud, validate_cloud
from geoprior.mesh import estimate_normals, mean_spacing, poisson_mesh
from geoprior.noise import NormalResidual, cloud_noise, patch_noise
from geoprior.orientation import orient_normals_robust
from geoprior.sampling import sample_charts
from shared.fit import FitResult, Objective, Optimiser, Tracking, fit
from shared.physics import IdentityPhysics
from shared.profiling import release_freed_memory
from shared.reconstructor import Reconstructor
from shared.result import Result
from shared.stopping import MemberDiscrepancy, StepRecord, StoppingRule, make_rule

__all__ = ["DeepGeometricPrior", "fit_points", "n_folds", "orient_normals", "median_patch_cap", "make_cover",
           "make_data_term", "stopping_rule", "discrepancy_rule", "fit_charts", "refit_consistency", "matching",
           "dense_output", "output_files"]

MIN_POINTS = 16


class DeepGeometricPrior(Reconstructor):
    """Deep geometric prior surface reconstruction (lengths are fractions of the bounding-box diagonal).

    Parameters
    ----------
    radius : float or None
        covering radius r as a fraction of the bbox diagonal (None: chosen so that a median patch holds
        patch_points points)
    patch_points : int
        when radius is None: points of a median patch (of radius c r) for a fold of 20,000 points
        with noise of 1 % of the diagonal, scaled as (fold points / 20,000)^(2/3) (noise / 1 %)^(2/3)
        for others (the bias-variance balance, see patch_radius; the noise is estimated from the cloud)
    overlap : float
        patch radius c in units of r
    centres : str
        patch centre sampling
    parameters : str
        parameter samples of a patch: a jittered grid or Lloyd-relaxed points
    fold_points : int
        points per fold: larger clouds are split into interleaved folds, each with its own charts
    max_folds : int
        at most this many folds; larger clouds are subsampled
    max_patch_points : int or None
        cap on the points of a patch (None: 1.25 x the median patch size)
    patch_normals : bool
        estimate KNN-30 normals (tangent-plane oriented) for the patches of a cloud without normals
    hidden : tuple of int
        chart MLP widths
    plane_init : bool
        start every chart at the least-squares plane of its patch (its affine part)
    iterations : int
        chart fitting iterations
    lr : float
        Adam learning rate
    lr_schedule : str
        learning-rate schedule of the chart fit
    loss : str
        EMD: exact assignment or geomloss Sinkhorn
    rematch_every : int
        steps between exact re-matchings (0: keep the initial matching)
    rematch_start : int
        first step that re-matches (before it the cover's fold-free matching is kept)
    blur : float
        final Sinkhorn blur in patch units (patch radius ~ 1)
    scaling : float
        epsilon-scaling ratio of each Sinkhorn evaluation
    stopping : str
        early stopping rule: none (run all iterations), eswmv, plateau, or discrepancy (each chart stops
        on its own once its RMS residual along the normal is <= discrepancy_tau x its patch's noise
        level, estimated from the points; iterations stays the cap; needs loss exact)
    stopping_window : int
        window of the stopping rule (ES-WMV variance, plateau)
    stopping_patience : int
        steps without improvement after which ES-WMV stops
    discrepancy_tau : float
        discrepancy stopping: a chart stops at residual <= tau x noise level (larger: earlier and smoother)
    discrepancy_fraction : float
        discrepancy stopping: the chart fit ends once this share of the charts has stopped (the rest keep
        their current state: charts whose residual levels off above the noise, e.g. across sharp edges)
    consistency_iterations : int
        refit iterations towards the charts' consensus
    density : int
        dense samples per parameter sample
    trim_overlaps : bool
        keep only each chart's Voronoi cell of the dense samples
    outlier_factor : float
        drop dense samples this many point spacings off the consensus (0: keep all)
    isolated_factor : float
        drop input points whose 8-NN distance is this many times their neighbours' (0: keep all)
    depth : int
        Poisson octree depth
    trim_quantile : float
        low-density trimming quantile of the mesh
    trim_spacing : float
        drop mesh vertices farther than this many mean point spacings from the input points
        (the sheets Poisson invents over a scan's unseen side or across a thin part; 0: keep)
    fill_holes : bool
        keep the trimmed sheets that fill a hole as a continuation of the surface around it
        (geoprior.holes: a hole of the data on a smooth surface, not an unseen face)
    mesh_threads : int or None
        threads of the Poisson solver (None: torch's thread count; with more than one the
        mesh's vertices can differ between runs in the 7th digit and come in another order)
    mesh : bool
        mesh the dense cloud (screened Poisson)
    seed : int
        random seed
    device : str
        torch device of the chart fits
    progress : bool
        progress bars
    """

    method = "geoprior"
    #: the allowed values of the settings that name a choice
    choices = {"centres": ("poisson", "fps"), "parameters": ("grid", "lloyd"), "lr_schedule": ("constant", "cosine"),
               "loss": ("exact", "sinkhorn"), "stopping": ("none", "eswmv", "plateau", "discrepancy")}

    def __init__(self, radius: float | None = None, patch_points: int = 300, overlap: float = 1.3,
                 centres: str = "poisson", parameters: str = "grid",
                 fold_points: int = 90_000, max_folds: int = 4, max_patch_points: int | None = None,
                 patch_normals: bool = True, hidden: tuple[int, ...] = (32, 32, 32), plane_init: bool = True,
                 iterations: int = 300, lr: float = 3e-3, lr_schedule: str = "constant", loss: str = "exact",
                 rematch_every: int = 50, rematch_start: int = 50, blur: float = 0.01, scaling: float = 0.7,
                 stopping: str = "discrepancy", stopping_window: int = 20, stopping_patience: int = 60,
                 discrepancy_tau: float = 1.0, discrepancy_fraction: float = 0.95,
                 consistency_iterations: int = 40, density: int = 4, trim_overlaps: bool = True,
                 outlier_factor: float = 3.0, isolated_factor: float = 10.0, depth: int = 8,
                 trim_quantile: float = 0.0, trim_spacing: float = 3.0, fill_holes: bool = True,
                 mesh_threads: int | None = None, mesh: bool = True, seed: int = 0, device: str = "cpu",
                 progress: bool = False) -> None:
        self.radius, self.patch_points, self.overlap = radius, patch_points, overlap
        self.centres, self.parameters = centres, parameters
        self.fold_points, self.max_folds, self.max_patch_points = fold_points, max_folds, max_patch_points
        self.patch_normals, self.hidden, self.plane_init = patch_normals, tuple(hidden), plane_init
        self.iterations, self.lr, self.lr_schedule, self.loss = iterations, lr, lr_schedule, loss
        self.rematch_every, self.rematch_start, self.blur, self.scaling = rematch_every, rematch_start, blur, scaling
        self.stopping, self.stopping_window, self.stopping_patience = stopping, stopping_window, stopping_patience
        self.discrepancy_tau, self.discrepancy_fraction = discrepancy_tau, discrepancy_fraction
        self.consistency_iterations, self.density, self.trim_overlaps = consistency_iterations, density, trim_overlaps
        self.outlier_factor, self.isolated_factor = outlier_factor, isolated_factor
        self.depth, self.trim_quantile, self.mesh_threads, self.mesh = depth, trim_quantile, mesh_threads, mesh
        self.trim_spacing, self.fill_holes = trim_spacing, fill_holes
        self.seed, self.device, self.progress = seed, device, progress

    def check(self) -> DeepGeometricPrior:
        """Refuse settings no reconstruction can use (a ``ValueError`` naming the setting); returns ``self``."""
        for name, allowed in self.choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        rules = [
            ("radius", self.radius is None or 0 < self.radius < 1,
             "None or a fraction of the bounding-box diagonal in (0, 1)"),
            ("patch_points", self.patch_points >= MIN_POINTS, f">= {MIN_POINTS}"),
            ("overlap", self.overlap >= 1, ">= 1 (patches of radius c*r)"),
            ("iterations", self.iterations >= 1, ">= 1"),
            ("consistency_iterations", self.consistency_iterations >= 0, ">= 0"),
            ("fold_points", self.fold_points >= MIN_POINTS, f">= {MIN_POINTS}"),
            ("max_folds", self.max_folds >= 1, ">= 1"),
            ("depth", 1 <= self.depth <= 16, "in 1..16 (the Poisson octree depth)"),
            ("trim_quantile", 0 <= self.trim_quantile < 1, "in [0, 1)"),
            ("trim_spacing", self.trim_spacing >= 0, ">= 0 (0: no distance trim)"),
            ("mesh_threads", self.mesh_threads is None or self.mesh_threads >= 1, "None or >= 1"),
            ("outlier_factor", self.outlier_factor >= 0, ">= 0"),
            ("isolated_factor", self.isolated_factor >= 0, ">= 0"),
            ("lr", self.lr > 0, "> 0"),
            ("discrepancy_tau", self.discrepancy_tau > 0, "> 0"),
            ("discrepancy_fraction", 0 < self.discrepancy_fraction <= 1, "in (0, 1]"),
            ("stopping", self.stopping != "discrepancy" or self.loss == "exact",
             "none, eswmv or plateau with loss sinkhorn (discrepancy reads the exact matching)"),
            ("density", self.density >= 1, ">= 1"),
            ("hidden", len(self.hidden) > 0 and min(self.hidden) >= 1, "one or more layer widths >= 1"),
        ]
        for name, ok, wanted in rules:
            if not ok:
                raise ValueError(f"{name} must be {wanted}, got {getattr(self, name)!r}")
        return self

    def reconstruct(self, points: np.ndarray | Cloud, normals: np.ndarray | None = None,
                    reference: np.ndarray | None = None) -> Result:
        """Reconstruct a surface from a noisy cloud ``(N, 3)`` (or a :class:`~geoprior.io.Cloud`).

        Returns a :class:`~shared.result.Result` with ``arrays`` ``points``/``normals`` (the
        dense oriented cloud), ``vertices``/``faces`` (the mesh; None without ``mesh``),
        ``cover`` and ``consistency_fit`` (the refit's :class:`~shared.fit.FitResult`, or
        None); ``fit`` is the chart fit.  ``reference`` (clean points ``(M, 3)``) adds a
        tracked Chamfer-L1 curve to the chart fit and the dense output's Chamfer-L1 to the
        metrics.
        """
        self.check()
        cloud = points if isinstance(points, Cloud) else validate_cloud(points, normals)
        if isinstance(points, Cloud) and normals is not None:
            cloud = validate_cloud(cloud.points, normals, cloud.source)
        if len(cloud) < MIN_POINTS:
            raise ValueError(f"geoprior needs at least {MIN_POINTS} points to fit charts, got {len(cloud)}")
        if reference is not None:
            reference = validate_cloud(reference, source="reference").points
        # Every geometric step runs in a unit frame (bounding-box centre at 0, diagonal 1):
        # georeferenced coordinates (5e6 m) would otherwise lose their digits in float32
        # charts and break Qhull; the outputs are mapped back to the input's frame.
        frame = Frame.of(cloud.points)
        local = Cloud(frame.inward(cloud.points), cloud.normals, cloud.source)
        timings: dict[str, float] = {}
        state = self._fit(local, None if reference is None else frame.inward(reference), timings)
        t0 = time.perf_counter()
        dense, dense_n = dense_output(state["model"], state["cover"], state["data"], state["n_fit"], self)
        release_freed_memory()
        timings["sampling_s"] = time.perf_counter() - t0
        verts = faces = None
        state["frame"], state["mesh_error"] = frame, None
        if self.mesh:
            t0 = time.perf_counter()
            try:
                pts = state["points"]
                verts, faces = poisson_mesh(dense, dense_n, depth=self.depth, trim_quantile=self.trim_quantile,
                                            threads=self.mesh_threads, near=pts,
                                            trim_distance=self.trim_spacing * mean_spacing(pts),
                                            fill_holes=self.fill_holes)
                verts = frame.outward(verts)
            except (RuntimeError, ValueError) as exc:
                # The dense cloud is the costly part: keep it; the caller reports the failed mesh.
                state["mesh_error"] = f"{type(exc).__name__}: {exc}"
            timings["mesh_s"] = time.perf_counter() - t0
        return self._result(cloud, state, frame.outward(dense), dense_n, verts, faces, timings, reference)

    def _fit(self, cloud: Cloud, reference: np.ndarray | None, timings: dict[str, float]) -> dict[str, Any]:
        """Stages 0-4: points, cover, chart fit, consistency refit (timed into ``timings``)."""
        t0 = time.perf_counter()
        pts, nrm, n_isolated = fit_points(cloud.points, cloud.normals, self, np.random.default_rng(self.seed))
        if cloud.normals is None and self.patch_normals:
            timings["normals_s"] = time.perf_counter() - t0
        folds = n_folds(len(pts), self)
        t0 = time.perf_counter()
        # (each stage hands its freed heap back before the next: the stages' peaks are what
        # a million-point input needs, not their sum with the pages glibc would keep)
        release_freed_memory()
        cover = make_cover(pts, nrm, folds, self)
        release_freed_memory()
        timings["cover_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        model, result, data = fit_charts(cover, self, reference=reference, metric=_chamfer(reference))
        release_freed_memory()
        timings["fit_s"] = time.perf_counter() - t0
        consistency = None
        if self.consistency_iterations > 0 and cover.n_patches > 1:
            t0 = time.perf_counter()
            perm = matching(result.output, data, cover)
            consistency = refit_consistency(model, cover, result.output, perm, len(pts), self)
            release_freed_memory()
            timings["consistency_s"] = time.perf_counter() - t0
        return {"model": model, "cover": cover, "fit": result, "data": data, "consistency": consistency,
                "n_fit": len(pts), "n_isolated": n_isolated, "folds": folds, "points": pts}

    def _result(self, cloud: Cloud, state: dict[str, Any], dense: np.ndarray, dense_n: np.ndarray,
                verts: np.ndarray | None, faces: np.ndarray | None, timings: dict[str, float],
                reference: np.ndarray | None) -> Result:
        cover, result, data = state["cover"], state["fit"], state["data"]
        info = {
            "n_input": len(cloud), "n_isolated_removed": state["n_isolated"], "n_fit": state["n_fit"],
            "folds": state["folds"], "n_patches": cover.n_patches, "radius": float(cover.radius),
            "max_patch": int(cover.mask.shape[1]),
            "mean_patch": float(cover.sizes.mean()), "n_dense": len(dense), "iterations_run": result.stop_iteration,
            "stopped_by": result.stopped_by, "selected_iteration": result.selected_iteration,
            "frame": {"centre": state["frame"].centre.tolist(), "scale": state["frame"].scale},
        }
        if state["mesh_error"]:
            info["mesh_error"] = state["mesh_error"]
        info.update(_chart_stops(result))
        if isinstance(data, ExactEMD):
            info["matchings"] = data.matchings
            info["matching_time_s"] = data.match_time_s
        metrics: dict[str, float] = {"final_loss": result.history["loss"][-1]}
        if reference is not None:
            metrics["chamfer_l1"] = _chamfer(reference)(dense, reference)
        arrays = {"points": dense, "normals": dense_n, "vertices": verts, "faces": faces, "cover": cover,
                  "consistency_fit": state["consistency"]}
        return Result(self.method, arrays=arrays, metrics=metrics, timings=timings, config=self.get_params(),
                      fit=result, info=info, files=output_files(cloud, dense, dense_n, verts, faces))


@dataclass(frozen=True)
class Frame:
    """The unit frame of a cloud: ``local = (world - centre) / scale`` with ``centre`` the
    bounding-box centre and ``scale`` its diagonal (lengths in the pipeline are fractions of it)."""

    centre: np.ndarray
    scale: float

    @classmethod
    def of(cls, points: np.ndarray) -> Frame:
        lo, hi = points.min(0), points.max(0)
        return cls(0.5 * (lo + hi), float(np.linalg.norm(hi - lo)) or 1.0)

    def inward(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) - self.centre) / self.scale

    def outward(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) * self.scale + self.centre


def _chart_stops(result: FitResult) -> dict[str, Any]:
    """Per-chart stopping in the info: how many charts stopped, and their stop steps' quantiles."""
    if result.member_stop_iterations is None:
        return {}
    stops = result.member_stop_iterations.numpy()
    done = stops[stops >= 0]
    q = {f"q{p}": int(np.percentile(done, p)) for p in (0, 10, 50, 90, 100)} if len(done) else {}
    info: dict[str, Any] = {"charts_stopped": int(len(done)), "chart_stop_iterations": q}
    rule = result.member_rule
    if isinstance(rule, MemberDiscrepancy) and len(done):  # the residual at the stop over the noise level
        ratio = (rule.stop_residuals / rule.sigma)[result.member_stop_iterations >= 0]
        info["chart_stop_residual_over_noise"] = float(ratio.median())
    return info


def output_files(cloud: Cloud, dense: np.ndarray, normals: np.ndarray, verts: np.ndarray | None,
                 faces: np.ndarray | None) -> dict[str, Callable[[Path], Any]]:
    """Writers of ``dense.ply``, ``mesh.ply`` (with a mesh) and ``input_vs_output.png``."""
    from geoprior.io import write_cloud_ply, write_mesh_ply
    from geoprior.render import render_comparison

    mesh = None if faces is None else (verts, faces)
    title = "" if cloud.source == "<array>" else Path(cloud.source.split(" + ")[0]).name
    files: dict[str, Callable[[Path], Any]] = {"dense.ply": lambda path: write_cloud_ply(path, dense, normals)}
    if mesh is not None:
        files["mesh.ply"] = lambda path: write_mesh_ply(path, *mesh)
    files["input_vs_output.png"] = lambda path: render_comparison(path, cloud.points, dense, mesh, title=title)
    return files


def _chamfer(reference: np.ndarray | None) -> Callable[[np.ndarray, np.ndarray], float] | None:
    """Chamfer-L1 divided by the reference's bounding-box diagonal (KD-tree), or None."""
    if reference is None:
        return None
    from geoprior.metrics import point_metrics

    diag = float(np.linalg.norm(reference.max(0) - reference.min(0)))
    return lambda a, b: point_metrics(a, b, diag=diag, backend="kdtree")["chamfer_l1"]


def fit_points(points: np.ndarray, normals: np.ndarray | None, settings: DeepGeometricPrior,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The points the charts are fitted to, their normals and the number of isolated points dropped.

    Isolated points are removed (``settings.isolated_factor``), the rest subsampled to at
    most ``max_folds`` folds of ``fold_points``, and missing normals estimated and oriented
    (``settings.patch_normals``).
    """
    n_isolated = 0
    if settings.isolated_factor > 0:
        isolated = isolated_points(points, k=8, factor=settings.isolated_factor)
        if 0 < isolated.sum() <= len(points) - MIN_POINTS:
            n_isolated = int(isolated.sum())
            points = points[~isolated]
            normals = None if normals is None else normals[~isolated]
    folds = n_folds(len(points), settings)
    if len(points) > folds * settings.fold_points:
        pick = np.sort(rng.choice(len(points), folds * settings.fold_points, replace=False))
        points = points[pick]
        normals = None if normals is None else normals[pick]
    if normals is None and settings.patch_normals:
        # Point normals keep patches on one side of thin sheets (ears) and orient the
        # patch frames consistently; a patch only uses their mean, so noise hardly matters.
        # PCA of the 30 nearest neighbours (small neighbourhoods that do not straddle thin
        # parts); the orientation (a spanning-tree propagation, the costly part) runs on
        # at most ORIENT_POINTS points and is handed to the rest by their nearest neighbour.
        normals = estimate_normals(points, k=30, orient=False)
        normals = orient_normals(points, normals, min(settings.fold_points, ORIENT_POINTS), rng)
    return points, normals, n_isolated


def n_folds(n_points: int, settings: DeepGeometricPrior) -> int:
    """Number of folds for a cloud of ``n_points``: ``ceil(n / fold_points)``, capped at ``max_folds``."""
    if settings.fold_points < MIN_POINTS or settings.max_folds < 1:
        raise ValueError(f"fold_points must be >= {MIN_POINTS} and max_folds >= 1, got {settings.fold_points}, "
                         f"{settings.max_folds}")
    return int(min(settings.max_folds, max(1, -(-n_points // settings.fold_points))))


# The robust orientation (three candidate trees and 32 visibility views) costs about 2 s on
# 20k points and 13-16 s on 100k (measured).  On 30k of 100k points it costs 3.4-4.1 s and
# orients the block scan as well as all points do (0.999 both), but not the cup at 1 % noise
# (0.57 against 0.94 with all points): a known limit, see docs/geoprior.md.
ORIENT_POINTS = 30_000


def orient_normals(points: np.ndarray, normals: np.ndarray, max_points: int, rng: np.random.Generator) -> np.ndarray:
    """Consistently oriented normals: :func:`geoprior.orientation.orient_normals_robust` on at
    most ``max_points`` points, then every other point takes the side of its nearest oriented point."""
    from scipy.spatial import cKDTree

    if len(points) <= max_points:
        return orient_normals_robust(points, normals)
    pick = rng.choice(len(points), max_points, replace=False)
    oriented = orient_normals_robust(points[pick], normals[pick])
    near = cKDTree(points[pick]).query(points, k=1)[1]
    sign = np.where((normals * oriented[near]).sum(1) < 0, -1.0, 1.0)
    out = normals * sign[:, None]
    out[pick] = oriented
    return out


def _median_count(points: np.ndarray, radius: float, seed: int, n_probe: int = 300) -> float:
    """Median number of ``points`` within ``radius`` (absolute) of random probe points among them."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    probe = points[rng.choice(len(points), min(n_probe, len(points)), replace=False)]
    return float(np.median(cKDTree(points).query_ball_point(probe, radius, return_length=True)))


def patch_radius(points: np.ndarray, settings: DeepGeometricPrior) -> float:
    """The covering radius ``r`` (a fraction of the diagonal) of one fold's ``points``.

    ``settings.radius`` when given; else the ``r`` whose patches of radius ``c r`` hold
    ``K = patch_points (N / 20000)^(2/3) (sigma / 0.01)^(2/3)`` of the fold's ``N`` points
    at the median, ``sigma`` the cloud's noise along the normal as a fraction of the
    diagonal (:func:`geoprior.noise.cloud_noise`, clipped to 0.2-3 %).

    Why those powers: a chart fitted to the ``K ~ rho r^2`` points of its patch (``rho``
    points per unit area) has a variance ``~ sigma^2 / (rho r^2)`` from the noise and a bias
    ``~ kappa r^2`` from the shape it cannot follow (curvature ``kappa``, edges); their sum
    is smallest at ``r^6 ~ sigma^2 / (rho kappa^2)``, so ``r ~ rho^(-1/6) sigma^(1/3)`` and
    ``K ~ (rho sigma)^(2/3)``.  Measured on the validation suite: at 1 % noise about 60
    points per patch are best at 2k input points and 300-600 at 20k-100k; at 20k points
    300 beats 450 at 0.25 % noise (docs/geoprior.md).  The count grows as ``r^2`` on a
    surface, so ``r <- r sqrt(K / count)`` from ``r = 0.03``, three times, with the count
    measured at 300 probe points (curvature and boundaries are accounted for).
    """
    if settings.radius is not None:
        return settings.radius
    diag = float(np.linalg.norm(points.max(0) - points.min(0))) or 1.0
    sigma = float(np.clip(cloud_noise(points, seed=settings.seed) / diag, 0.002, 0.03))
    target = max(MIN_POINTS, settings.patch_points * (len(points) / 20_000 * sigma / 0.01) ** (2 / 3))
    r = 0.03
    for _ in range(3):
        count = _median_count(points, settings.overlap * r * diag, settings.seed + 2)
        r = min(0.5, r * np.sqrt(target / max(count, 1.0)))
    return float(r)


def median_patch_cap(points: np.ndarray, settings: DeepGeometricPrior, radius: float | None = None) -> int:
    """1.25 x the median number of points within ``c r`` of random probe points (bounds the padding)."""
    radius = patch_radius(points, settings) if radius is None else radius
    diag = float(np.linalg.norm(points.max(0) - points.min(0)))
    return max(16, int(1.25 * _median_count(points, settings.overlap * radius * diag, settings.seed + 1, 200)))


def make_cover(points: np.ndarray, normals: np.ndarray | None, folds: int, settings: DeepGeometricPrior) -> Cover:
    """The folded patch cover of the fit points (:func:`geoprior.cover.build_folded_cover`)."""
    radius = patch_radius(points[::folds], settings)
    cap = settings.max_patch_points or median_patch_cap(points[::folds], settings, radius)
    return build_folded_cover(points, normals, folds=folds, radius=radius, overlap=settings.overlap,
                              method=settings.centres, parameters=settings.parameters, seed=settings.seed,
                              max_points=cap)


def make_data_term(name: str, mask: torch.Tensor, settings: DeepGeometricPrior) -> ExactEMD | SinkhornEMD:
    """The EMD data term named ``name`` ("exact" or "sinkhorn") over the points where ``mask``."""
    if name == "exact":
        return ExactEMD(mask, rematch_every=settings.rematch_every, rematch_start=settings.rematch_start)
    if name == "sinkhorn":
        return SinkhornEMD(mask, blur=settings.blur, scaling=settings.scaling)
    raise ValueError(f"unknown loss {name!r}; choose 'exact' or 'sinkhorn'")


def stopping_rule(settings: DeepGeometricPrior, cover: Cover | None = None,
                  data: ExactEMD | SinkhornEMD | None = None) -> StoppingRule | None:
    """The chart fit's stopping rule (``settings.stopping``): :func:`discrepancy_rule` for
    ``"discrepancy"`` (which needs the ``cover`` and the exact ``data`` term), else through
    :func:`shared.stopping.make_rule`."""
    if settings.stopping == "discrepancy":
        if cover is None or not isinstance(data, ExactEMD):
            raise ValueError("stopping 'discrepancy' needs the cover and the exact EMD data term (loss 'exact')")
        return discrepancy_rule(cover, data, settings)
    kwargs = {"eswmv": dict(window=settings.stopping_window, patience=settings.stopping_patience),
              "plateau": dict(window=settings.stopping_window, tol=1e-3)}.get(settings.stopping, {})
    return make_rule(settings.stopping, **kwargs)


def discrepancy_rule(cover: Cover, data: ExactEMD, settings: DeepGeometricPrior) -> MemberDiscrepancy:
    """Per-chart discrepancy stopping: chart ``i`` stops at the first step ``t = rematch_start +
    5 k`` (from the first exact matching on, every 5 steps) with ``r_i(t) <= discrepancy_tau sigma_i``.

    ``sigma_i``: the patch's noise level along the normal (:func:`geoprior.noise.patch_noise`,
    patch units); ``r_i``: the RMS residual along the normal of the chart's samples to their
    matched points, relative to the patch's height field (:class:`geoprior.noise.NormalResidual`
    at ``data.perm``).
    """
    noise = patch_noise(cover)
    device = data.mask.device
    target = torch.as_tensor(cover.local, dtype=torch.float32, device=device)
    residuals = NormalResidual(target, data.mask, torch.as_tensor(noise.coef, device=device), noise.degree)

    def residual(record: StepRecord) -> torch.Tensor:
        return residuals(record.prediction.detach(), data.perm)

    start = settings.rematch_start if settings.rematch_every else 0
    return MemberDiscrepancy(torch.as_tensor(noise.sigma), residual, tau=settings.discrepancy_tau, min_steps=start,
                             stop_fraction=settings.discrepancy_fraction, every=5)


def fit_charts(cover: Cover, settings: DeepGeometricPrior, reference: np.ndarray | None = None,
               metric: Callable[[np.ndarray, np.ndarray], float] | None = None, metric_every: int = 10,
               callbacks=()) -> tuple[ChartPrior, FitResult, ExactEMD | SinkhornEMD]:
    """Fit one chart per patch with :func:`shared.fit.fit`; returns (model, result, data term).

    The objective is ``D(G_theta(u), y)``: identity physics, ``y`` the patch points
    ``cover.local`` ``(P, K, 3)``, ``D`` the EMD term of ``settings.loss`` holding the
    patch mask.  With ``reference`` (clean points, world) and ``metric(world_points,
    reference)`` the metric of the chart outputs is tracked every ``metric_every`` steps
    (figures only).
    """
    torch.manual_seed(settings.seed)
    uv = torch.as_tensor(cover.uv, dtype=torch.float32)
    target = torch.as_tensor(cover.local, dtype=torch.float32)
    mask = torch.as_tensor(cover.mask)
    affine = affine_init(uv, target, mask) if settings.plane_init else None
    model = ChartPrior(cover.n_patches, settings.hidden, affine=affine)
    data = make_data_term(settings.loss, mask.to(settings.device), settings)
    tracking = None
    if reference is not None and metric is not None:
        valid = cover.mask

        def world_metric(out: torch.Tensor) -> float:
            return metric(cover.to_world(out.detach().cpu().double().numpy())[valid], reference)

        tracking = Tracking({"chamfer": world_metric}, every=metric_every)
    result = fit(model, uv, Objective(target, physics=IdentityPhysics(), data=data),
                 optimiser=Optimiser(lr=settings.lr, iterations=settings.iterations, schedule=settings.lr_schedule),
                 stopping=stopping_rule(settings, cover, data), tracking=tracking, callbacks=callbacks,
                 seed=settings.seed,
                 device=settings.device, progress="charts" if settings.progress else False,
                 model_kwargs={"lengths": torch.as_tensor(cover.sizes)})
    return model, result, data


def matching(pred: torch.Tensor, data: ExactEMD | SinkhornEMD, cover: Cover) -> np.ndarray:
    """The matching ``(P, K)`` of the chart samples to the patch points: the exact term's
    current one, or (after a Sinkhorn fit) the exact assignment at ``pred``."""
    if isinstance(data, ExactEMD):
        return data.perm.cpu().numpy()
    return exact_assignment(pred.cpu().double().numpy(), cover.local, cover.sizes)


def refit_consistency(model: ChartPrior, cover: Cover, start: torch.Tensor, perm: np.ndarray, n_points: int,
                      settings: DeepGeometricPrior) -> FitResult:
    """Refit all charts to their consensus ``ybar`` (:mod:`geoprior.consistency`).

    ``start`` ``(P, K, 3)`` are the chart outputs the consensus is formed from (the output
    the stopping rule selected, else the last one; so the refit also brings the network
    back to it) and ``perm`` their matching.  Objective ``D(G_theta(u), ybar)`` with the
    exact term at a fixed matching (the consensus is arranged per sample),
    ``consistency_iterations`` Adam steps at half the chart fit's learning rate.
    """
    target = consensus_targets(cover, start.cpu().double().numpy(), perm, n_points)
    data = ExactEMD(torch.as_tensor(cover.mask, device=settings.device), rematch_every=0)
    return fit(model, torch.as_tensor(cover.uv, dtype=torch.float32),
               Objective(target, physics=IdentityPhysics(), data=data),
               optimiser=Optimiser(lr=settings.lr * 0.5, iterations=settings.consistency_iterations),
               seed=settings.seed, device=settings.device, model_kwargs={"lengths": torch.as_tensor(cover.sizes)},
               progress="consistency" if settings.progress else False)


def dense_output(model: ChartPrior, cover: Cover, data: ExactEMD | SinkhornEMD, n_points: int,
                 settings: DeepGeometricPrior) -> tuple[np.ndarray, np.ndarray]:
    """Dense oriented samples of the charts (:func:`geoprior.sampling.sample_charts`).

    With ``settings.outlier_factor > 0`` the charts' consensus positions of the ``n_points``
    fit points (matched by :func:`matching`) -- a denoised copy of the input -- are the
    anchors of the outlier test.
    """
    anchors = None
    if settings.outlier_factor > 0:
        with torch.no_grad():
            pred = model(torch.as_tensor(cover.uv, dtype=torch.float32, device=settings.device))
        perm = matching(pred, data, cover)
        anchors, counts = consensus_points(cover, pred.cpu().double().numpy(), perm, n_points)
        anchors = anchors[counts > 0]
    dense, normals, _ = sample_charts(model, cover, density=settings.density, seed=settings.seed,
                                      trim=settings.trim_overlaps, anchors=anchors,
                                      outlier_factor=settings.outlier_factor)
    return dense, normals
