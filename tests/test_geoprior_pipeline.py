"""geoprior metrics (KD-tree vs pytorch3d) and the whole pipeline on a noisy sphere."""
import numpy as np
import pytest

from geoprior.metrics import evaluate_against_mesh, have_pytorch3d, point_metrics


def _sphere(n, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def test_metrics_known_values():
    a = np.array([[0.0, 0, 0], [1, 0, 0]])
    b = np.array([[0.0, 0, 0.1], [1, 0, 0], [0, 1, 0]])
    m = point_metrics(a, b, diag=1.0, tau=0.05, backend="kdtree")
    assert m["accuracy"] == pytest.approx(0.05)
    assert m["completeness"] == pytest.approx((0.1 + 0 + 1) / 3)
    assert m["chamfer_l1"] == pytest.approx((0.05 + 1.1 / 3) / 2)
    assert m["hausdorff"] == pytest.approx(1.0)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(1 / 3)


@pytest.mark.skipif(not have_pytorch3d(), reason="pytorch3d is not installed")
def test_kdtree_and_pytorch3d_agree():
    rng = np.random.default_rng(0)
    a, b = _sphere(700, 1) + 0.01 * rng.normal(size=(700, 3)), _sphere(900, 2)
    na, nb = _sphere(700, 3), _sphere(900, 4)
    k = point_metrics(a, b, na, nb, backend="kdtree")
    t = point_metrics(a, b, na, nb, backend="pytorch3d")
    for key in ("chamfer_l1", "chamfer_l2", "hausdorff", "fscore", "normal_consistency"):
        assert t[key] == pytest.approx(k[key], rel=1e-4, abs=1e-7), key


def test_mesh_evaluation_of_a_sphere():
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=4)
    big = trimesh.creation.icosphere(subdivisions=4)
    big.vertices *= 1.01
    same = evaluate_against_mesh((s.vertices, s.faces), mesh=(s.vertices, s.faces), n_output=20000, n_reference=20000)
    off = evaluate_against_mesh((s.vertices, s.faces), mesh=(big.vertices, big.faces), n_output=20000, n_reference=20000)
    assert same["chamfer_l1"] < 1e-6
    assert off["chamfer_l1"] == pytest.approx(0.01 / np.sqrt(12), rel=0.05)


def test_pipeline_denoises_a_noisy_sphere():
    """A few hundred noisy sphere points: the dense output is closer to the clean sphere than the input."""
    from geoprior.reconstruct import ReconstructionConfig, reconstruct

    clean = _sphere(20000, seed=5)
    rng = np.random.default_rng(6)
    noisy = _sphere(600, seed=7)
    diag = np.linalg.norm(noisy.max(0) - noisy.min(0))
    noisy = noisy + 0.01 * diag * rng.normal(size=noisy.shape)
    cfg = ReconstructionConfig(radius=0.12, hidden=(32, 32), iterations=150, consistency_iterations=40,
                               depth=5, density=3)
    rec = reconstruct(noisy, config=cfg)
    before = point_metrics(noisy, clean, diag=diag, backend="kdtree")["chamfer_l1"]
    after = point_metrics(rec.points, clean, diag=diag, backend="kdtree")["chamfer_l1"]
    assert after < 0.8 * before, (before, after)
    # The mesh is a closed-ish surface around the origin with outward normals on the dense cloud.
    assert rec.faces is not None and len(rec.faces) > 100
    r = np.linalg.norm(rec.vertices, axis=1)
    assert abs(np.median(r) - 1) < 0.05
    assert ((rec.points * rec.normals).sum(1) > 0).mean() > 0.97
    assert rec.fit_result.history["loss"][-1] < rec.fit_result.history["loss"][0]


def test_pipeline_rejects_bad_inputs():
    from geoprior.reconstruct import reconstruct

    with pytest.raises(ValueError, match="identical"):
        reconstruct(np.zeros((50, 3)))
    with pytest.raises(ValueError, match="at least 16 points"):
        reconstruct(_sphere(10))
