"""Poisson meshing: the distance trim removes the surface the solver invents away from the data."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from geoprior import DeepGeometricPrior
from geoprior.mesh import mean_spacing, poisson_mesh


@pytest.fixture(scope="module")
def cap() -> tuple[np.ndarray, np.ndarray]:
    """The upper half of a unit sphere (an open surface: Poisson closes it underneath)."""
    rng = np.random.default_rng(0)
    p = rng.normal(size=(12_000, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    p[:, 2] = np.abs(p[:, 2])
    return p, p.copy()


def test_distance_trim_keeps_only_vertices_near_the_points(cap):
    points, normals = cap
    d = 3 * mean_spacing(points)
    v0, _ = poisson_mesh(points, normals, depth=6, trim_quantile=0.0, threads=1)
    v1, f1 = poisson_mesh(points, normals, depth=6, trim_quantile=0.0, threads=1, trim_distance=d)
    tree = cKDTree(points)
    # Untrimmed, the solver's closing lid lies far below the cap; trimmed, no vertex is off the data.
    assert (v0[:, 2] < -0.3).any()
    assert tree.query(v1)[0].max() <= d
    assert len(f1) > 0 and f1.max() < len(v1)
    # The cap itself survives: its top is still there.
    assert v1[:, 2].max() > 0.95


def test_distance_trim_measures_from_the_given_points(cap):
    points, normals = cap
    top = points[points[:, 2] > 0.5]
    v, _ = poisson_mesh(points, normals, depth=6, trim_quantile=0.0, threads=1, trim_distance=0.1, near=top)
    assert v[:, 2].min() > 0.5 - 0.1 - 1e-9


def test_trim_spacing_is_checked():
    with pytest.raises(ValueError, match="trim_spacing"):
        DeepGeometricPrior(trim_spacing=-1).check()
