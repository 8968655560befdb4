"""The fast paths of the chart fit and the dense output give the results of the plain ones.

Blocked ReLU networks (explicit gradients, kept or recomputed activations, serial or
threaded blocks), their forward-mode Jacobians, the exact EMD's fused loss, the reduced
assignment costs, the fold-free order and the k-NN normal orientation.
"""
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import shared.networks.mlp as mlp
from geoprior.charts import ChartPrior, affine_init, chart_jacobian_normals
from geoprior.cover import _fold_free_order, build_cover
from geoprior.emd import ExactEMD, exact_assignment, reduced
from geoprior.sampling import orient_knn_mst, orient_points_mst, outward_sign, points_and_normals
from shared.networks import BatchedMLP
from test_mlp import assert_blocked_matches_plain  # tests/ is on the path (pytest rootdir imports)


def _pair(batch=37, hidden=(16, 8), block=4, act="relu"):
    torch.manual_seed(0)
    plain = BatchedMLP(batch, 2, 3, hidden=hidden, act=act)
    blocked = BatchedMLP(batch, 2, 3, hidden=hidden, act=act, block=block)
    blocked.load_state_dict(plain.state_dict())
    return plain, blocked


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_blocked_gradients_with_kept_or_recomputed_activations(monkeypatch, keep, act):
    if not keep:
        monkeypatch.setattr(mlp, "KEEP_BYTES", 0)
    plain, net = _pair(act=act)
    lengths = torch.randint(0, 20, (37,), generator=torch.Generator().manual_seed(1))
    assert_blocked_matches_plain(plain, net, lengths, 20)


def test_kept_activations_survive_repeated_backward_passes():
    _, net = _pair()
    x = torch.rand(37, 9, 2, requires_grad=True)
    out = net(x)
    g1 = torch.autograd.grad(out[..., 0].sum(), x, retain_graph=True)[0]
    g2 = torch.autograd.grad(out[..., 0].sum(), x)[0]
    assert torch.equal(g1, g2)


def test_threaded_blocks_equal_serial_blocks_bitwise(monkeypatch):
    if mlp._cores() < 2:
        pytest.skip("needs two cores")
    _, net = _pair(batch=64, hidden=(32, 32), block=8)
    lengths = torch.randint(1, 30, (64,), generator=torch.Generator().manual_seed(2))
    x = torch.rand(64, 30, 2)
    results = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for mode in (1, 2):
            monkeypatch.setattr(mlp._SCHEDULE, "pick", lambda kind, threads, mode=mode: mode)
            net.zero_grad()
            out = net(x, lengths)
            out.square().sum().backward()
            jac = net.forward_jacobian(x, lengths)[1]
            results.append([out.detach(), jac, *(p.grad.clone() for p in net.parameters())])
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_schedule_prefers_the_faster_mode_and_probes_the_other():
    s = mlp._Schedule(probe=4)
    assert s.pick("k", 2) == 2
    s.record("k", 2, 1.0)
    assert s.pick("k", 2) == 1
    s.record("k", 1, 0.5)
    picks = [s.pick("k", 2) for _ in range(8)]
    assert picks.count(1) == 6 and picks.count(2) == 2
    assert s.pick("k", 1) == 1


@pytest.mark.parametrize("block", [None, 4])
def test_forward_jacobian_equals_autograd(block):
    plain, net = _pair(block=block or 4)
    net = net if block else plain
    x = torch.rand(37, 12, 2)
    lengths = torch.randint(0, 13, (37,), generator=torch.Generator().manual_seed(3))
    real = (torch.arange(12) < lengths[:, None])[..., None]
    xr = x.clone().requires_grad_(True)
    ref = plain(xr)
    jac_ref = torch.stack([torch.autograd.grad(ref[..., k].sum(), xr, retain_graph=True)[0] for k in range(3)], -2)
    out, jac = net.forward_jacobian(x, lengths)
    assert torch.allclose(out, ref.detach() * real, atol=1e-6)
    assert torch.allclose(jac, jac_ref * real[..., None], atol=1e-6)
    with pytest.raises(ValueError, match="ReLU"):
        BatchedMLP(3, 2, 3, (4,), act="tanh").forward_jacobian(torch.rand(3, 5, 2))
    # A slice of the members alone gives those members' rows of the whole batch.
    part = slice(5, 29)
    out_p, jac_p = net.forward_jacobian(x[part], lengths[part], members=part)
    assert torch.allclose(out_p, out[part], atol=1e-6) and torch.allclose(jac_p, jac[part], atol=1e-6)
    with pytest.raises(ValueError, match="B=24"):
        net.forward_jacobian(x, lengths, members=part)


def test_points_and_normals_equal_the_autograd_normals():
    cover = build_cover(_sphere(400), radius=0.25, overlap=1.3, seed=0)
    uv = torch.as_tensor(cover.uv, dtype=torch.float32)
    target = torch.as_tensor(cover.local, dtype=torch.float32)
    torch.manual_seed(0)
    model = ChartPrior(cover.n_patches, (16, 16), affine=affine_init(uv, target, torch.as_tensor(cover.mask)),
                       block=4)
    p_ref, n_ref = chart_jacobian_normals(model, uv)
    p, n = points_and_normals(model, uv)
    assert torch.allclose(p, p_ref, atol=1e-6) and torch.allclose(n, n_ref, atol=1e-5)
    # padding columns beyond the lengths hold the affine part only; the real ones are unchanged
    lengths = torch.as_tensor(cover.sizes)
    p2, n2 = points_and_normals(model, uv, lengths)
    mask = torch.as_tensor(cover.mask)
    assert torch.allclose(p2[mask], p_ref[mask], atol=1e-6) and torch.allclose(n2[mask], n_ref[mask], atol=1e-5)


def test_exact_emd_fused_loss_equals_per_patch_and_follows_the_matching():
    g = torch.Generator().manual_seed(4)
    mask = torch.rand(6, 10, generator=g) > 0.3
    target = torch.randn(6, 10, 3, generator=g)
    x = torch.randn(6, 10, 3, generator=g, requires_grad=True)
    data = ExactEMD(mask, rematch_every=0)
    for change in ("none", "new perm", "in place", "new target"):
        if change == "new perm":
            data.perm = torch.stack([torch.randperm(10, generator=g) for _ in range(6)])
        elif change == "in place":
            data.perm[0] = data.perm[0].flip(0)
        elif change == "new target":
            target = target + 1.0
        fused = data(x, target)
        grad = torch.autograd.grad(fused, x)[0]
        ref = data.per_patch(x, target).sum()
        assert torch.allclose(fused, ref, rtol=1e-6), change
        assert torch.allclose(grad, torch.autograd.grad(ref, x)[0], atol=1e-6), change


def test_reduced_costs_give_the_same_assignment():
    rng = np.random.default_rng(5)
    for n in (5, 40, 150):
        a, b = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
        cost = ((a[:, None] - b[None]) ** 2).sum(-1)
        assert np.array_equal(linear_sum_assignment(cost)[1], linear_sum_assignment(reduced(cost.copy()))[1])
    pred, target = rng.normal(size=(4, 30, 3)), rng.normal(size=(4, 30, 3))
    sizes = np.array([30, 12, 1, 25])
    perm = exact_assignment(pred, target, sizes)
    for i, n in enumerate(sizes):
        cost = ((pred[i, :n, None] - target[i, None, :n]) ** 2).sum(-1)
        assert np.array_equal(perm[i, :n], linear_sum_assignment(cost)[1])
        assert np.array_equal(perm[i, n:], np.arange(n, 30))


def test_fold_free_order_is_the_assignment_of_the_plain_cost():
    rng = np.random.default_rng(6)
    u, planar = rng.uniform(size=(60, 2)), rng.normal(size=(60, 2))
    _, order = _fold_free_order((u, planar))
    p01 = (planar - planar.min(0)) / (planar.max(0) - planar.min(0))
    rows, cols = linear_sum_assignment(((u[:, None, :] - p01[None, :, :]) ** 2).sum(-1))
    expect = np.empty(60, dtype=np.int64)
    expect[cols] = rows
    assert np.array_equal(order, expect)


def _sphere(n, seed=0):
    p = np.random.default_rng(seed).normal(size=(n, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def test_knn_orientation_of_connected_and_disconnected_clouds():
    rng = np.random.default_rng(7)
    pts = _sphere(1500, seed=7)
    signs = np.where(rng.uniform(size=len(pts)) < 0.5, -1.0, 1.0)[:, None]
    oriented = orient_points_mst(pts, pts * signs, k=10)
    assert ((oriented * pts).sum(1) > 0).all()
    knn = orient_knn_mst(pts, pts * signs, k=10)
    assert np.array_equal(oriented, knn * outward_sign(pts, knn))
    # Two spheres far apart: the k-NN graph has two pieces, open3d's graph joins them.
    two = np.concatenate([pts, pts + 10.0])
    normals = np.concatenate([pts, pts]) * np.concatenate([signs, signs])
    out = orient_points_mst(two, normals, k=10)
    radial = np.concatenate([pts, pts])
    agree = (out * radial).sum(1) > 0
    assert agree[:1500].all() or (~agree[:1500]).all()
    assert agree[1500:].all() or (~agree[1500:]).all()
