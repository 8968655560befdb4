"""Total variation, PSNR / SSIM against scikit-image, relative error, Y-channel PSNR."""
import math

import numpy as np
import pytest
import torch
from skimage.data import astronaut, camera
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from shared.metrics import psnr, psnr_y, relative_error, rgb_to_y, ssim
from shared.regularisers import TotalVariation, tv_anisotropic, tv_isotropic


def test_tv_of_constant_is_zero_and_gradient_finite():
    x = torch.full((2, 3, 8, 8), 0.3, requires_grad=True)
    for R in (tv_isotropic, tv_anisotropic):
        v = R(x)
        assert v.item() == 0.0
        (g,) = torch.autograd.grad(v, x)
        assert torch.isfinite(g).all()


def test_tv_known_values():
    H, W, h = 6, 10, 0.8
    step = torch.zeros(1, 1, H, W)
    step[..., W // 2:] = h
    # one column of horizontal jumps of height h in every row: sum H h, mean over H W pixels
    assert tv_anisotropic(step).item() == pytest.approx(h / W, rel=1e-6)
    assert tv_isotropic(step).item() == pytest.approx(h / W, rel=1e-5)
    bump = torch.zeros(1, 1, 5, 5)
    bump[0, 0, 2, 2] = 1.0
    # anisotropic: 4 unit jumps; isotropic: sqrt(2) at the bump + 1 left of it + 1 above it
    assert tv_anisotropic(bump).item() == pytest.approx(4 / 25, rel=1e-6)
    assert tv_isotropic(bump).item() == pytest.approx((2 + math.sqrt(2)) / 25, rel=1e-5)
    assert TotalVariation("anisotropic")(bump).item() == pytest.approx(4 / 25, rel=1e-6)
    with pytest.raises(ValueError, match="N, C, H, W"):
        tv_isotropic(torch.rand(5, 5))


def _pair(seed=0):
    rng = np.random.default_rng(seed)
    ref = astronaut()[100:196, 150:230].astype(np.float64) / 255  # (96, 80, 3)
    noisy = np.clip(ref + rng.normal(0, 0.1, ref.shape), 0, 1)
    return ref, noisy


def test_psnr_matches_scikit_image():
    ref, noisy = _pair()
    ours = psnr(torch.from_numpy(np.moveaxis(noisy, -1, 0)), np.moveaxis(ref, -1, 0), data_range=1.0)
    assert ours == pytest.approx(peak_signal_noise_ratio(ref, noisy, data_range=1.0), abs=1e-10)
    assert psnr(ref, ref) == math.inf


def test_ssim_matches_scikit_image():
    ref, noisy = _pair(1)
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    sk = structural_similarity(ref, noisy, channel_axis=-1, **kw)
    ours = ssim(torch.from_numpy(np.moveaxis(noisy, -1, 0))[None], np.moveaxis(ref, -1, 0)[None], data_range=1.0)
    assert ours == pytest.approx(sk, abs=1e-7)
    grey = camera()[:64, :80].astype(np.float64)
    blurred = grey.copy()
    blurred[1:] = 0.5 * (grey[1:] + grey[:-1])
    sk_grey = structural_similarity(grey, blurred, **{**kw, "data_range": 255.0})
    assert ssim(blurred, grey, data_range=255.0) == pytest.approx(sk_grey, abs=1e-7)
    assert ssim(grey, grey, data_range=255.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))


def test_relative_error_and_input_checks():
    ref = torch.tensor([3.0, 4.0])
    assert relative_error(ref + torch.tensor([0.3, 0.4]), ref) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="differs"):
        psnr(torch.zeros(3, 4), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="NaN"):
        psnr(torch.tensor([float("nan")]), torch.tensor([0.0]))
    with pytest.raises(ValueError, match="empty"):
        ssim(np.zeros((0, 0)), np.zeros((0, 0)))


def test_y_channel_psnr_for_super_resolution():
    white, black = torch.ones(3, 4, 4), torch.zeros(3, 4, 4)
    assert rgb_to_y(white).flatten()[0].item() == pytest.approx(235.0)
    assert rgb_to_y(black).flatten()[0].item() == pytest.approx(16.0)
    rng = np.random.default_rng(2)
    hr = rng.random((3, 24, 20))
    sr = hr.copy()
    sr[:, :4, :] = 0  # damage only the border that the x4 evaluation crops away
    assert psnr_y(sr, hr, scale=4) == math.inf
    sr2 = np.clip(hr + rng.normal(0, 0.05, hr.shape), 0, 1)
    # reference formula written out in numpy
    y = lambda im: 16 + 65.481 * im[0] + 128.553 * im[1] + 24.966 * im[2]
    d = (y(sr2) - y(hr))[4:-4, 4:-4]
    expected = 10 * math.log10(255**2 / np.mean(d**2))
    assert psnr_y(torch.from_numpy(sr2)[None], torch.from_numpy(hr)[None], 4) == pytest.approx(expected, abs=1e-9)
