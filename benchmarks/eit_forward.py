"""Forward + adjoint-gradient time of the complete electrode model for all 76 KTC injections.

On the KTC tank (32 electrodes, z = 1e-6 Ohm m^2, DG0 conductivity) meshed with about 1.5k
and 10k vertices: the time of one ``CEM.solve`` (assemble A(sigma), factorise once, 32
solves, Schur complement, 76 x 31 data) plus one ``CEM.vjp`` (adjoint gradient), median of
``repeats`` runs after a warm-up.  Also: the full Jacobian time, the parts (factorisation,
the 32 solves), the PETSc/MUMPS alternative, a 2-rank MPI run of the forward solve, and
the discretisation error of both meshes against a ~50k-vertex mesh.

Writes ``benchmarks/results/eit_forward.json`` with keys ``fwd_grad_s_1500``,
``fwd_grad_s_10000`` (the issue's target: fwd_grad_s_1500 <= 0.2 s) and the details.
The headline figure is :func:`eit.timing.fwd_grad_seconds`, which ``benchmarks/eit_ktc.py``
reports too.

    python benchmarks/eit_forward.py [--repeats 11]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from shared.provenance import run_record

import numpy as np

import dolfinx_solver  # noqa: F401  (orders MPI before the DOLFINx bindings)

from eit.forward import CEM
from eit.mesh import ktc_mesh
from eit.phantoms import two_disks
from eit.timing import median_time, timing_model, timing_patterns

ROOT = Path(__file__).resolve().parent.parent


def fwd_grad_details(size: str = "1500", repeats: int = 11) -> dict:
    """:func:`eit.timing.fwd_grad_seconds` on the KTC mesh preset ``size`` and its parts:
    forward alone, assembly, factorisation, the 32 solves, the Jacobian, PETSc/MUMPS."""
    model, sigma, dv, source = timing_model(size)
    mesh = model.eit_mesh
    fe = model.fe
    data = fe.Kmap @ model.cell_sigma(sigma) + model._robin
    lu = fe.factorize(data)
    out = {
        "vertices": mesh.num_vertices(),
        "cells": mesh.num_cells(),
        "n_data": model.n_data,
        "patterns": source,
        "fwd_grad_s": median_time(lambda: model.vjp(model.solve(sigma), dv), repeats),
        "forward_s": median_time(lambda: model.solve(sigma), repeats),
        "assemble_s": median_time(lambda: fe.Kmap @ model.cell_sigma(sigma) + model._robin, repeats),
        "factorise_s": median_time(lambda: fe.factorize(data), repeats),
        "solves_32_s": median_time(lambda: lu.solve(model._B), repeats),
        "jacobian_s": median_time(lambda: model.jacobian(sigma), max(3, repeats // 3)),
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
        res[f"petsc_mumps_{kind}_factor_and_32_solves_s"] = median_time(run, repeats)
    return res


def discretisation_errors():
    """Relative data error of the two presets against a ~50k-vertex mesh (h = 0.02 R,
    0.0007 R on the electrodes): absolute data of the water tank (0.8 S/m) and of the
    two-disk phantom, and the difference data phantom - water."""
    from eit.mesh import KTC_RADIUS

    inj, G, _ = timing_patterns()
    phantom = two_disks()
    out = {}

    def data(size):
        model = CEM(ktc_mesh(size), inj, G, z=1e-6)
        return (model.eit_mesh.num_vertices(), model.forward(np.full(model.n_sigma, 0.8)),
                model.forward(phantom(model.cell_centroids)))

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
    env = dict(os.environ, OMP_NUM_THREADS="1")
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
        rows[size] = fwd_grad_details(size, args.repeats)
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
    result.update(run_record("cpu"))
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
