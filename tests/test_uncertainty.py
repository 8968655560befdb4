"""Linearised Laplace uncertainty: Jacobian products, randomized SVD, evidence, calibration."""
import math

import pytest
import torch
from torch import nn

from shared.fit import Objective, Optimiser, fit
from shared.uncertainty import (JacobianOperator, calibration, fit_precisions, linearised_laplace,
                                linearised_uncertainty, randomized_svd, snapshot)


class LinearModel(nn.Module):
    """x = J theta (an explicit Jacobian), for exact comparisons."""

    def __init__(self, J):
        super().__init__()
        self.register_buffer("J", J)
        self.theta = nn.Parameter(torch.zeros(J.shape[1]))

    def forward(self, z):
        return self.J @ self.theta


def _tiny_conv(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Upsample(scale_factor=2),
                         nn.Conv2d(4, 1, 3, padding=1), nn.Sigmoid())


def test_jacobian_products_match_the_explicit_jacobian():
    net = _tiny_conv()
    z = torch.randn(1, 2, 4, 4)
    A = torch.randn(20, 64) / 8
    op = JacobianOperator(net, z, forward=lambda x: A @ x.reshape(-1))
    params = dict(net.named_parameters())
    theta = op.theta.clone()

    def f(th):
        out = torch.func.functional_call(net, op._unflatten(th), (z,))
        return A @ out.reshape(-1)

    J = torch.autograd.functional.jacobian(f, theta)
    v = torch.randn(op.p)
    u = torch.randn(20)
    jx, jy = op.jvp_y(v)
    assert torch.allclose(jy, J @ v, atol=1e-5)
    assert torch.allclose(op.vjp_y(u), J.T @ u, atol=1e-5)
    # The double-backward fallback gives the same product.
    op._fwd_mode_x = False
    assert torch.allclose(op.jvp_y(v)[1], J @ v, atol=1e-5)
    assert set(params) == set(op.names)


def test_randomized_svd_matches_the_exact_svd():
    torch.manual_seed(1)
    m, p, k = 300, 120, 10
    Uq, _ = torch.linalg.qr(torch.randn(m, p))
    Vq, _ = torch.linalg.qr(torch.randn(p, p))
    s = 0.7 ** torch.arange(p, dtype=torch.float32)
    A = (Uq * s) @ Vq.T
    U, S, V = randomized_svd(lambda v: A @ v, lambda u: A.T @ u, (m, p), k, oversample=8, power_iterations=2,
                             generator=torch.Generator().manual_seed(0))
    assert torch.allclose(S, s[:k], rtol=1e-3, atol=1e-6)
    # Leading singular subspaces agree (cosines of principal angles ~ 1).
    cos = torch.linalg.svdvals(U[:, :5].T @ Uq[:, :5])
    assert cos.min() > 0.999
    assert torch.allclose(A @ V, U * S, atol=1e-4)


def _linear_gaussian(m=1000, p=200, alpha=4.0, beta=100.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(m, p, generator=g) / math.sqrt(p) * torch.logspace(0, -1, p)
    theta = torch.randn(p, generator=g) / math.sqrt(alpha)
    x = J @ theta
    y = x + torch.randn(m, generator=g) / math.sqrt(beta)
    return J, theta, x, y


def test_marginal_likelihood_recovers_known_precisions():
    J, _, _, y = _linear_gaussian()
    net = LinearModel(J)
    u = linearised_laplace(net, torch.zeros(1), y, rank=200, oversample=0, prior_mean="zero")
    assert abs(u.alpha / 4.0 - 1) < 0.3
    assert abs(u.beta / 100.0 - 1) < 0.15
    assert u.rank == 200 and u.singular_values.shape == (200,)
    # Predictive std equals the exact diag(J H^-1 J^T)^1/2 at full rank.
    H = u.beta * J.T @ J + u.alpha * torch.eye(200)
    exact = torch.diagonal(J @ torch.linalg.solve(H, J.T)).sqrt()
    assert torch.allclose(u.std, exact, rtol=1e-3, atol=1e-6)
    assert torch.allclose(u.std_noisy ** 2, exact ** 2 + 1 / u.beta, rtol=1e-3)


def test_prior_mean_snapshot_shifts_the_evidence_to_the_initialisation():
    J, theta, _, _ = _linear_gaussian(seed=2)
    theta0 = 3.0 * torch.ones(200)
    g = torch.Generator().manual_seed(5)
    y = J @ (theta0 + theta) + torch.randn(1000, generator=g) / 10.0
    net = LinearModel(J)
    with torch.no_grad():
        net.theta.copy_(theta0)
    init = snapshot(net)
    u = linearised_laplace(net, torch.zeros(1), y, rank=200, oversample=0, prior_mean=init)
    assert abs(u.alpha / 4.0 - 1) < 0.3
    wrong = linearised_laplace(net, torch.zeros(1), y, rank=200, oversample=0, prior_mean="zero")
    assert wrong.alpha < 0.5 * u.alpha  # a zero-mean prior must explain the offset theta0


def test_calibration_of_the_posterior_mean_is_nominal_with_a_forward_operator():
    J, theta, x, _ = _linear_gaussian(m=600, p=150, seed=3)
    g = torch.Generator().manual_seed(4)
    A = torch.randn(400, 600, generator=g) / math.sqrt(600)
    y = A @ x + torch.randn(400, generator=g) / 10.0
    Jy = A @ J
    H = 100.0 * Jy.T @ Jy + 4.0 * torch.eye(150)
    net = LinearModel(J)
    with torch.no_grad():
        net.theta.copy_(torch.linalg.solve(H, 100.0 * Jy.T @ y))  # posterior mean
    u = linearised_laplace(net, torch.zeros(1), y, forward=lambda v: A @ v, rank=150, oversample=0, prior_mean="zero")
    assert u.std_noisy is None
    cal = calibration(u.mean, u.std, x)
    assert 0.92 <= cal["fraction_within"] <= 0.985
    assert abs(cal["nominal"] - 0.9545) < 1e-3


def test_low_rank_unobserved_term_is_estimated_by_probes():
    J, _, _, y = _linear_gaussian(m=400, p=100, seed=6)
    net = LinearModel(J)
    u = linearised_laplace(net, torch.zeros(1), y, rank=20, extra_probes=300, alpha=4.0, beta=100.0, prior_mean="zero",
                           tail_model="none")
    # Exact variance with the rank-20 posterior.
    U, S, Vh = torch.linalg.svd(J, full_matrices=False)
    V = Vh[:20].T
    Sigma = V @ torch.diag(1 / (100 * S[:20] ** 2 + 4)) @ V.T + (torch.eye(100) - V @ V.T) / 4
    exact = torch.diagonal(J @ Sigma @ J.T).sqrt()
    assert (u.std - exact).abs().mean() / exact.mean() < 0.08


def test_calibration_rewards_informative_std():
    g = torch.Generator().manual_seed(0)
    sigma = torch.linspace(0.01, 1.0, 5000)
    truth = torch.zeros(5000)
    est = sigma * torch.randn(5000, generator=g)
    good = calibration(est, sigma, truth)
    assert 0.94 < good["fraction_within"] < 0.97
    assert good["test_log_likelihood"] > good["baseline_log_likelihood"] + 0.3
    bad = calibration(est, sigma.flip(0), truth)
    assert bad["test_log_likelihood"] < good["test_log_likelihood"]


def test_hook_on_a_fit_result_and_input_errors():
    net = _tiny_conv()
    z = torch.randn(1, 2, 8, 8)
    g = torch.Generator().manual_seed(0)
    y = torch.rand(1, 1, 16, 16, generator=g)
    res = fit(net, z, Objective(y), optimiser=Optimiser(lr=1e-2, iterations=30))
    u = linearised_uncertainty(res, rank=8)
    assert u.std.shape == y.shape and torch.isfinite(u.std).all() and (u.std > 0).all()
    assert u.singular_values[0] >= u.singular_values[-1]
    assert set(u.timings) >= {"svd_s", "evidence_s", "variance_s", "total_s"}
    with pytest.raises(ValueError, match="measurements"):
        linearised_uncertainty(object())
    with pytest.raises(ValueError, match="shape"):
        linearised_laplace(res.model, z, y[..., :8], rank=4)
    with pytest.raises(ValueError, match="prior_mean"):
        linearised_uncertainty(res, rank=4, prior_mean="init")
    # Whitening by a known noise std is the same posterior as beta = 1 / s^2.
    white = linearised_uncertainty(res, rank=8, noise_std=0.1, alpha=1.0, method="exact")
    plain = linearised_uncertainty(res, rank=8, beta=100.0, alpha=1.0, method="exact")
    assert torch.allclose(white.std, plain.std, rtol=1e-3, atol=1e-7)


def test_fit_precisions_keeps_a_fixed_value():
    s = torch.linspace(1, 0.1, 10)
    a, b, _ = fit_precisions(s, torch.ones(10), 5.0, 100, beta=7.0)
    assert b == 7.0 and a > 0


class _NoForwardMode(torch.autograd.Function):
    """A linear map with a backward only (like a FEM solve wrapped for autograd)."""

    @staticmethod
    def forward(ctx, x, A):
        ctx.save_for_backward(A)
        return A @ x

    @staticmethod
    def backward(ctx, g):
        (A,) = ctx.saved_tensors
        return A.T @ g.detach(), None


def test_exact_method_needs_only_backward_through_the_forward_model():
    J, theta, x, _ = _linear_gaussian(m=300, p=80, seed=7)
    g = torch.Generator().manual_seed(8)
    A = torch.randn(40, 300, generator=g) / math.sqrt(300)
    y = A @ x + torch.randn(40, generator=g) / 10.0
    net = LinearModel(J)
    fwd = lambda v: _NoForwardMode.apply(v, A)
    u = linearised_laplace(net, torch.zeros(1), y, forward=fwd, rank=40, prior_mean="zero", beta=100.0)
    ref = linearised_laplace(net, torch.zeros(1), y, forward=lambda v: A @ v, rank=40, prior_mean="zero",
                             beta=100.0, method="randomized", oversample=0, power_iterations=2)
    assert abs(u.alpha / ref.alpha - 1) < 1e-3
    assert torch.allclose(u.singular_values, ref.singular_values, rtol=1e-4)
    assert torch.allclose(u.std_observed, ref.std_observed, rtol=1e-3, atol=1e-6)


def test_batch_statistics_reproduce_the_training_function_without_touching_buffers():
    from shared.uncertainty import batch_statistics

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU())
    z = torch.randn(1, 1, 8, 8)
    net.train()
    train_out = net(z)
    mean = net[1].running_mean.clone()
    net.eval()
    with batch_statistics(net):
        out = net(z)
    assert torch.allclose(out, train_out) and torch.equal(net[1].running_mean, mean)
    assert not torch.allclose(net(z), train_out)  # eval mode (running stats) differs


def test_explicit_pointwise_jacobian_gives_the_same_posterior():
    """Per-sample gradients of a coordinate MLP (``pointwise_jacobian``) as ``output_jacobian``:
    the same exact posterior as the m vector-Jacobian products, with a masked linear forward."""
    from shared.uncertainty import pointwise_jacobian

    g = torch.Generator().manual_seed(3)
    z = torch.rand(40, 2, generator=g, dtype=torch.float64)
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    A = torch.randn(25, 40, generator=g, dtype=torch.float64)
    y = A @ net(z).detach().reshape(-1) + 0.01 * torch.randn(25, generator=g, dtype=torch.float64)
    y[3] = float("nan")  # a missing measurement
    fwd = lambda x: A @ x.reshape(-1)  # noqa: E731
    jx = pointwise_jacobian(net, z)
    assert jx.shape == (40, sum(p.numel() for p in net.parameters()))
    kw = dict(forward=fwd, rank=20, prior_mean="zero", method="exact", beta=1e4)
    ref = linearised_laplace(net, z, y, **kw)
    fast = linearised_laplace(net, z, y, output_jacobian=jx, **kw)
    assert torch.allclose(fast.std, ref.std, rtol=1e-6, atol=1e-10)
    assert fast.alpha == pytest.approx(ref.alpha, rel=1e-6)
    class Mixing(nn.Module):  # every output also sees the mean of all rows
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 1).double()

        def forward(self, x):
            return self.lin(x).squeeze(-1) + self.lin(x).mean()

    with pytest.raises(ValueError, match="not pointwise"):
        pointwise_jacobian(Mixing(), z)
