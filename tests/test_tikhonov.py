"""Tikhonov deconvolution with its weight chosen by GCV, and the deblurring DIP that starts from it."""
import math

import pytest
import torch

from shared.image import DeepImagePrior, deblur_problem, resize, to_tensor, validate_array
from shared.metrics import psnr
from shared.operators import Blur, gaussian_kernel
from shared.operators.tikhonov import LAMBDA_GRID, gcv_trace, laplacian, tikhonov_gcv, tikhonov_solve


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
    with pytest.raises(TypeError, match="Blur"):
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
