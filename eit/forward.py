"""EIT forward models on DOLFINx meshes: complete electrode model and continuum model.

API (stable; the inverse side builds on it)
--------------------------------------------
::

    from eit.mesh import ktc_mesh
    from eit.forward import CEM
    from eit.physics import EITPhysics

    m = ktc_mesh("1500")                                  # EITMesh, 32 electrodes
    model = CEM(m, currents=Inj, patterns=Mpat, z=1e-6)   # Inj (32, 76) A, Mpat (32, 31)
    sigma = np.full(model.n_sigma, 0.8)                   # S/m, one value per cell (DG0)
    v = model.forward(sigma)                              # (76*31,) V, KTC order
    g = model.vjp(sigma, dv)                              # (n_sigma,) = J^T dv, no J formed
    J = model.jacobian(sigma)                             # (76*31, n_sigma) dense
    A = EITPhysics(model, noise_std=s)                    # shared.physics.Physics
    y = A(torch_sigma)                                    # torch, differentiable
                                                          # sigma (n_sigma,) or (B, n_sigma)
    y = EITPhysics(model, contact=True)(torch.cat([torch_sigma, torch.log(torch_z)]))
                                                          # z (L,) learnable too

* ``CEM(mesh, currents, patterns=None, z=1e-6, sigma_space="DG0"|"P1", ground="mean"|r)``
  - ``currents``: ``(L, P)`` injected currents (A), one column per current pattern; each
    column must sum to zero (Kirchhoff).
  - ``patterns``: ``(L, M)`` measurement pattern; the data of pattern ``p`` are
    ``patterns.T @ U_p`` (V).  ``None`` returns the grounded electrode potentials (``M = L``).
  - output ordering: ``data[p * M + m]``, i.e. ``vec`` over injections of ``Mpat^T U``
    (the KTC organisers' ``Uel``: 76 blocks of 31 adjacent-electrode differences).
  - ``z``: contact impedances (Ohm m^2), scalar or ``(L,)``.
  - ``sigma_space``: ``"DG0"``: ``sigma`` has one value per cell (``model.cell_centroids``);
    ``"P1"``: one value per vertex (``model.vertex_coordinates``), linear in each cell.
  - ``ground``: ``"mean"`` (``sum_l U_l = 0``) or an electrode index ``r`` (``U_r = 0``).
* ``NeumannModel(mesh, g)`` and ``DirichletModel(mesh, f)``: the continuum model with
  Cauchy data on the whole boundary (Bar & Sochen setting), same methods
  (``forward``/``vjp``/``jacobian``/``solve``); see their docstrings.
* ``model.vjp_contact(sol, dv)``: gradient w.r.t. the contact impedances ``(L,)``;
  ``model.set_contact_impedance(z)`` changes them in place.
* Meshes (:mod:`eit.mesh`): the cells/vertices of ``model.fe.cells`` ``(C, 3)`` index
  ``model.vertex_coordinates``; ``model.fe.mesh`` is the DOLFINx mesh.
* ``model.sigma_function(sigma)`` / ``model.potential_function(sol.u[:, p])``: DOLFINx
  Functions for XDMF/VTX output (DG0 values go to ``Q.dofmap.list[c, 0]``).
* Every model has ``n_sigma``, ``n_data``, ``cell_centroids`` ``(C, 2)``,
  ``vertex_coordinates`` ``(N, 2)``, ``cell_areas``, ``p1_to_cells`` (sparse ``(C, N)``
  averaging), ``V`` (DOLFINx P1 space), ``Q`` (DOLFINx DG0 space); ``solve(sigma)``
  returns a solution object that carries the factorisation, the fields and the data
  (:class:`CEMSolution`: ``data``, ``U (L, P)``, ``u (N, P)``, ``W (N, L)``);
  ``vjp(sigma_or_solution, dv)`` and ``jacobian(sigma_or_solution)`` reuse it.
* Under MPI use :class:`eit.parallel.ParallelCEM` (same equations, distributed PETSc).
* Bad input (wrong shapes, non-positive or non-finite conductivity, currents that do not
  sum to zero, electrode count mismatch) raises ``ValueError`` with the reason.

Model (units: S/m, A, V, m)
---------------------------
Complete electrode model: find ``u`` in ``Omega`` and electrode potentials ``U_l`` with
``div(sigma grad u) = 0``, ``sigma du/dn = 0`` off the electrodes,
``u + z_l sigma du/dn = U_l`` and ``int_{e_l} sigma du/dn ds = I_l`` on electrode ``e_l``.
Weak form: for all ``(v, V)``::

    int sigma grad u . grad v dx + sum_l 1/z_l int_{e_l} (u - U_l)(v - V_l) ds = sum_l I_l V_l

Discretised with P1 ``u`` this is the block system ``[[A, -B], [-B^T, D]] [u; U] = [0; I]``
with ``A = K(sigma) + sum_l M_l / z_l`` (``K`` stiffness, ``M_l`` electrode mass matrix),
``B[:, l] = int_{e_l} phi / z_l``, ``D = diag(|e_l| / z_l)``.  ``A`` is symmetric positive
definite (the Robin terms ground it), so it is factorised ONCE per sigma (sparse LU) and the
system is solved through its Schur complement: ``W = A^{-1} B`` (L solves on that
factorisation, L = 32 for KTC, fewer than the 76 injections),
``S = D - B^T W`` (L x L), ``U = (S + 11^T/L)^{-1} I`` for all patterns at once (the rank-one
term imposes ``sum U = 0``), ``u_p = W U_p``.

Gradient (adjoint): for data ``d = G(U)`` and a cotangent ``dv`` the adjoint electrode
potentials are ``lambda = (S + 11^T/L)^{-1} G^T dv`` (same factorisation: no new sparse
solve), the adjoint fields ``w_p = W lambda_p``, and::

    d<dv, d>/d sigma_c = - sum_p int_{cell c} grad u_p . grad w_p dx

(for P1 ``sigma`` the cell values are vertex averages, so the gradient is mapped back with
the transpose of that average; exact for P1 fields).  The Jacobian row of measurement
``(p, m)`` is ``-int_c grad u_p . grad w_m`` with ``w_m = W (S+11^T/L)^{-1} G^T e_m``.

Implementation: DOLFINx gives the mesh, the P1/DG0 spaces, the dof maps and the electrode
boundary integrals (assembled from UFL forms); the sigma-dependent stiffness is assembled as
``K.data = Kmap @ sigma`` with ``Kmap`` a fixed sparse ``(nnz, C)`` matrix of the per-cell
P1 stiffness matrices (checked against DOLFINx assembly of ``sigma*inner(grad u, grad v)*dx``
in the tests), and factorised with SuperLU (``scipy.sparse.linalg.splu``, fill-reducing ordering computed once
per mesh; see :meth:`P1Structures.factorize`).  For MPI runs see
:mod:`eit.parallel` (PETSc/MUMPS on distributed DOLFINx matrices).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import dolfinx_solver  # noqa: F401  (orders MPI before the DOLFINx bindings)
import dolfinx  # noqa: E402
import dolfinx.fem  # noqa: E402
import ufl  # noqa: E402

from eit.mesh import EITMesh, electrode_tag

__all__ = [
    "CEM",
    "CEMSolution",
    "NeumannModel",
    "DirichletModel",
    "FieldSolution",
    "P1Structures",
    "p1_cell_geometry",
]


# --------------------------------------------------------------------------- structures


def p1_cell_geometry(V):
    """Cells, dof coordinates, areas, P1 basis gradients and centroids of a P1 space.

    Returns ``cells (C, 3)`` (local dof indices, ghosts included under MPI), ``coords (N, 2)``,
    ``area (C,)``, ``grads (C, 3, 2)`` (constant gradients of the three basis functions) and
    ``centroids (C, 2)``.
    """
    cells = np.asarray(V.dofmap.list, dtype=np.int64)
    coords = V.tabulate_dof_coordinates()[:, :2].copy()
    x = coords[cells]  # (C, 3, 2)
    e1 = x[:, 1] - x[:, 0]
    e2 = x[:, 2] - x[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    # rows of the inverse Jacobian = gradients of the barycentric coordinates 1 and 2
    g1 = np.stack([e2[:, 1], -e2[:, 0]], 1) / det[:, None]
    g2 = np.stack([-e1[:, 1], e1[:, 0]], 1) / det[:, None]
    grads = np.stack([-g1 - g2, g1, g2], axis=1)
    return cells, coords, 0.5 * np.abs(det), grads, x.mean(axis=1)


class P1Structures:
    """Sigma-independent finite element data of a mesh for P1 fields (serial).

    Attributes: ``coords (N, 2)``, ``cells (C, 3)`` P1 dof indices, ``area (C,)``,
    ``grads (C, 3, 2)`` basis gradients, the CSR pattern of ``K`` (``indptr``,
    ``indices``) and ``Kmap (nnz, C)`` with ``K(sigma).data = Kmap @ sigma``.
    """

    def __init__(self, mesh: dolfinx.mesh.Mesh):
        if mesh.comm.size > 1:
            raise ValueError(
                "the serial forward models need the whole mesh on one process; under MPI "
                "use eit.parallel.ParallelCEM")
        if mesh.topology.cell_type != dolfinx.mesh.CellType.triangle:
            raise ValueError("EIT meshes must be made of triangles")
        self.mesh = mesh
        self.V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
        self.Q = dolfinx.fem.functionspace(mesh, ("DG", 0))
        self.cells, self.coords, self.area, self.grads, self.centroids = p1_cell_geometry(self.V)
        n = self.V.dofmap.index_map.size_local
        self.n_vertices = n
        self.n_cells = len(self.cells)
        # K pattern and per-cell stiffness map
        rows = np.repeat(self.cells, 3, axis=1).ravel()  # (C*9,)
        cols = np.tile(self.cells, (1, 3)).ravel()
        keys = rows * n + cols
        ukeys, pos = np.unique(keys, return_inverse=True)
        self.pattern_rows = ukeys // n
        self.pattern_cols = ukeys % n
        self.indptr = np.searchsorted(self.pattern_rows, np.arange(n + 1)).astype(np.int64)
        self.indices = self.pattern_cols.astype(np.int64)
        self.nnz = len(ukeys)
        local = np.einsum("cak,cbk->cab", self.grads, self.grads) * self.area[:, None, None]
        self.Kmap = sp.csr_matrix(
            (local.ravel(), (pos, np.repeat(np.arange(self.n_cells), 9))),
            shape=(self.nnz, self.n_cells))
        self._keys = ukeys
        # cell gradient operator: row 2c+k holds d/dx_k of the P1 basis of cell c
        self.D = sp.csr_matrix(
            (self.grads.transpose(0, 2, 1).ravel(),
             (np.repeat(np.arange(2 * self.n_cells), 3),
              np.repeat(self.cells, 2, axis=0).ravel())),
            shape=(2 * self.n_cells, n))
        self._perm = None
        self.p1_to_cells = sp.csr_matrix(
            (np.full(3 * self.n_cells, 1.0 / 3.0),
             (np.repeat(np.arange(self.n_cells), 3), self.cells.ravel())),
            shape=(self.n_cells, n))

    def positions(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Positions in the K pattern of entries ``(rows, cols)`` (must be in the pattern)."""
        keys = np.asarray(rows, np.int64) * self.n_vertices + np.asarray(cols, np.int64)
        pos = np.searchsorted(self._keys, keys)
        if np.any(pos >= self.nnz) or np.any(self._keys[np.minimum(pos, self.nnz - 1)] != keys):
            raise RuntimeError("entry outside the stiffness sparsity pattern")
        return pos

    def to_pattern(self, M: sp.spmatrix) -> np.ndarray:
        """Data array (nnz,) of a sparse matrix whose pattern is inside K's."""
        M = sp.coo_matrix(M)
        out = np.zeros(self.nnz)
        np.add.at(out, self.positions(M.row, M.col), M.data)
        return out

    def matrix(self, data: np.ndarray) -> sp.csc_matrix:
        """A symmetric matrix with K's pattern; stored as CSC (= CSR of the transpose)."""
        return sp.csc_matrix((data, self.indices, self.indptr), shape=(self.n_vertices,) * 2)

    def cell_gradients(self, F: np.ndarray) -> np.ndarray:
        """Per-cell gradients ``(C, 2, P)`` of P1 fields ``F (N, P)``."""
        F2 = F.reshape(self.n_vertices, -1)
        return (self.D @ F2).reshape(self.n_cells, 2, F2.shape[1])

    def cell_inner(self, F: np.ndarray, G: np.ndarray) -> np.ndarray:
        """``sum_p int_c grad F_p . grad G_p dx`` for every cell c: shape ``(C,)``."""
        prod = ((self.D @ F) * (self.D @ G)).sum(axis=1)
        return self.area * prod.reshape(self.n_cells, 2).sum(axis=1)

    def factorize(self, data: np.ndarray) -> _SPDFactor:
        """Sparse LU of the symmetric positive definite matrix with K's pattern and ``data``.

        The fill-reducing ordering (SuperLU's minimum degree on ``A^T + A``) depends only on
        the pattern, so it is computed on the first call and then baked into a permuted
        pattern: later factorisations skip the ordering and pivot on the diagonal (safe for
        SPD matrices); measured ~30% faster than letting SuperLU reorder every time.
        """
        if self._perm is None:
            A = self.matrix(data)
            lu0 = spla.splu(A, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
            p = np.argsort(lu0.perm_c)
            tracer = self.matrix(np.arange(1, self.nnz + 1, dtype=np.float64))
            Ap = sp.csc_matrix(tracer[p][:, p])
            Ap.sort_indices()
            self._perm = p
            self._perm_src = Ap.data.astype(np.int64) - 1
            self._perm_pattern = (Ap.indices.copy(), Ap.indptr.copy())
        Ap = sp.csc_matrix((data[self._perm_src], *self._perm_pattern),
                           shape=(self.n_vertices,) * 2)
        lu = spla.splu(Ap, permc_spec="NATURAL", diag_pivot_thresh=0.0,
                       options={"SymmetricMode": True})
        return _SPDFactor(lu, self._perm)


class _SPDFactor:
    """``A^{-1}`` through the LU of ``P A P^T`` (``P`` the stored fill-reducing permutation)."""

    def __init__(self, lu, perm):
        self.lu = lu
        self.perm = perm

    def solve(self, b: np.ndarray) -> np.ndarray:
        x = np.empty_like(b, dtype=np.float64)
        x[self.perm] = self.lu.solve(np.ascontiguousarray(b[self.perm], dtype=np.float64))
        return x


def _structures(mesh) -> P1Structures:
    """P1 structures cached on the DOLFINx mesh object (one build per mesh)."""
    m = mesh.mesh if isinstance(mesh, EITMesh) else mesh
    cache = getattr(m, "_eit_p1_structures", None)
    if cache is None:
        cache = P1Structures(m)
        m._eit_p1_structures = cache
    return cache


def _check_sigma(sigma, n: int, space: str) -> np.ndarray:
    if hasattr(sigma, "detach"):  # a torch tensor: use eit.physics.EITPhysics to differentiate
        sigma = sigma.detach().cpu().numpy()
    s = np.asarray(sigma, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] != n:
        what = "cells (DG0)" if space == "DG0" else "vertices (P1)"
        raise ValueError(
            f"conductivity must have shape ({n},), one value per mesh {what}; got {s.shape}")
    if not np.all(np.isfinite(s)):
        bad = int(np.flatnonzero(~np.isfinite(s))[0])
        raise ValueError(f"conductivity has non-finite values (first at index {bad})")
    if np.any(s <= 0):
        bad = int(np.argmin(s))
        raise ValueError(
            f"conductivity must be positive everywhere (S/m); minimum {s[bad]:.4g} at index "
            f"{bad}")
    return s


def _pair_products(gu: np.ndarray, gw: np.ndarray, area: np.ndarray) -> np.ndarray:
    """``J[p, m, c] = area_c * grad u_p . grad w_m`` on cell c, from cell gradients
    ``gu (C, 2, P)`` and ``gw (C, 2, M)``; returned as ``(P*M, C)``.  Two broadcast passes
    (one per space dimension) per block of rows, into a preallocated array."""
    C, _, P = gu.shape
    M = gw.shape[2]
    J = np.empty((P, M, C))
    u0 = np.ascontiguousarray(gu[:, 0, :].T) * area  # (P, C)
    u1 = np.ascontiguousarray(gu[:, 1, :].T) * area
    w0 = np.ascontiguousarray(gw[:, 0, :].T)  # (M, C)
    w1 = np.ascontiguousarray(gw[:, 1, :].T)
    tmp = np.empty((M, C))
    for p in range(P):  # one (M, C) block at a time: stays in cache
        np.multiply(w0, u0[p], out=J[p])
        np.multiply(w1, u1[p], out=tmp)
        J[p] += tmp
    return J.reshape(P * M, C)


class _SigmaModel:
    """Shared parts: sigma space handling and the gradient map back to sigma."""

    def __init__(self, mesh, sigma_space: str):
        if sigma_space not in ("DG0", "P1"):
            raise ValueError(f"sigma_space must be 'DG0' or 'P1', got {sigma_space!r}")
        self.eit_mesh = mesh if isinstance(mesh, EITMesh) else None
        self.fe = _structures(mesh)
        self.sigma_space = sigma_space
        self.V = self.fe.V
        self.Q = self.fe.Q

    @property
    def n_sigma(self) -> int:
        return self.fe.n_cells if self.sigma_space == "DG0" else self.fe.n_vertices

    @property
    def cell_centroids(self) -> np.ndarray:
        return self.fe.centroids

    @property
    def vertex_coordinates(self) -> np.ndarray:
        return self.fe.coords

    @property
    def cell_areas(self) -> np.ndarray:
        return self.fe.area

    @property
    def p1_to_cells(self) -> sp.csr_matrix:
        return self.fe.p1_to_cells

    @property
    def sigma_points(self) -> np.ndarray:
        """Where the sigma values live: cell centroids (DG0) or vertices (P1), ``(n_sigma, 2)``."""
        return self.cell_centroids if self.sigma_space == "DG0" else self.vertex_coordinates

    def sigma_function(self, sigma, name: str = "sigma") -> dolfinx.fem.Function:
        """A DOLFINx Function (DG0 or P1, as ``sigma_space``) holding ``sigma``, e.g. to write
        XDMF/VTX files (``dolfinx.io.VTXWriter``) for ParaView."""
        s = _check_sigma(sigma, self.n_sigma, self.sigma_space)
        if self.sigma_space == "DG0":
            f = dolfinx.fem.Function(self.Q, name=name)
            f.x.array[self.Q.dofmap.list[:, 0]] = s  # cell c -> its DG0 dof
        else:
            f = dolfinx.fem.Function(self.V, name=name)
            f.x.array[:] = s  # vertex_coordinates are the P1 dof coordinates
        return f

    def potential_function(self, u: np.ndarray, name: str = "u") -> dolfinx.fem.Function:
        """A P1 DOLFINx Function with nodal values ``u (N,)`` (e.g. ``sol.u[:, p]``)."""
        u = np.asarray(u, dtype=np.float64)
        if u.shape != (self.fe.n_vertices,):
            raise ValueError(f"nodal values must have shape ({self.fe.n_vertices},), got {u.shape}")
        f = dolfinx.fem.Function(self.V, name=name)
        f.x.array[:] = u
        return f

    def cell_sigma(self, sigma) -> np.ndarray:
        s = _check_sigma(sigma, self.n_sigma, self.sigma_space)
        return s if self.sigma_space == "DG0" else self.fe.p1_to_cells @ s

    def _to_sigma_grad(self, g_cells: np.ndarray) -> np.ndarray:
        if self.sigma_space == "DG0":
            return g_cells
        return self.fe.p1_to_cells.T @ g_cells

    def _factor(self, data: np.ndarray) -> _SPDFactor:
        return self.fe.factorize(data)

    def solve(self, sigma) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, sigma) -> np.ndarray:
        """Data for conductivity ``sigma``: shape ``(n_data,)``."""
        return self.solve(sigma).data

    def vjp(self, sigma_or_solution, dv) -> np.ndarray:
        """``J(sigma)^T dv`` (shape ``(n_sigma,)``) by the adjoint method, without forming J."""
        sol = sigma_or_solution if isinstance(sigma_or_solution, (CEMSolution, FieldSolution)) \
            else self.solve(sigma_or_solution)
        dv = np.asarray(dv, dtype=np.float64)
        if dv.shape != (self.n_data,):
            raise ValueError(f"cotangent must have shape ({self.n_data},), got {dv.shape}")
        return self._vjp(sol, dv)


# --------------------------------------------------------------------------- CEM


@dataclass
class CEMSolution:
    """Result of :meth:`CEM.solve` for one conductivity.

    ``U (L, P)`` electrode potentials with ``sum_l U_l = 0`` (V), ``data (P*M,)``,
    ``W (N, L)`` = ``A^{-1} B`` (the field of unit electrode potentials), ``Sg`` the grounded
    Schur complement ``S + 11^T/L``, ``lu`` the factorisation of ``A``; ``u (N, P)`` the P1
    fields (nodal potentials, V) ``W U``, formed on first access.
    """

    sigma_cells: np.ndarray
    U: np.ndarray
    data: np.ndarray
    W: np.ndarray
    Sg: np.ndarray
    lu: Any
    DW: np.ndarray | None = None
    _u: np.ndarray | None = None
    z: np.ndarray | None = None  # contact impedances used

    @property
    def u(self) -> np.ndarray:
        if self._u is None:
            self._u = self.W @ self.U
        return self._u


class CEM(_SigmaModel):
    """Complete electrode model (see the module docstring for the equations and API)."""

    def __init__(self, mesh: EITMesh, currents, patterns=None, z=1e-6, *, sigma_space="DG0",
                 ground: str | int = "mean"):
        if not isinstance(mesh, EITMesh):
            raise ValueError("CEM needs an eit.mesh.EITMesh (a mesh with tagged electrodes)")
        super().__init__(mesh, sigma_space)
        L = mesh.n_electrodes
        self.L = L
        I = np.asarray(currents, dtype=np.float64)
        if I.ndim == 1:
            I = I[:, None]
        if I.ndim != 2 or I.shape[0] != L:
            raise ValueError(
                f"currents must have shape ({L}, P): one row per electrode, one column per "
                f"current pattern; got {np.asarray(currents).shape}")
        if not np.all(np.isfinite(I)):
            raise ValueError("currents contain non-finite values")
        sums = np.abs(I.sum(0))
        tol = 1e-9 * max(np.abs(I).max(), 1e-300)
        if np.any(sums > tol):
            p = int(np.argmax(sums))
            raise ValueError(
                f"injected currents must sum to zero over the electrodes (Kirchhoff); pattern {p}"
                f" sums to {I[:, p].sum():.3g} A")
        self.currents = I
        self.P = I.shape[1]
        if patterns is None:
            G = np.eye(L)
        else:
            G = np.asarray(patterns, dtype=np.float64)
            if G.ndim != 2 or G.shape[0] != L:
                raise ValueError(
                    f"measurement patterns must have shape ({L}, M): one row per electrode; got"
                    f" {np.asarray(patterns).shape} (currents have {L} rows)")
        self.patterns = G
        self.M = G.shape[1]
        if ground == "mean":
            Gr = np.eye(L)
        elif isinstance(ground, (int, np.integer)) and 0 <= int(ground) < L:
            Gr = np.eye(L) - np.outer(np.ones(L), np.eye(L)[int(ground)])  # U - U_r
        else:
            raise ValueError(f"ground must be 'mean' or an electrode index in 0..{L - 1}; got "
                             f"{ground!r}")
        self.ground = ground
        self._Gr = Gr
        # data = vec_p( patterns^T Gr U_p )
        self._out = G.T @ Gr  # (M, L)
        self.set_contact_impedance(z)

    @property
    def n_data(self) -> int:
        return self.P * self.M

    def set_contact_impedance(self, z) -> None:
        """Set ``z`` (Ohm m^2): scalar or one value per electrode; all positive."""
        z = np.broadcast_to(np.asarray(z, dtype=np.float64), (self.L,)).copy() \
            if np.ndim(z) == 0 else np.asarray(z, dtype=np.float64).ravel()
        if z.shape != (self.L,):
            raise ValueError(f"contact impedance z must be a scalar or have shape ({self.L},)")
        if not np.all(np.isfinite(z)) or np.any(z <= 0):
            raise ValueError("contact impedances z must be positive and finite (Ohm m^2)")
        self.z = z
        self._electrode_terms()

    def _electrode_terms(self) -> None:
        """Electrode integrals from UFL forms assembled by DOLFINx (once per mesh)."""
        fe = self.fe
        if not hasattr(self, "_Mdata"):
            # One compiled form for all electrodes: electrode l's facets are tagged 1 in its
            # own MeshTags (the form signature, hence the JIT cache entry, stays the same).
            u, v = ufl.TrialFunction(fe.V), ufl.TestFunction(fe.V)
            ft = self.eit_mesh.facet_tags
            mass, load = [], []
            for l in range(self.L):
                ents = np.sort(ft.find(electrode_tag(l))).astype(np.int32)
                tags = dolfinx.mesh.meshtags(fe.mesh, 1, ents, np.ones(len(ents), np.int32))
                ds = ufl.Measure("ds", domain=fe.mesh, subdomain_data=tags)
                Ml = dolfinx.fem.assemble_matrix(dolfinx.fem.form(u * v * ds(1))).to_scipy()
                mass.append(fe.to_pattern(Ml))
                load.append(dolfinx.fem.assemble_vector(dolfinx.fem.form(v * ds(1))).array[
                    : fe.n_vertices].copy())
            length = [b.sum() for b in load]  # int_{e_l} 1 ds
            self._Mdata = np.asarray(mass)  # (L, nnz)
            self._bload = np.asarray(load).T  # (N, L)
            self.electrode_lengths = np.asarray(length)
            if np.any(self.electrode_lengths <= 0):
                bad = np.flatnonzero(self.electrode_lengths <= 0)
                raise ValueError(f"electrodes {bad.tolist()} have no facets in the mesh")
        self._robin = (1.0 / self.z) @ self._Mdata
        self._B = self._bload / self.z
        self._D = np.diag(self.electrode_lengths / self.z)

    def solve(self, sigma) -> CEMSolution:
        """Assemble ``A(sigma)``, factorise once, solve all current patterns."""
        sc = self.cell_sigma(sigma)
        lu = self._factor(self.fe.Kmap @ sc + self._robin)
        W = lu.solve(self._B)  # (N, L)
        S = self._D - self._B.T @ W
        S = 0.5 * (S + S.T)
        Sg = S + np.full((self.L, self.L), 1.0 / self.L)
        U = np.linalg.solve(Sg, self.currents)  # (L, P), sum_l U_l = 0
        data = (self._out @ U).T.reshape(-1)
        return CEMSolution(sc, U, data, W, Sg, lu, z=self.z.copy())

    def electrode_potentials(self, sigma) -> np.ndarray:
        """Grounded electrode potentials ``(L, P)``."""
        return self._Gr @ self.solve(sigma).U

    def _DW(self, sol: CEMSolution) -> np.ndarray:
        """Cell gradients of the electrode fields ``W``: ``(2C, L)`` (cached on sol)."""
        if sol.DW is None:
            sol.DW = self.fe.D @ sol.W
        return sol.DW

    def _vjp(self, sol: CEMSolution, dv: np.ndarray) -> np.ndarray:
        gU = self._out.T @ dv.reshape(self.P, self.M).T  # (L, P)
        lam = np.linalg.solve(sol.Sg, gU)
        # sum_p grad u_p . grad w_p with u = W U, w = W lam: only L (not P) fields enter
        DW = self._DW(sol)
        prod = ((DW @ (sol.U @ lam.T)) * DW).sum(axis=1)
        inner = self.fe.area * prod.reshape(self.fe.n_cells, 2).sum(axis=1)
        return self._to_sigma_grad(-inner)

    def vjp_contact(self, sigma_or_solution, dv) -> np.ndarray:
        """``(d data / d z)^T dv``: gradient w.r.t. the contact impedances, shape ``(L,)``.

        With ``w = A^{-1} B lambda`` and ``lambda`` the adjoint electrode potentials (as in
        :meth:`vjp`): ``d<dv, d>/dz_l = z_l^{-2} sum_p int_{e_l} (u_p - U_lp)(w_p - lambda_lp) ds``.
        """
        sol = sigma_or_solution if isinstance(sigma_or_solution, CEMSolution) \
            else self.solve(sigma_or_solution)
        dv = np.asarray(dv, dtype=np.float64)
        if dv.shape != (self.n_data,):
            raise ValueError(f"cotangent must have shape ({self.n_data},), got {dv.shape}")
        lam = np.linalg.solve(sol.Sg, self._out.T @ dv.reshape(self.P, self.M).T)  # (L, P)
        U, W = sol.U, sol.W
        bW = self._bload.T @ W  # (L, L): row l = int_{e_l} W ds
        X, Y = bW @ U, bW @ lam  # int_{e_l} u_p ds, int_{e_l} w_p ds
        UL = U @ lam.T
        t4 = np.empty(self.L)
        if not hasattr(self, "_Msparse"):
            self._Msparse = [self.fe.matrix(m).tocsr() for m in self._Mdata]
        for l, Ml in enumerate(self._Msparse):
            t4[l] = np.sum((W.T @ (Ml @ W)) * UL)  # sum_p int_{e_l} u_p w_p ds
        t1 = self.electrode_lengths * np.sum(lam * U, axis=1)
        t2 = np.sum(lam * X, axis=1)
        t3 = np.sum(Y * U, axis=1)
        z = self.z if sol.z is None else sol.z
        return (t1 - t2 - t3 + t4) / z ** 2

    def jacobian(self, sigma_or_solution) -> np.ndarray:
        """Full Jacobian ``d data / d sigma``: shape ``(P*M, n_sigma)`` (row ``p*M + m``)."""
        sol = sigma_or_solution if isinstance(sigma_or_solution, CEMSolution) \
            else self.solve(sigma_or_solution)
        lam = np.linalg.solve(sol.Sg, self._out.T)  # (L, M)
        DW = self._DW(sol)
        C = self.fe.n_cells
        J = _pair_products((DW @ sol.U).reshape(C, 2, self.P),
                           (DW @ lam).reshape(C, 2, self.M), self.fe.area)
        J *= -1.0
        if self.sigma_space == "P1":
            J = (self.fe.p1_to_cells.T @ J.T).T
        return J


# --------------------------------------------------------------------------- continuum


@dataclass
class FieldSolution:
    """Result of a continuum solve: ``data``, fields ``u (N, P)``, factorisation ``lu``."""

    sigma_cells: np.ndarray
    data: np.ndarray
    u: np.ndarray
    lu: Any


class _BoundaryModel(_SigmaModel):
    """Boundary dofs, boundary mass matrix and data given as arrays or callables."""

    def __init__(self, mesh, data, sigma_space):
        super().__init__(mesh, sigma_space)
        fe = self.fe
        m = fe.mesh
        m.topology.create_connectivity(1, 2)
        bfacets = dolfinx.mesh.exterior_facet_indices(m.topology)
        self.boundary_dofs = np.sort(
            dolfinx.fem.locate_dofs_topological(fe.V, 1, bfacets)).astype(np.int64)
        self.nb = len(self.boundary_dofs)
        xb = fe.coords[self.boundary_dofs]
        self.boundary_coordinates = xb
        self.boundary_angles = np.arctan2(xb[:, 1], xb[:, 0])
        u, v = ufl.TrialFunction(fe.V), ufl.TestFunction(fe.V)
        Mb = dolfinx.fem.assemble_matrix(dolfinx.fem.form(u * v * ufl.ds)).to_scipy()
        Mb = sp.csr_matrix(Mb)[self.boundary_dofs][:, self.boundary_dofs]
        self.boundary_mass = sp.csc_matrix(Mb)
        self._mass_lu = spla.splu(self.boundary_mass)
        self.boundary_weights = np.asarray(Mb.sum(axis=1)).ravel()  # int phi_i ds
        if callable(data):
            vals = np.asarray(data(xb[:, 0], xb[:, 1]), dtype=np.float64)
            if vals.ndim == 1:
                vals = vals[None]
            if vals.shape[-1] != self.nb:
                raise ValueError("boundary data callable must return (P, n_points) values")
            vals = vals.T
        else:
            vals = np.asarray(data, dtype=np.float64)
            if vals.ndim == 1:
                vals = vals[:, None]
            if vals.ndim != 2 or vals.shape[0] != self.nb:
                raise ValueError(
                    f"boundary data must have shape ({self.nb}, P): one row per boundary vertex "
                    f"(model.boundary_coordinates), one column per pattern; got {vals.shape}")
        if not np.all(np.isfinite(vals)):
            raise ValueError("boundary data contain non-finite values")
        self.boundary_data = vals  # (nb, P)
        self.P = vals.shape[1]

    @property
    def n_data(self) -> int:
        return self.P * self.nb


class NeumannModel(_BoundaryModel):
    """Continuum model, Neumann data: ``div(sigma grad u_k) = 0``, ``sigma du_k/dn = g_k``.

    ``g``: current densities (A/m for a 2-D domain) at the boundary vertices
    (``model.boundary_coordinates``), shape ``(nb, P)``, or a callable ``g(x, y) -> (P, nb)``;
    ``g`` is taken as the P1 interpolant on the boundary and ``int g_k ds`` must vanish.
    Data: the boundary potentials ``f_k = u_k`` at the boundary vertices, normalised to
    ``int f_k ds = 0``; ``data[k * nb + i]``.  Gradient: ``-int_c grad u_k . grad w_k``
    with the adjoint field ``w_k`` solving the same problem (same factorisation).
    """

    def __init__(self, mesh, g, *, sigma_space="DG0"):
        super().__init__(mesh, g, sigma_space)
        load = np.zeros((self.fe.n_vertices, self.P))
        load[self.boundary_dofs] = self.boundary_mass @ self.boundary_data
        tot = np.abs(load.sum(0))
        if np.any(tot > 1e-8 * max(np.abs(load).max(), 1e-300)):
            raise ValueError("Neumann data must have zero mean on the boundary (int g ds = 0)")
        self._load = load
        # pin one dof: A = K + c e_r e_r^T; with sum(load)=0 the solution has u_r = 0, K u = f
        self._pin = np.zeros(self.fe.nnz)
        r = int(self.boundary_dofs[0])
        self._pin[self.fe.positions(np.array([r]), np.array([r]))] = 1.0
        wb = self.boundary_weights
        self._mean = wb / wb.sum()

    def _trace(self, u: np.ndarray) -> np.ndarray:
        ub = u[self.boundary_dofs]
        return ub - self._mean @ ub

    def solve(self, sigma) -> FieldSolution:
        sc = self.cell_sigma(sigma)
        Kd = self.fe.Kmap @ sc
        lu = self._factor(Kd + np.abs(Kd).max() * self._pin)
        u = lu.solve(self._load)
        return FieldSolution(sc, self._trace(u).T.reshape(-1), u, lu)

    def _adjoint_load(self, dv: np.ndarray) -> np.ndarray:
        gb = dv.reshape(self.P, self.nb).T  # (nb, P)
        gb = gb - np.outer(self._mean, gb.sum(0))  # transpose of the mean removal
        rhs = np.zeros((self.fe.n_vertices, self.P))
        rhs[self.boundary_dofs] = gb
        return rhs

    def _vjp(self, sol: FieldSolution, dv: np.ndarray) -> np.ndarray:
        w = sol.lu.solve(self._adjoint_load(dv))
        return self._to_sigma_grad(-self.fe.cell_inner(sol.u, w))

    def jacobian(self, sigma_or_solution) -> np.ndarray:
        sol = sigma_or_solution if isinstance(sigma_or_solution, FieldSolution) \
            else self.solve(sigma_or_solution)
        # adjoint fields of the nb boundary point evaluations (mean removed)
        E = np.zeros((self.fe.n_vertices, self.nb))
        E[self.boundary_dofs, np.arange(self.nb)] = 1.0
        E[self.boundary_dofs] -= self._mean[:, None]
        w = sol.lu.solve(E)
        gu = self.fe.cell_gradients(sol.u)
        gw = self.fe.cell_gradients(w)
        J = _pair_products(gu, gw, self.fe.area)
        J *= -1.0
        return J if self.sigma_space == "DG0" else (self.fe.p1_to_cells.T @ J.T).T


class DirichletModel(_BoundaryModel):
    """Continuum model, Dirichlet data: ``div(sigma grad u_k) = 0``, ``u_k = f_k`` on the boundary.

    ``f``: boundary potentials (V) at the boundary vertices, ``(nb, P)``, or a callable.
    Data: the current density ``sigma du_k/dn`` (A/m) at the boundary vertices: the
    variationally consistent flux ``r_i = int sigma grad u . grad phi_i`` represented in the
    boundary P1 basis (``M_b^{-1} r``); ``data[k * nb + i]``.  (Where the true flux jumps, at
    corners of a polygon, this projection oscillates over a few boundary vertices.)  Gradient:
    ``+int_c grad u_k . grad w_k`` with ``w_k`` the sigma-harmonic extension of the adjoint
    boundary data ``M_b^{-1} dv_k`` (same factorisation).
    """

    def __init__(self, mesh, f, *, sigma_space="DG0"):
        super().__init__(mesh, f, sigma_space)
        fe = self.fe
        isb = np.zeros(fe.n_vertices, bool)
        isb[self.boundary_dofs] = True
        rb, cb = isb[fe.pattern_rows], isb[fe.pattern_cols]
        self._keep = ~(rb | cb)  # interior-interior entries of K
        self._bdiag = ((rb & cb) & (fe.pattern_rows == fe.pattern_cols)).astype(float)
        self._isb = isb

    def _harmonic(self, lu, Kd, fb: np.ndarray) -> np.ndarray:
        """sigma-harmonic extension of boundary values fb (nb, P)."""
        fe = self.fe
        full = np.zeros((fe.n_vertices, fb.shape[1]))
        full[self.boundary_dofs] = fb
        K = fe.matrix(Kd)
        rhs = -(K @ full)
        rhs[self.boundary_dofs] = fb
        return lu.solve(rhs)

    def solve(self, sigma) -> FieldSolution:
        sc = self.cell_sigma(sigma)
        Kd = self.fe.Kmap @ sc
        scale = np.abs(Kd).max()
        lu = self._factor(np.where(self._keep, Kd, 0.0) + scale * self._bdiag)
        # lifted system: interior rows K_II u_I = -K_IB f, boundary rows scale * u_B = scale * f
        full = np.zeros((self.fe.n_vertices, self.P))
        full[self.boundary_dofs] = self.boundary_data
        K = self.fe.matrix(Kd)
        rhs = -(K @ full)
        rhs[self.boundary_dofs] = scale * self.boundary_data
        u = lu.solve(rhs)
        flux = self._mass_lu.solve((K @ u)[self.boundary_dofs])
        sol = FieldSolution(sc, flux.T.reshape(-1), u, lu)
        sol.K = K
        sol.scale = scale
        return sol

    def _extension(self, sol, mu: np.ndarray) -> np.ndarray:
        full = np.zeros((self.fe.n_vertices, mu.shape[1]))
        full[self.boundary_dofs] = mu
        rhs = -(sol.K @ full)
        rhs[self.boundary_dofs] = sol.scale * mu
        return sol.lu.solve(rhs)

    def _vjp(self, sol: FieldSolution, dv: np.ndarray) -> np.ndarray:
        mu = self._mass_lu.solve(dv.reshape(self.P, self.nb).T)
        w = self._extension(sol, mu)
        return self._to_sigma_grad(self.fe.cell_inner(sol.u, w))

    def jacobian(self, sigma_or_solution) -> np.ndarray:
        sol = sigma_or_solution if isinstance(sigma_or_solution, FieldSolution) \
            else self.solve(sigma_or_solution)
        mu = self._mass_lu.solve(np.eye(self.nb))
        w = self._extension(sol, mu)
        gu = self.fe.cell_gradients(sol.u)
        gw = self.fe.cell_gradients(w)
        J = _pair_products(gu, gw, self.fe.area)
        return J if self.sigma_space == "DG0" else (self.fe.p1_to_cells.T @ J.T).T
