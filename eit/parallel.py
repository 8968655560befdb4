"""The complete electrode model under MPI: distributed DOLFINx/PETSc assembly, MUMPS LU.

Same equations and Schur-complement solution as :class:`eit.forward.CEM` (see its module
docstring), but every sparse object is a distributed PETSc object, so it runs with
``mpiexec -n <ranks> python ...``:

* ``A(sigma) = K(sigma) + sum_l M_l / z_l`` is assembled by DOLFINx from the UFL form
  ``sigma * inner(grad u, grad v) * dx + zinv * u * v * ds(electrodes)`` (``sigma`` a DG0
  :class:`dolfinx.fem.Function`; ``zinv`` a DG0 function equal to ``1/z_l`` on the cells
  touching electrode ``l``), factorised once per sigma with MUMPS (PETSc ``KSP`` preonly +
  ``PC`` lu);
* ``W = A^{-1} B`` (L solves on that factorisation), ``S = D - B^T W`` by global dot products
  (identical on every rank), ``U = (S + 11^T/L)^{-1} I`` and the data ``vec_p(G^T U_p)``
  are then the same on every rank;
* the adjoint gradient ``-sum_p int_c grad u_p . grad w_p`` is returned for the cells this
  rank owns.

Conductivity input: an array over this rank's owned cells (``model.cell_centroids``), or
a callable ``sigma(x, y)`` evaluated at the owned cell centroids (the easy way to give
the same conductivity in serial and in parallel).

Launching: the DOLFINx wheel brings MPICH; its launcher is ``mpiexec`` in the virtual
environment's ``bin`` folder (:func:`find_mpiexec`).  Example::

    .venv/bin/mpiexec -n 2 .venv/bin/python examples/eit_forward_mpi.py
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np

import dolfinx_solver  # noqa: F401  (orders MPI before the DOLFINx bindings)
import dolfinx  # noqa: E402
import dolfinx.fem  # noqa: E402
import dolfinx.fem.petsc  # noqa: E402
import ufl  # noqa: E402
from petsc4py import PETSc  # noqa: E402

from eit.forward import p1_cell_geometry, _check_sigma
from eit.mesh import EITMesh, electrode_tag

__all__ = ["ParallelCEM", "find_mpiexec"]


def find_mpiexec() -> str | None:
    """The MPI launcher that matches the DOLFINx wheel's MPICH: ``mpiexec`` beside the
    running Python (the virtual environment's ``bin``), else one on ``PATH``."""
    here = Path(sys.executable).parent / "mpiexec"
    if here.exists() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("mpiexec")


class ParallelCEM:
    """Complete electrode model on a (possibly distributed) :class:`~eit.mesh.EITMesh`.

    Parameters as :class:`eit.forward.CEM` (``currents (L, P)`` A, ``patterns (L, M)``,
    ``z`` Ohm m^2); conductivity is DG0 (per cell).
    """

    def __init__(self, mesh: EITMesh, currents, patterns=None, z=1e-6):
        self.eit_mesh = mesh
        msh = mesh.mesh
        self.comm = msh.comm
        L = mesh.n_electrodes
        self.L = L
        I = np.asarray(currents, dtype=np.float64)
        if I.ndim != 2 or I.shape[0] != L:
            raise ValueError(f"currents must have shape ({L}, P); got {I.shape}")
        if np.any(np.abs(I.sum(0)) > 1e-9 * np.abs(I).max()):
            raise ValueError("injected currents must sum to zero over the electrodes")
        G = np.eye(L) if patterns is None else np.asarray(patterns, dtype=np.float64)
        if G.ndim != 2 or G.shape[0] != L:
            raise ValueError(f"measurement patterns must have shape ({L}, M); got {G.shape}")
        self.currents, self.patterns = I, G
        self.P, self.M = I.shape[1], G.shape[1]
        z = np.broadcast_to(np.asarray(z, dtype=np.float64), (L,)).copy()
        if np.any(z <= 0) or not np.all(np.isfinite(z)):
            raise ValueError("contact impedances z must be positive and finite")
        self.z = z

        self.V = dolfinx.fem.functionspace(msh, ("Lagrange", 1))
        self.Q = dolfinx.fem.functionspace(msh, ("DG", 0))
        tdim = msh.topology.dim
        self.n_owned_cells = msh.topology.index_map(tdim).size_local
        cells, coords, area, grads, centroids = p1_cell_geometry(self.V)
        self._cells, self._area, self._grads = cells, area, grads
        self.cell_centroids = centroids[: self.n_owned_cells]

        self.sigma = dolfinx.fem.Function(self.Q)
        zinv = dolfinx.fem.Function(self.Q)
        ft = mesh.facet_tags
        msh.topology.create_connectivity(tdim - 1, tdim)
        f2c = msh.topology.connectivity(tdim - 1, tdim)
        ids = tuple(electrode_tag(l) for l in range(L))
        for l in range(L):
            for f in ft.find(electrode_tag(l)):
                zinv.x.array[self.Q.dofmap.list[f2c.links(f), 0]] = 1.0 / z[l]
        zinv.x.scatter_forward()
        u, v = ufl.TrialFunction(self.V), ufl.TestFunction(self.V)
        ds = ufl.Measure("ds", domain=msh, subdomain_data=ft)
        self._a = dolfinx.fem.form(
            self.sigma * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx + zinv * u * v * ds(ids))
        # B columns: int_{e_l} phi / z_l, with one compiled form (per-electrode tags)
        self._B = []
        lengths = np.zeros(L)
        for l in range(L):
            ents = np.sort(ft.find(electrode_tag(l))).astype(np.int32)
            tags = dolfinx.mesh.meshtags(msh, tdim - 1, ents, np.ones(len(ents), np.int32))
            dsl = ufl.Measure("ds", domain=msh, subdomain_data=tags)
            b = dolfinx.fem.petsc.assemble_vector(dolfinx.fem.form(v * dsl(1)))
            b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
            lengths[l] = b.sum()
            b.scale(1.0 / z[l])
            self._B.append(b)
        self.electrode_lengths = lengths
        self._D = np.diag(lengths / z)
        self._out = G.T  # (M, L), ground sum U = 0
        self.A = dolfinx.fem.petsc.create_matrix(self._a)
        self.ksp = PETSc.KSP().create(self.comm)
        self.ksp.setType("preonly")
        pc = self.ksp.getPC()
        pc.setType("lu")
        pc.setFactorSolverType("mumps")

    @property
    def n_data(self) -> int:
        return self.P * self.M

    def _set_sigma(self, sigma) -> None:
        if callable(sigma):
            s = np.asarray(sigma(self.cell_centroids[:, 0], self.cell_centroids[:, 1]), float)
            s = np.broadcast_to(s, (self.n_owned_cells,))
        else:
            s = sigma
        s = _check_sigma(s, self.n_owned_cells, "DG0")
        self.sigma.x.array[self.Q.dofmap.list[: self.n_owned_cells, 0]] = s
        self.sigma.x.scatter_forward()

    def solve(self, sigma):
        """Assemble, factorise once, solve; returns ``(data, U, W)`` (``W`` PETSc vectors)."""
        self._set_sigma(sigma)
        self.A.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(self.A, self._a)
        self.A.assemble()
        self.ksp.setOperators(self.A)
        self.ksp.setUp()
        W = []
        for b in self._B:
            w = self.A.createVecRight()
            self.ksp.solve(b, w)
            W.append(w)
        L = self.L
        S = self._D - np.array([[self._B[i].dot(W[j]) for j in range(L)] for i in range(L)])
        S = 0.5 * (S + S.T)
        Sg = S + 1.0 / L
        U = np.linalg.solve(Sg, self.currents)
        data = (self._out @ U).T.reshape(-1)
        self._last = (W, Sg, U)
        return data, U, W

    def forward(self, sigma) -> np.ndarray:
        """Data ``(P*M,)``, the same on every rank."""
        return self.solve(sigma)[0]

    def _local_fields(self, W, coeffs: np.ndarray) -> np.ndarray:
        """Nodal values (owned + ghost dofs) of ``sum_l W_l coeffs[l, :]``: ``(N_local, P)``."""
        cols = []
        for w in W:
            f = dolfinx.fem.Function(self.V)
            w.copy(f.x.petsc_vec)
            f.x.scatter_forward()
            cols.append(f.x.array.copy())
        return np.stack(cols, 1) @ coeffs

    def vjp(self, sigma, dv) -> np.ndarray:
        """Gradient ``J^T dv`` over this rank's owned cells (adjoint method)."""
        dv = np.asarray(dv, dtype=np.float64)
        if dv.shape != (self.n_data,):
            raise ValueError(f"cotangent must have shape ({self.n_data},), got {dv.shape}")
        _, U, W = self.solve(sigma)
        Sg = self._last[1]
        lam = np.linalg.solve(Sg, self._out.T @ dv.reshape(self.P, self.M).T)
        F = self._local_fields(W, np.concatenate([U, lam], 1))
        u, w = F[:, : self.P], F[:, self.P:]
        c = self._cells[: self.n_owned_cells]
        gr = self._grads[: self.n_owned_cells]
        gu = np.einsum("cak,cap->ckp", gr, u[c])
        gw = np.einsum("cak,cap->ckp", gr, w[c])
        return -self._area[: self.n_owned_cells] * np.einsum("ckp,ckp->c", gu, gw)
