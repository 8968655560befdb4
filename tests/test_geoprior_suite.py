"""The surface validation suite and its scan simulator (geoprior.suite, geoprior.scans)."""
from __future__ import annotations

import numpy as np
import pytest

from geoprior import suite
from geoprior.metrics import MeshDistance
from geoprior.scans import range_scan, uniform_samples


@pytest.fixture(scope="module")
def sphere():
    import trimesh

    return trimesh.creation.icosphere(subdivisions=4)


@pytest.mark.parametrize("name", suite.names())
def test_every_shape_builds_normalised_and_closed(name):
    mesh = suite.build(name)
    lo, hi = mesh.bounds
    assert np.linalg.norm(hi - lo) == pytest.approx(1.0)
    assert np.allclose((lo + hi) / 2, 0.0, atol=1e-9)
    assert mesh.area > 0.1
    # every solid is watertight; the height field is the suite's one open surface
    assert mesh.is_watertight == (name != "height_field")


def test_suite_has_twelve_shapes_over_three_families():
    assert len(suite.names()) >= 12
    assert {fam for fam, _ in suite.SHAPES.values()} == set(suite.FAMILIES)
    assert len(suite.cases()) == len(suite.names()) * 2 * 3 * 2


def test_inputs_are_fixed_by_the_case():
    case = suite.Case("hex_nut", "scan", 0.005, 3000)
    a, b = suite.make_input(case), suite.make_input(case)
    assert a.shape == (3000, 3) and np.array_equal(a, b)
    other = suite.make_input(suite.Case("hex_nut", "scan", 0.01, 3000))
    assert not np.array_equal(a, other)


def test_unknown_shape_and_sampling_are_named():
    with pytest.raises(ValueError, match="unknown suite shape 'teapot'"):
        suite.build("teapot")
    with pytest.raises(ValueError, match="unknown sampling 'lidar'"):
        suite.make_input(suite.Case("cross", "lidar", 0.005, 100))


def test_uniform_noise_has_the_asked_std(sphere):
    pts = uniform_samples(sphere, 20_000, noise=0.01, seed=3)
    diag = np.linalg.norm(sphere.bounds[1] - sphere.bounds[0])
    radial = np.linalg.norm(pts, axis=1) - 1.0  # the icosphere is within 1e-3 of the unit sphere
    assert np.std(radial) == pytest.approx(0.01 * diag, rel=0.1)


def test_scan_leaves_holes_where_no_viewpoint_sees(sphere):
    """Cameras 60 degrees above the equator never see the bottom cap; uniform samples cover it."""
    az = np.deg2rad([0, 120, 240])
    el = np.deg2rad(60.0)
    dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.full(3, np.sin(el))], 1)
    scan = range_scan(sphere, 5000, noise=0.0, directions=dirs, outliers=0.0, seed=0)
    assert scan.points[:, 2].min() > -0.6
    assert uniform_samples(sphere, 5000, 0.0)[:, 2].min() < -0.95
    assert set(np.unique(scan.view)) == {0, 1, 2}


def test_scan_density_falls_with_distance():
    """A long strip seen from one end: the near half gets more points per area than the far half."""
    import trimesh

    strip = trimesh.creation.box(extents=(4.0, 1.0, 0.01))
    scan = range_scan(strip, 8000, noise=0.0, directions=np.array([[-1.0, 0.0, 0.6]]) / np.hypot(1, 0.6),
                      distance=(0.6, 0.6), outliers=0.0, min_cos=0.0, seed=1)
    top = scan.points[scan.points[:, 2] > 0]
    near, far = (top[:, 0] < 0).sum(), (top[:, 0] >= 0).sum()
    assert near > 2 * far > 0


def test_scan_noise_lies_along_the_rays_and_outliers_are_marked(sphere):
    scan = range_scan(sphere, 6000, noise=0.004, views=4, outliers=0.01, seed=2)
    diag = np.linalg.norm(sphere.bounds[1] - sphere.bounds[0])
    dist = MeshDistance(sphere.vertices, sphere.faces)(scan.points)
    inliers = dist[~scan.outlier]
    # range noise projects onto the normal by |cos| <= 1: at most the asked std, not zero
    assert 0.2 * 0.004 * diag < np.std(inliers) < 1.05 * 0.004 * diag
    assert 0.003 < scan.outlier.mean() < 0.02
    assert np.median(dist[scan.outlier]) > 5 * np.median(inliers)


def test_scan_refuses_empty_requests(sphere):
    with pytest.raises(ValueError, match="n >= 1 points and views >= 1"):
        range_scan(sphere, 0, noise=0.01)


def test_small_cad_shape_beats_baseline_poisson_at_one_percent_noise():
    """2k points of a block with a bore, 1 % noise: our mesh (defaults) below Poisson's Chamfer."""
    import torch

    from geoprior import DeepGeometricPrior
    from geoprior.mesh import baseline_poisson
    from geoprior.metrics import evaluate_against_mesh

    case = suite.Case("block_with_bore", "uniform", 0.01, 2000)
    mesh = suite.build(case.shape)
    reference = (np.asarray(mesh.vertices), np.asarray(mesh.faces))
    points = suite.make_input(case, mesh)
    torch.set_num_threads(1)
    res = DeepGeometricPrior().reconstruct(points)
    ours = evaluate_against_mesh(reference, mesh=(res.arrays["vertices"], res.arrays["faces"]),
                                 n_output=50_000, n_reference=50_000)["chamfer_l1"]
    v, f, _ = baseline_poisson(points)
    poisson = evaluate_against_mesh(reference, mesh=(v, f), n_output=50_000, n_reference=50_000)["chamfer_l1"]
    assert ours < 0.95 * poisson, (ours, poisson)
