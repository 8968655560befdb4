"""geoprior cover, batched charts, EMD losses, normals and orientation."""
import itertools

import numpy as np
import pytest
import torch

from geoprior import DeepGeometricPrior
from geoprior.charts import ChartPrior, chart_jacobian_normals
from geoprior.cover import build_cover, parameter_samples, smooth_normals
from geoprior.emd import ExactEMD, SinkhornEMD, emd_exact, exact_assignment
from geoprior.reconstruct import fit_charts
from geoprior.sampling import orient_points_mst, sample_charts
from geoprior.shapes import sphere as _sphere
from shared.fit import Objective, Optimiser, fit
from shared.physics import IdentityPhysics


@pytest.mark.parametrize("method", ["poisson", "fps"])
def test_cover_properties(method):
    pts = _sphere(800)
    cover = build_cover(pts, radius=0.15, overlap=1.5, method=method, seed=1)
    diag = np.linalg.norm(pts.max(0) - pts.min(0))
    r = 0.15 * diag
    # Coverage: every point in at least one patch, and within r of some centre.
    covered = np.zeros(len(pts), bool)
    covered[cover.index[cover.mask]] = True
    assert covered.all()
    d = np.linalg.norm(pts[:, None] - cover.centres[None], axis=2).min(1)
    assert d.max() <= r + 1e-9
    # Sizes: patch members within c r of their centre (plus the owner fallback), masks consistent.
    for i in range(cover.n_patches):
        idx = cover.index[i, cover.mask[i]]
        assert len(idx) == len(set(idx.tolist())) >= 8
        assert np.linalg.norm(pts[idx] - cover.centres[i], axis=1).max() <= 1.5 * r + 1e-9
        assert (cover.index[i, ~cover.mask[i]] == -1).all()
    # Frames: rotations orthonormal and right-handed, local coordinates centred and within the unit ball in-plane.
    R = cover.rotation
    assert np.allclose(np.einsum("pji,pjk->pik", R, R), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(R), 1.0)
    for i in range(cover.n_patches):
        q = cover.local[i, cover.mask[i]]
        assert np.allclose(q.mean(0), 0, atol=1e-9)
        assert np.sqrt((q[:, :2] ** 2).sum(1)).max() <= 1 + 1e-9
        assert q[:, 2].var() < q[:, 0].var()  # the third axis is the normal (least variance)
    # World <-> local round trip.
    world = cover.to_world(cover.local)
    assert np.allclose(world[cover.mask], pts[cover.index[cover.mask]], atol=1e-9)
    # Parameter samples in the unit square, one per point.
    assert cover.uv.min() >= 0 and cover.uv.max() <= 1


@pytest.mark.parametrize("method", ["grid", "lloyd"])
def test_parameter_samples_spread(method):
    u = parameter_samples(100, np.random.default_rng(0), method)
    assert u.shape == (100, 2) and u.min() >= 0 and u.max() <= 1
    d = np.linalg.norm(u[:, None] - u[None], axis=2) + np.eye(100)
    assert d.min(1).mean() > 0.5 / 10  # well spread: mean nearest spacing near 1/sqrt(n)


def test_batched_charts_equal_separate_mlps():
    torch.manual_seed(0)
    model = ChartPrior(5, hidden=(16, 16))
    uv = torch.rand(5, 30, 2)
    out = model(uv)
    target = torch.randn(5, 30, 3)
    loss = ((out - target) ** 2).sum()
    loss.backward()
    for b in range(5):
        member = model.mlp.member(b)
        alone = member(uv[b] - 0.5)
        assert torch.allclose(alone, out[b], atol=1e-6)
        ((alone - target[b]) ** 2).sum().backward()
        lin = [m for m in member.net if isinstance(m, torch.nn.Linear)]
        assert torch.allclose(lin[0].weight.grad.T, model.mlp.weights[0].grad[b], atol=1e-5)


def test_exact_assignment_matches_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 6, 3)), rng.normal(size=(3, 6, 3))
    sizes = np.array([6, 4, 5])
    perm = exact_assignment(a, b, sizes)
    for i, n in enumerate(sizes):
        brute = min(((a[i, :n] - b[i, :n][list(s)]) ** 2).sum(1).mean() for s in itertools.permutations(range(n)))
        got = ((a[i, :n] - b[i, :n][perm[i, :n]]) ** 2).sum(1).mean()
        assert got == pytest.approx(brute, rel=1e-12)
        assert emd_exact(a[i, :n], b[i, :n]) == pytest.approx(brute, rel=1e-12)
        assert sorted(perm[i, :n]) == list(range(n))


def test_sinkhorn_matches_brute_force_for_small_blur():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 3))
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 4] = False
    loss = SinkhornEMD(mask, blur=1e-3, blur_start=None, scaling=0.9)
    vals = loss.per_patch(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    for i, n in enumerate([5, 4]):
        assert float(vals[i]) == pytest.approx(emd_exact(a[i, :n], b[i, :n]), rel=1e-3)


def test_exact_loss_rematches_and_is_masked():
    rng = np.random.default_rng(2)
    target = torch.tensor(rng.normal(size=(2, 4, 3)), dtype=torch.float32)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    pred = target[:, [2, 0, 3, 1]].clone()
    pred[1, 3] = 100.0  # padding: must not count
    loss = ExactEMD(mask, rematch_every=1, rematch_start=0)
    # The matching step finds the permutation: the loss of a permuted copy is zero on real points.
    pred[1] = target[1, [2, 0, 1, 3]]
    pred[1, 3] = 100.0
    assert float(loss(pred, target)) < 1e-10
    # Without re-matching (identity matching) the permuted copy is far from zero.
    fixed = ExactEMD(mask, rematch_every=0)
    assert float(fixed(pred, target)) > 0.1
    with pytest.raises(ValueError, match="cannot leave out"):
        loss(pred, target, mask=torch.ones_like(target, dtype=torch.bool))


def test_rematch_solves_only_the_patches_that_moved():
    """A chart frozen by per-chart stopping keeps its prediction: its optimal matching cannot
    change, so a re-match solves the other patches only, with the full solve's result."""
    rng = np.random.default_rng(3)
    target = torch.tensor(rng.normal(size=(5, 6, 3)), dtype=torch.float32)
    mask = torch.ones(5, 6, dtype=torch.bool)
    pred = torch.tensor(rng.normal(size=(5, 6, 3)), dtype=torch.float32)
    loss = ExactEMD(mask, rematch_every=1, rematch_start=0)
    loss(pred, target)
    assert loss.patches_matched == 5
    pred[[1, 3]] += torch.tensor(rng.normal(size=(2, 6, 3)), dtype=torch.float32)
    loss.begin_step(1)
    loss(pred, target)
    assert loss.matchings == 2 and loss.patches_matched == 7
    full = exact_assignment(pred.double().numpy(), target.double().numpy(), np.full(5, 6))
    assert np.array_equal(loss.perm.numpy(), full)


def _small_charts(seed=0):
    cover = build_cover(_sphere(300, seed=seed), radius=0.3, overlap=1.3, seed=seed)
    torch.manual_seed(seed)
    uv = torch.as_tensor(cover.uv, dtype=torch.float32)
    target = torch.as_tensor(cover.local, dtype=torch.float32)
    return cover, ChartPrior(cover.n_patches, (8,)), uv, target, torch.as_tensor(cover.mask)


def test_exact_matchings_follow_the_engine_steps_under_lbfgs():
    """L-BFGS evaluates the objective several times per step: the matchings still happen
    exactly at the scheduled steps, once each, on the first evaluation of the step."""

    class Recording(ExactEMD):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.calls, self.matched_at = [], []

        def __call__(self, pred, target, mask=None):
            self.calls.append(self.step)
            return super().__call__(pred, target, mask)

        def rematch(self, pred, target):
            assert self.calls[-1] == self.step and self.calls.count(self.step) == 1  # first evaluation of the step
            self.matched_at.append(self.step)
            super().rematch(pred, target)

    cover, model, uv, target, mask = _small_charts()
    data = Recording(mask, rematch_every=2, rematch_start=1)
    res = fit(model, uv, Objective(target, physics=IdentityPhysics(), data=data),
              optimiser=Optimiser(lr=0.5, iterations=6, name="lbfgs"), seed=0)
    assert res.stop_iteration == 6
    assert len(data.calls) > 6  # several closure evaluations per step
    assert sorted(set(data.calls)) == list(range(6))
    assert data.matched_at == [1, 3, 5] and data.matchings == 3
    assert [t for t in range(6) if data.scheduled(t)] == [1, 3, 5]


def test_sinkhorn_blur_follows_the_engine_steps_under_lbfgs():
    class Recording(SinkhornEMD):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.blurs = []

        def per_patch(self, pred, target, blur=None):
            self.blurs.append((self.step, self.current_blur()))
            return super().per_patch(pred, target, blur)

    cover, model, uv, target, mask = _small_charts(1)
    data = Recording(mask, blur=0.01, blur_start=0.2, anneal=0.5)
    fit(model, uv, Objective(target, physics=IdentityPhysics(), data=data),
        optimiser=Optimiser(lr=0.5, iterations=5, name="lbfgs"), seed=0)
    assert len(data.blurs) > 5
    assert sorted({t for t, _ in data.blurs}) == list(range(5))
    for t, blur in data.blurs:
        assert blur == max(0.01, 0.2 * 0.5 ** t)


def test_adam_matches_once_per_scheduled_step():
    cover, model, uv, target, mask = _small_charts(2)
    data = ExactEMD(mask, rematch_every=3, rematch_start=2)
    fit(model, uv, Objective(target, physics=IdentityPhysics(), data=data), optimiser=Optimiser(iterations=10))
    assert data.matchings == len([2, 5, 8]) and data.step == 9


def test_jacobian_normals_of_a_plane():
    """A linear chart phi(u) = A u + c has normal A[:,0] x A[:,1] everywhere."""
    A = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 0.0]])

    class Lin(torch.nn.Module):
        def forward(self, uv):
            return uv @ A.T + 1.0

    _, n = chart_jacobian_normals(Lin(), torch.rand(1, 10, 2))
    expect = torch.linalg.cross(A[:, 0], A[:, 1])
    expect = expect / expect.norm()
    assert torch.allclose(n[0], expect.expand(10, 3), atol=1e-6)


def test_normal_orientation_on_sphere():
    """Fitted charts of a sphere give outward normals everywhere (chart + patch MST + outward test)."""
    pts = _sphere(1200, seed=3)
    cover = build_cover(pts, radius=0.1, seed=0)
    model, _, _ = fit_charts(cover, DeepGeometricPrior(iterations=120, hidden=(32, 32), rematch_start=1000))
    world, normals, _ = sample_charts(model, cover, density=2)
    radial = world / np.linalg.norm(world, axis=1, keepdims=True)
    cos = (radial * normals).sum(1)
    assert (cos > 0).mean() > 0.99
    assert np.median(cos) > 0.95
    # Point-level orientation (open3d tangent plane + outward test) also agrees.
    random_signs = np.where(np.random.default_rng(0).uniform(size=len(pts)) < 0.5, -1.0, 1.0)[:, None]
    oriented = orient_points_mst(pts, pts * random_signs)
    assert ((oriented * pts).sum(1) > 0).mean() > 0.99


def test_folded_cover_uses_every_point_once_per_fold_and_keeps_folds_apart():
    from geoprior.cover import build_folded_cover

    pts = _sphere(1500, seed=2)
    cover = build_folded_cover(pts, folds=3, radius=0.2, overlap=1.3, seed=4)
    assert cover.n_groups == 3 and set(np.unique(cover.group)) == {0, 1, 2}
    # Every point is covered, and all patches that hold a point belong to the same fold.
    fold_of = np.full(len(pts), -1)
    for i in range(cover.n_patches):
        idx = cover.index[i, cover.mask[i]]
        assert ((fold_of[idx] == -1) | (fold_of[idx] == cover.group[i])).all()
        fold_of[idx] = cover.group[i]
    assert (fold_of >= 0).all()
    assert np.abs(np.bincount(fold_of) - 500).max() <= 1  # interleaved folds of equal size
    # Indices point into the full cloud: local coordinates map back onto the right points.
    world = cover.to_world(cover.local)
    assert np.allclose(world[cover.mask], pts[cover.index[cover.mask]], atol=1e-9)
    assert (cover.index[~cover.mask] == -1).all()


def test_dense_samples_trim_per_fold_keeps_one_layer_per_fold():
    from geoprior.cover import build_folded_cover

    pts = _sphere(1200, seed=3)
    single = build_cover(pts, radius=0.25, overlap=1.3, seed=0)
    folded = build_folded_cover(pts, folds=2, radius=0.25, overlap=1.3, seed=0)
    torch.manual_seed(0)
    n_single = len(sample_charts(ChartPrior(single.n_patches, (8,)), single, density=2)[0])
    dense, normals, pid = sample_charts(ChartPrior(folded.n_patches, (8,)), folded, density=2)
    # Each fold's charts tile the surface on their own: both folds contribute about as
    # many samples as a single cover of the whole cloud does.
    per_fold = np.bincount(folded.group[pid], minlength=2)
    assert per_fold.min() > 0.35 * n_single
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)


def test_dense_samples_do_not_depend_on_how_many_patches_are_sampled_at_a_time():
    """sample_charts bounds its memory by sampling a part of the patches at a time; the
    samples, their normals, the trimming and the outlier test must not notice."""
    from geoprior.cover import build_folded_cover

    pts = _sphere(1500, seed=5)
    cover = build_folded_cover(pts, folds=2, radius=0.2, overlap=1.3, seed=1)
    torch.manual_seed(1)
    model = ChartPrior(cover.n_patches, (8, 8))
    anchors = pts[::3]
    whole = sample_charts(model, cover, density=3, seed=2, anchors=anchors, outlier_factor=1.5)
    parts = sample_charts(model, cover, density=3, seed=2, anchors=anchors, outlier_factor=1.5,
                          chunk_samples=3 * cover.mask.shape[1] * 7)  # 7 patches at a time
    assert cover.n_patches > 20 and len(whole[0]) > 100
    assert np.array_equal(whole[2], parts[2])
    assert np.allclose(whole[0], parts[0], atol=1e-9) and np.allclose(whole[1], parts[1], atol=1e-9)
    # Charts without forward-mode normals (autograd needs every member) are sampled whole.
    smooth = ChartPrior(cover.n_patches, (8,), act="tanh")
    a, b = (sample_charts(smooth, cover, density=2, chunk_samples=c)[0] for c in (50, 1 << 20))
    assert len(a) > 100 and np.array_equal(a, b)


def test_isolated_points_flags_a_lone_outlier_and_keeps_sparse_regions():
    from geoprior.clean import isolated_points

    rng = np.random.default_rng(0)
    dense = rng.uniform(0, 1, (2000, 2))
    sparse = rng.uniform(0, 1, (200, 2)) * 10 + [5, 0]   # ~30x sparser, not isolated
    plane = np.c_[np.r_[dense, sparse], np.zeros(2200)]
    lone = np.array([[0.5, 0.5, 3.0]])
    pair = np.array([[0.2, 0.8, -2.0], [0.21, 0.8, -2.0]])  # a group of two far off
    flags = isolated_points(np.r_[plane, lone, pair])
    assert flags[-3:].all()
    assert not flags[:-3].any()
    with pytest.raises(ValueError, match="factor"):
        isolated_points(plane, factor=0)


def test_reconstruct_drops_a_lone_outlier_before_covering():
    cloud = np.r_[_sphere(400, seed=1), [[0.0, 0.0, 5.0]]]
    rec = DeepGeometricPrior(radius=0.3, iterations=5, consistency_iterations=0, mesh=False, hidden=(8,))
    res = rec.reconstruct(cloud)
    assert res.info["n_isolated_removed"] == 1 and res.info["n_fit"] == 400
    assert res.arrays["vertices"] is None and "mesh.ply" not in res.files


@pytest.mark.parametrize("method", ["poisson", "fps"])
def test_cover_keeps_the_faces_of_a_thin_wall_apart(method):
    """Two sheets 0.02 apart with opposite normals, covering radius 0.1 of the diagonal: with
    normals every patch holds one sheet only and both sheets have centres; without, the
    centres of one sheet own points of the other."""
    rng = np.random.default_rng(0)
    uv = rng.uniform(0, 1, size=(800, 2))
    top = np.column_stack([uv[:400], np.full(400, 0.01)])
    bottom = np.column_stack([uv[400:], np.full(400, -0.01)])
    pts = np.concatenate([top, bottom])
    normals = np.concatenate([np.tile([0.0, 0, 1], (400, 1)), np.tile([0.0, 0, -1], (400, 1))])
    side = pts[:, 2] > 0

    def mixed(cover):
        return sum(0 < side[cover.index[p][cover.mask[p]]].mean() < 1 for p in range(cover.n_patches))

    cover = build_cover(pts, normals, radius=0.1, overlap=1.5, method=method, seed=0)
    assert mixed(cover) == 0
    assert 0.3 < (cover.centres[:, 2] > 0).mean() < 0.7  # each sheet has centres of its own
    covered = np.zeros(len(pts), bool)
    covered[cover.index[cover.mask]] = True
    assert covered.all()
    assert mixed(build_cover(pts, None, radius=0.1, overlap=1.5, method=method, seed=0)) > 0


def test_smooth_normals_averages_noise_within_a_face_but_not_across_a_thin_wall():
    """Two parallel sheets 0.01 apart with opposite normals, each normal tilted by noise:
    smoothing brings them back towards +-z and never mixes the two faces."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(size=(4000, 2))
    side = np.where(np.arange(4000) % 2 == 0, 1.0, -1.0)
    points = np.column_stack([xy, 0.005 * side])
    true = np.column_stack([np.zeros((4000, 2)), side])
    noisy = true + 0.4 * rng.normal(size=(4000, 3)) * [1, 1, 0]
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    smoothed = smooth_normals(points, noisy, k=16)
    err_before = np.arccos(np.clip((noisy * true).sum(1), -1, 1))
    err_after = np.arccos(np.clip((smoothed * true).sum(1), -1, 1))
    assert np.allclose(np.linalg.norm(smoothed, axis=1), 1.0)
    assert np.median(err_after) < 0.5 * np.median(err_before)
    assert ((smoothed * true).sum(1) > 0).all()
