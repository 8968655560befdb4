"""Learned generators (VAE decoder trained through the engine) and CSGM / IAGAN / latent reconstructions."""
from __future__ import annotations

import json

import pytest
import torch

from shared.image.generative import GenerativePrior
from shared.image.generator import FamilyBatches, load_generator, save_generator, train_generator
from shared.image.phantoms import family_images, random_blocks
from shared.image.tasks import cs_problem
from shared.networks.latent_generator import ConvEncoder, LatentGenerator

TINY = {"latent_dim": 8, "size": 16, "channels": (16, 8, 8)}
FAST = {"restarts": 4, "csgm_iterations": 300, "adapt_iterations": 300, "latent_iterations": 200}


def tiny_generator(seed: int = 0) -> LatentGenerator:
    torch.manual_seed(seed)
    gen = LatentGenerator(**TINY).eval()
    for p in gen.parameters():
        p.requires_grad_(False)
    return gen


def in_range_image(gen: LatentGenerator, seed: int = 5) -> torch.Tensor:
    z = torch.randn(1, gen.latent_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return gen(z)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).norm() / ref.norm())


def test_generator_shapes_split_and_errors():
    gen = tiny_generator()
    z = torch.randn(3, 8)
    x = gen(z)
    assert x.shape == (3, 1, 16, 16) and float(x.min()) > 0 and float(x.max()) < 1
    for level in range(gen.levels + 1):
        h = gen.head(z, level)
        assert tuple(h.shape[1:]) == gen.latent_shape(level)
        torch.testing.assert_close(gen.tail(h, level), x)
    with pytest.raises(ValueError, match="4 \\* 2\\^L"):
        LatentGenerator(size=24)
    with pytest.raises(ValueError, match="latents of shape"):
        gen(torch.randn(2, 5))
    mu, log_var = ConvEncoder(8, 16, (16, 8, 8))(x)
    assert mu.shape == log_var.shape == (3, 8)


def test_checkpoint_round_trip_and_refusals(tmp_path):
    gen = tiny_generator(3)
    path = save_generator(gen, tmp_path / "g.pt", {"family": "ellipses", "psnr_autoencoded": 20.0})
    back, meta = load_generator(path)
    z = torch.randn(2, 8)
    torch.testing.assert_close(back(z), gen(z))
    assert meta["family"] == "ellipses" and back.config == gen.config
    assert not any(p.requires_grad for p in back.parameters())
    with pytest.raises(FileNotFoundError, match="make generators"):
        load_generator(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable generator checkpoint"):
        load_generator(tmp_path / "junk.pt")
    torch.save({"format": "untrained-edip-1"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a generator checkpoint"):
        load_generator(tmp_path / "other.pt")
    bad = torch.load(path, weights_only=True)
    bad["config"]["latent_dim"] = 9
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="do not match"):
        load_generator(tmp_path / "bad.pt")


def test_block_family_is_deterministic_and_in_range():
    a = random_blocks(4, 32, generator=torch.Generator().manual_seed(1))
    b = family_images("blocks", 4, 32, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert a.shape == (4, 1, 32, 32) and float(a.min()) >= 0 and float(a.max()) <= 1
    # piecewise constant with a ramp: most neighbouring pixels differ by little, a few by a lot (edges)
    d = (a[..., 1:] - a[..., :-1]).abs()
    assert float((d < 0.02).float().mean()) > 0.8 and float(d.max()) > 0.1
    with pytest.raises(ValueError, match="unknown image family"):
        family_images("faces", 1, 16)


def test_vae_training_through_the_engine_lowers_the_loss():
    gen, enc, res = train_generator("ellipses", steps=60, batch=8, latent_dim=8, size=16, channels=(16, 8, 8),
                                    progress=False)
    loss = res.history["loss"]
    assert len(loss) == 60 and sum(loss[-10:]) / 10 < 0.7 * sum(loss[:5]) / 5
    assert isinstance(res.model, FamilyBatches)
    assert all(w.is_contiguous() for w in (*gen.parameters(), *enc.parameters()) if w.ndim == 4)


def test_channels_last_training_step_is_the_same_arithmetic():
    """The channels-last layout (the training default, for speed) gives the contiguous layout's
    loss and gradients on the same batch."""
    grads = []
    for last in (False, True):
        torch.manual_seed(0)
        gen = LatentGenerator(8, 16, (16, 8, 8))
        enc = ConvEncoder(8, 16, (16, 8, 8))
        batches = FamilyBatches(gen, enc, "blocks", batch=4, seed=5, channels_last=last)
        loss = batches.loss(batches())
        loss.backward()
        grads.append((loss.detach(), [q.grad.clone() for q in batches.parameters()]))
    assert gen.out.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-7)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_csgm_recovers_an_image_in_the_generators_range():
    gen = tiny_generator()
    x = in_range_image(gen)
    problem = cs_problem(x, multiple=1, ratio=0.25, size=16, seed=1)
    result = GenerativePrior(gen, prior="csgm", **FAST).reconstruct(problem)
    assert rel_err(result.arrays["output"], x) < 0.05
    assert result.metrics["rel_err"] < 0.05 and len(result.metrics["csgm_restart_misfits"]) == 4


def test_iagan_never_ends_above_the_csgm_misfit_it_starts_from():
    gen = tiny_generator()
    x = random_blocks(1, 16, generator=torch.Generator().manual_seed(2))  # outside the range
    problem = cs_problem(x, multiple=1, ratio=0.5, size=16, noise=0.02, seed=3)  # noisy: no back-projection
    result = GenerativePrior(gen, prior="iagan", **FAST).reconstruct(problem)
    assert result.info["stages"]["iagan"]["back_projection"] is False
    assert result.metrics["misfit"] <= result.metrics["csgm_best_misfit"] * (1 + 1e-6)


def test_iagan_beats_csgm_out_of_distribution_and_back_projection_fits_noiseless_data():
    gen = tiny_generator()
    x = random_blocks(1, 16, generator=torch.Generator().manual_seed(4))
    problem = cs_problem(x, multiple=1, ratio=0.5, size=16, seed=5)
    csgm = GenerativePrior(gen, prior="csgm", **FAST).reconstruct(problem)
    iagan = GenerativePrior(gen, prior="iagan", **{**FAST, "adapt_lr": 1e-3, "adapt_latent_lr": 1e-3})
    out = iagan.reconstruct(problem)
    assert out.info["stages"]["iagan"]["back_projection"] is True
    assert out.metrics["rel_err"] < 0.8 * csgm.metrics["rel_err"]
    latent = GenerativePrior(gen, prior="latent", **FAST).reconstruct(problem)
    assert latent.metrics["misfit"] < csgm.metrics["misfit"]


def test_generative_prior_refuses_a_problem_of_another_size():
    gen = tiny_generator()
    problem = cs_problem(torch.rand(1, 1, 32, 32), multiple=1, ratio=0.1, size=32)
    with pytest.raises(ValueError, match="16x16"):
        GenerativePrior(gen).reconstruct(problem)
    with pytest.raises(ValueError, match="unknown generative prior"):
        GenerativePrior(gen, prior="gan").check()


def test_cli_cs_with_a_generator(tmp_path, capsys):
    from shared.cli import main
    from shared.image.io import write_image

    gen = tiny_generator()
    ckpt = save_generator(gen, tmp_path / "gen.pt", {"family": "ellipses"})
    write_image(tmp_path / "x.png", in_range_image(gen))
    out = tmp_path / "out"
    code = main(["image", "cs", str(tmp_path / "x.png"), "--ratio", "0.25", "--prior", "csgm",
                 "--generator", str(ckpt), "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    for name in ("result.png", "comparison.png", "curves.png", "metrics.json"):
        assert (out / name).is_file()
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["psnr"] > 25
    # a generator prior without a checkpoint, and a size the generator cannot make, are input errors
    assert main(["image", "cs", str(tmp_path / "x.png"), "--prior", "iagan", "--out", str(tmp_path / "o2")]) == 2
    assert "needs a trained generator" in capsys.readouterr().err
    assert main(["image", "cs", str(tmp_path / "x.png"), "--prior", "iagan", "--generator", str(ckpt),
                 "--size", "32", "--out", str(tmp_path / "o3")]) == 2
    assert "makes 16x16 images" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
