"""geoprior metrics (KD-tree vs pytorch3d) and the whole pipeline on a noisy sphere."""
import numpy as np
import pytest

from geoprior import DeepGeometricPrior
from geoprior.metrics import evaluate_against_mesh, have_pytorch3d, point_metrics
from geoprior.shapes import sphere as _sphere
from shared.result import Result


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
    n = dict(n_output=20000, n_reference=20000)
    same = evaluate_against_mesh((s.vertices, s.faces), mesh=(s.vertices, s.faces), **n)
    off = evaluate_against_mesh((s.vertices, s.faces), mesh=(big.vertices, big.faces), **n)
    assert same["chamfer_l1"] < 1e-6
    assert off["chamfer_l1"] == pytest.approx(0.01 / np.sqrt(12), rel=0.05)


def test_pipeline_denoises_a_noisy_sphere():
    """A few hundred noisy sphere points: the dense output is closer to the clean sphere than the input."""
    clean = _sphere(20000, seed=5)
    rng = np.random.default_rng(6)
    noisy = _sphere(600, seed=7)
    diag = np.linalg.norm(noisy.max(0) - noisy.min(0))
    noisy = noisy + 0.01 * diag * rng.normal(size=noisy.shape)
    rec = DeepGeometricPrior(radius=0.12, hidden=(32, 32), iterations=150, consistency_iterations=40,
                             depth=5, density=3)
    res = rec.reconstruct(noisy, reference=clean)
    assert isinstance(res, Result) and res.method == "geoprior" and res.config == rec.get_params()
    points, normals = res.arrays["points"], res.arrays["normals"]
    before = point_metrics(noisy, clean, diag=diag, backend="kdtree")["chamfer_l1"]
    after = point_metrics(points, clean, diag=diag, backend="kdtree")["chamfer_l1"]
    assert after < 0.8 * before, (before, after)
    clean_diag = np.linalg.norm(clean.max(0) - clean.min(0))  # the metric is relative to the reference's diagonal
    assert res.metrics["chamfer_l1"] == pytest.approx(after * diag / clean_diag)
    # The mesh is a closed-ish surface around the origin with outward normals on the dense cloud.
    assert res.arrays["faces"] is not None and len(res.arrays["faces"]) > 100
    r = np.linalg.norm(res.arrays["vertices"], axis=1)
    assert abs(np.median(r) - 1) < 0.05
    assert ((points * normals).sum(1) > 0).mean() > 0.97
    assert res.fit.history["loss"][-1] < res.fit.history["loss"][0]
    assert res.arrays["consistency_fit"].stop_iteration == 40 and len(res.fit.history["chamfer"]) > 1
    assert set(res.timings) >= {"cover_s", "fit_s", "consistency_s", "sampling_s", "mesh_s"}


def test_pipeline_rejects_bad_inputs():
    rec = DeepGeometricPrior()
    with pytest.raises(ValueError, match="identical"):
        rec.reconstruct(np.zeros((50, 3)))
    with pytest.raises(ValueError, match="at least 16 points"):
        rec.reconstruct(_sphere(10))
    with pytest.raises(ValueError, match="loss must be one of"):
        DeepGeometricPrior(loss="l2").reconstruct(_sphere(100))
    with pytest.raises(ValueError, match="radius"):
        DeepGeometricPrior(radius=2.0).reconstruct(_sphere(100))


def test_reconstructor_params_and_result_files(tmp_path):
    """Settings at construction (get_params is the config every JSON records); the result writes its files."""
    import json

    rec = DeepGeometricPrior(radius=0.3, iterations=5, consistency_iterations=3, hidden=(8,), depth=4, density=1)
    params = rec.get_params()
    assert params["radius"] == 0.3 and params["hidden"] == (8,) and params["stopping"] == "discrepancy"
    assert DeepGeometricPrior().get_params()["iterations"] == 300  # the defaults of the old config
    res = rec.reconstruct(_sphere(300, seed=2))
    written = res.write(tmp_path)
    assert [p.name for p in written] == ["dense.ply", "mesh.ply", "input_vs_output.png", "metrics.json"]
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["config"]["hidden"] == [8] and report["n_patches"] == res.info["n_patches"] > 1
    assert report["metrics"]["final_loss"] == res.fit.history["loss"][-1]
