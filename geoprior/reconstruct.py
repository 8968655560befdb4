"""The deep geometric prior pipeline: cloud -> patches -> charts -> dense oriented cloud -> mesh.

1. **Folds.** A cloud of more than ``fold_points`` points is split into
   ``ceil(N / fold_points)`` interleaved random folds (at most ``max_folds``; beyond that
   the cloud is subsampled), so that every chart sees a few hundred points and the exact
   matching stays cheap while all the data is used.
2. **Cover** (:mod:`geoprior.cover`): per fold, patches of radius ``c r`` in PCA frames,
   parameter samples one per point; all folds' patches in one batch.
3. **Charts** (:mod:`geoprior.charts`): one :class:`~shared.networks.BatchedMLP` for all
   patches, fitted by :func:`shared.fit.fit` to the EMD data term (:mod:`geoprior.emd`),
   exact assignment or Sinkhorn.  An optional stopping rule of :mod:`shared.stopping`
   (e.g. ES-WMV on the chart outputs) stops it without any clean surface.
4. **Consistency** (:mod:`geoprior.consistency`): average the charts' predictions of each
   point and refit all charts to the consensus (a second ``fit`` call).
5. **Dense output** (:mod:`geoprior.sampling`): jittered dense samples per chart, Jacobian
   normals, consistent orientation, Voronoi trimming of overlaps (per fold: one layer of
   samples per fold).
6. **Mesh** (:mod:`geoprior.mesh`): screened Poisson of the dense oriented cloud, which
   also averages the folds' independent estimates of the surface.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from geoprior.charts import ChartPrior, affine_init
from geoprior.clean import isolated_points
from geoprior.consistency import consensus_points, consensus_targets
from geoprior.cover import Cover, build_folded_cover
from geoprior.emd import ExactEMDLoss, SinkhornEMDLoss
from geoprior.io import validate_cloud
from geoprior.mesh import estimate_normals, poisson_mesh
from geoprior.sampling import orient_points_mst, sample_charts
from shared.fit import FitResult, fit
from shared.stopping import make_rule

__all__ = ["ReconstructionConfig", "Reconstruction", "reconstruct", "fit_points", "make_loss", "fit_charts"]


@dataclass
class ReconstructionConfig:
    """Settings of :func:`reconstruct` (lengths are fractions of the bounding-box diagonal)."""

    radius: float = 0.03            # covering radius r / diag
    overlap: float = 1.3            # patch radius c (in units of r)
    centres: str = "poisson"        # "poisson" or "fps"
    parameters: str = "grid"        # parameter samples: "grid" (jittered) or "lloyd"
    fold_points: int = 90_000       # points per fold (larger clouds are split into folds)
    max_folds: int = 4              # at most this many folds (larger clouds are subsampled)
    max_patch_points: int | None = None  # cap on patch size (None: 1.25 x the median size)
    patch_normals: bool = True      # estimate KNN-30 normals (tangent-plane oriented) for the patches
    hidden: tuple[int, ...] = (32, 32, 32)
    plane_init: bool = True         # start every chart at its least-squares plane (affine part)
    iterations: int = 300
    lr: float = 3e-3
    lr_schedule: str = "constant"   # "constant" or "cosine" (see shared.fit.fit)
    loss: str = "exact"             # "exact" (linear_sum_assignment) or "sinkhorn" (geomloss)
    rematch_every: int = 50
    rematch_start: int = 50
    blur: float = 0.01              # Sinkhorn blur in patch units (patch radius ~ 1)
    scaling: float = 0.7
    stopping: str = "none"          # a rule of shared.stopping: none, eswmv, plateau
    stopping_window: int = 20
    stopping_patience: int = 60
    consistency_iterations: int = 40
    density: int = 4                # dense samples per parameter sample
    trim_overlaps: bool = True
    outlier_factor: float = 3.0     # drop dense samples this many point spacings off the consensus (0: keep)
    isolated_factor: float = 10.0   # drop input points whose 8-NN distance is this many times their neighbours' (0: keep)
    depth: int = 8                  # Poisson octree depth
    trim_quantile: float = 0.01     # low-density trimming of the Poisson mesh
    mesh: bool = True
    seed: int = 0
    device: str = "cpu"
    progress: bool = False


@dataclass
class Reconstruction:
    """Outputs of :func:`reconstruct`."""

    points: np.ndarray                  # dense cloud (M, 3)
    normals: np.ndarray                 # oriented unit normals (M, 3)
    vertices: np.ndarray | None         # mesh (V, 3)
    faces: np.ndarray | None            # mesh (F, 3)
    cover: Cover
    fit_result: FitResult
    consistency_result: FitResult | None
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def make_loss(name: str, target: torch.Tensor, mask: torch.Tensor, cfg: ReconstructionConfig):
    """The EMD data term named ``name`` ("exact" or "sinkhorn")."""
    if name == "exact":
        return ExactEMDLoss(target, mask, rematch_every=cfg.rematch_every, rematch_start=cfg.rematch_start)
    if name == "sinkhorn":
        return SinkhornEMDLoss(target, mask, blur=cfg.blur, scaling=cfg.scaling)
    raise ValueError(f"unknown loss {name!r}; choose 'exact' or 'sinkhorn'")


def fit_charts(cover: Cover, cfg: ReconstructionConfig, reference: np.ndarray | None = None,
               metric: Callable[[np.ndarray, np.ndarray], float] | None = None, metric_every: int = 10,
               callbacks=()) -> tuple[ChartPrior, FitResult, Any]:
    """Fit one chart per patch with :func:`shared.fit.fit`; returns (model, result, loss).

    With ``reference`` (clean points, world) and ``metric(world_points, reference)`` the
    metric of the chart outputs is tracked every ``metric_every`` steps (figures only).
    """
    torch.manual_seed(cfg.seed)
    uv = torch.as_tensor(cover.uv, dtype=torch.float32)
    target = torch.as_tensor(cover.local, dtype=torch.float32)
    mask = torch.as_tensor(cover.mask)
    affine = affine_init(uv, target, mask) if cfg.plane_init else None
    model = ChartPrior(cover.n_patches, cfg.hidden, affine=affine)
    # The engine moves the network and its input; the data term holds its targets itself.
    device = torch.device(cfg.device)
    loss = make_loss(cfg.loss, target.to(device), mask.to(device), cfg)
    rule = None
    if cfg.stopping not in (None, "none"):
        kwargs = {"eswmv": dict(window=cfg.stopping_window, patience=cfg.stopping_patience),
                  "plateau": dict(window=cfg.stopping_window, tol=1e-3),
                  "heldout": dict(patience=cfg.stopping_patience)}.get(cfg.stopping, {})
        rule = make_rule(cfg.stopping, **kwargs)
    metrics = None
    ref_t = None
    if reference is not None and metric is not None:
        valid = cover.mask

        def world_metric(out: torch.Tensor, _ref: torch.Tensor) -> float:
            world = cover.to_world(out.detach().cpu().double().numpy())[valid]
            return metric(world, reference)

        metrics = {"chamfer": world_metric}
        ref_t = torch.zeros(1)
    result = fit(model, uv, None, data_loss=loss, iterations=cfg.iterations, lr=cfg.lr, lr_schedule=cfg.lr_schedule,
                 model_kwargs={"lengths": torch.as_tensor(cover.sizes)},
                 stopping=rule,
                 reference=ref_t, metrics=metrics, metric_every=metric_every, callbacks=callbacks,
                 seed=cfg.seed, device=cfg.device, progress="charts" if cfg.progress else False)
    return model, result, loss


def reconstruct(points: np.ndarray, normals: np.ndarray | None = None, config: ReconstructionConfig | None = None,
                reference: np.ndarray | None = None) -> Reconstruction:
    """Reconstruct a surface from a noisy cloud ``(N, 3)``: dense oriented cloud and mesh.

    ``reference`` (clean points) only adds a tracked Chamfer curve to the chart fit.
    """
    cfg = config or ReconstructionConfig()
    cloud = validate_cloud(points, normals)
    if len(cloud) < 16:
        raise ValueError(f"geoprior needs at least 16 points to fit charts, got {len(cloud)}")
    timings: dict[str, float] = {}
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    pts, nrm, n_isolated = fit_points(cloud.points, cloud.normals, cfg, rng)
    if cloud.normals is None and cfg.patch_normals:
        timings["normals_s"] = time.perf_counter() - t0
    folds = n_folds(len(pts), cfg)
    t0 = time.perf_counter()
    cover = build_folded_cover(pts, nrm, folds=folds, radius=cfg.radius, overlap=cfg.overlap, method=cfg.centres,
                               parameters=cfg.parameters, seed=cfg.seed,
                               max_points=cfg.max_patch_points or _median_patch_cap(pts[::folds], cfg))
    timings["cover_s"] = time.perf_counter() - t0

    from geoprior.metrics import point_metrics

    metric = None
    if reference is not None:
        diag = float(np.linalg.norm(reference.max(0) - reference.min(0)))
        metric = lambda a, b: point_metrics(a, b, diag=diag, backend="kdtree")["chamfer_l1"]  # noqa: E731
    t0 = time.perf_counter()
    model, result, loss = fit_charts(cover, cfg, reference=reference, metric=metric)
    timings["fit_s"] = time.perf_counter() - t0

    consistency = None
    if cfg.consistency_iterations > 0 and cover.n_patches > 1:
        t0 = time.perf_counter()
        # result.output is the output the stopping rule selected (else the last one): the
        # consensus starts from it, so the refit also brings the network back to it.
        pred = result.output.cpu().double().numpy()
        perm = loss.perm.cpu().numpy() if isinstance(loss, ExactEMDLoss) else _nearest_perm(pred, cover)
        target = consensus_targets(cover, pred, perm, len(pts))
        refit = ExactEMDLoss(target.to(cfg.device), torch.as_tensor(cover.mask, device=cfg.device), rematch_every=0)
        consistency = fit(model, torch.as_tensor(cover.uv, dtype=torch.float32), None, data_loss=refit,
                          iterations=cfg.consistency_iterations, lr=cfg.lr * 0.5, seed=cfg.seed, device=cfg.device,
                          model_kwargs={"lengths": torch.as_tensor(cover.sizes)},
                          progress="consistency" if cfg.progress else False)
        timings["consistency_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    anchors = None
    if cfg.outlier_factor > 0:
        # The charts' consensus positions of the fit points: a denoised copy of the input.
        with torch.no_grad():
            pred = model(torch.as_tensor(cover.uv, dtype=torch.float32, device=cfg.device)).cpu().double().numpy()
        perm = loss.perm.cpu().numpy() if isinstance(loss, ExactEMDLoss) else _nearest_perm(pred, cover)
        anchors, counts = consensus_points(cover, pred, perm, len(pts))
        anchors = anchors[counts > 0]
    dense, dense_n, _ = sample_charts(model, cover, density=cfg.density, seed=cfg.seed, trim=cfg.trim_overlaps,
                                      anchors=anchors, outlier_factor=cfg.outlier_factor)
    timings["sampling_s"] = time.perf_counter() - t0
    verts = faces = None
    if cfg.mesh:
        t0 = time.perf_counter()
        verts, faces = poisson_mesh(dense, dense_n, depth=cfg.depth, trim_quantile=cfg.trim_quantile)
        timings["mesh_s"] = time.perf_counter() - t0
    info = {
        "n_input": len(cloud), "n_isolated_removed": n_isolated, "n_fit": len(pts), "folds": folds, "n_patches": cover.n_patches, "max_patch": int(cover.mask.shape[1]),
        "mean_patch": float(cover.sizes.mean()), "n_dense": len(dense), "iterations_run": result.stop_iteration,
        "stopped_by": result.stopped_by, "selected_iteration": result.selected_iteration,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
    }
    if isinstance(loss, ExactEMDLoss):
        info["matchings"] = loss.matchings
        info["matching_time_s"] = loss.match_time_s
    return Reconstruction(dense, dense_n, verts, faces, cover, result, consistency, timings, info)


def fit_points(points: np.ndarray, normals: np.ndarray | None, cfg: ReconstructionConfig,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The points the charts are fitted to, their normals and the number of isolated points dropped.

    Isolated points are removed (``cfg.isolated_factor``), the rest subsampled to at most
    ``max_folds`` folds of ``fold_points``, and missing normals estimated and oriented
    (``cfg.patch_normals``).
    """
    n_isolated = 0
    if cfg.isolated_factor > 0:
        isolated = isolated_points(points, k=8, factor=cfg.isolated_factor)
        if 0 < isolated.sum() <= len(points) - 16:
            n_isolated = int(isolated.sum())
            points = points[~isolated]
            normals = None if normals is None else normals[~isolated]
    folds = n_folds(len(points), cfg)
    if len(points) > folds * cfg.fold_points:
        pick = np.sort(rng.choice(len(points), folds * cfg.fold_points, replace=False))
        points = points[pick]
        normals = None if normals is None else normals[pick]
    if normals is None and cfg.patch_normals:
        # Point normals keep patches on one side of thin sheets (ears) and orient the
        # patch frames consistently; a patch only uses their mean, so noise hardly matters.
        # PCA of the 30 nearest neighbours (small neighbourhoods that do not straddle thin
        # parts); the orientation (a spanning-tree propagation, the costly part) runs on
        # one fold's worth of points and is handed to the rest by their nearest neighbour.
        normals = estimate_normals(points, k=30, orient=False)
        normals = orient_normals(points, normals, cfg.fold_points, rng)
    return points, normals, n_isolated


def n_folds(n_points: int, cfg: ReconstructionConfig) -> int:
    """Number of folds for a cloud of ``n_points``: ``ceil(n / fold_points)``, capped at ``max_folds``."""
    if cfg.fold_points < 16 or cfg.max_folds < 1:
        raise ValueError(f"fold_points must be >= 16 and max_folds >= 1, got {cfg.fold_points}, {cfg.max_folds}")
    return int(min(cfg.max_folds, max(1, -(-n_points // cfg.fold_points))))


def orient_normals(points: np.ndarray, normals: np.ndarray, max_points: int, rng: np.random.Generator) -> np.ndarray:
    """Consistently oriented normals: spanning-tree orientation of at most ``max_points``
    points, then every other point takes the side of its nearest oriented point."""
    from scipy.spatial import cKDTree

    if len(points) <= max_points:
        return orient_points_mst(points, normals, k=30)
    pick = rng.choice(len(points), max_points, replace=False)
    oriented = orient_points_mst(points[pick], normals[pick], k=30)
    near = cKDTree(points[pick]).query(points, k=1)[1]
    sign = np.where((normals * oriented[near]).sum(1) < 0, -1.0, 1.0)
    out = normals * sign[:, None]
    out[pick] = oriented
    return out


def _median_patch_cap(points: np.ndarray, cfg: ReconstructionConfig, n_probe: int = 200) -> int:
    """1.25 x the median number of points within ``c r`` of random probe points (bounds the padding)."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(cfg.seed + 1)
    diag = float(np.linalg.norm(points.max(0) - points.min(0)))
    probe = points[rng.choice(len(points), min(n_probe, len(points)), replace=False)]
    counts = cKDTree(points).query_ball_point(probe, cfg.overlap * cfg.radius * diag, return_length=True)
    return max(16, int(1.25 * np.median(counts)))


def _nearest_perm(pred: np.ndarray, cover: Cover) -> np.ndarray:
    """Matching for the consensus after a Sinkhorn fit: the exact assignment of the final charts."""
    from geoprior.emd import exact_assignment

    return exact_assignment(pred, cover.local, cover.sizes)


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_memory_mb(func: Callable[[], Any], interval: float = 0.05) -> tuple[Any, float]:
    """Run ``func``; return its result and the peak resident set size (MiB) seen while it ran.

    The RSS of this process is polled every ``interval`` seconds from a thread (Linux
    ``/proc``; NaN elsewhere); it includes what was resident before the call.
    """
    import threading

    peak = [_rss_mb()]
    done = threading.Event()

    def poll() -> None:
        while not done.wait(interval):
            peak[0] = max(peak[0], _rss_mb())

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        out = func()
    finally:
        done.set()
        thread.join()
    return out, max(peak[0], _rss_mb())
