"""The D-bar baseline (eit.dbar): its pieces against closed forms, and reconstructions of
simulated disks (data from a finer mesh, 1% noise) that must get the sign and the place right."""
import dolfinx_solver  # noqa: F401  (orders MPI before the DOLFINx bindings)

from math import factorial
from types import SimpleNamespace

import numpy as np
import pytest

from eit.dbar import DBar, _gmres, electrode_arcs, nd_change, scattering_transform, trig_averages
from eit.forward import CEM
from eit.mesh import KTC_RADIUS, ktc_default_arcs, ktc_mesh
from eit.patterns import synthetic_patterns
from eit.phantoms import Circle, Phantom
from eit.problem import phantom_problem

R0 = KTC_RADIUS


@pytest.fixture(scope="module")
def models():
    inj, mpat = synthetic_patterns(32)
    coarse = CEM(ktc_mesh("1500"), currents=inj, patterns=mpat, z=1e-6)
    # finer than the inversion mesh everywhere (as eit.problem.simulated_problem): no inverse crime
    fine = CEM(ktc_mesh((0.045 * R0, 0.012 * R0)), currents=inj, patterns=mpat, z=1e-6)
    return coarse, fine


def _disk_problem(models, cx, cy, r, ratio, level=1):
    coarse, fine = models
    phantom = Phantom(1.0, [Circle(cx * R0, cy * R0, r * R0, ratio)])
    return phantom_problem(phantom, coarse, fine, seed=3, level=level)


def _contrast(problem, result):
    """gamma = sigma / sigma_bg at the cells and the cell centroids in units of the radius."""
    return result.arrays["sigma"] / problem.sigma_bg, problem.centroids[:, :2] / problem.radius


def test_scattering_transform_of_a_constant_conductivity_matches_quadrature():
    # gamma = c on the unit disk: Lambda_c - Lambda_1 = (c - 1) Lambda_1, and Lambda_1 e^{im theta}
    # = |m| e^{im theta}.  t(k) by quadrature on the circle against the closed-form coefficients.
    c, N = 1.7, 12
    dL = (c - 1) * np.diag(np.tile(np.arange(1, N + 1), 2).astype(float))
    k = np.array([0.3 + 0.1j, -1.2 + 0.8j, 2.5j, -2.0 - 1.0j])
    theta = np.linspace(0, 2 * np.pi, 512, endpoint=False)
    z = np.exp(1j * theta)
    for kk, t in zip(k, scattering_transform(dL, k, 10.0)):
        f = np.exp(1j * kk * z)
        m = np.fft.fftfreq(len(theta), 1 / len(theta))
        lam_f = np.fft.ifft((c - 1) * np.abs(m) * np.fft.fft(f))
        t_quad = np.sum(np.exp(1j * np.conj(kk) * np.conj(z)) * lam_f) * (2 * np.pi / len(theta))
        assert t == pytest.approx(t_quad, rel=1e-8, abs=1e-10)
    # the closed form of the radial transform, and the truncation
    r = np.abs(k[0])
    series = (c - 1) * 2 * np.pi * sum(n * (-1) ** n * r ** (2 * n) / factorial(n) ** 2 for n in range(1, N + 1))
    assert scattering_transform(dL, k[:1], 10.0)[0] == pytest.approx(series, rel=1e-10)
    assert scattering_transform(dL, k, 1.0)[1:].tolist() == [0, 0, 0]


def test_nd_change_recovers_the_matrix_of_consistent_data():
    inj, mpat = synthetic_patterns(32)
    C = trig_averages(ktc_default_arcs(), 5)
    rng = np.random.default_rng(0)
    A = rng.standard_normal((10, 10))
    R = A + A.T
    data = ((mpat.T @ C.T @ R @ C @ inj).T).reshape(-1)  # injection-major d_pm
    full = np.ones(data.size, bool)
    assert np.allclose(nd_change(data, full, inj, mpat, C), R, atol=1e-9)
    assert np.allclose(nd_change(data, full, inj, mpat, C, weights=rng.uniform(0.5, 2, data.size)), R, atol=1e-9)


def test_gmres_solves_a_real_linear_system():
    # mu - M conj(mu) = b is real-linear, not complex-linear: compare with the dense real 2n x 2n solve.
    rng = np.random.default_rng(1)
    n = 6
    M = 0.3 * (rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n)))
    b = rng.standard_normal((2, n)) + 1j * rng.standard_normal((2, n))
    x, res, _ = _gmres(lambda mu: mu - np.conj(mu) @ M.T, b, np.zeros_like(b), 1e-12, 2 * n)
    big = np.block([[np.eye(n) - M.real, -M.imag], [-M.imag, np.eye(n) + M.real]])
    for j in range(2):
        sol = np.linalg.solve(big, np.r_[b[j].real, b[j].imag])
        assert np.allclose(x[j], sol[:n] + 1j * sol[n:], atol=1e-9)
    assert res.max() < 1e-10


@pytest.mark.parametrize("ratio", [5.0, 0.2])
def test_centred_disk_gives_the_sign_of_the_contrast_at_the_centre(models, ratio):
    problem = _disk_problem(models, 0.0, 0.0, 0.3, ratio)
    result = DBar().reconstruct(problem)
    gamma, x = _contrast(problem, result)
    centre = gamma[np.argmin(np.linalg.norm(x, axis=1))]
    extreme = np.argmax(gamma) if ratio > 1 else np.argmin(gamma)
    if ratio > 1:
        assert centre > 1.5, centre  # conductive: clearly above the water
    else:
        assert centre < 0.7, centre  # resistive: clearly below
    assert np.linalg.norm(x[extreme]) < 0.2, x[extreme]  # the extremum is near the centre
    assert np.median(np.abs(gamma[np.linalg.norm(x, axis=1) > 0.8] - 1)) < 0.15  # water near the wall
    assert result.method == "dbar" and result.metrics["score"] > 0.4
    assert result.metrics["gmres_residual"] < 1e-4 and result.config == DBar().get_params()


def test_off_centre_inclusion_is_found_in_its_place(models):
    problem = _disk_problem(models, 0.45, -0.35, 0.25, 5.0)
    gamma, x = _contrast(problem, DBar().reconstruct(problem))
    peak = x[np.argmax(gamma)]
    assert peak[0] > 0 and peak[1] < 0, peak  # the right quadrant
    assert np.linalg.norm(peak - [0.45, -0.35]) < 0.2, peak
    assert gamma.max() > 1.4


def test_masked_electrodes_use_only_the_remaining_data(models):
    problem = _disk_problem(models, 0.0, 0.2, 0.3, 5.0, level=4)
    result = DBar().reconstruct(problem)
    assert result.metrics["n_measurements"] == int(problem.mask.sum()) < problem.model.n_data
    assert np.all(np.isfinite(result.arrays["sigma"])) and np.all(result.arrays["sigma"] > 0)
    gamma, _ = _contrast(problem, result)
    assert gamma.max() > 1.2  # still a conductive change, however degraded


@pytest.mark.parametrize("settings, message", [
    ({"truncation": 0.0}, "truncation radius"),
    ({"truncation": float("nan")}, "truncation radius"),
    ({"n_modes": 0}, "n_modes"),
    ({"n_modes": 2.5}, "n_modes"),
    ({"k_points": 3}, "k_points"),
    ({"z_points": True}, "z_points"),
    ({"tol": 0.0}, "tolerance"),
    ({"max_iter": 0}, "max_iter"),
])
def test_bad_settings_raise(settings, message):
    with pytest.raises(ValueError, match=message):
        DBar(**settings).validate()


def test_bad_problems_raise(models):
    coarse, _ = models
    problem = SimpleNamespace(model=coarse, dy=None)
    with pytest.raises(ValueError, match="difference data"):
        DBar().scattering(problem)
    with pytest.raises(ValueError, match="disk-shaped"):
        electrode_arcs(SimpleNamespace(model=SimpleNamespace(eit_mesh=SimpleNamespace(kind="polygon"))))
    problem = SimpleNamespace(model=coarse, dy=np.zeros(coarse.n_data))
    with pytest.raises(ValueError, match="at most 15"):
        DBar(n_modes=16).scattering(problem)


def test_registered_by_name():
    import eit
    from eit.evaluate import METHOD_KEYS
    from eit.methods import METHODS, make_reconstructor

    rec = make_reconstructor("dbar", truncation=2.5)
    assert isinstance(rec, eit.DBar) and rec.truncation == 2.5 and rec.method == "dbar"
    assert "dbar" in METHODS and METHOD_KEYS["dbar"] == "dbar"
    with pytest.raises(ValueError, match="no setting"):
        make_reconstructor("dbar", alpha=1.0)
