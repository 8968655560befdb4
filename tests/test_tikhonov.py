"""Tikhonov deconvolution with its weight chosen by GCV, and the deblurring DIP that starts from it."""
import math

import pytest
import torch

from shared.image import DeepImagePrior, deblur_problem, resize, to_tensor, validate_array
from shared.metrics import psnr
from shared.operators import Blur, gaussian_kernel
from shared.operators.tikhonov import (LAMBDA_GRID, gcv_trace, laplacian, tikhonov_consistency, tikhonov_gcv,
                                       tikhonov_solve)


def _image(size: int) -> torch.Tensor:
    from skimage import data

    return resize(to_tensor(validate_array(data.camera())), (size, size))


def _line_kernel(length: int = 9) -> torch.Tensor:
    k = torch.zeros(length, length)
    for i in range(length):
        k[i, i] = 1.0
    return k / k.sum()


def test_tikhonov_solve_satisfies_its_normal_equations():
    x = _image(48)
    op = Blur(_line_kernel(), padding="reflect")
    y = op.A(x) + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    lam, lap = 0.01, laplacian()
    sol = tikhonov_solve(op, y, lam, iterations=500, tol=1e-7)
    lhs = op.A_adjoint(op.A(sol)) + lam * lap.A_adjoint(lap.A(sol))
    assert float((lhs - op.A_adjoint(y)).norm() / op.A_adjoint(y).norm()) < 1e-4
    with pytest.raises(ValueError, match="positive"):
        tikhonov_solve(op, y, 0.0)


def test_gcv_trace_is_the_transfer_sum_and_falls_with_the_weight():
    op = Blur(gaussian_kernel(1.5), padding="reflect")
    traces = [gcv_trace(op, (32, 32), lam) for lam in (1e-4, 1e-2, 1.0)]
    assert 32 * 32 > traces[0] > traces[1] > traces[2] > 1.0  # the mean (f = 0) always passes: |L_0| = 0


@pytest.mark.parametrize("kernel", ["gaussian", "motion"])
def test_gcv_chooses_a_weight_near_the_best_and_beats_the_blurred_input(kernel):
    """With no truth and no noise level, GCV lands within a half-decade step of the grid's best
    weight (PSNR within 0.5 dB of it) and well above the blurred image."""
    x = _image(64)
    op = Blur(gaussian_kernel(1.5) if kernel == "gaussian" else _line_kernel(), padding="reflect")
    y = op.A(x) + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    res = tikhonov_gcv(op, y)
    assert res.lam in LAMBDA_GRID and set(res.gcv) == set(LAMBDA_GRID)
    scores = {lam: float(psnr(tikhonov_solve(op, y, lam, iterations=200).clamp(0, 1), x)) for lam in LAMBDA_GRID}
    best = max(scores.values())
    chosen = float(psnr(res.x.clamp(0, 1), x))
    assert chosen >= best - 0.5, (res.lam, scores)
    assert chosen >= float(psnr(y.clamp(0, 1), x)) + 1.0
    assert all(math.isfinite(v) and v > 0 for v in res.gcv.values())


def test_tikhonov_gcv_refuses_what_it_cannot_invert():
    with pytest.raises(TypeError, match="Blur or Downsample"):
        tikhonov_gcv(object(), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="valid"):
        tikhonov_gcv(Blur(gaussian_kernel(1.0), padding="valid"), torch.zeros(1, 1, 16, 16))


def test_deblurring_dip_starts_from_the_tikhonov_estimate_and_improves_on_it():
    """The default deblurring fit: the network's input is the GCV-weighted Tikhonov estimate,
    cosine steps, no early stopping; a short fit ends above that estimate and the blurred image."""
    x = _image(128)
    problem = deblur_problem(x, multiple=16, blur_std=1.5, sigma=0.01, simulate=True, seed=0)
    dip = DeepImagePrior(iterations=300, seed=0)
    s = dip.settings("deblur")
    assert s["net_input"] == "tikhonov" and s["schedule"] == "cosine" and s["stop"] == "none"
    assert s["input_noise"] == 0.0 and s["average"] == 0.9
    rec = dip.reconstruct(problem)
    m = rec.metrics
    assert rec.config["net_input"] == "tikhonov" and rec.config["tikhonov_lambda"] == dip.tikhonov_.lam
    assert m["psnr_tikhonov"] > m["psnr_blurred_input"] + 1.0, m
    assert m["psnr"] > m["psnr_tikhonov"], m
    assert DeepImagePrior(net_input="noise").settings("deblur")["stop"] == "eswmv"
    with pytest.raises(ValueError, match="for deblurring"):
        DeepImagePrior(net_input="tikhonov").settings("inpaint")
    with pytest.raises(ValueError, match="unknown network input"):
        DeepImagePrior(net_input="wiener").check()


def _dense(apply, n_in: int, shape: tuple[int, int]) -> torch.Tensor:
    """The matrix of a linear map of ``(1, 1, *shape)`` images (columns = images of the unit vectors)."""
    cols = [apply(torch.eye(n_in, dtype=torch.float64)[i].reshape(1, 1, *shape)).reshape(-1) for i in range(n_in)]
    return torch.stack(cols, dim=1)


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_gcv_trace_is_exact_for_periodic_blurs_and_downsamplers(factor):
    """With circular boundaries the Fourier/Sherman-Morrison formula is the exact ``tr H_lam``."""
    from shared.operators import Downsample

    H = W = 16
    op = Blur(gaussian_kernel(1.2), padding="circular") if factor == 1 else Downsample(factor, padding="circular")
    op = op.double()
    lap = Blur(torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]]), padding="circular").double()
    A, L = _dense(op.A, H * W, (H, W)), _dense(lap.A, H * W, (H, W))
    for lam in (1e-3, 0.1):
        exact = torch.trace(A @ torch.linalg.solve(A.T @ A + lam * L.T @ L, A.T))
        assert gcv_trace(op, (H, W), lam) == pytest.approx(float(exact), rel=1e-6)


def test_tikhonov_gcv_super_resolves_and_corrects_towards_the_measurements():
    """On a down-sampler GCV gives an estimate above bicubic; with a centre it returns the centre
    plus the smallest correction, which fits the measurements far better than the centre did."""
    from shared.operators import Downsample

    x = _image(64)
    op = Downsample(2)
    y = op.A(x)
    res = tikhonov_gcv(op, y)
    bicubic = torch.nn.functional.interpolate(y, scale_factor=2, mode="bicubic", align_corners=False)
    assert float(psnr(res.x.clamp(0, 1), x)) > float(psnr(bicubic.clamp(0, 1), x)) + 0.5
    centre = torch.nn.functional.avg_pool2d(res.x, 3, 1, 1)  # a blurred estimate: misfits y
    fixed = tikhonov_gcv(op, y, centre=centre)
    misfit = lambda z: float((op.A(z) - y).norm())  # noqa: E731
    assert misfit(fixed.x) < 0.2 * misfit(centre)
    assert float(psnr(fixed.x.clamp(0, 1), x)) > float(psnr(centre.clamp(0, 1), x))
    with pytest.raises(ValueError, match="centre"):
        tikhonov_gcv(op, y, centre=x[..., :32, :32])


def test_consistency_takes_the_measurements_weight_not_the_centred_gcv():
    """The centre's misfit is not noise: the consistency step uses the weight GCV picks for y alone
    (small for noise-free measurements) and removes nearly all of the centre's misfit, where GCV of
    the centred problem keeps a larger weight."""
    from shared.operators import Downsample

    x = _image(64)
    op = Downsample(2)
    y = op.A(x)
    centre = torch.nn.functional.avg_pool2d(x, 3, 1, 1) + 0.02  # blurred and offset: a structured misfit
    fixed = tikhonov_consistency(op, y, centre)
    assert fixed.lam == tikhonov_gcv(op, y).lam and fixed.lam <= 1e-2
    assert float((op.A(fixed.x) - y).norm()) < 0.05 * float((op.A(centre) - y).norm())
    assert float(psnr(fixed.x.clamp(0, 1), x)) > float(psnr(tikhonov_gcv(op, y, centre=centre).x.clamp(0, 1), x))


def test_superres_dip_ends_with_the_data_consistency_step():
    """By default a super-resolution fit is corrected towards its measurements (GCV weight): the
    result fits the low-resolution image better than the network's output, and scores above it."""
    from shared.image import superres_problem

    problem = superres_problem(_image(64), multiple=16, scale=2, simulate=True, seed=0)
    dip = DeepImagePrior(iterations=60, seed=0)
    assert dip.settings("superres")["consistency"] == "tikhonov"
    assert dip.settings("inpaint")["consistency"] == "fill" and dip.settings("deblur")["consistency"] == "none"
    rec = dip.reconstruct(problem)
    assert rec.config["consistency"] == "tikhonov" and rec.config["consistency_lambda"] == dip.consistency_.lam
    assert dip.consistency_.lam == tikhonov_gcv(problem.forward, problem.y).lam
    op, y = problem.forward, problem.y
    assert rec.metrics["psnr"] > rec.metrics["psnr_network"], rec.metrics
    off = DeepImagePrior(iterations=60, seed=0, consistency="none").reconstruct(problem)
    assert "psnr_network" not in off.metrics and off.config["consistency"] == "none"
    assert off.metrics["psnr"] == pytest.approx(rec.metrics["psnr_network"], abs=1e-4)
    assert float((op.A(rec.arrays["output"]) - y).norm()) < 0.5 * float((op.A(off.arrays["output"]) - y).norm())
    with pytest.raises(ValueError, match="consistency='none'"):
        DeepImagePrior(consistency="tikhonov").settings("inpaint")
    with pytest.raises(ValueError, match="unknown consistency"):
        DeepImagePrior(consistency="yes").check()
