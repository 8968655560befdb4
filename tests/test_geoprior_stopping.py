"""Per-chart noise-adaptive stopping: local noise estimates, the normal residual, the discrepancy rule."""
import numpy as np
import pytest
import torch

from geoprior import DeepGeometricPrior
from geoprior.cover import build_cover
from geoprior.emd import exact_assignment
from geoprior.noise import NormalResidual, height_field, patch_noise
from geoprior.reconstruct import fit_charts
from geoprior.shapes import sphere
from shared.threads import thread_limits


@pytest.fixture(autouse=True)
def _one_thread():
    with thread_limits(torch_threads=1):
        yield


def _saddle(n, sigma, seed, radius=1.0, offset=0.0):
    """``n`` points uniform on the disk of ``radius`` under ``z = 0.3 (x^2 - y^2)``, noise ``sigma``
    along the normal; returns (noisy, clean)."""
    rng = np.random.default_rng(seed)
    r, t = radius * np.sqrt(rng.uniform(0, 1, n)), rng.uniform(0, 2 * np.pi, n)
    x, y = r * np.cos(t), r * np.sin(t)
    normal = np.stack([-0.6 * x, 0.6 * y, np.ones(n)], 1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    clean = np.stack([x + offset, y, 0.3 * (x ** 2 - y ** 2)], 1)
    return clean + sigma * rng.normal(size=(n, 1)) * normal, clean


def test_noise_estimate_on_a_plane_and_a_sphere_of_known_noise():
    rng = np.random.default_rng(0)
    plane = np.c_[rng.uniform(-1, 1, (6000, 2)), 0.01 * rng.normal(size=6000)]
    ball = sphere(6000, seed=1)
    ball = ball * (1 + 0.02 * rng.normal(size=(6000, 1)))  # radial = normal noise
    for points, sigma in ((plane, 0.01), (ball, 0.02)):
        cover = build_cover(points, radius=0.08, overlap=1.3, seed=0)
        est = patch_noise(cover)
        ratio = est.sigma_world / sigma
        assert abs(np.median(ratio) - 1) < 0.05 and ratio.min() > 0.85 and ratio.max() < 1.15, ratio
        assert np.allclose(est.sigma * cover.scale, est.sigma_world)
        alone = patch_noise(cover, neighbours=0).sigma_world / sigma
        assert np.abs(alone - 1).max() < 0.25 and np.abs(alone - 1).std() > np.abs(ratio - 1).std()


def test_height_field_noise_is_exact_for_a_quadric_and_dof_corrected():
    """On z = 0.3 (x^2 - y^2) the quadratic height field holds the surface, so the estimate
    is the noise alone: over 40 patches its mean square is the noise variance."""
    local = np.stack([_saddle(100, 0.05, seed)[0] for seed in range(40)])
    rms, coef = height_field(local, np.ones(local.shape[:2], bool))
    assert np.mean(rms ** 2) == pytest.approx(0.05 ** 2, rel=0.05)
    assert np.allclose(coef[:, 3:].mean(0), [0.3, 0.0, -0.3], atol=0.02)  # x^2, xy, y^2


def test_normal_residual_of_a_perfect_chart_is_the_noise():
    """Chart samples on the clean saddle at other positions than the points (a jittered grid's
    tangential mismatch): the residual relative to the height field is the noise, the plain
    residual along the patch normal carries the curvature times the mismatch."""
    g = np.linspace(-1, 1, 23)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    grid = grid[(grid ** 2).sum(1) <= 1]
    n = len(grid)
    noisy, _ = _saddle(n, 0.005, 0)
    samples = np.c_[grid, 0.3 * (grid[:, 0] ** 2 - grid[:, 1] ** 2)]
    perm = torch.as_tensor(exact_assignment(samples[None], noisy[None], np.array([n])))
    _, coef = height_field(noisy[None], np.ones((1, n), bool))
    t = torch.as_tensor(noisy[None])
    mask = torch.ones(1, n, dtype=torch.bool)
    relative = float(NormalResidual(t, mask, torch.as_tensor(coef))(torch.as_tensor(samples[None]), perm)[0])
    plain = float(NormalResidual(t, mask)(torch.as_tensor(samples[None]), perm)[0])
    assert relative == pytest.approx(0.005, rel=0.15) and plain > 1.5 * relative


def test_per_chart_stopping_stops_near_the_noise_level_and_later_for_lower_noise():
    """Two charts in one batched fit (patches 10 apart, so their noise estimates do not mix):
    sigma 0.02 and 0.005 along the normal of z = 0.3 (x^2 - y^2) on a disk of radius 0.5 (400
    points each).  Each chart stops once its residual reaches tau x its estimated noise level,
    within 25% of the true one; the low-noise chart stops later.  (tau 1.15: a (32, 32, 32)
    chart's residual levels off a few per cent above a low noise level, see geoprior.noise.)"""
    sigmas = (0.02, 0.005)
    points = np.concatenate([_saddle(400, s, i, radius=0.5, offset=10.0 * i)[0] for i, s in enumerate(sigmas)])
    diag = np.linalg.norm(points.max(0) - points.min(0))
    cover = build_cover(points, radius=1.05 / diag, overlap=1.0, seed=0)
    assert cover.n_patches == 2 and (cover.sizes == 400).all()
    which = (cover.centres[:, 0] > 5).astype(int)  # the saddle of each patch
    true = np.array(sigmas)[which] / cover.scale  # patch units
    settings = DeepGeometricPrior(hidden=(32, 32, 32), iterations=400, stopping="discrepancy", discrepancy_tau=1.15)
    _, result, _ = fit_charts(cover, settings)
    rule, stops = result.member_rule, result.member_stop_iterations.numpy()
    assert result.stopped_by == "stopping" and result.stop_iteration == stops.max() + 1
    assert (stops >= settings.rematch_start).all()  # not before the first exact matching
    high, low = int(np.flatnonzero(which == 0)[0]), int(np.flatnonzero(which == 1)[0])
    assert stops[low] > stops[high]
    at_stop = rule.stop_residuals.numpy()
    assert at_stop == pytest.approx(true, rel=0.25), at_stop / true
    assert (at_stop <= 1.15 * rule.sigma.numpy()).all()
    assert np.allclose(rule.sigma.numpy(), patch_noise(cover).sigma)


def test_discrepancy_setting_is_checked_and_offered_on_the_cli():
    from shared.cli import build_parser

    assert "discrepancy" in DeepGeometricPrior.choices["stopping"]
    assert DeepGeometricPrior().stopping == "discrepancy" and DeepGeometricPrior().discrepancy_tau == 1.0
    with pytest.raises(ValueError, match="^stopping must be"):
        DeepGeometricPrior(stopping="discrepancy", loss="sinkhorn").check()
    with pytest.raises(ValueError, match="^discrepancy_tau"):
        DeepGeometricPrior(stopping="discrepancy", discrepancy_tau=0.0).check()
    args = build_parser().parse_args(["geoprior", "reconstruct", "x.xyz", "--stop", "discrepancy",
                                      "--discrepancy-tau", "1.2"])
    assert args.stopping == "discrepancy" and args.discrepancy_tau == 1.2


def test_reconstruct_reports_the_chart_stops():
    rng = np.random.default_rng(0)
    points = sphere(400, seed=2) + 0.05 * rng.normal(size=(400, 3))
    rec = DeepGeometricPrior(radius=0.25, hidden=(16, 16), iterations=150, consistency_iterations=0, mesh=False,
                             stopping="discrepancy")
    res = rec.reconstruct(points)
    info, stops = res.info, res.fit.member_stop_iterations
    assert info["charts_stopped"] == int((stops >= 0).sum()) and stops.shape == (info["n_patches"],)
    assert info["iterations_run"] <= 150 and res.config["discrepancy_tau"] == 1.0
    assert info["charts_stopped"] > 0 and 0 < info["chart_stop_residual_over_noise"] <= 1.0 + 1e-6
    assert info["chart_stop_iterations"]["q0"] >= rec.rematch_start
