"""Classical baselines of the image front end (shared.image.baselines) and the Set5 metric
(shared.image.sr_metrics): each wrapper restores a small crop better than its degraded input,
the SR metric gives known answers, bad input gets a clear message."""
import math

import numpy as np
import pytest
import torch

from shared.image import baselines as B
from shared.image.io import to_grey, to_tensor, validate_array
from shared.image.sr_metrics import modcrop, sr_psnr, sr_ssim
from shared.metrics import psnr

SIGMA = 25 / 255


@pytest.fixture(scope="module")
def rgb48():
    """A 48x48 RGB crop of scikit-image's astronaut (face and helmet: edges and texture)."""
    from skimage import data

    img = to_tensor(validate_array(data.astronaut()))
    return img[..., 60:108, 180:228].contiguous()


def _noisy(x, sigma=SIGMA, seed=0):
    return (x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


def _blurred(x, seed=0):
    from shared.operators import Blur, gaussian_kernel

    k = gaussian_kernel(1.5)
    y = Blur(k, padding="reflect").A(x)
    return k, y + 0.01 * torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))


def test_cbm3d_beats_the_noisy_input_in_colour_and_grey(rgb48):
    pytest.importorskip("bm3d", reason="bm3d is an optional extra (pip install -e '.[benchmark]'); CI installs .[test]")
    for clean in (rgb48, to_grey(rgb48)):
        noisy = _noisy(clean)
        out = B.cbm3d_denoise(noisy, SIGMA)
        assert out.shape == clean.shape and out.dtype == torch.float32
        assert psnr(out, clean) > psnr(noisy, clean) + 3


def test_nlm_beats_the_noisy_input_in_colour_and_grey(rgb48):
    for clean in (rgb48, to_grey(rgb48)):
        noisy = _noisy(clean)
        out = B.nlm_denoise(noisy, SIGMA)
        assert out.shape == clean.shape
        assert psnr(out, clean) > psnr(noisy, clean) + 2


@pytest.mark.parametrize("method", ["bicubic", "lanczos"])
def test_upsampling_beats_pixel_replication(rgb48, method):
    from shared.operators import Downsample

    low = Downsample(4).A(rgb48).clamp(0, 1)
    out = B.upsample(low, 4, method)
    nearest = torch.nn.functional.interpolate(low, scale_factor=4, mode="nearest")
    assert out.shape == rgb48.shape
    assert sr_psnr(out, rgb48, 4) > sr_psnr(nearest, rgb48, 4) + 0.5


def test_tikhonov_upsampling_beats_bicubic_with_the_known_downsampler(rgb48):
    from shared.operators import Downsample

    low = Downsample(4).A(rgb48).clamp(0, 1)
    out = B.tikhonov_upsample(low, 4)
    assert out.shape == rgb48.shape
    assert sr_psnr(out, rgb48, 4) > sr_psnr(B.upsample(low, 4, "bicubic"), rgb48, 4) + 0.3
    with pytest.raises(ValueError, match="scale"):
        B.tikhonov_upsample(low, 1.5)


def test_upsampling_keeps_a_constant_image():
    low = torch.full((1, 3, 8, 8), 0.4)
    for method in B.UPSAMPLERS:
        assert torch.allclose(B.upsample(low, 4, method), torch.full((1, 3, 32, 32), 0.4), atol=1e-5)


def test_biharmonic_inpainting_beats_the_masked_input_and_keeps_known_pixels(rgb48):
    known = (torch.rand((1, 1, 48, 48), generator=torch.Generator().manual_seed(0)) < 0.6).float()
    for clean in (rgb48, to_grey(rgb48)):
        masked = clean * known
        out = B.biharmonic_inpaint(masked, known)
        assert psnr(out, clean) > psnr(masked, clean) + 10
        assert torch.allclose(out * known, masked, atol=1e-6)


@pytest.mark.parametrize("deblur", [lambda y, k: B.richardson_lucy_deblur(y, k, 30),
                                    lambda y, k: B.wiener_deblur(y, k, 0.01),
                                    lambda y, k: B.unsupervised_wiener_deblur(y, k)],
                         ids=["richardson_lucy", "wiener", "unsupervised_wiener"])
def test_deconvolution_beats_the_blurred_input(rgb48, deblur):
    k, y = _blurred(rgb48)
    out = deblur(y, k)
    assert out.shape == rgb48.shape
    assert psnr(out, rgb48) > psnr(y.clamp(0, 1), rgb48) + 1


def test_reflection_padding_helps_the_deconvolution_at_the_border(rgb48):
    """Why the wrappers pad: without it RL assumes a black surround and rings at the edges."""
    k, y = _blurred(rgb48)
    assert psnr(B.richardson_lucy_deblur(y, k, 30), rgb48) > psnr(B.richardson_lucy_deblur(y, k, 30, pad=0),
                                                                   rgb48) + 1


def test_sr_metric_known_answers():
    """Luma of RGB + c is Y + 219 c (BT.601: 65.481 + 128.553 + 24.966 = 219): PSNR 20 log10(255 / (219 c));
    errors inside the scale-pixel border do not count; grey images are luma already."""
    hr = torch.rand((1, 3, 24, 24), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.5 + 0.2
    c = 0.01
    sr = hr + c
    sr[..., :4, :] = 0.0  # the border crop removes these rows
    assert sr_psnr(sr, hr, 4) == pytest.approx(20 * math.log10(255 / (219 * c)), abs=1e-6)
    assert sr_psnr(hr, hr, 4) == math.inf
    grey = hr[:, :1]
    assert sr_psnr(grey + c, grey, 4) == pytest.approx(20 * math.log10(1 / c), abs=1e-6)
    assert sr_ssim(hr, hr, 4) == pytest.approx(1.0)
    assert sr_ssim(sr, hr, 4) < 1.0


def test_modcrop_drops_the_bottom_rows_and_right_columns():
    x = torch.arange(10 * 13, dtype=torch.float32).reshape(1, 1, 10, 13)
    y = modcrop(x, 4)
    assert y.shape[-2:] == (8, 12) and torch.equal(y, x[..., :8, :12])
    assert modcrop(x, 1).shape == x.shape
    with pytest.raises(ValueError, match="positive integer"):
        modcrop(x, 0)


def test_bad_input_gets_a_clear_message(rgb48, monkeypatch):
    import sys

    with pytest.raises(ValueError, match=r"\[0, 1\] scale"):
        B.nlm_denoise(rgb48, 25)
    with pytest.raises(ValueError, match="shape"):
        B.nlm_denoise(rgb48[0], SIGMA)
    with pytest.raises(TypeError, match="torch tensor"):
        B.upsample(np.zeros((8, 8)), 4)
    with pytest.raises(ValueError, match="unknown upsampling method"):
        B.upsample(rgb48, 4, "nearest")
    with pytest.raises(ValueError, match="mask must be"):
        B.biharmonic_inpaint(rgb48, torch.ones((1, 1, 10, 10)))
    with pytest.raises(ValueError, match="no pixel as known"):
        B.biharmonic_inpaint(rgb48, torch.zeros((1, 1, 48, 48)))
    with pytest.raises(ValueError, match="kernel"):
        B.wiener_deblur(rgb48, -np.ones((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        B.richardson_lucy_deblur(rgb48 * float("nan"), np.ones((3, 3)))
    monkeypatch.setitem(sys.modules, "bm3d", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install -e '\.\[benchmark\]'"):
        B.cbm3d_denoise(rgb48, SIGMA)
