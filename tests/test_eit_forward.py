"""EIT forward models: analytic solutions, refinement, reciprocity, adjoint gradient, bad input."""
import numpy as np
import pytest

import dolfinx_solver  # noqa: F401
import dolfinx
import dolfinx.fem
import ufl

from eit.analytic import cem_disk_fourier, disk_dirichlet_flux_cos, disk_neumann_cos
from eit.forward import CEM, DirichletModel, NeumannModel
from eit.mesh import (GAP_TAG, disk_mesh, ktc_default_arcs, ktc_electrode_arcs, ktc_mesh,
                      polygon_mesh)
from eit.patterns import adjacent_currents as adjacent
from eit.physics import EITPhysics

L = 16


@pytest.fixture(scope="module")
def disk_coarse():
    return disk_mesh(1.0, L, h=0.2, h_electrode=0.05)


@pytest.fixture(scope="module")
def disk_fine():
    return disk_mesh(1.0, L, h=0.1, h_electrode=0.025)


def random_sigma(n, seed=0):
    return np.random.default_rng(seed).uniform(0.5, 2.0, n)


# ----------------------------------------------------------------------------- meshes


def test_disk_mesh_tags_every_electrode(disk_coarse):
    vals = np.unique(disk_coarse.facet_tags.values)
    assert set(range(1, L + 1)) <= set(vals.tolist()) and GAP_TAG in vals
    model = CEM(disk_coarse, adjacent(L), z=1.0)
    # default extent = half the pitch: arc length R * pi / L (chords slightly shorter)
    np.testing.assert_allclose(model.electrode_lengths, np.pi / L, rtol=2e-3)


def test_polygon_mesh_electrodes():
    sq = [[0, 0], [0.2, 0], [0.2, 0.2], [0, 0.2]]
    m = polygon_mesh(sq, [0, np.pi / 2, np.pi, -np.pi / 2], 0.04, h=0.02)
    model = CEM(m, adjacent(4), z=1e-3)
    np.testing.assert_allclose(model.electrode_lengths, 0.04, rtol=1e-12)
    with pytest.raises(ValueError, match="does not fit"):
        polygon_mesh(sq, [np.pi / 4], 0.04)  # a corner: no single edge holds it


def test_polygon_dirichlet_linear_potential_is_exact():
    """P1 reproduces u = x exactly on any mesh: checks the lifting of Dirichlet data and the
    polygon mesher; the flux on the edge x = 0.2 is sigma away from the corners (the boundary
    L2 projection of a flux that jumps at a corner oscillates there, decaying geometrically)."""
    sq = [[0, 0], [0.2, 0], [0.2, 0.1], [0, 0.1]]
    m = polygon_mesh(sq, [0.0, np.pi], 0.03, h=0.006)
    model = DirichletModel(m, lambda x, y: x[None], sigma_space="P1")
    sol = model.solve(np.full(model.n_sigma, 3.0))
    np.testing.assert_allclose(sol.u[:, 0], model.vertex_coordinates[:, 0], atol=1e-12)
    xb = model.boundary_coordinates
    edge = (np.abs(xb[:, 0] - 0.2) < 1e-12) & (xb[:, 1] > 0.035) & (xb[:, 1] < 0.065)
    assert edge.sum() >= 3
    np.testing.assert_allclose(sol.data[edge], 3.0, rtol=1e-2)


def test_mesh_is_reproducible():
    a = disk_mesh(1.0, 8, h=0.3)
    disk_mesh(1.0, 5, h=0.2)
    b = disk_mesh(1.0, 8, h=0.3)
    assert np.array_equal(a.mesh.geometry.x, b.mesh.geometry.x)


def test_mesh_rejects_overlapping_electrodes():
    with pytest.raises(ValueError, match="overlap"):
        disk_mesh(1.0, 8, extent=2 * np.pi / 7)


def test_ktc_presets_vertex_counts():
    m = ktc_mesh("1500")
    assert 1300 <= m.num_vertices() <= 1800
    with pytest.raises(ValueError, match="unknown KTC mesh size"):
        ktc_mesh("huge")


def test_ktc_arcs_from_organisers_mesh(shared_data):
    arcs = ktc_electrode_arcs(shared_data / "eit/ktc2023/mesh/Mesh_sparse.mat")
    d = (arcs - ktc_default_arcs() + np.pi) % (2 * np.pi) - np.pi
    assert np.abs(d).max() < 1e-5


# ----------------------------------------------------------------------------- stiffness


@pytest.mark.parametrize("space", ["DG0", "P1"])
def test_stiffness_matches_dolfinx_assembly(disk_coarse, space):
    model = CEM(disk_coarse, adjacent(L), z=1.0, sigma_space=space)
    fe = model.fe
    s = random_sigma(model.n_sigma)
    f = model.sigma_function(s)
    u, v = ufl.TrialFunction(fe.V), ufl.TestFunction(fe.V)
    K = dolfinx.fem.assemble_matrix(
        dolfinx.fem.form(f * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx)).to_scipy()
    K2 = fe.matrix(fe.Kmap @ model.cell_sigma(s))
    assert abs(K - K2).max() < 1e-12 * abs(K).max()


# ----------------------------------------------------------------------------- analytic


def test_cem_homogeneous_disk_matches_fourier_solution_and_converges(disk_coarse, disk_fine):
    z, sigma = 0.1, 2.0
    I = adjacent(L, 4)
    ref = cem_disk_fourier(1.0, disk_coarse.electrode_arcs, z, sigma, I, n_modes=300)
    errs = []
    for m in (disk_coarse, disk_fine):
        model = CEM(m, I, z=z)
        U = model.solve(np.full(model.n_sigma, sigma)).U
        errs.append(np.abs(U - ref).max() / np.abs(ref).max())
    assert errs[1] < 0.01
    assert errs[0] / errs[1] > 2.5  # about second order in h


@pytest.fixture(scope="module")
def uniform_disks():
    return [disk_mesh(1.0, 4, h=h, h_electrode=h) for h in (0.2, 0.1)]


@pytest.mark.parametrize("k", [1, 3])
def test_continuum_neumann_and_dirichlet_analytic(uniform_disks, k):
    def cos_k(x, y):
        return np.cos(k * np.arctan2(y, x))

    errs_n, errs_d = [], []
    for m in uniform_disks:
        nm = NeumannModel(m, cos_k)
        f = nm.forward(np.full(nm.n_sigma, 2.0))
        xb = nm.boundary_coordinates
        ex = disk_neumann_cos(xb[:, 0], xb[:, 1], k, sigma=2.0)
        errs_n.append(np.abs(f - ex).max() / np.abs(ex).max())
        dm = DirichletModel(m, cos_k)
        fl = dm.forward(np.full(dm.n_sigma, 2.0))
        exf = disk_dirichlet_flux_cos(dm.boundary_angles, k, sigma=2.0)
        errs_d.append(np.abs(fl - exf).max() / np.abs(exf).max())
    assert errs_n[1] < 0.02 and errs_n[0] / errs_n[1] > 3.0
    assert errs_d[1] < 0.05 and errs_d[0] / errs_d[1] > 1.5


# ----------------------------------------------------------------------------- structure


def test_reciprocity(disk_coarse):
    I = adjacent(L)  # measure with the same pairs as the currents
    model = CEM(disk_coarse, I, patterns=I, z=0.05)
    R = model.forward(random_sigma(model.n_sigma)).reshape(L, L)  # R[p, m]
    np.testing.assert_allclose(R, R.T, atol=1e-10 * np.abs(R).max())


def test_vtx_output_of_fields(disk_coarse, tmp_path):
    from dolfinx.io import VTXWriter

    model = CEM(disk_coarse, adjacent(L, 2), z=0.1)
    s = random_sigma(model.n_sigma)
    sol = model.solve(s)
    f = model.sigma_function(s)
    assert np.allclose(np.sort(f.x.array), np.sort(s))
    u = model.potential_function(sol.u[:, 0])
    with VTXWriter(disk_coarse.comm, tmp_path / "u.bp", [u], engine="BP4") as w:
        w.write(0.0)
    assert (tmp_path / "u.bp").exists()


def test_ground_reference_electrode(disk_coarse):
    I = adjacent(L, 3)
    s = random_sigma(disk_coarse.num_cells())
    U_mean = CEM(disk_coarse, I, z=0.1).electrode_potentials(s)
    U_ref = CEM(disk_coarse, I, z=0.1, ground=5).electrode_potentials(s)
    assert np.allclose(U_mean.sum(0), 0, atol=1e-12) and np.allclose(U_ref[5], 0)
    np.testing.assert_allclose(U_ref, U_mean - U_mean[5], atol=1e-12)


def test_voltage_scales_inversely_with_conductivity(disk_coarse):
    model = CEM(disk_coarse, adjacent(L), patterns=None, z=0.1)
    v1 = model.forward(np.full(model.n_sigma, 1.0))
    # z/sigma fixed ratio keeps the system a pure scaling
    model2 = CEM(disk_coarse, adjacent(L), patterns=None, z=0.05)
    v2 = model2.forward(np.full(model.n_sigma, 2.0))
    np.testing.assert_allclose(v2, v1 / 2, rtol=1e-10, atol=1e-14)


# ----------------------------------------------------------------------------- gradient


def _fd_check(model, seed=0, eps=1e-5):
    rng = np.random.default_rng(seed)
    s = random_sigma(model.n_sigma, seed)
    dv = rng.standard_normal(model.n_data)
    h = rng.standard_normal(model.n_sigma)
    g = model.vjp(s, dv)
    fd = (model.forward(s + eps * h) - model.forward(s - eps * h)) @ dv / (2 * eps)
    return g @ h, fd, g, s, dv


@pytest.mark.parametrize("space,patterns,ground", [("DG0", "adjacent", "mean"),
                                                   ("P1", "adjacent", "mean"),
                                                   ("DG0", None, "mean"), ("DG0", None, 3)])
def test_cem_gradient_matches_finite_differences(disk_coarse, space, patterns, ground):
    G = adjacent(L) if patterns == "adjacent" else None
    model = CEM(disk_coarse, adjacent(L, 5), patterns=G, z=1e-2, sigma_space=space,
                ground=ground)
    gh, fd, g, s, dv = _fd_check(model)
    assert abs(gh - fd) < 1e-6 * abs(fd)
    J = model.jacobian(s)
    assert J.shape == (model.n_data, model.n_sigma)
    np.testing.assert_allclose(J.T @ dv, g, rtol=1e-10, atol=1e-12 * np.abs(g).max())


def test_contact_impedance_gradient_matches_finite_differences(disk_coarse):
    z = np.linspace(0.01, 0.03, L)
    model = CEM(disk_coarse, adjacent(L, 4), patterns=adjacent(L), z=z)
    rng = np.random.default_rng(3)
    s = random_sigma(model.n_sigma)
    dv = rng.standard_normal(model.n_data)
    gz = model.vjp_contact(s, dv)
    h = rng.standard_normal(L) * z
    eps = 1e-5

    def f(zz):
        model.set_contact_impedance(zz)
        return model.forward(s) @ dv

    fd = (f(z + eps * h) - f(z - eps * h)) / (2 * eps)
    assert abs(gz @ h - fd) < 1e-6 * abs(fd)


@pytest.mark.parametrize("cls", [NeumannModel, DirichletModel])
def test_continuum_gradient_matches_finite_differences(disk_coarse, cls):
    data = lambda x, y: np.stack([np.cos(np.arctan2(y, x)), np.sin(2 * np.arctan2(y, x))])
    model = cls(disk_coarse, data, sigma_space="P1")
    gh, fd, g, s, dv = _fd_check(model)
    assert abs(gh - fd) < 1e-6 * abs(fd)
    J = model.jacobian(s)
    np.testing.assert_allclose(J.T @ dv, g, rtol=1e-9, atol=1e-10 * np.abs(g).max())


def test_torch_autograd_batched(disk_coarse):
    import torch

    model = CEM(disk_coarse, adjacent(L, 3), patterns=adjacent(L), z=0.05)
    s = torch.tensor(np.stack([random_sigma(model.n_sigma, 1), random_sigma(model.n_sigma, 2)]),
                     requires_grad=True)
    A = EITPhysics(model)
    assert A.measurement_shape == (model.n_data,)
    y = A(s)
    assert y.shape == (2, model.n_data) and y.dtype == s.dtype
    dv = torch.randn(2, model.n_data, dtype=torch.float64)
    (g,) = torch.autograd.grad((y * dv).sum(), s)
    for b in range(2):
        ref = model.vjp(s[b].detach().numpy(), dv[b].numpy())
        np.testing.assert_allclose(g[b].numpy(), ref, rtol=1e-12)
    y1 = A(s[0].float())
    assert y1.shape == (model.n_data,) and y1.dtype == torch.float32
    # A_vjp (no autograd graph) gives the same J^T v
    np.testing.assert_allclose(A.A_vjp(s.detach(), dv).numpy(), g.numpy(), rtol=1e-12)


def test_torch_contact_impedance_gradient(disk_coarse):
    import torch

    model = CEM(disk_coarse, adjacent(L, 3), patterns=adjacent(L), z=0.05)
    s = torch.tensor(np.stack([random_sigma(model.n_sigma, 1), random_sigma(model.n_sigma, 2)]),
                     requires_grad=True)
    z = torch.full((L,), 0.02, dtype=torch.float64, requires_grad=True)
    dv = torch.randn(2, model.n_data, dtype=torch.float64)
    # the unknown of the contact physics is (sigma, log z); z is shared by the batch here
    A = EITPhysics(model, contact=True)
    x = torch.cat([s, torch.log(z).expand(2, L)], dim=1)
    gs, gz = torch.autograd.grad((A(x) * dv).sum(), (s, z))
    np.testing.assert_allclose(model.z, 0.02)
    ref_z = sum(model.vjp_contact(s[b].detach().numpy(), dv[b].numpy()) for b in range(2))
    np.testing.assert_allclose(gz.numpy(), ref_z, rtol=1e-10)
    np.testing.assert_allclose(gs[0].numpy(), model.vjp(s[0].detach().numpy(), dv[0].numpy()),
                               rtol=1e-10)
    with pytest.raises(ValueError, match="contact impedances"):
        EITPhysics(NeumannModel(disk_coarse, lambda x, y: np.cos(np.arctan2(y, x))[None]), contact=True)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_rejected_clearly(disk_coarse):
    I = adjacent(L, 3)
    model = CEM(disk_coarse, I, z=0.1)
    n = model.n_sigma
    with pytest.raises(ValueError, match="positive"):
        model.forward(np.r_[np.ones(n - 1), 0.0])
    with pytest.raises(ValueError, match="positive"):
        model.forward(-np.ones(n))
    with pytest.raises(ValueError, match="non-finite"):
        model.forward(np.r_[np.ones(n - 1), np.nan])
    with pytest.raises(ValueError, match=f"shape \\({n},\\)"):
        model.forward(np.ones(n + 1))
    with pytest.raises(ValueError, match="currents must have shape"):
        CEM(disk_coarse, np.zeros((L + 1, 3)))
    with pytest.raises(ValueError, match="sum to zero"):
        CEM(disk_coarse, np.abs(I))
    with pytest.raises(ValueError, match="measurement patterns must have shape"):
        CEM(disk_coarse, I, patterns=np.zeros((L - 1, 5)))
    with pytest.raises(ValueError, match="contact impedance"):
        CEM(disk_coarse, I, z=0.0)
    with pytest.raises(ValueError, match="ground"):
        CEM(disk_coarse, I, ground=L)
    with pytest.raises(ValueError, match="sigma_space"):
        CEM(disk_coarse, I, sigma_space="P2")
    with pytest.raises(ValueError, match="cotangent"):
        model.vjp(np.ones(n), np.ones(model.n_data + 1))
    with pytest.raises(ValueError, match="zero mean"):
        NeumannModel(disk_coarse, lambda x, y: 1.0 + 0 * x)


# ----------------------------------------------------------------------------- KTC data


@pytest.mark.data
def test_ktc_reference_data_fit_by_homogeneous_tank(shared_data):
    """Our conventions (electrode numbering, Inj/Mpat, data order) reproduce the organisers'
    water-tank measurements with one conductivity to within the modelling error."""
    import scipy.io

    d = scipy.io.loadmat(str(shared_data / "eit/ktc2023/training/ref.mat"))
    Inj, Mpat, Uref = d["Injref"], d["Mpat"].astype(float), d["Uelref"].ravel()
    model = CEM(ktc_mesh("1500"), Inj, Mpat, z=1e-6)
    assert model.n_data == Uref.size == 2356
    v1 = model.forward(np.ones(model.n_sigma))
    a = (v1 @ Uref) / (v1 @ v1)  # data(sigma0) = v1 / sigma0
    rel = np.linalg.norm(a * v1 - Uref) / np.linalg.norm(Uref)
    assert 0.5 < 1 / a < 1.2  # tap water, S/m
    assert rel < 0.1
    # a wrong data order (measurement-major) does not fit
    v_wrong = v1.reshape(76, 31).T.ravel()
    b = (v_wrong @ Uref) / (v_wrong @ v_wrong)
    assert np.linalg.norm(b * v_wrong - Uref) / np.linalg.norm(Uref) > 0.5
