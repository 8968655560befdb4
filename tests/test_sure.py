"""Stein's unbiased risk estimate: unbiased for the MSE of fixed estimators, the engine's probed
fit (the network's input is the noisy image) denoises without early stopping, and the
image front end's SURE loss with given, simulated and estimated noise levels."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from shared.fit import Objective, Optimiser, fit
from shared.sure import MonteCarloSURE, estimate_noise_std


def _smooth_image(n: int = 32) -> torch.Tensor:
    """A smooth (1, 1, n, n) test image in [0.2, 0.8]."""
    t = torch.linspace(0, 1, n)
    return (0.5 + 0.3 * torch.sin(2 * math.pi * t)[:, None] * torch.cos(math.pi * t)[None, :])[None, None]


def _box(y: torch.Tensor) -> torch.Tensor:
    """A fixed linear denoiser: 3x3 box filter with zero padding (divergence = N / 9 exactly)."""
    return F.conv2d(y, torch.full((1, 1, 3, 3), 1 / 9), padding=1)


def _soft(y: torch.Tensor, t: float = 0.05) -> torch.Tensor:
    """A fixed non-linear estimator: soft thresholding around 0.5 (divergence = #{|y - 0.5| > t})."""
    d = y - 0.5
    return 0.5 + d.sign() * (d.abs() - t).clamp_min(0)


@pytest.mark.parametrize("estimator", [_box, _soft])
def test_monte_carlo_sure_is_unbiased_for_the_mse_of_a_fixed_estimator(estimator):
    """Over 400 noise draws the mean SURE matches the mean true MSE within 3 standard errors
    (and the error is far from what a missing divergence term would give)."""
    x, sigma = _smooth_image(), 0.1
    sure, g = MonteCarloSURE(sigma), torch.Generator().manual_seed(0)
    est, true, naive = [], [], []
    for _ in range(400):
        y = x + sigma * torch.randn(x.shape, generator=g)
        out = estimator(y)
        y_probe, b = sure.probe(y, g)
        est.append(float(sure(out, y, probe=(estimator(y_probe), b))))
        true.append(float(((out - x) ** 2).mean()))
        naive.append(float(sure(out, y)))  # without the divergence term
    est, true, naive = map(torch.tensor, (est, true, naive))
    diff = est - true
    se = float(diff.std() / math.sqrt(len(diff)))
    assert abs(float(diff.mean())) < 3 * se, (float(est.mean()), float(true.mean()), se)
    assert float((true - naive).mean()) > 20 * se  # the divergence term matters here


def test_divergence_of_a_linear_map_is_its_trace():
    x = _smooth_image(16)
    sure, g = MonteCarloSURE(0.05), torch.Generator().manual_seed(1)
    values = []
    for _ in range(300):
        y_probe, b = sure.probe(x, g)
        values.append(float(sure.divergence(_box(x), _box(y_probe), b)))
    exact = 16 * 16 / 9  # d f_i / d y_i = 1/9 at every pixel (the centre is always in its box)
    assert abs(sum(values) / len(values) - exact) < 0.1 * exact


def test_noise_estimate_of_a_smooth_image():
    x = _smooth_image(128)
    for sigma in (0.02, 0.1):
        y = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
        assert abs(estimate_noise_std(y) - sigma) < 0.1 * sigma
    with pytest.raises(ValueError, match="at least 2x2"):
        estimate_noise_std(torch.zeros(1, 1, 1, 5))


def test_sure_refuses_bad_settings_and_inputs():
    with pytest.raises(ValueError, match="positive noise std"):
        MonteCarloSURE(0.0)
    with pytest.raises(ValueError, match="eps must be positive"):
        MonteCarloSURE(0.1, eps=-1.0)
    y = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="does not combine with missing"):
        MonteCarloSURE(0.1)(y, y, mask=torch.ones_like(y, dtype=torch.bool))
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    with pytest.raises(ValueError, match="physics=None"):
        fit(net, y, Objective(y, physics=lambda x: 2 * x, data=MonteCarloSURE(0.1)),
            optimiser=Optimiser(iterations=1))
    with pytest.raises(ValueError, match="network input z to be the noisy measurement"):
        fit(net, torch.zeros(1, 1, 8, 8), Objective(y, data=MonteCarloSURE(0.1)), optimiser=Optimiser(iterations=1))


def test_engine_fits_a_small_conv_net_by_sure_and_it_does_not_drift_into_the_noise():
    """A 3-layer conv net on its noisy input: SURE training denoises, and (unlike the plain
    MSE with the same input, which learns the identity) it keeps its gain to the end."""
    torch.manual_seed(0)
    x, sigma = _smooth_image(32), 0.1
    y = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))

    def net() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(1, 16, 5, padding=2), torch.nn.ReLU(),
                                   torch.nn.Conv2d(16, 16, 5, padding=2), torch.nn.ReLU(),
                                   torch.nn.Conv2d(16, 1, 5, padding=2))

    def psnr(a: torch.Tensor) -> float:
        return float(-10 * torch.log10(((a - x) ** 2).mean()))

    res = fit(net(), y, Objective(y, data=MonteCarloSURE(sigma)), optimiser=Optimiser(lr=3e-3, iterations=600))
    plain = fit(net(), y, Objective(y), optimiser=Optimiser(lr=3e-3, iterations=600))
    assert res.stopped_by == "iterations" and len(res.history["data"]) == 600
    assert psnr(res.output) > psnr(y) + 4, (psnr(res.output), psnr(y))
    assert psnr(plain.output) < psnr(y) + 1.5  # the identity-seeking MSE fit barely denoises


def _noisy_camera(size: int = 32, sigma: float = 25 / 255):
    from skimage import data

    from shared.image import denoise_problem, resize, to_tensor, validate_array

    clean = resize(to_tensor(validate_array(data.camera())), (size, size))
    return clean, denoise_problem(clean, multiple=16, sigma=sigma, simulate=True, seed=0)


def test_deep_image_prior_denoises_with_sure_by_default_and_resolves_its_settings():
    from shared.image import DeepImagePrior

    dip = DeepImagePrior()
    s = dip.settings("denoise")
    assert (s["loss"], s["stop"], s["schedule"], s["input_noise"], s["iterations"]) == \
        ("sure", "eswmv", "cosine", 0.0, 350)
    assert (s["window"], s["patience"], s["rise"]) == (25, 300, 3.0)  # SURE can collapse from step 80-100 on
    sr = dip.settings("superres")
    assert (sr["window"], sr["patience"], sr["rise"]) == (100, 300, None)
    assert dip.stopping_rule("denoise").window == 25 and dip.stopping_rule("denoise").rise == 3.0
    assert DeepImagePrior(patience=40).stopping_rule("denoise").patience == 40
    assert dip.settings("inpaint")["loss"] == "mse" and dip.settings("superres")["stop"] == "eswmv"
    assert dip.settings("inpaint")["stop"] == "none"  # noise-free known pixels: nothing to over-fit
    with pytest.raises(ValueError, match="SURE loss is for denoising"):
        DeepImagePrior(loss="sure").settings("inpaint")
    with pytest.raises(ValueError, match="not the deep decoder"):
        DeepImagePrior(net="decoder", loss="sure").settings("denoise")
    with pytest.raises(ValueError, match="unknown loss"):
        DeepImagePrior(loss="l1").check()
    with pytest.raises(ValueError, match="must be positive"):
        DeepImagePrior(sigma=-0.1).check()
    clean, problem = _noisy_camera()
    rec = DeepImagePrior(iterations=40, seed=0).reconstruct(problem)
    assert rec.config["loss"] == "sure" and rec.config["sigma_source"] == "simulated"
    assert rec.config["sigma_255"] == pytest.approx(25.0)
    assert rec.fit.z is problem.y or torch.equal(rec.fit.z, problem.y)  # the noisy image is the input
    assert rec.metrics["stopped_by"] == "iterations" and rec.metrics["psnr"] > rec.metrics["psnr_noisy_input"]
    given = DeepImagePrior(sigma=0.05)
    assert given.noise_level(problem) == (0.05, "given")


def test_sure_noise_level_is_estimated_when_the_input_is_not_simulated():
    from shared.image import DeepImagePrior, denoise_problem

    clean, simulated = _noisy_camera(64, sigma=0.1)
    real = denoise_problem(simulated.y, multiple=16)  # a noisy image as a user would give it
    sigma, source = DeepImagePrior().noise_level(real)
    assert source == "estimated" and 0.07 < sigma < 0.13


def test_cli_denoise_estimates_the_noise_level_and_refuses_sigma_zero(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from shared.cli import main

    rng = np.random.default_rng(0)
    img = np.clip(np.linspace(60, 200, 32)[None, :, None] + rng.normal(0, 20, (32, 32, 3)), 0, 255)
    path = tmp_path / "noisy.png"
    Image.fromarray(img.astype(np.uint8)).save(path)
    assert main(["image", "denoise", str(path), "--iterations", "5", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "noise std estimated from the image" in out
    report = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert report["config"]["loss"] == "sure" and report["config"]["sigma_source"] == "estimated"
    assert 14 < report["config"]["sigma_255"] < 26
    code = main(["image", "denoise", str(path), "--sigma", "0", "--quiet", "--out", str(tmp_path / "b")])
    assert code == 2 and "--sigma 0" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_a_negative_divergence_earns_no_reward():
    """An anti-correlated map ``f(y) = 2 c - y`` has divergence -N: clamped, SURE is not lowered by it."""
    y = _smooth_image(16)
    sure = MonteCarloSURE(0.1)
    c = y.mean()
    y_probe, b = sure.probe(y, torch.Generator().manual_seed(4))
    anti = 2 * c - y
    assert float(sure.divergence(anti, 2 * c - y_probe, b)) < -0.5 * y.numel()
    assert float(sure(anti, y, probe=(2 * c - y_probe, b))) == pytest.approx(float(sure(anti, y)))
