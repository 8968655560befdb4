"""EDIP and sparse-view CT pieces at 32x32: phantoms, TV-PDHG, pretraining, checkpoints, fine-tuning."""

import pytest
import torch

from shared.image.edip import (CTSetup, PhantomBatches, curve_stats, edip_network, finetune, load_checkpoint,
                               main as edip_main, pretrain, save_checkpoint, simulate_ct, time_to_psnr)
from shared.image.iterative import divergence, gradient, tv_pdhg
from shared.image.phantoms import random_ellipses, shepp_logan
from shared.metrics import psnr


def test_phantoms_are_in_range_and_reproducible():
    a = random_ellipses(3, 32, generator=torch.Generator().manual_seed(0))
    b = random_ellipses(3, 32, generator=torch.Generator().manual_seed(0))
    assert a.shape == (3, 1, 32, 32) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 and a.std() > 0.05
    assert not torch.equal(a[0], a[1])
    s = shepp_logan(32)
    assert s.shape == (1, 1, 32, 32) and abs(float(s.max()) - 1) < 1e-6
    with pytest.raises(ValueError):
        random_ellipses(0, 32)


def test_gradient_and_divergence_are_adjoint():
    x = torch.randn(2, 1, 9, 7, dtype=torch.float64)
    q = torch.randn(2, 1, 2, 9, 7, dtype=torch.float64)
    assert abs(float((gradient(x) * q).sum() + (x * divergence(q)).sum())) < 1e-10


def test_tv_pdhg_beats_fbp_on_a_piecewise_constant_phantom():
    x = shepp_logan(32)
    setup = CTSetup(32, 12, 0.02)
    op = setup.operator()
    y, fbp, sig = simulate_ct(x, op, setup.noise, torch.Generator().manual_seed(0))
    xt = tv_pdhg(op.A, y, x, float(sig) * 1.0, iterations=200)
    assert xt.shape == x.shape and 0 <= float(xt.min()) and float(xt.max()) <= 1
    assert psnr(xt, x) > psnr(fbp, x) + 3
    with pytest.raises(ValueError):
        tv_pdhg(op.A, y, x, -1.0)


def test_pretraining_lowers_the_supervised_loss_and_checkpoint_round_trips(tmp_path):
    net, res = pretrain(CTSetup(32, 10, 0.01), steps=40, batch=2, lr=3e-3, progress=False)
    loss = res.history["loss"]
    assert sum(loss[-5:]) / 5 < 0.5 * sum(loss[:5]) / 5
    path = save_checkpoint(net, tmp_path / "ck.pt", {"size": 32, "angles": 10})
    net2, meta = load_checkpoint(path)
    assert meta["size"] == 32
    z = torch.rand(1, 1, 32, 32)
    net.eval(), net2.eval()
    assert torch.equal(net(z), net2(z))
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_phantom_batches_draw_fresh_targets():
    pb = PhantomBatches(edip_network(), CTSetup(32, 8, 0.0), batch=2)
    out1, t1 = pb(), pb.target.clone()
    pb()
    assert out1.shape == (2, 1, 32, 32) and not torch.equal(t1, pb.target)


def test_finetune_tracks_psnr_and_time_and_curve_stats():
    x = random_ellipses(1, 32, generator=torch.Generator().manual_seed(3))
    op = CTSetup(32, 15, 0.01).operator()
    y, fbp, _ = simulate_ct(x, op, 0.01, torch.Generator().manual_seed(0))
    ft = finetune(y, op, fbp, input="fbp", iterations=30, lr=5e-3, reference=x, metric_every=5)
    assert len(ft.psnr) == len(ft.iterations) == len(ft.times) == 7
    assert ft.times == sorted(ft.times)
    assert ft.psnr[-1] > ft.psnr[0]
    with pytest.raises(ValueError):
        finetune(y, op, fbp, input="zeros", iterations=2)


def test_curve_stats_and_time_to_psnr():
    its = list(range(0, 100, 10))
    ps = [10, 20, 25, 27, 27.95, 28, 28, 28, 28, 28]
    st = curve_stats(its, ps, [i / 10 for i in its], tail=0.2)
    assert st["steady_psnr"] == 28 and st["rise_iteration"] == 40 and st["initial_psnr"] == 10
    assert time_to_psnr(its, ps, [i / 10 for i in its], 26) == (3.0, 30)
    assert time_to_psnr(its, ps, its, 99)[1] == -1


def test_edip_cli_refuses_to_overwrite(tmp_path, capsys):
    p = tmp_path / "x.pt"
    p.write_text("keep")
    assert edip_main(["pretrain", "--out", str(p), "--size", "32", "--steps", "1"]) == 2
    assert p.read_text() == "keep"
    assert "exists" in capsys.readouterr().err
