"""``untrained geoprior reconstruct INPUT... --out DIR``.

Reads one or more clouds (PLY, OBJ, XYZ, PTS, NPY; several files are concatenated) or a
Stanford ``.conf`` scan set, reconstructs the surface and writes to ``DIR``:

* ``dense.ply`` -- the dense cloud sampled from the fitted charts, with oriented normals;
* ``mesh.ply`` -- the screened Poisson mesh of the dense cloud;
* ``input_vs_output.png`` -- input and output rendered side by side (matplotlib, headless);
* ``metrics.json`` -- settings, timings, fit summary and, with ``--reference MESH``, the
  Chamfer-L1/L2, Hausdorff and F-score of the mesh, the dense cloud and the input
  against the reference surface (lengths divided by its bounding-box diagonal).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

__all__ = ["register", "run_reconstruct", "render_comparison"]


def register(subparsers: argparse._SubParsersAction) -> None:
    from geoprior.reconstruct import ReconstructionConfig
    from shared.cli import add_common_options

    d = ReconstructionConfig()  # the CLI's defaults are the library's (tuned on the bunny)
    gp = subparsers.add_parser("geoprior", help="deep geometric prior: surfaces from noisy point clouds")
    sub = gp.add_subparsers(dest="command", metavar="{reconstruct}")
    sub.required = True
    p = sub.add_parser("reconstruct", help="reconstruct a surface (dense cloud + mesh) from scans",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="point cloud file(s) or a .conf scan set")
    p.add_argument("--reference", type=Path, help="reference mesh to score against (PLY/OBJ/OFF/STL)")
    p.add_argument("--radius", type=float, default=d.radius, help="covering radius r as a fraction of the bbox diagonal (default: %(default)s)")
    p.add_argument("--overlap", type=float, default=d.overlap, help="patch radius c in units of r (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=d.iterations, help="chart fitting iterations (default: %(default)s)")
    p.add_argument("--consistency-iterations", type=int, default=d.consistency_iterations, help="refit iterations towards the charts' consensus (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--hidden", type=int, nargs="+", default=list(d.hidden), help="chart MLP widths (default: %(default)s)")
    p.add_argument("--loss", choices=["exact", "sinkhorn"], default="exact", help="EMD: exact assignment or geomloss Sinkhorn (default: %(default)s)")
    p.add_argument("--stopping", choices=["none", "eswmv", "plateau"], default="none", help="early stopping rule (default: %(default)s)")
    p.add_argument("--fold-points", type=int, default=d.fold_points,
                   help="points per fold: larger clouds are split into interleaved folds, each with its own charts "
                        "(default: %(default)s)")
    p.add_argument("--max-folds", type=int, default=d.max_folds,
                   help="at most this many folds; larger clouds are subsampled (default: %(default)s)")
    p.add_argument("--centres", choices=["poisson", "fps"], default="poisson", help="patch centre sampling (default: %(default)s)")
    p.add_argument("--density", type=int, default=d.density, help="dense samples per parameter sample (default: %(default)s)")
    p.add_argument("--depth", type=int, default=d.depth, help="Poisson octree depth (default: %(default)s)")
    p.add_argument("--trim", type=float, default=d.trim_quantile, help="low-density trimming quantile of the mesh (default: %(default)s)")
    p.add_argument("--isolated", type=float, default=d.isolated_factor,
                   help="drop input points whose 8-NN distance is this many times their neighbours' (0: keep all; default: %(default)s)")
    p.add_argument("--no-mesh", action="store_true", help="write the dense cloud only")
    add_common_options(p, default_out="out/geoprior")
    p.set_defaults(func=run_reconstruct)


def _plot_cloud(ax, pts: np.ndarray, title: str, n: int = 15000, seed: int = 0) -> None:
    if len(pts) > n:
        pts = pts[np.random.default_rng(seed).choice(len(pts), n, replace=False)]
    ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], s=1.5 if len(pts) < 20000 else 0.3, c=pts[:, 2], cmap="viridis", linewidths=0)
    _frame(ax, pts, title)


def _frame(ax, pts: np.ndarray, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    lo, hi = pts.min(0), pts.max(0)
    mid, half = (lo + hi) / 2, (hi - lo).max() / 2
    ax.set_xlim(mid[0] - half, mid[0] + half)
    ax.set_ylim(mid[1] - half, mid[1] + half)
    ax.set_zlim(mid[2] - half, mid[2] + half)


def _decimate(v: np.ndarray, f: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    import open3d as o3d

    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(f.astype(np.int32)))
    m = m.simplify_quadric_decimation(n)
    return np.asarray(m.vertices), np.asarray(m.triangles)


def render_comparison(path: Path, input_points: np.ndarray, dense: np.ndarray, mesh: tuple | None = None,
                      view: tuple[float, float] = (20, -60), title: str = "") -> Path:
    """Input cloud, dense output and (shaded) mesh side by side, as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    panels = 3 if mesh is not None else 2
    fig = plt.figure(figsize=(3.2 * panels, 3.4), dpi=110)
    ax = fig.add_subplot(1, panels, 1, projection="3d")
    _plot_cloud(ax, input_points, f"input ({len(input_points):,} pts)")
    ax.view_init(*view)
    ax = fig.add_subplot(1, panels, 2, projection="3d")
    _plot_cloud(ax, dense, f"dense output ({len(dense):,} pts)")
    ax.view_init(*view)
    if mesh is not None:
        v, f = mesh
        if len(f) > 40000:
            v, f = _decimate(v, f, 40000)  # matplotlib draws every polygon: keep it light
        ax = fig.add_subplot(1, panels, 3, projection="3d")
        tri = v[f]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-20
        light = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
        shade = 0.25 + 0.75 * np.abs(n @ light)
        ax.add_collection3d(Poly3DCollection(tri, facecolors=plt.cm.gray(shade), linewidths=0))
        _frame(ax, v, f"mesh ({len(mesh[1]):,} triangles)")
        ax.view_init(*view)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def run_reconstruct(args: argparse.Namespace) -> int:
    from geoprior.io import load_clouds, load_mesh, write_cloud_ply, write_mesh_ply
    from geoprior.metrics import evaluate_against_mesh
    from geoprior.reconstruct import ReconstructionConfig, reconstruct
    from shared.cli import prepare_out_dir

    out = prepare_out_dir(args.out)
    inputs = [p.resolve() for p in args.inputs]
    targets = {(out / name).resolve() for name in ("dense.ply", "mesh.ply")}
    clash = [str(p) for p in inputs if p in targets]
    if clash:
        raise ValueError(f"output folder {out} would overwrite the input {clash[0]}; choose another --out")
    if args.radius <= 0 or args.radius >= 1:
        raise ValueError(f"--radius must be a fraction of the bounding-box diagonal in (0, 1), got {args.radius}")
    if args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    reference = load_mesh(args.reference) if args.reference is not None else None
    t0 = time.perf_counter()
    cloud = load_clouds(args.inputs)
    t_load = time.perf_counter() - t0
    cfg = ReconstructionConfig(
        radius=args.radius, overlap=args.overlap, iterations=args.iterations, lr=args.lr, hidden=tuple(args.hidden),
        loss=args.loss, stopping=args.stopping, fold_points=args.fold_points, max_folds=args.max_folds, centres=args.centres,
        consistency_iterations=args.consistency_iterations, density=args.density, depth=args.depth,
        trim_quantile=args.trim, isolated_factor=args.isolated, mesh=not args.no_mesh, seed=args.seed, device=args.device, progress=not args.quiet,
    )
    t0 = time.perf_counter()
    rec = reconstruct(cloud.points, cloud.normals, cfg)
    wall = time.perf_counter() - t0
    write_cloud_ply(out / "dense.ply", rec.points, rec.normals)
    written = [out / "dense.ply"]
    if rec.faces is not None:
        write_mesh_ply(out / "mesh.ply", rec.vertices, rec.faces)
        written.append(out / "mesh.ply")
    render_comparison(out / "input_vs_output.png", cloud.points, rec.points,
                      None if rec.faces is None else (rec.vertices, rec.faces), title=Path(cloud.source).name)
    written.append(out / "input_vs_output.png")
    report = {
        "inputs": [str(p) for p in args.inputs], "n_input": len(cloud), "load_s": t_load, "reconstruct_s": wall,
        "timings": rec.timings, **{k: v for k, v in rec.info.items()},
        "final_loss": rec.fit_result.history["loss"][-1],
    }
    if reference is not None:
        scores = {}
        if rec.faces is not None:
            scores["mesh"] = evaluate_against_mesh(reference, mesh=(rec.vertices, rec.faces))
        scores["dense"] = evaluate_against_mesh(reference, points=rec.points)
        scores["input"] = evaluate_against_mesh(reference, points=cloud.points)
        report["reference"] = str(args.reference)
        report["scores"] = scores
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    written.append(out / "metrics.json")
    if not args.quiet:
        print(f"reconstructed {len(cloud):,} points in {wall:.1f} s: {rec.info['n_patches']} charts, "
              f"{len(rec.points):,} dense points" + (f", {len(rec.faces):,} triangles" if rec.faces is not None else ""))
        if reference is not None:
            for k, s in report["scores"].items():
                print(f"  {k:6s} Chamfer-L1 {s['chamfer_l1']:.3e}  F-score {s['fscore']:.3f}  Hausdorff {s['hausdorff']:.3e}")
        for p in written:
            print(f"wrote {p}")
    return 0
