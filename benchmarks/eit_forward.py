"""Forward + adjoint-gradient time of the complete electrode model for all 76 KTC injections.

On the KTC tank (32 electrodes, z = 1e-6 Ohm m^2, DG0 conductivity) meshed with about 1.5k
and 10k vertices: the time of one ``CEM.solve`` (assemble A(sigma), factorise once, 32
solves, Schur complement, 76 x 31 data) plus one ``CEM.vjp`` (adjoint gradient), median of
``repeats`` runs after a warm-up.  Also: the full Jacobian time, the parts (factorisation,
the 32 solves), the PETSc/MUMPS alternative, a 2-rank MPI run of the forward solve, and
the discretisation error of both meshes against a ~50k-vertex mesh.

Writes ``benchmarks/results/eit_forward.json`` with keys ``fwd_grad_s_1500``,
``fwd_grad_s_10000`` (the issue's target: fwd_grad_s_1500 <= 0.2 s) and the details.
The inverse side's benchmark can reuse :func:`fwd_grad_seconds`.

    python benchmarks/eit_forward.py [--repeats 11]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dolfinx_solver  # noqa: E402,F401

from eit.forward import CEM  # noqa: E402
from eit.mesh import ktc_mesh  # noqa: E402
from shared.paths import shared_data_dir  # noqa: E402


def ktc_patterns():
    """The organisers' ``Injref`` (32 x 76) and ``Mpat`` (32 x 31) when the data folder is
    present; otherwise zero-sum random currents of the same shape (same cost)."""
    root = shared_data_dir()
    ref = None if root is None else root / "eit" / "ktc2023" / "training" / "ref.mat"
    if ref is not None and ref.is_file():
        import scipy.io

        d = scipy.io.loadmat(str(ref))
        return d["Injref"].astype(float), d["Mpat"].astype(float), "ktc2023 ref.mat"
    rng = np.random.default_rng(0)
    inj = rng.standard_normal((32, 76))
    inj -= inj.mean(0)
    G = np.zeros((32, 31))
    G[np.arange(31), np.arange(31)] = 1.0
    G[np.arange(1, 32), np.arange(31)] = -1.0
    return inj, G, "synthetic (data folder absent)"


def _median_time(f, repeats):
    f()  # warm-up: ordering, caches
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def fwd_grad_seconds(size: str = "1500", repeats: int = 11, details: bool = False):
    """Median seconds of forward + adjoint gradient for all KTC injections on the KTC mesh
    preset ``size`` (``"1500"`` or ``"10000"``).  With ``details``, a dict of parts too."""
    inj, G, source = ktc_patterns()
    mesh = ktc_mesh(size)
    model = CEM(mesh, inj, G, z=1e-6)
    rng = np.random.default_rng(1)
    c = model.cell_centroids
    sigma = 0.8 + 0.5 * np.exp(-((c[:, 0] - 0.03) ** 2 + c[:, 1] ** 2) / 0.03 ** 2)
    dv = rng.standard_normal(model.n_data)
    t_fg = _median_time(lambda: model.vjp(model.solve(sigma), dv), repeats)
    if not details:
        return t_fg
    fe = model.fe
    data = fe.Kmap @ model.cell_sigma(sigma) + model._robin
    lu = fe.factorize(data)
    out = {
        "vertices": mesh.num_vertices(),
        "cells": mesh.num_cells(),
        "n_data": model.n_data,
        "patterns": source,
        "fwd_grad_s": t_fg,
        "forward_s": _median_time(lambda: model.solve(sigma), repeats),
        "assemble_s": _median_time(lambda: fe.Kmap @ model.cell_sigma(sigma) + model._robin,
                                   repeats),
        "factorise_s": _median_time(lambda: fe.factorize(data), repeats),
        "solves_32_s": _median_time(lambda: lu.solve(model._B), repeats),
        "jacobian_s": _median_time(lambda: model.jacobian(sigma), max(3, repeats // 3)),
        "lu_nnz": int(lu.lu.L.nnz + lu.lu.U.nnz),
    }
    out.update(_petsc_factor_times(fe.matrix(data), model._B, repeats))
    return out


def _petsc_factor_times(A, B, repeats):
    """The same factorisation + 32 solves with PETSc (MUMPS LU and Cholesky), for comparison."""
    from petsc4py import PETSc

    A = A.tocsr()
    Ap = PETSc.Mat().createAIJ(A.shape, csr=(A.indptr, A.indices, A.data))
    Ap.assemble()
    Bm = PETSc.Mat().createDense(B.shape, array=np.asfortranarray(B))
    Bm.assemble()
    X = PETSc.Mat().createDense(B.shape)
    X.assemble()
    res = {}
    for kind in ("lu", "cholesky"):
        def run():
            ksp = PETSc.KSP().create()
            ksp.setType("preonly")
            pc = ksp.getPC()
            pc.setType(kind)
            pc.setFactorSolverType("mumps")
            ksp.setOperators(Ap)
            ksp.setUp()
            pc.getFactorMatrix().matSolve(Bm, X)
            ksp.destroy()
        res[f"petsc_mumps_{kind}_factor_and_32_solves_s"] = _median_time(run, repeats)
    return res


def _phantom(x, y):
    """0.8 S/m water, a 0.1 S/m and a 3 S/m disk (as in examples/eit_forward_mpi.py)."""
    s = np.full(np.shape(x), 0.8)
    s[np.hypot(x - 0.04, y - 0.03) < 0.025] = 0.1
    s[np.hypot(x + 0.05, y + 0.02) < 0.02] = 3.0
    return s


def discretisation_errors():
    """Relative data error of the two presets against a ~50k-vertex mesh (h = 0.02 R,
    0.0007 R on the electrodes): absolute data of the water tank (0.8 S/m) and of the
    two-disk phantom, and the difference data phantom - water."""
    from eit.mesh import KTC_RADIUS

    inj, G, _ = ktc_patterns()
    out = {}

    def data(size):
        model = CEM(ktc_mesh(size), inj, G, z=1e-6)
        c = model.cell_centroids
        return (model.eit_mesh.num_vertices(), model.forward(np.full(model.n_sigma, 0.8)),
                model.forward(_phantom(*c.T)))

    nref, w_ref, p_ref = data((0.02 * KTC_RADIUS, 0.0007 * KTC_RADIUS, 0.12 * KTC_RADIUS))
    out["reference_vertices"] = nref
    for size in ("1500", "10000"):
        n, w, p = data(size)
        rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))  # noqa: E731
        out[size] = {"vertices": n, "water": rel(w, w_ref), "phantom": rel(p, p_ref),
                     "difference": rel(p - w, p_ref - w_ref)}
    return out


def mpi_forward_seconds(ranks: int = 2):
    """Wall time of the KTC forward solve in ``examples/eit_forward_mpi.py`` under MPI."""
    from eit.parallel import find_mpiexec

    mpiexec = find_mpiexec()
    if mpiexec is None:
        return None
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    res = {}
    for n in (1, ranks):
        p = subprocess.run([mpiexec, "-n", str(n), sys.executable,
                            str(ROOT / "examples" / "eit_forward_mpi.py")],
                           env=env, capture_output=True, text=True, timeout=300)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("ranks=")]
        if p.returncode != 0 or not line:
            return None
        res[f"ranks_{n}"] = float(line[-1].split("solve_s=")[1])
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=11)
    args = ap.parse_args(argv)
    rows = {}
    for size in ("1500", "10000"):
        rows[size] = fwd_grad_seconds(size, args.repeats, details=True)
    mpi = mpi_forward_seconds(2)
    disc = discretisation_errors()
    result = {
        "fwd_grad_s_1500": rows["1500"]["fwd_grad_s"],
        "fwd_grad_s_10000": rows["10000"]["fwd_grad_s"],
        "target_fwd_grad_s_1500": 0.2,
        "details": rows,
        "mpi_forward_s_ktc1500_adjacent32": mpi,
        "relative_data_error_vs_fine_mesh": disc,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_avg_1min": os.getloadavg()[0],
            "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
            "note": "shared 2-core machine, other jobs running; medians of repeated runs",
        },
    }
    print(f"{'mesh':>8} {'vertices':>9} {'fwd+grad s':>11} {'forward s':>10} {'factor s':>9} "
          f"{'32 solves s':>12} {'jacobian s':>11} {'mumps lu s':>11}")
    for size, r in rows.items():
        print(f"{size:>8} {r['vertices']:>9} {r['fwd_grad_s']:>11.4f} {r['forward_s']:>10.4f} "
              f"{r['factorise_s']:>9.4f} {r['solves_32_s']:>12.4f} {r['jacobian_s']:>11.4f} "
              f"{r['petsc_mumps_lu_factor_and_32_solves_s']:>11.4f}")
    if mpi:
        print("MPI forward (KTC 1.5k, 32 adjacent patterns):", mpi)
    print(f"relative data error vs a {disc['reference_vertices']}-vertex mesh:")
    for size in ("1500", "10000"):
        e = disc[size]
        print(f"  {size:>6} ({e['vertices']} vertices): water {e['water']:.4f}  "
              f"phantom {e['phantom']:.4f}  difference {e['difference']:.4f}")
    out = ROOT / "benchmarks" / "results" / "eit_forward.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
