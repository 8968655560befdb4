"""An ensemble of DIP networks fitted in one batched pass (grouped convolutions).

The ensemble is ``K`` networks of one layout side by side (``Hourglass(members=K)``); its
objective is the sum of the members' (:class:`shared.losses.SumOverMembers`), so one fit
of it is ``K`` separate fits.  Float64 throughout the equality checks: a DIP fit in float32
is chaotic (halving the loss of one network changes its output by 0.08 within 15 Adam steps,
through the ``eps`` of batch-normalised layers' tiny gradients), so only exact arithmetic
can tell "the same fit" from "a similar one".
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from shared.fit import Objective, Optimiser, Smoothing, fit
from shared.image import NETS, DeepImagePrior, denoise_problem
from shared.image.tasks import make_network
from shared.losses import SumOverMembers, members_of, mse_loss
from shared.networks import Hourglass
from shared.sure import MonteCarloSURE

SIZE = 32  # the light skip net has 4 scales: 32 px leaves 2 x 2 at the deepest batch norm


def _noisy(seed: int = 0, sigma: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    clean = F.interpolate(torch.rand(1, 3, 8, 8, generator=g, dtype=torch.float64), size=SIZE, mode="bilinear")
    return clean, clean + sigma * torch.randn(clean.shape, generator=g, dtype=torch.float64)


def test_stacked_networks_are_their_members():
    torch.manual_seed(0)
    nets = [Hourglass(3, 3, (4, 8), (4, 8), (2, 2)).double() for _ in range(3)]
    ens = Hourglass.stack(nets)
    shared = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    own = torch.rand(2, 9, 16, 16, dtype=torch.float64)
    out_shared, out_own = ens(shared), ens(own)
    assert out_shared.shape == (6, 3, 16, 16)  # row n K + k: member k on input n
    for k, net in enumerate(nets):
        torch.testing.assert_close(out_shared.view(2, 3, 3, 16, 16)[:, k], net(shared), rtol=0, atol=1e-12)
        torch.testing.assert_close(out_own.view(2, 3, 3, 16, 16)[:, k], net(own[:, 3 * k:3 * k + 3]),
                                   rtol=0, atol=1e-12)
        extracted = ens.member(k)
        for (name, a), (_, b) in zip(extracted.state_dict().items(), net.state_dict().items()):
            assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="same layout"):
        Hourglass.stack([nets[0], Hourglass(3, 3, (4, 4), (4, 4), (2, 2))])
    with pytest.raises(IndexError):
        ens.member(3)
    with pytest.raises(ValueError, match="members"):
        ens(torch.rand(1, 6, 16, 16))


@pytest.mark.parametrize("loss", ["mse", "sure"])
def test_ensemble_fit_equals_separate_fits_of_its_members(loss):
    """K members fitted together = each fitted alone, from the same initialisation and fit seed."""
    _, y = _noisy()
    sure = loss == "sure"
    data = MonteCarloSURE(0.1) if sure else mse_loss
    settings = dict(optimiser=Optimiser(lr=0.01, iterations=12), smoothing=Smoothing(input_noise=0.0, average=0.9),
                    seed=0)
    ens, z = make_network("skip", 3, (SIZE, SIZE), seed=0, in_channels=3 if sure else None, members=3)
    together = fit(ens.double(), y if sure else z.double(), Objective(y, data=SumOverMembers(data, 3)), **settings)
    assert together.output.shape == (3, 3, SIZE, SIZE)
    for k in range(3):
        net, zk = make_network("skip", 3, (SIZE, SIZE), seed=k, in_channels=3 if sure else None)
        alone = fit(net.double(), y if sure else zk.double(), Objective(y, data=data), **settings)
        torch.testing.assert_close(together.output[k:k + 1], alone.output, rtol=0, atol=1e-10)
    # The members really differ: the test compares three fits, not one.
    assert (together.output[0] - together.output[1]).abs().max() > 1e-3


def test_data_terms_of_an_ensemble_are_the_members_mean():
    _, y = _noisy()
    y = y.float()
    pred = torch.rand(3, 3, SIZE, SIZE)
    assert members_of(pred, y) == 3 and members_of(y, y) == 1
    each = torch.stack([mse_loss(p[None], y) for p in pred])
    torch.testing.assert_close(mse_loss(pred, y), each.mean())
    mask = torch.rand(y.shape) > 0.5
    torch.testing.assert_close(mse_loss(pred, y, mask), torch.stack([mse_loss(p[None], y, mask) for p in pred]).mean())
    torch.testing.assert_close(SumOverMembers(mse_loss, 3)(pred, y), each.sum())
    with pytest.raises(ValueError, match="shape"):
        mse_loss(pred[:, :2], y)
    # SURE clamps each member's divergence on its own, as separate fits would.
    sure = MonteCarloSURE(0.1)
    b = torch.randn(y.shape)
    probe = torch.stack([pred[0] + 1e-3 * b[0], pred[1] - 1e-3 * b[0], pred[2]])
    div = sure.divergence(pred, probe, b)
    assert div.shape == (3,) and div[0] > 0 > div[1]
    alone = [sure(pred[k:k + 1], y, probe=(probe[k:k + 1], b)) for k in range(3)]
    torch.testing.assert_close(sure(pred, y, probe=(probe, b)), torch.stack(alone).mean())
    assert SumOverMembers(sure, 3).probe is not None and SumOverMembers(sure, 3).eps == sure.eps


def test_deep_image_prior_reports_the_mean_of_its_members():
    clean, y = _noisy()
    problem = denoise_problem(clean.float(), multiple=NETS["skip"].multiple, simulate=True, sigma=0.1)
    rec = DeepImagePrior(members=3, iterations=8).reconstruct(problem)
    assert rec.fit.output.shape == (3, 3, SIZE, SIZE)
    torch.testing.assert_close(rec.arrays["output"], rec.fit.output.clamp(0, 1).mean(0, keepdim=True))
    assert rec.arrays["member_std"].shape == (1, 3, SIZE, SIZE) and float(rec.arrays["member_std"].mean()) > 0
    assert len(rec.metrics["member_psnr"]) == 3 and rec.config["members"] == 3
    # Averaging members is at least as good as their average PSNR (Jensen on the MSE).
    assert rec.metrics["psnr"] >= min(rec.metrics["member_psnr"])
    with pytest.raises(ValueError, match="members"):
        DeepImagePrior(members=0).check()
    with pytest.raises(ValueError, match="deep decoder"):
        DeepImagePrior(members=2, net="decoder").check()


def test_cli_fits_an_ensemble_and_refuses_what_does_not_combine(tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image

    from shared.cli import main

    rng = np.random.default_rng(0)
    img = np.clip(np.linspace(60, 200, 32)[None, :, None] + rng.normal(0, 20, (32, 32, 3)), 0, 255)
    path = tmp_path / "noisy.png"
    Image.fromarray(img.astype(np.uint8)).save(path)
    assert main(["image", "denoise", str(path), "--members", "2", "--iterations", "3", "--quiet",
                 "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["config"]["members"] == 2
    code = main(["image", "denoise", str(path), "--members", "2", "--net", "decoder", "--quiet",
                 "--out", str(tmp_path / "b")])
    assert code == 2 and "deep decoder" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
