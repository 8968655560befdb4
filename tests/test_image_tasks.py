"""Image front end on short real fits: denoising gain, fitting-curve ordering, early stopping,
the other tasks' plumbing and the CLI."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from shared.cli import main
from shared.image.experiments import fitting_curve, fitting_targets, pixel_shuffle, residual_fraction
from shared.image.io import read_image, resize, to_tensor, validate_array
from shared.image import (NETS, DeepImagePrior, cs_problem, ct_problem, deblur_problem, denoise_problem,
                          inpaint_problem, make_network, superres_problem)


def _camera(size: int) -> torch.Tensor:
    from skimage import data

    return resize(to_tensor(validate_array(data.camera())), (size, size))


@pytest.fixture(scope="module")
def noisy_camera():
    """64x64 grey camera with sigma = 25/255 noise (the noisy PSNR is about 20.7 dB)."""
    clean = _camera(64)
    return clean, denoise_problem(clean, multiple=16, sigma=25 / 255, simulate=True, seed=0)


def test_small_denoising_run_with_es_wmv_stops_itself_and_beats_the_noisy_input_by_3_db(noisy_camera):
    """The classic DIP pipeline (light skip net, averaging, ES-WMV on the raw outputs)."""
    clean, problem = noisy_camera
    dip = DeepImagePrior(net="skip", loss="mse", iterations=1500, stop="eswmv", patience=100, seed=0)
    rec = dip.reconstruct(problem)
    m = rec.metrics
    noisy_psnr = m["psnr_noisy_input"]
    assert 19.5 < noisy_psnr < 22
    assert m["stopped_by"] == "stopping" and m["iterations_run"] < 1500, m
    assert m["iterations_run"] - m["selected_iteration"] == 100
    assert m["psnr"] >= noisy_psnr + 3, m
    assert m["psnr"] >= m["best_psnr_during_fit"] - 2.0, m  # the selection is near the best
    assert rec.arrays["result"].shape == clean.shape
    assert rec.config["stop"] == "eswmv" and rec.config["window"] == 100 and rec.config["holdout"] is None


def test_heldout_rule_stops_a_real_fit_and_keeps_a_good_output(noisy_camera):
    clean, problem = noisy_camera
    dip = DeepImagePrior(net="skip", loss="mse", iterations=1500, stop="heldout", patience=100, seed=0)
    rec = dip.reconstruct(problem)
    m = rec.metrics
    assert m["stopped_by"] == "stopping" and m["iterations_run"] < 1500
    assert m["iterations_run"] - m["selected_iteration"] == 100
    assert m["psnr"] >= m["psnr_noisy_input"] + 3, m
    assert "heldout" in rec.fit.history
    assert rec.config["holdout"] == 0.1 and rec.config["window"] is None


def test_fitting_curve_natural_image_is_fitted_faster_than_noise():
    """The DIP fitting-curve ordering with the hourglass (no skip connections) at 64x64."""
    targets = fitting_targets(_camera(64), seed=0)
    names = ("image", "shuffled pixels", "U(0,1) noise")
    mse = {n: fitting_curve(targets[n], net="hourglass", iterations=80, seed=0).history["data"] for n in names}
    # MSE relative to each target's own variance, averaged over the last 10 steps.
    rel = {n: float(np.mean(mse[n][-10:])) / float(targets[n].var()) for n in names}
    assert rel["image"] < 0.2, rel
    assert rel["U(0,1) noise"] > 0.8 and rel["shuffled pixels"] > 0.8, rel
    first = {n: next((i for i, v in enumerate(mse[n]) if v < 0.5 * float(targets[n].var())), None) for n in names}
    assert first["image"] is not None and first["image"] < 40 and first["U(0,1) noise"] is None, first


def test_pixel_shuffle_and_residual_fraction():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    s = pixel_shuffle(x, seed=1)
    assert torch.equal(torch.sort(s.flatten())[0], torch.sort(x.flatten())[0])
    assert torch.equal(s[0, 1] - s[0, 0], torch.full((4, 4), 16.0))  # channels move together
    assert residual_fraction(x, x) == 0.0
    assert abs(residual_fraction(torch.full_like(x, float(x.mean())), x) - 1.0) < 1e-12


@pytest.mark.parametrize("name", list(NETS))
def test_every_network_choice_builds_at_its_multiple(name):
    m = NETS[name].multiple
    net, z = make_network(name, 3, (m * 2, m * 2))
    with torch.no_grad():
        out = net(z)
    assert out.shape == (1, 3, 2 * m, 2 * m) and 0 <= float(out.min()) and float(out.max()) <= 1


def test_problems_of_every_task_have_consistent_shapes():
    x = _camera(40).repeat(1, 3, 1, 1)  # RGB, 40x40: not a multiple of 16
    p = inpaint_problem(x, multiple=16, fraction=0.5, simulate=True)
    assert p.shape == (1, 3, 48, 48) and p.y.shape == p.shape
    # padded pixels are never treated as known
    assert float(p.forward.mask[..., :4, :].sum()) == 0
    p = superres_problem(x[..., :32, :32], multiple=16, scale=4, simulate=True)
    assert p.y.shape == (1, 3, 8, 8) and p.shape == (1, 3, 32, 32)
    p = superres_problem(x[..., :12, :12], multiple=16, scale=4)  # real mode: 12x12 -> 48x48 result
    assert p.shape[-2:] == (48, 48) and p.geometry.undo(torch.zeros(p.shape), scale=4).shape[-2:] == (48, 48)
    p = deblur_problem(x, multiple=16, simulate=True)
    assert p.y.shape == p.shape == (1, 3, 48, 48)
    p = cs_problem(x, multiple=16, ratio=0.25, size=32)
    assert p.y.shape == (1, 256) and p.shape == (1, 1, 32, 32)
    p = ct_problem(x, multiple=16, angles=12, size=32)
    assert p.y.shape[:3] == (1, 1, 12) and p.observation.shape == (1, 1, 32, 32)


def test_cli_denoise_writes_the_expected_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    img = tmp_path / "tiny.png"
    Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(img)
    before = img.read_bytes()
    out = tmp_path / "out"
    code = main(["image", "denoise", str(img), "--simulate", "--iterations", "15", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "padded by reflection to 32x32" in captured.out  # the size adjustment is announced (on stdout)
    assert "wrote result.png" in captured.out
    for name in ("result.png", "comparison.png", "curves.png", "metrics.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert read_image(out / "result.png").shape == (1, 3, 20, 28)  # padding undone
    report = json.loads((out / "metrics.json").read_text())
    assert report["task"] == "denoise" and report["metrics"]["iterations_run"] == 15
    assert {"psnr", "ssim", "psnr_noisy_input", "wall_time_s", "selected_iteration"} <= set(report["metrics"])
    assert report["size_adjustment"] == "pad" and report["config"]["net"] == "skip"
    assert img.read_bytes() == before  # input untouched


def test_cli_refuses_to_write_over_its_input(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    img = out / "result.png"
    Image.fromarray(np.full((16, 16), 100, np.uint8)).save(img)
    before = img.read_bytes()
    code = main(["image", "denoise", str(img), "--iterations", "2", "--out", str(out)])
    assert code == 2 and "refusing to overwrite the input file" in capsys.readouterr().err
    assert img.read_bytes() == before


def test_deep_image_prior_settings_and_result_contract():
    """Settings at construction (get_params), defaults resolved per task and network."""
    dip = DeepImagePrior(net="decoder", stop="none")
    params = dip.get_params()
    assert params["net"] == "decoder" and params["iterations"] is None and params["average"] == "default"
    s = dip.settings("inpaint")
    assert s["iterations"] == 3000 and s["lr"] == NETS["decoder"].lr and s["input_noise"] == 0.0
    assert dip.stopping_rule() is None
    assert DeepImagePrior(stop="heldout").stopping_rule().fraction == 0.1
    with pytest.raises(ValueError, match="unknown network"):
        DeepImagePrior(net="nope").check()
    with pytest.raises(ValueError, match="unknown stopping rule"):
        DeepImagePrior(stop="sometimes").check()
    x = _camera(32)
    problem = denoise_problem(x, multiple=16, sigma=0.1, simulate=True)
    rec = DeepImagePrior(loss="mse", iterations=3, stop="none").reconstruct(problem)
    assert set(rec.arrays) == {"output", "result"} and rec.fit.stop_iteration == 3
    assert rec.fit.objective.physics is None  # A = I: the engine's identity
    assert rec.file_names() == ["result.png", "comparison.png", "curves.png", "metrics.json"]
    assert rec.config["iterations"] == 3 and rec.config["lr"] == 0.01 and rec.config["average"] == 0.99


def test_image_help_shows_each_default_once(capsys):
    assert main(["image", "denoise", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert text.count("(default: the network's, 0.01)") == 1
    assert text.count("(default: skip)") == 1
    assert text.count("(default: 1800; 350 with the SURE loss)") == 1 and text.count("(default: auto)") == 2
