"""The mesh-free formulation of EIT (eit.meshfree, Bar & Sochen): residual, boundary terms, fit, errors."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import dolfinx_solver  # noqa: F401  (orders MPI before the DOLFINx bindings)

from eit.meshfree import (BarSochenLoss, CollocationSampler, HarmonicLift, MeshFreeEIT, MeshFreeFields, Mollified,
                          PotentialNet, autograd_jet, cauchy_data, continuum_models, continuum_problem,
                          dirichlet_modes, flux_divergence, homogeneous_flux)
from eit.phantoms import Circle, Phantom

D = torch.float64


def _circle(n: int = 64, radius: float = 1.0) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return radius * np.c_[np.cos(t), np.sin(t)]


def _disk_points(n: int = 200, radius: float = 1.0, seed: int = 0) -> torch.Tensor:
    return CollocationSampler(n, radius, seed=seed, dtype=D).points


class _Exp(torch.nn.Module):
    """``sigma = c exp(a x_1)`` (a fixed analytic conductivity as a module)."""

    def __init__(self, a: float = 1.0, c: float = 1.0) -> None:
        super().__init__()
        self.a, self.c = a, c

    def forward(self, x):
        return self.c * torch.exp(self.a * x[:, 0])


def test_residual_vanishes_for_an_analytic_pair_and_not_for_a_wrong_one():
    x = _disk_points()
    # sigma = e^x, u = e^-x: sigma grad u = (-1, 0), divergence 0
    good = flux_divergence(lambda p: torch.exp(p[:, 0]), lambda p: torch.exp(-p[:, 0])[:, None], x)
    assert good.abs().max() < 1e-12
    # u = e^x instead: sigma grad u = (e^2x, 0), divergence 2 e^2x (not small, and exactly that)
    bad = flux_divergence(lambda p: torch.exp(p[:, 0]), lambda p: torch.exp(p[:, 0])[:, None], x)
    assert torch.allclose(bad[:, 0], 2 * torch.exp(2 * x[:, 0]), atol=1e-12)
    assert bad.abs().min() > 0.2


def test_the_fields_residual_vanishes_for_constant_sigma_and_a_harmonic_u():
    b = _circle()
    f = dirichlet_modes(3)(b[:, 0], b[:, 1]).T  # u_k = r^k cos/sin(k t): harmonic
    lift = HarmonicLift(b, f, radius=1.0, n_modes=8)
    x = _disk_points()
    const = MeshFreeFields(_Exp(0.0), PotentialNet(6, 1.0), lift).to(D)  # sigma = 1, w = 0
    assert const.residual(x).abs().max() < 1e-10
    # the same u with sigma = e^x is no solution: r = d_x sigma d_x u = e^x d_x u
    wrong = MeshFreeFields(_Exp(1.0), PotentialNet(6, 1.0), lift).to(D)
    r = wrong.residual(x)
    _, gu, _ = lift.jet(x)
    assert torch.allclose(r, torch.exp(x[:, 0])[:, None] * gu[:, 0], atol=1e-10)
    assert r.abs().max() > 0.5


def test_the_fast_derivatives_equal_autograd_for_trained_looking_weights():
    rec = MeshFreeEIT(dtype="float64", n_modes=6, hidden=(16, 16), sigma_hidden=(16, 16), sigma_features=8)
    b = _circle()
    fields = rec.fields(b, dirichlet_modes(2)(b[:, 0], b[:, 1]).T, 1.0, 1.0)
    with torch.no_grad():
        for p in fields.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = _disk_points(50)
    u1, g1, l1 = fields.jet(x)
    u2, g2, l2 = autograd_jet(fields.potentials, x)
    assert torch.allclose(g1, g2, atol=1e-10) and torch.allclose(l1, l2, atol=1e-10)
    r = fields.residual(x)
    assert torch.allclose(r, flux_divergence(fields.sigma_net, fields.potentials, x), atol=1e-10)
    assert r.abs().max() > 1e-2  # the check compares something that is not zero


def test_boundary_values_and_current_density_of_the_homogeneous_disk():
    R, c = 2.0, 0.7
    b = _circle(96, R)
    f = dirichlet_modes(4)(b[:, 0], b[:, 1]).T
    lift = HarmonicLift(b, f, radius=R, n_modes=10)
    assert lift.fit_error < 1e-12
    fields = MeshFreeFields(_Exp(0.0, c), PotentialNet(8, R), lift).to(D)  # sigma = c
    u, flux, sigma_b = (t.detach() for t in fields.boundary(torch.as_tensor(b)))
    assert torch.allclose(u, torch.as_tensor(f), atol=1e-12)
    exact = homogeneous_flux(np.arctan2(b[:, 1], b[:, 0]), 4, R, sigma=c).T  # c k cos(k t) / R
    assert np.allclose(flux.numpy(), exact, atol=1e-10)
    assert not np.allclose(flux.numpy(), exact * 1.01, atol=1e-4)  # a 1 % error would be seen
    assert torch.allclose(sigma_b, torch.full_like(sigma_b, c))


def test_the_sampler_is_uniform_in_the_disk_and_redraws_on_schedule():
    s = CollocationSampler(4000, 0.5, every=3, seed=1, dtype=D)
    r2 = (s.points**2).sum(1)
    assert r2.max() <= 0.25 and abs(float(r2.mean()) - 0.125) < 0.01  # E|x|^2 = R^2 / 2
    first = s.points
    s.begin_step(1)
    assert s.points is first
    s.begin_step(3)
    assert not torch.equal(s.points, first)


def test_mollified_phantom_ramps_the_edges():
    p = Phantom(1.0, [Circle(0.0, 0.0, 0.4, 3.0)])
    m = Mollified(p, 0.1)
    pts = np.array([[0.0, 0.0], [0.4, 0.0], [0.8, 0.0]])
    v = m(pts)
    assert v[0] == 3.0 and v[2] == 1.0 and 1.5 < v[1] < 2.5
    assert np.array_equal(Mollified(p, 0.0)(pts), p(pts))


@pytest.fixture(scope="module")
def small_problem():
    models = continuum_models(radius=1.0, modes=2, h=1 / 8, h_fine=1 / 16)
    return continuum_problem(Phantom(1.0, [Circle(0.2, 0.1, 0.3, 2.0)]), noise=0.01, seed=0, modes=2,
                             models=models)


def test_continuum_data_are_the_flux_plus_noise(small_problem):
    pr = small_problem
    b, f, g = cauchy_data(pr)
    assert f.shape == g.shape == (pr.model.nb, 4)
    clean = pr.info["clean"].reshape(4, -1).T
    std = pr.noise.reshape(4, -1).T
    assert 0.5 < np.std((g - clean) / std) < 1.5  # noise at the stated level
    exact = homogeneous_flux(pr.model.boundary_angles, 2, 1.0).T
    assert 0.005 < np.abs(clean - exact).max() < 0.5  # the inclusion changes the flux, a little
    assert abs(pr.sigma_bg - 1.0) < 0.1


def test_a_short_fit_decreases_the_loss(small_problem):
    rec = MeshFreeEIT(iterations=40, lr=5e-3, n_collocation=128, hidden=(16, 16), sigma_hidden=(16, 16),
                      sigma_features=8, track_every=10)
    res = rec.reconstruct(small_problem)
    loss = res.fit.history["loss"]
    assert len(loss) == 40 and np.mean(loss[-5:]) < 0.7 * np.mean(loss[:5])
    assert res.arrays["sigma"].shape == (small_problem.n_cells,) and np.all(res.arrays["sigma"] > 0)
    assert np.isfinite(res.metrics["rel_l2"]) and set(res.metrics["final_terms"]) >= {"pde_l2", "neumann"}


def test_the_loss_weights_its_terms(small_problem):
    rec = MeshFreeEIT(n_collocation=64, hidden=(8,), sigma_hidden=(8,), sigma_features=4)
    b, f, _ = cauchy_data(small_problem)
    fields = rec.fields(b, f, small_problem.sigma_bg, small_problem.radius)
    _, loss = rec.objective(fields, small_problem)
    terms = {k: v.detach() for k, v in loss.terms().items()}
    expected = sum(loss.weights[k] * v for k, v in terms.items())
    assert torch.allclose(loss(None).detach(), expected)
    assert float(terms["pde_l2"]) < 1e-10 and float(terms["neumann"]) > 0  # harmonic start, data unexplained
    assert isinstance(loss, BarSochenLoss)


@pytest.mark.parametrize("settings, message", [
    (dict(n_collocation=0), "n_collocation"),
    (dict(n_collocation=8), "n_collocation"),
    (dict(lr=-1.0), "lr"),
    (dict(neumann_weight=0.0), "nothing is measured"),
    (dict(tv_weight=-1.0), "tv_weight"),
    (dict(dtype="float16"), "dtype"),
    (dict(lift=False, dirichlet_weight=0.0), "lift=False"),
    (dict(threads=0), "threads"),
    (dict(iterations=2.5), "iterations"),
])
def test_bad_settings_raise_a_clear_error(settings, message):
    with pytest.raises(ValueError, match=message):
        MeshFreeEIT(**settings).validate()


def test_bad_inputs_raise_a_clear_error():
    with pytest.raises(ValueError, match="DirichletModel"):
        cauchy_data(SimpleNamespace(model=object(), info={}, y=np.zeros(3)))
    with pytest.raises(ValueError, match="n_modes"):
        HarmonicLift(_circle(8), np.ones((8, 1)), 1.0, n_modes=4)
    with pytest.raises(ValueError, match="finer"):
        continuum_models(h=1 / 8, h_fine=1 / 4)
    with pytest.raises(ValueError, match="noise"):
        continuum_problem(noise=0.0, models=(SimpleNamespace(P=8), SimpleNamespace(P=8)))
    with pytest.raises(ValueError, match="modes"):
        dirichlet_modes(0)
