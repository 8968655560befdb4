"""Compressed sensing with untrained generators: trigonometric Jacobian, minimum-norm GD."""
import math

import torch

from shared.fit import Objective, Optimiser, fit
from shared.networks import ConvGenerator
from shared.operators import GaussianMatrix
from shared.spectral import gradient_descent_min_norm, jacobian_spectrum, principal_angles, trig_basis


def test_trig_basis_is_orthonormal_and_ordered_by_frequency():
    Q = trig_basis(64, 5)
    assert torch.allclose(Q.T @ Q, torch.eye(5, dtype=Q.dtype), atol=1e-10)
    # Third vector is (up to sign) the first sine.
    t = torch.arange(64, dtype=torch.float64)
    s = torch.sin(2 * math.pi * t / 64)
    assert abs(abs(float(Q[:, 2] @ s / s.norm())) - 1) < 1e-8


def test_principal_angles_of_equal_and_orthogonal_spans():
    A = torch.randn(30, 3, dtype=torch.float64)
    assert principal_angles(A, A @ torch.randn(3, 3, dtype=torch.float64)).max() < 1e-6
    E = torch.eye(30, dtype=torch.float64)
    assert torch.allclose(principal_angles(E[:, :2], E[:, 2:4]), torch.full((2,), math.pi / 2, dtype=torch.float64))


def test_leading_jacobian_singular_vectors_are_low_frequency_trigonometric():
    G = ConvGenerator(128, k=256, width=3.0, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    U, _, _ = torch.linalg.svd(G.jacobian(), full_matrices=False)
    for k in (5, 9, 17):
        cos = torch.cos(principal_angles(U[:, :k], trig_basis(128, k)))
        assert cos.min() > 0.9, (k, cos.min())
    # A random subspace is far from the trigonometric one (the test can fail).
    R = torch.randn(128, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.cos(principal_angles(R, trig_basis(128, 9))).min() < 0.5


def test_randomized_jacobian_spectrum_matches_the_dense_jacobian():
    G = ConvGenerator(64, k=32, width=2.0, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    S_exact = torch.linalg.svdvals(G.jacobian())
    S = jacobian_spectrum(G, None, rank=8, power_iterations=3)
    assert torch.allclose(S.double(), S_exact[:8], rtol=1e-3)


def test_gradient_descent_from_zero_reaches_the_minimum_norm_solution():
    g = torch.Generator().manual_seed(0)
    G = ConvGenerator(32, k=8, width=2.0, generator=g, dtype=torch.float64)
    J = G.jacobian()  # linear generator x = J c, p = 256 > m
    A = torch.randn(12, 32, generator=g, dtype=torch.float64) / math.sqrt(12)
    x = torch.sin(torch.arange(32, dtype=torch.float64) / 5)
    M = A @ J
    c, dist = gradient_descent_min_norm(M, A @ x, steps=20000)
    c_mn = torch.linalg.pinv(M) @ (A @ x)
    assert dist[-1] < 1e-6 * float(c_mn.norm())
    assert torch.allclose(M @ c, A @ x, atol=1e-6)
    # Another interpolating solution has a larger norm.
    null = torch.linalg.svd(M, full_matrices=True).Vh[-1]
    assert float((c + null).norm()) > float(c.norm())


def test_two_layer_generator_recovers_a_smooth_signal_from_few_gaussian_measurements():
    n = 64
    t = torch.arange(n, dtype=torch.float32) / n
    x = (0.5 + 0.3 * torch.sin(2 * math.pi * t) + 0.1 * torch.cos(6 * math.pi * t))[None]
    A = GaussianMatrix(n // 2, n, generator=torch.Generator().manual_seed(0))
    G = ConvGenerator(n, k=64, width=3.0, init_std=0.1, generator=torch.Generator().manual_seed(1))
    res = fit(G, None, Objective(A(x), physics=A), optimiser=Optimiser(lr=1e-2, iterations=600))
    err = float((res.final - x).norm() / x.norm())
    err_mn = float((A.A_dagger(A(x)) - x).norm() / x.norm())
    assert err < 0.05 and err < 0.2 * err_mn
